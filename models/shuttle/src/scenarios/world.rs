//! What the larger scenarios share: a primary MMU with ghost page liveness, a table allocator
//! that poisons freed table pages, the reference secondary MMU on top of it, the retrying fault
//! loop with its bounded-retry (starvation) check, and the ghost checks of I2.1 and I3.2.

use crate::exec::ShuttleExec;
use crate::hal::{liveness_violated, ShuttleAtomicU64, ShuttleHal};
use mmusync::hal::{Atomic, Hal, Ordering::Relaxed, PageAlloc};
use mmusync::lock::SpinLock;
use mmusync::mmu::{FaultOutcome, ReferenceMmu, Spte, Table};
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, GfnRange, Hva, HvaRange, Pfn};
use mmusync::Error;
use mmusync_models::ghost::{Counter, Pages};
use mmusync_models::{violated, Executor, Invariant};
use std::collections::BTreeSet;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, PoisonError};

/// Entries per table page of the scenarios' page tables.
pub const FANOUT: usize = 8;
/// Levels of the scenarios' page tables: gfns `0..FANOUT^LEVELS` (64).
pub const LEVELS: usize = 2;
/// The gfns a scenario page table maps.
pub const GFNS: Gfn = Gfn((FANOUT * FANOUT) as u64);

/// The reference MMU of the scenarios: two levels of eight entries over ghost table pages.
pub type Mmu<'v> = ReferenceMmu<'v, ShuttleHal, GhostTables, LEVELS, FANOUT>;

/// Host address of host page 0; page `i` is at `HVA0 + i * 4096`.
pub const HVA0: Hva = Hva(0x10_0000);

/// The host address of host page `page`.
pub const fn hva(page: u64) -> Hva {
    Hva(HVA0.0 + page * 0x1000)
}

/// Host pages `first..first + pages`, as an hva range.
pub fn hvas(first: u64, pages: u64) -> HvaRange {
    ok(HvaRange::new(hva(first), hva(first + pages)))
}

/// Guest frames `start..end`.
pub fn gfns(start: u64, end: u64) -> GfnRange {
    ok(GfnRange::new(Gfn(start), Gfn(end)))
}

/// Unwraps a result that only a scenario bug can make an error.
#[track_caller]
pub fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("scenario bug: {e}"),
    }
}

/// The primary MMU: host pages `0..N`, each mapping a pfn, changed under one PTE lock. Every
/// remap gives the page a fresh pfn and frees the old one (ghost state: pfns are never reused,
/// so a freed pfn stays freed).
pub struct Host<const N: usize> {
    pte: [ShuttleAtomicU64; N],
    pte_lock: SpinLock<ShuttleHal, ()>,
    /// Which pfns are freed.
    pub pages: Pages<PFNS>,
    next: Counter,
}

/// How many pfns one execution may use (initial pages plus every remap).
pub const PFNS: usize = 1024;

impl<const N: usize> Host<N> {
    /// Host page `i` maps pfn `i + 1`.
    pub fn new() -> Self {
        let next = Counter::new();
        for _ in 0..N {
            next.bump();
        }
        Host {
            pte: core::array::from_fn(|i| ShuttleAtomicU64::new(i as u64 + 1)),
            pte_lock: SpinLock::<ShuttleHal, ()>::new(()),
            pages: Pages::new(),
            next,
        }
    }

    fn page(hva: Hva) -> usize {
        ((hva.0 - HVA0.0) / 0x1000) as usize
    }

    /// `hva_to_pfn`: a lockless read of the host PTE, then a yield (the slow path may sleep:
    /// under PCT the faulting CPU drops its priority right inside its resolution window).
    /// `None` for an hva beyond the host's pages (the caller names the error: a fault reports
    /// its gfn).
    pub fn resolve(&self, x: &ShuttleExec, hva: Hva) -> Option<Pfn> {
        let pfn = Pfn(self.pte.get(Self::page(hva))?.load(Relaxed));
        x.step(format_args!("GUP: host page {} -> pfn {pfn}", Self::page(hva)));
        shuttle::thread::yield_now();
        Some(pfn)
    }

    /// The pfn host page `page` maps now.
    pub fn pfn(&self, page: u64) -> Pfn {
        Pfn(self.pte[page as usize].load(Relaxed))
    }

    /// The primary MMU changes host pages `pages` (between an invalidation's start and end):
    /// under the PTE lock each gets a fresh pfn; then the old pfns are freed.
    pub fn remap_and_free(&self, x: &ShuttleExec, pages: core::ops::Range<u64>) {
        let old: Vec<Pfn> = {
            let _pte = self.pte_lock.lock();
            pages
                .clone()
                .filter(|&p| (p as usize) < N)
                .map(|p| {
                    let fresh = self.next.bump();
                    assert!(fresh as usize <= PFNS, "scenario bug: out of ghost pfns");
                    Pfn(self.pte[p as usize].swap(fresh, Relaxed))
                })
                .collect()
        };
        for &pfn in &old {
            self.pages.free(pfn);
        }
        x.step(format_args!("primary MMU: host pages {pages:?} remapped, freed pfns {old:?}"));
    }
}

