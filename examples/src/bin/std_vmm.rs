//! A small VMM on real threads, written against mmusync's public API only, that checks itself.
//!
//! * **vCPU threads** (each a CPU of the `std` backend, hotplugged one by one through a
//!   [`VcpuRegistry`]): fault guest frames in through [`ReferenceMmu::fault`], fill a software
//!   TLB from the SPTEs inside a lockless walk, "run the guest" ([`Vcpu::enter_guest`]) using
//!   the TLB, and use a [`TranslationCache`] (a steal-time page, say).
//! * **a notifier thread** (not a CPU): plays the host kernel's MMU notifier. Each round it
//!   picks a host page some vCPU has in its TLB (or in its cache), runs
//!   `invalidate_range_start`, unmaps the page in the host's page table, audits, frees the
//!   host page, and ends the invalidation.
//! * **a memslot thread** (not a CPU): moves, deletes and re-creates a memslot all the time.
//!
//! **Ghost state and the check.** Every host page (pfn) is allocated once and never reused;
//! freeing it records the round. A use of a translation to a freed page is a violation: a vCPU
//! that uses a TLB entry in guest mode, a lockless walk that finds such an SPTE, a cache
//! consumer. And before each free the notifier audits the claim the protocols make once
//! `invalidate_range_start` has returned: no SPTE maps the page (S3, zap), every vCPU whose
//! TLB still holds it has a TLB-flush request pending (S4, flush), and no translation cache
//! serves it (S2).
//!
//! **Planted bugs** (`--bug`), each skipping one protocol step in this program's own
//! [`SecondaryMmu`]: `skip-flush` (S4), `skip-zap` (S3c), `skip-cache-invalidate` (S2). The
//! notifier picks its targets from the TLBs and caches, so each bug is reported at the first
//! round that targets a page it leaves reachable: the program exits 1. A normal run exits 0.
//!
//! ```text
//! std-vmm [--seconds S] [--vcpus N] [--bug skip-flush|skip-zap|skip-cache-invalidate]
//!         [--ipi-signal-offset K]
//! ```
//! Exit status: 0 no violation; 1 violations (printed); 2 bad arguments or a setup error;
//! 3 a planted bug went unnoticed.

use mmusync::{
    BoxAlloc, CpuError, Error, FaultOutcome, Gfn, GfnRange, Hva, HvaRange, Memslot, MemslotConfig,
    MmuWriteGuard, Pfn, ReferenceMmu, RegistryError, Request, SecondaryMmu, SlotChange, StdHal,
    TranslationCache, Vcpu, VcpuError, VcpuRegistry, Vm,
};
use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Page-table shape: 3 levels of 8 entries, 512 gfns.
const LEVELS: usize = 3;
const FANOUT: usize = 8;
const GFNS: u64 = 512;
/// Memslots per address space.
const SLOTS: usize = 8;
/// The most vCPUs.
const MAX_VCPUS: usize = 8;
const PAGE: u64 = 4096;
/// Guest RAM: slot 0, gfns `0..RAM_PAGES`.
const RAM_PAGES: u64 = 64;
const RAM_HVA: Hva = Hva(0x7f00_0000_0000);
/// The slot that moves: slot 1, 4 pages, first gfn `CHURN_BASES[k]`. Never a whole leaf table,
/// so its zaps unlink no table page (and the only TLB flushes are the notifier's).
const CHURN_PAGES: u64 = 4;
const CHURN_HVA: Hva = Hva(0x7f10_0000_0000);
const CHURN_BASES: [Gfn; 2] = [Gfn(260), Gfn(388)];
/// Host pages the run may allocate (each is used once).
const MAX_PFNS: usize = 1 << 21;

type Mmu<'v> = ReferenceMmu<'v, StdHal, BoxAlloc, LEVELS, FANOUT>;

/// The host address of guest RAM frame `gfn` (slot 0).
fn ram_hva(gfn: Gfn) -> Hva {
    Hva(RAM_HVA.0 + gfn.0 * PAGE)
}

/// The churn slot (slot 1) at first gfn `base_gfn`.
fn churn_slot(base_gfn: Gfn) -> Result<Memslot, Error> {
    Memslot::new(MemslotConfig { id: 1, base_gfn, npages: CHURN_PAGES, hva: CHURN_HVA })
}

