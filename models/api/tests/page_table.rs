//! The reference page table against its `BTreeMap` model ([`mmusync_api_model::page_table`]),
//! with proptest-generated operations, plus the `page_table` fuzz target's seed corpus.
//!
//! `PROPTEST_CASES` overrides the number of cases (default 256, about 2 s in a debug build).
//! `page_table_seed_corpus_is_up_to_date` rewrites `fuzz/corpus/page_table/` when run with
//! `MMUSYNC_BLESS=1`.

use mmusync_api_model::page_table::{
    decode_page_table, run_page_table, AgeHow, Proof, PtOp, Scheme, ZapHow, CAPACITY, SLOT_HVA,
};
use mmusync_api_model::{encode_page_table, Val, BOUNDARIES};
use proptest::prelude::*;
use proptest::sample::select;
use std::path::PathBuf;

fn val() -> impl Strategy<Value = Val> {
    prop_oneof![
        6 => 0..CAPACITY + 2,
        1 => select(&BOUNDARIES[..]),
        1 => any::<u64>(),
        2 => (0..48u64).prop_map(|k| SLOT_HVA.0 + k * 4096),
    ]
    .prop_map(Val)
}

fn how() -> impl Strategy<Value = ZapHow> {
    prop_oneof![Just(ZapHow::Ipi), Just(ZapHow::Epoch), Just(ZapHow::Retire)]
}

fn scheme() -> impl Strategy<Value = Scheme> {
    prop_oneof![Just(Scheme::Ipi), Just(Scheme::Epoch)]
}

fn proof() -> impl Strategy<Value = Proof> {
    prop_oneof![Just(Proof::Read), Just(Proof::Write), Just(Proof::Lockless), Just(Proof::Epoch)]
}

fn age_how() -> impl Strategy<Value = AgeHow> {
    prop_oneof![Just(AgeHow::ClearFlush), Just(AgeHow::Clear), Just(AgeHow::Test)]
}

