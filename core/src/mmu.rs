//! A reference secondary MMU: a multi-level page table with atomic entries, built on P1–P5.
//!
//! It shows how the pieces fit, and it gives the tests, models and fuzzers something real to
//! drive:
//!
//! * [`PageTable`]: `LEVELS` levels of `F`-entry tables ([`Table`]) holding [`Spte`]s. Updates
//!   happen under `mmu_lock` held for write; lockless walks ([`PageTable::walk`]) need a
//!   [`WalkProof`]: a [`LocklessWalk`] (the IPI/vCPU-mode scheme), an [`EpochWalk`] (the epoch
//!   scheme), or `mmu_lock` itself.
//! * [`ReferenceMmu`]: a page table plus the vCPUs that use it. It implements
//!   [`SecondaryMmu`] for the notifier (zap + flush), the fault path
//!   ([`ReferenceMmu::fault`], [F0–F14](crate::protocols#the-fault-path)), the lockless fast path
//!   ([`ReferenceMmu::fast_fault`], a cmpxchg on a present SPTE), and zaps that free table
//!   pages the way its type says ([`crate::reclamation`]: [`ReferenceMmu::zap_ipi`] for
//!   [`IpiReclamation`], [`ReferenceMmu::zap_epoch`] for [`EpochReclamation`]).
//!
//! Misuse is refused, not trusted: a page table belongs to one `mmu_lock` (the first whose
//! guard touches it; guards of any other lock get [`Error::Foreign`]); a lockless walk counts
//! only if [`ReferenceMmu`] waits for it (a walk on one of its vCPUs, or a pin of its own epoch
//! domain, which only an epoch-way MMU has); and one MMU frees its tables one way only, so safe
//! code cannot make a zap free a table under a walk it does not wait for.
//!
//! Links to child tables are published after [`Barrier::TableLinkPublish`] (release) and
//! followed with [`Barrier::TableLinkFollow`] (acquire): the child's entries are initialized
//! before a walker that finds the link reads them. (LKMM gets the reader's half from the
//! address dependency, as `rcu_dereference` does; C11 has no dependency ordering, so acquire it
//! is.) Both are named barriers, so a model can drop either one.

use crate::barrier::Barrier;
use crate::epoch::{EpochReclaimer, EpochWalk, ReclaimHandle};
use crate::error::Error;
use crate::hal::{Atomic, AtomicInt, Cpus, Hal, Ordering, PageAlloc};
use crate::lock::{MmuLocked, MmuReadGuard, MmuWriteGuard};
use crate::memslot::Memslot;
use crate::notifier::{SecondaryMmu, Vm};
use crate::range::{Gfn, GfnRange, Hva, Pfn};
use crate::reclamation::{EpochReclamation, IpiReclamation, Reclamation};
use crate::rule::Rule;
use crate::step::Step;
use crate::vcpu::{flush_remote_tlbs, flush_remote_tlbs_range, Vcpu};
use crate::walk::{LocklessWalk, ZapList, ZapListFull};
use alloc::boxed::Box;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering as BookkeepingOrdering};

/// A secondary-MMU page-table entry.
///
/// Bit 0: present. Bit 1: writable (what the hardware checks). Bit 2: MMU-writable (the fast
/// path may set bit 1). Bit 3: points to a table. Bit 4: accessed, bit 5: dirty (leaves only;
/// the hardware sets them with an atomic OR while it uses the leaf, [D1](crate::protocols#d1)).
/// Leaves hold the pfn from bit 12; table entries hold the table's address (tables are 64-byte
/// aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spte(u64);

impl Spte {
    const PRESENT: u64 = 1 << 0;
    const WRITABLE: u64 = 1 << 1;
    const MMU_WRITABLE: u64 = 1 << 2;
    const TABLE: u64 = 1 << 3;
    /// The accessed bit, which the hardware sets (atomic OR) when it uses a leaf.
    pub const ACCESSED: u64 = 1 << 4;
    /// The dirty bit, which the hardware sets (atomic OR) when it writes through a leaf.
    pub const DIRTY: u64 = 1 << 5;
    const FLAGS: u64 = 0x3f;
    /// The largest pfn a leaf can hold.
    pub const MAX_PFN: Pfn = Pfn(u64::MAX >> 12);

    /// A leaf mapping `pfn`. `writable`: writes allowed now; `mmu_writable`: the fast path may
    /// make it writable later.
    pub fn leaf(pfn: Pfn, writable: bool, mmu_writable: bool) -> Result<Self, Error> {
        if pfn > Self::MAX_PFN {
            return Err(Error::RangeOverflow);
        }
        let w = if writable { Self::WRITABLE | Self::MMU_WRITABLE } else { 0 };
        let mw = if mmu_writable { Self::MMU_WRITABLE } else { 0 };
        Ok(Spte(pfn.0 << 12 | Self::PRESENT | w | mw))
    }

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether the entry maps anything.
    pub const fn is_present(self) -> bool {
        self.0 & Self::PRESENT != 0
    }

    /// Whether the hardware may write through it.
    pub const fn is_writable(self) -> bool {
        self.0 & Self::WRITABLE != 0
    }

    /// Whether the accessed bit is set.
    pub const fn is_accessed(self) -> bool {
        self.0 & Self::ACCESSED != 0
    }

    /// Whether the dirty bit is set.
    pub const fn is_dirty(self) -> bool {
        self.0 & Self::DIRTY != 0
    }

    /// Whether it is a present leaf.
    pub const fn is_leaf(self) -> bool {
        self.is_present() && self.0 & Self::TABLE == 0
    }

    /// The pfn of a present leaf.
    pub const fn pfn(self) -> Option<Pfn> {
        if self.is_leaf() {
            Some(Pfn(self.0 >> 12))
        } else {
            None
        }
    }

    fn table<H: Hal, const F: usize>(self) -> Option<NonNull<Table<H, F>>> {
        if self.is_present() && self.0 & Self::TABLE != 0 {
            NonNull::new((self.0 & !Self::FLAGS) as *mut Table<H, F>)
        } else {
            None
        }
    }

    fn link<H: Hal, const F: usize>(table: NonNull<Table<H, F>>) -> Self {
        Spte(table.as_ptr() as u64 | Self::PRESENT | Self::TABLE)
    }
}

/// The exchange of a leaf that the hardware may update concurrently (D2): an atomic swap, or,
/// as `Rule::SpteUpdateIsAtomic`'s mutant, a load followed by a store, which loses an accessed or
/// dirty bit set in between.
fn exchange<A: Atomic<u64>>(entry: &A, new: u64, atomic: bool) -> u64 {
    if atomic {
        entry.swap(new, Ordering::Relaxed)
    } else {
        let old = entry.load(Ordering::Relaxed);
        entry.store(new, Ordering::Relaxed);
        old
    }
}

/// The primary MMU's per-page state that the secondary MMU's accessed and dirty bits feed
/// ([D3](crate::protocols#d3)): KVM's `kvm_set_pfn_accessed` / `kvm_set_pfn_dirty`
/// (`folio_mark_accessed`, `folio_mark_dirty`). [`ReferenceMmu`] calls it with the old bits of
/// every leaf it replaces or zaps, so that no dirty bit the hardware set is lost (I5.7).
pub trait PageTracker: Sync {
    /// The guest accessed `pfn` through a translation that is now gone.
    fn mark_accessed(&self, pfn: Pfn);
    /// The guest wrote `pfn` through a translation that is now gone.
    fn mark_dirty(&self, pfn: Pfn);
}

/// One page-table page: `F` atomic entries.
#[repr(align(64))]
pub struct Table<H: Hal, const F: usize> {
    entries: [H::AtomicU64; F],
}

impl<H: Hal, const F: usize> fmt::Debug for Table<H, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table").field("entries", &F).finish_non_exhaustive()
    }
}

impl<H: Hal, const F: usize> Table<H, F> {
    /// A table with no present entry.
    pub fn empty() -> Self {
        Table { entries: core::array::from_fn(|_| H::AtomicU64::new(0)) }
    }

    /// The raw entry at `index` (used by tests that poison freed pages).
    pub fn entry(&self, index: usize) -> Option<&H::AtomicU64> {
        self.entries.get(index)
    }
}

/// Allocates tables with `Box` (the `alloc` crate's global allocator).
#[derive(Clone, Copy, Debug, Default)]
pub struct BoxAlloc;

// SAFETY: `Box::new` gives a valid, aligned, exclusively owned value; `free` turns the pointer
// back into the `Box` it came from, once, after which nobody reads it (`free`'s contract).
unsafe impl<P> PageAlloc<P> for BoxAlloc {
    fn alloc(&self, init: P) -> Result<NonNull<P>, P> {
        Ok(NonNull::from(Box::leak(Box::new(init))))
    }

    unsafe fn free(&self, page: NonNull<P>) {
        // SAFETY: the caller passes a pointer from `alloc` (a leaked Box), once.
        drop(unsafe { Box::from_raw(page.as_ptr()) });
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Evidence that table pages reached during a walk stay allocated: a lockless walk of either
/// scheme, or `mmu_lock`. [`ReferenceMmu::walk`] checks that the evidence is about *this*
/// MMU: a walk on one of its vCPUs, a pin of its epoch domain, or its `mmu_lock`.
pub trait WalkProof<H: Cpus>: sealed::Sealed {
    /// Whether the MMU's reclamation waits for this walk.
    #[doc(hidden)]
    fn covers(&self, vcpus: &[Vcpu<H>], epoch_domain: Option<u64>, lock: &LockBinding) -> bool;
}

impl<H: Cpus> sealed::Sealed for LocklessWalk<'_, H> {}
impl<H: Cpus> WalkProof<H> for LocklessWalk<'_, H> {
    fn covers(&self, vcpus: &[Vcpu<H>], _: Option<u64>, _: &LockBinding) -> bool {
        vcpus.iter().any(|v| core::ptr::eq(v, self.vcpu()))
    }
}
impl sealed::Sealed for EpochWalk {}
impl<H: Cpus> WalkProof<H> for EpochWalk {
    fn covers(&self, _: &[Vcpu<H>], epoch_domain: Option<u64>, _: &LockBinding) -> bool {
        epoch_domain == Some(self.domain())
    }
}
impl<H: Hal> sealed::Sealed for MmuReadGuard<'_, H> {}
impl<H: Cpus> WalkProof<H> for MmuReadGuard<'_, H> {
    fn covers(&self, _: &[Vcpu<H>], _: Option<u64>, lock: &LockBinding) -> bool {
        lock.check(self).is_ok()
    }
}
impl<H: Hal> sealed::Sealed for MmuWriteGuard<'_, H> {}
impl<H: Cpus> WalkProof<H> for MmuWriteGuard<'_, H> {
    fn covers(&self, _: &[Vcpu<H>], _: Option<u64>, lock: &LockBinding) -> bool {
        lock.check(self).is_ok()
    }
}

/// The `mmu_lock` a page table belongs to: the first whose guard touches it.
///
/// Identity is the lock's address. Two live locks never share one, so guards of another live
/// lock are always refused. Bookkeeping only, hence a plain `core` atomic.
#[derive(Debug, Default)]
#[doc(hidden)]
pub struct LockBinding(AtomicUsize);

