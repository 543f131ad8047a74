//! The sequential reference model: what each [`Op`] must return and how it changes the state,
//! written from core/docs/protocols.md without the crate's data structures, locks or atomics.

use crate::op::{CacheKey, Counters, Lock, Op, Owner, Race, Val, Whose};
use mmusync::{Error, Gfn, Hva, MemslotConfig, Pfn, SlotId, VcpuMode, MAX_GFN, MAX_HVA, PAGE_SIZE};

/// How many memslots the VM under test has room for.
pub const SLOTS: usize = 4;
/// How many fault snapshots are kept; taking one more forgets the oldest.
pub const MAX_SNAPSHOTS: usize = 8;
/// How many vCPUs the harness has.
pub const VCPUS: usize = 2;
/// How many translation caches the VM under test owns (`Vm<_, SLOTS, VM_CACHES>`).
pub const VM_CACHES: usize = 2;

/// A half-open range of guest frames `(start, end)`: what a [`GfnRange`](mmusync::GfnRange)
/// holds, as plain values.
pub type GfnSpan = (Gfn, Gfn);
/// A half-open range of host addresses `(start, end)`: what an
/// [`HvaRange`](mmusync::HvaRange) holds, as plain values.
pub type HvaSpan = (Hva, Hva);

/// A memslot as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SlotView {
    /// The id.
    pub id: SlotId,
    /// Guest frames.
    pub gfns: GfnSpan,
    /// Host addresses.
    pub hvas: HvaSpan,
    /// `KVM_MEMSLOT_INVALID`.
    pub invalid: bool,
}

/// What a call did to the secondary MMU, as recorded by the harness's [`SecondaryMmu`].
///
/// [`SecondaryMmu`]: mmusync::notifier::SecondaryMmu
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Effects {
    /// `unmap_gfn_range` calls as `(slot id, gfns)`, sorted.
    pub zaps: Vec<(SlotId, GfnSpan)>,
    /// `flush_remote_tlbs` calls.
    pub flushes: u32,
    /// `invalidate_caches` calls: the host range, and whether the translation cache was
    /// invalidated by it.
    pub caches: Vec<(HvaSpan, bool)>,
}

/// The harness's primary MMU: host page `p` maps to pfn `p + (n << 40)`, where `n` counts the
/// notifier invalidations (S2) whose range covered the page so far, so every invalidation
/// changes the pfns it covers and a stale translation is visible.
pub fn primary_pfn(invalidated: &[HvaSpan], hva: Hva) -> Pfn {
    let n = invalidated.iter().filter(|&&(s, e)| s <= hva && hva < e).count() as u64;
    Pfn(hva.0 / PAGE_SIZE + (n << 40))
}

/// A vCPU as seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuView {
    /// Where it is loaded.
    pub cpu: Option<Whose>,
    /// `vcpu->mode`.
    pub mode: VcpuMode,
    /// Whether any request is pending.
    pub requests_pending: bool,
}

/// [`VcpuError`](mmusync::vcpu::VcpuError) with CPU ids made relative to the harness's thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VcpuFault {
    /// `RequestOutOfRange`.
    RequestOutOfRange,
    /// `NotLoaded`.
    NotLoaded,
    /// `WrongCpu`.
    WrongCpu,
    /// `AlreadyLoaded(cpu)`.
    AlreadyLoaded(Whose),
    /// `NotOutside(mode)`.
    NotOutside(VcpuMode),
    /// `RequestsPending`.
    RequestsPending,
    /// `InterruptsDisabled`: a walk or guest entry nested inside another on the same CPU.
    InterruptsDisabled,
}

/// The value a successful call returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value {
    /// `()`.
    Unit,
    /// A boolean answer (a retry check; `ActiveInvalidations::end`'s "reached zero").
    Flag(bool),
    /// `in_progress`, `seq` and `range` read under one guard.
    State {
        /// `in_progress`.
        in_progress: u64,
        /// `seq`.
        seq: u64,
        /// `range` (`None` when no invalidation is open).
        range: Option<GfnSpan>,
    },
    /// A fault snapshot's sequence number.
    Snapshot(u64),
    /// The memslot found for a gfn.
    Slot(Option<SlotView>),
    /// A call that reached the secondary MMU.
    Mmu(Effects),
    /// A translation-cache check: the pfn if the cache hit.
    Pfn(Option<Pfn>),
    /// A translation-cache refresh: the pfn (`None`: every attempt raced), and what the
    /// racing invalidation did to the secondary MMU.
    Refresh {
        /// The pfn.
        pfn: Option<Pfn>,
        /// The racing invalidation's effects.
        race: Effects,
    },
    /// The mode a kick found.
    Mode(VcpuMode),
    /// The CPUs a remote flush interrupted.
    Cpus(Vec<Whose>),
    /// A memslot lookup's host address (`None`: no memslot maps the gfn).
    Hva(Option<Hva>),
    /// A generation-cache probe: `None` on a miss, else the cached answer.
    Cached(Option<Option<Hva>>),
}

