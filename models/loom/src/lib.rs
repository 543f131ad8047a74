//! # mmusync-loom
//!
//! The loom checker of mmusync (built only with `--cfg loom --cfg crossbeam_loom`): core's HAL
//! over loom, an executor for the catalogue's shared scenarios ([`mmusync_models::SCENARIOS`]),
//! and the scorecard that runs every barrier and rule mutant against them.
//!
//! Its modules exist only in loom builds (so a normal build's docs name them in plain text):
//!
//! * `hal`: `LoomHal`, core's loom backend (`mmusync::hal::loom`, re-exported): loom atomics and
//!   fences, parking locks, per-CPU interrupt flags and IPI-and-wait (protocols.md, modelling),
//!   and the run-time mutant;
//! * `exec`: `LoomExec`, the [`Executor`](mmusync_models::Executor) that runs roles as loom
//!   threads;
//! * `trace`: the counterexample trace, in protocol terms (recorded by core's loom backend);
//! * `runner`: one scenario × one mutant → pass, or a classified failure with its trace;
//!   `run_traced` also keeps every execution's steps (for the proofs' trace conformance);
//! * `conformance`: the HAL conformance suite against the loom HAL and broken wrappers of it;
//! * `scorecard`: every mutant against the scenarios.
//!
//! What loom cannot see (see `docs/models.md`): load buffering (a load reading a store that
//! comes later in its own thread's causal future) is never produced; `SeqCst` *accesses* are
//! modelled as acquire/release, so every full barrier in the protocols is a `SeqCst` *fence*,
//! which loom models fully.

#[cfg(loom)]
pub mod conformance;
#[cfg(loom)]
pub mod exec;
/// core's loom backend (`mmusync::hal::loom`), which this checker uses as its HAL; it lives in
/// core so that a VMM can loom-test its own integration with it.
#[cfg(loom)]
pub use mmusync::hal::loom as hal;
#[cfg(loom)]
mod panics;
#[cfg(loom)]
pub mod runner;
#[cfg(loom)]
pub mod scorecard;
/// The counterexample trace and coverage the loom HAL records ([`mmusync::hal::loom::trace`]).
#[cfg(loom)]
pub use mmusync::hal::loom::trace;

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "build the loom checker with RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\": without crossbeam's loom mode, core's epoch reclamation is invisible to loom"
);
