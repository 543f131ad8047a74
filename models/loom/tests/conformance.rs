//! The HAL conformance suite under loom: every check, every case, explored exhaustively against
//! the loom HAL; and deliberately broken backends, each of which loom catches deterministically
//! (exhaustive exploration finds the forbidden outcome whenever one exists).
//!
//! Run with `RUSTFLAGS="--cfg loom --cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom cargo test
//! -p mmusync-loom --release --test conformance`. `CHECK=<name>` runs one check only.
#![cfg(loom)]

use mmusync::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
use mmusync::{Barrier, FenceKind, Rule};
use mmusync_loom::conformance::{explore, explore_with, Explored};
use mmusync_loom::hal::{LoomHal, LoomRawMutex};
use mmusync_models::conformance::Check;
use mmusync_models::Mutant;

#[test]
fn every_check_passes_on_the_loom_hal() {
    let only = std::env::var("CHECK").ok();
    let start = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut runs = 0;
    for &check in Check::ALL.iter().filter(|c| only.as_deref().is_none_or(|o| o == c.name())) {
        for case in 0..check.cases() {
            let r = explore(check, case);
            runs += 1;
            println!(
                "{:<64} {:>7} executions {:>9.2?}  {}",
                check.case_name(case),
                r.executions,
                r.time,
                if r.failure.is_none() { "pass" } else { "FAIL" }
            );
            if let Some(msg) = r.failure {
                println!("  {msg}");
                failed.push(check.case_name(case));
            }
        }
    }
    println!("{runs} explorations: {:.2?}", start.elapsed());
    assert!(failed.is_empty(), "the loom HAL failed conformance checks: {failed:?}");
}

// ---------------------------------------------------------------------------------------------
// Deliberately broken backends

/// `irq_restore` does nothing: interrupts stay off for ever.
const IRQ_RESTORE_NOOP: u8 = 1;
/// `ipi_and_wait` returns at once, without waiting for the targets.
const IPI_RETURNS_AT_ONCE: u8 = 2;
/// The raw mutex's `lock` takes nothing: no mutual exclusion, no ordering.
const MUTEX_NO_EXCLUSION: u8 = 3;

/// The loom HAL with one flaw (`FLAW`), for showing that the suite fails when a backend breaks
/// its contract. Never used with protocol code: the conformance checks touch nothing but
/// atomics, so a broken contract there is a wrong answer, never a memory-safety bug.
#[derive(Clone)]
struct Broken<const FLAW: u8>(LoomHal);

/// The loom mutex, or (with [`MUTEX_NO_EXCLUSION`]) a mutex that never excludes.
struct MaybeExcluding<const FLAW: u8>(LoomRawMutex);

// SAFETY: NOT a correct mutex when `FLAW == MUTEX_NO_EXCLUSION`: that is the point, and it is
// used only by the conformance checks above, whose critical sections touch loom atomics only
// (a missing exclusion shows as a wrong count, never as undefined behaviour). Otherwise it is
// the loom mutex, which keeps the contract.
unsafe impl<const FLAW: u8> lock_api::RawMutex for MaybeExcluding<FLAW> {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = MaybeExcluding(<LoomRawMutex as lock_api::RawMutex>::INIT);
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        if FLAW != MUTEX_NO_EXCLUSION {
            self.0.lock()
        }
    }

    fn try_lock(&self) -> bool {
        FLAW == MUTEX_NO_EXCLUSION || self.0.try_lock()
    }

    unsafe fn unlock(&self) {
        if FLAW != MUTEX_NO_EXCLUSION {
            // SAFETY: lock_api calls `unlock` only for the holder; without the flaw, the holder
            // holds the inner lock.
            unsafe { self.0.unlock() }
        }
    }
}

// SAFETY: deliberately broken for `FLAW == MUTEX_NO_EXCLUSION` (see `MaybeExcluding`); every
// other item delegates to the loom HAL, which keeps the contract. Used only by this file's
// conformance checks, which rely on no contract for memory safety.
unsafe impl<const FLAW: u8> Hal for Broken<FLAW> {
    type AtomicU64 = <LoomHal as Hal>::AtomicU64;
    type AtomicUsize = <LoomHal as Hal>::AtomicUsize;
    type AtomicBool = <LoomHal as Hal>::AtomicBool;
    type RawRwLock = <LoomHal as Hal>::RawRwLock;
    type RawMutex = MaybeExcluding<FLAW>;

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

// SAFETY: deliberately broken for `IRQ_RESTORE_NOOP` (interrupts never come back on) and
// `IPI_RETURNS_AT_ONCE` (no wait, no ordering); otherwise delegates to the loom HAL. Used only
// by this file's conformance checks, which rely on no contract for memory safety.
unsafe impl<const FLAW: u8> Cpus for Broken<FLAW> {
    fn current_cpu(&self) -> Option<CpuId> {
        self.0.current_cpu()
    }

