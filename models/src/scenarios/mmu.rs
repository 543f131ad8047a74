//! The reference secondary MMU under the checkers: scenarios that drive core's own
//! [`ReferenceMmu`] (its fault path, fast path, lockless and epoch walks, `zap_ipi`,
//! `zap_epoch`, and its [`SecondaryMmu`] implementation behind [`Vm`]'s notifier), never a copy
//! of a protocol path. What a scenario adds is roles, ghost state and invariants:
//!
//! * **Table pages** come from [`GhostTables`], a [`PageAlloc`] that records every page it hands
//!   out and never reuses memory (unless a scenario opts into recycling freed pages:
//!   [`mmu_age_lockless_vs_map`]): `free` marks the page freed (ghost state) and *poisons* it
//!   (every entry becomes a leaf mapping [`POISON_PFN`]; with the accessed bit set too where a
//!   scenario opts in, so that an ager sees it: [`mmu_age_lockless_vs_zap_epoch`]). A software walk in core that reaches a
//!   freed page returns the poison leaf (loom explores the executions in which the walker's load
//!   returns the poison store); the scenarios' own hardware walker checks the ghost mark right
//!   after each load of a table entry (ghost accesses are not loom operations, so no other role
//!   runs in between: a page marked freed then was freed before the load).
//! * **vCPU TLBs and paging-structure caches** are ghost state ([`Tlb`]), filled by *guest
//!   accesses*: inside its guest-mode section ([`Vcpu::enter_guest`]) a vCPU looks the gfn up
//!   in its TLB; on a miss the hardware walker walks the table (from the cached leaf table when
//!   the paging-structure cache holds one, else from the root, which is the first page the
//!   allocator handed out: [`PageTable::new`](mmusync::mmu::PageTable::new) allocates it) and
//!   caches the translation and the leaf table it went through. The walker decodes entries as
//!   [`Spte`] documents them (bit 0 present, bit 3 table, the table's address in the bits above
//!   the flags, a leaf's pfn from bit 12).
//! * **The flush** empties a vCPU's ghost TLB and caches where core's protocol says the vCPU
//!   flushes: when it handles [`Request::TLB_FLUSH`] ([`Vcpu::check_request`]), after a refused
//!   entry or after a VM exit. `flush_remote_tlbs` itself only sets the request and waits for
//!   the IPI; a vCPU in guest mode keeps using its TLB until it exits.
//! * **Revocation**: when an invalidation's `start`, or a zap with its flush, has returned, the
//!   disturber marks the pfns whose translations it removed *revoked* (ghost). From then on,
//!   (i) a guest access that hits a TLB entry for a revoked pfn violates
//!   [`Invariant::StaleTlbAfterFlush`]; (iii) an SPTE (read by the hardware walker, or by the
//!   final check under `mmu_lock`) that maps a revoked or freed pfn violates
//!   [`Invariant::SpteMapsFreedPage`]; (ii) any read of a freed table page (software walk,
//!   hardware walk, paging-structure cache) violates [`Invariant::WalkerReadFreedTable`].
//!
//! Shapes are tiny: fanout 2, one or two levels, one vCPU, two roles.
//!
//! | scenario | table | roles |
//! |---|---|---|
//! | [`mmu_fault_vs_invalidation`] | 1 level (gfns 0..2) | vcpu (fault, two guest runs) vs invalidator (`Vm` start/end, remap + free) |
//! | [`mmu_zap_ipi_vs_walk`] | 2 levels (gfns 0..4) | vcpu (lockless walk + fast path, guest run with a cached leaf table) vs zapper (`zap_ipi` of a leaf table) |
//! | [`mmu_zap_epoch_vs_walk`] | 2 levels | vcpu (epoch walk, RCU callbacks, guest run with a cached leaf table) vs zapper (`zap_epoch`) |
//! | [`mmu_age_lockless_vs_zap_epoch`] | 2 levels | ager (`clear_young`, `test_young` without `mmu_lock`, the epoch-way MMU's notifier) vs zapper (`Vm` start/end through it: `zap_epoch`; RCU callbacks) |
//! | [`mmu_age_lockless_vs_map`] | 2 levels | vcpu (a fault whose `map` recycles a freed table page and links it) vs ager (`test_young` without `mmu_lock` of a gfn nothing maps) |
//! | [`mmu_invalidate_two_slots`] | 1 level | vcpu (guest run using TLB entries of two memslots) vs invalidator (one start/end over both) |
//! | [`mmu_memslot_delete_vs_guest`] | 1 level | vcpu (guest run, then a fault) vs memslot-updater (`Vm::set_memslot` delete) |
//! | [`mmu_prefetch_vs_invalidation`] | 1 level | vcpu (`fault_around`: fault on gfn 0, prefetch of gfn 1) vs invalidator (start/end of gfn 1's page) |
//! | [`prefault_vs_memslot_delete`] | 1 level | vcpu (`prefault`: the fault loop inside one SRCU section) vs memslot-updater (`Vm::set_memslot` delete) |
//! | [`mmu_dirty_bit_vs_write_protect`] | 1 level | vcpu (a write: the hardware ORs the dirty bit) vs write-protector (`ReferenceMmu::map` to read-only) |
//! | [`mmu_clear_flush_young_vs_guest`] | 1 level | vcpu (two writes) vs ager (`Vm::clear_flush_young`) |
//! | [`mmu_map_write_protect_vs_guest`] | 1 level | vcpu (guest run writing through a writable TLB entry) vs write-protector (`ReferenceMmu::map` to read-only) |

use super::{page_hvas, page_slot, setup, Host, HVA0};
use crate::exec::{violated, Executor, Invariant, Role};
use crate::ghost::{Flag, Pages, Pfn};
use crate::scenario::ScenarioHal;
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use core::marker::PhantomData;
use core::mem::ManuallyDrop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use mmusync::hal::{Atomic, AtomicInt, CpuId, Hal, Ordering::Acquire, Ordering::Relaxed, PageAlloc};
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{Access, FaultOutcome, PageTracker, ReferenceMmu, Spte, Table};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::range::{Gfn, GfnRange, HvaRange};
use mmusync::reclamation::{EpochReclamation, IpiReclamation, Reclamation};
use mmusync::vcpu::{Request, Vcpu, VcpuError};

/// Entries per table page.
pub const FANOUT: usize = 2;

/// The pfn every entry of a freed table page maps (a present, read-only leaf). No page of the
/// primary MMU has it.
pub const POISON_PFN: Pfn = Pfn(0xdead_beef);

/// The most table pages one scenario allocates (a 2-level table of fanout 2 has 3).
const MAX_TABLES: usize = 4;

/// The most gfns a scenario table maps (`FANOUT^2`).
const MAX_GFNS: usize = FANOUT * FANOUT;

/// Spte bits, as [`Spte`] documents them.
const SPTE_PRESENT: u64 = 1 << 0;
const SPTE_WRITABLE: u64 = 1 << 1;
const SPTE_TABLE: u64 = 1 << 3;
const SPTE_FLAGS: u64 = 0x3f;

type ScenarioTable<H> = Table<H, FANOUT>;

/// The pages of a [`GhostTables`]: addresses (each a leaked `Box<Table>`), ghost liveness.
struct TablePool<H: Hal> {
    /// The address of page `i`, `0` while unused; page 0 is the root.
    addrs: [AtomicUsize; MAX_TABLES],
    next: AtomicUsize,
    /// Page `i` is pfn `i + 1` in the ghost liveness.
    freed: Pages<MAX_TABLES>,
    /// The entry `free` writes into every entry of a freed page: [`poison_bits`], or, opted
    /// into by [`GhostTables::poison_young`], the same with the accessed bit set.
    poison: AtomicU64,
    /// Opted into by [`GhostTables::recycle`]: `alloc` hands out a freed page again.
    recycle: Flag,
    /// How many allocations reused a freed page.
    recycled: AtomicUsize,
    /// Set when the world is torn down: frees from then on (the page table's drop, deferred
    /// frees run by the collector's drop) are ghost marks only. No role runs any more, and the
    /// teardown may run while a violation unwinds, where loom must not be entered (a loom
    /// store there can switch threads, which aborts the process).
    teardown: Flag,
    _tables: PhantomData<fn() -> ScenarioTable<H>>,
}

impl<H: Hal> Drop for TablePool<H> {
    fn drop(&mut self) {
        for a in &self.addrs {
            let addr = a.load(SeqCst);
            if addr != 0 {
                // SAFETY: every non-zero address came from `Box::leak` in `alloc`, is released
                // once (here), and the last handle is dropping: no page table, walker or
                // deferred free can reach the page any more.
                drop(unsafe { Box::from_raw(addr as *mut ScenarioTable<H>) });
            }
        }
    }
}

/// The table pages' allocator, with ghost liveness. `free` marks the page freed and poisons it
/// (atomic stores of the poison leaf into every entry) but keeps its memory until the last
/// handle drops, after the page table and every deferred free: a walker that reaches a freed
/// page reads poison, never released memory.
pub struct GhostTables<H: Hal>(Arc<TablePool<H>>);

