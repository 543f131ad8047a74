//! The reference page table ([`mmusync::mmu`]) against a `BTreeMap` model: fuzz target 3's
//! oracle.
//!
//! The table under test has [`LEVELS`] levels of [`FANOUT`] entries (gfns `0..64`), small enough
//! that the generated operands cover it and its edge. A run picks the MMU's reclamation scheme
//! ([`Scheme`]: `IpiReclamation` or `EpochReclamation`, a type parameter of `ReferenceMmu`),
//! then operations map leaves, zap ranges (with the scheme's zap, and through `PageTable::zap`
//! with the unlinked pages freed by the harness), walk with each kind of proof, take the fast
//! path, run the full fault path over a memslot, invalidate and age through the MMU notifier
//! (the epoch-way MMU's notifier zaps with `zap_epoch` and ages without `mmu_lock`), and age
//! with `ReferenceMmu::age_lockless`. An operation whose call the scheme's type does not have
//! (`zap_ipi` on an epoch-way MMU, `zap_epoch` and `age_lockless` on an IPI-way one) is
//! skipped with [`PtOutcome::NotOffered`]; an epoch pin on an IPI-way MMU is refused. The model
//! is a map from gfn to leaf bits plus the set of table pages that exist; a counting allocator
//! checks that every table page is freed exactly once, and none is leaked.

use crate::driver::{gfn_range, hva_range, my_cpu};
use crate::model::{gfn_span, hva_span, GfnSpan, HvaSpan};
use crate::op::Val;
use arbitrary::Arbitrary;
use mmusync::epoch::{EpochReclaimer, ReclaimHandle};
use mmusync::hal::std::StdHal;
use mmusync::hal::PageAlloc;
use mmusync::lock::MmuWriteGuard;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange, PAGE_SIZE};
use mmusync::mmu::{Access, BoxAlloc, FastFault, FaultOutcome, PageTracker, ReferenceMmu, Spte, Table};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::reclamation::{EpochReclamation, IpiReclamation, Reclamation};
use mmusync::vcpu::{Request, Vcpu};
use mmusync::{Error, Gfn, GfnRange, Hva, HvaRange, Pfn};
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::sync::Arc;

/// Levels of the table under test.
pub const LEVELS: usize = 3;
/// Entries per table page.
pub const FANOUT: usize = 4;
/// The gfns it maps: `0..CAPACITY`.
pub const CAPACITY: u64 = (FANOUT as u64).pow(LEVELS as u32);
/// The memslot of the fault and notifier operations: gfns `SLOT_GFNS`, host pages from
/// `SLOT_HVA`.
pub const SLOT_GFNS: GfnSpan = (Gfn(8), Gfn(40));
/// The memslot's first host address.
pub const SLOT_HVA: Hva = Hva(0x10_0000);

/// The reclamation scheme of the MMU under test (its type parameter).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `ReferenceMmu<…, IpiReclamation>`: `zap_ipi`, no epoch domain.
    Ipi,
    /// `ReferenceMmu<…, EpochReclamation>`: `zap_epoch`, epoch pins, lockless aging.
    Epoch,
}

/// How a zap frees the table pages it unlinks.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZapHow {
    /// `ReferenceMmu::zap_ipi` (IPI-way MMU only): flush remote TLBs, then free at once.
    Ipi,
    /// `ReferenceMmu::zap_epoch` (epoch-way MMU only): defer the frees to the epoch collector.
    Epoch,
    /// `PageTable::zap`; the harness frees the unlinked pages itself afterwards.
    Retire,
}

/// Which aging notifier an [`PtOp::Age`] calls.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AgeHow {
    /// `Vm::clear_flush_young`.
    ClearFlush,
    /// `Vm::clear_young`.
    Clear,
    /// `Vm::test_young`.
    Test,
}

/// The proof a walk is made under.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proof {
    /// `mmu_lock` held for read.
    Read,
    /// `mmu_lock` held for write.
    Write,
    /// A lockless walk of a loaded vCPU.
    Lockless,
    /// A pin of the MMU's epoch domain (epoch-way MMU), or of another domain (an IPI-way MMU
    /// has none: refused).
    Epoch,
}