    fn irq_save(&self) -> IrqState {
        self.0.irq_save()
    }

    unsafe fn irq_restore(&self, state: IrqState) {
        if FLAW != IRQ_RESTORE_NOOP {
            // SAFETY: the caller's obligation, passed on unchanged.
            unsafe { self.0.irq_restore(state) }
        }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        if FLAW != IPI_RETURNS_AT_ONCE {
            self.0.ipi_and_wait(targets)
        }
    }
}

fn broken<const FLAW: u8>() -> impl Fn() -> Broken<FLAW> + Send + Sync + 'static {
    || Broken(LoomHal::new(None))
}

/// The loom HAL with `mutant` applied (a dropped barrier, a broken rule).
fn mutant(m: Mutant) -> impl Fn() -> LoomHal + Send + Sync + 'static {
    move || LoomHal::new(Some(m))
}

#[track_caller]
fn assert_fails(what: &str, check: Check, case: usize, r: Explored, expected: &str) {
    let msg = r.failure.unwrap_or_else(|| {
        panic!(
            "{what}: {} passed {} executions; the suite missed the flaw",
            check.case_name(case),
            r.executions
        )
    });
    assert!(
        msg.contains(expected),
        "{what}: {} failed, but not with {expected:?}: {msg}",
        check.case_name(case)
    );
    println!("{what:<40} {:<56} caught after {:>5} executions: {msg}", check.case_name(case), r.executions);
}

#[test]
fn a_no_op_irq_restore_is_caught() {
    let c = Check::IrqNesting;
    let r = explore_with(c, 0, broken::<IRQ_RESTORE_NOOP>());
    assert_fails(
        "irq_restore does nothing",
        c,
        0,
        r,
        "HAL contract broken: irq-save-restore-nests: CPU 0, round 0: interrupts still off after the outermost irq_restore",
    );
}

#[test]
fn an_ipi_that_does_not_wait_is_caught() {
    let c = Check::IpiWaitsForIrqsOn;
    let r = explore_with(c, 0, broken::<IPI_RETURNS_AT_ONCE>());
    assert_fails(
        "ipi_and_wait returns at once",
        c,
        0,
        r,
        "HAL contract broken: ipi-waits-for-irqs-on: round 0: ipi_and_wait returned while the target still had interrupts off",
    );
    let c = Check::IpiOrdersIrqsOffSection;
    let r = explore_with(c, 0, broken::<IPI_RETURNS_AT_ONCE>());
    assert_fails(
        "ipi_and_wait returns at once",
        c,
        0,
        r,
        "HAL contract broken: ipi-orders-irqs-off-section: round 0",
    );
}

#[test]
fn a_mutex_that_does_not_exclude_is_caught() {
    for (c, expected) in [
        (Check::MutexExcludes, "HAL contract broken: mutex-excludes"),
        (Check::MutexCarriesData, "HAL contract broken: mutex-unlock-lock-carries-data"),
    ] {
        let r = explore_with(c, 0, broken::<MUTEX_NO_EXCLUSION>());
        assert_fails("mutex lock takes nothing", c, 0, r, expected);
    }
}

#[test]
fn a_dropped_barrier_of_each_kind_is_caught() {
    for kind in [FenceKind::Wmb, FenceKind::Release, FenceKind::Rmb, FenceKind::Acquire, FenceKind::Mb] {
        let Some(case) = Barrier::ALL.iter().position(|b| b.kind() == kind) else { continue };
        let b = Barrier::ALL[case];
        let c = Check::BarrierFences;
        let r = explore_with(c, case, mutant(Mutant::Barrier(b)));
        assert_fails(
            "barrier dropped (loom mutant)",
            c,
            case,
            r,
            "HAL contract broken: barrier-issues-its-fence",
        );
    }
}

#[test]
fn a_broken_rule_is_caught() {
    let rule = Rule::ALL[0];
    let c = Check::KeepsEveryRule;
    let r = explore_with(c, 0, mutant(Mutant::Rule(rule)));
    assert_fails("rule broken (loom mutant)", c, 0, r, &format!("keeps({rule}) returned false"));
}

#[test]
fn the_flaws_break_nothing_else() {
    // Each broken backend still passes a check its flaw does not touch: the failures above are
    // the flaw's, not the wrapper's.
    for (c, r) in [
        (Check::MessagePassing, explore_with(Check::MessagePassing, 0, broken::<IRQ_RESTORE_NOOP>())),
        (Check::MutexExcludes, explore_with(Check::MutexExcludes, 0, broken::<IPI_RETURNS_AT_ONCE>())),
        (Check::IrqNesting, explore_with(Check::IrqNesting, 0, broken::<MUTEX_NO_EXCLUSION>())),
    ] {
        assert!(r.failure.is_none(), "{}: {:?}", c.name(), r.failure);
    }
}
