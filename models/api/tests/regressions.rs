//! Regressions: every input a fuzzer or the state machine ever failed on, replayed by the
//! normal test suite, and the findings reported with the harness (F1–F6) as tests of the
//! behaviour the design asks for.
//!
//! To keep a fuzzer crash: copy its artifact to `fuzz/regressions/<target>/` (any name); the
//! replay tests below run every file there, and every seed in `fuzz/corpus/<target>/`.
//!
//! A finding test is `#[ignore]`d while its finding is open, with the finding's number in the
//! reason (`cargo test -p mmusync-api-model --test regressions -- --ignored` shows it failing);
//! whoever fixes one removes its `ignore`. F1, F2, F4, F5 and F6 are fixed.

use mmusync::hal::std::StdHal;
use mmusync::hal::{Cpus, IrqState};
use mmusync::invalidation::Invalidation;
use mmusync::lock::MmuLock;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{BoxAlloc, PageTable, Spte};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::vcpu::Vcpu;
use mmusync::{Error, Gfn, GfnRange, Hva, HvaRange, Pfn};
use std::path::PathBuf;

fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz").join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut files: Vec<_> = entries
        .map(|e| e.expect("readable directory").path())
        .filter(|p| p.is_file() && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')))
        .map(|p| {
            let bytes = std::fs::read(&p).expect("readable input");
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn api_corpus_and_regressions_replay() {
    let all: Vec<_> = [inputs("corpus", "api"), inputs("regressions", "api")].concat();
    assert!(!all.is_empty(), "the api seed corpus is missing");
    for (path, bytes) in all {
        eprintln!("replaying {}", path.display());
        mmusync_api_model::run_bytes(&bytes);
    }
}

#[test]
fn page_table_corpus_and_regressions_replay() {
    let all: Vec<_> = [inputs("corpus", "page_table"), inputs("regressions", "page_table")].concat();
    assert!(!all.is_empty(), "the page_table seed corpus is missing");
    for (path, bytes) in all {
        eprintln!("replaying {}", path.display());
        mmusync_api_model::page_table::run_page_table_bytes(&bytes);
    }
}

/// The gfn range `[s, e)`.
fn gfns(s: u64, e: u64) -> GfnRange {
    GfnRange::new(Gfn(s), Gfn(e)).unwrap()
}

/// The first host page, `[0, 0x1000)`.
fn first_page() -> HvaRange {
    HvaRange::new(Hva(0), Hva(0x1000)).unwrap()
}

/// A secondary MMU that does nothing.
struct NoMmu;

impl SecondaryMmu<StdHal> for NoMmu {
    fn unmap_gfn_range(
        &self,
        _: &mmusync::lock::MmuWriteGuard<'_, StdHal>,
        _: &Memslot,
        _: GfnRange,
    ) -> bool {
        false
    }

    fn flush_remote_tlbs(&self) {}
}

/// F1: an unguarded `end` can close what an `OpenInvalidation` opened; the guard's `Drop` then
/// finds nothing open and its `debug_assert_eq!(ended, Ok(()))` panics (in release builds the
/// error is dropped silently). Design principle 7 asks for no panic on misuse.
#[test]
fn open_guard_dropped_after_an_unguarded_end_does_not_panic() {
    let inv = Invalidation::new(StdHal);
    let open = inv.open(gfns(1, 2)).unwrap();
    inv.end(&inv.mmu_lock().write()).unwrap();
    drop(open);
}

/// F1, the notifier's form: `InvalidateRange`'s `Drop` after an unguarded `Vm::end`.
#[test]
fn notifier_guard_dropped_after_an_unguarded_end_does_not_panic() {
    let vm: Vm<StdHal, 2> = Vm::new(StdHal);
    let h = first_page();
    let open = vm.invalidate_range_start(&NoMmu, h).unwrap();
    vm.end(h).unwrap();
    drop(open);
}

/// F2: `Vm::end` returns `Err(Unbalanced)` from its E2 step (the active count) *after* its E1
/// step bumped `seq` and lowered `in_progress`: an error that changed state. Reachable with the
/// public `Invalidation::begin` (which raises `in_progress` but not the active count).
#[test]
fn a_failing_notifier_end_changes_nothing() {
    let vm: Vm<StdHal, 2> = Vm::new(StdHal);
    let slot = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 4, hva: Hva(0) }).unwrap();
    vm.set_memslot(&NoMmu, SlotChange::Create(slot)).unwrap();
    vm.invalidation().begin(&vm.invalidation().mmu_lock().write(), gfns(0, 1)).unwrap();
    assert_eq!(vm.end(first_page()), Err(Error::Unbalanced));
    let g = vm.invalidation().mmu_lock().read();
    assert_eq!(vm.invalidation().seq(&g), Ok(0), "seq moved although end failed");
    assert_eq!(vm.invalidation().in_progress(&g), Ok(1), "in_progress moved although end failed");
}

fn irqs_on() -> bool {
    let state: IrqState = StdHal.irq_save();
    // SAFETY: `state` comes from the `irq_save` just above on this thread; they nest.
    unsafe { StdHal.irq_restore(state) };
    state.0
}

/// F4 (fixed): `IrqGuard` (inside `LocklessWalk` and `InGuest`) restored the saved state on
/// drop and assumed guards drop in reverse order, but safe code could nest two walks (two vCPUs
/// loaded on one CPU) and drop the outer first, turning interrupts back on while the inner walk
/// was open: a freer's IPI taken mid-walk, a table freed under it. Walks and guest entries now
/// begin only with interrupts on (as in KVM), so they can no longer nest on one CPU.
#[test]
fn interrupts_stay_off_while_any_walk_is_open() {
    std::thread::spawn(|| {
        let cpu = StdHal::register_cpu().unwrap();
        let vcpus = [Vcpu::new(StdHal), Vcpu::new(StdHal)];
        for v in &vcpus {
            v.load(cpu.cpu()).unwrap();
        }
        let outer = vcpus[0].walk_lockless_begin().unwrap();
        assert_eq!(
            vcpus[1].walk_lockless_begin().err(),
            Some(mmusync::vcpu::VcpuError::InterruptsDisabled),
            "a second walk on the same CPU nests inside the first"
        );
        assert_eq!(vcpus[1].enter_guest().err(), Some(mmusync::vcpu::VcpuError::InterruptsDisabled));
        assert!(!irqs_on(), "interrupts are on while a lockless walk is open");
        drop(outer);
        assert!(irqs_on());
    })
    .join()
    .unwrap();
}

/// F5: `PageTable` checks neither the `mmu_lock` guard passed to `map`/`zap` nor the
/// `WalkProof` passed to `walk`/`compare_exchange` against the table: any lock's guard, any
/// vCPU's lockless walk and any reclaimer's epoch pin are accepted. With two threads, a walk
/// under a foreign proof races a zap that frees the table it reads (use-after-free from safe
/// code). `Invalidation` returns `Error::Foreign` for the same misuse.
#[test]
fn page_table_refuses_a_foreign_guard() {
    let mine = MmuLock::<StdHal>::new();
    let other = MmuLock::<StdHal>::new();
    let table: PageTable<StdHal, BoxAlloc, 3, 4> = PageTable::new(StdHal, BoxAlloc).unwrap();
    table.map(&mine.write(), Gfn(1), Spte::leaf(Pfn(1), false, false).unwrap()).unwrap();
    assert_eq!(table.walk(&other.read(), Gfn(1)), Err(Error::Foreign));
}

/// F6 (fixed): `PageTable::zap` used to build each entry's covered range with `GfnRange::new`
/// and skip the entry when that failed, so for shapes whose capacity exceeded `MAX_GFN` a zap
/// of every gfn cleared nothing. Shapes beyond `MAX_GFN` (2^40) no longer compile, and zap
/// compares plain bounds; the largest shape of 8-entry tables (13 levels, 2^39 gfns) must clear.
#[test]
fn zap_of_everything_clears_a_large_table() {
    let lock = MmuLock::<StdHal>::new();
    let g = lock.write();
    let table: PageTable<StdHal, BoxAlloc, 13, 8> = PageTable::new(StdHal, BoxAlloc).unwrap();
    table.map(&g, Gfn(5), Spte::leaf(Pfn(1), false, false).unwrap()).unwrap();
    let mut retired = Vec::new();
    assert_eq!(
        table.zap(&g, gfns(0, mmusync::MAX_GFN.0), &mut |p| retired.push(p)),
        Ok(true),
        "no flush reported"
    );
    assert_eq!(table.walk(&g, Gfn(5)), Ok(None), "the leaf survived a zap of every gfn");
    for page in retired {
        // SAFETY: unlinked under the write lock, handed over once, from BoxAlloc; no walker.
        unsafe { mmusync::hal::PageAlloc::free(&BoxAlloc, page) };
    }
}

/// F6, the other half (fixed): a table could map gfns that no `GfnRange`, and so no zap or
/// invalidation, can cover. A shape beyond `MAX_GFN` (x86's 5 levels of 512, 2^45 gfns) is now
/// a compile error; every gfn a table accepts is below `MAX_GFN`.
#[test]
fn map_refuses_gfns_beyond_capacity() {
    let lock = MmuLock::<StdHal>::new();
    let table: PageTable<StdHal, BoxAlloc, 4, 512> = PageTable::new(StdHal, BoxAlloc).unwrap();
    let spte = Spte::leaf(Pfn(1), false, false).unwrap();
    assert!(table.capacity() <= mmusync::MAX_GFN.0);
    assert_eq!(table.map(&lock.write(), Gfn(table.capacity()), spte), Err(Error::RangeOverflow));
}
