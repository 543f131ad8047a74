//! A user-written secondary MMU and the world it runs in, written once over mmusync's HAL so
//! that the same code runs under shuttle (`model_user_mmu.rs`, `ShuttleHal`) and under loom
//! (`model_user_mmu_loom.rs`, `LoomHal`), and would run on real threads (`StdHal`) in the VMM.
//!
//! What a VMM brings and what it gets from mmusync:
//!
//! * **its table** ([`UserMmu`]): one entry per gfn, an atomic word holding `PRESENT | pfn`, and
//!   its [`SecondaryMmu`] implementation: `unmap_gfn_range` clears the range's entries and
//!   says whether a TLB flush is needed, `flush_remote_tlbs` is mmusync's
//!   [`vcpu::flush_remote_tlbs`] over its vCPUs;
//! * **its fault path** ([`World::fault`]): the retry protocol (memslots under SRCU, snapshot,
//!   the lockless pre-check, resolve the pfn from the primary MMU, `mmu_lock`, the locked
//!   check, install);
//! * **its guest** ([`World::run_guest`]): guest entry through mmusync's [`Vcpu`] (a TLB-flush
//!   request is handled before entering), a hardware walker that fills the vCPU's TLB from the
//!   table on a miss, and a guest access through the TLB;
//! * **the primary MMU** ([`World::primary_mmu_moves_page`]): `invalidate_range_start`, change
//!   the host page table (host page 1: pfn 1 → pfn 2), free pfn 1, `invalidate_range_end`.
//!
//! The ghost check (the property the VMM needs): **no translation to a page that the primary
//! MMU freed is ever used** — by the guest through its TLB, or by the fault path installing it
//! — and none is left in the table at the end. A violation panics with
//! `invariant violated: ...` and is remembered in a thread-local ([`take_violation`]; loom and
//! shuttle run every thread of an execution on the test's OS thread).
//!
//! The planted bugs ([`Bug`]), chosen by a flag, as a VMM author might write them.

#![allow(dead_code)] // each test file uses its own part of the world

use mmusync::hal::{Atomic, Cpus, Ordering::Relaxed};
use mmusync::lock::MmuWriteGuard;
use mmusync::memslot::{Memslot, MemslotConfig, SlotChange};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::vcpu::{self, Request, Vcpu, VcpuError};
use mmusync::{Gfn, GfnRange, Hva, HvaRange, Pfn};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool as GhostBool, Ordering::SeqCst};

/// The guest's memory: one memslot of two pages at gfn 0, backed by host pages at `HVA`.
pub const HVA: Hva = Hva(0x10_0000);
/// Pages in the memslot.
pub const PAGES: u64 = 2;
/// The gfn the vCPU faults on and the guest accesses (host page 1).
pub const GFN: Gfn = Gfn(1);
/// Host pfns 0..PFNS exist (0 is never used, so a zero word means "no page").
pub const PFNS: usize = 3;
/// The pfn that backs host page 1 at first, and that the primary MMU frees.
pub const OLD_PFN: Pfn = Pfn(1);
/// The pfn that backs host page 1 after the primary MMU's change.
pub const NEW_PFN: Pfn = Pfn(2);

const PRESENT: u64 = 1 << 63;
/// What a freed page holds: a guest access that reads it read freed memory.
const POISON: u64 = 0xdead;

/// A bug planted in the user's secondary MMU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// `unmap_gfn_range` clears the entries but answers "no flush needed" (say, the author
    /// thought an entry the guest never wrote through needs none): a vCPU keeps using its TLB
    /// entry for the page after the primary MMU frees it.
    SkipFlush,
    /// `unmap_gfn_range` stops one entry short (`start..end - 1`): the last gfn of the range
    /// keeps its translation to the freed page.
    ForgetLastEntry,
}

