//! The walk model's epoch scheme (P5, `Reclaim::Epoch`) as a projection: `epoch-walk`.
//!
//! The scenario runs `ReclaimHandle::zap` (pin, unlink, flush remote TLBs, defer the frees to
//! the epoch collector, unpin) against a vCPU that walks the tables pinned, runs the collector
//! and enters the guest with a TLB entry for the unlinked page. Of all that, core reports only
//! the zapper's flush (Q1–Q5) and its `EpochDefer`, and the vCPU's guest entries and exits:
//! an epoch walk (`ReclaimHandle::walk_begin` and its end), the pins and the collector report
//! no step. So the projection checks the zapper's order, flush before the defer and the unpin
//! that follows it (`Rule::FlushBeforeUnpin`), and the page count; the model's readers (the
//! pinned walker, the grace period, the guest's hardware walker) move silently.

use super::{expect, Projected, Projection, TraceStep};
use crate::models::walk::{Reclaim, WalkAction, WalkModel, WalkMutant, WalkState, ZStep};
use crate::tso::Memory;
use mmusync::Step;
use std::fmt;

/// A thread of the epoch walk model, as the scenario's CPUs play them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochThread {
    /// The zapper.
    Zapper,
    /// The vCPU: walker 0 (its pinned walk) and the guest (its hardware walker).
    Vcpu,
}

impl fmt::Display for EpochThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EpochThread::Zapper => f.write_str("zapper"),
            EpochThread::Vcpu => f.write_str("vcpu"),
        }
    }
}

/// What a trace's scenario is, in the epoch walk model's terms (sequential consistency).
#[derive(Clone, Debug)]
pub struct EpochSetup {
    /// The model instance (`Reclaim::Epoch`, `Memory::Sc`, one walker).
    pub model: WalkModel,
    /// `cpus[c]`: the model thread that CPU `c` plays.
    pub cpus: Vec<EpochThread>,
    /// Table pages the zap defers (the model's one table page stands for them all).
    pub pages: usize,
}

impl EpochSetup {
    /// `epoch-walk` (models/src/scenarios/p5.rs): CPU 0 is the zapper (65 table pages, more
    /// than one crossbeam bag, so that the order matters), CPU 1 the vCPU (loaded there, with
    /// a TLB entry for the linked table page).
    pub fn epoch_walk(model_mutant: Option<WalkMutant>) -> Self {
        EpochSetup {
            model: WalkModel::new(1, Reclaim::Epoch, Memory::Sc, model_mutant),
            cpus: vec![EpochThread::Zapper, EpochThread::Vcpu],
            pages: 65,
        }
    }
}

impl Projection for EpochSetup {
    type Model = WalkModel;
    type Thread = EpochThread;

    fn model(&self) -> &WalkModel {
        &self.model
    }

    fn thread(&self, cpu: usize) -> Option<EpochThread> {
        self.cpus.get(cpu).copied()
    }

    fn project(&self, step: &Step) -> Projected {
        use Projected::*;
        match step {
            Step::IpiAndWait { .. } => Action("Flush"),
            Step::EpochDefer { .. } => Action("Defer"),
            Step::Request { .. } | Step::Kick { .. } => {
                Abstracted("Q1-Q4: the flush's request and kick, inside Flush (one action in the model)")
            }
            Step::GuestEnter { .. } | Step::GuestExit => Abstracted(
                "V1-V6: guest entry and exit (the model's guest is its hardware walker, GuestFill and \
                 GuestUse; the entry's request check is sb-entry's)",
            ),
            Step::WalkBegin | Step::WalkEnd | Step::ZapCommit { .. } => {
                Outside("L1-L4/Z2: the IPI scheme's walk and free (the walk model's Reclaim::Ipi)")
            }
            _ => Outside("not a step of the epoch scheme's zap or of guest entry"),
        }
    }

    /// Visible: the zapper's `Flush` (Q5's return) and `Defer`. Silent: its pin, unlink, grace
    /// period scan and unpin, the RCU free, the walker's pinned walk, the guest's TLB fill and
    /// use (none reports a core step).
    fn silent(&self, _s: &WalkState, a: &WalkAction) -> bool {
        !matches!(a, WalkAction::Zapper(ZStep::Flush | ZStep::Defer, _))
    }

    fn reports(&self, a: &WalkAction, _label: &str, thread: EpochThread, step: &Step) -> bool {
        matches!(
            (*a, thread, *step),
            (WalkAction::Zapper(ZStep::Flush, _), EpochThread::Zapper, Step::IpiAndWait { .. })
                | (WalkAction::Zapper(ZStep::Defer, _), EpochThread::Zapper, Step::EpochDefer { .. })
        )
    }

    fn check_action(
        &self,
        _thread: EpochThread,
        _before: &WalkState,
        _after: &WalkState,
        step: &Step,
        _history: &[TraceStep],
    ) -> Result<(), String> {
        match *step {
            Step::IpiAndWait { .. } => Ok(()),
            Step::EpochDefer { pages } => expect("pages deferred", self.pages, pages),
            step => Err(format!("no value check for {step:?}")),
        }
    }

    fn check_observe(&self, _s: &WalkState, thread: EpochThread, step: &Step) -> Result<(), String> {
        Err(format!("{thread} cannot report {step:?}"))
    }
}
