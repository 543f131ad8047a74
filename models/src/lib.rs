//! # mmusync-models
//!
//! The catalogue of scenarios for the protocols of [`mmusync`]: one descriptor per scenario
//! ([`SCENARIOS`]), the shared bodies written **once** and run by several checkers, their ghost
//! state, the [`Mutant`]s, and the typed result [`Row`] every checker writes.
//!
//! A [`Scenario`] is a small concurrent program over the crate's real protocol code: a few
//! *roles* (a faulting vCPU, an invalidator, a memslot updater, a lockless walker, a zapper, the
//! hardware page walker), shared state built in a setup step, and *ghost state* — which pages
//! are freed, what the primary MMU maps, which memslot was deleted — that the roles and a final
//! check use to assert the protocols' invariants (no SPTE maps a freed page; no walker reads a freed
//! table page; no missed sync; counts balance). Each scenario also lists the mutants ([`Mutant`]:
//! a dropped [`Barrier`](mmusync::Barrier) or a broken [`Rule`](mmusync::Rule)) it is meant to
//! kill.
//!
//! Scenarios are `no_std` (plus `alloc`) and generic over the HAL ([`mmusync::hal::Cpus`]) and
//! over a tiny [`Executor`] that spawns roles and records protocol steps. So the same scenario
//! code runs under:
//!
//! * loom (crate `mmusync-loom`, in `--cfg loom` builds): exhaustive or preemption-bounded
//!   exploration of every interleaving under C11's weak memory, with any one named barrier or
//!   rule mutated at run time;
//! * shuttle (crate `mmusync-shuttle`: random, PCT and DFS schedules, more threads);
//! * real threads on this CPU (crate `mmusync-hw`).
//!
//! Each checker needs only an `Executor` and a HAL. A scenario that only one checker can run
//! (many threads for shuttle, jittered rounds for real threads) still has its descriptor here,
//! with its body in that checker's crate ([`Body`]).
//!
//! ## Ghost state
//!
//! Ghost state ([`ghost`]) uses `core`'s atomics, which loom does not model: it records physical
//! events (a page was freed; a page was read) in the order the executor actually runs them, and
//! never orders the roles' model memory. A role that reads a page checks the page's ghost
//! `freed` flag at that moment; a final check runs after every role has finished.
//!
//! Under an executor on real threads, ghost state adds real synchronization (SeqCst atomics); it
//! must be kept off the paths whose ordering is being tested, as the scenarios here do (ghost
//! accesses sit next to the protocol step they describe, never between a barrier and the access
//! it orders).
#![no_std]
#![warn(missing_docs)]

extern crate alloc;

pub mod conformance;
pub mod exec;
pub mod ghost;
pub mod mutant;
pub mod mutated;
pub mod row;
pub mod scenario;
pub mod scenarios;
pub mod trace;

pub use exec::{violated, Executor, Invariant, Role};
pub use mutant::Mutant;
pub use mutated::Mutated;
pub use row::{Bound, Checker, Failure, Row, Verdict};
pub use scenario::{Body, Expect, HardwareBody, Scenario, ScenarioHal, Shared, ShuttleBody, SCENARIOS};
pub use trace::{TraceStep, Traces};
