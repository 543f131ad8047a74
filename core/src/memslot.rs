//! P3: memslots, and memslot updates that wait out open invalidations.
//!
//! A memslot maps a range of guest frames onto a range of host virtual addresses. As in KVM
//! there are two memslot sets: the *active* one, which readers use under [`Srcu`], and the
//! *inactive* one, which only the updater touches. An update edits the inactive set and swaps
//! the two ([`Memslots::update`]); no allocation is needed, so this works without `alloc`.
//!
//! ## The swap (`kvm_swap_active_memslots`, W2–W7)
//!
//! 1. Take `mn_invalidate_lock` and wait while `mn_active_invalidate_count` is non-zero
//!    (dropping the lock while waiting). An MMU-notifier start/end pair holds that count for
//!    its whole span, so it sees one memslot layout in both halves and `in_progress` stays
//!    balanced (I1.3, I3.1). The notifier side never waits for the updater (it only counts), so
//!    the updater may starve under a stream of invalidations ([W3](crate::protocols#w3)); it never deadlocks
//!    with them.
//! 2. Publish the new active index **while still holding the lock** (release), so no start can
//!    slip in between the check and the publish.
//! 3. Drop the lock and [`Srcu::synchronize`]: once it returns no reader holds the old set,
//!    which becomes the inactive set and is brought up to date.
//!
//! Deleting or moving a slot goes through an intermediate layout in which the slot is marked
//! [`Memslot::is_invalid`] (faults that find it retry), then the caller zaps the slot's SPTEs,
//! then the final layout is installed (`kvm_set_memslot`; [P3](crate::protocols#the-swap)).
//!
//! Slot fields are atomics: readers load them with relaxed loads after the acquiring load of
//! the active index ([`Barrier::MemslotDereference`]), so a model checker sees a reader that
//! reads a set while the updater rewrites it (a missing synchronize) as the data race it is.

use crate::active::ActiveInvalidations;
use crate::barrier::Barrier;
use crate::error::Error;
use crate::hal::{Atomic, Hal, Ordering::Relaxed};
use crate::lock::SpinLock;
use crate::range::{Gfn, GfnRange, Hva, HvaRange};
use crate::rule::Rule;
use crate::srcu::{Srcu, SrcuReadGuard};
use crate::step::Step;
use core::fmt;

/// Bytes in a page: the unit of a gfn.
pub const PAGE_SIZE: u64 = 4096;

/// The generation bit a memslot swap sets while the new set is published but SRCU readers of
/// the old set may still run (KVM's `KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS`, W1–W8): nothing
/// may be cached by a generation that carries it ([`SlotCache::fill`] refuses).
pub const GEN_UPDATE_IN_PROGRESS: u64 = 1 << 63;

/// A memslot's id, unique within a VM.
pub type SlotId = u16;

/// One memslot: guest frames `[base_gfn, base_gfn + npages)` backed by host addresses
/// `[hva, hva + npages * PAGE_SIZE)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Memslot {
    id: SlotId,
    gfns: GfnRange,
    hvas: HvaRange,
    invalid: bool,
}

/// What a new memslot maps, by name (the fields of KVM's `kvm_userspace_memory_region`, in
/// frames and host addresses), so that no two numbers can be passed in each other's place.
///
/// ```
/// use mmusync::{Gfn, Hva, Memslot, MemslotConfig};
///
/// let slot = Memslot::new(MemslotConfig {
///     id: 1,
///     base_gfn: Gfn(0x100),
///     npages: 16,
///     hva: Hva(0x7f00_0000_0000),
/// })?;
/// assert_eq!(slot.gfn_to_hva(Gfn(0x101)), Some(Hva(0x7f00_0000_1000)));
/// # Ok::<(), mmusync::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemslotConfig {
    /// The slot's id, unique within the VM.
    pub id: SlotId,
    /// The first guest frame the slot maps.
    pub base_gfn: Gfn,
    /// How many pages: the slot maps `[base_gfn, base_gfn + npages)`.
    pub npages: u64,
    /// The page-aligned host address behind `base_gfn`.
    pub hva: Hva,
}

