//! Candidate executions: from a program to events, reads-from and coherence order.
//!
//! The enumeration has three layers, each pruning before the next:
//!
//! 1. **Value domains.** Each location's possible values start as its initial value; every
//!    thread is run with each read returning any value of its location's domain, and the values
//!    the runs write are added, until nothing changes or for as many rounds as the program has
//!    write statements. Programs are loop-free, so a write runs at most once per execution and
//!    a value that some execution really writes is computed from at most that many earlier
//!    writes: it is in the domain after that many rounds. (A counter's `v + 1` would otherwise
//!    grow forever from values no execution produces.)
//! 2. **Thread traces.** Each thread is run once per choice of read values (from the final
//!    domains). A run is a list of events with their values, its address, data and control
//!    dependencies (tracked as the set of reads each register's value came from), its RMW
//!    pairs and its final registers. `spin_lock` reads only 0: a lock that is never acquired is
//!    an execution that does not terminate, which litmus tests do not count.
//! 3. **Communication.** For one trace per thread, every coherence order per location (initial
//!    write first, a thread's own writes in program order) is tried; for each, a read of an RMW
//!    must read from the write just before the RMW's write (atomicity), and other reads choose
//!    any same-location write of the same value that is not after them in program order. Each
//!    candidate is checked for SC-per-location (`acyclic(po-loc | rf | co | fr)`), which all five
//!    models require, before any model sees it.
//!
//! What is left is handed to [`crate::model::consistent`] for each model, and the final
//! condition is evaluated on the allowed ones.

use crate::ast::*;
use crate::model;
use crate::rel::{members, Rel, Set, MAX_EVENTS};
use std::collections::BTreeSet;

/// What an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A read of a location.
    Read,
    /// A write of a location (including the initial writes).
    Write,
    /// A fence.
    Fence(Fence),
}

/// Event tag: acquire read (`smp_load_acquire`, acquire RMWs, lock acquisition; C11
/// acquire and seq_cst).
pub const ACQ: u16 = 1;
/// Event tag: release write (`smp_store_release`, release RMWs, unlock; C11 release and
/// seq_cst).
pub const REL: u16 = 1 << 1;
/// Event tag: C11 `seq_cst` access.
pub const SC: u16 = 1 << 2;
/// Event tag: the read of a non-value-returning kernel atomic (LKMM's `Noreturn`).
pub const NORETURN: u16 = 1 << 3;
/// Event tag: the read of `spin_lock` (LKMM's `LKR`).
pub const LKR: u16 = 1 << 4;
/// Event tag: the write of `spin_lock` (LKMM's `LKW`).
pub const LKW: u16 = 1 << 5;
/// Event tag: the write of `spin_unlock` (LKMM's `UL`).
pub const UL: u16 = 1 << 6;
/// Event tag: part of an atomic RMW instruction, successful or not (a `lock`-prefixed
/// instruction on x86).
pub const ATOMIC: u16 = 1 << 7;
/// Event tag: the lone read of a failed compare-exchange or `atomic_add_unless`.
pub const FAILED: u16 = 1 << 8;

/// One event of a candidate execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The thread, or `None` for an initial write.
    pub thread: Option<usize>,
    /// Read, write or fence.
    pub kind: Kind,
    /// The location (meaningless for fences).
    pub loc: usize,
    /// The value read or written.
    pub val: Value,
    /// Tags (`ACQ`, `REL`, ...).
    pub tags: u16,
}

/// Why a test could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thread's events under one choice of read values.
#[derive(Clone, Debug)]
struct Trace {
    evs: Vec<Event>,
    /// Per event: the reads (local indices) its address, data and control depend on.
    addr: Vec<u64>,
    data: Vec<u64>,
    ctrl: Vec<u64>,
    /// (read, write) local indices of RMWs.
    rmw: Vec<(usize, usize)>,
    regs: Vec<Value>,
}

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
            if els.is_empty() {
                out[j] = Ins::JumpIfZero(cond, out.len());
            } else {
                let k = out.len();
                out.push(Ins::Jump(0));
                out[j] = Ins::JumpIfZero(cond, out.len());
                flatten(els, out);
                out[k] = Ins::Jump(out.len());
            }
        } else {
            out.push(Ins::S(s));
        }
    }
}

