//! A shuttle scheduler whose decisions come from a byte string: what lets libFuzzer drive the
//! schedule (the `schedule` target in `fuzz/`).
//!
//! Shuttle's own schedulers draw their decisions from a seeded random generator (random, PCT).
//! [`ByteScheduler`] draws them from the fuzzer's input instead, one byte per decision, so that
//! libFuzzer's coverage feedback (the branches of core's protocol code that an interleaving
//! reaches) steers which interleavings are tried, and its mutations (bit flips, splices,
//! inserted bytes) turn into small changes of the schedule: a context switch moved, added or
//! removed.
//!
//! Each input drives exactly one execution. Only a scheduling point with a choice (two or more
//! tasks it may pick) takes a byte, so the bytes go where interleavings differ:
//!
//! * byte `0` keeps the current task running (when it is runnable and not spinning);
//! * byte `b > 0` switches to task `(b - 1) % n` of the `n` runnable tasks it may pick;
//! * a task that spins (`is_yielding`) is never picked again while another task can run, so a
//!   spin-wait always lets the awaited task make progress: a schedule can reorder the roles but
//!   cannot starve one by picking a spinner forever (which the spin budget would report as a
//!   liveness failure the code does not have);
//! * once the bytes run out, the current task runs on, and when it blocks, spins or ends, the
//!   runnable task with the next higher id takes over (round robin): every input ends in a
//!   complete execution, and no task is starved.
//!
//! A byte schedule cannot starve a task into a false liveness failure: each spin-wait that does
//! not hand over costs a byte, and the spin budget (5,000 per CPU and execution) is larger than
//! libFuzzer's default maximum input (4,096 bytes).
//!
//! Random values (`next_u64`) take the next eight bytes, or `0` once the bytes run out.
//! Shuttle records the decisions like any other scheduler's, so a failure prints a schedule
//! that the runner's replay reproduces without the fuzzer.

use crate::runner::{self, Options, Outcome, Report, Target};
use mmusync::Rule;
use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};

/// Scheduling decisions from a byte string, for one execution (see the module documentation).
#[derive(Clone, Debug)]
pub struct ByteScheduler {
    bytes: Vec<u8>,
    next: usize,
    started: bool,
}

impl ByteScheduler {
    /// A scheduler that runs one execution with the decisions in `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        ByteScheduler { bytes, next: 0, started: false }
    }

    fn take(&mut self) -> Option<u8> {
        let b = self.bytes.get(self.next).copied();
        self.next += usize::from(b.is_some());
        b
    }
}

impl Scheduler for ByteScheduler {
    fn new_execution(&mut self) -> Option<Schedule> {
        if std::mem::replace(&mut self.started, true) {
            return None;
        }
        Some(Schedule::new(0))
    }

    fn next_task(
        &mut self,
        runnable: &[&Task],
        current: Option<TaskId>,
        is_yielding: bool,
    ) -> Option<TaskId> {
        let at = current.and_then(|c| runnable.iter().position(|t| t.id() == c));
        // The tasks this decision may pick: everyone, or everyone but a spinning current task
        // when someone else can run.
        let spinner = at.filter(|_| is_yielding && runnable.len() > 1);
        let candidates: Vec<TaskId> =
            runnable.iter().enumerate().filter(|&(i, _)| Some(i) != spinner).map(|(_, t)| t.id()).collect();
        let keep = at.filter(|_| spinner.is_none()).map(|i| runnable[i].id());
        if let [only] = candidates[..] {
            // No choice to make: spend no byte on it.
            return Some(only);
        }
        match self.take() {
            Some(0) | None if keep.is_some() => keep,
            Some(b) if b > 0 => Some(candidates[usize::from(b - 1) % candidates.len()]),
            // Out of bytes (or a 0 with no current task to keep): round robin by task id, the
            // first candidate after the current task (which may have blocked or ended), so that
            // a spinner hands over and every runnable task gets its turn.
            _ => {
                let after = current.map_or(0, |c| usize::from(c) + 1);
                let next = candidates.iter().copied().filter(|&id| usize::from(id) >= after).min();
                next.or_else(|| candidates.iter().copied().min())
            }
        }
    }

    fn next_u64(&mut self) -> u64 {
        let mut word = [0u8; 8];
        for b in &mut word {
            *b = self.take().unwrap_or(0);
        }
        u64::from_le_bytes(word)
    }
}

/// What the `schedule` fuzz target runs, configured from the environment:
///
/// * `MMUSYNC_FUZZ_TARGET=NAME`: only that target; by default every target the correct code
///   must pass (the deliberately bad patterns, such as `prefault-holds-srcu`, are left out);
/// * `MMUSYNC_FUZZ_MUTANT=RULE`: break that [`Rule`] in every execution, to measure how fast
///   the fuzzer kills it; by default none (the correct code, where any failure is a bug).
///
/// An input's first byte picks the target, the rest schedules one execution of it.
pub struct FuzzSetup {
    targets: Vec<Target>,
    mutant: Option<Rule>,
    opts: Options,
}

impl FuzzSetup {
    /// The setup the environment asks for, or why it cannot be had (an unknown name).
    pub fn from_env() -> Result<Self, String> {
        let only = std::env::var("MMUSYNC_FUZZ_TARGET").ok();
        let targets: Vec<Target> = runner::targets()
            .into_iter()
            .filter(|t| t.expect == Outcome::Pass && only.as_deref().is_none_or(|n| n == t.name))
            .collect();
        if targets.is_empty() {
            return Err(format!("MMUSYNC_FUZZ_TARGET={only:?} names no target that must pass"));
        }
        let mutant = match std::env::var("MMUSYNC_FUZZ_MUTANT") {
            Ok(name) => Some(runner::rule(&name).ok_or(format!("MMUSYNC_FUZZ_MUTANT={name} names no rule"))?),
            Err(_) => None,
        };
        Ok(FuzzSetup { targets, mutant, opts: Options::default() })
    }

    /// Runs one input: `None` for an empty one, else the report of the one execution.
    pub fn run(&self, data: &[u8]) -> Option<Report> {
        let (&pick, schedule) = data.split_first()?;
        let t = self.targets[usize::from(pick) % self.targets.len()];
        Some(runner::run_bytes(t, self.mutant, schedule, &self.opts))
    }
}
