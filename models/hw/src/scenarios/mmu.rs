//! `mmu-fault-vs-invalidation`: the reference secondary MMU ([`ReferenceMmu`]) under a vCPU
//! that faults, walks locklessly and takes the fast path, against MMU-notifier invalidations
//! that remap host pages and free the old guest pages.
//!
//! The VM has one memslot of 16 gfns; the page table has two levels of 4 entries, so an
//! invalidation of a whole aligned block of 4 pages unlinks a leaf table, which `zap_ipi` frees
//! after its flush. Guest pages come from a [`GuestPages`] pool (never reused, poisoned when
//! freed); table pages from a [`PoisonAlloc`].
//!
//! * vCPU (free-running until the invalidator is done): fault gfn `i % 16` through
//!   [`ReferenceMmu::fault`] (snapshot, `_unsafe` pre-checks, GUP, `retry_gfn` under
//!   `mmu_lock`, install), then one lockless walk ([`Vcpu::walk_lockless_begin`]) that reads all
//!   16 SPTEs and every guest page they map, and tries the fast path on gfn `i % 16`.
//! * invalidator, each round: `invalidate_range_start` on one page (three rounds in four) or a
//!   4-page block, point each host PTE of the range at a fresh guest page, free the old page,
//!   `invalidate_range_end`. It starts round `n` only once the vCPU has begun iteration `n`, so
//!   the two keep overlapping instead of one finishing alone.
//!
//! Violations: a walk that reads a poisoned table entry (a freed table page, I5.1); a walk that
//! finds an SPTE whose guest page is freed (I2.1, seen while the walk holds off the flush that
//! must precede every free); and, after both roles finish, any SPTE mapping a freed page.

use super::{Batch, Recorder, Tuning};
use crate::exec::{ScopedRole, ThreadExec};
use crate::poison::{is_poison, GuestPages, GuestRead, PoisonAlloc};
use mmusync::hal::{Atomic, Ordering};
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{ReferenceMmu, Spte, Table};
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, Hva, HvaRange, Pfn};
use mmusync::vcpu::Vcpu;
use mmusync_models::{Invariant, ScenarioHal};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

const F: usize = 4;
const LEVELS: usize = 2;
const GFNS: u64 = 16;
const HVA_BASE: Hva = Hva(0x10_0000);
const PAGE: u64 = 4096;

fn hvas(first: u64, pages: u64) -> HvaRange {
    match HvaRange::new(Hva(HVA_BASE.0 + first * PAGE), Hva(HVA_BASE.0 + (first + pages) * PAGE)) {
        Ok(r) => r,
        Err(e) => unreachable!("the scenario's ranges are valid: {e}"),
    }
}

/// Checks one SPTE read inside a lockless walk (or after the run).
fn check(rec: &Recorder, guest: &GuestPages, gfn: Gfn, spte: Spte, when: &str) {
    if is_poison(spte) {
        rec.violation(
            Invariant::WalkerReadFreedTable,
            format_args!("{}: the walk of gfn {gfn} read a poisoned entry: its table page was freed", when),
        );
        return;
    }
    let Some(pfn) = spte.pfn() else { return };
    match guest.read(pfn) {
        GuestRead::Ok => {}
        GuestRead::Freed => rec.violation(
            Invariant::SpteMapsFreedPage,
            format_args!(
                "{}: SPTE gfn {gfn} -> pfn {pfn}, and guest page {pfn} is freed (its words are poison)",
                when
            ),
        ),
        GuestRead::NotAPage => panic!("SPTE gfn {gfn} -> pfn {pfn}, which no host PTE ever held"),
    }
}