impl Memslot {
    /// A slot. Fails on an empty slot ([`Error::EmptyRange`]), a misaligned `hva`
    /// ([`Error::Misaligned`]), or ranges past the accepted maxima ([`Error::RangeOverflow`]).
    pub fn new(config: MemslotConfig) -> Result<Self, Error> {
        let MemslotConfig { id, base_gfn, npages, hva } = config;
        if hva.0 % PAGE_SIZE != 0 {
            return Err(Error::Misaligned { hva });
        }
        let gfns = GfnRange::new(base_gfn, base_gfn.checked_add(npages).ok_or(Error::RangeOverflow)?)?;
        let bytes = npages.checked_mul(PAGE_SIZE).ok_or(Error::RangeOverflow)?;
        let hvas = HvaRange::new(hva, hva.checked_add(bytes).ok_or(Error::RangeOverflow)?)?;
        Ok(Memslot { id, gfns, hvas, invalid: false })
    }

    /// The slot's id.
    pub fn id(&self) -> SlotId {
        self.id
    }

    /// The guest frames it maps.
    pub fn gfns(&self) -> GfnRange {
        self.gfns
    }

    /// The host addresses behind it.
    pub fn hvas(&self) -> HvaRange {
        self.hvas
    }

    /// Whether the slot is being deleted or moved (`KVM_MEMSLOT_INVALID`): faults on it retry.
    pub fn is_invalid(&self) -> bool {
        self.invalid
    }

    /// The host address of `gfn`, if the slot maps it.
    pub fn gfn_to_hva(&self, gfn: Gfn) -> Option<Hva> {
        // In range, so the offset exists and the product fits: `new` checked the slot's end.
        let offset = gfn.offset_from(self.gfns.start()).filter(|_| self.gfns.contains(gfn))?;
        Some(Hva(self.hvas.start().0 + offset * PAGE_SIZE))
    }

    /// The guest frames whose pages overlap `hvas` (`hva_to_gfn_memslot`, clipped to the slot).
    pub fn gfns_of(&self, hvas: &HvaRange) -> Option<GfnRange> {
        let clip = self.hvas.intersect(hvas)?;
        let first = (clip.start().0 - self.hvas.start().0) / PAGE_SIZE;
        let last = (clip.end().0 - self.hvas.start().0).div_ceil(PAGE_SIZE);
        GfnRange::new(Gfn(self.gfns.start().0 + first), Gfn(self.gfns.start().0 + last)).ok()
    }
}

/// A change to the memslot layout (`KVM_SET_USER_MEMORY_REGION`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotChange {
    /// Add a slot.
    Create(Memslot),
    /// Remove the slot with this id.
    Delete(SlotId),
    /// Move the slot with this id to a new first gfn (same size and host range).
    Move {
        /// The slot.
        id: SlotId,
        /// Its new first guest frame.
        base_gfn: Gfn,
    },
}

/// One slot's storage. `id_plus_one == 0` means empty.
struct SlotCell<H: Hal> {
    id_plus_one: H::AtomicU64,
    base_gfn: H::AtomicU64,
    npages: H::AtomicU64,
    hva: H::AtomicU64,
    invalid: H::AtomicBool,
}

impl<H: Hal> SlotCell<H> {
    fn empty() -> Self {
        SlotCell {
            id_plus_one: H::AtomicU64::new(0),
            base_gfn: H::AtomicU64::new(0),
            npages: H::AtomicU64::new(0),
            hva: H::AtomicU64::new(0),
            invalid: H::AtomicBool::new(false),
        }
    }

    fn load(&self) -> Option<Memslot> {
        let id = self.id_plus_one.load(Relaxed).checked_sub(1)?;
        let slot = Memslot::new(MemslotConfig {
            id: id as SlotId,
            base_gfn: Gfn(self.base_gfn.load(Relaxed)),
            npages: self.npages.load(Relaxed),
            hva: Hva(self.hva.load(Relaxed)),
        });
        // A torn read (only possible if the updater skipped synchronize) can yield an invalid
        // slot; report the cell as empty rather than trust it.
        slot.ok().map(|s| Memslot { invalid: self.invalid.load(Relaxed), ..s })
    }

