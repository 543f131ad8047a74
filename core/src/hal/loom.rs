//! The loom model backend: core's [`Hal`] and [`Cpus`] over [loom](https://docs.rs/loom)'s
//! atomics and fences, locks over loom atomics (waiters park), per-CPU interrupt flags and
//! IPIs, the run-time [`Mutant`], and the event trace of each execution ([`trace`]).
//!
//! Compiled only under `--cfg loom`, the convention of tokio and crossbeam: build and test with
//! `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"` (the second flag puts crossbeam-epoch, which
//! the `alloc` feature's epoch reclamation uses, in its own loom mode, so loom sees it too) and
//! a separate target directory (`CARGO_TARGET_DIR=target/loom`), since the flags rebuild
//! everything. This is the backend the crate's own loom checker (`mmusync-loom`) runs its
//! scenarios and mutants on; a VMM uses it to model-check *its* side of the protocols: its
//! [`SecondaryMmu`](crate::notifier::SecondaryMmu), its fault path, its page-table walker.
//!
//! ## Using it
//!
//! One [`LoomHal`] per execution, created inside `loom::model` on the model's main thread
//! before any other thread is spawned (it creates the execution's lock words). CPU `i` is the
//! loom thread that called [`set_current_cpu`]`(i)` (the main thread is CPU 0 unless it says
//! otherwise); [`spawn_cpu`] spawns a loom thread that is that CPU. Up to [`MAX_CPUS`] CPUs
//! (loom's limit of threads).
//!
//! ```ignore
//! // (`ignore`: it needs --cfg loom and a loom dev-dependency; see the crate README.)
//! use mmusync::hal::loom::{spawn_cpu, LoomHal};
//! use mmusync::notifier::Vm;
//!
//! loom::model(|| {
//!     let hal = LoomHal::new(None); // or Some(Mutant::Barrier(..)) to drop one barrier
//!     let vm = std::sync::Arc::new(Vm::<LoomHal, 2>::new(hal.clone()));
//!     let vcpu = spawn_cpu(1, { let vm = vm.clone(); move || { /* fault, install, use */ } });
//!     // CPU 0: the primary MMU: vm.invalidate_range_start(&mmu, range), free, drop.
//!     vcpu.join().unwrap();
//!     // final ghost checks
//! });
//! ```
//!
//! ## What it models
//!
//! * **Memory**: loom's C11 model. [`Hal::barrier`] issues the barrier's fence
//!   (`Wmb`/`Release` → release fence, `Rmb`/`Acquire` → acquire fence, `Mb` → `SeqCst`
//!   fence) unless the execution's [`Mutant`] drops it; [`Hal::keeps`] is false only for the
//!   mutant's rule. Your own code's atomics must be loom's (`loom::sync::atomic`) for loom to
//!   see them; memory that only your checks read (ghost state) may be plain.
//! * **Interrupts and IPIs** (below): a CPU with interrupts on takes an IPI at once; one with
//!   interrupts off when it turns them back on. So [`crate::vcpu::flush_remote_tlbs`] and the
//!   zaps wait out every lockless walk and guest run, as on hardware.
//! * **Locks**: mutual exclusion with acquire/release; waiters park (below).
//! * **Trace**: every barrier issued or dropped, every broken rule, every protocol step core
//!   reports ([`Hal::step`]), interrupts, IPIs, and whatever steps your roles record
//!   ([`trace::record`]) land in a per-execution list, so a failing execution can be printed in
//!   protocol terms ([`trace::take`], [`trace::render`]).
//!
//! ## What loom cannot see
//!
//! * **Load buffering** is never produced: a load never returns a store that comes later in
//!   its thread's causal future. A barrier whose only job is to forbid load buffering cannot
//!   be shown needed here.
//! * **`SeqCst` accesses** are modelled as acquire/release; every full barrier in the
//!   protocols is a `SeqCst` *fence*, which loom models fully. Use fences, not `SeqCst`
//!   accesses, for full barriers in your own code, or loom will miss what they order.
//! * **DPOR misses races hidden behind a same-thread load** (loom 0.7.2): loom remembers only
//!   the last access per atomic and treats loads as independent. This backend's atomics issue a
//!   relaxed store to a private probe before every load, so loads of core's
//!   atomics are seen; your own loom atomics do not get the probe.
//! * **Store/RMW coherence** (loom 0.7.2): loom can order a plain store before a concurrent RMW
//!   that already read the value the store follows. This backend issues every store of core's
//!   atomics as a swap; a relaxed swap continues another thread's release sequence where a store
//!   would end it, so a bug that needs a store to end one is masked unless the execution asks
//!   for plain stores ([`set_plain_stores`]).
//! * **Ghost state is outside the model**, and a ghost-only access gives DPOR nothing to
//!   reorder: if your check is "the vCPU never reads a freed page", make the vCPU's use of a
//!   translation touch a loom atomic (one word per page, say) and the free write it, or loom may
//!   never try the use on both sides of the free.
//! * The IPI's own full barrier on the target (the interrupt entry) is not modelled; nothing in
//!   the protocols relies on it for a target with interrupts on (below).
//! * Exhaustive exploration grows fast: two or three threads of a few dozen atomic steps each.
//!   Bound preemptions (`loom::model::Builder::preemption_bound`, or `LOOM_MAX_PREEMPTIONS`)
//!   for more.
//!
//! ## Interrupts and IPIs (core/docs/protocols.md, modelling the primitives)
//!
//! Each CPU has an `irqs_off` flag (a loom atomic).
//!
//! * `irq_save`: if interrupts were on, `irqs_off = true` then a `SeqCst` fence.
//! * `irq_restore` (to "on"): `irqs_off = false` with release.
//! * `ipi_and_wait(targets)`: for each target other than the caller, a `SeqCst` fence, then read
//!   `irqs_off` (acquire); while it is set, yield and read again.
//!
//! This is the exact semantics of "an IPI is taken at once when the target's interrupts are
//! on, and at the moment they come back on otherwise". The sender's read that finds the flag
//! clear *is* the target taking the IPI: a target with interrupts on runs no code that the IPI
//! must wait for (every protocol reader disables interrupts for as long as it reads), so taking
//! the interrupt at that instant, between two of its steps, is indistinguishable from taking it
//! at its next instruction. The ordering guarantees of [`Cpus::ipi_and_wait`] hold:
//!
//! * target → sender: a flag cleared by `irq_restore` is a release store, and the sender's
//!   acquire read of it synchronizes with it, so everything the target did inside the
//!   interrupts-off section is visible after the wait;
//! * sender → target: the sender's fence and the target's `irq_save` fence are both `SeqCst`.
//!   If the sender reads the flag clear from before the target's `irqs_off = true`, the
//!   target's fence comes after the sender's in the `SeqCst` order (otherwise the sender's read
//!   would see `true` or later), so the target's reads inside its section see everything the
//!   sender wrote before its fence. If the sender waits, it waits until that section ends.
//!
//! What loom does not model: the IPI's own full barrier on the target (the interrupt entry).
//! Nothing in the protocols relies on it for a target with interrupts on, for the reason
//! above.
//!
//! ## Locks
//!
//! `lock_api` needs `const INIT`, and loom atomics have no `const fn new`. A loom atomic created
//! lazily by whichever role first takes the lock would not happen-before the other roles'
//! accesses (loom reports a causality violation), so [`LoomHal::new`] creates a pool of lock
//! words at the start of each execution, on the main thread before any role is spawned, and
//! each raw lock claims the next free word on first use (a `std::sync::OnceLock`; the order of
//! claims is deterministic for a given schedule). Locks acquire on lock and release on unlock.
//!
//! A thread that finds a lock held **parks** (`loom::thread::park`) until the next unlock of
//! that word unparks it; it does not spin. Spinning with `yield_now` explodes when two threads
//! wait on a lock whose holder was preempted: loom's bounded DPOR treats every yield as a free
//! context switch, so it explores the two waiters handing the CPU to each other without end
//! (the three-role cache scenario ran 215,000 executions and then hit loom's branch limit on
//! exactly that path). A parked thread is not runnable, so the holder is the only choice. Every
//! lock attempt is a compare-exchange, which in loom always reads the newest value, so "held"
//! is never a stale observation and the holder's unlock, which wakes every waiter of the word,
//! is still to come: no wake-up is lost. loom's `unpark` joins the waiter's causality with the
//! unlocker's; the unlocker's history up to that point is exactly what its release already
//! publishes to the next owner, and the woken thread does nothing but retry the lock, so this
//! adds no ordering the protocols could observe. A lock that is never released now shows up as
//! a loom deadlock instead of a branch-limit error.

