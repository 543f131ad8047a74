//! P5: lockless shadow-page-table walks, and freeing table pages the IPI way.
//!
//! KVM reads shadow page tables without `mmu_lock` in a few hot paths (fast page fault, MMIO
//! SPTE lookup). The table pages it reads may be unlinked and freed meanwhile by a CPU that
//! holds `mmu_lock`. The shadow MMU protects such readers without RCU and without a shared
//! reader count (both were tried and dropped in 2012, [P5](crate::protocols#p5)), with interrupts and
//! `vcpu->mode` ([L1–L4, Z1–Z2](crate::protocols#lockless-walk)):
//!
//! **Walker** ([`Vcpu::walk_lockless_begin`], [`LocklessWalk`]'s drop):
//! * L1: disable interrupts, so the freer's IPI cannot be taken while we read;
//! * L2: `mode = ReadingShadowPageTables`, then a full barrier, then read SPTEs;
//! * L3: a release barrier, then `mode = Outside`: every SPTE read comes before it;
//! * L4: enable interrupts: a pending flush IPI is taken now.
//!
//! **Freer** ([`ZapList`], under `mmu_lock`): Z1 unlink pages from the tables and collect them
//! ([`ZapList::push`]); Z2 ([`ZapList::commit`]) [`flush_remote_tlbs`], which reads every
//! vCPU's mode after a full barrier and waits for an IPI to be taken by each vCPU not
//! `Outside`, then free the pages.
//!
//! Why no walker reads a freed page (I5.1): take a walker that read a link to an unlinked page.
//! Its mode store and the freer's unlink are a store-buffering pair (SB-walk): the freer's
//! mode read, ordered after its unlink, either sees `ReadingShadowPageTables`, and then the
//! freer waits for the IPI, which the walker takes only at L4, after its last read; or it sees
//! an `Outside` written at L3 of that walk, which (release/acquire) puts all of the walk's
//! reads before the free; or it sees `Outside` from *before* the walk's L2 store, and then the
//! full barriers of L2 and of the freer forbid the walker from having read the old link.
//!
//! The walk is a guard: it cannot be left open, cannot nest, and cannot begin inside guest
//! context (the vCPU must be `Outside`), on a vCPU that is not loaded, or on another CPU than
//! the one the vCPU is loaded on.

use crate::barrier::Barrier;
use crate::hal::{Atomic, Cpus, IrqGuard, Ordering, PageAlloc};
use crate::rule::Rule;
use crate::step::Step;
use crate::vcpu::{flush_remote_tlbs, Vcpu, VcpuError, VcpuMode};
use core::fmt;
use core::ptr::NonNull;

