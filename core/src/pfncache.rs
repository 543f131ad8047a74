//! P2: the translation cache (KVM's `gfn_to_pfn_cache`, in its HVA-based form).
//!
//! A [`TranslationCache`] remembers one host-virtual page and the pfn the primary MMU maps it
//! to, so that the host can use guest memory (a steal-time page, a Xen shared-info page)
//! without walking the primary MMU each time. It does not pin the page: it stays correct only
//! because every MMU-notifier invalidation clears its `valid` flag ([`invalidate_start`],
//! step S2 of P1) before the primary MMU may free the page, and because a refresh that raced
//! with an invalidation retries.
//!
//! ## State and locks
//!
//! * `lock`: a reader-writer lock over `{active, valid, hva, pfn}`. Consumers hold it for read
//!   while they use the pfn ([`check`](TranslationCache::check) returns a [`CacheRead`] guard),
//!   so S2's write lock waits for them.
//! * `refresh_lock`: serializes refreshers, activation and deactivation (a mutex in KVM).
//!
//! ## Refresh (`hva_to_pfn_retry`), steps [R1–R5](crate::protocols#the-translation-cache)
//!
//! * R1. Take `refresh_lock`; R2. take `lock` for write; an inactive cache is an error.
//! * R3. Record a new hva, if one is given.
//! * R4a. `valid = false` **before the lock is dropped** ([`Rule::CacheInvalidatesBeforeResolve`]):
//!   the hva may just have changed, and a consumer that took the read lock during the
//!   resolution would otherwise pair the new hva with the old pfn.
//! * R4b. Snapshot `seq` ([`Barrier::CacheSnapshotBeforeResolve`]), drop the lock.
//! * R4d. Resolve hva → pfn **outside the lock** (a host page walk that may sleep).
//! * R4f. Take the lock for write again.
//! * R4g. `mmu_notifier_retry_cache`: retry if any notifier invalidation is active
//!   ([`ActiveInvalidations::count_unlocked`], [`Rule::CacheChecksActiveCount`]), or, after
//!   [`Barrier::CacheCountBeforeSeq`], if `seq` moved since the snapshot.
//! * R4h. `valid = true`, store the pfn.
//! * R5. If resolution fails: `valid = false`, return the error.
//!
//! **Why the active count, not `in_progress`.** S2 runs before `mmu_lock` is taken and before
//! `in_progress` is raised, and runs even for an invalidation that hits no memslot. The active
//! count is raised before S2 (S1) and lowered only after `seq++` (E1 → E2), so a refresher that
//! re-locks after S2 sees either the count raised or the new `seq`.
//!
//! **Liveness.** [`refresh`](TranslationCache::refresh) spins for as long as invalidations
//! keep arriving: it has no fairness guarantee (KVM's loop is "effectively just a complex busy
//! wait" under a stream of invalidations). It calls [`Hal::spin_hint`] once per retry (KVM's
//! `cond_resched`). [`try_refresh`](TranslationCache::try_refresh) gives up after a bounded
//! number of attempts and leaves the cache invalid.
//!
//! **Open issue \[inference\].** `seq` is bumped only when an invalidation hits a
//! memslot. An invalidation of the cache's hva that hits no memslot, and whose start *and* end
//! both fall inside the resolution window (R4d–R4f), leaves the count at zero and `seq`
//! unchanged at R4g, so the stale pfn is validated. This module keeps KVM's algorithm so that
//! the models can show it; a test below exhibits it.
//!
//! [`invalidate_start`]: TranslationCache::invalidate_start

use crate::active::ActiveInvalidations;
use crate::barrier::Barrier;
use crate::error::Error;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::invalidation::Invalidation;
use crate::lock::{SpinGuard, SpinLock};
use crate::range::{Hva, HvaRange, Pfn};
use crate::rule::Rule;
use crate::step::Step;
use core::fmt;
use core::num::NonZeroUsize;

