//! The real-thread executor: one OS thread per CPU role, each registered as a CPU of the `std`
//! backend.
//!
//! A [`ThreadExec`] owns a pool of `n` threads. Thread `i` registers with
//! [`StdHal::register_cpu`] only after thread `i - 1` has, so the pool's threads are CPUs
//! `0..n` (the slots are process-wide: creation fails with [`ExecError::WrongCpu`] if another
//! thread of the process already holds one of them). [`Executor::run`] hands role `i` to thread
//! `i`, so role `i` runs as CPU `i`, as the scenarios expect.
//!
//! The threads live as long as the executor, so a stress loop pays no thread creation per
//! iteration, and they start each run together: the caller publishes the jobs, then one
//! generation counter that every idle thread spins on (for a short while, then it parks).
//!
//! [`ThreadExec::on_cpu0`] runs a closure on thread 0 itself. A scenario driven from there does
//! its setup and final checks on CPU 0 and runs its role 0 inline, exactly as the loom executor
//! runs role 0 on the model's main thread, which is CPU 0.
//!
//! ## Failures
//!
//! A role that panics is caught on its thread; the run waits for every other role and then
//! resumes the panic on the caller (an invariant violation, whose message starts with
//! [`mmusync_models::exec::VIOLATION`], is preferred when several roles panic). A role that
//! never finishes (a mutant can make a role wait forever for one that died) is a hang: after
//! the hang timeout, [`Executor::run`] panics and the pool refuses further runs;
//! [`ThreadExec::run_scoped`], whose roles borrow the caller's stack, aborts the process
//! instead, since returning would leave a thread using borrowed memory.
//!
//! ## Traces
//!
//! With tracing on ([`ThreadExec::set_tracing`]), [`Executor::step`] records each step with its
//! CPU, role and time, for the counterexample of a failing iteration. Tracing perturbs the
//! timing it reports (a lock and a `format!` per step), so stress runs leave it off unless
//! asked.

use mmusync::hal::std::{CpuError, StdHal};
use mmusync_models::exec::VIOLATION;
use mmusync_models::{Executor, Role};
use std::any::Any;
use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

/// The most roles (threads) a pool can have.
pub const MAX_CPUS: usize = 16;

/// A job for one thread.
type Job = Box<dyn FnOnce() + Send + 'static>;

/// A panic payload.
pub type Panic = Box<dyn Any + Send + 'static>;

/// Why a pool could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecError {
    /// `0` or more than [`MAX_CPUS`] threads asked for.
    BadSize(usize),
    /// A thread could not register as a CPU.
    Register(CpuError),
    /// Thread `role` registered as another CPU than `role`: some other thread of this process
    /// holds a lower CPU slot.
    WrongCpu {
        /// The role (and the CPU it should have been).
        role: usize,
        /// The CPU it got.
        got: usize,
    },
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::BadSize(n) => write!(f, "a pool needs 1..={MAX_CPUS} threads, not {n}"),
            ExecError::Register(e) => write!(f, "a pool thread could not register as a CPU: {e:?}"),
            ExecError::WrongCpu { role, got } => write!(
                f,
                "pool thread {role} registered as CPU {got}: another thread of this process holds a lower CPU slot"
            ),
        }
    }
}

impl std::error::Error for ExecError {}

/// One recorded step.
#[derive(Clone, Debug)]
pub struct TraceEvent {
    /// Time since the pool started.
    pub at: Duration,
    /// The CPU that recorded it (`None`: a thread outside the pool).
    pub cpu: Option<usize>,
    /// The role's name (`"setup"` outside a role).
    pub role: &'static str,
    /// The step.
    pub what: String,
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.at.as_secs_f64() * 1e6;
        match self.cpu {
            Some(cpu) => write!(f, "[{us:>14.3} us] cpu{cpu} {:<16} {}", self.role, self.what),
            None => write!(f, "[{us:>14.3} us] main {:<16} {}", self.role, self.what),
        }
    }
}

