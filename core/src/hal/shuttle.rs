//! The shuttle model backend: core's [`Hal`] and [`Cpus`] over
//! [shuttle](https://docs.rs/shuttle)'s atomics, mutexes and condition variables, with per-CPU
//! interrupt lines, blocking IPIs, a run-time rule mutant, a spin budget, and the trace of each
//! execution ([`trace`]).
//!
//! Behind the `shuttle` feature. It is the backend the crate's own shuttle checker
//! (`mmusync-shuttle`) runs its scenarios on; a VMM uses it to test *its* side of the protocols
//! (its [`SecondaryMmu`](crate::notifier::SecondaryMmu), its fault path, its page-table walker)
//! under shuttle's randomized and PCT schedulers, with many threads and long runs. Enable it in
//! your dev-dependencies only:
//!
//! ```toml
//! [dev-dependencies]
//! mmusync = { version = "0.1", features = ["shuttle"] }
//! shuttle = "0.9.9"
//! ```
//!
//! ## Using it
//!
//! One [`ShuttleHal`] per execution, created inside the shuttle test closure. CPU `i` is the
//! shuttle thread that called [`set_current_cpu`]`(i)` (the test's main thread is CPU 0);
//! [`spawn_cpu`] spawns a thread that is that CPU. Up to [`MAX_CPUS`] CPUs.
//!
//! ```ignore
//! // (`ignore`: it needs the `shuttle` feature and a shuttle dev-dependency.)
//! use mmusync::hal::shuttle::{spawn_cpu, ShuttleHal};
//!
//! shuttle::check_random(|| {
//!     let hal = ShuttleHal::with_defaults(None); // or Some(rule) to break one rule
//!     let vm = std::sync::Arc::new(mmusync::notifier::Vm::<ShuttleHal, 2>::new(hal.clone()));
//!     let vcpu = spawn_cpu(1, { let vm = vm.clone(); move || { /* fault, install, use */ } });
//!     // CPU 0: the primary MMU: vm.invalidate_range_start(&mmu, range), free, drop.
//!     vcpu.join().unwrap();
//! }, 1000);
//! ```
//!
//! The `examples` crate's `tests/model_user_mmu.rs` is a complete test of a user-written
//! secondary MMU under this backend and under [`hal::loom`](crate::hal).
//!
//! ## What shuttle models, and what it cannot
//!
//! Shuttle runs every task on one OS thread and switches between them only at its own
//! operations (an atomic access, a lock, a yield). Every atomic access is `SeqCst` and every
//! fence is a no-op: the model is **sequentially consistent**. So [`Hal::barrier`] does
//! nothing here, and a dropped barrier changes nothing: shuttle cannot kill a barrier mutant,
//! nor find a missing barrier in your code (the loom backend, `hal::loom`, can). What shuttle explores is the *order of steps* of many
//! threads, which is where lock-order, balance, check and liveness bugs live.
//!
//! ## Locks block
//!
//! `lock_api` needs `const INIT`; shuttle's `Mutex` and `Condvar` have `const fn new`, so each
//! raw lock *is* a shuttle mutex over its state plus a condition variable, built in place. A
//! CPU waiting for a lock sleeps on the condition variable instead of spinning, so when every
//! task is waiting for another, shuttle's deadlock detector reports it, naming the blocked
//! tasks. The reader-writer lock behind `mmu_lock` is writer-fair, like Linux's queued rwlock
//! in process context: a waiting writer holds off new readers.
//!
//! ## Interrupts and IPIs
//!
//! Each CPU has an interrupt line: a shuttle mutex over its `irqs_off` flag and a condition
//! variable. `irq_save` sets the flag, `irq_restore` clears it and wakes waiters, and
//! [`Cpus::ipi_and_wait`] sleeps on each target's line until the flag is clear: the IPI is
//! taken at once by a CPU with interrupts on, and when interrupts come back on otherwise (the
//! loom HAL's semantics, documented there). Waiting sleeps, so a cycle through an IPI (a
//! sender holding a lock that the interrupts-off target waits for) is a deadlock shuttle
//! reports.
//!
//! ## Spin-waits and the spin budget
//!
//! Core's wait loops (SRCU's `synchronize`, the memslot swap's wait for active invalidations,
//! a translation-cache refresh) and the scenarios' retry loops call [`Hal::spin_hint`], which
//! yields to shuttle's scheduler. A cycle of spin-waits (each CPU waiting for another that
//! spins) never blocks, so the deadlock detector cannot see it. Each CPU therefore has a
//! budget of spin hints per execution; a CPU that exceeds it fails the execution with a
//! [`LIVENESS`] panic that names it. That is a bounded-steps check, not a proof: it says "no
//! progress within the budget", which for these scenarios (whose legitimate waits take a few
//! hundred spins at most; the runner reports the largest count seen in passing runs) means a
//! deadlock through spin-waits or a livelock.

