//! Liveness (protocols.md, P3): the two deadlocks P3 must avoid, each as a bad pattern
//! that shuttle must catch and the correct pattern that must pass with the same roles.
//!
//! * **SRCU vs. a retry loop**: a path that retries a fault *while holding its SRCU read
//!   section* (`KVM_PRE_FAULT_MEMORY` before 3ccbf6f47098) waits for a memslot update that is
//!   waiting, in `synchronize_srcu`, for that very section. Both sides spin, so nothing ever
//!   blocks: shuttle's deadlock detector cannot see it, and the spin budget reports it (a
//!   bounded-steps liveness check). Dropping SRCU before retrying is the fix.
//! * **A notifier side that blocks**: the 2021 proposal held a writer-fair rwsem for
//!   read from `invalidate_range_start` to `_end`, and memslot updates took it for write. With
//!   a primary-MMU lock that one invalidation holds around its start and another needs between
//!   its start and end, the three wait in a cycle. Every wait sleeps, so shuttle's deadlock
//!   detector reports it. Core's notifier (the active count, which never blocks) is the fix.

use super::world::{end_invalidation, hva, hvas, ok, Ctx, Faulted, GhostTables, Host, Mmu, Quiescence};
use crate::exec::{ScopedRole, ShuttleExec};
use crate::hal::{ShuttleHal, ShuttleRawRwLock};
use mmusync::hal::Hal;
use mmusync::lock::SpinLock;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::{FaultOutcome, ReferenceMmu};
use mmusync::notifier::Vm;
use mmusync::range::Gfn;
use mmusync::vcpu::Vcpu;
use mmusync::Error;
use mmusync_models::Executor;

/// How the prefault path retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prefault {
    /// Retries inside one SRCU read section (the bug).
    HoldsSrcu,
    /// Each attempt takes and drops its own section (`-EAGAIN` to userspace, which retries).
    DropsSrcu,
}

/// `KVM_PRE_FAULT_MEMORY` with the old loop: every attempt inside the caller's SRCU section.
fn prefault_holding_srcu<const HN: usize, const N: usize>(cx: Ctx<'_, HN, N>, gfn: Gfn) {
    let Ctx { x, hal, mmu, vm, host, .. } = cx;
    let _srcu = vm.memslots().read();
    x.step(format_args!("prefault gfn {gfn}: srcu_read_lock, retry until done"));
    loop {
        match mmu.fault(vm, gfn, true, |h| host.resolve(x, h).ok_or(Error::NoMapping { gfn })) {
            Ok(FaultOutcome::Installed(pfn)) => return x.step(format_args!("prefault gfn {gfn}: pfn {pfn}")),
            Ok(FaultOutcome::Retry) => {
                x.step(format_args!("prefault gfn {gfn}: RET_PF_RETRY, retry holding SRCU"));
                hal.spin_hint();
            }
            Err(Error::NoMapping { .. }) => return x.step(format_args!("prefault gfn {gfn}: no memslot")),
            Err(e) => panic!("prefault: {e}"),
        }
    }
}

fn prefault_vs_memslot_delete(hal: &ShuttleHal, x: &ShuttleExec, how: Prefault) {
    let vcpus = [Vcpu::new(hal.clone())];
    let mmu: Mmu<'_> = ok(ReferenceMmu::new(hal.clone(), GhostTables::new(), &vcpus));
    let vm: Vm<ShuttleHal, 2> = Vm::new(hal.clone());
    let host: Host<16> = Host::new();
    let quiet = Quiescence::new(2);
    for i in 0..2u64 {
        let slot =
            Memslot::new(MemslotConfig { id: i as u16, base_gfn: Gfn(8 * i), npages: 8, hva: hva(8 * i) });
        ok(vm.set_memslot(&mmu, SlotChange::Create(ok(slot))));
    }
    let cx = Ctx { x, hal, mmu: &mmu, vm: &vm, host: &host, quiet: &quiet };
    x.run_scoped(vec![
        ScopedRole::new("prefault", move || {
            for gfn in [1, 9, 2].map(Gfn) {
                match how {
                    Prefault::HoldsSrcu => prefault_holding_srcu(cx, gfn),
                    Prefault::DropsSrcu => {
                        let done: Faulted = cx.fault_until_done(gfn, true);
                        x.step(format_args!("prefault gfn {gfn}: {done:?}"));
                    }
                }
            }
        }),
        ScopedRole::new("memslot-updater", move || {
            x.step(format_args!("KVM_SET_USER_MEMORY_REGION: delete slot 0"));
            ok(cx.vm.set_memslot(cx.mmu, SlotChange::Delete(0)));
            x.step(format_args!("delete returned"));
            cx.quiet.finished(x);
        }),
        ScopedRole::new("invalidator", move || {
            cx.invalidate(8..10, (8..10).map(Gfn));
            cx.quiet.finished(x);
        }),
    ]);
}

/// SRCU vs. retry, the bug: a prefault that retries while holding SRCU, against a memslot delete. Once
/// the delete has published the INVALID slot and is waiting for SRCU readers, the prefault
/// retries forever and the delete waits forever. Expected: a liveness failure.
pub fn prefault_holds_srcu(hal: &ShuttleHal, x: &ShuttleExec) {
    prefault_vs_memslot_delete(hal, x, Prefault::HoldsSrcu);
}

