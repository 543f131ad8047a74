//! The VM's own translation caches (`Vm<_, _, C>`, K1-K2) through the oracle, with the values
//! that matter spelled out: an invalidation of a listed cache's page invalidates it although
//! the secondary MMU's cache hook does nothing for it, and every misuse gets its typed error.
//! Each step is also checked against the reference model, as in the state machine.

use mmusync::memslot::PAGE_SIZE;
use mmusync::{Error, Hva, Pfn};
use mmusync_api_model::{
    check, CacheKey, Counters, Effects, Harness, Model, Op, Outcome, Race, SlotKey, Val, Value, World,
};

const P: u64 = PAGE_SIZE;

/// Runs `ops` on a fresh world and model, checking each result and the observed state against
/// the model, and returns the results.
fn outcomes(ops: &[Op]) -> Vec<Outcome> {
    let world = World::new();
    let mut harness = Harness::new(&world);
    let mut model = Model::new();
    ops.iter()
        .enumerate()
        .map(|(i, op)| {
            let want = model.step(op);
            let got = harness.step(op);
            check(ops, i, "result", &want, &got);
            check(ops, i, "state", &model.observe(), &harness.observe());
            got
        })
        .collect()
}

fn refresh(index: u8) -> Op {
    Op::VmCacheRefresh { index: CacheKey(index), fail: false, race: Race::None }
}

#[test]
fn an_invalidation_reaches_a_listed_cache_without_the_mmu_hook() {
    let page = 5 * P;
    let out = outcomes(&[
        Op::CreateSlot { id: SlotKey(0), base_gfn: Val(0x10), npages: Val(4), hva: Val(4 * P) },
        Op::VmCacheActivate { index: CacheKey(0), hva: Val(page) },
        refresh(0),
        Op::VmCacheCheck { index: CacheKey(0), hva: Val(page) },
        Op::NotifierStart { start: Val(page), end: Val(page + P) },
        Op::VmCacheCheck { index: CacheKey(0), hva: Val(page) },
    ]);
    let before = Pfn(page / P);
    assert_eq!(out[2], Outcome::Ok(Value::Refresh { pfn: Some(before), race: Effects::default() }));
    assert_eq!(out[3], Outcome::Ok(Value::Pfn(Some(before))), "valid before the invalidation");
    let Outcome::Ok(Value::Mmu(effects)) = &out[4] else { panic!("start: {:?}", out[4]) };
    assert_eq!(
        effects.caches,
        [((Hva(page), Hva(page + P)), false)],
        "the secondary MMU's hook saw the range but invalidated nothing of its own"
    );
    assert_eq!(out[5], Outcome::Ok(Value::Pfn(None)), "the VM invalidated its listed cache itself");
}

#[test]
fn a_deactivated_cache_is_off_the_list_and_stays_invalid() {
    let page = 5 * P;
    let out = outcomes(&[
        Op::VmCacheActivate { index: CacheKey(1), hva: Val(page) },
        refresh(1),
        Op::VmCacheDeactivate { index: CacheKey(1) },
        Op::VmCacheCheck { index: CacheKey(1), hva: Val(page) },
        refresh(1),
        Op::NotifierStart { start: Val(page), end: Val(page + P) },
        Op::NotifierEnd { start: Val(page), end: Val(page + P) },
        Op::VmCacheActivate { index: CacheKey(1), hva: Val(page) },
        refresh(1),
    ]);
    assert_eq!(out[3], Outcome::Ok(Value::Pfn(None)));
    assert_eq!(out[4], Outcome::Err(Error::CacheInactive));
    // Reactivated at the same hva after an invalidation of its page: a fresh resolution.
    let after = Pfn(page / P + (1 << 40));
    assert_eq!(out[8], Outcome::Ok(Value::Refresh { pfn: Some(after), race: Effects::default() }));
}

#[test]
fn misuse_of_a_vms_cache_is_refused() {
    let page = 5 * P;
    let with = |counters| Op::VmCacheRefreshWith {
        index: CacheKey(0),
        counters,
        hva: None,
        attempts: 1,
        fail: false,
        race: Race::None,
    };
    let out = outcomes(&[
        Op::VmCacheActivate { index: CacheKey(2), hva: Val(page) },
        Op::VmCacheDeactivate { index: CacheKey(3) },
        refresh(2),
        Op::VmCacheCheck { index: CacheKey(3), hva: Val(page) },
        Op::VmCacheActivateDirect { index: CacheKey(0), hva: Val(page) },
        Op::VmCacheActivate { index: CacheKey(0), hva: Val(u64::MAX) },
        Op::VmCacheActivate { index: CacheKey(0), hva: Val(page) },
        with(Counters::OtherVm),
        with(Counters::OtherActive),
        with(Counters::StandaloneActive),
        with(Counters::StandaloneInvalidation),
        with(Counters::Own),
    ]);
    assert_eq!(out[0], Outcome::Err(Error::NoSuchCache { index: 2 }));
    assert_eq!(out[1], Outcome::Err(Error::NoSuchCache { index: 3 }));
    assert_eq!(out[2], Outcome::Err(Error::NoSuchCache { index: 2 }));
    assert_eq!(out[3], Outcome::Err(Error::NoSuchCache { index: 3 }));
    assert_eq!(out[4], Outcome::Err(Error::Foreign), "activation goes through the VM's list");
    assert_eq!(out[5], Outcome::Err(Error::RangeOverflow));
    for (i, o) in out.iter().enumerate().take(11).skip(7) {
        assert_eq!(*o, Outcome::Err(Error::Foreign), "step {i}: counters that are not the VM's own");
    }
    assert_eq!(out[11], Outcome::Ok(Value::Refresh { pfn: Some(Pfn(page / P)), race: Effects::default() }));
}