impl<H: Hal> Clone for GhostTables<H> {
    fn clone(&self) -> Self {
        GhostTables(self.0.clone())
    }
}

impl<H: Hal> GhostTables<H> {
    /// An allocator with no page handed out.
    pub fn new() -> Self {
        GhostTables(Arc::new(TablePool {
            addrs: core::array::from_fn(|_| AtomicUsize::new(0)),
            next: AtomicUsize::new(0),
            freed: Pages::new(),
            poison: AtomicU64::new(poison_bits()),
            recycle: Flag::new(),
            recycled: AtomicUsize::new(0),
            teardown: Flag::new(),
            _tables: PhantomData,
        }))
    }

    /// The index of the page at `page`. Panics for an address this allocator never handed out.
    fn index(&self, page: NonNull<ScenarioTable<H>>) -> usize {
        let addr = page.as_ptr() as usize;
        match self.0.addrs.iter().position(|a| a.load(SeqCst) == addr) {
            Some(i) => i,
            None => panic!("ghost: {addr:#x} is not a table page of this allocator"),
        }
    }

    /// Whether the page at `page` was freed.
    fn is_freed(&self, page: NonNull<ScenarioTable<H>>) -> bool {
        self.0.freed.is_freed(table_pfn(self.index(page)))
    }

    /// The root: the first page handed out ([`mmusync::mmu::PageTable::new`] allocates it
    /// before anything else).
    fn root(&self) -> NonNull<ScenarioTable<H>> {
        match NonNull::new(self.0.addrs[0].load(SeqCst) as *mut ScenarioTable<H>) {
            Some(p) => p,
            None => panic!("ghost: no root allocated yet"),
        }
    }

    /// How many pages were freed.
    fn frees(&self) -> usize {
        (0..MAX_TABLES).filter(|&i| self.0.freed.is_freed(table_pfn(i))).count()
    }

    /// The entry every entry of a freed page holds (the poison).
    fn poison(&self) -> u64 {
        self.0.poison.load(SeqCst)
    }

    /// Opt-in, before any page is freed: the poison carries the accessed bit. An ager skips
    /// entries whose accessed bit is clear, so the default poison is invisible to it; this one
    /// makes an ager that reads a freed page report it young, and one that clears the bit
    /// write into the freed page ([`World::check_freed_tables`] finds the write).
    fn poison_young(&self) {
        self.0.poison.store(poison_bits() | Spte::ACCESSED, SeqCst);
    }

    /// Opt-in: `alloc` reuses a freed page when there is one, as a real allocator would, instead
    /// of a fresh `Box`. A fresh loom atomic has no older store that a racing reader could
    /// return (loom reports such a read as a causality violation, not as a stale value), so
    /// only a recycled page can show a walker that follows a new link and reads the page's
    /// previous life: the poison, which stays earlier than `init`'s values in each entry's
    /// modification order ([`mmu_age_lockless_vs_map`]).
    fn recycle(&self) {
        self.0.recycle.set();
    }

    /// How many allocations reused a freed page.
    fn recycled(&self) -> usize {
        self.0.recycled.load(SeqCst)
    }

    /// Each freed page and entry that no longer holds the poison: something wrote into the
    /// page after it was freed.
    fn written_after_free(&self) -> Option<(usize, usize, u64)> {
        let poison = self.poison();
        (0..MAX_TABLES).filter(|&i| self.0.freed.is_freed(table_pfn(i))).find_map(|i| {
            let page = NonNull::new(self.0.addrs[i].load(SeqCst) as *mut ScenarioTable<H>)?;
            // SAFETY: table pages' memory lives as long as the pool (see `GhostTables`).
            let table = unsafe { page.as_ref() };
            (0..FANOUT).find_map(|k| {
                let bits = table.entry(k).map_or(poison, |e| e.load(Relaxed));
                (bits != poison).then_some((i, k, bits))
            })
        })
    }
}

/// Table page `i` in the ghost liveness of a [`GhostTables`].
fn table_pfn(i: usize) -> Pfn {
    Pfn(i as u64 + 1)
}

impl<H: Hal> Default for GhostTables<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// The raw poison entry: a present, read-only leaf mapping [`POISON_PFN`].
fn poison_bits() -> u64 {
    setup(Spte::leaf(POISON_PFN, false, false)).bits()
}

// SAFETY: `alloc` returns an aligned `Table` holding `init`'s entries: a fresh one from
// `Box::leak`, or, with recycling on, a page that `free` was called for, which its contract
// says nobody reads any more through a pointer from before that `free`. Memory is never
// released before the last handle drops (the page table and every deferred free hold one):
// `free` only poisons the page through its atomics and marks it.
unsafe impl<H: Hal> PageAlloc<ScenarioTable<H>> for GhostTables<H> {
    fn alloc(&self, init: ScenarioTable<H>) -> Result<NonNull<ScenarioTable<H>>, ScenarioTable<H>> {
        if self.0.recycle.get() {
            let freed = (0..MAX_TABLES).find_map(|i| {
                let addr = self.0.addrs[i].load(SeqCst) as *mut ScenarioTable<H>;
                NonNull::new(addr).filter(|_| self.0.freed.is_freed(table_pfn(i))).map(|p| (i, p))
            });
            if let Some((i, page)) = freed {
                // Live again before it is initialized: from here on the page is the caller's,
                // as a fresh one would be. (Core allocates under `mmu_lock` for write, so no
                // two allocations race for one freed page; `reuse` panics if they did.)
                self.0.freed.reuse(table_pfn(i));
                // SAFETY: the page came from `alloc`, and its memory lives until the last
                // handle drops.
                let table = unsafe { page.as_ref() };
                // `init` written into the page's own atomics, where a fresh page would be a
                // new `Box`: relaxed stores, as the non-atomic initialization of a real page
                // orders nothing by itself. The poison `free` wrote stays earlier in each
                // entry's modification order, so a reader that the publication does not
                // order after these stores may still return it.
                for k in 0..FANOUT {
                    if let (Some(e), Some(v)) = (table.entry(k), init.entry(k)) {
                        e.store(v.load(Relaxed), Relaxed);
                    }
                }
                self.0.recycled.fetch_add(1, SeqCst);
                return Ok(page);
            }
        }
        let i = self.0.next.fetch_add(1, SeqCst);
        if i >= MAX_TABLES {
            return Err(init);
        }
        let page = NonNull::from(Box::leak(Box::new(init)));
        self.0.addrs[i].store(page.as_ptr() as usize, SeqCst);
        Ok(page)
    }

    unsafe fn free(&self, page: NonNull<ScenarioTable<H>>) {
        let i = self.index(page);
        if self.0.teardown.get() {
            // A teardown after a violation runs without joining the roles, so the page table's
            // drop may still see (relaxed) a link a role already unlinked and freed.
            if !self.0.freed.is_freed(table_pfn(i)) {
                self.0.freed.free(table_pfn(i));
            }
            return;
        }
        self.0.freed.free(table_pfn(i));
        // SAFETY: the page came from `alloc`, and its memory lives until the last handle drops.
        let table = unsafe { page.as_ref() };
        let poison = self.poison();
        for e in (0..FANOUT).filter_map(|k| table.entry(k)) {
            e.store(poison, Relaxed);
        }
    }
}

/// One vCPU's TLB and paging-structure cache (ghost state): `gfn -> pfn` translations, and per
/// root index the leaf table the hardware walker went through (2-level tables only).
pub struct Tlb {
    tlb: [AtomicU64; MAX_GFNS],
    /// Whether the TLB entry of each gfn allows writes (the SPTE's writable bit when filled).
    writable: [AtomicBool; MAX_GFNS],
    /// Whether the TLB entry of each gfn was used for a write (the hardware set the SPTE's
    /// dirty bit): later writes through it touch the SPTE no more.
    dirty: [AtomicBool; MAX_GFNS],
    psc: [AtomicUsize; FANOUT],
}

