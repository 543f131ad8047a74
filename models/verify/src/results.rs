//! What every checker reports, in one shape: scenario verdicts and mutant outcomes.

use mmusync::barrier::Protocol;
use mmusync::{Barrier, Rule};
use serde::Serialize;
use std::fmt;

/// The checkers the main job runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Checker {
    /// loom: exhaustive or preemption-bounded exploration under C11 weak memory.
    Loom,
    /// shuttle: random and PCT schedules, many threads, sequentially consistent memory.
    Shuttle,
    /// Real threads on this CPU (x86-TSO), signals as IPIs.
    Hardware,
}

impl Checker {
    /// Every checker, in the order the main job runs them.
    pub const ALL: [Checker; 3] = [Checker::Loom, Checker::Shuttle, Checker::Hardware];

    /// What this checker cannot see. Printed under every scorecard.
    pub fn blind_spots(self) -> &'static str {
        match self {
            Checker::Loom => {
                "never produces load buffering (a load reading a store that is later in the other \
                 thread's program order); treats SeqCst loads/stores as AcqRel (the models use \
                 SeqCst fences for every full barrier); explores only up to its preemption bound \
                 where a scenario is not exhaustive; at most 4 threads"
            }
            Checker::Shuttle => {
                "sequentially consistent: every atomic is SeqCst and fences are no-ops, so no \
                 missing barrier is visible; random/PCT schedules sample, they do not exhaust"
            }
            Checker::Hardware => {
                "x86-TSO only shows store->load reordering (store buffering); a missing wmb/rmb \
                 or release/acquire is invisible on x86; outcomes are sampled, and a rare window \
                 may never be hit in the iterations run"
            }
        }
    }
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checker::Loom => "loom",
            Checker::Shuttle => "shuttle",
            Checker::Hardware => "hardware",
        })
    }
}

/// One scenario run by one checker on the correct code.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    /// The checker.
    pub checker: Checker,
    /// The scenario's name.
    pub scenario: String,
    /// Its protocol (`P1`..`P5`).
    pub protocol: String,
    /// Whether every invariant held.
    pub passed: bool,
    /// Executions (loom), iterations (shuttle, hardware).
    pub executions: u64,
    /// Wall time in seconds.
    pub time_s: f64,
    /// Exhaustive, or the bound explored.
    pub bound: String,
}

/// One mutant's outcome under one checker.
#[derive(Clone, Debug, Serialize)]
pub struct MutantRun {
    /// The checker.
    pub checker: Checker,
    /// The mutant (a `Barrier` or `Rule` name).
    pub mutant: String,
    /// The scenario that killed it.
    pub killed_by: Option<String>,
    /// How it died (an invariant, a liveness failure), or why it survived.
    pub outcome: String,
    /// Executions until the first failure (or explored in total).
    pub executions: u64,
    /// Wall time in seconds.
    pub time_s: f64,
    /// The documented reason no checker of this kind can kill it, if any.
    pub documented: Option<String>,
}

impl MutantRun {
    /// Whether the checker killed the mutant.
    pub fn killed(&self) -> bool {
        self.killed_by.is_some()
    }
}

/// The protocol a mutant (by name) belongs to.
pub fn mutant_protocol(name: &str) -> Option<Protocol> {
    let name = name.trim_start_matches("Barrier::").trim_start_matches("Rule::");
    Barrier::ALL
        .iter()
        .find(|b| b.name() == name)
        .map(|b| b.protocol())
        .or_else(|| Rule::ALL.iter().find(|r| r.name() == name).map(|r| r.protocol()))
}

/// Every mutant name: every barrier and every rule.
pub fn all_mutants() -> impl Iterator<Item = &'static str> {
    Barrier::ALL.iter().map(|b| b.name()).chain(Rule::ALL.iter().map(|r| r.name()))
}
