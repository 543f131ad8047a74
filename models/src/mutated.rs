//! The run-time mutant as a HAL adapter: [`Mutated`] wraps any backend and drops one named
//! barrier or breaks one named rule, so that a checker on real hardware (threads, a KVM guest)
//! runs core's code with a mutant the same way the model backends do.

use crate::mutant::Mutant;
use mmusync::barrier::FenceKind;
use mmusync::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
use mmusync::{Barrier, Rule, Step};

/// A backend with at most one mutant applied at run time: [`Hal::barrier`] skips the dropped
/// barrier, [`Hal::keeps`] answers `false` for the broken rule; everything else delegates.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mutated<H> {
    inner: H,
    mutant: Option<Mutant>,
}

impl<H> Mutated<H> {
    /// `inner` with `mutant` applied (`None`: the backend unchanged).
    pub const fn new(inner: H, mutant: Option<Mutant>) -> Self {
        Mutated { inner, mutant }
    }

    /// The mutant applied, if any.
    pub const fn mutant(&self) -> Option<Mutant> {
        self.mutant
    }
}

// SAFETY: a model-style backend. Every item delegates to `H`, which keeps the contract, except
// that `barrier` skips the one barrier and `keeps` breaks the one rule this value was
// explicitly told to mutate, as the contract allows for a backend told to apply a mutant.
// Code run under a mutant must not rely on the protocols for memory safety: every checker's
// scenarios free pages into ghost pages or a quarantine and never reuse memory while they run.
unsafe impl<H: Hal> Hal for Mutated<H> {
    type AtomicU64 = H::AtomicU64;
    type AtomicUsize = H::AtomicUsize;
    type AtomicBool = H::AtomicBool;
    type RawRwLock = H::RawRwLock;
    type RawMutex = H::RawMutex;

    #[inline(always)]
    fn fence(&self, kind: FenceKind) {
        self.inner.fence(kind)
    }

    #[inline(always)]
    fn barrier(&self, b: Barrier) {
        if self.mutant != Some(Mutant::Barrier(b)) {
            self.inner.barrier(b)
        }
    }

    #[inline(always)]
    fn keeps(&self, rule: Rule) -> bool {
        self.mutant != Some(Mutant::Rule(rule)) && self.inner.keeps(rule)
    }

    #[inline(always)]
    fn spin_hint(&self) {
        self.inner.spin_hint()
    }

    #[inline(always)]
    fn step(&self, step: Step) {
        self.inner.step(step)
    }
}

// SAFETY: delegates to `H`'s `Cpus`, which keeps the contract; mutants touch only `barrier` and
// `keeps`.
unsafe impl<H: Cpus> Cpus for Mutated<H> {
    #[inline(always)]
    fn current_cpu(&self) -> Option<CpuId> {
        self.inner.current_cpu()
    }

    #[inline(always)]
    fn irq_save(&self) -> IrqState {
        self.inner.irq_save()
    }

    #[inline(always)]
    unsafe fn irq_restore(&self, state: IrqState) {
        // SAFETY: the caller's obligation, passed on unchanged.
        unsafe { self.inner.irq_restore(state) }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        self.inner.ipi_and_wait(targets)
    }
}