impl Tlb {
    fn new() -> Self {
        Tlb {
            tlb: core::array::from_fn(|_| AtomicU64::new(0)),
            writable: core::array::from_fn(|_| AtomicBool::new(false)),
            dirty: core::array::from_fn(|_| AtomicBool::new(false)),
            psc: core::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    /// Empties the TLB and the paging-structure cache (the vCPU handled a TLB flush).
    fn flush(&self) {
        self.tlb.iter().for_each(|e| e.store(0, SeqCst));
        self.writable.iter().for_each(|e| e.store(false, SeqCst));
        self.dirty.iter().for_each(|e| e.store(false, SeqCst));
        self.psc.iter().for_each(|e| e.store(0, SeqCst));
    }
}

/// The primary MMU's per-page accessed and dirty state (ghost): what core's
/// [`PageTracker`] hands over (pfns `1..=8`).
#[derive(Default)]
pub struct GhostPages {
    dirty: [Flag; 8],
    accessed: [Flag; 8],
}

impl GhostPages {
    fn flag(flags: &[Flag; 8], pfn: Pfn) -> Option<&Flag> {
        flags.get(pfn_index(pfn))
    }

    /// Whether the primary MMU was told that `pfn` is dirty.
    fn is_dirty(&self, pfn: Pfn) -> bool {
        Self::flag(&self.dirty, pfn).is_some_and(Flag::get)
    }
}

impl PageTracker for GhostPages {
    fn mark_accessed(&self, pfn: Pfn) {
        if let Some(f) = Self::flag(&self.accessed, pfn) {
            f.set();
        }
    }

    fn mark_dirty(&self, pfn: Pfn) {
        if let Some(f) = Self::flag(&self.dirty, pfn) {
            f.set();
        }
    }
}

/// The index of `pfn` in a per-pfn array of pfns `1..`: `usize::MAX` (no element) for pfn 0.
fn pfn_index(pfn: Pfn) -> usize {
    (pfn.0 as usize).wrapping_sub(1)
}

/// A value leaked for the life of a world and reclaimed when the world drops: the vCPUs, which
/// the [`ReferenceMmu`] borrows for as long as it lives, inside the same `'static` world.
struct Leaked<T: 'static>(NonNull<T>);

impl<T: 'static> Leaked<T> {
    fn new(v: T) -> Self {
        Leaked(NonNull::from(Box::leak(Box::new(v))))
    }

    /// The value, for as long as the owner of this `Leaked` lives. The owner ([`World`])
    /// keeps every borrow inside itself and drops the borrowers first.
    fn get(&self) -> &'static T {
        // SAFETY: the pointer came from `Box::leak` and is released only in `drop`; the world
        // drops its borrowers (the MMU) before this.
        unsafe { self.0.as_ref() }
    }
}

