//! The few privileged instructions the guest needs, and which vCPU we are.

use mmusync_kvm_shared::{Mailbox, PerCpu, MAILBOX, MAX_VCPUS, STACKS, STACK_SIZE};

/// `IA32_APIC_BASE`.
const MSR_APIC_BASE: u32 = 0x1b;
/// `IA32_APIC_BASE`: the APIC is enabled.
const APIC_BASE_EN: u64 = 1 << 11;
/// `IA32_APIC_BASE`: x2APIC mode.
const APIC_BASE_EXTD: u64 = 1 << 10;
/// x2APIC task-priority register.
const MSR_X2APIC_TPR: u32 = 0x808;
/// x2APIC end-of-interrupt register.
const MSR_X2APIC_EOI: u32 = 0x80b;
/// x2APIC spurious-interrupt vector register.
const MSR_X2APIC_SVR: u32 = 0x80f;
/// x2APIC interrupt command register.
const MSR_X2APIC_ICR: u32 = 0x830;
/// SVR: APIC software-enabled.
const SVR_ENABLE: u64 = 1 << 8;
/// ICR: level assert.
const ICR_ASSERT: u64 = 1 << 14;

/// The spurious-interrupt vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// The mailbox page (identity-mapped guest memory the host set up before starting us).
pub fn mailbox() -> &'static Mailbox {
    // SAFETY: the host maps guest RAM, including the mailbox room, before any vCPU runs, and
    // never unmaps it while they run; `Mailbox` is made of atomics only (any bit pattern is a
    // valid value, and shared access is sound), and its size fits MAILBOX_SIZE (checked in the
    // shared crate).
    unsafe { &*(MAILBOX as *const Mailbox) }
}

/// This vCPU's number, from the stack it runs on (the host gives vCPU `i` the `i`-th stack,
/// and nothing here switches stacks: interrupts run on the interrupted stack). Works before
/// the x2APIC is enabled, unlike reading the APIC id.
#[inline(always)]
pub fn cpu_index() -> usize {
    let rsp: u64;
    // SAFETY: reads the stack pointer into a register; no memory access, no flags.
    unsafe { core::arch::asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let i = (rsp.saturating_sub(STACKS) / STACK_SIZE) as usize;
    i.min(MAX_VCPUS - 1)
}

/// This vCPU's part of the mailbox.
pub fn me() -> &'static PerCpu {
    &mailbox().cpus[cpu_index()]
}

/// Reads a model-specific register.
///
/// # Safety
///
/// Ring 0, and `msr` exists (in the current APIC mode).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller's obligation; `rdmsr` touches only the named registers.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Writes a model-specific register.
///
/// # Safety
///
/// Ring 0, `msr` exists, and writing `value` to it keeps the machine in a state the rest of
/// the guest expects.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller's obligation.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        )
    };
}

/// Writes `value` to I/O port `port`: the host sees a PIO exit.
pub fn outl(port: u16, value: u32) {
    // SAFETY: ring 0 (IOPL does not matter at CPL 0); the ports the guest uses have no device
    // behind them, only the harness, which handles the exit. Not `nomem`: everything written
    // before must be visible to the host when it handles the exit.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nostack, preserves_flags))
    };
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` reads the TSC into EDX:EAX (allowed at CPL 0 whatever CR4.TSD says).
    unsafe {
        core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    u64::from(hi) << 32 | u64::from(lo)
}

/// Enables interrupts.
pub fn sti() {
    // SAFETY: ring 0; the IDT is loaded before any caller enables interrupts. A compiler
    // barrier (no `nomem`).
    unsafe { core::arch::asm!("sti", options(nostack)) };
}

/// Disables interrupts.
pub fn cli() {
    // SAFETY: ring 0. A compiler barrier (no `nomem`).
    unsafe { core::arch::asm!("cli", options(nostack)) };
}

/// `sti; hlt`: enables interrupts and waits for one; the interrupt shadow of `sti` makes the
/// pair atomic, so an interrupt that is pending (or arrives) after a `cli`-protected check is
/// never missed.
pub fn sti_hlt() {
    // SAFETY: ring 0 with the IDT loaded; `hlt` returns after an interrupt.
    unsafe { core::arch::asm!("sti", "hlt", options(nostack)) };
}

/// Stops this vCPU for good (interrupts off; the host stops the VM).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: ring 0; with interrupts off `hlt` waits until the host stops the vCPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nostack)) };
    }
}

/// Full barrier (also orders the non-serializing `wrmsr` to the x2APIC ICR).
pub fn mfence() {
    // SAFETY: `mfence; lfence` only orders; a compiler barrier (no `nomem`).
    unsafe { core::arch::asm!("mfence", "lfence", options(nostack, preserves_flags)) };
}

/// Switches this vCPU's local APIC to x2APIC mode, software-enables it and accepts every
/// priority.
///
/// # Safety
///
/// Ring 0; CPUID advertises x2APIC (the harness sets it).
pub unsafe fn enable_x2apic() {
    // SAFETY: the caller's obligation; EN is set at reset, so EN|EXTD is a legal transition.
    unsafe {
        let base = rdmsr(MSR_APIC_BASE);
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
        wrmsr(MSR_X2APIC_SVR, SVR_ENABLE | u64::from(SPURIOUS_VECTOR));
        wrmsr(MSR_X2APIC_TPR, 0);
    }
}

/// Signals end of interrupt to the local APIC.
///
/// # Safety
///
/// Called from an interrupt handler of a fixed (non-spurious) interrupt, in x2APIC mode.
pub unsafe fn eoi() {
    // SAFETY: the caller's obligation.
    unsafe { wrmsr(MSR_X2APIC_EOI, 0) };
}

/// Sends a fixed IPI with `vector` to the vCPU whose APIC id is `cpu`.
///
/// # Safety
///
/// x2APIC mode, `cpu` exists, and its IDT handles `vector`.
pub unsafe fn send_ipi(cpu: usize, vector: u8) {
    let icr = (cpu as u64) << 32 | ICR_ASSERT | u64::from(vector);
    // The ICR write is not serializing: make everything before it visible first.
    mfence();
    // SAFETY: the caller's obligation.
    unsafe { wrmsr(MSR_X2APIC_ICR, icr) };
}
