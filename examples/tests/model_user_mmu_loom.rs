//! The user-written secondary MMU of `model_user_mmu.rs` ([`user_mmu`]), loom-checked with
//! mmusync's own loom backend (`mmusync::hal::loom`, compiled under `--cfg loom`), as a VMM
//! that depends on mmusync would check its integration under the C11 memory model: the correct
//! MMU passes every execution up to the preemption bound, and each planted bug is caught.
//! loom's exploration is deterministic; a test fails if the bug it plants is not found.
//!
//! Run (ci/loom.sh does):
//!
//! ```text
//! RUSTFLAGS="--cfg loom --cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom \
//!   cargo test -p mmusync-examples --release --test model_user_mmu_loom -- --nocapture
//! ```

#![cfg(loom)]

mod user_mmu;

use mmusync::hal::loom::{spawn_cpu, trace, LoomHal};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use user_mmu::{take_violation, Bug, World, GFN};

/// loom's preemption bound for every run here. The planted `SkipFlush` needs one preemption
/// (the vCPU between filling its TLB and using it); 2 keeps the correct MMU's run to seconds.
const BOUND: usize = 2;

/// One execution: the world, the vCPU on CPU 1, the primary MMU on CPU 0, the final check.
fn execution(bug: Option<Bug>) {
    // First, on the model's main thread: creates the execution's lock words, clears the trace.
    let hal = LoomHal::new(None);
    trace::set_roles(vec!["primary-mmu", "vcpu"]);
    let world = Arc::new(World::new(hal, bug));
    trace::record(trace::Event::RolesStart);
    let vcpu = spawn_cpu(1, {
        let world = world.clone();
        move || world.vcpu()
    });
    world.primary_mmu_moves_page();
    vcpu.join().expect("the vCPU finished");
    trace::record(trace::Event::RolesEnd);
    world.final_check();
}

/// What an exploration found.
#[derive(Debug)]
struct Found {
    /// Executions explored: all of them on a pass, up to and including the failing one
    /// otherwise.
    executions: u64,
    /// The first ghost-check violation, if any.
    violation: Option<String>,
    /// Whether loom's run failed (a violation, or anything else).
    failed: bool,
    time: Duration,
}

fn explore(bug: Option<Bug>) -> Found {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(BOUND);
    // IPI-and-wait and the retry loops spend branches on every spin.
    builder.max_branches = 20_000;
    let executions = Arc::new(AtomicU64::new(0));
    let counter = executions.clone();
    let _ = take_violation();
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        builder.check(move || {
            counter.fetch_add(1, Relaxed);
            execution(bug);
        })
    }));
    Found {
        executions: executions.load(Relaxed),
        violation: take_violation(),
        failed: result.is_err(),
        time: start.elapsed(),
    }
}

#[test]
fn correct_user_mmu_passes() {
    let found = explore(None);
    assert!(!found.failed && found.violation.is_none(), "the correct MMU failed: {found:?}");
    eprintln!(
        "correct MMU: {} loom executions passed (bound {BOUND}) in {:.2?}",
        found.executions, found.time
    );
}

fn caught(bug: Bug) {
    let found = explore(Some(bug));
    let Some(violation) = &found.violation else {
        panic!("{bug:?} was not caught by loom (bound {BOUND}): {found:?}");
    };
    assert!(violation.contains(&format!("gfn {GFN}")), "{violation}");
    // The failing execution, in protocol terms: what the HAL and core recorded.
    let (roles, entries) = trace::take();
    eprintln!(
        "{bug:?}: caught after {} loom executions ({:.2?}): invariant violated: {violation}\n{}",
        found.executions,
        found.time,
        trace::render(&roles, &entries, false)
    );
}

#[test]
fn skipped_flush_is_caught() {
    caught(Bug::SkipFlush);
}

#[test]
fn forgotten_entry_is_caught() {
    caught(Bug::ForgetLastEntry);
}
