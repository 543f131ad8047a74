//! P4: unsync shadow pages and the lockless sync-root check (x86 shadow MMU).
//!
//! With shadow paging the host normally write-protects the guest's page-table pages, so every
//! guest write to one traps and the shadow entries are updated at once. As an optimisation a
//! *last-level* (4K) guest page table may be made **unsync**: the host maps it writable, the
//! guest writes it directly, and the host brings the shadow page up to date when the guest
//! flushes its TLB, which the architecture requires it to do before relying on a changed PTE.
//!
//! ## State
//!
//! [`ShadowPages`] is a fixed-capacity arena of shadow pages (no allocation), indexed by
//! [`SpIndex`]. Each page has a level ([`LEVEL_4K`] for leaves), the guest frame it shadows,
//! and at most one parent link `(parent, slot)`: the shadow pages form a forest whose roots
//! are the pages with no parent. (KVM allows a page to have several parent SPTEs and tolerates
//! stale bits that its walk cleans lazily; a tree keeps the counts exact, which lets
//! [`check_invariants`](ShadowPages::check_invariants) demand exactness.) The protocol fields
//! are KVM's:
//!
//! * `unsync`: this 4K page's guest page table may be out of date;
//! * `unsync_child_bitmap`: one bit per slot ([`SLOTS_PER_PAGE`]) whose child is unsync or has
//!   unsync descendants;
//! * `unsync_children`: the number of bits set (I4.3);
//! * `mmu_unsync_pages_lock`: a spinlock that serializes markers running under `mmu_lock` held
//!   for *read* (the TDP MMU's fault path).
//!
//! All fields are HAL atomics because [`is_unsync_root`](ShadowPages::is_unsync_root) reads
//! them without any lock. The marks themselves are plain load-then-store sequences, as KVM's
//! `__test_and_set_bit` and `unsync_children++` are: they rely on the spinlock (or the write
//! lock), and a mutant that drops the spinlock ([`Rule::UnsyncMarkUnderLock`]) loses updates.
//!
//! ## Algorithm
//!
//! **Marking** ([`try_to_unsync`](ShadowPages::try_to_unsync),
//! [`try_to_unsync_gfn`](ShadowPages::try_to_unsync_gfn); KVM's `mmu_try_to_unsync_pages`,
//! called from `make_spte` when it is about to build a writable SPTE for a gfn that may be
//! shadowed):
//!
//! * U1. A gfn shadowed by an upper-level page is write-tracked: refuse ([`UnsyncError::WriteTracked`]).
//! * U2. For each page shadowing the gfn: refuse if the caller cannot unsync now; skip pages
//!   already unsync; refuse on prefetch; on the first page that needs marking take
//!   `mmu_unsync_pages_lock` and **recheck** (under the read lock another marker may have won;
//!   a 1 → 0 change needs the write lock, so only 0 → 1 can be seen); set `unsync = 1`, then
//!   mark the parents: set the slot's bit and, only if the bit was clear, `unsync_children++`,
//!   recursing to the grandparent only on a 0 → 1 count.
//! * U3. Unlock.
//! * U4. [`Barrier::UnsyncMarkBeforeWritableSpte`] (`smp_wmb`).
//! * U5. Return; **the caller then stores the writable SPTE**.
//!
//! **Checking** ([`sync_roots_if_needed`](ShadowPages::sync_roots_if_needed), KVM's
//! `kvm_mmu_sync_roots`, on a guest TLB flush): read the root's flags **without a lock**
//! ([`is_unsync_root`](ShadowPages::is_unsync_root)); only if set, take `mmu_lock` for write
//! and walk the bitmaps ([`sync_roots`](ShadowPages::sync_roots), `mmu_sync_children`),
//! syncing each unsync page and clearing its bits up the tree.
//!
//! ## The race the barriers prevent ([P4](crate::protocols#the-race-the-barriers-prevent))
//!
//! CPU 1 marks the page (1.1) and then makes the SPTE writable (1.2). If 1.2 became visible
//! first, CPU 2's guest could write a guest PTE through the writable SPTE (2.1, the hardware
//! walker reads SPTE.W = 1 and does not trap), flush (2.2, VM exit), find no flag in
//! `is_unsync_root` (2.3), skip the sync and keep using the stale shadow entry (2.4). The
//! `smp_wmb` at U4 orders 1.1 before 1.2; the `smp_rmb` in `is_unsync_root` orders the
//! **hardware walker's** read of SPTE.W (2.1) before the flag reads (2.3). The read that pairs
//! with U4 is therefore not a software load in this module at all.
//!
//! ## A window in the faithful algorithm \[inference\]
//!
//! U2's first test of `unsync` is made without the spinlock, and `kvm_unsync_page` stores
//! `unsync = 1` *before* it marks the parents. Two markers under the read lock on the same gfn
//! can therefore interleave so that B sees A's `unsync = 1`, skips the page, issues U4 and makes
//! its SPTE writable while A (still holding the spinlock) has not yet marked the root; a guest
//! flush in that window finds the root clean. This module keeps KVM's order so that the models
//! can look at exactly this interleaving (the unsync scenarios, with two host faults).

use crate::barrier::Barrier;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::lock::{MmuLock, MmuLocked, MmuWriteGuard, SpinLock};
use crate::range::Gfn;
use crate::rule::Rule;
use core::fmt;

/// Child slots per shadow page (`SPTE_ENT_PER_PAGE`): one bit each in `unsync_child_bitmap`.
pub const SLOTS_PER_PAGE: usize = 512;
/// The level of a last-level page table (`PG_LEVEL_4K`); only these pages may be unsync.
pub const LEVEL_4K: u8 = 1;
/// The deepest paging hierarchy (5-level paging): the highest level a root may have.
pub const MAX_LEVEL: u8 = 5;

const WORDS: usize = SLOTS_PER_PAGE / 64;
/// `level` of a page that is not allocated.
const FREE: u64 = 0;
/// `parent` of a root.
const NO_PARENT: u64 = u64::MAX;

/// The index of a shadow page in a [`ShadowPages`] arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpIndex(usize);

impl SpIndex {
    /// The page at arena index `i` (whether it exists is checked when it is used).
    pub const fn new(i: usize) -> Self {
        SpIndex(i)
    }

    /// The arena index.
    pub const fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for SpIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sp{}", self.0)
    }
}

