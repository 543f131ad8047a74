//! A small VMM on real KVM that uses mmusync's translation cache for its device emulation, and
//! checks itself (the `kvm-vmm` binary).
//!
//! * **vCPUs**: the harness's guest runs the `@workload` command
//!   ([`mmusync_kvm_shared::WORKLOAD`]) on every vCPU: rounds of writes and reads of words of the
//!   data region, a memslot of its own ([`WORKLOAD_GPA`], [`WORKLOAD_PAGES`] pages of host
//!   memory mapped by this module), real guest code on real vCPUs.
//! * **device-emulation threads** (not vCPUs: host threads of the VMM, like a virtio backend):
//!   each owns [`DEVICE_QUEUES`] queues, each a guest-physical page it reads and writes
//!   ("DMA"). A queue translates gpa → host pointer in two cached steps, both mmusync's:
//!   gfn → hva through a [`SlotCache`] stamped with the memslot generation, inside an SRCU read
//!   section of the memslots, and hva → host page through a [`TranslationCache`]
//!   (`gfn_to_pfn_cache`; its "pfn" here is the host address of the page, which the VMM uses as
//!   a pointer), refreshed when invalid. The device writes a word through the pointer and reads
//!   it back while it holds the cache's read guard. Two queues sit in the data region, two in
//!   the "churn" memslot, which moves and is deleted and re-created.
//! * **a balloon thread**: takes pages of the data or churn memory away from the guest, the
//!   way a VMM must so that its own caches never see it: [`Vm::invalidate_range_start`] (the
//!   notifier path: S1, the caches' S2, the memslot's range), `madvise(MADV_DONTNEED)` on the
//!   host mapping, the ghost epoch of the page bumped, `end`. It prefers pages some queue has
//!   cached now.
//! * **a memslot thread**: moves the churn memslot between two guest-physical bases, and every
//!   third change deletes it, drops its host memory through the notifier path as above, and
//!   re-creates it at the other base. Each change is made on both sides: the KVM memslot
//!   (`KVM_SET_USER_MEMORY_REGION`, where KVM's own `kvm_set_memslot` waits out the kernel's
//!   notifier invalidations) and mmusync's [`Vm::set_memslot`] (P3: waits out the VMM's
//!   invalidations and SRCU readers). A deletion or move is made on both sides before the
//!   old range is retired in the ghost state; a creation is announced to the ghost state first.
//!
//! **The check.** Ghost state, never read by the protocol code: per host page an epoch, bumped
//! once `invalidate_range_start` has returned for it; per churn base whether it is live, and
//! the ghost clock at which it was retired. A device use (holding the cache's read guard,
//! inside its SRCU read section) is **stale** when the page's epoch moved since the refresh
//! that validated the cache entry, when its gfn → hva answer comes from a churn base retired
//! before the use's read section began, or when the word it wrote does not read back (its page
//! was dropped under it). Every stale use is counted and printed; a correct VMM has none.
//!
//! **Planted bugs** ([`Bug`]), each one skipped step of this VMM's own integration code:
//! `skip-cache-invalidate` (S2 not run: the translation caches stay valid across an
//! invalidation), `no-notifier` (the balloon madvises without `invalidate_range_start`/`end`),
//! `ignore-memslot-generation` (the devices keep their gfn → hva answer across memslot
//! changes). The balloon and the memslot thread aim at what the devices hold, so each is seen
//! within the first rounds.

