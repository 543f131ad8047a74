//! The abstract hardware layer.
//!
//! Protocol code touches hardware only through these traits: atomics, named barriers, raw
//! locks, the current CPU, interrupt disable/restore, IPIs with acknowledgement, and page
//! allocation. This is what lets one implementation run on real threads ([`std`]),
//! in ring 0 (`x86`, behind the feature of that name), and under the loom and shuttle model
//! checkers (`loom`, compiled under `--cfg loom`; `shuttle`, behind the feature of that name),
//! which a VMM can also use to model-check its own integration.
//!
//! The traits are `unsafe` to implement: the protocols' memory safety (no table page freed
//! under a walker, no stale translation installed) rests on each backend keeping the contract
//! written on each trait. Using them is safe; the safe wrappers (the walk and guest-entry guards,
//! [`crate::lock`]) keep the call-side rules (balanced save/restore, unlock only what was
//! locked).
//!
//! Three hooks exist for model checking and cost nothing in production backends:
//! [`Hal::barrier`] receives every ordering point by [`Barrier`] name, so a model backend can
//! drop one; [`Hal::keeps`] receives every lock/check/ordering [`Rule`], so a model backend can
//! break one; [`Hal::step`] receives every labelled protocol [`Step`] with its values, so a
//! model backend can tell a counterexample in the protocol's own terms. Production backends
//! keep the provided defaults, which inline to the fence of the barrier's kind, to `true`, and
//! to nothing.

use crate::barrier::{Barrier, FenceKind};
use crate::error::Error;
use crate::rule::Rule;
use crate::step::Step;
use core::ptr::NonNull;

pub use core::sync::atomic::Ordering;

#[cfg(loom)]
pub mod loom;
mod native;
#[cfg(feature = "shuttle")]
#[cfg_attr(docsrs, doc(cfg(feature = "shuttle")))]
pub mod shuttle;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod std;
#[cfg(all(feature = "x86", target_arch = "x86_64"))]
#[cfg_attr(docsrs, doc(cfg(feature = "x86")))]
pub mod x86;

/// An atomic cell holding a `T`, with C11 semantics for every [`Ordering`].
///
/// Implemented for `core::sync::atomic` types by the crate; model backends implement it for
/// their instrumented atomics.
pub trait Atomic<T: Copy>: Send + Sync {
    /// A new cell holding `v`.
    fn new(v: T) -> Self;
    /// Loads the value.
    fn load(&self, order: Ordering) -> T;
    /// Stores `v`.
    fn store(&self, v: T, order: Ordering);
    /// Stores `v`, returning the previous value.
    fn swap(&self, v: T, order: Ordering) -> T;
    /// Stores `new` if the value is `current`; returns the previous value, `Ok` on success.
    fn compare_exchange(&self, current: T, new: T, success: Ordering, failure: Ordering) -> Result<T, T>;
}

/// An atomic integer: [`Atomic`] plus the read-modify-write arithmetic the protocols use.
/// Arithmetic wraps, as `core`'s does; protocol code checks for overflow itself.
pub trait AtomicInt<T: Copy>: Atomic<T> {
    /// Adds `v`, returning the previous value.
    fn fetch_add(&self, v: T, order: Ordering) -> T;
    /// Subtracts `v`, returning the previous value.
    fn fetch_sub(&self, v: T, order: Ordering) -> T;
    /// Bitwise or with `v`, returning the previous value.
    fn fetch_or(&self, v: T, order: Ordering) -> T;
    /// Bitwise and with `v`, returning the previous value.
    fn fetch_and(&self, v: T, order: Ordering) -> T;
}

/// Memory, ordering and locks: everything P1–P4 need.
///
/// A `Hal` value is a cheap handle (a zero-sized type for the production backends, an `Arc`
/// to the model's state for model backends) that protocol objects keep a clone of.
///
/// # Safety
///
/// Implementations must guarantee:
/// * the atomic types are atomic and give at least the C11 guarantees of each [`Ordering`];
/// * [`fence`](Hal::fence) gives at least the C11 guarantees of the fence of its kind
///   (`Wmb`/`Release`: release fence; `Rmb`/`Acquire`: acquire fence; `Mb`: `SeqCst` fence),
///   or, on a backend documented for one architecture, that architecture's equivalent;
/// * [`barrier`](Hal::barrier) issues `fence(b.kind())`, unless the backend is a model backend
///   that was explicitly told to drop `b` (a mutant);
/// * [`keeps`](Hal::keeps) returns `true`, unless the backend is a model backend told to break
///   that rule (a mutant);
/// * [`step`](Hal::step) has no effect the protocols can observe: it may record the step, but
///   it neither blocks nor touches protocol state (nor, in a model backend, adds a scheduling
///   point, which would make a trace-recording run explore other executions than a plain one);
/// * the raw locks keep the `lock_api` contracts (mutual exclusion; acquire on lock, release
///   on unlock);
/// * [`spin_hint`](Hal::spin_hint) returns, and lets other CPUs make progress (a model
///   backend yields to its scheduler here).
pub unsafe trait Hal: Clone + Send + Sync + 'static {
    /// Atomic `u64`.
    type AtomicU64: AtomicInt<u64>;
    /// Atomic `usize`.
    type AtomicUsize: AtomicInt<usize>;
    /// Atomic `bool`.
    type AtomicBool: Atomic<bool>;
    /// The reader-writer lock behind `mmu_lock`.
    type RawRwLock: lock_api::RawRwLock + Send + Sync;
    /// The spinlock behind `mn_invalidate_lock`, `mmu_unsync_pages_lock` and friends.
    type RawMutex: lock_api::RawMutex + Send + Sync;

    /// Issues a fence of `kind`.
    fn fence(&self, kind: FenceKind);

    /// Issues the named barrier. Protocol code calls only this, never [`fence`](Hal::fence).
    #[inline(always)]
    fn barrier(&self, b: Barrier) {
        self.fence(b.kind())
    }

    /// Whether to keep `rule` (always, outside of model checking).
    #[inline(always)]
    fn keeps(&self, rule: Rule) -> bool {
        let _ = rule;
        true
    }

    /// Reports a protocol step as it happens ([`crate::step`]). Does nothing outside of model
    /// checking.
    #[inline(always)]
    fn step(&self, step: Step) {
        let _ = step;
    }

    /// Called in every wait loop.
    fn spin_hint(&self);
}