/// One pool thread's mailbox.
struct Slot {
    job: Mutex<Option<(&'static str, Job)>>,
    /// The role running now (for traces).
    role: Mutex<&'static str>,
    /// The last generation this thread finished.
    done: AtomicU64,
    panic: Mutex<Option<Panic>>,
    parked: AtomicBool,
    thread: Mutex<Option<Thread>>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            job: Mutex::new(None),
            role: Mutex::new("idle"),
            done: AtomicU64::new(0),
            panic: Mutex::new(None),
            parked: AtomicBool::new(false),
            thread: Mutex::new(None),
        }
    }
}

/// Locks `m`, ignoring poisoning: every critical section here is a plain move of a value.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Pool {
    id: usize,
    slots: Box<[Slot]>,
    generation: AtomicU64,
    shutdown: AtomicBool,
    /// Set by a hang: no further runs.
    poisoned: AtomicBool,
    /// Serializes runs started from outside the pool.
    dispatch: Mutex<()>,
    /// Set while a pool thread runs a nested run (from inside a job).
    nested: AtomicBool,
    tracing: AtomicBool,
    trace: Mutex<Vec<TraceEvent>>,
    start: Instant,
    hang_timeout_ms: AtomicU64,
}

/// Joins the threads when the last [`ThreadExec`] clone drops.
struct Owner {
    pool: Arc<Pool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.pool.shutdown.store(true, SeqCst);
        for slot in self.pool.slots.iter() {
            if let Some(t) = lock(&slot.thread).as_ref() {
                t.unpark();
            }
        }
        if self.pool.poisoned.load(SeqCst) {
            // A hung thread never returns; leave it (and the process exit) to clean up.
            return;
        }
        let me = thread::current().id();
        for t in self.threads.drain(..) {
            if t.thread().id() != me {
                // A panic inside a role was caught on the thread; the loop itself does not panic.
                let _ = t.join();
            }
        }
    }
}

static POOL_IDS: AtomicUsize = AtomicUsize::new(1);

std::thread_local! {
    /// `(pool id, index)` of a pool thread; `(0, 0)` elsewhere.
    static WORKER: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// Waits with a growing back-off: spin, then yield, then sleep.
struct Backoff {
    start: Instant,
    spins: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff { start: Instant::now(), spins: 0 }
    }

    /// One wait step; `spin_for` is how long to spin before yielding.
    fn snooze(&mut self, spin_for: Duration) {
        self.spins = self.spins.wrapping_add(1);
        // Reading the clock is not free: look at it every 64 spins.
        if self.spins % 64 != 0 {
            std::hint::spin_loop();
            return;
        }
        let waited = self.start.elapsed();
        if waited < spin_for {
            std::hint::spin_loop();
        } else if waited < spin_for + Duration::from_millis(2) {
            thread::yield_now();
        } else {
            thread::sleep(Duration::from_micros(100));
        }
    }

    fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

/// What a run does when a role does not finish within the hang timeout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnHang {
    /// Poison the pool and panic (roles own what they use).
    Panic,
    /// Abort the process (roles borrow the caller's memory).
    Abort,
    /// Wait for ever (a driver, whose own runs time out instead).
    Wait,
}

/// A role whose body may borrow from the caller (see [`ThreadExec::run_scoped`]).
pub struct ScopedRole<'a> {
    name: &'static str,
    body: Box<dyn FnOnce() + Send + 'a>,
}

impl<'a> ScopedRole<'a> {
    /// A role named `name` running `body`.
    pub fn new(name: &'static str, body: impl FnOnce() + Send + 'a) -> Self {
        ScopedRole { name, body: Box::new(body) }
    }
}

/// Runs scenario roles on real threads, role `i` as CPU `i` (see the [module docs](self)).
#[derive(Clone)]
pub struct ThreadExec {
    pool: Arc<Pool>,
    _owner: Arc<Owner>,
}