/// Why an unsync-page operation refused or failed.
///
/// The first three are the protocol's answers (KVM's `-EPERM` / `-EEXIST`): the caller must
/// then build a **read-only** SPTE. The others are misuse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UnsyncError {
    /// U1, `-EPERM`: the gfn is shadowed by an upper-level page table, so it is write-tracked
    /// and may never be mapped writable.
    WriteTracked,
    /// U2, `-EPERM`: `can_unsync` was false (the host is emulating a guest TLB flush and must
    /// finish syncing first).
    CannotUnsync,
    /// U2, `-EEXIST`: a prefetch never unsyncs a page.
    Prefetch,
    /// The index is outside the arena or names a free page.
    NoSuchPage,
    /// Only last-level pages may be unsync (KVM's `WARN_ON_ONCE(sp->role.level != PG_LEVEL_4K)`).
    NotLeaf,
    /// The page has a parent, and the operation needs a root.
    NotRoot,
    /// A root level outside `2..=MAX_LEVEL`, or a child below a last-level page.
    BadLevel,
    /// A slot index not below [`SLOTS_PER_PAGE`].
    SlotOutOfRange,
    /// The parent's slot already links a child.
    SlotTaken,
    /// The page still has children linked; free them first.
    HasChildren,
    /// Every page of the arena is in use.
    Full,
}

impl fmt::Display for UnsyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsyncError::WriteTracked => "gfn is write-tracked (shadowed by an upper-level page table)",
            UnsyncError::CannotUnsync => "cannot unsync while syncing",
            UnsyncError::Prefetch => "a prefetch does not unsync pages",
            UnsyncError::NoSuchPage => "no such shadow page",
            UnsyncError::NotLeaf => "only last-level shadow pages can be unsync",
            UnsyncError::NotRoot => "shadow page is not a root",
            UnsyncError::BadLevel => "bad shadow page level",
            UnsyncError::SlotOutOfRange => "slot index out of range",
            UnsyncError::SlotTaken => "slot already links a child",
            UnsyncError::HasChildren => "shadow page still has children",
            UnsyncError::Full => "no free shadow page",
        })
    }
}

impl core::error::Error for UnsyncError {}

/// A broken P4 invariant, found by [`ShadowPages::check_invariants`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InvariantViolation {
    /// I4.3: `unsync_children` differs from the number of bits set in the bitmap.
    CountMismatch {
        /// The page.
        page: SpIndex,
        /// Its `unsync_children`.
        count: u64,
        /// Bits set in its `unsync_child_bitmap`.
        bits: u32,
    },
    /// A page above the last level is marked unsync.
    UnsyncNotLeaf {
        /// The page.
        page: SpIndex,
        /// Its level.
        level: u8,
    },
    /// A bitmap bit whose slot links no child, or a child with nothing unsync below it.
    /// KVM tolerates these and clears them lazily; this arena clears them eagerly, so one that
    /// survives an operation is a bookkeeping bug.
    StaleBit {
        /// The page holding the bit.
        page: SpIndex,
        /// The slot.
        slot: usize,
    },
    /// I4.1: a child that is unsync (or has unsync children) whose bit in its parent is clear,
    /// so a guest TLB flush would not find it: a missed sync.
    MissingMark {
        /// The parent.
        page: SpIndex,
        /// The slot that links the child.
        slot: usize,
        /// The child.
        child: SpIndex,
    },
}

impl fmt::Display for InvariantViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            InvariantViolation::CountMismatch { page, count, bits } => write!(
                f,
                "I4.3 broken: {page} has unsync_children = {count} but {bits} bits set in unsync_child_bitmap"
            ),
            InvariantViolation::UnsyncNotLeaf { page, level } => {
                write!(f, "{page} is unsync at level {level}; only level-1 (4K) pages may be")
            }
            InvariantViolation::StaleBit { page, slot } => {
                write!(f, "{page} has bit {slot} set, but nothing below that slot is unsync")
            }
            InvariantViolation::MissingMark { page, slot, child } => write!(
                f,
                "I4.1 broken: {child} (slot {slot} of {page}) is unsync or has unsync children, \
                 but bit {slot} of {page} is clear, so a guest flush would miss it"
            ),
        }
    }
}

/// A snapshot of one shadow page, for tests, models and debugging.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageState {
    /// The level ([`LEVEL_4K`] for last-level pages).
    pub level: u8,
    /// The guest frame of the guest page table this page shadows.
    pub gfn: Gfn,
    /// The parent and the slot in it, or `None` for a root.
    pub parent: Option<(SpIndex, usize)>,
    /// `sp->unsync`.
    pub unsync: bool,
    /// `sp->unsync_children`.
    pub unsync_children: u64,
    /// The slots whose bits are set in `sp->unsync_child_bitmap`, as a bitmap.
    pub unsync_child_bitmap: [u64; SLOTS_PER_PAGE / 64],
}

/// One shadow page (`struct kvm_mmu_page`, the P4 fields plus the tree links).
struct Page<H: Hal> {
    /// [`FREE`] or `1..=MAX_LEVEL`. Changed only under `mmu_lock` for write.
    level: H::AtomicU64,
    /// Changed only under `mmu_lock` for write.
    gfn: H::AtomicU64,
    /// [`NO_PARENT`] or the parent's index. Changed only under `mmu_lock` for write.
    parent: H::AtomicU64,
    /// The slot in the parent. Changed only under `mmu_lock` for write.
    slot: H::AtomicU64,
    /// Set under `mmu_lock` + `mmu_unsync_pages_lock` (or the write lock); cleared under the
    /// write lock; read locklessly by `is_unsync_root`.
    unsync: H::AtomicBool,
    /// As `unsync`.
    unsync_children: H::AtomicU64,
    /// As `unsync`.
    unsync_child_bitmap: [H::AtomicU64; WORDS],
}

impl<H: Hal> Page<H> {
    fn new() -> Self {
        Page {
            level: H::AtomicU64::new(FREE),
            gfn: H::AtomicU64::new(0),
            parent: H::AtomicU64::new(NO_PARENT),
            slot: H::AtomicU64::new(0),
            unsync: H::AtomicBool::new(false),
            unsync_children: H::AtomicU64::new(0),
            unsync_child_bitmap: core::array::from_fn(|_| H::AtomicU64::new(0)),
        }
    }

    fn level(&self) -> u8 {
        // Levels are stored from a `u8` and never exceed MAX_LEVEL.
        self.level.load(Relaxed) as u8
    }

    fn in_use(&self) -> bool {
        self.level.load(Relaxed) != FREE
    }

