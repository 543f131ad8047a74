//! mmusync driven by a real host event source: userfaultfd events on real guest memory.
//!
//! The guest RAM is an anonymous `mmap` of this process, registered with a userfaultfd that
//! asks for `UFFD_FEATURE_EVENT_REMOVE` and `UFFD_FEATURE_EVENT_UNMAP` (mode write-protect,
//! with nothing write-protected: no page fault is ever forwarded, only the events). The VM's
//! one memslot maps that memory.
//!
//! * **a balloon thread** gives pages back to the host: `madvise(MADV_DONTNEED)` (a REMOVE
//!   event) and, one time in four, `munmap` followed by a fresh `mmap` at the same address
//!   (an UNMAP event). It prefers the page some consumer's translation cache holds.
//! * **a monitor thread** reads the userfaultfd and turns each REMOVE/UNMAP range into
//!   `Vm::invalidate_range_start` … `end`, with this program's [`SecondaryMmu`]: translation
//!   caches only (no SPTEs here; `std-vmm` has those).
//! * **consumer threads** each keep a [`TranslationCache`] of one guest page: hva → the
//!   page's real pfn, read from `/proc/self/pagemap` (root sees real pfns). A refresh touches
//!   the page and reads its pfn.
//!
//! **The check.** Each page has a ghost epoch that the monitor bumps once
//! `invalidate_range_start` has returned for a range holding it. A consumer that uses its
//! cache (holding the read guard) and finds the epoch moved since the refresh that validated
//! the entry has been served a translation an invalidation had revoked: a violation. Before
//! bumping, the monitor also audits that no cache of the range is still valid.
//! `--bug skip-cache-invalidate` skips S2 (the cache invalidation) in this program's
//! `SecondaryMmu`: the audit reports it at the first event on a cached page, exit 1.
//!
//! **What userfaultfd cannot do.** The kernel sends REMOVE/UNMAP, waits until the monitor has
//! *read* the event, and then zaps the pages: it does not wait for the invalidation. So in a
//! window after the read, a cache may still hand out the old pfn although the kernel has
//! already dropped the page (KVM's in-kernel MMU notifier has no such window: it runs before
//! the zap). The consumers measure it: a valid entry whose pfn differs from pagemap's answer
//! is counted as a "window" use and reported, not failed. A userspace VMM that must never use a
//! dropped page has to bracket its own `madvise`/`munmap` calls with the invalidation.
//!
//! ```text
//! uffd-vmm [--seconds S] [--consumers N] [--bug skip-cache-invalidate]
//! ```
//! Exit status: 0 no violation; 1 violations; 2 bad arguments or a setup error (userfaultfd
//! not permitted, say); 3 the planted bug went unnoticed.

use mmusync::{
    Error, Gfn, GfnRange, Hva, HvaRange, Memslot, MemslotConfig, MmuWriteGuard, Pfn, SecondaryMmu,
    SlotChange, StdHal, TranslationCache, Vm,
};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Mutex, RwLock};
use std::thread;
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
const PAGES: u64 = 64;
const MAX_CONSUMERS: usize = 8;

/// The userfaultfd ABI (`<linux/userfaultfd.h>`), values checked against the kernel header.
mod uffd {
    pub const API: u64 = 0xaa;
    pub const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
    pub const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
    pub const REGISTER_MODE_WP: u64 = 1 << 1;
    /// `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
    pub const IOCTL_API: u64 = 0xc018_aa3f;
    /// `_IOWR(0xAA, 0x00, struct uffdio_register)`.
    pub const IOCTL_REGISTER: u64 = 0xc020_aa00;
    pub const EVENT_PAGEFAULT: u8 = 0x12;
    pub const EVENT_REMOVE: u8 = 0x15;
    pub const EVENT_UNMAP: u8 = 0x16;