fn eval(e: &Expr, regs: &[(Value, u64)]) -> (Value, u64) {
    match e {
        Expr::Const(v) => (*v, 0),
        Expr::Reg(r) => regs[*r],
        Expr::Not(a) => {
            let (v, d) = eval(a, regs);
            ((v == 0) as Value, d)
        }
        Expr::Bin(op, a, b) => {
            let ((x, dx), (y, dy)) = (eval(a, regs), eval(b, regs));
            let v = match op {
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
            };
            (v, dx | dy)
        }
    }
}

/// Upper bounds that keep the enumeration small; a test beyond them is reported unsupported.
const MAX_TRACES: usize = 4096;
const MAX_DOMAIN: usize = 16;

#[derive(Clone)]
struct State {
    regs: Vec<(Value, u64)>,
    ctrl: u64,
    tr: Trace,
}

struct Runner<'a> {
    ins: &'a [Ins<'a>],
    nlocs: usize,
    domain: &'a [BTreeSet<Value>],
}

impl Runner<'_> {
    fn push(st: &mut State, ev: Event, addr: u64, data: u64) -> usize {
        st.tr.evs.push(ev);
        st.tr.addr.push(addr);
        st.tr.data.push(data);
        st.tr.ctrl.push(st.ctrl);
        st.tr.evs.len() - 1
    }

    fn resolve(&self, a: Addr, st: &State) -> Option<(usize, u64)> {
        match a {
            Addr::Loc(l) => Some((l, 0)),
            Addr::Reg(r) => {
                let (v, d) = st.regs[r];
                value_loc(v, self.nlocs).map(|l| (l, d))
            }
        }
    }

    fn run(&self, pc: usize, mut st: State, thread: usize, out: &mut Vec<Trace>) -> Result<(), Unsupported> {
        if out.len() > MAX_TRACES {
            return Err(Unsupported(format!("more than {MAX_TRACES} runs of thread {thread}")));
        }
        // One statement adds at most four events (a fully ordered RMW and its two fences).
        if st.tr.evs.len() + 4 > MAX_EVENTS {
            return Err(Unsupported(format!("thread {thread} has more than {MAX_EVENTS} events")));
        }
        let Some(ins) = self.ins.get(pc) else {
            st.tr.regs = st.regs.iter().map(|r| r.0).collect();
            out.push(st.tr);
            return Ok(());
        };
        let ev = |kind, loc, val, tags| Event { thread: Some(thread), kind, loc, val, tags };
        let s = match ins {
            Ins::Jump(t) => return self.run(*t, st, thread, out),
            Ins::JumpIfZero(c, t) => {
                let (v, d) = eval(c, &st.regs);
                st.ctrl |= d;
                return self.run(if v == 0 { *t } else { pc + 1 }, st, thread, out);
            }
            Ins::S(s) => *s,
        };
        match s {
            Stmt::Load { dst, addr, ord } => {
                let Some((l, ad)) = self.resolve(*addr, &st) else { return Ok(()) };
                let tags = match ord {
                    LoadOrd::Once => 0,
                    LoadOrd::Acquire => ACQ,
                    LoadOrd::Sc => ACQ | SC,
                };
                for &v in &self.domain[l] {
                    let mut st = st.clone();
                    let i = Self::push(&mut st, ev(Kind::Read, l, v, tags), ad, 0);
                    st.regs[*dst] = (v, 1 << i);
                    self.run(pc + 1, st, thread, out)?;
                }
                Ok(())
            }
            Stmt::IsLocked { dst, addr } => {
                let Some((l, ad)) = self.resolve(*addr, &st) else { return Ok(()) };
                for &v in &self.domain[l] {
                    let mut st = st.clone();
                    let i = Self::push(&mut st, ev(Kind::Read, l, v, 0), ad, 0);
                    st.regs[*dst] = ((v != 0) as Value, 1 << i);
                    self.run(pc + 1, st, thread, out)?;
                }
                Ok(())
            }
            Stmt::Store { addr, val, ord } => {
                let Some((l, ad)) = self.resolve(*addr, &st) else { return Ok(()) };
                let (v, d) = eval(val, &st.regs);
                let tags = match ord {
                    StoreOrd::Once => 0,
                    StoreOrd::Release => REL,
                    StoreOrd::Sc => REL | SC,
                };
                Self::push(&mut st, ev(Kind::Write, l, v, tags), ad, d);
                self.run(pc + 1, st, thread, out)
            }
            Stmt::Fence(f) => {
                Self::push(&mut st, ev(Kind::Fence(*f), 0, 0, 0), 0, 0);
                self.run(pc + 1, st, thread, out)
            }
            Stmt::Assign { dst, val } => {
                st.regs[*dst] = eval(val, &st.regs);
                self.run(pc + 1, st, thread, out)
            }
            Stmt::Unlock(a) => {
                let Some((l, ad)) = self.resolve(*a, &st) else { return Ok(()) };
                Self::push(&mut st, ev(Kind::Write, l, 0, REL | UL), ad, 0);
                self.run(pc + 1, st, thread, out)
            }
            Stmt::Lock(a) => {
                let Some((l, ad)) = self.resolve(*a, &st) else { return Ok(()) };
                let r = Self::push(&mut st, ev(Kind::Read, l, 0, ACQ | LKR | ATOMIC), ad, 0);
                let w = Self::push(&mut st, ev(Kind::Write, l, 1, LKW | ATOMIC), ad, 0);
                st.tr.rmw.push((r, w));
                self.run(pc + 1, st, thread, out)
            }
            Stmt::Rmw { dst, addr, op, ord } => {
                let Some((l, ad)) = self.resolve(*addr, &st) else { return Ok(()) };
                for &old in &self.domain[l] {
                    let mut st = st.clone();
                    // (value written, its data dependencies, value returned), or None if the
                    // operation fails and only reads.
                    let (write, ret) = match op {
                        RmwOp::Xchg(e) => (Some(eval(e, &st.regs)), old),
                        RmwOp::CmpXchg { old: o, new } => {
                            let (ov, od) = eval(o, &st.regs);
                            if ov == old {
                                let (nv, nd) = eval(new, &st.regs);
                                (Some((nv, nd | od)), old)
                            } else {
                                (None, old)
                            }
                        }
                        RmwOp::Add { delta, ret_new } => {
                            let (dv, dd) = eval(delta, &st.regs);
                            let nv = old.wrapping_add(dv);
                            (Some((nv, dd)), if *ret_new { nv } else { old })
                        }
                        RmwOp::AddUnless { delta, unless } => {
                            let (uv, _) = eval(unless, &st.regs);
                            if old == uv {
                                (None, 0)
                            } else {
                                let (dv, dd) = eval(delta, &st.regs);
                                (Some((old.wrapping_add(dv), dd)), 1)
                            }
                        }
                    };
                    let noret = if dst.is_none() { NORETURN } else { 0 };
                    let i = match write {
                        Some((nv, nd)) => {
                            let (rt, wt) = match ord {
                                RmwOrd::Relaxed | RmwOrd::Full => (0, 0),
                                RmwOrd::Acquire => (ACQ, 0),
                                RmwOrd::Release => (0, REL),
                                RmwOrd::AcqRel => (ACQ, REL),
                                RmwOrd::Sc => (ACQ | SC, REL | SC),
                            };
                            if *ord == RmwOrd::Full {
                                Self::push(&mut st, ev(Kind::Fence(Fence::Mb), 0, 0, 0), 0, 0);
                            }
                            let r = Self::push(&mut st, ev(Kind::Read, l, old, rt | ATOMIC | noret), ad, 0);
                            let w = Self::push(&mut st, ev(Kind::Write, l, nv, wt | ATOMIC), ad, nd);
                            st.tr.rmw.push((r, w));
                            if *ord == RmwOrd::Full {
                                Self::push(&mut st, ev(Kind::Fence(Fence::Mb), 0, 0, 0), 0, 0);
                            }
                            r
                        }
                        None => Self::push(&mut st, ev(Kind::Read, l, old, ATOMIC | FAILED | noret), ad, 0),
                    };
                    if let Some(d) = dst {
                        st.regs[*d] = (ret, 1 << i);
                    }
                    self.run(pc + 1, st, thread, out)?;
                }
                Ok(())
            }
            Stmt::If { .. } => unreachable!("flattened"),
        }
    }
}