pub mod trace;

use self::trace::Event;
use crate::hal::{Atomic, AtomicInt, CpuId, CpuSet, Cpus, Hal, IrqState, Ordering};
use crate::{Barrier, FenceKind, Mutant, Rule, Step};
use ::loom::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize};
use ::std::cell::RefCell;
use ::std::sync::{Arc, OnceLock};

/// The most CPUs (roles) a loom scenario can have: loom's 4 spawned threads plus main.
pub const MAX_CPUS: usize = 5;

::loom::thread_local! {
    static CPU: ::std::cell::Cell<usize> = ::std::cell::Cell::new(0);
}

/// Makes the calling loom thread CPU `cpu` (what [`Cpus::current_cpu`] answers on it, and
/// whose interrupt flag [`Cpus::irq_save`] sets). Call it first thing in each spawned thread
/// ([`spawn_cpu`] does); the model's main thread is CPU 0 until it says otherwise. No two
/// threads running at once may be the same CPU.
///
/// # Panics
///
/// If `cpu` is not below [`MAX_CPUS`]: a test-harness error, reported at once rather than as an
/// out-of-bounds index inside the next interrupt call.
pub fn set_current_cpu(cpu: usize) {
    assert!(cpu < MAX_CPUS, "loom HAL: CPU {cpu} out of range (at most {MAX_CPUS} CPUs)");
    CPU.with(|c| c.set(cpu));
}

