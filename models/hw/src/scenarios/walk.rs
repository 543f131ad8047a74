//! `sb-walk`: a lockless walk against an unlink, the IPI flush and the free (SB-walk).
//!
//! Each round: the zapper links a fresh table page into the root; both meet; after random
//! delays, the walker opens a lockless walk (L1–L2: interrupts off, `mode =
//! READING_SHADOW_PAGE_TABLES`, `WalkBeginModeBeforeSpteReads`), reads the root link and, if it
//! found the page, reads its entries `hold` times; while the zapper unlinks the page, queues it
//! on a [`ZapList`] and commits it (`kvm_flush_remote_tlbs` with its full barrier and mode read,
//! an IPI to the walker if it is not `Outside`, then the free). A walker that reads poison read a
//! page that was freed under its open walk: I5.1 is violated.
//!
//! Without `WalkBeginModeBeforeSpteReads` the walker's mode store can still sit in its store
//! buffer when its link load is answered: the zapper then reads `Outside`, sends no IPI and
//! frees the page the walker is about to read (the store-buffering outcome x86 allows).
//!
//! To give that outcome a chance, the harness does what a litmus harness does: it prepares the
//! caches (after the rendezvous the walker reads the root, so its link load can hit, and the
//! zapper reads the vCPU's mode, so the walker's mode store must wait for the line), and a
//! [`Pacer`] moves the zapper's start so that the walker reaches the page first in about a
//! quarter of the rounds: the rounds gather where the zapper's mode read meets the walker's
//! mode store. (Each round in which the walker is found busy costs a real signal IPI.)

use super::{delay, Batch, Pacer, Recorder, Rendezvous, Rng, Tuning};
use crate::exec::{ScopedRole, ThreadExec};
use crate::poison::{PoisonAlloc, POISON_SPTE};
use mmusync::hal::{Atomic, Ordering, PageAlloc};
use mmusync::mmu::{Spte, Table};
use mmusync::range::Pfn;
use mmusync::vcpu::Vcpu;
use mmusync::walk::ZapList;
use mmusync_models::{Invariant, ScenarioHal};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

/// Entries per table page.
pub(super) const F: usize = 8;

/// A fresh table page whose entries are live leaves (pfn `round + 1`).
pub(super) fn fresh_page<H: ScenarioHal>(
    alloc: &PoisonAlloc<Table<H, F>>,
    round: u64,
) -> NonNull<Table<H, F>> {
    let t = Table::<H, F>::empty();
    let leaf = match Spte::leaf(Pfn(round % Spte::MAX_PFN.0 + 1), true, true) {
        Ok(s) => s.bits(),
        Err(e) => unreachable!("pfn below MAX_PFN: {e}"),
    };
    for i in 0..F {
        if let Some(e) = t.entry(i) {
            e.store(leaf, Ordering::Relaxed);
        }
    }
    match alloc.alloc(t) {
        Ok(p) => p,
        Err(_) => unreachable!("the poison allocator does not run out"),
    }
}

/// Reads `hold` entries of the page at `link`; returns the index of the first read that found
/// poison.
///
/// # Safety
///
/// `link` is the address of a page of `alloc`'s kind (a `Table<H, F>` from a [`PoisonAlloc`]
/// whose quarantine is not released while this runs).
pub(super) unsafe fn read_page<H: ScenarioHal>(link: u64, hold: u32) -> Option<u32> {
    // SAFETY: the caller's obligation: the page is allocated (live or quarantined) for the
    // whole call, and every access below is an atomic load.
    let page = unsafe { &*(link as usize as *const Table<H, F>) };
    (0..hold.max(1))
        .find(|&k| page.entry(k as usize % F).is_some_and(|e| e.load(Ordering::Relaxed) == POISON_SPTE))
}

pub(super) fn sb_walk<H: ScenarioHal>(
    hal: &H,
    exec: &ThreadExec,
    rounds: u64,
    tuning: Tuning,
    seed: u64,
) -> Batch {
    let vcpus = [Vcpu::new(hal.clone())];
    let root = H::AtomicU64::new(0);
    let alloc = PoisonAlloc::<Table<H, F>>::new();
    let meet = Rendezvous::new();
    // Ghost: whether the walker reached the page in the round just run (feeds the pacer).
    let saw = AtomicBool::new(false);
    let rec = Recorder::default();

    let walker = || {
        let vcpu = &vcpus[0];
        let cpu = vcpu.hal().current_cpu().ok_or(mmusync::vcpu::VcpuError::NotACpu);
        if let Err(e) = cpu.and_then(|cpu| vcpu.load(cpu)) {
            panic!("sb-walk: loading vCPU 0: {e}");
        }
        let mut rng = Rng::new(seed);
        for round in 0..rounds {
            meet.meet(2 * round);
            // Cache preparation: the root line in our cache, so the walk's link load can hit.
            std::hint::black_box(root.load(Ordering::Relaxed));
            delay(rng.below(tuning.jitter));
            let walk = match vcpu.walk_lockless_begin() {
                Ok(w) => w,
                Err(e) => panic!("sb-walk: walk_lockless_begin: {e}"),
            };
            let link = root.load(Ordering::Acquire);
            if link != 0 {
                // SAFETY: the root only holds pages of `alloc`, whose quarantine is released
                // only when `alloc` drops, after both roles have finished.
                if let Some(k) = unsafe { read_page::<H>(link, tuning.hold) } {
                    rec.violation(
                        Invariant::WalkerReadFreedTable,
                        format_args!(
                            "round {round}: the walker found table page {link:#x} through the root, and its read {k} inside the still-open walk returned poison: the zapper freed it under the walk"
                        ),
                    );
                }
                rec.contended();
            }
            drop(walk);
            saw.store(link != 0, SeqCst);
            meet.meet(2 * round + 1);
        }
        if let Err(e) = vcpu.put() {
            panic!("sb-walk: putting vCPU 0: {e}");
        }
    };

    let zapper = || {
        let hal = vcpus[0].hal();
        let mut rng = Rng::new(!seed);
        let mut pacer = Pacer::new(16, 48);
        for round in 0..rounds {
            let page = fresh_page(&alloc, round);
            // Release: the page's entries before the link the walker follows with acquire.
            root.store(page.as_ptr() as usize as u64, Ordering::Release);
            meet.meet(2 * round);
            // Cache preparation: the mode line shared with us, so the walker's mode store has
            // to wait for it.
            std::hint::black_box(vcpus[0].mode());
            delay(pacer.delay(&mut rng, tuning.jitter));
            // Z1: unlink (the only writer of the root; KVM holds mmu_lock here).
            root.store(0, Ordering::Relaxed);
            let mut zap = ZapList::<Table<H, F>, 1>::new();
            // SAFETY: the page is unlinked (no walk that begins now can reach it), came from
            // `alloc`, is queued once, and the list is committed with the only vCPU.
            if unsafe { zap.push(page) }.is_err() {
                unreachable!("a one-page list has room for one page");
            }
            // Z2: kvm_flush_remote_tlbs (IPI to the walker unless it is Outside), then free.
            zap.commit(hal, &vcpus, &alloc);
            meet.meet(2 * round + 1);
            pacer.feedback(saw.load(SeqCst));
        }
    };

    exec.run_scoped(vec![ScopedRole::new("walker", walker), ScopedRole::new("zapper", zapper)]);
    rec.finish(rounds)
}
