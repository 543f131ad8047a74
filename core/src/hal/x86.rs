//! The `x86` backend: the barrier mapping of x86-TSO, and (feature `x86-ring0`) interrupts and
//! IPIs for code that runs in ring 0.
//!
//! ## Barriers under x86-TSO
//!
//! x86 keeps loads in order with loads, stores in order with stores, and stores in order with
//! earlier loads; the one reordering it does is a store followed by a load of another location
//! (the store buffer). So, as in Linux (`arch/x86/include/asm/barrier.h`):
//!
//! | [`FenceKind`] | Linux x86 | here |
//! |---|---|---|
//! | `Mb` | `smp_mb()` = `lock; addl $0,-4(%rsp)` | `lock or dword ptr [rsp - 64], 0` |
//! | `Wmb` | `smp_wmb()` = `barrier()` | `compiler_fence(Release)` |
//! | `Rmb` | `smp_rmb()` = `barrier()` | `compiler_fence(Acquire)` |
//! | `Release` | `smp_store_release` = `barrier(); WRITE_ONCE` | `compiler_fence(Release)` |
//! | `Acquire` | `smp_load_acquire` = `READ_ONCE; barrier()` | `compiler_fence(Acquire)` |
//!
//! A compiler fence stops the compiler from moving memory accesses across it in the direction
//! its ordering forbids; the hardware keeps the rest of the order. `Relaxed` atomic loads and
//! stores compile to plain `mov`s on x86-64, so the emitted code has exactly the order a C11
//! fence would give. This is an architecture argument, not a C11 one: the [`Hal`](crate::hal::Hal) contract
//! allows it for a backend documented for one architecture, and it is why this module exists
//! only for `target_arch = "x86_64"`.
//!
//! `Mb` is a locked no-op on the stack, as Linux's `smp_mb()` has been on x86-64 since 4.15
//! ("x86/asm: Use LOCK ADD for smp_mb() instead of MFENCE", M. Tsirkin, 2017): any locked
//! instruction is a full barrier for ordinary (write-back) memory, and on current CPUs it
//! costs about half an `mfence` (measured in `BENCHMARKS.md`). The operand is 64 bytes below
//! the stack pointer, as in the compiler's own lowering of `fence(SeqCst)`, rather than Linux's
//! 4: in `BENCHMARKS.md`'s walk benchmark, `-4` measured about 1.5 ns slower per walk on this
//! CPU, presumably a dependency on the stack slot that a recent `call` or spill wrote. `mfence` also orders
//! non-temporal stores and write-combining memory, which no protocol here uses; the ring-0 IPI
//! code keeps `mfence` where it orders a `wrmsr` to the x2APIC. Both are written with `asm!`
//! *without* `nomem`, so the compiler also treats them as reading and writing all memory: a
//! compiler barrier too. The real-hardware litmus tests (`mmusync-hw`) check the mapping on the
//! CPU: store buffering never shows with this `Mb`.
//!
//! Locks are the `spin` crate's raw spinlock and reader-writer lock, which need no OS.
//!
//! ## Ring 0 (feature `x86-ring0`)
//!
//! `X86Ring0Hal` (feature `x86-ring0`) adds [`Cpus`](super::Cpus) for a kernel (the KVM-guest harness): `cli`/`sti`
//! for interrupts, the x2APIC for CPU ids and IPIs, and a per-CPU acknowledgement counter that
//! the IPI handler raises with `ack_ipi`. Its construction is `unsafe`: the privileged
//! instructions fault in user space, so no host test runs them.

use crate::barrier::FenceKind;
use core::sync::atomic::{compiler_fence, Ordering};

/// Full barrier: a locked `or` of zero below the stack pointer (Linux's `smp_mb()`). Not
/// `nomem`: the compiler must also keep memory accesses on their side of it. Not `nostack`:
/// the instruction reads and writes a word below the stack pointer, which an `asm!` block
/// without `nostack` may use (the compiler keeps no red-zone data there across it).
#[inline(always)]
fn locked_or_fence() {
    // SAFETY: the instruction ors zero into the 4 bytes at `rsp - 64`, which this block may
    // use as stack space (no `nostack`; every x86-64 stack has room for 64 bytes below the
    // pointer where an `asm!` block may push); the value there does not change, and nothing
    // else is written. It clobbers only the arithmetic flags (no `preserves_flags`).
    unsafe { core::arch::asm!("lock or dword ptr [rsp - 64], 0") }
}

/// Full barrier: `mfence`, for the ring-0 IPI path (it also orders the non-serializing
/// x2APIC `wrmsr`). Not `nomem`, as above.
#[cfg(feature = "x86-ring0")]
#[inline(always)]
fn mfence() {
    // SAFETY: `mfence` has no operands and no effect besides ordering memory accesses; it is
    // available on every x86-64 CPU (SSE2).
    unsafe { core::arch::asm!("mfence", options(nostack, preserves_flags)) }
}

