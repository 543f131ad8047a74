//! P1: the invalidation state — in-progress count, sequence number and merged gfn range.
//!
//! This is KVM's `mmu_invalidate_in_progress`, `mmu_invalidate_seq` and
//! `mmu_invalidate_range_start/end`, together with the `mmu_lock` that protects their updates.
//!
//! ## Algorithm
//!
//! An invalidation of guest frames (because the primary MMU is about to change the host pages
//! behind them) runs in two halves, each under `mmu_lock` held for write:
//!
//! * [`begin`](Invalidation::begin): `in_progress += 1`; if it went 0 → 1, reset the range to
//!   "none"; then [`add_range`](Invalidation::add_range) widens the range by min/max union
//!   (once per memslot the invalidation hits, in the same critical section). The caller then
//!   zaps the SPTEs of the range and flushes TLBs before dropping the lock.
//! * [`end`](Invalidation::end): `seq += 1`, barrier, `in_progress -= 1`.
//!
//! A fault that resolved a pfn without the lock re-checks under the lock (see
//! [`crate::retry`]): it retries if an invalidation covering its gfn is open, or if one ended
//! after its snapshot of `seq`. The range is never shrunk while invalidations overlap and is
//! only reset by the next 0 → 1 `begin`; when `in_progress == 0` it is stale and not consulted.
//!
//! The fields are atomics because the retry checks may read them without the lock (the MP-1
//! lockless retry and the `_unsafe` pre-check); every *update* happens under the write lock,
//! which the `&MmuWriteGuard` argument proves.

use crate::barrier::Barrier;
use crate::error::Error;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::lock::{MmuLock, MmuLocked, MmuWriteGuard};
use crate::range::{Gfn, GfnRange};
use crate::rule::Rule;
use crate::step::Step;
use core::fmt;

/// KVM's `INVALID_GPA` sentinel for "no range recorded yet". Never a valid range bound
/// (ranges end at or below [`crate::range::MAX_GFN`]).
pub(crate) const NO_RANGE: u64 = u64::MAX;

