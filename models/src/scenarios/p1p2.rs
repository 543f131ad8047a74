//! P1 + P2: faults against invalidations.
//!
//! Every scenario here has a vCPU that faults on gfn 0 once and an invalidator that changes
//! the primary MMU's page behind it: start (zap the SPTE, flush) → the primary MMU remaps the
//! host page and frees the old one → end. The invariant is I2.1: after both finish, no SPTE
//! maps a freed page. (Nothing zaps after `start`, so a stale install is still there at the
//! end; the final check sees every violation.)

use super::{page_hvas, page_slot, setup, x86_fault, Host, Sptes};
use crate::exec::{Executor, Role};
use crate::ghost::Pfn;
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use mmusync::invalidation::Invalidation;
use mmusync::memslot::SlotChange;
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, GfnRange};

/// A VM with `N` memslots' worth of state: the notifier side (`Vm`), the primary MMU's `N`
/// host pages (initially mapping `pfns`, with `P` pfns in all), and the secondary MMU's SPTEs.
struct VmWorld<H: ScenarioHal, X: Executor, const N: usize, const P: usize> {
    vm: Vm<H, N>,
    host: Host<H, N, P>,
    sptes: Sptes<H, X, N>,
}

impl<H: ScenarioHal, X: Executor, const N: usize, const P: usize> VmWorld<H, X, N, P> {
    fn new(hal: &H, x: &X, pfns: [Pfn; N]) -> Arc<Self> {
        Arc::new(VmWorld { vm: Vm::new(hal.clone()), host: Host::new(pfns), sptes: Sptes::new(x.clone()) })
    }
}

/// The invalidation state alone (no memslot layer), one host page (`P` pfns in all) mapping
/// pfn 1, and one SPTE: the message-passing scenarios.
struct InvWorld<H: ScenarioHal, X: Executor, const P: usize> {
    inv: Invalidation<H>,
    host: Host<H, 1, P>,
    sptes: Sptes<H, X, 1>,
}

impl<H: ScenarioHal, X: Executor, const P: usize> InvWorld<H, X, P> {
    fn new(hal: &H, x: &X) -> Arc<Self> {
        Arc::new(InvWorld {
            inv: Invalidation::new(hal.clone()),
            host: Host::new([Pfn(1)]),
            sptes: Sptes::new(x.clone()),
        })
    }
}

/// F0-F14 vs. S1-S5/E1-E2: the x86 fault path against `invalidate_range_start`/`end` through the memslot
/// layer. Needs both halves of MP-2 and every retry check.
pub fn fault_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = VmWorld::<H, X, 1, 2>::new(hal, x, [Pfn(1)]);
    setup(w.vm.set_memslot(&w.sptes, SlotChange::Create(page_slot(0))));

    let (wv, xv) = (w.clone(), x.clone());
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            x86_fault(&xv, &wv.vm, &wv.host, &wv.sptes, Gfn(0));
        }),
        Role::new("invalidator", move || {
            let hvas = page_hvas(0);
            xi.step(format_args!("invalidate_range_start({:#x})", hvas.start()));
            setup(wi.vm.start(&wi.sptes, hvas));
            wi.host.remap_and_free(&xi, 0, Pfn(2));
            xi.step(format_args!("invalidate_range_end"));
            setup(wi.vm.end(hvas));
        }),
    ]);
    w.sptes.assert_no_freed(&w.host.pages);
}

/// MP-1: the PowerPC Book3S HV shape. The retry check runs without `mmu_lock`
/// ([`Invalidation::retry_lockless`]), under the per-HPTE lock that the zap also takes. The
/// writer's `seq++ → wmb → in_progress--` must meet the reader's `in_progress → rmb → seq`.
pub fn mp1_lockless_retry<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = InvWorld::<H, X, 2>::new(hal, x);

    let (wv, xv) = (w.clone(), x.clone());
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let snap = wv.inv.snapshot();
            xv.step(format_args!("snapshot seq = {}", snap.seq()));
            let pfn = wv.host.gup_fast(&xv, page_hvas(0).start());
            let _hpte = wv.sptes.hpte_lock.lock();
            let stale = setup(wv.inv.retry_lockless(&snap));
            xv.step(format_args!("retry_lockless(seq {}) under the HPTE lock -> {stale}", snap.seq()));
            if !stale {
                wv.sptes.install(Gfn(0), pfn);
            }
        }),
        Role::new("invalidator", move || {
            let range = setup(GfnRange::single(Gfn(0)));
            {
                let g = wi.inv.mmu_lock().write();
                setup(wi.inv.begin(&g, range));
                xi.step(format_args!("begin: in_progress++"));
                let _hpte = wi.sptes.hpte_lock.lock();
                wi.sptes.zap(Gfn(0));
            }
            wi.host.remap_and_free(&xi, 0, Pfn(2));
            let g = wi.inv.mmu_lock().write();
            setup(wi.inv.end(&g));
            xi.step(format_args!("end: seq++, in_progress--"));
        }),
    ]);
    w.sptes.assert_no_freed(&w.host.pages);
}

