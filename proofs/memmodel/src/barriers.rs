//! Every named `mmusync::Barrier` pairing, judged under every model.
//!
//! For each unordered pair `{a, b}` of [`Barrier::ALL`] with `b ∈ a.pairs_with()`, a litmus
//! skeleton of the pairing is generated from the barriers' [`FenceKind`]s:
//!
//! * **message passing** (MP) when one side orders two stores (`smp_wmb`, release) and the
//!   other two loads (`smp_rmb`, acquire, `smp_mb`): `W data; [a]; W flag ‖ R flag; [b];
//!   R data`, forbidden outcome `flag = new ∧ data = old`;
//! * **store buffering** (SB) when both are `smp_mb`: `W x; [a]; R y ‖ W y; [b]; R x`,
//!   forbidden outcome both reads old;
//! * **load buffering** (LB) for the pairs `docs/models.md` names as such ([`LOAD_BUFFERING`]):
//!   `R x; [a]; W y ‖ R y; [b]; W x`, forbidden outcome both reads new (a read returning a
//!   store that comes after the other side's read).
//!
//! A release is rendered as `smp_store_release` of the store after it, an acquire as
//! `smp_load_acquire` of the load before it, the rest as fences. Each skeleton is checked with
//! both barriers, without `a` and without `b`; a barrier is *needed* under a model when
//! dropping it makes the forbidden outcome reachable there. `SyncRootSpteBeforeFlags`, which
//! `docs/models.md` calls redundant in context, gets a second skeleton with that context
//! ([`contexts`]). `InvalidateEndSeqBeforeActiveCount` is judged on a three-thread shape
//! ([`e2_chain`]): two invalidations' E2s chained through `mn_invalidate_lock` and a cache
//! refresher, with the release fence after the lock (core's code), before it (core's old code)
//! and absent (KVM's code); the two-thread MP skeleton misses why it is needed.

use crate::ast::{Model, Verdict};
use crate::exec::check;
use crate::parse::parse;
use mmusync::{Barrier, FenceKind};
use std::fmt::Write as _;

/// The litmus shape of a pairing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Message passing: `a` orders two stores, `b` two loads.
    Mp,
    /// Store buffering: each side orders a store before a load.
    Sb,
    /// Load buffering: each side orders a load before a store.
    Lb,
}

impl Shape {
    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Mp => "MP",
            Shape::Sb => "SB",
            Shape::Lb => "LB",
        }
    }
}

/// Pairings whose forbidden outcome is load buffering (`docs/models.md`, "Not killable by
/// loom"): the walk's or the guest run's table reads against the freer's mode read, and an
/// SRCU reader's critical section against the updater's scan.
pub const LOAD_BUFFERING: &[(Barrier, Barrier)] = &[
    (Barrier::WalkEndSpteReadsBeforeMode, Barrier::KickModeReadBeforeFree),
    (Barrier::GuestExitReadsBeforeMode, Barrier::KickModeReadBeforeFree),
    (Barrier::SrcuReadUnlockMb, Barrier::SrcuSyncAfterScan),
];

/// One pairing, oriented: in MP, `a` is the store side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pairing {
    /// First side (the writer in MP).
    pub a: Barrier,
    /// Second side (the reader in MP).
    pub b: Barrier,
    /// The skeleton's shape.
    pub shape: Shape,
}

fn is_lb(a: Barrier, b: Barrier) -> bool {
    LOAD_BUFFERING.iter().any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b))
}

fn store_side(k: FenceKind) -> bool {
    matches!(k, FenceKind::Wmb | FenceKind::Release)
}

/// Every pairing of [`Barrier::ALL`], once, in declaration order of its first barrier.
pub fn pairings() -> Vec<Pairing> {
    let mut out: Vec<Pairing> = Vec::new();
    for &a in Barrier::ALL {
        for &b in a.pairs_with() {
            if out.iter().any(|p| (p.a, p.b) == (b, a) || (p.a, p.b) == (a, b)) {
                continue;
            }
            let (ka, kb) = (a.kind(), b.kind());
            let p = if is_lb(a, b) {
                Pairing { a, b, shape: Shape::Lb }
            } else if store_side(ka) && !store_side(kb) {
                Pairing { a, b, shape: Shape::Mp }
            } else if store_side(kb) && !store_side(ka) {
                Pairing { a: b, b: a, shape: Shape::Mp }
            } else {
                Pairing { a, b, shape: Shape::Sb }
            };
            out.push(p);
        }
    }
    out
}