/// One page-table operation.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PtOp {
    /// `PageTable::map(gfn, Spte::leaf(pfn, writable, mmu_writable)?)`.
    Map {
        /// The gfn (any `u64`).
        gfn: Val,
        /// The pfn (any `u64`).
        pfn: Val,
        /// Writable now.
        writable: bool,
        /// The fast path may make it writable.
        mmu_writable: bool,
    },
    /// Zaps `GfnRange::new(start, end)?`.
    Zap {
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
        /// How the unlinked tables are freed.
        how: ZapHow,
    },
    /// `PageTable::walk(proof, gfn)`.
    Walk {
        /// The gfn (any `u64`).
        gfn: Val,
        /// The proof.
        proof: Proof,
    },
    /// `ReferenceMmu::fast_fault` inside a lockless walk, for a write or a read fault.
    FastFault {
        /// The gfn (any `u64`).
        gfn: Val,
        /// A write fault ([`Access::Write`]), else a read fault.
        write: bool,
    },
    /// `ReferenceMmu::fault(vm, gfn, writable, ..)` over the memslot [`SLOT_GFNS`].
    Fault {
        /// The gfn (any `u64`).
        gfn: Val,
        /// A write fault.
        writable: bool,
    },
    /// `Vm::invalidate_range_start` then drop, with the reference MMU as the secondary MMU.
    /// Also reports whether the vCPU was asked to flush.
    Invalidate {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `ReferenceMmu::map(gfn, Spte::leaf(pfn, writable, mmu_writable)?)`: also reports whether
    /// it flushed (the vCPU's `TLB_FLUSH` request).
    MmuMap {
        /// The gfn (any `u64`).
        gfn: Val,
        /// The pfn (any `u64`).
        pfn: Val,
        /// Writable now.
        writable: bool,
        /// The fast path may make it writable.
        mmu_writable: bool,
    },
    /// `ReferenceMmu::fault_around(vm, gfn, writable, GfnRange::new(start, end)?, ..)`: the
    /// fault path, then the prefetch of the range.
    FaultAround {
        /// The gfn (any `u64`).
        gfn: Val,
        /// A write fault.
        writable: bool,
        /// Raw start of the prefetch range.
        start: Val,
        /// Raw end of the prefetch range.
        end: Val,
    },
    /// `ReferenceMmu::prefault(vm, gfn, writable, ..)`.
    Prefault {
        /// The gfn (any `u64`).
        gfn: Val,
        /// A write fault.
        writable: bool,
    },
    /// The hardware uses the present leaf of `gfn` (if any): an atomic OR of the accessed bit,
    /// and of the dirty bit for a write.
    HwAccess {
        /// The gfn (any `u64`).
        gfn: Val,
        /// A write (sets the dirty bit too).
        write: bool,
    },
    /// An aging notifier over `HvaRange::new(start, end)?` with the reference MMU:
    /// `Vm::clear_flush_young`, `clear_young` or `test_young`.
    Age {
        /// Which notifier.
        how: AgeHow,
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `Vm::zap_gfn_range(mmu, GfnRange::new(start, end)?)` with the reference MMU.
    ZapGfnRange {
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// `ReferenceMmu::age_lockless(handle, GfnRange::new(start, end)?, clear)` (epoch-way MMU
    /// only): the aging walk without `mmu_lock`, pinned in the MMU's epoch domain. Also reports
    /// whether it flushed (it never does).
    AgeLockless {
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
        /// Clear the accessed bits (else only test them).
        clear: bool,
        /// With a handle of another reclaimer (refused with [`Error::Foreign`]).
        foreign: bool,
    },
}

/// What a page-table operation returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PtOutcome {
    /// The previous leaf's bits (map).
    Previous(Option<u64>),
    /// A zap: whether a flush is owed, and how many table pages were unlinked (`None` where
    /// the call does not say).
    Zapped {
        /// The flush flag (`zap_ipi`, `PageTable::zap`); `None` for `zap_epoch`.
        flush: Option<bool>,
        /// Tables unlinked (`zap_epoch`, `PageTable::zap`); `None` for `zap_ipi`.
        tables: Option<usize>,
    },
    /// A walk: the leaf's bits.
    Leaf(Option<u64>),
    /// The fast path.
    Fast(FastFault),
    /// The fault path.
    Fault(FaultOutcome),
    /// An invalidation ran: whether the vCPU was asked to flush its TLB.
    Invalidated {
        /// Whether remote TLBs were flushed.
        flushed: bool,
    },
    /// `ReferenceMmu::map`: the previous leaf's bits, and whether the call flushed.
    Mapped {
        /// The previous leaf.
        previous: Option<u64>,
        /// Whether remote TLBs were flushed before it returned.
        flushed: bool,
    },
    /// `Vm::zap_gfn_range`: whether it flushed the range (the MMU said a flush was owed; an
    /// epoch-way MMU's zap flushes itself and owes none).
    GfnZapped(bool),
    /// `ReferenceMmu::fault_around`: the fault's outcome and how many gfns were prefetched.
    FaultedAround(FaultOutcome, usize),
    /// `ReferenceMmu::prefault`: the pfn installed.
    Prefaulted(Pfn),
    /// The hardware's access (`ReferenceMmu::hw_access`): the leaf's bits before it.
    HwAccessed(Option<u64>),
    /// An aging notifier: whether the range was young, and whether the call flushed.
    Aged {
        /// The notifier's answer.
        young: bool,
        /// Whether remote TLBs were flushed.
        flushed: bool,
    },
    /// A typed error.
    Err(Error),
    /// The scheme's MMU type has no such call (it would not compile): the harness skips it.
    NotOffered,
}

const PRESENT: u64 = 1;
const WRITABLE: u64 = 2;
const MMU_WRITABLE: u64 = 4;

/// `Spte::leaf`, from its documentation: pfn from bit 12, present, writable bits.
fn leaf_bits(pfn: Pfn, writable: bool, mmu_writable: bool) -> Result<u64, Error> {
    if pfn.0 > u64::MAX >> 12 {
        return Err(Error::RangeOverflow);
    }
    let w = if writable { WRITABLE | MMU_WRITABLE } else { 0 };
    let mw = if mmu_writable { MMU_WRITABLE } else { 0 };
    Ok(pfn.0 << 12 | PRESENT | w | mw)
}

/// The gfns a table page at `level` (0 = the leaf tables) with index `prefix` covers.
fn covers(level: usize, prefix: u64) -> GfnSpan {
    let span = (FANOUT as u64).pow(level as u32 + 1);
    (Gfn(prefix * span), Gfn((prefix + 1) * span))
}

/// The harness's host: gfn `g` of the memslot resolves to pfn `(SLOT_HVA >> 12) + g - 8`;
/// `None` for a gfn the memslot does not map.
fn host_pfn(gfn: Gfn) -> Option<Pfn> {
    let (start, end) = SLOT_GFNS;
    (start <= gfn && gfn < end).then(|| Pfn(SLOT_HVA.0 / PAGE_SIZE + (gfn.0 - start.0)))
}

/// The memslot's gfns whose pages overlap `hvas` (`Memslot::gfns_of`).
fn slot_gfns_of((s, e): HvaSpan) -> Option<GfnSpan> {
    let (start, end) = SLOT_GFNS;
    let slot_end = Hva(SLOT_HVA.0 + (end.0 - start.0) * PAGE_SIZE);
    let (cs, ce) = (s.max(SLOT_HVA), e.min(slot_end));
    if cs >= ce {
        return None;
    }
    let first = start.0 + (cs.0 - SLOT_HVA.0) / PAGE_SIZE;
    let last = start.0 + (ce.0 - SLOT_HVA.0).div_ceil(PAGE_SIZE);
    Some((Gfn(first), Gfn(last)))
}

/// The host of the real side's faults: the pfn of a host address is its page number, as
/// [`host_pfn`] has it.
fn host(hva: Hva) -> Result<Pfn, Error> {
    Ok(Pfn(hva.0 / PAGE_SIZE))
}

/// The model: leaves, and the table pages below the root as `(level, prefix)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PtModel {
    /// The MMU's reclamation scheme.
    scheme: Scheme,
    leaves: BTreeMap<Gfn, u64>,
    tables: BTreeSet<(usize, u64)>,
    /// Whether an epoch zap deferred frees (then the live count is only a lower bound).
    deferred: bool,
    /// The pfns the MMU reported accessed and dirty to its page tracker (D3), in order.
    reported: Reported,
}

