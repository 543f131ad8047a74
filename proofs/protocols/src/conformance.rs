//! Trace conformance: a step trace recorded from core's own code must replay as a path of a
//! protocol model.
//!
//! core reports each labelled protocol step through `Hal::step` ([`Step`], with the values it
//! read or wrote), and the loom and shuttle HALs record the steps per CPU. The models here name
//! their actions after the same labels. This module replays a recorded trace in a model, so a
//! change to core that the model does not allow fails a test, and the model cannot drift from
//! the code unnoticed.
//!
//! ## How a trace is replayed
//!
//! A trace is a sequence of [`TraceStep`]s: the CPU that made the step (`None` for the setup and
//! final-check phases, which build and inspect the initial state and are not replayed) and the
//! [`Step`]. A [`Projection`] is what is particular to one model and one scenario: which model
//! thread each CPU plays, what the model's abstract values stand for, and what each step is in
//! the model. Two exist: [`FaultSetup`] (the `fault` model, P1 + P2) and [`WalkSetup`] (the
//! `walk` model, IPI scheme, P5). Each step is *projected* ([`Projection::project`]) to one of:
//!
//! * an **action** of the model, for the CPU's thread: the replay takes a model action of that
//!   kind and thread that the model enables, then checks the step's values against the model
//!   state after it (a `seq` snapshot, a retry answer, a count, a pfn): a disagreement is a
//!   mismatch, exactly like a step the model does not enable;
//! * an **observation**: a step inside a model action that the model takes at once (S3c's
//!   `unmap` inside S3): no transition, its values are checked against the current state;
//! * **abstracted**: a step the model leaves out on purpose (documented per step);
//! * **outside the model**: a step the model cannot explain at all (a memslot change, a
//!   multi-slot range, a lockless walk): the trace is rejected.
//!
//! Some model actions report no step (taking and dropping `mmu_lock`, the primary MMU's remap,
//! the guest filling its TLB, S4 when nothing was zapped): they are *silent*. The replay keeps
//! the set of model states reachable by silent actions from where the last step left it, and a
//! step must be matched from one of them: the trace is accepted when it is the visible part of
//! some path of the model (trace inclusion with silent steps), rejected at the first step that
//! no such path allows, with the reasons for each candidate.
//!
//! Steps are recorded right after the access they report, with no scheduling point in between
//! for the steps checked by value (the locked ones, and F4's single load), so a sequentially
//! consistent trace (shuttle's) orders them as they happened. The lockless `_unsafe` checks
//! read several words with scheduling points in between, so their answers are not checked.
//! `Kick` (Q3–Q4) reads the vCPU's mode, then its CPU (a scheduling point), then reports: a walk
//! can begin in between. Such a step *may lag* ([`Projection::may_lag`]): the replay also tries
//! it at each earlier position after its own thread's previous step, which is exactly where the
//! read can have happened.

use crate::models::fault::{FaultAction, FaultModel, FaultState, InvPc, VcpuPc};
use crate::models::walk::{Reclaim, WStep, WalkAction, WalkModel, WalkMutant, WalkState, ZStep};
use crate::tso::Memory;
use mmusync::hal::CpuId;
use mmusync::{Gfn, Pfn, RetryCheck, Step};
use stateright::Model;
use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

pub use mmusync_models::TraceStep;

/// A thread of the fault model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultThread {
    /// vCPU `i` (`FaultState::vcpus[i]`).
    Vcpu(usize),
    /// Invalidator `i` (`FaultState::invs[i]`, range `FaultModel::ranges[i]`).
    Inv(usize),
}

impl fmt::Display for FaultThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultThread::Vcpu(i) => write!(f, "vcpu{i}"),
            FaultThread::Inv(i) => write!(f, "inv{i}"),
        }
    }
}

/// What a trace's scenario is, in the fault model's terms.
#[derive(Clone, Debug)]
pub struct FaultSetup {
    /// The model instance the scenario is an instance of (its gfns, one invalidator per range,
    /// each over one memslot).
    pub model: FaultModel,
    /// `cpus[c]`: the model thread that CPU `c` plays.
    pub cpus: Vec<FaultThread>,
    /// `pfns[g][k]`: the pfn that gfn `g` maps to in the primary MMU in generation `k` (the
    /// model's `gen[g]`; each invalidation's remap makes the next generation).
    pub pfns: Vec<Vec<Pfn>>,
}

impl FaultSetup {
    /// `mmu-fault-vs-invalidation` (models/src/scenarios/mmu.rs): CPU 0 is one vCPU faulting
    /// on gfn 0 through `ReferenceMmu::fault`, CPU 1 one invalidation of gfn 0's host page (one
    /// memslot), which remaps it from pfn 1 to pfn 2.
    pub fn mmu_fault_vs_invalidation(model_mutant: Option<crate::models::fault::FaultMutant>) -> Self {
        FaultSetup {
            model: FaultModel { vcpus: 1, gfns: 1, ranges: vec![(0, 1)], mutant: model_mutant },
            cpus: vec![FaultThread::Vcpu(0), FaultThread::Inv(0)],
            pfns: vec![vec![Pfn(1), Pfn(2)]],
        }
    }
}