/// MP-2: the primary MMU zaps its PTE under the PTE lock, releases it, then `end` takes
/// `mmu_lock` and bumps `seq`; the fault reads `seq`, then walks the host PTE locklessly
/// (GUP-fast), then checks with the unranged [`Invalidation::retry`] under the read lock
/// (arm64). LKMM orders the zap before `seq++` through the lock chain; C11 does not, which is
/// why the crate has [`mmusync::Barrier::InvalidateEndZapBeforeSeq`].
pub fn mp2_snapshot_placement<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = InvWorld::<H, X, 1>::new(hal, x);

    let (wv, xv) = (w.clone(), x.clone());
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let snap = wv.inv.snapshot();
            xv.step(format_args!("snapshot seq = {}", snap.seq()));
            let pfn = wv.host.gup_fast(&xv, page_hvas(0).start());
            if pfn == Pfn(0) {
                return;
            }
            let g = wv.inv.mmu_lock().read();
            let stale = setup(wv.inv.retry(&g, &snap));
            xv.step(format_args!("retry(seq {}) under mmu_lock (read) -> {stale}", snap.seq()));
            if !stale {
                wv.sptes.install(Gfn(0), pfn);
            }
        }),
        Role::new("invalidator", move || {
            {
                let g = wi.inv.mmu_lock().write();
                setup(wi.inv.begin(&g, setup(GfnRange::single(Gfn(0)))));
                xi.step(format_args!("begin: in_progress++"));
                wi.sptes.zap(Gfn(0));
            }
            wi.host.remap_and_free(&xi, 0, Pfn(0));
            let g = wi.inv.mmu_lock().write();
            setup(wi.inv.end(&g));
            xi.step(format_args!("end: seq++, in_progress--"));
        }),
    ]);
    w.sptes.assert_no_freed(&w.host.pages);
}

/// P1's range merging: one `invalidate_range_start` hits two memslots, so `begin` runs once and `range_add`
/// twice in one critical section; the merged range must cover both. A fault on the first
/// slot's gfn while the invalidation is open must retry.
pub fn multi_slot_range_merge<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = VmWorld::<H, X, 2, 4>::new(hal, x, [Pfn(1), Pfn(2)]);
    for i in 0..2 {
        setup(w.vm.set_memslot(&w.sptes, SlotChange::Create(page_slot(i))));
    }

    let (wv, xv) = (w.clone(), x.clone());
    let (wi, xi) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            x86_fault(&xv, &wv.vm, &wv.host, &wv.sptes, Gfn(0));
        }),
        Role::new("invalidator", move || {
            let hvas = page_hvas(0).union(&page_hvas(1));
            xi.step(format_args!(
                "invalidate_range_start({:#x}..{:#x}): two memslots",
                hvas.start(),
                hvas.end()
            ));
            setup(wi.vm.start(&wi.sptes, hvas));
            wi.host.remap_and_free(&xi, 0, Pfn(3));
            wi.host.remap_and_free(&xi, 1, Pfn(4));
            xi.step(format_args!("invalidate_range_end"));
            setup(wi.vm.end(hvas));
        }),
    ]);
    w.sptes.assert_no_freed(&w.host.pages);
}

/// G1-G4 vs F0-F14: `Vm::zap_gfn_range`, a zap that is not an MMU-notifier event (KVM's
/// `kvm_zap_gfn_range`, as for the APIC-access page), against the x86 fault path on gfn 0.
/// One memslot (gfn 0 <- host page 0, pfn 1).
///
/// * vcpu: one attempt of the fault path (snapshot, `_unsafe` pre-check, GUP-fast, `retry_gfn`
///   under `mmu_lock`, install).
/// * zapper: KVM changes what gfn 0 must map without the primary MMU's notifier (here: host
///   page 0 now maps pfn 2, under the PTE lock and without `invalidate_range_start`), then
///   `zap_gfn_range(gfn 0)`; once it returned, pfn 1 is freed: the old translation must be gone
///   and stay gone.
///
/// Invariant I1.7 (as I2.1): no SPTE maps pfn 1 at the end. Without the invalidation around the
/// zap (`ZapGfnRangeInvalidates`), a fault that read pfn 1 before the change installs it after
/// the zap returned: `seq` never moved.
pub fn zap_gfn_range_vs_fault<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    let w = VmWorld::<H, X, 1, 2>::new(hal, x, [Pfn(1)]);
    setup(w.vm.set_memslot(&w.sptes, SlotChange::Create(page_slot(0))));

    let (wv, xv) = (w.clone(), x.clone());
    let (wz, xz) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            x86_fault(&xv, &wv.vm, &wv.host, &wv.sptes, Gfn(0));
        }),
        Role::new("zapper", move || {
            // The change itself (no MMU notifier), then the zap; only then is pfn 1 dead.
            let old = Pfn({
                let _pte = wz.host.pte_lock.lock();
                mmusync::hal::Atomic::swap(&wz.host.pte[0], 2, mmusync::hal::Ordering::Relaxed)
            });
            xz.step(format_args!("KVM changes gfn 0's backing: host page 0 pfn {old} -> 2 (no notifier)"));
            let flushed = setup(wz.vm.zap_gfn_range(&wz.sptes, setup(GfnRange::single(Gfn(0)))));
            xz.step(format_args!("zap_gfn_range(gfn 0) returned (flushed: {flushed})"));
            wz.host.pages.free(old);
            xz.step(format_args!("pfn {old} freed: no translation may use it any more"));
        }),
    ]);
    w.sptes.assert_no_freed(&w.host.pages);
}
