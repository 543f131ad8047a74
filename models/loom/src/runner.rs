//! Runs one scenario under loom, with or without a mutant, and classifies the outcome.

use crate::exec::LoomExec;
use crate::hal::LoomHal;
use crate::trace::{self, Entry};
use mmusync_models::exec::VIOLATION;
use mmusync_models::scenario::{Scenario, Shared};
use mmusync_models::Mutant;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::string::{String, ToString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use std::vec::Vec;

/// How a scenario is explored under loom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bound {
    /// loom's preemption bound; `None` explores every interleaving (exhaustive, up to loom's
    /// partial-order reduction).
    pub preemptions: Option<usize>,
}

impl Bound {
    /// `"exhaustive"` or `"bounded (N preemptions)"`.
    pub fn describe(&self) -> String {
        match self.preemptions {
            None => "exhaustive".to_string(),
            Some(n) => std::format!("bounded ({n} preemptions)"),
        }
    }
}

/// The bound each scenario runs under. The environment variable `MMUSYNC_LOOM_BOUND`, when set
/// to a number (a preemption bound) or to `none` (exhaustive), replaces it for every scenario,
/// to explore further by hand; so does loom's own `LOOM_MAX_PREEMPTIONS` (a number only: loom
/// itself parses it).
pub fn bound(s: &Scenario) -> Bound {
    for var in ["MMUSYNC_LOOM_BOUND", "LOOM_MAX_PREEMPTIONS"] {
        if let Ok(v) = std::env::var(var) {
            if v == "none" || v == "exhaustive" {
                return Bound { preemptions: None };
            }
            if let Ok(n) = v.parse() {
                return Bound { preemptions: Some(n) };
            }
        }
    }
    Bound { preemptions: s.shared().and_then(default_bound) }
}

