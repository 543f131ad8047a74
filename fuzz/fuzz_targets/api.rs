//! Fuzz target 1, `api`: bytes → a sequence of public API calls on one thread (bad ranges,
//! unbalanced ends, stale and foreign snapshots and guards, memslot swaps), each checked
//! against the sequential reference model in `mmusync-api-model` for the exact value or typed
//! error, and the observable state compared after every call. Any disagreement or panic is a
//! crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mmusync_api_model::run_bytes(data));