/// A fence statement for a kind that is not attached to an access, or `""`.
fn fence(k: Option<FenceKind>) -> &'static str {
    match k {
        Some(FenceKind::Wmb) => "smp_wmb(); ",
        Some(FenceKind::Rmb) => "smp_rmb(); ",
        Some(FenceKind::Mb) => "smp_mb(); ",
        _ => "",
    }
}

fn load(k: Option<FenceKind>, dst: &str, loc: &str) -> String {
    if k == Some(FenceKind::Acquire) {
        format!("{dst} = smp_load_acquire({loc}); ")
    } else {
        format!("{dst} = READ_ONCE(*{loc}); ")
    }
}

fn store(k: Option<FenceKind>, loc: &str, v: i64) -> String {
    if k == Some(FenceKind::Release) {
        format!("smp_store_release({loc}, {v}); ")
    } else {
        format!("WRITE_ONCE(*{loc}, {v}); ")
    }
}

/// The skeleton's litmus source, with side `a` ordered by `ka` and side `b` by `kb` (`None`:
/// the barrier is dropped).
fn source(shape: Shape, ka: Option<FenceKind>, kb: Option<FenceKind>) -> String {
    let (p0, p1, cond) = match shape {
        Shape::Mp => (
            format!("int r0; {}{}{}", store(None, "x", 1), fence(ka), store(ka, "y", 1)),
            format!("int r0; int r1; {}{}{}", load(kb, "r0", "y"), fence(kb), load(None, "r1", "x")),
            "1:r0=1 /\\ 1:r1=0",
        ),
        Shape::Sb => (
            format!("int r0; {}{}{}", store(ka, "x", 1), fence(ka), load(None, "r0", "y")),
            format!("int r0; {}{}{}", store(kb, "y", 1), fence(kb), load(None, "r0", "x")),
            "0:r0=0 /\\ 1:r0=0",
        ),
        Shape::Lb => (
            format!("int r0; {}{}{}", load(ka, "r0", "x"), fence(ka), store(ka, "y", 1)),
            format!("int r0; {}{}{}", load(kb, "r0", "y"), fence(kb), store(kb, "x", 1)),
            "0:r0=1 /\\ 1:r0=1",
        ),
    };
    format!("C skeleton\n{{}}\nP0(int *x, int *y) {{ {p0}}}\nP1(int *x, int *y) {{ {p1}}}\nexists ({cond})\n")
}

/// Verdicts of the forbidden outcome under [`Model::ALL`], for one litmus source, and the
/// candidate executions enumerated (added to `candidates`).
fn verdicts(src: &str, candidates: &mut usize) -> Vec<Verdict> {
    let t = parse(src).unwrap_or_else(|e| panic!("generated skeleton does not parse: {e}\n{src}"));
    let (outs, stats) = check(&t, &Model::ALL).unwrap_or_else(|e| panic!("skeleton unsupported: {e}"));
    *candidates += stats.candidates;
    outs.into_iter().map(|o| o.expect("every model supports kernel primitives").verdict).collect()
}

/// The judged skeleton of one pairing: per model, the verdict with both barriers, without
/// `a`, without `b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judged {
    /// The pairing.
    pub pairing: Pairing,
    /// Both barriers present.
    pub both: Vec<Verdict>,
    /// `a` dropped.
    pub without_a: Vec<Verdict>,
    /// `b` dropped.
    pub without_b: Vec<Verdict>,
    /// Candidate executions enumerated for the three variants together.
    pub candidates: usize,
}

impl Judged {
    /// The skeleton's name: shape and both barriers, as in `SB+WalkBeginModeBeforeSpteReads+KickRequestBeforeModeRead`.
    pub fn name(&self) -> String {
        format!("{}+{}+{}", self.pairing.shape.name(), self.pairing.a.name(), self.pairing.b.name())
    }

