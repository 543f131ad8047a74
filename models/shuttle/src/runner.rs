//! Runs a target under one of shuttle's schedulers, with or without a rule mutant; classifies
//! the outcome; captures the failing schedule; replays a schedule.
//!
//! A *target* is a catalogue scenario that names shuttle among its checkers: a shared body of
//! `mmusync-models` ([`SCENARIOS`](mmusync_models::SCENARIOS), through the [`Executor`]
//! trait) or one of this crate's larger [`scenarios`](crate::scenarios). Each execution builds a
//! fresh [`ShuttleHal`] (with the mutant) and [`ShuttleExec`], runs the target's setup, roles and
//! final checks, and records its trace; a failing execution's trace is kept for the report.
//!
//! Every failure prints shuttle's replay schedule (shuttle's panic hook does it). The runner
//! also records each execution's scheduling decisions itself (a wrapper around the
//! scheduler), so the failing schedule is in the [`Report`] whatever shuttle's process-wide
//! persistence settings are, and with [`Persist::Dir`] it is saved as a file that [`replay`]
//! (or the CLI's `replay`) runs again, deterministically, through shuttle's `ReplayScheduler`.
//!
//! [`Executor`]: mmusync_models::Executor

use crate::bytes::ByteScheduler;
use crate::exec::ShuttleExec;
use crate::hal::{ShuttleHal, LIVENESS};
use crate::scenarios::{cache, churn, liveness, longrun, storm};
use crate::trace::Trace;
use mmusync::barrier::Protocol;
use mmusync::{Barrier, Rule};
use mmusync_models::exec::VIOLATION;
use mmusync_models::{Body as ScenarioBody, Checker, Expect, Mutant, Scenario, Shared, ShuttleBody};
use shuttle::scheduler::{
    DfsScheduler, PctScheduler, RandomScheduler, ReplayScheduler, Schedule, Scheduler, Task, TaskId,
};
use shuttle::{Config, FailurePersistence, MaxSteps, Runner};
use shuttle_engine::scheduler::serialization::serialize_schedule;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How a run (or an execution) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Every execution kept every invariant.
    Pass,
    /// A scenario's safety invariant failed ([`VIOLATION`]).
    Violation,
    /// A liveness check failed ([`LIVENESS`]): the spin budget, or the bounded-retry
    /// (starvation) assertion.
    Liveness,
    /// Shuttle's deadlock detector: every task blocked.
    Deadlock,
    /// Shuttle's step bound (`max_steps`): no end within the bound, a livelock.
    StepBound,
    /// Anything else (a scenario bug, a replay that diverged): never a kill.
    Error,
}

impl Outcome {
    /// Classifies a panic message.
    pub fn of_message(msg: &str) -> Self {
        if msg.starts_with(VIOLATION) {
            Outcome::Violation
        } else if msg.starts_with(LIVENESS) {
            Outcome::Liveness
        } else if msg.starts_with("deadlock!") {
            Outcome::Deadlock
        } else if msg.starts_with("exceeded max_steps bound") {
            Outcome::StepBound
        } else {
            Outcome::Error
        }
    }

    /// Short label for tables.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Violation => "invariant",
            Outcome::Liveness => "liveness",
            Outcome::Deadlock => "deadlock",
            Outcome::StepBound => "liveness (max_steps)",
            Outcome::Error => "error",
        }
    }

    /// Whether this outcome is the failure `expected` (a step-bound failure counts as a
    /// liveness failure).
    pub fn is(self, expected: Outcome) -> bool {
        self == expected || (expected == Outcome::Liveness && self == Outcome::StepBound)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Where a target comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A shared body of the catalogue (`mmusync-models`), run by loom and real threads too.
    Models,
    /// A body of this crate (the catalogue holds its descriptor).
    Shuttle,
}

#[derive(Clone, Copy)]
enum Body {
    Shared(Shared),
    Own(fn(&ShuttleHal, &ShuttleExec)),
}

