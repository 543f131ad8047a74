//! `epoch-walk`: the TDP MMU's scheme on real threads: epoch-pinned software walks and a guest
//! TLB against zaps that pin, unlink, flush remote TLBs, defer the free and unpin (flush before
//! unpin), with crossbeam-epoch as the RCU.
//!
//! Each round: the zapper links a fresh page; both meet; the vCPU does one pinned software walk
//! (it must never read poison: the page is freed only after a grace period), then guest runs
//! through a TLB as in `sb-entry` (after the zap's flush returned, no entry may use the old
//! translation). The zapper zaps with [`ReclaimHandle::zap`](mmusync::epoch::ReclaimHandle::zap)
//! and collects.
//!
//! No mutant is reachable here. `FlushBeforeUnpin`: pages deferred while pinned stay in the
//! zapper's thread-local bag until its next collection, so nothing is freed inside the window
//! the mutant opens. `EntryChecksRequests`: a guest that skips the request check keeps its
//! stale TLB entry, but the page outlives the round (it waits for a grace period), and the TLB
//! does not. The scenario checks the correct scheme under real reclamation and real poisoning.

use super::entry::guest_runs;
use super::walk::{fresh_page, read_page, F};
use super::{delay, Batch, Recorder, Rendezvous, Rng, Tuning};
use crate::exec::{ScopedRole, ThreadExec};
use crate::poison::PoisonAlloc;
use mmusync::epoch::EpochReclaimer;
use mmusync::hal::{Atomic, Ordering};
use mmusync::mmu::Table;
use mmusync::vcpu::{flush_remote_tlbs, Request, Vcpu};
use mmusync_models::{Invariant, ScenarioHal};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

pub(super) fn epoch_walk<H: ScenarioHal>(
    hal: &H,
    exec: &ThreadExec,
    rounds: u64,
    tuning: Tuning,
    seed: u64,
) -> Batch {
    let alloc = PoisonAlloc::<Table<H, F>>::new();
    let vcpus = [Vcpu::new(hal.clone())];
    let root = H::AtomicU64::new(0);
    let reclaimer = EpochReclaimer::new();
    let meet = Rendezvous::new();
    let done = AtomicU64::new(0);
    let rec = Recorder::default();

    let vcpu_role = || {
        let vcpu = &vcpus[0];
        let cpu = vcpu.hal().current_cpu().ok_or(mmusync::vcpu::VcpuError::NotACpu);
        if let Err(e) = cpu.and_then(|cpu| vcpu.load(cpu)) {
            panic!("epoch-walk: loading vCPU 0: {e}");
        }
        let handle = reclaimer.register();
        let mut rng = Rng::new(seed);
        for round in 0..rounds {
            meet.meet(2 * round);
            delay(rng.below(tuning.jitter));
            let walk = handle.walk_begin();
            let link = root.load(Ordering::Acquire);
            if link != 0 {
                rec.contended();
                // SAFETY: the root only holds pages of `alloc`, whose quarantine is released
                // only when `alloc` drops, after both roles have finished.
                if let Some(k) = unsafe { read_page::<H>(link, tuning.hold) } {
                    rec.violation(
                        Invariant::WalkerReadFreedTable,
                        format_args!(
                            "round {round}: a pinned walk read poison from table page {link:#x} (read {k})"
                        ),
                    );
                }
            }
            drop(walk);
            guest_runs(vcpu, &root, &done, round, tuning.hold, &rec);
            vcpu.check_request(Request::TLB_FLUSH);
            meet.meet(2 * round + 1);
        }
        if let Err(e) = vcpu.put() {
            panic!("epoch-walk: putting vCPU 0: {e}");
        }
    };

    let zapper = || {
        let hal = vcpus[0].hal();
        let handle = reclaimer.register();
        let mut rng = Rng::new(!seed);
        for round in 0..rounds {
            let page = fresh_page(&alloc, round);
            root.store(page.as_ptr() as usize as u64, Ordering::Release);
            meet.meet(2 * round);
            delay(rng.below(tuning.jitter));
            // SAFETY: the page came from `alloc`, is pushed once, right after it is unlinked
            // (no new reader can find it); software readers pin this reclaimer, and the only
            // hardware reader is the vCPU, which the flush waits for.
            unsafe {
                handle.zap(
                    hal,
                    &alloc,
                    |retired| {
                        root.store(0, Ordering::Relaxed);
                        retired.push(page);
                    },
                    || {
                        flush_remote_tlbs(hal, &vcpus);
                    },
                )
            };
            handle.collect();
            done.store(round + 1, SeqCst);
            meet.meet(2 * round + 1);
        }
    };

    exec.run_scoped(vec![ScopedRole::new("vcpu", vcpu_role), ScopedRole::new("zapper", zapper)]);
    rec.finish(rounds)
}