/// A CPU number: `0..CpuSet::CAPACITY`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(try_from = "usize", into = "usize")
)]
pub struct CpuId(u8);

impl TryFrom<usize> for CpuId {
    type Error = Error;

    /// [`CpuId::new`].
    fn try_from(n: usize) -> Result<Self, Error> {
        CpuId::new(n)
    }
}

impl From<CpuId> for usize {
    fn from(cpu: CpuId) -> usize {
        cpu.index()
    }
}

impl CpuId {
    /// CPU `n`, if a [`CpuSet`] can name it ([`Error::CpuOutOfRange`] otherwise).
    pub const fn new(n: usize) -> Result<Self, Error> {
        if n < CpuSet::CAPACITY {
            // No truncation: `CpuSet::CAPACITY - 1` fits a `u8` (checked below).
            Ok(CpuId(n as u8))
        } else {
            Err(Error::CpuOutOfRange)
        }
    }

    /// The number.
    pub const fn index(self) -> usize {
        self.0 as usize
    }

    const fn word(self) -> usize {
        self.0 as usize / 64
    }

    const fn bit(self) -> u64 {
        1 << (self.0 % 64)
    }
}

/// A set of CPUs: a bitmap of [`CpuSet::CAPACITY`] bits (`cpumask_t`).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct CpuSet([u64; CpuSet::WORDS]);

// Every CPU number must fit `CpuId`'s `u8`, and the bitmap must be whole words.
const _: () = assert!(CpuSet::CAPACITY <= u8::MAX as usize + 1 && CpuSet::CAPACITY % 64 == 0);

impl CpuSet {
    /// How many CPUs a set can name, and so the most CPUs a backend can have: 256 (CPU numbers
    /// `0..256`). Backends size their per-CPU state by it (the `std` backend's CPU slots, the
    /// `x86` backend's IPI counters), so it is a compile-time constant; a set is
    /// `CAPACITY / 8` bytes.
    pub const CAPACITY: usize = 256;

    const WORDS: usize = Self::CAPACITY / 64;

    /// The empty set.
    pub const fn empty() -> Self {
        CpuSet([0; Self::WORDS])
    }

    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: CpuId) {
        self.0[cpu.word()] |= cpu.bit();
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: CpuId) {
        self.0[cpu.word()] &= !cpu.bit();
    }

    /// Whether `cpu` is in the set.
    pub const fn contains(&self, cpu: CpuId) -> bool {
        self.0[cpu.word()] & cpu.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }

    /// How many CPUs the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The CPUs, lowest first.
    pub fn iter(self) -> impl Iterator<Item = CpuId> {
        self.0.into_iter().enumerate().flat_map(|(i, word)| {
            let mut rest = word;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                // No truncation: `i * 64 + bit < CAPACITY` (the const assertion above).
                Some(CpuId((i * 64 + bit) as u8))
            })
        })
    }
}

impl core::fmt::Debug for CpuSet {
    /// The CPU numbers, as a set: `{0, 3}`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set().entries(self.iter().map(CpuId::index)).finish()
    }
}

/// The interrupt state [`Cpus::irq_save`] returns: whether interrupts were enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqState(pub bool);

