//! Litmus tests on this CPU: store buffering (SB) and message passing (MP) on two threads pinned
//! to CPUs 0 and 1, with and without the `x86` backend's barriers.
//!
//! x86-TSO allows exactly one reordering, a store followed by a load of another location (the
//! store buffer), so:
//!
//! * **SB** (`x = 1; r0 = y` ‖ `y = 1; r1 = x`): the relaxed outcome `r0 = r1 = 0` shows up on
//!   real hardware without a fence, and with the backend's compiler-only barriers (`Wmb`,
//!   `Rmb`, ...); with its `Mb` (a locked `or` on the stack, Linux's `smp_mb()`), with a bare
//!   `mfence`, with `fence(SeqCst)` (the `std` backend's `Mb`, which compiles to a locked `or`
//!   on the stack), or with a `SeqCst` store (`xchg`) it must never show.
//! * **MP** (`data = 1; flag = 1` ‖ `r0 = flag; r1 = data`): the relaxed outcome `r0 = 1, r1 =
//!   0` must never show with the backend's `Wmb`/`Rmb` (compiler fences): x86 keeps stores in
//!   order with stores and loads with loads.
//!
//! Each round uses the same two cache-line-padded cells: round `i` stores `i + 1`, so "did not
//! see the other side's store" is "read a value below `i + 1`" and no reset is needed. Both
//! threads meet (a locked RMW, a full barrier) before every round and then wait a random short
//! delay, so the two sides' accesses line up at varying offsets.

use mmusync::hal::x86::X86Hal;
use mmusync::hal::Hal;
use mmusync::FenceKind;
use std::sync::atomic::{compiler_fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The barrier between the two accesses of each thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fence {
    /// None: relaxed atomics, with a compiler fence (no instruction) so that only the hardware
    /// can reorder.
    None,
    /// The `x86` backend's barrier of this kind (`X86Hal.fence(kind)`).
    X86(FenceKind),
    /// A bare `mfence` (what `X86Hal`'s `Mb` was before it became a locked `or`; the ring-0
    /// IPI path still uses it).
    Mfence,
    /// `core::sync::atomic::fence(SeqCst)`: the `std` backend's `Mb`. On x86-64 the compiler
    /// emits `lock or $0, -64(%rsp)` for it (as Linux's `smp_mb()` is a locked add), not
    /// `mfence`.
    StdSeqCst,
    /// SB only: the store is a `SeqCst` store (`xchg`, a locked instruction) and no fence.
    SeqCstStore,
}

impl Fence {
    /// A short name for tables.
    pub fn name(self) -> String {
        match self {
            Fence::None => "none (compiler fence only)".to_string(),
            Fence::X86(k) => format!("X86Hal {k:?} ({})", x86_instruction(k)),
            Fence::Mfence => "mfence".to_string(),
            Fence::StdSeqCst => "fence(SeqCst) (StdHal Mb: lock or)".to_string(),
            Fence::SeqCstStore => "SeqCst store (xchg)".to_string(),
        }
    }

    #[inline(always)]
    fn issue(self) {
        match self {
            Fence::None | Fence::SeqCstStore => compiler_fence(Ordering::SeqCst),
            Fence::X86(k) => X86Hal.fence(k),
            // SAFETY: `mfence` has no operands and only orders memory accesses; every x86-64
            // CPU has it (SSE2). Not `nomem`: a compiler barrier too.
            Fence::Mfence => unsafe { std::arch::asm!("mfence", options(nostack, preserves_flags)) },
            Fence::StdSeqCst => std::sync::atomic::fence(Ordering::SeqCst),
        }
    }

    #[inline(always)]
    fn store(self, cell: &AtomicU64, v: u64) {
        let order = if self == Fence::SeqCstStore { Ordering::SeqCst } else { Ordering::Relaxed };
        cell.store(v, order)
    }
}

fn x86_instruction(k: FenceKind) -> &'static str {
    match k {
        FenceKind::Mb => "lock or",
        _ => "compiler fence",
    }
}

