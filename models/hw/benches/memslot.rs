//! Criterion benchmark of the memslot lookup (`MemslotsRead::find`, `gfn_to_memslot`) at 8 and
//! at 512 slots, side by side in one group. Reported (BENCHMARKS.md), never asserted.
//!
//! * `memslot_find/find/<slots>`: core's lookup, a binary search over the set's cells, which
//!   are kept sorted by first gfn.
//! * `memslot_find/linear_scan/<slots>`: the same answer by a linear scan of the set
//!   (`MemslotsRead::iter().find(..)`), which is what `find` did before: the baseline.
//!
//! Every set is full (`slots` slots of 4 pages each, created in a scrambled order); each
//! iteration looks up the next of 4096 pseudo-random gfns, every one inside some slot.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use mmusync::active::ActiveInvalidations;
use mmusync::hal::std::StdHal;
use mmusync::memslot::{Memslot, MemslotConfig, Memslots, SlotChange};
use mmusync::range::{Gfn, Hva};
use std::hint::black_box;
use std::time::Duration;

/// A full set of `N` slots, slot `b` mapping gfns `[4b, 4b + 4)`, created in the order
/// `b = k * (N - 1) mod N` so that the inserts do not arrive sorted.
fn full<const N: usize>() -> Memslots<StdHal, N> {
    let slots = Memslots::new(StdHal);
    let active = ActiveInvalidations::new(StdHal);
    let n = N as u64;
    for k in 0..n {
        let b = (k * (n - 1)) % n;
        let config = MemslotConfig {
            id: b as u16,
            base_gfn: Gfn(b * 4),
            npages: 4,
            hva: Hva(0x1000_0000 + b * 0x4000),
        };
        let slot = match Memslot::new(config) {
            Ok(slot) => slot,
            Err(e) => panic!("slot {b}: {e}"),
        };
        if let Err(e) = slots.update(&active, SlotChange::Create(slot), |_| {}) {
            panic!("create slot {b}: {e}");
        }
    }
    slots
}

/// 4096 gfns below `4 * n`, from a fixed xorshift sequence.
fn gfns(n: usize) -> Vec<Gfn> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Gfn(x % (4 * n as u64))
        })
        .collect()
}

fn bench_n<const N: usize>(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let slots = full::<N>();
    let gfns = gfns(N);
    let read = slots.read();
    group.bench_function(BenchmarkId::new("find", N), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % gfns.len();
            black_box(read.find(black_box(gfns[i])))
        })
    });
    group.bench_function(BenchmarkId::new("linear_scan", N), |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % gfns.len();
            let gfn = black_box(gfns[i]);
            black_box(read.iter().find(|s| s.gfns().contains(gfn)))
        })
    });
}

fn memslot_find(c: &mut Criterion) {
    let mut group = c.benchmark_group("memslot_find");
    bench_n::<8>(&mut group);
    bench_n::<512>(&mut group);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1)).sample_size(20);
    targets = memslot_find
}
criterion_main!(benches);