/// Why an operation was not applied. Both sides must agree on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Skip {
    /// The operation names a snapshot, guard or read section, and none is kept.
    NothingKept,
    /// A memslot update that would wait forever on this one thread: an invalidation is active
    /// or an SRCU read section is open, and only this thread could end it.
    WouldBlock,
    /// Dropping this guard would run an `end` that cannot succeed, because calls outside
    /// the guard (an unguarded `end`) already closed what it opened. The guards' `Drop` then
    /// trips a `debug_assert` (finding F1 of the report that added this crate); the harness
    /// forgets such a guard instead.
    GuardEndUnbalanced,
}

/// What one operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded with this value.
    Ok(Value),
    /// The call failed with this typed error.
    Err(Error),
    /// A vCPU call failed with this typed error.
    Vcpu(VcpuFault),
    /// The call was not made.
    Skipped(Skip),
}

impl<E: Into<Outcome>> From<Result<Value, E>> for Outcome {
    fn from(r: Result<Value, E>) -> Self {
        match r {
            Ok(v) => Outcome::Ok(v),
            Err(e) => e.into(),
        }
    }
}

impl From<Error> for Outcome {
    fn from(e: Error) -> Self {
        Outcome::Err(e)
    }
}

impl From<VcpuFault> for Outcome {
    fn from(e: VcpuFault) -> Self {
        Outcome::Vcpu(e)
    }
}

impl From<Skip> for Outcome {
    fn from(s: Skip) -> Self {
        Outcome::Skipped(s)
    }
}

/// Everything observable about the VM between operations; compared after every step.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Observed {
    /// `in_progress`.
    pub in_progress: u64,
    /// `seq`.
    pub seq: u64,
    /// `range` (`None` when no invalidation is open).
    pub range: Option<GfnSpan>,
    /// `mn_active_invalidate_count`.
    pub active: u64,
    /// SRCU readers of the memslots.
    pub srcu_readers: u64,
    /// The active memslot set, sorted by id.
    pub slots: Vec<SlotView>,
    /// The active set's generation.
    pub generation: u64,
    /// What `TranslationCache::check` returns for the cache's own hva.
    pub cache: Option<Pfn>,
    /// Whether that pfn differs from the primary MMU's (a stale valid cache).
    pub cache_stale: bool,
    /// What `check` returns for each of the VM's own caches, at the cache's own hva.
    pub vm_caches: [Option<Pfn>; VM_CACHES],
    /// Whether each of those pfns differs from the primary MMU's.
    pub vm_caches_stale: [bool; VM_CACHES],
    /// The vCPUs.
    pub vcpus: [VcpuView; VCPUS],
    /// Whether this thread's interrupts are enabled.
    pub irqs_on: bool,
}

/// A kept fault snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Snap {
    foreign: bool,
    seq: u64,
}

/// The model's range check (`GfnRange::new` / `HvaRange::new`): `start..end` below `max`.
fn checked_span<T: Ord>(start: T, end: T, max: T) -> Result<(T, T), Error> {
    if start > end {
        Err(Error::InvertedRange)
    } else if start == end {
        Err(Error::EmptyRange)
    } else if end > max {
        Err(Error::RangeOverflow)
    } else {
        Ok((start, end))
    }
}

/// The model's `GfnRange::new` on raw operands.
pub fn gfn_span(start: Val, end: Val) -> Result<GfnSpan, Error> {
    checked_span(Gfn(start.0), Gfn(end.0), MAX_GFN)
}

/// The model's `HvaRange::new` on raw operands.
pub fn hva_span(start: Val, end: Val) -> Result<HvaSpan, Error> {
    checked_span(Hva(start.0), Hva(end.0), MAX_HVA)
}

fn overlaps<T: Ord>(a: (T, T), b: (T, T)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The model's slot check (`Memslot::new`): aligned host address, non-empty, in range.
pub fn slot(config: MemslotConfig) -> Result<SlotView, Error> {
    let MemslotConfig { id, base_gfn, npages, hva } = config;
    if hva.0 % PAGE_SIZE != 0 {
        return Err(Error::Misaligned { hva });
    }
    let gfn_end = base_gfn.checked_add(npages).ok_or(Error::RangeOverflow)?;
    let gfns = checked_span(base_gfn, gfn_end, MAX_GFN)?;
    let bytes = npages.checked_mul(PAGE_SIZE).ok_or(Error::RangeOverflow)?;
    let hva_end = hva.checked_add(bytes).ok_or(Error::RangeOverflow)?;
    let hvas = checked_span(hva, hva_end, MAX_HVA)?;
    Ok(SlotView { id, gfns, hvas, invalid: false })
}

/// The gfns of `slot` whose pages overlap `hvas` (`hva_to_gfn_memslot`, clipped).
fn gfns_of(slot: &SlotView, hvas: HvaSpan) -> Option<GfnSpan> {
    let (s, e) = (slot.hvas.0.max(hvas.0), slot.hvas.1.min(hvas.1));
    if s >= e {
        return None;
    }
    let (base_gfn, base_hva) = (slot.gfns.0, slot.hvas.0);
    let first = (s.0 - base_hva.0) / PAGE_SIZE;
    let last = (e.0 - base_hva.0).div_ceil(PAGE_SIZE);
    Some((Gfn(base_gfn.0 + first), Gfn(base_gfn.0 + last)))
}

/// The translation cache's state (`gpc->active`, `valid`, `uhva`, `pfn`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cache {
    active: bool,
    valid: bool,
    hva: Hva,
    pfn: Pfn,
}