//!
//! ## Limits
//!
//! * Sequential consistency: no weak-memory behaviour, so no barrier bug is ever found here.
//! * Random testing is not proof: "passed N random + N PCT executions" is evidence, not
//!   exhaustiveness; rare windows may survive. Fix the seeds (shuttle's
//!   `RandomScheduler::new_from_seed`, `PctScheduler::new_from_seed`) so a run is repeatable.
//! * Liveness is bounded: the spin budget and shuttle's `max_steps` report no progress within a
//!   bound, not non-termination.
//! * Shuttle switches tasks only at its own operations. Memory your code keeps outside shuttle
//!   (plain fields, `std` atomics: ghost state, your page table if it is not built from
//!   shuttle's or this backend's atomics) is never a scheduling point, so two accesses to it
//!   always run back to back; put a shuttle operation (an access to one of this HAL's atomics,
//!   or `shuttle::thread::yield_now`) where a switch must be possible.
//! * crossbeam-epoch (the `alloc` feature's epoch reclamation) runs on real atomics and is
//!   opaque to shuttle: a pin, an unpin or a collect is one indivisible step.
//!
pub mod trace;

pub use self::trace::Trace;
use crate::hal::{Atomic, AtomicInt, CpuId, CpuSet, Cpus, Hal, IrqState, Ordering};
use crate::{Barrier, FenceKind, Rule, Step};
use ::shuttle::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use ::shuttle::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use ::std::cell::Cell;
use ::std::sync::atomic::Ordering::Relaxed;
use ::std::sync::Arc;

/// The most CPUs (roles) a shuttle scenario may have.
pub const MAX_CPUS: usize = 16;

/// The prefix of every liveness-failure panic message (spin budget exceeded, bounded retries
/// broken).
pub const LIVENESS: &str = "liveness violated";

/// Fails the execution: the scenario made no progress that it must make. `detail` says what
/// was observed.
#[track_caller]
pub fn liveness_violated(detail: ::std::fmt::Arguments<'_>) -> ! {
    panic!("{LIVENESS}: {detail}")
}

::shuttle::thread_local! {
    static CPU: Cell<usize> = Cell::new(0);
}

/// Makes the calling shuttle task CPU `cpu` (what [`Cpus::current_cpu`] answers on it, and
/// whose interrupt line [`Cpus::irq_save`] uses). Call it first thing in each spawned task
/// ([`spawn_cpu`] does); the test's main task is CPU 0 until it says otherwise. No two tasks
/// running at once may be the same CPU.
///
/// # Panics
///
/// If `cpu` is not below [`MAX_CPUS`]: a test-harness error, reported at once rather than as an
/// out-of-bounds index inside the next interrupt call.
pub fn set_current_cpu(cpu: usize) {
    assert!(cpu < MAX_CPUS, "shuttle HAL: CPU {cpu} out of range (at most {MAX_CPUS} CPUs)");
    CPU.with(|c| c.set(cpu));
}

/// The calling shuttle task's CPU (the test's main task is CPU 0).
pub fn current_cpu() -> usize {
    CPU.with(|c| c.get())
}

/// Spawns a shuttle thread that runs `f` as CPU `cpu` ([`set_current_cpu`]). Call it inside a
/// shuttle test.
///
/// # Panics
///
/// As [`set_current_cpu`], inside the new thread (which fails the execution).
pub fn spawn_cpu<F, T>(cpu: usize, f: F) -> ::shuttle::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    ::shuttle::thread::spawn(move || {
        set_current_cpu(cpu);
        f()
    })
}

/// Locks a shuttle mutex, ignoring poisoning: a poisoned lock means another task already
/// failed the execution, and its panic is the one reported.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits on `cv`, ignoring poisoning (see [`lock`]).
fn wait<'a, T>(cv: &Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    cv.wait(g).unwrap_or_else(PoisonError::into_inner)
}

/// The shuttle HAL. One value per execution (it owns the execution's interrupt lines and
/// counters); clones share it.
#[derive(Clone)]
pub struct ShuttleHal {
    inner: Arc<Inner>,
}

