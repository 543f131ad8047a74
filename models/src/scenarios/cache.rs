//! P2: the translation cache (`gfn_to_pfn_cache`) against invalidations, and against a consumer
//! while its hva changes. Two small scenarios rather than one with three roles: the three-role
//! version (refresher with two attempts, invalidator, consumer) took 215,000 executions and
//! five minutes at preemption bound 2, and each target needs only two of the roles.

use super::{page_hvas, setup, Host, Sptes};
use crate::exec::{violated, Executor, Invariant, Role};
use crate::ghost::Pfn;
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use core::num::NonZeroUsize;
use mmusync::lock::MmuWriteGuard;
use mmusync::memslot::{Memslot, SlotChange};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::pfncache::TranslationCache;
use mmusync::range::{GfnRange, HvaRange};

/// The SPTEs plus the translation cache that S2 invalidates.
struct CacheMmu<H: ScenarioHal, X: Executor> {
    sptes: Sptes<H, X, 1>,
    cache: TranslationCache<H>,
    exec: X,
}

impl<H: ScenarioHal, X: Executor> SecondaryMmu<H> for CacheMmu<H, X> {
    fn unmap_gfn_range(&self, guard: &MmuWriteGuard<'_, H>, slot: &Memslot, gfns: GfnRange) -> bool {
        self.sptes.unmap_gfn_range(guard, slot, gfns)
    }

    fn flush_remote_tlbs(&self) {
        self.sptes.flush_remote_tlbs()
    }

    fn invalidate_caches(&self, hvas: HvaRange) {
        let hit = self.cache.invalidate_start(hvas);
        self.exec.step(format_args!("S2: invalidate translation cache over {:#x} -> {hit}", hvas.start()));
    }
}

/// Checks one observation of the cache: a valid entry for host page 0 must map a page that is
/// not freed and that the primary MMU mapped there (pfn 1 before the invalidation, 2 after).
fn check_entry<X: Executor>(x: &X, pfn: Pfn, freed: bool, who: &str) {
    x.step(format_args!("{who}: cache valid for hva {:#x} -> pfn {pfn}", page_hvas(0).start()));
    if freed || !(pfn == 1 || pfn == 2) {
        violated(
            Invariant::CacheStale,
            format_args!(
                "{who} found the cache valid for hva {:#x} with pfn {pfn} (freed: {freed})",
                page_hvas(0).start()
            ),
        );
    }
}