/// Something to run under shuttle: a catalogue scenario that names shuttle among its checkers.
#[derive(Clone, Copy)]
pub struct Target {
    /// Unique name, as the CLI takes it.
    pub name: &'static str,
    /// Where its body is.
    pub origin: Origin,
    /// What it models.
    pub about: &'static str,
    /// Its roles (threads, one CPU each).
    pub roles: usize,
    /// The protocol it checks.
    pub protocol: Protocol,
    /// What the correct code must do: pass, or (a deliberately bad pattern, or a known gap in
    /// KVM's algorithm) fail in this way.
    pub expect: Outcome,
    scenario: &'static Scenario,
    body: Body,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("expect", &self.expect)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The rule mutants it must kill under shuttle.
    pub fn kills(&self) -> Vec<Rule> {
        self.scenario
            .kills
            .iter()
            .filter_map(|m| match m {
                Mutant::Rule(r) => Some(*r),
                Mutant::Barrier(_) => None,
            })
            .collect()
    }

    /// The barrier mutants the scenario targets, which shuttle cannot see (every access is
    /// `SeqCst`, every fence a no-op): loom's to kill.
    pub fn invisible_barriers(&self) -> Vec<Barrier> {
        self.scenario
            .kills
            .iter()
            .filter_map(|m| match m {
                Mutant::Barrier(b) => Some(*b),
                Mutant::Rule(_) => None,
            })
            .collect()
    }

    /// Runs one execution: setup, roles, final checks.
    pub fn run(&self, hal: &ShuttleHal, exec: &ShuttleExec) {
        match self.body {
            Body::Shared(b) => b.run(hal, exec),
            Body::Own(f) => f(hal, exec),
        }
    }
}

/// The body of each of this crate's scenarios. Every [`ShuttleBody`] is listed, so a scenario
/// added to the catalogue does not compile until its body is here.
const fn own_body(b: ShuttleBody) -> fn(&ShuttleHal, &ShuttleExec) {
    match b {
        ShuttleBody::FaultStorm => storm::fault_storm,
        ShuttleBody::MemslotChurn => churn::memslot_churn,
        ShuttleBody::CacheChurn => cache::cache_churn,
        ShuttleBody::CacheOutsideMemslots => cache::cache_outside_memslots,
        ShuttleBody::ReferenceMmuLongRun => longrun::reference_mmu_long_run,
        ShuttleBody::PrefaultHoldsSrcu => liveness::prefault_holds_srcu,
        ShuttleBody::PrefaultDropsSrcu => liveness::prefault_drops_srcu,
        ShuttleBody::NotifierRwsem2021 => liveness::notifier_rwsem_2021,
        ShuttleBody::NotifierNeverBlocks => liveness::notifier_never_blocks,
    }
}

/// What the correct code must do, as a shuttle outcome.
const fn expected(e: Expect) -> Outcome {
    match e {
        Expect::Pass => Outcome::Pass,
        Expect::Violation => Outcome::Violation,
        Expect::Liveness => Outcome::Liveness,
        Expect::Deadlock => Outcome::Deadlock,
    }
}

/// Every target: the catalogue's scenarios that shuttle runs, in catalogue order.
pub fn targets() -> Vec<Target> {
    Scenario::run_by(Checker::Shuttle)
        .filter_map(|s| {
            let (origin, body) = match s.body {
                ScenarioBody::Shared(b) => (Origin::Models, Body::Shared(b)),
                ScenarioBody::Shuttle(b) => (Origin::Shuttle, Body::Own(own_body(b))),
                // The catalogue's own test forbids it: a real-thread body names no other checker.
                ScenarioBody::Hardware(_) => return None,
            };
            Some(Target {
                name: s.name,
                origin,
                about: s.shape,
                roles: s.roles.len(),
                protocol: s.protocol,
                expect: expected(s.expect),
                scenario: s,
                body,
            })
        })
        .collect()
}

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    targets().into_iter().find(|t| t.name == name)
}

