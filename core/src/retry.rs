//! P2: the fault-side retry checks.
//!
//! A fault resolves guest frame → host pfn *without* `mmu_lock` (the host page walk may
//! sleep), so an invalidation can run meanwhile. The fault therefore:
//!
//! 1. takes a [`FaultSnapshot`] of `seq` **before** resolving ([`Invalidation::snapshot`],
//!    with [`Barrier::FaultSnapshotBeforeResolve`]);
//! 2. may pre-check cheaply without the lock ([`Invalidation::retry_gfn_unsafe`], a hint);
//! 3. takes `mmu_lock` and re-checks ([`Invalidation::retry_gfn`] or
//!    [`Invalidation::retry`]) before installing the SPTE. A `true` means: drop the pfn and
//!    retry the fault.
//!
//! Why this suffices (I2.1): if an invalidation of the gfn is open at the locked check, its
//! range covers the gfn; if one ended after the snapshot, `seq` moved; if one ended before the
//! snapshot, the pairing of [`Barrier::InvalidateEndZapBeforeSeq`] with the snapshot barrier
//! guarantees the resolution saw the primary MMU's new PTE. And an invalidation that starts
//! after the locked check zaps what the fault installs.
//!
//! [`Invalidation::retry_lockless`] is the MP-1 form (PowerPC Book3S HV): correct without
//! `mmu_lock` because `end` writes `seq` before the count and the check reads the count before
//! `seq`.

use crate::barrier::Barrier;
use crate::error::Error;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::invalidation::{Invalidation, NO_RANGE};
use crate::lock::MmuLocked;
use crate::range::Gfn;
use crate::rule::Rule;
use crate::step::{RetryCheck, Step};

/// A fault's snapshot of the invalidation sequence, taken before resolving the pfn.
///
/// It can only be checked against the [`Invalidation`] that issued it (others return
/// [`Error::Foreign`]), and the full checks need `mmu_lock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a snapshot is useless unless checked before installing the translation"]
pub struct FaultSnapshot {
    seq: u64,
    owner: u64,
}

impl FaultSnapshot {
    /// The sequence number captured.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl<H: Hal> Invalidation<H> {
    fn check_snapshot(&self, snap: &FaultSnapshot) -> Result<(), Error> {
        if snap.owner == self.id {
            Ok(())
        } else {
            Err(Error::Foreign)
        }
    }

    /// `mmu_seq = kvm->mmu_invalidate_seq; smp_rmb();` — step F4 of the fault path. Take it
    /// before any read that resolves the pfn (memslot flags, host PTEs).
    pub fn snapshot(&self) -> FaultSnapshot {
        let seq = self.seq.load(Relaxed);
        // Pairs with InvalidateEndZapBeforeSeq: if we see the new seq, the resolution below
        // sees the primary MMU's zap (MP-2).
        self.hal.barrier(Barrier::FaultSnapshotBeforeResolve);
        self.hal.step(Step::Snapshot { seq });
        FaultSnapshot { seq, owner: self.id }
    }

    /// `mmu_invalidate_retry(kvm, seq)` under `mmu_lock`: retry if any invalidation is open or
    /// any ended since the snapshot. No false negatives.
    pub fn retry(&self, guard: &impl MmuLocked, snap: &FaultSnapshot) -> Result<bool, Error> {
        self.check_guard(guard)?;
        self.check_snapshot(snap)?;
        Ok(self.reported(RetryCheck::Locked, None, self.retry_unranged(snap)))
    }

    /// The same check without `mmu_lock` (MP-1): correct because
    /// [`Barrier::RetryCountBeforeSeq`] pairs with [`Barrier::InvalidateEndSeqBeforeCount`].
    /// A `false` is only as fresh as the moment of the call: the caller must install with an
    /// operation that a later invalidation's zap will find (PowerPC: under the HPTE lock).
    pub fn retry_lockless(&self, snap: &FaultSnapshot) -> Result<bool, Error> {
        self.check_snapshot(snap)?;
        Ok(self.reported(RetryCheck::Lockless, None, self.retry_unranged(snap)))
    }

    /// The check of [`retry`](Self::retry) and [`retry_lockless`](Self::retry_lockless).
    fn retry_unranged(&self, snap: &FaultSnapshot) -> bool {
        if self.hal.keeps(Rule::RetryChecksInProgress) && self.in_progress.load(Relaxed) != 0 {
            return true;
        }
        // Pairs with InvalidateEndSeqBeforeCount: seeing the count dropped implies seeing the
        // seq bump that preceded it.
        self.hal.barrier(Barrier::RetryCountBeforeSeq);
        self.hal.keeps(Rule::RetryChecksSeq) && self.seq.load(Relaxed) != snap.seq
    }

    /// Reports a check's answer as a [`Step::Retry`] and returns it.
    fn reported(&self, check: RetryCheck, gfn: Option<Gfn>, retry: bool) -> bool {
        self.hal.step(Step::Retry { check, gfn, retry });
        retry
    }

    /// `mmu_invalidate_retry_gfn(kvm, seq, gfn)` under `mmu_lock`: like [`retry`](Self::retry),
    /// but an open invalidation forces a retry only if its merged range covers `gfn`.
    ///
    /// An open invalidation with no range (a `begin` whose lock holder dropped the lock before
    /// adding the range: a bug [`Invalidation::begin`] makes impossible) also forces a retry.
    pub fn retry_gfn(&self, guard: &impl MmuLocked, snap: &FaultSnapshot, gfn: Gfn) -> Result<bool, Error> {
        self.check_guard(guard)?;
        self.check_snapshot(snap)?;
        Ok(self.reported(RetryCheck::Gfn, Some(gfn), self.retry_gfn_locked(snap, gfn)))
    }