/// What a step is in a model ([`Projection::project`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projected {
    /// A model action of the reporting thread, by its label (the model's name for it).
    Action(&'static str),
    /// A step inside the thread's last action (S3c inside S3): values checked, no transition.
    Observe,
    /// Left out of the model on purpose; the reason.
    Abstracted(&'static str),
    /// Not a step this model can explain; the reason.
    Outside(&'static str),
}

/// The projection of core's steps onto the fault model (the table in `docs/proofs.md`).
fn project_fault(step: &Step) -> Projected {
    use Projected::*;
    match step {
        Step::FaultSlot { .. } => Action("F1"),
        Step::Snapshot { .. } => Action("F4"),
        Step::FaultResolved { .. } => Action("F8"),
        Step::Retry { check: RetryCheck::Gfn, .. } => Action("F12"),
        Step::FaultInstall { .. } => Action("F13"),
        Step::InvalidateBegin { .. } => Action("S3"),
        Step::Unmap { .. } => Observe,
        Step::InvalidateFlush => Action("S4"),
        Step::InvalidateEnd { .. } => Action("E1"),
        Step::Retry { check: RetryCheck::GfnUnsafe, .. } => {
            Abstracted("F7/F10: the lockless pre-checks are hints (they only add retries)")
        }
        Step::ActiveStart { .. } | Step::ActiveEnd { .. } => {
            Abstracted("S1/E2: the active count (the memslot model's)")
        }
        Step::InvalidateCaches { .. } | Step::CacheInvalidated { .. } => {
            Abstracted("S2: translation caches (the pfncache model's)")
        }
        Step::GuestEnter { .. } | Step::GuestExit => {
            Abstracted("V1-V6: guest entry and exit (the TLB is one entry per gfn, filled silently)")
        }
        Step::Request { .. } | Step::Kick { .. } | Step::IpiAndWait { .. } => {
            Abstracted("Q1-Q5: the remote flush's requests and IPIs, inside S4 (the walk model's)")
        }
        Step::MapUpdate { .. } => {
            Abstracted("M1-M2: the leaf update inside F13's install (the model's SPTE is one word per gfn)")
        }
        Step::PrefetchSkipped { .. } => Abstracted("F15: a prefetch that did not happen changes nothing"),
        Step::FlushRange { .. } => {
            Abstracted("Q6: a range flush's requests and IPIs, inside S4 (the walk model's)")
        }
        Step::Retry { check: RetryCheck::Locked | RetryCheck::Lockless, .. } => {
            Outside("F12/MP-1 without a gfn: the model's fault uses retry_gfn")
        }
        Step::Prefetch { .. } => Outside("F15: a prefetched neighbour (the model faults one gfn per vCPU)"),
        Step::ZapGfnRange { .. } => {
            Outside("G2-G3: a zap that is no notifier event (none in the fault model)")
        }
        Step::PrefaultTryAgain { .. } | Step::MemslotGeneration { .. } => {
            Outside("F16/W8: memslot changes (none in the fault model)")
        }
        Step::InvalidateRangeAdd { .. } => {
            Outside("S3b range_add: a start over several memslots (one memslot per invalidation here)")
        }
        Step::MemslotWait { .. } | Step::MemslotPublish { .. } | Step::MemslotSynchronized => {
            Outside("W3-W7: memslot changes (none in the fault model)")
        }
        Step::CacheSnapshot { .. } | Step::CacheRetry { .. } | Step::CacheValid { .. } => {
            Outside("R4: translation-cache refresh (the pfncache model's)")
        }
        Step::WalkBegin | Step::WalkEnd | Step::ZapCommit { .. } | Step::EpochDefer { .. } => {
            Outside("L1-L4/Z2: lockless walks and table-page frees (the walk model's)")
        }
        _ => Outside("a step this projection does not know: add it to the table"),
    }
}

/// The first step of a trace that the model does not allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Its index in the trace.
    pub index: usize,
    /// The step.
    pub step: TraceStep,
    /// The model thread of its CPU, when it has one.
    pub thread: Option<String>,
    /// Why: the reasons each candidate failed.
    pub reason: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = self.step.cpu.map(|c| format!("CPU {c}")).unwrap_or_else(|| "setup".into());
        let thread = self.thread.as_ref().map(|t| format!(" = {t}")).unwrap_or_default();
        write!(
            f,
            "step #{} [{cpu}{thread}] {}: not allowed by the model: {}",
            self.index, self.step.step, self.reason
        )
    }
}

impl std::error::Error for Mismatch {}