    fn bit_is_set(&self, slot: usize) -> bool {
        self.unsync_child_bitmap[slot / 64].load(Relaxed) & (1 << (slot % 64)) != 0
    }

    /// Whether anything at or below this page is unsync.
    fn needs_sync(&self) -> bool {
        self.unsync.load(Relaxed) || self.unsync_children.load(Relaxed) != 0
    }
}

/// A fixed-capacity arena of `N` shadow pages with the P4 state and `mmu_unsync_pages_lock`.
///
/// The arena does not own `mmu_lock`: it is protected by the VM's lock (normally
/// [`Invalidation::mmu_lock`](crate::invalidation::Invalidation::mmu_lock)), and operations
/// take a guard of it as proof that it is held. Pass guards of that one lock only.
pub struct ShadowPages<H: Hal, const N: usize> {
    hal: H,
    /// `kvm->arch.mmu_unsync_pages_lock`: taken only inside `mmu_lock`.
    unsync_lock: SpinLock<H, ()>,
    pages: [Page<H>; N],
}

impl<H: Hal, const N: usize> fmt::Debug for ShadowPages<H, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowPages").field("capacity", &N).finish_non_exhaustive()
    }
}

impl<H: Hal, const N: usize> ShadowPages<H, N> {
    /// An arena of `N` free pages.
    pub fn new(hal: H) -> Self {
        ShadowPages {
            hal,
            unsync_lock: SpinLock::<H, ()>::new(()),
            pages: core::array::from_fn(|_| Page::new()),
        }
    }

    /// The HAL handle.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// Allocates a root page of `level` (`2..=MAX_LEVEL`) shadowing the guest page table at
    /// `gfn`. Roots are never unsync themselves; only their bitmaps change.
    pub fn alloc_root(
        &self,
        _guard: &MmuWriteGuard<'_, H>,
        level: u8,
        gfn: Gfn,
    ) -> Result<SpIndex, UnsyncError> {
        if !(LEVEL_4K + 1..=MAX_LEVEL).contains(&level) {
            return Err(UnsyncError::BadLevel);
        }
        self.alloc(level, gfn, NO_PARENT, 0)
    }

    /// Allocates a page one level below `parent`, linked at `slot` of it, shadowing the guest
    /// page table at `gfn`. A fresh page is not unsync, so the parent's marks do not change
    /// (KVM's `__link_shadow_page` marks the parent when it links an unsync subtree; this arena
    /// links only fresh pages).
    pub fn alloc_child(
        &self,
        _guard: &MmuWriteGuard<'_, H>,
        parent: SpIndex,
        slot: usize,
        gfn: Gfn,
    ) -> Result<SpIndex, UnsyncError> {
        let p = self.page(parent)?;
        let level = p.level();
        if level <= LEVEL_4K {
            return Err(UnsyncError::BadLevel);
        }
        if slot >= SLOTS_PER_PAGE {
            return Err(UnsyncError::SlotOutOfRange);
        }
        if self.child_at(parent.0, slot).is_some() {
            return Err(UnsyncError::SlotTaken);
        }
        self.alloc(level - 1, gfn, parent.0 as u64, slot)
    }

    fn alloc(&self, level: u8, gfn: Gfn, parent: u64, slot: usize) -> Result<SpIndex, UnsyncError> {
        let (i, page) = self.pages.iter().enumerate().find(|(_, p)| !p.in_use()).ok_or(UnsyncError::Full)?;
        page.gfn.store(gfn.0, Relaxed);
        page.parent.store(parent, Relaxed);
        page.slot.store(slot as u64, Relaxed);
        page.unsync.store(false, Relaxed);
        page.unsync_children.store(0, Relaxed);
        for w in &page.unsync_child_bitmap {
            w.store(0, Relaxed);
        }
        page.level.store(u64::from(level), Relaxed);
        Ok(SpIndex(i))
    }

    /// Frees a page that has no children (free leaves first). If it was unsync, or had unsync
    /// children, its parent's bit is cleared and the parents' counts are brought down, as
    /// `mmu_pages_clear_parents` does after a sync, so no stale bit is left behind.
    pub fn free(&self, _guard: &MmuWriteGuard<'_, H>, sp: SpIndex) -> Result<(), UnsyncError> {
        let page = self.page(sp)?;
        if (0..N).any(|i| self.parent_of(i).is_some_and(|(p, _)| p == sp.0)) {
            return Err(UnsyncError::HasChildren);
        }
        self.clear_parents(sp.0);
        page.unsync.store(false, Relaxed);
        page.unsync_children.store(0, Relaxed);
        for w in &page.unsync_child_bitmap {
            w.store(0, Relaxed);
        }
        page.parent.store(NO_PARENT, Relaxed);
        page.level.store(FREE, Relaxed);
        Ok(())
    }

    /// A snapshot of page `sp`, read under `mmu_lock` (markers under the read lock may be
    /// changing its flags meanwhile; hold the write lock for an exact picture).
    pub fn state(&self, _guard: &impl MmuLocked, sp: SpIndex) -> Result<PageState, UnsyncError> {
        let page = self.page(sp)?;
        Ok(PageState {
            level: page.level(),
            gfn: Gfn(page.gfn.load(Relaxed)),
            parent: self.parent_of(sp.0).map(|(p, s)| (SpIndex(p), s)),
            unsync: page.unsync.load(Relaxed),
            unsync_children: page.unsync_children.load(Relaxed),
            unsync_child_bitmap: core::array::from_fn(|w| page.unsync_child_bitmap[w].load(Relaxed)),
        })
    }