/// The static part of a candidate execution: events and the relations fixed by the traces.
struct Skeleton {
    ev: Vec<Event>,
    po: Rel,
    addr: Rel,
    data: Rel,
    ctrl: Rel,
    rmw: Rel,
    same_loc: Rel,
    same_thread: Rel,
    regs: Vec<Vec<Value>>,
}

/// A candidate execution, as the models see it.
pub struct Exec<'a> {
    /// The events: initial writes first, then each thread's in program order.
    pub ev: &'a [Event],
    /// Program order (transitive, within each thread).
    pub po: Rel,
    /// Address dependencies (read → access whose address it computed).
    pub addr: Rel,
    /// Data dependencies (read → write whose value it computed).
    pub data: Rel,
    /// Control dependencies (read → every event after a branch on it).
    pub ctrl: Rel,
    /// RMW pairs (read → write of the same instruction).
    pub rmw: Rel,
    /// Pairs of memory accesses to the same location.
    pub same_loc: Rel,
    /// Pairs of events of the same thread (`int`); its complement is `ext`.
    pub same_thread: Rel,
    /// Reads-from (write → read).
    pub rf: Rel,
    /// Coherence order (strict, total per location).
    pub co: Rel,
    /// From-reads: `rf⁻¹ ; co`.
    pub fr: Rel,
}