impl<H: Cpus> Vcpu<H> {
    /// `walk_shadow_page_lockless_begin`: opens a lockless walk on this vCPU (L1–L2). Table
    /// pages reachable when the walk began are not freed until the guard drops.
    ///
    /// Fails with [`VcpuError::NotLoaded`] or [`VcpuError::WrongCpu`] unless called on the
    /// CPU the vCPU is loaded on, and with [`VcpuError::NotOutside`] inside guest context or
    /// another walk.
    ///
    /// # Examples
    ///
    /// ```
    /// use mmusync::{BoxAlloc, Gfn, MmuLock, Pfn, ReferenceMmu, Spte, StdHal, Vcpu};
    ///
    /// let cpu = StdHal::register_cpu()?;
    /// let vcpus = [Vcpu::new(StdHal)];
    /// let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus)?;
    /// let lock = MmuLock::<StdHal>::new();
    /// mmu.map(&lock.write(), Gfn(3), Spte::leaf(Pfn(0x42), false, true)?)?;
    ///
    /// vcpus[0].load(cpu.cpu())?; // vcpu_load: this vCPU runs on this CPU
    /// let walk = vcpus[0].walk_lockless_begin()?; // no mmu_lock: a zapper waits for us instead
    /// assert_eq!(mmu.walk(&walk, Gfn(3))?.and_then(Spte::pfn), Some(Pfn(0x42)));
    /// drop(walk); // walk_shadow_page_lockless_end
    /// vcpus[0].put()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn walk_lockless_begin(&self) -> Result<LocklessWalk<'_, H>, VcpuError> {
        self.check_owner()?;
        self.check_outside()?;
        // L1. The mutant that breaks WalkDisablesInterrupts leaves interrupts on: the freer's
        // IPI is then taken at once and no longer waits for the walk.
        let irq = match self.hal.keeps(Rule::WalkDisablesInterrupts) {
            true => Some(IrqGuard::outermost(&self.hal).ok_or(VcpuError::InterruptsDisabled)?),
            false => None,
        };
        // L2, the store of smp_store_mb. Relaxed, as in KVM: a freer that reads this mode reads
        // our `cpu` (set by `load`) after it, and the two full barriers of SB-walk order that
        // too. If the freer's KickRequestBeforeModeRead comes after our barrier below, its
        // `cpu` read sees the `load`; if before, our SPTE reads see its unlink and cannot reach
        // the page it frees.
        self.mode_cell().store(VcpuMode::ReadingShadowPageTables as u64, Ordering::Relaxed);
        // L2, the barrier of smp_store_mb. Pairs with KickRequestBeforeModeRead (SB-walk): our
        // mode store comes before our SPTE reads. Without it the reads can be satisfied before
        // the store is visible: the freer unlinks, reads Outside, sends no IPI and frees the
        // page while we read through the old link.
        self.hal.barrier(Barrier::WalkBeginModeBeforeSpteReads);
        self.hal.step(Step::WalkBegin);
        Ok(LocklessWalk { vcpu: self, _irq: irq })
    }
}

/// An open lockless walk on a vCPU (`READING_SHADOW_PAGE_TABLES`, interrupts disabled). Read
/// SPTEs with relaxed atomic loads while it lives; dropping it ends the walk
/// (`walk_shadow_page_lockless_end`, L3–L4).
///
/// Not `Send`: the walk belongs to the CPU that began it.
#[must_use = "dropping the guard ends the walk at once"]
pub struct LocklessWalk<'a, H: Cpus> {
    vcpu: &'a Vcpu<H>,
    // Dropped after `Drop::drop` has stored Outside: L4 comes after L3.
    _irq: Option<IrqGuard<'a, H>>,
}

impl<H: Cpus> fmt::Debug for LocklessWalk<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocklessWalk").field("vcpu", &self.vcpu).finish_non_exhaustive()
    }
}

impl<H: Cpus> LocklessWalk<'_, H> {
    /// The vCPU walking.
    pub fn vcpu(&self) -> &Vcpu<H> {
        self.vcpu
    }
}

impl<H: Cpus> Drop for LocklessWalk<'_, H> {
    fn drop(&mut self) {
        // L3, smp_store_release. Pairs with KickModeReadBeforeFree (the acquire after the
        // freer's mode read): every SPTE read of the walk comes before the Outside store. Without it
        // a freer could see Outside, skip the IPI and free a page whose read is still pending.
        self.vcpu.hal.barrier(Barrier::WalkEndSpteReadsBeforeMode);
        self.vcpu.mode_cell().store(VcpuMode::Outside as u64, Ordering::Relaxed);
        self.vcpu.hal.step(Step::WalkEnd);
        // L4: `_irq` drops next and takes any pending flush IPI.
    }
}

/// What a [`ZapList::commit`] did.
///
/// It answers the double-flush question of a [`SecondaryMmu`](crate::SecondaryMmu) that
/// frees table pages inside [`unmap_gfn_range`](crate::SecondaryMmu::unmap_gfn_range): a
/// commit that freed pages has flushed every vCPU's TLB and waited, after every SPTE change
/// made before it, so the MMU owes no further flush for those changes and may return `false`
/// (unless it changed SPTEs after the commit):
///
/// ```
/// # use mmusync::Committed;
/// # fn owed(changed_after_commit: bool, changed_before: bool, committed: Committed) -> bool {
/// changed_after_commit || (changed_before && !committed.flushed_tlbs())
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Committed {
    freed: usize,
}