/// A trace that replayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Steps matched to a model action.
    pub actions: usize,
    /// Steps observed (values checked, no transition).
    pub observed: usize,
    /// Steps abstracted.
    pub abstracted: usize,
    /// Steps of the setup and final-check phases, not replayed.
    pub outside_roles: usize,
    /// The most model states the replay held at once (paths the trace could still be).
    pub max_states: usize,
    /// Lagging steps ([`Projection::may_lag`]) matched earlier than they were reported.
    pub lagged: usize,
}

/// Whether `a` is a silent action in state `s` (it reports no step).
fn fault_silent(s: &FaultState, a: &FaultAction) -> bool {
    match *a {
        FaultAction::F11 { .. }
        | FaultAction::F14 { .. }
        | FaultAction::S5 { .. }
        | FaultAction::Unmap { .. }
        | FaultAction::GuestAccess { .. } => true,
        FaultAction::S4 { inv } => !s.invs[inv].need_flush,
        _ => false,
    }
}

/// The label and thread of a visible action.
fn fault_label(a: &FaultAction) -> Option<(&'static str, FaultThread)> {
    use FaultThread::{Inv, Vcpu};
    Some(match *a {
        FaultAction::F1 { vcpu, .. } => ("F1", Vcpu(vcpu)),
        FaultAction::F4 { vcpu } => ("F4", Vcpu(vcpu)),
        FaultAction::F8 { vcpu } => ("F8", Vcpu(vcpu)),
        FaultAction::F12 { vcpu } => ("F12", Vcpu(vcpu)),
        FaultAction::F13 { vcpu } => ("F13", Vcpu(vcpu)),
        FaultAction::S3 { inv } => ("S3", Inv(inv)),
        FaultAction::S4 { inv } => ("S4", Inv(inv)),
        FaultAction::E1 { inv } => ("E1", Inv(inv)),
        _ => return None,
    })
}

/// A gfn of the trace as a model gfn.
fn gfn(g: Gfn) -> Result<u8, String> {
    u8::try_from(g.0).map_err(|_| format!("gfn {g:#x} is outside the model's gfns"))
}

/// A model gfn as a gfn of the trace.
fn trace_gfn(g: u8) -> Gfn {
    Gfn(u64::from(g))
}

fn expect<T: PartialEq + fmt::Debug>(what: &str, model: T, trace: T) -> Result<(), String> {
    if model == trace {
        Ok(())
    } else {
        Err(format!("{what}: the model has {model:?}, the trace {trace:?}"))
    }
}

/// The pfn of `g`'s generation `k` in `setup`.
fn pfn_of(setup: &FaultSetup, g: u8, k: u8) -> Result<Pfn, String> {
    setup
        .pfns
        .get(g as usize)
        .and_then(|p| p.get(k as usize))
        .copied()
        .ok_or_else(|| format!("gfn {g} generation {k} has no pfn in the setup"))
}

/// Checks the values of `step`, reported by `thread`'s action, against `after`, the state after
/// it (`before`: the state before, for the message).
fn fault_check_action(
    setup: &FaultSetup,
    thread: FaultThread,
    before: &FaultState,
    after: &FaultState,
    step: &Step,
) -> Result<(), String> {
    let v = |i: usize| &after.vcpus[i];
    match (*step, Some(thread)) {
        (Step::FaultSlot { gfn: g, invalid, .. }, Some(FaultThread::Vcpu(i))) => {
            expect("faulting gfn", v(i).gfn, gfn(g)?)?;
            expect("memslot invalid", false, invalid)
        }
        (Step::Snapshot { seq }, Some(FaultThread::Vcpu(i))) => {
            expect("seq snapshot", u64::from(v(i).snap), seq)
        }
        (Step::FaultResolved { gfn: g, pfn }, Some(FaultThread::Vcpu(i))) => {
            expect("faulting gfn", v(i).gfn, gfn(g)?)?;
            expect("resolved pfn", pfn_of(setup, v(i).gfn, v(i).pfn)?, pfn)
        }
        (Step::Retry { gfn: g, retry, .. }, Some(FaultThread::Vcpu(i))) => {
            expect("checked gfn", Some(v(i).gfn), g.map(gfn).transpose()?)?;
            let b = &before.vcpus[i];
            let answer = v(i).pc == VcpuPc::Chosen;
            if answer != retry {
                return Err(format!(
                    "the model answers retry = {answer} (in_progress {}, range {:?}, seq {}, snapshot {}), the trace {retry}",
                    before.in_progress, before.range, before.seq, b.snap
                ));
            }
            Ok(())
        }
        (Step::FaultInstall { gfn: g, pfn }, Some(FaultThread::Vcpu(i))) => {
            let mg = v(i).gfn;
            expect("installed gfn", mg, gfn(g)?)?;
            let k = after.spte[mg as usize].ok_or("F13 left no SPTE")?;
            expect("installed pfn", pfn_of(setup, mg, k)?, pfn)
        }
        (Step::InvalidateBegin { in_progress, start, end }, _) => {
            expect("in_progress", u64::from(after.in_progress), in_progress)?;
            let range = after.range.map(|(a, b)| (trace_gfn(a), trace_gfn(b)));
            expect("merged range", range, Some((start, end)))
        }
        (Step::InvalidateFlush, _) => Ok(()),
        (Step::InvalidateEnd { seq, in_progress }, _) => {
            expect("seq", u64::from(after.seq), seq)?;
            expect("in_progress", u64::from(after.in_progress), in_progress)
        }
        (step, _) => Err(format!("no value check for {step:?}")),
    }
}

