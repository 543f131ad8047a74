//! The driver: applies each [`Op`] to the real crate (on [`StdHal`]) and to the [`Model`],
//! and panics with the whole history when they disagree.

use crate::model::{
    pick, primary_pfn, Effects, GfnSpan, HvaSpan, Model, Observed, Outcome, Skip, SlotView, Value, VcpuFault,
    VcpuView, MAX_SNAPSHOTS, SLOTS, VCPUS, VM_CACHES,
};
use crate::op::{CacheKey, Counters, Lock, Op, Owner, Race, Val, Whose};
use crate::page_table::AgeHow;
use core::cell::RefCell;
use core::num::NonZeroUsize;
use mmusync::active::ActiveInvalidations;
use mmusync::hal::std::{CpuRegistration, StdHal};
use mmusync::hal::{CpuId, CpuSet, Cpus};
use mmusync::invalidation::{Invalidation, OpenInvalidation};
use mmusync::lock::{MmuLocked, MmuWriteGuard};
use mmusync::memslot::{Memslot, MemslotConfig, SlotCache, SlotChange, GEN_UPDATE_IN_PROGRESS};
use mmusync::notifier::{InvalidateRange, SecondaryMmu, Vm};
use mmusync::pfncache::TranslationCache;
use mmusync::srcu::SrcuReadGuard;
use mmusync::vcpu::{flush_remote_tlbs, InGuest, Request, Vcpu, VcpuError};
use mmusync::walk::LocklessWalk;
use mmusync::{Error, Gfn, GfnRange, Hva, HvaRange, Pfn};

/// The secondary MMU the harness hands to the notifier: it records every call, invalidates
/// the translation cache in S2, and stands for the primary MMU (see [`primary_pfn`]).
pub struct Recorder {
    effects: RefCell<Effects>,
    cache: TranslationCache<StdHal>,
    invalidated: RefCell<Vec<HvaSpan>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            effects: RefCell::default(),
            cache: TranslationCache::new(StdHal),
            invalidated: RefCell::default(),
        }
    }

    /// What the primary MMU maps `hva` to now.
    pub fn primary(&self, hva: Hva) -> Pfn {
        primary_pfn(&self.invalidated.borrow(), hva)
    }

    /// Returns and clears what was recorded, zaps sorted.
    pub fn take(&self) -> Effects {
        let mut e = self.effects.take();
        e.zaps.sort();
        e
    }
}

impl SecondaryMmu<StdHal> for Recorder {
    fn unmap_gfn_range(&self, _: &MmuWriteGuard<'_, StdHal>, slot: &Memslot, gfns: GfnRange) -> bool {
        self.effects.borrow_mut().zaps.push((slot.id(), (gfns.start(), gfns.end())));
        true
    }

    fn flush_remote_tlbs(&self) {
        self.effects.borrow_mut().flushes += 1;
    }

    fn invalidate_caches(&self, hvas: HvaRange) {
        let hit = self.cache.invalidate_start(hvas);
        let span = (hvas.start(), hvas.end());
        self.effects.borrow_mut().caches.push((span, hit));
        self.invalidated.borrow_mut().push(span);
    }
}

/// The objects under test: one VM with its own translation caches, a second invalidation
/// object whose guards and snapshots are foreign to the VM, a second VM and a standalone active
/// count whose counters are foreign to the VM's caches, the recording secondary MMU with its
/// translation cache, and the vCPUs.
pub struct World {
    vm: Vm<StdHal, SLOTS, VM_CACHES>,
    foreign: Invalidation<StdHal>,
    other_vm: Vm<StdHal, 1>,
    standalone: ActiveInvalidations<StdHal>,
    mmu: Recorder,
    vcpus: [Vcpu<StdHal>; VCPUS],
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A fresh VM with no slots.
    pub fn new() -> Self {
        World {
            vm: Vm::new(StdHal),
            foreign: Invalidation::new(StdHal),
            other_vm: Vm::new(StdHal),
            standalone: ActiveInvalidations::new(StdHal),
            mmu: Recorder::new(),
            vcpus: core::array::from_fn(|_| Vcpu::new(StdHal)),
        }
    }
}

