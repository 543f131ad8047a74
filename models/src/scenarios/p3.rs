//! P3: memslot updates against invalidations and faults.

use super::{page_hvas, page_slot, setup, x86_fault, Host, Sptes};
use crate::exec::{violated, Executor, Invariant, Role};
use crate::ghost::Flag;
use crate::scenario::ScenarioHal;
use alloc::sync::Arc;
use alloc::vec;
use mmusync::lock::SpinLock;
use mmusync::memslot::{SlotCache, SlotChange};
use mmusync::notifier::Vm;
use mmusync::range::{Gfn, Pfn};
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
