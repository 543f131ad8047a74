//! The `std` backend as a real process uses it: threads that never registered as CPUs, more
//! than one VM, vCPUs created while the VM runs.

#![cfg(all(feature = "std", target_os = "linux"))]

use mmusync::{
    flush_remote_tlbs, BoxAlloc, Cpus, FaultOutcome, Gfn, Hva, HvaRange, Memslot, MemslotConfig, Pfn,
    ReferenceMmu, Request, SlotChange, StdHal, Vcpu, VcpuError, VcpuRegistry, Vm,
};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

type Mmu<'v> = ReferenceMmu<'v, StdHal, BoxAlloc, 3, 8>;

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

#[test]
fn a_thread_that_is_not_a_cpu_gets_typed_errors_and_can_flush() {
    thread::spawn(|| {
        assert_eq!(StdHal.current_cpu(), None);
        let v = [Vcpu::new(StdHal)];
        // Loaded on some CPU that is not this thread: every vCPU-side call is refused.
        v[0].load(mmusync::hal::CpuId::new(7).unwrap()).unwrap();
        assert_eq!(v[0].enter_guest().err(), Some(VcpuError::NotACpu));
        assert_eq!(v[0].walk_lockless_begin().err(), Some(VcpuError::NotACpu));
        assert_eq!(v[0].put(), Err(VcpuError::NotACpu));
        // The requester side needs no CPU: CPU 7 is offline (or another test's thread), the
        // vCPU is Outside, so nothing to interrupt; the request is set.
        assert!(flush_remote_tlbs(&StdHal, &v).is_empty());
        assert!(v[0].check_request(Request::TLB_FLUSH));
        // A whole invalidation with a zap and a flush, from this thread.
        let vm: Vm<StdHal, 4> = Vm::new(StdHal);
        let mmu: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, &v).unwrap();
        vm.set_memslot(
            &mmu,
            SlotChange::Create(
                Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 64, hva: Hva(0x10_0000) })
                    .unwrap(),
            ),
        )
        .unwrap();
        assert_eq!(
            mmu.fault(&vm, Gfn(3), true, |hva| Ok(Pfn(hva.0 >> 12))).unwrap(),
            FaultOutcome::Installed(Pfn(0x103))
        );
        let open =
            vm.invalidate_range_start(&mmu, HvaRange::new(Hva(0x10_3000), Hva(0x10_4000)).unwrap()).unwrap();
        open.end().unwrap();
        assert!(v[0].check_request(Request::TLB_FLUSH), "the zap flushed");
    })
    .join()
    .unwrap();
}

/// Two VMs in one process: VM B's vCPU runs its guest (interrupts off) for the whole test,
/// while VM A faults, invalidates (zap, flush of A's vCPUs), churns memslots and hotplugs a
/// vCPU. Nothing of A waits for B or disturbs it, and B's own flush still works afterwards.
#[test]
fn two_vms_in_one_process_are_independent() {
    let regs_a: VcpuRegistry<StdHal, 4> = VcpuRegistry::new(StdHal);
    let regs_b: VcpuRegistry<StdHal, 4> = VcpuRegistry::new(StdHal);
    let (vm_a, vm_b): (Vm<StdHal, 4>, Vm<StdHal, 4>) = (Vm::new(StdHal), Vm::new(StdHal));
    let mmu_a: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, regs_a.all()).unwrap();
    let mmu_b: Mmu<'_> = ReferenceMmu::new(StdHal, BoxAlloc, regs_b.all()).unwrap();
    // The same gfns, different host memory.
    vm_a.set_memslot(
        &mmu_a,
        SlotChange::Create(
            Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 64, hva: Hva(0x10_0000) }).unwrap(),
        ),
    )
    .unwrap();
    vm_b.set_memslot(
        &mmu_b,
        SlotChange::Create(
            Memslot::new(MemslotConfig { id: 0, base_gfn: Gfn(0), npages: 64, hva: Hva(0x90_0000) }).unwrap(),
        ),
    )
    .unwrap();

    let b_in_guest = AtomicBool::new(false);
    let a_done = AtomicBool::new(false);
    let b_checked = AtomicBool::new(false);
    thread::scope(|s| {
        // VM B's vCPU: enters its guest and stays there until A is done.
        s.spawn(|| {
            let reg = StdHal::register_cpu().unwrap();
            let (_, vcpu) = regs_b.add().unwrap();
            vcpu.load(reg.cpu()).unwrap();
            assert_eq!(
                mmu_b.fault(&vm_b, Gfn(3), true, |hva| Ok(Pfn(hva.0 >> 12))).unwrap(),
                FaultOutcome::Installed(Pfn(0x903))
            );
            let g = vcpu.enter_guest().unwrap();
            b_in_guest.store(true, SeqCst);
            wait_until("VM A to finish", || a_done.load(SeqCst));
            assert!(!g.kicked(), "VM A's flushes kicked VM B's vCPU");
            drop(g);
            assert!(!vcpu.requests_pending(), "VM A's flushes requested on VM B's vCPU");
            b_checked.store(true, SeqCst);
            // B's own flush, from another thread, later in the test.
            wait_until("B's flush", || vcpu.requests_pending());
            assert!(vcpu.check_request(Request::TLB_FLUSH));
            vcpu.put().unwrap();
        });
        wait_until("VM B's guest", || b_in_guest.load(SeqCst));

        // VM A, on a registered thread with a vCPU hotplugged now.
        let reg = StdHal::register_cpu().unwrap();
        let (_, vcpu) = regs_a.add().unwrap();
        vcpu.load(reg.cpu()).unwrap();
        for round in 0..50u64 {
            let gfn = Gfn(round % 64);
            assert_eq!(
                mmu_a.fault(&vm_a, gfn, true, |hva| Ok(Pfn(hva.0 >> 12))).unwrap(),
                FaultOutcome::Installed(Pfn(0x100 + gfn.0))
            );
            let hvas = HvaRange::new(Hva(0x10_0000 + gfn.0 * 4096), Hva(0x10_1000 + gfn.0 * 4096)).unwrap();
            let open = vm_a.invalidate_range_start(&mmu_a, hvas).unwrap();
            // B's faults on the same gfn do not retry because of A's open invalidation.
            let snap = vm_b.invalidation().snapshot();
            assert!(!vm_b.invalidation().retry_gfn_unsafe(&snap, gfn).unwrap());
            open.end().unwrap();
            assert!(vcpu.check_request(Request::TLB_FLUSH), "round {round}: A's zap flushed A's vCPU");
        }
        vm_a.set_memslot(&mmu_a, SlotChange::Move { id: 0, base_gfn: Gfn(128) }).unwrap();
        assert!(vm_a.memslots().read().find(Gfn(3)).is_none());
        assert_eq!(
            vm_b.memslots().read().find(Gfn(3)).map(|s| s.gfn_to_hva(Gfn(3))),
            Some(Some(Hva(0x90_3000)))
        );
        // A hotplugged second vCPU of A is covered by A's registry flush.
        let (_, second) = regs_a.add().unwrap();
        assert!(regs_a.flush_remote_tlbs().is_empty());
        assert!(second.check_request(Request::TLB_FLUSH));
        vcpu.put().unwrap();
        drop(reg);
        a_done.store(true, SeqCst);

        // VM B's flush from a thread that is not a CPU, once B has checked that A's flushes left
        // it alone (flushing as soon as B left its guest raced with that check).
        wait_until("B's check", || b_checked.load(SeqCst));
        regs_b.flush_remote_tlbs();
    });
}