/// Checks an observed step (S3c) against `s`.
fn fault_check_observe(
    setup: &FaultSetup,
    s: &FaultState,
    thread: FaultThread,
    step: &Step,
) -> Result<(), String> {
    match (*step, thread) {
        (Step::Unmap { start, end, flush, .. }, FaultThread::Inv(i)) => {
            let inv = &s.invs[i];
            if inv.pc != InvPc::Zapped {
                return Err(format!("S3c: inv{i} is at {:?}, not inside S3", inv.pc));
            }
            let (a, b) = setup.model.ranges[i];
            expect("zapped range", (trace_gfn(a), trace_gfn(b)), (start, end))?;
            expect("flush needed", inv.need_flush, flush)
        }
        (step, thread) => Err(format!("{thread} cannot report {step:?}")),
    }
}

/// How a model explains core's steps: the part of trace conformance that is particular to one
/// model and one scenario setup. [`replay`] does the rest.
pub trait Projection {
    /// The model.
    type Model: Model<State: Clone + Hash + Eq, Action: Clone + fmt::Debug>;
    /// A thread of the model that a CPU of the trace plays.
    type Thread: Copy + PartialEq + fmt::Display;

    /// The model instance.
    fn model(&self) -> &Self::Model;
    /// The thread CPU `cpu` plays.
    fn thread(&self, cpu: usize) -> Option<Self::Thread>;
    /// What `step` is in the model.
    fn project(&self, step: &Step) -> Projected;
    /// Whether action `a`, enabled in `s`, reports no step.
    fn silent(&self, s: &State<Self>, a: &Action<Self>) -> bool;
    /// Whether the visible action `a` is the one `thread` reports with `step` (projected to the
    /// action `label`).
    fn reports(&self, a: &Action<Self>, label: &str, thread: Self::Thread, step: &Step) -> bool;
    /// Checks the values of `step`, reported by `thread`'s action from `before` to `after`;
    /// `history`: the trace's steps before it (in replay order).
    fn check_action(
        &self,
        thread: Self::Thread,
        before: &State<Self>,
        after: &State<Self>,
        step: &Step,
        history: &[TraceStep],
    ) -> Result<(), String>;
    /// Checks an observed step against the current state.
    fn check_observe(&self, s: &State<Self>, thread: Self::Thread, step: &Step) -> Result<(), String>;
    /// Whether `step` may be reported late: after steps of other threads that came after the
    /// access it reports (a scheduling point between the access and the report). Such a step
    /// may be matched anywhere after its own thread's previous step.
    fn may_lag(&self, step: &Step) -> bool {
        let _ = step;
        false
    }
    /// Whether a lagging `step` may also be matched before `earlier`, a step of its own thread
    /// that came before it: only where nothing orders the two (no barrier, no lock between them,
    /// and `earlier` is a step the model does not place).
    fn may_pass(&self, step: &Step, earlier: &Step) -> bool {
        let _ = (step, earlier);
        false
    }
}

/// The model state of a projection.
pub type State<P> = <<P as Projection>::Model as Model>::State;
/// The model action of a projection.
pub type Action<P> = <<P as Projection>::Model as Model>::Action;

impl Projection for FaultSetup {
    type Model = FaultModel;
    type Thread = FaultThread;

    fn model(&self) -> &FaultModel {
        &self.model
    }

    fn thread(&self, cpu: usize) -> Option<FaultThread> {
        self.cpus.get(cpu).copied()
    }

    fn project(&self, step: &Step) -> Projected {
        project_fault(step)
    }

    fn silent(&self, s: &FaultState, a: &FaultAction) -> bool {
        fault_silent(s, a)
    }

    fn reports(&self, a: &FaultAction, label: &str, thread: FaultThread, step: &Step) -> bool {
        if let (FaultAction::F1 { gfn: g, .. }, Step::FaultSlot { gfn: t, .. }) = (a, step) {
            if trace_gfn(*g) != *t {
                return false;
            }
        }
        fault_label(a) == Some((label, thread))
    }

    fn check_action(
        &self,
        thread: FaultThread,
        before: &FaultState,
        after: &FaultState,
        step: &Step,
        _history: &[TraceStep],
    ) -> Result<(), String> {
        fault_check_action(self, thread, before, after, step)
    }

    fn check_observe(&self, s: &FaultState, thread: FaultThread, step: &Step) -> Result<(), String> {
        fault_check_observe(self, s, thread, step)
    }

