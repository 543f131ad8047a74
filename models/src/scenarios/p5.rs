//! P5: lockless walks, guest entry and the freeing of table pages.
//!
//! The tables are one root link (an SPTE holding the pfn of a table page, `0` = unlinked) and
//! ghost table pages that are never really released: the ghost allocator's `free` only marks a
//! page freed, and every read of a table page (by a software walker, or by the guest's hardware
//! walker through the root or a cached TLB entry) checks that mark at the moment of the read.

use super::setup;
use crate::exec::{violated, Executor, Invariant, Role};
use crate::ghost::{Pages, Pfn};
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use core::ptr::NonNull;
use mmusync::epoch::EpochReclaimer;
use mmusync::hal::{Atomic, CpuId, Ordering::Relaxed, PageAlloc};
use mmusync::lock::MmuLock;
use mmusync::vcpu::{flush_remote_tlbs, Request, Vcpu, VcpuError};
use mmusync::walk::ZapList;

/// A table page; its pfn names it in traces and in the ghost liveness.
pub struct TablePage {
    pfn: Pfn,
}

/// The most table pages a scenario uses.
const MAX_PAGES: usize = EPOCH_ZAP_PAGES;

/// How many table pages `epoch-walk`'s zap unlinks and defers: one more than a crossbeam-epoch
/// bag holds (64 deferred functions). crossbeam keeps a thread's deferred frees in its local bag
/// until the bag is full, the thread flushes, or its handle is dropped; only a full bag reaches
/// the global queue (sealed with the current epoch) while `zap` is still running. With 64 pages
/// or fewer, nothing the zap defers can be freed before `zap` returns, so
/// `Rule::FlushBeforeUnpin` could not matter; with 65, the first 64 can be freed as soon as the
/// zapper unpins.
pub const EPOCH_ZAP_PAGES: usize = 65;

/// Table pages pfn `1..=n` with ghost liveness, and their allocator. Only pfn 1 is linked from
/// the root; the others stand for the rest of a large zap.
pub struct Tables {
    pages: alloc::vec::Vec<TablePage>,
    freed: Pages<MAX_PAGES>,
}

impl Tables {
    fn new(n: usize) -> Self {
        assert!((1..=MAX_PAGES).contains(&n), "scenario setup: 1..={MAX_PAGES} table pages");
        Tables { pages: (1..=n as u64).map(|pfn| TablePage { pfn: Pfn(pfn) }).collect(), freed: Pages::new() }
    }

    /// Table page `pfn` (1-based).
    fn ptr(&self, pfn: Pfn) -> NonNull<TablePage> {
        NonNull::from(&self.pages[pfn.0 as usize - 1])
    }

    /// A read of table page `pfn` by `who`; `inv` names what a freed page means here.
    fn read<X: Executor>(&self, x: &X, who: &str, pfn: Pfn, inv: Invariant) {
        let freed = self.freed.is_freed(pfn);
        x.step(format_args!("{who} reads table page pfn {pfn} (freed: {freed})"));
        if freed {
            violated(inv, format_args!("{who} read table page pfn {pfn} after it was freed"));
        }
    }
}

/// The ghost allocator: `free` marks the page freed; memory lives as long as the tables.
#[derive(Clone)]
pub struct GhostAlloc(Arc<Tables>);

// SAFETY: `alloc` never hands out a page (the scenarios allocate none); `free` releases no
// memory (the page lives inside `Tables`, which outlives every pointer the scenario made), so
// no pointer ever dangles and none is reused.
unsafe impl PageAlloc<TablePage> for GhostAlloc {
    fn alloc(&self, init: TablePage) -> Result<NonNull<TablePage>, TablePage> {
        Err(init)
    }

    unsafe fn free(&self, page: NonNull<TablePage>) {
        // SAFETY: every page handed to `free` points into `self.0`, which is alive.
        let pfn = unsafe { page.as_ref() }.pfn;
        self.0.freed.free(pfn);
    }
}

/// What the shadow-MMU scenarios share.
struct Shadow<H: ScenarioHal> {
    vcpus: [Vcpu<H>; 1],
    mmu_lock: MmuLock<H>,
    root: H::AtomicU64,
    alloc: GhostAlloc,
}

impl<H: ScenarioHal> Shadow<H> {
    /// vCPU 0 loaded on CPU `cpu` (the role of that index), the root linking table page 1 of
    /// `pages` table pages.
    fn new(hal: &H, cpu: usize, pages: usize) -> Self {
        let vcpus = [Vcpu::new(hal.clone())];
        setup(vcpus[0].load(setup(CpuId::new(cpu))).map_err(DisplayVcpu));
        Shadow {
            vcpus,
            mmu_lock: MmuLock::new(),
            root: H::AtomicU64::new(1),
            alloc: GhostAlloc(Arc::new(Tables::new(pages))),
        }
    }