/// What a [`PageTracker`] was told: `(pfn, dirty)` per report, in order (accessed reports
/// have `dirty == false`).
pub type Reported = Vec<(Pfn, bool)>;

const ACCESSED: u64 = 1 << 4;
const DIRTY: u64 = 1 << 5;

impl PtModel {
    /// An empty table of an MMU of `scheme`.
    pub fn new(scheme: Scheme) -> Self {
        PtModel {
            scheme,
            leaves: BTreeMap::new(),
            tables: BTreeSet::new(),
            deferred: false,
            reported: Vec::new(),
        }
    }

    /// The MMU's own zap, as its notifier runs it: reports the cleared leaves, and the
    /// epoch-way MMU defers the frees. Returns whether a leaf or a link was cleared.
    fn notifier_zap(&mut self, r: GfnSpan) -> bool {
        let (cleared, tables) = self.mmu_zap(r);
        self.deferred |= self.scheme == Scheme::Epoch && tables != 0;
        cleared || tables != 0
    }

    /// Table pages that must be live: the root and every linked table.
    pub fn live_tables(&self) -> usize {
        1 + self.tables.len()
    }

    /// D3: a replaced or zapped leaf's bits go to the tracker (accessed, then dirty).
    fn report(&mut self, old: u64) {
        let pfn = Pfn(old >> 12);
        if old & ACCESSED != 0 {
            self.reported.push((pfn, false));
        }
        if old & DIRTY != 0 {
            self.reported.push((pfn, true));
        }
    }