    /// Loom's C11 traces need two kinds of lag; shuttle's sequentially consistent ones need none.
    ///
    /// * F1 (the memslot lookup), F4 (the `seq` snapshot) and F8 (GUP-fast's read of the host
    ///   PTE) are lockless loads. Under weak memory such a load may return a value older than
    ///   the newest store the trace has already shown, the value it would read at an earlier
    ///   position: the lag rule tries exactly those positions (after the thread's own previous
    ///   step, or past the `_unsafe` pre-check for F8, see `may_pass`).
    /// * E1 is reported after `in_progress`'s decrement, which follows the `seq` store: loom may
    ///   schedule another thread in between, and that thread's F4 may read the new `seq` before
    ///   the report.
    fn may_lag(&self, step: &Step) -> bool {
        matches!(
            step,
            Step::FaultSlot { .. }
                | Step::Snapshot { .. }
                | Step::FaultResolved { .. }
                | Step::InvalidateEnd { .. }
        )
    }

    /// F8's load may pass F7's `_unsafe` pre-check (lockless loads with no barrier between them;
    /// F4's `smp_rmb` comes before both). The model does not place F7 (abstracted).
    fn may_pass(&self, step: &Step, earlier: &Step) -> bool {
        matches!(
            (step, earlier),
            (Step::FaultResolved { .. }, Step::Retry { check: RetryCheck::GfnUnsafe, .. })
        )
    }
}

/// Every state reachable from `states` by silent actions.
fn closure<P: Projection>(p: &P, states: HashSet<State<P>>) -> HashSet<State<P>> {
    let model = p.model();
    let mut seen = states.clone();
    let mut todo: Vec<State<P>> = states.into_iter().collect();
    let mut acts = Vec::new();
    while let Some(s) = todo.pop() {
        acts.clear();
        model.actions(&s, &mut acts);
        for a in acts.iter().filter(|a| p.silent(&s, a)) {
            if let Some(n) = model.next_state(&s, a.clone()) {
                if seen.insert(n.clone()) {
                    todo.push(n);
                }
            }
        }
    }
    seen
}

/// Keeps the first few distinct reasons.
fn reasons(mut why: Vec<String>) -> String {
    why.sort();
    why.dedup();
    let more = why.len().saturating_sub(4);
    why.truncate(4);
    let mut s = why.join("; ");
    if more > 0 {
        s.push_str(&format!("; and {more} more"));
    }
    s
}

/// Replays `trace` in the fault model of `setup` ([`replay`]).
pub fn replay_fault(setup: &FaultSetup, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    replay(setup, trace)
}

/// Replays `trace` in `p`'s model, from its initial state. `Ok` with counts when every step is
/// allowed; the first step the model does not allow (or whose values disagree with every path
/// the model allows) otherwise. Steps that may lag ([`Projection::may_lag`]) are also tried at
/// each earlier position after their thread's previous step; the trace conforms when one
/// placement does, and the mismatch reported is that of the trace as recorded.
pub fn replay<P: Projection>(p: &P, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    let first = match replay_once(p, trace) {
        Ok(r) => return Ok(r),
        Err(m) => m,
    };
    let mut trace = trace.to_vec();
    match replay_lagged(p, &mut trace, 0, first.index) {
        Some(r) => Ok(r),
        None => Err(first),
    }
}

/// Tries the earlier placements of each lagging step at index `from` or later, moved to at most
/// `fail` (the index where the current placement fails), recursively.
fn replay_lagged<P: Projection>(
    p: &P,
    trace: &mut Vec<TraceStep>,
    from: usize,
    fail: usize,
) -> Option<Replayed> {
    for j in from..trace.len() {
        let ts = trace[j];
        if ts.cpu.is_none() || !p.may_lag(&ts.step) {
            continue;
        }
        // Its thread's previous step, unless the projection lets it pass that one.
        let own = trace[..j]
            .iter()
            .rposition(|t| t.cpu == ts.cpu && !p.may_pass(&ts.step, &t.step))
            .map_or(0, |i| i + 1);
        for k in (own..j.min(fail + 1)).rev() {
            let step = trace.remove(j);
            trace.insert(k, step);
            let found = match replay_once(p, trace) {
                Ok(mut r) => {
                    r.lagged += 1;
                    Some(r)
                }
                Err(m) if m.index > k => replay_lagged(p, trace, j + 1, m.index).map(|mut r| {
                    r.lagged += 1;
                    r
                }),
                Err(_) => None,
            };
            let step = trace.remove(k);
            trace.insert(j, step);
            if found.is_some() {
                return found;
            }
        }
    }
    None
}

