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

    /// A stream of readers that never stops, driven from the updater's wait loop: every
    /// `spin_hint` (one per failed drain check) is a tick, at which the reader thread opens a
    /// new section and then closes the one it opened at the previous tick, so a section is
    /// always open and each is open across one tick. The updater waits for the reader's
    /// acknowledgement of each tick, which makes the run deterministic. After `cap` ticks the
    /// stream stops opening sections, so a `synchronize` that waits for new readers still
    /// returns, and the test can count its ticks.
    #[cfg(target_os = "linux")]
    mod stream {
        use super::*;
        use crate::hal::std::mutant::std_hal_items;
        use std::sync::atomic::AtomicUsize;
        use std::sync::mpsc::{channel, Receiver, Sender};
        use std::sync::{Arc, Mutex};
        use std::vec::Vec;

        /// The reader thread's two channels, held while the stream runs.
        type Link = Option<(Sender<()>, Receiver<()>)>;

        /// [`StdHal`] whose `spin_hint` is a tick of the reader stream.
        #[derive(Clone)]
        struct Streaming {
            link: Arc<Mutex<Link>>,
            ticks: Arc<AtomicUsize>,
        }

        // SAFETY: everything delegates to `StdHal`, except that `spin_hint` also waits for
        // the reader thread's acknowledgement of a tick: it returns once another CPU has made
        // progress, as the contract asks.
        unsafe impl Hal for Streaming {
            std_hal_items!();

            fn spin_hint(&self) {
                self.ticks.fetch_add(1, Ordering::SeqCst);
                let link = self.link.lock().unwrap();
                if let Some((to_reader, from_reader)) = link.as_ref() {
                    to_reader.send(()).unwrap();
                    from_reader.recv().unwrap();
                }
            }
        }

        /// Runs `synchronize` `rounds` times against the stream, which opens its first section
        /// before the first call; returns each call's number of failed drain checks.
        pub(super) fn waits_per_synchronize(rounds: usize, cap: usize) -> Vec<usize> {
            let (to_reader, ticks) = channel::<()>();
            let (acks, from_reader) = channel::<()>();
            let hal = Streaming {
                link: Arc::new(Mutex::new(Some((to_reader, from_reader)))),
                ticks: Arc::new(AtomicUsize::new(0)),
            };
            let srcu = Arc::new(Srcu::new(hal.clone()));
            let (opened, first_open) = channel::<()>();
            let reader = {
                let srcu = srcu.clone();
                std::thread::spawn(move || {
                    let mut open = Some(srcu.read_lock());
                    opened.send(()).unwrap();
                    let mut n = 0;
                    while ticks.recv().is_ok() {
                        n += 1;
                        let next = (n < cap).then(|| srcu.read_lock());
                        drop(core::mem::replace(&mut open, next));
                        acks.send(()).unwrap();
                    }
                })
            };
            first_open.recv().unwrap();
            let mut waits = Vec::new();
            for _ in 0..rounds {
                let before = hal.ticks.load(Ordering::SeqCst);
                srcu.synchronize();
                waits.push(hal.ticks.load(Ordering::SeqCst) - before);
            }
            // Dropping the link ends the reader's loop (its receiver sees a closed channel).
            *hal.link.lock().unwrap() = None;
            reader.join().unwrap();
            waits
        }
    }

    /// The liveness half of the algorithm: the flip. A `synchronize` waits only for sections
    /// that began before its flip, so an endless stream of new readers cannot hold it: with
    /// the current section (begun before the call) closed at the first tick, each call returns
    /// after exactly one failed drain check, in both phases of the index (two calls). Without
    /// the flip, or with readers counting on another counter than the index names, the
    /// drained counter always holds the newest section, and the call waits until the stream
    /// stops (`cap` ticks). The safety checks (the scenarios) cannot see this: the grace
    /// period stays safe, only its end is lost.
    #[cfg(target_os = "linux")]
    #[test]
    fn an_endless_stream_of_new_readers_does_not_hold_synchronize() {
        assert_eq!(stream::waits_per_synchronize(2, 16), [1, 1]);
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