impl LockBinding {
    fn check(&self, guard: &impl MmuLocked) -> Result<(), Error> {
        let id = guard.lock_id() as usize;
        match self.0.compare_exchange(0, id, BookkeepingOrdering::Relaxed, BookkeepingOrdering::Relaxed) {
            Ok(_) => Ok(()),
            Err(bound) if bound == id => Ok(()),
            Err(_) => Err(Error::Foreign),
        }
    }
}

/// One aging walk's parameters ([`PageTable::age`], the lockless ager).
struct Aging {
    gfns: GfnRange,
    /// Clear the accessed bits (or only test them).
    clear: bool,
    /// Clear them with an atomic AND (`false`: the `SpteUpdateIsAtomic` mutant).
    atomic: bool,
}

/// A page table of `LEVELS` levels of `F` entries: it maps gfns `0..F^LEVELS`.
pub struct PageTable<H: Hal, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize> {
    /// Issues the table-link barriers ([`Barrier::TableLinkPublish`],
    /// [`Barrier::TableLinkFollow`]).
    hal: H,
    alloc: A,
    root: NonNull<Table<H, F>>,
    lock: LockBinding,
}

impl<H: Hal, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize> fmt::Debug
    for PageTable<H, A, LEVELS, F>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("levels", &LEVELS)
            .field("fanout", &F)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

// SAFETY: the table owns its pages; they are shared between threads only through atomics
// (entries) and freed only under the reclamation protocols, so moving or sharing the owner is
// sound when the allocator and the atomics may be.
unsafe impl<H: Hal, A: PageAlloc<Table<H, F>> + Send, const L: usize, const F: usize> Send
    for PageTable<H, A, L, F>
{
}
// SAFETY: as above; `&PageTable` only reads entries atomically or updates them under the
// `mmu_lock` write guard the methods demand.
unsafe impl<H: Hal, A: PageAlloc<Table<H, F>> + Sync, const L: usize, const F: usize> Sync
    for PageTable<H, A, L, F>
{
}

impl<H: Hal, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize> PageTable<H, A, LEVELS, F> {
    const SHAPE_OK: () = assert!(
        F.is_power_of_two() && F >= 2 && LEVELS >= 1 && F.trailing_zeros() as usize * LEVELS <= 40,
        "F must be a power of two >= 2, and F^LEVELS at most MAX_GFN (2^40)"
    );
    const BITS: u32 = F.trailing_zeros();

    /// An empty table (just the root), whose table pages come from `alloc` and whose
    /// table-link barriers `hal` issues.
    pub fn new(hal: H, alloc: A) -> Result<Self, Error> {
        #[allow(clippy::let_unit_value)]
        let () = Self::SHAPE_OK;
        let root = alloc.alloc(Table::empty()).map_err(|_| Error::OutOfMemory)?;
        Ok(PageTable { hal, alloc, root, lock: LockBinding::default() })
    }

    /// Loads the entry `entry` of a table at a level above the leaves, and if it links a child
    /// table, returns the child after [`Barrier::TableLinkFollow`].
    ///
    /// The barrier pairs with `TableLinkPublish` in `map`: a walker without `mmu_lock` (an
    /// epoch-pinned walk, the lockless ager) may follow a link `map` has just stored, and must
    /// then read the child's entries as `map` initialized them. Without it the child's reads
    /// may return what the page held before (for a recycled page, the entries of a freed
    /// table, taken for leaves or links). Under `mmu_lock` the lock orders them already; the
    /// fence is then redundant but cheap (a compiler barrier on x86).
    fn follow(&self, entry: &H::AtomicU64) -> Option<NonNull<Table<H, F>>> {
        let child = Spte(entry.load(Ordering::Relaxed)).table::<H, F>()?;
        self.hal.barrier(Barrier::TableLinkFollow);
        Some(child)
    }

    /// The gfns this table can map: `0..F^LEVELS` (at most [`crate::range::MAX_GFN`]).
    pub fn capacity(&self) -> u64 {
        1 << (Self::BITS as usize * LEVELS)
    }

    /// The allocator.
    pub fn allocator(&self) -> &A {
        &self.alloc
    }

    fn index(gfn: Gfn, level: usize) -> usize {
        ((gfn.0 >> (Self::BITS as usize * level)) & (F as u64 - 1)) as usize
    }

    fn span(level: usize) -> u64 {
        1 << (Self::BITS as usize * level)
    }

    fn check_gfn(&self, gfn: Gfn) -> Result<(), Error> {
        if gfn.0 < self.capacity() {
            Ok(())
        } else {
            Err(Error::RangeOverflow)
        }
    }

    /// Reads the leaf entry for `gfn` under `mmu_lock` (either mode). `None`: no present leaf.
    /// Lockless walks go through [`ReferenceMmu::walk`], which knows who its zaps wait for.
    pub fn walk(&self, guard: &impl MmuLocked, gfn: Gfn) -> Result<Option<Spte>, Error> {
        self.lock.check(guard)?;
        self.walk_unchecked(gfn)
    }

    /// The walk itself; the caller has checked that the pages it reaches stay allocated.
    fn walk_unchecked(&self, gfn: Gfn) -> Result<Option<Spte>, Error> {
        self.check_gfn(gfn)?;
        Ok(self.leaf_entry(gfn).map(|e| Spte(e.load(Ordering::Relaxed))).filter(|s| s.is_leaf()))
    }

    /// The leaf-level entry of `gfn`, if every table above it is present.
    fn leaf_entry(&self, gfn: Gfn) -> Option<&H::AtomicU64> {
        // SAFETY: the root lives as long as `self`.
        let mut table = unsafe { self.root.as_ref() };
        for level in (1..LEVELS).rev() {
            let child = self.follow(&table.entries[Self::index(gfn, level)])?;
            // SAFETY: the link was read under a WalkProof (or mmu_lock): the page it names is
            // not freed before the proof ends, and `follow`'s TableLinkFollow makes its
            // initialization visible.
            table = unsafe { child.as_ref() };
        }
        Some(&table.entries[Self::index(gfn, 0)])
    }

    /// Installs `spte` for `gfn` under `mmu_lock`, allocating tables on the way. Returns the
    /// previous leaf, if any, with the accessed and dirty bits the hardware set in it (an
    /// atomic exchange, [D2](crate::protocols#d2)): the caller owns them now.
    pub fn map(&self, guard: &MmuWriteGuard<'_, H>, gfn: Gfn, spte: Spte) -> Result<Option<Spte>, Error> {
        self.map_inner(guard, gfn, spte, true)
    }

    /// [`map`](Self::map); `atomic == false` is the mutant of `Rule::SpteUpdateIsAtomic` (a
    /// load, then a store).
    fn map_inner(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        gfn: Gfn,
        spte: Spte,
        atomic: bool,
    ) -> Result<Option<Spte>, Error> {
        self.lock.check(guard)?;
        self.check_gfn(gfn)?;
        // SAFETY: the root lives as long as `self`.
        let mut table = unsafe { self.root.as_ref() };
        for level in (1..LEVELS).rev() {
            let entry = &table.entries[Self::index(gfn, level)];
            let child = match Spte(entry.load(Ordering::Relaxed)).table::<H, F>() {
                Some(child) => child,
                None => {
                    let child = self.alloc.alloc(Table::empty()).map_err(|_| Error::OutOfMemory)?;
                    // Pairs with TableLinkFollow in `follow`: the child's initialized entries
                    // before the link a lockless walker may follow at once. Without it the
                    // walker can read the page's previous contents through the new link.
                    self.hal.barrier(Barrier::TableLinkPublish);
                    entry.store(Spte::link(child).0, Ordering::Relaxed);
                    child
                }
            };
            // SAFETY: we hold mmu_lock for write, so nobody unlinks or frees the child.
            table = unsafe { child.as_ref() };
        }
        // swap, not store: the fast path and the hardware (A/D bits) may change the entry
        // without mmu_lock (I5.3, D2).
        let old = Spte(exchange(&table.entries[Self::index(gfn, 0)], spte.0, atomic));
        Ok(Some(old).filter(|s| s.is_leaf()))
    }

    /// Clears (`clear`) or tests the accessed bit of every present leaf in `gfns` under
    /// `mmu_lock`, with an atomic AND that keeps a dirty bit the hardware sets meanwhile
    /// ([A2](crate::protocols#a2)). Returns whether any leaf had it (was young).
    pub fn age(&self, guard: &MmuWriteGuard<'_, H>, gfns: GfnRange, clear: bool) -> Result<bool, Error> {
        self.age_inner(guard, gfns, clear, true)
    }

    fn age_inner(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        gfns: GfnRange,
        clear: bool,
        atomic: bool,
    ) -> Result<bool, Error> {
        self.lock.check(guard)?;
        // SAFETY: the root lives as long as `self`; under mmu_lock for write nobody else
        // unlinks or frees a table below it.
        Ok(unsafe { self.age_unchecked(gfns, clear, atomic) })
    }

    /// The aging walk itself.
    ///
    /// # Safety
    ///
    /// Every table reachable from the root during the call stays allocated until it returns:
    /// the caller holds `mmu_lock`, or is pinned in the epoch domain that defers this table's
    /// frees (and every free of its tables is deferred there).
    ///
    /// Links are followed with [`follow`](Self::follow): a lockless ager may reach a table
    /// `map` has just published and must see its initialized entries.
    unsafe fn age_unchecked(&self, gfns: GfnRange, clear: bool, atomic: bool) -> bool {
        let how = Aging { gfns, clear, atomic };
        // SAFETY: the root lives as long as `self`.
        self.age_table(unsafe { self.root.as_ref() }, LEVELS - 1, Gfn(0), &how)
    }

    /// [`age`](Self::age) below `table`, visiting only present tables (as `zap_table`).
    fn age_table(&self, table: &Table<H, F>, level: usize, base: Gfn, how: &Aging) -> bool {
        let span = Self::span(level);
        let mut young = false;
        for (i, entry) in table.entries.iter().enumerate() {
            // No overflow: the whole table spans at most 2^40 gfns (SHAPE_OK).
            let (start, end) = (Gfn(base.0 + i as u64 * span), Gfn(base.0 + (i as u64 + 1) * span));
            if end <= how.gfns.start() || how.gfns.end() <= start {
                continue;
            }
            if level > 0 {
                if let Some(child) = self.follow(entry) {
                    // SAFETY: `age_unchecked`'s contract: the child, reachable now, stays
                    // allocated until the walk returns (mmu_lock, or the epoch pin).
                    young |= self.age_table(unsafe { child.as_ref() }, level - 1, start, how);
                }
                continue;
            }
            let spte = Spte(entry.load(Ordering::Relaxed));
            if !spte.is_leaf() || !spte.is_accessed() {
                continue;
            }
            young = true;
            if !how.clear {
                continue;
            }
            if how.atomic {
                entry.fetch_and(!Spte::ACCESSED, Ordering::Relaxed);
            } else {
                // The mutant: a plain read-modify-write loses a bit set in between.
                let now = entry.load(Ordering::Relaxed);
                entry.store(now & !Spte::ACCESSED, Ordering::Relaxed);
            }
        }
        young
    }

    /// Zaps every leaf in `gfns` and unlinks every table wholly inside `gfns`, handing each
    /// unlinked table to `retire` (children before parents). Returns whether an entry was
    /// cleared (a present leaf or a table link: a TLB flush is needed).
    pub fn zap(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        gfns: GfnRange,
        retire: &mut impl FnMut(NonNull<Table<H, F>>),
    ) -> Result<bool, Error> {
        self.zap_inner(guard, gfns, retire, &mut |_| {}, true)
    }

