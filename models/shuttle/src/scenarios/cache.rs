//! P2's translation caches (`gfn_to_pfn_cache`) activated, refreshed, moved and deactivated
//! while consumers use them and invalidations run.

use super::world::{check_balanced, end_invalidation, hva, hvas, ok, Host};
use crate::exec::{ScopedRole, ShuttleExec};
use crate::hal::{ShuttleAtomicBool, ShuttleHal};
use mmusync::hal::{Atomic, Ordering::Relaxed};
use mmusync::lock::{MmuWriteGuard, SpinLock};
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::pfncache::TranslationCache;
use mmusync::range::{Gfn, GfnRange, HvaRange, Pfn};
use mmusync::Error;
use mmusync_models::{violated, Executor, Invariant};
use shuttle::rand::{thread_rng, Rng};

/// A cache and whether it is on the VM's `gpc_list` (reachable by invalidations).
struct Gpc {
    cache: TranslationCache<ShuttleHal>,
    listed: ShuttleAtomicBool,
    /// The host pages it is pointed at, in turn.
    pages: [u64; 2],
}

/// The secondary MMU of these scenarios: no SPTEs, only the caches (S2 walks `gpc_list` under
/// `gpc_lock`, as `gfn_to_pfn_cache_invalidate_start` does).
struct Caches {
    gpcs: [Gpc; 2],
    gpc_lock: SpinLock<ShuttleHal, ()>,
    x: ShuttleExec,
}

impl SecondaryMmu<ShuttleHal> for Caches {
    fn unmap_gfn_range(
        &self,
        _guard: &MmuWriteGuard<'_, ShuttleHal>,
        _slot: &Memslot,
        _gfns: GfnRange,
    ) -> bool {
        false
    }

    fn flush_remote_tlbs(&self) {}

    fn invalidate_caches(&self, hvas: HvaRange) {
        let _list = self.gpc_lock.lock();
        for (i, gpc) in self.gpcs.iter().enumerate() {
            if gpc.listed.load(Relaxed) && gpc.cache.invalidate_start(hvas) {
                self.x.step(format_args!("S2: invalidated cache {i}"));
            }
        }
    }
}

/// The check a consumer (or the final check) makes on a valid cache of host page `page`: while
/// the read guard is held no invalidation can get past S2 for it, so the pfn is the one the
/// primary MMU maps there now, and it is not freed.
fn check_valid<const N: usize>(x: &ShuttleExec, host: &Host<N>, gpc: usize, page: u64, pfn: Pfn, who: &str) {
    let now = host.pfn(page);
    x.step(format_args!("{who}: cache {gpc} valid for host page {page} -> pfn {pfn} (primary MMU: {now})"));
    if pfn != now || host.pages.is_freed(pfn) {
        violated(
            Invariant::CacheStale,
            format_args!(
                "{who}: cache {gpc} valid for host page {page} with pfn {pfn}, but the primary MMU maps pfn \
                 {now} there (pfn {pfn} freed: {})",
                host.pages.is_freed(pfn)
            ),
        );
    }
}

