//! The fault model (P1 + P2) as a projection: `mmu-fault-vs-invalidation`.

use super::{expect, gfn, trace_gfn, Projected, Projection, TraceStep};
use crate::models::fault::{FaultAction, FaultModel, FaultState, InvPc, VcpuPc};
use mmusync::{Pfn, RetryCheck, Step};
use std::fmt;

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
