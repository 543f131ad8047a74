//! Cross-check of the enumerator and of two models against operational machines: on every test
//! of the suite that SC (x86-TSO) can judge, the axiomatic verdict (exhaustive candidate
//! executions judged by `model.rs`) equals the verdict of an interleaving interpreter that knows
//! nothing of events, reads-from or coherence: plain interleaving of statements for SC, and for
//! x86-TSO the store-buffer machine of Owens, Sarkar and Sewell (a FIFO buffer per thread, loads
//! forwarding from their own buffer, locked instructions and `mfence` waiting for it to drain).
//! A candidate the enumerator wrongly drops or invents, or a wrong TSO axiom, shows up here as a
//! different verdict.

use mmusync_memmodel::ast::{
    value_loc, Addr, BinOp, Expr, Fence, Prop, RmwOp, Stmt, StoreOrd, Target, Test, Value,
};
use mmusync_memmodel::suite::{litmus_dir, run_dir};
use mmusync_memmodel::{Model, Verdict};
use std::collections::HashSet;

enum Ins<'a> {
    S(&'a Stmt),
    JumpIfZero(&'a Expr, usize),
    Jump(usize),
}

fn flatten<'a>(body: &'a [Stmt], out: &mut Vec<Ins<'a>>) {
    for s in body {
        if let Stmt::If { cond, then, els } = s {
            let j = out.len();
            out.push(Ins::Jump(0));
            flatten(then, out);
            let k = out.len();
            out.push(Ins::Jump(0));
            out[j] = Ins::JumpIfZero(cond, out.len());
            flatten(els, out);
            out[k] = Ins::Jump(out.len());
        } else {
            out.push(Ins::S(s));
        }
    }
}

fn eval(e: &Expr, regs: &[Value]) -> Value {
    match e {
        Expr::Const(v) => *v,
        Expr::Reg(r) => regs[*r],
        Expr::Not(a) => (eval(a, regs) == 0) as Value,
        Expr::Bin(op, a, b) => {
            let (x, y) = (eval(a, regs), eval(b, regs));
            match op {
                BinOp::Add => x.wrapping_add(y),
                BinOp::Sub => x.wrapping_sub(y),
                BinOp::And => x & y,
                BinOp::Or => x | y,
                BinOp::Xor => x ^ y,
                BinOp::Eq => (x == y) as Value,
                BinOp::Ne => (x != y) as Value,
                BinOp::Lt => (x < y) as Value,
                BinOp::Gt => (x > y) as Value,
                BinOp::Le => (x <= y) as Value,
                BinOp::Ge => (x >= y) as Value,
                BinOp::LAnd => (x != 0 && y != 0) as Value,
                BinOp::LOr => (x != 0 || y != 0) as Value,
            }
        }
    }
}