    /// [`zap`](Self::zap), handing every cleared leaf (with its accessed and dirty bits) to
    /// `cleared`; `atomic == false` is the mutant of `Rule::SpteUpdateIsAtomic`.
    fn zap_inner(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        gfns: GfnRange,
        retire: &mut impl FnMut(NonNull<Table<H, F>>),
        cleared: &mut dyn FnMut(Spte),
        atomic: bool,
    ) -> Result<bool, Error> {
        self.lock.check(guard)?;
        // SAFETY: the root lives as long as `self`.
        Ok(self.zap_table(unsafe { self.root.as_ref() }, LEVELS - 1, Gfn(0), gfns, retire, cleared, atomic))
    }

    #[allow(clippy::too_many_arguments)]
    fn zap_table(
        &self,
        table: &Table<H, F>,
        level: usize,
        base: Gfn,
        gfns: GfnRange,
        retire: &mut impl FnMut(NonNull<Table<H, F>>),
        cleared: &mut dyn FnMut(Spte),
        atomic: bool,
    ) -> bool {
        let span = Self::span(level);
        let mut flush = false;
        for (i, entry) in table.entries.iter().enumerate() {
            // No overflow: the whole table spans at most 2^40 gfns (SHAPE_OK).
            let (start, end) = (Gfn(base.0 + i as u64 * span), Gfn(base.0 + (i as u64 + 1) * span));
            if end <= gfns.start() || gfns.end() <= start {
                continue;
            }
            if level == 0 {
                let old = Spte(exchange(entry, 0, atomic));
                if old.is_leaf() {
                    cleared(old);
                }
                flush |= old.is_present();
                continue;
            }
            let Some(child) = Spte(entry.load(Ordering::Relaxed)).table::<H, F>() else { continue };
            // SAFETY: under mmu_lock for write nobody else unlinks or frees the child.
            flush |=
                self.zap_table(unsafe { child.as_ref() }, level - 1, start, gfns, retire, cleared, atomic);
            if gfns.start() <= start && end <= gfns.end() {
                entry.store(0, Ordering::Relaxed);
                flush = true;
                retire(child);
            }
        }
        flush
    }

    /// The fast path's update: if the leaf for `gfn` still holds `old`, replace it with `new`
    /// (a cmpxchg, so an update under `mmu_lock` or a zap in between makes it fail). The caller
    /// has checked that the pages it reaches stay allocated.
    fn compare_exchange_unchecked(&self, gfn: Gfn, old: Spte, new: Spte) -> Result<bool, Error> {
        self.check_gfn(gfn)?;
        let Some(entry) = self.leaf_entry(gfn) else { return Ok(false) };
        Ok(entry.compare_exchange(old.0, new.0, Ordering::SeqCst, Ordering::Relaxed).is_ok())
    }
}

impl<H: Hal, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize> Drop
    for PageTable<H, A, LEVELS, F>
{
    fn drop(&mut self) {
        fn free_subtree<H: Hal, A: PageAlloc<Table<H, F>>, const F: usize>(
            alloc: &A,
            page: NonNull<Table<H, F>>,
            level: usize,
        ) {
            if level > 0 {
                // SAFETY: `&mut self` in drop: no walker or updater remains.
                for entry in unsafe { &page.as_ref().entries } {
                    if let Some(child) = Spte(entry.load(Ordering::Relaxed)).table::<H, F>() {
                        free_subtree(alloc, child, level - 1);
                    }
                }
            }
            // SAFETY: every linked page came from `alloc` and is freed once, here.
            unsafe { alloc.free(page) }
        }
        free_subtree(&self.alloc, self.root, LEVELS - 1);
    }
}

/// What a fault did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOutcome {
    /// A translation to this pfn was installed.
    Installed(Pfn),
    /// An invalidation raced with the fault, or the slot is being changed: retry.
    Retry,
}

/// The access a fault was taken for (`fault->write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A read (or instruction fetch): any present leaf allows it.
    Read,
    /// A write: only a writable leaf allows it.
    Write,
}

/// One attempt of the fault path.
enum Attempt {
    /// Installed this pfn, and prefetched this many neighbours.
    Installed(Pfn, usize),
    /// An invalidation raced: retry.
    Retry,
    /// The gfn's memslot is being deleted or moved: retry once the update is done.
    InvalidSlot,
}

/// What the fast path did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FastFault {
    /// The access is already allowed.
    Spurious,
    /// The cmpxchg made the leaf writable.
    Fixed,
    /// Not fixable locklessly: take the slow path.
    Slow,
}

/// A page table and the vCPUs that walk it: a complete secondary MMU.
///
/// `R` is how its zaps free the table pages they unlink ([`crate::reclamation`]):
/// [`IpiReclamation`] (the default: [`zap_ipi`](Self::zap_ipi)) or [`EpochReclamation`]
/// ([`zap_epoch`](Self::zap_epoch), epoch-pinned walks and lockless aging). The type fixes one
/// scheme for every zap, so a walker protected by one scheme never meets a free by the other.
pub struct ReferenceMmu<
    'v,
    H: Cpus,
    A: PageAlloc<Table<H, F>>,
    const LEVELS: usize,
    const F: usize,
    R: Reclamation = IpiReclamation,
> {
    hal: H,
    table: PageTable<H, A, LEVELS, F>,
    vcpus: &'v [Vcpu<H>],
    reclamation: R,
    tracker: Option<&'v dyn PageTracker>,
}

impl<H: Cpus, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize, R: Reclamation> fmt::Debug
    for ReferenceMmu<'_, H, A, LEVELS, F, R>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceMmu")
            .field("table", &self.table)
            .field("vcpus", &self.vcpus.len())
            .field("reclamation", &self.reclamation)
            .field("page_tracker", &self.tracker.is_some())
            .finish_non_exhaustive()
    }
}