impl Exec<'_> {
    /// Number of events.
    pub fn n(&self) -> usize {
        self.ev.len()
    }

    /// The events satisfying `pred`.
    pub fn set(&self, pred: impl Fn(&Event) -> bool) -> Set {
        self.ev.iter().enumerate().filter(|(_, e)| pred(e)).fold(0, |s, (i, _)| s | 1 << i)
    }

    /// Reads.
    pub fn reads(&self) -> Set {
        self.set(|e| e.kind == Kind::Read)
    }

    /// Writes (including the initial ones).
    pub fn writes(&self) -> Set {
        self.set(|e| e.kind == Kind::Write)
    }

    /// Memory accesses.
    pub fn mem(&self) -> Set {
        self.set(|e| matches!(e.kind, Kind::Read | Kind::Write))
    }

    /// Accesses carrying every tag in `tags`.
    pub fn tagged(&self, tags: u16) -> Set {
        self.set(|e| !matches!(e.kind, Kind::Fence(_)) && e.tags & tags == tags)
    }

    /// Fences for which `pred` holds.
    pub fn fences(&self, pred: impl Fn(Fence) -> bool) -> Set {
        self.set(|e| matches!(e.kind, Kind::Fence(f) if pred(f)))
    }

    /// `po ; [s] ; po`: pairs separated by an event of `s` (LKMM's `fencerel`).
    pub fn fencerel(&self, s: Set) -> Rel {
        self.po.restrict(self.po.all(), s).seq(&self.po)
    }

    /// `[s]`.
    pub fn id(&self, s: Set) -> Rel {
        Rel::id(self.n(), s)
    }

    /// Pairs of events of different threads (`ext`).
    pub fn ext(&self) -> Rel {
        Rel::product(self.n(), self.po.all(), self.po.all()) - self.same_thread
    }
}

/// The result of checking a test under one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Which allowed executions satisfy the condition's proposition.
    pub verdict: Verdict,
    /// Allowed executions (after the filter).
    pub allowed: usize,
    /// Allowed executions satisfying the proposition.
    pub witnesses: usize,
}