/// One replay of `trace`, in its order.
fn replay_once<P: Projection>(p: &P, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
    let model = p.model();
    let mut states = closure(p, model.init_states().into_iter().collect());
    let mut out = Replayed { max_states: states.len(), ..Replayed::default() };
    let mut acts = Vec::new();
    for (index, ts) in trace.iter().enumerate() {
        let Some(cpu) = ts.cpu else {
            out.outside_roles += 1;
            continue;
        };
        let fail = |thread: Option<String>, reason: String| Mismatch { index, step: *ts, thread, reason };
        let Some(thread) = p.thread(cpu) else {
            return Err(fail(None, format!("CPU {cpu} plays no thread of the model")));
        };
        let name = Some(thread.to_string());
        let mut next = HashSet::new();
        let mut why = Vec::new();
        match p.project(&ts.step) {
            Projected::Abstracted(_) => {
                out.abstracted += 1;
                continue;
            }
            Projected::Outside(reason) => return Err(fail(name, format!("outside the model: {reason}"))),
            Projected::Observe => {
                for s in &states {
                    match p.check_observe(s, thread, &ts.step) {
                        Ok(()) => {
                            next.insert(s.clone());
                        }
                        Err(e) => why.push(e),
                    }
                }
                out.observed += 1;
            }
            Projected::Action(want) => {
                for s in &states {
                    acts.clear();
                    model.actions(s, &mut acts);
                    let mut matched = false;
                    for a in acts.iter().filter(|a| !p.silent(s, a) && p.reports(a, want, thread, &ts.step)) {
                        matched = true;
                        let Some(n) = model.next_state(s, a.clone()) else { continue };
                        match p.check_action(thread, s, &n, &ts.step, &trace[..index]) {
                            Ok(()) => {
                                next.insert(n);
                            }
                            Err(e) => why.push(format!("{}: {e}", model.format_action(a))),
                        }
                    }
                    if !matched {
                        let enabled: Vec<String> =
                            acts.iter().filter(|a| !p.silent(s, a)).map(|a| model.format_action(a)).collect();
                        if !enabled.is_empty() {
                            why.push(format!(
                                "{thread} cannot take {want} here (the model enables: {})",
                                enabled.join(", ")
                            ));
                        }
                    }
                }
                out.actions += 1;
            }
        }
        if next.is_empty() && why.is_empty() {
            why.push(format!("{thread} cannot take this step here (the model enables no visible step)"));
        }
        if next.is_empty() {
            // A step the model enables but whose values disagree says more than the states
            // where the step is not enabled at all.
            let (disagree, disabled): (Vec<String>, Vec<String>) =
                why.into_iter().partition(|w| !w.contains(" cannot take "));
            let why = if disagree.is_empty() { disabled } else { disagree };
            return Err(fail(name, reasons(why)));
        }
        states = closure(p, next);
        out.max_states = out.max_states.max(states.len());
    }
    Ok(out)
}

/// A thread of the walk model (IPI scheme).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkThread {
    /// Walker `i` (`WalkState::walkers[i]`).
    Walker(usize),
    /// The zapper.
    Zapper,
}

impl fmt::Display for WalkThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkThread::Walker(i) => write!(f, "walker{i}"),
            WalkThread::Zapper => f.write_str("zapper"),
        }
    }
}

/// What a trace's scenario is, in the walk model's terms (IPI-and-wait, sequential
/// consistency: shuttle's traces).
#[derive(Clone, Debug)]
pub struct WalkSetup {
    /// The model instance (`Reclaim::Ipi`, `Memory::Sc`).
    pub model: WalkModel,
    /// `cpus[c]`: the model thread that CPU `c` plays.
    pub cpus: Vec<WalkThread>,
    /// `walker_cpus[v]`: the CPU walker `v`'s vCPU is loaded on (what `Kick` names).
    pub walker_cpus: Vec<usize>,
    /// Table pages each zap frees (the model frees one).
    pub pages: usize,
}

impl WalkSetup {
    /// `sb-walk` (models/src/scenarios/p5.rs): CPU 0 is a lockless walker (vCPU 0, loaded on
    /// CPU 0), CPU 1 the zapper (unlink, `ZapList::commit`: flush with IPIs, free one page).
    pub fn sb_walk(model_mutant: Option<WalkMutant>) -> Self {
        WalkSetup {
            model: WalkModel::new(1, Reclaim::Ipi, Memory::Sc, model_mutant),
            cpus: vec![WalkThread::Walker(0), WalkThread::Zapper],
            walker_cpus: vec![0],
            pages: 1,
        }
    }

    fn walker_on(&self, cpu: CpuId) -> Option<usize> {
        self.walker_cpus.iter().position(|&c| c == cpu.index())
    }

    /// The CPU the zapper runs on.
    fn zapper_cpu(&self) -> Option<usize> {
        self.cpus.iter().position(|t| *t == WalkThread::Zapper)
    }
}

fn walk_project(step: &Step) -> Projected {
    use Projected::*;
    match step {
        Step::WalkBegin => Action("L1-L2"),
        Step::WalkEnd => Action("L3-L4"),
        Step::Kick { .. } => Action("Q3-Q4"),
        Step::IpiAndWait { .. } => Action("Q5"),
        Step::ZapCommit { .. } => Action("Z2"),
        Step::Request { .. } => Abstracted("Q1: the request bit (the IPI model's vCPUs are walkers only)"),
        Step::GuestEnter { .. } | Step::GuestExit => {
            Outside("V1-V6: guest mode (the IPI model leaves out guest-mode vCPUs)")
        }
        Step::EpochDefer { .. } => Outside("the epoch scheme (the walk model's Reclaim::Epoch)"),
        _ => Outside("not a step of lockless walks or table-page frees"),
    }
}