/// The calling loom thread's CPU (0 unless [`set_current_cpu`] said otherwise).
pub fn current_cpu() -> usize {
    CPU.with(|c| c.get())
}

/// Spawns a loom thread that runs `f` as CPU `cpu` ([`set_current_cpu`]). Call it inside a loom
/// model, after the execution's [`LoomHal`] was created.
///
/// # Panics
///
/// As [`set_current_cpu`] (inside the new thread, which fails the execution), and as
/// `loom::thread::spawn` when the model already has loom's maximum of threads.
pub fn spawn_cpu<F, T>(cpu: usize, f: F) -> ::loom::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ::loom::thread::spawn(move || {
        set_current_cpu(cpu);
        f()
    })
}

/// The loom HAL. One value per model execution (it owns loom objects); clones share it.
#[derive(Clone)]
pub struct LoomHal {
    inner: Arc<Inner>,
}

struct Inner {
    mutant: Option<Mutant>,
    /// Further barriers or rules dropped together with `mutant`: only for the scorecard's
    /// check that a barrier documented as redundant is covered by exactly these.
    also: ::std::vec::Vec<Mutant>,
    irqs_off: [AtomicBool; MAX_CPUS],
}

/// How many raw locks one execution may use.
const LOCK_POOL: usize = 32;

/// The lock words of one execution.
struct LockPool {
    words: [AtomicUsize; LOCK_POOL],
    next: ::std::sync::atomic::AtomicUsize,
    /// The loom threads parked on each word. Plain bookkeeping, outside the model: loom runs
    /// every thread of an execution on one OS thread and switches only at loom operations.
    waiters: [::std::sync::Mutex<::std::vec::Vec<::loom::thread::Thread>>; LOCK_POOL],
}

