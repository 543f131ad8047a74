//! P5 for a VM whose vCPUs are created at run time (vCPU hotplug): the VM's own list of
//! vCPUs, which flushes walk instead of a slice the caller builds.
//!
//! KVM keeps a VM's vCPUs in `kvm->vcpu_array` and counts them in `kvm->online_vcpus`:
//! `kvm_vm_ioctl_create_vcpu` stores the new vCPU and then raises the count, and
//! `kvm_for_each_vcpu` (which `kvm_make_all_cpus_request`, and so `kvm_flush_remote_tlbs`,
//! uses) walks the vCPUs below the count it reads. vCPUs are never removed while the VM lives;
//! a guest's CPU unplug only stops running one. [`VcpuRegistry`] is the same list over a
//! fixed array of `MAX` vCPUs (no allocation, so it works without `alloc`): [`add`] brings the
//! next one online, [`flush_remote_tlbs`] and [`make_all_cpus_request`] walk the vCPUs online
//! when they start.
//!
//! **Why a flush cannot miss a vCPU added while it runs.** The count is read and raised under
//! the registry's lock. A flusher's page-table changes come before its lock release; an adder
//! that takes the lock after it raises the count, and only then hands the vCPU to the thread
//! that loads and runs it. So a vCPU the flusher did not see happens-after the flusher's
//! changes: it can only reach the new tables, as if it had been created after the flush. The
//! vCPUs the flusher saw get the full protocol of [`crate::vcpu::make_all_cpus_request`].
//!
//! A vCPU must be obtained from [`add`] before it is loaded: [`all`] also returns the slots
//! not yet online (for a secondary MMU such as [`crate::mmu::ReferenceMmu`], which takes one
//! slice for its whole life and so waits for every slot, online or not; a slot that is not
//! online is `Outside` and costs a flush two barriers, no IPI), and the registry's own
//! flushes do not wait for a vCPU loaded from a slot that is not online.
//!
//! [`add`]: VcpuRegistry::add
//! [`all`]: VcpuRegistry::all
//! [`flush_remote_tlbs`]: VcpuRegistry::flush_remote_tlbs
//! [`make_all_cpus_request`]: VcpuRegistry::make_all_cpus_request

use crate::hal::{Atomic, CpuSet, Cpus, Ordering::Relaxed};
use crate::lock::SpinLock;
use crate::vcpu::{make_all_cpus_request, Request, Vcpu};
use core::fmt;

/// Why [`VcpuRegistry::add`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistryError {
    /// Every slot is online already.
    Full {
        /// The registry's capacity, `MAX`.
        capacity: usize,
    },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Full { capacity } => write!(f, "all {capacity} vCPU slots are online"),
        }
    }
}

impl core::error::Error for RegistryError {}

/// The vCPUs of one VM, at most `MAX`, brought online one by one (`kvm->vcpu_array` and
/// `kvm->online_vcpus`; see the [module documentation](self)).
pub struct VcpuRegistry<H: Cpus, const MAX: usize> {
    slots: [Vcpu<H>; MAX],
    /// How many slots are online: the first `online` ones. Read and written under `lock`.
    online: H::AtomicUsize,
    lock: SpinLock<H, ()>,
    hal: H,
}

impl<H: Cpus, const MAX: usize> fmt::Debug for VcpuRegistry<H, MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VcpuRegistry")
            .field("online", &self.online.load(Relaxed))
            .field("capacity", &MAX)
            .finish()
    }
}

impl<H: Cpus, const MAX: usize> VcpuRegistry<H, MAX> {
    /// A registry with no vCPU online.
    pub fn new(hal: H) -> Self {
        VcpuRegistry {
            slots: core::array::from_fn(|_| Vcpu::new(hal.clone())),
            online: H::AtomicUsize::new(0),
            lock: SpinLock::<H, ()>::new(()),
            hal,
        }
    }

    /// The most vCPUs the registry can hold, `MAX`.
    pub const fn capacity(&self) -> usize {
        MAX
    }