    /// `struct uffdio_api`.
    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }

    /// `struct uffdio_register`.
    #[repr(C)]
    pub struct Register {
        pub start: u64,
        pub len: u64,
        pub mode: u64,
        pub ioctls: u64,
    }

    /// `struct uffd_msg` is 32 bytes: the event in byte 0, `arg.remove.start`/`end` (and
    /// `arg.pagefault.address` at 16) as native-endian u64s at bytes 8 and 16.
    pub const MSG_SIZE: usize = 32;
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// Registers `[start, start + len)` with the userfaultfd (write-protect mode: only events).
fn register(fd: &OwnedFd, start: u64, len: u64) -> std::io::Result<()> {
    let mut reg = uffd::Register { start, len, mode: uffd::REGISTER_MODE_WP, ioctls: 0 };
    // SAFETY: UFFDIO_REGISTER reads and writes a `struct uffdio_register`, which `reg` is
    // (repr(C), the kernel's layout); the fd is a userfaultfd.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), uffd::IOCTL_REGISTER as _, &mut reg) };
    if rc != 0 {
        return Err(errno());
    }
    Ok(())
}

/// A userfaultfd for this process with the REMOVE and UNMAP events.
fn open_uffd() -> std::io::Result<OwnedFd> {
    // SAFETY: the raw system call takes flags only.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let want = uffd::FEATURE_EVENT_REMOVE | uffd::FEATURE_EVENT_UNMAP;
    let mut api = uffd::Api { api: uffd::API, features: want, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes a `struct uffdio_api`, which `api` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), uffd::IOCTL_API as _, &mut api) } != 0 {
        return Err(errno());
    }
    if api.features & want != want {
        return Err(std::io::Error::other(format!("kernel lacks features {:#x}", want & !api.features)));
    }
    Ok(fd)
}

