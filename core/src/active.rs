//! P1/P3: the count of active MMU-notifier invalidations (`mn_active_invalidate_count`).
//!
//! Unlike `in_progress` ([`crate::invalidation`]), which counts only invalidations that hit a
//! memslot and is raised under `mmu_lock`, this count covers *every* notifier start/end pair,
//! from before the translation caches are invalidated (S1, before S2) until after `seq++` (E2,
//! after E1). Two readers depend on it:
//!
//! * the memslot swap ([`crate::memslot`]) publishes a new memslot set only while it is zero,
//!   holding the same spinlock, so a start/end pair always sees one memslot layout (I3.1);
//! * a translation-cache refresh ([`crate::pfncache`]) reads it holding only its own lock and
//!   retries while it is non-zero, because cache invalidation (S2) runs before `in_progress`
//!   is raised.
//!
//! The notifier side never blocks here: it only increments or decrements under the spinlock
//! (the 2021 rwsem that blocked deadlocked; [P3](crate::protocols#liveness-hazards-p3)).

use crate::barrier::Barrier;
use crate::error::Error;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::lock::{SpinGuard, SpinLock};
use crate::step::Step;
use core::fmt;

/// `mn_active_invalidate_count` with its `mn_invalidate_lock`.
pub struct ActiveInvalidations<H: Hal> {
    hal: H,
    /// The id of the VM's [`Invalidation`](crate::Invalidation) when a [`Vm`](crate::Vm) owns
    /// it, 0 when standalone: a VM's translation caches refuse other counters.
    owner: u64,
    lock: SpinLock<H, ()>,
    count: H::AtomicU64,
}

// By hand, here and for the crate's other HAL-generic types: a derive would require
// `H: Debug`, and printing would load the atomics (a model operation under loom and shuttle).
impl<H: Hal> fmt::Debug for ActiveInvalidations<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActiveInvalidations").finish_non_exhaustive()
    }
}

impl<H: Hal> ActiveInvalidations<H> {
    /// Zero active invalidations.
    pub fn new(hal: H) -> Self {
        Self::owned(hal, 0)
    }

    /// The count of the VM whose invalidation state has id `owner`.
    pub(crate) fn owned(hal: H, owner: u64) -> Self {
        ActiveInvalidations { hal, owner, lock: SpinLock::<H, ()>::new(()), count: H::AtomicU64::new(0) }
    }

    /// The owning VM's invalidation id (0: standalone).
    pub(crate) fn owner(&self) -> u64 {
        self.owner
    }

    /// S1: an invalidation starts. Never blocks on anything but the spinlock.
    pub fn start(&self) -> Result<(), Error> {
        let _g = self.lock.lock();
        let n = self.count.load(Relaxed).checked_add(1).ok_or(Error::CountOverflow)?;
        self.count.store(n, Relaxed);
        self.hal.step(Step::ActiveStart { count: n });
        Ok(())
    }

    /// E2: an invalidation ends, after its `seq++` (E1). Returns whether the count reached
    /// zero (KVM then wakes the memslot writer). Refuses to go below zero, changing nothing
    /// ([`Error::Unbalanced`]), as KVM has since 2024.
    pub fn end(&self) -> Result<bool, Error> {
        let _g = self.lock.lock();
        let n = self.count.load(Relaxed);
        if n == 0 {
            return Err(Error::Unbalanced);
        }
        // C11 only. Pairs with CacheCountBeforeSeq: a cache refresher that reads this
        // decrement holding only its cache lock must also see the seq++ (E1) of every
        // invalidation whose E2 came before ours, not only our own. Their E2s released this
        // spinlock and we acquired it, so a release fence *here*, after the acquisition, makes
        // their seq++ visible along with ours. Without it, or with it before `lock()`, a
        // refresher that reads our count of zero can read the seq from before another
        // invalidation's E1: our relaxed store ends that invalidation's release sequence
        // (loom scenario cache-refresh-vs-two-invalidations, where the invalidation that takes
        // the count to zero hits no memslot and bumps no seq of its own).
        self.hal.barrier(Barrier::InvalidateEndSeqBeforeActiveCount);
        self.count.store(n - 1, Relaxed);
        self.hal.step(Step::ActiveEnd { count: n - 1 });
        Ok(n == 1)
    }

    /// The count, read without the spinlock (as `mmu_notifier_retry_cache` does). Callers that
    /// need it ordered before a later `seq` read issue [`Barrier::CacheCountBeforeSeq`].
    pub fn count_unlocked(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// Takes `mn_invalidate_lock`; the count read under it is exact.
    pub(crate) fn lock(&self) -> (SpinGuard<'_, H, ()>, &H::AtomicU64) {
        (self.lock.lock(), &self.count)
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;

    #[test]
    fn end_reports_when_the_count_reaches_zero() {
        let active = ActiveInvalidations::new(StdHal);
        active.start().unwrap();
        active.start().unwrap();
        assert_eq!(active.count_unlocked(), 2);
        assert_eq!(active.end(), Ok(false), "one still active: no wake-up");
        assert_eq!(active.count_unlocked(), 1);
        assert_eq!(active.end(), Ok(true), "the last one: wake the memslot writer");
        assert_eq!(active.count_unlocked(), 0);
        assert_eq!(active.end(), Err(Error::Unbalanced));
        assert_eq!(active.count_unlocked(), 0, "an unbalanced end changes nothing");
    }

    /// The counts E1/E2 report are the counts after each change: trace conformance replays a
    /// checker's trace by these values, so a wrong one is a wrong trace.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_steps_report_the_count_after_each_change() {
        let hal = crate::hal::std::mutant::Records::default();
        let active = ActiveInvalidations::new(hal.clone());
        active.start().unwrap();
        active.start().unwrap();
        active.end().unwrap();
        active.end().unwrap();
        assert_eq!(
            hal.take(),
            [
                Step::ActiveStart { count: 1 },
                Step::ActiveStart { count: 2 },
                Step::ActiveEnd { count: 1 },
                Step::ActiveEnd { count: 0 },
            ]
        );
    }
}
