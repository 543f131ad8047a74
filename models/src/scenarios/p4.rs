//! P4: unsync shadow pages against the guest's writes, TLB flush and `kvm_mmu_sync_roots`.

use super::setup;
use crate::exec::{violated, Executor, Invariant, Role};
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use mmusync::hal::{Atomic, Ordering::Relaxed};
use mmusync::lock::MmuLock;
use mmusync::range::Gfn;
use mmusync::unsync::{ShadowPages, SpIndex};
use mmusync::FenceKind;

/// The guest PTE value before and after the guest's write.
const OLD_GPTE: u64 = 10;
const NEW_GPTE: u64 = 20;

/// P4's race (U4 vs. C3): the host makes the SPTE that maps a guest page table writable (marking the
/// shadow page unsync first), while the guest's hardware walker — its own actor, a lockless
/// reader of SPTE memory on the vCPU's CPU — reads SPTE.W, the guest writes its PTE through it
/// (or traps and the host emulates the write), flushes its TLB (a VM exit: a full fence), and
/// the host runs `kvm_mmu_sync_roots`. Asserts I4.2: after the flush, the shadow entry reflects
/// the guest's write.
pub fn unsync_vs_guest_write<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        mmu_lock: MmuLock<H>,
        sp: ShadowPages<H, 2>,
        root: SpIndex,
        leaf: SpIndex,
        /// The SPTE mapping the guest page-table page: 1 = writable.
        spte_w: H::AtomicU64,
        /// The guest PTE, in guest memory.
        gpte: H::AtomicU64,
        /// The shadow page's entry for it (changed under `mmu_lock`).
        shadow: H::AtomicU64,
    }
    let mmu_lock = MmuLock::new();
    let sp = ShadowPages::new(hal.clone());
    let (root, leaf) = {
        let g = mmu_lock.write();
        let root = setup(sp.alloc_root(&g, 2, Gfn(100)));
        (root, setup(sp.alloc_child(&g, root, 0, Gfn(5))))
    };
    let w = Arc::new(World {
        mmu_lock,
        sp,
        root,
        leaf,
        spte_w: H::AtomicU64::new(0),
        gpte: H::AtomicU64::new(OLD_GPTE),
        shadow: H::AtomicU64::new(OLD_GPTE),
    });

    let (wh, xh) = (w.clone(), x.clone());
    let (wv, xv, hv) = (w.clone(), x.clone(), hal.clone());
    x.run(vec![
        Role::new("host-fault", move || {
            let g = wh.mmu_lock.read();
            setup(wh.sp.try_to_unsync(&g, wh.leaf, true, false));
            xh.step(format_args!("mmu_try_to_unsync_pages: leaf unsync, root marked"));
            wh.spte_w.store(1, Relaxed);
            xh.step(format_args!("make_spte: SPTE of the guest page table -> writable"));
        }),
        Role::new("vcpu+hw-walker", move || {
            // The hardware walker: a lockless read of SPTE.W, then the guest's write.
            let writable = wv.spte_w.load(Relaxed) == 1;
            xv.step(format_args!("hw walker: SPTE.W = {writable}"));
            if writable {
                wv.gpte.store(NEW_GPTE, Relaxed);
                xv.step(format_args!("guest writes its PTE {NEW_GPTE} without trapping"));
            } else {
                let _g = wv.mmu_lock.write();
                wv.gpte.store(NEW_GPTE, Relaxed);
                wv.shadow.store(NEW_GPTE, Relaxed);
                xv.step(format_args!("write-protection fault: host emulates the write, shadow updated"));
            }
            // The guest's TLB flush exits to the host: VM exit serializes.
            hv.fence(FenceKind::Mb);
            let synced = setup(wv.sp.sync_roots_if_needed(&wv.mmu_lock, wv.root, |_| {
                let v = wv.gpte.load(Relaxed);
                wv.shadow.store(v, Relaxed);
            }));
            xv.step(format_args!("kvm_mmu_sync_roots after the guest TLB flush -> synced {synced}"));
            let seen = wv.shadow.load(Relaxed);
            if seen != NEW_GPTE {
                violated(
                    Invariant::MissedSync,
                    format_args!("shadow entry {seen} after the guest wrote {NEW_GPTE} and flushed"),
                );
            }
        }),
    ]);
}

/// U2, I4.3: two host faults mark two leaves under one root unsync, each under `mmu_lock`
/// held for read (the TDP-MMU-style concurrent fault path), so the parent's bitmap word and
/// `unsync_children` are updated by two CPUs at once; `mmu_unsync_pages_lock` must serialize
/// them. Asserts the bookkeeping afterwards ([`ShadowPages::check_invariants`]).
pub fn unsync_two_markers<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        mmu_lock: MmuLock<H>,
        sp: ShadowPages<H, 3>,
        leaves: [SpIndex; 2],
    }
    let mmu_lock = MmuLock::new();
    let sp = ShadowPages::new(hal.clone());
    let leaves = {
        let g = mmu_lock.write();
        let root = setup(sp.alloc_root(&g, 2, Gfn(100)));
        [setup(sp.alloc_child(&g, root, 0, Gfn(5))), setup(sp.alloc_child(&g, root, 1, Gfn(6)))]
    };
    let w = Arc::new(World { mmu_lock, sp, leaves });
    let roles = (0..2)
        .map(|i| {
            let (w, x) = (w.clone(), x.clone());
            Role::new(["host-fault-a", "host-fault-b"][i], move || {
                let g = w.mmu_lock.read();
                setup(w.sp.try_to_unsync(&g, w.leaves[i], true, false));
                x.step(format_args!("leaf {i} marked unsync"));
            })
        })
        .collect();
    x.run(roles);
    let g = w.mmu_lock.write();
    if let Err(e) = w.sp.check_invariants(&g) {
        violated(Invariant::UnsyncBookkeeping, format_args!("{e}"));
    }
}