use crate::error::KvmError;
use crate::vm::{End, Limits, RunSpec, Vm as KvmVm};
use mmusync::hal::std::StdHal;
use mmusync::lock::MmuWriteGuard;
use mmusync::memslot::{Memslot, MemslotConfig, SlotCache, SlotChange};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::pfncache::TranslationCache;
use mmusync::{Gfn, GfnRange, Hva, HvaRange, Pfn};
use mmusync_kvm_shared::{WORKLOAD, WORKLOAD_GPA, WORKLOAD_GUEST_BYTES, WORKLOAD_PAGES};
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Queues (cached guest pages) per device thread.
pub const DEVICE_QUEUES: usize = 4;
/// The most device threads.
pub const MAX_DEVICES: usize = 8;
const PAGE: u64 = 4096;
/// Pages of the churn memslot.
const CHURN_PAGES: u64 = 16;
/// The churn memslot's two guest-physical bases (above the data region, inside the guest's
/// identity map; the guest never touches them).
const CHURN_GPAS: [u64; 2] = [0x1800_0000, 0x1900_0000];
/// KVM memslot ids (0 is the harness's RAM).
const KVM_DATA_SLOT: u32 = 1;
const KVM_CHURN_SLOT: u32 = 2;
/// mmusync memslot ids.
const DATA_SLOT: u16 = 0;
const CHURN_SLOT: u16 = 1;

/// A protocol step the VMM's own integration code skips (`--bug`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// S2 skipped: `SecondaryMmu::invalidate_caches` leaves the translation caches valid.
    SkipCacheInvalidate,
    /// The balloon madvises pages without `invalidate_range_start`/`end` around it.
    NoNotifier,
    /// The devices keep their gfn → hva answers across memslot changes (no generation check).
    IgnoreMemslotGeneration,
}

