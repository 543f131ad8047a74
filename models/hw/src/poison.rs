//! Poisoned, quarantined memory: freed pages are overwritten with a pattern and never reused.
//!
//! Under a mutant, the protocols no longer keep freed pages away from readers. To see that
//! on real threads without undefined behaviour, nothing is really freed while roles run:
//!
//! * [`PoisonAlloc`] (table pages): `free` stores [`POISON_SPTE`] into every entry of the page
//!   (atomic stores, so a racing reader's atomic load is defined and simply returns poison) and
//!   moves the page to a quarantine. Memory goes back to the system only at a quiescent point
//!   ([`PoisonAlloc::release_quarantine`], between batches, when no role runs) or when the last
//!   handle drops.
//! * [`GuestPages`] (guest memory): page `pfn` holds words that name it while it is live; `free`
//!   overwrites them with [`POISON_WORD`] and marks the page freed; pfns are never handed out
//!   twice.
//!
//! The poison SPTE is a present *leaf* with pfn [`POISON_PFN`]: a walker that follows a link
//! into a freed table page finds a leaf it can recognize, and never a link into garbage.

use mmusync::hal::{Atomic, Hal, Ordering::Relaxed, PageAlloc};
use mmusync::mmu::{Spte, Table};
use mmusync::range::Pfn;
use std::collections::HashSet;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};

/// The pfn of [`POISON_SPTE`]; no guest page has it.
pub const POISON_PFN: Pfn = Pfn(0xdead_beef);

/// What every entry of a freed table page holds: a present, read-only leaf mapping
/// [`POISON_PFN`] (bit 0 present, no table bit).
pub const POISON_SPTE: u64 = POISON_PFN.0 << 12 | 1;

/// What every word of a freed guest page holds.
pub const POISON_WORD: u64 = 0xdead_beef_dead_beef;

/// A page type whose freed copies can be recognized.
pub trait Poison {
    /// Overwrites the page with poison (atomic stores only).
    fn poison(&self);
}

impl<H: Hal, const F: usize> Poison for Table<H, F> {
    fn poison(&self) {
        for i in 0..F {
            if let Some(e) = self.entry(i) {
                e.store(POISON_SPTE, Relaxed);
            }
        }
    }
}

/// Whether `spte` is the poison a freed table page holds.
pub fn is_poison(spte: Spte) -> bool {
    spte.bits() == POISON_SPTE
}

/// Counters of a [`PoisonAlloc`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Pages allocated.
    pub allocs: u64,
    /// Pages freed (poisoned and quarantined).
    pub frees: u64,
    /// The most pages allocated and not yet freed at once.
    pub peak_live: u64,
}

struct Pages {
    live: HashSet<usize>,
    quarantine: Vec<usize>,
}

struct Inner<P> {
    pages: Mutex<Pages>,
    allocs: AtomicU64,
    frees: AtomicU64,
    peak_live: AtomicU64,
    /// Owns `P`s: they are dropped on whichever thread drops the last handle.
    _pages: std::marker::PhantomData<P>,
}

