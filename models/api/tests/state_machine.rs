//! The public API against the sequential reference model, as a proptest state machine.
//!
//! The reference state machine is [`Model`]; the system under test is a [`Harness`] over the
//! real crate. Each transition is one [`Op`], generated with raw operands (so invalid input
//! is common) and checked for the exact value or typed error, then the observable state is
//! compared. Shrinking reduces a failure to a minimal sequence of calls.
//!
//! `PROPTEST_CASES` overrides the number of cases (default below).

mod common;

use common::op;
use mmusync_api_model::{Harness, Model, Op, World};
use proptest::prelude::*;
use proptest::test_runner::Config;
use proptest_state_machine::{prop_state_machine, ReferenceStateMachine, StateMachineTest};

/// Cases per run when `PROPTEST_CASES` is not set: about 10 s in a debug build.
const CASES: u32 = 512;

/// The reference side: the model, stepped by each transition.
struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Op;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Op> {
        op(&state.interesting()).boxed()
    }

    fn apply(mut state: Model, op: &Op) -> Model {
        state.step(op);
        state
    }
}

/// The real side. The [`World`] is leaked (a few hundred bytes per case) because the system
/// under test must own what the harness's guards borrow.
struct Real;

impl StateMachineTest for Real {
    type SystemUnderTest = Harness<'static>;
    type Reference = Reference;

    fn init_test(_: &Model) -> Harness<'static> {
        Harness::new(Box::leak(Box::new(World::new())))
    }

    fn apply(mut harness: Harness<'static>, model: &Model, op: Op) -> Harness<'static> {
        let got = harness.step(&op);
        assert_eq!(Some(&got), model.last(), "result of {op:?}");
        harness
    }

    fn check_invariants(harness: &Harness<'static>, model: &Model) {
        assert_eq!(harness.observe(), model.observe(), "observable state");
        assert_eq!(harness.kept(), model.kept(), "kept snapshots, guards and sections");
    }
}

prop_state_machine! {
    #![proptest_config(Config {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES),
        max_shrink_iters: 4096,
        failure_persistence: None,
        .. Config::default()
    })]

    #[test]
    fn public_api_matches_the_reference_model(sequential 1..64 => Real);
}
