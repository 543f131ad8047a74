//! Proptest strategies for [`Op`], shared by the test files.

use mmusync::memslot::PAGE_SIZE;
use mmusync_api_model::{
    CacheKey, Counters, Lock, Op, Owner, Race, SlotKey, Val, VcpuKey, Whose, BOUNDARIES,
};
use proptest::prelude::*;
use proptest::sample::select;

/// A raw operand: small, page-multiple, boundary, any, or (if the state offers any) an edge of
/// the current state (`Model::interesting`).
fn val(edges: &[u64]) -> BoxedStrategy<Val> {
    let base = prop_oneof![
        4 => 0..64u64,
        3 => (0..64u64).prop_map(|k| k * PAGE_SIZE),
        1 => select(&BOUNDARIES[..]),
        1 => any::<u64>(),
    ];
    if edges.is_empty() {
        base.prop_map(Val).boxed()
    } else {
        prop_oneof![3 => base, 2 => select(edges.to_vec())].prop_map(Val).boxed()
    }
}

fn owner() -> impl Strategy<Value = Owner> {
    prop_oneof![5 => Just(Owner::Own), 1 => Just(Owner::Foreign)]
}

fn lock() -> impl Strategy<Value = Lock> {
    prop_oneof![
        3 => Just(Lock::OwnWrite),
        3 => Just(Lock::OwnRead),
        1 => Just(Lock::ForeignWrite),
        1 => Just(Lock::ForeignRead),
    ]
}

fn slot_key() -> impl Strategy<Value = SlotKey> {
    (0..6u16).prop_map(SlotKey)
}

fn vcpu() -> impl Strategy<Value = VcpuKey> {
    (0..2u8).prop_map(VcpuKey)
}

/// One of the VM's caches: mostly a real one, sometimes an index with no cache.
fn cache_key() -> impl Strategy<Value = CacheKey> {
    prop_oneof![6 => (0..2u8).prop_map(CacheKey), 1 => (2..4u8).prop_map(CacheKey)]
}

fn counters() -> impl Strategy<Value = Counters> {
    prop_oneof![
        4 => Just(Counters::Own),
        1 => Just(Counters::OtherVm),
        1 => Just(Counters::OtherActive),
        1 => Just(Counters::StandaloneActive),
        1 => Just(Counters::StandaloneInvalidation),
    ]
}

fn whose() -> impl Strategy<Value = Whose> {
    prop_oneof![4 => Just(Whose::Mine), 1 => Just(Whose::Other)]
}

/// A request bit: mostly valid ones, sometimes out of range.
fn bit() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 0..4u8, 1 => any::<u8>()]
}

fn race(edges: &[u64]) -> impl Strategy<Value = Race> {
    prop_oneof![
        2 => Just(Race::None),
        1 => (val(edges), val(edges)).prop_map(|(start, end)| Race::Start { start, end }),
        2 => (val(edges), val(edges)).prop_map(|(start, end)| Race::StartEnd { start, end }),
    ]
}