/// One of the two cache scenarios; `slot_pages`: host pages `0..slot_pages` are in a memslot.
fn caches_vs_invalidations(hal: &ShuttleHal, x: &ShuttleExec, slot_pages: u64, cache_pages: [[u64; 2]; 2]) {
    const PAGES: usize = 8;
    let vm: Vm<ShuttleHal, 1> = Vm::new(hal.clone());
    let host: Host<PAGES> = Host::new();
    let gpc = |pages| Gpc {
        cache: TranslationCache::new(hal.clone()),
        listed: ShuttleAtomicBool::new(false),
        pages,
    };
    let caches = Caches {
        gpcs: [gpc(cache_pages[0]), gpc(cache_pages[1])],
        gpc_lock: SpinLock::<ShuttleHal, ()>::new(()),
        x: x.clone(),
    };
    let slot = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: slot_pages, hva: hva(0) });
    ok(vm.set_memslot(&caches, SlotChange::Create(ok(slot))));

    let (vm, host, caches) = (&vm, &host, &caches);
    let mut roles = Vec::new();
    for (i, gpc) in caches.gpcs.iter().enumerate() {
        roles.push(ScopedRole::new("cache-owner", move || {
            let resolve = |h| host.resolve(x, h).ok_or(Error::Unmapped { hva: h });
            let (inv, active) = (vm.invalidation(), vm.active_invalidations());
            for _round in 0..2 {
                // list_add before activating: a refresh must not set up a mapping that
                // invalidations cannot find.
                {
                    let _list = caches.gpc_lock.lock();
                    gpc.listed.store(true, Relaxed);
                }
                x.step(format_args!("cache {i}: kvm_gpc_activate(host page {})", gpc.pages[0]));
                ok(gpc.cache.activate(hva(gpc.pages[0])));
                let pfn = ok(gpc.cache.refresh(inv, active, resolve));
                x.step(format_args!("cache {i}: refreshed -> pfn {pfn}"));
                x.step(format_args!("cache {i}: kvm_gpc_refresh to host page {}", gpc.pages[1]));
                let pfn = ok(gpc.cache.refresh_hva(hva(gpc.pages[1]), inv, active, resolve));
                x.step(format_args!("cache {i}: refreshed -> pfn {pfn}"));
                gpc.cache.deactivate();
                x.step(format_args!("cache {i}: kvm_gpc_deactivate"));
                // list_del only after deactivating.
                let _list = caches.gpc_lock.lock();
                gpc.listed.store(false, Relaxed);
            }
        }));
    }
    for _ in 0..2 {
        roles.push(ScopedRole::new("consumer", move || {
            for _ in 0..4 {
                for (i, gpc) in caches.gpcs.iter().enumerate() {
                    for page in gpc.pages {
                        if let Some(entry) = gpc.cache.check(hva(page)) {
                            check_valid(x, host, i, page, entry.pfn(), "consumer");
                        }
                    }
                }
                shuttle::thread::yield_now();
            }
        }));
    }
    for _ in 0..2 {
        roles.push(ScopedRole::new("invalidator", move || {
            for _ in 0..2 {
                let len = thread_rng().gen_range(1..=3u64);
                let first = thread_rng().gen_range(0..=PAGES as u64 - len);
                let range = hvas(first, len);
                x.step(format_args!("invalidate_range_start(host pages {first}..{})", first + len));
                ok(vm.start(caches, range));
                host.remap_and_free(x, first..first + len);
                end_invalidation(x, vm, range);
            }
        }));
    }
    x.run_scoped(roles);
    for (i, gpc) in caches.gpcs.iter().enumerate() {
        for page in gpc.pages {
            if let Some(entry) = gpc.cache.check(hva(page)) {
                check_valid(x, host, i, page, entry.pfn(), "final check");
            }
        }
    }
    check_balanced(vm);
}

/// P2's cache at scale: two translation caches, each activated on a host page, refreshed, moved
/// to another page while valid (`refresh_hva`), deactivated, twice; two consumers use them
/// (`kvm_gpc_check` + the pfn, under the read lock); two invalidators remap and free random
/// host pages under them. All cached pages lie in a memslot. Caches join the notifier's list
/// before activation and leave it after deactivation.
///
/// Invariant I2.gpc: a cache that `check` finds valid maps the pfn the primary MMU maps at its
/// hva now, and that pfn is not freed.
pub fn cache_churn(hal: &ShuttleHal, x: &ShuttleExec) {
    caches_vs_invalidations(hal, x, 8, [[0, 1], [2, 3]]);
}

/// The open issue of R4g (core/docs/protocols.md), as a scenario: the same roles, but the caches'
/// host pages (4–7) lie outside every memslot (the slot covers pages 0–3). An invalidation of
/// such a page bumps neither `seq` nor, once it has ended, the active count, so a refresh whose
/// resolution window contains a whole invalidation validates the stale pfn. KVM's algorithm as
/// the crate implements it fails I2.gpc here; shuttle finds the schedule.
pub fn cache_outside_memslots(hal: &ShuttleHal, x: &ShuttleExec) {
    caches_vs_invalidations(hal, x, 4, [[4, 5], [6, 7]]);
}
