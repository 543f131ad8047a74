//! Fuzz target 3, `page_table`: bytes → map, zap (IPI, epoch and retire-list frees), walk
//! (under each kind of proof), fast-path, fault and notifier operations on the reference page
//! table (`mmusync::mmu`), checked against a `BTreeMap` model after every step, with a counting
//! allocator that catches double frees and leaks of table pages. Any disagreement, panic or
//! sanitizer report is a crash.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mmusync_api_model::page_table::run_page_table_bytes(data));