    fn store(&self, slot: Option<&Memslot>) {
        match slot {
            None => self.id_plus_one.store(0, Relaxed),
            Some(s) => {
                self.id_plus_one.store(u64::from(s.id) + 1, Relaxed);
                self.base_gfn.store(s.gfns.start().0, Relaxed);
                self.npages.store(s.gfns.len(), Relaxed);
                self.hva.store(s.hvas.start().0, Relaxed);
                self.invalid.store(s.invalid, Relaxed);
            }
        }
    }
}

/// One of the two memslot sets.
struct SlotSet<H: Hal, const N: usize> {
    cells: [SlotCell<H>; N],
    generation: H::AtomicU64,
}

impl<H: Hal, const N: usize> SlotSet<H, N> {
    fn new() -> Self {
        SlotSet { cells: core::array::from_fn(|_| SlotCell::empty()), generation: H::AtomicU64::new(0) }
    }

    fn iter(&self) -> impl Iterator<Item = Memslot> + '_ {
        self.cells.iter().filter_map(SlotCell::load)
    }

    fn copy_from(&self, other: &Self) {
        for (to, from) in self.cells.iter().zip(&other.cells) {
            to.store(from.load().as_ref());
        }
        self.generation.store(other.generation.load(Relaxed), Relaxed);
    }

    /// The binary search's key of cell `i`: the first gfn of its slot, `u64::MAX` (beyond
    /// every gfn, [`crate::range::MAX_GFN`]) when the cell is empty.
    ///
    /// The cells of a set are kept sorted by this key (`insert`, `replace`, and `copy_from`,
    /// which copies cell by cell): the occupied cells come first, ordered by first gfn, then
    /// the empty ones. That is KVM's memslot array before 5.13 (`update_memslots` sorts,
    /// `search_memslots` bisects), and makes [`MemslotsRead::find`] O(log N).
    fn key(&self, i: usize) -> u64 {
        let cell = &self.cells[i];
        if cell.id_plus_one.load(Relaxed) == 0 {
            u64::MAX
        } else {
            cell.base_gfn.load(Relaxed)
        }
    }

    /// How many cells have a key at most `gfn` (a partition point: the keys are sorted).
    ///
    /// Branch-free halving (the loop runs `log2(N)` times whatever the keys, and each step
    /// selects rather than branches), so a lookup costs a few dependent loads and no
    /// mispredicted branches: at 512 slots it stays within a small factor of 8 slots.
    fn count_at_most(&self, gfn: Gfn) -> usize {
        if N == 0 {
            return 0;
        }
        // Invariant: the partition point lies in `base..=base + size`.
        let (mut base, mut size) = (0, N);
        while size > 1 {
            let half = size / 2;
            let mid = base + half;
            base = if self.key(mid) <= gfn.0 { mid } else { base };
            size -= half;
        }
        base + usize::from(self.key(base) <= gfn.0)
    }

    /// How many cells are occupied (they come first).
    fn occupied(&self) -> usize {
        self.count_at_most(Gfn(u64::MAX - 1))
    }

    /// Inserts `slot` at its sorted place, moving the later slots up one cell. Only for the
    /// inactive set (no reader). [`Error::SlotsFull`] when every cell is occupied.
    fn insert(&self, slot: &Memslot) -> Result<(), Error> {
        let len = self.occupied();
        if len == N {
            return Err(Error::SlotsFull);
        }
        let at = self.count_at_most(slot.gfns.start());
        for i in (at..len).rev() {
            self.cells[i + 1].store(self.cells[i].load().as_ref());
        }
        self.cells[at].store(Some(slot));
        Ok(())
    }

    /// Replaces the slot in cell `pos` with `new` (`None`: removes it), keeping the cells
    /// sorted. Only for the inactive set (no reader).
    fn replace(&self, pos: usize, new: Option<&Memslot>) -> Result<(), Error> {
        let len = self.occupied();
        for i in pos + 1..len {
            self.cells[i - 1].store(self.cells[i].load().as_ref());
        }
        if let Some(last) = len.checked_sub(1) {
            self.cells[last].store(None);
        }
        match new {
            Some(slot) => self.insert(slot),
            None => Ok(()),
        }
    }

    fn position(&self, id: SlotId) -> Option<usize> {
        self.cells.iter().position(|c| c.id_plus_one.load(Relaxed) == u64::from(id) + 1)
    }
}