/// The host page holding `hva`.
fn page_of(hva: Hva) -> Hva {
    Hva(hva.0 & !(PAGE - 1))
}

/// The protocol step a planted bug skips.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    Flush,
    Zap,
    CacheInvalidate,
}

impl Bug {
    fn parse(s: &str) -> Option<Bug> {
        match s {
            "skip-flush" => Some(Bug::Flush),
            "skip-zap" => Some(Bug::Zap),
            "skip-cache-invalidate" => Some(Bug::CacheInvalidate),
            _ => None,
        }
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bug::Flush => "skip-flush (S4: no TLB flush after a zap)",
            Bug::Zap => "skip-zap (S3c: SPTEs left in place)",
            Bug::CacheInvalidate => "skip-cache-invalidate (S2: translation caches left valid)",
        })
    }
}

/// A std-threads VMM over mmusync's public API, with ghost-state checks and planted bugs.
#[derive(Debug, clap::Parser)]
#[command(name = "std-vmm", version)]
struct Args {
    /// How long it runs, in seconds: (0, 600].
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    seconds: f64,
    /// vCPU threads (hotplugged one by one).
    #[arg(long, default_value_t = 3, value_parser = vcpus)]
    vcpus: usize,
    /// Skip one protocol step in this program's `SecondaryMmu` (it must then report a
    /// violation): skip-flush, skip-zap or skip-cache-invalidate.
    #[arg(long, value_parser = bug)]
    bug: Option<Bug>,
    /// Use SIGRTMIN+K as the IPI signal instead of the backend's default.
    #[arg(long = "ipi-signal-offset", value_name = "K")]
    signal_offset: Option<i32>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 600.0 => Ok(v),
        Ok(_) => Err("must be in (0, 600]".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn vcpus(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_VCPUS).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be 1..={MAX_VCPUS}")),
        Err(e) => Err(e.to_string()),
    }
}

fn bug(s: &str) -> Result<Bug, String> {
    Bug::parse(s).ok_or_else(|| format!("unknown bug {s}"))
}

/// The host: its page table (hva page → pfn) and the ghost record of every pfn.
struct Host {
    ptes: Mutex<HashMap<Hva, Pfn>>,
    next_pfn: AtomicU64,
    /// Per pfn: 0 while allocated (or never), else the notifier round that freed it.
    freed: Vec<AtomicU64>,
}

impl Host {
    fn new() -> Self {
        Host {
            ptes: Mutex::new(HashMap::new()),
            next_pfn: AtomicU64::new(1),
            freed: (0..MAX_PFNS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn ptes(&self) -> MutexGuard<'_, HashMap<Hva, Pfn>> {
        self.ptes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `hva_to_pfn` (get_user_pages): the page's pfn, allocating a fresh page if unmapped.
    fn resolve(&self, hva: Hva) -> Result<Pfn, Error> {
        let mut ptes = self.ptes();
        if let Some(&pfn) = ptes.get(&page_of(hva)) {
            return Ok(pfn);
        }
        let pfn = Pfn(self.next_pfn.fetch_add(1, Relaxed));
        if pfn.0 as usize >= MAX_PFNS {
            return Err(Error::OutOfMemory);
        }
        ptes.insert(page_of(hva), pfn);
        Ok(pfn)
    }

    /// Clears the host PTE of `hva`'s page, returning the page it mapped.
    fn unmap(&self, hva: Hva) -> Option<Pfn> {
        self.ptes().remove(&page_of(hva))
    }

    fn free(&self, pfn: Pfn, round: u64) {
        self.freed[pfn.0 as usize].store(round, SeqCst);
    }

    /// The round that freed `pfn`, if it is freed.
    fn freed_in(&self, pfn: Pfn) -> Option<u64> {
        match self.freed.get(pfn.0 as usize).map(|r| r.load(SeqCst)) {
            Some(0) | None => None,
            Some(round) => Some(round),
        }
    }
}

/// What one vCPU keeps: its TLB (gfn → pfn, filled from SPTEs, emptied on a TLB-flush request
/// while holding the lock) and its translation cache.
struct VcpuState {
    tlb: Mutex<HashMap<Gfn, Pfn>>,
    cache: TranslationCache<StdHal>,
    cache_hva: Hva,
}

impl VcpuState {
    fn tlb(&self) -> MutexGuard<'_, HashMap<Gfn, Pfn>> {
        self.tlb.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Default)]
struct Stats {
    faults: AtomicU64,
    fault_retries: AtomicU64,
    walks: AtomicU64,
    guest_runs: AtomicU64,
    entry_refused: AtomicU64,
    tlb_uses: AtomicU64,
    cache_uses: AtomicU64,
    cache_refreshes: AtomicU64,
    invalidations: AtomicU64,
    frees_audited: AtomicU64,
    memslot_changes: AtomicU64,
    flush_ipis: AtomicU64,
}

/// Everything the threads share.
struct World<'v> {
    host: Host,
    vm: Vm<StdHal, SLOTS>,
    registry: &'v VcpuRegistry<StdHal, MAX_VCPUS>,
    mmu: Mmu<'v>,
    vcpus: Vec<VcpuState>,
    bug: Option<Bug>,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicUsize,
    stats: Stats,
}

impl World<'_> {
    fn violation(&self, what: String) {
        self.violation_count.fetch_add(1, SeqCst);
        let mut v = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 10 {
            v.push(what);
        }
        // One is enough to fail the run: stop early.
        self.stop.store(true, SeqCst);
    }

    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }
}