    /// `mmu_try_to_unsync_pages` for one known last-level page `sp`: steps U2–U5.
    ///
    /// Callable under `mmu_lock` held for read or for write; concurrent markers under the read
    /// lock are serialized by `mmu_unsync_pages_lock`. `can_unsync == false` refuses with
    /// [`UnsyncError::CannotUnsync`]; an already-unsync page returns `Ok` without change; a
    /// `prefetch` of a page that is not yet unsync refuses with [`UnsyncError::Prefetch`].
    /// A page above the last level is [`UnsyncError::NotLeaf`] (KVM's `WARN_ON_ONCE`; KVM's U1
    /// makes it impossible, and [`try_to_unsync_gfn`](Self::try_to_unsync_gfn) keeps U1).
    ///
    /// # Contract: store the writable SPTE only **after** this returns `Ok`
    ///
    /// On `Ok` this method has just issued [`Barrier::UnsyncMarkBeforeWritableSpte`]
    /// (`smp_wmb`, \[B4-unsync-wmb\]) as its **last** action. That barrier orders the marks
    /// (`unsync = 1` and every parent's bit and count) before **the caller's next store**, and
    /// that next store must be the one that makes the SPTE writable (KVM: `mmu_spte_set` or
    /// `tdp_mmu_set_spte_atomic` after `make_spte`). A caller that stores the writable SPTE
    /// before calling this, or that does other work and relies on some later fence, lets the
    /// guest write its page table through the SPTE, flush, and find no flag in
    /// [`is_unsync_root`](Self::is_unsync_root): a missed sync (I4.2). On `Err` no barrier is
    /// issued and the caller must build a read-only SPTE.
    pub fn try_to_unsync(
        &self,
        _guard: &impl MmuLocked,
        sp: SpIndex,
        can_unsync: bool,
        prefetch: bool,
    ) -> Result<(), UnsyncError> {
        if self.page(sp)?.level() != LEVEL_4K {
            return Err(UnsyncError::NotLeaf);
        }
        self.unsync_pages(core::iter::once(sp.0), can_unsync, prefetch)
    }

    /// `mmu_try_to_unsync_pages(kvm, slot, gfn, can_unsync, prefetch)`: steps U1–U5 for every
    /// page that shadows `gfn`. A gfn that no page shadows needs nothing and returns `Ok`.
    ///
    /// U1: a gfn shadowed by a page above the last level is write-tracked
    /// ([`UnsyncError::WriteTracked`]), which also guarantees that every page marked here is a
    /// last-level page.
    ///
    /// The same contract as [`try_to_unsync`](Self::try_to_unsync): on `Ok` the last action
    /// was [`Barrier::UnsyncMarkBeforeWritableSpte`], and the caller's **next store** must be
    /// the writable SPTE.
    pub fn try_to_unsync_gfn(
        &self,
        _guard: &impl MmuLocked,
        gfn: Gfn,
        can_unsync: bool,
        prefetch: bool,
    ) -> Result<(), UnsyncError> {
        let shadows = |p: &Page<H>| p.in_use() && p.gfn.load(Relaxed) == gfn.0;
        // U1: kvm_gfn_is_write_tracked. Upper-level shadow pages write-track their gfn
        // (account_shadowed), so "tracked" is "shadowed by a page above 4K".
        if self.pages.iter().any(|p| shadows(p) && p.level() != LEVEL_4K) {
            return Err(UnsyncError::WriteTracked);
        }
        let pages = self.pages.iter().enumerate().filter(|(_, p)| shadows(p)).map(|(i, _)| i);
        self.unsync_pages(pages, can_unsync, prefetch)
    }

    /// U2–U5 over `pages`, all of them in use and at the last level.
    fn unsync_pages(
        &self,
        pages: impl Iterator<Item = usize>,
        can_unsync: bool,
        prefetch: bool,
    ) -> Result<(), UnsyncError> {
        let mut locked = false;
        let mut lock_guard = None;
        for i in pages {
            let page = &self.pages[i];
            // Every early return below happens before the first mark: `can_unsync` and
            // `prefetch` do not change during the loop, so a refusal comes at the first page
            // that is checked or not yet unsync.
            if !can_unsync {
                return Err(UnsyncError::CannotUnsync);
            }
            if page.unsync.load(Relaxed) {
                continue;
            }
            if prefetch {
                return Err(UnsyncError::Prefetch);
            }
            if !locked {
                locked = true;
                if self.hal.keeps(Rule::UnsyncMarkUnderLock) {
                    // TDP MMU faults run under the *read* lock, and the marks below are plain
                    // read-modify-writes: serialize them. Recheck: another marker under the
                    // read lock may have set `unsync` since the test above (1 -> 0 needs the
                    // write lock, so only 0 -> 1 can happen here).
                    lock_guard = Some(self.unsync_lock.lock());
                    if page.unsync.load(Relaxed) {
                        continue;
                    }
                }
            }
            self.unsync_page(i);
        }
        drop(lock_guard);
        // U4, [B4-unsync-wmb]. Pairs with SyncRootSpteBeforeFlags in `is_unsync_root`, whose
        // other half is the hardware walker's read of SPTE.W. Orders the marks above before the
        // caller's next store, the writable SPTE (1.1 before 1.2). The spinlock's release does
        // not do this: it orders the marks only for the next holder of the spinlock, not for a
        // guest that sees the SPTE. Without it the guest can write through the SPTE, flush,
        // and read the flags from before the marks: a missed sync (docs/protocols.md, P4).
        self.hal.barrier(Barrier::UnsyncMarkBeforeWritableSpte);
        Ok(())
    }

    /// `kvm_unsync_page`: `unsync = 1`, then `kvm_mmu_mark_parents_unsync`.
    fn unsync_page(&self, sp: usize) {
        self.pages[sp].unsync.store(true, Relaxed);
        let mut child = sp;
        while let Some((p, slot)) = self.parent_of(child) {
            // mark_unsync: non-atomic __test_and_set_bit, then unsync_children++; both rely on
            // mmu_unsync_pages_lock (or the write lock) and lose updates without it.
            let parent = &self.pages[p];
            let word = &parent.unsync_child_bitmap[slot / 64];
            let bit = 1u64 << (slot % 64);
            let w = word.load(Relaxed);
            if w & bit != 0 {
                return;
            }
            word.store(w | bit, Relaxed);
            let count = parent.unsync_children.load(Relaxed);
            parent.unsync_children.store(count + 1, Relaxed);
            if count != 0 {
                return;
            }
            child = p;
        }
    }

