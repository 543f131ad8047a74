//! Criterion benchmarks of the protocols on this machine; each comparison side by side in one
//! group. Reported (BENCHMARKS.md), never asserted.
//!
//! * `fault_check`: the fault path's lockless retry checks (`retry_lockless`,
//!   `retry_gfn_unsafe`, and `retry_gfn` with `mmu_lock` already held) against the bare loads
//!   they make, on the `std` and `x86` backends.
//! * `walk_begin_end/<scheme>/<threads>`: one lockless walk begin + end per iteration, per
//!   thread, at 1..=N threads (N: `HW_BENCH_THREADS`, default the number of CPUs):
//!   core's IPI/mode scheme on both backends (a soft interrupt mask: a thread-local flag, no
//!   syscall), the mode protocol alone (store, full barrier, release store on a padded per-vCPU
//!   word: what the ring-0 backend pays besides `cli`/`sti`) with the `x86` backend's `Mb` (a
//!   locked `or`) and with a bare `mfence`, the same with every thread's mode on one line, the
//!   baseline it is held to (one `fence(SeqCst)` and two stores), crossbeam-epoch pin (core's
//!   `EpochReclaimer`), a shared reader counter (KVM's pre-2012 scheme) and an rwlock.
//! * `ipi_round_trip`: `ipi_and_wait` to one CPU that spins with interrupts on (the `std`
//!   backend's signal IPI), for scale.
//! * `invalidate/<faulting threads>`: `invalidate_range_start` + `end` on the reference MMU
//!   while 0..N-1 other threads run its fault path on the same gfns.
//! * `zap_storm/{ipi,epoch}`: map 512 gfns, then zap them all, retiring 72 table pages, while a
//!   walker thread walks locklessly. After the group, a fixed run of 2000 storms per scheme
//!   prints the peak number of pages unlinked but not yet freed when a zap has returned (IPI:
//!   the zap frees inside the call, in batches of at most 32).
//! * `walk_begin_end/control_alu`: a thread-local dependent multiply chain, to show how far
//!   this machine's CPUs run two threads in parallel at all.
//!
//! Quick configuration (short warm-up and measurement); pass criterion's own flags to change it.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use mmusync::epoch::{EpochReclaimer, ReclaimHandle};
use mmusync::hal::std::StdHal;
use mmusync::hal::x86::X86Hal;
use mmusync::hal::{CpuId, CpuSet, Cpus, Hal};
use mmusync::invalidation::Invalidation;
use mmusync::lock::{MmuLock, MmuWriteGuard};
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{ReferenceMmu, Spte, Table};
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, GfnRange, Hva, HvaRange, Pfn};
use mmusync::reclamation::{EpochReclamation, IpiReclamation, Reclamation};
use mmusync::vcpu::Vcpu;
use mmusync::FenceKind;
use mmusync_hw::hal::X86Threads;
use mmusync_hw::poison::PoisonAlloc;
use std::hint::black_box;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// The most threads the multi-thread benches use: `HW_BENCH_THREADS`, or the CPUs available.
fn max_threads() -> usize {
    std::env::var("HW_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
}

/// Runs `body(thread, barrier)` on `threads` threads; each sets up, waits at the barrier, and
/// returns the time of its timed loop. Returns the mean of those times.
fn parallel(threads: usize, body: impl Fn(usize, &Barrier) -> Duration + Sync) -> Duration {
    let barrier = Barrier::new(threads);
    let total: Duration = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (body, barrier) = (&body, &barrier);
                s.spawn(move || body(t, barrier))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread panicked")).sum()
    });
    total / threads as u32
}

fn quick() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20)
        .configure_from_args()
}

// ---------------------------------------------------------------------------------------------
// The fault-path check.

/// The words the lockless checks read, laid out as in `Invalidation` (adjacent `u64`s).
struct BareWords {
    seq: AtomicU64,
    in_progress: AtomicU64,
}

