//! P3: memslot updates against invalidations and faults, and the SRCU grace periods they rely on.

use super::{page_hvas, page_slot, setup, x86_fault, Host, Sptes};
use crate::exec::{violated, Executor, Invariant, Role};
use crate::ghost::{Flag, Pages};
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use mmusync::hal::{Atomic, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use mmusync::lock::SpinLock;
use mmusync::memslot::{SlotCache, SlotChange};
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, Pfn};
use mmusync::srcu::Srcu;
use mmusync::Error;

/// P3's swap (W1-W8): an invalidation of hva page 0 runs start → end while the memslot updater creates a
/// slot over that page. Start and end each decide on their own whether a memslot overlaps; the
/// swap must wait out the open pair, so both decide alike. Asserts I1.3: `end` never finds
/// `in_progress` already at zero, and `in_progress` is zero when both are done. The updater is
/// role 0 so that the mutants' windows are two preemptions deep.
pub fn memslot_swap_vs_invalidation<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal, X: Executor> {
        vm: Vm<H, 1>,
        sptes: Sptes<H, X, 1>,
    }
    let w = Arc::new(World { vm: Vm::new(hal.clone()), sptes: Sptes::new(x.clone()) });

    let (wi, xi) = (w.clone(), x.clone());
    let (wu, xu) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("memslot-updater", move || {
            xu.step(format_args!(
                "KVM_SET_USER_MEMORY_REGION: create slot 0 at hva {:#x}",
                page_hvas(0).start()
            ));
            setup(wu.vm.set_memslot(&wu.sptes, SlotChange::Create(page_slot(0))));
            xu.step(format_args!("memslot published"));
        }),
        Role::new("invalidator", move || {
            let hvas = page_hvas(0);
            setup(wi.vm.start(&wi.sptes, hvas));
            xi.step(format_args!("invalidate_range_start done"));
            match wi.vm.end(hvas) {
                Ok(()) => xi.step(format_args!("invalidate_range_end done")),
                Err(Error::Unbalanced) => violated(
                    Invariant::InProgressUnbalanced,
                    format_args!("end found a memslot that start did not, with in_progress already 0"),
                ),
                Err(e) => panic!("invalidate_range_end: {e}"),
            }
        }),
    ]);
    let g = w.vm.invalidation().mmu_lock().read();
    let n = setup(w.vm.invalidation().in_progress(&g));
    if n != 0 {
        violated(
            Invariant::InProgressUnbalanced,
            format_args!("in_progress = {n} after every start/end pair ended"),
        );
    }
}

/// P3's delete, I3.2: a vCPU faults on gfn 0 inside its SRCU read section while the updater deletes
/// the slot (publish an INVALID copy, wait for SRCU readers, zap the slot's SPTEs, publish the
/// final layout, wait again). When the delete has returned, no SPTE may map the slot's gfn.
pub fn memslot_delete_vs_fault<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal, X: Executor> {
        vm: Vm<H, 1>,
        host: Host<H, 1, 1>,
        sptes: Sptes<H, X, 1>,
        deleted: Flag,
    }
    let w = Arc::new(World {
        vm: Vm::new(hal.clone()),
        host: Host::new([Pfn(1)]),
        sptes: Sptes::new(x.clone()),
        deleted: Flag::new(),
    });
    setup(w.vm.set_memslot(&w.sptes, SlotChange::Create(page_slot(0))));

    let (wv, xv) = (w.clone(), x.clone());
    let (wu, xu) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            x86_fault(&xv, &wv.vm, &wv.host, &wv.sptes, Gfn(0));
        }),
        Role::new("memslot-updater", move || {
            xu.step(format_args!("KVM_SET_USER_MEMORY_REGION: delete slot 0"));
            setup(wu.vm.set_memslot(&wu.sptes, SlotChange::Delete(0)));
            wu.deleted.set();
            xu.step(format_args!("delete returned"));
        }),
    ]);
    let pfn = w.sptes.get(Gfn(0));
    if w.deleted.get() && pfn != Pfn(0) {
        violated(
            Invariant::SpteMapsDeletedSlot,
            format_args!("SPTE gfn 0 -> pfn {pfn} after slot 0 was deleted"),
        );
    }
}