    /// `is_unsync_root(root)`: whether `root` has anything to sync, read **without any lock**
    /// (step C3 of `kvm_mmu_sync_roots`). [`UnsyncError::NoSuchPage`] or
    /// [`UnsyncError::NotRoot`] for an index that is not an allocated root; the caller keeps
    /// the root allocated while it asks (KVM pins it with `root_count`).
    ///
    /// # Pairing
    ///
    /// This issues [`Barrier::SyncRootSpteBeforeFlags`] (`smp_rmb`, \[B4-sync-rmb\]) and then
    /// reads the flags. The load that barrier orders first is **not** in this function: it is
    /// the hardware page walker's read of SPTE.W that let the guest write its page table
    /// without trapping, which happened in this vCPU's thread before the guest's TLB flush
    /// exited to the host and led here. Model that walker as a load made by (or ordered before,
    /// by the VM exit's full fence) the thread that calls this. The barrier pairs with
    /// [`Barrier::UnsyncMarkBeforeWritableSpte`] in [`try_to_unsync`](Self::try_to_unsync).
    pub fn is_unsync_root(&self, root: SpIndex) -> Result<bool, UnsyncError> {
        let page = self.root(root)?;
        // [B4-sync-rmb]. Pairs with UnsyncMarkBeforeWritableSpte. Orders the hardware walker's
        // earlier read of SPTE.W (2.1) before the flag reads below (2.3). Without it the flags
        // can be read as they were before the host marked them, although the guest already
        // wrote through the writable SPTE: the sync is skipped and the guest keeps a stale
        // translation after its flush (docs/protocols.md, P4).
        self.hal.barrier(Barrier::SyncRootSpteBeforeFlags);
        Ok(page.needs_sync())
    }

    /// `mmu_sync_children(vcpu, root)` under `mmu_lock` held for write: walks the bitmaps from
    /// `root`, calls `sync_page` once for every unsync page below it, clears its `unsync`, and
    /// clears the bits and counts on the way back up (`mmu_pages_clear_parents`). Bits whose
    /// slot links no child are cleared as KVM's walk does (`clear_unsync_child_bit`).
    ///
    /// `sync_page` is KVM's `kvm_sync_page`: it must bring the shadow page up to date with the
    /// guest page table, and write-protect the guest page table's gfn again (KVM
    /// write-protects and flushes remote TLBs before syncing), since the page stops being
    /// unsync when it returns. Unlike KVM this walk does not yield the lock between batches.
    pub fn sync_roots(
        &self,
        _guard: &MmuWriteGuard<'_, H>,
        root: SpIndex,
        mut sync_page: impl FnMut(SpIndex),
    ) -> Result<(), UnsyncError> {
        self.root(root)?;
        self.sync_children(root.0, &mut sync_page);
        Ok(())
    }

    /// `kvm_mmu_sync_roots` for a 4/5-level guest: the lockless check
    /// ([`is_unsync_root`](Self::is_unsync_root)), and only when it finds something, `mmu_lock`
    /// for write and [`sync_roots`](Self::sync_roots). Returns whether it synced.
    ///
    /// Call it from the vCPU thread after the guest's TLB flush exited to the host (see the
    /// pairing note on `is_unsync_root`). `mmu_lock` must be the lock that protects this arena.
    pub fn sync_roots_if_needed(
        &self,
        mmu_lock: &MmuLock<H>,
        root: SpIndex,
        sync_page: impl FnMut(SpIndex),
    ) -> Result<bool, UnsyncError> {
        let needed = self.is_unsync_root(root)?;
        // A mutant that ignores the flags skips a sync that is needed (a missed sync).
        if !needed || !self.hal.keeps(Rule::SyncRootsChecksFlags) {
            return Ok(false);
        }
        let guard = mmu_lock.write();
        self.sync_roots(&guard, root, sync_page)?;
        Ok(true)
    }

    /// The recursive bitmap walk of `mmu_sync_children` (depth at most `MAX_LEVEL`).
    fn sync_children<F: FnMut(SpIndex)>(&self, sp: usize, sync_page: &mut F) {
        let page = &self.pages[sp];
        for w in 0..WORDS {
            let mut word = page.unsync_child_bitmap[w].load(Relaxed);
            while word != 0 {
                let slot = w * 64 + word.trailing_zeros() as usize;
                word &= word - 1;
                if let Some(c) = self.child_at(sp, slot) {
                    let child = &self.pages[c];
                    if child.level() == LEVEL_4K {
                        if child.unsync.load(Relaxed) {
                            sync_page(SpIndex(c));
                            // kvm_unlink_unsync_page
                            child.unsync.store(false, Relaxed);
                        }
                    } else {
                        self.sync_children(c, sync_page);
                    }
                    if child.needs_sync() {
                        // Cannot happen under the write lock with consistent counts; keep the
                        // bit so that the invariant check reports the inconsistency.
                        continue;
                    }
                }
                self.clear_child_bit(sp, slot);
            }
        }
    }

    /// `clear_unsync_child_bit`: clears `slot`'s bit in `parent` and decrements the count.
    /// Returns whether the bit was set.
    fn clear_child_bit(&self, parent: usize, slot: usize) -> bool {
        let page = &self.pages[parent];
        let word = &page.unsync_child_bitmap[slot / 64];
        let bit = 1u64 << (slot % 64);
        let w = word.load(Relaxed);
        if w & bit == 0 {
            return false;
        }
        word.store(w & !bit, Relaxed);
        let count = page.unsync_children.load(Relaxed);
        page.unsync_children.store(count.saturating_sub(1), Relaxed);
        true
    }

    /// `mmu_pages_clear_parents` from `sp` upwards: clear `sp`'s bit in its parent, and keep
    /// going while a parent's count drops to zero.
    fn clear_parents(&self, sp: usize) {
        let mut child = sp;
        while let Some((p, slot)) = self.parent_of(child) {
            if !self.clear_child_bit(p, slot) || self.pages[p].unsync_children.load(Relaxed) != 0 {
                return;
            }
            child = p;
        }
    }

    /// Checks the P4 invariants over every allocated page: I4.3 (`unsync_children` equals the
    /// bitmap's popcount), only last-level pages unsync, no stale bit, and I4.1's bookkeeping
    /// half (every page that is unsync or has unsync children has its bit set in its parent,
    /// so by induction every unsync page is reachable from its root's bitmap).
    ///
    /// Takes `mmu_unsync_pages_lock`, so markers under the read lock are quiescent while it
    /// looks (unless a mutant breaks [`Rule::UnsyncMarkUnderLock`]). Reports the first
    /// violation found, lowest page first.
    pub fn check_invariants(&self, _guard: &impl MmuLocked) -> Result<(), InvariantViolation> {
        let _quiet = self.unsync_lock.lock();
        for (i, page) in self.pages.iter().enumerate().filter(|(_, p)| p.in_use()) {
            let sp = SpIndex(i);
            let count = page.unsync_children.load(Relaxed);
            let bits: u32 = page.unsync_child_bitmap.iter().map(|w| w.load(Relaxed).count_ones()).sum();
            if count != u64::from(bits) {
                return Err(InvariantViolation::CountMismatch { page: sp, count, bits });
            }
            let level = page.level();
            if page.unsync.load(Relaxed) && level != LEVEL_4K {
                return Err(InvariantViolation::UnsyncNotLeaf { page: sp, level });
            }
            for slot in (0..SLOTS_PER_PAGE).filter(|&s| page.bit_is_set(s)) {
                if !self.child_at(i, slot).is_some_and(|c| self.pages[c].needs_sync()) {
                    return Err(InvariantViolation::StaleBit { page: sp, slot });
                }
            }
            if let Some((p, slot)) = self.parent_of(i) {
                if page.needs_sync() && !self.pages[p].bit_is_set(slot) {
                    return Err(InvariantViolation::MissingMark { page: SpIndex(p), slot, child: sp });
                }
            }
        }
        Ok(())
    }