    /// `ReferenceMmu::map` (reports the old leaf's bits).
    fn mmu_map(&mut self, gfn: Gfn, bits: u64) -> Option<u64> {
        let old = self.map(gfn, bits);
        if let Some(o) = old {
            self.report(o);
        }
        old
    }

    /// The reference MMU's zap (reports every cleared leaf's bits, in gfn order).
    fn mmu_zap(&mut self, r: GfnSpan) -> (bool, usize) {
        let cleared: Vec<u64> = self.leaves.range(r.0..r.1).map(|(_, &b)| b).collect();
        for b in cleared {
            self.report(b);
        }
        self.zap(r)
    }

    fn map(&mut self, gfn: Gfn, bits: u64) -> Option<u64> {
        for level in 0..LEVELS - 1 {
            self.tables.insert((level, gfn.0 / (FANOUT as u64).pow(level as u32 + 1)));
        }
        self.leaves.insert(gfn, bits)
    }

    /// Clears the leaves in `r`, unlinks every table page wholly inside it. Returns whether a
    /// leaf was cleared and how many tables were unlinked.
    fn zap(&mut self, r: GfnSpan) -> (bool, usize) {
        let cleared: Vec<Gfn> = self.leaves.range(r.0..r.1).map(|(&g, _)| g).collect();
        for g in &cleared {
            self.leaves.remove(g);
        }
        let gone: Vec<_> = self
            .tables
            .iter()
            .copied()
            .filter(|&(l, p)| {
                let (s, e) = covers(l, p);
                r.0 <= s && e <= r.1
            })
            .collect();
        for t in &gone {
            self.tables.remove(t);
        }
        (!cleared.is_empty(), gone.len())
    }

    /// The fault path on `gfn` (no invalidation is ever open between operations): installs.
    fn fault(&mut self, gfn: Gfn, writable: bool) -> Result<Pfn, Error> {
        let pfn = host_pfn(gfn).ok_or(Error::NoMapping { gfn })?;
        self.mmu_map(gfn, leaf_bits(pfn, writable, writable)?);
        Ok(pfn)
    }

    fn gfn(&self, gfn: Val) -> Result<Gfn, Error> {
        if gfn.0 < CAPACITY {
            Ok(Gfn(gfn.0))
        } else {
            Err(Error::RangeOverflow)
        }
    }

    /// Applies `op`; returns what the real call must return.
    pub fn step(&mut self, op: &PtOp) -> PtOutcome {
        match self.apply(op) {
            Ok(o) => o,
            Err(e) => PtOutcome::Err(e),
        }
    }