/// W1-W8, I3.4: a memslot lookup cached by generation (KVM's MMIO SPTEs, `gfn_to_hva_cache`:
/// [`SlotCache`]) against the swap that creates slot 0 (gfn 0 <- host page 0). No memslot at
/// first.
///
/// * vcpu: inside one SRCU read section, looks gfn 0 up (no slot: an MMIO gfn), then reads the
///   generation through a second dereference of the active set, as KVM's fault path does
///   between `kvm_vcpu_gfn_to_memslot` and `mark_mmio_spte`, and caches the answer under it.
/// * memslot-updater: `set_memslot(Create slot 0)`.
///
/// Invariant I3.4: at the end, a cached answer that the final generation still accepts is the
/// final layout's. Without the in-progress bit (`MemslotGenerationInProgress`), the lookup in
/// the old set gets stamped with the new set's final generation: "no memslot" cached for good.
pub fn memslot_generation_vs_cache<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal, X: Executor> {
        vm: Vm<H, 1>,
        sptes: Sptes<H, X, 1>,
        cache: SpinLock<H, SlotCache>,
    }
    let w = Arc::new(World {
        vm: Vm::new(hal.clone()),
        sptes: Sptes::new(x.clone()),
        cache: SpinLock::<H, SlotCache>::new(SlotCache::new()),
    });

    let (wv, xv) = (w.clone(), x.clone());
    let (wu, xu) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let slots = wv.vm.memslots().read();
            let hva = slots.find(Gfn(0)).and_then(|s| s.gfn_to_hva(Gfn(0)));
            xv.step(format_args!("lookup gfn 0 -> {hva:?}"));
            let generation = wv.vm.memslots().read().generation();
            let filled = wv.cache.lock().fill(generation, Gfn(0), hva);
            xv.step(format_args!("cache gfn 0 -> {hva:?} under generation {generation:#x}: {filled:?}"));
            drop(slots);
        }),
        Role::new("memslot-updater", move || {
            xu.step(format_args!("KVM_SET_USER_MEMORY_REGION: create slot 0"));
            setup(wu.vm.set_memslot(&wu.sptes, SlotChange::Create(page_slot(0))));
            xu.step(format_args!("create returned"));
        }),
    ]);
    let slots = w.vm.memslots().read();
    let generation = slots.generation();
    let truth = slots.find(Gfn(0)).and_then(|s| s.gfn_to_hva(Gfn(0)));
    let cached = w.cache.lock().get(generation, Gfn(0));
    if let Some(cached) = cached {
        if cached != truth {
            violated(
                Invariant::StaleGenerationCache,
                format_args!(
                    "generation {generation:#x} still accepts gfn 0 -> {cached:?}, but its layout maps {truth:?}"
                ),
            );
        }
    }
}

/// W1-W8, I3.4 at the cache's use: a vCPU fills a lookup cache stamped by generation
/// ([`SlotCache`]) and later answers from it, while the memslot updater creates slot 0 (gfn 0
/// <- host page 0). No memslot and generation 0 at first.
///
/// * vcpu: in one SRCU read section, looks gfn 0 up and caches the answer under the generation
///   read through a second dereference (the fault path's MMIO SPTE, as in
///   [`memslot_generation_vs_cache`]); then, in a second read section, answers gfn 0 through
///   the cache ([`SlotCache::lookup`]: `kvm_read_guest_cached`).
/// * memslot-updater: `set_memslot(Create slot 0)`.
///
/// Invariant I3.4, checked where the cache is used: the answer equals what the set read in the
/// same section maps. Without the in-progress bit (`MemslotGenerationInProgress`) the old set's
/// "no memslot" is stamped with the new set's final generation and answered after the swap. A
/// swap that stamps its window with generation 0 instead of the in-progress bit (a source
/// mutant of `Memslots::swap` that no named rule expresses) lets the answer cached at
/// generation 0, before the swap, be accepted inside the window, where the new set already maps
/// gfn 0: the second section must start after the publish and before the final generation.
pub fn memslot_cache_in_swap_window<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal, X: Executor> {
        vm: Vm<H, 1>,
        sptes: Sptes<H, X, 1>,
    }
    let w = Arc::new(World { vm: Vm::new(hal.clone()), sptes: Sptes::new(x.clone()) });

    let (wv, xv) = (w.clone(), x.clone());
    let (wu, xu) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("vcpu", move || {
            let mut cache = SlotCache::new();
            let slots = wv.vm.memslots().read();
            let hva = slots.find(Gfn(0)).and_then(|s| s.gfn_to_hva(Gfn(0)));
            let generation = wv.vm.memslots().read().generation();
            let filled = cache.fill(generation, Gfn(0), hva);
            xv.step(format_args!("cache gfn 0 -> {hva:?} under generation {generation:#x}: {filled:?}"));
            drop(slots);

            let slots = wv.vm.memslots().read();
            let generation = slots.generation();
            let answer = cache.lookup(&slots, Gfn(0));
            let truth = slots.find(Gfn(0)).and_then(|s| s.gfn_to_hva(Gfn(0)));
            xv.step(format_args!("cached lookup of gfn 0 under generation {generation:#x} -> {answer:?}"));
            if answer != truth {
                violated(
                    Invariant::StaleGenerationCache,
                    format_args!(
                        "generation {generation:#x} answers gfn 0 -> {answer:?} from the cache, but its layout maps {truth:?}"
                    ),
                );
            }
        }),
        Role::new("memslot-updater", move || {
            xu.step(format_args!("KVM_SET_USER_MEMORY_REGION: create slot 0"));
            setup(wu.vm.set_memslot(&wu.sptes, SlotChange::Create(page_slot(0))));
            xu.step(format_args!("create returned"));
        }),
    ]);
}