/// Runs the threads to fixpoint value domains, then collects every trace of every thread.
fn traces(test: &Test) -> Result<Vec<Vec<Trace>>, Unsupported> {
    let nlocs = test.locs.len();
    let flat: Vec<Vec<Ins>> = test
        .threads
        .iter()
        .map(|t| {
            let mut v = Vec::new();
            flatten(&t.body, &mut v);
            v
        })
        .collect();
    let mut domain: Vec<BTreeSet<Value>> = test.init.iter().map(|&v| BTreeSet::from([v])).collect();
    let writes: usize = test.threads.iter().map(|t| write_statements(&t.body)).sum();
    for round in 0..=writes {
        let mut all = Vec::new();
        for (t, ins) in flat.iter().enumerate() {
            let runner = Runner { ins, nlocs, domain: &domain };
            let regs = test.threads[t].reg_init.iter().map(|&v| (v, 0)).collect();
            let st = State {
                regs,
                ctrl: 0,
                tr: Trace {
                    evs: vec![],
                    addr: vec![],
                    data: vec![],
                    ctrl: vec![],
                    rmw: vec![],
                    regs: vec![],
                },
            };
            let mut out = Vec::new();
            runner.run(0, st, t, &mut out)?;
            all.push(out);
        }
        let mut grew = false;
        for tr in all.iter().flatten() {
            for e in &tr.evs {
                if e.kind == Kind::Write && domain[e.loc].insert(e.val) {
                    grew = true;
                    if domain[e.loc].len() > MAX_DOMAIN {
                        return Err(Unsupported(format!(
                            "location {} takes too many values",
                            test.locs[e.loc]
                        )));
                    }
                }
            }
        }
        if !grew || round == writes {
            return Ok(all);
        }
    }
    unreachable!("the last round returns")
}

/// Statements that write memory (an `if` counts both branches).
fn write_statements(body: &[Stmt]) -> usize {
    body.iter()
        .map(|s| match s {
            Stmt::Store { .. } | Stmt::Rmw { .. } | Stmt::Lock(_) | Stmt::Unlock(_) => 1,
            Stmt::If { then, els, .. } => write_statements(then) + write_statements(els),
            _ => 0,
        })
        .sum()
}

fn skeleton(test: &Test, combo: &[&Trace]) -> Result<Skeleton, Unsupported> {
    let nlocs = test.locs.len();
    let mut ev: Vec<Event> = (0..nlocs)
        .map(|l| Event { thread: None, kind: Kind::Write, loc: l, val: test.init[l], tags: 0 })
        .collect();
    let total = nlocs + combo.iter().map(|t| t.evs.len()).sum::<usize>();
    if total > MAX_EVENTS {
        return Err(Unsupported(format!("{total} events; at most {MAX_EVENTS} are supported")));
    }
    let n = total;
    let mut sk = Skeleton {
        ev: Vec::new(),
        po: Rel::empty(n),
        addr: Rel::empty(n),
        data: Rel::empty(n),
        ctrl: Rel::empty(n),
        rmw: Rel::empty(n),
        same_loc: Rel::empty(n),
        same_thread: Rel::empty(n),
        regs: Vec::new(),
    };
    for i in 0..nlocs {
        sk.same_thread.add(i, i);
    }
    for tr in combo {
        let base = ev.len();
        let k = tr.evs.len();
        for i in 0..k {
            for j in 0..k {
                sk.same_thread.add(base + i, base + j);
                if i < j {
                    sk.po.add(base + i, base + j);
                }
            }
            for (dep, rel) in
                [(tr.addr[i], &mut sk.addr), (tr.data[i], &mut sk.data), (tr.ctrl[i], &mut sk.ctrl)]
            {
                for r in members(dep) {
                    rel.add(base + r, base + i);
                }
            }
        }
        for &(r, w) in &tr.rmw {
            sk.rmw.add(base + r, base + w);
        }
        ev.extend_from_slice(&tr.evs);
        sk.regs.push(tr.regs.clone());
    }
    for i in 0..n {
        for j in 0..n {
            let mem = |e: &Event| e.kind == Kind::Read || e.kind == Kind::Write;
            if mem(&ev[i]) && mem(&ev[j]) && ev[i].loc == ev[j].loc {
                sk.same_loc.add(i, j);
            }
        }
    }
    sk.ev = ev;
    Ok(sk)
}

