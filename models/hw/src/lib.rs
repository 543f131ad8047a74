//! # mmusync-hw
//!
//! [`mmusync`]'s protocols on real x86 threads, in user space.
//!
//! * [`exec::ThreadExec`]: an [`Executor`](mmusync_models::Executor) that runs a scenario's
//!   roles on real OS threads, one thread per CPU role, each registered as a CPU of the `std`
//!   backend in role order (role `i` is CPU `i`). A real-time signal is the IPI, a blocked
//!   signal mask is "interrupts off" (see [`mmusync::hal::std`]).
//! * [`hal`]: the two backends the scenarios run on here, [`StdHal`](mmusync::hal::std::StdHal)
//!   and [`hal::X86Threads`] (the `x86` backend's x86-TSO barrier mapping with the `std`
//!   backend's threads-as-CPUs), each wrapped in [`hal::Mutated`], which drops one named
//!   barrier or breaks one rule at run time: a mutant on real silicon.
//! * [`poison`]: a page allocator that never reuses a freed page and overwrites it with a poison
//!   pattern (a quarantine: reads of a freed page stay defined behaviour, they just see poison),
//!   and a pool of guest pages that does the same. A walker that reads poison, or an SPTE that
//!   points at a freed page, is a violation.
//! * [`scenarios`]: hardware scenarios written over core's vCPU, walk, epoch and reference-MMU
//!   API, which run many rounds per role invocation and count violations per round (SB-walk,
//!   SB-entry, epoch walks, and the reference MMU's fault path against invalidations).
//! * [`stress`]: runs every model scenario of [`mmusync_models::SCENARIOS`] and every hardware
//!   scenario a fixed number of iterations (bounded in time), on both backends, with or without
//!   a mutant, and reports violations per scenario (the `hw-stress` binary).
//! * [`steps`]: records core's own steps ([`mmusync::Step`]) on real threads, so that their
//!   traces replay in the protocol models like loom's and shuttle's (`hw-stress --traces`).
//! * [`litmus`]: store buffering and message passing on two pinned threads, with and without
//!   the `x86` backend's barriers (the `hw-litmus` binary).
//!
//! The criterion benchmarks live in `benches/hw.rs`; `BENCHMARKS.md` at the repository root has
//! the numbers and the commands.
//!
//! Linux on x86-64 only: the `std` backend's CPUs are Linux threads and signals, and the `x86`
//! backend exists only for x86-64.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("mmusync-hw runs the protocols on Linux x86-64 threads only");

pub mod exec;
pub mod hal;
pub mod litmus;
pub mod poison;
pub mod scenarios;
pub mod steps;
pub mod stress;
