//! `sb-entry`: guest entry against a flush request (SB-entry), with a guest TLB.
//!
//! Each round: the requester links a fresh table page; both meet; after random delays the
//! vCPU enters the guest again and again (V1–V4: interrupts off, `mode = IN_GUEST_MODE`,
//! `GuestEntryModeBeforeRequests`, then the request check). Inside, the "hardware" walks the
//! root through a one-entry TLB: a TLB hit reuses the page it found earlier, a miss reads the
//! root link. Meanwhile the requester unlinks the page and commits it:
//! `kvm_flush_remote_tlbs` sets `KVM_REQ_TLB_FLUSH`, reads the mode after a full barrier, IPIs
//! a vCPU in guest mode and waits for its exit, then frees. The vCPU flushes its TLB when it
//! handles the request. It keeps entering until it has seen the requester finish, then enters
//! once more: after the flush returned, no entry may use the old translation (I5.2).
//!
//! A read of poison through the TLB is a stale translation used after the flush returned
//! (I5.2); through a fresh walk it is a walker reading a freed table page (I5.1).
//!
//! A [`Pacer`] moves the requester's start so that the guest has filled its TLB before the
//! unlink in about three rounds in four: a requester that is too early races nothing.

use super::walk::{fresh_page, read_page, F};
use super::{delay, Batch, Pacer, Recorder, Rendezvous, Rng, Tuning};
use crate::exec::{ScopedRole, ThreadExec};
use crate::poison::PoisonAlloc;
use mmusync::hal::{Atomic, Ordering};
use mmusync::mmu::Table;
use mmusync::vcpu::{Request, Vcpu, VcpuError};
use mmusync::walk::ZapList;
use mmusync_models::{Invariant, ScenarioHal};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};

/// The vCPU's part of round `round`: guest runs through a one-entry TLB, until `done` says the
/// other side finished the round's flush, and then one more. Returns whether any guest run
/// found the page (the round was contended).
pub(super) fn guest_runs<H: ScenarioHal>(
    vcpu: &Vcpu<H>,
    root: &H::AtomicU64,
    done: &AtomicU64,
    round: u64,
    hold: u32,
    rec: &Recorder,
) -> bool {
    let mut tlb = 0u64;
    let mut used = false;
    // One violation per round at most: later guest runs of the round would repeat it.
    let mut violated = false;
    loop {
        // Ghost: the other side's flush has returned (read before the entry it governs).
        let flushed = done.load(SeqCst) > round;
        match vcpu.enter_guest() {
            Ok(guest) => {
                let hit = tlb != 0;
                let link = if hit { tlb } else { root.load(Ordering::Acquire) };
                tlb = link;
                if link != 0 {
                    used = true;
                    // SAFETY: the root and the TLB only hold pages of the batch's
                    // `PoisonAlloc`, whose quarantine is released only after both roles finish.
                    if let Some(k) = unsafe { read_page::<H>(link, hold) }.filter(|_| !violated) {
                        violated = true;
                        let (inv, how) = if hit {
                            (
                                Invariant::StaleTlbAfterFlush,
                                "a TLB hit (a translation from an earlier guest run)",
                            )
                        } else {
                            (Invariant::WalkerReadFreedTable, "a fresh walk of the root")
                        };
                        rec.violation(
                            inv,
                            format_args!(
                                "round {round}: the guest reached table page {link:#x} through {how}; read {k} returned poison{}",
                                if flushed { ", after the flush had returned" } else { "" }
                            ),
                        );
                    }
                }
                drop(guest);
            }
            Err(VcpuError::RequestsPending) => {
                if vcpu.check_request(Request::TLB_FLUSH) {
                    tlb = 0;
                }
            }
            Err(e) => panic!("enter_guest: {e}"),
        }
        if flushed {
            return used;
        }
    }
}

pub(super) fn sb_entry<H: ScenarioHal>(
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
    let done = AtomicU64::new(0);
    // Ghost: whether the guest reached the page in the round just run (feeds the pacer).
    let used = AtomicBool::new(false);
    let rec = Recorder::default();

    let vcpu_role = || {
        let vcpu = &vcpus[0];
        let cpu = vcpu.hal().current_cpu().ok_or(mmusync::vcpu::VcpuError::NotACpu);
        if let Err(e) = cpu.and_then(|cpu| vcpu.load(cpu)) {
            panic!("sb-entry: loading vCPU 0: {e}");
        }
        let mut rng = Rng::new(seed);
        for round in 0..rounds {
            meet.meet(2 * round);
            delay(rng.below(tuning.jitter));
            let reached = guest_runs(vcpu, &root, &done, round, tuning.hold, &rec);
            if reached {
                rec.contended();
            }
            used.store(reached, SeqCst);
            // The TLB does not outlive the round; a request left pending is handled here.
            vcpu.check_request(Request::TLB_FLUSH);
            meet.meet(2 * round + 1);
        }
        if let Err(e) = vcpu.put() {
            panic!("sb-entry: putting vCPU 0: {e}");
        }
    };

    let requester = || {
        let hal = vcpus[0].hal();
        let mut rng = Rng::new(!seed);
        let mut pacer = Pacer::new(48, 16);
        for round in 0..rounds {
            let page = fresh_page(&alloc, round);
            root.store(page.as_ptr() as usize as u64, Ordering::Release);
            meet.meet(2 * round);
            delay(pacer.delay(&mut rng, tuning.jitter));
            root.store(0, Ordering::Relaxed);
            let mut zap = ZapList::<Table<H, F>, 1>::new();
            // SAFETY: the page is unlinked, came from `alloc`, is queued once, and the list is
            // committed with the only vCPU.
            if unsafe { zap.push(page) }.is_err() {
                unreachable!("a one-page list has room for one page");
            }
            // kvm_flush_remote_tlbs: the TLB_FLUSH request, the mode read, the IPI, the free.
            zap.commit(hal, &vcpus, &alloc);
            done.store(round + 1, SeqCst);
            meet.meet(2 * round + 1);
            pacer.feedback(used.load(SeqCst));
        }
    };

    exec.run_scoped(vec![ScopedRole::new("vcpu", vcpu_role), ScopedRole::new("requester", requester)]);
    rec.finish(rounds)
}