    /// The check of [`retry_gfn`](Self::retry_gfn), with the lock held.
    fn retry_gfn_locked(&self, snap: &FaultSnapshot, gfn: Gfn) -> bool {
        if self.hal.keeps(Rule::RetryChecksInProgress) && self.in_progress.load(Relaxed) != 0 {
            let start = self.range_start.load(Relaxed);
            let end = self.range_end.load(Relaxed);
            if start == NO_RANGE {
                return true;
            }
            if self.hal.keeps(Rule::RetryGfnChecksRange) && start <= gfn.0 && gfn.0 < end {
                return true;
            }
        }
        // The lock orders everything here; the barrier is the MP-1 pair kept for uniformity
        // with `retry` (it is a compiler barrier on x86).
        self.hal.barrier(Barrier::RetryCountBeforeSeq);
        self.hal.keeps(Rule::RetryChecksSeq) && self.seq.load(Relaxed) != snap.seq
    }

    /// `mmu_invalidate_retry_gfn_unsafe`: the lockless pre-check (F7/F10). A **hint**: it
    /// has false negatives and false positives (stale range bounds are tolerated). `true`
    /// means "retry now rather than contend for `mmu_lock`"; `false` must be confirmed by
    /// [`retry_gfn`](Self::retry_gfn) under the lock before installing.
    pub fn retry_gfn_unsafe(&self, snap: &FaultSnapshot, gfn: Gfn) -> Result<bool, Error> {
        self.check_snapshot(snap)?;
        let covered = self.in_progress.load(Relaxed) != 0 && {
            let start = self.range_start.load(Relaxed);
            let end = self.range_end.load(Relaxed);
            start <= gfn.0 && gfn.0 < end
        };
        let retry = covered || self.seq.load(Relaxed) != snap.seq;
        Ok(self.reported(RetryCheck::GfnUnsafe, Some(gfn), retry))
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::range::GfnRange;

    #[test]
    fn snapshot_then_invalidation_forces_retry() {
        let inv = Invalidation::new(StdHal);
        let snap = inv.snapshot();
        {
            let g = inv.mmu_lock().read();
            assert_eq!(inv.retry_gfn(&g, &snap, Gfn(5)), Ok(false));
        }
        let open = inv.open(GfnRange::new(Gfn(4), Gfn(6)).unwrap()).unwrap();
        {
            let g = inv.mmu_lock().read();
            assert_eq!(inv.retry_gfn(&g, &snap, Gfn(5)), Ok(true), "open and covering");
            assert_eq!(inv.retry_gfn(&g, &snap, Gfn(9)), Ok(false), "open, not covering");
            assert_eq!(inv.retry(&g, &snap), Ok(true), "unranged check: any open one");
            assert_eq!(inv.retry_gfn_unsafe(&snap, Gfn(5)), Ok(true));
        }
        drop(open);
        let g = inv.mmu_lock().read();
        assert_eq!(inv.retry_gfn(&g, &snap, Gfn(9)), Ok(true), "ended after the snapshot");
        let fresh = inv.snapshot();
        assert_eq!(inv.retry_gfn(&g, &fresh, Gfn(5)), Ok(false));
    }

    #[test]
    fn unranged_checks_retry_exactly_while_open_or_after_an_end() {
        let inv = Invalidation::new(StdHal);
        let range = GfnRange::new(Gfn(4), Gfn(6)).unwrap();
        let snap = inv.snapshot();
        assert_eq!(snap.seq(), 0);
        {
            let g = inv.mmu_lock().read();
            assert_eq!(inv.retry(&g, &snap), Ok(false), "nothing open, nothing ended");
        }
        assert_eq!(inv.retry_lockless(&snap), Ok(false));
        let open = inv.open(range).unwrap();
        assert_eq!(inv.retry_lockless(&snap), Ok(true), "open (MP-1 reads the count)");
        {
            let g = inv.mmu_lock().read();
            assert_eq!(inv.retry(&g, &inv.snapshot()), Ok(true), "open: even a fresh snapshot retries");
        }
        drop(open);
        assert_eq!(inv.retry_lockless(&snap), Ok(true), "ended after the snapshot: seq moved");
        inv.open(range).unwrap().end().unwrap();
        let fresh = inv.snapshot();
        assert_eq!(fresh.seq(), 2, "the snapshot captures seq: one per ended invalidation");
        assert_eq!(inv.retry_lockless(&fresh), Ok(false));
        let g = inv.mmu_lock().read();
        assert_eq!(inv.retry(&g, &fresh), Ok(false), "closed, and nothing ended since");
        assert_eq!(inv.retry(&g, &snap), Ok(true));
    }

    #[test]
    fn foreign_snapshot_is_rejected() {
        let a = Invalidation::new(StdHal);
        let b = Invalidation::new(StdHal);
        let snap = b.snapshot();
        let g = a.mmu_lock().read();
        assert_eq!(a.retry(&g, &snap), Err(Error::Foreign));
        assert_eq!(a.retry_gfn_unsafe(&snap, Gfn(0)), Err(Error::Foreign));
    }
}