impl<const N: usize> Default for Host<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// The pfn stored in every entry of a freed table page. No real page has it, so a walker that
/// reads it read a freed table.
pub const POISON_PFN: Pfn = Pfn(0xdead_beef);

/// The table pages' allocator, with ghost state: `free` only *poisons* a page (every entry
/// becomes a leaf mapping [`POISON_PFN`]) and records it; memory is released when the last
/// handle drops, after the page table itself. So a walker that reads a table page after it was
/// freed reads poison, which the scenario reports, instead of undefined behaviour.
#[derive(Clone, Default)]
pub struct GhostTables {
    inner: Arc<Mutex<TablePages>>,
}

#[derive(Default)]
struct TablePages {
    /// Addresses of every page handed out (each a leaked `Box<Table>`).
    all: Vec<usize>,
    /// Addresses of the pages freed.
    freed: BTreeSet<usize>,
}

type ScenarioTable = Table<ShuttleHal, FANOUT>;

impl GhostTables {
    /// A new allocator.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut TablePages) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

// SAFETY: `alloc` returns a fresh, aligned, initialized `Table` from `Box::leak`; memory is
// never reused, since `free` only poisons the page through its atomics and records it, and
// every page is released only when the last handle drops (the page table holds one, so after
// it is dropped, with no walker left).
unsafe impl PageAlloc<ScenarioTable> for GhostTables {
    fn alloc(&self, init: ScenarioTable) -> Result<NonNull<ScenarioTable>, ScenarioTable> {
        let page = NonNull::from(Box::leak(Box::new(init)));
        self.with(|t| t.all.push(page.as_ptr() as usize));
        Ok(page)
    }

    unsafe fn free(&self, page: NonNull<ScenarioTable>) {
        let fresh = self.with(|t| t.freed.insert(page.as_ptr() as usize));
        assert!(fresh, "ghost: table page {page:p} freed twice");
        // SAFETY: the page came from `alloc` and its memory lives until this allocator drops.
        let table = unsafe { page.as_ref() };
        let poison = ok(Spte::leaf(POISON_PFN, false, false)).bits();
        for entry in (0..FANOUT).filter_map(|i| table.entry(i)) {
            entry.store(poison, Relaxed);
        }
    }
}

impl Drop for TablePages {
    fn drop(&mut self) {
        for &addr in &self.all {
            // SAFETY: every address came from `Box::leak` in `alloc`, is released once (here),
            // and the last handle is dropping, so nothing reads the page any more.
            drop(unsafe { Box::from_raw(addr as *mut ScenarioTable) });
        }
    }
}

/// Counts the scenario's *disturbers* (invalidators, memslot updaters, zappers) that have
/// finished. Once all have, nothing may make a fault retry.
pub struct Quiescence {
    disturbers: u64,
    done: Counter,
}

impl Quiescence {
    /// `disturbers` roles must finish.
    pub fn new(disturbers: u64) -> Self {
        Quiescence { disturbers, done: Counter::new() }
    }

    /// A disturber has made its last change.
    pub fn finished(&self, x: &ShuttleExec) {
        let n = self.done.bump();
        x.step(format_args!("disturber finished ({n} of {})", self.disturbers));
    }

    /// Whether every disturber has finished.
    pub fn quiet(&self) -> bool {
        self.done.get() >= self.disturbers
    }
}

/// How a retrying fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Faulted {
    /// A translation to this pfn was installed.
    Installed(Pfn),
    /// No memslot maps the gfn (KVM exits to userspace).
    NoSlot,
}

/// The starvation bound: how many times a fault may retry once it *began* after every
/// disturber finished. An attempt that begins then finds no open invalidation, a `seq` that no
/// longer moves and no INVALID memslot, so it must install at once: the bound is zero.
pub const RETRIES_AFTER_QUIESCENCE: u32 = 0;

/// What the roles of a larger scenario share: the executor, the HAL, the reference MMU, the
/// VM, the primary MMU and the quiescence counter. Cheap to copy into each role.
pub struct Ctx<'a, const HN: usize, const N: usize> {
    /// The executor (steps, trace).
    pub x: &'a ShuttleExec,
    /// The HAL.
    pub hal: &'a ShuttleHal,
    /// The secondary MMU.
    pub mmu: &'a Mmu<'a>,
    /// The VM: invalidation state, active count, memslots.
    pub vm: &'a Vm<ShuttleHal, N>,
    /// The primary MMU.
    pub host: &'a Host<HN>,
    /// Which disturbers have finished.
    pub quiet: &'a Quiescence,
}

impl<const HN: usize, const N: usize> Clone for Ctx<'_, HN, N> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<const HN: usize, const N: usize> Copy for Ctx<'_, HN, N> {}

