//! The `api` fuzz target's seed corpus (`fuzz/corpus/api/`), written from readable operation
//! lists, and the byte encoding's round trip.
//!
//! `seed_corpus_is_up_to_date` fails when a committed seed no longer encodes its list; rerun it
//! with `MMUSYNC_BLESS=1` to rewrite the files.

mod common;

use mmusync::memslot::PAGE_SIZE;
use mmusync_api_model::{
    decode, encode, run, CacheKey, Counters, Lock, Op, Owner, Race, SlotKey, Val, VcpuKey, Whose,
};
use proptest::prelude::*;
use std::path::PathBuf;

const P: u64 = PAGE_SIZE;

fn v(x: u64) -> Val {
    Val(x)
}

/// `CreateSlot` with plain numbers.
fn create(id: u16, base: u64, npages: u64, hva: u64) -> Op {
    Op::CreateSlot { id: SlotKey(id), base_gfn: v(base), npages: v(npages), hva: v(hva) }
}

fn seeds() -> Vec<(&'static str, Vec<Op>)> {
    vec![
        (
            "zap-gfn-range-and-generation-cache",
            vec![
                create(0, 0x100, 4, 0x1_0000),
                Op::Snapshot { owner: Owner::Own },
                Op::ZapGfnRange { start: v(0x102), end: v(0x200) },
                Op::RetryGfn { lock: Lock::OwnRead, snap: 0, gfn: v(0x102) },
                Op::ZapGfnRange { start: v(0x500), end: v(0x600) },
                Op::ZapGfnRange { start: v(9), end: v(9) },
                Op::Open { start: v(0), end: v(0x1000) },
                Op::ZapGfnRange { start: v(0x100), end: v(0x101) },
                Op::Inspect { lock: Lock::OwnRead },
                Op::Close { guard: 0 },
                Op::SlotCacheLookup { gfn: v(0x101) },
                Op::SlotCacheGet { gfn: v(0x101) },
                Op::SlotCacheLookup { gfn: v(0x200) },
                create(1, 0x200, 1, 0x2_0000),
                Op::SlotCacheGet { gfn: v(0x200) },
                Op::SlotCacheLookup { gfn: v(0x200) },
                Op::SlotCacheFill { in_progress: true, gfn: v(0x200), hva: None },
                Op::SlotCacheGet { gfn: v(0x200) },
                Op::SlotCacheFill { in_progress: false, gfn: v(0x300), hva: Some(v(P)) },
                Op::SlotCacheGet { gfn: v(0x300) },
                Op::Age {
                    how: mmusync_api_model::page_table::AgeHow::ClearFlush,
                    start: v(0x1_0000),
                    end: v(0x1_2000),
                },
                Op::Age {
                    how: mmusync_api_model::page_table::AgeHow::Test,
                    start: v(0x2000),
                    end: v(0x1000),
                },
            ],
        ),
        (
            "nested-ranges",
            vec![
                Op::Begin { owner: Owner::Own, start: v(10), end: v(20) },
                Op::Begin { owner: Owner::Own, start: v(30), end: v(40) },
                Op::Inspect { lock: Lock::OwnRead },
                Op::End { owner: Owner::Own },
                Op::End { owner: Owner::Own },
                Op::End { owner: Owner::Own },
                Op::Begin { owner: Owner::Own, start: v(50), end: v(51) },
                Op::Inspect { lock: Lock::OwnWrite },
            ],
        ),
        (
            "bad-ranges",
            vec![
                Op::Begin { owner: Owner::Own, start: v(5), end: v(5) },
                Op::Begin { owner: Owner::Own, start: v(6), end: v(5) },
                Op::Begin { owner: Owner::Own, start: v(0), end: v(u64::MAX) },
                Op::AddRange { owner: Owner::Own, start: v(0), end: v(1) },
                Op::Begin { owner: Owner::Foreign, start: v(0), end: v(1) },
                Op::Inspect { lock: Lock::ForeignRead },
            ],
        ),
        (
            "snapshot-retry",
            vec![
                Op::Snapshot { owner: Owner::Own },
                Op::RetryGfn { lock: Lock::OwnRead, snap: 0, gfn: v(5) },
                Op::Open { start: v(4), end: v(6) },
                Op::RetryGfn { lock: Lock::OwnRead, snap: 0, gfn: v(5) },
                Op::RetryGfn { lock: Lock::OwnRead, snap: 0, gfn: v(6) },
                Op::RetryGfnUnsafe { snap: 0, gfn: v(4) },
                Op::Retry { lock: Lock::OwnWrite, snap: 0 },
                Op::Close { guard: 0 },
                Op::RetryLockless { snap: 0 },
                Op::Snapshot { owner: Owner::Foreign },
                Op::Retry { lock: Lock::OwnRead, snap: 1 },
                Op::Snapshot { owner: Owner::Own },
                Op::RetryGfn { lock: Lock::ForeignWrite, snap: 2, gfn: v(5) },
            ],
        ),
        (
            "notifier-over-slots",
            vec![
                create(0, 0x10, 4, 4 * P),
                create(1, 0x30, 4, 8 * P),
                Op::NotifierOpen { start: v(6 * P), end: v(10 * P) },
                Op::Inspect { lock: Lock::OwnRead },
                Op::DeleteSlot { id: SlotKey(0) },
                Op::NotifierClose { guard: 0 },
                Op::NotifierStart { start: v(0), end: v(P) },
                Op::NotifierEnd { start: v(0), end: v(P) },
                Op::NotifierEnd { start: v(4 * P), end: v(5 * P) },
                Op::ActiveEnd,
            ],
        ),
        (
            "memslot-swaps",
            vec![
                create(1, 0x100, 16, 16 * P),
                create(2, 0x108, 1, 0),
                create(1, 0x200, 1, 0),
                create(3, 0, 1, 7),
                create(4, 0, 0, 0),
                Op::MoveSlot { id: SlotKey(1), base_gfn: v(0x300) },
                Op::FindSlot { gfn: v(0x305) },
                Op::SrcuLock,
                Op::DeleteSlot { id: SlotKey(1) },
                Op::SrcuUnlock { section: 0 },
                Op::DeleteSlot { id: SlotKey(1) },
                Op::DeleteSlot { id: SlotKey(1) },
            ],
        ),
        (
            "guard-misuse",
            vec![
                Op::Open { start: v(1), end: v(2) },
                Op::OpenAddRange { guard: 0, start: v(7), end: v(9) },
                Op::End { owner: Owner::Own },
                Op::Close { guard: 0 },
                Op::Close { guard: 0 },
                Op::ActiveStart,
                Op::ActiveEnd,
                Op::ActiveEnd,
            ],
        ),
        (
            "cache-refresh-races",
            vec![
                create(0, 0x10, 4, 4 * P),
                Op::CacheRefresh { hva: None, attempts: 0, fail: false, race: Race::None },
                Op::CacheActivate { hva: v(5 * P) },
                Op::CacheRefresh { hva: None, attempts: 0, fail: false, race: Race::None },
                Op::CacheCheck { hva: v(5 * P) },
                Op::NotifierStart { start: v(5 * P), end: v(6 * P) },
                Op::CacheCheck { hva: v(5 * P) },
                Op::CacheRefresh { hva: None, attempts: 2, fail: false, race: Race::None },
                Op::NotifierEnd { start: v(5 * P), end: v(6 * P) },
                Op::CacheRefresh {
                    hva: None,
                    attempts: 0,
                    fail: false,
                    race: Race::StartEnd { start: v(4 * P), end: v(8 * P) },
                },
                Op::CacheRefresh {
                    hva: Some(v(9 * P)),
                    attempts: 3,
                    fail: false,
                    race: Race::StartEnd { start: v(9 * P), end: v(10 * P) },
                },
                Op::CacheRefresh { hva: Some(v(u64::MAX)), attempts: 1, fail: false, race: Race::None },
                Op::CacheRefresh { hva: Some(v(4 * P)), attempts: 1, fail: true, race: Race::None },
                Op::CacheDeactivate,
                Op::CacheCheck { hva: v(4 * P) },
            ],
        ),
        (
            "vm-caches",
            vec![
                create(0, 0x10, 4, 4 * P),
                Op::VmCacheRefresh { index: CacheKey(0), fail: false, race: Race::None },
                Op::VmCacheActivate { index: CacheKey(0), hva: v(5 * P) },
                Op::VmCacheActivate { index: CacheKey(1), hva: v(9 * P) },
                Op::VmCacheRefresh { index: CacheKey(0), fail: false, race: Race::None },
                Op::VmCacheRefresh { index: CacheKey(1), fail: false, race: Race::None },
                // The VM invalidates its listed cache itself: the MMU's hook only sees the range.
                Op::NotifierStart { start: v(5 * P), end: v(6 * P) },
                Op::VmCacheCheck { index: CacheKey(0), hva: v(5 * P) },
                Op::VmCacheRefresh { index: CacheKey(0), fail: false, race: Race::None },
                Op::NotifierEnd { start: v(5 * P), end: v(6 * P) },
                Op::VmCacheRefresh {
                    index: CacheKey(0),
                    fail: false,
                    race: Race::StartEnd { start: v(4 * P), end: v(8 * P) },
                },
                Op::VmCacheCheck { index: CacheKey(0), hva: v(5 * P) },
                Op::VmCacheCheck { index: CacheKey(1), hva: v(9 * P) },
                // Misuse: no such cache, activation around the VM, another VM's counters.
                Op::VmCacheActivate { index: CacheKey(2), hva: v(5 * P) },
                Op::VmCacheCheck { index: CacheKey(3), hva: v(5 * P) },
                Op::VmCacheActivateDirect { index: CacheKey(0), hva: v(5 * P) },
                Op::VmCacheRefreshWith {
                    index: CacheKey(1),
                    counters: Counters::OtherVm,
                    hva: None,
                    attempts: 1,
                    fail: false,
                    race: Race::None,
                },
                Op::VmCacheRefreshWith {
                    index: CacheKey(1),
                    counters: Counters::StandaloneActive,
                    hva: None,
                    attempts: 0,
                    fail: false,
                    race: Race::None,
                },
                Op::VmCacheRefreshWith {
                    index: CacheKey(1),
                    counters: Counters::Own,
                    hva: Some(v(10 * P)),
                    attempts: 2,
                    fail: false,
                    race: Race::StartEnd { start: v(10 * P), end: v(11 * P) },
                },
                // Deactivated directly: still listed, inactive; then through the VM.
                Op::VmCacheDeactivateDirect { index: CacheKey(1) },
                Op::VmCacheRefresh { index: CacheKey(1), fail: false, race: Race::None },
                Op::VmCacheActivate { index: CacheKey(1), hva: v(10 * P) },
                Op::VmCacheRefresh { index: CacheKey(1), fail: true, race: Race::None },
                Op::VmCacheDeactivate { index: CacheKey(0) },
                Op::NotifierStart { start: v(4 * P), end: v(12 * P) },
                Op::VmCacheCheck { index: CacheKey(0), hva: v(5 * P) },
                Op::VmCacheDeactivate { index: CacheKey(1) },
                Op::VmCacheDeactivate { index: CacheKey(2) },
            ],
        ),
        (
            "walk-guards",
            vec![
                Op::WalkBegin { vcpu: VcpuKey(0) },
                Op::VcpuLoad { vcpu: VcpuKey(0), cpu: Whose::Mine },
                Op::VcpuLoad { vcpu: VcpuKey(0), cpu: Whose::Other },
                Op::VcpuLoad { vcpu: VcpuKey(1), cpu: Whose::Other },
                Op::WalkBegin { vcpu: VcpuKey(1) },
                Op::WalkBegin { vcpu: VcpuKey(0) },
                Op::WalkBegin { vcpu: VcpuKey(0) },
                Op::EnterGuest { vcpu: VcpuKey(0) },
                Op::VcpuPut { vcpu: VcpuKey(0) },
                Op::FlushRemoteTlbs,
                Op::GuardExit,
                Op::EnterGuest { vcpu: VcpuKey(0) },
                Op::CheckRequest { vcpu: VcpuKey(0), bit: 0 },
                Op::EnterGuest { vcpu: VcpuKey(0) },
                Op::Kick { vcpu: VcpuKey(0) },
                Op::GuardExit,
                Op::GuardExit,
                Op::MakeRequest { vcpu: VcpuKey(1), bit: 64 },
                Op::VcpuPut { vcpu: VcpuKey(0) },
            ],
        ),
    ]
}

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/api")
}

#[test]
fn seeds_round_trip_and_pass() {
    for (name, ops) in seeds() {
        assert_eq!(decode(&encode(&ops)), ops, "seed {name}");
        run(&ops);
    }
}

#[test]
fn seed_corpus_is_up_to_date() {
    let bless = std::env::var_os("MMUSYNC_BLESS").is_some();
    for (name, ops) in seeds() {
        let path = corpus_dir().join(format!("seed-{name}"));
        let bytes = encode(&ops);
        if bless {
            std::fs::create_dir_all(corpus_dir()).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        } else {
            let on_disk = std::fs::read(&path).unwrap_or_default();
            assert_eq!(on_disk, bytes, "{} is stale: rerun with MMUSYNC_BLESS=1", path.display());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn encode_inverts_decode(ops in prop::collection::vec(common::op(&[]), 0..32)) {
        prop_assert_eq!(decode(&encode(&ops)), ops);
    }
}