    /// Verdicts without `barrier` (one of the pairing's two sides).
    pub fn without(&self, barrier: Barrier) -> &[Verdict] {
        if self.pairing.a == barrier {
            &self.without_a
        } else {
            &self.without_b
        }
    }
}

/// Judges one pairing.
pub fn judge(p: Pairing) -> Judged {
    let (ka, kb) = (Some(p.a.kind()), Some(p.b.kind()));
    let mut candidates = 0;
    Judged {
        pairing: p,
        both: verdicts(&source(p.shape, ka, kb), &mut candidates),
        without_a: verdicts(&source(p.shape, None, kb), &mut candidates),
        without_b: verdicts(&source(p.shape, ka, None), &mut candidates),
        candidates,
    }
}

/// A skeleton of a barrier with the code around it in KVM that may make it redundant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Context {
    /// The barrier judged.
    pub barrier: Barrier,
    /// The skeleton's name (the rows' scenario).
    pub name: &'static str,
    /// What the context is.
    pub what: &'static str,
    /// Whether core's own code has the context, so that the barrier's verdict is this
    /// skeleton's. Otherwise the context is a property of some hardware only (core cannot
    /// assume it), the bare pairing decides, and this skeleton is reported beside it.
    pub in_core: bool,
    /// Verdicts with everything present.
    pub both: Vec<Verdict>,
    /// Verdicts without the barrier, context kept.
    pub without: Vec<Verdict>,
    /// Verdicts without the barrier and without the context.
    pub without_context: Vec<Verdict>,
    /// Candidate executions enumerated for the three variants together.
    pub candidates: usize,
}

/// The context skeletons: `SyncRootSpteBeforeFlags` after the VM exit (core's unsync check
/// runs after one), and `GuestExitReadsBeforeMode` behind a VM exit that is a full barrier (an
/// x86 VM exit is serializing; core's mode store at exit cannot assume that of every
/// architecture).
pub fn contexts() -> Vec<Context> {
    // Host: unsync = 1; smp_wmb(); spte = W. vCPU: walker reads spte; VM exit (full);
    // smp_rmb(); read unsync.
    let unsync = |exit: bool, rmb: bool| {
        format!(
            "C ctx\n{{}}\nP0(int *flag, int *spte) {{ WRITE_ONCE(*flag, 1); smp_wmb(); WRITE_ONCE(*spte, 1); }}\n\
             P1(int *flag, int *spte) {{ int r0; int r1; r0 = READ_ONCE(*spte); {}{}r1 = READ_ONCE(*flag); }}\n\
             exists (1:r0=1 /\\ 1:r1=0)\n",
            if exit { "smp_mb(); " } else { "" },
            if rmb { "smp_rmb(); " } else { "" },
        )
    };
    // vCPU: the guest's walker reads the table page; VM exit (full); OUTSIDE (release).
    // Requester: reads the mode (acquire), then frees (writes) the page. Forbidden: the walker
    // read the free's write although the requester saw OUTSIDE (load buffering).
    let exit = |exit: bool, release: bool| {
        format!(
            "C ctx\n{{}}\nP0(int *page, int *mode) {{ int r0; r0 = READ_ONCE(*page); {}{} }}\n\
             P1(int *page, int *mode) {{ int r1; r1 = smp_load_acquire(mode); WRITE_ONCE(*page, 1); }}\n\
             exists (0:r0=1 /\\ 1:r1=1)\n",
            if exit { "smp_mb(); " } else { "" },
            if release { "smp_store_release(mode, 1);" } else { "WRITE_ONCE(*mode, 1);" },
        )
    };
    let mut sync_candidates = 0;
    let mut exit_candidates = 0;
    vec![
        Context {
            barrier: Barrier::SyncRootSpteBeforeFlags,
            name: "MP+UnsyncMarkBeforeWritableSpte+SyncRootSpteBeforeFlags+vm-exit",
            what: "after the VM exit (serializing: smp_mb) between the walker's read and the flag read",
            in_core: true,
            both: verdicts(&unsync(true, true), &mut sync_candidates),
            without: verdicts(&unsync(true, false), &mut sync_candidates),
            without_context: verdicts(&unsync(false, false), &mut sync_candidates),
            candidates: sync_candidates,
        },
        Context {
            barrier: Barrier::GuestExitReadsBeforeMode,
            name: "LB+GuestExitReadsBeforeMode+KickModeReadBeforeFree+vm-exit",
            what: "behind a VM exit that is a full barrier (smp_mb, as x86's serializing exit) between the guest's table read and OUTSIDE",
            in_core: false,
            both: verdicts(&exit(true, true), &mut exit_candidates),
            without: verdicts(&exit(true, false), &mut exit_candidates),
            without_context: verdicts(&exit(false, false), &mut exit_candidates),
            candidates: exit_candidates,
        },
    ]
}

