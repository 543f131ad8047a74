//! P5, the RCU way: lockless walks protected by an epoch, and freeing of table pages after a
//! grace period *and* a remote TLB flush (the TDP MMU's [scheme](crate::protocols#epoch-scheme-tdp-mmu)).
//!
//! Software walkers pin an epoch ([`ReclaimHandle::walk_begin`], `rcu_read_lock`) instead of
//! disabling interrupts and publishing a vCPU mode. A zapper unlinks table pages while pinned
//! and defers their freeing to the epoch collector (`call_rcu`). This crate uses
//! [crossbeam-epoch](https://docs.rs/crossbeam-epoch) as the RCU: a collector per VM, a handle
//! per thread.
//!
//! ## Flush before unpin
//!
//! An epoch protects only *software* readers. A vCPU running guest code is not pinned (guest
//! mode is an RCU quiescent state), yet the CPU's page walker and paging-structure caches may
//! still hold the unlinked table. So the zapper must complete the remote TLB flush **before**
//! it unpins ([`Rule::FlushBeforeUnpin`]). Garbage deferred while pinned cannot be freed
//! until the zapper unpins (the global epoch cannot advance twice past a pinned participant),
//! so by the time a page is freed, the flush has removed every hardware reference (I5.4).
//!
//! Compared with the IPI/mode scheme ([`crate::walk`]): walkers are cheap and need not disable
//! interrupts (TDP MMU faults may yield), but freed pages wait for a grace period, so memory
//! held by pending frees grows under a zap storm (KVM's 2012 reason for dropping RCU; the
//! benchmarks measure it).

use crate::hal::{Hal, PageAlloc};
use crate::rule::Rule;
use crate::step::Step;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use crossbeam_epoch::{Collector, Guard, LocalHandle};

/// The epoch domain of one VM's page tables.
#[derive(Debug)]
pub struct EpochReclaimer {
    collector: Collector,
    id: u64,
}

impl Default for EpochReclaimer {
    fn default() -> Self {
        Self::new()
    }
}

impl EpochReclaimer {
    /// A new domain.
    pub fn new() -> Self {
        EpochReclaimer { collector: Collector::new(), id: crate::invalidation::next_id() }
    }

    /// A unique id of this domain (its handles and walks carry it).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Registers the calling thread (a vCPU, a zapper) with the domain.
    pub fn register(&self) -> ReclaimHandle {
        ReclaimHandle { local: self.collector.register(), domain: self.id }
    }
}

/// One thread's participation in an [`EpochReclaimer`].
#[derive(Debug)]
pub struct ReclaimHandle {
    local: LocalHandle,
    domain: u64,
}

/// A lockless walk protected by a pinned epoch (`kvm_tdp_mmu_walk_lockless_begin`). Table
/// pages reached during the walk stay allocated until it ends.
#[must_use = "the walk ends when the guard drops"]
pub struct EpochWalk {
    _guard: Guard,
    domain: u64,
}

impl fmt::Debug for EpochWalk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EpochWalk").field("domain", &self.domain).finish_non_exhaustive()
    }
}

impl EpochWalk {
    /// The id of the [`EpochReclaimer`] this walk pins.
    pub fn domain(&self) -> u64 {
        self.domain
    }
}

impl ReclaimHandle {
    /// Begins a lockless walk (`rcu_read_lock`).
    pub fn walk_begin(&self) -> EpochWalk {
        EpochWalk { _guard: self.local.pin(), domain: self.domain }
    }

    /// The id of the [`EpochReclaimer`] this handle belongs to.
    pub fn domain(&self) -> u64 {
        self.domain
    }