/// SRCU vs. retry, the fix: the same roles, with each attempt in its own SRCU section. Must pass,
/// including the starvation bound once the delete and the invalidation have returned.
pub fn prefault_drops_srcu(hal: &ShuttleHal, x: &ShuttleExec) {
    prefault_vs_memslot_delete(hal, x, Prefault::DropsSrcu);
}

/// Which notifier design the invalidations use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notifier {
    /// start takes the rwsem for read until end; memslot updates take it for write.
    Rwsem2021,
    /// core's: start and end only count; memslot swaps wait for the count.
    ActiveCount,
}

/// The 2021 proposal's `mmu_notifier_slots_lock`: a writer-fair rwsem.
type Rwsem = lock_api::RwLock<ShuttleRawRwLock, ()>;

/// `down_read` at `invalidate_range_start`, in the 2021 design only.
fn down_read<'a>(
    x: &ShuttleExec,
    rwsem: &'a Rwsem,
    design: Notifier,
) -> Option<lock_api::RwLockReadGuard<'a, ShuttleRawRwLock, ()>> {
    (design == Notifier::Rwsem2021).then(|| {
        x.step(format_args!("down_read(mmu_notifier_slots_lock)"));
        let g = rwsem.read();
        x.step(format_args!("down_read granted"));
        g
    })
}

fn notifier_vs_memslot_update(hal: &ShuttleHal, x: &ShuttleExec, design: Notifier) {
    let vcpus = [Vcpu::new(hal.clone()), Vcpu::new(hal.clone())];
    let mmu: Mmu<'_> = ok(ReferenceMmu::new(hal.clone(), GhostTables::new(), &vcpus));
    let vm: Vm<ShuttleHal, 2> = Vm::new(hal.clone());
    let host: Host<16> = Host::new();
    let quiet = Quiescence::new(3);
    // The primary MMU's lock (an rmap lock such as i_mmap_rwsem) that one invalidation holds
    // around its start..end and another takes between its start and end.
    let rmap: SpinLock<ShuttleHal, ()> = SpinLock::<ShuttleHal, ()>::new(());
    let rwsem: Rwsem = Rwsem::new(());
    let slot = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 8, hva: hva(0) });
    ok(vm.set_memslot(&mmu, SlotChange::Create(ok(slot))));
    let cx = Ctx { x, hal, mmu: &mmu, vm: &vm, host: &host, quiet: &quiet };
    let (rmap, rwsem) = (&rmap, &rwsem);
    x.run_scoped(vec![
        ScopedRole::new("invalidator-a", move || {
            let range = hvas(6, 4);
            let held = down_read(x, rwsem, design);
            ok(cx.vm.start(cx.mmu, range));
            x.step(format_args!("start(host pages 6..10) done; taking the rmap lock"));
            let g = rmap.lock();
            cx.host.remap_and_free(x, 6..10);
            drop(g);
            end_invalidation(x, cx.vm, range);
            drop(held);
            cx.quiet.finished(x);
        }),
        ScopedRole::new("invalidator-b", move || {
            let range = hvas(4, 8);
            let g = rmap.lock();
            x.step(format_args!("rmap lock held; invalidate_range_start(host pages 4..12)"));
            let held = down_read(x, rwsem, design);
            ok(cx.vm.start(cx.mmu, range));
            cx.host.remap_and_free(x, 4..12);
            end_invalidation(x, cx.vm, range);
            drop(held);
            drop(g);
            cx.quiet.finished(x);
        }),
        ScopedRole::new("memslot-updater", move || {
            let held = (design == Notifier::Rwsem2021).then(|| {
                x.step(format_args!("down_write(mmu_notifier_slots_lock)"));
                rwsem.write()
            });
            x.step(format_args!("KVM_SET_USER_MEMORY_REGION: create slot 1 (gfns 8..16)"));
            let slot = Memslot::new(MemslotConfig { id: 1, base_gfn: Gfn(8), npages: 8, hva: hva(8) });
            ok(cx.vm.set_memslot(cx.mmu, SlotChange::Create(ok(slot))));
            drop(held);
            x.step(format_args!("memslot update done"));
            cx.quiet.finished(x);
        }),
        ScopedRole::new("vcpu", move || {
            cx.fault_until_done(Gfn(5), true);
        }),
        ScopedRole::new("vcpu", move || {
            cx.fault_until_done(Gfn(9), true);
        }),
    ]);
}

/// Blocking notifier, the bug: the 2021 notifier rwsem. Invalidation A holds it for read and needs the rmap
/// lock; invalidation B holds the rmap lock and asks for the rwsem behind the queued memslot
/// writer, which waits for A. Expected: shuttle's deadlock detector fires.
pub fn notifier_rwsem_2021(hal: &ShuttleHal, x: &ShuttleExec) {
    notifier_vs_memslot_update(hal, x, Notifier::Rwsem2021);
}

/// Blocking notifier, the fix: the same roles with core's notifier, which never blocks (I3.3). Must pass,
/// including the starvation bound.
pub fn notifier_never_blocks(hal: &ShuttleHal, x: &ShuttleExec) {
    notifier_vs_memslot_update(hal, x, Notifier::ActiveCount);
}
