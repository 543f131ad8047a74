//! Links between table pages that a walker follows without raw pointers.
//!
//! A secondary MMU of your own keeps its tables as pages that point to pages. Lockless walkers
//! ([P5](crate::protocols#p5)) follow those pointers while a zapper holding `mmu_lock` may
//! unlink a page and free it. [`TableLink`] is such a pointer, and splits what P5 needs among
//! its three calls, so that the walker's side is safe code:
//!
//! * [`link`](TableLink::link) (unsafe, `mmu_lock` held for write) publishes a page with a
//!   release store: a walker that finds the page also sees its initialization. Its contract
//!   is the one place where a page's life is promised: it stays allocated until it has been
//!   unlinked and then freed only by [`ZapList::commit`](crate::ZapList::commit) or
//!   [`ReclaimHandle::zap`](crate::ReclaimHandle::zap), which wait for every walk that could
//!   still reach it.
//! * [`unlink`](TableLink::unlink) (`mmu_lock` held for write) clears the link and hands the
//!   page back, to be queued on a [`ZapList`](crate::ZapList) or retired the epoch way (Z1).
//! * [`follow`](TableLink::follow) reads the link with an acquire load under a [`WalkGuard`]
//!   (a [`LocklessWalk`], an [`EpochWalk`](crate::EpochWalk), or `mmu_lock` either way) and
//!   returns a reference that lives as long as the guard's borrow: the borrow checker keeps
//!   the walker from using the page after its walk ended, which is exactly the window in which
//!   the zapper may free it.
//!
//! The orderings are those of the reference MMU's own links ([`crate::PageTable`]), which
//! the model checkers run; `TableLink` itself is exercised by unit tests and Miri, not by
//! loom or shuttle scenarios.

use crate::hal::{Atomic, Hal, Ordering};
use crate::lock::{MmuReadGuard, MmuWriteGuard};
use crate::walk::LocklessWalk;
use core::fmt;
use core::marker::PhantomData;
use core::ptr::NonNull;

mod sealed {
    pub trait Sealed {}
}

/// Evidence that the table pages a walker reaches stay allocated while it is borrowed: an
/// open [`LocklessWalk`] (the IPI way), an [`EpochWalk`](crate::EpochWalk) (the epoch way),
/// or `mmu_lock` held either way (nobody unlinks under a read lock, and the zapper frees only
/// pages it unlinked under the write lock).
///
/// Sealed: the guarantee comes from the crate's own protocols.
pub trait WalkGuard: sealed::Sealed {}

impl<H: crate::hal::Cpus> sealed::Sealed for LocklessWalk<'_, H> {}
impl<H: crate::hal::Cpus> WalkGuard for LocklessWalk<'_, H> {}
#[cfg(feature = "alloc")]
impl sealed::Sealed for crate::epoch::EpochWalk {}
#[cfg(feature = "alloc")]
impl WalkGuard for crate::epoch::EpochWalk {}
impl<H: Hal> sealed::Sealed for MmuReadGuard<'_, H> {}
impl<H: Hal> WalkGuard for MmuReadGuard<'_, H> {}
impl<H: Hal> sealed::Sealed for MmuWriteGuard<'_, H> {}
impl<H: Hal> WalkGuard for MmuWriteGuard<'_, H> {}

/// A link to a table page of type `P`, held in the parent page (or in the root's owner).
///
/// ```
/// use mmusync::{MmuLock, StdHal, TableLink};
/// use std::ptr::NonNull;
///
/// struct Leaf {
///     pfn: u64,
/// }
///
/// let lock = MmuLock::<StdHal>::new();
/// let link: TableLink<StdHal, Leaf> = TableLink::new();
/// let page = NonNull::from(Box::leak(Box::new(Leaf { pfn: 42 })));
/// // SAFETY: the page is valid, and this example frees it only after unlinking it, when no
/// // walk is open.
/// unsafe { link.link(&lock.write(), page) }.unwrap();
///
/// let walk = lock.read(); // or a LocklessWalk, or an EpochWalk
/// assert_eq!(link.follow(&walk).map(|leaf| leaf.pfn), Some(42));
/// drop(walk);
///
/// let unlinked = link.unlink(&lock.write()).unwrap();
/// // A real zapper queues it on a ZapList; here nobody can still reach it.
/// // SAFETY: allocated by Box above, unlinked, and no walk is open.
/// drop(unsafe { Box::from_raw(unlinked.as_ptr()) });
/// ```
pub struct TableLink<H: Hal, P> {
    page: H::AtomicUsize,
    _page: PhantomData<NonNull<P>>,
}