    fn apply(&mut self, op: &PtOp) -> Result<PtOutcome, Error> {
        Ok(match *op {
            PtOp::Map { gfn, pfn, writable, mmu_writable } => {
                let bits = leaf_bits(Pfn(pfn.0), writable, mmu_writable)?;
                let gfn = self.gfn(gfn)?;
                PtOutcome::Previous(self.map(gfn, bits))
            }
            // The proof is checked before the gfn.
            PtOp::Walk { proof: Proof::Epoch, .. } if self.scheme != Scheme::Epoch => {
                return Err(Error::Foreign)
            }
            PtOp::Zap { start, end, how } => {
                let r = gfn_span(start, end)?;
                let offered = match how {
                    ZapHow::Ipi => self.scheme == Scheme::Ipi,
                    ZapHow::Epoch => self.scheme == Scheme::Epoch,
                    ZapHow::Retire => true,
                };
                if !offered {
                    return Ok(PtOutcome::NotOffered);
                }
                let (cleared, tables) = if how == ZapHow::Retire { self.zap(r) } else { self.mmu_zap(r) };
                self.deferred |= how == ZapHow::Epoch && tables != 0;
                let flush = cleared || tables != 0;
                match how {
                    ZapHow::Ipi => PtOutcome::Zapped { flush: Some(flush), tables: None },
                    ZapHow::Epoch => PtOutcome::Zapped { flush: None, tables: Some(tables) },
                    ZapHow::Retire => PtOutcome::Zapped { flush: Some(flush), tables: Some(tables) },
                }
            }
            PtOp::Walk { gfn, .. } => PtOutcome::Leaf(self.leaves.get(&self.gfn(gfn)?).copied()),
            PtOp::FastFault { gfn, write } => {
                let gfn = self.gfn(gfn)?;
                PtOutcome::Fast(match self.leaves.get_mut(&gfn) {
                    None => FastFault::Slow,
                    Some(_) if !write => FastFault::Spurious,
                    Some(b) if *b & WRITABLE != 0 => FastFault::Spurious,
                    Some(b) if *b & MMU_WRITABLE == 0 => FastFault::Slow,
                    Some(b) => {
                        *b |= WRITABLE;
                        FastFault::Fixed
                    }
                })
            }
            PtOp::Fault { gfn, writable } => {
                PtOutcome::Fault(FaultOutcome::Installed(self.fault(Gfn(gfn.0), writable)?))
            }
            PtOp::MmuMap { gfn, pfn, writable, mmu_writable } => {
                let bits = leaf_bits(Pfn(pfn.0), writable, mmu_writable)?;
                let gfn = self.gfn(gfn)?;
                let previous = self.mmu_map(gfn, bits);
                // M2: an MMU-writable leaf that is not writable any more, or another pfn.
                let flushed = previous.is_some_and(|old| {
                    (old & MMU_WRITABLE != 0 && bits & WRITABLE == 0) || old >> 12 != bits >> 12
                });
                PtOutcome::Mapped { previous, flushed }
            }
            PtOp::FaultAround { gfn, writable, start, end } => {
                let (s, e) = gfn_span(start, end)?;
                let gfn = Gfn(gfn.0);
                let pfn = self.fault(gfn, writable)?;
                let mut n = 0;
                for g in (s.0..e.0.min(CAPACITY)).map(Gfn) {
                    let Some(prefetched) = host_pfn(g) else { continue };
                    if g == gfn || self.leaves.contains_key(&g) {
                        continue;
                    }
                    let bits = leaf_bits(prefetched, false, writable)?;
                    self.map(g, bits);
                    n += 1;
                }
                PtOutcome::FaultedAround(FaultOutcome::Installed(pfn), n)
            }
            PtOp::Prefault { gfn, writable } => PtOutcome::Prefaulted(self.fault(Gfn(gfn.0), writable)?),
            PtOp::ZapGfnRange { start, end } => {
                let (s, e) = gfn_span(start, end)?;
                let (cs, ce) = (s.max(SLOT_GFNS.0), e.min(SLOT_GFNS.1));
                let zapped = cs < ce && self.notifier_zap((cs, ce));
                PtOutcome::GfnZapped(zapped && self.scheme == Scheme::Ipi)
            }
            PtOp::Invalidate { start, end } => {
                let flushed = match slot_gfns_of(hva_span(start, end)?) {
                    // The IPI way flushes if the zap cleared something; `zap_epoch` always flushes.
                    Some(gfns) => self.notifier_zap(gfns) || self.scheme == Scheme::Epoch,
                    None => false,
                };
                PtOutcome::Invalidated { flushed }
            }
            PtOp::HwAccess { gfn, write } => {
                let gfn = self.gfn(gfn)?;
                PtOutcome::HwAccessed(self.leaves.get_mut(&gfn).map(|b| {
                    let old = *b;
                    if !write {
                        *b |= ACCESSED;
                    } else if old & WRITABLE != 0 {
                        *b |= ACCESSED | DIRTY;
                    }
                    old
                }))
            }
            PtOp::Age { how, start, end } => {
                let young = match slot_gfns_of(hva_span(start, end)?) {
                    Some(gfns) => self.age(gfns, how != AgeHow::Test),
                    None => false,
                };
                PtOutcome::Aged { young, flushed: young && how == AgeHow::ClearFlush }
            }
            PtOp::AgeLockless { start, end, clear, foreign } => {
                let gfns = gfn_span(start, end)?;
                if self.scheme != Scheme::Epoch {
                    return Ok(PtOutcome::NotOffered);
                }
                if foreign {
                    return Err(Error::Foreign);
                }
                PtOutcome::Aged { young: self.age(gfns, clear), flushed: false }
            }
        })
    }

    /// A2: whether a leaf in `gfns` has its accessed bit set; `clear`: clears them.
    fn age(&mut self, (first, last): GfnSpan, clear: bool) -> bool {
        let mut young = false;
        for (_, b) in self.leaves.range_mut(first..last) {
            young |= *b & ACCESSED != 0;
            if clear {
                *b &= !ACCESSED;
            }
        }
        young
    }
}

/// `BoxAlloc` with a count of live pages, shared by its clones.
#[derive(Clone, Debug, Default)]
pub struct CountingAlloc {
    live: Arc<AtomicIsize>,
}

impl CountingAlloc {
    /// Pages allocated and not yet freed.
    pub fn live(&self) -> isize {
        self.live.load(Relaxed)
    }
}

// SAFETY: every call is passed to `BoxAlloc`, which keeps the contract; the counter changes
// nothing about the pages.
unsafe impl<P> PageAlloc<P> for CountingAlloc {
    fn alloc(&self, init: P) -> Result<NonNull<P>, P> {
        let page = BoxAlloc.alloc(init)?;
        self.live.fetch_add(1, Relaxed);
        Ok(page)
    }

