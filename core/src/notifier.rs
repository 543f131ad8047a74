//! P1: the MMU-notifier callbacks, `invalidate_range_start` and `invalidate_range_end`.
//!
//! [`Vm`] holds what the callbacks share with the fault path and memslot updates: the
//! invalidation state with `mmu_lock` ([`Invalidation`]), the active-invalidation count
//! ([`ActiveInvalidations`]) and the memslots ([`Memslots`]). The secondary MMU itself is the
//! caller's, reached through [`SecondaryMmu`].
//!
//! ## `invalidate_range_start(hvas)` ([S1–S5](crate::protocols#invalidate_range_start))
//!
//! * S1: count the invalidation as active (before anything else, so a memslot swap cannot
//!   change the layout until the matching end, and a cache refresh sees it).
//! * S2: invalidate translation caches overlapping the range ([`SecondaryMmu::invalidate_caches`]),
//!   before taking `mmu_lock`.
//! * S3: under SRCU, for each memslot overlapping the range: on the first one take `mmu_lock`
//!   for write and [`Invalidation::begin`]; on each, add its gfn range and zap it
//!   ([`SecondaryMmu::unmap_gfn_range`]).
//! * S4: if anything was zapped, flush remote TLBs **while still holding `mmu_lock`**
//!   ([`SecondaryMmu::flush_remote_tlbs`]), so no vCPU keeps a translation of a page the
//!   primary MMU is about to free (I1.6).
//! * S5: drop `mmu_lock`, leave SRCU. If no memslot overlapped, `mmu_lock` was never taken.
//!
//! ## `invalidate_range_end(hvas)` ([E1–E2](crate::protocols#invalidate_range_end))
//!
//! * E1: under SRCU, if any memslot overlaps: take `mmu_lock` for write and
//!   [`Invalidation::end`] (`seq++`, barrier, `in_progress--`).
//! * E2: drop the active count.
//!
//! Start and end decide *independently* whether a memslot overlaps. That is balanced only
//! because memslot swaps wait while the active count is non-zero (P3).

use crate::active::ActiveInvalidations;
use crate::error::Error;
use crate::hal::Hal;
use crate::invalidation::Invalidation;
use crate::lock::{MmuWriteGuard, SpinLock};
use crate::memslot::{Memslot, Memslots, SlotChange};
use crate::pfncache::TranslationCache;
use crate::range::{GfnRange, Hva, HvaRange, Pfn};
use crate::rule::Rule;
use crate::step::Step;
use core::fmt;

/// What the notifier needs from the secondary MMU.
pub trait SecondaryMmu<H: Hal> {
    /// S3c: remove every SPTE mapping a gfn of `gfns` (which lie in `slot`). Returns whether
    /// a TLB flush is needed: whether an SPTE changed after the last flush of every vCPU's TLB.
    /// If you free table pages here through a [`ZapList`](crate::ZapList), its
    /// [`commit`](crate::ZapList::commit) may have been that flush
    /// ([`Committed::flushed_tlbs`](crate::Committed::flushed_tlbs)). Runs under `mmu_lock`
    /// held for write.
    fn unmap_gfn_range(&self, guard: &MmuWriteGuard<'_, H>, slot: &Memslot, gfns: GfnRange) -> bool;

    /// S4: flush every vCPU's TLB and wait until each has (`kvm_flush_remote_tlbs`). Runs under
    /// `mmu_lock`.
    fn flush_remote_tlbs(&self);

    /// S2: invalidate the translation caches that overlap `hvas`. Runs without `mmu_lock`.
    fn invalidate_caches(&self, hvas: HvaRange) {
        let _ = hvas;
    }

    /// A2: clear (`clear`) or test the accessed bit of every SPTE of `gfns` (which lie in
    /// `slot`) and return whether any was set (young). Runs under `mmu_lock` held for write.
    /// The default knows no accessed bits: never young.
    fn age_gfn_range(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        slot: &Memslot,
        gfns: GfnRange,
        clear: bool,
    ) -> bool {
        let _ = (guard, slot, gfns, clear);
        false
    }

    /// A2 without `mmu_lock` (KVM's lockless aging, `kvm_age_gfn` with `range->lockless`, TDP
    /// MMU only): clear or test the accessed bits of `gfns` walking the tables under an epoch
    /// (RCU) read side. `None` (the default): this MMU cannot, and the notifier takes
    /// `mmu_lock` and calls [`age_gfn_range`](Self::age_gfn_range). Return `Some` only if every
    /// table page this MMU frees is freed after the epoch, so the walk never reads a freed
    /// page, and if every SPTE update that may race with it is atomic.
    fn age_gfn_range_lockless(&self, slot: &Memslot, gfns: GfnRange, clear: bool) -> Option<bool> {
        let _ = (slot, gfns, clear);
        None
    }

    /// G3, Q6: flush the TLB entries of `gfns` on every vCPU and wait until each has
    /// (`kvm_flush_remote_tlbs_range`). The default flushes everything, as KVM does when the
    /// architecture has no ranged flush. Runs under `mmu_lock`.
    fn flush_remote_tlbs_range(&self, gfns: GfnRange) {
        let _ = gfns;
        self.flush_remote_tlbs();
    }
}

/// Which aging notifier runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aging {
    ClearFlush,
    Clear,
    Test,
}