fn op() -> impl Strategy<Value = PtOp> {
    prop_oneof![
        5 => (val(), val(), any::<bool>(), any::<bool>())
            .prop_map(|(gfn, pfn, writable, mmu_writable)| PtOp::Map { gfn, pfn, writable, mmu_writable }),
        2 => (val(), val(), how()).prop_map(|(start, end, how)| PtOp::Zap { start, end, how }),
        3 => (val(), proof()).prop_map(|(gfn, proof)| PtOp::Walk { gfn, proof }),
        2 => (val(), any::<bool>()).prop_map(|(gfn, write)| PtOp::FastFault { gfn, write }),
        2 => (val(), any::<bool>()).prop_map(|(gfn, writable)| PtOp::Fault { gfn, writable }),
        1 => (val(), val()).prop_map(|(start, end)| PtOp::Invalidate { start, end }),
        3 => (val(), val(), any::<bool>(), any::<bool>())
            .prop_map(|(gfn, pfn, writable, mmu_writable)| PtOp::MmuMap { gfn, pfn, writable, mmu_writable }),
        1 => (val(), val()).prop_map(|(start, end)| PtOp::ZapGfnRange { start, end }),
        2 => (val(), any::<bool>(), val(), val())
            .prop_map(|(gfn, writable, start, end)| PtOp::FaultAround { gfn, writable, start, end }),
        1 => (val(), any::<bool>()).prop_map(|(gfn, writable)| PtOp::Prefault { gfn, writable }),
        4 => (val(), any::<bool>()).prop_map(|(gfn, write)| PtOp::HwAccess { gfn, write }),
        2 => (age_how(), val(), val()).prop_map(|(how, start, end)| PtOp::Age { how, start, end }),
        2 => (val(), val(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(start, end, clear, foreign)| PtOp::AgeLockless { start, end, clear, foreign }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn page_table_matches_the_btreemap_model(scheme in scheme(), ops in prop::collection::vec(op(), 1..48)) {
        run_page_table(scheme, &ops);
    }

    #[test]
    fn page_table_encoding_round_trips(scheme in scheme(), ops in prop::collection::vec(op(), 0..16)) {
        prop_assert_eq!(decode_page_table(&encode_page_table(scheme, &ops)), (scheme, ops));
    }
}

fn v(x: u64) -> Val {
    Val(x)
}

/// The host address of page `page` of the memslot.
fn slot_page(page: u64) -> Val {
    Val(SLOT_HVA.0 + page * 4096)
}

/// The seed corpus: a name, the MMU's scheme, the operations.
fn seeds() -> Vec<(&'static str, Scheme, Vec<PtOp>)> {
    let map = |gfn, pfn| PtOp::Map { gfn: v(gfn), pfn: v(pfn), writable: false, mmu_writable: true };
    vec![
        (
            "map-walk-zap",
            Scheme::Ipi,
            vec![
                map(0, 100),
                map(17, 117),
                map(63, 163),
                map(64, 1),
                PtOp::Map { gfn: v(1), pfn: v(u64::MAX), writable: true, mmu_writable: true },
                PtOp::Walk { gfn: v(17), proof: Proof::Read },
                PtOp::Walk { gfn: v(17), proof: Proof::Lockless },
                PtOp::Zap { start: v(16), end: v(32), how: ZapHow::Ipi },
                PtOp::Walk { gfn: v(17), proof: Proof::Epoch },
                PtOp::Zap { start: v(0), end: v(64), how: ZapHow::Retire },
                PtOp::Zap { start: v(5), end: v(4), how: ZapHow::Ipi },
            ],
        ),
        (
            "epoch-and-fast-path",
            Scheme::Epoch,
            vec![
                map(3, 5),
                PtOp::Map { gfn: v(4), pfn: v(6), writable: false, mmu_writable: false },
                PtOp::FastFault { gfn: v(3), write: false },
                PtOp::FastFault { gfn: v(3), write: true },
                PtOp::FastFault { gfn: v(3), write: true },
                PtOp::FastFault { gfn: v(4), write: true },
                PtOp::FastFault { gfn: v(5), write: false },
                PtOp::Zap { start: v(0), end: v(16), how: ZapHow::Epoch },
                PtOp::Walk { gfn: v(3), proof: Proof::Write },
            ],
        ),
        (
            "map-flush-and-zap-gfn-range",
            Scheme::Ipi,
            vec![
                PtOp::MmuMap { gfn: v(9), pfn: v(5), writable: true, mmu_writable: true },
                PtOp::MmuMap { gfn: v(9), pfn: v(5), writable: false, mmu_writable: true },
                PtOp::MmuMap { gfn: v(9), pfn: v(5), writable: false, mmu_writable: true },
                PtOp::MmuMap { gfn: v(10), pfn: v(6), writable: false, mmu_writable: false },
                PtOp::MmuMap { gfn: v(10), pfn: v(6), writable: true, mmu_writable: true },
                PtOp::MmuMap { gfn: v(10), pfn: v(7), writable: true, mmu_writable: true },
                PtOp::MmuMap { gfn: v(64), pfn: v(7), writable: true, mmu_writable: true },
                PtOp::Fault { gfn: v(12), writable: true },
                PtOp::ZapGfnRange { start: v(0), end: v(12) },
                PtOp::ZapGfnRange { start: v(9), end: v(64) },
                PtOp::ZapGfnRange { start: v(5), end: v(5) },
                PtOp::ZapGfnRange { start: v(0), end: v(u64::MAX) },
                PtOp::FaultAround { gfn: v(12), writable: true, start: v(6), end: v(16) },
                PtOp::FaultAround { gfn: v(13), writable: false, start: v(9), end: v(9) },
                PtOp::FaultAround { gfn: v(3), writable: false, start: v(0), end: v(64) },
                PtOp::Prefault { gfn: v(20), writable: true },
                PtOp::Prefault { gfn: v(60), writable: true },
            ],
        ),
        (
            "accessed-dirty-and-aging",
            Scheme::Ipi,
            vec![
                PtOp::Fault { gfn: v(8), writable: true },
                PtOp::Fault { gfn: v(9), writable: false },
                PtOp::HwAccess { gfn: v(8), write: true },
                PtOp::HwAccess { gfn: v(9), write: true },
                PtOp::HwAccess { gfn: v(10), write: false },
                PtOp::Age { how: AgeHow::Test, start: slot_page(0), end: slot_page(2) },
                PtOp::Age { how: AgeHow::Clear, start: slot_page(0), end: slot_page(1) },
                PtOp::Age { how: AgeHow::ClearFlush, start: slot_page(0), end: slot_page(2) },
                PtOp::Age { how: AgeHow::ClearFlush, start: slot_page(0), end: slot_page(2) },
                PtOp::Age { how: AgeHow::Test, start: v(0), end: v(4096) },
                PtOp::MmuMap { gfn: v(8), pfn: v(5), writable: false, mmu_writable: true },
                PtOp::HwAccess { gfn: v(9), write: false },
                PtOp::Invalidate { start: slot_page(0), end: slot_page(2) },
                PtOp::Age { how: AgeHow::Clear, start: v(9), end: v(3) },
            ],
        ),
        (
            "lockless-aging-and-epoch-way",
            Scheme::Epoch,
            vec![
                PtOp::Fault { gfn: v(8), writable: true },
                PtOp::Fault { gfn: v(9), writable: false },
                PtOp::Fault { gfn: v(16), writable: false },
                PtOp::HwAccess { gfn: v(8), write: true },
                PtOp::HwAccess { gfn: v(16), write: false },
                PtOp::AgeLockless { start: v(0), end: v(64), clear: false, foreign: false },
                PtOp::AgeLockless { start: v(0), end: v(64), clear: true, foreign: true },
                PtOp::AgeLockless { start: v(9), end: v(16), clear: true, foreign: false },
                PtOp::AgeLockless { start: v(8), end: v(9), clear: true, foreign: false },
                PtOp::AgeLockless { start: v(0), end: v(64), clear: false, foreign: false },
                PtOp::AgeLockless { start: v(5), end: v(4), clear: true, foreign: true },
                PtOp::Age { how: AgeHow::Test, start: slot_page(0), end: slot_page(16) },
                PtOp::Age { how: AgeHow::ClearFlush, start: slot_page(8), end: slot_page(9) },
                PtOp::Age { how: AgeHow::Test, start: slot_page(0), end: slot_page(16) },
                PtOp::HwAccess { gfn: v(9), write: false },
                PtOp::Age { how: AgeHow::Clear, start: slot_page(0), end: slot_page(2) },
                PtOp::Age { how: AgeHow::ClearFlush, start: v(0), end: v(4096) },
                PtOp::Invalidate { start: slot_page(8), end: slot_page(9) },
                PtOp::Walk { gfn: v(16), proof: Proof::Epoch },
                PtOp::Invalidate { start: v(0), end: v(4096) },
                PtOp::Zap { start: v(0), end: v(64), how: ZapHow::Ipi },
                PtOp::ZapGfnRange { start: v(16), end: v(20) },
                PtOp::Invalidate { start: slot_page(0), end: slot_page(32) },
                PtOp::AgeLockless { start: v(0), end: v(64), clear: false, foreign: false },
            ],
        ),
        (
            "ipi-way-refuses-epoch-calls",
            Scheme::Ipi,
            vec![
                PtOp::Fault { gfn: v(8), writable: true },
                PtOp::HwAccess { gfn: v(8), write: false },
                PtOp::Walk { gfn: v(8), proof: Proof::Epoch },
                PtOp::AgeLockless { start: v(0), end: v(64), clear: true, foreign: false },
                PtOp::Zap { start: v(0), end: v(64), how: ZapHow::Epoch },
                PtOp::Age { how: AgeHow::Test, start: slot_page(0), end: slot_page(1) },
                PtOp::Invalidate { start: slot_page(0), end: slot_page(1) },
                PtOp::Walk { gfn: v(8), proof: Proof::Lockless },
            ],
        ),
        (
            "fault-and-invalidate",
            Scheme::Ipi,
            vec![
                PtOp::Fault { gfn: v(8), writable: true },
                PtOp::Fault { gfn: v(39), writable: false },
                PtOp::Fault { gfn: v(40), writable: false },
                PtOp::Invalidate { start: slot_page(0), end: slot_page(1) },
                PtOp::Walk { gfn: v(8), proof: Proof::Read },
                PtOp::Invalidate { start: v(0), end: v(u64::MAX) },
            ],
        ),
    ]
}

#[test]
fn page_table_seed_corpus_is_up_to_date() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/page_table");
    let bless = std::env::var_os("MMUSYNC_BLESS").is_some();
    for (name, scheme, ops) in seeds() {
        assert_eq!(decode_page_table(&encode_page_table(scheme, &ops)), (scheme, ops.clone()), "seed {name}");
        run_page_table(scheme, &ops);
        let path = dir.join(format!("seed-{name}"));
        let bytes = encode_page_table(scheme, &ops);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert_eq!(on_disk, bytes, "{} is stale: rerun with MMUSYNC_BLESS=1", path.display());
        }
    }
}