/// The ops the state offers, weighted toward the ones that change state.
pub fn op(edges: &[u64]) -> impl Strategy<Value = Op> {
    let val = || val(edges);
    prop_oneof![
        3 => (owner(), val(), val()).prop_map(|(owner, start, end)| Op::Begin { owner, start, end }),
        2 => (owner(), val(), val()).prop_map(|(owner, start, end)| Op::AddRange { owner, start, end }),
        3 => owner().prop_map(|owner| Op::End { owner }),
        2 => lock().prop_map(|lock| Op::Inspect { lock }),
        2 => (val(), val()).prop_map(|(start, end)| Op::Open { start, end }),
        1 => (any::<u8>(), val(), val()).prop_map(|(guard, start, end)| Op::OpenAddRange { guard, start, end }),
        2 => any::<u8>().prop_map(|guard| Op::Close { guard }),
        3 => owner().prop_map(|owner| Op::Snapshot { owner }),
        2 => (lock(), any::<u8>()).prop_map(|(lock, snap)| Op::Retry { lock, snap }),
        3 => (lock(), any::<u8>(), val()).prop_map(|(lock, snap, gfn)| Op::RetryGfn { lock, snap, gfn }),
        2 => (any::<u8>(), val()).prop_map(|(snap, gfn)| Op::RetryGfnUnsafe { snap, gfn }),
        1 => any::<u8>().prop_map(|snap| Op::RetryLockless { snap }),
        1 => Just(Op::ActiveStart),
        1 => Just(Op::ActiveEnd),
        2 => (val(), val()).prop_map(|(start, end)| Op::NotifierStart { start, end }),
        2 => (val(), val()).prop_map(|(start, end)| Op::NotifierEnd { start, end }),
        2 => (val(), val()).prop_map(|(start, end)| Op::NotifierOpen { start, end }),
        2 => any::<u8>().prop_map(|guard| Op::NotifierClose { guard }),
        4 => (slot_key(), val(), val(), val())
            .prop_map(|(id, base_gfn, npages, hva)| Op::CreateSlot { id, base_gfn, npages, hva }),
        1 => slot_key().prop_map(|id| Op::DeleteSlot { id }),
        1 => (slot_key(), val()).prop_map(|(id, base_gfn)| Op::MoveSlot { id, base_gfn }),
        1 => val().prop_map(|gfn| Op::FindSlot { gfn }),
        1 => Just(Op::SrcuLock),
        1 => any::<u8>().prop_map(|section| Op::SrcuUnlock { section }),
        2 => val().prop_map(|hva| Op::CacheActivate { hva }),
        1 => Just(Op::CacheDeactivate),
        1 => val().prop_map(|hva| Op::CacheCheck { hva }),
        3 => (proptest::option::of(val()), 0..4u8, proptest::bool::weighted(0.1), race(edges))
            .prop_map(|(hva, attempts, fail, race)| Op::CacheRefresh { hva, attempts, fail, race }),
        2 => (vcpu(), whose()).prop_map(|(vcpu, cpu)| Op::VcpuLoad { vcpu, cpu }),
        1 => vcpu().prop_map(|vcpu| Op::VcpuPut { vcpu }),
        2 => vcpu().prop_map(|vcpu| Op::WalkBegin { vcpu }),
        2 => vcpu().prop_map(|vcpu| Op::EnterGuest { vcpu }),
        2 => Just(Op::GuardExit),
        1 => (vcpu(), bit()).prop_map(|(vcpu, bit)| Op::MakeRequest { vcpu, bit }),
        2 => (vcpu(), bit()).prop_map(|(vcpu, bit)| Op::CheckRequest { vcpu, bit }),
        1 => vcpu().prop_map(|vcpu| Op::Kick { vcpu }),
        1 => Just(Op::FlushRemoteTlbs),
        2 => (val(), val()).prop_map(|(start, end)| Op::ZapGfnRange { start, end }),
        2 => val().prop_map(|gfn| Op::SlotCacheLookup { gfn }),
        1 => (proptest::bool::weighted(0.3), val(), proptest::option::of(val()))
            .prop_map(|(in_progress, gfn, hva)| Op::SlotCacheFill { in_progress, gfn, hva }),
        1 => val().prop_map(|gfn| Op::SlotCacheGet { gfn }),
        1 => (
            prop_oneof![
                Just(mmusync_api_model::page_table::AgeHow::ClearFlush),
                Just(mmusync_api_model::page_table::AgeHow::Clear),
                Just(mmusync_api_model::page_table::AgeHow::Test)
            ],
            val(),
            val()
        )
            .prop_map(|(how, start, end)| Op::Age { how, start, end }),
        2 => (cache_key(), val()).prop_map(|(index, hva)| Op::VmCacheActivate { index, hva }),
        1 => cache_key().prop_map(|index| Op::VmCacheDeactivate { index }),
        2 => (cache_key(), proptest::bool::weighted(0.1), race(edges))
            .prop_map(|(index, fail, race)| Op::VmCacheRefresh { index, fail, race }),
        1 => (cache_key(), val()).prop_map(|(index, hva)| Op::VmCacheCheck { index, hva }),
        1 => (cache_key(), val()).prop_map(|(index, hva)| Op::VmCacheActivateDirect { index, hva }),
        1 => cache_key().prop_map(|index| Op::VmCacheDeactivateDirect { index }),
        2 => (
            cache_key(),
            counters(),
            proptest::option::of(val()),
            0..4u8,
            proptest::bool::weighted(0.1),
            race(edges)
        )
            .prop_map(|(index, counters, hva, attempts, fail, race)| Op::VmCacheRefreshWith {
                index,
                counters,
                hva,
                attempts,
                fail,
                race
            }),
    ]
}