/// A kept guard that disables interrupts.
enum IrqHolder<'w> {
    Walk(LocklessWalk<'w, StdHal>),
    Guest(InGuest<'w, StdHal>),
}

std::thread_local! {
    /// This thread's CPU registration: the vCPU calls must run on a CPU. Kept for the thread's
    /// life (a fuzzer or test thread runs many harnesses).
    static CPU: RefCell<Option<CpuRegistration>> = const { RefCell::new(None) };
}

/// This thread's CPU, registering the thread on first use.
pub(crate) fn my_cpu() -> CpuId {
    CPU.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(StdHal::register_cpu().expect("the harness thread must be able to become a CPU"));
        }
        match StdHal.current_cpu() {
            Some(cpu) => cpu,
            None => unreachable!("this thread registered just above"),
        }
    })
}

/// A CPU that is not this thread's.
fn other_cpu() -> CpuId {
    CpuId::new((my_cpu().index() + 1) % CpuSet::CAPACITY).expect("in range")
}

fn whose(cpu: CpuId) -> Whose {
    if cpu == my_cpu() {
        Whose::Mine
    } else {
        Whose::Other
    }
}

fn fault(e: VcpuError) -> Outcome {
    match e {
        VcpuError::RequestOutOfRange => VcpuFault::RequestOutOfRange,
        VcpuError::NotLoaded => VcpuFault::NotLoaded,
        VcpuError::WrongCpu => VcpuFault::WrongCpu,
        VcpuError::AlreadyLoaded(cpu) => VcpuFault::AlreadyLoaded(whose(cpu)),
        VcpuError::NotOutside(mode) => VcpuFault::NotOutside(mode),
        VcpuError::RequestsPending => VcpuFault::RequestsPending,
        VcpuError::InterruptsDisabled => VcpuFault::InterruptsDisabled,
        other => panic!("a VcpuError the model does not know: {other:?}"),
    }
    .into()
}

/// Whether this thread's interrupts are enabled, read by a save and its restore.
fn irqs_on() -> bool {
    let state = StdHal.irq_save();
    // SAFETY: `state` comes from the `irq_save` just above, on this thread, and nothing was
    // saved in between, so the two nest.
    unsafe { StdHal.irq_restore(state) };
    state.0
}

/// The real side: the [`World`] plus everything the operations keep.
pub struct Harness<'w> {
    world: &'w World,
    snapshots: Vec<mmusync::retry::FaultSnapshot>,
    open: Vec<OpenInvalidation<'w, StdHal>>,
    notifier: Vec<InvalidateRange<'w, StdHal, Recorder, SLOTS, VM_CACHES>>,
    srcu: Vec<SrcuReadGuard<'w, StdHal>>,
    irq: Vec<IrqHolder<'w>>,
    /// The hva the cache was last pointed at (`gpc->uhva`), tracked from the calls' results.
    cache_hva: Hva,
    /// The same for each of the VM's own caches.
    vm_cache_hva: [Hva; VM_CACHES],
    /// The generation-stamped memslot lookup cache.
    slot_cache: SlotCache,
}

pub(crate) fn gfn_range(start: Val, end: Val) -> Result<GfnRange, Error> {
    GfnRange::new(Gfn(start.0), Gfn(end.0))
}

pub(crate) fn hva_range(start: Val, end: Val) -> Result<HvaRange, Error> {
    HvaRange::new(Hva(start.0), Hva(end.0))
}

fn view(s: &Memslot) -> SlotView {
    SlotView {
        id: s.id(),
        gfns: (s.gfns().start(), s.gfns().end()),
        hvas: (s.hvas().start(), s.hvas().end()),
        invalid: s.is_invalid(),
    }
}

fn span(r: GfnRange) -> GfnSpan {
    (r.start(), r.end())
}

fn unit(r: Result<(), Error>) -> Outcome {
    r.map(|()| Value::Unit).into()
}

impl<'w> Harness<'w> {
    /// A harness over `world`, keeping nothing yet.
    pub fn new(world: &'w World) -> Self {
        my_cpu();
        Harness {
            world,
            snapshots: Vec::new(),
            open: Vec::new(),
            notifier: Vec::new(),
            srcu: Vec::new(),
            irq: Vec::new(),
            cache_hva: Hva(0),
            vm_cache_hva: [Hva(0); VM_CACHES],
            slot_cache: SlotCache::new(),
        }
    }