impl Projection for WalkSetup {
    type Model = WalkModel;
    type Thread = WalkThread;

    fn model(&self) -> &WalkModel {
        &self.model
    }

    fn thread(&self, cpu: usize) -> Option<WalkThread> {
        self.cpus.get(cpu).copied()
    }

    fn project(&self, step: &Step) -> Projected {
        walk_project(step)
    }

    fn silent(&self, _s: &WalkState, a: &WalkAction) -> bool {
        !matches!(
            a,
            WalkAction::Walker(_, WStep::Announce | WStep::Retire)
                | WalkAction::Zapper(ZStep::Scan | ZStep::WaitAcks | ZStep::Free, _)
        )
    }

    fn reports(&self, a: &WalkAction, _label: &str, thread: WalkThread, step: &Step) -> bool {
        match (*a, thread, *step) {
            (WalkAction::Walker(v, WStep::Announce), WalkThread::Walker(w), Step::WalkBegin) => v == w,
            (WalkAction::Walker(v, WStep::Retire), WalkThread::Walker(w), Step::WalkEnd) => v == w,
            (WalkAction::Zapper(ZStep::Scan, v), WalkThread::Zapper, Step::Kick { cpu, .. }) => {
                cpu.and_then(|c| self.walker_on(c)) == Some(v)
            }
            (WalkAction::Zapper(ZStep::WaitAcks, _), WalkThread::Zapper, Step::IpiAndWait { .. }) => true,
            (WalkAction::Zapper(ZStep::Free, _), WalkThread::Zapper, Step::ZapCommit { .. }) => true,
            _ => false,
        }
    }

    fn check_action(
        &self,
        _thread: WalkThread,
        _before: &WalkState,
        after: &WalkState,
        step: &Step,
        history: &[TraceStep],
    ) -> Result<(), String> {
        match *step {
            Step::WalkBegin | Step::WalkEnd => Ok(()),
            Step::Kick { cpu, ipi } => {
                let v = cpu.and_then(|c| self.walker_on(c)).ok_or("a kick of no walker")?;
                expect("IPI needed (walker not OUTSIDE)", after.walkers[v].waited_for, ipi)
            }
            Step::IpiAndWait { targets } => {
                // The CPUs the zapper's kicks since its previous Q5 said need an IPI.
                let zapper = self.zapper_cpu();
                let since = history
                    .iter()
                    .rposition(|t| t.cpu == zapper && matches!(t.step, Step::IpiAndWait { .. }))
                    .map_or(0, |i| i + 1);
                let kicked: Vec<usize> = history[since..]
                    .iter()
                    .filter(|t| t.cpu == zapper)
                    .filter_map(|t| match t.step {
                        Step::Kick { cpu: Some(c), ipi: true } if Some(c.index()) != zapper => {
                            Some(c.index())
                        }
                        _ => None,
                    })
                    .collect();
                let sent: Vec<usize> = targets.iter().map(|c| c.index()).collect();
                expect("IPI targets (the kicks that needed one)", kicked, sent)
            }
            Step::ZapCommit { pages } => {
                expect("table page freed", true, after.freed)?;
                expect("pages freed", self.pages, pages)
            }
            step => Err(format!("no value check for {step:?}")),
        }
    }

    fn check_observe(&self, _s: &WalkState, thread: WalkThread, step: &Step) -> Result<(), String> {
        Err(format!("{thread} cannot report {step:?}"))
    }

    /// `Kick` reports a mode read made before a scheduling point (the read of the vCPU's CPU).
    fn may_lag(&self, step: &Step) -> bool {
        matches!(step, Step::Kick { .. })
    }
}

/// A recorded scenario, as an instance of a model: the correct model, and the model mutant that
/// breaks the same rule as the recorded core mutant (when there is one).
#[derive(Clone, Debug)]
pub enum Instance {
    /// An instance of the fault model.
    Fault(FaultSetup),
    /// An instance of the walk model.
    Walk(WalkSetup),
}

impl Instance {
    /// The instance `scenario` is, with `model_mutant` applied: `None` for a scenario no
    /// projection knows.
    fn of(scenario: &str, model_mutant: Option<ModelMutant>) -> Option<Self> {
        match (scenario, model_mutant) {
            ("mmu-fault-vs-invalidation", None) => {
                Some(Instance::Fault(FaultSetup::mmu_fault_vs_invalidation(None)))
            }
            ("mmu-fault-vs-invalidation", Some(ModelMutant::Fault(m))) => {
                Some(Instance::Fault(FaultSetup::mmu_fault_vs_invalidation(Some(m))))
            }
            ("sb-walk", None) => Some(Instance::Walk(WalkSetup::sb_walk(None))),
            ("sb-walk", Some(ModelMutant::Walk(m))) => Some(Instance::Walk(WalkSetup::sb_walk(Some(m)))),
            _ => None,
        }
    }