struct Inner {
    mutant: Option<Rule>,
    lines: [IrqLine; MAX_CPUS],
    /// Spin hints per CPU in this execution. Ghost counters: plain std atomics, which shuttle
    /// does not schedule on (all tasks share one OS thread).
    spins: [::std::sync::atomic::AtomicU64; MAX_CPUS],
    spin_budget: u64,
    trace: Arc<Trace>,
    /// Test only: a private atomic that every named barrier also loads (see
    /// [`ShuttleHal::perturbed`]).
    perturbation: Option<AtomicU64>,
}

/// One CPU's interrupt line.
struct IrqLine {
    irqs_off: Mutex<bool>,
    enabled: Condvar,
}

impl ::core::fmt::Debug for ShuttleHal {
    /// The mutant and the spin budget; no shuttle state (reading it would schedule).
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("ShuttleHal")
            .field("mutant", &self.inner.mutant)
            .field("spin_budget", &self.inner.spin_budget)
            .finish_non_exhaustive()
    }
}

impl ShuttleHal {
    /// The spin budget of [`with_defaults`](Self::with_defaults): 5,000 spin hints per CPU per
    /// execution (the crate's own scenarios need at most a few hundred).
    pub const DEFAULT_SPIN_BUDGET: u64 = 5_000;

    /// A HAL for one execution that breaks `mutant` (or nothing), with the
    /// [default spin budget](Self::DEFAULT_SPIN_BUDGET) and a fresh [`Trace`]
    /// ([`trace`](Self::trace) gives it back).
    pub fn with_defaults(mutant: Option<Rule>) -> Self {
        Self::new(mutant, Self::DEFAULT_SPIN_BUDGET, Arc::new(Trace::new()))
    }

    /// The trace this execution records into.
    pub fn trace(&self) -> &Arc<Trace> {
        &self.inner.trace
    }

    /// A HAL for one execution that breaks `mutant` (or nothing), fails any CPU that makes more
    /// than `spin_budget` spin hints, and records interrupt, IPI and mutant events in `trace`.
    pub fn new(mutant: Option<Rule>, spin_budget: u64, trace: Arc<Trace>) -> Self {
        ShuttleHal {
            inner: Arc::new(Inner {
                mutant,
                lines: ::core::array::from_fn(|_| IrqLine {
                    irqs_off: Mutex::new(false),
                    enabled: Condvar::new(),
                }),
                spins: ::core::array::from_fn(|_| ::std::sync::atomic::AtomicU64::new(0)),
                spin_budget,
                trace,
                perturbation: None,
            }),
        }
    }

    /// [`new`](Self::new), except that every named barrier also does a relaxed load of a
    /// private atomic: one scheduling point more at each ordering point, and no other change.
    /// That is what a harmless refactoring (one more relaxed load in a zap path, say) does to
    /// the schedules shuttle explores; regression tests run under it to show that they keep
    /// finding their bug when a recorded schedule no longer fits the code.
    pub fn perturbed(mutant: Option<Rule>, spin_budget: u64, trace: Arc<Trace>) -> Self {
        let mut hal = Self::new(mutant, spin_budget, trace);
        if let Some(inner) = Arc::get_mut(&mut hal.inner) {
            inner.perturbation = Some(AtomicU64::new(0));
        }
        hal
    }

    /// The largest number of spin hints any CPU made in this execution so far.
    pub fn max_spins(&self) -> u64 {
        self.inner.spins.iter().map(|s| s.load(Relaxed)).max().unwrap_or(0)
    }

    /// The rule this execution breaks, if any.
    pub fn mutant(&self) -> Option<Rule> {
        self.inner.mutant
    }

    fn line(&self, cpu: usize) -> &IrqLine {
        &self.inner.lines[cpu]
    }
}

// SAFETY: shuttle's atomics are sequentially consistent, which is at least every C11 ordering;
// `fence` and `barrier` issue nothing because every access is already SeqCst (a SeqCst fence
// is a no-op in a sequentially consistent model, as shuttle's own `fence` is); `keeps` returns
// true unless this model backend was told to break that rule; the raw locks below are mutually
// exclusive, and shuttle's mutex orders everything (SC) across lock and unlock; `spin_hint`
// yields to shuttle's scheduler and returns (or fails the execution, which ends every CPU).
unsafe impl Hal for ShuttleHal {
    type AtomicU64 = ShuttleAtomicU64;
    type AtomicUsize = ShuttleAtomicUsize;
    type AtomicBool = ShuttleAtomicBool;
    type RawRwLock = ShuttleRawRwLock;
    type RawMutex = ShuttleRawMutex;