// SAFETY: a `TableLink` is an atomic address plus the right to read the page at it: sharing
// it across threads shares `&P` (so `P: Sync`), and moving it moves nothing but the address.
unsafe impl<H: Hal, P: Sync> Sync for TableLink<H, P> {}
// SAFETY: as above; the page is owned by the tables, not by the link, so `P: Send` is not
// needed to move the link, but `&P` may be read on the new thread.
unsafe impl<H: Hal, P: Sync> Send for TableLink<H, P> {}

impl<H: Hal, P> TableLink<H, P> {
    /// An empty link.
    pub fn new() -> Self {
        TableLink { page: H::AtomicUsize::new(0), _page: PhantomData }
    }

    /// Links `page`, replacing nothing: the link must be empty (an occupied link is left as
    /// it was and `page` is handed back, so no page is lost).
    ///
    /// The store is a release: the page's initialization comes before any walker's view of the
    /// link.
    ///
    /// # Safety
    ///
    /// * `page` points to a valid, initialized `P` that nobody else owns;
    /// * it stays allocated until it has been [`unlink`](Self::unlink)ed, and is then freed
    ///   only by a [`ZapList::commit`](crate::ZapList::commit) that covers every vCPU walking
    ///   these tables, or a [`ReclaimHandle::zap`](crate::ReclaimHandle::zap) of the reclaimer
    ///   whose [`EpochWalk`](crate::EpochWalk)s walk them;
    /// * the link itself (the page holding it) outlives every walker that reaches it, by the
    ///   same rules.
    pub unsafe fn link(&self, guard: &MmuWriteGuard<'_, H>, page: NonNull<P>) -> Result<(), NonNull<P>> {
        let _ = guard;
        if self.page.load(Ordering::Relaxed) != 0 {
            return Err(page);
        }
        // Release: pairs with the acquire load in `follow`; without it a walker could find the
        // page before its contents are visible and read garbage.
        self.page.store(page.as_ptr() as usize, Ordering::Release);
        Ok(())
    }

    /// Clears the link and hands back the page it held, if any (Z1): walks that begin from now
    /// on cannot find it, walks already open may still read it. Queue it on a
    /// [`ZapList`](crate::ZapList) or retire it the epoch way; freeing it directly is what
    /// P5 forbids.
    pub fn unlink(&self, guard: &MmuWriteGuard<'_, H>) -> Option<NonNull<P>> {
        let _ = guard;
        let old = self.page.load(Ordering::Relaxed);
        self.page.store(0, Ordering::Relaxed);
        NonNull::new(old as *mut P)
    }

    /// The linked page, read under `walk`. The reference cannot outlive the borrow of the
    /// walk guard, so it cannot be used after the walk ends.
    pub fn follow<'w, W: WalkGuard>(&'w self, walk: &'w W) -> Option<&'w P> {
        let _ = walk;
        // Acquire: pairs with the release store in `link` (the page's initialization).
        let page = NonNull::new(self.page.load(Ordering::Acquire) as *mut P)?;
        // SAFETY: `link`'s contract: a linked page stays allocated until it is unlinked and
        // then freed by a zap that waits for every open walk; `walk` is such a walk (or holds
        // `mmu_lock`, under which nobody unlinks and frees), it began before this load, and
        // the returned borrow ends before the walk does. The acquire load makes the page's
        // initialization visible.
        Some(unsafe { page.as_ref() })
    }
}