impl<T: 'static> Drop for Leaked<T> {
    fn drop(&mut self) {
        // SAFETY: from `Box::leak` in `new`, released once; every borrow (the MMU's) is gone.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: `Leaked<T>` owns a `T` (as a `Box<T>` would) and hands out only shared references.
unsafe impl<T: Send + Sync + 'static> Send for Leaked<T> {}
// SAFETY: as above.
unsafe impl<T: Sync + 'static> Sync for Leaked<T> {}

/// The reference MMU of the scenarios: `L` levels of [`FANOUT`] entries over ghost table pages,
/// freed the `R` way.
type Mmu<H, const L: usize, R> = ReferenceMmu<'static, H, GhostTables<H>, L, FANOUT, R>;

/// What the roles of a scenario share: one vCPU (loaded on CPU 0), the reference MMU (`L`
/// levels), the VM with `N` memslots, the primary MMU's `N` host pages (`P` pfns in all), the
/// vCPU's ghost TLB, and which pfns are revoked.
struct World<
    H: ScenarioHal,
    X: Executor,
    const L: usize,
    const N: usize,
    const P: usize,
    R: Reclamation = IpiReclamation,
> {
    /// Dropped first: it borrows `vcpus`.
    mmu: ManuallyDrop<Mmu<H, L, R>>,
    vcpus: Leaked<[Vcpu<H>; 1]>,
    /// The primary MMU's accessed/dirty state, which the MMU's tracker feeds (dropped after it).
    pages: Leaked<GhostPages>,
    tables: GhostTables<H>,
    vm: Vm<H, N>,
    host: Host<H, N, P>,
    tlb: Tlb,
    revoked: [Flag; P],
    /// Which pfns were write-protected (the update that made their SPTE read-only returned).
    write_protected: [Flag; P],
    /// Which pfns the guest wrote (ghost).
    written: [Flag; P],
    /// Which pfns `clear_flush_young` found young and aged (it returned).
    aged: [Flag; P],
    /// One model word per pfn that every use of a translation to it reads and its revocation
    /// writes (relaxed: no ordering, see [`World::touch`]).
    uses: [H::AtomicU64; P],
    x: X,
}

impl<H: ScenarioHal, X: Executor, const L: usize, const N: usize, const P: usize, R: Reclamation> Drop
    for World<H, X, L, N, P, R>
{
    fn drop(&mut self) {
        self.tables.0.teardown.set();
        // SAFETY: dropped once, here, before `vcpus` (which it borrows) drops.
        unsafe { ManuallyDrop::drop(&mut self.mmu) }
    }
}

impl<H: ScenarioHal, X: Executor, const L: usize, const N: usize, const P: usize, R: Reclamation>
    World<H, X, L, N, P, R>
where
    Mmu<H, L, R>: SecondaryMmu<H>,
{
    /// vCPU 0 loaded on CPU 0 (role 0), an empty table, no memslot; host page `i` maps
    /// `pfns[i]`.
    fn new(hal: &H, x: &X, pfns: [Pfn; N]) -> Self {
        let vcpus = Leaked::new([Vcpu::new(hal.clone())]);
        setup(vcpus.get()[0].load(setup(CpuId::new(0))).map_err(DisplayVcpu));
        let tables = GhostTables::new();
        let pages = Leaked::new(GhostPages::default());
        let mut mmu = setup(ReferenceMmu::new(hal.clone(), tables.clone(), vcpus.get()));
        mmu.set_page_tracker(pages.get());
        let mmu = ManuallyDrop::new(mmu);
        World {
            mmu,
            vcpus,
            pages,
            tables,
            vm: Vm::new(hal.clone()),
            host: Host::new(pfns),
            tlb: Tlb::new(),
            revoked: core::array::from_fn(|_| Flag::new()),
            write_protected: core::array::from_fn(|_| Flag::new()),
            written: core::array::from_fn(|_| Flag::new()),
            aged: core::array::from_fn(|_| Flag::new()),
            uses: core::array::from_fn(|_| H::AtomicU64::new(0)),
            x: x.clone(),
        }
    }

    fn vcpu(&self) -> &Vcpu<H> {
        &self.vcpus.get()[0]
    }

    /// Memslot `i`: gfn `i` <- host page `i`.
    fn add_slots(&self) {
        for i in 0..N as u16 {
            setup(self.vm.set_memslot(&*self.mmu, SlotChange::Create(page_slot(i))));
        }
    }

    /// Setup: installs `gfn -> pfn` under `mmu_lock` (read-only, MMU-writable: the fast path
    /// may make it writable).
    fn install(&self, gfn: Gfn, pfn: Pfn) {
        let g = self.vm.invalidation().mmu_lock().write();
        setup(self.mmu.table().map(&g, gfn, setup(Spte::leaf(pfn, false, true))));
    }

    /// One attempt of core's fault path on `gfn` (F0-F14), resolving through the primary MMU.
    fn fault(&self, gfn: Gfn) -> FaultOutcome {
        let out = setup(self.mmu.fault(&self.vm, gfn, true, |hva| Ok(self.host.gup_fast(&self.x, hva))));
        self.x.step(format_args!("ReferenceMmu::fault(gfn {gfn}) -> {out:?}"));
        out
    }

    /// A use of a translation to `pfn` (`write`: its revocation) as a model access. Ghost state
    /// is invisible to a model checker's partial-order reduction: a guest that uses a TLB entry
    /// touches no model memory (the TLB is ghost), so without this word loom would see no
    /// conflict between the use and a revocation and would never explore the use after it.
    /// Relaxed accesses to a word nobody else reads add no ordering, only that conflict.
    fn touch(&self, pfn: Pfn, write: bool) {
        if let Some(word) = self.uses.get(pfn_index(pfn)) {
            if write {
                word.store(1, Relaxed);
            } else {
                word.load(Relaxed);
            }
        }
    }

    fn is_revoked(&self, pfn: Pfn) -> bool {
        self.revoked.get(pfn_index(pfn)).is_some_and(Flag::get)
    }

    /// Ghost: the translations to `pfns` were removed and the flush that removed them from
    /// every vCPU has returned.
    fn revoke(&self, pfns: &[Pfn]) {
        for &p in pfns {
            self.touch(p, true);
            self.revoked[pfn_index(p)].set();
        }
        self.x.step(format_args!("ghost: translations to pfns {pfns:?} revoked (the flush returned)"));
    }

    /// The invalidator role: `invalidate_range_start(hvas)` with this MMU as the secondary MMU;
    /// once it returned, the translations to `revoked` are gone; the primary MMU remaps each
    /// `(host page, new pfn)` of `remaps` and frees the old page; `invalidate_range_end`.
    fn invalidate(&self, hvas: HvaRange, revoked: &[Pfn], remaps: &[(usize, Pfn)]) {
        let x = &self.x;
        x.step(format_args!("invalidate_range_start({:#x}..{:#x})", hvas.start(), hvas.end()));
        let open = setup(self.vm.invalidate_range_start(&*self.mmu, hvas));
        self.revoke(revoked);
        for &(page, pfn) in remaps {
            self.host.remap_and_free(x, page, pfn);
        }
        x.step(format_args!("invalidate_range_end"));
        setup(open.end());
    }

    /// Loads entry `index` of table page `page` as the hardware walker does, then checks that
    /// the page was not freed before the load and that the entry is not poison.
    fn hw_read(&self, who: &str, page: NonNull<ScenarioTable<H>>, index: usize) -> u64 {
        // SAFETY: table pages' memory lives as long as `self.tables` (see `GhostTables`).
        let entry = unsafe { page.as_ref() }.entry(index);
        let bits = match entry {
            Some(e) => e.load(Acquire),
            None => panic!("scenario bug: index {index} out of a table page"),
        };
        let freed = self.tables.is_freed(page);
        self.x.step(format_args!("{who} reads table page {:p}[{index}] -> {bits:#x} (freed: {freed})", page));
        if freed || bits == self.tables.poison() {
            violated(
                Invariant::WalkerReadFreedTable,
                format_args!("{who} read entry {index} of table page {page:p} after it was freed"),
            );
        }
        bits
    }

    /// The root index of `gfn` in a 2-level table.
    fn top(gfn: Gfn) -> usize {
        (gfn.0 as usize / FANOUT) % FANOUT
    }

    /// One guest access of `gfn` by the vCPU, inside its guest-mode section: a TLB hit, or the
    /// hardware walk (from the cached leaf table if the paging-structure cache has one), which
    /// fills the TLB and the cache. Returns the pfn used, `None` when the walk found no
    /// translation (the guest would take an EPT violation).
    fn guest_access(&self, gfn: Gfn) -> Option<Pfn> {
        let x = &self.x;
        let cached = Pfn(self.tlb.tlb[gfn.0 as usize].load(SeqCst));
        if cached != Pfn(0) {
            self.touch(cached, false);
            x.step(format_args!("guest: TLB hit gfn {gfn} -> pfn {cached}"));
            if self.is_revoked(cached) {
                violated(
                    Invariant::StaleTlbAfterFlush,
                    format_args!(
                        "the guest used its TLB entry gfn {gfn} -> pfn {cached} after the flush that removed it returned"
                    ),
                );
            }
            return Some(cached);
        }
        let who = "hw walker (guest)";
        let mut level = L - 1;
        let mut page = self.tables.root();
        if L == 2 {
            if let Some(leaf) =
                NonNull::new(self.tlb.psc[Self::top(gfn)].load(SeqCst) as *mut ScenarioTable<H>)
            {
                x.step(format_args!("guest: paging-structure cache hit for gfn {gfn}: leaf table {leaf:p}"));
                page = leaf;
                level = 0;
            }
        }
        loop {
            let index = (gfn.0 as usize >> (FANOUT.trailing_zeros() as usize * level)) % FANOUT;
            let bits = self.hw_read(who, page, index);
            if bits & SPTE_PRESENT == 0 {
                x.step(format_args!("guest: gfn {gfn} not present (EPT violation)"));
                return None;
            }
            if level == 0 {
                let pfn = Pfn(bits >> 12);
                self.touch(pfn, false);
                if self.host.pages.is_freed(pfn) {
                    violated(
                        Invariant::SpteMapsFreedPage,
                        format_args!("the hardware walker found SPTE gfn {gfn} -> pfn {pfn}, which is freed"),
                    );
                }
                if self.is_revoked(pfn) {
                    violated(
                        Invariant::StaleTlbAfterFlush,
                        format_args!(
                            "the hardware walker read SPTE gfn {gfn} -> pfn {pfn}, a translation removed by a flush that has returned"
                        ),
                    );
                }
                self.tlb.tlb[gfn.0 as usize].store(pfn.0, SeqCst);
                self.tlb.writable[gfn.0 as usize].store(bits & SPTE_WRITABLE != 0, SeqCst);
                x.step(format_args!("guest: TLB fill gfn {gfn} -> pfn {pfn}"));
                return Some(pfn);
            }
            if bits & SPTE_TABLE == 0 {
                panic!("scenario bug: a huge page in a scenario table");
            }
            page = match NonNull::new((bits & !SPTE_FLAGS) as *mut ScenarioTable<H>) {
                Some(p) => p,
                None => panic!("scenario bug: a table link to address 0"),
            };
            level -= 1;
            if level == 0 {
                self.tlb.psc[Self::top(gfn)].store(page.as_ptr() as usize, SeqCst);
            }
        }
    }

    /// Setup: the guest ran before and cached `gfns` (a hardware walk outside the race).
    fn prefill(&self, gfns: &[Gfn]) {
        for &gfn in gfns {
            if self.guest_access(gfn).is_none() {
                panic!("scenario setup: gfn {gfn} is not mapped");
            }
        }
    }

    /// One guest **write** of `gfn` (one level only), as x86 does it: through a writable TLB
    /// entry that was already used for a write; else the hardware sets the SPTE's accessed and
    /// dirty bits with an atomic OR (D1), and writes only if the SPTE it ORed into was present
    /// and writable (a TLB miss walks first and fills the TLB). Returns whether the write
    /// happened (`false`: an EPT violation). Writing a pfn whose write protection has returned
    /// violates [`Invariant::WriteAfterWriteProtect`]; a write that set no accessed bit after
    /// `clear_flush_young` aged the page violates [`Invariant::AccessNotRecorded`].
    fn guest_write(&self, gfn: Gfn) -> bool {
        let x = &self.x;
        let g = gfn.0 as usize;
        let cached = Pfn(self.tlb.tlb[g].load(SeqCst));
        let hit = cached != Pfn(0) && self.tlb.writable[g].load(SeqCst);
        let (pfn, recorded) = if hit && self.tlb.dirty[g].load(SeqCst) {
            x.step(format_args!("guest: write through its dirty TLB entry gfn {gfn} -> pfn {cached}"));
            (cached, false)
        } else {
            if !hit {
                let bits = self.hw_read("hw walker (guest write)", self.tables.root(), g % FANOUT);
                if bits & SPTE_PRESENT == 0 || bits & SPTE_WRITABLE == 0 {
                    x.step(format_args!("guest: write to gfn {gfn} faults (SPTE {bits:#x} not writable)"));
                    return false;
                }
            }
            let pre = self.hw_set_bits(gfn, Spte::ACCESSED | Spte::DIRTY);
            if pre & SPTE_PRESENT == 0 || pre & SPTE_WRITABLE == 0 {
                x.step(format_args!(
                    "guest: dirty-bit update of gfn {gfn} found SPTE {pre:#x}: write faults"
                ));
                return false;
            }
            let pfn = Pfn(pre >> 12);
            self.tlb.tlb[g].store(pfn.0, SeqCst);
            self.tlb.writable[g].store(true, SeqCst);
            self.tlb.dirty[g].store(true, SeqCst);
            (pfn, true)
        };
        self.touch(pfn, false);
        if self.write_protected.get(pfn_index(pfn)).is_some_and(Flag::get) {
            violated(
                Invariant::WriteAfterWriteProtect,
                format_args!(
                    "the guest wrote pfn {pfn} (gfn {gfn}) after the map that write-protected it returned"
                ),
            );
        }
        if !recorded && self.aged.get(pfn_index(pfn)).is_some_and(Flag::get) {
            // The checker's look at the SPTE (the hardware does not read it on a TLB hit): a
            // TLB entry filled after the aging set the accessed bit again when it was filled.
            // SAFETY: table pages' memory lives as long as `self.tables` (see `GhostTables`).
            let now = unsafe { self.tables.root().as_ref() }.entry(g % FANOUT).map_or(0, |e| e.load(Relaxed));
            if now & Spte::ACCESSED == 0 {
                violated(
                    Invariant::AccessNotRecorded,
                    format_args!(
                        "the guest wrote pfn {pfn} through a TLB entry from before clear_flush_young aged it; the SPTE's accessed bit stays clear"
                    ),
                );
            }
        }
        if let Some(w) = self.written.get(pfn_index(pfn)) {
            w.set();
        }
        x.step(format_args!("guest: wrote gfn {gfn} (pfn {pfn})"));
        true
    }

    /// D1: the hardware ORs `bits` into the leaf of `gfn` (one level) and gets the old value.
    fn hw_set_bits(&self, gfn: Gfn, bits: u64) -> u64 {
        // SAFETY: table pages' memory lives as long as `self.tables` (see `GhostTables`).
        let entry = match unsafe { self.tables.root().as_ref() }.entry(gfn.0 as usize % FANOUT) {
            Some(e) => e,
            None => panic!("scenario bug: gfn {gfn} out of the root table"),
        };
        let pre = entry.fetch_or(bits, Relaxed);
        self.x.step(format_args!("hardware: SPTE of gfn {gfn} |= {bits:#x} (was {pre:#x})"));
        pre
    }

    /// Setup: `gfn` maps `pfn`, writable (and MMU-writable), installed under `mmu_lock`.
    fn map_writable(&self, gfn: Gfn, pfn: Pfn) {
        let g = self.vm.invalidation().mmu_lock().write();
        setup(self.mmu.table().map(&g, gfn, setup(Spte::leaf(pfn, true, true))));
    }

    /// Final check after a memslot delete (I3.2): no SPTE maps `gfn`.
    fn check_no_spte(&self, gfn: Gfn) {
        let g = self.vm.invalidation().mmu_lock().read();
        if let Some(spte) = setup(self.mmu.table().walk(&g, gfn)) {
            violated(
                Invariant::SpteMapsDeletedSlot,
                format_args!("SPTE gfn {gfn} -> {:?} after its memslot was deleted", spte.pfn()),
            );
        }
    }

    /// Setup: the guest *read* `gfn` through its writable SPTE: the TLB holds a writable entry
    /// that no write used yet, and the SPTE's accessed bit is set.
    fn prefill_read(&self, gfn: Gfn) {
        let pre = self.hw_set_bits(gfn, Spte::ACCESSED);
        self.tlb.tlb[gfn.0 as usize].store(pre >> 12, SeqCst);
        self.tlb.writable[gfn.0 as usize].store(pre & SPTE_WRITABLE != 0, SeqCst);
    }

    /// I5.7 at the end: every pfn the guest wrote is dirty in the primary MMU's state or still
    /// in its SPTE's dirty bit (gfns `0..n`, one level).
    fn check_dirty(&self, n: u64) {
        let g = self.vm.invalidation().mmu_lock().read();
        for pfn in (1..=P as u64).map(Pfn) {
            if !self.written[pfn_index(pfn)].get() || self.pages.get().is_dirty(pfn) {
                continue;
            }
            let in_spte = (0..n).map(Gfn).any(|gfn| {
                setup(self.mmu.table().walk(&g, gfn)).is_some_and(|s| s.pfn() == Some(pfn) && s.is_dirty())
            });
            if !in_spte {
                violated(
                    Invariant::DirtyBitLost,
                    format_args!("the guest wrote pfn {pfn}, but neither the primary MMU nor an SPTE knows it is dirty"),
                );
            }
        }
    }

    /// One guest run that writes each of `gfns` (see [`World::run_guest`]).
    fn run_guest_writing(&self, gfns: &[Gfn]) {
        let x = &self.x;
        for _ in 0..3 {
            match self.vcpu().enter_guest() {
                Ok(guest) => {
                    x.step(format_args!("VM entry (IN_GUEST_MODE)"));
                    for &gfn in gfns {
                        self.guest_write(gfn);
                    }
                    drop(guest);
                    x.step(format_args!("VM exit"));
                    self.handle_requests();
                    return;
                }
                Err(VcpuError::RequestsPending) => {
                    x.step(format_args!("entry refused: request pending"));
                    self.handle_requests();
                }
                Err(e) => panic!("enter_guest: {e}"),
            }
        }
    }

    /// `kvm_check_request(KVM_REQ_TLB_FLUSH)`; handling it empties the ghost TLB.
    fn handle_requests(&self) {
        if self.vcpu().check_request(Request::TLB_FLUSH) {
            self.tlb.flush();
            self.x.step(format_args!("KVM_REQ_TLB_FLUSH handled: TLB and paging-structure caches flushed"));
        }
    }

    /// One guest run (`vcpu_enter_guest`): entry, handling the requests and entering again when
    /// entry is refused (at most three tries); in the guest, one access of each of `gfns`; VM
    /// exit; then the requests that arrived meanwhile.
    fn run_guest(&self, gfns: &[Gfn]) {
        let x = &self.x;
        for _ in 0..3 {
            match self.vcpu().enter_guest() {
                Ok(guest) => {
                    x.step(format_args!("VM entry (IN_GUEST_MODE)"));
                    for &gfn in gfns {
                        self.guest_access(gfn);
                    }
                    drop(guest);
                    x.step(format_args!("VM exit"));
                    self.handle_requests();
                    return;
                }
                Err(VcpuError::RequestsPending) => {
                    x.step(format_args!("entry refused: request pending"));
                    self.handle_requests();
                }
                Err(e) => panic!("enter_guest: {e}"),
            }
        }
    }

    /// I2.1 at the end, under `mmu_lock`: no SPTE of gfns `0..n` maps a freed or revoked pfn, or
    /// is poison (read through a freed table page).
    fn check_sptes(&self, n: u64) {
        let g = self.vm.invalidation().mmu_lock().read();
        for gfn in (0..n).map(Gfn) {
            let Some(pfn) = setup(self.mmu.table().walk(&g, gfn)).and_then(Spte::pfn) else { continue };
            if pfn == POISON_PFN {
                violated(
                    Invariant::WalkerReadFreedTable,
                    format_args!(
                        "gfn {gfn} -> poison: a freed table page is still linked, or a recycled one was linked uninitialized"
                    ),
                );
            }
            if self.host.pages.is_freed(pfn) || self.is_revoked(pfn) {
                violated(
                    Invariant::SpteMapsFreedPage,
                    format_args!("SPTE gfn {gfn} -> pfn {pfn} after the invalidation of pfn {pfn} returned"),
                );
            }
        }
    }

    /// At the end: every freed table page still holds exactly the poison. A walker that wrote
    /// into a page after it was freed (an ager clearing the poison's accessed bit) changed it.
    fn check_freed_tables(&self) {
        if let Some((i, k, bits)) = self.tables.written_after_free() {
            violated(
                Invariant::WalkerReadFreedTable,
                format_args!(
                    "entry {k} of table page {i} holds {bits:#x}, not the poison {:#x}: a walker wrote into it after it was freed",
                    self.tables.poison()
                ),
            );
        }
    }

    /// A software walk's result: poison means the walk read a freed table page.
    fn check_walk(&self, who: &str, gfn: Gfn, spte: Option<Spte>) {
        let pfn = spte.and_then(Spte::pfn);
        self.x.step(format_args!("{who}: gfn {gfn} -> {pfn:?}"));
        if pfn == Some(POISON_PFN) {
            violated(
                Invariant::WalkerReadFreedTable,
                format_args!("{who} of gfn {gfn} read a freed table page"),
            );
        }
    }
}

/// `VcpuError` through `Display` for [`setup`].
struct DisplayVcpu(VcpuError);

impl core::fmt::Display for DisplayVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// `mmu-fault-vs-invalidation`: core's whole fault path and notifier on the reference MMU,
/// with the vCPU's TLB. One level (gfns 0..2), one memslot (gfn 0 <- host page 0, pfn 1).
///
/// * vcpu (CPU 0): one attempt of [`ReferenceMmu::fault`] on gfn 0 (SRCU, memslot, snapshot,
///   `_unsafe` checks, GUP-fast, the locked check, install), then two guest runs, each
///   accessing gfn 0 (the first fills the TLB from the SPTE, the second hits it unless a flush
///   was handled in between).
/// * invalidator (CPU 1): [`Vm::invalidate_range_start`] of host page 0 with the reference MMU
///   as the secondary MMU (`unmap_gfn_range` = `zap_ipi` of the leaf, then S4's
///   `flush_remote_tlbs`), revoke pfn 1, the primary MMU remaps page 0 to pfn 2 and frees pfn 1,
///   then `invalidate_range_end`.
///
/// Invariants: once start has returned, the guest never uses a TLB entry for pfn 1, and no SPTE
/// maps pfn 1 (checked by the hardware walker and at the end).
pub fn mmu_fault_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 2>::new(hal, x, [Pfn(1)]));
    w.add_slots();
    let (wv, wi) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            if wv.fault(Gfn(0)) == FaultOutcome::Retry {
                return;
            }
            wv.run_guest(&[Gfn(0)]);
            wv.run_guest(&[Gfn(0)]);
        }),
        Role::new("invalidator", move || wi.invalidate(page_hvas(0), &[Pfn(1)], &[(0, Pfn(2))])),
    ]);
    w.check_sptes(1);
}