/// One of the VM's own caches: the cache, and whether it is on the VM's cache list
/// (`gpc_list`). K1 and K2 keep it listed whenever it is active; a direct `deactivate` leaves
/// it listed while inactive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct VmCache {
    cache: Cache,
    listed: bool,
}

/// Which translation cache a refresh works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    /// The standalone cache of the harness's secondary MMU.
    Mmu,
    /// The VM's own cache of this index.
    Vm(usize),
}

/// A vCPU's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct VcpuState {
    cpu: Option<Whose>,
    mode: VcpuMode,
    requests: u64,
}

impl Default for VcpuState {
    fn default() -> Self {
        VcpuState { cpu: None, mode: VcpuMode::Outside, requests: 0 }
    }
}

/// The sequential reference model of one VM (plus a foreign object for misuse).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    in_progress: u64,
    seq: u64,
    /// The merged range as last stored: stale (and unobservable) while `in_progress == 0`.
    range: Option<GfnSpan>,
    active: u64,
    slots: Vec<SlotView>,
    generation: u64,
    snapshots: Vec<Snap>,
    /// One entry per kept `OpenInvalidation`.
    open_guards: usize,
    /// The host range of each kept notifier guard.
    notifier_guards: Vec<HvaSpan>,
    srcu_sections: usize,
    cache: Cache,
    /// The VM's own caches.
    vm_caches: [VmCache; VM_CACHES],
    /// Host ranges invalidated so far (the primary MMU, see [`primary_pfn`]).
    invalidated: Vec<HvaSpan>,
    vcpus: [VcpuState; VCPUS],
    /// The vCPU of each kept walk or guest guard, innermost last.
    irq_guards: Vec<usize>,
    /// What the last operation returned.
    last: Option<Outcome>,
    /// The generation cache (`SlotCache`): generation, gfn, cached answer.
    slot_cache: Option<(u64, Gfn, Option<Hva>)>,
}

/// Picks `list[i % len]`, if the list is not empty.
pub fn pick(i: u8, len: usize) -> Option<usize> {
    (len != 0).then(|| usize::from(i) % len)
}

impl Model {
    /// The initial state: no invalidation, no slots, `seq == 0`.
    pub fn new() -> Self {
        Self::default()
    }

    /// What the last [`step`](Self::step) returned.
    pub fn last(&self) -> Option<&Outcome> {
        self.last.as_ref()
    }

    /// The observable state.
    pub fn observe(&self) -> Observed {
        let mut slots = self.slots.clone();
        slots.sort();
        Observed {
            in_progress: self.in_progress,
            seq: self.seq,
            range: self.range.filter(|_| self.in_progress != 0),
            active: self.active,
            srcu_readers: self.srcu_sections as u64,
            slots,
            generation: self.generation,
            cache: self.cache_check(self.cache.hva),
            cache_stale: self
                .cache_check(self.cache.hva)
                .is_some_and(|pfn| pfn != primary_pfn(&self.invalidated, self.cache.hva)),
            vm_caches: self.vm_caches.map(|c| Self::check(&c.cache, c.cache.hva)),
            vm_caches_stale: self.vm_caches.map(|c| {
                Self::check(&c.cache, c.cache.hva)
                    .is_some_and(|pfn| pfn != primary_pfn(&self.invalidated, c.cache.hva))
            }),
            vcpus: self.vcpus.map(|v| VcpuView {
                cpu: v.cpu,
                mode: v.mode,
                requests_pending: v.requests != 0,
            }),
            irqs_on: self.irq_guards.is_empty(),
        }
    }

    fn cache_check(&self, hva: Hva) -> Option<Pfn> {
        Self::check(&self.cache, hva)
    }

    /// `TranslationCache::check`: the pfn if the cache is active, valid and caches `hva`.
    fn check(c: &Cache, hva: Hva) -> Option<Pfn> {
        (c.active && c.valid && c.hva == hva).then_some(c.pfn)
    }

    fn cache_mut(&mut self, which: Which) -> &mut Cache {
        match which {
            Which::Mmu => &mut self.cache,
            Which::Vm(i) => &mut self.vm_caches[i].cache,
        }
    }

    /// `Vm::translation_cache(index)`: the index, or `NoSuchCache`.
    fn vm_cache(index: CacheKey) -> Result<usize, Error> {
        let index = usize::from(index.0);
        if index < VM_CACHES {
            Ok(index)
        } else {
            Err(Error::NoSuchCache { index })
        }
    }

    /// `mark_active`: active for `hva`; a new hva makes the cache invalid.
    fn mark_active(c: &mut Cache, hva: Hva) {
        c.active = true;
        if c.hva != hva {
            c.hva = hva;
            c.valid = false;
        }
    }

