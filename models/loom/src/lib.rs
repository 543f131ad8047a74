//! # mmusync-loom
//!
//! The loom checker of mmusync (built only with `--cfg loom --cfg crossbeam_loom`): core's HAL
//! over loom, an executor for the catalogue's shared scenarios ([`mmusync_models::SCENARIOS`]),
//! and the scorecard that runs every barrier and rule mutant against them.
//!
//!
//! * [`hal`]: [`LoomHal`](hal::LoomHal), core's HAL over loom atomics, fences and spin locks,
//!   with per-CPU interrupt flags and IPI-and-wait (protocols.md, modelling), and the run-time mutant;
//! * [`exec`]: [`LoomExec`](exec::LoomExec), the [`Executor`](mmusync_models::Executor) that runs roles
//!   as loom threads;
//! * [`trace`]: the counterexample trace, in protocol terms;
//! * [`runner`]: one scenario × one mutant → pass, or a classified failure with its trace;
//! * [`conformance`]: the HAL conformance suite against the loom HAL and broken wrappers of it;
//! * [`scorecard`]: every mutant against the scenarios.
//!
//! What loom cannot see (see `docs/models.md`): load buffering (a load reading a store that
//! comes later in its own thread's causal future) is never produced; `SeqCst` *accesses* are
//! modelled as acquire/release, so every full barrier in the protocols is a `SeqCst` *fence*,
//! which loom models fully.

#[cfg(loom)]
pub mod conformance;
#[cfg(loom)]
pub mod exec;
#[cfg(loom)]
pub mod hal;
#[cfg(loom)]
mod panics;
#[cfg(loom)]
pub mod runner;
#[cfg(loom)]
pub mod scorecard;
#[cfg(loom)]
pub mod trace;

#[cfg(all(loom, not(crossbeam_loom)))]
compile_error!(
    "build the loom checker with RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\": without crossbeam's loom mode, core's epoch reclamation is invisible to loom"
);
