//! The loom executor (built only with `--cfg loom --cfg crossbeam_loom`).
//!
//! * [`hal`]: [`LoomHal`](hal::LoomHal), core's HAL over loom atomics, fences and spin locks,
//!   with per-CPU interrupt flags and IPI-and-wait (protocols.md, modelling), and the run-time mutant;
//! * [`exec`]: [`LoomExec`](exec::LoomExec), the [`Executor`](crate::Executor) that runs roles
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

pub mod conformance;
pub mod exec;
pub mod hal;
mod panics;
pub mod runner;
pub mod scorecard;
pub mod trace;
