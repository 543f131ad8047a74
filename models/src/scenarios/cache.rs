//! P2: the translation cache (`gfn_to_pfn_cache`) against invalidations, against a consumer
//! while its hva changes, and a VM's cache list (K1-K2) against an invalidation. The first two
//! are small scenarios rather than one with three roles: the three-role version (refresher with
//! two attempts, invalidator, consumer) took 215,000 executions and five minutes at preemption
//! bound 2, and each target needs only two of the roles.

use super::{page_hvas, page_slot, setup, Host, Sptes};
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
use mmusync::Error;

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
    if freed || !(pfn == Pfn(1) || pfn == Pfn(2)) {
        violated(
            Invariant::CacheStale,
            format_args!(
                "{who} found the cache valid for hva {:#x} with pfn {pfn} (freed: {freed})",
                page_hvas(0).start()
            ),
        );
    }
}

/// The refresh scenarios' world: one memslot on host page 0 (pfn 1), the cache active on page 0
/// but not valid.
struct RefreshWorld<H: ScenarioHal, X: Executor> {
    vm: Vm<H, 1>,
    host: Host<H, 1, 2>,
    mmu: CacheMmu<H, X>,
}

impl<H: ScenarioHal, X: Executor> RefreshWorld<H, X> {
    fn new(hal: &H, x: &X) -> Arc<Self> {
        let w = Arc::new(RefreshWorld {
            vm: Vm::new(hal.clone()),
            host: Host::new([Pfn(1)]),
            mmu: CacheMmu {
                sptes: Sptes::new(x.clone()),
                cache: TranslationCache::new(hal.clone()),
                exec: x.clone(),
            },
        });
        setup(w.vm.set_memslot(&w.mmu, SlotChange::Create(page_slot(0))));
        setup(w.mmu.cache.activate(page_hvas(0).start()));
        w
    }

    /// One refresh attempt (`try_refresh`, R1-R4h).
    fn refresher(w: &Arc<Self>, x: &X) -> Role {
        let (w, x) = (w.clone(), x.clone());
        Role::new("refresher", move || {
            x.step(format_args!("refresh cache (hva {:#x}), one attempt", page_hvas(0).start()));
            let got = setup(w.mmu.cache.try_refresh(
                None,
                NonZeroUsize::MIN,
                w.vm.invalidation(),
                w.vm.active_invalidations(),
                |hva| Ok(w.host.gup_fast(&x, hva)),
            ));
            x.step(format_args!("refresh -> {got:?}"));
        })
    }

    /// An MMU-notifier invalidation of host page `page`; when `remap`, the primary MMU remaps
    /// page 0 from pfn 1 to 2 and frees pfn 1 between start and end.
    fn invalidate(&self, x: &X, who: &str, page: u64, remap: bool) {
        let hvas = page_hvas(page);
        x.step(format_args!("{who}invalidate_range_start({:#x})", hvas.start()));
        setup(self.vm.start(&self.mmu, hvas));
        if remap {
            self.host.remap_and_free(x, 0, Pfn(2));
        }
        x.step(format_args!("{who}invalidate_range_end"));
        setup(self.vm.end(hvas));
    }

    /// A valid cache maps pfn 2, or pfn 1 only if pfn 1 was never freed.
    fn final_check(&self, x: &X) {
        let last = self.mmu.cache.check(page_hvas(0).start()).map(|entry| entry.pfn());
        if let Some(pfn) = last {
            check_entry(x, pfn, self.host.pages.is_freed(pfn), "final check");
        }
    }
}

/// P2's translation cache (the seq/count half): one refresh attempt (`try_refresh`, R1-R4h) of a cache
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
/// `InvalidateEndSeqBeforeActiveCount` by the release fences that follow `seq++` in the same
/// invalidation (`InvalidateEndSeqBeforeCount`, `SrcuReadUnlockMb`): with one invalidator, the
/// refresher always reads the count from the invalidator that bumped `seq`.
/// `cache_refresh_vs_two_invalidations` is the shape where it matters.
pub fn cache_refresh_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = RefreshWorld::new(hal, x);
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        RefreshWorld::refresher(&w, x),
        Role::new("invalidator", move || wi.invalidate(&xi, "", 0, true)),
    ]);
    w.final_check(x);
}

/// R3-R4a (the hva-change half): a refresher moves a valid cache from host page 1
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
        host: Host::new([Pfn(1), Pfn(3)]),
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

/// The active count's release sequence (E2 under C11): one refresh attempt of a cache active on
/// host page 0 but not valid, while two invalidations overlap in time. Invalidation A hits the
/// memslot (S1, S2, `begin`; the primary MMU remaps page 0 from pfn 1 to 2 and frees pfn 1;
/// E1 `seq++`; E2). Invalidation B hits no memslot (host page 4): it takes no `mmu_lock` and
/// bumps no `seq`, only the active count. When B's E2 is the one that takes the count to zero
/// after A's, the refresher that reads that zero must also see A's `seq++`, or it validates the
/// pfn it resolved before A's remap.
///
/// What carries A's `seq++` to the refresher is B's E2: B takes `mn_invalidate_lock` after A
/// released it, and its release ([`InvalidateEndSeqBeforeActiveCount`]) must come *after* that
/// acquisition. A release fence issued before taking the lock, or A's own release fences, do
/// not reach a refresher that reads B's relaxed store, which ends A's release sequence.
///
/// loom runs this scenario with plain atomic stores ([`Scenario::plain_stores`]): the loom
/// HAL's default store-as-swap would continue A's release sequence and hide the bug.
///
/// [`InvalidateEndSeqBeforeActiveCount`]: mmusync::Barrier::InvalidateEndSeqBeforeActiveCount
/// [`Scenario::plain_stores`]: crate::scenario::Scenario::plain_stores
pub fn cache_refresh_vs_two_invalidations<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = RefreshWorld::new(hal, x);
    let (wa, xa) = (w.clone(), x.clone());
    let (wb, xb) = (w.clone(), x.clone());
    x.run(vec![
        RefreshWorld::refresher(&w, x),
        Role::new("invalidator-a", move || wa.invalidate(&xa, "A: ", 0, true)),
        Role::new("invalidator-b", move || wb.invalidate(&xb, "B: ", 4, false)),
    ]);
    w.final_check(x);
}