    /// `kvm_vm_ioctl_create_vcpu`: brings the next slot online and returns its index and the
    /// vCPU (`Outside`, not loaded, no request pending). Flushes that start from now on wait
    /// for it. Fails with [`RegistryError::Full`] when all `MAX` are online.
    pub fn add(&self) -> Result<(usize, &Vcpu<H>), RegistryError> {
        let _lock = self.lock.lock();
        let n = self.online.load(Relaxed);
        let vcpu = self.slots.get(n).ok_or(RegistryError::Full { capacity: MAX })?;
        self.online.store(n + 1, Relaxed);
        Ok((n, vcpu))
    }

    /// The vCPUs online now (`kvm_for_each_vcpu`). vCPUs added later are not in the slice;
    /// see the [module documentation](self) for why a flush may ignore them.
    pub fn online(&self) -> &[Vcpu<H>] {
        let n = {
            let _lock = self.lock.lock();
            self.online.load(Relaxed)
        };
        // `n <= MAX`: only `add` raises the count, and never past MAX.
        self.slots.get(..n).unwrap_or(&self.slots)
    }

    /// vCPU `index`, if it is online (`kvm_get_vcpu`).
    pub fn get(&self, index: usize) -> Option<&Vcpu<H>> {
        self.online().get(index)
    }

    /// Every slot, online or not: for a secondary MMU that takes one slice of vCPUs for its
    /// whole life ([`crate::mmu::ReferenceMmu::new`]) and must also wait for vCPUs added later.
    pub fn all(&self) -> &[Vcpu<H>] {
        &self.slots
    }

    /// [`make_all_cpus_request`] over the vCPUs online when the call starts. Returns the CPUs
    /// interrupted. Same conditions (interrupts enabled; the caller need not be a CPU).
    pub fn make_all_cpus_request(&self, req: Request) -> CpuSet {
        make_all_cpus_request(&self.hal, self.online(), req)
    }

    /// `kvm_flush_remote_tlbs` over the vCPUs online when the call starts. Returns the CPUs
    /// interrupted.
    pub fn flush_remote_tlbs(&self) -> CpuSet {
        self.make_all_cpus_request(Request::TLB_FLUSH)
    }
}

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::std::StdHal;
    use crate::vcpu::VcpuMode;
    use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::thread;

    #[test]
    fn add_brings_slots_online_in_order_up_to_the_capacity() {
        let r: VcpuRegistry<StdHal, 2> = VcpuRegistry::new(StdHal);
        assert!(r.online().is_empty());
        assert_eq!(r.all().len(), 2);
        let (i0, v0) = r.add().unwrap();
        let (i1, _) = r.add().unwrap();
        assert_eq!((i0, i1), (0, 1));
        assert!(core::ptr::eq(v0, &r.all()[0]));
        assert_eq!(r.add().err(), Some(RegistryError::Full { capacity: 2 }));
        assert_eq!(r.online().len(), 2);
        assert!(r.get(1).is_some() && r.get(2).is_none());
    }

    #[test]
    fn flush_covers_a_vcpu_hotplugged_after_the_registry_was_built() {
        let r: VcpuRegistry<StdHal, 4> = VcpuRegistry::new(StdHal);
        r.add().unwrap();
        // A vCPU added later, running a guest on its own CPU: the next flush must wait for
        // its exit.
        let in_guest = AtomicBool::new(false);
        let flushed = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                let reg = StdHal::register_cpu().unwrap();
                let (_, vcpu) = r.add().unwrap();
                vcpu.load(reg.cpu()).unwrap();
                let g = vcpu.enter_guest().unwrap();
                in_guest.store(true, SeqCst);
                while !g.kicked() {
                    thread::yield_now();
                }
                assert!(!flushed.load(SeqCst), "the flush returned while the guest ran");
                drop(g);
                while !flushed.load(SeqCst) {
                    thread::yield_now();
                }
                assert!(vcpu.check_request(Request::TLB_FLUSH));
                vcpu.put().unwrap();
            });
            while !in_guest.load(SeqCst) {
                thread::yield_now();
            }
            // This thread is not a CPU: flushes need none.
            assert_eq!(StdHal.current_cpu(), None);
            let targets = r.flush_remote_tlbs();
            assert_eq!(targets.len(), 1);
            flushed.store(true, SeqCst);
        });
        assert_eq!(r.online()[1].mode(), VcpuMode::Outside);
    }
}