/// The memslots of one address space: two sets of `N` slots, an SRCU domain, and the
/// updaters' lock (`slots_lock`).
pub struct Memslots<H: Hal, const N: usize> {
    hal: H,
    sets: [SlotSet<H, N>; 2],
    active: H::AtomicUsize,
    srcu: Srcu<H>,
    slots_lock: SpinLock<H, ()>,
}

impl<H: Hal, const N: usize> fmt::Debug for Memslots<H, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memslots").field("capacity", &N).finish_non_exhaustive()
    }
}

impl<H: Hal, const N: usize> Memslots<H, N> {
    /// No slots.
    pub fn new(hal: H) -> Self {
        Memslots {
            srcu: Srcu::new(hal.clone()),
            hal,
            sets: [SlotSet::new(), SlotSet::new()],
            active: H::AtomicUsize::new(0),
            slots_lock: SpinLock::<H, ()>::new(()),
        }
    }

    /// Enters an SRCU read section and returns the active set (`srcu_read_lock` +
    /// `srcu_dereference(kvm->memslots)`). The set stays valid while the guard lives.
    pub fn read(&self) -> MemslotsRead<'_, H, N> {
        let srcu = self.srcu.read_lock();
        let idx = self.active.load(Relaxed) & 1;
        // Pairs with MemslotPublish: the slot contents written before the swap are visible.
        // Without it a reader can see the new index and the set's old contents.
        self.hal.barrier(Barrier::MemslotDereference);
        MemslotsRead { _srcu: srcu, set: &self.sets[idx] }
    }

    /// The SRCU domain that protects the sets. Faults hold a read section for their whole
    /// duration (F0), so a memslot update waits for them.
    pub fn srcu(&self) -> &Srcu<H> {
        &self.srcu
    }

    /// Applies `change` (`kvm_set_memslot`). For a delete or move, the slot is first published
    /// as invalid, then `zap` is called with the old slot so the caller can remove its SPTEs and
    /// flush TLBs, then the final layout is published. Waits for open invalidations before each
    /// publish and for SRCU readers after it. Must not be called inside a read section of these
    /// memslots, or while holding `mmu_lock`.
    pub fn update(
        &self,
        active: &ActiveInvalidations<H>,
        change: SlotChange,
        zap: impl FnOnce(&Memslot),
    ) -> Result<(), Error> {
        let _slots_lock = self.slots_lock.lock();
        let inactive = self.inactive();
        match change {
            SlotChange::Create(slot) => {
                if inactive.position(slot.id).is_some()
                    || inactive.iter().any(|s| s.gfns.overlaps(&slot.gfns))
                {
                    // The error path only: the common path reads each cell as it always did.
                    let collides = |s: &Memslot| s.id == slot.id || s.gfns.overlaps(&slot.gfns);
                    let existing = inactive.iter().find(collides).map_or(slot.id, |s| s.id);
                    return Err(Error::SlotOverlap { slot: slot.id, existing });
                }
                inactive.insert(&slot)?;
                self.swap(active);
            }
            SlotChange::Delete(id) | SlotChange::Move { id, .. } => {
                let pos = inactive.position(id).ok_or(Error::NoSuchSlot { slot: id })?;
                let old = inactive.cells[pos].load().ok_or(Error::NoSuchSlot { slot: id })?;
                let new = match change {
                    SlotChange::Move { base_gfn, .. } => {
                        let moved = Memslot::new(MemslotConfig {
                            id,
                            base_gfn,
                            npages: old.gfns.len(),
                            hva: old.hvas.start(),
                        })?;
                        if let Some(existing) =
                            inactive.iter().find(|s| s.id != id && s.gfns.overlaps(&moved.gfns))
                        {
                            return Err(Error::SlotOverlap { slot: id, existing: existing.id });
                        }
                        Some(moved)
                    }
                    _ => None,
                };
                inactive.cells[pos].store(Some(&Memslot { invalid: true, ..old }));
                self.swap(active);
                zap(&old);
                self.inactive().replace(pos, new.as_ref())?;
                self.swap(active);
            }
        }
        Ok(())
    }

    fn inactive(&self) -> &SlotSet<H, N> {
        &self.sets[(self.active.load(Relaxed) & 1) ^ 1]
    }

    /// `kvm_swap_active_memslots`: publish the inactive set once no invalidation is active,
    /// wait for readers of the old set, then bring the old set up to date.
    fn swap(&self, active: &ActiveInvalidations<H>) {
        let old = self.active.load(Relaxed) & 1;
        let new = old ^ 1;
        // W1: the new set is published as "update in progress" (the old generation with the
        // bit set) and gets its final generation only once no reader of the old set is left
        // (W8). A reader that looked something up in the old set and then reads the
        // generation of the new one can never cache it under a generation that stays valid.
        let base = self.sets[old].generation.load(Relaxed) & !GEN_UPDATE_IN_PROGRESS;
        let final_generation = base.wrapping_add(1) & !GEN_UPDATE_IN_PROGRESS;
        let mark = self.hal.keeps(Rule::MemslotGenerationInProgress);
        let generation = if mark { base | GEN_UPDATE_IN_PROGRESS } else { final_generation };
        self.sets[new].generation.store(generation, Relaxed);

        let (mut guard, count) = active.lock();
        if self.hal.keeps(Rule::MemslotSwapWaitsForInvalidations) {
            // rcuwait: the notifier side only counts and never waits for us, so wait with the
            // lock dropped and re-check under it.
            let mut waiting = count.load(Relaxed);
            if waiting != 0 {
                self.hal.step(Step::MemslotWait { active: waiting });
            }
            while waiting != 0 {
                drop(guard);
                self.hal.spin_hint();
                guard = active.lock().0;
                waiting = count.load(Relaxed);
            }
        }
        if !self.hal.keeps(Rule::MemslotPublishUnderLock) {
            drop(guard);
            guard = active.lock().0;
        }
        // Pairs with MemslotDereference: the new set's contents before its index.
        self.hal.barrier(Barrier::MemslotPublish);
        self.active.store(new, Relaxed);
        drop(guard);
        self.hal.step(Step::MemslotPublish { generation });

        if self.hal.keeps(Rule::MemslotSwapSynchronizesSrcu) {
            self.srcu.synchronize();
            self.hal.step(Step::MemslotSynchronized);
        }
        if mark {
            // W8: every reader that could hold the old set is gone.
            self.sets[new].generation.store(final_generation, Relaxed);
            self.hal.step(Step::MemslotGeneration { generation: final_generation });
        }
        self.sets[old].copy_from(&self.sets[new]);
    }
}