    unsafe fn free(&self, page: NonNull<P>) {
        let before = self.live.fetch_sub(1, Relaxed);
        assert!(before > 0, "a table page was freed twice, or one that was never allocated");
        // SAFETY: our caller's contract is `BoxAlloc::free`'s.
        unsafe { BoxAlloc.free(page) }
    }
}

type Mmu<'v, R> = ReferenceMmu<'v, StdHal, CountingAlloc, LEVELS, FANOUT, R>;

/// The half of the MMU's API that depends on its reclamation scheme: `None` where the scheme's
/// type has no such call.
trait SchemeCalls {
    /// `ReferenceMmu::reclaimer`.
    fn reclaimer(&self) -> Option<&EpochReclaimer>;
    /// `ReferenceMmu::zap_ipi`.
    fn zap_ipi(&self, g: &MmuWriteGuard<'_, StdHal>, r: GfnRange) -> Option<Result<bool, Error>>;
    /// `ReferenceMmu::zap_epoch`.
    fn zap_epoch(
        &self,
        g: &MmuWriteGuard<'_, StdHal>,
        r: GfnRange,
        h: &ReclaimHandle,
    ) -> Option<Result<usize, Error>>;
    /// `ReferenceMmu::age_lockless`.
    fn age_lockless(&self, h: &ReclaimHandle, r: GfnRange, clear: bool) -> Option<Result<bool, Error>>;
}

impl SchemeCalls for Mmu<'_, IpiReclamation> {
    fn reclaimer(&self) -> Option<&EpochReclaimer> {
        None
    }

    fn zap_ipi(&self, g: &MmuWriteGuard<'_, StdHal>, r: GfnRange) -> Option<Result<bool, Error>> {
        Some(ReferenceMmu::zap_ipi(self, g, r))
    }

    fn zap_epoch(
        &self,
        _: &MmuWriteGuard<'_, StdHal>,
        _: GfnRange,
        _: &ReclaimHandle,
    ) -> Option<Result<usize, Error>> {
        None
    }

    fn age_lockless(&self, _: &ReclaimHandle, _: GfnRange, _: bool) -> Option<Result<bool, Error>> {
        None
    }
}

impl SchemeCalls for Mmu<'_, EpochReclamation> {
    fn reclaimer(&self) -> Option<&EpochReclaimer> {
        Some(ReferenceMmu::reclaimer(self))
    }

    fn zap_ipi(&self, _: &MmuWriteGuard<'_, StdHal>, _: GfnRange) -> Option<Result<bool, Error>> {
        None
    }

    fn zap_epoch(
        &self,
        g: &MmuWriteGuard<'_, StdHal>,
        r: GfnRange,
        h: &ReclaimHandle,
    ) -> Option<Result<usize, Error>> {
        Some(ReferenceMmu::zap_epoch(self, g, r, h))
    }

    fn age_lockless(&self, h: &ReclaimHandle, r: GfnRange, clear: bool) -> Option<Result<bool, Error>> {
        Some(ReferenceMmu::age_lockless(self, h, r, clear))
    }
}

/// The harness's primary MMU: records what the MMU hands over, as the model does.
#[derive(Default)]
struct Tracker(std::sync::Mutex<Reported>);

impl PageTracker for Tracker {
    fn mark_accessed(&self, pfn: Pfn) {
        self.0.lock().expect("not poisoned").push((pfn, false));
    }

    fn mark_dirty(&self, pfn: Pfn) {
        self.0.lock().expect("not poisoned").push((pfn, true));
    }
}

/// Runs page-table operations on an MMU of `scheme` against the model, checking every result,
/// every leaf after every step, and the live table pages (exactly, until an epoch zap defers
/// frees; then as a lower bound); at the end, that dropping everything frees every page.
pub fn run_page_table(scheme: Scheme, ops: &[PtOp]) {
    match scheme {
        Scheme::Ipi => run_scheme::<IpiReclamation>(scheme, ops),
        Scheme::Epoch => run_scheme::<EpochReclamation>(scheme, ops),
    }
}