/// The zap scenarios' world: two levels, gfn 0 -> pfn 1 and gfn 1 -> pfn 2 in leaf table T0,
/// and a guest that already accessed gfn 0 (its TLB and paging-structure cache hold it).
fn zap_world<H: ScenarioHal, X: Executor, R: Reclamation>(hal: &H, x: &X) -> Arc<World<H, X, 2, 1, 2, R>>
where
    Mmu<H, 2, R>: SecondaryMmu<H>,
{
    let w = Arc::new(World::<H, X, 2, 1, 2, R>::new(hal, x, [Pfn(1)]));
    w.install(Gfn(0), Pfn(1));
    w.install(Gfn(1), Pfn(2));
    w.prefill(&[Gfn(0)]);
    w
}

/// `mmu-zap-ipi-vs-walk`: `zap_ipi` freeing a leaf table page (two levels, gfns 0..4; gfn 0 ->
/// pfn 1 and gfn 1 -> pfn 2 in leaf table T0, read-only and MMU-writable) against a lockless
/// walker and a guest that caches T0.
///
/// * vcpu (CPU 0; in setup the guest accessed gfn 0, so its TLB holds gfn 0 -> pfn 1 and its
///   paging-structure cache holds T0): a lockless walk (`walk_lockless_begin`,
///   [`ReferenceMmu::fast_fault`] on gfn 1 (the cmpxchg that sets the writable bit),
///   [`ReferenceMmu::walk`] of gfn 1, end), then one guest run accessing gfn 1 (TLB miss: the
///   hardware walker starts from the cached T0) and gfn 0 (TLB hit).
/// * zapper (CPU 1): under `mmu_lock`, [`ReferenceMmu::zap_ipi`] of gfns 0..2 (zap both leaves,
///   unlink T0, `flush_remote_tlbs`, free T0), then the leaf flush it owes; revoke pfns 1, 2.
///
/// Invariants: no software walk, hardware walk or cached leaf table reads T0 after it was
/// freed; the guest uses no TLB entry for pfn 1 or 2 after the flush returned.
pub fn mmu_zap_ipi_vs_walk<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = zap_world::<H, X, IpiReclamation>(hal, x);
    let (wv, wz) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let walk = setup(wv.vcpu().walk_lockless_begin().map_err(DisplayVcpu));
            wv.x.step(format_args!("walk_shadow_page_lockless_begin"));
            let fast = setup(wv.mmu.fast_fault(&walk, Gfn(1), Access::Write));
            wv.x.step(format_args!("fast_page_fault(gfn 1) -> {fast:?}"));
            let spte = setup(wv.mmu.walk(&walk, Gfn(1)));
            wv.check_walk("lockless walk", Gfn(1), spte);
            drop(walk);
            wv.x.step(format_args!("walk_shadow_page_lockless_end"));
            wv.run_guest(&[Gfn(1), Gfn(0)]);
        }),
        Role::new("zapper", move || {
            let x = &wz.x;
            let g = wz.vm.invalidation().mmu_lock().write();
            x.step(format_args!("zap_ipi(gfns 0..2) under mmu_lock"));
            let flush = setup(wz.mmu.zap_ipi(&g, setup(GfnRange::new(Gfn(0), Gfn(2)))));
            x.step(format_args!(
                "zap_ipi returned (flush owed: {flush}); table pages freed: {}",
                wz.tables.frees()
            ));
            if flush {
                wz.mmu.flush_remote_tlbs();
            }
            drop(g);
            wz.revoke(&[Pfn(1), Pfn(2)]);
        }),
    ]);
    w.check_sptes(MAX_GFNS as u64);
}