fn holds(p: &Prop, regs: &[Vec<Value>], mem: &[Value]) -> bool {
    match p {
        Prop::True => true,
        Prop::Eq(Target::Reg(t, r), v) => regs[*t][*r] == *v,
        Prop::Eq(Target::Loc(l), v) => mem[*l] == *v,
        Prop::And(a, b) => holds(a, regs, mem) && holds(b, regs, mem),
        Prop::Or(a, b) => holds(a, regs, mem) || holds(b, regs, mem),
        Prop::Not(a) => !holds(a, regs, mem),
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct State {
    pcs: Vec<usize>,
    regs: Vec<Vec<Value>>,
    mem: Vec<Value>,
    /// Per thread, its store buffer (oldest first); always empty under SC.
    buf: Vec<Vec<(usize, Value)>>,
}

/// Runs one statement of thread `t`; `None` when it is blocked (a held lock, an address that is
/// not a location, or under TSO a locked instruction or `mfence` with a non-empty buffer).
fn step(test: &Test, code: &[Ins], t: usize, st: &State, tso: bool) -> Option<State> {
    let mut s = st.clone();
    let nlocs = test.locs.len();
    let drained = s.buf[t].is_empty();
    // A load sees the thread's newest buffered store to its location, else memory.
    let read = |s: &State, l: usize| s.buf[t].iter().rev().find(|e| e.0 == l).map_or(s.mem[l], |e| e.1);
    let regs = &mut s.regs[t];
    let loc = |a: &Addr, regs: &[Value]| match a {
        Addr::Loc(l) => Some(*l),
        Addr::Reg(r) => value_loc(regs[*r], nlocs),
    };
    let pc = s.pcs[t];
    s.pcs[t] = pc + 1;
    match &code[pc] {
        Ins::Jump(to) => s.pcs[t] = *to,
        Ins::JumpIfZero(c, to) => {
            if eval(c, regs) == 0 {
                s.pcs[t] = *to;
            }
        }
        Ins::S(stmt) => match stmt {
            Stmt::Load { dst, addr, .. } => {
                let l = loc(addr, regs)?;
                regs[*dst] = read(st, l);
            }
            Stmt::Store { addr, val, ord } => {
                let l = loc(addr, regs)?;
                let v = eval(val, regs);
                // A C11 seq_cst store is an `xchg` on x86: locked.
                if !tso || *ord == StoreOrd::Sc {
                    if !drained {
                        return None;
                    }
                    s.mem[l] = v;
                } else {
                    s.buf[t].push((l, v));
                }
            }
            Stmt::Rmw { dst, addr, op, .. } => {
                if !drained {
                    return None;
                }
                let l = loc(addr, regs)?;
                let old = s.mem[l];
                let (new, ret) = match op {
                    RmwOp::Xchg(e) => (Some(eval(e, regs)), old),
                    RmwOp::CmpXchg { old: o, new } => {
                        (if eval(o, regs) == old { Some(eval(new, regs)) } else { None }, old)
                    }
                    RmwOp::Add { delta, ret_new } => {
                        let n = old.wrapping_add(eval(delta, regs));
                        (Some(n), if *ret_new { n } else { old })
                    }
                    RmwOp::AddUnless { delta, unless } => {
                        if old == eval(unless, regs) {
                            (None, 0)
                        } else {
                            (Some(old.wrapping_add(eval(delta, regs))), 1)
                        }
                    }
                };
                if let Some(n) = new {
                    s.mem[l] = n;
                }
                if let Some(d) = dst {
                    regs[*d] = ret;
                }
            }
            Stmt::Fence(Fence::Mb | Fence::C11SeqCst) if !drained => return None,
            Stmt::Fence(_) => {}
            Stmt::Lock(a) => {
                let l = loc(a, regs)?;
                if !drained || s.mem[l] != 0 {
                    return None;
                }
                s.mem[l] = 1;
            }
            Stmt::Unlock(a) => {
                let l = loc(a, regs)?;
                if tso {
                    s.buf[t].push((l, 0));
                } else {
                    s.mem[l] = 0;
                }
            }
            Stmt::IsLocked { dst, addr } => {
                let l = loc(addr, regs)?;
                regs[*dst] = (read(st, l) != 0) as Value;
            }
            Stmt::Assign { dst, val } => regs[*dst] = eval(val, regs),
            Stmt::If { .. } => unreachable!("flattened"),
        },
    }
    Some(s)
}

/// The SC (or x86-TSO) verdict by interleaving whole statements (and, under TSO, the draining
/// of store buffers).
fn operational(test: &Test, tso: bool) -> Verdict {
    let code: Vec<Vec<Ins>> = test
        .threads
        .iter()
        .map(|t| {
            let mut v = Vec::new();
            flatten(&t.body, &mut v);
            v
        })
        .collect();
    let start = State {
        pcs: vec![0; code.len()],
        regs: test.threads.iter().map(|t| t.reg_init.clone()).collect(),
        mem: test.init.clone(),
        buf: vec![Vec::new(); code.len()],
    };
    let (mut seen, mut stack) = (HashSet::new(), vec![start]);
    let (mut yes, mut no) = (false, false);
    while let Some(st) = stack.pop() {
        if !seen.insert(st.clone()) {
            continue;
        }
        if (0..code.len()).all(|t| st.pcs[t] == code[t].len() && st.buf[t].is_empty()) {
            if test.filter.as_ref().is_none_or(|f| holds(f, &st.regs, &st.mem)) {
                if holds(&test.prop, &st.regs, &st.mem) {
                    yes = true;
                } else {
                    no = true;
                }
            }
            continue;
        }
        for (t, c) in code.iter().enumerate() {
            if st.pcs[t] < c.len() {
                if let Some(next) = step(test, c, t, &st, tso) {
                    stack.push(next);
                }
            }
            if !st.buf[t].is_empty() {
                let mut next = st.clone();
                let (l, v) = next.buf[t].remove(0);
                next.mem[l] = v;
                stack.push(next);
            }
        }
    }
    match (yes, no) {
        (false, _) => Verdict::Never,
        (true, true) => Verdict::Sometimes,
        (true, false) => Verdict::Always,
    }
}

#[test]
fn axiomatic_sc_and_tso_match_their_machines_on_every_suite_test() {
    let mut checked = 0;
    for e in run_dir(&litmus_dir()).expect("litmus directory") {
        let Ok(j) = &e.result else { continue };
        for (m, tso) in [(Model::Sc, false), (Model::Tso, true)] {
            let Some(axiomatic) = j.verdict(m) else { continue };
            assert_eq!(operational(&j.test, tso), axiomatic, "{}: {m}", e.file);
            checked += 1;
        }
    }
    assert!(checked >= 150, "{checked} verdicts checked");
}
