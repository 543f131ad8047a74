//! # mmusync-shuttle
//!
//! The [shuttle](https://docs.rs/shuttle) executor for mmusync's scenarios, and the scenarios
//! that are too large for loom.
//!
//! * [`hal`]: [`ShuttleHal`](hal::ShuttleHal), core's HAL over shuttle's atomics, mutexes and
//!   condition variables: blocking locks (so shuttle's deadlock detector sees a cycle),
//!   interrupt lines and blocking IPIs, a run-time rule mutant, and a spin budget that turns a
//!   cycle of spin-waits into a reported liveness failure;
//! * [`exec`]: [`ShuttleExec`](exec::ShuttleExec), the `mmusync-models` executor over shuttle
//!   threads, plus scoped roles for the larger scenarios;
//! * [`scenarios`]: 4–8 vCPUs, overlapping invalidators across memslots, memslot churn,
//!   translation caches coming and going, long runs on the reference MMU, and the two P3
//!   deadlocks (SRCU-held retry loop; a notifier that blocks) with their fixes;
//! * [`runner`]: random and PCT schedulers, outcome classification, failing schedules saved and
//!   replayed;
//! * [`bytes`]: [`ByteScheduler`](bytes::ByteScheduler), scheduling decisions from a byte
//!   string, so that libFuzzer can drive the schedule (`fuzz/`, target `schedule`);
//! * [`suite`]: the CI set and the soak mode.
//!
//! ## What shuttle can and cannot show
//!
//! Shuttle is sequentially consistent: every atomic access is `SeqCst`, every fence a no-op.
//! It explores *which thread runs next*, at random or with PCT, over many threads and long
//! runs; it never reorders memory. So it kills mutants that break a lock, a check or the order
//! of steps ([`mmusync::Rule`]), and finds deadlocks, livelocks and starvation, but it cannot
//! kill a dropped barrier ([`mmusync::Barrier`]): loom (crate `mmusync-loom`) does that.
//! `docs/shuttle.md` lists what is killed here and what is not.

pub mod bytes;
pub mod exec;
pub mod hal;
pub mod runner;
pub mod scenarios;
pub mod suite;
pub mod trace;