/// Calls `f` with every permutation of `items` that keeps `po`-ordered pairs in order.
fn orders(items: &mut Vec<usize>, k: usize, po: &Rel, f: &mut dyn FnMut(&[usize])) {
    if k == items.len() {
        f(items);
        return;
    }
    for i in k..items.len() {
        items.swap(k, i);
        let x = items[k];
        // x is placed now; nothing still unplaced may be po-before it.
        if items[k + 1..].iter().all(|&y| !po.has(y, x)) {
            orders(items, k + 1, po, f);
        }
        items.swap(k, i);
    }
}

fn eval_prop(p: &Prop, regs: &[Vec<Value>], mem: &[Value]) -> bool {
    match p {
        Prop::True => true,
        Prop::Eq(Target::Reg(t, r), v) => regs[*t][*r] == *v,
        Prop::Eq(Target::Loc(l), v) => mem[*l] == *v,
        Prop::And(a, b) => eval_prop(a, regs, mem) && eval_prop(b, regs, mem),
        Prop::Or(a, b) => eval_prop(a, regs, mem) || eval_prop(b, regs, mem),
        Prop::Not(a) => !eval_prop(a, regs, mem),
    }
}

/// Statistics of one [`check`] run, for the documentation and the performance budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Candidate executions that passed SC-per-location and atomicity.
    pub candidates: usize,
}

/// Checks `test` under each of `models`: one exhaustive enumeration, every model judged on
/// every candidate. A model that cannot express one of the test's primitives gets
/// `Err(Unsupported)`.
pub fn check(
    test: &Test,
    models: &[Model],
) -> Result<(Vec<Result<Outcome, Unsupported>>, Stats), Unsupported> {
    let per_thread = traces(test)?;
    let support: Vec<Result<(), Unsupported>> = models.iter().map(|&m| model::supports(m, test)).collect();
    let mut acc = vec![(0usize, 0usize); models.len()];
    let mut stats = Stats::default();
    let mut idx = vec![0usize; per_thread.len()];
    if per_thread.iter().any(|t| t.is_empty()) {
        return Err(Unsupported("a thread has no complete run".into()));
    }
    loop {
        let combo: Vec<&Trace> = idx.iter().enumerate().map(|(t, &i)| &per_thread[t][i]).collect();
        let sk = skeleton(test, &combo)?;
        communications(test, &sk, models, &support, &mut acc, &mut stats);
        // Next combination (odometer).
        let mut t = 0;
        loop {
            if t == idx.len() {
                let out = acc
                    .iter()
                    .zip(support)
                    .map(|(&(allowed, witnesses), s)| {
                        s.map(|()| {
                            let verdict = if witnesses == 0 {
                                Verdict::Never
                            } else if witnesses == allowed {
                                Verdict::Always
                            } else {
                                Verdict::Sometimes
                            };
                            Outcome { verdict, allowed, witnesses }
                        })
                    })
                    .collect();
                return Ok((out, stats));
            }
            idx[t] += 1;
            if idx[t] < per_thread[t].len() {
                break;
            }
            idx[t] = 0;
            t += 1;
        }
    }
}