/// The rule called `name` (its variant name, such as `MemslotPublishUnderLock`).
pub fn rule(name: &str) -> Option<Rule> {
    Rule::ALL.iter().copied().find(|r| r.name() == name)
}

/// A scheduler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sched {
    /// Shuttle's random scheduler: a uniformly random runnable task at each step.
    Random,
    /// Probabilistic concurrency testing: random priorities, `depth - 1` random priority change
    /// points per execution (finds bugs of that preemption depth with a known probability).
    Pct {
        /// The bug depth.
        depth: usize,
    },
    /// Shuttle's depth-first scheduler: every schedule in turn, up to the iteration bound. When
    /// a run ends before the bound without a failure, every schedule was explored (sequentially
    /// consistent memory; shuttle has no partial-order reduction, so only tiny scenarios end).
    Dfs,
}

impl fmt::Display for Sched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sched::Random => f.write_str("random"),
            Sched::Pct { depth } => write!(f, "pct{depth}"),
            Sched::Dfs => f.write_str("dfs"),
        }
    }
}

/// Where failing schedules go, besides the [`Report`] and shuttle's own message on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Persist {
    /// Nowhere else.
    Print,
    /// Also saved under this directory (`schedules/`), so that reports can name the file.
    Dir(PathBuf),
}

/// The spin budget per CPU and execution, unless [`Options::spin_budget`] says otherwise.
pub const SPIN_BUDGET: u64 = 5_000;
/// Shuttle's step bound per execution, unless [`Options::max_steps`] says otherwise.
pub const MAX_STEPS: usize = 2_000_000;
/// Stack of each shuttle task (the reference MMU's zaps recurse; debug builds need room).
const STACK: usize = 0x8_0000;

/// How to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Executions (the scheduler's iteration count).
    pub iterations: usize,
    /// The scheduler's seed (`SHUTTLE_RANDOM_SEED`, when set, overrides it inside shuttle).
    pub seed: u64,
    /// Stop starting new executions after this long.
    pub max_time: Option<Duration>,
    /// Spin hints per CPU and execution before a liveness failure.
    pub spin_budget: u64,
    /// Shuttle's step bound per execution.
    pub max_steps: usize,
    /// Where failing schedules go.
    pub persist: Persist,
    /// Test only: run with [`ShuttleHal::perturbed`] (one extra scheduling point at every
    /// named barrier), as after a harmless change to the code.
    pub perturb: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            iterations: 100,
            seed: 0x6d6d_7573_796e_6321,
            max_time: None,
            spin_budget: SPIN_BUDGET,
            max_steps: MAX_STEPS,
            persist: Persist::Print,
            perturb: false,
        }
    }
}

impl Options {
    fn config(&self) -> Config {
        let mut c = Config::new();
        c.stack_size = STACK;
        c.max_steps = MaxSteps::FailAfter(self.max_steps);
        c.max_time = self.max_time;
        // Every atomic is SeqCst under shuttle; the crate says so (see the HAL), so shuttle's
        // warning about weaker orderings adds nothing.
        c.silence_warnings = true;
        // Shuttle's panic hook keeps the settings of the first run in the process, so only
        // printing is reliable when runs differ; the runner records schedules itself.
        c.failure_persistence = FailurePersistence::Print;
        c
    }
}

/// Wraps a scheduler and records the current execution's decisions as shuttle records them for
/// its failure message: every task chosen, every random value drawn (shuttle does not consult
/// the scheduler while it tears a failed execution down). The recording may end with one
/// decision more than shuttle's (a choice made but not yet run when the execution failed); a
/// replay stops at the failure either way.
struct Recording<S> {
    inner: S,
    current: Arc<Mutex<Schedule>>,
}