::std::thread_local! {
    /// The current execution's lock words (loom runs a whole execution on one OS thread).
    static POOL: RefCell<Option<Arc<LockPool>>> = const { RefCell::new(None) };
}

/// A claimed lock word.
struct LockWord {
    pool: Arc<LockPool>,
    index: usize,
}

impl LockWord {
    fn claim() -> Self {
        let pool =
            POOL.with(|p| p.borrow().clone()).expect("loom HAL: a lock was used outside a model execution");
        let index = pool.next.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
        assert!(index < LOCK_POOL, "loom HAL: more than {LOCK_POOL} locks in one execution");
        LockWord { pool, index }
    }

    fn get(&self) -> &AtomicUsize {
        &self.pool.words[self.index]
    }

    /// Parks the calling thread until the next unlock of this word. Call it only right after a
    /// read-modify-write of the word found the lock held: no loom operation runs between that
    /// RMW and the park, so the holder's unlock comes later and unparks us.
    fn park(&self) {
        let mut waiters = self.pool.waiters[self.index].lock().unwrap_or_else(|e| e.into_inner());
        waiters.push(::loom::thread::current());
        drop(waiters);
        ::loom::thread::park();
    }

    /// Unparks every thread parked on this word. Call it right after the releasing RMW.
    fn unpark_all(&self) {
        let waiters =
            core::mem::take(&mut *self.pool.waiters[self.index].lock().unwrap_or_else(|e| e.into_inner()));
        for t in waiters {
            t.unpark();
        }
    }
}

impl ::core::fmt::Debug for LoomHal {
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("LoomHal")
            .field("mutant", &self.inner.mutant)
            .field("also", &self.inner.also)
            .finish_non_exhaustive()
    }
}

impl LoomHal {
    /// A HAL for one execution, applying `mutant` (or none: the correct code). Call it at the
    /// start of the execution, on the model's main thread, before any other thread is spawned:
    /// it creates the execution's lock words and clears the [`trace`] of the previous
    /// execution.
    ///
    /// Every lock of core's objects built over this HAL (`mmu_lock`, the spinlocks) claims one of
    /// the execution's 32 lock words on first use; a 33rd lock panics (a test-harness limit).
    pub fn new(mutant: Option<Mutant>) -> Self {
        Self::with_also_dropped(mutant, &[])
    }

    /// Like [`new`](Self::new), and also drops every barrier (or breaks every rule) in `also`:
    /// the scorecard uses it to check that a barrier documented as redundant is covered by the
    /// barriers it names.
    pub fn with_also_dropped(mutant: Option<Mutant>, also: &[Mutant]) -> Self {
        let pool = LockPool {
            words: core::array::from_fn(|_| AtomicUsize::new(0)),
            next: Default::default(),
            waiters: core::array::from_fn(|_| Default::default()),
        };
        POOL.with(|p| *p.borrow_mut() = Some(Arc::new(pool)));
        trace::start_execution();
        LoomHal {
            inner: Arc::new(Inner {
                mutant,
                also: also.to_vec(),
                irqs_off: core::array::from_fn(|_| AtomicBool::new(false)),
            }),
        }
    }

    fn mutated(&self, m: Mutant) -> bool {
        self.inner.mutant == Some(m) || self.inner.also.contains(&m)
    }

    fn irqs_off(&self, cpu: usize) -> &AtomicBool {
        &self.inner.irqs_off[cpu]
    }
}

fn order(kind: FenceKind) -> Ordering {
    match kind {
        FenceKind::Wmb | FenceKind::Release => Ordering::Release,
        FenceKind::Rmb | FenceKind::Acquire => Ordering::Acquire,
        FenceKind::Mb => Ordering::SeqCst,
    }
}