impl<P> Inner<P> {
    fn lock(&self) -> MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<P> Drop for Inner<P> {
    fn drop(&mut self) {
        let pages = self.pages.get_mut().unwrap_or_else(|e| e.into_inner());
        for addr in pages.live.drain().chain(pages.quarantine.drain(..)) {
            // SAFETY: every address came from `Box::into_raw` in `alloc` and sits in exactly
            // one of the two sets; the last handle is gone, so no role can read it any more.
            drop(unsafe { Box::from_raw(addr as *mut P) });
        }
    }
}

/// A page allocator that poisons and quarantines freed pages (see the [module docs](self)).
/// Clones share the pages.
pub struct PoisonAlloc<P> {
    inner: Arc<Inner<P>>,
}

impl<P> Clone for PoisonAlloc<P> {
    fn clone(&self) -> Self {
        PoisonAlloc { inner: self.inner.clone() }
    }
}

impl<P> Default for PoisonAlloc<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> PoisonAlloc<P> {
    /// An allocator with no pages.
    pub fn new() -> Self {
        PoisonAlloc {
            inner: Arc::new(Inner {
                pages: Mutex::new(Pages { live: HashSet::new(), quarantine: Vec::new() }),
                allocs: AtomicU64::new(0),
                frees: AtomicU64::new(0),
                peak_live: AtomicU64::new(0),
                _pages: std::marker::PhantomData,
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> AllocStats {
        AllocStats {
            allocs: self.inner.allocs.load(SeqCst),
            frees: self.inner.frees.load(SeqCst),
            peak_live: self.inner.peak_live.load(SeqCst),
        }
    }

    /// Pages allocated and not freed now.
    pub fn live(&self) -> usize {
        self.inner.lock().live.len()
    }

    /// Gives the quarantined pages' memory back to the system.
    ///
    /// # Safety
    ///
    /// No thread may read or write a freed page of this allocator from now on: call it at a
    /// quiescent point, when no role runs and no pointer to a freed page is kept anywhere.
    pub unsafe fn release_quarantine(&self) {
        let freed = std::mem::take(&mut self.inner.lock().quarantine);
        for addr in freed {
            // SAFETY: from `Box::into_raw` in `alloc`, freed once (it left `live` then), and the
            // caller guarantees nobody uses it any more.
            drop(unsafe { Box::from_raw(addr as *mut P) });
        }
    }
}

// SAFETY: `alloc` returns a fresh `Box` (valid, aligned, holding `init`), owned by the caller
// until `free`. Memory is never handed out again while anyone may hold a pointer to it: freed
// pages stay allocated in the quarantine until `release_quarantine` (whose caller promises
// quiescence) or the last handle drops.
unsafe impl<P: Poison> PageAlloc<P> for PoisonAlloc<P> {
    fn alloc(&self, init: P) -> Result<NonNull<P>, P> {
        let page = NonNull::from(Box::leak(Box::new(init)));
        let live = {
            let mut pages = self.inner.lock();
            pages.live.insert(page.as_ptr() as usize);
            pages.live.len() as u64
        };
        self.inner.allocs.fetch_add(1, SeqCst);
        self.inner.peak_live.fetch_max(live, SeqCst);
        Ok(page)
    }

    /// Poisons the page and quarantines it.
    ///
    /// # Panics
    ///
    /// If `page` is not live (a double free, or a page of another allocator).
    unsafe fn free(&self, page: NonNull<P>) {
        let addr = page.as_ptr() as usize;
        let mut pages = self.inner.lock();
        assert!(pages.live.remove(&addr), "poison allocator: free of a page that is not live (double free?)");
        // SAFETY: the page is still allocated (it was live until now and goes to the
        // quarantine, not back to the system); poisoning uses atomic stores only, so racing
        // readers (possible only under a mutant) stay defined.
        unsafe { page.as_ref() }.poison();
        pages.quarantine.push(addr);
        drop(pages);
        self.inner.frees.fetch_add(1, SeqCst);
    }
}

/// One guest page: a few words of contents and a ghost `freed` flag.
struct GuestPage {
    words: [AtomicU64; GuestPages::WORDS],
    freed: AtomicBool,
}

/// Guest memory: pages `1..=capacity`, each handed out once, poisoned when freed.
pub struct GuestPages {
    pages: Box<[GuestPage]>,
    next: AtomicUsize,
}

/// A read of guest memory that found something wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestRead {
    /// The page is live and held what it should.
    Ok,
    /// The page was freed: its words are poison (or being poisoned).
    Freed,
    /// The pfn is not a page of this pool (0, beyond the pool, or [`POISON_PFN`]).
    NotAPage,
}

impl GuestPages {
    /// Words per page.
    pub const WORDS: usize = 4;

    /// A pool of `capacity` pages, none handed out.
    pub fn new(capacity: usize) -> Self {
        GuestPages {
            pages: (0..capacity)
                .map(|_| GuestPage {
                    words: std::array::from_fn(|_| AtomicU64::new(0)),
                    freed: AtomicBool::new(false),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    fn page(&self, pfn: Pfn) -> Option<&GuestPage> {
        usize::try_from(pfn.0).ok().and_then(|i| i.checked_sub(1)).and_then(|i| self.pages.get(i))
    }

    /// Hands out a fresh page (its words hold its pfn), or `None` when the pool is used up.
    pub fn alloc(&self) -> Option<Pfn> {
        let i = self.next.fetch_add(1, SeqCst);
        let page = self.pages.get(i)?;
        let pfn = Pfn(i as u64 + 1);
        for w in &page.words {
            w.store(pfn.0, Relaxed);
        }
        Some(pfn)
    }

    /// Frees page `pfn`: marks it freed, then poisons its words.
    ///
    /// # Panics
    ///
    /// If `pfn` is not a handed-out page, or is freed twice.
    pub fn free(&self, pfn: Pfn) {
        let page = self.page(pfn).unwrap_or_else(|| panic!("guest pages: pfn {pfn} is not a page"));
        assert!(!page.freed.swap(true, SeqCst), "guest pages: pfn {pfn} freed twice");
        for w in &page.words {
            w.store(POISON_WORD, Relaxed);
        }
    }

    /// Whether `pfn` has been freed (ghost state).
    pub fn is_freed(&self, pfn: Pfn) -> bool {
        self.page(pfn).is_some_and(|p| p.freed.load(SeqCst))
    }

    /// Reads page `pfn` as a guest access through a translation would.
    pub fn read(&self, pfn: Pfn) -> GuestRead {
        let Some(page) = self.page(pfn) else { return GuestRead::NotAPage };
        if page.words.iter().any(|w| w.load(Relaxed) != pfn.0) {
            GuestRead::Freed
        } else {
            GuestRead::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mmusync::hal::std::StdHal;

    #[test]
    fn poison_spte_is_a_recognizable_leaf() {
        let s = Spte::leaf(POISON_PFN, false, false).unwrap();
        assert_eq!(s.bits(), POISON_SPTE);
        assert!(s.is_leaf() && is_poison(s));
        assert_eq!(s.pfn(), Some(POISON_PFN));
    }

    #[test]
    fn freed_table_pages_are_poisoned_and_kept() {
        let a = PoisonAlloc::<Table<StdHal, 4>>::new();
        let t = Table::<StdHal, 4>::empty();
        t.entry(2).unwrap().store(Spte::leaf(Pfn(7), true, true).unwrap().bits(), Relaxed);
        let page = a.alloc(t).ok().unwrap();
        assert_eq!(a.live(), 1);
        // SAFETY: from `a`, freed once; we read it below only because the allocator keeps it.
        unsafe { a.free(page) };
        // SAFETY: the page is quarantined, not released: still allocated.
        let freed = unsafe { page.as_ref() };
        assert!((0..4).all(|i| freed.entry(i).unwrap().load(Relaxed) == POISON_SPTE));
        assert_eq!(a.stats(), AllocStats { allocs: 1, frees: 1, peak_live: 1 });
        // SAFETY: nothing reads the page after this point.
        unsafe { a.release_quarantine() };
        assert_eq!(a.live(), 0);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        let a = PoisonAlloc::<Table<StdHal, 2>>::new();
        let page = a.alloc(Table::empty()).ok().unwrap();
        // SAFETY: from `a`; the second free is the bug under test, and it is caught before
        // touching the page.
        unsafe {
            a.free(page);
            a.free(page);
        }
    }

    #[test]
    fn guest_pages_poison_on_free() {
        let g = GuestPages::new(2);
        let p = g.alloc().unwrap();
        assert_eq!(g.read(p), GuestRead::Ok);
        g.free(p);
        assert!(g.is_freed(p));
        assert_eq!(g.read(p), GuestRead::Freed);
        assert_eq!(g.read(Pfn(0)), GuestRead::NotAPage);
        assert_eq!(g.read(POISON_PFN), GuestRead::NotAPage);
        assert!(g.alloc().is_some() && g.alloc().is_none(), "pfns are never reused");
    }
}