/// The synchronization state of one VM with `N` memslots and `C` translation caches.
///
/// The VM owns its translation caches (KVM's `gpc_list`): [`activate_cache`](Self::activate_cache)
/// puts a cache on the VM's cache list before it marks it active,
/// [`deactivate_cache`](Self::deactivate_cache) takes it off only after marking it inactive,
/// and every [`invalidate_range_start`](Self::invalidate_range_start) invalidates the listed
/// caches itself (S2), so a cache that may hold a valid translation is always reachable by
/// invalidations ([`Rule::CacheListedWhileActive`]). Caches
/// of your own outside the VM go through [`SecondaryMmu::invalidate_caches`] instead.
pub struct Vm<H: Hal, const N: usize, const C: usize = 0> {
    invalidation: Invalidation<H>,
    active: ActiveInvalidations<H>,
    memslots: Memslots<H, N>,
    caches: [TranslationCache<H>; C],
    /// `kvm->gpc_lock`: which caches are on the list.
    cache_list: SpinLock<H, [bool; C]>,
}

impl<H: Hal, const N: usize, const C: usize> fmt::Debug for Vm<H, N, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vm")
            .field("invalidation", &self.invalidation)
            .field("memslots", &self.memslots)
            .field("caches", &C)
            .finish_non_exhaustive()
    }
}

impl<H: Hal, const N: usize, const C: usize> Vm<H, N, C> {
    /// A VM with no memslots, no open invalidation and `C` inactive translation caches.
    pub fn new(hal: H) -> Self {
        let invalidation = Invalidation::new(hal.clone());
        let id = invalidation.id;
        Vm {
            invalidation,
            active: ActiveInvalidations::owned(hal.clone(), id),
            caches: core::array::from_fn(|_| TranslationCache::owned(hal.clone(), id)),
            cache_list: SpinLock::<H, [bool; C]>::new([false; C]),
            memslots: Memslots::new(hal),
        }
    }

    /// Translation cache `index` of this VM, or [`Error::NoSuchCache`]. Check it and read
    /// through it with [`TranslationCache::check`]; activate, refresh and deactivate it
    /// through the VM.
    pub fn translation_cache(&self, index: usize) -> Result<&TranslationCache<H>, Error> {
        self.caches.get(index).ok_or(Error::NoSuchCache { index })
    }

    /// `kvm_gpc_activate_hva` without its refresh: holding the cache's refresh lock, puts
    /// cache `index` on the VM's cache list (`list_add` under `gpc_lock`), then marks it active
    /// for the host page `hva`. In that order: a cache that a refresh can make valid is always
    /// one that invalidations find. (The refresh lock already keeps refreshes out of the
    /// window, as in KVM, so this half of the rule is defence in depth; deactivation's half is
    /// the one a consumer can observe.)
    ///
    /// Lock order: refresh lock, then `gpc_lock`, then the cache lock. Do not call it while
    /// holding a [`CacheRead`](crate::CacheRead) of this VM (an invalidation holding `gpc_lock`
    /// may be waiting for that read lock).
    pub fn activate_cache(&self, index: usize, hva: Hva) -> Result<(), Error> {
        let cache = self.translation_cache(index)?;
        HvaRange::single(hva)?;
        let refresh = cache.lock_refresh();
        if self.hal().keeps(Rule::CacheListedWhileActive) {
            self.list_cache(index, true);
            cache.mark_active(&refresh, hva)
        } else {
            // Mutant: active before listed.
            cache.mark_active(&refresh, hva)?;
            self.list_cache(index, true);
            Ok(())
        }
    }