/// This program's secondary MMU: the reference page table, the vCPUs' TLBs (flushed through
/// the registry) and the translation caches. A planted bug skips one step here.
impl SecondaryMmu<StdHal> for World<'_> {
    fn unmap_gfn_range(&self, guard: &MmuWriteGuard<'_, StdHal>, _slot: &Memslot, gfns: GfnRange) -> bool {
        if self.bug == Some(Bug::Zap) {
            return true;
        }
        match self.mmu.zap_ipi(guard, gfns) {
            Ok(flush) => flush,
            Err(e) => {
                self.violation(format!("zap of gfns {:#x}..{:#x} failed: {e}", gfns.start(), gfns.end()));
                true
            }
        }
    }

    fn flush_remote_tlbs(&self) {
        if self.bug == Some(Bug::Flush) {
            return;
        }
        let targets = self.registry.flush_remote_tlbs();
        self.stats.flush_ipis.fetch_add(targets.len() as u64, Relaxed);
    }

    fn invalidate_caches(&self, hvas: HvaRange) {
        if self.bug == Some(Bug::CacheInvalidate) {
            return;
        }
        for v in &self.vcpus {
            v.cache.invalidate_start(hvas);
        }
    }
}

/// xorshift64: each thread its own fixed sequence.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[derive(Debug)]
enum RunError {
    Vcpu(VcpuError),
    Mmu(Error),
    Cpu(CpuError),
    Registry(RegistryError),
    Panicked,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Vcpu(e) => write!(f, "vCPU: {e}"),
            RunError::Mmu(e) => write!(f, "MMU: {e}"),
            RunError::Cpu(e) => write!(f, "CPU registration: {e}"),
            RunError::Registry(e) => write!(f, "vCPU hotplug: {e}"),
            RunError::Panicked => write!(f, "a thread panicked"),
        }
    }
}

impl From<VcpuError> for RunError {
    fn from(e: VcpuError) -> Self {
        RunError::Vcpu(e)
    }
}
impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Mmu(e)
    }
}
impl From<CpuError> for RunError {
    fn from(e: CpuError) -> Self {
        RunError::Cpu(e)
    }
}
impl From<RegistryError> for RunError {
    fn from(e: RegistryError) -> Self {
        RunError::Registry(e)
    }
}