impl<'v, H: Cpus, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize, R: Reclamation>
    ReferenceMmu<'v, H, A, LEVELS, F, R>
{
    /// An empty MMU whose zaps wait for `vcpus` (and, with [`EpochReclamation`], for pins of
    /// its own [`reclaimer`](Self::reclaimer)).
    pub fn new(hal: H, alloc: A, vcpus: &'v [Vcpu<H>]) -> Result<Self, Error> {
        Ok(ReferenceMmu {
            table: PageTable::new(hal.clone(), alloc)?,
            hal,
            vcpus,
            reclamation: R::new(),
            tracker: None,
        })
    }

    /// Hands the accessed and dirty bits of every leaf this MMU replaces ([`map`](Self::map),
    /// the fault path) or zaps ([`zap_ipi`](Self::zap_ipi), [`zap_epoch`](Self::zap_epoch), the
    /// notifier) to `tracker` from now on (D3).
    pub fn set_page_tracker(&mut self, tracker: &'v dyn PageTracker) {
        self.tracker = Some(tracker);
    }

    /// D3: the old leaf's accessed and dirty bits go to the primary MMU.
    fn hand_over(&self, old: Spte) {
        let Some(pfn) = old.pfn() else { return };
        if let Some(t) = self.tracker {
            if old.is_accessed() {
                t.mark_accessed(pfn);
            }
            if old.is_dirty() {
                t.mark_dirty(pfn);
            }
        }
        if old.is_accessed() || old.is_dirty() {
            self.hal.step(Step::SpteBits { pfn, accessed: old.is_accessed(), dirty: old.is_dirty() });
        }
    }

    /// The aging notifiers under `mmu_lock` (A1–A2), for both schemes' `SecondaryMmu`
    /// implementations. Panics on a foreign guard (see their `# Panics`).
    fn age_for_notifier(&self, guard: &MmuWriteGuard<'_, H>, gfns: GfnRange, clear: bool) -> bool {
        match self.table.age_inner(guard, gfns, clear, self.atomic_updates()) {
            Ok(young) => young,
            Err(e) => panic!("ReferenceMmu used with another VM's mmu_lock: {e}"),
        }
    }

    fn atomic_updates(&self) -> bool {
        self.hal.keeps(Rule::SpteUpdateIsAtomic)
    }

    /// Reads the leaf entry for `gfn` (`for_each_shadow_entry_lockless`). `proof` must be a
    /// lockless walk on one of this MMU's vCPUs, a pin of its [`reclaimer`](Self::reclaimer)
    /// (with [`EpochReclamation`] only), or its `mmu_lock`; anything else gets
    /// [`Error::Foreign`]. `None`: no present leaf.
    pub fn walk(&self, proof: &impl WalkProof<H>, gfn: Gfn) -> Result<Option<Spte>, Error> {
        self.check_proof(proof)?;
        self.table.walk_unchecked(gfn)
    }

    fn check_proof(&self, proof: &impl WalkProof<H>) -> Result<(), Error> {
        if proof.covers(self.vcpus, self.reclamation.epoch_domain(), &self.table.lock) {
            Ok(())
        } else {
            Err(Error::Foreign)
        }
    }

    /// The page table.
    pub fn table(&self) -> &PageTable<H, A, LEVELS, F> {
        &self.table
    }

    /// The vCPUs.
    pub fn vcpus(&self) -> &'v [Vcpu<H>] {
        self.vcpus
    }

    /// The full fault path ([F0–F14](crate::protocols#f0)): memslot lookup under SRCU, seq snapshot,
    /// lockless pre-check, pfn resolution through `resolve` (the host page walk), second
    /// pre-check, then under `mmu_lock` the locked re-check and the install.
    ///
    /// # Examples
    ///
    /// A fault on a gfn of a memslot installs a translation; a fault racing with an
    /// invalidation of its page returns [`FaultOutcome::Retry`] and the vCPU faults again.
    ///
    /// ```
    /// use mmusync::{
    ///     BoxAlloc, FaultOutcome, Gfn, Hva, HvaRange, Memslot, MemslotConfig, Pfn, ReferenceMmu, SlotChange,
    ///     StdHal, Vcpu, Vm,
    /// };
    ///
    /// let _cpu = StdHal::register_cpu()?; // this thread may now take and send flush IPIs
    /// let vcpus = [Vcpu::new(StdHal)];
    /// let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 4, 512> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus)?;
    /// let vm: Vm<StdHal, 8> = Vm::new(StdHal);
    /// let slot = MemslotConfig { id: 0, base_gfn: Gfn(0x100), npages: 16, hva: Hva(0x7f00_0000_0000) };
    /// vm.set_memslot(&mmu, SlotChange::Create(Memslot::new(slot)?))?;
    ///
    /// let host = |hva: Hva| Ok(Pfn(hva.0 >> 12)); // the primary MMU's page walk
    /// assert_eq!(mmu.fault(&vm, Gfn(0x101), true, host)?, FaultOutcome::Installed(Pfn(0x7f00_0000_1)));
    ///
    /// // The host unmaps the page while a second fault resolves it: the fault must retry.
    /// let racing = mmu.fault(&vm, Gfn(0x102), true, |hva| {
    ///     let page = HvaRange::new(hva, hva + 0x1000)?;
    ///     drop(vm.invalidate_range_start(&mmu, page)?); // start ... end, inside the resolution
    ///     host(hva)
    /// })?;
    /// assert_eq!(racing, FaultOutcome::Retry);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fault<const N: usize, const C: usize>(
        &self,
        vm: &Vm<H, N, C>,
        gfn: Gfn,
        writable: bool,
        resolve: impl FnOnce(Hva) -> Result<Pfn, Error>,
    ) -> Result<FaultOutcome, Error> {
        let mut resolve = Some(resolve);
        let mut once = |hva| resolve.take().map_or(Err(Error::NoMapping { gfn }), |r| r(hva));
        Ok(match self.fault_attempt(vm, gfn, writable, None, &mut once)? {
            Attempt::Installed(pfn, _) => FaultOutcome::Installed(pfn),
            Attempt::Retry | Attempt::InvalidSlot => FaultOutcome::Retry,
        })
    }

    /// The fault path of [`fault`](Self::fault), then, if it installed and in the same
    /// `mmu_lock` critical section, the prefetch of the other gfns of `around` (F15, KVM's
    /// `direct_pte_prefetch`): each one that a memslot maps and that has no present leaf is
    /// resolved through `resolve` and installed read-only (MMU-writable if the fault was a
    /// write). The prefetch is **skipped while any invalidation is in progress**: it takes no
    /// seq snapshot, and a page resolved between an invalidation's start and end may be the
    /// one the primary MMU is about to free. With none in progress under `mmu_lock`, a later
    /// invalidation zaps what is installed here, and an earlier one ended before it (its end's
    /// `mmu_lock` release orders the primary MMU's change before this resolution).
    ///
    /// `resolve` runs under `mmu_lock` for the prefetched gfns, so it must not sleep (KVM's
    /// prefetch uses the atomic GUP-fast); a gfn it fails to resolve is skipped. Returns the
    /// fault's outcome and how many gfns were prefetched.
    pub fn fault_around<const N: usize, const C: usize>(
        &self,
        vm: &Vm<H, N, C>,
        gfn: Gfn,
        writable: bool,
        around: GfnRange,
        mut resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<(FaultOutcome, usize), Error> {
        Ok(match self.fault_attempt(vm, gfn, writable, Some(around), &mut resolve)? {
            Attempt::Installed(pfn, n) => (FaultOutcome::Installed(pfn), n),
            Attempt::Retry | Attempt::InvalidSlot => (FaultOutcome::Retry, 0),
        })
    }

    /// `KVM_PRE_FAULT_MEMORY` (`kvm_vcpu_pre_fault_memory` → `kvm_tdp_map_page`): maps `gfn`
    /// ahead of the guest, retrying the fault path ([F0–F14](crate::protocols#f0)) until it
    /// installs, all inside **one** SRCU read section of the memslots, as KVM's loop runs inside
    /// `kvm->srcu`. Returns the pfn installed.
    ///
    /// A memslot update waits (W7) for that read section, so the loop must never wait for an
    /// update: when the fault finds the gfn's memslot invalid (being deleted or moved), it
    /// returns [`Error::TryAgain`] at once (F16), and the caller retries after leaving every
    /// read section of these memslots. Retries caused by invalidations go on inside the loop:
    /// an invalidation ends without waiting for SRCU (so the caller must not hold one of
    /// `gfn` open itself). [`Error::NoMapping`] when no memslot maps `gfn`.
    pub fn prefault<const N: usize, const C: usize>(
        &self,
        vm: &Vm<H, N, C>,
        gfn: Gfn,
        writable: bool,
        mut resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Pfn, Error> {
        let _srcu = vm.memslots().srcu().read_lock();
        loop {
            match self.fault_attempt(vm, gfn, writable, None, &mut resolve)? {
                Attempt::Installed(pfn, _) => return Ok(pfn),
                Attempt::InvalidSlot if self.hal.keeps(Rule::PrefaultReturnsOnInvalidSlot) => {
                    self.hal.step(Step::PrefaultTryAgain { gfn });
                    return Err(Error::TryAgain);
                }
                Attempt::Retry | Attempt::InvalidSlot => self.hal.spin_hint(),
            }
        }
    }

    /// One attempt of the fault path, with the prefetch of `around` when it installs.
    fn fault_attempt<const N: usize, const C: usize>(
        &self,
        vm: &Vm<H, N, C>,
        gfn: Gfn,
        writable: bool,
        around: Option<GfnRange>,
        resolve: &mut dyn FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<Attempt, Error> {
        let slots = vm.memslots().read();
        let slot = slots.find(gfn).ok_or(Error::NoMapping { gfn })?;
        self.hal.step(Step::FaultSlot { gfn, slot: slot.id(), invalid: slot.is_invalid() });
        if slot.is_invalid() {
            return Ok(Attempt::InvalidSlot);
        }
        let hva = slot.gfn_to_hva(gfn).ok_or(Error::NoMapping { gfn })?;
        let inv = vm.invalidation();
        let snap = inv.snapshot();
        if inv.retry_gfn_unsafe(&snap, gfn)? {
            return Ok(Attempt::Retry);
        }
        let pfn = resolve(hva)?;
        self.hal.step(Step::FaultResolved { gfn, pfn });
        if inv.retry_gfn_unsafe(&snap, gfn)? {
            return Ok(Attempt::Retry);
        }
        let spte = Spte::leaf(pfn, writable, writable)?;
        let guard = inv.mmu_lock().write();
        if self.hal.keeps(Rule::FaultRetriesUnderLock) && inv.retry_gfn(&guard, &snap, gfn)? {
            return Ok(Attempt::Retry);
        }
        self.map(&guard, gfn, spte)?;
        self.hal.step(Step::FaultInstall { gfn, pfn });
        let prefetched = match around {
            Some(around) => self.prefetch(&guard, inv, &slots, gfn, writable, around, resolve)?,
            None => 0,
        };
        Ok(Attempt::Installed(pfn, prefetched))
    }

    /// F15: the prefetch of [`fault_around`](Self::fault_around), under the fault's
    /// `mmu_lock`.
    #[allow(clippy::too_many_arguments)]
    fn prefetch<const N: usize>(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        inv: &crate::invalidation::Invalidation<H>,
        slots: &crate::memslot::MemslotsRead<'_, H, N>,
        faulted: Gfn,
        writable: bool,
        around: GfnRange,
        resolve: &mut dyn FnMut(Hva) -> Result<Pfn, Error>,
    ) -> Result<usize, Error> {
        let in_progress = inv.in_progress(guard)?;
        if in_progress != 0 && self.hal.keeps(Rule::PrefetchSkipsWhileInvalidating) {
            self.hal.step(Step::PrefetchSkipped { in_progress });
            return Ok(0);
        }
        let mut n = 0;
        for gfn in around.iter().take_while(|gfn| gfn.0 < self.table.capacity()) {
            if gfn == faulted || self.table.walk(guard, gfn)?.is_some() {
                continue;
            }
            let Some(hva) = slots.find(gfn).filter(|s| !s.is_invalid()).and_then(|s| s.gfn_to_hva(gfn))
            else {
                continue;
            };
            let Ok(pfn) = resolve(hva) else { continue };
            let Ok(spte) = Spte::leaf(pfn, false, writable) else { continue };
            self.table.map(guard, gfn, spte)?;
            self.hal.step(Step::Prefetch { gfn, pfn });
            n += 1;
        }
        Ok(n)
    }

    /// D1: what the CPU's page walker does when it uses the leaf of `gfn` for `access`: sets
    /// the accessed bit, and for a write to a writable leaf the dirty bit too, with an atomic
    /// read-modify-write, and returns the leaf as it was (`None`: no present leaf, the access
    /// faults; a write to a read-only leaf changes nothing and faults). For walkers emulated in
    /// software and for tests; `proof` as for [`walk`](Self::walk).
    pub fn hw_access(
        &self,
        proof: &impl WalkProof<H>,
        gfn: Gfn,
        access: Access,
    ) -> Result<Option<Spte>, Error> {
        self.check_proof(proof)?;
        self.table.check_gfn(gfn)?;
        let Some(entry) = self.table.leaf_entry(gfn) else { return Ok(None) };
        let mut old = Spte(entry.load(Ordering::Relaxed));
        loop {
            if !old.is_leaf() {
                return Ok(None);
            }
            let bits = match access {
                Access::Read => Spte::ACCESSED,
                Access::Write if old.is_writable() => Spte::ACCESSED | Spte::DIRTY,
                Access::Write => return Ok(Some(old)),
            };
            match entry.compare_exchange(old.0, old.0 | bits, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(Some(old)),
                Err(now) => old = Spte(now),
            }
        }
    }

    /// `fast_page_fault`: inside a lockless walk, fix a fault of `access` on `gfn` without
    /// `mmu_lock`. A present leaf that already allows the access makes the fault spurious
    /// (any present leaf for [`Access::Read`], a writable one for [`Access::Write`]); only a
    /// **write** fault on a present, MMU-writable, read-only leaf is fixed, by setting the
    /// writable bit with a cmpxchg (at most four tries). A read fault never makes a leaf
    /// writable: that would let the guest write a page nobody saw it write (dirty logging).
    /// Needs no seq check: it only changes present entries, and a zap in between makes the
    /// cmpxchg fail.
    pub fn fast_fault(
        &self,
        walk: &LocklessWalk<'_, H>,
        gfn: Gfn,
        access: Access,
    ) -> Result<FastFault, Error> {
        self.check_proof(walk)?;
        for _ in 0..4 {
            let Some(spte) = self.table.walk_unchecked(gfn)? else { return Ok(FastFault::Slow) };
            if access == Access::Read || spte.is_writable() {
                return Ok(FastFault::Spurious);
            }
            if spte.0 & Spte::MMU_WRITABLE == 0 {
                return Ok(FastFault::Slow);
            }
            let new = Spte(spte.0 | Spte::WRITABLE);
            if self.table.compare_exchange_unchecked(gfn, spte, new)? {
                return Ok(FastFault::Fixed);
            }
        }
        Ok(FastFault::Slow)
    }

    /// Installs `spte` for `gfn` under `mmu_lock` (`mmu_set_spte`) and returns the previous
    /// leaf ([M1–M2](crate::protocols#m1)), whose accessed and dirty bits (exchanged atomically,
    /// D2) also go to the [`PageTracker`] (D3). When the previous leaf was MMU-writable and the new
    /// entry is not writable (write protection, for dirty logging or a read-only remap), or the
    /// new entry maps another pfn, a vCPU may still hold the old writable translation in its
    /// TLB: the remote TLBs of `gfn` are flushed **before** this returns (KVM's
    /// `mmu_spte_update` rule), so that when the caller relies on the page being
    /// write-protected, no vCPU can write it any more.
    pub fn map(&self, guard: &MmuWriteGuard<'_, H>, gfn: Gfn, spte: Spte) -> Result<Option<Spte>, Error> {
        let old = self.table.map_inner(guard, gfn, spte, self.atomic_updates())?;
        if let Some(o) = old {
            self.hand_over(o);
        }
        let flush = old
            .is_some_and(|o| (o.0 & Spte::MMU_WRITABLE != 0 && !spte.is_writable()) || o.pfn() != spte.pfn());
        let flush = flush && self.hal.keeps(Rule::MapFlushesLostWrite);
        if flush {
            // GfnRange::single cannot fail: `map` checked gfn < capacity <= MAX_GFN.
            if let Ok(gfns) = GfnRange::single(gfn) {
                flush_remote_tlbs_range(&self.hal, self.vcpus, gfns);
            }
        }
        self.hal.step(Step::MapUpdate { gfn, flush });
        Ok(old)
    }
}

/// The IPI way ([`IpiReclamation`]): zaps free tables after a flush that waits for the vCPUs.
impl<H: Cpus, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize>
    ReferenceMmu<'_, H, A, LEVELS, F, IpiReclamation>
{
    /// Zaps `gfns` and frees unlinked tables the IPI way (`kvm_mmu_commit_zap_page`): each
    /// batch of tables is freed after [`flush_remote_tlbs`] has waited for every vCPU in a
    /// lockless walk or in the guest. Returns whether an entry was cleared (the caller still
    /// owes a TLB flush for leaves), or [`Error::Foreign`] for another lock's guard.
    ///
    /// The result means "a leaf was cleared" and does not subtract the flush of the last
    /// commit: when the zap freed tables, the caller's flush repeats one that already happened
    /// (see [`Committed`](crate::Committed) for an MMU of your own that wants to skip it).
    ///
    /// # Examples
    ///
    /// ```
    /// use mmusync::{BoxAlloc, Gfn, GfnRange, MmuLock, Pfn, ReferenceMmu, Spte, StdHal, Vcpu};
    ///
    /// let _cpu = StdHal::register_cpu()?;
    /// let vcpus = [Vcpu::new(StdHal)];
    /// let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus)?;
    /// let lock = MmuLock::<StdHal>::new(); // your VM's mmu_lock (Vm::invalidation().mmu_lock())
    /// let guard = lock.write();
    /// mmu.map(&guard, Gfn(9), Spte::leaf(Pfn(0x42), true, true)?)?;
    ///
    /// // Clears the leaf, unlinks the now-empty table, flushes every vCPU and frees it.
    /// assert!(mmu.zap_ipi(&guard, GfnRange::new(Gfn(8), Gfn(16))?)?);
    /// assert_eq!(mmu.walk(&guard, Gfn(9))?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn zap_ipi(&self, guard: &MmuWriteGuard<'_, H>, gfns: GfnRange) -> Result<bool, Error> {
        let mut batch = ZapList::<Table<H, F>, 32>::new();
        let mut cleared = |old: Spte| self.hand_over(old);
        let atomic = self.atomic_updates();
        let flush = self.table.zap_inner(
            guard,
            gfns,
            &mut |page| {
                // SAFETY: `zap` unlinked `page` under mmu_lock, it came from the table's allocator
                // and is retired once; the batch is committed with this MMU's allocator and all of
                // its vCPUs.
                if let Err(ZapListFull(page)) = unsafe { batch.push(page) } {
                    core::mem::take(&mut batch).commit(&self.hal, self.vcpus, self.table.allocator());
                    // SAFETY: as above; the fresh batch has room.
                    let pushed = unsafe { batch.push(page) };
                    debug_assert!(pushed.is_ok());
                }
            },
            &mut cleared,
            atomic,
        )?;
        batch.commit(&self.hal, self.vcpus, self.table.allocator());
        Ok(flush)
    }
}

impl<H: Cpus, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize> SecondaryMmu<H>
    for ReferenceMmu<'_, H, A, LEVELS, F, IpiReclamation>
{
    /// # Panics
    ///
    /// If this MMU's tables belong to another `mmu_lock` than the notifier's VM (one MMU used
    /// with two VMs): the trait has no error path, and zapping nothing would be a silent wrong
    /// answer.
    fn unmap_gfn_range(&self, guard: &MmuWriteGuard<'_, H>, _slot: &Memslot, gfns: GfnRange) -> bool {
        match self.zap_ipi(guard, gfns) {
            Ok(flush) => flush,
            Err(e) => panic!("ReferenceMmu used with another VM's mmu_lock: {e}"),
        }
    }

    fn flush_remote_tlbs(&self) {
        flush_remote_tlbs(&self.hal, self.vcpus);
    }

    fn flush_remote_tlbs_range(&self, gfns: GfnRange) {
        flush_remote_tlbs_range(&self.hal, self.vcpus, gfns);
    }

    /// # Panics
    ///
    /// As [`unmap_gfn_range`](SecondaryMmu::unmap_gfn_range): if the tables belong to another
    /// `mmu_lock`.
    fn age_gfn_range(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        _slot: &Memslot,
        gfns: GfnRange,
        clear: bool,
    ) -> bool {
        self.age_for_notifier(guard, gfns, clear)
    }
}

/// The epoch way ([`EpochReclamation`]): zaps free tables after the flush and a grace period of
/// the MMU's epoch domain, so walkers may also pin the domain, and aging needs no `mmu_lock`.
impl<H: Cpus, A: PageAlloc<Table<H, F>>, const LEVELS: usize, const F: usize>
    ReferenceMmu<'_, H, A, LEVELS, F, EpochReclamation>
{
    /// The epoch domain of this MMU's tables: register each thread that walks or zaps the
    /// epoch way with it.
    pub fn reclaimer(&self) -> &EpochReclaimer {
        self.reclamation.reclaimer()
    }

    /// Clears (`clear`) or tests the accessed bits of `gfns` **without `mmu_lock`**, the TDP
    /// MMU's lockless aging (`kvm_tdp_mmu_age_gfn_range` under `rcu_read_lock`): the walk is
    /// pinned in this MMU's epoch domain (`Rule::LocklessAgingPinsEpoch`), so a table that a
    /// concurrent [`zap_epoch`](Self::zap_epoch) unlinks stays allocated until the walk ends,
    /// and it clears bits with an atomic AND, so a bit the hardware, a zap or the fast path
    /// sets meanwhile is kept (A2). Returns whether the range was young, or [`Error::Foreign`]
    /// for a handle of another reclaimer.
    ///
    /// Sound because every table of this MMU is freed the epoch way: the type has no
    /// `zap_ipi` ([`crate::reclamation`]). Its [`SecondaryMmu`] implementation runs the aging
    /// notifiers through this method.
    pub fn age_lockless(&self, handle: &ReclaimHandle, gfns: GfnRange, clear: bool) -> Result<bool, Error> {
        if handle.domain() != self.reclaimer().id() {
            return Err(Error::Foreign);
        }
        // The mutant walks unpinned: a zap_epoch's deferred free can then run mid-walk (the
        // models pair it with an allocator that poisons instead of freeing).
        let pin = self.hal.keeps(Rule::LocklessAgingPinsEpoch).then(|| handle.walk_begin());
        // SAFETY: pinned in the domain that defers every free of this MMU's tables (the only
        // zap of an `EpochReclamation` MMU is `zap_epoch`), from before the first link is read
        // until after the last; the root lives as long as `self`.
        let young = unsafe { self.table.age_unchecked(gfns, clear, self.atomic_updates()) };
        drop(pin);
        Ok(young)
    }

    /// Zaps `gfns` and frees unlinked tables the epoch way: unlink while pinned, flush remote
    /// TLBs, defer the frees, unpin (flush before unpin; see [`crate::epoch`]). Returns the
    /// number of tables deferred, or [`Error::Foreign`] for another lock's guard or a handle of
    /// another reclaimer.
    ///
    /// # Examples
    ///
    /// Walkers of the epoch way pin the MMU's reclaimer; the zapper registers with it too.
    ///
    /// ```
    /// use mmusync::{BoxAlloc, EpochReclamation, Gfn, GfnRange, MmuLock, Pfn, ReferenceMmu, Spte, StdHal, Vcpu};
    ///
    /// let _cpu = StdHal::register_cpu()?;
    /// let vcpus = [Vcpu::new(StdHal)];
    /// let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8, EpochReclamation> =
    ///     ReferenceMmu::new(StdHal, BoxAlloc, &vcpus)?;
    /// let lock = MmuLock::<StdHal>::new();
    /// mmu.map(&lock.write(), Gfn(9), Spte::leaf(Pfn(0x42), true, true)?)?;
    ///
    /// let handle = mmu.reclaimer().register(); // one per thread that walks or zaps
    /// let walk = handle.walk_begin(); // a lockless reader, the RCU way
    /// assert_eq!(mmu.walk(&walk, Gfn(9))?.and_then(Spte::pfn), Some(Pfn(0x42)));
    /// drop(walk);
    /// assert_eq!(mmu.zap_epoch(&lock.write(), GfnRange::new(Gfn(8), Gfn(16))?, &handle)?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn zap_epoch(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        gfns: GfnRange,
        handle: &ReclaimHandle,
    ) -> Result<usize, Error>
    where
        A: Clone + Send + 'static,
        Table<H, F>: Send,
    {
        if handle.domain() != self.reclaimer().id() {
            return Err(Error::Foreign);
        }
        self.table.lock.check(guard)?;
        // SAFETY: `zap` hands over each table once, right after unlinking it under mmu_lock;
        // all came from the table's allocator; lockless software walkers of this MMU are
        // checked (`walk`) to pin this same reclaimer, and hardware walkers are this MMU's
        // vCPUs, which the flush waits for.
        Ok(unsafe {
            handle.zap(
                &self.hal,
                self.table.allocator(),
                |retired| {
                    // Cannot fail: the guard was checked above.
                    let _ = self.table.zap_inner(
                        guard,
                        gfns,
                        &mut |page| retired.push(page),
                        &mut |old| self.hand_over(old),
                        self.atomic_updates(),
                    );
                },
                || {
                    flush_remote_tlbs(&self.hal, self.vcpus);
                },
            )
        })
    }
}

