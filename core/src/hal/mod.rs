//! The abstract hardware layer.
//!
//! Protocol code touches hardware only through these traits: atomics, named barriers, raw
//! locks, the current CPU, interrupt disable/restore, IPIs with acknowledgement, and page
//! allocation. This is what lets one implementation run on real threads ([`std`]),
//! in ring 0 (`x86`, behind the feature of that name), and under the loom and shuttle model checkers (backends in
//! the `mmusync-models` crate).
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

mod native;
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
pub struct CpuId(u8);

impl CpuId {
    /// CPU `n`, if a [`CpuSet`] can name it.
    pub const fn new(n: usize) -> Result<Self, Error> {
        if n < CpuSet::CAPACITY {
            Ok(CpuId(n as u8))
        } else {
            Err(Error::CpuOutOfRange)
        }
    }

    /// The number.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// A set of CPUs (at most [`CpuSet::CAPACITY`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CpuSet(u64);

impl CpuSet {
    /// How many CPUs a set can name.
    pub const CAPACITY: usize = 64;

    /// The empty set.
    pub const fn empty() -> Self {
        CpuSet(0)
    }

    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: CpuId) {
        self.0 |= 1 << cpu.0;
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: CpuId) {
        self.0 &= !(1 << cpu.0);
    }

    /// Whether `cpu` is in the set.
    pub const fn contains(&self, cpu: CpuId) -> bool {
        self.0 & (1 << cpu.0) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// The CPUs, lowest first.
    pub fn iter(self) -> impl Iterator<Item = CpuId> {
        (0..Self::CAPACITY as u8).filter(move |i| self.0 & (1 << i) != 0).map(CpuId)
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
///   running at once share an id;
/// * after [`irq_save`](Cpus::irq_save) returns, this CPU takes no interrupt, and so
///   acknowledges no IPI, until the matching [`irq_restore`](Cpus::irq_restore) re-enables
///   interrupts;
/// * [`ipi_and_wait`](Cpus::ipi_and_wait) returns only after every CPU in the set other than
///   the caller (and other than CPUs that are offline, which run no protocol code) has taken an
///   interrupt that was sent after the call began. Everything the caller wrote before the call
///   is visible to each target after it takes the interrupt (a full barrier on both sides), and
///   everything each target did before taking it is visible to the caller after the return.
pub unsafe trait Cpus: Hal {
    /// The CPU the caller runs on.
    fn current_cpu(&self) -> CpuId;

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
    /// taken it.
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
