//! The scenario bodies, and the small world they share: a primary MMU (host PTEs behind a PTE
//! lock, with ghost page liveness), a secondary MMU (one SPTE per gfn), and the x86 fault path.
//!
//! Every body has the shape `fn(&H, &X)`: build the shared state (setup), run the roles with
//! [`Executor::run`], then check the final ghost state. Bodies are registered in
//! [`crate::scenario::SCENARIOS`].

pub mod cache;
pub mod mmu;
pub mod p1p2;
pub mod p3;
pub mod p4;
pub mod p5;

use crate::exec::{violated, Executor, Invariant};
use crate::ghost::{Pages, Pfn};
use mmusync::hal::{Atomic, Hal, Ordering::Relaxed};
use mmusync::lock::{MmuWriteGuard, SpinLock};
use mmusync::memslot::{Memslot, MemslotConfig, SlotId};
use mmusync::notifier::{SecondaryMmu, Vm};
use mmusync::range::{Gfn, GfnRange, Hva, HvaRange};
use mmusync::Rule;

/// Host address of the first host page the scenarios use; page `i` is at `HVA0 + i * 4096`.
pub const HVA0: Hva = Hva(0x1000);

/// The host range of page `i`.
pub fn page_hvas(i: u64) -> HvaRange {
    match HvaRange::new(Hva(HVA0.0 + i * 0x1000), Hva(HVA0.0 + (i + 1) * 0x1000)) {
        Ok(r) => r,
        Err(e) => panic!("scenario setup: {e}"),
    }
}

/// Memslot `i` of the scenarios' layout: the one page gfn `i` <- host page `i`.
pub fn page_slot(i: SlotId) -> Memslot {
    let page = u64::from(i);
    setup(Memslot::new(MemslotConfig { id: i, base_gfn: Gfn(page), npages: 1, hva: page_hvas(page).start() }))
}

/// Unwraps a result that only a scenario bug can make an error.
#[track_caller]
pub fn setup<T, E: core::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("scenario setup failed: {e}"),
    }
}

/// The primary MMU: `N` host PTEs (host page `i` → pfn, `0` = not present) behind one PTE lock,
/// and the ghost liveness of pages `1..=P`.
pub struct Host<H: Hal, const N: usize, const P: usize> {
    pte: [H::AtomicU64; N],
    pte_lock: SpinLock<H, ()>,
    /// Which pages are freed.
    pub pages: Pages<P>,
}

impl<H: Hal, const N: usize, const P: usize> Host<H, N, P> {
    /// Host page `i` maps `pfns[i]`.
    pub fn new(pfns: [Pfn; N]) -> Self {
        Host {
            pte: pfns.map(|pfn| H::AtomicU64::new(pfn.0)),
            pte_lock: SpinLock::<H, ()>::new(()),
            pages: Pages::new(),
        }
    }

    fn index(hva: Hva) -> usize {
        ((hva.0 - HVA0.0) / 0x1000) as usize
    }

    /// GUP-fast: a lockless read of the host PTE (`READ_ONCE`), as `hva_to_pfn` does.
    pub fn gup_fast<X: Executor>(&self, x: &X, hva: Hva) -> Pfn {
        let pfn = Pfn(self.pte[Self::index(hva)].load(Relaxed));
        x.step(format_args!("GUP-fast: host PTE of hva {hva:#x} -> pfn {pfn}"));
        pfn
    }

    /// The primary MMU changes host page `i` to `new` under its PTE lock (`pte_unmap_unlock`
    /// releases it) and then frees the old page, as `invalidate_range_start` allows.
    pub fn remap_and_free<X: Executor>(&self, x: &X, i: usize, new: Pfn) {
        let old = {
            let _pte = self.pte_lock.lock();
            let old = Pfn(self.pte[i].load(Relaxed));
            self.pte[i].store(new.0, Relaxed);
            old
        };
        x.step(format_args!("primary MMU: host page {i} pfn {old} -> {new} (PTE lock released)"));
        if old != Pfn(0) {
            self.pages.free(old);
            x.step(format_args!("primary MMU: freed pfn {old}"));
        }
    }
}

/// The secondary MMU: one SPTE per gfn `0..N` (`0` = not present, else the pfn), changed only
/// under `mmu_lock`, or under the per-SPTE HPTE lock in the PowerPC scenario.
pub struct Sptes<H: Hal, X: Executor, const N: usize> {
    spte: [H::AtomicU64; N],
    /// PowerPC Book3S HV's per-HPTE lock; the other scenarios leave it alone.
    pub hpte_lock: SpinLock<H, ()>,
    exec: X,
}