/// One vCPU thread: becomes a CPU, hotplugs a vCPU, and loops fault → walk/TLB fill → guest
/// run → cache use until told to stop.
fn vcpu_thread(w: &World<'_>, seed: u64) -> Result<(), RunError> {
    let reg = StdHal::register_cpu()?;
    let (index, vcpu) = w.registry.add()?;
    vcpu.load(reg.cpu())?;
    let me = &w.vcpus[index];
    me.cache.activate(me.cache_hva)?;
    let mut rng = Rng(seed);
    while !w.stopped() {
        // Requests first (vcpu_enter_guest's kvm_check_request): a TLB flush empties the TLB,
        // under its lock so the notifier's audit sees the request or the empty TLB.
        {
            let mut tlb = me.tlb();
            if vcpu.check_request(Request::TLB_FLUSH) {
                tlb.clear();
            }
        }
        let gfn = if rng.below(5) == 0 {
            Gfn(CHURN_BASES[rng.below(2) as usize].0 + rng.below(CHURN_PAGES))
        } else {
            Gfn(rng.below(RAM_PAGES))
        };
        if !me.tlb().contains_key(&gfn) && !fault_in(w, vcpu, me, gfn)? {
            continue;
        }
        run_guest(w, vcpu, me, index)?;
        use_cache(w, me, index)?;
        // More threads than cores: let the notifier and the other vCPUs (and their IPI
        // handlers) run.
        thread::yield_now();
    }
    vcpu.put()?;
    drop(reg);
    Ok(())
}

