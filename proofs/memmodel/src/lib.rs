//! An axiomatic memory-model checker for litmus tests.
//!
//! A litmus test is a few threads of loads, stores, RMWs, fences and locks over shared
//! locations, and a condition on the final state (`exists (1:r0=1 /\ 1:r1=0)`). This crate
//! decides, for each of five memory models, whether some, none or every execution the model
//! allows satisfies the condition:
//!
//! * [`parse`](mod@parse) reads the C litmus format of the Linux kernel's `tools/memory-model`
//!   (a subset: see the module);
//! * [`exec`] enumerates every candidate execution exhaustively (value domains, per-thread
//!   traces, coherence orders, reads-from), pruning with SC-per-location as it goes;
//! * [`model`] judges each candidate under SC, x86-TSO, ARMv8 (Pulte et al., POPL 2018),
//!   RC11 (Lahav et al., PLDI 2017) and the Linux kernel memory model (Alglave et al.,
//!   ASPLOS 2018), each written as relations over the execution ([`rel`]);
//! * [`suite`] is the fidelity suite (the kernel's own litmus tests, rewritten, plus classic
//!   shapes and RCU grace-period shapes) and the generated table in `docs/memmodel.md`;
//! * [`barriers`] builds a litmus skeleton for every pairing of `mmusync::Barrier` and judges
//!   it with and without each barrier.
//!
//! * [`rows`] turns the barrier judgement into the main job's rows (checker `proofs`).
//!
//! The `memmodel` binary checks a file: `memmodel check FILE [--model lkmm|...|all] [--json]`;
//! `memmodel barriers [--rows PATH]` judges every barrier and writes the rows.

pub mod ast;
pub mod barriers;
pub mod exec;
pub mod model;
pub mod parse;
pub mod rel;
pub mod rows;
pub mod suite;

pub use ast::{Model, Test, Verdict};
pub use exec::{check, Outcome, Unsupported};
pub use parse::{parse, ParseError};