/// The x86-TSO fence mapping (see the module documentation).
#[inline(always)]
fn tso_fence(kind: FenceKind) {
    match kind {
        FenceKind::Mb => locked_or_fence(),
        FenceKind::Wmb | FenceKind::Release => compiler_fence(Ordering::Release),
        FenceKind::Rmb | FenceKind::Acquire => compiler_fence(Ordering::Acquire),
    }
}

/// `Hal` for a backend type: `core` atomics, the x86-TSO fences, `spin` locks.
macro_rules! x86_hal {
    ($ty:ty) => {
        // SAFETY: `core` atomics give the C11 guarantees of each ordering. `fence` gives the
        // x86-TSO equivalent of each C11 fence kind (the module documentation explains the
        // mapping; the contract allows an architecture's equivalent for a backend documented
        // for one architecture, and this one only builds for x86-64). `barrier` and `keeps`
        // keep their defaults. `spin`'s `SpinMutex<()>` and `RwLock<()>` implement lock_api's
        // raw traits (mutual exclusion, acquire on lock, release on unlock). `spin_hint`
        // returns.
        unsafe impl $crate::hal::Hal for $ty {
            type AtomicU64 = core::sync::atomic::AtomicU64;
            type AtomicUsize = core::sync::atomic::AtomicUsize;
            type AtomicBool = core::sync::atomic::AtomicBool;
            type RawRwLock = spin::rwlock::RwLock<()>;
            type RawMutex = spin::mutex::SpinMutex<()>;

            #[inline(always)]
            fn fence(&self, kind: $crate::barrier::FenceKind) {
                $crate::hal::x86::tso_fence(kind)
            }

            #[inline(always)]
            fn spin_hint(&self) {
                core::hint::spin_loop()
            }
        }
    };
}

/// The x86-64 backend's memory half, usable anywhere (user space or kernel): `core` atomics,
/// x86-TSO fences, `spin` locks.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86Hal;

x86_hal!(X86Hal);

#[cfg(feature = "x86-ring0")]
pub use self::ring0::{ack_ipi, X86Ring0Hal};

#[cfg(feature = "x86-ring0")]
mod ring0 {
    use super::mfence;
    use crate::hal::{CpuId, CpuSet, Cpus, IrqState};
    use core::sync::atomic::{AtomicU64, Ordering::SeqCst};

    /// `IA32_X2APIC_APICID`: this CPU's x2APIC id.
    const MSR_X2APIC_ID: u32 = 0x802;
    /// `IA32_X2APIC_ICR`: the interrupt command register.
    const MSR_X2APIC_ICR: u32 = 0x830;
    /// ICR: level assert (required for fixed delivery on xAPIC, harmless on x2APIC).
    const ICR_ASSERT: u64 = 1 << 14;
    /// RFLAGS.IF.
    const RFLAGS_IF: u64 = 1 << 9;

    /// Per-CPU IPI tickets.
    #[repr(align(128))]
    struct Counters {
        sent: AtomicU64,
        acked: AtomicU64,
    }

    #[allow(clippy::declare_interior_mutable_const)] // only used to initialize `COUNTERS`
    const ZERO: Counters = Counters { sent: AtomicU64::new(0), acked: AtomicU64::new(0) };

    static COUNTERS: [Counters; CpuSet::CAPACITY] = [ZERO; CpuSet::CAPACITY];

    /// The ring-0 backend: [`X86Hal`](super::X86Hal)'s memory half plus interrupts and IPIs
    /// through `cli`/`sti` and the x2APIC.
    ///
    /// CPU `n` is the CPU whose x2APIC id is `n` (the KVM-guest harness gives vCPU `n` APIC id
    /// `n`). A flush sends a fixed, physical-destination IPI with vector
    /// [`X86Ring0Hal::IPI_VECTOR`] and waits until the target's handler has called
    /// [`ack_ipi`].
    #[derive(Clone, Copy, Debug)]
    pub struct X86Ring0Hal(());

    x86_hal!(X86Ring0Hal);

    impl X86Ring0Hal {
        /// The interrupt vector of the flush IPI.
        pub const IPI_VECTOR: u8 = 0xf2;

        /// The ring-0 backend.
        ///
        /// # Safety
        ///
        /// Every CPU that uses it (or that a `CpuSet` passed to it names) must:
        /// * run in ring 0 with the x2APIC enabled (`IA32_APIC_BASE.EXTD`), and have an x2APIC
        ///   id below [`CpuSet::CAPACITY`], unique among the CPUs;
        /// * have an IDT whose [`IPI_VECTOR`](Self::IPI_VECTOR) handler calls [`ack_ipi`] and
        ///   then signals EOI (`wrmsr(0x80b, 0)`);
        /// * be running, so that an IPI sent to it is eventually taken;
        /// * call [`ipi_and_wait`](Cpus::ipi_and_wait) only with interrupts enabled.
        pub const unsafe fn new() -> Self {
            X86Ring0Hal(())
        }
    }

