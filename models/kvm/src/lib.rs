//! # mmusync-kvm
//!
//! The KVM checker of mmusync: core's ring-0 x86 backend (`mmusync::hal::x86::X86Ring0Hal`) on
//! real vCPUs. A host harness on `kvm-ioctls` makes one VM (in-kernel irqchip, x2APIC, `N`
//! vCPUs started directly in 64-bit mode on an identity map, one host thread per vCPU), loads a
//! bare-metal guest (`models/kvm/guest`, built for `x86_64-unknown-none` by this crate's build
//! script and embedded in it), and has it run the catalogue's scenarios
//! ([`mmusync_models::SCENARIOS`], the shared bodies, unchanged), one role per vCPU, with
//! `cli`/`sti` as interrupts off and x2APIC IPIs with acknowledgement as the flush.
//!
//! * [`vm`]: the VM, the vCPU threads, the kick (a real-time signal that sets
//!   `immediate_exit`) and the watchdog that reports a hang with every vCPU's RIP and last step.
//! * [`check`]: runs a scenario for a number of rounds, restarting the guest after each panic,
//!   counts violations and writes the main job's [`mmusync_models::Row`]s.
//! * [`image`]: the embedded guest ELF, its segments and symbols.
//! * [`vmm`]: a small VMM on this VM (the `kvm-vmm` binary): device-emulation threads that
//!   cache gpa → host translations with mmusync's translation cache while the vCPUs run guest
//!   code on that memory, balloon unmaps and memslot changes through the notifier and memslot
//!   protocols, and a ghost-state check that no device ever uses a stale translation.
//!
//! [`probe`] says whether KVM is usable here; the checker and the tests skip with its reason
//! where it is not (unless `MMUSYNC_REQUIRE_KVM=1`).

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("mmusync-kvm runs x86-64 guests on Linux KVM only");

pub mod check;
mod error;
pub mod image;
pub mod vm;
pub mod vmm;

pub use error::KvmError;

/// The environment variable that turns "KVM is not usable here" from a skip into a failure.
pub const REQUIRE_ENV: &str = "MMUSYNC_REQUIRE_KVM";

/// Whether `MMUSYNC_REQUIRE_KVM=1` is set.
pub fn kvm_required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// Checks that this machine can run the harness's VMs: `/dev/kvm` opens, a VM with an
/// in-kernel irqchip can be created. `Err` says why not.
pub fn probe() -> Result<(), KvmError> {
    let kvm =
        kvm_ioctls::Kvm::new().map_err(|e| KvmError::Unavailable(format!("cannot open /dev/kvm: {e}")))?;
    let vm = kvm.create_vm().map_err(|e| KvmError::Unavailable(format!("KVM_CREATE_VM failed: {e}")))?;
    vm.create_irq_chip().map_err(|e| KvmError::Unavailable(format!("KVM_CREATE_IRQCHIP failed: {e}")))?;
    if !kvm.check_extension(kvm_ioctls::Cap::ImmediateExit) {
        return Err(KvmError::Unavailable("KVM lacks KVM_CAP_IMMEDIATE_EXIT".into()));
    }
    Ok(())
}
