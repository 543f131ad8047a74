//! A parser for a subset of the C litmus format used by the kernel's `tools/memory-model`.
//!
//! ```text
//! C name
//! (* Result: Never            <- the expected LKMM verdict
//!    Expect: sc=Never tso=Never armv8=Never rc11=Never
//!    Source: where the shape comes from *)
//! { x=1; int *p = &y; atomic_t v = ATOMIC_INIT(1); }
//! P0(int *x, int *y) { WRITE_ONCE(*x, 1); smp_wmb(); WRITE_ONCE(*y, 1); }
//! P1(int *x, int *y) { int r0; int r1; r0 = READ_ONCE(*y); smp_rmb(); r1 = READ_ONCE(*x); }
//! locations [x; y]              <- ignored
//! filter (1:r0=1)               <- optional
//! exists (1:r0=1 /\ 1:r1=0)     <- or ~exists (...), forall (...)
//! ```
//!
//! `(*` opens a comment only when white space follows, so `READ_ONCE(*x)` is code.
//!
//! Statements: declarations (`int r0;`, `int r0 = READ_ONCE(*x);`), `r = <call or
//! expression>;`, `<call>;`, `(void)<call>;`, `if (e) s [else s]` and blocks. Plain accesses
//! (`*x = 1`, `r = *x`) are rejected: their data-race semantics is not modelled. Unknown calls
//! are errors, so a test never silently loses an access. See [`crate::ast`] for what each
//! primitive becomes.

use crate::ast::*;
use std::collections::BTreeMap;

/// A parse error, with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What went wrong.
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.msg)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    Num(i64),
    Punct(&'static str),
}

const PUNCTS: &[&str] = &[
    "/\\", "\\/", "==", "!=", "<=", ">=", "&&", "||", "{", "}", "(", ")", ";", ",", "*", "&", "=", "+", "-",
    "!", "<", ">", ":", "[", "]", "^", "|", "~",
];

struct Lexer {
    toks: Vec<(Tok, usize)>,
    comments: Vec<String>,
}

fn lex(src: &str) -> Result<Lexer, ParseError> {
    let b = src.as_bytes();
    let (mut i, mut line) = (0, 1);
    let mut toks = Vec::new();
    let mut comments = Vec::new();
    let err = |line, msg: String| ParseError { line, msg };
    while i < b.len() {
        let c = b[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if (src[i..].starts_with("(*") && b.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()))
            || src[i..].starts_with("/*")
        {
            // `(*` opens a comment only before white space: `READ_ONCE(*x)` is code.
            let close = if c == b'(' { "*)" } else { "*/" };
            let end = src[i + 2..].find(close).ok_or_else(|| err(line, "unterminated comment".into()))?;
            let body = &src[i + 2..i + 2 + end];
            line += body.matches('\n').count();
            comments.push(body.to_string());
            i += end + 4;
        } else if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let s = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'.') {
                i += 1;
            }
            toks.push((Tok::Ident(src[s..i].to_string()), line));
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let n = src[s..i].parse().map_err(|_| err(line, "bad number".into()))?;
            toks.push((Tok::Num(n), line));
        } else if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            toks.push((Tok::Punct(p), line));
            i += p.len();
        } else {
            return Err(err(line, format!("unexpected character {:?}", c as char)));
        }
    }
    Ok(Lexer { toks, comments })
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    locs: Vec<String>,
    init: Vec<Value>,
    regs: Vec<String>,
    reg_init: Vec<(usize, String, Value)>,
}

type PResult<T> = Result<T, ParseError>;