fn run_scheme<R: Reclamation>(scheme: Scheme, ops: &[PtOp])
where
    for<'v> Mmu<'v, R>: SchemeCalls + SecondaryMmu<StdHal>,
{
    my_cpu();
    let alloc = CountingAlloc::default();
    let vcpus = [Vcpu::new(StdHal)];
    vcpus[0].load(my_cpu()).expect("fresh vCPU");
    let tracker = Tracker::default();
    let stranger = EpochReclaimer::new().register();
    {
        let mut mmu: Mmu<'_, R> = ReferenceMmu::new(StdHal, alloc.clone(), &vcpus).expect("root");
        mmu.set_page_tracker(&tracker);
        // An IPI-way MMU has no domain: its epoch walks pin a stranger's (and are refused).
        let handle = mmu.reclaimer().map(EpochReclaimer::register);
        let vm: Vm<StdHal, 1> = Vm::new(StdHal);
        let (base_gfn, end) = SLOT_GFNS;
        let slot = Memslot::new(MemslotConfig { id: 0, base_gfn, npages: end.0 - base_gfn.0, hva: SLOT_HVA })
            .expect("slot");
        vm.set_memslot(&mmu, SlotChange::Create(slot)).expect("create slot");
        let mut model = PtModel::new(scheme);
        for (i, op) in ops.iter().enumerate() {
            let want = model.step(op);
            let got = step(&mmu, &vm, &vcpus[0], [handle.as_ref().unwrap_or(&stranger), &stranger], op);
            check_pt(ops, i, "result", &want, &got);
            let g = vm.invalidation().mmu_lock().read();
            let leaves: BTreeMap<Gfn, u64> = (0..CAPACITY)
                .map(Gfn)
                .filter_map(|gfn| mmu.table().walk(&g, gfn).expect("in range").map(|s| (gfn, s.bits())))
                .collect();
            check_pt(ops, i, "leaves", &model.leaves, &leaves);
            check_pt(ops, i, "reported A/D bits", &model.reported, &tracker.0.lock().expect("not poisoned"));
            let live = usize::try_from(alloc.live()).expect("never negative");
            if model.deferred {
                assert!(live >= model.live_tables(), "step {i}: a linked table page was freed");
            } else {
                check_pt(ops, i, "live table pages", &model.live_tables(), &live);
            }
        }
    }
    assert_eq!(alloc.live(), 0, "table pages leaked after the page table and its reclaimer dropped");
}

fn check_pt<T: PartialEq + core::fmt::Debug>(ops: &[PtOp], at: usize, what: &str, want: &T, got: &T) {
    if want != got {
        let history: String =
            ops.iter().take(at + 1).enumerate().map(|(i, op)| format!("  {i:3}: {op:?}\n")).collect();
        panic!(
            "the page table disagrees with its model at step {at} ({what}):\n  model: {want:?}\n  table: \
             {got:?}\nhistory:\n{history}"
        );
    }
}