    /// Values on an edge of the current state, for generators that look at the state: the
    /// merged range's bounds, the memslots' gfn and host-address bounds and the pages of the
    /// active translation caches, each with its neighbours.
    pub fn interesting(&self) -> Vec<u64> {
        let mut edges = Vec::new();
        let mut add = |start: u64, end: u64| {
            for v in [start, end] {
                edges.extend([v.wrapping_sub(1), v, v.wrapping_add(1)]);
            }
        };
        if let Some((start, end)) = self.range {
            add(start.0, end.0);
        }
        for s in &self.slots {
            let ((gfn_start, gfn_end), (hva_start, hva_end)) = (s.gfns, s.hvas);
            add(gfn_start.0, gfn_end.0);
            add(hva_start.0, hva_end.0);
            add(hva_start.0.wrapping_add(PAGE_SIZE), hva_end.0.wrapping_sub(PAGE_SIZE));
        }
        // The pages of the active translation caches, so that invalidations hit them.
        let caches = core::iter::once(&self.cache).chain(self.vm_caches.iter().map(|c| &c.cache));
        for c in caches.filter(|c| c.active) {
            add(c.hva.0, c.hva.0.wrapping_add(PAGE_SIZE));
        }
        edges
    }

    /// How many kept snapshots, open guards, notifier guards, SRCU sections and walk or guest
    /// guards there are.
    pub fn kept(&self) -> (usize, usize, usize, usize, usize) {
        (
            self.snapshots.len(),
            self.open_guards,
            self.notifier_guards.len(),
            self.srcu_sections,
            self.irq_guards.len(),
        )
    }