fn fault_check_for<H: Hal>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    hal: H,
    name: &str,
) {
    let inv = Invalidation::new(hal);
    let snap = inv.snapshot();
    g.bench_function(format!("retry_lockless/{name}"), |b| {
        b.iter(|| black_box(&inv).retry_lockless(black_box(&snap)))
    });
    g.bench_function(format!("retry_gfn_unsafe/{name}"), |b| {
        b.iter(|| black_box(&inv).retry_gfn_unsafe(black_box(&snap), black_box(Gfn(5))))
    });
    let guard = inv.mmu_lock().read();
    g.bench_function(format!("retry_gfn_locked/{name}"), |b| {
        b.iter(|| black_box(&inv).retry_gfn(black_box(&guard), black_box(&snap), black_box(Gfn(5))))
    });
}

fn fault_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("fault_check");
    let bare = BareWords { seq: AtomicU64::new(0), in_progress: AtomicU64::new(0) };
    let snap_seq = 0u64;
    g.bench_function("bare_loads", |b| {
        b.iter(|| {
            let w = black_box(&bare);
            w.in_progress.load(Ordering::Relaxed) != 0 || w.seq.load(Ordering::Relaxed) != black_box(snap_seq)
        })
    });
    fault_check_for(&mut g, StdHal, "std");
    fault_check_for(&mut g, X86Hal, "x86");
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Lockless walk begin/end.

/// A mode word alone on its cache lines, as in `Vcpu`.
#[repr(align(128))]
struct Padded(AtomicU64);

/// Modes of 16 vCPUs packed on shared lines (8 bytes apart).
struct Packed([AtomicU64; 16]);

fn walk_mode_core<H: Cpus>(hal: H, threads: usize, iters: u64) -> Duration {
    let vcpus: Vec<Vcpu<H>> = (0..threads).map(|_| Vcpu::new(hal.clone())).collect();
    parallel(threads, |t, barrier| {
        let reg = StdHal::register_cpu().expect("a free CPU slot");
        let v = &vcpus[t];
        v.load(reg.cpu()).expect("load the vCPU");
        barrier.wait();
        let start = Instant::now();
        for _ in 0..iters {
            drop(black_box(v.walk_lockless_begin().expect("walk")));
        }
        let took = start.elapsed();
        v.put().expect("put the vCPU");
        took
    })
}

/// The mode protocol by itself, with the full barrier `mb`: `WRITE_ONCE(mode, READING)`,
/// `smp_mb()`, ..., `smp_store_release(mode, OUTSIDE)` (the release is a compiler fence on x86).
#[inline(always)]
fn mode_protocol(mb: &impl Fn(), mode: &AtomicU64) {
    mode.store(3, Ordering::Relaxed);
    mb();
    black_box(());
    X86Hal.fence(FenceKind::Release);
    mode.store(0, Ordering::Relaxed);
}

/// A bare `mfence`, for comparison with the `x86` backend's locked `or`.
#[inline(always)]
fn mfence() {
    // SAFETY: `mfence` has no operands and only orders memory accesses; every x86-64 CPU has it.
    unsafe { std::arch::asm!("mfence", options(nostack, preserves_flags)) }
}

/// `walk_begin_end/<name>/<threads>`: the mode protocol with `mb`, each thread's mode word on
/// its own lines (`Padded`) or all on one line.
fn mode_protocol_row(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    threads: usize,
    one_line: bool,
    mb: impl Fn() + Sync,
) {
    let padded: Vec<Padded> = (0..threads).map(|_| Padded(AtomicU64::new(0))).collect();
    let packed = Packed(std::array::from_fn(|_| AtomicU64::new(0)));
    g.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &t| {
        b.iter_custom(|iters| {
            parallel(t, |i, barrier| {
                let w = if one_line { &packed.0[i % 16] } else { &padded[i].0 };
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    mode_protocol(&mb, black_box(w));
                }
                start.elapsed()
            })
        })
    });
}