impl Committed {
    /// How many pages were freed.
    pub const fn freed(self) -> usize {
        self.freed
    }

    /// Whether the commit flushed every vCPU's TLB and waited for each ([`flush_remote_tlbs`]):
    /// it does exactly when it had pages to free (an empty commit does nothing).
    pub const fn flushed_tlbs(self) -> bool {
        self.freed != 0
    }
}

/// A [`ZapList::push`] on a full list; the page is handed back.
pub struct ZapListFull<P>(pub NonNull<P>);

// By hand: the derives would require `P: Debug` / `P: PartialEq`, but only the pointer counts.
impl<P> fmt::Debug for ZapListFull<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ZapListFull").field(&self.0).finish()
    }
}

impl<P> PartialEq for ZapListFull<P> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<P> Eq for ZapListFull<P> {}

impl<P> fmt::Display for ZapListFull<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("zap list is full: commit it and push again")
    }
}

impl<P> core::error::Error for ZapListFull<P> {}

/// Table pages unlinked under `mmu_lock` and waiting to be freed (`invalid_list`), at most `N`.
///
/// [`commit`](ZapList::commit) flushes remote TLBs, which waits out every lockless walker and
/// running guest that may still hold a link to the pages, then frees them
/// (`kvm_mmu_commit_zap_page`). Fixed capacity, no allocation: when the list is full, commit
/// it and go on (KVM also commits in batches when it zaps a lot).
///
/// A list dropped without `commit` leaks its pages (safely).
#[must_use = "pages are freed only by `commit`; dropping the list leaks them"]
pub struct ZapList<P, const N: usize> {
    pages: [Option<NonNull<P>>; N],
    len: usize,
}

impl<P, const N: usize> fmt::Debug for ZapList<P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZapList").field("len", &self.len).field("capacity", &N).finish()
    }
}

impl<P, const N: usize> Default for ZapList<P, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P, const N: usize> ZapList<P, N> {
    /// An empty list.
    pub const fn new() -> Self {
        ZapList { pages: [None; N], len: 0 }
    }