impl<H: Hal, X: Executor, const N: usize> Sptes<H, X, N> {
    /// No SPTE present.
    pub fn new(exec: X) -> Self {
        Sptes {
            spte: core::array::from_fn(|_| H::AtomicU64::new(0)),
            hpte_lock: SpinLock::<H, ()>::new(()),
            exec,
        }
    }

    /// Installs `gfn -> pfn`. The caller holds the lock that orders SPTE changes.
    pub fn install(&self, gfn: Gfn, pfn: Pfn) {
        self.spte[gfn.0 as usize].store(pfn.0, Relaxed);
        self.exec.step(format_args!("install SPTE gfn {gfn} -> pfn {pfn}"));
    }

    /// Clears the SPTE of `gfn`; returns whether it was present.
    pub fn zap(&self, gfn: Gfn) -> bool {
        let old = self.spte[gfn.0 as usize].swap(0, Relaxed);
        self.exec.step(format_args!("zap SPTE gfn {gfn} (was pfn {old})"));
        old != 0
    }

    /// The SPTE of `gfn`, for the final checks (after every role has finished).
    pub fn get(&self, gfn: Gfn) -> Pfn {
        Pfn(self.spte[gfn.0 as usize].load(Relaxed))
    }

    /// Final check of I2.1: no SPTE maps a freed page.
    pub fn assert_no_freed<const P: usize>(&self, pages: &Pages<P>) {
        for gfn in (0..N as u64).map(Gfn) {
            let pfn = self.get(gfn);
            if pages.is_freed(pfn) {
                violated(
                    Invariant::SpteMapsFreedPage,
                    format_args!("SPTE gfn {gfn} -> pfn {pfn}, which is freed"),
                );
            }
        }
    }
}

impl<H: Hal, X: Executor, const N: usize> SecondaryMmu<H> for Sptes<H, X, N> {
    fn unmap_gfn_range(&self, _guard: &MmuWriteGuard<'_, H>, _slot: &Memslot, gfns: GfnRange) -> bool {
        let mut flush = false;
        for gfn in gfns.iter().take_while(|gfn| gfn.0 < N as u64) {
            flush |= self.zap(gfn);
        }
        flush
    }

    fn flush_remote_tlbs(&self) {
        // These scenarios have no vCPU in guest mode: the walk and entry scenarios model the
        // flush itself.
        self.exec.step(format_args!("flush remote TLBs (no vCPU in guest mode)"));
    }
}

/// The x86 fault path on `gfn` (F0-F14, core/docs/protocols.md), with every check of the crate: SRCU read
/// section and memslot lookup, seq snapshot, `_unsafe` pre-check, GUP-fast, `retry_gfn` under
/// `mmu_lock`, install. One attempt: a fault that would retry returns `false` (safety does not
/// depend on the retry loop). [`Rule::FaultRetriesUnderLock`] broken: the locked check's answer
/// is ignored.
pub fn x86_fault<H: Hal, X: Executor, const N: usize, const S: usize, const HN: usize, const P: usize>(
    x: &X,
    vm: &Vm<H, N>,
    host: &Host<H, HN, P>,
    sptes: &Sptes<H, X, S>,
    gfn: Gfn,
) -> bool {
    let inv = vm.invalidation();
    let slots = vm.memslots().read();
    let Some(slot) = slots.find(gfn) else {
        x.step(format_args!("F1: no memslot for gfn {gfn} -> give up"));
        return false;
    };
    if slot.is_invalid() {
        x.step(format_args!("F6: memslot {} is INVALID -> RET_PF_RETRY", slot.id()));
        return false;
    }
    let snap = inv.snapshot();
    x.step(format_args!("F4: snapshot seq = {}", snap.seq()));
    if setup(inv.retry_gfn_unsafe(&snap, gfn)) {
        x.step(format_args!("F7: retry_gfn_unsafe -> retry"));
        return false;
    }
    let Some(hva) = slot.gfn_to_hva(gfn) else { return false };
    let pfn = host.gup_fast(x, hva);
    if pfn == Pfn(0) {
        return false;
    }
    let guard = inv.mmu_lock().write();
    let stale = setup(inv.retry_gfn(&guard, &snap, gfn));
    x.step(format_args!("F12: retry_gfn(seq {}, gfn {gfn}) under mmu_lock -> {stale}", snap.seq()));
    if stale && inv.hal().keeps(Rule::FaultRetriesUnderLock) {
        return false;
    }
    sptes.install(gfn, pfn);
    true
}