    /// Applies `op` and returns what the real call must return.
    pub fn step(&mut self, op: &Op) -> Outcome {
        let out = self.apply(op);
        self.last = Some(out.clone());
        out
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match *op {
            Op::Begin { owner, start, end } => {
                let r = match gfn_span(start, end) {
                    Ok(r) => r,
                    Err(e) => return e.into(),
                };
                if owner == Owner::Foreign {
                    return Error::Foreign.into();
                }
                self.begin(r).map(|()| Value::Unit).into()
            }
            Op::AddRange { owner, start, end } => {
                let r = match gfn_span(start, end) {
                    Ok(r) => r,
                    Err(e) => return e.into(),
                };
                if owner == Owner::Foreign {
                    return Error::Foreign.into();
                }
                self.add_range(r).map(|()| Value::Unit).into()
            }
            Op::End { owner } => {
                if owner == Owner::Foreign {
                    return Error::Foreign.into();
                }
                self.end().map(|()| Value::Unit).into()
            }
            Op::Inspect { lock } => {
                if lock.is_foreign() {
                    return Error::Foreign.into();
                }
                Outcome::Ok(self.state())
            }
            Op::Open { start, end } => match gfn_span(start, end) {
                Err(e) => e.into(),
                Ok(r) => {
                    let began = self.begin(r);
                    if began.is_ok() {
                        self.open_guards += 1;
                    }
                    began.map(|()| Value::Unit).into()
                }
            },
            Op::OpenAddRange { guard, start, end } => {
                if pick(guard, self.open_guards).is_none() {
                    return Skip::NothingKept.into();
                }
                match gfn_span(start, end) {
                    Err(e) => e.into(),
                    Ok(r) => self.add_range(r).map(|()| Value::Unit).into(),
                }
            }
            Op::Close { guard } => {
                if pick(guard, self.open_guards).is_none() {
                    return Skip::NothingKept.into();
                }
                self.open_guards -= 1;
                match self.end() {
                    Ok(()) => Outcome::Ok(Value::Unit),
                    Err(_) => Skip::GuardEndUnbalanced.into(),
                }
            }
            Op::Snapshot { owner } => {
                let foreign = owner == Owner::Foreign;
                let seq = if foreign { 0 } else { self.seq };
                if self.snapshots.len() == MAX_SNAPSHOTS {
                    self.snapshots.remove(0);
                }
                self.snapshots.push(Snap { foreign, seq });
                Outcome::Ok(Value::Snapshot(seq))
            }
            Op::Retry { lock, snap } => self.retry(Some(lock), snap, None),
            Op::RetryGfn { lock, snap, gfn } => self.retry(Some(lock), snap, Some(Gfn(gfn.0))),
            Op::RetryGfnUnsafe { snap, gfn } => self.retry(None, snap, Some(Gfn(gfn.0))),
            Op::RetryLockless { snap } => self.retry(None, snap, None),
            Op::ActiveStart => match self.active.checked_add(1) {
                Some(n) => {
                    self.active = n;
                    Outcome::Ok(Value::Unit)
                }
                None => Error::CountOverflow.into(),
            },
            Op::ActiveEnd => self.active_end().map(Value::Flag).into(),
            Op::NotifierStart { start, end } => match hva_span(start, end) {
                Err(e) => e.into(),
                Ok(h) => self.notifier_start(h).map(Value::Mmu).into(),
            },
            Op::NotifierEnd { start, end } => match hva_span(start, end) {
                Err(e) => e.into(),
                Ok(h) => self.notifier_end(h).map(|()| Value::Unit).into(),
            },
            Op::NotifierOpen { start, end } => match hva_span(start, end) {
                Err(e) => e.into(),
                Ok(h) => {
                    let started = self.notifier_start(h);
                    if started.is_ok() {
                        self.notifier_guards.push(h);
                    }
                    started.map(Value::Mmu).into()
                }
            },
            Op::NotifierClose { guard } => {
                let Some(i) = pick(guard, self.notifier_guards.len()) else {
                    return Skip::NothingKept.into();
                };
                let h = self.notifier_guards.remove(i);
                if self.notifier_end_would_fail(h) {
                    return Skip::GuardEndUnbalanced.into();
                }
                self.notifier_end(h).map(|()| Value::Unit).into()
            }
            Op::CreateSlot { id, base_gfn, npages, hva } => {
                let config =
                    MemslotConfig { id: id.0, base_gfn: Gfn(base_gfn.0), npages: npages.0, hva: Hva(hva.0) };
                let new = match slot(config) {
                    Ok(s) => s,
                    Err(e) => return e.into(),
                };
                if let Some(existing) = self.first_slot(|s| s.id == new.id || overlaps(s.gfns, new.gfns)) {
                    return Error::SlotOverlap { slot: new.id, existing: existing.id }.into();
                }
                if self.slots.len() == SLOTS {
                    return Error::SlotsFull.into();
                }
                if self.update_would_block() {
                    return Skip::WouldBlock.into();
                }
                self.slots.push(new);
                self.generation += 1;
                Outcome::Ok(Value::Mmu(Effects::default()))
            }
            Op::DeleteSlot { id } => {
                let Some(i) = self.slots.iter().position(|s| s.id == id.0) else {
                    return Error::NoSuchSlot { slot: id.0 }.into();
                };
                if self.update_would_block() {
                    return Skip::WouldBlock.into();
                }
                let old = self.slots.remove(i);
                self.generation += 2;
                Outcome::Ok(Value::Mmu(Self::zap_slot(&old)))
            }
            Op::MoveSlot { id, base_gfn } => {
                let Some(i) = self.slots.iter().position(|s| s.id == id.0) else {
                    return Error::NoSuchSlot { slot: id.0 }.into();
                };
                let old = self.slots[i];
                let (start, end) = old.gfns;
                let config = MemslotConfig {
                    id: id.0,
                    base_gfn: Gfn(base_gfn.0),
                    npages: end.0 - start.0,
                    hva: old.hvas.0,
                };
                let moved = match slot(config) {
                    Ok(s) => s,
                    Err(e) => return e.into(),
                };
                if let Some(existing) = self.first_slot(|s| s.id != id.0 && overlaps(s.gfns, moved.gfns)) {
                    return Error::SlotOverlap { slot: id.0, existing: existing.id }.into();
                }
                if self.update_would_block() {
                    return Skip::WouldBlock.into();
                }
                self.slots[i] = moved;
                self.generation += 2;
                Outcome::Ok(Value::Mmu(Self::zap_slot(&old)))
            }
            Op::ZapGfnRange { start, end } => {
                let r = match gfn_span(start, end) {
                    Ok(r) => r,
                    Err(e) => return e.into(),
                };
                if let Err(e) = self.begin(r) {
                    return e.into();
                }
                let mut zaps: Vec<_> = self
                    .slots
                    .iter()
                    .filter(|s| overlaps(s.gfns, r))
                    .map(|s| (s.id, (s.gfns.0.max(r.0), s.gfns.1.min(r.1))))
                    .collect();
                zaps.sort();
                let flushes = u32::from(!zaps.is_empty());
                match self.end() {
                    Ok(()) => Outcome::Ok(Value::Mmu(Effects { zaps, flushes, caches: Vec::new() })),
                    Err(e) => e.into(),
                }
            }
            Op::SlotCacheLookup { gfn } => {
                let (generation, gfn) = (self.generation, Gfn(gfn.0));
                if let Some((g, f, hva)) = self.slot_cache {
                    if g == generation && f == gfn {
                        return Outcome::Ok(Value::Hva(hva));
                    }
                }
                let hva = self.slot_hva(gfn);
                self.slot_cache = Some((generation, gfn, hva));
                Outcome::Ok(Value::Hva(hva))
            }
            Op::SlotCacheFill { in_progress, gfn, hva } => {
                if in_progress {
                    self.slot_cache = None;
                    return Error::GenerationInProgress.into();
                }
                self.slot_cache = Some((self.generation, Gfn(gfn.0), hva.map(|h| Hva(h.0))));
                Outcome::Ok(Value::Unit)
            }
            Op::Age { start, end, .. } => match hva_span(start, end) {
                // The recording MMU has no accessed bits: nothing is young, nothing flushes, and
                // aging leaves in_progress, seq and the active count alone.
                Ok(_) => Outcome::Ok(Value::Flag(false)),
                Err(e) => e.into(),
            },
            Op::SlotCacheGet { gfn } => Outcome::Ok(Value::Cached(match self.slot_cache {
                Some((g, f, hva)) if g == self.generation && f == Gfn(gfn.0) => Some(hva),
                _ => None,
            })),
            Op::FindSlot { gfn } => {
                let gfn = Gfn(gfn.0);
                let found = self.slots.iter().find(|s| s.gfns.0 <= gfn && gfn < s.gfns.1);
                Outcome::Ok(Value::Slot(found.copied()))
            }
            Op::SrcuLock => {
                self.srcu_sections += 1;
                Outcome::Ok(Value::Unit)
            }
            Op::SrcuUnlock { section } => {
                if pick(section, self.srcu_sections).is_none() {
                    return Skip::NothingKept.into();
                }
                self.srcu_sections -= 1;
                Outcome::Ok(Value::Unit)
            }
            Op::CacheActivate { hva } => {
                let hva = Hva(hva.0);
                if hva >= MAX_HVA {
                    return Error::RangeOverflow.into();
                }
                Self::mark_active(&mut self.cache, hva);
                Outcome::Ok(Value::Unit)
            }
            Op::CacheDeactivate => {
                self.cache.active = false;
                self.cache.valid = false;
                Outcome::Ok(Value::Unit)
            }
            Op::CacheCheck { hva } => Outcome::Ok(Value::Pfn(self.cache_check(Hva(hva.0)))),
            Op::CacheRefresh { hva, attempts, fail, race } => {
                self.refresh(Which::Mmu, hva, attempts, fail, race)
            }
            Op::VcpuLoad { vcpu, cpu } => {
                let v = &mut self.vcpus[usize::from(vcpu.0)];
                match v.cpu {
                    Some(on) => VcpuFault::AlreadyLoaded(on).into(),
                    None => {
                        v.cpu = Some(cpu);
                        Outcome::Ok(Value::Unit)
                    }
                }
            }
            Op::VcpuPut { vcpu } => {
                let v = &mut self.vcpus[usize::from(vcpu.0)];
                if let Err(e) = Self::owner_outside(v) {
                    return e.into();
                }
                v.cpu = None;
                Outcome::Ok(Value::Unit)
            }
            Op::WalkBegin { vcpu } => {
                let nested = !self.irq_guards.is_empty();
                let v = &mut self.vcpus[usize::from(vcpu.0)];
                if let Err(e) = Self::owner_outside(v) {
                    return e.into();
                }
                if nested {
                    return VcpuFault::InterruptsDisabled.into();
                }
                v.mode = VcpuMode::ReadingShadowPageTables;
                self.irq_guards.push(usize::from(vcpu.0));
                Outcome::Ok(Value::Unit)
            }
            Op::EnterGuest { vcpu } => {
                let nested = !self.irq_guards.is_empty();
                let v = &mut self.vcpus[usize::from(vcpu.0)];
                if let Err(e) = Self::owner_outside(v) {
                    return e.into();
                }
                if nested {
                    return VcpuFault::InterruptsDisabled.into();
                }
                if v.requests != 0 {
                    return VcpuFault::RequestsPending.into();
                }
                v.mode = VcpuMode::InGuest;
                self.irq_guards.push(usize::from(vcpu.0));
                Outcome::Ok(Value::Unit)
            }
            Op::GuardExit => match self.irq_guards.pop() {
                None => Skip::NothingKept.into(),
                Some(i) => {
                    self.vcpus[i].mode = VcpuMode::Outside;
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::MakeRequest { vcpu, bit } => {
                if bit >= 64 {
                    return VcpuFault::RequestOutOfRange.into();
                }
                self.vcpus[usize::from(vcpu.0)].requests |= 1 << bit;
                Outcome::Ok(Value::Unit)
            }
            Op::CheckRequest { vcpu, bit } => {
                if bit >= 64 {
                    return VcpuFault::RequestOutOfRange.into();
                }
                let v = &mut self.vcpus[usize::from(vcpu.0)];
                let pending = v.requests & (1 << bit) != 0;
                v.requests &= !(1 << bit);
                Outcome::Ok(Value::Flag(pending))
            }
            Op::Kick { vcpu } => Outcome::Ok(Value::Mode(Self::kick(&mut self.vcpus[usize::from(vcpu.0)]))),
            Op::VmCacheActivate { index, hva } => {
                let i = match Self::vm_cache(index) {
                    Ok(i) => i,
                    Err(e) => return e.into(),
                };
                let hva = Hva(hva.0);
                if hva >= MAX_HVA {
                    return Error::RangeOverflow.into();
                }
                // K1: listed, then active.
                let c = &mut self.vm_caches[i];
                c.listed = true;
                Self::mark_active(&mut c.cache, hva);
                Outcome::Ok(Value::Unit)
            }
            Op::VmCacheDeactivate { index } => match Self::vm_cache(index) {
                Err(e) => e.into(),
                Ok(i) => {
                    // K2: inactive and invalid, then unlisted.
                    let c = &mut self.vm_caches[i];
                    c.cache.active = false;
                    c.cache.valid = false;
                    c.listed = false;
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::VmCacheRefresh { index, fail, race } => match Self::vm_cache(index) {
                Err(e) => e.into(),
                Ok(i) => self.refresh(Which::Vm(i), None, 0, fail, race),
            },
            Op::VmCacheCheck { index, hva } => match Self::vm_cache(index) {
                Err(e) => e.into(),
                Ok(i) => Outcome::Ok(Value::Pfn(Self::check(&self.vm_caches[i].cache, Hva(hva.0)))),
            },
            // Activation goes through the VM, which lists the cache first.
            Op::VmCacheActivateDirect { index, .. } => {
                Self::vm_cache(index).map_or_else(Outcome::from, |_| Error::Foreign.into())
            }
            Op::VmCacheDeactivateDirect { index } => match Self::vm_cache(index) {
                Err(e) => e.into(),
                Ok(i) => {
                    let c = &mut self.vm_caches[i].cache;
                    c.active = false;
                    c.valid = false;
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::VmCacheRefreshWith { index, counters, hva, attempts, fail, race } => {
                let i = match Self::vm_cache(index) {
                    Ok(i) => i,
                    Err(e) => return e.into(),
                };
                if attempts == 0 && (self.active != 0 || matches!(race, Race::Start { .. })) {
                    return Skip::WouldBlock.into();
                }
                if hva.is_some_and(|h| Hva(h.0) >= MAX_HVA) {
                    return Error::RangeOverflow.into();
                }
                if counters != Counters::Own {
                    return Error::Foreign.into();
                }
                self.refresh(Which::Vm(i), hva, attempts, fail, race)
            }
            Op::FlushRemoteTlbs => {
                let mut targets = Vec::new();
                for v in &mut self.vcpus {
                    v.requests |= 1;
                    let mode = Self::kick(v);
                    if mode != VcpuMode::Outside && v.cpu == Some(Whose::Other) {
                        targets.push(Whose::Other);
                    }
                }
                Outcome::Ok(Value::Cpus(targets))
            }
        }
    }

    /// `check_owner` then `check_outside`.
    fn owner_outside(v: &VcpuState) -> Result<(), VcpuFault> {
        match v.cpu {
            None => Err(VcpuFault::NotLoaded),
            Some(Whose::Other) => Err(VcpuFault::WrongCpu),
            Some(Whose::Mine) if v.mode != VcpuMode::Outside => Err(VcpuFault::NotOutside(v.mode)),
            Some(Whose::Mine) => Ok(()),
        }
    }

    /// `cmpxchg(mode, InGuest, Exiting)`, returning the mode found.
    fn kick(v: &mut VcpuState) -> VcpuMode {
        let old = v.mode;
        if old == VcpuMode::InGuest {
            v.mode = VcpuMode::Exiting;
        }
        old
    }

    /// `try_refresh` (R1–R5) of the cache `which` names, the race run inside the first
    /// resolution. The unbounded form (`attempts == 0`) is only made when it cannot spin
    /// forever: no invalidation active before, and none left active by the race.
    fn refresh(&mut self, which: Which, hva: Option<Val>, attempts: u8, fail: bool, race: Race) -> Outcome {
        if attempts == 0 && (self.active != 0 || matches!(race, Race::Start { .. })) {
            return Skip::WouldBlock.into();
        }
        let hva = hva.map(|h| Hva(h.0));
        if hva.is_some_and(|h| h >= MAX_HVA) {
            return Error::RangeOverflow.into();
        }
        let c = self.cache_mut(which);
        if !c.active {
            return Error::CacheInactive.into();
        }
        let mut changed = false;
        if let Some(h) = hva {
            if c.hva != h {
                c.hva = h;
                changed = true;
            }
        }
        if c.valid && !changed {
            return Outcome::Ok(Value::Refresh { pfn: Some(c.pfn), race: Effects::default() });
        }
        c.valid = false;
        let hva = c.hva;
        let mut effects = Effects::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let snapshot = self.seq;
            let pfn = primary_pfn(&self.invalidated, hva);
            if attempt == 1 {
                effects = self.race(race);
            }
            let (active, seq) = (self.active, self.seq);
            let c = self.cache_mut(which);
            if fail {
                c.valid = false;
                return Error::Unmapped { hva }.into();
            }
            if active == 0 && seq == snapshot {
                c.valid = true;
                c.pfn = pfn;
                return Outcome::Ok(Value::Refresh { pfn: Some(pfn), race: effects });
            }
            if attempt == u32::from(attempts) {
                c.valid = false;
                return Outcome::Ok(Value::Refresh { pfn: None, race: effects });
            }
        }
    }

    /// The invalidation a refresh races with. A bad range races with nothing.
    fn race(&mut self, race: Race) -> Effects {
        let (start, end, and_end) = match race {
            Race::None => return Effects::default(),
            Race::Start { start, end } => (start, end, false),
            Race::StartEnd { start, end } => (start, end, true),
        };
        let Ok(h) = hva_span(start, end) else {
            return Effects::default();
        };
        let effects = self.notifier_start(h).unwrap_or_default();
        if and_end {
            // Cannot fail: the start just raised both counts it needs.
            let _ = self.notifier_end(h);
        }
        effects
    }

    fn state(&self) -> Value {
        Value::State {
            in_progress: self.in_progress,
            seq: self.seq,
            range: self.range.filter(|_| self.in_progress != 0),
        }
    }

    /// `begin`: count up; on 0 → 1 forget the stale range; then widen by `r`.
    fn begin(&mut self, r: GfnSpan) -> Result<(), Error> {
        let next = self.in_progress.checked_add(1).ok_or(Error::CountOverflow)?;
        if self.in_progress == 0 {
            self.range = None;
        }
        self.in_progress = next;
        self.add_range(r)
    }

    /// `add_range`: min/max union into the merged range; refused when nothing is open.
    fn add_range(&mut self, r: GfnSpan) -> Result<(), Error> {
        if self.in_progress == 0 {
            return Err(Error::Unbalanced);
        }
        self.range = Some(match self.range {
            None => r,
            Some((s, e)) => (s.min(r.0), e.max(r.1)),
        });
        Ok(())
    }

    /// `end`: `seq++`, `in_progress--`; refused, changing nothing, when nothing is open.
    fn end(&mut self) -> Result<(), Error> {
        if self.in_progress == 0 {
            return Err(Error::Unbalanced);
        }
        self.seq = self.seq.wrapping_add(1);
        self.in_progress -= 1;
        Ok(())
    }

    fn active_end(&mut self) -> Result<bool, Error> {
        if self.active == 0 {
            return Err(Error::Unbalanced);
        }
        self.active -= 1;
        Ok(self.active == 0)
    }

    /// The retry checks. `lock` is `None` for the lockless forms; `gfn` is `None` for the
    /// unranged forms. Guards are checked before snapshots.
    fn retry(&self, lock: Option<Lock>, snap: u8, gfn: Option<Gfn>) -> Outcome {
        let Some(i) = pick(snap, self.snapshots.len()) else {
            return Skip::NothingKept.into();
        };
        if lock.is_some_and(Lock::is_foreign) || self.snapshots[i].foreign {
            return Error::Foreign.into();
        }
        let open = self.in_progress != 0;
        let covered = match (gfn, self.range) {
            (None, _) => open,
            (Some(g), Some((s, e))) => open && s <= g && g < e,
            (Some(_), None) => open,
        };
        Outcome::Ok(Value::Flag(covered || self.seq != self.snapshots[i].seq))
    }

    /// The host address of `gfn` in the active layout (`gfn_to_hva`), if a slot maps it.
    fn slot_hva(&self, gfn: Gfn) -> Option<Hva> {
        let s = self.slots.iter().find(|s| s.gfns.0 <= gfn && gfn < s.gfns.1)?;
        let (base_gfn, base_hva) = (s.gfns.0, s.hvas.0);
        Some(Hva(base_hva.0 + (gfn.0 - base_gfn.0) * PAGE_SIZE))
    }

    /// The first slot matching `pred` in gfn order: the order `Memslots` keeps its slots in,
    /// so the one a [`SlotOverlap`](Error::SlotOverlap) error names as `existing`.
    fn first_slot(&self, pred: impl Fn(&SlotView) -> bool) -> Option<&SlotView> {
        self.slots.iter().filter(|s| pred(s)).min_by_key(|s| s.gfns.0)
    }

    fn hits(&self, hvas: HvaSpan) -> impl Iterator<Item = (SlotId, GfnSpan)> + '_ {
        self.slots.iter().filter_map(move |s| gfns_of(s, hvas).map(|g| (s.id, g)))
    }

    /// `Vm::start`: S1 count, S2 caches, S3 begin/add+zap per overlapping slot, S4 flush.
    fn notifier_start(&mut self, hvas: HvaSpan) -> Result<Effects, Error> {
        self.active = self.active.checked_add(1).ok_or(Error::CountOverflow)?;
        // S2: the VM invalidates the caches on its own list that the range covers (no help
        // from the secondary MMU's hook), then the hook invalidates the harness's standalone
        // cache; then the primary MMU may change the range.
        let covers = |c: &Cache| c.valid && hvas.0 <= c.hva && c.hva < hvas.1;
        for c in self.vm_caches.iter_mut().filter(|c| c.listed && covers(&c.cache)) {
            c.cache.valid = false;
        }
        let hit = covers(&self.cache);
        if hit {
            self.cache.valid = false;
        }
        self.invalidated.push(hvas);
        let mut zaps: Vec<_> = self.hits(hvas).collect();
        zaps.sort();
        let mut first = true;
        for &(_, g) in &zaps {
            let r = if first { self.begin(g) } else { self.add_range(g) };
            first = false;
            if let Err(e) = r {
                self.active -= 1;
                return Err(e);
            }
        }
        let flushes = u32::from(!zaps.is_empty());
        Ok(Effects { zaps, flushes, caches: vec![(hvas, hit)] })
    }

    /// `Vm::end`: refuse with `Unbalanced`, changing nothing, when no invalidation is active;
    /// else E1 (if a memslot overlaps) then E2, which runs even when E1 fails (E1's error is
    /// returned after it).
    fn notifier_end(&mut self, hvas: HvaSpan) -> Result<(), Error> {
        if self.active == 0 {
            return Err(Error::Unbalanced);
        }
        let e1 = if self.hits(hvas).next().is_some() { self.end() } else { Ok(()) };
        let e2 = self.active_end();
        e1.and(e2.map(|_| ()))
    }

    fn notifier_end_would_fail(&self, hvas: HvaSpan) -> bool {
        self.active == 0 || (self.in_progress == 0 && self.hits(hvas).next().is_some())
    }

    fn update_would_block(&self) -> bool {
        self.active != 0 || self.srcu_sections != 0
    }

    fn zap_slot(old: &SlotView) -> Effects {
        Effects { zaps: vec![(old.id, old.gfns)], flushes: 1, caches: Vec::new() }
    }
}
