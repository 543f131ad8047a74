//! The memslot model (P3) as a projection: `memslot-swap-vs-invalidation`.
//!
//! The scenario runs `Vm::set_memslot` (a memslot created, which swaps the memslot sets once)
//! against one `Vm::start`/`end` pair over the new slot's host page. The model's swap `k`
//! replaces layout `k` by layout `k + 1`, even layouts mapping the range into a memslot and odd
//! ones not; the scenario starts with no memslot, so its swap is the model's second (layout 1 →
//! 2) and the replay starts where the first swap has run on its own
//! ([`Projection::init_states`](super::Projection::init_states)).
//!
//! Which model actions report a step is decided by what the action does, since core reports
//! some of its steps only on one branch: S3 reports `begin` only when a memslot overlaps (the
//! action raises `in_progress`), E1 reports `end` only when it lowers `in_progress` (an `end`
//! that finds it at zero is refused without a report, `Error::Unbalanced`), and the swap's W3
//! reports `MemslotWait` only when it goes to sleep.

use super::{expect, Projected, Projection, TraceStep};
use crate::models::memslot::{InvPc, MemslotAction, MemslotModel, MemslotMutant, MemslotState, SwapPc};
use mmusync::{Gfn, Step};
use stateright::Model;
use std::fmt;

/// A thread of the memslot model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemslotThread {
    /// Memslot swap `k` (`MemslotState::swaps[k]`).
    Swap(usize),
    /// Invalidation `i` (`MemslotState::invs[i]`).
    Inv(usize),
}

impl fmt::Display for MemslotThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemslotThread::Swap(k) => write!(f, "swap{k}"),
            MemslotThread::Inv(i) => write!(f, "inv{i}"),
        }
    }
}

/// What a trace's scenario is, in the memslot model's terms.
#[derive(Clone, Debug)]
pub struct MemslotSetup {
    /// The model instance.
    pub model: MemslotModel,
    /// `cpus[c]`: the model thread that CPU `c` plays.
    pub cpus: Vec<MemslotThread>,
    /// How many of the model's swaps ran before the roles, alone (the layout the scenario
    /// starts from): the replay starts after them.
    pub swaps_before: usize,
    /// The gfns of the memslot the invalidation hits (`begin`'s range and S3c's zap).
    pub slot_gfns: (Gfn, Gfn),
}

impl MemslotSetup {
    /// `memslot-swap-vs-invalidation` (models/src/scenarios/p3.rs): CPU 0 creates memslot 0
    /// (gfn 0 ← host page 0) with `Vm::set_memslot`, CPU 1 invalidates host page 0. No memslot
    /// at first: the model's layout 1, after its first swap; the scenario's swap is the model's
    /// swap 1 (layout 1 → 2, which maps the page).
    pub fn memslot_swap_vs_invalidation(model_mutant: Option<MemslotMutant>) -> Self {
        MemslotSetup {
            model: MemslotModel { invalidators: 1, swaps: 2, mutant: model_mutant },
            cpus: vec![MemslotThread::Swap(1), MemslotThread::Inv(0)],
            swaps_before: 1,
            slot_gfns: (Gfn(0), Gfn(1)),
        }
    }
}

impl Projection for MemslotSetup {
    type Model = MemslotModel;
    type Thread = MemslotThread;

    fn model(&self) -> &MemslotModel {
        &self.model
    }

    /// The state after the first `swaps_before` swaps ran alone from the model's initial state.
    fn init_states(&self) -> Vec<MemslotState> {
        let mut states = self.model.init_states();
        for k in 0..self.swaps_before {
            for a in [MemslotAction::W2(k), MemslotAction::W3(k), MemslotAction::W4(k), MemslotAction::W5(k)]
            {
                states = states.into_iter().filter_map(|s| self.model.next_state(&s, a)).collect();
            }
        }
        states
    }

    fn thread(&self, cpu: usize) -> Option<MemslotThread> {
        self.cpus.get(cpu).copied()
    }