    /// The page at `sp`, if it is in range and allocated.
    fn page(&self, sp: SpIndex) -> Result<&Page<H>, UnsyncError> {
        self.pages.get(sp.0).filter(|p| p.in_use()).ok_or(UnsyncError::NoSuchPage)
    }

    /// The page at `root`, if it is an allocated root.
    fn root(&self, root: SpIndex) -> Result<&Page<H>, UnsyncError> {
        let page = self.page(root)?;
        if self.parent_of(root.0).is_some() {
            return Err(UnsyncError::NotRoot);
        }
        Ok(page)
    }

    /// The parent of page `i` and the slot in it.
    fn parent_of(&self, i: usize) -> Option<(usize, usize)> {
        let page = &self.pages[i];
        if !page.in_use() {
            return None;
        }
        match page.parent.load(Relaxed) {
            NO_PARENT => None,
            p => Some((p as usize, page.slot.load(Relaxed) as usize)),
        }
    }

    /// The child linked at `slot` of page `parent` (the SPTE at that index, in KVM).
    fn child_at(&self, parent: usize, slot: usize) -> Option<usize> {
        (0..N).find(|&i| self.parent_of(i) == Some((parent, slot)))
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::barrier::FenceKind;
    use crate::hal::std::StdHal;
    use std::sync::Arc;
    use std::vec::Vec;

    use crate::hal::std::mutant::Breaks;

    #[test]
    fn indices_and_errors_print_what_they_name() {
        let sp = SpIndex::new(7);
        assert_eq!(sp.index(), 7);
        assert_eq!(std::format!("{sp}"), "sp7");
        assert_eq!(std::format!("{}", UnsyncError::SlotTaken), "slot already links a child");
        assert_eq!(std::format!("{}", UnsyncError::Full), "no free shadow page");
    }

    /// root (level 3, gfn 100) -> a (slot 1, level 2), b (slot 2, level 2);
    /// a -> a0 (slot 0, gfn 200), a5 (slot 5, gfn 201); b -> b300 (slot 300, gfn 202).
    struct Tree {
        root: SpIndex,
        a: SpIndex,
        b: SpIndex,
        a0: SpIndex,
        a5: SpIndex,
        b300: SpIndex,
    }

    fn tree<H: Hal>(sps: &ShadowPages<H, 8>, lock: &MmuLock<H>) -> Tree {
        let g = lock.write();
        let root = sps.alloc_root(&g, 3, Gfn(100)).unwrap();
        let a = sps.alloc_child(&g, root, 1, Gfn(101)).unwrap();
        let b = sps.alloc_child(&g, root, 2, Gfn(102)).unwrap();
        let a0 = sps.alloc_child(&g, a, 0, Gfn(200)).unwrap();
        let a5 = sps.alloc_child(&g, a, 5, Gfn(201)).unwrap();
        let b300 = sps.alloc_child(&g, b, 300, Gfn(202)).unwrap();
        Tree { root, a, b, a0, a5, b300 }
    }

    fn count<H: Hal, const N: usize>(sps: &ShadowPages<H, N>, g: &impl MmuLocked, sp: SpIndex) -> u64 {
        sps.state(g, sp).unwrap().unsync_children
    }

    #[test]
    fn marks_reach_the_root_and_count_each_child_once() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        assert_eq!(sps.is_unsync_root(t.root), Ok(false));
        let g = lock.read();
        sps.try_to_unsync(&g, t.a0, true, false).unwrap();
        assert!(sps.state(&g, t.a0).unwrap().unsync);
        assert_eq!((count(&sps, &g, t.a), count(&sps, &g, t.root)), (1, 1));
        assert_eq!(sps.state(&g, t.root).unwrap().unsync_child_bitmap[0], 1 << 1);
        // A second child of `a`: a's count rises, the root's does not (no 0 -> 1 on a).
        sps.try_to_unsync(&g, t.a5, true, false).unwrap();
        assert_eq!((count(&sps, &g, t.a), count(&sps, &g, t.root)), (2, 1));
        // Slot 300 lives in the bitmap's fifth word.
        sps.try_to_unsync(&g, t.b300, true, false).unwrap();
        assert_eq!(sps.state(&g, t.b).unwrap().unsync_child_bitmap[4], 1 << (300 - 256));
        assert_eq!(count(&sps, &g, t.root), 2);
        // Already unsync: nothing changes.
        sps.try_to_unsync(&g, t.a0, true, false).unwrap();
        assert_eq!((count(&sps, &g, t.a), count(&sps, &g, t.root)), (2, 2));
        sps.check_invariants(&g).unwrap();
        drop(g);
        assert_eq!(sps.is_unsync_root(t.root), Ok(true));
    }