    /// How many pages are waiting.
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether no page is waiting.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }

    /// Z1: queues an unlinked table page for freeing. Hands the page back when the list is
    /// full.
    ///
    /// # Safety
    ///
    /// * `page` is no longer reachable from any root of the tables it belonged to: it was
    ///   unlinked (under `mmu_lock`), so a walk that begins from now on cannot find it;
    /// * it was allocated by the allocator this list will be committed with, is not queued
    ///   twice, and nobody else frees it;
    /// * the list will be committed with every vCPU that can walk those tables (locklessly or
    ///   as a running guest): a vCPU left out is not waited for.
    pub unsafe fn push(&mut self, page: NonNull<P>) -> Result<(), ZapListFull<P>> {
        match self.pages.get_mut(self.len) {
            Some(slot) => {
                *slot = Some(page);
                self.len += 1;
                Ok(())
            }
            None => Err(ZapListFull(page)),
        }
    }

    /// Z2, `kvm_mmu_commit_zap_page`: if any page is queued, [`flush_remote_tlbs`] (which
    /// waits for every vCPU in a lockless walk or in the guest), then frees every queued page.
    /// Returns what it did ([`Committed`]): how many pages it freed, and whether it flushed.
    /// Must be called with interrupts enabled.
    ///
    /// The [`Rule::FreeAfterFlush`] mutant frees before flushing; a model backend that breaks
    /// it must be paired with an allocator that only marks pages freed.
    pub fn commit<H: Cpus, A: PageAlloc<P>>(mut self, hal: &H, vcpus: &[Vcpu<H>], alloc: &A) -> Committed {
        if self.is_empty() {
            return Committed { freed: 0 };
        }
        let freed = if hal.keeps(Rule::FreeAfterFlush) {
            flush_remote_tlbs(hal, vcpus);
            self.free_all(hal, alloc)
        } else {
            let freed = self.free_all(hal, alloc);
            flush_remote_tlbs(hal, vcpus);
            freed
        };
        Committed { freed }
    }

    /// Frees every queued page and reports Z2 where the frees happened (so that a trace shows
    /// a free before the flush when the `FreeAfterFlush` mutant makes one).
    fn free_all<H: Cpus, A: PageAlloc<P>>(&mut self, hal: &H, alloc: &A) -> usize {
        let len = core::mem::take(&mut self.len);
        for page in self.pages[..len].iter_mut().filter_map(Option::take) {
            // SAFETY: `push`'s contract: the page came from `alloc`, is queued once, and was
            // unlinked before it was queued, so no walk that began later can reach it. Every
            // vCPU that can walk the tables is in `vcpus`, and `flush_remote_tlbs` has
            // returned: each walk or guest run that began before the flush has ended, and its
            // reads happen before this free (the IPI acknowledgement, or the acquire read of
            // its final Outside). Only the FreeAfterFlush mutant calls this before the flush,
            // with an allocator that does not reuse memory (see `commit`).
            unsafe { alloc.free(page) }
        }
        hal.step(Step::ZapCommit { pages: len });
        len
    }
}

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::std::mutant::Breaks;
    use crate::hal::std::StdHal;
    use crate::hal::{CpuId, CpuSet};
    use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
    use std::boxed::Box;
    use std::sync::Mutex;
    use std::thread;
    use std::vec::Vec;

    fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    /// A table page with ghost state: `freed` is set by the allocator's `free`.
    struct Page {
        freed: AtomicBool,
    }

    /// Hands out boxed pages and, on `free`, only marks them freed (memory is reclaimed when
    /// the allocator drops), so a mutant that frees too early is observed, not undefined.
    #[derive(Default)]
    struct GhostAlloc {
        pages: Mutex<Vec<NonNull<Page>>>,
        frees: AtomicUsize,
    }

    // SAFETY: `alloc` returns a fresh, valid, aligned `Page`; memory is never reused (it is
    // released only when the allocator drops), so no pointer ever aliases a new page.
    unsafe impl PageAlloc<Page> for GhostAlloc {
        fn alloc(&self, init: Page) -> Result<NonNull<Page>, Page> {
            let page = NonNull::from(Box::leak(Box::new(init)));
            self.pages.lock().unwrap().push(page);
            Ok(page)
        }

        unsafe fn free(&self, page: NonNull<Page>) {
            // SAFETY: `page` came from `alloc` and its memory lives until `self` drops.
            let was = unsafe { page.as_ref() }.freed.swap(true, SeqCst);
            assert!(!was, "double free");
            self.frees.fetch_add(1, SeqCst);
        }
    }

    impl Drop for GhostAlloc {
        fn drop(&mut self) {
            for page in self.pages.get_mut().unwrap().drain(..) {
                // SAFETY: made by `Box::leak` in `alloc`, dropped once here.
                drop(unsafe { Box::from_raw(page.as_ptr()) });
            }
        }
    }

    // SAFETY: the pointers are only dereferenced while the allocator is alive, and `Page` is
    // `Sync`, so sharing the allocator across the test's threads is sound.
    unsafe impl Send for GhostAlloc {}
    // SAFETY: as above; the list is behind a mutex.
    unsafe impl Sync for GhostAlloc {}

    #[derive(Debug, PartialEq)]
    struct Outcome {
        /// The walker saw its page freed while its walk was open (I5.1 violated).
        read_freed_page: bool,
        /// The commit returned while the walk was open.
        commit_returned_during_walk: bool,
    }

    /// One walker (vCPU 0, its own CPU) reads a table page through a root link inside a
    /// lockless walk; a zapper (another CPU) unlinks the page and commits it. The walker keeps
    /// the walk open until the commit has started, then for a while (or, for mutants, until
    /// it sees the page freed), checking the page and the commit on every step.
    fn walk_vs_commit<H: Cpus>(hal: H, hold_until_freed: bool) -> Outcome {
        let alloc = GhostAlloc::default();
        let page = alloc.alloc(Page { freed: AtomicBool::new(false) }).ok().unwrap();
        let root = AtomicPtr::new(page.as_ptr());
        let vcpus = [Vcpu::new(hal.clone())];
        let walking = AtomicBool::new(false);
        let committing = AtomicBool::new(false);
        let committed = AtomicBool::new(false);
        let mut outcome = Outcome { read_freed_page: false, commit_returned_during_walk: false };

        thread::scope(|s| {
            let walker = s.spawn(|| {
                let reg = StdHal::register_cpu().unwrap();
                vcpus[0].load(reg.cpu()).unwrap();
                let mut out = Outcome { read_freed_page: false, commit_returned_during_walk: false };
                let walk = vcpus[0].walk_lockless_begin().unwrap();
                let link = root.load(SeqCst);
                assert!(!link.is_null(), "the walk began before the unlink");
                walking.store(true, SeqCst);
                wait_until("the commit to start", || committing.load(SeqCst));
                // SAFETY: the ghost allocator never releases memory during the test.
                let page = unsafe { &*link };
                let check = |out: &mut Outcome| {
                    out.read_freed_page |= page.freed.load(SeqCst);
                    out.commit_returned_during_walk |= committed.load(SeqCst);
                };
                if hold_until_freed {
                    wait_until("the page to be freed", || {
                        check(&mut out);
                        out.read_freed_page
                    });
                } else {
                    // Give the commit every chance to (wrongly) finish while we walk.
                    for _ in 0..2000 {
                        check(&mut out);
                        thread::yield_now();
                    }
                }
                drop(walk);
                wait_until("the commit to return", || committed.load(SeqCst));
                vcpus[0].put().unwrap();
                out
            });

            let _reg = StdHal::register_cpu().unwrap();
            wait_until("the walker", || walking.load(SeqCst));
            let mut zap = ZapList::<Page, 4>::new();
            // Z1: unlink, then queue.
            root.store(core::ptr::null_mut(), SeqCst);
            // SAFETY: the page is unlinked, came from `alloc`, is queued once, and the only
            // vCPU is in `vcpus`.
            unsafe { zap.push(page) }.unwrap();
            committing.store(true, SeqCst);
            assert_eq!(zap.commit(&hal, &vcpus, &alloc).freed(), 1);
            committed.store(true, SeqCst);
            outcome = walker.join().unwrap();
        });
        assert_eq!(alloc.frees.load(SeqCst), 1);
        outcome
    }

    #[test]
    fn commit_waits_for_a_lockless_walk() {
        assert_eq!(
            walk_vs_commit(StdHal, false),
            Outcome { read_freed_page: false, commit_returned_during_walk: false }
        );
    }

    #[test]
    fn mutant_walk_with_interrupts_on_lets_the_commit_free_under_it() {
        let out = walk_vs_commit(Breaks(Rule::WalkDisablesInterrupts), true);
        assert!(out.read_freed_page, "{out:?}");
    }

    #[test]
    fn mutant_flush_ignoring_readers_frees_under_the_walk() {
        let out = walk_vs_commit(Breaks(Rule::FlushWaitsForReaders), true);
        assert!(out.read_freed_page, "{out:?}");
    }

    #[test]
    fn mutant_free_before_flush_frees_under_the_walk() {
        let out = walk_vs_commit(Breaks(Rule::FreeAfterFlush), true);
        assert!(out.read_freed_page, "{out:?}");
    }

    #[test]
    fn walks_begin_only_outside_on_the_owning_cpu() {
        let v = Vcpu::new(StdHal);
        thread::scope(|s| {
            s.spawn(|| {
                let reg = StdHal::register_cpu().unwrap();
                assert_eq!(v.walk_lockless_begin().err(), Some(VcpuError::NotLoaded));
                v.load(reg.cpu()).unwrap();
                let walk = v.walk_lockless_begin().unwrap();
                assert_eq!(walk.vcpu().mode(), VcpuMode::ReadingShadowPageTables);
                assert_eq!(
                    v.walk_lockless_begin().err(),
                    Some(VcpuError::NotOutside(VcpuMode::ReadingShadowPageTables))
                );
                assert_eq!(
                    v.enter_guest().err(),
                    Some(VcpuError::NotOutside(VcpuMode::ReadingShadowPageTables))
                );
                drop(walk);
                let guest = v.enter_guest().unwrap();
                assert_eq!(v.walk_lockless_begin().err(), Some(VcpuError::NotOutside(VcpuMode::InGuest)));
                drop(guest);
                assert_eq!(v.mode(), VcpuMode::Outside);
                v.put().unwrap();
            });
        });
        // This thread is a CPU too, but not the one the vCPU was loaded on.
        let reg = StdHal::register_cpu().unwrap();
        v.load(CpuId::new((reg.cpu().index() + 1) % CpuSet::CAPACITY).unwrap()).unwrap();
        assert_eq!(v.walk_lockless_begin().err(), Some(VcpuError::WrongCpu));
    }

    #[test]
    fn a_list_counts_its_pages_and_its_full_error_names_the_page() {
        let alloc = GhostAlloc::default();
        let a = alloc.alloc(Page { freed: AtomicBool::new(false) }).ok().unwrap();
        let b = alloc.alloc(Page { freed: AtomicBool::new(false) }).ok().unwrap();
        let mut zap = ZapList::<Page, 3>::new();
        assert!(zap.is_empty());
        assert_eq!((zap.len(), zap.capacity()), (0, 3));
        // SAFETY: the pages are in no table; the list is committed with no vCPUs, and no vCPU
        // exists.
        unsafe { zap.push(a) }.unwrap();
        // SAFETY: as above.
        unsafe { zap.push(b) }.unwrap();
        assert!(!zap.is_empty());
        assert_eq!(zap.len(), 2);
        assert_ne!(ZapListFull(a), ZapListFull(b), "the error names its page");
        assert_eq!(std::format!("{}", ZapListFull(a)), "zap list is full: commit it and push again");
        let none: [Vcpu<StdHal>; 0] = [];
        assert_eq!(zap.commit(&StdHal, &none, &alloc).freed(), 2);
        assert_eq!(alloc.frees.load(SeqCst), 2);
    }

    #[test]
    fn full_list_hands_the_page_back_and_empty_commit_frees_nothing() {
        let alloc = GhostAlloc::default();
        let a = alloc.alloc(Page { freed: AtomicBool::new(false) }).ok().unwrap();
        let b = alloc.alloc(Page { freed: AtomicBool::new(false) }).ok().unwrap();
        let mut zap = ZapList::<Page, 1>::new();
        // SAFETY: the pages are in no table; the list is committed with no vCPUs, and no vCPU
        // exists.
        unsafe { zap.push(a) }.unwrap();
        // SAFETY: as above.
        assert_eq!(unsafe { zap.push(b) }, Err(ZapListFull(b)));
        assert_eq!((zap.len(), zap.capacity()), (1, 1));
        let reg = StdHal::register_cpu().unwrap();
        let none: [Vcpu<StdHal>; 0] = [];
        let committed = zap.commit(&StdHal, &none, &alloc);
        assert_eq!((committed.freed(), committed.flushed_tlbs()), (1, true));
        let empty = ZapList::<Page, 1>::new().commit(&StdHal, &none, &alloc);
        assert_eq!((empty.freed(), empty.flushed_tlbs()), (0, false), "an empty commit does not flush");
        assert_eq!(alloc.frees.load(SeqCst), 1);
        drop(reg);
    }
}
