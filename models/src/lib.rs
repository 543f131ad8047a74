//! # mmusync-models
//!
//! Scenarios for the protocols of [`mmusync`], written **once** and run by several executors.
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
//! * loom (module `loom`, in `--cfg loom` builds): exhaustive or preemption-bounded
//!   exploration of every interleaving under C11's weak memory, with any one named barrier or
//!   rule mutated at run time;
//! * later, shuttle (random/PCT schedules, more threads), real threads on this CPU, and ring 0
//!   inside a KVM guest: each needs only an `Executor` and a HAL.
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
#[cfg(loom)]
extern crate std;

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "build the loom suite with RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\": without crossbeam's loom mode, core's epoch reclamation is invisible to loom"
);

pub mod conformance;
pub mod exec;
pub mod ghost;
pub mod mutant;
pub mod row;
pub mod scenario;
pub mod scenarios;

#[cfg(loom)]
pub mod loom;

pub use exec::{violated, Executor, Invariant, Role};
pub use mutant::Mutant;
pub use row::{Bound, Checker, Failure, Row, Verdict};
pub use scenario::{Scenario, ScenarioHal, SCENARIOS};