/// The active memslot set, inside an SRCU read section.
pub struct MemslotsRead<'a, H: Hal, const N: usize> {
    _srcu: SrcuReadGuard<'a, H>,
    set: &'a SlotSet<H, N>,
}

impl<H: Hal, const N: usize> fmt::Debug for MemslotsRead<'_, H, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemslotsRead").field("srcu", &self._srcu).finish_non_exhaustive()
    }
}

impl<H: Hal, const N: usize> MemslotsRead<'_, H, N> {
    /// The slot mapping `gfn` (`gfn_to_memslot`). A binary search over the set's cells,
    /// which are sorted by first gfn: O(log N) (`search_memslots`).
    pub fn find(&self, gfn: Gfn) -> Option<Memslot> {
        // The last slot starting at or before `gfn` is the only one that can hold it: slots do
        // not overlap.
        let candidate = self.set.count_at_most(gfn).checked_sub(1)?;
        self.set.cells[candidate].load().filter(|s| s.gfns.contains(gfn))
    }

    /// The slots whose host range overlaps `hvas` (the notifier's interval-tree walk).
    pub fn overlapping(&self, hvas: HvaRange) -> impl Iterator<Item = Memslot> + '_ {
        self.set.iter().filter(move |s| s.hvas.overlaps(&hvas))
    }

    /// All slots.
    pub fn iter(&self) -> impl Iterator<Item = Memslot> + '_ {
        self.set.iter()
    }

    /// The set's generation (`slots->generation`): it changes with every swap. While a swap is
    /// under way (between its publish and the end of its SRCU synchronize) it carries
    /// [`GEN_UPDATE_IN_PROGRESS`], and nothing may be cached by it.
    pub fn generation(&self) -> u64 {
        self.set.generation.load(Relaxed)
    }
}

