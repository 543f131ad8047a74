//! Ghost state: facts about the world that the protocols do not store but the invariants talk
//! about (which pages are freed, which memslot was deleted).
//!
//! Ghost state uses `core` atomics with `SeqCst`, which model checkers such as loom do not
//! model: it records physical events in the order the executor runs them and never orders the
//! roles' model memory. See the crate documentation for the caveat under real threads.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// A page frame number: core's [`mmusync::Pfn`]. `Pfn(0)` means "no page"; pools hand out
/// `1..=N`.
pub use mmusync::Pfn;

/// Liveness of `N` pages, numbered `1..=N`.
pub struct Pages<const N: usize> {
    freed: [AtomicBool; N],
}

impl<const N: usize> Default for Pages<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Pages<N> {
    /// All pages live.
    pub fn new() -> Self {
        Pages { freed: core::array::from_fn(|_| AtomicBool::new(false)) }
    }

    fn slot(&self, pfn: Pfn) -> &AtomicBool {
        match usize::try_from(pfn.0).ok().and_then(|i| i.checked_sub(1)).and_then(|i| self.freed.get(i)) {
            Some(s) => s,
            None => panic!("ghost: pfn {pfn} is not a page of this pool"),
        }
    }

    /// Marks `pfn` freed. Freeing a page twice is a scenario bug and panics.
    pub fn free(&self, pfn: Pfn) {
        assert!(!self.slot(pfn).swap(true, SeqCst), "ghost: pfn {pfn} freed twice");
    }

    /// Marks the freed `pfn` live again: its allocator handed the page out anew (a recycled
    /// table page). Reusing a page that is not freed is a scenario bug and panics.
    pub fn reuse(&self, pfn: Pfn) {
        assert!(self.slot(pfn).swap(false, SeqCst), "ghost: pfn {pfn} reused while live");
    }

    /// Whether `pfn` has been freed. `Pfn(0)` (no page) is never freed.
    pub fn is_freed(&self, pfn: Pfn) -> bool {
        pfn != Pfn(0) && self.slot(pfn).load(SeqCst)
    }
}

/// A ghost flag (a memslot was deleted, a flush returned, ...).
#[derive(Default)]
pub struct Flag(AtomicBool);

impl Flag {
    /// Unset.
    pub const fn new() -> Self {
        Flag(AtomicBool::new(false))
    }

    /// Sets it.
    pub fn set(&self) {
        self.0.store(true, SeqCst)
    }

    /// Whether it is set.
    pub fn get(&self) -> bool {
        self.0.load(SeqCst)
    }
}

/// A ghost counter.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Zero.
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds one, returning the new value.
    pub fn bump(&self) -> u64 {
        self.0.fetch_add(1, SeqCst) + 1
    }

    /// The value.
    pub fn get(&self) -> u64 {
        self.0.load(SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_track_frees() {
        let p = Pages::<2>::new();
        assert!(!p.is_freed(Pfn(0)) && !p.is_freed(Pfn(1)));
        p.free(Pfn(2));
        assert!(p.is_freed(Pfn(2)) && !p.is_freed(Pfn(1)));
    }

    #[test]
    #[should_panic(expected = "freed twice")]
    fn double_free_is_a_scenario_bug() {
        let p = Pages::<1>::new();
        p.free(Pfn(1));
        p.free(Pfn(1));
    }
}