    fn fence(&self, kind: FenceKind) {
        // Sequential consistency: there is nothing to order.
        let _ = kind;
    }

    fn barrier(&self, b: Barrier) {
        // Sequential consistency: there is nothing to order, so dropping `b` would change
        // nothing either. Barrier mutants are loom's to kill.
        let _ = b;
        if let Some(extra) = &self.inner.perturbation {
            extra.load(::std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn keeps(&self, rule: Rule) -> bool {
        if self.inner.mutant == Some(rule) {
            self.inner.trace.push(current_cpu(), format_args!("MUTANT: rule {rule} broken here"));
            false
        } else {
            true
        }
    }

    fn step(&self, step: Step) {
        self.inner.trace.push_step(current_cpu(), step);
    }

    fn spin_hint(&self) {
        let cpu = current_cpu();
        let spins = self.inner.spins[cpu].fetch_add(1, Relaxed) + 1;
        if spins > self.inner.spin_budget {
            let role = self.inner.trace.role(cpu);
            liveness_violated(format_args!(
                "CPU {cpu} ({role}) made more than {} spin-waits in one execution: no progress (a deadlock \
                 through spin-waits, or a livelock)",
                self.inner.spin_budget
            ));
        }
        ::shuttle::thread::yield_now();
    }
}

// SAFETY: `current_cpu` is the role index the executor gave this task (unique per running
// role; the main task is CPU 0 only while no role runs); after `irq_save` the CPU's flag is set
// and `ipi_and_wait` does not return for it until `irq_restore` clears it; the ordering
// guarantees hold trivially because the model is sequentially consistent.
unsafe impl Cpus for ShuttleHal {
    fn current_cpu(&self) -> Option<CpuId> {
        match CpuId::new(current_cpu()) {
            Ok(id) => Some(id),
            Err(e) => panic!("shuttle HAL: {e}"),
        }
    }

    fn irq_save(&self) -> IrqState {
        let mut off = lock(&self.line(current_cpu()).irqs_off);
        let was_off = *off;
        *off = true;
        IrqState(!was_off)
    }

    unsafe fn irq_restore(&self, state: IrqState) {
        if state.0 {
            let line = self.line(current_cpu());
            *lock(&line.irqs_off) = false;
            line.enabled.notify_all();
        }
    }

    fn ipi_and_wait(&self, targets: CpuSet) {
        let me = current_cpu();
        for cpu in targets.iter().map(CpuId::index).filter(|&c| c != me) {
            let line = self.line(cpu);
            let mut off = lock(&line.irqs_off);
            if *off {
                self.inner.trace.push(me, format_args!("IPI to CPU {cpu}: interrupts off there, waiting"));
                while *off {
                    off = wait(&line.enabled, off);
                }
            }
            drop(off);
            self.inner.trace.push(me, format_args!("IPI taken by CPU {cpu}"));
        }
    }
}

macro_rules! shuttle_atomic {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $t:ty) => {
        $(#[$doc])*
        pub struct $name($inner);

        impl ::core::fmt::Debug for $name {
            /// The type name only: reading the value would be a shuttle operation.
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }

        impl Atomic<$t> for $name {
            fn new(v: $t) -> Self {
                $name(<$inner>::new(v))
            }
            fn load(&self, order: Ordering) -> $t {
                self.0.load(order)
            }
            fn store(&self, v: $t, order: Ordering) {
                self.0.store(v, order)
            }
            fn swap(&self, v: $t, order: Ordering) -> $t {
                self.0.swap(v, order)
            }
            fn compare_exchange(&self, current: $t, new: $t, success: Ordering, failure: Ordering) -> Result<$t, $t> {
                self.0.compare_exchange(current, new, success, failure)
            }
        }
    };
}

macro_rules! shuttle_atomic_int {
    ($(#[$doc:meta])* $name:ident, $inner:ty, $t:ty) => {
        shuttle_atomic!($(#[$doc])* $name, $inner, $t);

        impl AtomicInt<$t> for $name {
            fn fetch_add(&self, v: $t, order: Ordering) -> $t {
                self.0.fetch_add(v, order)
            }
            fn fetch_sub(&self, v: $t, order: Ordering) -> $t {
                self.0.fetch_sub(v, order)
            }
            fn fetch_or(&self, v: $t, order: Ordering) -> $t {
                self.0.fetch_or(v, order)
            }
            fn fetch_and(&self, v: $t, order: Ordering) -> $t {
                self.0.fetch_and(v, order)
            }
        }
    };
}

shuttle_atomic_int!(
    /// A shuttle `AtomicU64` behind core's [`AtomicInt`] (every access `SeqCst`).
    ShuttleAtomicU64, AtomicU64, u64
);
shuttle_atomic_int!(
    /// A shuttle `AtomicUsize` behind core's [`AtomicInt`] (every access `SeqCst`).
    ShuttleAtomicUsize, AtomicUsize, usize
);
shuttle_atomic!(
    /// A shuttle `AtomicBool` behind core's [`Atomic`] (every access `SeqCst`).
    ShuttleAtomicBool, AtomicBool, bool
);

/// A blocking mutex (`mn_invalidate_lock`, `slots_lock` and the other spinlocks): a shuttle
/// mutex over a "held" flag, and a condition variable that waiters sleep on.
pub struct ShuttleRawMutex {
    held: Mutex<bool>,
    released: Condvar,
}

impl ::core::fmt::Debug for ShuttleRawMutex {
    /// The type name only: reading the state would be a shuttle operation.
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("ShuttleRawMutex").finish_non_exhaustive()
    }
}

// SAFETY: mutual exclusion: `held` goes from false to true only under the shuttle mutex, and
// back only in `unlock`, which lock_api calls only for the holder; shuttle's mutex makes each
// step sequentially consistent, so everything before an unlock is visible after the next lock.
unsafe impl lock_api::RawMutex for ShuttleRawMutex {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = ShuttleRawMutex { held: Mutex::new(false), released: Condvar::new() };
    type GuardMarker = lock_api::GuardSend;

    fn lock(&self) {
        let mut held = lock(&self.held);
        while *held {
            held = wait(&self.released, held);
        }
        *held = true;
    }

    fn try_lock(&self) -> bool {
        let mut held = lock(&self.held);
        !::std::mem::replace(&mut *held, true)
    }

    unsafe fn unlock(&self) {
        *lock(&self.held) = false;
        self.released.notify_one();
    }
}

/// What a [`ShuttleRawRwLock`] protects.
struct RwState {
    readers: usize,
    writer: bool,
    writers_waiting: usize,
}

/// A blocking, writer-fair reader-writer lock (`mmu_lock`, a translation cache's `lock`).
pub struct ShuttleRawRwLock {
    state: Mutex<RwState>,
    changed: Condvar,
}

impl ::core::fmt::Debug for ShuttleRawRwLock {
    /// The type name only: reading the state would be a shuttle operation.
    fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        f.debug_struct("ShuttleRawRwLock").finish_non_exhaustive()
    }
}

// SAFETY: readers are admitted only while no writer holds the lock, and a writer only when
// there is neither a writer nor a reader, each under the shuttle mutex; unlocks are called by
// holders only (lock_api's contract); every step is sequentially consistent.
unsafe impl lock_api::RawRwLock for ShuttleRawRwLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = ShuttleRawRwLock {
        state: Mutex::new(RwState { readers: 0, writer: false, writers_waiting: 0 }),
        changed: Condvar::new(),
    };
    type GuardMarker = lock_api::GuardSend;

    fn lock_shared(&self) {
        let mut s = lock(&self.state);
        while s.writer || s.writers_waiting > 0 {
            s = wait(&self.changed, s);
        }
        s.readers += 1;
    }

    fn try_lock_shared(&self) -> bool {
        let mut s = lock(&self.state);
        let ok = !s.writer && s.writers_waiting == 0;
        if ok {
            s.readers += 1;
        }
        ok
    }

    unsafe fn unlock_shared(&self) {
        let mut s = lock(&self.state);
        s.readers -= 1;
        if s.readers == 0 {
            drop(s);
            self.changed.notify_all();
        }
    }

    fn lock_exclusive(&self) {
        let mut s = lock(&self.state);
        if s.writer || s.readers > 0 {
            s.writers_waiting += 1;
            while s.writer || s.readers > 0 {
                s = wait(&self.changed, s);
            }
            s.writers_waiting -= 1;
        }
        s.writer = true;
    }

    fn try_lock_exclusive(&self) -> bool {
        let mut s = lock(&self.state);
        let ok = !s.writer && s.readers == 0;
        if ok {
            s.writer = true;
        }
        ok
    }

    unsafe fn unlock_exclusive(&self) {
        lock(&self.state).writer = false;
        self.changed.notify_all();
    }
}