impl<H: Hal, P> Default for TableLink<H, P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hal, P> fmt::Debug for TableLink<H, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableLink").finish_non_exhaustive()
    }
}

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::hal::PageAlloc;
    use crate::lock::MmuLock;
    use crate::vcpu::Vcpu;
    use crate::walk::ZapList;
    use std::boxed::Box;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::vec::Vec;

    struct Table {
        children: [TableLink<StdHal, Leaf>; 2],
    }

    struct Leaf {
        pfn: u64,
    }

    #[derive(Default)]
    struct Boxes {
        freed: AtomicUsize,
    }

    // SAFETY: pages are boxes; `free` takes back a box this allocator made.
    unsafe impl PageAlloc<Leaf> for Boxes {
        fn alloc(&self, page: Leaf) -> Result<NonNull<Leaf>, Leaf> {
            Ok(NonNull::from(Box::leak(Box::new(page))))
        }
        unsafe fn free(&self, page: NonNull<Leaf>) {
            self.freed.fetch_add(1, SeqCst);
            // SAFETY: `free`'s contract: the page came from `alloc` (a box) and is freed once.
            drop(unsafe { Box::from_raw(page.as_ptr()) });
        }
    }

    fn linked_root(lock: &MmuLock<StdHal>, alloc: &Boxes) -> Table {
        let root = Table { children: [TableLink::new(), TableLink::new()] };
        for (i, child) in root.children.iter().enumerate() {
            let page = alloc.alloc(Leaf { pfn: 100 + i as u64 }).ok().unwrap();
            // SAFETY: a fresh page, freed only after it is unlinked, with no walk open.
            unsafe { child.link(&lock.write(), page) }.unwrap();
        }
        root
    }

    /// Unlinks every child and frees it through a zap list committed with `vcpus`.
    fn zap_all(lock: &MmuLock<StdHal>, alloc: &Boxes, root: &Table, vcpus: &[Vcpu<StdHal>]) -> usize {
        let mut zap: ZapList<Leaf, 2> = ZapList::new();
        let g = lock.write();
        for child in &root.children {
            let page = child.unlink(&g).unwrap();
            assert!(child.follow(&g).is_none(), "unlinked");
            // SAFETY: unlinked above, from `alloc`, queued once, committed with every vCPU.
            unsafe { zap.push(page) }.unwrap();
        }
        drop(g);
        zap.commit(&StdHal, vcpus, alloc).freed()
    }

    // No CPU registration, so that Miri runs it whole: links, follows under mmu_lock, the
    // occupied-link refusal and the frees.
    #[test]
    fn links_are_followed_under_mmu_lock_and_freed_after_unlink() {
        let (lock, alloc) = (MmuLock::<StdHal>::new(), Boxes::default());
        let root = linked_root(&lock, &alloc);
        let spare = alloc.alloc(Leaf { pfn: 7 }).ok().unwrap();
        // SAFETY: as in `linked_root`; the occupied link refuses it and hands it back.
        assert_eq!(unsafe { root.children[0].link(&lock.write(), spare) }, Err(spare));
        // SAFETY: `spare` came from `alloc` and was never linked.
        unsafe { alloc.free(spare) };
        let g = lock.read();
        let pfns: Vec<_> = root.children.iter().map(|c| c.follow(&g).map(|l| l.pfn)).collect();
        assert_eq!(pfns, [Some(100), Some(101)]);
        drop(g);
        assert_eq!(zap_all(&lock, &alloc, &root, &[]), 2);
        assert_eq!(alloc.freed.load(SeqCst), 3);
    }

    #[test]
    fn a_lockless_walk_follows_links() {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        vcpus[0].load(cpu.cpu()).unwrap();
        let (lock, alloc) = (MmuLock::<StdHal>::new(), Boxes::default());
        let root = linked_root(&lock, &alloc);
        let walk = vcpus[0].walk_lockless_begin().unwrap();
        assert_eq!(root.children[1].follow(&walk).map(|l| l.pfn), Some(101));
        drop(walk);
        assert_eq!(zap_all(&lock, &alloc, &root, &vcpus), 2);
        vcpus[0].put().unwrap();
    }
}