    /// `kvm_gpc_deactivate`: holding the cache's refresh lock, marks cache `index` inactive and
    /// invalid, then takes it off the VM's cache list (`list_del`), in that order: a consumer
    /// that still finds the cache valid is one an invalidation still reaches. Lock order and
    /// caveat as [`activate_cache`](Self::activate_cache).
    pub fn deactivate_cache(&self, index: usize) -> Result<(), Error> {
        let cache = self.translation_cache(index)?;
        let refresh = cache.lock_refresh();
        if self.hal().keeps(Rule::CacheListedWhileActive) {
            cache.mark_inactive(&refresh);
            self.list_cache(index, false);
        } else {
            // Mutant: unlisted while still valid; an invalidation in between misses it while a
            // consumer goes on using the old pfn.
            self.list_cache(index, false);
            cache.mark_inactive(&refresh);
        }
        Ok(())
    }

    /// `kvm_gpc_refresh` of cache `index` against this VM's own counters (R1–R5): see
    /// [`TranslationCache::refresh`] for the errors and the liveness caveat.
    pub fn refresh_cache(
        &self,
        index: usize,
        resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Pfn, Error> {
        self.translation_cache(index)?.refresh(&self.invalidation, &self.active, resolve)
    }

    /// Adds cache `index` to the list or removes it, under `gpc_lock`.
    fn list_cache(&self, index: usize, listed: bool) {
        if let Some(slot) = self.cache_list.lock().get_mut(index) {
            *slot = listed;
        }
        self.hal().step(Step::CacheListed { index, listed });
    }

    /// S2 for the VM's own caches: under `gpc_lock`, invalidate every listed cache whose page
    /// lies in `hvas` (`gfn_to_pfn_cache_invalidate_start`).
    fn invalidate_listed_caches(&self, hvas: HvaRange) {
        // A VM without caches takes no lock (and adds no scheduling point to the models).
        if C == 0 {
            return;
        }
        let list = self.cache_list.lock();
        for (cache, _) in self.caches.iter().zip(list.iter()).filter(|(_, listed)| **listed) {
            cache.invalidate_start(hvas);
        }
    }

    fn hal(&self) -> &H {
        self.invalidation.hal()
    }

    /// The invalidation state and `mmu_lock` (P1, P2).
    pub fn invalidation(&self) -> &Invalidation<H> {
        &self.invalidation
    }

    /// The active-invalidation count (P1, P3, translation caches).
    pub fn active_invalidations(&self) -> &ActiveInvalidations<H> {
        &self.active
    }

    /// The memslots (P3).
    pub fn memslots(&self) -> &Memslots<H, N> {
        &self.memslots
    }

    /// `kvm_mmu_notifier_invalidate_range_start`. Returns a guard that runs
    /// `invalidate_range_end` for the same range when dropped, so the pair cannot go
    /// unbalanced. The primary MMU changes its PTEs while holding the guard.
    ///
    /// # Examples
    ///
    /// ```
    /// use mmusync::{Gfn, GfnRange, Hva, HvaRange, Memslot, MemslotConfig, MmuWriteGuard, SecondaryMmu, SlotChange, StdHal, Vm};
    ///
    /// struct Ept; // your second-level tables
    /// impl SecondaryMmu<StdHal> for Ept {
    ///     fn unmap_gfn_range(&self, _: &MmuWriteGuard<'_, StdHal>, _: &Memslot, gfns: GfnRange) -> bool {
    ///         assert_eq!(gfns, GfnRange::new(Gfn(0x102), Gfn(0x104)).unwrap());
    ///         true // zapped something: flush
    ///     }
    ///     fn flush_remote_tlbs(&self) {}
    /// }
    ///
    /// let vm: Vm<StdHal, 8> = Vm::new(StdHal);
    /// let slot = MemslotConfig { id: 0, base_gfn: Gfn(0x100), npages: 16, hva: Hva(0x1_0000) };
    /// vm.set_memslot(&Ept, SlotChange::Create(Memslot::new(slot)?))?;
    ///
    /// let open = vm.invalidate_range_start(&Ept, HvaRange::new(Hva(0x1_2000), Hva(0x1_4000))?)?;
    /// let snap = vm.invalidation().snapshot();
    /// assert!(vm.invalidation().retry_gfn_unsafe(&snap, Gfn(0x103))?, "faults in the range retry");
    /// assert!(!vm.invalidation().retry_gfn_unsafe(&snap, Gfn(0x108))?, "others go on");
    /// drop(open); // invalidate_range_end
    /// # Ok::<(), mmusync::Error>(())
    /// ```
    pub fn invalidate_range_start<'a, M: SecondaryMmu<H>>(
        &'a self,
        mmu: &'a M,
        hvas: HvaRange,
    ) -> Result<InvalidateRange<'a, H, M, N, C>, Error> {
        self.start(mmu, hvas)?;
        Ok(InvalidateRange { vm: self, mmu, hvas })
    }

    /// S1–S5 without a guard. Every successful call must be matched by exactly one
    /// [`end`](Self::end) for the same range; prefer [`invalidate_range_start`](Self::invalidate_range_start).
    pub fn start<M: SecondaryMmu<H>>(&self, mmu: &M, hvas: HvaRange) -> Result<(), Error> {
        self.active.start()?;
        self.hal().step(Step::InvalidateCaches { start: hvas.start(), end: hvas.end() });
        self.invalidate_listed_caches(hvas);
        mmu.invalidate_caches(hvas);
        let slots = self.memslots.read();
        let mut locked: Option<MmuWriteGuard<'_, H>> = None;
        let mut flush = false;
        for slot in slots.overlapping(hvas) {
            let Some(gfns) = slot.gfns_of(&hvas) else { continue };
            let began = match &locked {
                Some(guard) => self.invalidation.add_range(guard, gfns),
                None => {
                    let guard = self.invalidation.mmu_lock().write();
                    let began = self.invalidation.begin(&guard, gfns);
                    locked = Some(guard);
                    began
                }
            };
            if let Err(e) = began {
                drop(locked);
                // Undo S1: the count was raised by this call and nothing else lowers it.
                let _ = self.active.end();
                return Err(e);
            }
            if let Some(guard) = &locked {
                let needed = mmu.unmap_gfn_range(guard, &slot, gfns);
                self.hal().step(Step::Unmap {
                    slot: slot.id(),
                    start: gfns.start(),
                    end: gfns.end(),
                    flush: needed,
                });
                flush |= needed;
            }
        }
        if flush {
            mmu.flush_remote_tlbs();
            self.hal().step(Step::InvalidateFlush);
        }
        drop(locked);
        Ok(())
    }

    /// E1–E2 without a guard: the other half of [`start`](Self::start). Fails with
    /// [`Error::Unbalanced`], changing nothing, when no invalidation is active.
    ///
    /// Once an invalidation is active, E2 always runs, even when E1 fails (an `end` for a
    /// range that hits a memslot while no `begin` is open: a caller passing another range
    /// than its `start`'s). E1's error is returned after E2 has lowered the active count, as
    /// KVM always runs E2: a count left raised would make every later memslot swap wait for
    /// ever.
    pub fn end(&self, hvas: HvaRange) -> Result<(), Error> {
        // E2 would refuse below: refuse before E1 changes `seq` and `in_progress`. (Only a
        // concurrent unbalanced `end` can lower the count between this check and E2.)
        if self.active.count_unlocked() == 0 {
            return Err(Error::Unbalanced);
        }
        let e1 = {
            let slots = self.memslots.read();
            let hit = slots.overlapping(hvas).any(|s| s.gfns_of(&hvas).is_some());
            if hit {
                let guard = self.invalidation.mmu_lock().write();
                self.invalidation.end(&guard)
            } else {
                Ok(())
            }
        };
        let e2 = self.active.end();
        e1.and(e2.map(|_| ()))
    }

    /// `kvm_zap_gfn_range`: removes every SPTE of `gfns` for a change that is **not** an
    /// MMU-notifier event (the APIC-access page, a memory-type or attribute change), made by
    /// the caller *before* the call ([G1–G4](crate::protocols#g1)). In one `mmu_lock` critical
    /// section, inside an SRCU read section of the memslots: open an invalidation of `gfns`
    /// (`begin` with its range add), zap each memslot's part through
    /// [`SecondaryMmu::unmap_gfn_range`], flush the range if anything was zapped
    /// ([`SecondaryMmu::flush_remote_tlbs_range`]), and close the invalidation (`seq++`). A
    /// fault that resolved against the old state before the call retries at its locked check
    /// (`seq` moved), and one that installed before the call is zapped (I1.7).
    ///
    /// Returns whether anything was zapped. Must not be called inside a read section of these
    /// memslots' SRCU that a memslot update could be waiting for, nor while holding `mmu_lock`.
    /// Fails with [`Error::CountOverflow`] (nothing zapped) only if `in_progress` is saturated.
    pub fn zap_gfn_range<M: SecondaryMmu<H>>(&self, mmu: &M, gfns: GfnRange) -> Result<bool, Error> {
        let slots = self.memslots.read();
        // G1: mmu_lock, begin + range_add of the whole range.
        let guard = self.invalidation.mmu_lock().write();
        let bracket = self.hal().keeps(Rule::ZapGfnRangeInvalidates);
        if bracket {
            self.invalidation.begin(&guard, gfns)?;
        }
        // G2: every memslot's part of the range.
        let mut flush = false;
        for slot in slots.iter() {
            let Some(part) = slot.gfns().intersect(&gfns) else { continue };
            let needed = mmu.unmap_gfn_range(&guard, &slot, part);
            self.hal().step(Step::Unmap {
                slot: slot.id(),
                start: part.start(),
                end: part.end(),
                flush: needed,
            });
            flush |= needed;
        }
        // G3: flush the range, mmu_lock still held.
        if flush {
            mmu.flush_remote_tlbs_range(gfns);
        }
        self.hal().step(Step::ZapGfnRange { start: gfns.start(), end: gfns.end(), flush });
        // G4: seq++, in_progress--, then drop mmu_lock.
        if bracket {
            self.invalidation.end(&guard)?;
        }
        drop(guard);
        Ok(flush)
    }

    /// `kvm_mmu_notifier_clear_flush_young`: clears the accessed bits of the range's SPTEs and,
    /// if any was set, flushes remote TLBs before returning, so that the guest's next access of
    /// a page sets the bit again (A1–A3, I5.8). Returns whether the range was young.
    pub fn clear_flush_young<M: SecondaryMmu<H>>(&self, mmu: &M, hvas: HvaRange) -> bool {
        self.age(mmu, hvas, Aging::ClearFlush)
    }

    /// `kvm_mmu_notifier_clear_young`: clears the accessed bits without flushing (a vCPU may
    /// keep using a cached translation without setting the bit again: the primary MMU accepts
    /// that imprecision, as Linux's MGLRU does). Returns whether the range was young.
    pub fn clear_young<M: SecondaryMmu<H>>(&self, mmu: &M, hvas: HvaRange) -> bool {
        self.age(mmu, hvas, Aging::Clear)
    }

    /// `kvm_mmu_notifier_test_young`: whether any SPTE of the range has its accessed bit set;
    /// changes nothing.
    pub fn test_young<M: SecondaryMmu<H>>(&self, mmu: &M, hvas: HvaRange) -> bool {
        self.age(mmu, hvas, Aging::Test)
    }

    /// The aging notifiers' walk (A1–A3): under SRCU, `mmu_lock` only when a memslot overlaps;
    /// `in_progress`, `seq` and the active count are left alone (aging changes no
    /// translation).
    fn age<M: SecondaryMmu<H>>(&self, mmu: &M, hvas: HvaRange, how: Aging) -> bool {
        let slots = self.memslots.read();
        let mut locked: Option<MmuWriteGuard<'_, H>> = None;
        let mut young = false;
        for slot in slots.overlapping(hvas) {
            let Some(gfns) = slot.gfns_of(&hvas) else { continue };
            let clear = how != Aging::Test;
            if let Some(y) = mmu.age_gfn_range_lockless(&slot, gfns, clear) {
                young |= y;
                continue;
            }
            let guard = locked.get_or_insert_with(|| self.invalidation.mmu_lock().write());
            young |= mmu.age_gfn_range(guard, &slot, gfns, clear);
        }
        let flush = young && how == Aging::ClearFlush && self.hal().keeps(Rule::ClearFlushYoungFlushes);
        if flush {
            mmu.flush_remote_tlbs();
        }
        self.hal().step(Step::Age { young, flush });
        drop(locked);
        young
    }

    /// Applies a memslot change (`kvm_set_memslot`), zapping a deleted or moved slot's SPTEs
    /// under `mmu_lock` and flushing TLBs between the two swaps.
    pub fn set_memslot<M: SecondaryMmu<H>>(&self, mmu: &M, change: SlotChange) -> Result<(), Error> {
        self.memslots.update(&self.active, change, |old| {
            let guard = self.invalidation.mmu_lock().write();
            if mmu.unmap_gfn_range(&guard, old, old.gfns()) {
                mmu.flush_remote_tlbs();
            }
        })
    }
}