/// What `gpc->lock` protects.
struct CacheState {
    /// `gpc->active`: the cache is reachable by invalidations and may be refreshed.
    active: bool,
    /// `gpc->valid`: `pfn` is the primary mapping of `hva`, and no invalidation has run since.
    valid: bool,
    /// `gpc->uhva`: the host-virtual page cached.
    hva: Hva,
    /// `gpc->pfn`: meaningful only while `valid`.
    pfn: Pfn,
}

/// A one-page hva → pfn translation cache (`struct gfn_to_pfn_cache`).
pub struct TranslationCache<H: Hal> {
    hal: H,
    /// The id of the owning VM's [`Invalidation`] (0: a standalone cache). An owned cache is
    /// activated through its VM, which keeps it on the VM's cache list, and refreshes only
    /// against that VM's counters.
    owner: u64,
    /// `gpc->lock`.
    lock: lock_api::RwLock<H::RawRwLock, CacheState>,
    /// `gpc->refresh_lock`.
    refresh_lock: SpinLock<H, ()>,
}

impl<H: Hal> fmt::Debug for TranslationCache<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TranslationCache").finish_non_exhaustive()
    }
}

/// A valid cache entry, held: `kvm_gpc_check` returned true and the caller still holds
/// `gpc->lock` for read. While this guard lives, no invalidation can get past its step S2 for
/// this cache, so the primary MMU cannot free the page: use the pfn only through it.
#[must_use = "the pfn is safe to use only while the guard is held"]
pub struct CacheRead<'a, H: Hal> {
    guard: lock_api::RwLockReadGuard<'a, H::RawRwLock, CacheState>,
}

impl<H: Hal> fmt::Debug for CacheRead<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheRead").field("hva", &self.guard.hva).field("pfn", &self.guard.pfn).finish()
    }
}

impl<H: Hal> CacheRead<'_, H> {
    /// The cached pfn.
    pub fn pfn(&self) -> Pfn {
        self.guard.pfn
    }

    /// The hva it translates.
    pub fn hva(&self) -> Hva {
        self.guard.hva
    }
}

impl<H: Hal> TranslationCache<H> {
    /// An inactive, invalid cache.
    pub fn new(hal: H) -> Self {
        Self::owned(hal, 0)
    }

    /// A cache owned by the VM whose invalidation state has id `owner`.
    pub(crate) fn owned(hal: H, owner: u64) -> Self {
        TranslationCache {
            hal,
            owner,
            lock: lock_api::RwLock::new(CacheState { active: false, valid: false, hva: Hva(0), pfn: Pfn(0) }),
            refresh_lock: SpinLock::<H, ()>::new(()),
        }
    }

    /// The HAL handle.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// `kvm_gpc_activate_hva`, without its initial refresh: marks the cache active for the
    /// host page `hva`. If the hva differs from the cached one the cache becomes invalid (in
    /// the same critical section, so no consumer pairs the new hva with the old pfn). Call
    /// [`refresh`](Self::refresh) next. Fails with [`Error::RangeOverflow`] for an hva beyond
    /// [`crate::range::MAX_HVA`].
    ///
    /// Make the cache reachable by the notifier (KVM: `list_add` to `gpc_list`) **before**
    /// activating it: a refresh must not set up a mapping that invalidations cannot find. A
    /// cache owned by a [`Vm`](crate::Vm) does this through
    /// [`Vm::activate_cache`](crate::Vm::activate_cache); activating it directly fails with
    /// [`Error::Foreign`].
    pub fn activate(&self, hva: Hva) -> Result<(), Error> {
        if self.owner != 0 {
            return Err(Error::Foreign);
        }
        let refresh = self.refresh_lock.lock();
        self.mark_active(&refresh, hva)
    }