/// `mmu-zap-epoch-vs-walk`: the same tables and guest as [`mmu_zap_ipi_vs_walk`], the epoch way.
///
/// * vcpu (CPU 0; TLB gfn 0 -> pfn 1, paging-structure cache T0): an epoch walk of gfn 1
///   ([`ReferenceMmu::walk`] under a pin of the MMU's reclaimer), the RCU callbacks (two
///   `collect`s: two epoch advances, which free T0 once the zapper's deferred free is
///   global), then one guest run accessing gfn 1 (from the cached T0) and gfn 0.
/// * zapper (CPU 1): under `mmu_lock`, [`ReferenceMmu::zap_epoch`] of gfns 0..2 (pin, zap the
///   leaves, unlink T0, `flush_remote_tlbs`, defer T0's free, unpin); revoke pfns 1, 2; its
///   handle drops when the role ends, which hands the deferred free to the collector.
///
/// Invariants as in [`mmu_zap_ipi_vs_walk`]. (One deferred page never leaves crossbeam's local
/// bag while `zap_epoch` runs, so `FlushBeforeUnpin` cannot matter here; `epoch-walk` kills it
/// with 65 pages.)
pub fn mmu_zap_epoch_vs_walk<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = zap_world::<H, X, EpochReclamation>(hal, x);
    let (wv, wz) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let handle = wv.mmu.reclaimer().register();
            {
                let pin = handle.walk_begin();
                let spte = setup(wv.mmu.walk(&pin, Gfn(1)));
                wv.check_walk("epoch walk", Gfn(1), spte);
            }
            for _ in 0..2 {
                handle.collect();
            }
            wv.x.step(format_args!("RCU callbacks: 2 collects; table pages freed: {}", wv.tables.frees()));
            wv.run_guest(&[Gfn(1), Gfn(0)]);
        }),
        Role::new("zapper", move || {
            let x = &wz.x;
            let handle = wz.mmu.reclaimer().register();
            let g = wz.vm.invalidation().mmu_lock().write();
            x.step(format_args!("zap_epoch(gfns 0..2) under mmu_lock"));
            let n = setup(wz.mmu.zap_epoch(&g, setup(GfnRange::new(Gfn(0), Gfn(2))), &handle));
            drop(g);
            x.step(format_args!("zap_epoch returned: {n} table page(s) deferred"));
            wz.revoke(&[Pfn(1), Pfn(2)]);
            drop(handle);
            x.step(format_args!("zapper's reclaim handle dropped (deferred frees go global)"));
        }),
    ]);
    w.check_sptes(MAX_GFNS as u64);
}

/// `mmu-age-lockless-vs-zap-epoch`: the notifier's aging without `mmu_lock` (KVM's lockless
/// `kvm_age_gfn`, the TDP MMU under `rcu_read_lock`) against an invalidation that frees a table
/// page the epoch way, both through the notifier implementation of core's epoch-way MMU
/// ([`EpochReclamation`]). Two levels; one
/// memslot (gfns 0..2 <- host pages 0..2); gfn 0 -> pfn 1 and gfn 1 -> pfn 2 in leaf table T0,
/// both with the accessed bit set (the hardware used them, [`ReferenceMmu::hw_access`]). This
/// scenario's poison carries the accessed bit (`GhostTables::poison_young`).
///
/// * ager (CPU 0): `Vm::clear_young` of host pages 0..2, then `Vm::test_young` of the same
///   pages, each through [`ReferenceMmu::age_lockless`] (a reclaim handle registered for the
///   call, the walk pinned in the MMU's epoch domain, table links read with acquire, the bit
///   cleared with an atomic AND), no `mmu_lock`.
/// * zapper (CPU 1): `Vm::invalidate_range_start` of host pages 0..2 (`unmap_gfn_range` =
///   [`ReferenceMmu::zap_epoch`]: pin, zap both leaves, unlink T0, flush, defer T0's free, unpin;
///   its handle drops, which hands the deferred free to the collector), `invalidate_range_end`;
///   then the RCU callbacks on its own CPU: a fresh handle's `collect`s (at most two, until T0
///   is freed), which free T0 unless a pinned walk holds the epoch back.
///
/// Invariant I5.4 for the ager (`WalkerReadFreedTable`), checked two ways, since the ager's
/// reads are inside core: (1) nothing sets an accessed bit after `clear_young` has cleared
/// every one it could reach, so a pinned `test_young` can only answer "not young"; an
/// accessed bit it finds is the poison of a freed page. (2) At the end every freed page still
/// holds exactly the poison; an ager that cleared the poison's accessed bit wrote into a freed
/// page. Without the pin (`LocklessAgingPinsEpoch`) the ager reads the link to T0, the zapper
/// unlinks T0 and the collector frees it, and the ager then reads (and clears the bit of) the
/// freed page.
pub fn mmu_age_lockless_vs_zap_epoch<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 2, 1, 2, EpochReclamation>::new(hal, x, [Pfn(1)]));
    w.tables.poison_young();
    let slot = setup(Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 2, hva: HVA0 }));
    setup(w.vm.set_memslot(&*w.mmu, SlotChange::Create(slot)));
    w.install(Gfn(0), Pfn(1));
    w.install(Gfn(1), Pfn(2));
    {
        let g = w.vm.invalidation().mmu_lock().read();
        for gfn in [Gfn(0), Gfn(1)] {
            if setup(w.mmu.hw_access(&g, gfn, Access::Read)).is_none() {
                panic!("scenario setup: gfn {gfn} is not mapped");
            }
        }
    }
    let hvas = page_hvas(0).union(&page_hvas(1));
    let (wa, wz) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("ager", move || {
            let x = &wa.x;
            x.step(format_args!("clear_young(host pages 0..2), lockless (epoch-way MMU)"));
            let young = wa.vm.clear_young(&*wa.mmu, hvas);
            x.step(format_args!("clear_young returned young: {young}"));
            x.step(format_args!("test_young(host pages 0..2), lockless (epoch-way MMU)"));
            if wa.vm.test_young(&*wa.mmu, hvas) {
                violated(
                    Invariant::WalkerReadFreedTable,
                    format_args!(
                        "test_young found an accessed bit after clear_young had cleared every one and nothing set one since: it read the poison of a freed table page (table pages freed: {})",
                        wa.tables.frees()
                    ),
                );
            }
            x.step(format_args!("test_young returned young: false"));
        }),
        Role::new("zapper", move || {
            let x = &wz.x;
            x.step(format_args!("invalidate_range_start(host pages 0..2), epoch-way MMU (zap_epoch)"));
            let open = setup(wz.vm.invalidate_range_start(&*wz.mmu, hvas));
            x.step(format_args!("invalidate_range_end"));
            setup(open.end());
            let handle = wz.mmu.reclaimer().register();
            for n in 1..=2 {
                handle.collect();
                let freed = wz.tables.frees();
                x.step(format_args!("RCU callbacks: collect {n}; table pages freed: {freed}"));
                if freed > 0 {
                    break;
                }
            }
        }),
    ]);
    w.check_freed_tables();
    w.check_sptes(2);
}