/// A memslot lookup cached by generation: what KVM's MMIO SPTEs (which cache "no memslot maps
/// this gfn") and `gfn_to_hva_cache` keep. The answer for one gfn is stamped with the
/// generation it is valid for; it is used only while the active set has that same generation.
///
/// Stamping with a generation read *after* the lookup (as KVM's fault path does when it creates
/// an MMIO SPTE: the lookup and `kvm_memslots()->generation` are separate dereferences) is
/// safe because of the swap's in-progress bit (W1–W8, I3.4): a reader that looked up the
/// old set and then read the new set's generation reads it with the bit, which
/// [`fill`](Self::fill) refuses, and the final generation is published only after that
/// reader has left its read section.
///
/// Owned by one user (a vCPU): the methods take `&mut self` for updates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCache {
    entry: Option<(u64, Gfn, Option<Hva>)>,
}

impl SlotCache {
    /// An empty cache.
    pub const fn new() -> Self {
        SlotCache { entry: None }
    }

    /// Caches `hva` (`None`: no memslot maps `gfn`) for `gfn` under `generation`. Fails with
    /// [`Error::GenerationInProgress`], caching nothing (and dropping what was cached), when
    /// `generation` carries [`GEN_UPDATE_IN_PROGRESS`].
    pub fn fill(&mut self, generation: u64, gfn: Gfn, hva: Option<Hva>) -> Result<(), Error> {
        if generation & GEN_UPDATE_IN_PROGRESS != 0 {
            self.entry = None;
            return Err(Error::GenerationInProgress);
        }
        self.entry = Some((generation, gfn, hva));
        Ok(())
    }

    /// The cached answer for `gfn` if it was cached under `generation` (the active set's, read
    /// now): `Some(None)` is a cached "no memslot". `None`: a miss.
    pub fn get(&self, generation: u64, gfn: Gfn) -> Option<Option<Hva>> {
        match self.entry {
            Some((g, f, hva)) if g == generation && f == gfn && g & GEN_UPDATE_IN_PROGRESS == 0 => Some(hva),
            _ => None,
        }
    }

    /// The cached answer for `gfn` in `slots`, looked up and cached on a miss, all from one
    /// dereference of the active set (`kvm_gfn_to_hva_cache_init` + `kvm_read_guest_cached`).
    /// While a swap is under way the answer is returned but not cached.
    pub fn lookup<H: Hal, const N: usize>(
        &mut self,
        slots: &MemslotsRead<'_, H, N>,
        gfn: Gfn,
    ) -> Option<Hva> {
        let generation = slots.generation();
        if let Some(hva) = self.get(generation, gfn) {
            return hva;
        }
        let hva = slots.find(gfn).and_then(|s| s.gfn_to_hva(gfn));
        let _ = self.fill(generation, gfn, hva);
        hva
    }