/// An open MMU-notifier invalidation; dropping it runs `invalidate_range_end`.
#[must_use = "dropping the guard ends the invalidation at once"]
pub struct InvalidateRange<'a, H: Hal, M: SecondaryMmu<H>, const N: usize, const C: usize = 0> {
    vm: &'a Vm<H, N, C>,
    mmu: &'a M,
    hvas: HvaRange,
}

impl<H: Hal, M: SecondaryMmu<H>, const N: usize, const C: usize> fmt::Debug
    for InvalidateRange<'_, H, M, N, C>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidateRange").field("hvas", &self.hvas).finish_non_exhaustive()
    }
}

impl<H: Hal, M: SecondaryMmu<H>, const N: usize, const C: usize> InvalidateRange<'_, H, M, N, C> {
    /// The range being invalidated.
    pub fn range(&self) -> HvaRange {
        self.hvas
    }

    /// The secondary MMU the invalidation zapped.
    pub fn mmu(&self) -> &M {
        self.mmu
    }
}

impl<H: Hal, M: SecondaryMmu<H>, const N: usize, const C: usize> InvalidateRange<'_, H, M, N, C> {
    /// Ends the invalidation now (`invalidate_range_end`), reporting an error that dropping
    /// the guard would swallow.
    ///
    /// With guards alone this cannot fail: memslot swaps wait while the pair is active, so
    /// `end` sees the layout `start` saw, and the count the guard raised is still held. It fails
    /// with [`Error::Unbalanced`] only if a raw [`Vm::end`] consumed this guard's count (a
    /// caller bug elsewhere).
    pub fn end(self) -> Result<(), Error> {
        let this = core::mem::ManuallyDrop::new(self);
        this.vm.end(this.hvas)
    }
}