    /// R1's lock, which activation and deactivation hold throughout (KVM holds
    /// `gpc->refresh_lock` across `kvm_gpc_activate` and `kvm_gpc_deactivate`): a VM's
    /// activation and deactivation of one cache cannot interleave, and no refresh runs between
    /// a cache's listing and its marking.
    pub(crate) fn lock_refresh(&self) -> SpinGuard<'_, H, ()> {
        self.refresh_lock.lock()
    }

    /// The activation itself, under the refresh lock, once the cache is reachable by
    /// invalidations.
    pub(crate) fn mark_active(&self, _refresh: &SpinGuard<'_, H, ()>, hva: Hva) -> Result<(), Error> {
        HvaRange::single(hva)?;
        let mut st = self.lock.write();
        st.active = true;
        if st.hva != hva {
            st.hva = hva;
            st.valid = false;
        }
        Ok(())
    }

    /// `kvm_gpc_deactivate`: the cache becomes inactive and invalid. Remove it from the
    /// notifier's reach (KVM: `list_del`) only **after** this returns. A cache owned by a
    /// [`Vm`](crate::Vm) stays on the VM's list (harmless: invalidations skip an invalid cache)
    /// until [`Vm::deactivate_cache`](crate::Vm::deactivate_cache) removes it.
    pub fn deactivate(&self) {
        let refresh = self.refresh_lock.lock();
        self.mark_inactive(&refresh);
    }

    /// The deactivation itself, under the refresh lock.
    pub(crate) fn mark_inactive(&self, _refresh: &SpinGuard<'_, H, ()>) {
        let mut st = self.lock.write();
        st.valid = false;
        st.active = false;
    }

    /// `kvm_gpc_check(gpc)`, read lock included: if the cache is active, valid and caches
    /// `hva`, returns a guard through which the pfn may be used while it is held. `None` means:
    /// drop everything, [`refresh`](Self::refresh), and check again.
    pub fn check(&self, hva: Hva) -> Option<CacheRead<'_, H>> {
        let guard = self.lock.read();
        (guard.active && guard.valid && guard.hva == hva).then_some(CacheRead { guard })
    }

    /// `kvm_gpc_refresh`: makes the cache valid for its current hva and returns the pfn.
    /// `resolve` is the primary-MMU lookup (`hva_to_pfn`); it runs without any cache lock and
    /// may be called several times. A cache that is already valid returns at once.
    ///
    /// Errors: [`Error::CacheInactive`] on an inactive cache; [`Error::Foreign`] when the cache
    /// belongs to a [`Vm`](crate::Vm) and `inv` or `active` are another VM's (or standalone);
    /// an error from `resolve` is returned as is, with the cache left invalid (R5).
    ///
    /// Spins, without bound, while invalidations keep racing with it (see the module docs);
    /// [`try_refresh`](Self::try_refresh) is the bounded form.
    ///
    /// # Examples
    ///
    /// ```
    /// use mmusync::{Hva, HvaRange, Pfn, StdHal, TranslationCache, Vm};
    ///
    /// let vm: Vm<StdHal, 8> = Vm::new(StdHal);
    /// let (inv, active) = (vm.invalidation(), vm.active_invalidations());
    /// let gpc = TranslationCache::new(StdHal);
    /// let hva = Hva(0x7f00_0000_3000);
    /// gpc.activate(hva)?;
    /// assert_eq!(gpc.refresh(inv, active, |hva| Ok(Pfn(hva.0 >> 12)))?, Pfn(0x7f00_0000_3));
    /// assert_eq!(gpc.check(hva).map(|read| read.pfn()), Some(Pfn(0x7f00_0000_3)));
    ///
    /// // An invalidation of the page makes the cache invalid; the next refresh resolves again.
    /// assert!(gpc.invalidate_start(HvaRange::new(hva, hva + 0x1000)?));
    /// assert!(gpc.check(hva).is_none());
    /// # Ok::<(), mmusync::Error>(())
    /// ```
    pub fn refresh(
        &self,
        inv: &Invalidation<H>,
        active: &ActiveInvalidations<H>,
        mut resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Pfn, Error> {
        loop {
            if let Some(pfn) = self.try_refresh(None, NonZeroUsize::MAX, inv, active, &mut resolve)? {
                return Ok(pfn);
            }
        }
    }

    /// `__kvm_gpc_refresh(gpc, INVALID_GPA, hva)` (what `kvm_gpc_activate_hva` runs): points
    /// the active cache at `hva` and refreshes it. A valid cache whose hva changes goes
    /// invalid before the resolution starts (R4a). Errors and liveness as
    /// [`refresh`](Self::refresh), plus [`Error::RangeOverflow`] for a bad hva.
    pub fn refresh_hva(
        &self,
        hva: Hva,
        inv: &Invalidation<H>,
        active: &ActiveInvalidations<H>,
        mut resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Pfn, Error> {
        loop {
            if let Some(pfn) = self.try_refresh(Some(hva), NonZeroUsize::MAX, inv, active, &mut resolve)? {
                return Ok(pfn);
            }
        }
    }

    /// The bounded refresh: like [`refresh_hva`](Self::refresh_hva) when `hva` is `Some`, like
    /// [`refresh`](Self::refresh) when it is `None`, but it calls `resolve` at most
    /// `max_attempts` times. `Ok(None)` means every attempt raced with an invalidation; the
    /// cache is left invalid, and the caller may try again later.
    pub fn try_refresh(
        &self,
        hva: Option<Hva>,
        max_attempts: NonZeroUsize,
        inv: &Invalidation<H>,
        active: &ActiveInvalidations<H>,
        mut resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Option<Pfn>, Error> {
        if let Some(hva) = hva {
            HvaRange::single(hva)?;
        }
        if self.owner != 0 && (inv.id != self.owner || active.owner() != self.owner) {
            return Err(Error::Foreign);
        }
        // R1, R2.
        let _refresh = self.refresh_lock.lock();
        let mut st = self.lock.write();
        if !st.active {
            return Err(Error::CacheInactive);
        }
        // R3.
        let mut hva_changed = false;
        if let Some(hva) = hva {
            if st.hva != hva {
                st.hva = hva;
                hva_changed = true;
            }
        }
        if st.valid && !hva_changed {
            return Ok(Some(st.pfn));
        }
        // R4a: the hva may have changed under a still-valid flag. A consumer that takes the
        // read lock while we resolve must not see `valid` with the new hva and the old pfn.
        if self.hal.keeps(Rule::CacheInvalidatesBeforeResolve) {
            st.valid = false;
        }
        let hva = st.hva;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // R4b. KVM reads mmu_invalidate_seq with a plain load, under gpc->lock only.
            let snapshot = inv.seq.load(Relaxed);
            self.hal.step(Step::CacheSnapshot { seq: snapshot });
            // [B2-gpc-rmb1]. Pairs with InvalidateEndZapBeforeSeq. Orders the snapshot before
            // the primary-MMU reads in `resolve`. Without it the resolution can read the host
            // PTE from before an invalidation's zap while the snapshot reads the seq from after
            // it; the seq test at R4g then passes with a stale pfn (MP-2).
            self.hal.barrier(Barrier::CacheSnapshotBeforeResolve);
            drop(st);
            if attempt > 1 {
                // cond_resched() between attempts: let the invalidation we raced with finish.
                self.hal.spin_hint();
            }
            // R4d, outside every cache lock.
            let resolved = resolve(hva);
            // R4f. KVM warns if `valid` is set here: `refresh_lock` keeps other refreshers
            // out and invalidations only clear it (a mutant that skips R4a leaves it set).
            st = self.lock.write();
            let pfn = match resolved {
                Ok(pfn) => pfn,
                Err(e) => {
                    // R5.
                    st.valid = false;
                    return Err(e);
                }
            };
            // R4g.
            if !self.retry_cache(inv, active, snapshot) {
                // R4h.
                st.valid = true;
                st.pfn = pfn;
                self.hal.step(Step::CacheValid { hva, pfn });
                return Ok(Some(pfn));
            }
            if attempt == max_attempts.get() {
                st.valid = false;
                return Ok(None);
            }
        }
    }

    /// `mmu_notifier_retry_cache(kvm, mmu_seq)`, called holding `lock` for write.
    fn retry_cache(&self, inv: &Invalidation<H>, active: &ActiveInvalidations<H>, snapshot: u64) -> bool {
        // An active invalidation may already have run its S2 on this cache (finding it
        // invalid, so leaving no trace) and not yet bumped seq. The count was raised before
        // S2 took this cache's lock, and our lock acquisition came after S2's release.
        if self.hal.keeps(Rule::CacheChecksActiveCount) {
            let count = active.count_unlocked();
            if count != 0 {
                self.hal.step(Step::CacheRetry { active: count, retry: true });
                return true;
            }
        }
        // [B2-gpc-rmb2]. Pairs with InvalidateEndSeqBeforeActiveCount (C11's form of KVM's
        // smp_wmb after seq++ and the E1 -> E2 lock chain). Orders the count read above before
        // the seq read below: if we saw the count drop to zero, we see the seq bump that
        // preceded it. Without it we can read the new count and the old seq, and validate a
        // pfn that the invalidation made stale.
        self.hal.barrier(Barrier::CacheCountBeforeSeq);
        let retry = inv.seq.load(Relaxed) != snapshot;
        self.hal.step(Step::CacheRetry { active: 0, retry });
        retry
    }

    /// Step S2 of an invalidation of `range` (`gfn_to_pfn_cache_invalidate_start`, for this
    /// cache): if the cache is valid and its hva lies in `range`, make it invalid. Tests under
    /// the read lock first (cheap, and it does not stall consumers), then re-tests under the
    /// write lock, which waits for every consumer holding a [`CacheRead`]. Returns whether it
    /// invalidated.
    ///
    /// Call it after the invalidation's S1 ([`ActiveInvalidations::start`]) and before the
    /// primary MMU changes its mapping.
    pub fn invalidate_start(&self, range: HvaRange) -> bool {
        let hit = |st: &CacheState| st.valid && range.contains(st.hva);
        if !hit(&self.lock.read()) {
            return false;
        }
        let mut st = self.lock.write();
        if !hit(&st) {
            return false;
        }
        st.valid = false;
        self.hal.step(Step::CacheInvalidated { hva: st.hva, hit: true });
        true
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::range::Gfn;
    use crate::range::GfnRange;
    use std::sync::Arc;
    use std::vec::Vec;

    use crate::hal::std::mutant::Breaks;

    const HVA: Hva = Hva(0x7000);

    fn vm<H: Hal + Copy>(hal: H) -> (Invalidation<H>, ActiveInvalidations<H>, TranslationCache<H>) {
        (Invalidation::new(hal), ActiveInvalidations::new(hal), TranslationCache::new(hal))
    }

    fn hvas(s: Hva, e: Hva) -> HvaRange {
        HvaRange::new(s, e).unwrap()
    }

    fn n(k: usize) -> NonZeroUsize {
        NonZeroUsize::new(k).unwrap()
    }

    /// A whole notifier invalidation of `range` that hits a memslot (so it bumps seq), with
    /// `zap` run where the primary MMU changes its PTEs.
    fn invalidate<H: Hal>(
        inv: &Invalidation<H>,
        active: &ActiveInvalidations<H>,
        gpc: &TranslationCache<H>,
        range: HvaRange,
        zap: impl FnOnce(),
    ) {
        active.start().unwrap();
        gpc.invalidate_start(range);
        let open = inv.open(GfnRange::new(Gfn(0), Gfn(1)).unwrap()).unwrap();
        zap();
        drop(open);
        active.end().unwrap();
    }

    #[test]
    fn refresh_then_check() {
        let (inv, active, gpc) = vm(StdHal);
        assert_eq!(gpc.refresh(&inv, &active, |_| Ok(Pfn(1))), Err(Error::CacheInactive));
        assert!(gpc.check(HVA).is_none());
        gpc.activate(HVA).unwrap();
        assert!(gpc.check(HVA).is_none(), "active but not yet valid");
        assert_eq!(gpc.refresh(&inv, &active, |h| Ok(Pfn(h.0 >> 12))), Ok(Pfn(7)));
        {
            let r = gpc.check(HVA).expect("valid");
            assert_eq!((r.pfn(), r.hva()), (Pfn(7), HVA));
        }
        assert!(gpc.check(HVA + 0x1000).is_none(), "another hva");
        assert_eq!(gpc.refresh(&inv, &active, |_| panic!("valid: no resolution")), Ok(Pfn(7)));
        gpc.deactivate();
        assert!(gpc.check(HVA).is_none());
        assert_eq!(gpc.refresh(&inv, &active, |_| Ok(Pfn(1))), Err(Error::CacheInactive));
        assert_eq!(gpc.activate(Hva(u64::MAX)), Err(Error::RangeOverflow));
    }

    #[test]
    fn invalidate_start_clears_only_a_covered_valid_cache() {
        let (inv, active, gpc) = vm(StdHal);
        gpc.activate(HVA).unwrap();
        assert!(!gpc.invalidate_start(hvas(Hva(0), Hva(0x10000))), "not valid: nothing to do");
        gpc.refresh(&inv, &active, |_| Ok(Pfn(7))).unwrap();
        assert!(!gpc.invalidate_start(hvas(Hva(0x8000), Hva(0x9000))));
        assert!(gpc.check(HVA).is_some());
        assert!(gpc.invalidate_start(hvas(HVA, HVA + 1)));
        assert!(gpc.check(HVA).is_none());
        assert_eq!(gpc.refresh(&inv, &active, |_| Ok(Pfn(8))), Ok(Pfn(8)));
    }

    #[test]
    fn resolve_error_leaves_the_cache_invalid() {
        let (inv, active, gpc) = vm(StdHal);
        gpc.activate(HVA).unwrap();
        gpc.refresh(&inv, &active, |_| Ok(Pfn(7))).unwrap();
        assert_eq!(
            gpc.refresh_hva(HVA + 0x1000, &inv, &active, |hva| Err(Error::Unmapped { hva })),
            Err(Error::Unmapped { hva: HVA + 0x1000 })
        );
        assert!(gpc.check(HVA).is_none() && gpc.check(HVA + 0x1000).is_none());
    }

    #[test]
    fn invalidation_inside_the_resolution_window_forces_a_retry() {
        let (inv, active, gpc) = vm(StdHal);
        gpc.activate(HVA).unwrap();
        let mut host_pfn = 7;
        let mut calls = 0;
        let pfn = gpc.refresh(&inv, &active, |_| {
            calls += 1;
            let seen = host_pfn;
            if calls == 1 {
                // The primary MMU remaps the page after we read its PTE.
                invalidate(&inv, &active, &gpc, hvas(HVA, HVA + 1), || host_pfn = 9);
            }
            Ok(Pfn(seen))
        });
        assert_eq!((pfn, calls), (Ok(Pfn(9)), 2), "the stale pfn 7 must not be validated");
        assert_eq!(gpc.check(HVA).unwrap().pfn(), Pfn(9));
    }

    /// An invalidation that has started (S1, S2) but not bumped seq yet: only the active
    /// count can tell the refresher. Returns what a 3-attempt refresh gives, and the calls.
    fn refresh_during_open_invalidation<H: Hal + Copy>(hal: H) -> (Option<Pfn>, usize) {
        let (inv, active, gpc) = vm(hal);
        gpc.activate(HVA).unwrap();
        let mut calls = 0;
        let got = gpc
            .try_refresh(None, n(3), &inv, &active, |_| {
                calls += 1;
                if calls == 1 {
                    active.start().unwrap();
                    gpc.invalidate_start(hvas(HVA, HVA + 1));
                }
                Ok(Pfn(7))
            })
            .unwrap();
        (got, calls)
    }

    #[test]
    fn an_active_invalidation_holds_off_validation() {
        assert_eq!(refresh_during_open_invalidation(StdHal), (None, 3));
    }

    #[test]
    fn mutant_ignoring_the_active_count_validates_a_doomed_pfn() {
        assert_eq!(refresh_during_open_invalidation(Breaks(Rule::CacheChecksActiveCount)), (Some(Pfn(7)), 1));
    }

    #[test]
    fn bounded_refresh_succeeds_once_invalidations_stop() {
        let (inv, active, gpc) = vm(StdHal);
        gpc.activate(HVA).unwrap();
        active.start().unwrap();
        assert_eq!(gpc.try_refresh(None, n(2), &inv, &active, |_| Ok(Pfn(7))), Ok(None));
        assert!(gpc.check(HVA).is_none());
        active.end().unwrap();
        assert_eq!(gpc.try_refresh(None, n(1), &inv, &active, |_| Ok(Pfn(7))), Ok(Some(Pfn(7))));
    }

    std::thread_local! {
        /// The spin hints [`CountsSpins`] took on this thread.
        static SPINS: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    /// [`StdHal`], counting the calls of [`Hal::spin_hint`] per thread.
    #[derive(Clone, Copy, Debug)]
    struct CountsSpins;

    // SAFETY: everything delegates to `StdHal`, which keeps the contract; `spin_hint` counts
    // before it delegates.
    unsafe impl Hal for CountsSpins {
        type AtomicU64 = <StdHal as Hal>::AtomicU64;
        type AtomicUsize = <StdHal as Hal>::AtomicUsize;
        type AtomicBool = <StdHal as Hal>::AtomicBool;
        type RawRwLock = <StdHal as Hal>::RawRwLock;
        type RawMutex = <StdHal as Hal>::RawMutex;

        fn fence(&self, kind: crate::barrier::FenceKind) {
            StdHal.fence(kind)
        }

        fn spin_hint(&self) {
            SPINS.with(|n| n.set(n.get() + 1));
            StdHal.spin_hint()
        }
    }

    #[test]
    fn a_refresh_yields_once_per_retry_and_never_before_its_first_attempt() {
        let (inv, active, gpc) = vm(CountsSpins);
        let spins = || SPINS.with(core::cell::Cell::get);
        gpc.activate(HVA).unwrap();
        let before = spins();
        // Every resolution races with a whole invalidation of the page (seq moves).
        let mut calls = 0;
        let raced = gpc.try_refresh(None, n(3), &inv, &active, |_| {
            calls += 1;
            invalidate(&inv, &active, &gpc, hvas(HVA, HVA + 1), || {});
            Ok(Pfn(7))
        });
        assert_eq!((raced, calls), (Ok(None), 3));
        assert_eq!(spins() - before, 2, "one hint before each of the two retries");
        assert_eq!(gpc.try_refresh(None, n(3), &inv, &active, |_| Ok(Pfn(7))), Ok(Some(Pfn(7))));
        assert_eq!(spins() - before, 2, "no race: no hint");
    }

    /// Moves a valid cache to a new hva and reports what a consumer sees for the new hva while
    /// the resolution is under way.
    fn consumer_view_during_hva_change<H: Hal + Copy>(hal: H) -> Option<Pfn> {
        let (inv, active, gpc) = vm(hal);
        gpc.activate(HVA).unwrap();
        gpc.refresh(&inv, &active, |_| Ok(Pfn(7))).unwrap();
        let mut seen = None;
        gpc.refresh_hva(HVA + 0x1000, &inv, &active, |_| {
            seen = gpc.check(HVA + 0x1000).map(|r| r.pfn());
            assert!(gpc.check(HVA).is_none(), "the old hva is gone as soon as the lock drops");
            Ok(Pfn(8))
        })
        .unwrap();
        assert_eq!(gpc.check(HVA + 0x1000).unwrap().pfn(), Pfn(8));
        seen
    }

    #[test]
    fn an_hva_change_invalidates_before_the_lock_drops() {
        assert_eq!(consumer_view_during_hva_change(StdHal), None);
    }

    #[test]
    fn mutant_keeping_valid_pairs_the_new_hva_with_the_old_pfn() {
        assert_eq!(
            consumer_view_during_hva_change(Breaks(Rule::CacheInvalidatesBeforeResolve)),
            Some(Pfn(7))
        );
    }

    /// The open issue of R4g (docs/protocols.md), reproduced: an invalidation of the cached hva that hits no
    /// memslot (no `seq` bump) and lies wholly inside the resolution window goes unnoticed.
    #[test]
    fn open_issue_invalidation_outside_memslots_is_missed() {
        let (inv, active, gpc) = vm(StdHal);
        gpc.activate(HVA).unwrap();
        let mut host_pfn = 7;
        let pfn = gpc.refresh(&inv, &active, |_| {
            let seen = host_pfn;
            if seen == 7 {
                active.start().unwrap();
                gpc.invalidate_start(hvas(HVA, HVA + 1));
                host_pfn = 9; // zapped and remapped, with no memslot hit: no begin/end
                active.end().unwrap();
            }
            Ok(Pfn(seen))
        });
        assert_eq!(pfn, Ok(Pfn(7)), "KVM's algorithm validates the stale pfn here");
    }

    #[test]
    fn consumers_never_see_a_pfn_the_primary_mmu_dropped() {
        // The primary MMU maps HVA to `host_pfn`; each invalidation remaps it to a new pfn
        // (freeing the old one). A consumer holding a CacheRead must see the current pfn.
        const INVALIDATIONS: u64 = 5000;
        let hal = StdHal;
        let (inv, active, gpc) = vm(hal);
        let (inv, active, gpc) = (Arc::new(inv), Arc::new(active), Arc::new(gpc));
        let host_pfn = Arc::new(<StdHal as Hal>::AtomicU64::new(1));
        let done = Arc::new(<StdHal as Hal>::AtomicBool::new(false));
        gpc.activate(HVA).unwrap();

        let invalidator = {
            let (inv, active, gpc, host_pfn) = (inv.clone(), active.clone(), gpc.clone(), host_pfn.clone());
            std::thread::spawn(move || {
                for i in 0..INVALIDATIONS {
                    // The yields widen the two windows that matter: between S2 and the seq bump
                    // (only the active count protects a refresher there) and between
                    // invalidations (a wrongly validated pfn stays visible to the consumer).
                    invalidate(&inv, &active, &gpc, hvas(HVA, HVA + 1), || {
                        hal.spin_hint();
                        host_pfn.store(i + 2, Relaxed);
                    });
                    hal.spin_hint();
                }
            })
        };
        let refreshers: Vec<_> = (0..2)
            .map(|_| {
                let (inv, active, gpc, host_pfn, done) =
                    (inv.clone(), active.clone(), gpc.clone(), host_pfn.clone(), done.clone());
                std::thread::spawn(move || {
                    while !done.load(Relaxed) {
                        gpc.refresh(&inv, &active, |_| Ok(Pfn(host_pfn.load(Relaxed)))).unwrap();
                        hal.spin_hint();
                    }
                })
            })
            .collect();
        let consumer = {
            let (gpc, host_pfn, done) = (gpc.clone(), host_pfn.clone(), done.clone());
            std::thread::spawn(move || {
                let mut hits = 0u64;
                while !done.load(Relaxed) {
                    if let Some(r) = gpc.check(HVA) {
                        // While we hold the guard no invalidation can pass S2, so the primary
                        // MMU has not remapped the page since the cache was validated.
                        assert_eq!(r.pfn(), Pfn(host_pfn.load(Relaxed)), "consumer used a dropped pfn");
                        hits += 1;
                    }
                    hal.spin_hint();
                }
                hits
            })
        };
        invalidator.join().unwrap();
        let last = gpc.refresh(&inv, &active, |_| Ok(Pfn(host_pfn.load(Relaxed)))).unwrap();
        assert_eq!(last, Pfn(INVALIDATIONS + 1));
        done.store(true, Relaxed);
        for r in refreshers {
            r.join().unwrap();
        }
        consumer.join().unwrap();
        assert_eq!(active.count_unlocked(), 0);
    }
}