    /// The zapper (Z1-Z2): under `mmu_lock`, unlink the table page, queue it and commit
    /// (`kvm_flush_remote_tlbs`, then free).
    fn zap<X: Executor>(&self, hal: &H, x: &X) {
        let _g = self.mmu_lock.write();
        self.root.store(0, Relaxed);
        x.step(format_args!("unlink table page pfn 1 (root SPTE -> 0)"));
        let mut list = ZapList::<TablePage, 1>::new();
        // SAFETY: the page was just unlinked under mmu_lock, belongs to `self.alloc`, is
        // queued once, and the list is committed with the VM's only vCPU.
        setup(unsafe { list.push(self.alloc.0.ptr(Pfn(1))) }.map_err(|_| "zap list full"));
        let freed = list.commit(hal, &self.vcpus, &self.alloc).freed();
        x.step(format_args!("kvm_mmu_commit_zap_page: flushed, freed {freed} page(s)"));
    }

    /// The guest runs once with a TLB that caches table page 1 (it ran before), handling a
    /// TLB-flush request when entry reports one; the hardware walker reads the table through
    /// the TLB, or through the root if the TLB was flushed. Two tries at entry.
    fn run_guest<X: Executor>(&self, x: &X) {
        let vcpu = &self.vcpus[0];
        let mut tlb: Option<Pfn> = Some(Pfn(1));
        for _ in 0..2 {
            match vcpu.enter_guest() {
                Ok(guest) => {
                    x.step(format_args!("VM entry (IN_GUEST_MODE), TLB caches {tlb:?}"));
                    let pfn = tlb.unwrap_or_else(|| Pfn(self.root.load(Relaxed)));
                    if pfn != Pfn(0) {
                        for _ in 0..2 {
                            self.alloc.0.read(x, "hw walker (guest)", pfn, Invariant::StaleTlbAfterFlush);
                        }
                    }
                    drop(guest);
                    x.step(format_args!("VM exit"));
                    if vcpu.check_request(Request::TLB_FLUSH) {
                        x.step(format_args!("KVM_REQ_TLB_FLUSH handled: TLB flushed"));
                    }
                    return;
                }
                Err(VcpuError::RequestsPending) => {
                    x.step(format_args!("entry aborted: request pending"));
                    if vcpu.check_request(Request::TLB_FLUSH) {
                        tlb = None;
                        x.step(format_args!("KVM_REQ_TLB_FLUSH handled: TLB flushed"));
                    }
                }
                Err(e) => panic!("enter_guest: {e}"),
            }
        }
    }
}

/// `VcpuError` through `Display` for [`setup`].
struct DisplayVcpu(VcpuError);

impl core::fmt::Display for DisplayVcpu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Display::fmt(&self.0, f)
    }
}

/// SB-walk: a lockless shadow walk (interrupts off, mode
/// `READING_SHADOW_PAGE_TABLES`, full barrier, SPTE reads, release, `OUTSIDE`) on CPU 0 against
/// a zapper on CPU 1 that unlinks the table page, flushes remote TLBs and frees it. Asserts
/// I5.1: the walker never reads a freed table page.
pub fn sb_walk<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(Shadow::new(hal, 0, 1));
    let (ww, xw) = (w.clone(), x.clone());
    let (wz, xz, hz) = (w.clone(), x.clone(), hal.clone());
    x.run(vec![
        Role::new("walker", move || {
            let walk = setup(ww.vcpus[0].walk_lockless_begin().map_err(DisplayVcpu));
            xw.step(format_args!("walk_shadow_page_lockless_begin"));
            let pfn = Pfn(ww.root.load(Relaxed));
            xw.step(format_args!("walker reads root SPTE -> pfn {pfn}"));
            if pfn != Pfn(0) {
                for _ in 0..2 {
                    ww.alloc.0.read(&xw, "walker", pfn, Invariant::WalkerReadFreedTable);
                }
            }
            drop(walk);
            xw.step(format_args!("walk_shadow_page_lockless_end"));
        }),
        Role::new("zapper", move || wz.zap(&hz, &xz)),
    ]);
}

/// SB-entry: a vCPU enters the guest (interrupts off, `IN_GUEST_MODE`, full
/// barrier, request check) with a TLB entry for the table page, against a zapper that unlinks
/// the page, requests a TLB flush with a kick, and frees the page. Asserts I5.2: the guest
/// never uses the stale TLB entry once the flush has returned and freed the page.
pub fn sb_entry<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = Arc::new(Shadow::new(hal, 0, 1));
    let (wv, xv) = (w.clone(), x.clone());
    let (wz, xz, hz) = (w.clone(), x.clone(), hal.clone());
    x.run(vec![Role::new("vcpu", move || wv.run_guest(&xv)), Role::new("zapper", move || wz.zap(&hz, &xz))]);
}