/// `mmu-age-lockless-vs-map`: a lockless ager against `map` publishing a new table page that
/// the allocator recycled (KVM: the TDP MMU links a fresh `spt`, which may be a page that
/// held another table before, while `kvm_age_gfn` walks under `rcu_read_lock` without
/// `mmu_lock`). Two levels, gfns 0..4; the epoch-way MMU ([`EpochReclamation`]); one memslot
/// (gfns 0..4 <- host pages 0..4, pfns 1..=4); the table allocator recycles freed pages
/// (`GhostTables::recycle`), and its poison carries the accessed bit
/// (`GhostTables::poison_young`).
///
/// Setup: gfn 2 -> pfn 3 is installed (root entry 1 links a new leaf table T1), then zapped
/// the epoch way (T1 unlinked, its free deferred) and the RCU callbacks run until T1 is freed:
/// its entries now hold the poison, which reads as a present, accessed leaf.
///
/// * vcpu (CPU 0): one attempt of [`ReferenceMmu::fault`] on gfn 3 (SRCU, memslot, snapshot,
///   GUP-fast, under `mmu_lock`): `map` allocates T1's page again, initializes it (empty
///   entries), publishes it with the link store in root entry 1, and installs gfn 3 -> pfn 4.
/// * ager (CPU 1): `Vm::test_young` of host page 2 (gfn 2 only) through the epoch-way MMU's
///   notifier: [`ReferenceMmu::age_lockless`], pinned, without `mmu_lock`.
///
/// Invariant I5.9 (`WalkerReadUninitializedTable`): nothing maps gfn 2 during the run, so the
/// ager can only answer "not young", whether it finds root entry 1 empty or follows the new
/// link to the initialized T1; "young" means it read T1's entry 0 as it was before `map`
/// initialized the page, the poison of its previous life. Without either half of the link's
/// publication (`TableLinkPublish` in `map`, `TableLinkFollow` after the ager's link load)
/// nothing orders the initialization before that read. At the end (under `mmu_lock`) no
/// SPTE reads as poison (the page was linked initialized), and the pages still freed hold the
/// poison.
pub fn mmu_age_lockless_vs_map<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 2, 4, 4, EpochReclamation>::new(hal, x, [Pfn(1), Pfn(2), Pfn(3), Pfn(4)]));
    w.tables.poison_young();
    w.tables.recycle();
    let slot = setup(Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 4, hva: HVA0 }));
    setup(w.vm.set_memslot(&*w.mmu, SlotChange::Create(slot)));
    w.install(Gfn(2), Pfn(3));
    {
        let handle = w.mmu.reclaimer().register();
        let g = w.vm.invalidation().mmu_lock().write();
        setup(w.mmu.zap_epoch(&g, setup(GfnRange::new(Gfn(2), Gfn(4))), &handle));
        drop(g);
        // The handle's drop hands its deferred free to the collector; a fresh handle's
        // collects then advance the epoch (no walk is pinned) until the free runs.
        drop(handle);
        let handle = w.mmu.reclaimer().register();
        for _ in 0..4 {
            if w.tables.frees() > 0 {
                break;
            }
            handle.collect();
        }
    }
    if w.tables.frees() != 1 {
        panic!("scenario setup: T1 was not freed by the RCU callbacks");
    }
    w.x.step(format_args!("setup: gfn 2 mapped, zapped, T1 freed (poisoned)"));
    let (wv, wa) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let out = wv.fault(Gfn(3));
            if out != FaultOutcome::Installed(Pfn(4)) {
                panic!("scenario bug: nothing invalidates, yet the fault on gfn 3 returned {out:?}");
            }
            wv.x.step(format_args!("fault installed gfn 3 -> pfn 4 (table pages recycled: {})", wv.tables.recycled()));
        }),
        Role::new("ager", move || {
            let x = &wa.x;
            x.step(format_args!("test_young(host page 2), lockless (epoch-way MMU); nothing maps gfn 2"));
            if wa.vm.test_young(&*wa.mmu, page_hvas(2)) {
                violated(
                    Invariant::WalkerReadUninitializedTable,
                    format_args!(
                        "test_young found gfn 2 young, which nothing maps: it followed the link map published to the recycled T1 and read the entry as it was before map initialized the page (the poison of its previous life)"
                    ),
                );
            }
            x.step(format_args!("test_young returned young: false"));
        }),
    ]);
    if w.tables.recycled() != 1 {
        panic!("scenario bug: map did not recycle T1's page");
    }
    w.check_freed_tables();
    w.check_sptes(MAX_GFNS as u64);
}

/// `mmu-invalidate-two-slots`: one invalidation across two memslots (gfn 0 <- host page 0,
/// pfn 1; gfn 1 <- host page 1, pfn 2), one level. In setup both gfns are faulted in through
/// [`ReferenceMmu::fault`] and the guest accessed both (its TLB holds both translations).
///
/// * vcpu (CPU 0): one guest run accessing gfn 0 and gfn 1 (TLB hits unless flushed).
/// * invalidator (CPU 1): `invalidate_range_start` of host pages 0..2 (S3 for both memslots:
///   `begin`, `add_range`, a `zap_ipi` per slot; one S4 flush), revoke pfns 1 and 2, the primary
///   MMU remaps both pages (pfns 3, 4) and frees pfns 1 and 2, `invalidate_range_end`.
///
/// Invariant: once start has returned, the guest uses neither TLB entry, and no SPTE maps
/// pfn 1 or 2.
pub fn mmu_invalidate_two_slots<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 2, 4>::new(hal, x, [Pfn(1), Pfn(2)]));
    w.add_slots();
    for gfn in 0..2 {
        if w.fault(Gfn(gfn)) != FaultOutcome::Installed(Pfn(gfn + 1)) {
            panic!("scenario setup: fault on gfn {gfn} did not install");
        }
    }
    w.prefill(&[Gfn(0), Gfn(1)]);
    let (wv, wi) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || wv.run_guest(&[Gfn(0), Gfn(1)])),
        Role::new("invalidator", move || {
            let hvas = page_hvas(0).union(&page_hvas(1));
            wi.invalidate(hvas, &[Pfn(1), Pfn(2)], &[(0, Pfn(3)), (1, Pfn(4))]);
        }),
    ]);
    w.check_sptes(2);
}

/// `mmu-memslot-delete-vs-guest`: P3's memslot delete through [`Vm::set_memslot`] with the
/// reference MMU as the secondary MMU, against a vCPU that has the slot's gfn in its TLB. One
/// level; one memslot (gfn 0 <- host page 0, pfn 1), faulted in and cached in setup.
///
/// * vcpu (CPU 0): one guest run accessing gfn 0, then one attempt of [`ReferenceMmu::fault`]
///   on gfn 0 (no memslot, an INVALID one, or the slot still there).
/// * memslot-updater (CPU 1): `set_memslot(Delete)` (INVALID copy, SRCU sync, `zap_ipi` of the
///   slot's gfns and `flush_remote_tlbs` under `mmu_lock`, final layout, SRCU sync); revoke
///   pfn 1 (gfn 0's only translation); the slot is gone.
///
/// Invariants: once the delete has returned, the guest uses no translation of gfn 0, and no
/// SPTE maps gfn 0 (I3.2, checked at the end).
pub fn mmu_memslot_delete_vs_guest<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 2>::new(hal, x, [Pfn(1)]));
    w.add_slots();
    if w.fault(Gfn(0)) != FaultOutcome::Installed(Pfn(1)) {
        panic!("scenario setup: fault on gfn 0 did not install");
    }
    w.prefill(&[Gfn(0)]);
    let (wv, wu) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            wv.run_guest(&[Gfn(0)]);
            let out = wv.mmu.fault(&wv.vm, Gfn(0), true, |hva| Ok(wv.host.gup_fast(&wv.x, hva)));
            wv.x.step(format_args!("ReferenceMmu::fault(gfn 0) -> {out:?}"));
        }),
        Role::new("memslot-updater", move || {
            wu.x.step(format_args!("set_memslot(DELETE slot 0)"));
            setup(wu.vm.set_memslot(&*wu.mmu, SlotChange::Delete(0)));
            wu.revoke(&[Pfn(1)]);
        }),
    ]);
    w.check_no_spte(Gfn(0));
}