pub(super) fn fault_vs_invalidation<H: ScenarioHal>(
    hal: &H,
    exec: &ThreadExec,
    rounds: u64,
    _tuning: Tuning,
    _seed: u64,
) -> Batch {
    let vcpus = [Vcpu::new(hal.clone())];
    let mmu: ReferenceMmu<'_, H, PoisonAlloc<Table<H, F>>, LEVELS, F> =
        match ReferenceMmu::new(hal.clone(), PoisonAlloc::new(), &vcpus) {
            Ok(m) => m,
            Err(e) => panic!("mmu-fault-vs-invalidation: building the MMU: {e}"),
        };
    let vm: Vm<H, 1> = Vm::new(hal.clone());
    let config = MemslotConfig { id: 0, base_gfn: Gfn(0), npages: GFNS, hva: HVA_BASE };
    let slot = Memslot::new(config).and_then(|s| vm.set_memslot(&mmu, SlotChange::Create(s)));
    if let Err(e) = slot {
        panic!("mmu-fault-vs-invalidation: creating the memslot: {e}");
    }
    let pool = usize::try_from(GFNS + 4 * rounds).unwrap_or(usize::MAX);
    let guest = GuestPages::new(pool);
    let host: Vec<H::AtomicU64> = (0..GFNS)
        .map(|_| {
            H::AtomicU64::new(guest.alloc().unwrap_or_else(|| unreachable!("the pool has a page per gfn")).0)
        })
        .collect();
    let done = AtomicBool::new(false);
    let rec = Recorder::default();

    let vcpu_role = || {
        let vcpu = &vcpus[0];
        let cpu = vcpu.hal().current_cpu().ok_or(mmusync::vcpu::VcpuError::NotACpu);
        if let Err(e) = cpu.and_then(|cpu| vcpu.load(cpu)) {
            panic!("mmu-fault-vs-invalidation: loading vCPU 0: {e}");
        }
        let mut i = 0u64;
        loop {
            let last = done.load(SeqCst);
            let gfn = Gfn(i % GFNS);
            let writable = (i / GFNS) % 2 == 0;
            let gup =
                |hva: Hva| Ok(Pfn(host[((hva.0 - HVA_BASE.0) / PAGE) as usize].load(Ordering::Relaxed)));
            if let Err(e) = mmu.fault(&vm, gfn, writable, gup) {
                panic!("fault on gfn {gfn}: {e}");
            }
            let walk = match vcpu.walk_lockless_begin() {
                Ok(w) => w,
                Err(e) => panic!("walk_lockless_begin: {e}"),
            };
            for g in (0..GFNS).map(Gfn) {
                match mmu.walk(&walk, g) {
                    Ok(Some(spte)) => check(&rec, &guest, g, spte, "inside a lockless walk"),
                    Ok(None) => {}
                    Err(e) => panic!("walk of gfn {g}: {e}"),
                }
            }
            if let Err(e) = mmu.fast_fault(&walk, gfn, mmusync::mmu::Access::Write) {
                panic!("fast_fault on gfn {gfn}: {e}");
            }
            drop(walk);
            rec.contended();
            i += 1;
            if last {
                break;
            }
        }
        if let Err(e) = vcpu.put() {
            panic!("mmu-fault-vs-invalidation: putting vCPU 0: {e}");
        }
    };

    let invalidator = || {
        for round in 0..rounds {
            let mut spins = 0u32;
            while rec.contended.load(SeqCst) < round {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                }
            }
            let (first, pages) =
                if round % 4 == 3 { ((round / 4) % (GFNS / 4) * 4, 4) } else { ((round * 5) % GFNS, 1) };
            let range = hvas(first, pages);
            let open = match vm.invalidate_range_start(&mmu, range) {
                Ok(o) => o,
                Err(e) => panic!("invalidate_range_start: {e}"),
            };
            for p in first..first + pages {
                let new = guest.alloc().unwrap_or_else(|| unreachable!("the pool has 4 pages per round"));
                let old = Pfn(host[p as usize].swap(new.0, Ordering::Relaxed));
                // The primary MMU frees the old page between start and end, as KVM allows.
                guest.free(old);
            }
            drop(open);
        }
        done.store(true, SeqCst);
    };

    exec.run_scoped(vec![ScopedRole::new("vcpu", vcpu_role), ScopedRole::new("invalidator", invalidator)]);

    // Both roles finished: every SPTE must map a live page (I2.1).
    let lock = vm.invalidation().mmu_lock().read();
    for g in (0..GFNS).map(Gfn) {
        match mmu.walk(&lock, g) {
            Ok(Some(spte)) => check(&rec, &guest, g, spte, "after the run"),
            Ok(None) => {}
            Err(e) => panic!("walk of gfn {g}: {e}"),
        }
    }
    drop(lock);
    rec.finish(rounds)
}
