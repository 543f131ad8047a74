//! A user-written secondary MMU ([`user_mmu`]), shuttle-tested with mmusync's own shuttle
//! backend (`mmusync::hal::shuttle`, feature `shuttle`), as a VMM that depends on mmusync would
//! test its integration: the correct MMU passes every explored execution, and each planted bug
//! is caught within a stated number of executions. Seeds are fixed, so each run explores the
//! same schedules; a test fails if the bug it plants is not found.
//!
//! Two roles: the primary MMU (CPU 0: `invalidate_range_start`, move host page 1 from pfn 1
//! to pfn 2, free pfn 1, `invalidate_range_end`) and a vCPU (CPU 1: one fault through the
//! retry protocol, then a guest access through its TLB, handling a TLB-flush request at entry).
//!
//! Run: `cargo test -p mmusync-examples --test model_user_mmu -- --nocapture`.

#![cfg(not(loom))]

mod user_mmu;

use mmusync::hal::shuttle::{set_current_cpu, spawn_cpu, ShuttleHal};
use shuttle::scheduler::{PctScheduler, Scheduler};
use shuttle::{Config, Runner};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use user_mmu::{take_violation, Bug, World, GFN};

/// The seed of every exploration here.
const SEED: u64 = 0x6d6d_7573_796e_6321;
/// PCT's depth: bugs that need up to `DEPTH - 1` forced preemptions. The planted `SkipFlush`
/// needs one (the vCPU preempted between filling its TLB and using it).
const DEPTH: usize = 3;
/// Executions the correct MMU must pass.
const CORRECT_EXECUTIONS: usize = 2_000;
/// The budget within which each planted bug must be caught (measured, with this seed: see the
/// assertions' messages and the crate README).
const BUG_BUDGET: usize = 2_000;

/// One execution: the world, the vCPU on CPU 1, the primary MMU on CPU 0, the final check.
fn execution(bug: Option<Bug>) {
    set_current_cpu(0);
    let world = Arc::new(World::new(ShuttleHal::with_defaults(None), bug));
    world.hal.trace().set_roles(vec!["primary-mmu", "vcpu"]);
    let vcpu = spawn_cpu(1, {
        let world = world.clone();
        move || world.vcpu()
    });
    world.primary_mmu_moves_page();
    vcpu.join().expect("the vCPU finished");
    world.hal.trace().roles_done();
    world.final_check();
}

/// What an exploration found.
#[derive(Debug)]
struct Found {
    /// Executions run: all of them on a pass, up to and including the failing one otherwise.
    executions: u64,
    /// The first ghost-check violation, if any.
    violation: Option<String>,
    /// Any failure message (a violation, or something else that went wrong).
    panic: Option<String>,
    time: Duration,
}

fn explore(bug: Option<Bug>, scheduler: impl Scheduler + 'static) -> Found {
    let mut config = Config::new();
    // Every atomic is SeqCst under shuttle; the backend says so, shuttle's warning adds nothing.
    config.silence_warnings = true;
    let runner = Runner::new(scheduler, config);
    let executions = Arc::new(AtomicU64::new(0));
    let counter = executions.clone();
    let _ = take_violation();
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        runner.run(move || {
            counter.fetch_add(1, Relaxed);
            execution(bug);
        })
    }));
    let panic = result.err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    });
    Found { executions: executions.load(Relaxed), violation: take_violation(), panic, time: start.elapsed() }
}

#[test]
fn correct_user_mmu_passes() {
    let found = explore(None, PctScheduler::new_from_seed(SEED, DEPTH, CORRECT_EXECUTIONS));
    assert!(found.panic.is_none() && found.violation.is_none(), "the correct MMU failed: {found:?}");
    assert_eq!(found.executions, CORRECT_EXECUTIONS as u64);
    eprintln!("correct MMU: {} PCT executions passed in {:.2?}", found.executions, found.time);
}

fn caught(bug: Bug) {
    let found = explore(Some(bug), PctScheduler::new_from_seed(SEED, DEPTH, BUG_BUDGET));
    let Some(violation) = &found.violation else {
        panic!("{bug:?} was not caught within {BUG_BUDGET} PCT executions: {found:?}");
    };
    assert!(violation.contains(&format!("gfn {GFN}")) || violation.contains("pfn 1"), "{violation}");
    eprintln!(
        "{bug:?}: caught after {} PCT executions ({:.2?}): invariant violated: {violation}",
        found.executions, found.time
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