    fn project(&self, step: &Step) -> Projected {
        use Projected::*;
        match step {
            Step::ActiveStart { .. } => Action("S1"),
            Step::InvalidateBegin { .. } => Action("S3"),
            Step::Unmap { .. } => Observe,
            Step::InvalidateEnd { .. } => Action("E1"),
            Step::ActiveEnd { .. } => Action("E2"),
            Step::MemslotWait { .. } => Action("W3"),
            Step::MemslotPublish { .. } => Action("W4-W5"),
            Step::InvalidateCaches { .. } | Step::CacheInvalidated { .. } => {
                Abstracted("S2: translation caches (the pfncache model's)")
            }
            Step::InvalidateFlush => Abstracted("S4: the zap's TLB flush (the memslot model has no SPTEs)"),
            Step::MemslotSynchronized | Step::MemslotGeneration { .. } => Abstracted(
                "W7-W8: the SRCU wait and the final generation (loom's memslot-delete-vs-fault and \
                 memslot-generation-vs-cache check them)",
            ),
            Step::InvalidateRangeAdd { .. } => {
                Outside("S3b range_add: a start over several memslots (one memslot per layout here)")
            }
            _ => Outside("not a step of memslot swaps or of invalidate_range_start/end"),
        }
    }

    /// S3 and E1 are visible when they change `in_progress`, W3 when the swap goes to sleep, W5
    /// (the lock dropped, then `MemslotPublish`) always; W2 and W4 (taking the lock, the
    /// publishing store) never.
    fn silent(&self, s: &MemslotState, a: &MemslotAction) -> bool {
        let after = || self.model.next_state(s, *a);
        match *a {
            MemslotAction::S1(_) | MemslotAction::E2(_) | MemslotAction::W5(_) => false,
            MemslotAction::S3(_) | MemslotAction::E1(_) => {
                after().is_none_or(|n| n.in_progress == s.in_progress)
            }
            MemslotAction::W3(k) => after().is_none_or(|n| n.swaps[k] != SwapPc::Sleeping),
            MemslotAction::W2(_) | MemslotAction::W4(_) => true,
        }
    }

    fn reports(&self, a: &MemslotAction, _label: &str, thread: MemslotThread, step: &Step) -> bool {
        use MemslotThread::{Inv, Swap};
        match (*a, thread, *step) {
            (MemslotAction::S1(i), Inv(j), Step::ActiveStart { .. })
            | (MemslotAction::S3(i), Inv(j), Step::InvalidateBegin { .. })
            | (MemslotAction::E1(i), Inv(j), Step::InvalidateEnd { .. })
            | (MemslotAction::E2(i), Inv(j), Step::ActiveEnd { .. })
            | (MemslotAction::W3(i), Swap(j), Step::MemslotWait { .. })
            | (MemslotAction::W5(i), Swap(j), Step::MemslotPublish { .. }) => i == j,
            _ => false,
        }
    }

    fn check_action(
        &self,
        _thread: MemslotThread,
        before: &MemslotState,
        after: &MemslotState,
        step: &Step,
        _history: &[TraceStep],
    ) -> Result<(), String> {
        match *step {
            Step::ActiveStart { count } | Step::ActiveEnd { count } => {
                expect("active count", u64::from(after.active), count)
            }
            Step::MemslotWait { active } => {
                expect("active count the swap waits for", u64::from(before.active), active)
            }
            Step::MemslotPublish { .. } => Ok(()),
            Step::InvalidateBegin { in_progress, start, end } => {
                expect("in_progress", u64::from(after.in_progress), in_progress)?;
                expect("begin's range", self.slot_gfns, (start, end))
            }
            Step::InvalidateEnd { in_progress, .. } => {
                expect("in_progress", u64::from(after.in_progress), in_progress)
            }
            step => Err(format!("no value check for {step:?}")),
        }
    }

    /// S3c: the invalidation is inside S3 (it began, E1 has not run), zapping the slot's gfns.
    fn check_observe(&self, s: &MemslotState, thread: MemslotThread, step: &Step) -> Result<(), String> {
        match (*step, thread) {
            (Step::Unmap { start, end, .. }, MemslotThread::Inv(i)) => {
                let pc = s.invs[i].pc;
                if pc != InvPc::Started {
                    return Err(format!("S3c: inv{i} is at {pc:?}, not inside S3"));
                }
                expect("zapped range", self.slot_gfns, (start, end))
            }
            (step, thread) => Err(format!("{thread} cannot report {step:?}")),
        }
    }

    /// `MemslotPublish` is reported after W5 dropped `mn_invalidate_lock`: an invalidation's S1
    /// (which takes that lock) and S3 can come in between.
    fn may_lag(&self, step: &Step) -> bool {
        matches!(step, Step::MemslotPublish { .. })
    }
}