/// The notifier's secondary MMU the TDP MMU's way: `unmap_gfn_range` zaps with
/// [`zap_epoch`](ReferenceMmu::zap_epoch) (tables freed after an epoch, which its own flush
/// precedes, so it owes no further flush), and the aging notifiers run without `mmu_lock`
/// through [`age_lockless`](ReferenceMmu::age_lockless). Each call registers its thread with the
/// MMU's reclaimer for the call (the trait carries no handle): one crossbeam-epoch participant
/// per notifier call.
impl<H: Cpus, A, const LEVELS: usize, const F: usize> SecondaryMmu<H>
    for ReferenceMmu<'_, H, A, LEVELS, F, EpochReclamation>
where
    A: PageAlloc<Table<H, F>> + Clone + Send + 'static,
    Table<H, F>: Send,
{
    /// # Panics
    ///
    /// If this MMU's tables belong to another `mmu_lock` than the notifier's VM (one MMU used
    /// with two VMs): the trait has no error path, and zapping nothing would be a silent wrong
    /// answer.
    fn unmap_gfn_range(&self, guard: &MmuWriteGuard<'_, H>, _slot: &Memslot, gfns: GfnRange) -> bool {
        let handle = self.reclaimer().register();
        match self.zap_epoch(guard, gfns, &handle) {
            // zap_epoch flushed remote TLBs after every change it made (flush before unpin).
            Ok(_) => false,
            Err(e) => panic!("ReferenceMmu used with another VM's mmu_lock: {e}"),
        }
    }

    fn flush_remote_tlbs(&self) {
        flush_remote_tlbs(&self.hal, self.vcpus);
    }

    fn flush_remote_tlbs_range(&self, gfns: GfnRange) {
        flush_remote_tlbs_range(&self.hal, self.vcpus, gfns);
    }

    /// # Panics
    ///
    /// As [`unmap_gfn_range`](SecondaryMmu::unmap_gfn_range): if the tables belong to another
    /// `mmu_lock`.
    fn age_gfn_range(
        &self,
        guard: &MmuWriteGuard<'_, H>,
        _slot: &Memslot,
        gfns: GfnRange,
        clear: bool,
    ) -> bool {
        self.age_for_notifier(guard, gfns, clear)
    }

    fn age_gfn_range_lockless(&self, _slot: &Memslot, gfns: GfnRange, clear: bool) -> Option<bool> {
        let handle = self.reclaimer().register();
        // Cannot fail: the handle is of this MMU's own reclaimer.
        self.age_lockless(&handle, gfns, clear).ok()
    }
}

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::memslot::MemslotConfig;
    use crate::memslot::SlotChange;

    type Mmu<'v> = ReferenceMmu<'v, StdHal, BoxAlloc, 3, 4>;
    type EpochMmu<'v> = ReferenceMmu<'v, StdHal, BoxAlloc, 3, 4, EpochReclamation>;

    /// Creates the memslot `config` describes (a test setup that cannot fail).
    fn add_slot<const N: usize>(vm: &Vm<StdHal, N>, mmu: &impl SecondaryMmu<StdHal>, config: MemslotConfig) {
        vm.set_memslot(mmu, SlotChange::Create(Memslot::new(config).unwrap())).unwrap();
    }

    #[test]
    fn map_walk_zap() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        assert_eq!(mmu.table().capacity(), 64);
        assert_eq!(
            mmu.table().map(&g, Gfn(64), Spte::leaf(Pfn(1), false, false).unwrap()),
            Err(Error::RangeOverflow)
        );
        for gfn in (0..64).map(Gfn) {
            mmu.table().map(&g, gfn, Spte::leaf(Pfn(gfn.0 + 100), false, true).unwrap()).unwrap();
        }
        assert_eq!(mmu.table().walk(&g, Gfn(17)).unwrap().and_then(Spte::pfn), Some(Pfn(117)));
        assert_eq!(mmu.walk(&g, Gfn(17)).unwrap().and_then(Spte::pfn), Some(Pfn(117)));
        assert_eq!(mmu.zap_ipi(&g, GfnRange::new(Gfn(16), Gfn(32)).unwrap()), Ok(true));
        assert_eq!(mmu.table().walk(&g, Gfn(17)).unwrap(), None);
        assert_eq!(mmu.table().walk(&g, Gfn(32)).unwrap().and_then(Spte::pfn), Some(Pfn(132)));
        assert_eq!(
            mmu.zap_ipi(&g, GfnRange::new(Gfn(16), Gfn(32)).unwrap()),
            Ok(false),
            "nothing left to flush"
        );
        let other = crate::lock::MmuLock::<StdHal>::new();
        assert_eq!(mmu.table().walk(&other.read(), Gfn(17)), Err(Error::Foreign));
        assert_eq!(mmu.zap_ipi(&other.write(), GfnRange::new(Gfn(0), Gfn(64)).unwrap()), Err(Error::Foreign));
    }

    #[test]
    fn fault_retries_while_an_invalidation_covers_the_gfn() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 64, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        assert_eq!(mmu.fault(&vm, Gfn(3), true, host), Ok(FaultOutcome::Installed(Pfn(0x103))));
        let open = vm
            .invalidate_range_start(&mmu, crate::HvaRange::new(Hva(0x10_3000), Hva(0x10_4000)).unwrap())
            .unwrap();
        {
            let g = vm.invalidation().mmu_lock().read();
            assert_eq!(mmu.table().walk(&g, Gfn(3)).unwrap(), None, "start zapped the SPTE (I1.6)");
        }
        assert_eq!(mmu.fault(&vm, Gfn(3), true, host), Ok(FaultOutcome::Retry));
        assert_eq!(
            mmu.fault(&vm, Gfn(4), true, host),
            Ok(FaultOutcome::Installed(Pfn(0x104))),
            "outside the range"
        );
        drop(open);
        assert_eq!(mmu.fault(&vm, Gfn(3), true, host), Ok(FaultOutcome::Installed(Pfn(0x103))));
        assert_eq!(mmu.fault(&vm, Gfn(99), true, host), Err(Error::NoMapping { gfn: Gfn(99) }));
    }

    #[test]
    fn fast_fault_sets_the_writable_bit_only_on_mmu_writable_leaves() {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        vcpus[0].load(cpu.cpu()).unwrap();
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        {
            let g = lock.write();
            mmu.table().map(&g, Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap();
            mmu.table().map(&g, Gfn(2), Spte::leaf(Pfn(6), false, false).unwrap()).unwrap();
        }
        let walk = vcpus[0].walk_lockless_begin().unwrap();
        assert_eq!(mmu.fast_fault(&walk, Gfn(1), Access::Read), Ok(FastFault::Spurious), "reads need no W");
        assert!(!mmu.walk(&walk, Gfn(1)).unwrap().unwrap().is_writable(), "a read fault never sets W");
        assert_eq!(mmu.fast_fault(&walk, Gfn(1), Access::Write), Ok(FastFault::Fixed));
        assert_eq!(mmu.fast_fault(&walk, Gfn(1), Access::Write), Ok(FastFault::Spurious));
        assert_eq!(mmu.fast_fault(&walk, Gfn(2), Access::Write), Ok(FastFault::Slow));
        assert_eq!(mmu.fast_fault(&walk, Gfn(3), Access::Write), Ok(FastFault::Slow));
        assert_eq!(mmu.fast_fault(&walk, Gfn(3), Access::Read), Ok(FastFault::Slow));
    }

    #[test]
    fn map_that_write_protects_a_writable_leaf_flushes_first() {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        vcpus[0].load(cpu.cpu()).unwrap();
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        assert_eq!(mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), true, true).unwrap()), Ok(None));
        assert!(!vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH), "a new leaf needs no flush");
        let old = mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap();
        assert!(old.is_some_and(Spte::is_writable));
        assert!(vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH), "W lost: flushed before returning");
        mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap();
        assert!(
            vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH),
            "MMU-writable: the fast path may have set W, flush"
        );
        mmu.map(&g, Gfn(2), Spte::leaf(Pfn(6), false, false).unwrap()).unwrap();
        mmu.map(&g, Gfn(2), Spte::leaf(Pfn(6), true, true).unwrap()).unwrap();
        assert!(!vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH), "gaining W needs no flush");
        mmu.map(&g, Gfn(2), Spte::leaf(Pfn(7), true, true).unwrap()).unwrap();
        assert!(vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH), "another pfn: flush");
        let other = crate::lock::MmuLock::<StdHal>::new();
        assert_eq!(
            mmu.map(&other.write(), Gfn(1), Spte::leaf(Pfn(5), true, true).unwrap()),
            Err(Error::Foreign)
        );
    }

    #[test]
    fn zap_gfn_range_makes_a_racing_fault_retry() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        add_slot(&vm, &mmu, MemslotConfig { id: 1, base_gfn: Gfn(16), npages: 8, hva: Hva(0x20_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        for gfn in [Gfn(3), Gfn(4), Gfn(17)] {
            assert!(matches!(mmu.fault(&vm, gfn, true, host), Ok(FaultOutcome::Installed(_))));
        }
        // A fault whose resolution runs before the zap and installs after it must retry.
        let raced = mmu.fault(&vm, Gfn(5), true, |hva| {
            assert_eq!(vm.zap_gfn_range(&mmu, GfnRange::new(Gfn(3), Gfn(18)).unwrap()), Ok(true));
            Ok(Pfn(hva.0 >> 12))
        });
        assert_eq!(raced, Ok(FaultOutcome::Retry));
        let g = vm.invalidation().mmu_lock().read();
        for gfn in [Gfn(3), Gfn(4), Gfn(5), Gfn(17)] {
            assert_eq!(mmu.table().walk(&g, gfn).unwrap(), None, "gfn {gfn} zapped");
        }
        assert_eq!(vm.invalidation().in_progress(&g), Ok(0));
        assert_eq!(vm.invalidation().seq(&g), Ok(1), "one seq bump");
        drop(g);
        assert_eq!(
            vm.zap_gfn_range(&mmu, GfnRange::new(Gfn(8), Gfn(16)).unwrap()),
            Ok(false),
            "no memslot there"
        );
    }

    #[test]
    fn fault_around_prefetches_only_while_no_invalidation_is_in_progress() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        let around = GfnRange::new(Gfn(2), Gfn(10)).unwrap();
        let open = vm
            .invalidate_range_start(&mmu, crate::HvaRange::new(Hva(0x10_7000), Hva(0x10_8000)).unwrap())
            .unwrap();
        assert_eq!(
            mmu.fault_around(&vm, Gfn(3), true, around, host),
            Ok((FaultOutcome::Installed(Pfn(0x103)), 0)),
            "gfn 7 is being invalidated: no prefetch at all"
        );
        drop(open);
        mmu.map(&vm.invalidation().mmu_lock().write(), Gfn(5), Spte::leaf(Pfn(0x999), false, false).unwrap())
            .unwrap();
        assert_eq!(
            mmu.fault_around(&vm, Gfn(4), false, around, host),
            Ok((FaultOutcome::Installed(Pfn(0x104)), 3)),
            "gfns 2, 6, 7: 3 and 5 are present, 8 and 9 have no memslot"
        );
        let g = vm.invalidation().mmu_lock().read();
        let leaf = mmu.table().walk(&g, Gfn(6)).unwrap().unwrap();
        assert_eq!((leaf.pfn(), leaf.is_writable()), (Some(Pfn(0x106)), false), "prefetched read-only");
        assert_eq!(
            mmu.table().walk(&g, Gfn(5)).unwrap().and_then(Spte::pfn),
            Some(Pfn(0x999)),
            "present: untouched"
        );
        assert_eq!(mmu.table().walk(&g, Gfn(8)).unwrap(), None);
    }

    #[test]
    fn prefault_returns_try_again_on_an_invalid_slot() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        assert_eq!(mmu.prefault(&vm, Gfn(3), true, host), Ok(Pfn(0x103)));
        assert_eq!(mmu.prefault(&vm, Gfn(30), true, host), Err(Error::NoMapping { gfn: Gfn(30) }));
        let mut inside = None;
        vm.memslots()
            .update(vm.active_invalidations(), SlotChange::Delete(0), |_| {
                // The slot is published invalid here, and the update waits for SRCU readers
                // next: the prefault must not wait for it.
                inside = Some(mmu.prefault(&vm, Gfn(4), true, host));
            })
            .unwrap();
        assert_eq!(inside, Some(Err(Error::TryAgain)));
        assert_eq!(mmu.prefault(&vm, Gfn(4), true, host), Err(Error::NoMapping { gfn: Gfn(4) }));
    }

    #[derive(Default)]
    struct Tracker {
        accessed: std::sync::Mutex<std::vec::Vec<Pfn>>,
        dirty: std::sync::Mutex<std::vec::Vec<Pfn>>,
    }

    impl PageTracker for Tracker {
        fn mark_accessed(&self, pfn: Pfn) {
            self.accessed.lock().unwrap().push(pfn);
        }
        fn mark_dirty(&self, pfn: Pfn) {
            self.dirty.lock().unwrap().push(pfn);
        }
    }

    /// The hardware: sets `bits` in the leaf of `gfn` with an atomic OR (D1).
    fn hw_or<R: Reclamation>(mmu: &ReferenceMmu<'_, StdHal, BoxAlloc, 3, 4, R>, gfn: Gfn, bits: u64) {
        mmu.table().leaf_entry(gfn).unwrap().fetch_or(bits, Ordering::Relaxed);
    }

    #[test]
    fn replaced_and_zapped_leaves_hand_their_dirty_bits_to_the_primary_mmu() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let tracker = Tracker::default();
        let mut mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        mmu.set_page_tracker(&tracker);
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), true, true).unwrap()).unwrap();
        mmu.map(&g, Gfn(2), Spte::leaf(Pfn(6), true, true).unwrap()).unwrap();
        hw_or(&mmu, Gfn(1), Spte::ACCESSED | Spte::DIRTY);
        hw_or(&mmu, Gfn(2), Spte::ACCESSED);
        let old = mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap().unwrap();
        assert!(old.is_dirty() && old.is_accessed());
        assert_eq!(*tracker.dirty.lock().unwrap(), [Pfn(5)]);
        assert!(!mmu.table().walk(&g, Gfn(1)).unwrap().unwrap().is_dirty(), "the new leaf starts clean");
        assert_eq!(mmu.zap_ipi(&g, GfnRange::new(Gfn(0), Gfn(4)).unwrap()), Ok(true));
        assert_eq!(*tracker.dirty.lock().unwrap(), [Pfn(5)], "gfn 2 was only read");
        assert_eq!(*tracker.accessed.lock().unwrap(), [Pfn(5), Pfn(6)]);
    }

    #[test]
    fn hw_access_sets_accessed_and_dirty_bits_as_the_cpu_does() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        {
            let g = lock.write();
            mmu.map(&g, Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap();
            mmu.map(&g, Gfn(2), Spte::leaf(Pfn(6), true, true).unwrap()).unwrap();
        }
        let g = lock.read();
        assert_eq!(mmu.hw_access(&g, Gfn(3), Access::Read), Ok(None), "no leaf: the access faults");
        assert_eq!(mmu.hw_access(&g, Gfn(64), Access::Read), Err(Error::RangeOverflow));
        let before = mmu.hw_access(&g, Gfn(1), Access::Write).unwrap().unwrap();
        assert!(!before.is_accessed());
        let after = mmu.walk(&g, Gfn(1)).unwrap().unwrap();
        assert!(
            !after.is_accessed() && !after.is_dirty(),
            "a write to a read-only leaf faults, setting nothing"
        );
        mmu.hw_access(&g, Gfn(1), Access::Read).unwrap();
        assert!(mmu.walk(&g, Gfn(1)).unwrap().unwrap().is_accessed());
        mmu.hw_access(&g, Gfn(2), Access::Write).unwrap();
        let leaf = mmu.walk(&g, Gfn(2)).unwrap().unwrap();
        assert!(leaf.is_accessed() && leaf.is_dirty() && leaf.pfn() == Some(Pfn(6)));
        let other = crate::lock::MmuLock::<StdHal>::new();
        assert_eq!(mmu.hw_access(&other.read(), Gfn(2), Access::Read), Err(Error::Foreign));
    }

    #[test]
    fn the_epoch_way_ages_without_mmu_lock_and_zaps_the_epoch_way() {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: EpochMmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        let tdp = &mmu;
        add_slot(&vm, tdp, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        assert_eq!(mmu.fault(&vm, Gfn(3), true, host), Ok(FaultOutcome::Installed(Pfn(0x103))));
        vcpus[0].load(cpu.cpu()).unwrap();
        {
            let g = vm.invalidation().mmu_lock().read();
            mmu.hw_access(&g, Gfn(3), Access::Read).unwrap();
        }
        let page = crate::HvaRange::new(Hva(0x10_3000), Hva(0x10_4000)).unwrap();
        {
            // Held for read on this thread: an ager that took mmu_lock for write would hang.
            let _held = vm.invalidation().mmu_lock().read();
            assert!(vm.test_young(tdp, page), "lockless: the accessed bit is seen");
            assert!(vm.clear_young(tdp, page));
            assert!(!vm.test_young(tdp, page), "cleared without mmu_lock");
        }
        let stranger = crate::epoch::EpochReclaimer::new().register();
        assert_eq!(
            mmu.age_lockless(&stranger, GfnRange::new(Gfn(0), Gfn(8)).unwrap(), true),
            Err(Error::Foreign)
        );
        // The invalidation frees the emptied tables the epoch way and owes no flush of its own.
        drop(
            vm.invalidate_range_start(tdp, crate::HvaRange::new(Hva(0x10_0000), Hva(0x10_8000)).unwrap())
                .unwrap(),
        );
        assert_eq!(mmu.walk(&vm.invalidation().mmu_lock().read(), Gfn(3)), Ok(None));
        vcpus[0].put().unwrap();
    }

    #[test]
    fn aging_clears_accessed_bits_keeps_dirty_bits_and_flushes_only_for_clear_flush_young() {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        vcpus[0].load(cpu.cpu()).unwrap();
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        assert_eq!(mmu.fault(&vm, Gfn(3), true, host), Ok(FaultOutcome::Installed(Pfn(0x103))));
        let page = crate::HvaRange::new(Hva(0x10_3000), Hva(0x10_4000)).unwrap();
        let request = crate::vcpu::Request::TLB_FLUSH;
        assert!(!vm.test_young(&mmu, page), "installed, never used");
        hw_or(&mmu, Gfn(3), Spte::ACCESSED | Spte::DIRTY);
        assert!(vm.test_young(&mmu, page));
        assert!(vm.test_young(&mmu, page), "test_young clears nothing");
        assert!(vm.clear_young(&mmu, page));
        assert!(!vcpus[0].check_request(request), "clear_young never flushes");
        assert!(!vm.clear_flush_young(&mmu, page), "already cleared");
        assert!(!vcpus[0].check_request(request), "not young: no flush");
        hw_or(&mmu, Gfn(3), Spte::ACCESSED);
        assert!(vm.clear_flush_young(&mmu, page));
        assert!(vcpus[0].check_request(request), "young: flushed before returning");
        let g = vm.invalidation().mmu_lock().read();
        let leaf = mmu.table().walk(&g, Gfn(3)).unwrap().unwrap();
        assert!(!leaf.is_accessed() && leaf.is_dirty(), "the dirty bit survives aging");
        assert_eq!((vm.invalidation().in_progress(&g), vm.invalidation().seq(&g)), (Ok(0), Ok(0)));
        drop(g);
        let outside = crate::HvaRange::new(Hva(0x90_0000), Hva(0x90_1000)).unwrap();
        assert!(!vm.clear_flush_young(&mmu, outside), "no memslot: nothing to age");
    }

    #[test]
    fn epoch_zap_defers_tables() {
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: EpochMmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let handle = mmu.reclaimer().register();
        let stranger = crate::epoch::EpochReclaimer::new().register();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        for gfn in (0..16).map(Gfn) {
            mmu.table().map(&g, gfn, Spte::leaf(Pfn(gfn.0), true, true).unwrap()).unwrap();
        }
        assert_eq!(
            mmu.zap_epoch(&g, GfnRange::new(Gfn(0), Gfn(16)).unwrap(), &stranger),
            Err(Error::Foreign)
        );
        assert_eq!(
            mmu.zap_epoch(&g, GfnRange::new(Gfn(0), Gfn(16)).unwrap(), &handle),
            Ok(5),
            "4 leaf tables + 1 middle"
        );
        assert_eq!(mmu.walk(&handle.walk_begin(), Gfn(3)), Ok(None));
        assert_eq!(
            mmu.walk(&stranger.walk_begin(), Gfn(3)),
            Err(Error::Foreign),
            "a pin the zaps do not wait for"
        );
    }

    #[test]
    fn the_epoch_way_still_ages_under_mmu_lock_when_asked_directly() {
        // Vm takes the lockless path for this MMU; a caller of the trait's locked aging gets the
        // same answers.
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: EpochMmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let slot =
            Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) }).unwrap();
        mmu.map(&lock.write(), Gfn(2), Spte::leaf(Pfn(7), true, true).unwrap()).unwrap();
        assert!(!SecondaryMmu::age_gfn_range(&mmu, &lock.write(), &slot, gfns(0, 8), true), "never used");
        hw_or(&mmu, Gfn(2), Spte::ACCESSED);
        assert!(SecondaryMmu::age_gfn_range(&mmu, &lock.write(), &slot, gfns(0, 8), false));
        assert!(SecondaryMmu::age_gfn_range(&mmu, &lock.write(), &slot, gfns(0, 8), true), "cleared");
        assert!(!SecondaryMmu::age_gfn_range(&mmu, &lock.write(), &slot, gfns(0, 8), false));
    }

    #[test]
    fn an_ipi_way_mmu_refuses_every_epoch_pin() {
        // Its zaps free tables after the vCPU flush only, so no epoch pin protects a walker.
        let _cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        mmu.map(&lock.write(), Gfn(3), Spte::leaf(Pfn(7), true, true).unwrap()).unwrap();
        let domain = crate::epoch::EpochReclaimer::new();
        let pin = domain.register();
        assert_eq!(mmu.walk(&pin.walk_begin(), Gfn(3)), Err(Error::Foreign));
        assert_eq!(mmu.walk(&lock.read(), Gfn(3)).unwrap().and_then(Spte::pfn), Some(Pfn(7)));
    }

    fn gfns(start: u64, end: u64) -> GfnRange {
        GfnRange::new(Gfn(start), Gfn(end)).unwrap()
    }

    #[test]
    fn leaves_hold_their_pfn_and_permissions_in_exact_bits_and_tables_start_empty() {
        assert_eq!(Spte::MAX_PFN, Pfn((1 << 52) - 1), "a pfn fills bits 12..64");
        let bits = |pfn, writable, mmu_writable| Spte::leaf(Pfn(pfn), writable, mmu_writable).map(Spte::bits);
        assert_eq!(bits(0x42, false, false), Ok(0x42_001), "present");
        assert_eq!(bits(0x42, false, true), Ok(0x42_005), "present, MMU-writable");
        assert_eq!(bits(0x42, true, false), Ok(0x42_007), "writable implies MMU-writable");
        assert_eq!(bits(0x42, true, true), Ok(0x42_007));
        let max = Spte::leaf(Spte::MAX_PFN, true, true).unwrap();
        assert_eq!((max.pfn(), max.is_writable()), (Some(Spte::MAX_PFN), true), "MAX_PFN itself fits");
        assert_eq!(bits(1 << 52, false, false), Err(Error::RangeOverflow));
        assert_eq!(bits(u64::MAX, true, true), Err(Error::RangeOverflow));
        let table = Table::<StdHal, 4>::empty();
        assert!((0..4).all(|i| table.entry(i).map(|e| e.load(Ordering::Relaxed)) == Some(0)));
        assert!(table.entry(4).is_none(), "F entries, no more");
    }

    #[test]
    fn page_table_aging_tests_or_clears_accessed_bits_only_inside_the_range() {
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        // 15 ends one leaf table, 16 starts the next; 20 and 33 are in other tables again.
        for gfn in [15, 16, 17, 20, 33] {
            mmu.table().map(&g, Gfn(gfn), Spte::leaf(Pfn(gfn + 100), true, true).unwrap()).unwrap();
            hw_or(&mmu, Gfn(gfn), Spte::ACCESSED);
        }
        hw_or(&mmu, Gfn(17), Spte::DIRTY);
        let table = mmu.table();
        assert_eq!(table.age(&g, gfns(18, 20), false), Ok(false), "17 and 20 lie just outside");
        assert_eq!(table.age(&g, gfns(15, 16), false), Ok(true));
        assert_eq!(table.age(&g, gfns(16, 32), true), Ok(true));
        let leaf = |gfn| table.walk(&g, Gfn(gfn)).unwrap().unwrap();
        let accessed: std::vec::Vec<bool> = [15, 16, 17, 20, 33].map(|gfn| leaf(gfn).is_accessed()).into();
        assert_eq!(accessed, [true, false, false, false, true], "cleared in 16..32 only");
        assert!(leaf(17).is_dirty(), "the dirty bit survives");
        assert_eq!(table.age(&g, gfns(16, 32), false), Ok(false), "nothing young left there");
        assert_eq!(table.age(&g, gfns(0, 64), false), Ok(true), "15 and 33 still are");
        let other = crate::lock::MmuLock::<StdHal>::new();
        assert_eq!(table.age(&other.write(), gfns(0, 64), true), Err(Error::Foreign));
    }

    /// The pages a [`Counting`] allocator handed out and took back.
    #[derive(Default)]
    struct Pages {
        allocated: core::cell::Cell<usize>,
        freed: core::cell::Cell<usize>,
    }

    /// [`BoxAlloc`], counting in a [`Pages`].
    struct Counting<'a>(&'a Pages);

    // SAFETY: delegates to `BoxAlloc`, which keeps the contract; the counting touches no page.
    unsafe impl<P> PageAlloc<P> for Counting<'_> {
        fn alloc(&self, init: P) -> Result<NonNull<P>, P> {
            self.0.allocated.set(self.0.allocated.get() + 1);
            BoxAlloc.alloc(init)
        }

        unsafe fn free(&self, page: NonNull<P>) {
            self.0.freed.set(self.0.freed.get() + 1);
            // SAFETY: the caller's promise, passed on; `page` came from `BoxAlloc::alloc`.
            unsafe { BoxAlloc.free(page) }
        }
    }

    #[test]
    fn zap_unlinks_only_tables_wholly_inside_the_range_and_drop_frees_the_rest() {
        let pages = Pages::default();
        let table: PageTable<StdHal, Counting<'_>, 3, 4> = PageTable::new(StdHal, Counting(&pages)).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        for gfn in [16, 19, 33] {
            table.map(&g, Gfn(gfn), Spte::leaf(Pfn(gfn), true, true).unwrap()).unwrap();
        }
        assert_eq!(pages.allocated.get(), 5, "the root, two middle tables and two leaf tables");
        let mut retired = std::vec::Vec::new();
        assert_eq!(table.zap(&g, gfns(16, 18), &mut |page| retired.push(page)), Ok(true));
        assert!(retired.is_empty(), "the leaf table of 16..20 still maps 19");
        assert_eq!(table.walk(&g, Gfn(16)), Ok(None));
        assert_eq!(table.walk(&g, Gfn(19)).unwrap().and_then(Spte::pfn), Some(Pfn(19)));
        assert_eq!(table.zap(&g, gfns(20, 32), &mut |page| retired.push(page)), Ok(false), "no leaf there");
        assert!(retired.is_empty(), "the middle table of 16..32 reaches past 20..32");
        assert_eq!(table.zap(&g, gfns(16, 32), &mut |page| retired.push(page)), Ok(true));
        assert_eq!(retired.len(), 2, "the leaf table of 16..20, then its parent");
        assert_eq!(table.walk(&g, Gfn(19)), Ok(None));
        assert_eq!(table.walk(&g, Gfn(33)).unwrap().and_then(Spte::pfn), Some(Pfn(33)));
        for page in retired {
            // SAFETY: unlinked by the zap under mmu_lock, from this table's allocator, freed
            // once; no walker of this table exists.
            unsafe { table.allocator().free(page) }
        }
        drop(g);
        drop(table);
        assert_eq!((pages.allocated.get(), pages.freed.get()), (5, 5), "every page freed once");
    }

    #[test]
    fn walks_this_mmu_does_not_wait_for_are_refused() {
        let cpu = StdHal::register_cpu().unwrap();
        let (ours, theirs) = ([Vcpu::new(StdHal)], [Vcpu::new(StdHal)]);
        theirs[0].load(cpu.cpu()).unwrap();
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &ours).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        mmu.map(&lock.write(), Gfn(1), Spte::leaf(Pfn(5), false, true).unwrap()).unwrap();
        assert_eq!(mmu.walk(&lock.write(), Gfn(1)).unwrap().and_then(Spte::pfn), Some(Pfn(5)));
        let other = crate::lock::MmuLock::<StdHal>::new();
        assert_eq!(mmu.walk(&other.write(), Gfn(1)), Err(Error::Foreign), "another mmu_lock");
        {
            let walk = theirs[0].walk_lockless_begin().unwrap();
            assert_eq!(mmu.walk(&walk, Gfn(1)), Err(Error::Foreign), "a walk on another MMU's vCPU");
            assert_eq!(mmu.hw_access(&walk, Gfn(1), Access::Read), Err(Error::Foreign));
            assert_eq!(mmu.fast_fault(&walk, Gfn(1), Access::Write), Err(Error::Foreign));
        }
        let leaf = mmu.walk(&lock.read(), Gfn(1)).unwrap().unwrap();
        assert!(!leaf.is_writable() && !leaf.is_accessed(), "the refused calls changed nothing");
        theirs[0].put().unwrap();
    }

    #[test]
    fn repeated_hardware_accesses_keep_the_bits_already_set() {
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let installed = Spte::leaf(Pfn(6), true, true).unwrap();
        mmu.map(&lock.write(), Gfn(2), installed).unwrap();
        let g = lock.read();
        let now = || mmu.walk(&g, Gfn(2)).unwrap().map(Spte::bits);
        let (a, ad) = (installed.bits() | Spte::ACCESSED, installed.bits() | Spte::ACCESSED | Spte::DIRTY);
        assert_eq!(mmu.hw_access(&g, Gfn(2), Access::Read).unwrap().map(Spte::bits), Some(installed.bits()));
        assert_eq!(mmu.hw_access(&g, Gfn(2), Access::Read).unwrap().map(Spte::bits), Some(a));
        assert_eq!(now(), Some(a), "a second read keeps A");
        assert_eq!(mmu.hw_access(&g, Gfn(2), Access::Write).unwrap().map(Spte::bits), Some(a));
        assert_eq!(mmu.hw_access(&g, Gfn(2), Access::Write).unwrap().map(Spte::bits), Some(ad));
        assert_eq!(now(), Some(ad), "a second write keeps A and D");
        mmu.hw_access(&g, Gfn(2), Access::Read).unwrap();
        assert_eq!(now(), Some(ad), "a read after a write keeps D");
    }

    #[test]
    fn map_flushes_only_when_a_writable_translation_may_be_lost() {
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::<StdHal>::new();
        let g = lock.write();
        let flushed = || vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH);
        let leaf = |pfn, writable, mmu_writable| Spte::leaf(Pfn(pfn), writable, mmu_writable).unwrap();
        mmu.map(&g, Gfn(1), leaf(5, false, false)).unwrap();
        mmu.map(&g, Gfn(1), leaf(5, false, false)).unwrap();
        assert!(!flushed(), "never MMU-writable: no vCPU can hold a writable translation");
        mmu.map(&g, Gfn(2), leaf(6, true, true)).unwrap();
        mmu.map(&g, Gfn(2), leaf(6, true, true)).unwrap();
        assert!(!flushed(), "still writable, same pfn: nothing is lost");
        mmu.map(&g, Gfn(2), leaf(6, false, true)).unwrap();
        assert!(flushed(), "write-protected: flushed");
    }

    #[test]
    fn zap_gfn_range_flushes_remote_tlbs_when_it_zapped() {
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        for gfn in [Gfn(2), Gfn(3)] {
            assert!(matches!(mmu.fault(&vm, gfn, true, host), Ok(FaultOutcome::Installed(_))));
        }
        let flushed = || vcpus[0].check_request(crate::vcpu::Request::TLB_FLUSH);
        assert!(!flushed());
        // Only the leaf of 3 goes: no table is freed, so only the range flush (G3) flushes.
        assert_eq!(vm.zap_gfn_range(&mmu, gfns(3, 4)), Ok(true));
        assert!(flushed(), "the zapped translation is gone from every TLB before the call returns");
        assert_eq!(vm.zap_gfn_range(&mmu, gfns(3, 4)), Ok(false));
        assert!(!flushed(), "nothing zapped: no flush");
    }

    #[test]
    fn fault_around_never_prefetches_past_the_table_capacity() {
        let vcpus = [Vcpu::new(StdHal)];
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        // The memslot reaches past the 64 gfns the table maps.
        add_slot(&vm, &mmu, MemslotConfig { id: 0, base_gfn: Gfn(56), npages: 16, hva: Hva(0x10_0000) });
        let host = |hva: Hva| Ok(Pfn(hva.0 >> 12));
        assert_eq!(
            mmu.fault_around(&vm, Gfn(62), false, gfns(60, 68), host),
            Ok((FaultOutcome::Installed(Pfn(0x106)), 3)),
            "60, 61 and 63; the table stops at 64"
        );
        let g = vm.invalidation().mmu_lock().read();
        assert_eq!(mmu.walk(&g, Gfn(63)).unwrap().and_then(Spte::pfn), Some(Pfn(0x107)));
    }

    /// D3 reports a replaced leaf's bits when either is set: an accessed, clean leaf too
    /// (trace conformance checks the hand-over by this step).
    #[test]
    fn replacing_an_accessed_clean_leaf_reports_its_bits() {
        let hal = crate::hal::std::mutant::Records::default();
        let vcpus = [Vcpu::new(hal.clone())];
        let mmu: ReferenceMmu<'_, _, BoxAlloc, 3, 4> =
            ReferenceMmu::new(hal.clone(), BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::new();
        mmu.map(&lock.write(), Gfn(1), Spte::leaf(Pfn(5), true, true).unwrap()).unwrap();
        mmu.hw_access(&lock.read(), Gfn(1), Access::Read).unwrap();
        mmu.map(&lock.write(), Gfn(1), Spte::leaf(Pfn(6), true, true).unwrap()).unwrap();
        let bits: alloc::vec::Vec<Step> =
            hal.take().into_iter().filter(|s| matches!(s, Step::SpteBits { .. })).collect();
        assert_eq!(bits, [Step::SpteBits { pfn: Pfn(5), accessed: true, dirty: false }]);
    }

    #[test]
    fn the_spte_update_mutant_ages_without_atomicity_but_clears_only_the_accessed_bit() {
        // The models kill `SpteUpdateIsAtomic` by a hardware update lost between the mutant's
        // load and store; without a race its aging must do what the atomic AND does.
        let hal = crate::hal::std::mutant::Breaks(Rule::SpteUpdateIsAtomic);
        let vcpus = [Vcpu::new(hal)];
        let mmu: ReferenceMmu<'_, _, BoxAlloc, 3, 4, EpochReclamation> =
            ReferenceMmu::new(hal, BoxAlloc, &vcpus).unwrap();
        let lock = crate::lock::MmuLock::new();
        let installed = Spte::leaf(Pfn(5), true, true).unwrap();
        mmu.map(&lock.write(), Gfn(1), installed).unwrap();
        mmu.hw_access(&lock.read(), Gfn(1), Access::Write).unwrap();
        let handle = mmu.reclaimer().register();
        assert_eq!(mmu.age_lockless(&handle, gfns(0, 4), true), Ok(true));
        let now = mmu.walk(&lock.read(), Gfn(1)).unwrap().map(Spte::bits);
        assert_eq!(now, Some(installed.bits() | Spte::DIRTY));
    }
}