impl fmt::Debug for ThreadExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadExec").field("cpus", &self.cpus()).finish()
    }
}

impl ThreadExec {
    /// A pool of `cpus` threads, registered as CPUs `0..cpus`.
    pub fn new(cpus: usize) -> Result<Self, ExecError> {
        if cpus == 0 || cpus > MAX_CPUS {
            return Err(ExecError::BadSize(cpus));
        }
        let pool = Arc::new(Pool {
            id: POOL_IDS.fetch_add(1, SeqCst),
            slots: (0..cpus).map(|_| Slot::new()).collect(),
            generation: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            dispatch: Mutex::new(()),
            nested: AtomicBool::new(false),
            tracing: AtomicBool::new(false),
            trace: Mutex::new(Vec::new()),
            start: Instant::now(),
            hang_timeout_ms: AtomicU64::new(60_000),
        });
        let mut threads = Vec::with_capacity(cpus);
        let mut failed = None;
        for i in 0..cpus {
            let (tx, rx) = mpsc::channel();
            let p = pool.clone();
            let t = thread::Builder::new()
                .name(format!("hw-cpu{i}"))
                .spawn(move || worker(p, i, tx))
                .expect("spawning a pool thread");
            threads.push(t);
            // Registration in order: the next thread starts only after this one registered.
            match rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => {
                    failed = Some(ExecError::Register(CpuError::NoFreeSlot));
                    break;
                }
            }
        }
        let owner = Arc::new(Owner { pool: pool.clone(), threads });
        match failed {
            // Dropping the owner stops and joins the threads that did start.
            Some(e) => Err(e),
            None => Ok(ThreadExec { pool, _owner: owner }),
        }
    }

    /// How many CPUs (threads) the pool has.
    pub fn cpus(&self) -> usize {
        self.pool.slots.len()
    }

    /// How long a run waits for its roles before it calls them hung (default 60 s).
    pub fn set_hang_timeout(&self, t: Duration) {
        self.pool.hang_timeout_ms.store(t.as_millis().max(1) as u64, SeqCst);
    }

    /// Turns step tracing on or off.
    pub fn set_tracing(&self, on: bool) {
        self.pool.tracing.store(on, SeqCst);
    }

    /// Forgets the steps recorded so far.
    pub fn clear_trace(&self) {
        lock(&self.pool.trace).clear();
    }

    /// The steps recorded since the last [`clear_trace`](Self::clear_trace), in time order.
    pub fn take_trace(&self) -> Vec<TraceEvent> {
        let mut t = std::mem::take(&mut *lock(&self.pool.trace));
        t.sort_by_key(|e| e.at);
        t
    }

    /// This thread's index in this pool, if it is one of the pool's threads.
    fn my_index(&self) -> Option<usize> {
        let (pool, index) = WORKER.with(Cell::get);
        (pool == self.pool.id).then_some(index)
    }

    /// Runs `f` on thread 0 (CPU 0) and returns its result. A scenario run from there does its
    /// setup on CPU 0 and runs its role 0 inline. Resumes `f`'s panic, if any.
    ///
    /// The driver may run as long as it likes (no hang timeout applies to it; the runs it
    /// starts have their own).
    pub fn on_cpu0<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let mut out = None;
        let slot = &mut out;
        self.scoped(vec![ScopedRole::new("driver", move || *slot = Some(f()))], OnHang::Wait);
        match out {
            Some(r) => r,
            None => unreachable!("run_scoped returned without running the driver or resuming its panic"),
        }
    }

    /// Like [`Executor::run`], but the roles may borrow from the caller: the call returns only
    /// after every role has finished (a hang aborts the process), so the borrows outlive every
    /// use. Resumes a role's panic after all roles have finished.
    pub fn run_scoped<'a>(&self, roles: Vec<ScopedRole<'a>>) {
        self.scoped(roles, OnHang::Abort)
    }

    fn scoped<'a>(&self, roles: Vec<ScopedRole<'a>>, on_hang: OnHang) {
        debug_assert!(on_hang != OnHang::Panic, "a scoped run must not return while a role runs");
        let jobs = roles
            .into_iter()
            .map(|r| {
                // SAFETY: only the lifetime changes (same trait object, same layout). The box is
                // run and dropped by a pool thread inside `dispatch`, which does not return
                // before every job it handed out has been consumed (the thread reports `done`
                // after the job and everything it captured is dropped, panics included), and
                // which aborts the process (or waits for ever) instead of returning when a job
                // does not finish. So
                // nothing the job borrows for `'a` is used after `'a` ends.
                let body = unsafe {
                    std::mem::transmute::<Box<dyn FnOnce() + Send + 'a>, Box<dyn FnOnce() + Send + 'static>>(
                        r.body,
                    )
                };
                Some((r.name, body))
            })
            .collect();
        if let Err(p) = self.dispatch(jobs, on_hang) {
            panic::resume_unwind(p);
        }
    }

    /// Hands job `i` to thread `i` (the caller's own job runs inline when the caller is a pool
    /// thread), starts them together and waits for all. Returns the preferred panic, if any.
    fn dispatch(&self, mut jobs: Vec<Option<(&'static str, Job)>>, on_hang: OnHang) -> Result<(), Panic> {
        let pool = &*self.pool;
        assert!(
            jobs.len() <= pool.slots.len(),
            "{} roles for a pool of {} CPUs",
            jobs.len(),
            pool.slots.len()
        );
        let me = self.my_index();
        // From outside the pool: one run at a time. From inside (a job that runs a scenario):
        // the outer run is waiting for us, so only another nested run can conflict.
        let _outer = match me {
            None => Some(lock(&pool.dispatch)),
            Some(_) => {
                assert!(!pool.nested.swap(true, SeqCst), "two pool threads started runs at once");
                None
            }
        };
        assert!(!pool.poisoned.load(SeqCst), "this pool hung in an earlier run; start a new one");
        let inline = me.and_then(|i| jobs.get_mut(i).and_then(Option::take));
        let generation = pool.generation.load(SeqCst) + 1;
        for (i, job) in jobs.into_iter().enumerate() {
            if let Some(job) = job {
                *lock(&pool.slots[i].job) = Some(job);
            }
        }
        pool.generation.store(generation, SeqCst);
        for slot in pool.slots.iter() {
            if slot.parked.load(SeqCst) {
                if let Some(t) = lock(&slot.thread).as_ref() {
                    t.unpark();
                }
            }
        }
        let mut panics: Vec<Panic> = Vec::new();
        if let (Some(i), Some((name, job))) = (me, inline) {
            let outer_role = std::mem::replace(&mut *lock(&pool.slots[i].role), name);
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(job)) {
                panics.push(p);
            }
            *lock(&pool.slots[i].role) = outer_role;
        }
        let timeout = Duration::from_millis(pool.hang_timeout_ms.load(SeqCst));
        for (i, slot) in pool.slots.iter().enumerate() {
            if Some(i) == me {
                continue;
            }
            let mut backoff = Backoff::new();
            while slot.done.load(SeqCst) < generation {
                if on_hang != OnHang::Wait && backoff.elapsed() > timeout {
                    let role = *lock(&slot.role);
                    let msg = format!("role {role:?} on CPU {i} did not finish within {timeout:?}: hang");
                    match on_hang {
                        OnHang::Abort => {
                            eprintln!("mmusync-hw: {msg}; its role borrows the caller's memory, aborting");
                            std::process::abort();
                        }
                        OnHang::Panic | OnHang::Wait => {
                            pool.poisoned.store(true, SeqCst);
                            panic!("{msg}");
                        }
                    }
                }
                backoff.snooze(Duration::from_micros(10));
            }
            if let Some(p) = lock(&slot.panic).take() {
                panics.push(p);
            }
        }
        if me.is_some() {
            pool.nested.store(false, SeqCst);
        }
        // Prefer an invariant violation: it is the scenario's verdict; other panics may be
        // consequences of it (a role that gave up waiting).
        match panics.iter().position(|p| panic_message(p.as_ref()).starts_with(VIOLATION)) {
            Some(i) => Err(panics.swap_remove(i)),
            None => panics.into_iter().next().map_or(Ok(()), Err),
        }
    }
}