/// `mmu-map-write-protect-vs-guest`: M1-M2 on core's [`ReferenceMmu::map`] against a guest that
/// writes through its TLB. One level; gfn 0 -> pfn 1, writable, and the guest's TLB holds it
/// writable (setup).
///
/// * vcpu (CPU 0): one guest run writing gfn 0 (a writable TLB hit, or after a flush a hardware
///   walk that finds the read-only SPTE and faults).
/// * write-protector (CPU 1): under `mmu_lock`, `ReferenceMmu::map(gfn 0, read-only,
///   MMU-writable)` (dirty logging's write protection), then, once it returned, pfn 1 counts
///   as write-protected (ghost).
///
/// Invariant I5.6: no guest write to pfn 1 after the map returned. Without M2's flush
/// (`MapFlushesLostWrite`) the guest keeps writing through its writable TLB entry.
pub fn mmu_map_write_protect_vs_guest<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 1>::new(hal, x, [Pfn(1)]));
    w.map_writable(Gfn(0), Pfn(1));
    if !w.guest_write(Gfn(0)) {
        panic!("scenario setup: gfn 0 is not writable");
    }
    let (wv, wp) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || wv.run_guest_writing(&[Gfn(0)])),
        Role::new("write-protector", move || {
            let x = &wp.x;
            let g = wp.vm.invalidation().mmu_lock().write();
            x.step(format_args!("map(gfn 0 -> pfn 1, read-only) under mmu_lock"));
            let old = setup(wp.mmu.map(&g, Gfn(0), setup(Spte::leaf(Pfn(1), false, true))));
            drop(g);
            x.step(format_args!("map returned (old leaf {:?})", old.map(Spte::bits)));
            wp.touch(Pfn(1), true);
            wp.write_protected[0].set();
            x.step(format_args!("ghost: pfn 1 write-protected"));
        }),
    ]);
}

/// `mmu-prefetch-vs-invalidation`: F15 on core's [`ReferenceMmu::fault_around`] against an
/// MMU-notifier invalidation of the *neighbouring* gfn. One level; memslots gfn 0 <- host
/// page 0 (pfn 1) and gfn 1 <- host page 1 (pfn 2); nothing mapped.
///
/// * vcpu (CPU 0): one attempt of `fault_around(gfn 0, around gfns 0..2)`: the fault path on
///   gfn 0, then, under the same `mmu_lock`, the prefetch of gfn 1 through GUP-fast.
/// * invalidator (CPU 1): `invalidate_range_start` of host page 1 (begin over gfn 1 only, zap,
///   flush), revoke pfn 2, the primary MMU remaps page 1 to pfn 3 and frees pfn 2,
///   `invalidate_range_end`.
///
/// Invariant I2.1: no SPTE maps pfn 2 once start returned. The fault on gfn 0 passes its checks
/// (the open range does not cover it); the prefetch has no snapshot of its own, so without
/// `PrefetchSkipsWhileInvalidating` it resolves gfn 1 between start and the remap and installs
/// the page the primary MMU then frees.
pub fn mmu_prefetch_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 2, 3>::new(hal, x, [Pfn(1), Pfn(2)]));
    w.add_slots();
    let (wv, wi) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let around = setup(GfnRange::new(Gfn(0), Gfn(2)));
            let out = setup(
                wv.mmu.fault_around(&wv.vm, Gfn(0), true, around, |hva| Ok(wv.host.gup_fast(&wv.x, hva))),
            );
            wv.x.step(format_args!("ReferenceMmu::fault_around(gfn 0, gfns 0..2) -> {out:?}"));
        }),
        Role::new("invalidator", move || wi.invalidate(page_hvas(1), &[Pfn(2)], &[(1, Pfn(3))])),
    ]);
    w.check_sptes(2);
}

/// `prefault-vs-memslot-delete`: F16 on core's [`ReferenceMmu::prefault`] (KVM's
/// `KVM_PRE_FAULT_MEMORY`, one SRCU read section around its whole retry loop) against
/// `Vm::set_memslot(DELETE)` of the slot it prefaults. One level; one memslot (gfn 0 <- host
/// page 0, pfn 1).
///
/// * vcpu (CPU 0): `prefault(gfn 0)`: installs, or finds no memslot, or finds the slot invalid
///   and returns `TryAgain`.
/// * memslot-updater (CPU 1): `set_memslot(Delete slot 0)` (INVALID copy, SRCU sync, zap,
///   final layout, SRCU sync).
///
/// Liveness: both roles finish. The delete publishes the invalid slot and then waits for every
/// SRCU reader, the prefault's loop included; without `PrefaultReturnsOnInvalidSlot` the loop
/// retries on the invalid slot for ever inside that read section (the 2024 KVM bug), and the
/// checkers report a livelock. Safety (I3.2): once the delete returned, no SPTE maps gfn 0.
pub fn prefault_vs_memslot_delete<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 2>::new(hal, x, [Pfn(1)]));
    w.add_slots();
    let (wv, wu) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let out = wv.mmu.prefault(&wv.vm, Gfn(0), true, |hva| Ok(wv.host.gup_fast(&wv.x, hva)));
            wv.x.step(format_args!("ReferenceMmu::prefault(gfn 0) -> {out:?}"));
        }),
        Role::new("memslot-updater", move || {
            wu.x.step(format_args!("set_memslot(DELETE slot 0)"));
            setup(wu.vm.set_memslot(&*wu.mmu, SlotChange::Delete(0)));
            wu.x.step(format_args!("delete returned"));
        }),
    ]);
    w.check_no_spte(Gfn(0));
}

/// `mmu-dirty-bit-vs-write-protect`: D1-D3 on core's [`ReferenceMmu::map`]: the hardware sets
/// the dirty bit (atomic OR) while the host write-protects the page (dirty logging). One level;
/// gfn 0 -> pfn 1 writable; in setup the guest read gfn 0 (accessed bit set, a writable TLB
/// entry not yet used for a write).
///
/// * vcpu (CPU 0): one guest run writing gfn 0 (the hardware ORs the dirty bit into the SPTE
///   and writes only if that SPTE was still writable).
/// * write-protector (CPU 1): under `mmu_lock`, `map(gfn 0, read-only)`; the old SPTE's bits go
///   to the primary MMU (the ghost [`GhostPages`]).
///
/// Invariant I5.7: a page the guest wrote is dirty in the primary MMU's state or in its SPTE.
/// Without the atomic exchange (`SpteUpdateIsAtomic`), a dirty bit set between the update's
/// load and store is overwritten and never reported.
pub fn mmu_dirty_bit_vs_write_protect<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 1>::new(hal, x, [Pfn(1)]));
    w.map_writable(Gfn(0), Pfn(1));
    w.prefill_read(Gfn(0));
    let (wv, wp) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || wv.run_guest_writing(&[Gfn(0)])),
        Role::new("write-protector", move || {
            let g = wp.vm.invalidation().mmu_lock().write();
            wp.x.step(format_args!("map(gfn 0 -> pfn 1, read-only) under mmu_lock"));
            let old = setup(wp.mmu.map(&g, Gfn(0), setup(Spte::leaf(Pfn(1), false, true))));
            drop(g);
            wp.x.step(format_args!("map returned (old leaf {:?})", old.map(Spte::bits)));
        }),
    ]);
    w.check_dirty(1);
}

/// `mmu-clear-flush-young-vs-guest`: A1-A3 on `Vm::clear_flush_young` with core's
/// [`ReferenceMmu`] as the secondary MMU, against a guest that writes the page twice. One level;
/// one memslot (gfn 0 <- host page 0); gfn 0 -> pfn 1 writable; in setup the guest read gfn 0
/// (accessed bit set, a writable TLB entry not yet used for a write).
///
/// * vcpu (CPU 0): one guest run writing gfn 0 twice (the first write sets the SPTE's accessed
///   and dirty bits, the second goes through the TLB alone).
/// * ager (CPU 1): `clear_flush_young` of host page 0; when it returns young, pfn 1 counts as
///   aged (ghost).
///
/// Invariants: I5.8, an access after `clear_flush_young` returned young sets the accessed bit
/// again (without the flush, `ClearFlushYoungFlushes`, the guest keeps writing through its TLB);
/// I5.7, the dirty bit survives the accessed-bit clear (without the atomic AND,
/// `SpteUpdateIsAtomic`, a dirty bit set in between is lost).
pub fn mmu_clear_flush_young_vs_guest<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(World::<H, X, 1, 1, 1>::new(hal, x, [Pfn(1)]));
    w.add_slots();
    w.map_writable(Gfn(0), Pfn(1));
    w.prefill_read(Gfn(0));
    let (wv, wa) = (w.clone(), w.clone());
    x.run(vec![
        Role::new("vcpu", move || wv.run_guest_writing(&[Gfn(0), Gfn(0)])),
        Role::new("ager", move || {
            wa.x.step(format_args!("clear_flush_young(host page 0)"));
            let young = wa.vm.clear_flush_young(&*wa.mmu, page_hvas(0));
            wa.x.step(format_args!("clear_flush_young returned young: {young}"));
            if young {
                wa.touch(Pfn(1), true);
                wa.aged[0].set();
            }
        }),
    ]);
    w.check_dirty(1);
}