// SAFETY: loom's atomics and fences give (at least) the C11 guarantees loom models; `barrier`
// issues `fence(b.kind())` unless this model backend was told to drop `b`; `keeps` returns true
// unless told to break that rule; the raw locks below are mutually exclusive, acquire on lock
// and release on unlock; `spin_hint` yields to loom's scheduler and returns.
unsafe impl Hal for LoomHal {
    type AtomicU64 = LoomAtomicU64;
    type AtomicUsize = LoomAtomicUsize;
    type AtomicBool = LoomAtomicBool;
    type RawRwLock = LoomRawRwLock;
    type RawMutex = LoomRawMutex;

    fn fence(&self, kind: FenceKind) {
        fence(order(kind));
    }

    fn barrier(&self, b: Barrier) {
        trace::touch(Mutant::Barrier(b));
        if self.mutated(Mutant::Barrier(b)) {
            trace::record(Event::BarrierDropped(b));
        } else {
            trace::record(Event::Barrier(b));
            fence(order(b.kind()));
        }
    }

    fn keeps(&self, rule: Rule) -> bool {
        trace::touch(Mutant::Rule(rule));
        if self.mutated(Mutant::Rule(rule)) {
            trace::record(Event::RuleBroken(rule));
            false
        } else {
            true
        }
    }

    fn step(&self, step: Step) {
        // A thread-local push, not a loom operation: recording adds no scheduling point.
        trace::record(Event::Core(step));
    }

    fn spin_hint(&self) {
        ::loom::thread::yield_now();
    }
}

// SAFETY: `current_cpu` is the role index the executor gave this loom thread (unique per
// running role); after `irq_save` the flag is set, and `ipi_and_wait` does not return for this
// CPU until `irq_restore` clears it; `ipi_and_wait` keeps the ordering contract as the module
// documentation argues (SeqCst fences on both sides, release/acquire on the flag).
unsafe impl Cpus for LoomHal {
    fn current_cpu(&self) -> Option<CpuId> {
        match CpuId::new(current_cpu()) {
            Ok(id) => Some(id),
            Err(e) => panic!("loom HAL: {e}"),
        }
    }

    fn irq_save(&self) -> IrqState {
        let flag = self.irqs_off(current_cpu());
        let was_off = flag.load(Ordering::Relaxed);
        if !was_off {
            flag.store(true, Ordering::Relaxed);
            fence(Ordering::SeqCst);
            trace::record(Event::IrqsOff);
        }
        IrqState(!was_off)
    }

    unsafe fn irq_restore(&self, state: IrqState) {
        if state.0 {
            self.irqs_off(current_cpu()).store(false, Ordering::Release);
            trace::record(Event::IrqsOn);
        }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        let me = current_cpu();
        for cpu in targets.iter().filter(|c| c.index() != me) {
            trace::record(Event::IpiSent(cpu.index()));
            fence(Ordering::SeqCst);
            while self.irqs_off(cpu.index()).load(Ordering::Acquire) {
                ::loom::thread::yield_now();
            }
            trace::record(Event::IpiTaken(cpu.index()));
        }
    }
}

