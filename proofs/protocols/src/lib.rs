//! Exhaustive protocol models of mmusync, checked with [stateright].
//!
//! The loom and shuttle models (`models/`) run core's real code on a few threads. The models
//! here run the *protocols* — the steps of core's algorithms, one model action per step, named
//! by the labels the code and its docs use — on more threads, exhaustively, under sequential
//! consistency and (where store→load order matters) under x86-TSO with explicit store buffers.
//! Each protocol rule has a mutant, and each mutant is killed with its shortest counterexample
//! (breadth-first search). The models:
//!
//! * [`models::fault`]: P1 + P2, faults on gfns vs overlapping invalidations with the merged
//!   range (`retry_gfn` as in `core/src/retry.rs`, start/end as in `core/src/notifier.rs`).
//! * [`models::memslot`]: P3, memslot swaps vs invalidations (layout seen by start = by end;
//!   the swap never blocks the notifier; no deadlock).
//! * [`models::walk`]: P5, lockless walkers vs a zapper, the IPI-and-wait scheme and the
//!   epoch/RCU scheme (`core/src/walk.rs`, `core/src/vcpu.rs`, `core/src/epoch.rs`).
//! * [`models::pfncache`]: the translation-cache refresh (`core/src/pfncache.rs`) vs
//!   invalidations, the race for caches outside every memslot, and a fix.
//!
//! [`conformance`] replays step traces recorded from core's code (shuttle, loom and real-thread
//! runs) in the fault, memslot, pfncache and walk models (the walk model under both
//! reclamation schemes): every step must be a step the model allows, with the values the model
//! has.
//!
//! [`registry`] lists every check (correct models and mutants, with the property each mutant
//! must break); [`runner`] explores one and reports states, depth, time and counterexamples;
//! [`rows`] turns the results into the main job's rows (checker `proofs`).

pub mod conformance;
pub mod models;
pub mod registry;
pub mod rows;
pub mod runner;
pub mod tso;

pub use registry::{checks, Check, Expect, Scale};
pub use runner::{explore, Discovery, Report, Search};