/// Runs `op`; `handle` is a handle of the MMU's epoch domain (of `stranger`'s for an IPI-way
/// MMU, which has none).
fn step<R: Reclamation>(
    mmu: &Mmu<'_, R>,
    vm: &Vm<StdHal, 1>,
    vcpu: &Vcpu<StdHal>,
    [handle, stranger]: [&ReclaimHandle; 2],
    op: &PtOp,
) -> PtOutcome
where
    for<'v> Mmu<'v, R>: SchemeCalls + SecondaryMmu<StdHal>,
{
    let lock = vm.invalidation().mmu_lock();
    let r: Result<PtOutcome, Error> = (|| {
        Ok(match *op {
            PtOp::Map { gfn, pfn, writable, mmu_writable } => {
                let spte = Spte::leaf(Pfn(pfn.0), writable, mmu_writable)?;
                let prev = mmu.table().map(&lock.write(), Gfn(gfn.0), spte)?;
                PtOutcome::Previous(prev.map(Spte::bits))
            }
            PtOp::Zap { start, end, how } => {
                let r = gfn_range(start, end)?;
                let g = lock.write();
                match how {
                    ZapHow::Ipi => match mmu.zap_ipi(&g, r) {
                        Some(flush) => PtOutcome::Zapped { flush: Some(flush?), tables: None },
                        None => PtOutcome::NotOffered,
                    },
                    ZapHow::Epoch => match mmu.zap_epoch(&g, r, handle) {
                        Some(n) => {
                            let n = n?;
                            handle.collect();
                            PtOutcome::Zapped { flush: None, tables: Some(n) }
                        }
                        None => PtOutcome::NotOffered,
                    },
                    ZapHow::Retire => {
                        let mut retired = Vec::new();
                        let flush = mmu
                            .table()
                            .zap(&g, r, &mut |page: NonNull<Table<StdHal, FANOUT>>| retired.push(page))?;
                        let n = retired.len();
                        for page in retired {
                            // SAFETY: `zap` unlinked the page under the write lock we still
                            // hold, hands each page over once, and it came from the table's
                            // allocator; this thread is the only one, and it holds no walk.
                            unsafe { mmu.table().allocator().free(page) };
                        }
                        PtOutcome::Zapped { flush: Some(flush), tables: Some(n) }
                    }
                }
            }
            PtOp::Walk { gfn, proof } => {
                let g = Gfn(gfn.0);
                let leaf = match proof {
                    Proof::Read => mmu.table().walk(&lock.read(), g)?,
                    Proof::Write => mmu.table().walk(&lock.write(), g)?,
                    Proof::Lockless => {
                        let walk = vcpu.walk_lockless_begin().expect("loaded, outside");
                        mmu.walk(&walk, g)?
                    }
                    Proof::Epoch => mmu.walk(&handle.walk_begin(), g)?,
                };
                PtOutcome::Leaf(leaf.map(Spte::bits))
            }
            PtOp::FastFault { gfn, write } => {
                let walk = vcpu.walk_lockless_begin().expect("loaded, outside");
                let access = if write { Access::Write } else { Access::Read };
                PtOutcome::Fast(mmu.fast_fault(&walk, Gfn(gfn.0), access)?)
            }
            PtOp::MmuMap { gfn, pfn, writable, mmu_writable } => {
                let spte = Spte::leaf(Pfn(pfn.0), writable, mmu_writable)?;
                // Requests left by earlier flushes (zaps, invalidations) are not this call's.
                vcpu.check_request(Request::TLB_FLUSH);
                let prev = mmu.map(&lock.write(), Gfn(gfn.0), spte)?;
                let flushed = vcpu.check_request(Request::TLB_FLUSH);
                PtOutcome::Mapped { previous: prev.map(Spte::bits), flushed }
            }
            PtOp::FaultAround { gfn, writable, start, end } => {
                let around = gfn_range(start, end)?;
                let (out, n) = mmu.fault_around(vm, Gfn(gfn.0), writable, around, host)?;
                PtOutcome::FaultedAround(out, n)
            }
            PtOp::Prefault { gfn, writable } => {
                PtOutcome::Prefaulted(mmu.prefault(vm, Gfn(gfn.0), writable, host)?)
            }
            PtOp::HwAccess { gfn, write } => {
                let access = if write { Access::Write } else { Access::Read };
                let old = mmu.hw_access(&lock.read(), Gfn(gfn.0), access)?;
                PtOutcome::HwAccessed(old.map(Spte::bits))
            }
            PtOp::Age { how, start, end } => {
                let h = hva_range(start, end)?;
                vcpu.check_request(Request::TLB_FLUSH);
                let young = age(vm, mmu, how, h);
                PtOutcome::Aged { young, flushed: vcpu.check_request(Request::TLB_FLUSH) }
            }
            PtOp::AgeLockless { start, end, clear, foreign } => {
                let r = gfn_range(start, end)?;
                vcpu.check_request(Request::TLB_FLUSH);
                match mmu.age_lockless(if foreign { stranger } else { handle }, r, clear) {
                    Some(young) => {
                        PtOutcome::Aged { young: young?, flushed: vcpu.check_request(Request::TLB_FLUSH) }
                    }
                    None => PtOutcome::NotOffered,
                }
            }
            PtOp::ZapGfnRange { start, end } => {
                let r = gfn_range(start, end)?;
                let zapped = vm.zap_gfn_range(mmu, r)?;
                vcpu.check_request(Request::TLB_FLUSH);
                PtOutcome::GfnZapped(zapped)
            }
            PtOp::Fault { gfn, writable } => PtOutcome::Fault(mmu.fault(vm, Gfn(gfn.0), writable, host)?),
            PtOp::Invalidate { start, end } => {
                let h = hva_range(start, end)?;
                vcpu.check_request(Request::TLB_FLUSH);
                drop(vm.invalidate_range_start(mmu, h)?);
                PtOutcome::Invalidated { flushed: vcpu.check_request(Request::TLB_FLUSH) }
            }
        })
    })();
    r.unwrap_or_else(PtOutcome::Err)
}

/// The aging notifier `how` over `hvas` with `mmu` as the secondary MMU.
fn age<M: SecondaryMmu<StdHal>>(vm: &Vm<StdHal, 1>, mmu: &M, how: AgeHow, hvas: HvaRange) -> bool {
    match how {
        AgeHow::ClearFlush => vm.clear_flush_young(mmu, hvas),
        AgeHow::Clear => vm.clear_young(mmu, hvas),
        AgeHow::Test => vm.test_young(mmu, hvas),
    }
}

/// Decodes `data` into a scheme and at most [`crate::MAX_OPS`] page-table operations.
pub fn decode_page_table(data: &[u8]) -> (Scheme, Vec<PtOp>) {
    let mut u = arbitrary::Unstructured::new(data);
    // Out of bytes already: the first variant.
    let scheme = u.arbitrary::<Scheme>().unwrap_or(Scheme::Ipi);
    let mut ops = Vec::new();
    while ops.len() < crate::MAX_OPS && !u.is_empty() {
        match u.arbitrary::<PtOp>() {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (scheme, ops)
}

/// Fuzz target 3's entry point: [`decode_page_table`] then [`run_page_table`].
pub fn run_page_table_bytes(data: &[u8]) {
    let (scheme, ops) = decode_page_table(data);
    run_page_table(scheme, &ops);
}