/// The cache-list scenarios' world: a VM with one memslot on host page 0 (pfn 1) and one
/// translation cache of its own, and a secondary MMU whose cache hook does nothing, so that
/// only the VM's cache list can make an invalidation reach the cache.
struct ListWorld<H: ScenarioHal, X: Executor> {
    vm: Vm<H, 1, 1>,
    host: Host<H, 1, 2>,
    sptes: Sptes<H, X, 1>,
}

impl<H: ScenarioHal, X: Executor> ListWorld<H, X> {
    fn new(hal: &H, x: &X) -> Arc<Self> {
        let w = Arc::new(ListWorld {
            vm: Vm::new(hal.clone()),
            host: Host::new([Pfn(1)]),
            sptes: Sptes::new(x.clone()),
        });
        setup(w.vm.set_memslot(&w.sptes, SlotChange::Create(page_slot(0))));
        w
    }

    /// `Vm::refresh_cache(0)` (R1-R5) through GUP-fast; an inactive cache is refused.
    fn refresh(&self, x: &X) {
        match self.vm.refresh_cache(0, |hva| Ok(self.host.gup_fast(x, hva))) {
            Ok(pfn) => x.step(format_args!("refresh_cache(0) -> pfn {pfn}")),
            Err(Error::CacheInactive) => x.step(format_args!("refresh_cache(0) -> cache inactive")),
            Err(e) => panic!("scenario setup failed: refresh_cache: {e}"),
        }
    }

    /// A munmap of host page 0 on this CPU: `invalidate_range_start` (S1; S2, where the VM
    /// invalidates its listed caches; S3 memslot hit: `begin`, zap), the primary MMU remaps
    /// page 0 from pfn 1 to 2 and frees pfn 1, and the guard's drop ends the invalidation
    /// (E1, E2). Then a consumer on this CPU checks the cache for page 0 (`kvm_gpc_check`) and
    /// uses the pfn it finds: pfn 1 is freed by now, and no refresh resolves pfn 2.
    fn munmap_then_check(&self, x: &X) {
        let page = page_hvas(0);
        x.step(format_args!("munmap: invalidate_range_start({:#x})", page.start()));
        let open = setup(self.vm.invalidate_range_start(&self.sptes, page));
        self.host.remap_and_free(x, 0, Pfn(2));
        x.step(format_args!("munmap: invalidate_range_end"));
        drop(open);
        self.check(x, "consumer");
    }

    /// One observation of cache 0 for page 0, and the use of its pfn.
    fn check(&self, x: &X, who: &str) {
        if let Some(entry) = setup(self.vm.translation_cache(0)).check(page_hvas(0).start()) {
            let pfn = entry.pfn();
            check_entry(x, pfn, self.host.pages.is_freed(pfn), who);
        } else {
            x.step(format_args!("{who}: cache not valid for hva {:#x}", page_hvas(0).start()));
        }
    }
}

/// K2 (the VM's cache list, KVM's `gpc_list`): a VM deactivates its own valid cache while the
/// primary MMU invalidates the cache's page and a consumer then checks it.
///
/// * setup: `Vm::activate_cache(0, page 0)` and `Vm::refresh_cache(0)`: the cache is listed,
///   active and valid, pfn 1.
/// * cache-owner (CPU 0): `Vm::deactivate_cache(0)`: mark the cache inactive and invalid, then
///   take it off the VM's list.
/// * vcpu (CPU 1): a munmap of host page 0 on this CPU (start: the VM invalidates its listed
///   caches at S2; the primary MMU remaps pfn 1 -> 2 and frees pfn 1; end), then
///   `translation_cache(0).check` and use of the pfn found.
///
/// The invalidation finds the cache on the list (and invalidates it), or the deactivation has
/// already made it invalid; either way the check finds no pfn 1 after the free.
///
/// Kills [`Rule::CacheListedWhileActive`]: with the cache taken off the list before it is
/// marked inactive, the invalidation walks the list without the still-valid cache, and the
/// vCPU's check finds pfn 1 after the free, before the deactivation.
///
/// [`Rule::CacheListedWhileActive`]: mmusync::Rule::CacheListedWhileActive
pub fn cache_deactivate_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = ListWorld::new(hal, x);
    setup(w.vm.activate_cache(0, page_hvas(0).start()));
    w.refresh(x);
    let (wo, xo) = (w.clone(), x.clone());
    let (wv, xv) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("cache-owner", move || {
            xo.step(format_args!("K2: deactivate_cache(0)"));
            setup(wo.vm.deactivate_cache(0));
            xo.step(format_args!("K2: deactivate_cache returned: cache 0 inactive and unlisted"));
        }),
        Role::new("vcpu", move || wv.munmap_then_check(&xv)),
    ]);
}
