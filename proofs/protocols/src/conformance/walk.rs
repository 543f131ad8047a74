//! The walk model (P5, IPI scheme) as a projection: `sb-walk`.

use super::{expect, Projected, Projection, TraceStep};
use crate::models::walk::{Reclaim, WStep, WalkAction, WalkModel, WalkMutant, WalkState, ZStep};
use crate::tso::Memory;
use mmusync::hal::CpuId;
use mmusync::Step;
use std::fmt;

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
