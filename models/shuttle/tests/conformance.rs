//! The HAL conformance suite under shuttle: every check, every case, a few hundred executions
//! each under a fixed-seed random scheduler and a fixed-seed PCT scheduler, against the shuttle
//! HAL (core's `Box` allocator, which does not poison); and one deliberately broken backend
//! that the suite catches.
//!
//! Shuttle is sequentially consistent (every atomic access `SeqCst`, every fence a no-op), so
//! the ordering checks (message passing, store buffering, the named barriers) are trivially
//! satisfied here and can never fail; they still run, so that every check runs on every
//! backend. What shuttle does test is the order of steps: the locks, the interrupt lines and
//! the blocking IPIs of its HAL.

use mmusync::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
use mmusync::mmu::BoxAlloc;
use mmusync::{Barrier, FenceKind, Rule};
use mmusync_models::conformance::{Caps, Check, Subject};
use mmusync_shuttle::exec::ShuttleExec;
use mmusync_shuttle::hal::ShuttleHal;
use mmusync_shuttle::trace::Trace;
use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use shuttle::{Config, Runner};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

/// Executions per check case and scheduler.
const ITERATIONS: usize = 200;
/// The schedulers' seed: fixed, so a run is reproducible.
const SEED: u64 = 0x6d6d_7573_796e_6321;
/// Spin hints a CPU may make in one execution (the checks wait by yielding, not spinning).
const SPIN_BUDGET: u64 = 100_000;

/// Runs case `case` of `check` under `sched`, with the HAL `make_hal` wraps around each
/// execution's shuttle HAL.
fn run<H: Cpus>(
    check: Check,
    case: usize,
    sched: impl Scheduler + 'static,
    make_hal: impl Fn(ShuttleHal) -> H + Send + Sync + 'static,
) {
    let runner = Runner::new(sched, Config::new());
    runner.run(move || {
        let trace = Arc::new(Trace::new());
        let hal = make_hal(ShuttleHal::new(None, SPIN_BUDGET, trace.clone()));
        let subject = Subject { hal, exec: ShuttleExec::new(trace), alloc: BoxAlloc, caps: Caps::MODEL };
        check.run(case, &subject);
    });
}

#[test]
fn every_check_passes_on_the_shuttle_hal() {
    let start = Instant::now();
    let mut runs = 0;
    for &check in Check::ALL {
        for case in 0..check.cases() {
            let t = Instant::now();
            run(check, case, RandomScheduler::new_from_seed(SEED, ITERATIONS), |h| h);
            run(check, case, PctScheduler::new_from_seed(SEED, 3, ITERATIONS), |h| h);
            runs += 2;
            let note = if check.needs_weak_memory() { "  (cannot fail under SC)" } else { "" };
            println!(
                "{:<64} 2 x {ITERATIONS} executions {:>9.2?}  pass{note}",
                check.case_name(case),
                t.elapsed()
            );
        }
    }
    println!("{runs} runs of {ITERATIONS} executions: {:.2?}", start.elapsed());
}

/// The shuttle HAL with an `ipi_and_wait` that returns at once.
#[derive(Clone)]
struct EagerIpi(ShuttleHal);

// SAFETY: deliberately broken: `ipi_and_wait` does not wait. Everything else delegates to the
// shuttle HAL, which keeps the contract. Used only by the conformance check below, which
// touches nothing but atomics and so relies on no contract for memory safety.
unsafe impl Hal for EagerIpi {
    type AtomicU64 = <ShuttleHal as Hal>::AtomicU64;
    type AtomicUsize = <ShuttleHal as Hal>::AtomicUsize;
    type AtomicBool = <ShuttleHal as Hal>::AtomicBool;
    type RawRwLock = <ShuttleHal as Hal>::RawRwLock;
    type RawMutex = <ShuttleHal as Hal>::RawMutex;

    fn fence(&self, kind: FenceKind) {
        self.0.fence(kind)
    }

    fn barrier(&self, b: Barrier) {
        self.0.barrier(b)
    }

    fn keeps(&self, rule: Rule) -> bool {
        self.0.keeps(rule)
    }

    fn spin_hint(&self) {
        self.0.spin_hint()
    }
}

// SAFETY: deliberately broken (see the `Hal` impl); the rest delegates to the shuttle HAL.
unsafe impl Cpus for EagerIpi {
    fn current_cpu(&self) -> Option<CpuId> {
        self.0.current_cpu()
    }

    fn irq_save(&self) -> IrqState {
        self.0.irq_save()
    }

    unsafe fn irq_restore(&self, state: IrqState) {
        // SAFETY: the caller's obligation, passed on unchanged.
        unsafe { self.0.irq_restore(state) }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        let _ = targets;
    }
}

#[test]
fn an_ipi_that_does_not_wait_is_caught() {
    let check = Check::IpiWaitsForIrqsOn;
    let failed = catch_unwind(AssertUnwindSafe(|| {
        run(check, 0, RandomScheduler::new_from_seed(SEED, ITERATIONS), EagerIpi);
    }));
    let payload = failed.expect_err("the suite missed an ipi_and_wait that does not wait");
    let msg = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains(
            "HAL contract broken: ipi-waits-for-irqs-on: round 0: ipi_and_wait returned while the target"
        ),
        "failed, but not as expected: {msg}"
    );
}