impl<S> Recording<S> {
    fn with<T>(&self, f: impl FnOnce(&mut Schedule) -> T) -> T {
        f(&mut self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Scheduler> Scheduler for Recording<S> {
    fn new_execution(&mut self) -> Option<Schedule> {
        let start = self.inner.new_execution()?;
        self.with(|s| *s = start.clone());
        Some(start)
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        let next = self.inner.next_task(runnable, current, is_yielding)?;
        self.with(|s| s.push_task(next));
        Some(next)
    }

    fn next_u64(&mut self) -> u64 {
        self.with(Schedule::push_random);
        self.inner.next_u64()
    }
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Report {
    /// Target name.
    pub target: &'static str,
    /// The rule broken, if any.
    pub mutant: Option<Rule>,
    /// The scheduler (`None`: a replay, or a byte-driven run, [`run_bytes`]).
    pub sched: Option<Sched>,
    /// The seed.
    pub seed: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Executions run (up to and including the failing one).
    pub executions: u64,
    /// Wall time.
    pub time: Duration,
    /// The most spin hints one CPU made in one passing execution.
    pub max_spins: u64,
    /// The failure's panic message.
    pub message: Option<String>,
    /// The failing schedule, as shuttle encodes it.
    pub schedule: Option<String>,
    /// Where it was saved.
    pub schedule_file: Option<PathBuf>,
    /// The failing execution's trace.
    pub trace: Option<String>,
}

impl Report {
    /// The command that replays this failure.
    pub fn replay_command(&self) -> Option<String> {
        let mutant = self.mutant.map(|m| format!(" --mutant {m}")).unwrap_or_default();
        let from = match (&self.schedule_file, &self.schedule) {
            (Some(f), _) => format!("--schedule-file {}", f.display()),
            (None, Some(s)) => format!("--schedule {s}"),
            (None, None) => return None,
        };
        Some(format!("cargo run --release -p mmusync-shuttle -- replay {}{mutant} {from}", self.target))
    }
}

/// What a run keeps across its executions.
#[derive(Default)]
struct Tally {
    /// Executions started.
    count: AtomicU64,
    /// The most spin hints one CPU made in one passing execution.
    max_spins: AtomicU64,
    /// The trace of the execution that started last (the failing one, after a failure).
    last_trace: Mutex<Option<Arc<Trace>>>,
    /// Every execution's trace, in order, when the run keeps them all ([`run_traced`]).
    all_traces: Option<Mutex<Vec<Arc<Trace>>>>,
}

impl Tally {
    fn last_trace(&self) -> Option<Arc<Trace>> {
        self.last_trace.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// One execution of `t` with `mutant`, counted in `tally`.
fn execution(t: Target, mutant: Option<Rule>, opts: &Options, tally: &Tally) {
    tally.count.fetch_add(1, Relaxed);
    let trace = Arc::new(Trace::new());
    *tally.last_trace.lock().unwrap_or_else(PoisonError::into_inner) = Some(trace.clone());
    if let Some(all) = &tally.all_traces {
        all.lock().unwrap_or_else(PoisonError::into_inner).push(trace.clone());
    }
    crate::hal::set_current_cpu(0);
    let hal = match opts.perturb {
        false => ShuttleHal::new(mutant, opts.spin_budget, trace.clone()),
        true => ShuttleHal::perturbed(mutant, opts.spin_budget, trace.clone()),
    };
    t.run(&hal, &ShuttleExec::new(trace));
    tally.max_spins.fetch_max(hal.max_spins(), Relaxed);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else {
        "(panic with a non-string payload)".to_string()
    }
}

fn run_with<S: Scheduler + 'static>(
    t: Target,
    mutant: Option<Rule>,
    scheduler: S,
    opts: &Options,
    tally: Arc<Tally>,
    schedule: Arc<Mutex<Schedule>>,
) -> Result<(), String> {
    let runner = Runner::new(Recording { inner: scheduler, current: schedule }, opts.config());
    let opts = opts.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        runner.run(move || execution(t, mutant, &opts, &tally));
    }))
    .map_err(|p| panic_message(&*p))
}

/// Runs `t` under `sched` for `opts.iterations` executions (or until the first failure, or
/// `opts.max_time`), breaking `mutant`.
///
/// Runs on a fresh OS thread (shuttle keeps per-thread state between runs). Shuttle's panic
/// hook prints each failure's schedule on stderr; install a quiet hook of your own first to
/// keep the rest of the panic output off (the CLI does).
pub fn run(t: Target, mutant: Option<Rule>, sched: Sched, opts: &Options) -> Report {
    match sched {
        Sched::Random => run_scheduler(t, mutant, Some(sched), opts, |o: &Options| {
            RandomScheduler::new_from_seed(o.seed, o.iterations)
        }),
        Sched::Pct { depth } => run_scheduler(t, mutant, Some(sched), opts, move |o: &Options| {
            PctScheduler::new_from_seed(o.seed, depth, o.iterations)
        }),
        Sched::Dfs => run_scheduler(t, mutant, Some(sched), opts, |o: &Options| {
            DfsScheduler::new(Some(o.iterations), false)
        }),
    }
}

/// [`run`], keeping every execution's [`Trace`] (in execution order; after a failure, the
/// failing execution's is the last): what trace-conformance checks replay against the protocol
/// models (`proofs/protocols`, `conformance`). Schedules and outcomes are those of [`run`] with
/// the same arguments; keeping the traces only costs memory.
pub fn run_traced(
    t: Target,
    mutant: Option<Rule>,
    sched: Sched,
    opts: &Options,
) -> (Report, Vec<Arc<Trace>>) {
    let tally = Arc::new(Tally { all_traces: Some(Mutex::new(Vec::new())), ..Tally::default() });
    let report = match sched {
        Sched::Random => run_tallied(t, mutant, Some(sched), opts, tally.clone(), |o: &Options| {
            RandomScheduler::new_from_seed(o.seed, o.iterations)
        }),
        Sched::Pct { depth } => {
            run_tallied(t, mutant, Some(sched), opts, tally.clone(), move |o: &Options| {
                PctScheduler::new_from_seed(o.seed, depth, o.iterations)
            })
        }
        Sched::Dfs => run_tallied(t, mutant, Some(sched), opts, tally.clone(), |o: &Options| {
            DfsScheduler::new(Some(o.iterations), false)
        }),
    };
    let traces = tally
        .all_traces
        .as_ref()
        .map(|all| std::mem::take(&mut *all.lock().unwrap_or_else(PoisonError::into_inner)))
        .unwrap_or_default();
    (report, traces)
}

/// Runs one execution of `t`, breaking `mutant`, scheduled by the decisions in `bytes` (a
/// [`ByteScheduler`]): what the `schedule` fuzz target calls. As [`run`] otherwise; the
/// report's `sched` is `None`, and a failure's `schedule` replays it.
pub fn run_bytes(t: Target, mutant: Option<Rule>, bytes: &[u8], opts: &Options) -> Report {
    let bytes = bytes.to_vec();
    run_scheduler(t, mutant, None, opts, move |_: &Options| ByteScheduler::new(bytes))
}

/// [`run`] with the scheduler `make` builds, labelled `sched` in the report.
fn run_scheduler<S: Scheduler + 'static>(
    t: Target,
    mutant: Option<Rule>,
    sched: Option<Sched>,
    opts: &Options,
    make: impl FnOnce(&Options) -> S + Send + 'static,
) -> Report {
    run_tallied(t, mutant, sched, opts, Arc::new(Tally::default()), make)
}

/// [`run_scheduler`], counting in `tally`.
fn run_tallied<S: Scheduler + 'static>(
    t: Target,
    mutant: Option<Rule>,
    sched: Option<Sched>,
    opts: &Options,
    tally: Arc<Tally>,
    make: impl FnOnce(&Options) -> S + Send + 'static,
) -> Report {
    let schedule = Arc::new(Mutex::new(Schedule::default()));
    let start = Instant::now();
    let result = {
        let (opts, tally, schedule) = (opts.clone(), tally.clone(), schedule.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shuttle {}", t.name))
            .spawn(move || run_with(t, mutant, make(&opts), &opts, tally, schedule));
        match thread.map(|h| h.join()) {
            Ok(Ok(r)) => r,
            Ok(Err(p)) => Err(panic_message(&*p)),
            Err(e) => panic!("cannot spawn the runner thread: {e}"),
        }
    };
    let time = start.elapsed();
    let mut report = Report {
        target: t.name,
        mutant,
        sched,
        seed: opts.seed,
        outcome: Outcome::Pass,
        executions: tally.count.load(Relaxed),
        time,
        max_spins: tally.max_spins.load(Relaxed),
        message: None,
        schedule: None,
        schedule_file: None,
        trace: None,
    };
    let trace = tally.last_trace();
    if let Err(msg) = result {
        report.outcome = Outcome::of_message(&msg);
        report.message = Some(msg);
        report.trace = trace.map(|t| t.render());
        let recorded = schedule.lock().unwrap_or_else(PoisonError::into_inner);
        report.schedule = Some(serialize_schedule(&recorded));
        if let Persist::Dir(d) = &opts.persist {
            save_schedule(&mut report, d);
        }
    }
    report
}

/// Saves the failing schedule under `out/schedules/`, named after the run.
fn save_schedule(report: &mut Report, out: &std::path::Path) {
    let Some(schedule) = &report.schedule else { return };
    let mutant = report.mutant.map(|m| format!("--{m}")).unwrap_or_default();
    let sched = report.sched.map(|s| format!("--{s}")).unwrap_or_default();
    let dir = out.join("schedules");
    let dest = dir.join(format!("{}{mutant}{sched}.schedule", report.target));
    if std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&dest, format!("{schedule}\n"))).is_ok() {
        report.schedule_file = Some(dest);
    }
}