/// A process-wide unique id for objects that hand out tokens ([`Invalidation`]'s snapshots,
/// epoch domains), so a token is never mistaken for another object's (an address could be
/// reused, or the object moved). Bookkeeping only: no protocol ordering depends on it, so it
/// is a plain `core` atomic, not a HAL one.
pub(crate) fn next_id() -> u64 {
    use core::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The invalidation state of one VM, with its `mmu_lock`.
pub struct Invalidation<H: Hal> {
    pub(crate) hal: H,
    /// Unique per object: [`FaultSnapshot`](crate::retry::FaultSnapshot)s carry it.
    pub(crate) id: u64,
    mmu_lock: MmuLock<H>,
    pub(crate) seq: H::AtomicU64,
    pub(crate) in_progress: H::AtomicU64,
    pub(crate) range_start: H::AtomicU64,
    pub(crate) range_end: H::AtomicU64,
}

impl<H: Hal> fmt::Debug for Invalidation<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalidation").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<H: Hal> Invalidation<H> {
    /// No invalidation open, `seq == 0`.
    pub fn new(hal: H) -> Self {
        Invalidation {
            hal,
            id: next_id(),
            mmu_lock: MmuLock::new(),
            seq: H::AtomicU64::new(0),
            in_progress: H::AtomicU64::new(0),
            range_start: H::AtomicU64::new(NO_RANGE),
            range_end: H::AtomicU64::new(NO_RANGE),
        }
    }

    /// The `mmu_lock` that protects this state (and, by convention, the secondary MMU).
    pub fn mmu_lock(&self) -> &MmuLock<H> {
        &self.mmu_lock
    }

    /// The HAL handle.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    pub(crate) fn check_guard(&self, guard: &impl MmuLocked) -> Result<(), Error> {
        if guard.lock_id() == self.mmu_lock.id() {
            Ok(())
        } else {
            Err(Error::Foreign)
        }
    }

    /// `kvm_mmu_invalidate_begin` followed by the first `kvm_mmu_invalidate_range_add`, in one
    /// critical section (I1.1: no lock holder sees `in_progress > 0` with no range).
    pub fn begin(&self, guard: &MmuWriteGuard<'_, H>, range: GfnRange) -> Result<(), Error> {
        self.check_guard(guard)?;
        let n = self.in_progress.load(Relaxed);
        let next = n.checked_add(1).ok_or(Error::CountOverflow)?;
        self.in_progress.store(next, Relaxed);
        if n == 0 {
            self.range_start.store(NO_RANGE, Relaxed);
            self.range_end.store(NO_RANGE, Relaxed);
        }
        let (start, end) = self.merge(range);
        self.hal.step(Step::InvalidateBegin { in_progress: next, start, end });
        Ok(())
    }

    /// `kvm_mmu_invalidate_range_add`: widen the merged range to cover `range` (once per
    /// memslot an invalidation hits). Fails with [`Error::Unbalanced`] when no invalidation is
    /// open.
    pub fn add_range(&self, guard: &MmuWriteGuard<'_, H>, range: GfnRange) -> Result<(), Error> {
        self.check_guard(guard)?;
        if self.in_progress.load(Relaxed) == 0 {
            return Err(Error::Unbalanced);
        }
        let (start, end) = self.merge(range);
        self.hal.step(Step::InvalidateRangeAdd { start, end });
        Ok(())
    }

    /// The min/max union of `range` into the merged range (under the write lock). Returns the
    /// merged range.
    fn merge(&self, range: GfnRange) -> (Gfn, Gfn) {
        let start = self.range_start.load(Relaxed);
        let merged = if start == NO_RANGE || !self.hal.keeps(Rule::RangeAddMerges) {
            (range.start(), range.end())
        } else {
            let end = Gfn(self.range_end.load(Relaxed));
            (Gfn(start).min(range.start()), end.max(range.end()))
        };
        self.range_start.store(merged.0 .0, Relaxed);
        self.range_end.store(merged.1 .0, Relaxed);
        merged
    }

    /// `kvm_mmu_invalidate_end`: `seq++`, then `in_progress--`. Fails with
    /// [`Error::Unbalanced`], changing nothing, when no invalidation is open.
    pub fn end(&self, guard: &MmuWriteGuard<'_, H>) -> Result<(), Error> {
        self.check_guard(guard)?;
        let n = self.in_progress.load(Relaxed);
        if n == 0 {
            return Err(Error::Unbalanced);
        }
        // The primary MMU zapped its PTEs before calling end: make the zap visible to anyone
        // who sees the new seq. C11 needs this; LKMM gets it from the lock chain (MP-2).
        self.hal.barrier(Barrier::InvalidateEndZapBeforeSeq);
        let seq = self.seq.load(Relaxed);
        self.seq.store(seq.wrapping_add(1), Relaxed);
        // Pairs with RetryCountBeforeSeq: a lockless checker that sees the count drop also
        // sees the new seq (MP-1).
        self.hal.barrier(Barrier::InvalidateEndSeqBeforeCount);
        self.in_progress.store(n - 1, Relaxed);
        self.hal.step(Step::InvalidateEnd { seq: seq.wrapping_add(1), in_progress: n - 1 });
        Ok(())
    }

    /// Opens an invalidation of `range`, taking and dropping `mmu_lock` itself, and returns a
    /// guard that ends it when dropped: the start/end pair cannot go unbalanced. For users
    /// without memslots; [`crate::notifier`] is the memslot-aware form.
    pub fn open(&self, range: GfnRange) -> Result<OpenInvalidation<'_, H>, Error> {
        let guard = self.mmu_lock.write();
        self.begin(&guard, range)?;
        Ok(OpenInvalidation { inv: self })
    }

    /// `in_progress`, read under the lock.
    pub fn in_progress(&self, guard: &impl MmuLocked) -> Result<u64, Error> {
        self.check_guard(guard)?;
        Ok(self.in_progress.load(Relaxed))
    }

    /// `seq`, read under the lock.
    pub fn seq(&self, guard: &impl MmuLocked) -> Result<u64, Error> {
        self.check_guard(guard)?;
        Ok(self.seq.load(Relaxed))
    }

    /// The merged range, read under the lock: `None` when no invalidation is open (the stored
    /// bounds are stale then and must not be used).
    pub fn range(&self, guard: &impl MmuLocked) -> Result<Option<GfnRange>, Error> {
        self.check_guard(guard)?;
        if self.in_progress.load(Relaxed) == 0 {
            return Ok(None);
        }
        let (s, e) = (self.range_start.load(Relaxed), self.range_end.load(Relaxed));
        Ok(GfnRange::new(Gfn(s), Gfn(e)).ok())
    }
}

/// An open invalidation; dropping it runs `end` under `mmu_lock`.
#[must_use = "dropping the guard ends the invalidation at once"]
pub struct OpenInvalidation<'a, H: Hal> {
    inv: &'a Invalidation<H>,
}

impl<H: Hal> fmt::Debug for OpenInvalidation<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenInvalidation").field("invalidation", &self.inv.id).finish()
    }
}

impl<H: Hal> OpenInvalidation<'_, H> {
    /// Widens the open invalidation by another range (another memslot hit).
    pub fn add_range(&self, range: GfnRange) -> Result<(), Error> {
        self.inv.add_range(&self.inv.mmu_lock.write(), range)
    }
}

impl<H: Hal> OpenInvalidation<'_, H> {
    /// Ends the invalidation now, reporting an error that dropping the guard would swallow.
    /// Fails with [`Error::Unbalanced`] only if a raw [`Invalidation::end`] already consumed
    /// this guard's count (a caller bug elsewhere).
    pub fn end(self) -> Result<(), Error> {
        let this = core::mem::ManuallyDrop::new(self);
        let guard = this.inv.mmu_lock.write();
        this.inv.end(&guard)
    }
}

