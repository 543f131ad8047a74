//! Core's own steps on real threads, recorded for trace conformance.
//!
//! loom and shuttle see every [`Hal::step`] of an execution because
//! they schedule it. Real threads have no scheduler to ask, so [`Recorded`] wraps a backend and
//! appends each step core reports to one process-wide log, under a lock: the order in which the
//! CPUs took that lock is the trace's order. A [`Recording`] (at most one at a time) turns the
//! log on and hands out what it collected. [`ThreadExec`](crate::exec::ThreadExec) marks where a
//! scenario's roles start and end, so steps of the setup and the final checks carry no CPU, as
//! the other checkers' traces do.
//!
//! What such a trace is, and is not:
//!
//! * Core reports a step right after the access it describes, but on real threads another CPU
//!   can report in between: the log shows the step later than its access. The replay in the
//!   protocol models allows exactly that for the steps it marks as *may lag* (a step matched at
//!   an earlier position, after its own thread's previous step). A trace of the correct code
//!   that needs more than that is a disagreement between core and the model.
//! * The log's lock is a full barrier on x86 at every step, and the lock hand-off between CPUs
//!   changes the timing: a recorded run checks the order of core's protocol steps, not weak
//!   memory (`hw-stress` without recording, and loom, do that).

use mmusync::barrier::FenceKind;
use mmusync::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
use mmusync::{Barrier, Rule, Step};
use mmusync_models::TraceStep;
use std::sync::{Mutex, MutexGuard};

/// The process-wide step log.
struct Log {
    /// A [`Recording`] is live.
    recording: bool,
    /// A scenario's roles are running (steps get their CPU).
    roles: bool,
    /// The steps recorded since the last [`Recording::take`].
    steps: Vec<TraceStep>,
}

static LOG: Mutex<Log> = Mutex::new(Log { recording: false, roles: false, steps: Vec::new() });

fn log() -> MutexGuard<'static, Log> {
    // A panic while the lock is held (a violation inside a step report cannot happen: the
    // report only pushes) leaves the log consistent: take it back.
    LOG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Marks the start (`true`) or the end (`false`) of a scenario's roles.
pub(crate) fn set_roles(on: bool) {
    log().roles = on;
}

/// The exclusive right to the step log while it lives: [`Recorded`] backends record into it.
#[derive(Debug)]
pub struct Recording {
    _exclusive: (),
}

impl Recording {
    /// Starts recording; `None` if another recording is live in this process.
    pub fn start() -> Option<Recording> {
        let mut log = log();
        if log.recording {
            return None;
        }
        log.recording = true;
        log.steps.clear();
        Some(Recording { _exclusive: () })
    }

    /// The steps recorded since the start or the previous `take`, in log order.
    pub fn take(&self) -> Vec<TraceStep> {
        std::mem::take(&mut log().steps)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let mut log = log();
        log.recording = false;
        log.steps = Vec::new();
    }
}

/// A backend whose [`Hal::step`] appends to the step log while a [`Recording`] is live;
/// everything else delegates to `H`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Recorded<H>(pub H);

// SAFETY: every item delegates to `H`, which keeps the contract; `step` only records (a lock
// and a push), it neither skips nor adds a barrier.
unsafe impl<H: Cpus> Hal for Recorded<H> {
    type AtomicU64 = H::AtomicU64;
    type AtomicUsize = H::AtomicUsize;
    type AtomicBool = H::AtomicBool;
    type RawRwLock = H::RawRwLock;
    type RawMutex = H::RawMutex;

    #[inline(always)]
    fn fence(&self, kind: FenceKind) {
        self.0.fence(kind)
    }

    #[inline(always)]
    fn barrier(&self, b: Barrier) {
        self.0.barrier(b)
    }

    #[inline(always)]
    fn keeps(&self, rule: Rule) -> bool {
        self.0.keeps(rule)
    }

    #[inline(always)]
    fn spin_hint(&self) {
        self.0.spin_hint()
    }

    fn step(&self, step: Step) {
        self.0.step(step);
        let mut log = log();
        if log.recording {
            let cpu = if log.roles { self.0.current_cpu().map(CpuId::index) } else { None };
            log.steps.push(TraceStep { cpu, step });
        }
    }
}

// SAFETY: delegates to `H`'s `Cpus`, which keeps the contract.
unsafe impl<H: Cpus> Cpus for Recorded<H> {
    #[inline(always)]
    fn current_cpu(&self) -> Option<CpuId> {
        self.0.current_cpu()
    }

    #[inline(always)]
    fn irq_save(&self) -> IrqState {
        self.0.irq_save()
    }

    #[inline(always)]
    unsafe fn irq_restore(&self, state: IrqState) {
        // SAFETY: the caller's obligation, passed on unchanged.
        unsafe { self.0.irq_restore(state) }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        self.0.ipi_and_wait(targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmusync::hal::std::StdHal;

    #[test]
    fn a_recording_is_exclusive_and_keeps_the_steps_in_order() {
        let hal = Recorded(StdHal);
        hal.step(Step::MemslotSynchronized); // no recording: dropped
        let recording = Recording::start().expect("no other recording in this test binary");
        assert!(Recording::start().is_none(), "a second recording while one is live");
        hal.step(Step::MemslotSynchronized);
        hal.step(Step::MemslotGeneration { generation: 3 });
        let steps = recording.take();
        let want = [Step::MemslotSynchronized, Step::MemslotGeneration { generation: 3 }];
        assert_eq!(steps.iter().map(|s| s.step).collect::<Vec<_>>(), want);
        assert!(steps.iter().all(|s| s.cpu.is_none()), "outside a scenario's roles: no CPU");
        assert!(recording.take().is_empty(), "take hands each step out once");
        drop(recording);
        hal.step(Step::MemslotSynchronized);
        let again = Recording::start().expect("the first one ended");
        assert!(again.take().is_empty(), "nothing is recorded between recordings");
    }
}