/// The preemption bound of each shared body (`None`: exhaustive). Every body is listed, so a
/// new shared scenario does not compile until its bound is chosen.
///
/// Measured on the 2-core CI machine (docs/models.md has the table): exhaustive wherever it
/// takes under ~10 s; otherwise the largest bound that keeps the whole suite (the correct code
/// twice, plus every mutant that survives a scenario exploring it in full) well inside the CI
/// budget. The next bound up costs about 8x (fault-vs-invalidation: 44k executions at 3, 357k
/// at 4; multi-slot-range-merge: 78k at 3, 710k at 4; epoch-walk: 232k at 3;
/// cache-refresh-vs-two-invalidations: 171k at 3 in ~43 s, its bug needs 3 preemptions, and an
/// exhaustive run did not end within 10 minutes).
pub const fn default_bound(body: Shared) -> Option<usize> {
    match body {
        Shared::FaultVsInvalidation
        | Shared::MultiSlotRangeMerge
        | Shared::EpochWalk
        | Shared::CacheRefreshVsTwoInvalidations => Some(3),
        Shared::MemslotSwapVsInvalidation => Some(4),
        // core's ReferenceMmu: fault + two guest runs vs start/end: 15.9k executions (2.8 s) at
        // 2, 301k (75 s) at 3.
        Shared::MmuFaultVsInvalidation => Some(2),
        // zap_ipi vs lockless walk + guest: 53k (14 s) at 3; exhaustive did not end in 5 min.
        Shared::MmuZapIpiVsWalk => Some(3),
        // zap_epoch (crossbeam-epoch's internals) vs epoch walk + guest: 3.7k (1.6 s) at 1,
        // 36.6k (~18 s) at 2.
        Shared::MmuZapEpochVsWalk => Some(2),
        // set_memslot(DELETE) vs guest + fault: 7.0k (1.4 s) at 3, 53k (25 s) at 4;
        // exhaustive did not end in 5 min.
        Shared::MmuMemslotDeleteVsGuest => Some(3),
        // Vm::zap_gfn_range vs the x86 fault path (issue 12): 3.3k executions (1.1 s) at 2,
        // 39.8k (~10 s) at 3, both passing; its mutant dies at 1.
        Shared::ZapGfnRangeVsFault => Some(2),
        // A lookup stamped with a generation vs a memslot swap (issue 12): 1.9k executions
        // (0.5 s) at 3; exhaustive: 1.63M (330 s).
        Shared::MemslotGenerationVsCache => Some(3),
        // ReferenceMmu::fault_around (prefetch) vs an invalidation of the neighbour (issue 12):
        // 15.1k executions (~7 s) at 2.
        Shared::MmuPrefetchVsInvalidation => Some(2),
        // ReferenceMmu::prefault vs a memslot delete (issue 12): 2.0k executions (0.7 s) at 3,
        // 9.6k (3.6 s) at 4; exhaustive did not end in 10 min.
        Shared::PrefaultVsMemslotDelete => Some(3),
        // ReferenceMmu::map write protection vs a guest writing through its TLB (issue 12):
        // 586 executions (0.1 s) at 3; exhaustive 15.0k (3-5 s).
        Shared::MmuMapWriteProtectVsGuest => Some(3),
        // The hardware's dirty-bit OR vs map() write protection (issue 12): 2.3k executions
        // (0.6 s) at 4; exhaustive 36.1k (7.3 s).
        Shared::MmuDirtyBitVsWriteProtect => Some(4),
        // clear_flush_young vs a guest writing twice (issue 12): 5.0k executions (1.5 s) at 4,
        // 14.9k (4 s) at 5; exhaustive 401k (102 s).
        Shared::MmuClearFlushYoungVsGuest => Some(4),
        // Lockless aging (clear_young, test_young) vs an invalidation that frees a table the
        // epoch way, both through the epoch-way MMU: 7.7k executions (~3 s) at 1, 108k (~35 s) at 2;
        // exhaustive did not end in 400 s (crossbeam-epoch's internals, a handle per call).
        // Every documented-unkillable mutant it reaches explores it in full, hence 1; its
        // mutant needs one preemption (the ager between its link read and its entry reads).
        Shared::MmuAgeLocklessVsZapEpoch => Some(1),
        // A lookup cached by generation, filled before or across a memslot swap and used inside
        // its window (issue 11): 3.4k executions (0.5 s) at 2, 43k (~6 s) at 3. Its mutants die
        // at 1: MemslotGenerationInProgress after 46, the swap's generation-0 window (a source
        // mutant, docs/mutants.md) after 7.
        Shared::MemslotCacheInSwapWindow => Some(2),
        // An SRCU reader straddling two synchronize calls vs the updater's two grace periods:
        // 154 executions (14 ms) at 3, 401 at 4; exhaustive 850 (78 ms), all passing. The
        // source mutants of synchronize's first wait (docs/mutants.md) need 3 preemptions
        // (the reader after its index load, the updater after its first free, the reader after
        // its dereference): they pass at 2 and fail at 3 after 24 executions. SrcuReadLockMb
        // and SrcuSyncBeforeScan die at 1 (after 4 and 7).
        Shared::SrcuReaderStraddlesTwoSyncs => Some(3),
        // A lockless test_young vs a fault whose map links a recycled table page: 749
        // executions (0.19 s) at 3; 3.7k (1.2 s) at 4, 10.5k (3.0 s) at 5, 35k (12 s) at 6;
        // exhaustive did not end in 300 s. TableLinkPublish and TableLinkFollow need 2
        // preemptions (the vcpu inside map, the ager after its SRCU read lock: the ager's full
        // fences must come before the vcpu's SRCU unlock, its link load after the link store):
        // they survive 1 and die at 2 after 10 executions, at 3 after 11. 3 keeps one in hand
        // at a cost the documented-unkillable mutants that reach it can afford.
        Shared::MmuAgeLocklessVsMap => Some(3),
        Shared::Mp1LocklessRetry
        | Shared::Mp2SnapshotPlacement
        | Shared::MemslotDeleteVsFault
        | Shared::CacheRefreshVsInvalidation
        | Shared::CacheHvaChangeVsConsumer
        | Shared::UnsyncVsGuestWrite
        | Shared::UnsyncTwoMarkers
        | Shared::SbWalk
        | Shared::SbEntry
        | Shared::RequestPayload
        | Shared::MmuInvalidateTwoSlots
        | Shared::CacheDeactivateVsInvalidation => None,
    }
}

/// loom's per-execution branch limit, unless `LOOM_MAX_BRANCHES` says otherwise.
pub const MAX_BRANCHES: usize = 20_000;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every explored execution kept every invariant.
    Pass,
    /// The scenario's own invariant assertion failed: a real kill.
    Violation,
    /// loom found every thread blocked. A kill only for a liveness mutant.
    Deadlock,
    /// Any other failure (loom's branch limit, an unrelated panic): never a kill.
    Error,
}

impl Outcome {
    /// Short label for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Violation => "invariant",
            Outcome::Deadlock => "deadlock",
            Outcome::Error => "error",
        }
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// The mutant, or `None` for the correct code.
    pub mutant: Option<Mutant>,
    /// Barriers or rules dropped together with the mutant (empty but for redundancy checks).
    pub also: Vec<Mutant>,
    /// The bound used.
    pub bound: Bound,
    /// How it ended.
    pub outcome: Outcome,
    /// Executions explored: all of them on a pass, up to and including the failing one
    /// otherwise.
    pub executions: u64,
    /// Wall time.
    pub time: Duration,
    /// The panic message of a failure.
    pub message: Option<String>,
    /// Role names (CPU order) of the failing execution.
    pub roles: Vec<&'static str>,
    /// The failing execution's trace.
    pub trace: Vec<Entry>,
    /// Barriers and rules reached in any execution.
    pub touched: BTreeSet<Mutant>,
}