    /// Reads a model-specific register.
    ///
    /// # Safety
    ///
    /// Ring 0, and `msr` exists on this CPU.
    unsafe fn rdmsr(msr: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: the caller's obligation; `rdmsr` touches only the named registers.
        unsafe {
            core::arch::asm!(
                "rdmsr",
                in("ecx") msr,
                out("eax") lo,
                out("edx") hi,
                options(nostack, preserves_flags),
            )
        };
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// This CPU's x2APIC id as a [`CpuId`].
    ///
    /// # Safety
    ///
    /// The contract of [`X86Ring0Hal::new`].
    unsafe fn this_cpu() -> CpuId {
        // SAFETY: ring 0 with the x2APIC enabled (the caller's obligation).
        let id = unsafe { rdmsr(MSR_X2APIC_ID) };
        match CpuId::new(id as usize) {
            Ok(cpu) => cpu,
            Err(_) => panic!("x2APIC id {id} is beyond CpuSet::CAPACITY"),
        }
    }

    /// Acknowledges the flush IPI on this CPU. Call it from the
    /// [`IPI_VECTOR`](X86Ring0Hal::IPI_VECTOR) handler (before EOI); the waiting sender
    /// returns once every target has.
    ///
    /// # Safety
    ///
    /// The contract of [`X86Ring0Hal::new`], and the caller is that IPI's interrupt handler
    /// (so interrupts were enabled where it interrupted). Acknowledging anywhere else would let
    /// a flusher free table pages that a lockless walker on this CPU still reads.
    pub unsafe fn ack_ipi() {
        // Everything the sender wrote before its ticket is visible from here on.
        mfence();
        // SAFETY: the caller's obligation.
        let c = &COUNTERS[unsafe { this_cpu() }.index()];
        c.acked.fetch_max(c.sent.load(SeqCst), SeqCst);
        mfence();
    }

    // SAFETY: given the contract of `X86Ring0Hal::new`, which every value of the type carries:
    // * `current_cpu` reads this CPU's unique x2APIC id;
    // * after `irq_save`'s `cli`, the CPU takes no maskable interrupt, so the IPI handler (the
    //   only place that acknowledges) does not run until `irq_restore`'s `sti`;
    // * `ipi_and_wait` takes a ticket per target (SeqCst RMW, after `mfence`), sends the IPI
    //   after `mfence; lfence` so the ICR write cannot pass the ticket, and spins until the
    //   target's handler has raised `acked` to at least the ticket. The handler's `mfence`s and
    //   the SeqCst accesses, plus our final `mfence`, give the full barriers on both sides.
    unsafe impl Cpus for X86Ring0Hal {
        fn current_cpu(&self) -> Option<CpuId> {
            // SAFETY: `self` exists, so the contract of `new` holds: every caller is a CPU.
            Some(unsafe { this_cpu() })
        }

        fn irq_save(&self) -> IrqState {
            let flags: u64;
            // SAFETY: ring 0 (contract of `new`): `pushfq; pop` reads RFLAGS and `cli` clears
            // IF; the stack is balanced. Not `nomem`: a compiler barrier, like Linux's
            // `arch_local_irq_save` ("memory" clobber).
            unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) flags) };
            IrqState(flags & RFLAGS_IF != 0)
        }

        unsafe fn irq_restore(&self, state: IrqState) {
            // Like Linux's `arch_local_irq_restore`: only IF is restored, and only from the
            // save that found it set (the outermost), so nested brackets keep it clear.
            if state.0 {
                // SAFETY: ring 0 (contract of `new`). Not `nomem`: a compiler barrier. A
                // pending IPI is taken right after the instruction following `sti`.
                unsafe { core::arch::asm!("sti", options(nostack)) };
            }
        }

        fn ipi_and_wait(&self, targets: CpuSet) {
            // SAFETY: `self` exists, so the contract of `new` holds.
            let me = unsafe { this_cpu() };
            let mut tickets = [0u64; CpuSet::CAPACITY];
            for cpu in targets.iter().filter(|&cpu| cpu != me) {
                let i = cpu.index();
                tickets[i] = COUNTERS[i].sent.fetch_add(1, SeqCst) + 1;
                let icr = (i as u64) << 32 | ICR_ASSERT | u64::from(X86Ring0Hal::IPI_VECTOR);
                // WRMSR to the x2APIC ICR is not serializing: without `mfence; lfence` the IPI
                // can overtake our earlier stores (the ticket, the unlink), and the handler
                // could read the old ticket. Linux and kvm-unit-tests fence here too.
                // SAFETY: ring 0 with x2APIC enabled (contract of `new`); the ICR value is a
                // fixed-delivery, physical-destination IPI to an existing APIC id.
                unsafe {
                    core::arch::asm!(
                        "mfence",
                        "lfence",
                        "wrmsr",
                        in("ecx") MSR_X2APIC_ICR,
                        in("eax") icr as u32,
                        in("edx") (icr >> 32) as u32,
                        options(nostack, preserves_flags),
                    )
                };
            }
            for i in targets.iter().map(CpuId::index) {
                let ticket = tickets[i];
                if ticket != 0 {
                    while COUNTERS[i].acked.load(SeqCst) < ticket {
                        core::hint::spin_loop();
                    }
                }
            }
            mfence();
        }
    }
}

