//! P2 + P5 on the reference secondary MMU: long runs of faults, lockless walks, fast-path
//! faults and guest entries, against zaps that free table pages and invalidations that free
//! guest pages.

use super::world::{check_balanced, gfns, hva, ok, Ctx, GhostTables, Host, Mmu, Quiescence, POISON_PFN};
use crate::exec::{ScopedRole, ShuttleExec};
use crate::hal::ShuttleHal;
use mmusync::hal::Cpus;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{ReferenceMmu, Spte};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::range::Gfn;
use mmusync::vcpu::{Request, Vcpu, VcpuError};
use mmusync_models::{violated, Executor, Invariant};
use shuttle::rand::{thread_rng, Rng};

/// vCPUs (each loaded on its own CPU).
pub const VCPUS: usize = 4;
/// Operations per vCPU: a fault, a lockless walk with a fast-path fault, or a guest run.
pub const OPS: usize = 12;
/// Zappers (`kvm_zap_gfn_range`-like: zap under `mmu_lock`, free unlinked tables, flush).
pub const ZAPPERS: usize = 2;
/// Zaps per zapper.
pub const ZAPS: usize = 4;

const PAGES: usize = 32;

/// One vCPU's life: load, [`OPS`] random operations, put.
fn vcpu_role<const N: usize>(cx: Ctx<'_, PAGES, N>, vcpu: &Vcpu<ShuttleHal>) {
    let Ctx { x, hal, mmu, .. } = cx;
    ok(hal.current_cpu().ok_or(mmusync::vcpu::VcpuError::NotACpu).and_then(|cpu| vcpu.load(cpu)));
    for _ in 0..OPS {
        match thread_rng().gen_range(0..3) {
            0 => {
                let gfn = Gfn(thread_rng().gen_range(0..PAGES as u64));
                cx.fault_until_done(gfn, thread_rng().gen_bool(0.5));
            }
            1 => {
                let walk = ok(vcpu.walk_lockless_begin());
                x.step(format_args!("walk_shadow_page_lockless_begin"));
                for _ in 0..3 {
                    let gfn = Gfn(thread_rng().gen_range(0..PAGES as u64));
                    let spte = ok(mmu.walk(&walk, gfn));
                    if spte.and_then(Spte::pfn) == Some(POISON_PFN) {
                        violated(
                            Invariant::WalkerReadFreedTable,
                            format_args!("lockless walk of gfn {gfn} read a freed table page"),
                        );
                    }
                    x.step(format_args!("lockless walk: gfn {gfn} -> {:?}", spte.and_then(Spte::pfn)));
                }
                let gfn = Gfn(thread_rng().gen_range(0..PAGES as u64));
                let fast = ok(mmu.fast_fault(&walk, gfn, mmusync::mmu::Access::Write));
                x.step(format_args!("fast_page_fault gfn {gfn}: {fast:?}"));
                drop(walk);
                x.step(format_args!("walk_shadow_page_lockless_end"));
            }
            _ => loop {
                match vcpu.enter_guest() {
                    Ok(guest) => {
                        x.step(format_args!("VM entry"));
                        shuttle::thread::yield_now();
                        x.step(format_args!("VM exit (kicked: {})", guest.kicked()));
                        drop(guest);
                        break;
                    }
                    Err(VcpuError::RequestsPending) => {
                        let flush = vcpu.check_request(Request::TLB_FLUSH);
                        x.step(format_args!("entry: requests pending (TLB flush: {flush})"));
                    }
                    Err(e) => panic!("vcpu_enter_guest: {e}"),
                }
            },
        }
    }
    ok(vcpu.put());
}

/// Long runs on the reference MMU (2 levels of 8 entries; two memslots of 16 pages). [`VCPUS`]
/// vCPUs, each loaded on its CPU, make [`OPS`] random operations: a full fault (retried until
/// it installs), a lockless walk (`walk_shadow_page_lockless_begin`, three SPTE reads, a
/// fast-path fault, end) or a guest run (entry with the request check, a step in the guest,
/// exit). [`ZAPPERS`] zappers each zap [`ZAPS`] random gfn ranges, whole 8-gfn blocks (which
/// unlink and free a table page, after a remote TLB flush that waits for walkers and running
/// guests) or parts of one; an invalidator remaps and frees guest pages twice.
///
/// Table pages come from [`GhostTables`], which poisons a freed page instead of reusing it.
/// Invariants: I5.1 (no walker reads a freed table page: poison is never seen); I2.1;
/// counts balanced; starvation.
pub fn reference_mmu_long_run(hal: &ShuttleHal, x: &ShuttleExec) {
    let vcpus: Vec<Vcpu<ShuttleHal>> = (0..VCPUS).map(|_| Vcpu::new(hal.clone())).collect();
    let mmu: Mmu<'_> = ok(ReferenceMmu::new(hal.clone(), GhostTables::new(), &vcpus));
    let vm: Vm<ShuttleHal, 2> = Vm::new(hal.clone());
    let host: Host<PAGES> = Host::new();
    let quiet = Quiescence::new(ZAPPERS as u64 + 1);
    for i in 0..2u64 {
        let slot = ok(Memslot::new(MemslotConfig {
            id: i as u16,
            base_gfn: Gfn(16 * i),
            npages: 16,
            hva: hva(16 * i),
        }));
        ok(vm.set_memslot(&mmu, SlotChange::Create(slot)));
    }

    let cx = Ctx { x, hal, mmu: &mmu, vm: &vm, host: &host, quiet: &quiet };
    let mut roles = Vec::new();
    for vcpu in &vcpus {
        roles.push(ScopedRole::new("vcpu", move || vcpu_role(cx, vcpu)));
    }
    for _ in 0..ZAPPERS {
        roles.push(ScopedRole::new("zapper", move || {
            for _ in 0..ZAPS {
                let block = thread_rng().gen_range(0..PAGES as u64 / 8) * 8;
                let range = if thread_rng().gen_bool(0.5) {
                    gfns(block, block + 8)
                } else {
                    let start = block + thread_rng().gen_range(0..8);
                    gfns(start, (start + thread_rng().gen_range(1..=3)).min(block + 8))
                };
                let g = cx.vm.invalidation().mmu_lock().write();
                x.step(format_args!("zap gfns {}..{} under mmu_lock", range.start(), range.end()));
                if ok(cx.mmu.zap_ipi(&g, range)) {
                    cx.mmu.flush_remote_tlbs();
                }
                drop(g);
                x.step(format_args!("zap done"));
            }
            cx.quiet.finished(x);
        }));
    }
    roles.push(ScopedRole::new("invalidator", move || {
        for _ in 0..2 {
            let len = thread_rng().gen_range(1..=8u64);
            let first = thread_rng().gen_range(0..=PAGES as u64 - len);
            cx.invalidate(first..first + len, (first..first + len).map(Gfn));
        }
        cx.quiet.finished(x);
    }));
    x.run_scoped(roles);
    cx.check_sptes((0..PAGES as u64).map(Gfn));
    check_balanced(&vm);
}