    /// Replays `trace` in this instance's model.
    pub fn replay(&self, trace: &[TraceStep]) -> Result<Replayed, Mismatch> {
        match self {
            Instance::Fault(s) => replay(s, trace),
            Instance::Walk(s) => replay(s, trace),
        }
    }
}

/// A model mutant of the fault or the walk model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelMutant {
    Fault(crate::models::fault::FaultMutant),
    Walk(WalkMutant),
}

/// The model mutant that breaks the same rule or barrier as core mutant `m`, in the model of
/// `scenario` ([`crate::registry::fault_core`], [`crate::registry::walk_core`]).
fn model_mutant(scenario: &str, m: mmusync_models::Mutant) -> Option<ModelMutant> {
    use crate::models::fault::FaultMutant;
    const FAULT: [FaultMutant; 7] = [
        FaultMutant::SkipInProgressCheck,
        FaultMutant::SkipSeqCheck,
        FaultMutant::SkipRangeCheck,
        FaultMutant::SnapshotAfterResolve,
        FaultMutant::NoLockedRecheck,
        FaultMutant::RangeOverwrites,
        FaultMutant::FlushAfterUnlock,
    ];
    const WALK: [WalkMutant; 8] = [
        WalkMutant::NoModeStore,
        WalkMutant::NoIrqDisable,
        WalkMutant::IpiOnlyInGuest,
        WalkMutant::FreeBeforeFlush,
        WalkMutant::NoWalkerMb,
        WalkMutant::NoZapperMb,
        WalkMutant::UnpinBeforeFlush,
        WalkMutant::NoPinMb,
    ];
    match scenario {
        "mmu-fault-vs-invalidation" => {
            FAULT.into_iter().find(|f| crate::registry::fault_core(*f) == Some(m)).map(ModelMutant::Fault)
        }
        "sb-walk" => {
            WALK.into_iter().find(|w| crate::registry::walk_core(*w) == Some(m)).map(ModelMutant::Walk)
        }
        _ => None,
    }
}

/// What [`conform`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conformance {
    /// Executions that replayed in the correct model.
    pub accepted: usize,
    /// Executions the correct model rejected (each must be a failing execution of a mutant).
    pub rejected: usize,
    /// Executions that replayed in the model mutant (for a core mutant that has one).
    pub in_model_mutant: usize,
    /// Steps that replayed only at an earlier position ([`Projection::may_lag`]).
    pub lagged: usize,
    /// Everything that disagrees: the correct code's execution the model rejects, a mutant's
    /// failing execution the model accepts, a mutant's execution its model mutant rejects.
    pub problems: Vec<String>,
}

/// Replays every execution of `traces` in the model its scenario is an instance of.
///
/// On the correct code every execution must replay. With a core mutant, the failing execution
/// (the last, when `traces.failed`) must be rejected by the correct model, and every execution
/// must replay in the model mutant that breaks the same rule, where the model has one. `Err` for
/// a scenario or mutant no model covers.
pub fn conform(traces: &mmusync_models::Traces) -> Result<Conformance, String> {
    let correct = Instance::of(&traces.scenario, None)
        .ok_or_else(|| format!("{}: no model projection for this scenario", traces.scenario))?;
    let mutant = match traces.mutant {
        None => None,
        Some(m @ mmusync_models::Mutant::Barrier(_)) => {
            return Err(format!(
                "{}: a barrier mutant's failure is a weak-memory effect, which these models (their steps \
                 replayed in sequentially consistent order) do not show",
                m.name()
            ))
        }
        Some(m) => {
            let mm = model_mutant(&traces.scenario, m).ok_or_else(|| {
                format!("{}: no model mutant breaks what {} breaks", traces.scenario, m.name())
            })?;
            Instance::of(&traces.scenario, Some(mm))
        }
    };
    let mut out = Conformance::default();
    let last = traces.executions.len().saturating_sub(1);
    for (i, trace) in traces.executions.iter().enumerate() {
        let failing = traces.failed && i == last;
        match correct.replay(trace) {
            Ok(r) => {
                out.accepted += 1;
                out.lagged += r.lagged;
                if failing {
                    out.problems
                        .push(format!("execution {i}: the failing execution replays in the correct model"));
                }
            }
            Err(m) => {
                out.rejected += 1;
                if traces.mutant.is_none() {
                    out.problems.push(format!("execution {i} of the correct code: {m}"));
                }
            }
        }
        if let Some(model) = &mutant {
            match model.replay(trace) {
                Ok(_) => out.in_model_mutant += 1,
                Err(m) => out.problems.push(format!("execution {i}: not a path of the model mutant: {m}")),
            }
        }
    }
    Ok(out)
}