    #[test]
    fn refusals_follow_kvm_order() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        let g = lock.read();
        assert_eq!(sps.try_to_unsync(&g, t.a0, true, true), Err(UnsyncError::Prefetch));
        assert_eq!(sps.try_to_unsync(&g, t.a0, false, false), Err(UnsyncError::CannotUnsync));
        assert!(!sps.state(&g, t.a0).unwrap().unsync, "a refusal marks nothing");
        sps.try_to_unsync(&g, t.a0, true, false).unwrap();
        // The unsync test comes before the prefetch test, the can_unsync test before both.
        assert_eq!(sps.try_to_unsync(&g, t.a0, true, true), Ok(()));
        assert_eq!(sps.try_to_unsync(&g, t.a0, false, false), Err(UnsyncError::CannotUnsync));
        // U1: gfns of upper-level pages are write-tracked.
        assert_eq!(sps.try_to_unsync_gfn(&g, Gfn(101), true, false), Err(UnsyncError::WriteTracked));
        assert_eq!(sps.try_to_unsync_gfn(&g, Gfn(100), true, false), Err(UnsyncError::WriteTracked));
        // A gfn nobody shadows needs nothing.
        assert_eq!(sps.try_to_unsync_gfn(&g, Gfn(999), true, false), Ok(()));
        sps.check_invariants(&g).unwrap();
    }

    #[test]
    fn gfn_form_marks_every_page_shadowing_the_gfn() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        let twin = sps.alloc_child(&lock.write(), t.b, 7, Gfn(200)).unwrap();
        let g = lock.read();
        sps.try_to_unsync_gfn(&g, Gfn(200), true, false).unwrap();
        assert!(sps.state(&g, t.a0).unwrap().unsync && sps.state(&g, twin).unwrap().unsync);
        assert!(!sps.state(&g, t.a5).unwrap().unsync);
        assert_eq!(count(&sps, &g, t.root), 2);
        sps.check_invariants(&g).unwrap();
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        let g = lock.write();
        assert_eq!(sps.alloc_root(&g, 1, Gfn(0)), Err(UnsyncError::BadLevel));
        assert_eq!(sps.alloc_root(&g, 6, Gfn(0)), Err(UnsyncError::BadLevel));
        assert_eq!(sps.alloc_child(&g, t.a0, 0, Gfn(0)), Err(UnsyncError::BadLevel));
        assert_eq!(sps.alloc_child(&g, t.a, 512, Gfn(0)), Err(UnsyncError::SlotOutOfRange));
        assert_eq!(sps.alloc_child(&g, t.a, 5, Gfn(0)), Err(UnsyncError::SlotTaken));
        assert_eq!(sps.alloc_child(&g, SpIndex::new(8), 0, Gfn(0)), Err(UnsyncError::NoSuchPage));
        assert_eq!(
            sps.alloc_child(&g, SpIndex::new(7), 0, Gfn(0)),
            Err(UnsyncError::NoSuchPage),
            "free page"
        );
        assert_eq!(sps.try_to_unsync(&g, t.a, true, false), Err(UnsyncError::NotLeaf));
        assert_eq!(sps.try_to_unsync(&g, SpIndex::new(99), true, false), Err(UnsyncError::NoSuchPage));
        assert_eq!(sps.is_unsync_root(t.a0), Err(UnsyncError::NotRoot));
        assert_eq!(sps.sync_roots(&g, t.a, |_| ()), Err(UnsyncError::NotRoot));
        assert_eq!(sps.free(&g, t.a), Err(UnsyncError::HasChildren));
        sps.alloc_root(&g, 4, Gfn(1)).unwrap();
        sps.alloc_root(&g, 4, Gfn(2)).unwrap();
        assert_eq!(sps.alloc_root(&g, 4, Gfn(3)), Err(UnsyncError::Full));
        sps.free(&g, t.a5).unwrap();
        assert_eq!(sps.state(&g, t.a5), Err(UnsyncError::NoSuchPage));
        assert_eq!(sps.free(&g, t.a5), Err(UnsyncError::NoSuchPage), "double free");
        sps.check_invariants(&g).unwrap();
    }

    #[test]
    fn sync_roots_syncs_each_unsync_page_once_and_clears_every_mark() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        {
            let g = lock.read();
            for sp in [t.a0, t.a5, t.b300] {
                sps.try_to_unsync(&g, sp, true, false).unwrap();
            }
        }
        let mut synced = Vec::new();
        assert_eq!(sps.sync_roots_if_needed(&lock, t.root, |sp| synced.push(sp)), Ok(true));
        synced.sort();
        let mut want = [t.a0, t.a5, t.b300];
        want.sort();
        assert_eq!(synced, want);
        let g = lock.read();
        for sp in [t.root, t.a, t.b, t.a0, t.a5, t.b300] {
            let s = sps.state(&g, sp).unwrap();
            assert!(!s.unsync && s.unsync_children == 0 && s.unsync_child_bitmap == [0; 8], "{sp}: {s:?}");
        }
        sps.check_invariants(&g).unwrap();
        drop(g);
        assert_eq!(sps.is_unsync_root(t.root), Ok(false));
        assert_eq!(sps.sync_roots_if_needed(&lock, t.root, |_| panic!("nothing to sync")), Ok(false));
    }

    #[test]
    fn freeing_an_unsync_page_clears_its_marks() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        sps.try_to_unsync(&lock.read(), t.a0, true, false).unwrap();
        sps.try_to_unsync(&lock.read(), t.b300, true, false).unwrap();
        let g = lock.write();
        sps.free(&g, t.a0).unwrap();
        assert_eq!((count(&sps, &g, t.a), count(&sps, &g, t.root)), (0, 1));
        sps.check_invariants(&g).unwrap();
        sps.free(&g, t.b300).unwrap();
        assert_eq!(count(&sps, &g, t.root), 0);
        sps.check_invariants(&g).unwrap();
        // The freed slot can be reused.
        sps.alloc_child(&g, t.a, 0, Gfn(300)).unwrap();
    }

    /// Marks the pages `unsync` picks from the tree unsync, frees a5, and checks that exactly
    /// a0's marks are left: `a` counts one unsync child (bit 0), the root one (`a`'s bit 1), and
    /// the root still needs a sync.
    fn free_a5_and_expect_only_a0_marked(unsync: impl Fn(&Tree) -> Vec<SpIndex>) {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        for sp in unsync(&t) {
            sps.try_to_unsync(&lock.read(), sp, true, false).unwrap();
        }
        let g = lock.write();
        sps.free(&g, t.a5).unwrap();
        assert_eq!((count(&sps, &g, t.a), count(&sps, &g, t.root)), (1, 1));
        assert_eq!(sps.state(&g, t.a).unwrap().unsync_child_bitmap[0], 1 << 0);
        assert_eq!(sps.state(&g, t.root).unwrap().unsync_child_bitmap[0], 1 << 1);
        sps.check_invariants(&g).unwrap();
        drop(g);
        assert_eq!(sps.is_unsync_root(t.root), Ok(true));
    }

    #[test]
    fn freeing_a_page_that_is_not_unsync_leaves_its_siblings_marks() {
        // a5's bit in `a` is clear: `clear_unsync_child_bit` must find it clear and stop, not
        // take a0's count away from `a` and then `a`'s bit from the root.
        free_a5_and_expect_only_a0_marked(|t| std::vec![t.a0]);
    }

    #[test]
    fn freeing_one_of_two_unsync_siblings_keeps_the_parents_mark() {
        // `a` still has a0 unsync after a5 goes: the walk up must stop at `a`, whose count is
        // still 1, and leave `a`'s bit in the root.
        free_a5_and_expect_only_a0_marked(|t| std::vec![t.a0, t.a5]);
    }

    #[test]
    fn invariant_check_reports_corruption() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(StdHal);
        let t = tree(&sps, &lock);
        sps.try_to_unsync(&lock.read(), t.a0, true, false).unwrap();
        let g = lock.write();
        sps.pages[t.a.0].unsync_children.store(2, Relaxed);
        assert_eq!(
            sps.check_invariants(&g),
            Err(InvariantViolation::CountMismatch { page: t.a, count: 2, bits: 1 })
        );
        sps.pages[t.a.0].unsync_children.store(1, Relaxed);
        sps.pages[t.root.0].unsync_child_bitmap[0].store(0, Relaxed);
        sps.pages[t.root.0].unsync_children.store(0, Relaxed);
        let err = sps.check_invariants(&g).unwrap_err();
        assert_eq!(err, InvariantViolation::MissingMark { page: t.root, slot: 1, child: t.a });
        assert!(std::format!("{err}").contains("would miss"));
        sps.pages[t.root.0].unsync_child_bitmap[0].store(0b110, Relaxed);
        sps.pages[t.root.0].unsync_children.store(2, Relaxed);
        assert_eq!(sps.check_invariants(&g), Err(InvariantViolation::StaleBit { page: t.root, slot: 2 }));
    }

    #[test]
    fn mutant_ignoring_the_flags_misses_the_sync() {
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(Breaks(Rule::SyncRootsChecksFlags));
        let t = tree(&sps, &lock);
        sps.try_to_unsync(&lock.read(), t.a0, true, false).unwrap();
        assert_eq!(sps.sync_roots_if_needed(&lock, t.root, |_| ()), Ok(false));
        assert!(sps.state(&lock.read(), t.a0).unwrap().unsync, "the page was not synced");
    }

    #[test]
    fn mutant_without_the_lock_still_marks_single_threaded() {
        // The rule matters only for concurrent markers: alone, the marks are the same.
        let lock = MmuLock::new();
        let sps = ShadowPages::<_, 8>::new(Breaks(Rule::UnsyncMarkUnderLock));
        let t = tree(&sps, &lock);
        let g = lock.read();
        sps.try_to_unsync(&g, t.a0, true, false).unwrap();
        assert_eq!(count(&sps, &g, t.root), 1);
        sps.check_invariants(&g).unwrap();
    }

    /// root (level 3) -> 4 pages (level 2) -> 16 leaves each; leaf gfns are 1000 + index.
    fn wide_tree(sps: &ShadowPages<StdHal, 128>, lock: &MmuLock<StdHal>) -> (SpIndex, Vec<SpIndex>) {
        let g = lock.write();
        let root = sps.alloc_root(&g, 3, Gfn(1)).unwrap();
        let mut leaves = Vec::new();
        for m in 0..4 {
            let mid = sps.alloc_child(&g, root, 64 * m + 3, Gfn(2 + m as u64)).unwrap();
            for l in 0..16 {
                let gfn = 1000 + leaves.len() as u64;
                leaves.push(sps.alloc_child(&g, mid, 31 * l + 7, Gfn(gfn)).unwrap());
            }
        }
        (root, leaves)
    }

    #[test]
    fn concurrent_markers_under_the_read_lock_keep_counts_exact() {
        const THREADS: usize = 4;
        let lock = Arc::new(MmuLock::<StdHal>::new());
        let sps = Arc::new(ShadowPages::<StdHal, 128>::new(StdHal));
        let (root, leaves) = wide_tree(&sps, &lock);
        for round in 0..200 {
            let start = Arc::new(std::sync::Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (lock, sps, leaves, start) =
                        (lock.clone(), sps.clone(), leaves.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        // Every thread marks every leaf, starting at a different place, so the
                        // same pages and the same parent words are contended.
                        for k in 0..leaves.len() {
                            let sp = leaves[(k + t * 17 + round) % leaves.len()];
                            let g = lock.read();
                            if k % 2 == 0 {
                                sps.try_to_unsync(&g, sp, true, false).unwrap();
                            } else {
                                let gfn = sps.state(&g, sp).unwrap().gfn;
                                sps.try_to_unsync_gfn(&g, gfn, true, false).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            {
                let g = lock.write();
                if let Err(v) = sps.check_invariants(&g) {
                    panic!("round {round}: {v}");
                }
                assert_eq!(count(&sps, &g, root), 4);
            }
            let mut synced = 0;
            assert_eq!(sps.sync_roots_if_needed(&lock, root, |_| synced += 1), Ok(true));
            assert_eq!(synced, leaves.len(), "round {round}: every leaf synced exactly once");
            sps.check_invariants(&lock.read()).unwrap();
            assert_eq!(sps.is_unsync_root(root), Ok(false));
        }
    }

    #[test]
    fn a_flush_that_sees_the_writable_spte_sees_the_marks() {
        // Host: mark, then store the writable SPTE (the caller's next store after the barrier).
        // Guest: its hardware walker reads SPTE.W = 1, the guest flushes (VM exit: a full
        // fence), and is_unsync_root must then see the marks (docs/protocols.md, P4).
        let lock = Arc::new(MmuLock::<StdHal>::new());
        let sps = Arc::new(ShadowPages::<StdHal, 128>::new(StdHal));
        let (root, leaves) = wide_tree(&sps, &lock);
        let spte_writable = Arc::new(<StdHal as Hal>::AtomicBool::new(false));
        for round in 0..500 {
            let leaf = leaves[round % leaves.len()];
            let host = {
                let (lock, sps, spte) = (lock.clone(), sps.clone(), spte_writable.clone());
                std::thread::spawn(move || {
                    let g = lock.read();
                    sps.try_to_unsync(&g, leaf, true, false).unwrap();
                    spte.store(true, Relaxed);
                })
            };
            while !spte_writable.load(Relaxed) {
                StdHal.spin_hint();
            }
            StdHal.fence(FenceKind::Mb);
            assert_eq!(sps.is_unsync_root(root), Ok(true), "round {round}: missed sync");
            host.join().unwrap();
            let mut synced = Vec::new();
            assert_eq!(sps.sync_roots_if_needed(&lock, root, |sp| synced.push(sp)), Ok(true));
            assert_eq!(synced, [leaf]);
            spte_writable.store(false, Relaxed);
        }
    }
}
