//! # mmusync-api-model
//!
//! One oracle for the public API of [`mmusync`], shared by the proptest state machine
//! (`tests/state_machine.rs`) and the cargo-fuzz targets (`fuzz/`):
//!
//! * [`Op`]: the operation vocabulary, one variant per public call, with raw integer operands
//!   so that inverted, empty, overflowing and overlapping ranges, unbalanced ends, stale and
//!   foreign snapshots and foreign guards are generated as readily as good input. It derives
//!   [`arbitrary::Arbitrary`], so a fuzzer's bytes decode to a sequence of operations.
//! * [`Model`]: a sequential reference model written from the protocol descriptions (in-progress
//!   count, sequence, merged range with its reset on the 0 → 1 `begin`, active count, memslot
//!   layout and generation, snapshots), with no locks or atomics.
//! * [`Harness`] and [`run`]: apply each operation to the real crate on
//!   [`StdHal`](mmusync::hal::std::StdHal) and to the model, and panic at the first
//!   disagreement in a returned value, a typed [`Error`](mmusync::Error), or the observable
//!   state.
//!
//! Everything runs on one thread. Calls that would wait forever there (a memslot update while
//! an invalidation or SRCU read section that only this thread could end is open) are not made;
//! both sides report [`Skip::WouldBlock`] instead.
//!
//! [`run_bytes`] is the fuzz entry point: it [`decode`]s bytes into operations and runs them;
//! [`encode`] is its inverse, used for the seed corpora and to replay a proptest failure in the
//! fuzzer.
//!
//! [`page_table`] is the second oracle: the reference page table (`mmusync::mmu`) against a
//! `BTreeMap` model, for the `page_table` fuzz target.

mod driver;
mod encode;
mod model;
mod op;
pub mod page_table;

pub use driver::{check, run, Harness, Recorder, World};
pub use encode::{encode, encode_page_table};
pub use model::{
    gfn_span, hva_span, primary_pfn, slot, Effects, GfnSpan, HvaSpan, Model, Observed, Outcome, Skip,
    SlotView, Value, VcpuFault, VcpuView, MAX_SNAPSHOTS, SLOTS, VCPUS, VM_CACHES,
};
pub use op::{CacheKey, Counters, Lock, Op, Owner, Race, SlotKey, Val, VcpuKey, Whose, BOUNDARIES};

/// At most this many operations are decoded from one input, so that one fuzz input costs a
/// bounded time.
pub const MAX_OPS: usize = 256;

/// Decodes `data` into at most [`MAX_OPS`] operations (stopping where the bytes run out).
pub fn decode(data: &[u8]) -> Vec<Op> {
    let mut u = arbitrary::Unstructured::new(data);
    let mut ops = Vec::new();
    while ops.len() < MAX_OPS && !u.is_empty() {
        match u.arbitrary::<Op>() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    ops
}

/// The fuzz entry point: [`decode`] then [`run`]. Panics on any disagreement.
pub fn run_bytes(data: &[u8]) {
    run(&decode(data));
}
