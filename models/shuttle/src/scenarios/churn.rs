//! P3 at scale: memslots deleted, moved and created while vCPUs fault and invalidators run.

use super::world::{check_balanced, gfns, hva, ok, Ctx, GhostTables, Host, Mmu, Quiescence};
use crate::exec::{ScopedRole, ShuttleExec};
use crate::hal::ShuttleHal;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::mmu::ReferenceMmu;
use mmusync::notifier::Vm;
use mmusync::range::Gfn;
use mmusync::vcpu::Vcpu;
use mmusync_models::Executor;
use shuttle::rand::{thread_rng, Rng};

/// vCPUs faulting.
pub const VCPUS: usize = 4;
/// Invalidators.
pub const INVALIDATORS: usize = 2;
/// Faults per vCPU.
pub const FAULTS: usize = 3;
/// Invalidations per invalidator.
pub const INVALIDATIONS: usize = 2;

const PAGES: usize = 24;

/// Every gfn that some layout of this scenario maps to host page `page`: the initial slots
/// (identity), slot 1 moved to gfn 32, slot 3 created at gfn 48 over slot 0's old pages.
fn gfns_of_page(page: u64) -> impl Iterator<Item = Gfn> {
    let moved = (8..16).contains(&page).then_some(page + 24);
    let recreated = (0..8).contains(&page).then_some(page + 48);
    std::iter::once(page).chain(moved).chain(recreated).map(Gfn)
}

/// P3 at scale. Three memslots of 8 pages (gfns `0..24`, identity over host pages). A
/// memslot updater deletes slot 0, moves slot 1 to gfn 32, and creates slot 3 at gfn 48 over
/// slot 0's old host pages; meanwhile [`VCPUS`] vCPUs fault on random gfns of every layout and
/// [`INVALIDATORS`] invalidators invalidate random host ranges across the slots being changed
/// (so a slot appears under, or vanishes from under, an open invalidation).
///
/// Invariants: I1.3 / I3.1 (every end balanced, counts zero at the end: start and end saw the
/// same memslots); I3.2 (once a delete or move returns, the old gfns are unmapped, then and at
/// the end); I2.1; starvation (a fault that begins after the last invalidation and update
/// returned installs or finds no slot at once; an invalidation whose slot vanished under it
/// would leave `in_progress` raised and make it retry forever).
pub fn memslot_churn(hal: &ShuttleHal, x: &ShuttleExec) {
    let vcpus: Vec<Vcpu<ShuttleHal>> = (0..VCPUS).map(|_| Vcpu::new(hal.clone())).collect();
    let mmu: Mmu<'_> = ok(ReferenceMmu::new(hal.clone(), GhostTables::new(), &vcpus));
    let vm: Vm<ShuttleHal, 4> = Vm::new(hal.clone());
    let host: Host<PAGES> = Host::new();
    let quiet = Quiescence::new(INVALIDATORS as u64 + 1);
    for i in 0..3u64 {
        let slot = ok(Memslot::new(MemslotConfig {
            id: i as u16,
            base_gfn: Gfn(8 * i),
            npages: 8,
            hva: hva(8 * i),
        }));
        ok(vm.set_memslot(&mmu, SlotChange::Create(slot)));
    }

    let cx = Ctx { x, hal, mmu: &mmu, vm: &vm, host: &host, quiet: &quiet };
    let mut roles = vec![ScopedRole::new("memslot-updater", move || {
        x.step(format_args!("KVM_SET_USER_MEMORY_REGION: delete slot 0 (gfns 0..8)"));
        ok(cx.vm.set_memslot(cx.mmu, SlotChange::Delete(0)));
        cx.check_unmapped(gfns(0, 8));
        x.step(format_args!("KVM_SET_USER_MEMORY_REGION: move slot 1 (gfns 8..16) to gfn 32"));
        ok(cx.vm.set_memslot(cx.mmu, SlotChange::Move { id: 1, base_gfn: Gfn(32) }));
        cx.check_unmapped(gfns(8, 16));
        x.step(format_args!("KVM_SET_USER_MEMORY_REGION: create slot 3 (gfns 48..56 <- host pages 0..8)"));
        let slot = ok(Memslot::new(MemslotConfig { id: 3, base_gfn: Gfn(48), npages: 8, hva: hva(0) }));
        ok(cx.vm.set_memslot(cx.mmu, SlotChange::Create(slot)));
        cx.quiet.finished(x);
    })];
    for _ in 0..VCPUS {
        roles.push(ScopedRole::new("vcpu", move || {
            for _ in 0..FAULTS {
                let page = thread_rng().gen_range(0..PAGES as u64);
                let candidates: Vec<Gfn> = gfns_of_page(page).collect();
                let gfn = candidates[thread_rng().gen_range(0..candidates.len())];
                cx.fault_until_done(gfn, true);
            }
        }));
    }
    for _ in 0..INVALIDATORS {
        roles.push(ScopedRole::new("invalidator", move || {
            for _ in 0..INVALIDATIONS {
                let len = thread_rng().gen_range(1..=8u64);
                let first = thread_rng().gen_range(0..=PAGES as u64 - len);
                cx.invalidate(first..first + len, (first..first + len).flat_map(gfns_of_page));
            }
            cx.quiet.finished(x);
        }));
    }
    x.run_scoped(roles);
    cx.check_unmapped(gfns(0, 16));
    cx.check_sptes((0..PAGES as u64).flat_map(gfns_of_page));
    check_balanced(&vm);
}