/// The body of pool thread `index`.
fn worker(pool: Arc<Pool>, index: usize, ready: mpsc::Sender<Result<(), ExecError>>) {
    let reg = match StdHal::register_cpu() {
        Ok(reg) if reg.cpu().index() == index => reg,
        Ok(reg) => {
            let _ = ready.send(Err(ExecError::WrongCpu { role: index, got: reg.cpu().index() }));
            return;
        }
        Err(e) => {
            let _ = ready.send(Err(ExecError::Register(e)));
            return;
        }
    };
    WORKER.with(|w| w.set((pool.id, index)));
    let slot = &pool.slots[index];
    *lock(&slot.thread) = Some(thread::current());
    let _ = ready.send(Ok(()));
    let mut seen = 0;
    loop {
        let backoff = Backoff::new();
        loop {
            if pool.shutdown.load(SeqCst) {
                drop(reg);
                return;
            }
            if pool.generation.load(SeqCst) != seen {
                break;
            }
            if backoff.elapsed() < Duration::from_micros(50) {
                std::hint::spin_loop();
                continue;
            }
            slot.parked.store(true, SeqCst);
            if pool.generation.load(SeqCst) == seen && !pool.shutdown.load(SeqCst) {
                thread::park_timeout(Duration::from_millis(1));
            }
            slot.parked.store(false, SeqCst);
        }
        seen = pool.generation.load(SeqCst);
        let job = lock(&slot.job).take();
        if let Some((name, job)) = job {
            *lock(&slot.role) = name;
            if let Err(p) = panic::catch_unwind(AssertUnwindSafe(job)) {
                *lock(&slot.panic) = Some(p);
            }
            *lock(&slot.role) = "idle";
        }
        slot.done.store(seen, SeqCst);
    }
}