/// Which litmus test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Test {
    /// Store buffering.
    Sb,
    /// Message passing.
    Mp,
}

impl Test {
    /// `"SB"` or `"MP"`.
    pub const fn name(self) -> &'static str {
        match self {
            Test::Sb => "SB",
            Test::Mp => "MP",
        }
    }
}

/// The result of one litmus run.
#[derive(Clone, Debug)]
pub struct LitmusResult {
    /// The test.
    pub test: Test,
    /// The barrier (SB: on both threads; MP: the writer's and the reader's).
    pub fences: (Fence, Fence),
    /// Rounds run.
    pub iterations: u64,
    /// Rounds with the relaxed (non-SC) outcome.
    pub relaxed: u64,
    /// MP: rounds in which the reader saw the round's flag (the only rounds that can show the
    /// relaxed outcome). SB: every round.
    pub covered: u64,
    /// Whether both threads were pinned to CPUs 0 and 1.
    pub pinned: bool,
    /// Wall time.
    pub elapsed: Duration,
}

impl LitmusResult {
    /// Relaxed outcomes per million rounds.
    pub fn per_million(&self) -> f64 {
        if self.iterations == 0 {
            0.0
        } else {
            self.relaxed as f64 * 1e6 / self.iterations as f64
        }
    }

    /// A description of the barriers.
    pub fn fence_name(&self) -> String {
        if self.fences.0 == self.fences.1 {
            self.fences.0.name()
        } else {
            format!("{} / {}", self.fences.0.name(), self.fences.1.name())
        }
    }
}