    /// Drops the cached answer.
    pub fn clear(&mut self) {
        self.entry = None;
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;

    fn slots() -> (Memslots<StdHal, 4>, ActiveInvalidations<StdHal>) {
        (Memslots::new(StdHal), ActiveInvalidations::new(StdHal))
    }

    /// Creates the slot `config` describes (a test setup that cannot fail).
    fn create(m: &Memslots<StdHal, 4>, a: &ActiveInvalidations<StdHal>, config: MemslotConfig) {
        m.update(a, SlotChange::Create(Memslot::new(config).unwrap()), |_| {}).unwrap();
    }

    /// A swap with no invalidation active reports no wait (W3 is a step only when the swap
    /// waits), then W4, W7 and W8 with the generations it stored: trace conformance replays a
    /// checker's trace by these steps.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_swap_with_no_active_invalidation_reports_no_wait() {
        let hal = crate::hal::std::mutant::Records::default();
        let (m, a) = (Memslots::<_, 4>::new(hal.clone()), ActiveInvalidations::new(hal.clone()));
        let slot =
            Memslot::new(MemslotConfig { id: 1, base_gfn: Gfn(0), npages: 1, hva: Hva(0x1000) }).unwrap();
        m.update(&a, SlotChange::Create(slot), |_| {}).unwrap();
        assert_eq!(
            hal.take(),
            [
                Step::MemslotPublish { generation: GEN_UPDATE_IN_PROGRESS },
                Step::MemslotSynchronized,
                Step::MemslotGeneration { generation: 1 },
            ]
        );
    }

    #[test]
    fn create_move_delete() {
        let (m, a) = slots();
        create(&m, &a, MemslotConfig { id: 1, base_gfn: Gfn(0x100), npages: 16, hva: Hva(0x10_0000) });
        assert_eq!(m.read().find(Gfn(0x105)).map(|s| s.id()), Some(1));
        assert_eq!(m.read().find(Gfn(0x105)).unwrap().gfn_to_hva(Gfn(0x105)), Some(Hva(0x10_5000)));
        let mut zapped = None;
        m.update(&a, SlotChange::Move { id: 1, base_gfn: Gfn(0x200) }, |s| zapped = Some(*s)).unwrap();
        assert_eq!(zapped.map(|s| s.gfns().start()), Some(Gfn(0x100)), "the old slot is zapped");
        assert!(m.read().find(Gfn(0x105)).is_none());
        assert_eq!(m.read().find(Gfn(0x20f)).map(|s| s.is_invalid()), Some(false));
        m.update(&a, SlotChange::Delete(1), |_| {}).unwrap();
        assert_eq!(m.read().iter().count(), 0);
        assert!(m.read().generation() >= 5, "every swap bumps the generation");
    }

    #[test]
    fn deleting_or_moving_a_slot_keeps_the_others_sorted_and_found() {
        let (m, a) = slots();
        for id in 1..4 {
            let base_gfn = Gfn(u64::from(id) * 0x100);
            create(&m, &a, MemslotConfig { id, base_gfn, npages: 16, hva: Hva(u64::from(id) * 0x10_0000) });
        }
        let ids = |m: &Memslots<StdHal, 4>| m.read().iter().map(|s| s.id()).collect::<std::vec::Vec<_>>();
        let found = |m: &Memslots<StdHal, 4>, gfn: u64| m.read().find(Gfn(gfn)).map(|s| s.id());
        m.update(&a, SlotChange::Delete(1), |_| {}).unwrap();
        assert_eq!(ids(&m), [2, 3], "the later slots moved down one cell");
        assert_eq!((found(&m, 0x105), found(&m, 0x205), found(&m, 0x305)), (None, Some(2), Some(3)));
        m.update(&a, SlotChange::Move { id: 2, base_gfn: Gfn(0x400) }, |_| {}).unwrap();
        assert_eq!(ids(&m), [3, 2], "sorted by first gfn again");
        assert_eq!((found(&m, 0x205), found(&m, 0x305), found(&m, 0x405)), (None, Some(3), Some(2)));
        assert_eq!(m.read().find(Gfn(0x405)).and_then(|s| s.gfn_to_hva(Gfn(0x405))), Some(Hva(0x20_5000)));
    }

