//! The interrupt descriptor table: the CPU exceptions (reported to the host), the flush IPI of
//! the ring-0 backend, the executor's wake-up IPI and the spurious vector.
//!
//! The entry stubs are assembly (`global_asm!`): an exception stub pushes a dummy error code
//! where the CPU pushes none, then the vector, and calls [`on_exception`] with a pointer to
//! that frame (it never returns). An interrupt stub saves the caller-saved registers, calls
//! its Rust handler and returns with `iretq`. The target is soft-float, so there is no
//! floating-point state to save; it has no red zone, so an interrupt cannot clobber a leaf
//! function's locals below the stack pointer.

use crate::arch::{self, eoi, SPURIOUS_VECTOR};
use core::cell::UnsafeCell;
use mmusync::hal::x86::X86Ring0Hal;
use mmusync_kvm_shared::{CODE_SELECTOR, PORT_EXCEPTION};

/// The executor's wake-up IPI (an idle vCPU halts until it arrives).
pub const WAKE_VECTOR: u8 = 0xf0;

core::arch::global_asm!(
    r#"
    .section .text.mmusync_isr, "ax"
    .macro EXC n, err
    .global mmusync_exc_\n
    mmusync_exc_\n:
    .if \err == 0
        push 0
    .endif
        push \n
        jmp mmusync_exc_common
    .endm

    EXC 0,0
    EXC 1,0
    EXC 2,0
    EXC 3,0
    EXC 4,0
    EXC 5,0
    EXC 6,0
    EXC 7,0
    EXC 8,1
    EXC 9,0
    EXC 10,1
    EXC 11,1
    EXC 12,1
    EXC 13,1
    EXC 14,1
    EXC 15,0
    EXC 16,0
    EXC 17,1
    EXC 18,0
    EXC 19,0
    EXC 20,0
    EXC 21,1
    EXC 22,0
    EXC 23,0
    EXC 24,0
    EXC 25,0
    EXC 26,0
    EXC 27,0
    EXC 28,0
    EXC 29,1
    EXC 30,1
    EXC 31,0

    mmusync_exc_common:
        mov rdi, rsp
        and rsp, -16
        call {exception}
        ud2

    .macro IRQ name, handler
    .global \name
    \name:
        push rax
        push rcx
        push rdx
        push rsi
        push rdi
        push r8
        push r9
        push r10
        push r11
        call \handler
        pop r11
        pop r10
        pop r9
        pop r8
        pop rdi
        pop rsi
        pop rdx
        pop rcx
        pop rax
        iretq
    .endm

    IRQ mmusync_isr_ipi, {ipi}
    IRQ mmusync_isr_wake, {wake}

    .global mmusync_isr_spurious
    mmusync_isr_spurious:
        iretq

    .section .rodata.mmusync_exc_table, "a"
    .balign 8
    .global mmusync_exc_table
    mmusync_exc_table:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .quad mmusync_exc_\n
    .endr
    "#,
    exception = sym on_exception,
    ipi = sym on_ipi,
    wake = sym on_wake,
);

extern "C" {
    /// The 32 exception stubs, by vector.
    static mmusync_exc_table: [u64; 32];
    fn mmusync_isr_ipi();
    fn mmusync_isr_wake();
    fn mmusync_isr_spurious();
}

/// 256 gates of 16 bytes.
struct Idt(UnsafeCell<[u64; 512]>);

// SAFETY: written only by vCPU 0 in `build`, before it publishes the end of its setup (a
// SeqCst store the other vCPUs wait for); read only by the CPUs through `lidt` afterwards.
unsafe impl Sync for Idt {}

static IDT: Idt = Idt(UnsafeCell::new([0; 512]));

/// An interrupt gate (type 0xE: interrupts off in the handler), present, DPL 0, no IST.
fn gate(handler: u64) -> (u64, u64) {
    let lo =
        (handler & 0xffff) | u64::from(CODE_SELECTOR) << 16 | 0x8e << 40 | ((handler >> 16) & 0xffff) << 48;
    (lo, handler >> 32)
}

/// Fills the IDT. vCPU 0 calls it once, before the other vCPUs load it.
pub fn build() {
    // SAFETY: reading an immutable table of addresses the assembly above defines.
    let exceptions = unsafe { mmusync_exc_table };
    let set = |vector: usize, handler: u64| {
        let (lo, hi) = gate(handler);
        // SAFETY: only vCPU 0 writes, before any CPU loads the table (see `Idt`).
        unsafe {
            let t = &mut *IDT.0.get();
            t[2 * vector] = lo;
            t[2 * vector + 1] = hi;
        }
    };
    for (v, &h) in exceptions.iter().enumerate() {
        set(v, h);
    }
    set(usize::from(X86Ring0Hal::IPI_VECTOR), mmusync_isr_ipi as *const () as u64);
    set(usize::from(WAKE_VECTOR), mmusync_isr_wake as *const () as u64);
    set(usize::from(SPURIOUS_VECTOR), mmusync_isr_spurious as *const () as u64);
}

/// Loads the IDT on this vCPU.
pub fn load() {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let p = Pointer { limit: (512 * 8 - 1) as u16, base: IDT.0.get() as u64 };
    // SAFETY: ring 0; the table is built (vCPU 0 built it before publishing its setup) and
    // lives for ever; every gate it fills points at a stub above.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &p, options(readonly, nostack, preserves_flags)) };
}

/// The flush IPI of the ring-0 backend: acknowledge, then EOI.
extern "C" fn on_ipi() {
    // SAFETY: this is the handler of `X86Ring0Hal::IPI_VECTOR` (so interrupts were enabled
    // where it interrupted), on a vCPU that keeps the backend's contract (x2APIC enabled, APIC
    // id = vCPU number < 64, this IDT loaded).
    unsafe { mmusync::hal::x86::ack_ipi() };
    arch::me().ipis.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the handler of a fixed interrupt, in x2APIC mode.
    unsafe { eoi() };
}

/// The executor's wake-up IPI: the interrupt itself ends the `hlt`.
extern "C" fn on_wake() {
    arch::me().wakes.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the handler of a fixed interrupt, in x2APIC mode.
    unsafe { eoi() };
}

/// Any CPU exception: report vector, error code, RIP and CR2 to the host, and stop.
extern "C" fn on_exception(frame: *const u64) -> ! {
    let cr2: u64;
    // SAFETY: ring 0; reads CR2 into a register.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    // SAFETY: the stub passes its stack pointer: the vector and error code it pushed, then the
    // CPU's interrupt frame (RIP first), all on this vCPU's stack.
    let (vector, error, rip) = unsafe { (*frame, *frame.add(1), *frame.add(2)) };
    let me = arch::me();
    let e = &me.exception;
    use core::sync::atomic::Ordering::SeqCst;
    e.vector.store(vector, SeqCst);
    e.error.store(error, SeqCst);
    e.rip.store(rip, SeqCst);
    e.cr2.store(cr2, SeqCst);
    if me.failed.swap(2, SeqCst) == 0 {
        arch::outl(PORT_EXCEPTION, arch::cpu_index() as u32);
    }
    arch::halt_forever()
}