/// Where E2's release fence (`InvalidateEndSeqBeforeActiveCount`) sits in [`e2_source`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// After `spin_lock`, before the store of the decrement (core's code).
    AfterLock,
    /// Before `spin_lock` (core's old code).
    BeforeLock,
    /// No fence (KVM's code).
    Absent,
}

/// The three-thread E2 shape (`litmus/mmusync/E2-release-sequence+*.litmus`): P0 runs E1
/// (`seq = 1`, then `smp_wmb` when `wmb`) and E2, P1 only E2 (an invalidation that hits no
/// memslot), each E2 a decrement of `c` (initially 2) under spinlock `l` with the release fence
/// at `place`; P2 is the cache refresher (`c`, `smp_rmb`, `seq`). Forbidden: `c = 0`, `seq = 0`.
pub fn e2_source(place: Placement, wmb: bool) -> String {
    let (before, after) = match place {
        Placement::AfterLock => ("", "atomic_thread_fence(memory_order_release); "),
        Placement::BeforeLock => ("atomic_thread_fence(memory_order_release); ", ""),
        Placement::Absent => ("", ""),
    };
    let e2 =
        format!("{before}spin_lock(l); r = READ_ONCE(*c); {after}WRITE_ONCE(*c, r - 1); spin_unlock(l);");
    format!(
        "C e2\n{{ c=2; seq=0; spinlock_t l; }}\n\
         P0(int *seq, int *c, spinlock_t *l) {{ int r; WRITE_ONCE(*seq, 1); {}{e2} }}\n\
         P1(int *c, spinlock_t *l) {{ int r; {e2} }}\n\
         P2(int *seq, int *c) {{ int r0; int r1; r0 = READ_ONCE(*c); smp_rmb(); r1 = READ_ONCE(*seq); }}\n\
         exists (2:r0=0 /\\ 2:r1=0)\n",
        if wmb { "smp_wmb(); " } else { "" },
    )
}

/// Verdicts under [`Model::ALL`], `None` where a model cannot express a primitive (LKMM has no
/// C11 release fence); the candidate executions enumerated are added to `candidates`.
fn verdicts_or_na(src: &str, candidates: &mut usize) -> Vec<Option<Verdict>> {
    let t = parse(src).unwrap_or_else(|e| panic!("generated skeleton does not parse: {e}\n{src}"));
    let (outs, stats) = check(&t, &Model::ALL).unwrap_or_else(|e| panic!("skeleton unsupported: {e}"));
    *candidates += stats.candidates;
    outs.into_iter().map(|o| o.ok().map(|o| o.verdict)).collect()
}

/// `InvalidateEndSeqBeforeActiveCount` judged on the three-thread E2 shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct E2Chain {
    /// The fence after the lock (core's code).
    pub after_lock: Vec<Option<Verdict>>,
    /// The fence before the lock (core's old code).
    pub before_lock: Vec<Option<Verdict>>,
    /// No fence (KVM's code).
    pub absent: Vec<Option<Verdict>>,
    /// No fence and no `smp_wmb` after `seq++` either.
    pub absent_no_wmb: Vec<Option<Verdict>>,
    /// Candidate executions enumerated for the four variants together.
    pub candidates: usize,
}