    #[test]
    fn bad_changes_are_typed_errors() {
        let (m, a) = slots();
        let s = Memslot::new(MemslotConfig { id: 1, base_gfn: Gfn(0), npages: 16, hva: Hva(0) }).unwrap();
        m.update(&a, SlotChange::Create(s), |_| {}).unwrap();
        assert_eq!(
            m.update(
                &a,
                SlotChange::Create(
                    Memslot::new(MemslotConfig { id: 2, base_gfn: Gfn(8), npages: 16, hva: Hva(0x10_0000) })
                        .unwrap()
                ),
                |_| {}
            ),
            Err(Error::SlotOverlap { slot: 2, existing: 1 })
        );
        assert_eq!(m.update(&a, SlotChange::Delete(9), |_| {}), Err(Error::NoSuchSlot { slot: 9 }));
        assert_eq!(
            Memslot::new(MemslotConfig { id: 3, base_gfn: Gfn(0), npages: 0, hva: Hva(0) }),
            Err(Error::EmptyRange)
        );
        assert_eq!(
            Memslot::new(MemslotConfig { id: 3, base_gfn: Gfn(0), npages: 1, hva: Hva(7) }),
            Err(Error::Misaligned { hva: Hva(7) })
        );
        for id in 2..5 {
            create(&m, &a, MemslotConfig { id, base_gfn: Gfn(u64::from(id) * 100), npages: 1, hva: Hva(0) });
        }
        assert_eq!(
            m.update(
                &a,
                SlotChange::Create(
                    Memslot::new(MemslotConfig { id: 9, base_gfn: Gfn(900), npages: 1, hva: Hva(0) })
                        .unwrap()
                ),
                |_| {}
            ),
            Err(Error::SlotsFull)
        );
    }

    #[test]
    fn generations_are_final_outside_swaps_and_caches_follow_them() {
        let (m, a) = slots();
        let g0 = m.read().generation();
        let mut cache = SlotCache::new();
        assert_eq!(cache.lookup(&m.read(), Gfn(0x105)), None, "no slot: cached as such");
        assert_eq!(cache.get(g0, Gfn(0x105)), Some(None));
        create(&m, &a, MemslotConfig { id: 1, base_gfn: Gfn(0x100), npages: 16, hva: Hva(0x10_0000) });
        let g1 = m.read().generation();
        assert_eq!(g1, g0 + 1, "one swap, one generation");
        assert_eq!(g1 & GEN_UPDATE_IN_PROGRESS, 0, "final once update returns");
        assert_eq!(cache.get(g1, Gfn(0x105)), None, "a new generation misses");
        assert_eq!(cache.lookup(&m.read(), Gfn(0x105)), Some(Hva(0x10_5000)));
        assert_eq!(cache.get(g1, Gfn(0x105)), Some(Some(Hva(0x10_5000))));
        assert_eq!(cache.get(g1, Gfn(0x106)), None, "another gfn misses");
        assert_eq!(
            cache.fill(g1 | GEN_UPDATE_IN_PROGRESS, Gfn(0x105), None),
            Err(Error::GenerationInProgress)
        );
        assert_eq!(cache.get(g1, Gfn(0x105)), None, "a refused fill drops the old answer");
        cache.fill(g1, Gfn(0x105), None).unwrap();
        cache.clear();
        assert_eq!(cache.get(g1, Gfn(0x105)), None);
    }

    #[test]
    fn hva_to_gfn_clips_to_the_slot() {
        let s =
            Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0x10), npages: 4, hva: Hva(0x4000) }).unwrap();
        assert_eq!(
            s.gfns_of(&HvaRange::new(Hva(0x0), Hva(0x5001)).unwrap()),
            GfnRange::new(Gfn(0x10), Gfn(0x12)).ok()
        );
        assert_eq!(s.gfns_of(&HvaRange::new(Hva(0x9000), Hva(0xa000)).unwrap()), None);
    }
}