fn walk_begin_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("walk_begin_end");
    g.throughput(Throughput::Elements(1));
    for threads in 1..=max_threads() {
        g.bench_with_input(BenchmarkId::new("control_alu", threads), &threads, |b, &t| {
            b.iter_custom(|iters| {
                parallel(t, |i, barrier| {
                    let mut x = black_box(i as u64 + 3);
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        for _ in 0..8 {
                            x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
                        }
                        x = black_box(x);
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("baseline_fence_2stores", threads), &threads, |b, &t| {
            let words: Vec<Padded> = (0..t).map(|_| Padded(AtomicU64::new(0))).collect();
            b.iter_custom(|iters| {
                parallel(t, |i, barrier| {
                    let w = &words[i].0;
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        fence(Ordering::SeqCst);
                        w.store(1, Ordering::Relaxed);
                        w.store(0, Ordering::Relaxed);
                        black_box(w);
                    }
                    start.elapsed()
                })
            })
        });
        let x86_mb = || X86Hal.fence(FenceKind::Mb);
        mode_protocol_row(&mut g, "mode_protocol_padded_x86", threads, false, x86_mb);
        mode_protocol_row(&mut g, "mode_protocol_padded_mfence", threads, false, mfence);
        mode_protocol_row(&mut g, "mode_protocol_one_line_x86", threads, true, x86_mb);
        g.bench_with_input(BenchmarkId::new("mode_ipi_core_std", threads), &threads, |b, &t| {
            b.iter_custom(|iters| walk_mode_core(StdHal, t, iters))
        });
        g.bench_with_input(BenchmarkId::new("mode_ipi_core_x86", threads), &threads, |b, &t| {
            b.iter_custom(|iters| walk_mode_core(X86Threads, t, iters))
        });
        g.bench_with_input(BenchmarkId::new("epoch_pin", threads), &threads, |b, &t| {
            let reclaimer = EpochReclaimer::new();
            b.iter_custom(|iters| {
                parallel(t, |_, barrier| {
                    let handle = reclaimer.register();
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(handle.walk_begin()));
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("shared_reader_counter", threads), &threads, |b, &t| {
            let counter = Padded(AtomicU64::new(0));
            b.iter_custom(|iters| {
                parallel(t, |_, barrier| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        // atomic_inc + smp_mb__after_atomic ... atomic_dec (both full barriers
                        // on x86: locked instructions).
                        counter.0.fetch_add(1, Ordering::SeqCst);
                        black_box(&counter);
                        counter.0.fetch_sub(1, Ordering::SeqCst);
                    }
                    start.elapsed()
                })
            })
        });
        g.bench_with_input(BenchmarkId::new("rwlock_read", threads), &threads, |b, &t| {
            let lock = parking_lot::RwLock::new(());
            b.iter_custom(|iters| {
                parallel(t, |_, barrier| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(lock.read()));
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// The signal IPI, for scale.

fn ipi_round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("ipi_round_trip");
    g.sample_size(10);
    g.bench_function("std_signal", |b| {
        let stop = AtomicBool::new(false);
        let target = AtomicUsize::new(usize::MAX);
        std::thread::scope(|s| {
            s.spawn(|| {
                let reg = StdHal::register_cpu().expect("a free CPU slot");
                target.store(reg.cpu().index(), Ordering::SeqCst);
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            });
            let _reg = StdHal::register_cpu().expect("a free CPU slot");
            while target.load(Ordering::SeqCst) == usize::MAX {
                std::hint::spin_loop();
            }
            let mut set = CpuSet::empty();
            set.insert(CpuId::new(target.load(Ordering::SeqCst)).expect("a CPU id"));
            b.iter(|| StdHal.ipi_and_wait(black_box(set)));
            stop.store(true, Ordering::SeqCst);
        });
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Invalidations against faults.

const HVA_BASE: Hva = Hva(0x10_0000);

fn invalidate(c: &mut Criterion) {
    let mut g = c.benchmark_group("invalidate");
    g.throughput(Throughput::Elements(1));
    for faulters in 0..max_threads() {
        g.bench_with_input(BenchmarkId::from_parameter(faulters), &faulters, |b, &f| {
            b.iter_custom(|iters| {
                let none: [Vcpu<StdHal>; 0] = [];
                let mmu: ReferenceMmu<'_, StdHal, PoisonAlloc<Table<StdHal, 4>>, 2, 4> =
                    ReferenceMmu::new(StdHal, PoisonAlloc::new(), &none).expect("an MMU");
                let vm: Vm<StdHal, 1> = Vm::new(StdHal);
                let config = MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 16, hva: HVA_BASE };
                let slot = Memslot::new(config).expect("a memslot");
                vm.set_memslot(&mmu, SlotChange::Create(slot)).expect("create the memslot");
                let stop = AtomicBool::new(false);
                let faults = AtomicU64::new(0);
                std::thread::scope(|s| {
                    for t in 0..f {
                        let (mmu, vm, stop, faults) = (&mmu, &vm, &stop, &faults);
                        s.spawn(move || {
                            let mut i = t as u64;
                            while !stop.load(Ordering::Relaxed) {
                                let gfn = Gfn(i % 16);
                                let _ = mmu.fault(vm, gfn, true, |hva| Ok(Pfn((hva.0 >> 12) + 1)));
                                i += 1;
                            }
                            faults.fetch_add(i, Ordering::Relaxed);
                        });
                    }
                    // The invalidator is a CPU: the zap's flush reads the current CPU.
                    let _reg = StdHal::register_cpu().expect("a free CPU slot");
                    let start = Instant::now();
                    for i in 0..iters {
                        let first = HVA_BASE.0 + (i % 16) * 4096;
                        let range = HvaRange::new(Hva(first), Hva(first + 4096)).expect("a range");
                        drop(black_box(vm.invalidate_range_start(&mmu, range).expect("start")));
                    }
                    let took = start.elapsed();
                    stop.store(true, Ordering::Relaxed);
                    took
                })
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Zap storms: pages pending free, IPI vs epoch.

type StormMmu<'v, R> = ReferenceMmu<'v, StdHal, PoisonAlloc<Table<StdHal, 8>>, 3, 8, R>;

/// A reclamation scheme's lockless walk and zap, as the storms use them.
trait Storm: Reclamation + Sized {
    /// What a thread needs to walk or zap this way (a handle of the epoch domain).
    type Local;
    /// The calling thread's [`Self::Local`].
    fn local(mmu: &StormMmu<'_, Self>) -> Self::Local;
    /// One lockless walk of `gfn` on `vcpu` (loaded on this thread).
    fn walk(mmu: &StormMmu<'_, Self>, vcpu: &Vcpu<StdHal>, local: &Self::Local, gfn: Gfn);
    /// Zaps `all`, then runs what frees become due.
    fn zap(mmu: &StormMmu<'_, Self>, g: &MmuWriteGuard<'_, StdHal>, all: GfnRange, local: &Self::Local);
}

impl Storm for IpiReclamation {
    type Local = ();

    fn local(_: &StormMmu<'_, Self>) {}

    fn walk(mmu: &StormMmu<'_, Self>, vcpu: &Vcpu<StdHal>, (): &(), gfn: Gfn) {
        let w = vcpu.walk_lockless_begin().expect("walk");
        black_box(mmu.walk(&w, gfn).expect("walk"));
    }

    fn zap(mmu: &StormMmu<'_, Self>, g: &MmuWriteGuard<'_, StdHal>, all: GfnRange, (): &()) {
        mmu.zap_ipi(g, all).expect("zap");
    }
}

impl Storm for EpochReclamation {
    type Local = ReclaimHandle;

    fn local(mmu: &StormMmu<'_, Self>) -> ReclaimHandle {
        mmu.reclaimer().register()
    }

    fn walk(mmu: &StormMmu<'_, Self>, _: &Vcpu<StdHal>, handle: &ReclaimHandle, gfn: Gfn) {
        let w = handle.walk_begin();
        black_box(mmu.walk(&w, gfn).expect("walk"));
    }

    fn zap(mmu: &StormMmu<'_, Self>, g: &MmuWriteGuard<'_, StdHal>, all: GfnRange, handle: &ReclaimHandle) {
        mmu.zap_epoch(g, all, handle).expect("zap");
        handle.collect();
    }
}

/// Maps every gfn, building every table page.
fn map_all<R: Reclamation>(mmu: &StormMmu<'_, R>, lock: &MmuLock<StdHal>) {
    let g = lock.write();
    for gfn in 0..mmu.table().capacity() {
        let spte = Spte::leaf(Pfn(gfn + 1), true, true).expect("a leaf");
        mmu.table().map(&g, Gfn(gfn), spte).expect("map");
    }
}

/// What a run of storms did.
struct Storms {
    took: Duration,
    /// Table pages each storm unlinked.
    retired_per_storm: u64,
    /// The most pages unlinked and not yet freed right after a zap returned.
    peak_pending: u64,
}

/// `storms` zap storms (map all 512 gfns, zap them all) against a walker, the `R` way.
fn zap_storms<R: Storm>(storms: u64) -> Storms {
    let vcpus = [Vcpu::new(StdHal)];
    let alloc = PoisonAlloc::new();
    let mmu: StormMmu<'_, R> = ReferenceMmu::new(StdHal, alloc.clone(), &vcpus).expect("an MMU");
    let lock = MmuLock::<StdHal>::new();
    let stop = AtomicBool::new(false);
    let all = GfnRange::new(Gfn(0), Gfn(mmu.table().capacity())).expect("a range");
    let out = std::thread::scope(|s| {
        let (mmu, vcpus, stop) = (&mmu, &vcpus, &stop);
        s.spawn(move || {
            // The walker: vCPU 0, walking gfns locklessly the scheme's way.
            let reg = StdHal::register_cpu().expect("a free CPU slot");
            vcpus[0].load(reg.cpu()).expect("load");
            let local = R::local(mmu);
            let mut gfn = 0;
            while !stop.load(Ordering::Relaxed) {
                R::walk(mmu, &vcpus[0], &local, Gfn(gfn));
                gfn = (gfn + 61) % 512;
            }
            vcpus[0].put().expect("put");
        });
        let _reg = StdHal::register_cpu().expect("a free CPU slot");
        let local = R::local(mmu);
        let mut out = Storms { took: Duration::ZERO, retired_per_storm: 0, peak_pending: 0 };
        let start = Instant::now();
        for _ in 0..storms {
            let before = alloc.stats().allocs;
            map_all(mmu, &lock);
            // A full zap unlinks every table but the root, which the map just (re)built.
            out.retired_per_storm = alloc.stats().allocs - before;
            R::zap(mmu, &lock.write(), all, &local);
            // Only the root is linked after a full zap: every other live page is pending.
            out.peak_pending = out.peak_pending.max(alloc.live() as u64 - 1);
        }
        out.took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        out
    });
    drop(mmu);
    // SAFETY: every thread of these storms has finished and the MMU and the reclaimer are gone:
    // nothing holds a pointer to a freed page.
    unsafe { alloc.release_quarantine() };
    out
}

/// Storms of the fixed-length peak measurement printed after the group.
const PEAK_STORMS: u64 = 2_000;

fn zap_storm(c: &mut Criterion) {
    let mut g = c.benchmark_group("zap_storm");
    g.sample_size(10);
    g.bench_function("ipi", |b| b.iter_custom(|iters| zap_storms::<IpiReclamation>(iters).took));
    g.bench_function("epoch", |b| b.iter_custom(|iters| zap_storms::<EpochReclamation>(iters).took));
    g.finish();
    let peaks = [
        ("ipi", zap_storms::<IpiReclamation>(PEAK_STORMS)),
        ("epoch", zap_storms::<EpochReclamation>(PEAK_STORMS)),
    ];
    for (name, r) in peaks {
        println!(
            "zap_storm/{name}: {PEAK_STORMS} storms of {} table pages each, {:.1} us per storm; peak pages pending free after a zap returned: {}",
            r.retired_per_storm,
            r.took.as_secs_f64() * 1e6 / PEAK_STORMS as f64,
            r.peak_pending
        );
    }
}

criterion_group! {
    name = benches;
    config = quick();
    targets = fault_check, walk_begin_end, ipi_round_trip, invalidate, zap_storm
}
criterion_main!(benches);