/// An anonymous read-write mapping of `len` bytes at `at` (`MAP_FIXED`) or anywhere.
fn map(at: Option<u64>, len: u64) -> std::io::Result<u64> {
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | if at.is_some() { libc::MAP_FIXED } else { 0 };
    // SAFETY: an anonymous mapping; with MAP_FIXED the caller names a range of its own
    // guest memory that nothing else uses (the balloon re-maps a page it just unmapped).
    let p = unsafe {
        libc::mmap(
            at.unwrap_or(0) as *mut libc::c_void,
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(errno());
    }
    Ok(p as u64)
}

/// The guest memory, and the lock that keeps it mapped while someone touches it.
struct Guest {
    base: Hva,
    /// Read: a page is being touched; write: the balloon unmaps and re-maps a page.
    mm: RwLock<()>,
    pagemap: File,
}

impl Guest {
    fn hva(&self, page: u64) -> Hva {
        Hva(self.base.0 + page * PAGE)
    }

    fn page_of(&self, hva: Hva) -> u64 {
        (hva.0 - self.base.0) / PAGE
    }

    /// The real pfn mapping `hva` now, if present (`/proc/self/pagemap`; no memory access).
    fn pfn_now(&self, hva: Hva) -> Option<Pfn> {
        let mut entry = [0u8; 8];
        self.pagemap.read_exact_at(&mut entry, hva.0 / PAGE * 8).ok()?;
        let e = u64::from_ne_bytes(entry);
        (e >> 63 == 1).then_some(e & ((1 << 55) - 1)).filter(|&pfn| pfn != 0).map(Pfn)
    }

    /// `hva_to_pfn`: faults the page in (a write) and returns its pfn. [`Error::Unmapped`]
    /// if the balloon keeps dropping it between the write and the pagemap read.
    fn resolve(&self, hva: Hva) -> Result<Pfn, Error> {
        let _mapped = self.mm.read().unwrap_or_else(|p| p.into_inner());
        for _ in 0..8 {
            // SAFETY: `hva` is a page of the guest mapping (every caller's cache names one),
            // and the read lock keeps the balloon from unmapping it while we write one byte.
            unsafe { std::ptr::write_volatile(hva.0 as *mut u8, 1) };
            if let Some(pfn) = self.pfn_now(hva) {
                return Ok(pfn);
            }
        }
        Err(Error::Unmapped { hva })
    }
}

struct Consumer {
    cache: TranslationCache<StdHal>,
    hva: Hva,
}

#[derive(Default)]
struct Stats {
    removes: AtomicU64,
    unmaps: AtomicU64,
    balloon_ops: AtomicU64,
    cache_uses: AtomicU64,
    refreshes: AtomicU64,
    window_uses: AtomicU64,
}

struct World {
    guest: Guest,
    vm: Vm<StdHal, 2>,
    consumers: Vec<Consumer>,
    /// Ghost: per page, bumped once an invalidation of it has started (caches revoked).
    epochs: Vec<AtomicU64>,
    skip_cache_invalidate: bool,
    stop: AtomicBool,
    violations: Mutex<Vec<String>>,
    violation_count: AtomicUsize,
    stats: Stats,
}

impl World {
    fn violation(&self, what: String) {
        self.violation_count.fetch_add(1, SeqCst);
        let mut v = self.violations.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < 10 {
            v.push(what);
        }
        self.stop.store(true, SeqCst);
    }
}

/// The secondary MMU of this program: translation caches, no page tables.
impl SecondaryMmu<StdHal> for World {
    fn unmap_gfn_range(&self, _: &MmuWriteGuard<'_, StdHal>, _: &Memslot, _: GfnRange) -> bool {
        false
    }

    fn flush_remote_tlbs(&self) {}

    fn invalidate_caches(&self, hvas: HvaRange) {
        if !self.skip_cache_invalidate {
            for c in &self.consumers {
                c.cache.invalidate_start(hvas);
            }
        }
    }
}

fn consumer_thread(w: &World, i: usize) -> Result<(), Error> {
    let me = &w.consumers[i];
    let page = w.guest.page_of(me.hva) as usize;
    me.cache.activate(me.hva)?;
    // The page's epoch when the entry now cached was resolved.
    let mut resolved_epoch = 0;
    while !w.stop.load(SeqCst) {
        if let Some(read) = me.cache.check(me.hva) {
            w.stats.cache_uses.fetch_add(1, Relaxed);
            let now = w.epochs[page].load(SeqCst);
            if now != resolved_epoch {
                w.violation(format!(
                    "STALE: consumer {i}'s cache served hva {:#x} -> pfn {} from epoch {resolved_epoch}, \
                     but an invalidation of the page started since (epoch {now})",
                    me.hva,
                    read.pfn()
                ));
            }
            if w.guest.pfn_now(me.hva) != Some(read.pfn()) {
                w.stats.window_uses.fetch_add(1, Relaxed);
            }
            drop(read);
        } else {
            let attempts = NonZeroUsize::MIN.saturating_add(15);
            let refreshed = me.cache.try_refresh(
                None,
                attempts,
                w.vm.invalidation(),
                w.vm.active_invalidations(),
                |hva| {
                    resolved_epoch = w.epochs[page].load(SeqCst);
                    w.guest.resolve(hva)
                },
            );
            match refreshed {
                Ok(Some(_)) => {
                    w.stats.refreshes.fetch_add(1, Relaxed);
                }
                // Raced with invalidations, or the page went away again: try later.
                Ok(None) | Err(Error::Unmapped { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        thread::yield_now();
    }
    Ok(())
}

/// Reads events until told to stop; each REMOVE/UNMAP range is one invalidation.
fn monitor_thread(w: &World, fd: &OwnedFd, balloon_done: &AtomicBool) -> Result<(), String> {
    let mut msg = [0u8; uffd::MSG_SIZE];
    loop {
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, 20) };
        if n == 0 {
            if balloon_done.load(SeqCst) {
                return Ok(());
            }
            continue;
        }
        // SAFETY: reads at most `msg.len()` bytes into `msg`.
        let got = unsafe { libc::read(fd.as_raw_fd(), msg.as_mut_ptr().cast(), msg.len()) };
        if got < 0 {
            let e = errno();
            if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("read from userfaultfd: {e}"));
        }
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&msg[at..at + 8]);
            u64::from_ne_bytes(b)
        };
        let (start, end) = (word(8), word(16));
        match msg[0] {
            uffd::EVENT_REMOVE => w.stats.removes.fetch_add(1, Relaxed),
            uffd::EVENT_UNMAP => w.stats.unmaps.fetch_add(1, Relaxed),
            uffd::EVENT_PAGEFAULT => return Err(format!("unexpected page fault at {:#x}", word(16))),
            other => return Err(format!("unexpected userfaultfd event {other:#x}")),
        };
        let (start, end) = (Hva(start), Hva(end));
        let range =
            HvaRange::new(start, end).map_err(|e| format!("event range {start:#x}..{end:#x}: {e}"))?;
        let open =
            w.vm.invalidate_range_start(w, range).map_err(|e| format!("invalidate_range_start: {e}"))?;
        // What start promises: no cache of the range is valid.
        for (i, c) in w.consumers.iter().enumerate() {
            if range.contains(c.hva) && c.cache.check(c.hva).is_some() {
                w.violation(format!(
                    "after invalidate_range_start({start:#x}..{end:#x}), consumer {i}'s cache of hva {:#x} is still valid",
                    c.hva
                ));
            }
        }
        for page in w.guest.page_of(start)..w.guest.page_of(end).min(PAGES) {
            w.epochs[page as usize].fetch_add(1, SeqCst);
        }
        open.end().map_err(|e| format!("invalidate_range_end: {e}"))?;
    }
}

