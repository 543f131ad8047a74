//! The HAL conformance suite ([`mmusync_models::conformance`]) under loom: one check, one case, explored
//! exhaustively.
//!
//! [`explore`] runs a check against the loom HAL, and [`explore_with`] against any HAL built
//! fresh for each execution (a mutant [`LoomHal`], or a test's deliberately broken wrapper
//! around one), with [`LoomExec`], core's `Box` allocator (which does not poison) and
//! [`Caps::MODEL`]: one round, since loom explores the schedules instead. The checks are
//! litmus-sized, so every interleaving is explored (no preemption bound).

use crate::exec::LoomExec;
use crate::hal::LoomHal;
use crate::trace;
use mmusync::hal::Cpus;
use mmusync::mmu::BoxAlloc;
use mmusync_models::conformance::{Caps, Check, Subject};
use std::string::String;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// loom's per-execution branch limit for the checks (their wait loops yield on every spin).
pub const MAX_BRANCHES: usize = 10_000;

/// How an exploration ended.
#[derive(Clone, Debug)]
pub struct Explored {
    /// Executions explored: all of them on a pass, up to and including the failing one
    /// otherwise.
    pub executions: u64,
    /// Wall time.
    pub time: Duration,
    /// The first panic message of the failing execution (with its location), or `None` when
    /// every execution passed.
    pub failure: Option<String>,
}

/// Explores case `case` of `check` against the unmutated loom HAL.
pub fn explore(check: Check, case: usize) -> Explored {
    explore_with(check, case, || LoomHal::new(None))
}

/// Explores case `case` of `check` against the HAL `make_hal` builds. `make_hal` runs at the
/// start of every execution, on the model's main thread before any role is spawned, so it
/// may (and, for a HAL over [`LoomHal`], must) create the execution's [`LoomHal`] there.
pub fn explore_with<H: Cpus>(
    check: Check,
    case: usize,
    make_hal: impl Fn() -> H + Send + Sync + 'static,
) -> Explored {
    crate::panics::start();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = None;
    builder.checkpoint_file = None;
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = MAX_BRANCHES;
    }
    let executions = Arc::new(AtomicU64::new(0));
    let counter = executions.clone();
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            trace::start_execution();
            crate::hal::set_plain_stores(false);
            let subject = Subject { hal: make_hal(), exec: LoomExec, alloc: BoxAlloc, caps: Caps::MODEL };
            check.run(case, &subject);
        })
    }));
    let time = start.elapsed();
    // Keep the per-thread trace from growing across explorations.
    let _ = trace::take();
    let _ = trace::take_touched();
    let failure = match result {
        Ok(()) => None,
        Err(payload) => Some(crate::panics::first(&*payload)),
    };
    Explored { executions: executions.load(Ordering::Relaxed), time, failure }
}