    fn inv(&self) -> &'w Invalidation<StdHal> {
        self.world.vm.invalidation()
    }

    /// Runs `f` with a guard of the lock `lock` names.
    fn with_lock<T>(&self, lock: Lock, f: impl FnOnce(&dyn Locked) -> T) -> T {
        match lock {
            Lock::OwnWrite => f(&self.inv().mmu_lock().write()),
            Lock::OwnRead => f(&self.inv().mmu_lock().read()),
            Lock::ForeignWrite => f(&self.world.foreign.mmu_lock().write()),
            Lock::ForeignRead => f(&self.world.foreign.mmu_lock().read()),
        }
    }

    fn write_lock(&self, owner: Owner) -> MmuWriteGuard<'w, StdHal> {
        match owner {
            Owner::Own => self.inv().mmu_lock().write(),
            Owner::Foreign => self.world.foreign.mmu_lock().write(),
        }
    }

    /// The observable state of the real VM.
    pub fn observe(&self) -> Observed {
        let inv = self.inv();
        let g = inv.mmu_lock().read();
        let read = self.world.vm.memslots().read();
        let mut slots: Vec<SlotView> = read.iter().map(|s| view(&s)).collect();
        slots.sort();
        let generation = read.generation();
        drop(read);
        let cache = self.world.mmu.cache.check(self.cache_hva).map(|r| r.pfn());
        Observed {
            in_progress: inv.in_progress(&g).expect("own guard"),
            seq: inv.seq(&g).expect("own guard"),
            range: inv.range(&g).expect("own guard").map(span),
            active: self.world.vm.active_invalidations().count_unlocked(),
            srcu_readers: self.world.vm.memslots().srcu().readers(),
            slots,
            generation,
            cache,
            cache_stale: cache.is_some_and(|pfn| pfn != self.world.mmu.primary(self.cache_hva)),
            vm_caches: core::array::from_fn(|i| self.vm_cache_pfn(i)),
            vm_caches_stale: core::array::from_fn(|i| {
                self.vm_cache_pfn(i).is_some_and(|pfn| pfn != self.world.mmu.primary(self.vm_cache_hva[i]))
            }),
            vcpus: self.world.vcpus.each_ref().map(|v| VcpuView {
                cpu: v.cpu().map(whose),
                mode: v.mode(),
                requests_pending: v.requests_pending(),
            }),
            irqs_on: irqs_on(),
        }
    }

    /// What `check` returns for the VM's cache `i` at its own hva.
    fn vm_cache_pfn(&self, i: usize) -> Option<Pfn> {
        let cache = self.world.vm.translation_cache(i).expect("one of the VM's caches");
        cache.check(self.vm_cache_hva[i]).map(|r| r.pfn())
    }

    /// How many snapshots, open guards, notifier guards, SRCU sections and walk or guest
    /// guards are kept.
    pub fn kept(&self) -> (usize, usize, usize, usize, usize) {
        (self.snapshots.len(), self.open.len(), self.notifier.len(), self.srcu.len(), self.irq.len())
    }

    /// Whether ending an invalidation now would be refused: used before dropping a guard,
    /// whose `Drop` cannot report the error (see [`Skip::GuardEndUnbalanced`]).
    fn end_would_fail(&self, hvas: Option<HvaRange>) -> bool {
        let in_progress = self.inv().in_progress(&self.inv().mmu_lock().read()).expect("own guard");
        match hvas {
            None => in_progress == 0,
            Some(h) => {
                let hit = self.world.vm.memslots().read().overlapping(h).any(|s| s.gfns_of(&h).is_some());
                self.world.vm.active_invalidations().count_unlocked() == 0 || (hit && in_progress == 0)
            }
        }
    }

    /// Makes the real call for `op`.
    pub fn step(&mut self, op: &Op) -> Outcome {
        let inv = self.inv();
        let vm = &self.world.vm;
        let mmu = &self.world.mmu;
        match *op {
            Op::Begin { owner, start, end } => match gfn_range(start, end) {
                Err(e) => e.into(),
                Ok(r) => unit(inv.begin(&self.write_lock(owner), r)),
            },
            Op::AddRange { owner, start, end } => match gfn_range(start, end) {
                Err(e) => e.into(),
                Ok(r) => unit(inv.add_range(&self.write_lock(owner), r)),
            },
            Op::End { owner } => unit(inv.end(&self.write_lock(owner))),
            Op::Inspect { lock } => self.with_lock(lock, |g| g.state(inv)).into(),
            Op::Open { start, end } => match gfn_range(start, end).and_then(|r| inv.open(r)) {
                Err(e) => e.into(),
                Ok(guard) => {
                    self.open.push(guard);
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::OpenAddRange { guard, start, end } => {
                let Some(i) = pick(guard, self.open.len()) else {
                    return Skip::NothingKept.into();
                };
                match gfn_range(start, end) {
                    Err(e) => e.into(),
                    Ok(r) => unit(self.open[i].add_range(r)),
                }
            }
            Op::Close { guard } => {
                let Some(i) = pick(guard, self.open.len()) else {
                    return Skip::NothingKept.into();
                };
                let g = self.open.remove(i);
                if self.end_would_fail(None) {
                    core::mem::forget(g);
                    return Skip::GuardEndUnbalanced.into();
                }
                drop(g);
                Outcome::Ok(Value::Unit)
            }
            Op::Snapshot { owner } => {
                let snap = match owner {
                    Owner::Own => inv.snapshot(),
                    Owner::Foreign => self.world.foreign.snapshot(),
                };
                if self.snapshots.len() == MAX_SNAPSHOTS {
                    let _oldest = self.snapshots.remove(0);
                }
                self.snapshots.push(snap);
                Outcome::Ok(Value::Snapshot(snap.seq()))
            }
            Op::Retry { lock, snap } => self.with_snapshot(snap, |s| {
                self.with_lock(lock, |g| g.retry(inv, s, None)).map(Value::Flag).into()
            }),
            Op::RetryGfn { lock, snap, gfn } => self.with_snapshot(snap, |s| {
                self.with_lock(lock, |g| g.retry(inv, s, Some(Gfn(gfn.0)))).map(Value::Flag).into()
            }),
            Op::RetryGfnUnsafe { snap, gfn } => {
                self.with_snapshot(snap, |s| inv.retry_gfn_unsafe(s, Gfn(gfn.0)).map(Value::Flag).into())
            }
            Op::RetryLockless { snap } => {
                self.with_snapshot(snap, |s| inv.retry_lockless(s).map(Value::Flag).into())
            }
            Op::ActiveStart => unit(vm.active_invalidations().start()),
            Op::ActiveEnd => vm.active_invalidations().end().map(Value::Flag).into(),
            Op::NotifierStart { start, end } => match hva_range(start, end) {
                Err(e) => e.into(),
                Ok(h) => {
                    let r = vm.start(mmu, h);
                    r.map(|()| Value::Mmu(mmu.take())).into()
                }
            },
            Op::NotifierEnd { start, end } => match hva_range(start, end) {
                Err(e) => e.into(),
                Ok(h) => unit(vm.end(h)),
            },
            Op::NotifierOpen { start, end } => match hva_range(start, end) {
                Err(e) => e.into(),
                Ok(h) => match vm.invalidate_range_start(mmu, h) {
                    Err(e) => e.into(),
                    Ok(guard) => {
                        self.notifier.push(guard);
                        Outcome::Ok(Value::Mmu(mmu.take()))
                    }
                },
            },
            Op::NotifierClose { guard } => {
                let Some(i) = pick(guard, self.notifier.len()) else {
                    return Skip::NothingKept.into();
                };
                let g = self.notifier.remove(i);
                if self.end_would_fail(Some(g.range())) {
                    core::mem::forget(g);
                    return Skip::GuardEndUnbalanced.into();
                }
                drop(g);
                Outcome::Ok(Value::Unit)
            }
            Op::CreateSlot { id, base_gfn, npages, hva } => {
                let config =
                    MemslotConfig { id: id.0, base_gfn: Gfn(base_gfn.0), npages: npages.0, hva: Hva(hva.0) };
                match Memslot::new(config) {
                    Err(e) => e.into(),
                    Ok(s) => self.set_memslot(SlotChange::Create(s)),
                }
            }
            Op::DeleteSlot { id } => self.set_memslot(SlotChange::Delete(id.0)),
            Op::MoveSlot { id, base_gfn } => {
                self.set_memslot(SlotChange::Move { id: id.0, base_gfn: Gfn(base_gfn.0) })
            }
            Op::FindSlot { gfn } => {
                Outcome::Ok(Value::Slot(vm.memslots().read().find(Gfn(gfn.0)).map(|s| view(&s))))
            }
            Op::SrcuLock => {
                self.srcu.push(vm.memslots().srcu().read_lock());
                Outcome::Ok(Value::Unit)
            }
            Op::SrcuUnlock { section } => {
                let Some(i) = pick(section, self.srcu.len()) else {
                    return Skip::NothingKept.into();
                };
                drop(self.srcu.remove(i));
                Outcome::Ok(Value::Unit)
            }
            Op::CacheActivate { hva } => {
                let hva = Hva(hva.0);
                let r = mmu.cache.activate(hva);
                if r.is_ok() {
                    self.cache_hva = hva;
                }
                unit(r)
            }
            Op::CacheDeactivate => {
                mmu.cache.deactivate();
                Outcome::Ok(Value::Unit)
            }
            Op::CacheCheck { hva } => Outcome::Ok(Value::Pfn(mmu.cache.check(Hva(hva.0)).map(|r| r.pfn()))),
            Op::CacheRefresh { hva, attempts, fail, race } => self.refresh(hva, attempts, fail, race),
            Op::VcpuLoad { vcpu, cpu } => {
                let on = match cpu {
                    Whose::Mine => my_cpu(),
                    Whose::Other => other_cpu(),
                };
                self.vcpu(vcpu.0).load(on).map_or_else(fault, |()| Outcome::Ok(Value::Unit))
            }
            Op::VcpuPut { vcpu } => self.vcpu(vcpu.0).put().map_or_else(fault, |()| Outcome::Ok(Value::Unit)),
            Op::WalkBegin { vcpu } => match self.vcpu(vcpu.0).walk_lockless_begin() {
                Err(e) => fault(e),
                Ok(walk) => {
                    self.irq.push(IrqHolder::Walk(walk));
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::EnterGuest { vcpu } => match self.vcpu(vcpu.0).enter_guest() {
                Err(e) => fault(e),
                Ok(guest) => {
                    self.irq.push(IrqHolder::Guest(guest));
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::GuardExit => match self.irq.pop() {
                None => Skip::NothingKept.into(),
                Some(IrqHolder::Walk(w)) => {
                    drop(w);
                    Outcome::Ok(Value::Unit)
                }
                Some(IrqHolder::Guest(g)) => {
                    drop(g);
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::MakeRequest { vcpu, bit } => match Request::new(bit) {
                Err(e) => fault(e),
                Ok(req) => {
                    self.vcpu(vcpu.0).make_request(req);
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::CheckRequest { vcpu, bit } => match Request::new(bit) {
                Err(e) => fault(e),
                Ok(req) => Outcome::Ok(Value::Flag(self.vcpu(vcpu.0).check_request(req))),
            },
            Op::Kick { vcpu } => Outcome::Ok(Value::Mode(self.vcpu(vcpu.0).exiting_guest_mode())),
            Op::FlushRemoteTlbs => {
                let targets = flush_remote_tlbs(&StdHal, &self.world.vcpus);
                Outcome::Ok(Value::Cpus(targets.iter().map(whose).collect()))
            }
            Op::ZapGfnRange { start, end } => match gfn_range(start, end) {
                Err(e) => e.into(),
                Ok(r) => {
                    let zapped = vm.zap_gfn_range(mmu, r);
                    zapped.map(|_| Value::Mmu(mmu.take())).into()
                }
            },
            Op::SlotCacheLookup { gfn } => {
                let read = vm.memslots().read();
                Outcome::Ok(Value::Hva(self.slot_cache.lookup(&read, Gfn(gfn.0))))
            }
            Op::SlotCacheFill { in_progress, gfn, hva } => {
                let mut generation = vm.memslots().read().generation();
                if in_progress {
                    generation |= GEN_UPDATE_IN_PROGRESS;
                }
                unit(self.slot_cache.fill(generation, Gfn(gfn.0), hva.map(|h| Hva(h.0))))
            }
            Op::Age { how, start, end } => match hva_range(start, end) {
                Err(e) => e.into(),
                Ok(h) => {
                    let young = match how {
                        AgeHow::ClearFlush => vm.clear_flush_young(mmu, h),
                        AgeHow::Clear => vm.clear_young(mmu, h),
                        AgeHow::Test => vm.test_young(mmu, h),
                    };
                    let effects = mmu.take();
                    assert_eq!(effects, Effects::default(), "aging reached the secondary MMU's zap or flush");
                    Outcome::Ok(Value::Flag(young))
                }
            },
            Op::SlotCacheGet { gfn } => {
                let generation = vm.memslots().read().generation();
                Outcome::Ok(Value::Cached(self.slot_cache.get(generation, Gfn(gfn.0))))
            }
            Op::VmCacheActivate { index, hva } => {
                let (i, hva) = (usize::from(index.0), Hva(hva.0));
                let r = vm.activate_cache(i, hva);
                if r.is_ok() {
                    self.vm_cache_hva[i] = hva;
                }
                unit(r)
            }
            Op::VmCacheDeactivate { index } => unit(vm.deactivate_cache(usize::from(index.0))),
            Op::VmCacheRefresh { index, fail, race } => {
                let i = usize::from(index.0);
                if let Err(e) = vm.translation_cache(i) {
                    return e.into();
                }
                if vm.active_invalidations().count_unlocked() != 0 || matches!(race, Race::Start { .. }) {
                    return Skip::WouldBlock.into();
                }
                let raced = RefCell::new(None);
                let r = vm.refresh_cache(i, resolver(&self.world.vm, mmu, fail, race, &raced));
                r.map(|pfn| Value::Refresh { pfn: Some(pfn), race: raced.into_inner().unwrap_or_default() })
                    .into()
            }
            Op::VmCacheCheck { index, hva } => match vm.translation_cache(usize::from(index.0)) {
                Err(e) => e.into(),
                Ok(cache) => Outcome::Ok(Value::Pfn(cache.check(Hva(hva.0)).map(|r| r.pfn()))),
            },
            Op::VmCacheActivateDirect { index, hva } => match vm.translation_cache(usize::from(index.0)) {
                Err(e) => e.into(),
                Ok(cache) => unit(cache.activate(Hva(hva.0))),
            },
            Op::VmCacheDeactivateDirect { index } => match vm.translation_cache(usize::from(index.0)) {
                Err(e) => e.into(),
                Ok(cache) => {
                    cache.deactivate();
                    Outcome::Ok(Value::Unit)
                }
            },
            Op::VmCacheRefreshWith { index, counters, hva, attempts, fail, race } => {
                self.refresh_vm_cache(index, counters, hva, attempts, fail, race)
            }
        }
    }

    fn vcpu(&self, i: u8) -> &'w Vcpu<StdHal> {
        &self.world.vcpus[usize::from(i)]
    }

    /// A translation-cache refresh whose resolver reads the primary MMU and then, the first
    /// time, runs the racing invalidation. The unbounded form is made only when it cannot spin
    /// forever (see the model).
    fn refresh(&mut self, hva: Option<Val>, attempts: u8, fail: bool, race: Race) -> Outcome {
        let world = self.world;
        let (vm, mmu) = (&world.vm, &world.mmu);
        let active = vm.active_invalidations();
        if attempts == 0 && (active.count_unlocked() != 0 || matches!(race, Race::Start { .. })) {
            return Skip::WouldBlock.into();
        }
        let raced = RefCell::new(None);
        let hva = hva.map(|h| Hva(h.0));
        let r = refresh_with(
            &mmu.cache,
            hva,
            attempts,
            vm.invalidation(),
            active,
            resolver(vm, mmu, fail, race, &raced),
        );
        if let (Some(h), false) = (hva, matches!(r, Err(Error::RangeOverflow | Error::CacheInactive))) {
            self.cache_hva = h;
        }
        r.map(|pfn| Value::Refresh { pfn, race: raced.into_inner().unwrap_or_default() }).into()
    }

    /// A refresh of the VM's own cache `index` made on the cache directly, with the counters
    /// `counters` names: the VM's own, or another VM's or standalone ones (refused).
    fn refresh_vm_cache(
        &mut self,
        index: CacheKey,
        counters: Counters,
        hva: Option<Val>,
        attempts: u8,
        fail: bool,
        race: Race,
    ) -> Outcome {
        let world = self.world;
        let (vm, mmu) = (&world.vm, &world.mmu);
        let i = usize::from(index.0);
        let cache = match vm.translation_cache(i) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        if attempts == 0
            && (vm.active_invalidations().count_unlocked() != 0 || matches!(race, Race::Start { .. }))
        {
            return Skip::WouldBlock.into();
        }
        let (inv, active) = match counters {
            Counters::Own => (vm.invalidation(), vm.active_invalidations()),
            Counters::OtherVm => (world.other_vm.invalidation(), world.other_vm.active_invalidations()),
            Counters::OtherActive => (vm.invalidation(), world.other_vm.active_invalidations()),
            Counters::StandaloneActive => (vm.invalidation(), &world.standalone),
            Counters::StandaloneInvalidation => (&world.foreign, vm.active_invalidations()),
        };
        let raced = RefCell::new(None);
        let hva = hva.map(|h| Hva(h.0));
        let r = refresh_with(cache, hva, attempts, inv, active, resolver(vm, mmu, fail, race, &raced));
        if let (Some(h), false) =
            (hva, matches!(r, Err(Error::RangeOverflow | Error::CacheInactive | Error::Foreign)))
        {
            self.vm_cache_hva[i] = h;
        }
        r.map(|pfn| Value::Refresh { pfn, race: raced.into_inner().unwrap_or_default() }).into()
    }

    fn with_snapshot(&self, snap: u8, f: impl FnOnce(&mmusync::retry::FaultSnapshot) -> Outcome) -> Outcome {
        match pick(snap, self.snapshots.len()) {
            None => Skip::NothingKept.into(),
            Some(i) => f(&self.snapshots[i]),
        }
    }

    /// `Vm::set_memslot`, unless it would wait forever on this thread (decided from the real
    /// objects). Then the change's own checks, which `set_memslot` makes before it waits, are
    /// made as a dry run ([`check_change`](Self::check_change)), so a bad change still
    /// reports its error; otherwise the real call is made and its result is what gets compared.
    fn set_memslot(&self, change: SlotChange) -> Outcome {
        let vm = &self.world.vm;
        if vm.active_invalidations().count_unlocked() != 0 || !self.srcu.is_empty() {
            return match self.check_change(change) {
                Err(e) => e.into(),
                Ok(()) => Skip::WouldBlock.into(),
            };
        }
        let r = vm.set_memslot(&self.world.mmu, change);
        r.map(|()| Value::Mmu(self.world.mmu.take())).into()
    }

    /// The checks `Memslots::update` makes before it publishes anything, made against the
    /// real active set. Only used where the real call could block: there its error stands in
    /// for the real call's.
    fn check_change(&self, change: SlotChange) -> Result<(), Error> {
        let read = self.world.vm.memslots().read();
        match change {
            SlotChange::Create(s) => {
                // `iter` yields the slots in gfn order, as `update` searches them.
                if let Some(o) = read.iter().find(|o| o.id() == s.id() || o.gfns().overlaps(&s.gfns())) {
                    return Err(Error::SlotOverlap { slot: s.id(), existing: o.id() });
                }
                if read.iter().count() == SLOTS {
                    return Err(Error::SlotsFull);
                }
            }
            SlotChange::Delete(id) => {
                read.iter().find(|o| o.id() == id).ok_or(Error::NoSuchSlot { slot: id })?;
            }
            SlotChange::Move { id, base_gfn } => {
                let old = read.iter().find(|o| o.id() == id).ok_or(Error::NoSuchSlot { slot: id })?;
                let npages = old.gfns().len();
                let moved = Memslot::new(MemslotConfig { id, base_gfn, npages, hva: old.hvas().start() })?;
                if let Some(o) = read.iter().find(|o| o.id() != id && o.gfns().overlaps(&moved.gfns())) {
                    return Err(Error::SlotOverlap { slot: id, existing: o.id() });
                }
            }
        }
        Ok(())
    }
}

/// `refresh` / `refresh_hva` (`attempts == 0`) or `try_refresh` of `cache` with `inv` and
/// `active`.
fn refresh_with(
    cache: &TranslationCache<StdHal>,
    hva: Option<Hva>,
    attempts: u8,
    inv: &Invalidation<StdHal>,
    active: &ActiveInvalidations<StdHal>,
    resolve: impl FnMut(Hva) -> Result<Pfn, Error>,
) -> Result<Option<Pfn>, Error> {
    match (NonZeroUsize::new(usize::from(attempts)), hva) {
        (None, None) => cache.refresh(inv, active, resolve).map(Some),
        (None, Some(h)) => cache.refresh_hva(h, inv, active, resolve).map(Some),
        (Some(n), h) => cache.try_refresh(h, n, inv, active, resolve),
    }
}

/// The harness's resolver (`hva_to_pfn`): reads the primary MMU, then, the first time, runs the
/// racing invalidation (its effects go to `raced`); fails with `Unmapped` when `fail`.
fn resolver<'a>(
    vm: &'a Vm<StdHal, SLOTS, VM_CACHES>,
    mmu: &'a Recorder,
    fail: bool,
    race: Race,
    raced: &'a RefCell<Option<Effects>>,
) -> impl FnMut(Hva) -> Result<Pfn, Error> + 'a {
    move |at: Hva| {
        let pfn = mmu.primary(at);
        if raced.borrow().is_none() {
            *raced.borrow_mut() = Some(race_with(vm, mmu, race));
        }
        if fail {
            Err(Error::Unmapped { hva: at })
        } else {
            Ok(pfn)
        }
    }
}

/// Runs the invalidation a refresh races with; returns what it did to the secondary MMU.
fn race_with(vm: &Vm<StdHal, SLOTS, VM_CACHES>, mmu: &Recorder, race: Race) -> Effects {
    let (start, end, and_end) = match race {
        Race::None => return Effects::default(),
        Race::Start { start, end } => (start, end, false),
        Race::StartEnd { start, end } => (start, end, true),
    };
    let Ok(h) = hva_range(start, end) else {
        return Effects::default();
    };
    if vm.start(mmu, h).is_err() {
        return Effects::default();
    }
    let effects = mmu.take();
    if and_end {
        let ended = vm.end(h);
        assert_eq!(ended, Ok(()), "end right after a successful start");
    }
    effects
}

/// A guard of either mode, as a trait object (the checks take `&impl MmuLocked`).
trait Locked {
    fn state(&self, inv: &Invalidation<StdHal>) -> Result<Value, Error>;
    fn retry(
        &self,
        inv: &Invalidation<StdHal>,
        snap: &mmusync::retry::FaultSnapshot,
        gfn: Option<Gfn>,
    ) -> Result<bool, Error>;
}

impl<G: MmuLocked> Locked for G {
    fn state(&self, inv: &Invalidation<StdHal>) -> Result<Value, Error> {
        Ok(Value::State {
            in_progress: inv.in_progress(self)?,
            seq: inv.seq(self)?,
            range: inv.range(self)?.map(span),
        })
    }

    fn retry(
        &self,
        inv: &Invalidation<StdHal>,
        snap: &mmusync::retry::FaultSnapshot,
        gfn: Option<Gfn>,
    ) -> Result<bool, Error> {
        match gfn {
            None => inv.retry(self, snap),
            Some(g) => inv.retry_gfn(self, snap, g),
        }
    }
}

/// Runs `ops` from a fresh [`World`] against a fresh [`Model`], checking every result and the
/// observable state after every step. Panics, printing the numbered history, at the first
/// disagreement.
pub fn run(ops: &[Op]) {
    let world = World::new();
    let mut harness = Harness::new(&world);
    let mut model = Model::new();
    for (i, op) in ops.iter().enumerate() {
        let want = model.step(op);
        let got = harness.step(op);
        check(ops, i, "result", &want, &got);
        check(ops, i, "state", &model.observe(), &harness.observe());
        check(ops, i, "kept objects", &model.kept(), &harness.kept());
    }
}

impl Drop for Harness<'_> {
    /// Ends what is still kept, innermost interrupt guard first, and each invalidation guard
    /// only if its end can succeed (see [`Skip::GuardEndUnbalanced`]), so that a harness never
    /// trips a guard's `Drop` check, not even while unwinding from a failed check.
    fn drop(&mut self) {
        while self.irq.pop().is_some() {}
        while let Some(g) = self.notifier.pop() {
            if self.end_would_fail(Some(g.range())) {
                core::mem::forget(g);
            }
        }
        while let Some(g) = self.open.pop() {
            if self.end_would_fail(None) {
                core::mem::forget(g);
            }
        }
        self.srcu.clear();
    }
}

/// Panics with the history up to step `at` if `want != got`.
pub fn check<T: PartialEq + core::fmt::Debug>(ops: &[Op], at: usize, what: &str, want: &T, got: &T) {
    if want != got {
        let mut history = String::new();
        for (i, op) in ops.iter().enumerate().take(at + 1) {
            history.push_str(&format!("  {i:3}: {op:?}\n"));
        }
        panic!(
            "mmusync disagrees with the reference model at step {at} ({what}):\n  model: {want:?}\n  crate: \
             {got:?}\nhistory:\n{history}"
        );
    }
}
