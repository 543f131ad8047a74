//! P1 + P2 at scale: many vCPUs faulting while several invalidators with overlapping ranges
//! sweep across several memslots.

use super::world::{check_balanced, hva, ok, Ctx, GhostTables, Host, Mmu, Quiescence};
use crate::exec::{ScopedRole, ShuttleExec};
use crate::hal::ShuttleHal;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::ReferenceMmu;
use mmusync::notifier::Vm;
use mmusync::range::Gfn;
use mmusync::vcpu::Vcpu;
use shuttle::rand::{thread_rng, Rng};

/// vCPUs faulting.
pub const VCPUS: usize = 8;
/// Invalidators.
pub const INVALIDATORS: usize = 3;
/// Memslots of 8 pages each: slot `i` maps gfns `8i..8i+8` to host pages `8i..8i+8`.
pub const SLOTS: usize = 4;
/// Faults per vCPU.
pub const FAULTS: usize = 3;
/// Invalidations per invalidator.
pub const INVALIDATIONS: usize = 2;

const PAGES: usize = SLOTS * 8;

/// P1/P2 at scale: [`VCPUS`] vCPUs each fault [`FAULTS`] random gfns (the reference
/// MMU's full fault path, retried until it installs), while [`INVALIDATORS`] invalidators each
/// run [`INVALIDATIONS`] MMU-notifier invalidations of random host ranges of 2–10 pages, which
/// cross memslot boundaries and overlap each other (nested begins, merged ranges). Each
/// invalidation zaps, lets the primary MMU remap and free the pages, checks that no SPTE maps a
/// freed page, and ends.
///
/// Invariants: I2.1 (after every install, after every free, at the end); I1.3 (every end
/// balanced, counts zero at the end); starvation (a fault that begins after the last
/// invalidation ended installs at once).
pub fn fault_storm(hal: &ShuttleHal, x: &ShuttleExec) {
    let vcpus: Vec<Vcpu<ShuttleHal>> = (0..VCPUS).map(|_| Vcpu::new(hal.clone())).collect();
    let mmu: Mmu<'_> = ok(ReferenceMmu::new(hal.clone(), GhostTables::new(), &vcpus));
    let vm: Vm<ShuttleHal, SLOTS> = Vm::new(hal.clone());
    let host: Host<PAGES> = Host::new();
    let quiet = Quiescence::new(INVALIDATORS as u64);
    for i in 0..SLOTS as u64 {
        let slot = ok(Memslot::new(MemslotConfig {
            id: i as u16,
            base_gfn: Gfn(8 * i),
            npages: 8,
            hva: hva(8 * i),
        }));
        ok(vm.set_memslot(&mmu, SlotChange::Create(slot)));
    }

    let cx = Ctx { x, hal, mmu: &mmu, vm: &vm, host: &host, quiet: &quiet };
    let mut roles = Vec::new();
    for _ in 0..VCPUS {
        roles.push(ScopedRole::new("vcpu", move || {
            for _ in 0..FAULTS {
                let gfn = thread_rng().gen_range(0..PAGES as u64);
                cx.fault_until_done(Gfn(gfn), thread_rng().gen_bool(0.5));
            }
        }));
    }
    for _ in 0..INVALIDATORS {
        roles.push(ScopedRole::new("invalidator", move || {
            for _ in 0..INVALIDATIONS {
                let len = thread_rng().gen_range(2..=10u64);
                let first = thread_rng().gen_range(0..=PAGES as u64 - len);
                // Identity layout: host page p is gfn p.
                cx.invalidate(first..first + len, (first..first + len).map(Gfn));
            }
            cx.quiet.finished(x);
        }));
    }
    x.run_scoped(roles);
    cx.check_sptes((0..PAGES as u64).map(Gfn));
    check_balanced(&vm);
}