impl E2Chain {
    /// Models under which the fence, placed after the lock, is needed: the outcome is
    /// forbidden with it (or the model has no such fence) and reachable without it.
    pub fn needed_under(&self) -> Vec<Model> {
        Model::ALL
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| {
                self.after_lock[i].is_none_or(|v| v == Verdict::Never)
                    && self.absent[i].is_some_and(|v| v != Verdict::Never)
            })
            .map(|(_, m)| m)
            .collect()
    }

    /// Models under which the fence before the lock leaves the outcome reachable.
    pub fn before_lock_fails_under(&self) -> Vec<Model> {
        Model::ALL
            .into_iter()
            .zip(&self.before_lock)
            .filter(|(_, v)| v.is_some_and(|v| v != Verdict::Never))
            .map(|(m, _)| m)
            .collect()
    }
}

/// Judges the three-thread E2 shape for `InvalidateEndSeqBeforeActiveCount`.
pub fn e2_chain() -> E2Chain {
    let mut candidates = 0;
    E2Chain {
        after_lock: verdicts_or_na(&e2_source(Placement::AfterLock, true), &mut candidates),
        before_lock: verdicts_or_na(&e2_source(Placement::BeforeLock, true), &mut candidates),
        absent: verdicts_or_na(&e2_source(Placement::Absent, true), &mut candidates),
        absent_no_wmb: verdicts_or_na(&e2_source(Placement::Absent, false), &mut candidates),
        candidates,
    }
}

/// The barriers `docs/models.md` lists as not killable by loom.
pub const LOOM_UNKILLABLE: &[Barrier] = &[
    Barrier::WalkEndSpteReadsBeforeMode,
    Barrier::GuestExitReadsBeforeMode,
    Barrier::KickModeReadBeforeFree,
    Barrier::SrcuReadUnlockMb,
    Barrier::SrcuSyncAfterScan,
    Barrier::InvalidateEndSeqBeforeActiveCount,
    Barrier::SyncRootSpteBeforeFlags,
];

fn letter(v: Verdict) -> &'static str {
    if v == Verdict::Never {
        "N"
    } else {
        "S"
    }
}

fn letters(v: &[Verdict]) -> String {
    v.iter().map(|v| letter(*v)).collect::<Vec<_>>().join(" ")
}

fn letters_or_na(v: &[Option<Verdict>]) -> String {
    v.iter().map(|v| v.map_or("–", letter)).collect::<Vec<_>>().join(" ")
}

/// Models under which dropping a barrier makes a forbidden outcome reachable.
pub fn killed_under(with: &[Verdict], without: &[Verdict]) -> Vec<Model> {
    Model::ALL
        .into_iter()
        .zip(with.iter().zip(without))
        .filter(|(_, (w, wo))| **w == Verdict::Never && **wo != Verdict::Never)
        .map(|(m, _)| m)
        .collect()
}

/// `lkmm, armv8`, or `none`.
pub fn model_list(ms: &[Model]) -> String {
    if ms.is_empty() {
        "none".into()
    } else {
        ms.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    }
}