/// Replays `schedule` on `t` with `mutant`, on the calling thread, under the options the
/// failure was found with (the spin budget and step bound must match). Panics exactly as the
/// recorded failure did: this is what a regression test calls, under `#[should_panic]`.
pub fn replay(t: Target, mutant: Option<Rule>, schedule: &str, opts: &Options) {
    replay_with(t, mutant, schedule, opts, Arc::new(Tally::default()));
}

fn replay_with(t: Target, mutant: Option<Rule>, schedule: &str, opts: &Options, tally: Arc<Tally>) {
    let runner = Runner::new(ReplayScheduler::new_from_encoded(schedule.trim()), opts.config());
    let opts = opts.clone();
    runner.run(move || execution(t, mutant, &opts, &tally));
}

/// [`replay`], on a fresh thread, as a report (with the failing execution's trace).
pub fn replay_report(t: Target, mutant: Option<Rule>, schedule: &str, opts: &Options) -> Report {
    let start = Instant::now();
    let tally = Arc::new(Tally::default());
    let result = {
        let (schedule, opts, tally) = (schedule.to_string(), opts.clone(), tally.clone());
        std::thread::spawn(move || {
            std::panic::catch_unwind(|| replay_with(t, mutant, &schedule, &opts, tally))
                .map_err(|p| panic_message(&*p))
        })
        .join()
        .unwrap_or_else(|p| Err(panic_message(&*p)))
    };
    let trace = tally.last_trace();
    let (outcome, message) = match result {
        Ok(()) => (Outcome::Pass, None),
        Err(msg) => (Outcome::of_message(&msg), Some(msg)),
    };
    Report {
        target: t.name,
        mutant,
        sched: None,
        seed: opts.seed,
        outcome,
        executions: 1,
        time: start.elapsed(),
        max_spins: 0,
        message,
        schedule: Some(schedule.trim().to_string()),
        schedule_file: None,
        trace: if outcome == Outcome::Pass { None } else { trace.map(|t| t.render()) },
    }
}
