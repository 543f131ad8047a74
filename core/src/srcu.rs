//! P3: a sleepable-RCU-like read side for memslot readers (`kvm->srcu`).
//!
//! Readers (vCPU faults, notifier walkers) hold a read section while they use a memslot set.
//! The updater publishes a new set and then calls [`Srcu::synchronize`], which returns only
//! after every reader that could still see the old set has left its section; only then may the
//! old set be reused.
//!
//! ## Algorithm
//!
//! Two reader counters and an index, as in the classic SRCU:
//!
//! * read lock: `i = idx & 1; count[i] += 1;` **mb** ([`Barrier::SrcuReadLockMb`]); the guard
//!   remembers `i`.
//! * read unlock: **mb** ([`Barrier::SrcuReadUnlockMb`]); `count[i] -= 1`.
//! * synchronize (serialized by a lock): **mb** ([`Barrier::SrcuSyncBeforeScan`]); wait for
//!   `count[!cur]` to drain (readers left over from before the previous flip); `idx = !cur`;
//!   wait for `count[cur]` to drain; **mb** ([`Barrier::SrcuSyncAfterScan`]).
//!
//! Why it is enough: a reader whose increment the updater's scan missed comes after that scan
//! in the `SeqCst` order of the two full barriers (store buffering: the reader's increment,
//! mb, load of the pointer ‖ the updater's publish, mb, load of the counter), so it sees the
//! new set. A reader the scan saw is waited for, and its decrement's mb orders its reads before
//! whatever the updater does after the scan. The flip only guarantees progress: new readers
//! use the other counter, so the one being scanned drains.
//!
//! Readers never block. Holding a read section while waiting for a memslot update deadlocks
//! (the update waits for the section); [P3's liveness hazards](crate::protocols#liveness-hazards-p3)
//! describe KVM's instances of this.

use crate::barrier::Barrier;
use crate::hal::{Atomic, AtomicInt, Hal, Ordering::Relaxed};
use crate::lock::SpinLock;
use core::fmt;

/// An SRCU domain.
pub struct Srcu<H: Hal> {
    hal: H,
    idx: H::AtomicUsize,
    count: [H::AtomicU64; 2],
    sync: SpinLock<H, ()>,
}

impl<H: Hal> fmt::Debug for Srcu<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Srcu").finish_non_exhaustive()
    }
}

impl<H: Hal> Srcu<H> {
    /// A domain with no readers.
    pub fn new(hal: H) -> Self {
        Srcu {
            hal,
            idx: H::AtomicUsize::new(0),
            count: [H::AtomicU64::new(0), H::AtomicU64::new(0)],
            sync: SpinLock::<H, ()>::new(()),
        }
    }

    /// `srcu_read_lock`: enters a read section that lasts as long as the guard.
    pub fn read_lock(&self) -> SrcuReadGuard<'_, H> {
        let idx = self.idx.load(Relaxed) & 1;
        self.count[idx].fetch_add(1, Relaxed);
        // Pairs with SrcuSyncBeforeScan: either the updater's scan sees this increment, or
        // this reader sees everything published before the scan. Without it the reader may
        // read the old set while the scan reads a zero count.
        self.hal.barrier(Barrier::SrcuReadLockMb);
        SrcuReadGuard { srcu: self, idx }
    }

    /// `synchronize_srcu`: returns after every read section that began before the call has
    /// ended. Must not be called from inside a read section of the same domain (it would wait
    /// for itself forever).
    pub fn synchronize(&self) {
        let _serialize = self.sync.lock();
        // Pairs with SrcuReadLockMb: the update before this call against readers' increments.
        self.hal.barrier(Barrier::SrcuSyncBeforeScan);
        let cur = self.idx.load(Relaxed) & 1;
        self.wait_drained(cur ^ 1);
        self.idx.store(cur ^ 1, Relaxed);
        self.wait_drained(cur);
        // Pairs with SrcuReadUnlockMb: the readers' accesses before whatever the caller does
        // next (reuse of the old data). Without it the caller's writes may race them.
        self.hal.barrier(Barrier::SrcuSyncAfterScan);
    }

    fn wait_drained(&self, i: usize) {
        while self.count[i].load(Relaxed) != 0 {
            self.hal.spin_hint();
        }
    }

    /// Readers currently counted (both indices). For tests and diagnostics.
    pub fn readers(&self) -> u64 {
        self.count[0].load(Relaxed) + self.count[1].load(Relaxed)
    }
}

/// An SRCU read section.
#[must_use = "the read section ends when the guard drops"]
pub struct SrcuReadGuard<'a, H: Hal> {
    srcu: &'a Srcu<H>,
    idx: usize,
}

impl<H: Hal> fmt::Debug for SrcuReadGuard<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SrcuReadGuard").field("index", &self.idx).finish_non_exhaustive()
    }
}

impl<H: Hal> Drop for SrcuReadGuard<'_, H> {
    fn drop(&mut self) {
        // Pairs with SrcuSyncAfterScan: this section's reads before the decrement an updater
        // waits for. Without it the updater may reuse data this reader is still reading.
        self.srcu.hal.barrier(Barrier::SrcuReadUnlockMb);
        self.srcu.count[self.idx].fetch_sub(1, Relaxed);
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn synchronize_waits_for_a_reader_that_began_before_it() {
        let srcu = Arc::new(Srcu::new(StdHal));
        let done = Arc::new(AtomicBool::new(false));
        let guard = srcu.read_lock();
        let t = {
            let (srcu, done) = (srcu.clone(), done.clone());
            std::thread::spawn(move || {
                srcu.synchronize();
                done.store(true, Ordering::SeqCst);
            })
        };
        // The updater cannot finish while the section is open, however long it runs.
        for _ in 0..1000 {
            std::thread::yield_now();
        }
        assert!(!done.load(Ordering::SeqCst));
        drop(guard);
        t.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
        assert_eq!(srcu.readers(), 0);
    }

    #[test]
    fn nested_sections_and_repeated_synchronize() {
        let srcu = Srcu::new(StdHal);
        for _ in 0..4 {
            let a = srcu.read_lock();
            let b = srcu.read_lock();
            assert_eq!(srcu.readers(), 2);
            drop((a, b));
            srcu.synchronize();
        }
        assert_eq!(srcu.readers(), 0);
    }
}