impl<H: Hal> Drop for OpenInvalidation<'_, H> {
    /// Ends the invalidation; an error (see [`OpenInvalidation::end`]) is dropped.
    fn drop(&mut self) {
        let guard = self.inv.mmu_lock.write();
        let _ = self.inv.end(&guard);
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;

    fn r(s: u64, e: u64) -> GfnRange {
        GfnRange::new(Gfn(s), Gfn(e)).unwrap()
    }

    /// E1 reports `seq` and `in_progress` after its changes: trace conformance replays a
    /// checker's trace by these values, so a wrong one is a wrong trace.
    #[cfg(target_os = "linux")]
    #[test]
    fn end_reports_the_new_seq_and_count() {
        let hal = crate::hal::std::mutant::Records::default();
        let inv = Invalidation::new(hal.clone());
        let g = inv.mmu_lock().write();
        inv.begin(&g, r(10, 20)).unwrap();
        inv.begin(&g, r(30, 40)).unwrap();
        inv.end(&g).unwrap();
        inv.end(&g).unwrap();
        let ends: std::vec::Vec<Step> =
            hal.take().into_iter().filter(|s| matches!(s, Step::InvalidateEnd { .. })).collect();
        assert_eq!(
            ends,
            [Step::InvalidateEnd { seq: 1, in_progress: 1 }, Step::InvalidateEnd { seq: 2, in_progress: 0 }]
        );
    }

    #[test]
    fn nested_ranges_merge_and_reset_only_on_first_begin() {
        let inv = Invalidation::new(StdHal);
        let g = inv.mmu_lock().write();
        inv.begin(&g, r(10, 20)).unwrap();
        inv.begin(&g, r(30, 40)).unwrap();
        assert_eq!(inv.range(&g).unwrap(), Some(r(10, 40)));
        inv.end(&g).unwrap();
        assert_eq!(inv.range(&g).unwrap(), Some(r(10, 40)), "never shrunk while open");
        inv.end(&g).unwrap();
        assert_eq!(inv.range(&g).unwrap(), None);
        assert_eq!(inv.seq(&g).unwrap(), 2);
        inv.begin(&g, r(50, 51)).unwrap();
        assert_eq!(inv.range(&g).unwrap(), Some(r(50, 51)), "0 -> 1 resets");
    }

    #[test]
    fn unbalanced_end_is_an_error_and_changes_nothing() {
        let inv = Invalidation::new(StdHal);
        let g = inv.mmu_lock().write();
        assert_eq!(inv.end(&g), Err(Error::Unbalanced));
        assert_eq!(inv.add_range(&g, r(0, 1)), Err(Error::Unbalanced));
        assert_eq!(inv.seq(&g).unwrap(), 0);
        assert_eq!(inv.in_progress(&g).unwrap(), 0);
    }

    #[test]
    fn foreign_guard_is_rejected() {
        let a = Invalidation::new(StdHal);
        let b = Invalidation::new(StdHal);
        let g = b.mmu_lock().write();
        assert_eq!(a.begin(&g, r(0, 1)), Err(Error::Foreign));
        assert_eq!(a.seq(&g), Err(Error::Foreign));
    }

    #[test]
    fn open_guard_balances() {
        let inv = Invalidation::new(StdHal);
        {
            let open = inv.open(r(1, 2)).unwrap();
            open.add_range(r(7, 9)).unwrap();
            let g = inv.mmu_lock().read();
            assert_eq!(inv.in_progress(&g).unwrap(), 1);
            assert_eq!(inv.range(&g).unwrap(), Some(r(1, 9)));
        }
        let g = inv.mmu_lock().read();
        assert_eq!(inv.in_progress(&g).unwrap(), 0);
        assert_eq!(inv.seq(&g).unwrap(), 1);
    }

    #[test]
    fn open_guard_end_reports_what_drop_would_swallow() {
        let inv = Invalidation::new(StdHal);
        inv.open(r(1, 2)).unwrap().end().unwrap();
        {
            let g = inv.mmu_lock().read();
            assert_eq!((inv.in_progress(&g).unwrap(), inv.seq(&g).unwrap()), (0, 1), "ended once");
        }
        let open = inv.open(r(1, 2)).unwrap();
        // A raw `end` elsewhere consumes the guard's count (a caller bug).
        inv.end(&inv.mmu_lock().write()).unwrap();
        assert_eq!(open.end(), Err(Error::Unbalanced));
        let g = inv.mmu_lock().read();
        assert_eq!(
            (inv.in_progress(&g).unwrap(), inv.seq(&g).unwrap()),
            (0, 2),
            "the failed end changed nothing"
        );
    }
}