#[cfg(all(test, feature = "std"))]
mod tests {
    use super::*;
    use crate::hal::Hal;
    use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
    use std::thread;

    /// Two threads meet before each round, so their rounds overlap. They spin (yielding only
    /// now and then, in case there is one CPU for both): a thread woken from a yield is too
    /// late for the other to overlap with it.
    struct Rendezvous(AtomicUsize);

    impl Rendezvous {
        fn meet(&self, round: usize) {
            self.0.fetch_add(1, Relaxed);
            let mut spins = 0u32;
            while self.0.load(Relaxed) < 2 * (round + 1) {
                X86Hal.spin_hint();
                spins += 1;
                if spins % 1024 == 0 {
                    thread::yield_now();
                }
            }
        }
    }

    /// Store buffering, the one reordering x86 does: with `Mb` on both sides, at least one
    /// thread sees the other's store.
    #[test]
    fn mb_forbids_store_buffering() {
        const ROUNDS: usize = 20_000;
        let x: std::vec::Vec<AtomicU64> = (0..ROUNDS).map(|_| AtomicU64::new(0)).collect();
        let y: std::vec::Vec<AtomicU64> = (0..ROUNDS).map(|_| AtomicU64::new(0)).collect();
        let meet = Rendezvous(AtomicUsize::new(0));
        let side = |mine: &[AtomicU64], theirs: &[AtomicU64]| {
            let mut seen = std::vec::Vec::with_capacity(ROUNDS);
            for round in 0..ROUNDS {
                meet.meet(round);
                mine[round].store(1, Relaxed);
                X86Hal.fence(FenceKind::Mb);
                seen.push(theirs[round].load(Relaxed));
            }
            seen
        };
        let (a, b) = thread::scope(|s| {
            let a = s.spawn(|| side(&x, &y));
            let b = s.spawn(|| side(&y, &x));
            (a.join().unwrap(), b.join().unwrap())
        });
        for (round, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!(*a == 1 || *b == 1, "round {round}: both threads missed the other's store");
        }
    }

    /// Message passing with `Wmb`/`Rmb` (compiler fences only): a reader that sees the flag
    /// sees the data written before it.
    #[test]
    fn wmb_rmb_order_message_passing() {
        const N: u64 = 200_000;
        let data = AtomicU64::new(0);
        let flag = AtomicU64::new(0);
        thread::scope(|s| {
            s.spawn(|| {
                for i in 1..=N {
                    data.store(i, Relaxed);
                    X86Hal.fence(FenceKind::Wmb);
                    flag.store(i, Relaxed);
                }
            });
            s.spawn(|| loop {
                let f = flag.load(Relaxed);
                X86Hal.fence(FenceKind::Rmb);
                let d = data.load(Relaxed);
                assert!(d >= f, "saw flag {f} but data {d}");
                if f == N {
                    break;
                }
            });
        });
    }

    #[test]
    fn spin_locks_exclude() {
        // No more threads than this machine's CPUs are likely to have: a spinlock holder that
        // is preempted makes every waiter spin out its time slice.
        const THREADS: u64 = 2;
        const ITERS: u64 = 20_000;
        let mutex = lock_api::Mutex::<<X86Hal as Hal>::RawMutex, u64>::new(0);
        // Writers keep `a == b`; readers must never see them differ.
        let rw = lock_api::RwLock::<<X86Hal as Hal>::RawRwLock, (u64, u64)>::new((0, 0));
        thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    for _ in 0..ITERS {
                        *mutex.lock() += 1;
                        {
                            let mut w = rw.write();
                            w.0 += 1;
                            core::hint::spin_loop();
                            w.1 += 1;
                        }
                        let r = rw.read();
                        assert_eq!(r.0, r.1, "reader saw a half-done write");
                    }
                });
            }
        });
        assert_eq!(*mutex.lock(), THREADS * ITERS);
        assert_eq!(*rw.read(), (THREADS * ITERS, THREADS * ITERS));
    }
}
