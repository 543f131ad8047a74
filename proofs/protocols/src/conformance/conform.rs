//! Conformance of recorded runs: every execution of a `Traces` file replayed in the model its
//! scenario is an instance of, and in the model mutant that breaks the rule a core mutant breaks.

use super::{
    replay_lagging, CacheSetup, EpochSetup, FaultSetup, Lag, MemslotSetup, Mismatch, Replayed, TraceStep,
    WalkSetup,
};
use crate::models::fault::FaultMutant;
use crate::models::memslot::MemslotMutant;
use crate::models::pfncache::PfnCacheMutant;
use crate::models::walk::WalkMutant;
use crate::registry::{fault_core, memslot_core, pfncache_core, walk_core};
use mmusync_models::{Checker, Mutant};

/// A recorded scenario, as an instance of a model: the correct model, and the model mutant that
/// breaks the same rule as the recorded core mutant (when there is one).
#[derive(Clone, Debug)]
pub enum Instance {
    /// An instance of the fault model.
    Fault(FaultSetup),
    /// An instance of the walk model (IPI scheme).
    Walk(WalkSetup),
    /// An instance of the walk model (epoch scheme).
    Epoch(EpochSetup),
    /// An instance of the memslot model.
    Memslot(MemslotSetup),
    /// An instance of the pfncache model.
    Cache(CacheSetup),
}

impl Instance {
    /// The instance `scenario` is, with `model_mutant` applied (`None`: the correct model);
    /// `None` for a scenario no projection knows, or a model mutant of another model.
    fn of(scenario: &str, model_mutant: Option<ModelMutant>) -> Option<Self> {
        use ModelMutant as M;
        Some(match (scenario, model_mutant) {
            ("mmu-fault-vs-invalidation", None) => {
                Instance::Fault(FaultSetup::mmu_fault_vs_invalidation(None))
            }
            ("mmu-fault-vs-invalidation", Some(M::Fault(m))) => {
                Instance::Fault(FaultSetup::mmu_fault_vs_invalidation(Some(m)))
            }
            ("sb-walk", None) => Instance::Walk(WalkSetup::sb_walk(None)),
            ("sb-walk", Some(M::Walk(m))) => Instance::Walk(WalkSetup::sb_walk(Some(m))),
            ("epoch-walk", None) => Instance::Epoch(EpochSetup::epoch_walk(None)),
            ("epoch-walk", Some(M::Walk(m))) => Instance::Epoch(EpochSetup::epoch_walk(Some(m))),
            ("memslot-swap-vs-invalidation", None) => {
                Instance::Memslot(MemslotSetup::memslot_swap_vs_invalidation(None))
            }
            ("memslot-swap-vs-invalidation", Some(M::Memslot(m))) => {
                Instance::Memslot(MemslotSetup::memslot_swap_vs_invalidation(Some(m)))
            }
            ("cache-refresh-vs-invalidation", None) => {
                Instance::Cache(CacheSetup::cache_refresh_vs_invalidation(None))
            }
            ("cache-refresh-vs-invalidation", Some(M::Cache(m))) => {
                Instance::Cache(CacheSetup::cache_refresh_vs_invalidation(Some(m)))
            }
            _ => return None,
        })
    }

    /// Replays `trace` in this instance's model, the steps `lag` says moved as late as their
    /// thread's previous step.
    pub fn replay(&self, trace: &[TraceStep], lag: Lag) -> Result<Replayed, Mismatch> {
        match self {
            Instance::Fault(s) => replay_lagging(s, trace, lag),
            Instance::Walk(s) => replay_lagging(s, trace, lag),
            Instance::Epoch(s) => replay_lagging(s, trace, lag),
            Instance::Memslot(s) => replay_lagging(s, trace, lag),
            Instance::Cache(s) => replay_lagging(s, trace, lag),
        }
    }
}

/// A model mutant of one of the projected models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ModelMutant {
    Fault(FaultMutant),
    Walk(WalkMutant),
    Memslot(MemslotMutant),
    Cache(PfnCacheMutant),
}