impl Bug {
    /// Every planted bug.
    pub const ALL: [Bug; 3] = [Bug::SkipCacheInvalidate, Bug::NoNotifier, Bug::IgnoreMemslotGeneration];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::SkipCacheInvalidate => "skip-cache-invalidate",
            Bug::NoNotifier => "no-notifier",
            Bug::IgnoreMemslotGeneration => "ignore-memslot-generation",
        }
    }

    /// The bug named `name`.
    pub fn parse(name: &str) -> Option<Bug> {
        Bug::ALL.into_iter().find(|b| b.name() == name)
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bug::SkipCacheInvalidate => "skip-cache-invalidate (S2: translation caches left valid)",
            Bug::NoNotifier => "no-notifier (madvise without invalidate_range_start/end)",
            Bug::IgnoreMemslotGeneration => {
                "ignore-memslot-generation (gfn -> hva kept across memslot changes)"
            }
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// vCPUs (2 up to the host's CPUs).
    pub vcpus: usize,
    /// Device-emulation threads (1 to [`MAX_DEVICES`]).
    pub devices: usize,
    /// How long the guest runs.
    pub duration: Duration,
    /// The planted bug, if any.
    pub bug: Option<Bug>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// vCPUs.
    pub vcpus: usize,
    /// Device threads.
    pub devices: usize,
    /// Guest memory accesses per vCPU (writes and reads of the data region).
    pub vcpu_accesses: Vec<u64>,
    /// Workload rounds the guest completed.
    pub guest_rounds: u64,
    /// Device uses of a valid cached translation (a word written and read back).
    pub device_uses: u64,
    /// Translation-cache refreshes that validated an entry.
    pub refreshes: u64,
    /// Bounded refreshes that raced with invalidations every time (tried again later).
    pub refresh_races: u64,
    /// Device lookups that found no memslot (the churn slot was elsewhere).
    pub no_slot: u64,
    /// Invalidations (`invalidate_range_start`/`end` pairs) run.
    pub invalidations: u64,
    /// Pages given back to the host (`madvise(MADV_DONTNEED)`).
    pub pages_dropped: u64,
    /// Memslot changes (each made on KVM and on mmusync's `Vm`).
    pub memslot_changes: u64,
    /// Stale uses found (must be 0).
    pub stale_uses: u64,
    /// The first stale uses, as text.
    pub violations: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// Anonymous host memory that backs a memslot.
struct HostMem {
    base: u64,
    size: u64,
}

impl HostMem {
    fn new(size: u64) -> Result<Self, KvmError> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(KvmError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(HostMem { base: p as u64, size })
    }

    fn contains(&self, hva: u64) -> bool {
        hva >= self.base && hva < self.base + self.size
    }

    /// Drops the contents of `[hva, hva + len)` (the pages read as zero afterwards).
    fn drop_pages(&self, hva: u64, len: u64) -> Result<(), String> {
        if !(self.contains(hva) && hva + len <= self.base + self.size) {
            return Err(format!("madvise range {hva:#x}+{len:#x} outside the region"));
        }
        // SAFETY: a range of this mapping (checked); MADV_DONTNEED only drops its contents,
        // and the mapping stays valid.
        if unsafe { libc::madvise(hva as *mut libc::c_void, len as usize, libc::MADV_DONTNEED) } != 0 {
            return Err(format!("madvise: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

impl Drop for HostMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; its KVM memslot is deleted before (see `run`).
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size as usize) };
    }
}

/// One device queue: a guest page and the translation cache of its host page.
struct Queue {
    gfn: Gfn,
    /// Which churn base its gfn lies in, if it is a churn queue.
    churn: Option<usize>,
    cache: TranslationCache<StdHal>,
    /// The hva the cache was last activated for (ghost, for the balloon's aim), 0 if none.
    hva: AtomicU64,
}

/// The churn memslot's ghost layout.
#[derive(Default)]
struct Layout {
    live: [bool; 2],
    retired_at: [u64; 2],
}

#[derive(Default)]
struct Stats {
    device_uses: AtomicU64,
    refreshes: AtomicU64,
    refresh_races: AtomicU64,
    no_slot: AtomicU64,
    invalidations: AtomicU64,
    pages_dropped: AtomicU64,
    memslot_changes: AtomicU64,
}

struct World {
    vm: Vm<StdHal, 4>,
    data: HostMem,
    churn: HostMem,
    queues: Vec<Queue>,
    /// Ghost: per host page (data pages, then churn pages), bumped once an invalidation of it
    /// has started and its contents are dropped.
    epochs: Vec<AtomicU64>,
    layout: Mutex<Layout>,
    /// Ghost clock of memslot retirements.
    clock: AtomicU64,
    bug: Option<Bug>,
    stop: AtomicBool,
    stale: AtomicU64,
    violations: Mutex<Vec<String>>,
    stats: Stats,
}

impl World {
    fn stale_use(&self, what: String) {
        self.stale.fetch_add(1, SeqCst);
        let mut v = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 10 {
            v.push(what);
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(SeqCst)
    }

    /// The ghost epoch index of host page `hva`.
    fn page_index(&self, hva: u64) -> Option<usize> {
        if self.data.contains(hva) {
            Some(((hva - self.data.base) / PAGE) as usize)
        } else if self.churn.contains(hva) {
            Some((WORKLOAD_PAGES + (hva - self.churn.base) / PAGE) as usize)
        } else {
            None
        }
    }

    fn epoch(&self, hva: u64) -> u64 {
        self.page_index(hva).and_then(|i| self.epochs.get(i)).map_or(0, |e| e.load(SeqCst))
    }

    /// Takes `[hva, hva + len)` away from the guest through the notifier path (unless the
    /// `no-notifier` bug skips it): start, madvise, ghost epochs bumped, end.
    fn balloon(&self, mem: &HostMem, hva: u64, len: u64) -> Result<(), String> {
        let range = HvaRange::new(Hva(hva), Hva(hva + len)).map_err(|e| format!("range: {e}"))?;
        let open = if self.bug == Some(Bug::NoNotifier) {
            None
        } else {
            Some(
                self.vm
                    .invalidate_range_start(self, range)
                    .map_err(|e| format!("invalidate_range_start: {e}"))?,
            )
        };
        mem.drop_pages(hva, len)?;
        for page in (hva..hva + len).step_by(PAGE as usize) {
            if let Some(e) = self.page_index(page).and_then(|i| self.epochs.get(i)) {
                e.fetch_add(1, SeqCst);
            }
        }
        self.stats.pages_dropped.fetch_add(len / PAGE, Relaxed);
        if let Some(open) = open {
            open.end().map_err(|e| format!("invalidate_range_end: {e}"))?;
            self.stats.invalidations.fetch_add(1, Relaxed);
        }
        Ok(())
    }
}

/// The VMM's secondary MMU as mmusync sees it: translation caches only. KVM's own stage-2
/// tables are kept in sync by the kernel's MMU notifier, not by this process.
impl SecondaryMmu<StdHal> for World {
    fn unmap_gfn_range(&self, _: &MmuWriteGuard<'_, StdHal>, _: &Memslot, _: GfnRange) -> bool {
        false
    }

    fn flush_remote_tlbs(&self) {}

    fn invalidate_caches(&self, hvas: HvaRange) {
        if self.bug != Some(Bug::SkipCacheInvalidate) {
            for q in &self.queues {
                q.cache.invalidate_start(hvas);
            }
        }
    }
}

/// A queue's private state in its device thread.
#[derive(Default)]
struct QueueState {
    slot_cache: SlotCache,
    /// The gfn → hva answer kept by the `ignore-memslot-generation` bug.
    kept_hva: Option<Hva>,
    active_hva: Option<Hva>,
    /// The page's ghost epoch when the entry now cached was resolved.
    resolved_epoch: u64,
    counter: u64,
}

fn device_thread(w: &World, d: usize) -> Result<(), String> {
    let mut states: Vec<QueueState> = (0..DEVICE_QUEUES).map(|_| QueueState::default()).collect();
    let attempts = NonZeroUsize::MIN.saturating_add(15);
    let mut k = 0usize;
    while !w.stopped() {
        k += 1;
        let qi = k % DEVICE_QUEUES;
        let q = &w.queues[d * DEVICE_QUEUES + qi];
        let s = &mut states[qi];
        // The ghost clock before the read section: a churn base retired at or before it is
        // gone from every memslot set this section can see.
        let t0 = w.clock.load(SeqCst);
        let slots = w.vm.memslots().read();
        let hva = match (w.bug, s.kept_hva) {
            (Some(Bug::IgnoreMemslotGeneration), Some(hva)) => Some(hva),
            _ => s.slot_cache.lookup(&slots, q.gfn),
        };
        let Some(hva) = hva else {
            w.stats.no_slot.fetch_add(1, Relaxed);
            drop(slots);
            std::thread::yield_now();
            continue;
        };
        if w.bug == Some(Bug::IgnoreMemslotGeneration) {
            s.kept_hva = Some(hva);
        }
        if s.active_hva != Some(hva) {
            q.cache.activate(hva).map_err(|e| format!("activate: {e}"))?;
            q.hva.store(hva.0, SeqCst);
            s.active_hva = Some(hva);
        }
        // Invalid (never resolved, or invalidated since): refresh, then use it at once.
        if q.cache.check(hva).is_none() {
            let mut epoch = 0;
            let refreshed =
                q.cache.try_refresh(None, attempts, w.vm.invalidation(), w.vm.active_invalidations(), |h| {
                    epoch = w.epoch(h.0);
                    // hva_to_pfn: fault the page in; the "pfn" is its host address.
                    // SAFETY: `h` is the hva this queue activated: a page of the data or churn
                    // mapping, mapped for the whole run.
                    unsafe { std::ptr::read_volatile(h.0 as *const u64) };
                    Ok(Pfn(h.0))
                });
            match refreshed {
                Ok(Some(_)) => {
                    s.resolved_epoch = epoch;
                    w.stats.refreshes.fetch_add(1, Relaxed);
                }
                Ok(None) => {
                    w.stats.refresh_races.fetch_add(1, Relaxed);
                }
                Err(e) => return Err(format!("refresh: {e}")),
            }
        }
        if let Some(read) = q.cache.check(hva) {
            w.stats.device_uses.fetch_add(1, Relaxed);
            let now = w.epoch(hva.0);
            if now != s.resolved_epoch {
                w.stale_use(format!(
                    "STALE: device {d} queue {qi} used gpa {:#x} -> host page {hva:#x} resolved at epoch {}, \
                     but the page was invalidated and dropped since (epoch {now})",
                    q.gfn.0 * PAGE,
                    s.resolved_epoch
                ));
            }
            if let Some(base) = q.churn {
                let l = w.layout.lock().unwrap_or_else(|p| p.into_inner());
                if !l.live[base] && l.retired_at[base] <= t0 {
                    w.stale_use(format!(
                        "STALE: device {d} queue {qi} used gpa {:#x} -> hva {hva:#x}, but that memslot \
                         was moved or deleted (ghost clock {}) before this use began (clock {t0})",
                        q.gfn.0 * PAGE,
                        l.retired_at[base]
                    ));
                }
            }
            s.counter += 1;
            let value = ((d as u64) << 56) | ((qi as u64) << 48) | (s.counter & 0xffff_ffff_ffff);
            let word = read.pfn().0 + WORKLOAD_GUEST_BYTES + 8 * (d * DEVICE_QUEUES + qi) as u64;
            // SAFETY: `read.pfn()` is the host address of a page of the data or churn mapping
            // (the only hvas the memslots name), which stays mapped for the whole run, and the
            // word lies in the device part of that page (past the guest's bytes; one word per
            // queue, so no other thread writes it).
            let back = unsafe {
                std::ptr::write_volatile(word as *mut u64, value);
                std::ptr::read_volatile(word as *const u64)
            };
            if back != value {
                w.stale_use(format!(
                    "STALE: device {d} queue {qi} wrote {value:#x} through its cached translation of gpa {:#x} \
                     and read back {back:#x}: the page was dropped while in use",
                    q.gfn.0 * PAGE
                ));
            }
            drop(read);
        }
        drop(slots);
        std::thread::yield_now();
    }
    Ok(())
}

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn balloon_thread(w: &World) -> Result<(), String> {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut k = 0usize;
    while !w.stopped() {
        k += 1;
        // Every other time, aim at a page a queue has cached now; else a random data page.
        let q = &w.queues[(k / 2) % w.queues.len()];
        let cached = q.hva.load(SeqCst);
        let hva = if k % 2 == 0 && cached != 0 && q.cache.check(Hva(cached)).is_some() {
            cached
        } else {
            w.data.base + rng.below(WORKLOAD_PAGES) * PAGE
        };
        let mem = if w.churn.contains(hva) { &w.churn } else { &w.data };
        w.balloon(mem, hva, PAGE)?;
        std::thread::sleep(Duration::from_micros(300));
    }
    Ok(())
}

/// Applies `change` to both the KVM memslot and mmusync's `Vm`.
struct Slots<'a> {
    w: &'a World,
    ctl: &'a crate::vm::MemslotControl,
}

impl Slots<'_> {
    fn kvm(&self, gpa: u64, size: u64) -> Result<(), String> {
        // SAFETY: the churn mapping is this process's memory, mapped read-write until after
        // the slot is deleted at the end of `run`.
        unsafe { self.ctl.set(KVM_CHURN_SLOT, gpa, size, self.w.churn.base) }.map_err(|e| e.to_string())
    }

    fn mmusync(&self, change: SlotChange) -> Result<(), String> {
        self.w.vm.set_memslot(self.w, change).map_err(|e| format!("set_memslot: {e}"))?;
        self.w.stats.memslot_changes.fetch_add(1, Relaxed);
        Ok(())
    }

    fn live(&self, base: usize) {
        self.w.layout.lock().unwrap_or_else(|p| p.into_inner()).live[base] = true;
    }

    fn retire(&self, base: usize) {
        let mut l = self.w.layout.lock().unwrap_or_else(|p| p.into_inner());
        l.live[base] = false;
        l.retired_at[base] = self.w.clock.fetch_add(1, SeqCst) + 1;
    }
}

fn memslot_thread(w: &World, ctl: &crate::vm::MemslotControl) -> Result<(), String> {
    let s = Slots { w, ctl };
    let mut at = 0usize;
    let mut k = 0u64;
    let size = CHURN_PAGES * PAGE;
    while !w.stopped() {
        std::thread::sleep(Duration::from_millis(2));
        k += 1;
        let to = at ^ 1;
        if k % 3 == 0 {
            // Delete (both sides), give the memory back through the notifier, re-create at
            // the other base.
            s.kvm(CHURN_GPAS[at], 0)?;
            s.mmusync(SlotChange::Delete(CHURN_SLOT))?;
            s.retire(at);
            w.balloon(&w.churn, w.churn.base, size)?;
            s.live(to);
            let slot = Memslot::new(MemslotConfig {
                id: CHURN_SLOT,
                base_gfn: Gfn(CHURN_GPAS[to] / PAGE),
                npages: CHURN_PAGES,
                hva: Hva(w.churn.base),
            })
            .map_err(|e| format!("memslot: {e}"))?;
            s.mmusync(SlotChange::Create(slot))?;
            s.kvm(CHURN_GPAS[to], size)?;
        } else {
            s.live(to);
            s.kvm(CHURN_GPAS[to], size)?;
            s.mmusync(SlotChange::Move { id: CHURN_SLOT, base_gfn: Gfn(CHURN_GPAS[to] / PAGE) })?;
            s.retire(at);
        }
        at = to;
    }
    Ok(())
}

/// Runs the VMM (see the module documentation). `Err`: a setup or harness failure (not a stale
/// use, which the report counts).
pub fn run(cfg: &Config) -> Result<Report, KvmError> {
    if !(1..=MAX_DEVICES).contains(&cfg.devices) {
        return Err(KvmError::Vmm(format!(
            "{} device threads asked for; allowed 1..={MAX_DEVICES}",
            cfg.devices
        )));
    }
    let mut kvm = KvmVm::new(cfg.vcpus)?;
    let ctl = kvm.memslot_control()?;
    let data = HostMem::new(WORKLOAD_PAGES * PAGE)?;
    let churn = HostMem::new(CHURN_PAGES * PAGE)?;
    let queues = (0..cfg.devices * DEVICE_QUEUES)
        .map(|i| {
            let (d, qi) = ((i / DEVICE_QUEUES) as u64, i % DEVICE_QUEUES);
            let (gfn, churn) = match qi {
                0 | 1 => (WORKLOAD_GPA / PAGE + (d * 2 + qi as u64) * 5 % WORKLOAD_PAGES, None),
                c => (CHURN_GPAS[c - 2] / PAGE + (d * 3 + 1) % CHURN_PAGES, Some(c - 2)),
            };
            Queue { gfn: Gfn(gfn), churn, cache: TranslationCache::new(StdHal), hva: AtomicU64::new(0) }
        })
        .collect();
    let w = World {
        vm: Vm::new(StdHal),
        epochs: (0..WORKLOAD_PAGES + CHURN_PAGES).map(|_| AtomicU64::new(0)).collect(),
        data,
        churn,
        queues,
        layout: Mutex::new(Layout { live: [true, false], retired_at: [0, 0] }),
        clock: AtomicU64::new(0),
        bug: cfg.bug,
        stop: AtomicBool::new(false),
        stale: AtomicU64::new(0),
        violations: Mutex::new(Vec::new()),
        stats: Stats::default(),
    };
    let setup = |e: String| KvmError::Vmm(format!("setup: {e}"));
    let data_slot = Memslot::new(MemslotConfig {
        id: DATA_SLOT,
        base_gfn: Gfn(WORKLOAD_GPA / PAGE),
        npages: WORKLOAD_PAGES,
        hva: Hva(w.data.base),
    })
    .map_err(|e| setup(e.to_string()))?;
    let churn_slot = Memslot::new(MemslotConfig {
        id: CHURN_SLOT,
        base_gfn: Gfn(CHURN_GPAS[0] / PAGE),
        npages: CHURN_PAGES,
        hva: Hva(w.churn.base),
    })
    .map_err(|e| setup(e.to_string()))?;
    w.vm.set_memslot(&w, SlotChange::Create(data_slot)).map_err(|e| setup(e.to_string()))?;
    w.vm.set_memslot(&w, SlotChange::Create(churn_slot)).map_err(|e| setup(e.to_string()))?;
    // SAFETY: both are this process's read-write mappings, alive until the slots are deleted
    // below (before `w`, which owns them, is dropped).
    unsafe {
        ctl.set(KVM_DATA_SLOT, WORKLOAD_GPA, WORKLOAD_PAGES * PAGE, w.data.base)?;
        ctl.set(KVM_CHURN_SLOT, CHURN_GPAS[0], CHURN_PAGES * PAGE, w.churn.base)?;
    }

    let spec = RunSpec {
        scenario: WORKLOAD.into(),
        mutant: None,
        first_round: 0,
        rounds: u64::MAX,
        jitter: 0,
        seed: 0,
        trace: false,
    };
    let started = Instant::now();
    let limits = Limits { hang: Duration::from_secs(60), deadline: Some(started + cfg.duration) };
    let (guest, host): (Result<_, KvmError>, Vec<Result<(), String>>) = std::thread::scope(|sc| {
        let w = &w;
        let ctl = &ctl;
        let mut threads = vec![sc.spawn(move || balloon_thread(w)), sc.spawn(move || memslot_thread(w, ctl))];
        for d in 0..cfg.devices {
            threads.push(sc.spawn(move || device_thread(w, d)));
        }
        let guest = kvm.run(&spec, limits);
        w.stop.store(true, SeqCst);
        let host = threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a VMM thread panicked".into())))
            .collect();
        (guest, host)
    });
    let elapsed = started.elapsed();
    // Delete the data memslots before their memory goes (whatever happened).
    let churn_gpa = {
        let l = w.layout.lock().unwrap_or_else(|p| p.into_inner());
        if l.live[1] {
            CHURN_GPAS[1]
        } else {
            CHURN_GPAS[0]
        }
    };
    // SAFETY: deleting (size 0) maps nothing.
    let deleted = unsafe {
        ctl.set(KVM_DATA_SLOT, WORKLOAD_GPA, 0, w.data.base).and(ctl.set(
            KVM_CHURN_SLOT,
            churn_gpa,
            0,
            w.churn.base,
        ))
    };
    let guest = guest?;
    deleted?;
    for r in host {
        r.map_err(KvmError::Vmm)?;
    }
    if guest.end != End::Done {
        return Err(KvmError::Vmm(format!(
            "the guest did not finish its workload: {:?} ({})",
            guest.end,
            guest.vcpu_lines()
        )));
    }
    let violations = w.violations.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let st = &w.stats;
    let n = |c: &AtomicU64| c.load(Relaxed);
    Ok(Report {
        vcpus: cfg.vcpus,
        devices: cfg.devices,
        vcpu_accesses: guest.vcpus.iter().map(|v| v.accesses).collect(),
        guest_rounds: guest.rounds_done,
        device_uses: n(&st.device_uses),
        refreshes: n(&st.refreshes),
        refresh_races: n(&st.refresh_races),
        no_slot: n(&st.no_slot),
        invalidations: n(&st.invalidations),
        pages_dropped: n(&st.pages_dropped),
        memslot_changes: n(&st.memslot_changes),
        stale_uses: w.stale.load(SeqCst),
        violations,
        elapsed,
    })
}