/// Gives pages back to the host until the deadline (or a violation).
fn balloon_thread(w: &World, fd: &OwnedFd, deadline: Instant) -> Result<(), String> {
    let mut k = 0u64;
    while Instant::now() < deadline && !w.stop.load(SeqCst) {
        k += 1;
        let c = &w.consumers[k as usize % w.consumers.len()];
        let page = if c.cache.check(c.hva).is_some() { w.guest.page_of(c.hva) } else { k * 7 % PAGES };
        let hva = w.guest.hva(page);
        if k % 4 == 0 {
            let _remap = w.guest.mm.write().unwrap_or_else(|p| p.into_inner());
            // SAFETY: one page of our own guest mapping; nobody touches it while we hold the
            // write lock, and it is mapped again before the lock drops.
            if unsafe { libc::munmap(hva.0 as *mut libc::c_void, PAGE as usize) } != 0 {
                return Err(format!("munmap: {}", errno()));
            }
            map(Some(hva.0), PAGE).map_err(|e| format!("mmap: {e}"))?;
            register(fd, hva.0, PAGE).map_err(|e| format!("UFFDIO_REGISTER: {e}"))?;
        } else {
            // SAFETY: one page of our own guest mapping; MADV_DONTNEED drops its contents.
            if unsafe { libc::madvise(hva.0 as *mut libc::c_void, PAGE as usize, libc::MADV_DONTNEED) } != 0 {
                return Err(format!("madvise: {}", errno()));
            }
        }
        w.stats.balloon_ops.fetch_add(1, Relaxed);
        thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

fn run(seconds: f64, consumers: usize, skip_cache_invalidate: bool) -> Result<ExitCode, String> {
    let fd = open_uffd().map_err(|e| {
        format!(
            "userfaultfd is not available here ({e}); /proc/sys/vm/unprivileged_userfaultfd and \
             CAP_SYS_PTRACE decide (this example needs it)"
        )
    })?;
    let base = Hva(map(None, PAGES * PAGE).map_err(|e| format!("mmap: {e}"))?);
    register(&fd, base.0, PAGES * PAGE).map_err(|e| format!("UFFDIO_REGISTER: {e}"))?;
    let pagemap = File::open("/proc/self/pagemap").map_err(|e| format!("/proc/self/pagemap: {e}"))?;
    let w = World {
        guest: Guest { base, mm: RwLock::new(()), pagemap },
        vm: Vm::new(StdHal),
        consumers: (0..consumers)
            .map(|i| Consumer {
                cache: TranslationCache::new(StdHal),
                hva: Hva(base.0 + (3 + 5 * i as u64) * PAGE),
            })
            .collect(),
        epochs: (0..PAGES).map(|_| AtomicU64::new(0)).collect(),
        skip_cache_invalidate,
        stop: AtomicBool::new(false),
        violations: Mutex::new(Vec::new()),
        violation_count: AtomicUsize::new(0),
        stats: Stats::default(),
    };
    let slot = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: PAGES, hva: base })
        .map_err(|e| format!("memslot: {e}"))?;
    w.vm.set_memslot(&w, SlotChange::Create(slot)).map_err(|e| format!("memslot: {e}"))?;
    // Real pfns need CAP_SYS_ADMIN (pagemap shows 0 otherwise).
    w.guest.resolve(base).map_err(|_| "no pfns in /proc/self/pagemap (needs CAP_SYS_ADMIN)".to_string())?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let balloon_done = AtomicBool::new(false);
    let result: Result<(), String> = thread::scope(|s| {
        let monitor = s.spawn(|| monitor_thread(&w, &fd, &balloon_done));
        let w = &w;
        let users: Vec<_> = (0..consumers)
            .map(|i| s.spawn(move || consumer_thread(w, i).map_err(|e| e.to_string())))
            .collect();
        let ballooned = balloon_thread(w, &fd, deadline);
        balloon_done.store(true, SeqCst);
        let monitored = monitor.join().unwrap_or_else(|_| Err("monitor panicked".into()));
        w.stop.store(true, SeqCst);
        let used: Result<Vec<()>, String> =
            users.into_iter().map(|t| t.join().unwrap_or_else(|_| Err("consumer panicked".into()))).collect();
        ballooned.and(monitored).and(used.map(|_| ()))
    });
    result?;
    let n = |c: &AtomicU64| c.load(Relaxed);
    let st = &w.stats;
    println!(
        "uffd-vmm: {consumers} consumers, {:.2} s: {} balloon operations -> {} REMOVE + {} UNMAP userfaultfd events, \
         each an invalidate_range_start/end; {} translation-cache uses, {} refreshes; {} uses inside the \
         userfaultfd window (a valid entry whose pfn pagemap no longer shows: the kernel dropped the page before the invalidation reached the cache; reported, not a violation)",
        started.elapsed().as_secs_f64(),
        n(&st.balloon_ops),
        n(&st.removes),
        n(&st.unmaps),
        n(&st.cache_uses),
        n(&st.refreshes),
        n(&st.window_uses),
    );
    let count = w.violation_count.load(SeqCst);
    for v in w.violations.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        println!("VIOLATION {v}");
    }
    Ok(match (count, skip_cache_invalidate) {
        (0, false) => {
            println!("ok: no cache served a translation that an invalidation had revoked");
            ExitCode::SUCCESS
        }
        (0, true) => {
            println!("planted bug skip-cache-invalidate was NOT detected");
            ExitCode::from(3)
        }
        (c, _) => {
            println!(
                "FAILED: {c} violation(s){}",
                if skip_cache_invalidate { " (planted bug: skip-cache-invalidate)" } else { "" }
            );
            ExitCode::from(1)
        }
    })
}

/// userfaultfd REMOVE/UNMAP events on real guest memory drive mmusync's invalidations.
#[derive(Debug, clap::Parser)]
#[command(name = "uffd-vmm", version)]
struct Cli {
    /// How long the balloon and the consumers run, in seconds: (0, 600].
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    seconds: f64,
    /// Consumer threads: 1..=8.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=MAX_CONSUMERS as i64))]
    consumers: u8,
    /// Skip one protocol step in this program's `SecondaryMmu` (it must then report the stale
    /// translation): skip-cache-invalidate.
    #[arg(long, value_parser = ["skip-cache-invalidate"])]
    bug: Option<String>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 600.0 => Ok(v),
        Ok(_) => Err("must be in (0, 600]".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = <Cli as clap::Parser>::parse();
    let (seconds, consumers, bug) = (cli.seconds, usize::from(cli.consumers), cli.bug.is_some());
    match run(seconds, consumers, bug) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("uffd-vmm: {e}");
            ExitCode::from(2)
        }
    }
}
