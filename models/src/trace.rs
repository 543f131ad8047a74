//! Step traces as data: what a checker recorded of core's own steps ([`mmusync::Step`], reported
//! through `Hal::step`), written by one program and replayed by another.
//!
//! The loom checker writes them (`loom-scorecard --traces PATH`) for every execution it explores;
//! the proofs' `trace-conformance` replays each one as a path of the protocol model the scenario
//! is an instance of. The file is one [`Traces`] as JSON.

use crate::mutant::Mutant;
use crate::row::{mutant_name, Bound, Checker};
use alloc::string::String;
use alloc::vec::Vec;
use mmusync::Step;
use serde::{Deserialize, Serialize};

/// One recorded step: the CPU (role index) that made it, `None` outside the roles (the
/// scenario's setup and final checks, which a model does not replay), and the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStep {
    /// The CPU, `None` for the setup and final-check phases.
    pub cpu: Option<usize>,
    /// The step.
    pub step: Step,
}

/// Every execution a checker ran of one scenario, on the correct code or with one mutant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Traces {
    /// The checker that recorded them.
    pub checker: Checker,
    /// The scenario.
    pub scenario: String,
    /// The mutant, or `None` for the correct code.
    #[serde(with = "mutant_name")]
    pub mutant: Option<Mutant>,
    /// How far the checker looked.
    pub bound: Bound,
    /// Whether the last execution failed (an invariant, or a deadlock); every other one passed.
    pub failed: bool,
    /// Each execution's steps, in the order they ran.
    pub executions: Vec<Vec<TraceStep>>,
}