/// P5's epoch scheme: the TDP MMU's way. The zapper (CPU 0) unlinks table page 1 and
/// [`EPOCH_ZAP_PAGES`]` - 1` more pages while pinned, flushes remote TLBs **before it unpins**,
/// and defers the frees to the epoch collector (crossbeam-epoch in its loom mode). The vCPU
/// (CPU 1) first walks the tables in software under an epoch pin, then runs the RCU callbacks
/// (two `collect`s: two epoch advances), then runs the guest with a TLB entry for table page 1
/// cached from before. Asserts I5.4: neither the software walker nor the guest's hardware
/// walker reads a freed table page.
///
/// Kills `FlushBeforeUnpin` at one preemption (the zapper is preempted between its unpin and
/// its late flush; the vCPU collects, which frees the first, full bag, and enters the guest
/// with no request pending). The zapper is role 0 (loom's main thread runs it first) for that
/// reason. More than a bag of pages is what makes the rule matter with crossbeam-epoch (see
/// [`EPOCH_ZAP_PAGES`]).
pub fn epoch_walk<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        shadow: Shadow<H>,
        reclaimer: EpochReclaimer,
    }
    let w =
        Arc::new(World { shadow: Shadow::new(hal, 1, EPOCH_ZAP_PAGES), reclaimer: EpochReclaimer::new() });
    let (wz, xz, hz) = (w.clone(), x.clone(), hal.clone());
    let (wv, xv) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("zapper", move || {
            let s = &wz.shadow;
            let handle = wz.reclaimer.register();
            // SAFETY: the pages belong to `s.alloc`, each is pushed once, and none is reachable
            // from the root once `unlink` returns (only pfn 1 ever was); software readers reach
            // pages only pinned, and the guest's hardware walker only through a TLB entry that
            // the flush removes.
            let n = unsafe {
                handle.zap(
                    &hz,
                    &s.alloc,
                    |list| {
                        let _g = s.mmu_lock.write();
                        s.root.store(0, Relaxed);
                        xz.step(format_args!(
                            "unlink table page pfn 1 (pinned); zap list: pfns 1..={EPOCH_ZAP_PAGES}"
                        ));
                        list.extend((1..=EPOCH_ZAP_PAGES as u64).map(|pfn| s.alloc.0.ptr(Pfn(pfn))));
                    },
                    || {
                        let targets = flush_remote_tlbs(&hz, &s.vcpus);
                        xz.step(format_args!("flush remote TLBs returned (IPIs to {targets:?})"));
                    },
                )
            };
            xz.step(format_args!("zap deferred {n} page(s), unpinned"));
        }),
        Role::new("vcpu", move || {
            let handle = wv.reclaimer.register();
            {
                let _walk = handle.walk_begin();
                let pfn = Pfn(wv.shadow.root.load(Relaxed));
                xv.step(format_args!("epoch walk (pinned): root SPTE -> pfn {pfn}"));
                if pfn != Pfn(0) {
                    wv.shadow.alloc.0.read(&xv, "epoch walker", pfn, Invariant::WalkerReadFreedTable);
                }
            }
            for _ in 0..2 {
                handle.collect();
            }
            xv.step(format_args!(
                "RCU callbacks: 2 collects, freed so far: pfn 1 {}",
                if wv.shadow.alloc.0.freed.is_freed(Pfn(1)) { "yes" } else { "no" }
            ));
            wv.shadow.run_guest(&xv);
        }),
    ]);
}

/// Q1 and `kvm_check_request`: the request contract (KVM's
/// `Documentation/virt/kvm/vcpu-requests.rst`): whatever a requester wrote before
/// `kvm_make_request` is visible to the vCPU that sees the request and handles it. The requester
/// (CPU 0) points the root at a new table page (the payload) and makes a TLB-flush request; the
/// vCPU (CPU 1, outside guest mode) checks the request and, if it is pending, handles it by
/// reloading the root. Asserts that the handler reads the new root.
///
/// Kills `RequestBeforeSetBit` (the payload store can pass the bit) and
/// `RequestTestBeforeHandle` (the handler's read can pass the bit test). In the flush paths of
/// `sb-walk`, `sb-entry` and `epoch-walk` neither can matter: there the vCPU reads page tables
/// only after guest entry's full barrier (`GuestEntryModeBeforeRequests`), which the requester's
/// own full barrier (`KickRequestBeforeModeRead`, after the bit) pairs with.
pub fn request_payload<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        vcpus: [Vcpu<H>; 1],
        root: H::AtomicU64,
    }
    let w = Arc::new(World { vcpus: [Vcpu::new(hal.clone())], root: H::AtomicU64::new(1) });
    setup(w.vcpus[0].load(setup(CpuId::new(1))).map_err(DisplayVcpu));
    let (wr, xr) = (w.clone(), x.clone());
    let (wv, xv) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("requester", move || {
            wr.root.store(2, Relaxed);
            xr.step(format_args!("root SPTE -> new table page pfn 2"));
            wr.vcpus[0].make_request(Request::TLB_FLUSH);
            xr.step(format_args!("kvm_make_request(KVM_REQ_TLB_FLUSH)"));
        }),
        Role::new("vcpu", move || {
            if wv.vcpus[0].check_request(Request::TLB_FLUSH) {
                let root = wv.root.load(Relaxed);
                xv.step(format_args!("KVM_REQ_TLB_FLUSH handled: root SPTE -> pfn {root}"));
                if root != 2 {
                    violated(
                        Invariant::StaleRequestPayload,
                        format_args!(
                            "the vCPU handled the request but read the root from before it (pfn {root})"
                        ),
                    );
                }
            } else {
                xv.step(format_args!("no request pending"));
            }
        }),
    ]);
}