    /// Unlinks table pages and frees them safely, the TDP MMU's way:
    ///
    /// 1. pin (`rcu_read_lock`);
    /// 2. `unlink` removes pages from the tables (under whatever lock the caller's MMU uses)
    ///    and pushes them on the list it is given;
    /// 3. `flush` flushes remote TLBs and waits (`kvm_flush_remote_tlbs`);
    /// 4. every unlinked page is deferred to the collector (`call_rcu`);
    /// 5. unpin.
    ///
    /// Returns the number of pages deferred.
    ///
    /// # Safety
    ///
    /// Every page `unlink` pushes must come from `alloc`, must be unreachable from the tables
    /// once `unlink` returns (no new reader can find it), and must not be pushed twice. Software
    /// readers must reach pages only inside an [`EpochWalk`] of the same reclaimer, and hardware
    /// readers only through translations that `flush` removes.
    pub unsafe fn zap<H, P, A>(
        &self,
        hal: &H,
        alloc: &A,
        unlink: impl FnOnce(&mut Vec<NonNull<P>>),
        flush: impl FnOnce(),
    ) -> usize
    where
        H: Hal,
        P: Send + 'static,
        A: PageAlloc<P> + Clone + Send + 'static,
    {
        let guard = self.local.pin();
        let mut retired = Vec::new();
        unlink(&mut retired);
        let flush_first = hal.keeps(Rule::FlushBeforeUnpin);
        let mut flush = Some(flush);
        if flush_first {
            if let Some(f) = flush.take() {
                f();
            }
        }
        let n = retired.len();
        hal.step(Step::EpochDefer { pages: n });
        for page in retired {
            let page = RetiredPage(page);
            let alloc = alloc.clone();
            // SAFETY: the caller guarantees the page came from `alloc`, is pushed once and is
            // unreachable for new readers; the collector runs the closure only after every
            // thread pinned now has unpinned, and (flush before unpin) after the TLB flush, so
            // no software or hardware reader still holds it. The closure owns what it uses
            // (`'static`, `Send`), so it may run on any thread at any later time.
            unsafe { guard.defer_unchecked(move || alloc.free(page.into_inner())) };
        }
        drop(guard);
        if let Some(f) = flush {
            // Mutant only: the flush after unpin lets the collector free pages a vCPU's page
            // walker can still reach.
            f();
        }
        n
    }

    /// Pushes this thread's deferred frees to the collector and tries to run them.
    pub fn collect(&self) {
        self.local.pin().flush();
    }
}

/// A page awaiting its grace period.
struct RetiredPage<P>(NonNull<P>);

impl<P> RetiredPage<P> {
    fn into_inner(self) -> NonNull<P> {
        self.0
    }
}

// SAFETY: a retired page is unreachable from the tables; the only remaining access is the
// deferred free, which may run on another thread. `P: Send` makes moving its ownership sound.
unsafe impl<P: Send> Send for RetiredPage<P> {}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use alloc::boxed::Box;
    use alloc::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Box pages that count frees.
    #[derive(Clone, Default)]
    struct Counting(Arc<AtomicUsize>);

    // SAFETY: Box allocation: valid, aligned, owned until `free`, which runs once per page.
    unsafe impl PageAlloc<u64> for Counting {
        fn alloc(&self, init: u64) -> Result<NonNull<u64>, u64> {
            Ok(NonNull::from(Box::leak(Box::new(init))))
        }
        unsafe fn free(&self, page: NonNull<u64>) {
            // SAFETY: `page` came from `Box::leak` in `alloc` and is freed once.
            drop(unsafe { Box::from_raw(page.as_ptr()) });
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn pages_are_freed_only_after_every_walk_pinned_before_has_ended() {
        let reclaimer = EpochReclaimer::new();
        let walker = reclaimer.register();
        let zapper = reclaimer.register();
        let alloc = Counting::default();
        let page = alloc.alloc(7).unwrap();
        let walk = walker.walk_begin();
        let flushed = core::cell::Cell::new(false);
        // SAFETY: the page came from `alloc`, is pushed once, and nothing else reaches it.
        let n = unsafe { zapper.zap(&StdHal, &alloc, |list| list.push(page), || flushed.set(true)) };
        assert_eq!(n, 1);
        assert!(flushed.get());
        for _ in 0..64 {
            zapper.collect();
        }
        assert_eq!(alloc.0.load(Ordering::SeqCst), 0, "freed under a pinned walker");
        drop(walk);
        for _ in 0..64 {
            zapper.collect();
            walker.collect();
        }
        assert_eq!(alloc.0.load(Ordering::SeqCst), 1, "never freed after the walk ended");
    }
}