impl Executor for ThreadExec {
    const MAX_ROLES: usize = MAX_CPUS;

    fn run(&self, roles: Vec<Role>) {
        let jobs = roles.into_iter().map(|r| Some((r.name, r.body))).collect();
        // Core steps recorded from here to the end carry their CPU (crate::steps).
        crate::steps::set_roles(true);
        let run = self.dispatch(jobs, OnHang::Panic);
        crate::steps::set_roles(false);
        if let Err(p) = run {
            panic::resume_unwind(p);
        }
    }

    fn step(&self, what: fmt::Arguments<'_>) {
        if !self.pool.tracing.load(SeqCst) {
            return;
        }
        let at = self.pool.start.elapsed();
        let cpu = self.my_index();
        let role = cpu.map_or("setup", |i| *lock(&self.pool.slots[i].role));
        lock(&self.pool.trace).push(TraceEvent { at, cpu, role, what: what.to_string() });
    }

    fn yield_now(&self) {
        thread::yield_now()
    }
}

/// The message of a panic payload (`&str` or `String`; anything else reads as `"<non-string
/// panic>"`).
pub fn panic_message(p: &(dyn Any + Send)) -> &str {
    if let Some(s) = p.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = p.downcast_ref::<String>() {
        s
    } else {
        "<non-string panic>"
    }
}

/// Whether a panic payload is an invariant violation (its message starts with
/// [`VIOLATION`]).
pub fn is_violation(p: &(dyn Any + Send)) -> bool {
    panic_message(p).starts_with(VIOLATION)
}