/// The model mutant that breaks the same rule or barrier as core mutant `m`, in the model of
/// `scenario` (the registry's pairing: [`fault_core`], [`walk_core`], [`memslot_core`],
/// [`pfncache_core`]).
fn model_mutant(scenario: &str, m: Mutant) -> Option<ModelMutant> {
    const FAULT: [FaultMutant; 7] = [
        FaultMutant::SkipInProgressCheck,
        FaultMutant::SkipSeqCheck,
        FaultMutant::SkipRangeCheck,
        FaultMutant::SnapshotAfterResolve,
        FaultMutant::NoLockedRecheck,
        FaultMutant::RangeOverwrites,
        FaultMutant::FlushAfterUnlock,
    ];
    const WALK: [WalkMutant; 6] = [
        WalkMutant::NoModeStore,
        WalkMutant::NoIrqDisable,
        WalkMutant::IpiOnlyInGuest,
        WalkMutant::FreeBeforeFlush,
        WalkMutant::NoWalkerMb,
        WalkMutant::NoZapperMb,
    ];
    const EPOCH: [WalkMutant; 2] = [WalkMutant::UnpinBeforeFlush, WalkMutant::NoPinMb];
    const MEMSLOT: [MemslotMutant; 3] =
        [MemslotMutant::NoWait, MemslotMutant::PublishAfterUnlock, MemslotMutant::WaitHoldingLock];
    const CACHE: [PfnCacheMutant; 3] =
        [PfnCacheMutant::SkipActiveCount, PfnCacheMutant::SkipSeq, PfnCacheMutant::SnapshotAfterResolve];
    match scenario {
        "mmu-fault-vs-invalidation" => {
            FAULT.into_iter().find(|f| fault_core(*f) == Some(m)).map(ModelMutant::Fault)
        }
        "sb-walk" => WALK.into_iter().find(|w| walk_core(*w) == Some(m)).map(ModelMutant::Walk),
        "epoch-walk" => EPOCH.into_iter().find(|w| walk_core(*w) == Some(m)).map(ModelMutant::Walk),
        "memslot-swap-vs-invalidation" => {
            MEMSLOT.into_iter().find(|w| memslot_core(*w) == Some(m)).map(ModelMutant::Memslot)
        }
        "cache-refresh-vs-invalidation" => {
            CACHE.into_iter().find(|c| pfncache_core(*c) == Some(m)).map(ModelMutant::Cache)
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
    /// Steps that replayed only at an earlier position ([`super::Projection::may_lag`]).
    pub lagged: usize,
    /// A real-thread mutant run's failing execution replayed in the correct model: its trace
    /// does not show the order that failed (a step's access may lie anywhere after its thread's
    /// previous report, and the failing access itself, a walker's read of a freed page say,
    /// reports no step). Not a disagreement; a scheduled checker's failing execution must be
    /// rejected.
    pub failure_unseen: bool,
    /// Everything that disagrees: the correct code's execution the model rejects, a mutant's
    /// failing execution the model accepts, a mutant's execution its model mutant rejects.
    pub problems: Vec<String>,
}

/// Replays every execution of `traces` in the model its scenario is an instance of.
///
/// On the correct code every execution must replay. With a core mutant, the failing execution
/// (the last, when `traces.failed`) must be rejected by the correct model, and every execution
/// must replay in the model mutant that breaks the same rule, where the model has one. `Err` for
/// a scenario or mutant no model covers. Real threads' traces ([`Checker::Hardware`]) may have
/// any step reported late ([`Lag::Every`]); the scheduled checkers' only the projection's. A
/// real-thread failing execution that replays in the correct model is reported
/// ([`Conformance::failure_unseen`]), not counted as a disagreement.
pub fn conform(traces: &mmusync_models::Traces) -> Result<Conformance, String> {
    let correct = Instance::of(&traces.scenario, None)
        .ok_or_else(|| format!("{}: no model projection for this scenario", traces.scenario))?;
    let mutant = match traces.mutant {
        None => None,
        Some(m @ Mutant::Barrier(_)) => {
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
    let lag = if traces.checker == Checker::Hardware { Lag::Every } else { Lag::Projection };
    let mut out = Conformance::default();
    let last = traces.executions.len().saturating_sub(1);
    for (i, trace) in traces.executions.iter().enumerate() {
        let failing = traces.failed && i == last;
        match correct.replay(trace, lag) {
            Ok(r) => {
                out.accepted += 1;
                out.lagged += r.lagged;
                if failing && lag == Lag::Every {
                    out.failure_unseen = true;
                } else if failing {
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
            match model.replay(trace, lag) {
                Ok(_) => out.in_model_mutant += 1,
                Err(m) => out.problems.push(format!("execution {i}: not a path of the model mutant: {m}")),
            }
        }
    }
    Ok(out)
}