/// The fault path, then the "hardware walk" that fills the TLB: a lockless walk reading the
/// SPTE. Returns whether the gfn is now in the TLB.
fn fault_in(w: &World<'_>, vcpu: &Vcpu<StdHal>, me: &VcpuState, gfn: Gfn) -> Result<bool, RunError> {
    match w.mmu.fault(&w.vm, gfn, true, |hva| w.host.resolve(hva)) {
        Ok(FaultOutcome::Installed(_)) => w.stats.faults.fetch_add(1, Relaxed),
        Ok(FaultOutcome::Retry) => {
            w.stats.fault_retries.fetch_add(1, Relaxed);
            return Ok(false);
        }
        // The moving slot is elsewhere just now.
        Err(Error::NoMapping { .. }) => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let walk = vcpu.walk_lockless_begin()?;
    w.stats.walks.fetch_add(1, Relaxed);
    let Some(pfn) = w.mmu.walk(&walk, gfn)?.and_then(|spte| spte.pfn()) else { return Ok(false) };
    if let Some(round) = w.host.freed_in(pfn) {
        w.violation(format!(
            "STALE: a lockless walk found SPTE gfn {gfn:#x} -> pfn {pfn}, and host page {pfn} was freed in round {round}"
        ));
    }
    me.tlb().insert(gfn, pfn);
    drop(walk);
    Ok(true)
}

/// Guest mode: every access goes through the TLB.
fn run_guest(w: &World<'_>, vcpu: &Vcpu<StdHal>, me: &VcpuState, index: usize) -> Result<(), RunError> {
    let guest = match vcpu.enter_guest() {
        Ok(g) => g,
        Err(VcpuError::RequestsPending) => {
            w.stats.entry_refused.fetch_add(1, Relaxed);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    w.stats.guest_runs.fetch_add(1, Relaxed);
    let tlb = me.tlb();
    for (&gfn, &pfn) in tlb.iter().take(8) {
        w.stats.tlb_uses.fetch_add(1, Relaxed);
        if let Some(round) = w.host.freed_in(pfn) {
            w.violation(format!(
                "STALE: vCPU {index} in guest mode used its TLB entry gfn {gfn:#x} -> pfn {pfn}, and host page {pfn} was freed in round {round}"
            ));
        }
    }
    drop(tlb);
    drop(guest);
    Ok(())
}

/// The translation cache: use it while valid (holding the read guard), else refresh.
fn use_cache(w: &World<'_>, me: &VcpuState, index: usize) -> Result<(), RunError> {
    if let Some(read) = me.cache.check(me.cache_hva) {
        w.stats.cache_uses.fetch_add(1, Relaxed);
        if let Some(round) = w.host.freed_in(read.pfn()) {
            w.violation(format!(
                "STALE: vCPU {index}'s translation cache served hva {:#x} -> pfn {}, and host page {} was freed in round {round}",
                me.cache_hva,
                read.pfn(),
                read.pfn()
            ));
        }
        return Ok(());
    }
    let attempts = NonZeroUsize::MIN.saturating_add(15);
    let inv = w.vm.invalidation();
    if me
        .cache
        .try_refresh(None, attempts, inv, w.vm.active_invalidations(), |hva| w.host.resolve(hva))?
        .is_some()
    {
        w.stats.cache_refreshes.fetch_add(1, Relaxed);
    }
    Ok(())
}

/// The host page the notifier will take away next: one that some vCPU's TLB (or, every
/// fourth round, its translation cache) translates now, else a random RAM page.
fn pick_target(w: &World<'_>, round: u64, rng: &mut Rng) -> Hva {
    let online = w.registry.online().len().max(1);
    for k in 0..online {
        let v = &w.vcpus[(round as usize + k) % online];
        if round % 4 == 0 && v.cache.check(v.cache_hva).is_some() {
            return v.cache_hva;
        }
        if let Some(gfn) = v.tlb().keys().copied().filter(|&g| g.0 < RAM_PAGES).min() {
            return ram_hva(gfn);
        }
    }
    ram_hva(Gfn(rng.below(RAM_PAGES)))
}

/// Before freeing `pfn`: what `invalidate_range_start` promises once it has returned.
fn audit(w: &World<'_>, pfn: Pfn, hva: Hva, round: u64) {
    {
        let guard = w.vm.invalidation().mmu_lock().read();
        for gfn in (0..GFNS).map(Gfn) {
            if let Ok(Some(spte)) = w.mmu.table().walk(&guard, gfn) {
                if spte.pfn() == Some(pfn) {
                    w.violation(format!(
                        "round {round}: after invalidate_range_start of hva {hva:#x}, SPTE gfn {gfn:#x} still maps pfn {pfn}, about to be freed"
                    ));
                }
            }
        }
    }
    for (i, vcpu) in w.registry.online().iter().enumerate() {
        let tlb = w.vcpus[i].tlb();
        if let Some((&gfn, _)) = tlb.iter().find(|(_, &p)| p == pfn) {
            if !vcpu.requests_pending() {
                w.violation(format!(
                    "round {round}: after invalidate_range_start of hva {hva:#x}, vCPU {i}'s TLB still translates gfn {gfn:#x} -> pfn {pfn} (about to be freed) and no TLB flush is pending"
                ));
            }
        }
    }
    for (i, v) in w.vcpus.iter().enumerate() {
        if let Some(read) = v.cache.check(v.cache_hva) {
            if read.pfn() == pfn {
                w.violation(format!(
                    "round {round}: after invalidate_range_start of hva {hva:#x}, vCPU {i}'s translation cache still serves pfn {pfn} (about to be freed)"
                ));
            }
        }
    }
    w.stats.frees_audited.fetch_add(1, Relaxed);
}

/// The host kernel's side: invalidate a page, unmap it, audit, free it, end.
fn notifier_thread(w: &World<'_>) -> Result<(), RunError> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut round = 0u64;
    while !w.stopped() {
        round += 1;
        let hva = pick_target(w, round, &mut rng);
        let range = HvaRange::new(hva, Hva(hva.0 + PAGE))?;
        let open = w.vm.invalidate_range_start(w, range)?;
        // The primary MMU changes its PTE under the open invalidation (MADV_DONTNEED).
        if let Some(pfn) = w.host.unmap(hva) {
            audit(w, pfn, hva, round);
            w.host.free(pfn, round);
        }
        open.end()?;
        w.stats.invalidations.fetch_add(1, Relaxed);
        // Let the vCPUs run: two cores here, more threads than that.
        thread::sleep(Duration::from_micros(20));
    }
    Ok(())
}

/// Moves the churn slot back and forth; every third change deletes and re-creates it.
fn memslot_thread(w: &World<'_>) -> Result<(), RunError> {
    let mut at = 0;
    let mut k = 0u64;
    while !w.stopped() {
        thread::sleep(Duration::from_millis(1));
        k += 1;
        at ^= 1;
        if k % 3 == 0 {
            w.vm.set_memslot(w, SlotChange::Delete(1))?;
            w.vm.set_memslot(w, SlotChange::Create(churn_slot(CHURN_BASES[at])?))?;
            w.stats.memslot_changes.fetch_add(2, Relaxed);
        } else {
            w.vm.set_memslot(w, SlotChange::Move { id: 1, base_gfn: CHURN_BASES[at] })?;
            w.stats.memslot_changes.fetch_add(1, Relaxed);
        }
    }
    Ok(())
}

fn run(args: &Args) -> Result<ExitCode, RunError> {
    if let Some(k) = args.signal_offset {
        StdHal::set_ipi_signal(libc::SIGRTMIN() + k)?;
    }
    let registry: VcpuRegistry<StdHal, MAX_VCPUS> = VcpuRegistry::new(StdHal);
    let w = World {
        host: Host::new(),
        vm: Vm::new(StdHal),
        registry: &registry,
        // The MMU's own zaps wait for every slot of the registry, hotplugged or not yet.
        mmu: ReferenceMmu::new(StdHal, BoxAlloc, registry.all())?,
        vcpus: (0..MAX_VCPUS)
            .map(|i| VcpuState {
                tlb: Mutex::new(HashMap::new()),
                cache: TranslationCache::new(StdHal),
                cache_hva: ram_hva(Gfn(RAM_PAGES - 1 - i as u64)),
            })
            .collect(),
        bug: args.bug,
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        violation_count: AtomicUsize::new(0),
        stats: Stats::default(),
    };
    let ram = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: RAM_PAGES, hva: RAM_HVA })?;
    w.vm.set_memslot(&w, SlotChange::Create(ram))?;
    w.vm.set_memslot(&w, SlotChange::Create(churn_slot(CHURN_BASES[0])?))?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.seconds);
    let outcome: Vec<Result<(), RunError>> = thread::scope(|s| {
        let mut threads = vec![s.spawn(|| notifier_thread(&w)), s.spawn(|| memslot_thread(&w))];
        // vCPU hotplug: one more vCPU every 20 ms while the VM runs.
        for i in 0..args.vcpus {
            let w = &w;
            threads.push(s.spawn(move || vcpu_thread(w, 0x9e37_79b9 + 7 * i as u64)));
            thread::sleep(Duration::from_millis(20));
        }
        while Instant::now() < deadline && !w.stopped() {
            thread::sleep(Duration::from_millis(5));
        }
        w.stop.store(true, SeqCst);
        threads.into_iter().map(|t| t.join().unwrap_or(Err(RunError::Panicked))).collect()
    });
    for r in outcome {
        r?;
    }
    // After the run: no SPTE may map a freed page.
    {
        let guard = w.vm.invalidation().mmu_lock().read();
        for gfn in (0..GFNS).map(Gfn) {
            if let Some(pfn) = w.mmu.table().walk(&guard, gfn)?.and_then(|s| s.pfn()) {
                if let Some(round) = w.host.freed_in(pfn) {
                    w.violation(format!(
                        "after the run: SPTE gfn {gfn:#x} -> pfn {pfn}, freed in round {round}"
                    ));
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let st = &w.stats;
    let n = |c: &AtomicU64| c.load(Relaxed);
    println!(
        "std-vmm: {} vCPUs (hotplugged), {:.2} s, IPI signal {}: {} invalidations ({} host pages freed after an audit), \
         {} faults ({} retried), {} lockless walks, {} guest runs ({} refused: request pending) using {} TLB entries, \
         {} translation-cache uses, {} refreshes, {} memslot changes, {} flush IPIs",
        w.registry.online().len(),
        elapsed.as_secs_f64(),
        StdHal::ipi_signal(),
        n(&st.invalidations),
        n(&st.frees_audited),
        n(&st.faults),
        n(&st.fault_retries),
        n(&st.walks),
        n(&st.guest_runs),
        n(&st.entry_refused),
        n(&st.tlb_uses),
        n(&st.cache_uses),
        n(&st.cache_refreshes),
        n(&st.memslot_changes),
        n(&st.flush_ipis),
    );
    let count = w.violation_count.load(SeqCst);
    let violations = w.violations.lock().unwrap_or_else(|p| p.into_inner());
    for v in violations.iter() {
        println!("VIOLATION {v}");
    }
    match (count, args.bug) {
        (0, None) => {
            println!("ok: no translation to a freed host page was reachable or used");
            Ok(ExitCode::SUCCESS)
        }
        (0, Some(bug)) => {
            println!("planted bug {bug} was NOT detected");
            Ok(ExitCode::from(3))
        }
        (c, bug) => {
            let planted = bug.map(|b| format!(" (planted bug: {b})")).unwrap_or_default();
            println!("FAILED: {c} violation(s){planted}");
            Ok(ExitCode::from(1))
        }
    }
}

fn main() -> ExitCode {
    let args = <Args as clap::Parser>::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("std-vmm: {e}");
            ExitCode::from(2)
        }
    }
}
