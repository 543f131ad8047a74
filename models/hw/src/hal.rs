//! The backends the hardware runs use, and the run-time mutant wrapper.
//!
//! * [`StdHal`]: C11 fences (`fence(SeqCst)` is a locked `or` on x86-64), parking_lot locks, threads
//!   as CPUs, a real-time signal as the IPI.
//! * [`X86Threads`]: the `x86` backend's memory half ([`X86Hal`]: a locked `or` for `Mb`, compiler
//!   fences for everything else, `spin` locks) with the `std` backend's CPUs. [`X86Hal`] has no
//!   [`Cpus`] in user space (its interrupts and IPIs are ring-0 instructions), so this is how
//!   the x86-TSO barrier mapping runs the protocols on real threads.
//! * [`Mutated`] (the catalogue's adapter, re-exported): either of them with one named
//!   [`Barrier`](mmusync::Barrier) dropped or one [`Rule`](mmusync::Rule) broken, as the model
//!   backends do. With no mutant it is the backend itself.

use mmusync::hal::std::StdHal;
use mmusync::hal::x86::X86Hal;
use mmusync::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
use mmusync::FenceKind;
use mmusync_models::{Mutant, ScenarioHal};
use std::fmt;

/// The `x86` backend on user-space threads: [`X86Hal`]'s atomics, x86-TSO fences and `spin`
/// locks, and [`StdHal`]'s CPUs, interrupts and IPIs.
#[derive(Clone, Copy, Debug, Default)]
pub struct X86Threads;

// SAFETY: every item delegates to `X86Hal`, whose `Hal` implementation keeps the contract (the
// x86-TSO fence mapping is allowed for a backend documented for one architecture; this crate
// builds only for x86-64), except `spin_hint`, which yields the thread and returns. `barrier`
// and `keeps` keep their defaults.
unsafe impl Hal for X86Threads {
    type AtomicU64 = <X86Hal as Hal>::AtomicU64;
    type AtomicUsize = <X86Hal as Hal>::AtomicUsize;
    type AtomicBool = <X86Hal as Hal>::AtomicBool;
    type RawRwLock = <X86Hal as Hal>::RawRwLock;
    type RawMutex = <X86Hal as Hal>::RawMutex;

    #[inline(always)]
    fn fence(&self, kind: FenceKind) {
        X86Hal.fence(kind)
    }

    #[inline(always)]
    fn spin_hint(&self) {
        // More roles than cores is normal on a 2-core machine: yield, as `StdHal` does, rather
        // than burn the time slice of the thread we wait for.
        std::thread::yield_now()
    }
}

// SAFETY: delegates to `StdHal`'s `Cpus`, which keeps the contract for any thread registered
// with `StdHal::register_cpu`; the registration, the signal handler and the acknowledgement
// counters are process-wide and independent of the memory half.
unsafe impl Cpus for X86Threads {
    #[inline(always)]
    fn current_cpu(&self) -> Option<CpuId> {
        StdHal.current_cpu()
    }

    #[inline(always)]
    fn irq_save(&self) -> IrqState {
        StdHal.irq_save()
    }

    #[inline(always)]
    unsafe fn irq_restore(&self, state: IrqState) {
        // SAFETY: the caller's obligation, passed on unchanged.
        unsafe { StdHal.irq_restore(state) }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        StdHal.ipi_and_wait(targets)
    }
}

pub use mmusync_models::Mutated;

/// Which backend a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Backend {
    /// [`StdHal`]: C11 fences, parking_lot locks.
    Std,
    /// [`X86Threads`]: x86-TSO fences (locked `or` / compiler fences), `spin` locks.
    X86,
}

impl Backend {
    /// Both backends.
    pub const ALL: [Backend; 2] = [Backend::Std, Backend::X86];

    /// `"std"` or `"x86"`.
    pub const fn name(self) -> &'static str {
        match self {
            Backend::Std => "std",
            Backend::X86 => "x86",
        }
    }

    /// Calls `v` with this backend, `mutant` applied.
    pub fn visit<V: HalVisitor>(self, mutant: Option<Mutant>, v: V) -> V::Output {
        match self {
            Backend::Std => v.visit(Mutated::new(StdHal, mutant)),
            Backend::X86 => v.visit(Mutated::new(X86Threads, mutant)),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Code that is generic over the backend, called by [`Backend::visit`] with a concrete HAL.
pub trait HalVisitor {
    /// What the visit returns.
    type Output;
    /// Runs with `hal`.
    fn visit<H: ScenarioHal>(self, hal: H) -> Self::Output;
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use mmusync::{Barrier, Rule};

    /// Counts fences, to see which barriers a `Mutated` issues.
    #[derive(Clone, Copy, Default)]
    struct Counting;

    static FENCES: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: delegates to `StdHal` and only counts fences on the side.
    unsafe impl Hal for Counting {
        type AtomicU64 = <StdHal as Hal>::AtomicU64;
        type AtomicUsize = <StdHal as Hal>::AtomicUsize;
        type AtomicBool = <StdHal as Hal>::AtomicBool;
        type RawRwLock = <StdHal as Hal>::RawRwLock;
        type RawMutex = <StdHal as Hal>::RawMutex;

        fn fence(&self, kind: FenceKind) {
            FENCES.fetch_add(1, SeqCst);
            StdHal.fence(kind)
        }

        fn spin_hint(&self) {}
    }

    #[test]
    fn mutated_drops_only_its_barrier_and_breaks_only_its_rule() {
        let dropped = Barrier::WalkBeginModeBeforeSpteReads;
        let h = Mutated::new(Counting, Some(Mutant::Barrier(dropped)));
        let before = FENCES.load(SeqCst);
        h.barrier(dropped);
        assert_eq!(FENCES.load(SeqCst), before, "the dropped barrier issued a fence");
        h.barrier(Barrier::WalkEndSpteReadsBeforeMode);
        assert_eq!(FENCES.load(SeqCst), before + 1);
        assert!(Rule::ALL.iter().all(|&r| h.keeps(r)), "a barrier mutant breaks no rule");

        let broken = Rule::FlushWaitsForReaders;
        let h = Mutated::new(Counting, Some(Mutant::Rule(broken)));
        assert!(!h.keeps(broken));
        assert!(Rule::ALL.iter().filter(|&&r| r != broken).all(|&r| h.keeps(r)));
        h.barrier(dropped);
        assert_eq!(FENCES.load(SeqCst), before + 2, "a rule mutant drops no barrier");
    }
}