/// §9.2 #6, §3.4 (the seq/count half): one refresh attempt (`try_refresh`, R1-R4h) of a cache
/// that is active on host page 0 but not valid, while an invalidation of page 0 runs (S1 count,
/// S2 cache invalidation, S3 memslot hit: `begin`; the primary MMU remaps pfn 1 -> 2 and frees
/// pfn 1; E1 `seq++`, E2 count). The final check: a valid cache maps pfn 2, or pfn 1 only if
/// pfn 1 was never freed. A refresh that raced loses its one attempt and leaves the cache
/// invalid, which is fine.
///
/// Kills `CacheChecksActiveCount` (validation between S2 and E1), `CacheCountBeforeSeq` (the
/// count read after E2, the `seq` read from before E1) and `CacheSnapshotBeforeResolve` (the
/// snapshot reads the new `seq`, the resolution the old host PTE). Their writer-side partners
/// cannot fail here: `InvalidateEndZapBeforeSeq` is covered on this path by E1's
/// `srcu_read_lock` barrier (a full fence between the primary MMU's PTE change and `seq++`;
/// `mp2-snapshot-placement` kills it without the memslot layer), and
/// `InvalidateEndSeqBeforeActiveCount` by the release fences that follow `seq++`
/// (`InvalidateEndSeqBeforeCount`, `SrcuReadUnlockMb`); the scorecard checks the latter claim by
/// dropping all three here.
pub fn cache_refresh_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal, X: Executor> {
        vm: Vm<H, 1>,
        host: Host<H, 1, 2>,
        mmu: CacheMmu<H, X>,
    }
    let w = Arc::new(World {
        vm: Vm::new(hal.clone()),
        host: Host::new([1]),
        mmu: CacheMmu {
            sptes: Sptes::new(x.clone()),
            cache: TranslationCache::new(hal.clone()),
            exec: x.clone(),
        },
    });
    setup(w.vm.set_memslot(&w.mmu, SlotChange::Create(setup(Memslot::new(0, 0, 1, page_hvas(0).start())))));
    setup(w.mmu.cache.activate(page_hvas(0).start()));

    let (wr, xr) = (w.clone(), x.clone());
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("refresher", move || {
            xr.step(format_args!("refresh cache (hva {:#x}), one attempt", page_hvas(0).start()));
            let got = setup(wr.mmu.cache.try_refresh(
                None,
                NonZeroUsize::MIN,
                wr.vm.invalidation(),
                wr.vm.active_invalidations(),
                |hva| Ok(wr.host.gup_fast(&xr, hva)),
            ));
            xr.step(format_args!("refresh -> {got:?}"));
        }),
        Role::new("invalidator", move || {
            let hvas = page_hvas(0);
            xi.step(format_args!("invalidate_range_start({:#x})", hvas.start()));
            setup(wi.vm.start(&wi.mmu, hvas));
            wi.host.remap_and_free(&xi, 0, 2);
            xi.step(format_args!("invalidate_range_end"));
            setup(wi.vm.end(hvas));
        }),
    ]);
    let last = w.mmu.cache.check(page_hvas(0).start()).map(|entry| entry.pfn());
    if let Some(pfn) = last {
        check_entry(x, pfn, w.host.pages.is_freed(pfn), "final check");
    }
}

/// §3.4 R3-R4a (the hva-change half): a refresher moves a valid cache from host page 1
/// (pfn 3) to host page 0 (pfn 1), one attempt, while a consumer checks the cache for page 0
/// and uses what it finds. No invalidation runs, so a valid entry for page 0 must map pfn 1:
/// seeing pfn 3 means a consumer paired the new hva with the old pfn.
///
/// Kills `CacheInvalidatesBeforeResolve` (the cache stays valid while the refresher resolves
/// the new hva outside the lock).
pub fn cache_hva_change_vs_consumer<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        vm: Vm<H, 1>,
        host: Host<H, 2, 3>,
        cache: TranslationCache<H>,
    }
    let w = Arc::new(World {
        vm: Vm::new(hal.clone()),
        host: Host::new([1, 3]),
        cache: TranslationCache::new(hal.clone()),
    });
    setup(w.cache.activate(page_hvas(1).start()));
    setup(
        w.cache.refresh(w.vm.invalidation(), w.vm.active_invalidations(), |hva| Ok(w.host.gup_fast(x, hva))),
    );

    let (wr, xr) = (w.clone(), x.clone());
    let (wc, xc) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("refresher", move || {
            let hva = page_hvas(0).start();
            xr.step(format_args!("refresh cache: hva {:#x} -> {hva:#x}, one attempt", page_hvas(1).start()));
            let got = setup(wr.cache.try_refresh(
                Some(hva),
                NonZeroUsize::MIN,
                wr.vm.invalidation(),
                wr.vm.active_invalidations(),
                |hva| Ok(wr.host.gup_fast(&xr, hva)),
            ));
            xr.step(format_args!("refresh -> {got:?}"));
        }),
        Role::new("consumer", move || {
            if let Some(entry) = wc.cache.check(page_hvas(0).start()) {
                let pfn = entry.pfn();
                check_entry(&xc, pfn, wc.host.pages.is_freed(pfn), "consumer");
            } else {
                xc.step(format_args!("consumer: cache not valid for hva {:#x}", page_hvas(0).start()));
            }
        }),
    ]);
    let last = w.cache.check(page_hvas(0).start()).map(|entry| entry.pfn());
    if let Some(pfn) = last {
        check_entry(x, pfn, w.host.pages.is_freed(pfn), "final check");
    }
}