impl<const HN: usize, const N: usize> Ctx<'_, HN, N> {
    /// A vCPU's fault on `gfn`, retried (with a spin hint per retry, KVM's return to the run
    /// loop) until it installs or finds no memslot. Each attempt takes and drops its own SRCU
    /// section.
    ///
    /// Checks I2.1 after an install (under `mmu_lock`, the SPTE of `gfn` maps no freed page),
    /// and the starvation bound: an attempt that began after every disturber finished must not
    /// retry more than [`RETRIES_AFTER_QUIESCENCE`] times.
    pub fn fault_until_done(&self, gfn: Gfn, write: bool) -> Faulted {
        let Ctx { x, hal, mmu, vm, host, quiet } = *self;
        let mut late_retries = 0;
        loop {
            let late = quiet.quiet();
            match mmu.fault(vm, gfn, write, |hva| host.resolve(x, hva).ok_or(Error::NoMapping { gfn })) {
                Ok(FaultOutcome::Installed(pfn)) => {
                    x.step(format_args!("fault gfn {gfn}: installed pfn {pfn}"));
                    self.check_sptes([gfn]);
                    return Faulted::Installed(pfn);
                }
                Ok(FaultOutcome::Retry) => {
                    x.step(format_args!("fault gfn {gfn}: RET_PF_RETRY"));
                    if late {
                        late_retries += 1;
                        if late_retries > RETRIES_AFTER_QUIESCENCE {
                            liveness_violated(format_args!(
                                "starvation: fault on gfn {gfn} retried {late_retries} times after every \
                                 invalidation and memslot update had returned (bound: {RETRIES_AFTER_QUIESCENCE})"
                            ));
                        }
                    }
                    hal.spin_hint();
                }
                Err(Error::NoMapping { .. }) => {
                    x.step(format_args!("fault gfn {gfn}: no memslot (exit to userspace)"));
                    return Faulted::NoSlot;
                }
                Err(e) => panic!("fault on gfn {gfn}: {e}"),
            }
        }
    }

    /// I2.1 for the SPTEs of `gfns`, under `mmu_lock` (read): none maps a freed page, and none
    /// is poison from a freed table page.
    pub fn check_sptes(&self, gfns: impl IntoIterator<Item = Gfn>) {
        let g = self.vm.invalidation().mmu_lock().read();
        for gfn in gfns {
            let Some(pfn) = ok(self.mmu.table().walk(&g, gfn)).and_then(Spte::pfn) else { continue };
            if pfn == POISON_PFN {
                violated(
                    Invariant::WalkerReadFreedTable,
                    format_args!("gfn {gfn}: table page freed while linked"),
                );
            }
            if self.host.pages.is_freed(pfn) {
                self.x.step(format_args!("check: SPTE gfn {gfn} -> pfn {pfn}, which is FREED"));
                violated(
                    Invariant::SpteMapsFreedPage,
                    format_args!("SPTE gfn {gfn} -> pfn {pfn}, which is freed"),
                );
            }
        }
    }

    /// I3.2 for a deleted or moved slot's old frames, under `mmu_lock` (read): none is mapped.
    pub fn check_unmapped(&self, old: GfnRange) {
        let g = self.vm.invalidation().mmu_lock().read();
        for gfn in old.iter() {
            if let Some(spte) = ok(self.mmu.table().walk(&g, gfn)) {
                self.x.step(format_args!("check: gfn {gfn} of a removed slot is still mapped ({spte:?})"));
                violated(
                    Invariant::SpteMapsDeletedSlot,
                    format_args!("SPTE gfn {gfn} -> {:?} after its memslot was deleted or moved", spte.pfn()),
                );
            }
        }
    }

    /// One MMU-notifier invalidation of host pages `pages`: start, the primary MMU remaps and
    /// frees them, I2.1 for `gfns` (the frames that may map them), end.
    pub fn invalidate(&self, pages: core::ops::Range<u64>, gfns: impl IntoIterator<Item = Gfn>) {
        let range = hvas(pages.start, pages.end - pages.start);
        self.x.step(format_args!("invalidate_range_start(host pages {pages:?})"));
        ok(self.vm.start(self.mmu, range));
        self.host.remap_and_free(self.x, pages);
        self.check_sptes(gfns);
        end_invalidation(self.x, self.vm, range);
    }
}

/// I1.3 at the end: `in_progress` and the active count are back to zero.
pub fn check_balanced<const N: usize>(vm: &Vm<ShuttleHal, N>) {
    let active = vm.active_invalidations().count_unlocked();
    let g = vm.invalidation().mmu_lock().read();
    let n = ok(vm.invalidation().in_progress(&g));
    if n != 0 || active != 0 {
        violated(
            Invariant::InProgressUnbalanced,
            format_args!(
                "in_progress = {n}, active invalidations = {active} after every start/end pair ended"
            ),
        );
    }
}

/// `invalidate_range_end` that reports an unbalanced end as the invariant violation it is.
pub fn end_invalidation<const N: usize>(x: &ShuttleExec, vm: &Vm<ShuttleHal, N>, range: HvaRange) {
    match vm.end(range) {
        Ok(()) => x.step(format_args!("invalidate_range_end({:#x}..{:#x})", range.start(), range.end())),
        Err(Error::Unbalanced) => violated(
            Invariant::InProgressUnbalanced,
            format_args!(
                "invalidate_range_end({:#x}..{:#x}) found a memslot its start did not, with in_progress at 0",
                range.start(),
                range.end()
            ),
        ),
        Err(e) => panic!("invalidate_range_end: {e}"),
    }
}