impl Parser {
    fn line(&self) -> usize {
        self.toks.get(self.pos).or(self.toks.last()).map_or(0, |t| t.1)
    }

    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err(ParseError { line: self.line(), msg: msg.into() })
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.toks.get(self.pos + k).map(|t| &t.0)
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(q)) if q == s)
    }

    fn eat(&mut self, p: &str) -> bool {
        if self.is_punct(p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> PResult<()> {
        if self.eat(p) {
            Ok(())
        } else {
            self.err(format!("expected `{p}`, found {:?}", self.peek()))
        }
    }

    fn ident(&mut self) -> PResult<String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            t => self.err(format!("expected a name, found {t:?}")),
        }
    }

    fn number(&mut self) -> PResult<i64> {
        let neg = self.eat("-");
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(if neg { -n } else { n })
            }
            t => self.err(format!("expected a number, found {t:?}")),
        }
    }

    fn loc(&mut self, name: &str) -> usize {
        if let Some(i) = self.locs.iter().position(|l| l == name) {
            return i;
        }
        self.locs.push(name.to_string());
        self.init.push(0);
        self.locs.len() - 1
    }

    fn reg(&mut self, name: &str) -> Reg {
        if let Some(i) = self.regs.iter().position(|r| r == name) {
            return i;
        }
        self.regs.push(name.to_string());
        self.regs.len() - 1
    }

    fn is_type_word(s: &str) -> bool {
        matches!(s, "int" | "long" | "unsigned" | "bool" | "atomic_t" | "spinlock_t" | "intptr_t" | "const")
    }

    /// `{ x=1; int y = 2; int *p = &x; p=x; atomic_t v = ATOMIC_INIT(1); spinlock_t l; 0:r1=1; }`
    fn init_section(&mut self) -> PResult<()> {
        self.expect("{")?;
        while !self.eat("}") {
            if self.eat(";") {
                continue;
            }
            if let Some(Tok::Num(t)) = self.peek().cloned() {
                self.pos += 1;
                self.expect(":")?;
                let r = self.ident()?;
                self.expect("=")?;
                let v = self.number()?;
                self.reg_init.push((t as usize, r, v));
                continue;
            }
            while matches!(self.peek(), Some(Tok::Ident(s)) if Self::is_type_word(s)) {
                self.pos += 1;
            }
            while self.eat("*") {}
            let name = self.ident()?;
            let l = self.loc(&name);
            if self.eat("=") {
                let v = if self.eat("&") {
                    let t = self.ident()?;
                    loc_value(self.loc(&t))
                } else if self.is_ident("ATOMIC_INIT") {
                    self.pos += 1;
                    self.expect("(")?;
                    let v = self.number()?;
                    self.expect(")")?;
                    v
                } else if let Some(Tok::Ident(t)) = self.peek().cloned() {
                    self.pos += 1;
                    loc_value(self.loc(&t))
                } else {
                    self.number()?
                };
                self.init[l] = v;
            }
        }
        Ok(())
    }

    fn thread(&mut self) -> PResult<Thread> {
        self.regs.clear();
        self.expect("(")?;
        while !self.eat(")") {
            self.eat(",");
            while matches!(self.peek(), Some(Tok::Ident(s)) if Self::is_type_word(s)) {
                self.pos += 1;
            }
            while self.eat("*") {}
            let name = self.ident()?;
            self.loc(&name);
        }
        let body = self.block()?;
        Ok(Thread { regs: self.regs.clone(), reg_init: vec![0; self.regs.len()], body })
    }

    fn block(&mut self) -> PResult<Vec<Stmt>> {
        self.expect("{")?;
        let mut out = Vec::new();
        while !self.eat("}") {
            self.stmt(&mut out)?;
        }
        Ok(out)
    }

    fn stmt_or_block(&mut self) -> PResult<Vec<Stmt>> {
        if self.is_punct("{") {
            self.block()
        } else {
            let mut out = Vec::new();
            self.stmt(&mut out)?;
            Ok(out)
        }
    }

    fn stmt(&mut self, out: &mut Vec<Stmt>) -> PResult<()> {
        if self.eat(";") {
            return Ok(());
        }
        if self.is_punct("{") {
            out.extend(self.block()?);
            return Ok(());
        }
        if self.is_ident("if") {
            self.pos += 1;
            self.expect("(")?;
            let cond = self.expr()?;
            self.expect(")")?;
            let then = self.stmt_or_block()?;
            let els = if self.is_ident("else") {
                self.pos += 1;
                self.stmt_or_block()?
            } else {
                Vec::new()
            };
            out.push(Stmt::If { cond, then, els });
            return Ok(());
        }
        if self.is_punct("*") {
            return self.err("plain accesses (`*x = ...`) are not supported");
        }
        if self.is_punct("(") && matches!(self.peek_at(1), Some(Tok::Ident(s)) if s == "void") {
            self.pos += 2;
            self.expect(")")?;
        }
        let first = self.ident()?;
        if Self::is_type_word(&first) {
            while matches!(self.peek(), Some(Tok::Ident(s)) if Self::is_type_word(s)) {
                self.pos += 1;
            }
            while self.eat("*") {}
            let name = self.ident()?;
            let r = self.reg(&name);
            if self.eat("=") {
                self.assignment(r, out)?;
            }
            return self.expect(";");
        }
        if self.is_punct("(") {
            self.pos += 1;
            self.call(&first, None, out)?;
            return self.expect(";");
        }
        if self.eat("=") {
            if self.locs.contains(&first) && !self.regs.contains(&first) {
                return self.err(format!("plain store to `{first}` is not supported"));
            }
            let r = self.reg(&first);
            self.assignment(r, out)?;
            return self.expect(";");
        }
        self.err(format!("cannot parse statement starting with `{first}`"))
    }

    fn assignment(&mut self, dst: Reg, out: &mut Vec<Stmt>) -> PResult<()> {
        if let (Some(Tok::Ident(f)), Some(Tok::Punct("("))) = (self.peek().cloned(), self.peek_at(1)) {
            self.pos += 2;
            return self.call(&f, Some(dst), out);
        }
        if self.is_punct("*") {
            return self.err("plain loads (`r = *x`) are not supported");
        }
        let val = self.expr()?;
        out.push(Stmt::Assign { dst, val });
        Ok(())
    }

    /// An address argument: `*x`, `x`, `&x` or `*r` / `r` for a pointer register.
    fn addr(&mut self) -> PResult<Addr> {
        while self.eat("*") || self.eat("&") {}
        let name = self.ident()?;
        if let Some(r) = self.regs.iter().position(|r| *r == name) {
            return Ok(Addr::Reg(r));
        }
        Ok(Addr::Loc(self.loc(&name)))
    }

    fn memory_order(&mut self) -> PResult<&'static str> {
        let s = self.ident()?;
        Ok(match s.as_str() {
            "memory_order_relaxed" => "relaxed",
            "memory_order_acquire" | "memory_order_consume" => "acquire",
            "memory_order_release" => "release",
            "memory_order_acq_rel" => "acq_rel",
            "memory_order_seq_cst" => "seq_cst",
            _ => return self.err(format!("unknown memory order `{s}`")),
        })
    }

    fn rmw_suffix(name: &str) -> (&str, RmwOrd) {
        for (suf, ord) in
            [("_relaxed", RmwOrd::Relaxed), ("_acquire", RmwOrd::Acquire), ("_release", RmwOrd::Release)]
        {
            if let Some(base) = name.strip_suffix(suf) {
                return (base, ord);
            }
        }
        (name, RmwOrd::Full)
    }

    /// After `name(`: parses the arguments and the closing `)`.
    fn call(&mut self, name: &str, dst: Option<Reg>, out: &mut Vec<Stmt>) -> PResult<()> {
        let need_dst = |p: &Parser| match dst {
            Some(d) => Ok(d),
            None => p.err(format!("`{name}` needs a destination register")),
        };
        let fence = match name {
            "smp_mb" => Some(Fence::Mb),
            "smp_rmb" => Some(Fence::Rmb),
            "smp_wmb" => Some(Fence::Wmb),
            "smp_mb__before_atomic" => Some(Fence::BeforeAtomic),
            "smp_mb__after_atomic" => Some(Fence::AfterAtomic),
            "smp_mb__after_spinlock" => Some(Fence::AfterSpinlock),
            "rcu_read_lock" => Some(Fence::RcuLock),
            "rcu_read_unlock" => Some(Fence::RcuUnlock),
            "synchronize_rcu" => Some(Fence::SyncRcu),
            _ => None,
        };
        if let Some(f) = fence {
            out.push(Stmt::Fence(f));
            return self.expect(")");
        }
        match name {
            "barrier" => {
                // A compiler barrier orders nothing between marked accesses.
                return self.expect(")");
            }
            "synchronize_srcu" | "srcu_read_lock" | "srcu_read_unlock" => {
                return self.err(format!("`{name}` (SRCU) is not supported"));
            }
            "atomic_thread_fence" => {
                let f = match self.memory_order()? {
                    "acquire" => Fence::C11Acquire,
                    "release" => Fence::C11Release,
                    "acq_rel" => Fence::C11AcqRel,
                    "seq_cst" => Fence::C11SeqCst,
                    _ => return self.err("a relaxed fence is a no-op; remove it"),
                };
                out.push(Stmt::Fence(f));
                return self.expect(")");
            }
            _ => {}
        }
        let load = match name {
            "READ_ONCE" | "rcu_dereference" | "atomic_read" => Some(LoadOrd::Once),
            "smp_load_acquire" | "atomic_read_acquire" => Some(LoadOrd::Acquire),
            _ => None,
        };
        if let Some(ord) = load {
            let addr = self.addr()?;
            out.push(Stmt::Load { dst: need_dst(self)?, addr, ord });
            return self.expect(")");
        }
        if name == "atomic_load_explicit" {
            let addr = self.addr()?;
            self.expect(",")?;
            let ord = match self.memory_order()? {
                "relaxed" => LoadOrd::Once,
                "acquire" => LoadOrd::Acquire,
                "seq_cst" => LoadOrd::Sc,
                o => return self.err(format!("a load cannot be {o}")),
            };
            out.push(Stmt::Load { dst: need_dst(self)?, addr, ord });
            return self.expect(")");
        }
        let store = match name {
            "WRITE_ONCE" | "atomic_set" => Some(StoreOrd::Once),
            "smp_store_release" | "rcu_assign_pointer" | "atomic_set_release" => Some(StoreOrd::Release),
            "smp_store_mb" => Some(StoreOrd::Once),
            _ => None,
        };
        if let Some(ord) = store {
            let addr = self.addr()?;
            self.expect(",")?;
            let val = self.expr()?;
            out.push(Stmt::Store { addr, val, ord });
            if name == "smp_store_mb" {
                out.push(Stmt::Fence(Fence::Mb));
            }
            return self.expect(")");
        }
        if name == "atomic_store_explicit" {
            let addr = self.addr()?;
            self.expect(",")?;
            let val = self.expr()?;
            self.expect(",")?;
            let ord = match self.memory_order()? {
                "relaxed" => StoreOrd::Once,
                "release" => StoreOrd::Release,
                "seq_cst" => StoreOrd::Sc,
                o => return self.err(format!("a store cannot be {o}")),
            };
            out.push(Stmt::Store { addr, val, ord });
            return self.expect(")");
        }
        if matches!(
            name,
            "atomic_exchange_explicit" | "atomic_fetch_add_explicit" | "atomic_fetch_sub_explicit"
        ) {
            let addr = self.addr()?;
            self.expect(",")?;
            let v = self.expr()?;
            self.expect(",")?;
            let ord = match self.memory_order()? {
                "relaxed" => RmwOrd::Relaxed,
                "acquire" => RmwOrd::Acquire,
                "release" => RmwOrd::Release,
                "acq_rel" => RmwOrd::AcqRel,
                _ => RmwOrd::Sc,
            };
            let op = match name {
                "atomic_exchange_explicit" => RmwOp::Xchg(v),
                "atomic_fetch_add_explicit" => RmwOp::Add { delta: v, ret_new: false },
                _ => RmwOp::Add {
                    delta: Expr::Bin(BinOp::Sub, Box::new(Expr::Const(0)), Box::new(v)),
                    ret_new: false,
                },
            };
            out.push(Stmt::Rmw { dst: Some(self.result_reg(dst)), addr, op, ord });
            return self.expect(")");
        }
        match name {
            "spin_lock" => {
                let a = self.addr()?;
                out.push(Stmt::Lock(a));
                return self.expect(")");
            }
            "spin_unlock" => {
                let a = self.addr()?;
                out.push(Stmt::Unlock(a));
                return self.expect(")");
            }
            "spin_is_locked" => {
                let a = self.addr()?;
                out.push(Stmt::IsLocked { dst: need_dst(self)?, addr: a });
                return self.expect(")");
            }
            _ => {}
        }
        self.kernel_rmw(name, dst, out)
    }

    /// The register a value-returning RMW writes: `dst`, or a hidden one when the statement
    /// discards the value (`xchg_relaxed(x, 1);`). A `None` destination in [`Stmt::Rmw`] means a
    /// non-value-returning atomic, whose read is LKMM's `Noreturn` (not ordered by `smp_rmb`);
    /// discarding the value of `xchg` does not make it one.
    fn result_reg(&mut self, dst: Option<Reg>) -> Reg {
        dst.unwrap_or_else(|| self.reg("<discarded>"))
    }

    fn kernel_rmw(&mut self, name: &str, dst: Option<Reg>, out: &mut Vec<Stmt>) -> PResult<()> {
        let (base, ord) = Self::rmw_suffix(name);
        let neg = |e: Expr| Expr::Bin(BinOp::Sub, Box::new(Expr::Const(0)), Box::new(e));
        let (addr, op, ord) = match base {
            "xchg" | "atomic_xchg" => {
                let a = self.addr()?;
                self.expect(",")?;
                (a, RmwOp::Xchg(self.expr()?), ord)
            }
            "cmpxchg" | "atomic_cmpxchg" => {
                let a = self.addr()?;
                self.expect(",")?;
                let old = self.expr()?;
                self.expect(",")?;
                (a, RmwOp::CmpXchg { old, new: self.expr()? }, ord)
            }
            "atomic_add_return" | "atomic_sub_return" | "atomic_fetch_add" | "atomic_fetch_sub"
            | "atomic_add" | "atomic_sub" => {
                let d = self.expr()?;
                self.expect(",")?;
                let a = self.addr()?;
                let delta = if base.contains("sub") { neg(d) } else { d };
                let ret_new = base.ends_with("_return");
                // The non-value-returning atomic_add()/atomic_sub() are unordered.
                let ord = if dst.is_none() && !base.contains("return") && !base.contains("fetch") {
                    RmwOrd::Relaxed
                } else {
                    ord
                };
                (a, RmwOp::Add { delta, ret_new }, ord)
            }
            "atomic_inc_return" | "atomic_dec_return" | "atomic_fetch_inc" | "atomic_fetch_dec"
            | "atomic_inc" | "atomic_dec" => {
                let a = self.addr()?;
                let delta = Expr::Const(if base.contains("dec") { -1 } else { 1 });
                let ret_new = base.ends_with("_return");
                let plain = base == "atomic_inc" || base == "atomic_dec";
                (a, RmwOp::Add { delta, ret_new }, if plain { RmwOrd::Relaxed } else { ord })
            }
            "atomic_add_unless" => {
                let a = self.addr()?;
                self.expect(",")?;
                let delta = self.expr()?;
                self.expect(",")?;
                (a, RmwOp::AddUnless { delta, unless: self.expr()? }, ord)
            }
            _ => return self.err(format!("unknown primitive `{name}`")),
        };
        let noreturn = matches!(base, "atomic_inc" | "atomic_dec" | "atomic_add" | "atomic_sub");
        let dst = if noreturn { None } else { Some(self.result_reg(dst)) };
        out.push(Stmt::Rmw { dst, addr, op, ord });
        self.expect(")")
    }

    fn expr(&mut self) -> PResult<Expr> {
        self.binary(0)
    }

    fn binary(&mut self, level: usize) -> PResult<Expr> {
        const LEVELS: &[&[(&str, BinOp)]] = &[
            &[("||", BinOp::LOr)],
            &[("&&", BinOp::LAnd)],
            &[("|", BinOp::Or)],
            &[("^", BinOp::Xor)],
            &[("&", BinOp::And)],
            &[("==", BinOp::Eq), ("!=", BinOp::Ne)],
            &[("<=", BinOp::Le), (">=", BinOp::Ge), ("<", BinOp::Lt), (">", BinOp::Gt)],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        'outer: loop {
            for (p, op) in LEVELS[level] {
                if self.eat(p) {
                    let rhs = self.binary(level + 1)?;
                    lhs = Expr::Bin(*op, Box::new(lhs), Box::new(rhs));
                    continue 'outer;
                }
            }
            return Ok(lhs);
        }
    }

    fn unary(&mut self) -> PResult<Expr> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Expr::Bin(BinOp::Sub, Box::new(Expr::Const(0)), Box::new(self.unary()?)));
        }
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        if self.eat("&") {
            let n = self.ident()?;
            return Ok(Expr::Const(loc_value(self.loc(&n))));
        }
        if self.is_punct("*") {
            return self.err("plain loads (`*x`) are not supported");
        }
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Expr::Const(n))
            }
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                if let Some(r) = self.regs.iter().position(|r| *r == s) {
                    Ok(Expr::Reg(r))
                } else if self.locs.contains(&s) {
                    Ok(Expr::Const(loc_value(self.loc(&s))))
                } else {
                    self.err(format!("unknown name `{s}` (declare registers before use)"))
                }
            }
            t => self.err(format!("expected an expression, found {t:?}")),
        }
    }

    /// The final condition's proposition: `/\`, `\/`, `~`, parentheses, `T:r=v`, `x=v`.
    fn prop(&mut self, threads: &[Thread]) -> PResult<Prop> {
        let mut lhs = self.prop_and(threads)?;
        while self.eat("\\/") {
            lhs = Prop::Or(Box::new(lhs), Box::new(self.prop_and(threads)?));
        }
        Ok(lhs)
    }

    fn prop_and(&mut self, threads: &[Thread]) -> PResult<Prop> {
        let mut lhs = self.prop_atom(threads)?;
        while self.eat("/\\") {
            lhs = Prop::And(Box::new(lhs), Box::new(self.prop_atom(threads)?));
        }
        Ok(lhs)
    }

    fn prop_atom(&mut self, threads: &[Thread]) -> PResult<Prop> {
        if self.eat("~")
            || self.is_ident("not") && {
                self.pos += 1;
                true
            }
        {
            return Ok(Prop::Not(Box::new(self.prop_atom(threads)?)));
        }
        if self.eat("(") {
            if self.eat(")") {
                return Ok(Prop::True);
            }
            let p = self.prop(threads)?;
            self.expect(")")?;
            return Ok(p);
        }
        if self.is_ident("true") {
            self.pos += 1;
            return Ok(Prop::True);
        }
        let target = if let Some(Tok::Num(t)) = self.peek().cloned() {
            self.pos += 1;
            self.expect(":")?;
            let r = self.ident()?;
            let t = t as usize;
            let Some(th) = threads.get(t) else { return self.err(format!("no thread {t}")) };
            let Some(ri) = th.regs.iter().position(|x| *x == r) else {
                return self.err(format!("thread {t} has no register `{r}`"));
            };
            Target::Reg(t, ri)
        } else {
            let l = self.ident()?;
            match self.locs.iter().position(|x| *x == l) {
                Some(i) => Target::Loc(i),
                None => return self.err(format!("unknown location `{l}`")),
            }
        };
        if !self.eat("=") {
            self.expect("==")?;
        }
        let v = if let Some(Tok::Ident(s)) = self.peek().cloned() {
            self.pos += 1;
            match self.locs.iter().position(|x| *x == s) {
                Some(i) => loc_value(i),
                None => return self.err(format!("unknown location `{s}`")),
            }
        } else {
            self.number()?
        };
        Ok(Prop::Eq(target, v))
    }
}