macro_rules! loom_atomic {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $t:ty) => {
        $(#[$doc])*
        ///
        /// Every load is preceded by a relaxed store to a private *probe* atomic that nothing
        /// reads, and every store is a swap (see "What loom cannot see" in the module documentation).
        pub struct $name {
            value: $inner,
            probe: LoadProbe,
        }

        impl ::core::fmt::Debug for $name {
            /// The type name only: reading the value would be a loom operation.
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl Atomic<$t> for $name {
            fn new(v: $t) -> Self {
                $name { value: <$inner>::new(v), probe: LoadProbe::new() }
            }
            fn load(&self, order: Ordering) -> $t {
                self.probe.touch();
                self.value.load(order)
            }
            fn store(&self, v: $t, order: Ordering) {
                if plain_stores() {
                    self.value.store(v, order);
                } else {
                    // A swap, not a store: see `LoadProbe`'s neighbour note on loom's coherence.
                    self.value.swap(v, order);
                }
            }
            fn swap(&self, v: $t, order: Ordering) -> $t {
                self.value.swap(v, order)
            }
            fn compare_exchange(&self, current: $t, new: $t, success: Ordering, failure: Ordering) -> Result<$t, $t> {
                self.value.compare_exchange(current, new, success, failure)
            }
        }
    };
}

::std::thread_local! {
    /// Whether the current execution issues plain stores (see [`set_plain_stores`]).
    static PLAIN_STORES: ::std::cell::Cell<bool> = const { ::std::cell::Cell::new(false) };
}

/// Makes [`Atomic::store`] of the current execution a plain store (`true`) or a swap
/// (`false`, the default; see "What loom cannot see" in the module documentation for why). A scenario about a relaxed store that ends
/// another thread's release sequence needs plain stores: a swap would continue that sequence.
/// loom runs a whole execution on one OS thread, so a thread-local is per execution.
pub fn set_plain_stores(on: bool) {
    PLAIN_STORES.with(|p| p.set(on));
}

fn plain_stores() -> bool {
    PLAIN_STORES.with(|p| p.get())
}

/// Makes loads visible to loom's partial-order reduction.
///
/// (Stores, for their part, are issued as swaps. loom 0.7.2 can place a plain store *before* a
/// concurrent read-modify-write in modification order although the RMW already read the
/// value the store follows, so the storing thread can later read the RMW's value back after
/// its own store: a coherence violation C11 forbids (CoWR), which made the correct SB-entry
/// scenario fail. A swap reads the latest value and is ordered after it, which restores
/// coherence. The cost: a relaxed swap continues another thread's release sequence where a
/// store would have ended it. A scenario that needs the store to end it runs with plain stores
/// ([`set_plain_stores`], `Scenario::plain_stores`); it must not race a store with an RMW of
/// the same word, or the coherence bug above may show.)
///
/// loom 0.7's DPOR remembers only the *last* access to each atomic and treats loads as
/// independent of each other. When CPU A loads `x` and CPU B then loads `x` and stores it (the
/// `seq++` of `invalidate_range_end`: a plain load and store under `mmu_lock`), B's store is
/// compared only with B's own load, so loom never tries running B's store before A's load, and
/// a whole class of interleavings (A reading the *new* `seq`) goes unexplored. A relaxed store
/// to a per-atomic probe before each load makes every load of `x` a dependent access of the
/// probe, so DPOR sees the race. The probe is never read and orders nothing (relaxed, private),
/// so the memory model of `x` is unchanged; the cost is more explored interleavings.
struct LoadProbe(AtomicBool);

impl LoadProbe {
    fn new() -> Self {
        LoadProbe(AtomicBool::new(false))
    }

    fn touch(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

macro_rules! loom_atomic_int {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $t:ty) => {
        loom_atomic!($(#[$doc])* $name, $inner, $t);

        impl AtomicInt<$t> for $name {
            fn fetch_add(&self, v: $t, order: Ordering) -> $t {
                self.value.fetch_add(v, order)
            }
            fn fetch_sub(&self, v: $t, order: Ordering) -> $t {
                self.value.fetch_sub(v, order)
            }
            fn fetch_or(&self, v: $t, order: Ordering) -> $t {
                self.value.fetch_or(v, order)
            }
            fn fetch_and(&self, v: $t, order: Ordering) -> $t {
                self.value.fetch_and(v, order)
            }
        }
    };
}

loom_atomic_int!(
    /// A loom `AtomicU64` behind core's [`AtomicInt`].
    LoomAtomicU64, AtomicU64, u64
);
loom_atomic_int!(
    /// A loom `AtomicUsize` behind core's [`AtomicInt`].
    LoomAtomicUsize, AtomicUsize, usize
);
loom_atomic!(
    /// A loom `AtomicBool` behind core's [`Atomic`].
    LoomAtomicBool, AtomicBool, bool
);

/// A lock over a loom lock word (`mn_invalidate_lock` and friends): 0 free, 1 held. Waiters
/// park (see the module documentation).
pub struct LoomRawMutex {
    word: OnceLock<LockWord>,
}

impl ::core::fmt::Debug for LoomRawMutex {
    /// The type name only: reading the lock word would be a loom operation.
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("LoomRawMutex").finish_non_exhaustive()
    }
}

impl LoomRawMutex {
    fn word(&self) -> &LockWord {
        self.word.get_or_init(LockWord::claim)
    }

    fn cell(&self) -> &AtomicUsize {
        self.word().get()
    }
}

// SAFETY: mutual exclusion by a compare-exchange from 0 to 1 (acquire) and a release swap back
// to 0; `unlock` is only called by the holder (lock_api's contract on the caller). A waiter
// parks only after its compare-exchange (which reads the newest value) found the lock held, and
// every unlock unparks every waiter, so no waiter sleeps through the unlock it waits for.
unsafe impl lock_api::RawMutex for LoomRawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = LoomRawMutex { word: OnceLock::new() };
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        while !self.try_lock() {
            self.word().park();
        }
    }

    fn try_lock(&self) -> bool {
        self.cell().compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    unsafe fn unlock(&self) {
        // A swap, not a store: see `LoadProbe` on loom's store/RMW coherence.
        self.cell().swap(0, Ordering::Release);
        self.word().unpark_all();
    }
}

/// A reader-writer lock over a loom lock word (`mmu_lock`). Waiters park.
pub struct LoomRawRwLock {
    word: OnceLock<LockWord>,
}

const WRITER: usize = 1 << (usize::BITS - 1);

impl ::core::fmt::Debug for LoomRawRwLock {
    /// The type name only: reading the lock word would be a loom operation.
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("LoomRawRwLock").finish_non_exhaustive()
    }
}

impl LoomRawRwLock {
    fn word(&self) -> &LockWord {
        self.word.get_or_init(LockWord::claim)
    }

    fn cell(&self) -> &AtomicUsize {
        self.word().get()
    }
}

// SAFETY: the state word holds the reader count or the WRITER bit, never both: readers add one
// only while WRITER is clear and writers set WRITER only when the word is zero, each by a
// compare-exchange with acquire; unlocks release (readers by a release fetch_sub, which keeps
// the release sequence for the next writer's acquire, writers by a release swap to zero).
// Waiters park only after a compare-exchange (newest value) found the lock unavailable, and
// every unlock unparks every waiter.
unsafe impl lock_api::RawRwLock for LoomRawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = LoomRawRwLock { word: OnceLock::new() };
    type GuardMarker = lock_api::GuardSend;

    fn lock_shared(&self) {
        while !self.try_lock_shared() {
            self.word().park();
        }
    }

    fn try_lock_shared(&self) -> bool {
        // Guess "free"; a failed compare-exchange returns the newest value to retry from.
        let mut s = 0;
        loop {
            match self.cell().compare_exchange(s, s + 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) if now & WRITER != 0 => return false,
                Err(now) => s = now,
            }
        }
    }

    unsafe fn unlock_shared(&self) {
        self.cell().fetch_sub(1, Ordering::Release);
        self.word().unpark_all();
    }

    fn lock_exclusive(&self) {
        while !self.try_lock_exclusive() {
            self.word().park();
        }
    }

    fn try_lock_exclusive(&self) -> bool {
        self.cell().compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_ok()
    }

    unsafe fn unlock_exclusive(&self) {
        self.cell().swap(0, Ordering::Release);
        self.word().unpark_all();
    }
}