fn communications(
    test: &Test,
    sk: &Skeleton,
    models: &[Model],
    support: &[Result<(), Unsupported>],
    acc: &mut [(usize, usize)],
    stats: &mut Stats,
) {
    let n = sk.ev.len();
    let nlocs = test.locs.len();
    let mut writes_of: Vec<Vec<usize>> = vec![Vec::new(); nlocs];
    for (i, e) in sk.ev.iter().enumerate().skip(nlocs) {
        if e.kind == Kind::Write {
            writes_of[e.loc].push(i);
        }
    }
    let reads: Vec<usize> = (0..n).filter(|&i| sk.ev[i].kind == Kind::Read).collect();
    let rmw_write: Vec<Option<usize>> = (0..n).map(|i| members(sk.rmw.row(i)).next()).collect();
    // Enumerate coherence orders location by location, then reads-from.
    let mut co_lists: Vec<Vec<Vec<usize>>> = Vec::new();
    for (l, ws) in writes_of.iter().enumerate() {
        let mut lists = Vec::new();
        let mut items = ws.clone();
        orders(&mut items, 0, &sk.po, &mut |o| {
            let mut v = vec![l];
            v.extend_from_slice(o);
            lists.push(v);
        });
        co_lists.push(lists);
    }
    let mut co_idx = vec![0usize; nlocs];
    loop {
        let mut co = Rel::empty(n);
        let mut pred = vec![None; n];
        let mut last = vec![0 as Value; nlocs];
        for l in 0..nlocs {
            let order = &co_lists[l][co_idx[l]];
            for (a, &x) in order.iter().enumerate() {
                for &y in &order[a + 1..] {
                    co.add(x, y);
                }
                if a > 0 {
                    pred[x] = Some(order[a - 1]);
                }
            }
            last[l] = sk.ev[*order.last().expect("the initial write")].val;
        }
        // Candidate writes per read.
        let mut cands: Vec<Vec<usize>> = Vec::with_capacity(reads.len());
        let mut ok = true;
        for &r in &reads {
            let e = sk.ev[r];
            let c: Vec<usize> = match rmw_write[r] {
                Some(w) => pred[w].into_iter().filter(|&p| sk.ev[p].val == e.val).collect(),
                None => (0..n)
                    .filter(|&w| {
                        let x = sk.ev[w];
                        x.kind == Kind::Write && x.loc == e.loc && x.val == e.val && !sk.po.has(r, w)
                    })
                    .collect(),
            };
            if c.is_empty() {
                ok = false;
                break;
            }
            cands.push(c);
        }
        if ok {
            let mut rf_idx = vec![0usize; reads.len()];
            loop {
                let mut rf = Rel::empty(n);
                for (k, &r) in reads.iter().enumerate() {
                    rf.add(cands[k][rf_idx[k]], r);
                }
                let fr = rf.inv().seq(&co);
                let x = Exec {
                    ev: &sk.ev,
                    po: sk.po,
                    addr: sk.addr,
                    data: sk.data,
                    ctrl: sk.ctrl,
                    rmw: sk.rmw,
                    same_loc: sk.same_loc,
                    same_thread: sk.same_thread,
                    rf,
                    co,
                    fr,
                };
                if model::sc_per_location(&x) && model::atomicity(&x) {
                    stats.candidates += 1;
                    let pass_filter = test.filter.as_ref().is_none_or(|f| eval_prop(f, &sk.regs, &last));
                    if pass_filter {
                        let holds = eval_prop(&test.prop, &sk.regs, &last);
                        for (k, &m) in models.iter().enumerate() {
                            if support[k].is_ok() && model::consistent(m, &x) {
                                acc[k].0 += 1;
                                acc[k].1 += holds as usize;
                            }
                        }
                    }
                }
                // Next rf choice.
                let mut k = 0;
                loop {
                    if k == rf_idx.len() {
                        break;
                    }
                    rf_idx[k] += 1;
                    if rf_idx[k] < cands[k].len() {
                        break;
                    }
                    rf_idx[k] = 0;
                    k += 1;
                }
                if k == rf_idx.len() {
                    break;
                }
            }
        }
        // Next coherence order.
        let mut l = 0;
        loop {
            if l == nlocs {
                return;
            }
            co_idx[l] += 1;
            if co_idx[l] < co_lists[l].len() {
                break;
            }
            co_idx[l] = 0;
            l += 1;
        }
    }
}