impl<H: Hal, M: SecondaryMmu<H>, const N: usize, const C: usize> Drop for InvalidateRange<'_, H, M, N, C> {
    /// Ends the invalidation. An error (see [`InvalidateRange::end`]) cannot be returned from
    /// here and is dropped; call `end` to see it.
    fn drop(&mut self) {
        let _ = self.vm.end(self.hvas);
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::memslot::MemslotConfig;
    use crate::range::{Gfn, Hva};
    use core::cell::Cell;

    #[derive(Default)]
    struct Recorder {
        zapped: Cell<u64>,
        flushes: Cell<u32>,
        caches: Cell<u32>,
    }

    impl SecondaryMmu<StdHal> for Recorder {
        fn unmap_gfn_range(&self, _: &MmuWriteGuard<'_, StdHal>, _: &Memslot, gfns: GfnRange) -> bool {
            self.zapped.set(self.zapped.get() + gfns.len());
            true
        }
        fn flush_remote_tlbs(&self) {
            self.flushes.set(self.flushes.get() + 1);
        }
        fn invalidate_caches(&self, _: HvaRange) {
            self.caches.set(self.caches.get() + 1);
        }
    }

    fn vm_with_two_slots() -> Vm<StdHal, 4> {
        let vm = Vm::new(StdHal);
        let mmu = Recorder::default();
        vm.set_memslot(
            &mmu,
            SlotChange::Create(
                Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0x100), npages: 4, hva: Hva(0x1_0000) })
                    .unwrap(),
            ),
        )
        .unwrap();
        vm.set_memslot(
            &mmu,
            SlotChange::Create(
                Memslot::new(MemslotConfig { id: 1, base_gfn: Gfn(0x900), npages: 4, hva: Hva(0x1_4000) })
                    .unwrap(),
            ),
        )
        .unwrap();
        vm
    }

    #[test]
    fn one_invalidation_over_two_slots_merges_both_ranges() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        let inv =
            vm.invalidate_range_start(&mmu, HvaRange::new(Hva(0x1_2000), Hva(0x1_6000)).unwrap()).unwrap();
        assert_eq!(mmu.zapped.get(), 4);
        assert_eq!(mmu.flushes.get(), 1);
        assert_eq!(mmu.caches.get(), 1);
        {
            let g = vm.invalidation().mmu_lock().read();
            assert_eq!(vm.invalidation().in_progress(&g), Ok(1), "begin once per notifier call");
            assert_eq!(vm.invalidation().range(&g), Ok(GfnRange::new(Gfn(0x102), Gfn(0x902)).ok()));
        }
        drop(inv);
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(vm.invalidation().in_progress(&g), Ok(0));
        assert_eq!(vm.invalidation().seq(&g), Ok(1));
        assert_eq!(vm.active_invalidations().count_unlocked(), 0);
    }

    #[test]
    fn an_invalidation_outside_every_slot_takes_no_lock_and_bumps_no_seq() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        let inv =
            vm.invalidate_range_start(&mmu, HvaRange::new(Hva(0x9_0000), Hva(0x9_1000)).unwrap()).unwrap();
        assert_eq!(vm.active_invalidations().count_unlocked(), 1, "S1 counts it anyway");
        assert_eq!(mmu.flushes.get(), 0);
        drop(inv);
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(vm.invalidation().seq(&g), Ok(0));
    }

    #[test]
    fn an_end_whose_e1_fails_still_drops_the_active_count() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        // start outside every slot (no begin), end over a slot: E1 finds nothing open.
        vm.start(&mmu, HvaRange::new(Hva(0x9_0000), Hva(0x9_1000)).unwrap()).unwrap();
        assert_eq!(vm.end(HvaRange::new(Hva(0x1_0000), Hva(0x1_1000)).unwrap()), Err(Error::Unbalanced));
        assert_eq!(vm.active_invalidations().count_unlocked(), 0, "E2 ran although E1 failed");
        // A memslot swap waits for the count: it would spin for ever had E2 been skipped.
        vm.set_memslot(&mmu, SlotChange::Delete(1)).unwrap();
    }

    #[test]
    fn zap_gfn_range_brackets_the_zap_with_an_invalidation() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        assert_eq!(vm.zap_gfn_range(&mmu, GfnRange::new(Gfn(0x102), Gfn(0x902)).unwrap()), Ok(true));
        assert_eq!(mmu.zapped.get(), 2 + 2, "each memslot's part");
        assert_eq!(mmu.flushes.get(), 1, "one (ranged) flush");
        assert_eq!(mmu.caches.get(), 0, "not a notifier event: no cache invalidation");
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(vm.invalidation().in_progress(&g), Ok(0));
        assert_eq!(vm.invalidation().seq(&g), Ok(1));
        drop(g);
        assert_eq!(
            vm.active_invalidations().count_unlocked(),
            0,
            "no active count: memslot swaps need not wait"
        );
        assert_eq!(
            vm.zap_gfn_range(&mmu, GfnRange::new(Gfn(0x500), Gfn(0x600)).unwrap()),
            Ok(false),
            "no slot"
        );
        assert_eq!(mmu.flushes.get(), 1);
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(vm.invalidation().seq(&g), Ok(2), "seq moves even when nothing was zapped");
    }

    #[test]
    fn the_guards_end_reports_what_drop_would_swallow() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        let page = HvaRange::new(Hva(0x1_0000), Hva(0x1_1000)).unwrap();
        vm.invalidate_range_start(&mmu, page).unwrap().end().unwrap();
        let open = vm.invalidate_range_start(&mmu, page).unwrap();
        // A raw `end` elsewhere consumes the guard's count (a caller bug).
        vm.end(page).unwrap();
        assert_eq!(open.end(), Err(Error::Unbalanced));
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(vm.invalidation().seq(&g), Ok(2), "two ends, not three");
        assert_eq!(vm.invalidation().in_progress(&g), Ok(0));
        assert_eq!(vm.active_invalidations().count_unlocked(), 0);
    }

    #[test]
    fn an_mmu_without_accessed_bits_is_never_young() {
        let vm = vm_with_two_slots();
        let mmu = Recorder::default();
        let both = HvaRange::new(Hva(0x1_0000), Hva(0x1_8000)).unwrap();
        assert!(!vm.test_young(&mmu, both));
        assert!(!vm.clear_young(&mmu, both));
        assert!(!vm.clear_flush_young(&mmu, both));
        assert_eq!(mmu.flushes.get(), 0, "never young: never flushed");
        assert_eq!(mmu.zapped.get(), 0, "aging zaps nothing");
    }

    #[test]
    fn unmatched_end_is_an_error() {
        let vm = vm_with_two_slots();
        assert_eq!(vm.end(HvaRange::new(Hva(0x1_0000), Hva(0x1_1000)).unwrap()), Err(Error::Unbalanced));
        assert_eq!(vm.end(HvaRange::new(Hva(0x9_0000), Hva(0x9_1000)).unwrap()), Err(Error::Unbalanced));
    }

    #[test]
    fn the_vm_invalidates_its_listed_caches_itself() {
        let vm: Vm<StdHal, 4, 2> = Vm::new(StdHal);
        let page = |at: u64| HvaRange::new(Hva(at), Hva(at + 0x1000)).unwrap();
        let host = |hva: Hva| Ok(crate::range::Pfn(hva.0 >> 12));
        for (i, hva) in [(0, Hva(0x5000)), (1, Hva(0x6000))] {
            vm.activate_cache(i, hva).unwrap();
            vm.refresh_cache(i, host).unwrap();
        }
        let mmu = Recorder::default();
        // No slot is hit and the MMU's own hook sees the range, but the VM's caches are the VM's.
        drop(vm.invalidate_range_start(&mmu, page(0x5000)).unwrap());
        assert!(vm.translation_cache(0).unwrap().check(Hva(0x5000)).is_none(), "listed: invalidated");
        assert!(vm.translation_cache(1).unwrap().check(Hva(0x6000)).is_some(), "outside the range");
        assert_eq!(mmu.caches.get(), 1, "the hook still runs for caches of the MMU's own");

        vm.deactivate_cache(1).unwrap();
        assert!(vm.translation_cache(1).unwrap().check(Hva(0x6000)).is_none(), "inactive");
        assert_eq!(vm.refresh_cache(1, host), Err(Error::CacheInactive));
        assert_eq!(vm.activate_cache(2, Hva(0x7000)), Err(Error::NoSuchCache { index: 2 }));
        assert_eq!(vm.activate_cache(0, Hva(u64::MAX)), Err(Error::RangeOverflow));
    }

    #[test]
    fn a_vms_cache_refuses_other_counters_and_direct_activation() {
        let a: Vm<StdHal, 4, 1> = Vm::new(StdHal);
        let b: Vm<StdHal, 4, 1> = Vm::new(StdHal);
        let cache = a.translation_cache(0).unwrap();
        assert_eq!(cache.activate(Hva(0x5000)), Err(Error::Foreign), "activation goes through the VM");
        a.activate_cache(0, Hva(0x5000)).unwrap();
        let host = |hva: Hva| Ok(crate::range::Pfn(hva.0 >> 12));
        assert_eq!(cache.refresh(b.invalidation(), b.active_invalidations(), host), Err(Error::Foreign));
        assert_eq!(cache.refresh(a.invalidation(), b.active_invalidations(), host), Err(Error::Foreign));
        let standalone = ActiveInvalidations::new(StdHal);
        assert_eq!(cache.refresh(a.invalidation(), &standalone, host), Err(Error::Foreign));
        assert_eq!(cache.refresh(a.invalidation(), a.active_invalidations(), host), Ok(crate::range::Pfn(5)));
    }
}