/// CPUs, interrupts and IPIs: what P5 needs on top of [`Hal`].
///
/// # Safety
///
/// Implementations must guarantee:
/// * [`current_cpu`](Cpus::current_cpu) names the CPU the caller runs on, and no two CPUs
///   running at once share an id. It returns `None` only for a caller that is none of the
///   backend's CPUs (a `std` thread that did not register): such a caller is never an IPI
///   target, so no flush waits for it, and it may still send IPIs;
/// * after [`irq_save`](Cpus::irq_save) returns, this CPU takes no interrupt, and so
///   acknowledges no IPI, until the matching [`irq_restore`](Cpus::irq_restore) re-enables
///   interrupts;
/// * [`ipi_and_wait`](Cpus::ipi_and_wait) returns only after every CPU in the set other than
///   the caller (and other than CPUs that are offline, which run no protocol code) has taken an
///   interrupt that was sent after the call began. Everything the caller wrote before the call
///   is visible to each target after it takes the interrupt (a full barrier on both sides), and
///   everything each target did before taking it is visible to the caller after the return.
pub unsafe trait Cpus: Hal {
    /// The CPU the caller runs on, or `None` if the caller is not one of this backend's CPUs
    /// (possible only on backends whose CPUs are threads that register, like `std`).
    ///
    /// The crate's requester paths ([`crate::vcpu::flush_remote_tlbs`], the zaps) work from a
    /// caller that is not a CPU: it cannot be an IPI target, so there is no own CPU to skip.
    /// The vCPU-side paths (guest entry, lockless walks) refuse it with
    /// [`VcpuError::NotACpu`](crate::vcpu::VcpuError::NotACpu).
    fn current_cpu(&self) -> Option<CpuId>;

    /// Disables interrupts on this CPU, returning the previous state.
    fn irq_save(&self) -> IrqState;

    /// Restores the state `irq_save` returned.
    ///
    /// # Safety
    ///
    /// `state` must come from the most recent unmatched `irq_save` on this CPU (saves and
    /// restores nest like brackets).
    unsafe fn irq_restore(&self, state: IrqState);

    /// Sends an IPI to every CPU in `targets` except the caller, and waits until each has
    /// taken it. The caller need not be a CPU ([`current_cpu`](Cpus::current_cpu) `None`).
    ///
    /// Call it with interrupts enabled on the calling CPU: a CPU that waits with interrupts off
    /// cannot take another CPU's IPI, so two CPUs sending to each other would wait for ever
    /// (Linux warns in `smp_call_function_many` for the same reason). Backends may refuse such
    /// a call by panicking (the `std` backend does); the crate's callers
    /// ([`crate::vcpu::flush_remote_tlbs`] and the zaps) never make one.
    fn ipi_and_wait(&self, targets: CpuSet);
}

/// Interrupts disabled on this CPU for the guard's lifetime.
///
/// Crate-internal on purpose: save/restore brackets must nest, and a guard dropped out of
/// order would turn interrupts back on under a younger guard. The crate creates guards only
/// where interrupts were enabled (lockless walk begin, guest entry; `outermost` refuses
/// otherwise), so at most one guard exists per CPU and drop order cannot matter.
#[must_use = "interrupts are re-enabled when the guard drops"]
pub(crate) struct IrqGuard<'a, H: Cpus> {
    hal: &'a H,
    saved: IrqState,
    // Interrupt state belongs to one CPU: the guard must not move to another thread.
    _not_send: core::marker::PhantomData<*const ()>,
}

impl<'a, H: Cpus> IrqGuard<'a, H> {
    /// Disables interrupts until the guard drops, if they were enabled; `None` (and nothing
    /// changed) if they were already disabled, so that no two guards ever nest on a CPU.
    pub(crate) fn outermost(hal: &'a H) -> Option<Self> {
        let saved = hal.irq_save();
        if saved.0 {
            Some(IrqGuard { hal, saved, _not_send: core::marker::PhantomData })
        } else {
            // SAFETY: `saved` is from the `irq_save` just above, on this CPU: the innermost
            // bracket, closed at once.
            unsafe { hal.irq_restore(saved) };
            None
        }
    }
}

impl<H: Cpus> Drop for IrqGuard<'_, H> {
    fn drop(&mut self) {
        // SAFETY: `saved` came from the `irq_save` in `outermost`, on this CPU (the guard is
        // not `Send`). That save found interrupts enabled and nothing can disable them again on
        // this CPU while they are off except a bracket that closes before we drop (no other
        // guard can exist: `outermost` refuses), so ours is the innermost open bracket.
        unsafe { self.hal.irq_restore(self.saved) }
    }
}

/// Allocation of pages that hold values of type `P` (table pages, guest pages).
///
/// # Safety
///
/// [`alloc`](PageAlloc::alloc) returns a pointer to a valid, aligned `P` holding the value it
/// was given, owned by the caller until passed to [`free`](PageAlloc::free). A page is not
/// handed out again while anyone may still hold a pointer obtained before its `free`
/// (a backend that reuses memory must wait for `free`, which the protocols call only after
/// their reclamation rules allow it).
pub unsafe trait PageAlloc<P> {
    /// Allocates a page holding `init`, or gives `init` back when out of memory.
    fn alloc(&self, init: P) -> Result<NonNull<P>, P>;

    /// Frees a page.
    ///
    /// # Safety
    ///
    /// `page` came from `alloc` on this allocator, is freed once, and no CPU reads it through
    /// a pointer obtained before this call (the reclamation protocols of [`crate::walk`] and
    /// [`crate::epoch`] establish this).
    unsafe fn free(&self, page: NonNull<P>);
}