/// Pins the calling thread to `cpu`; returns whether it worked.
pub fn pin_to(cpu: usize) -> bool {
    // SAFETY: `set` is a plain bit set, zero-initialized then filled by CPU_SET (which checks
    // nothing but writes within the set for `cpu < CPU_SETSIZE`, checked below); the call reads
    // it for the calling thread (pid 0) only.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return false;
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[repr(align(128))]
struct Padded(AtomicU64);

struct Shared {
    a: Padded,
    b: Padded,
    meet: Padded,
}

impl Shared {
    fn new() -> Self {
        Shared { a: Padded(AtomicU64::new(0)), b: Padded(AtomicU64::new(0)), meet: Padded(AtomicU64::new(0)) }
    }

    /// Both threads arrive before round `i` starts.
    #[inline(always)]
    fn meet(&self, i: u64) {
        self.meet.0.fetch_add(1, Ordering::SeqCst);
        let target = 2 * (i + 1);
        let mut spins = 0u32;
        while self.meet.0.load(Ordering::Relaxed) < target {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 65536 == 0 {
                std::thread::yield_now();
            }
        }
    }
}

/// xorshift for the delays.
#[inline(always)]
fn next(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

#[inline(always)]
fn delay(n: u64) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

/// Runs `body(thread, round, rng)` for `iterations` rounds on two threads (pinned to CPUs 0 and 1
/// when `pin`), meeting before each round. Returns each thread's per-round results and whether
/// both were pinned.
fn two_threads<R: Send>(
    iterations: u64,
    pin: bool,
    body: impl Fn(usize, u64, &mut u64) -> R + Sync,
) -> (Vec<R>, Vec<R>, bool) {
    let side = |t: usize| {
        let pinned = pin && pin_to(t);
        let mut rng = 0x2545_f491_4f6c_dd1d ^ (t as u64 + 1);
        let mut out = Vec::with_capacity(iterations as usize);
        for i in 0..iterations {
            out.push(body(t, i, &mut rng));
        }
        (out, pinned)
    };
    std::thread::scope(|s| {
        let a = s.spawn(|| side(0));
        let b = s.spawn(|| side(1));
        let (a, pa) = a.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        let (b, pb) = b.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (a, b, pa && pb)
    })
}

/// Store buffering with `fence` on both threads, `iterations` rounds, random delays of up to
/// `max_delay` spin hints.
pub fn sb(fence: Fence, iterations: u64, pin: bool, max_delay: u64) -> LitmusResult {
    let sh = Shared::new();
    let start = Instant::now();
    let (r0, r1, pinned) = two_threads(iterations, pin, |t, i, rng| {
        let (mine, theirs) = if t == 0 { (&sh.a.0, &sh.b.0) } else { (&sh.b.0, &sh.a.0) };
        sh.meet(i);
        delay(next(rng) % (max_delay + 1));
        fence.store(mine, i + 1);
        fence.issue();
        theirs.load(Ordering::Relaxed)
    });
    let relaxed = (0..iterations as usize).filter(|&i| r0[i] <= i as u64 && r1[i] <= i as u64).count() as u64;
    LitmusResult {
        test: Test::Sb,
        fences: (fence, fence),
        iterations,
        relaxed,
        covered: iterations,
        pinned,
        elapsed: start.elapsed(),
    }
}

/// Message passing: the writer stores data, issues `write_fence`, stores the flag; the reader
/// loads the flag, issues `read_fence`, loads data. The reader waits a little longer than the
/// writer so that it often sees the round's flag.
pub fn mp(write_fence: Fence, read_fence: Fence, iterations: u64, pin: bool, max_delay: u64) -> LitmusResult {
    let sh = Shared::new();
    let start = Instant::now();
    let (_, reads, pinned) = two_threads(iterations, pin, |t, i, rng| {
        sh.meet(i);
        let d = next(rng) % (max_delay + 1);
        if t == 0 {
            delay(d);
            sh.a.0.store(i + 1, Ordering::Relaxed);
            write_fence.issue();
            sh.b.0.store(i + 1, Ordering::Relaxed);
            (0, 0)
        } else {
            delay(d + max_delay / 2);
            let flag = sh.b.0.load(Ordering::Relaxed);
            read_fence.issue();
            let data = sh.a.0.load(Ordering::Relaxed);
            (flag, data)
        }
    });
    let mut relaxed = 0;
    let mut covered = 0;
    for (i, &(flag, data)) in reads.iter().enumerate() {
        let round = i as u64 + 1;
        if flag == round {
            covered += 1;
            if data < round {
                relaxed += 1;
            }
        }
    }
    LitmusResult {
        test: Test::Mp,
        fences: (write_fence, read_fence),
        iterations,
        relaxed,
        covered,
        pinned,
        elapsed: start.elapsed(),
    }
}

/// The standard set: SB without a fence, with each compiler-only barrier kind, with `Mb`, with
/// `mfence`, with `fence(SeqCst)` and with a `SeqCst` store; MP without fences and with
/// `Wmb`/`Rmb`.
pub fn standard_suite(iterations: u64, pin: bool, max_delay: u64) -> Vec<LitmusResult> {
    let x = Fence::X86;
    vec![
        sb(Fence::None, iterations, pin, max_delay),
        sb(x(FenceKind::Wmb), iterations, pin, max_delay),
        sb(x(FenceKind::Release), iterations, pin, max_delay),
        sb(x(FenceKind::Mb), iterations, pin, max_delay),
        sb(Fence::Mfence, iterations, pin, max_delay),
        sb(Fence::StdSeqCst, iterations, pin, max_delay),
        sb(Fence::SeqCstStore, iterations, pin, max_delay),
        mp(Fence::None, Fence::None, iterations, pin, max_delay),
        mp(x(FenceKind::Wmb), x(FenceKind::Rmb), iterations, pin, max_delay),
        mp(x(FenceKind::Release), x(FenceKind::Acquire), iterations, pin, max_delay),
    ]
}

/// Whether the x86-TSO model forbids the relaxed outcome of `r`'s test with its barriers (so
/// that seeing it would be a bug in the backend's mapping or in the CPU).
pub fn forbidden(r: &LitmusResult) -> bool {
    match r.test {
        Test::Sb => matches!(
            r.fences.0,
            Fence::X86(FenceKind::Mb) | Fence::Mfence | Fence::StdSeqCst | Fence::SeqCstStore
        ),
        Test::Mp => true,
    }
}