/// Reads `Result:`, `Expect:` and `Source:` lines from the header comments.
fn metadata(comments: &[String]) -> Result<(BTreeMap<Model, Verdict>, Option<String>), String> {
    let mut expect = BTreeMap::new();
    let mut source = None;
    for c in comments {
        for line in c.lines() {
            let line = line.trim().trim_start_matches('*').trim();
            if let Some(v) = line.strip_prefix("Result:") {
                let v = v.trim();
                let v = Verdict::parse(v).ok_or_else(|| format!("bad Result: {v}"))?;
                expect.insert(Model::Lkmm, v);
            } else if let Some(list) = line.strip_prefix("Expect:") {
                for item in list.split_whitespace() {
                    let (m, v) = item.split_once('=').ok_or_else(|| format!("bad Expect item {item}"))?;
                    let m = Model::parse(m).ok_or_else(|| format!("unknown model {m}"))?;
                    let v = Verdict::parse(v).ok_or_else(|| format!("bad verdict {v}"))?;
                    expect.insert(m, v);
                }
            } else if let Some(s) = line.strip_prefix("Source:") {
                source = Some(s.trim().to_string());
            }
        }
    }
    Ok((expect, source))
}

/// Parses one litmus test.
pub fn parse(src: &str) -> Result<Test, ParseError> {
    let lx = lex(src)?;
    let (expect, source) = metadata(&lx.comments).map_err(|msg| ParseError { line: 1, msg })?;
    let mut p = Parser {
        toks: lx.toks,
        pos: 0,
        locs: Vec::new(),
        init: Vec::new(),
        regs: Vec::new(),
        reg_init: Vec::new(),
    };
    let arch = p.ident()?;
    if arch != "C" {
        return p.err("only C litmus tests are supported");
    }
    let mut name = String::new();
    while !p.is_punct("{") {
        match p.peek().cloned() {
            Some(Tok::Ident(s)) => name.push_str(&s),
            Some(Tok::Num(n)) => name.push_str(&n.to_string()),
            Some(Tok::Punct(s)) => name.push_str(s),
            None => return p.err("missing init section"),
        }
        p.pos += 1;
    }
    p.init_section()?;
    let mut threads = Vec::new();
    while let Some(Tok::Ident(s)) = p.peek().cloned() {
        let Some(idx) = s.strip_prefix('P').and_then(|n| n.parse::<usize>().ok()) else { break };
        if idx != threads.len() {
            return p.err(format!("thread P{idx} out of order"));
        }
        p.pos += 1;
        threads.push(p.thread()?);
    }
    if threads.is_empty() {
        return p.err("no threads");
    }
    for (t, r, v) in std::mem::take(&mut p.reg_init) {
        let Some(th) = threads.get_mut(t) else { return p.err(format!("no thread {t}")) };
        match th.regs.iter().position(|x| *x == r) {
            Some(i) => th.reg_init[i] = v,
            None => return p.err(format!("thread {t} has no register `{r}`")),
        }
    }
    let mut filter = None;
    let mut cond = None;
    while p.peek().is_some() {
        if p.is_ident("locations") {
            while !p.eat("]") {
                p.pos += 1;
                if p.peek().is_none() {
                    return p.err("unterminated locations");
                }
            }
        } else if p.is_ident("filter") {
            p.pos += 1;
            filter = Some(p.prop(&threads)?);
        } else if p.eat("~") {
            if !p.is_ident("exists") {
                return p.err("expected `exists` after `~`");
            }
            p.pos += 1;
            cond = Some((Quantifier::NotExists, p.prop(&threads)?));
        } else if p.is_ident("exists") || p.is_ident("forall") {
            let q = if p.is_ident("exists") { Quantifier::Exists } else { Quantifier::Forall };
            p.pos += 1;
            cond = Some((q, p.prop(&threads)?));
        } else {
            return p.err(format!("unexpected {:?} after the threads", p.peek()));
        }
    }
    let Some((quantifier, prop)) = cond else { return p.err("missing final condition") };
    Ok(Test {
        name: name.trim().to_string(),
        locs: p.locs,
        init: p.init,
        threads,
        filter,
        quantifier,
        prop,
        expect,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_message_passing() {
        let t = parse(
            "C MP\n(* Result: Never\n Expect: sc=Never *)\n{}\nP0(int *x, int *y) { WRITE_ONCE(*x, 1); smp_wmb(); \
             WRITE_ONCE(*y, 1); }\nP1(int *x, int *y) { int r0; int r1; r0 = READ_ONCE(*y); smp_rmb(); r1 = \
             READ_ONCE(*x); }\nexists (1:r0=1 /\\ 1:r1=0)\n",
        )
        .unwrap();
        assert_eq!(t.name, "MP");
        assert_eq!(t.locs, ["x", "y"]);
        assert_eq!(t.threads.len(), 2);
        assert_eq!(t.threads[0].body.len(), 3);
        assert_eq!(t.expect[&Model::Lkmm], Verdict::Never);
        assert_eq!(t.expect[&Model::Sc], Verdict::Never);
        assert_eq!(t.quantifier, Quantifier::Exists);
    }

    /// Only the non-value-returning atomics are `Noreturn`: a value-returning RMW whose value
    /// is discarded still returns one (it caught LKMM ignoring `smp_rmb` after `xchg_relaxed(y, 2);`).
    #[test]
    fn discarded_rmw_values_are_not_noreturn() {
        let t = parse(
            "C t\n{}\nP0(int *x, int *y) { xchg_relaxed(y, 2); atomic_inc(x); \
             atomic_fetch_add_explicit(x, 1, memory_order_relaxed); }\nexists (x=1)\n",
        )
        .unwrap();
        let dsts: Vec<bool> = t.threads[0]
            .body
            .iter()
            .map(|s| match s {
                Stmt::Rmw { dst, .. } => dst.is_some(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(dsts, [true, false, true]);
    }

    #[test]
    fn rejects_plain_accesses() {
        let e = parse("C t\n{}\nP0(int *x) { *x = 1; }\nexists (x=1)\n").unwrap_err();
        assert!(e.msg.contains("plain"), "{e}");
    }
}