std::thread_local! {
    static VIOLATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Fails the execution: the ghost check saw a translation to a freed page used.
#[track_caller]
pub fn violated(detail: String) -> ! {
    VIOLATION.with(|v| v.borrow_mut().get_or_insert_with(|| detail.clone()).clone());
    panic!("invariant violated: {detail}")
}

/// The first violation since the last call, if any.
pub fn take_violation() -> Option<String> {
    VIOLATION.with(|v| v.borrow_mut().take())
}

/// The user's secondary MMU: its page table and its vCPUs.
pub struct UserMmu<H: Cpus> {
    hal: H,
    bug: Option<Bug>,
    /// gfn → `PRESENT | pfn`, or 0.
    table: [H::AtomicU64; PAGES as usize],
    /// The VM's vCPUs (one here), for TLB flushes.
    vcpus: [Vcpu<H>; 1],
}

impl<H: Cpus> UserMmu<H> {
    fn entry(&self, gfn: Gfn) -> &H::AtomicU64 {
        &self.table[gfn.0 as usize]
    }

    /// The hardware walker: the table's translation of `gfn`, if any.
    fn walk(&self, gfn: Gfn) -> Option<Pfn> {
        let e = self.entry(gfn).load(Relaxed);
        (e & PRESENT != 0).then_some(Pfn(e & !PRESENT))
    }
}

impl<H: Cpus> SecondaryMmu<H> for UserMmu<H> {
    fn unmap_gfn_range(&self, _guard: &MmuWriteGuard<'_, H>, _slot: &Memslot, gfns: GfnRange) -> bool {
        let end = match self.bug {
            Some(Bug::ForgetLastEntry) => Gfn(gfns.end().0 - 1),
            _ => gfns.end(),
        };
        let mut zapped = false;
        for gfn in gfns.iter().take_while(|&gfn| gfn < end) {
            zapped |= self.entry(gfn).swap(0, Relaxed) & PRESENT != 0;
        }
        zapped && self.bug != Some(Bug::SkipFlush)
    }

    fn flush_remote_tlbs(&self) {
        vcpu::flush_remote_tlbs(&self.hal, &self.vcpus);
    }
}

/// The VM, the user's MMU, and the primary MMU's side (host page table, pages, ghost state).
pub struct World<H: Cpus> {
    /// The HAL (one per execution).
    pub hal: H,
    /// mmusync's per-VM state: invalidations, `mmu_lock`, memslots.
    pub vm: Vm<H, 1>,
    /// The user's secondary MMU.
    pub mmu: UserMmu<H>,
    /// The primary MMU's page table: host page → pfn (0: not present).
    host_pte: [H::AtomicU64; PAGES as usize],
    /// Each pfn's contents. Part of the model (a HAL atomic), so that the model checker orders
    /// a guest access against the free: a ghost-only access would give loom nothing to reorder.
    page: [H::AtomicU64; PFNS],
    /// Ghost: which pfns the primary MMU has freed, in the order the model ran the steps.
    freed: [GhostBool; PFNS],
}

impl<H: Cpus> World<H> {
    /// The world before the race: one memslot over both host pages; host page 1 is pfn 1,
    /// host page 0 is not populated.
    pub fn new(hal: H, bug: Option<Bug>) -> Self {
        let world = World {
            vm: Vm::new(hal.clone()),
            mmu: UserMmu {
                hal: hal.clone(),
                bug,
                table: core::array::from_fn(|_| Atomic::new(0)),
                vcpus: [Vcpu::new(hal.clone())],
            },
            host_pte: [Atomic::new(0), Atomic::new(OLD_PFN.0)],
            page: core::array::from_fn(|pfn| Atomic::new(pfn as u64)),
            freed: core::array::from_fn(|_| GhostBool::new(false)),
            hal,
        };
        let slot = Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: PAGES, hva: HVA })
            .expect("a valid memslot");
        if let Err(e) = world.vm.set_memslot(&world.mmu, SlotChange::Create(slot)) {
            panic!("setup: creating the memslot failed: {e}");
        }
        world
    }

    fn resolve(&self, hva: Hva) -> Pfn {
        Pfn(self.host_pte[((hva.0 - HVA.0) / 4096) as usize].load(Relaxed))
    }

    /// The vCPU's fault on `gfn`: one attempt of the retry protocol. Returns whether it
    /// installed a translation (`false`: an invalidation raced with it; the vCPU would re-enter
    /// the guest and fault again).
    pub fn fault(&self, gfn: Gfn) -> bool {
        let slots = self.vm.memslots().read();
        let Some(slot) = slots.find(gfn).filter(|s| !s.is_invalid()) else { return false };
        let inv = self.vm.invalidation();
        let snap = inv.snapshot();
        if inv.retry_gfn_unsafe(&snap, gfn).unwrap_or(true) {
            return false;
        }
        let Some(hva) = slot.gfn_to_hva(gfn) else { return false };
        let pfn = self.resolve(hva);
        let guard = inv.mmu_lock().write();
        if inv.retry_gfn(&guard, &snap, gfn).unwrap_or(true) {
            return false;
        }
        if self.freed[pfn.0 as usize].load(SeqCst) {
            violated(format!("the fault path installs gfn {gfn} -> pfn {pfn}, which the primary MMU freed"));
        }
        self.mmu.entry(gfn).store(PRESENT | pfn.0, Relaxed);
        drop(guard);
        true
    }

    /// The vCPU, on its own CPU: fault on [`GFN`], then run the guest, which accesses [`GFN`]
    /// through the TLB (filled by the hardware walker on a miss). A pending TLB-flush request
    /// is handled before entering, as KVM does.
    pub fn vcpu(&self) {
        let cpu = self.hal.current_cpu().expect("the vCPU runs on a CPU");
        let v = &self.mmu.vcpus[0];
        v.load(cpu).expect("vcpu_load");
        self.fault(GFN);
        // The vCPU's TLB: survives VM exits, emptied by a TLB-flush request.
        let mut tlb: Option<Pfn> = None;
        for _ in 0..2 {
            match v.enter_guest() {
                Err(VcpuError::RequestsPending) => {
                    if v.check_request(Request::TLB_FLUSH) {
                        tlb = None;
                    }
                }
                Err(e) => panic!("guest entry: {e}"),
                Ok(guest) => {
                    if tlb.is_none() {
                        tlb = self.mmu.walk(GFN);
                    }
                    if let Some(pfn) = tlb {
                        self.guest_access(pfn);
                    }
                    drop(guest);
                    break;
                }
            }
        }
        v.put().expect("vcpu_put");
    }

    /// The guest reads the page its TLB maps `GFN` to.
    fn guest_access(&self, pfn: Pfn) {
        let seen = self.page[pfn.0 as usize].load(Relaxed);
        if self.freed[pfn.0 as usize].load(SeqCst) || seen == POISON {
            violated(format!("the guest accesses gfn {GFN} through a translation to pfn {pfn}, which the primary MMU freed"));
        }
    }

    /// The primary MMU moves host page 1 from pfn 1 to pfn 2 and frees pfn 1, inside an
    /// MMU-notifier invalidation of both host pages.
    pub fn primary_mmu_moves_page(&self) {
        let range = HvaRange::new(HVA, Hva(HVA.0 + PAGES * 4096)).expect("a valid range");
        let open = match self.vm.invalidate_range_start(&self.mmu, range) {
            Ok(open) => open,
            Err(e) => panic!("invalidate_range_start: {e}"),
        };
        self.host_pte[1].store(NEW_PFN.0, Relaxed);
        // The free: from here on, any use of a translation to pfn 1 is a use after free.
        self.freed[OLD_PFN.0 as usize].store(true, SeqCst);
        self.page[OLD_PFN.0 as usize].store(POISON, Relaxed);
        drop(open); // invalidate_range_end
    }

    /// After every role: no table entry maps a freed page.
    pub fn final_check(&self) {
        for gfn in (0..PAGES).map(Gfn) {
            if let Some(pfn) = self.mmu.walk(gfn) {
                if self.freed[pfn.0 as usize].load(SeqCst) {
                    violated(format!("at the end, the table still maps gfn {gfn} -> pfn {pfn}, which the primary MMU freed"));
                }
            }
        }
    }
}