/// SRCU itself, I3.2 ("no SRCU reader still uses the old set"), with a read section that
/// straddles two grace periods. Core's [`Srcu`] guards a published word that names one of three
/// versions of some data (host pages 1 to 3, each with a payload word; page 1 at first), whose
/// liveness is ghost state.
///
/// * reader: `srcu_read_lock`, reads the published page (acquire: `srcu_dereference`), reads
///   its payload, checks that the page is not freed, `srcu_read_unlock`.
/// * updater: publishes page 2 (release), `synchronize`, frees page 1; publishes page 3,
///   `synchronize`, frees page 2.
///
/// Invariant I3.2: the reader never uses a freed page. A reader that loads index 0 before the
/// first `synchronize` flips it, and increments counter 0 only after that call has drained it,
/// reads page 2 and is counted where only the second call's first wait (`count[!cur]`, with
/// `cur` = 1) looks. A `synchronize` whose first wait drains the same counter as its second
/// (source mutants of that wait's index, docs/mutants.md) frees page 2 under the reader.
/// Without `SrcuReadLockMb` or `SrcuSyncBeforeScan`, the first scan can miss a reader that
/// still reads page 1, which the updater then frees.
pub fn srcu_reader_straddles_two_syncs<H: ScenarioHal, X: Executor>(hal: &H, x: &X) {
    struct World<H: ScenarioHal> {
        srcu: Srcu<H>,
        published: H::AtomicU64,
        payload: [H::AtomicU64; 3],
        pages: Pages<3>,
    }
    let w = Arc::new(World {
        srcu: Srcu::new(hal.clone()),
        published: H::AtomicU64::new(1),
        payload: core::array::from_fn(|i| H::AtomicU64::new(0x100 * (i as u64 + 1))),
        pages: Pages::new(),
    });

    let (wr, xr) = (w.clone(), x.clone());
    let (wu, xu) = (w.clone(), x.clone());
    x.run(vec![
        Role::new("reader", move || {
            let section = wr.srcu.read_lock();
            let page = Pfn(wr.published.load(Acquire));
            xr.step(format_args!("srcu_dereference -> page {page}"));
            // The use: a model access, so that loom can run the updater between the
            // dereference and the check below.
            let payload = wr.payload[(page.0 - 1) as usize].load(Relaxed);
            xr.step(format_args!("read page {page}'s payload {payload:#x}"));
            if wr.pages.is_freed(page) {
                violated(
                    Invariant::SrcuReaderUsesFreedData,
                    format_args!(
                        "the reader used page {page} inside its SRCU section after the updater freed it"
                    ),
                );
            }
            drop(section);
            xr.step(format_args!("srcu_read_unlock"));
        }),
        Role::new("updater", move || {
            for (old, new) in [(Pfn(1), Pfn(2)), (Pfn(2), Pfn(3))] {
                wu.published.store(new.0, Release);
                xu.step(format_args!("publish page {new} (rcu_assign_pointer)"));
                wu.srcu.synchronize();
                wu.pages.free(old);
                xu.step(format_args!("synchronize_srcu returned: freed page {old}"));
            }
        }),
    ]);
}