/// The generated section of `docs/memmodel.md`: the pairing table and the verdicts for the
/// barriers loom cannot kill.
pub fn barrier_tables() -> String {
    let judged: Vec<Judged> = pairings().into_iter().map(judge).collect();
    let ctx = contexts();
    let chain = e2_chain();
    let order = Model::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(" ");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Each cell lists the forbidden outcome's verdict per model, in the order `{order}`: \
         N = Never (forbidden), S = Sometimes (reachable).\n"
    );
    out.push_str("| A (store side in MP) | B | shape | both | without A | without B | A needed under | B needed under |\n");
    out.push_str("|---|---|---|---|---|---|---|---|\n");
    for j in &judged {
        let p = j.pairing;
        let _ = writeln!(
            out,
            "| `{}` ({}) | `{}` ({}) | {} | {} | {} | {} | {} | {} |",
            p.a.name(),
            p.a.kind().kernel_name(),
            p.b.name(),
            p.b.kind().kernel_name(),
            p.shape.name(),
            letters(&j.both),
            letters(&j.without_a),
            letters(&j.without_b),
            model_list(&killed_under(&j.both, &j.without_a)),
            model_list(&killed_under(&j.both, &j.without_b)),
        );
    }
    out.push_str(
        "\nIn context (the code around the barrier; \"core\": whether core's own code has that context):\n\n",
    );
    out.push_str("| barrier | context | core | all present | without it | without it and the context |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for c in &ctx {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            c.barrier.name(),
            c.what,
            if c.in_core { "yes" } else { "no" },
            letters(&c.both),
            letters(&c.without),
            letters(&c.without_context)
        );
    }
    out.push_str(
        "\n`InvalidateEndSeqBeforeActiveCount` on the three-thread E2 chain \
         (`litmus/mmusync/E2-release-sequence+*`; – = the model has no C11 release fence):\n\n",
    );
    out.push_str("| E2's release fence | `smp_wmb` after `seq++` | verdicts |\n|---|---|---|\n");
    for (what, wmb, v) in [
        ("after `spin_lock` (core)", "yes", &chain.after_lock),
        ("before `spin_lock` (core's old code)", "yes", &chain.before_lock),
        ("none (KVM)", "yes", &chain.absent),
        ("none", "no", &chain.absent_no_wmb),
    ] {
        let _ = writeln!(out, "| {what} | {wmb} | {} |", letters_or_na(v));
    }
    out.push_str("\nThe barriers loom cannot kill (`docs/models.md`), with a model-backed verdict:\n\n");
    out.push_str("| barrier | skeleton | needed under | verdict |\n|---|---|---|---|\n");
    for &b in LOOM_UNKILLABLE {
        if b == Barrier::InvalidateEndSeqBeforeActiveCount {
            let needed = chain.needed_under();
            let _ = writeln!(
                out,
                "| `{}` | E2 chain (3 threads) | {} | needed under {}, and only after the lock: before it the outcome \
                 stays reachable under {}; the lock chain alone forbids it under the others |",
                b.name(),
                model_list(&needed),
                model_list(&needed),
                model_list(&chain.before_lock_fails_under()),
            );
            continue;
        }
        if let Some(c) = ctx.iter().find(|c| c.barrier == b && c.in_core) {
            let alone = killed_under(&c.both, &c.without);
            let verdict = if alone.is_empty() {
                format!(
                    "redundant under every model {}; without that context it is needed under {}",
                    c.what,
                    model_list(&killed_under(&c.both, &c.without_context))
                )
            } else {
                format!("needed even in context under {}", model_list(&alone))
            };
            let _ = writeln!(out, "| `{}` | context | {} | {verdict} |", b.name(), model_list(&alone));
            continue;
        }
        let mut needed: Vec<Model> = Vec::new();
        let mut shapes = Vec::new();
        for j in judged.iter().filter(|j| j.pairing.a == b || j.pairing.b == b) {
            let without = if j.pairing.a == b { &j.without_a } else { &j.without_b };
            shapes.push(format!(
                "{} with `{}`",
                j.pairing.shape.name(),
                if j.pairing.a == b { j.pairing.b } else { j.pairing.a }
            ));
            for m in killed_under(&j.both, without) {
                if !needed.contains(&m) {
                    needed.push(m);
                }
            }
        }
        needed = Model::ALL.into_iter().filter(|m| needed.contains(m)).collect();
        let mut verdict = if needed.is_empty() {
            "redundant under every model".to_string()
        } else {
            format!("killed under {}", model_list(&needed))
        };
        if let Some(c) = ctx.iter().find(|c| c.barrier == b && !c.in_core) {
            let alone = killed_under(&c.both, &c.without);
            let _ = write!(
                verdict,
                "; in context, {}: {} (core cannot assume that context, so the bare pairing decides)",
                c.what,
                if alone.is_empty() {
                    "redundant under every model".to_string()
                } else {
                    format!("still needed under {}", model_list(&alone))
                }
            );
        }
        let _ =
            writeln!(out, "| `{}` | {} | {} | {verdict} |", b.name(), shapes.join("; "), model_list(&needed));
    }
    out
}