/// Options of a run.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A loom checkpoint file for replay. If it exists, loom starts from the execution it
    /// holds (the replay). Otherwise, when the run fails, the failing execution is written to
    /// it: the run is repeated (exploration is deterministic) with loom told to store the path
    /// of exactly that execution, so the first run pays nothing for it. (Storing every
    /// execution's path, loom's `checkpoint_interval = 1`, made the scorecard three times
    /// slower.)
    pub checkpoint: Option<PathBuf>,
    /// Barriers or rules dropped together with the mutant (the scorecard's redundancy check).
    pub also: Vec<Mutant>,
}

/// Runs `s` under loom with `mutant` applied (or the correct code).
pub fn run(s: &'static Scenario, mutant: Option<Mutant>, opts: &Options) -> Report {
    let Some(cp) = &opts.checkpoint else { return explore(s, mutant, opts, None, None) };
    if cp.exists() {
        // Replay: start from the stored execution, store nothing.
        let r = explore(s, mutant, opts, Some((cp, usize::MAX)), None);
        if r.outcome == Outcome::Pass {
            // A passing run's checkpoint would skip exploration next time: drop it.
            let _ = std::fs::remove_file(cp);
        }
        return r;
    }
    let first = explore(s, mutant, opts, None, None);
    if first.outcome == Outcome::Pass {
        return first;
    }
    // Record the failing execution: the same exploration, storing the path of execution N only.
    let interval = usize::try_from(first.executions).unwrap_or(usize::MAX).max(1);
    let again = explore(s, mutant, opts, Some((cp, interval)), None);
    if again.outcome == first.outcome && again.executions == first.executions {
        Report { time: first.time, ..again }
    } else {
        // Not reproduced (it should be: loom explores deterministically): keep the first
        // report and no checkpoint that would replay something else.
        let _ = std::fs::remove_file(cp);
        first
    }
}

/// One loom exploration; `checkpoint`: the file and loom's store interval.
/// The traces of every execution of a run ([`run_traced`]), each in the order its events ran.
type Traces = Arc<Mutex<Vec<Vec<Entry>>>>;

/// [`run`] without a checkpoint, keeping the trace of every execution that finished (a failing
/// execution's trace is the report's): what trace conformance replays in the protocol models.
pub fn run_traced(s: &'static Scenario, mutant: Option<Mutant>, opts: &Options) -> (Report, Vec<Vec<Entry>>) {
    let traces: Traces = Arc::default();
    let report = explore(s, mutant, opts, None, Some(traces.clone()));
    let traces = std::mem::take(&mut *traces.lock().unwrap_or_else(PoisonError::into_inner));
    (report, traces)
}

fn explore(
    s: &'static Scenario,
    mutant: Option<Mutant>,
    opts: &Options,
    checkpoint: Option<(&PathBuf, usize)>,
    traces: Option<Traces>,
) -> Report {
    let bound = bound(s);
    let Some(body) = s.shared() else {
        return Report {
            scenario: s.name,
            mutant,
            also: opts.also.clone(),
            bound,
            outcome: Outcome::Error,
            executions: 0,
            time: Duration::ZERO,
            message: Some(std::format!("{}: not a shared scenario (its body is another checker's)", s.name)),
            roles: Vec::new(),
            trace: Vec::new(),
            touched: BTreeSet::new(),
        };
    };
    crate::panics::start();
    trace::take_touched();
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = bound.preemptions;
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        // Wait loops (SRCU, the memslot swap's wait, IPI-and-wait) spend branches on every
        // spin; loom's default of 1,000 per execution is too tight for the longer scenarios.
        builder.max_branches = MAX_BRANCHES;
    }
    builder.checkpoint_file = None;
    if let Some((cp, interval)) = checkpoint {
        builder.checkpoint_file = Some(cp.clone());
        builder.checkpoint_interval = interval;
    }
    let executions = Arc::new(AtomicU64::new(0));
    let counter = executions.clone();
    let also = opts.also.clone();
    let start = Instant::now();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        builder.check(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            trace::start_execution();
            crate::hal::set_plain_stores(s.plain_stores);
            let hal = LoomHal::with_also_dropped(mutant, &also);
            body.run(&hal, &LoomExec);
            if let Some(traces) = &traces {
                let (_, entries) = trace::take();
                traces.lock().unwrap_or_else(PoisonError::into_inner).push(entries);
            }
        })
    }));
    let time = start.elapsed();
    let touched = trace::take_touched();
    let executions = executions.load(Ordering::Relaxed);
    let (outcome, message, roles, trace) = match result {
        Ok(()) => (Outcome::Pass, None, Vec::new(), Vec::new()),
        Err(payload) => {
            let message = Some(crate::panics::first(&*payload));
            let text = message.clone().unwrap_or_default();
            let outcome = if text.starts_with(VIOLATION) {
                Outcome::Violation
            } else if text.contains("deadlock") {
                Outcome::Deadlock
            } else {
                Outcome::Error
            };
            let (roles, trace) = trace::take();
            (outcome, message, roles, trace)
        }
    };
    Report {
        scenario: s.name,
        mutant,
        also: opts.also.clone(),
        bound,
        outcome,
        executions,
        time,
        message,
        roles,
        trace,
        touched,
    }
}
