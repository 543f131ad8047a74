//! The HAL conformance suite: one set of checks of the [`Hal`], [`Cpus`] and [`PageAlloc`]
//! contracts, written once and run against every backend.
//!
//! core's protocols are only as sound as the backend under them: with a fence weaker than its
//! kind, a lock that does not exclude, an `irq_restore` that leaves interrupts off or an
//! `ipi_and_wait` that returns before the target took the IPI, a proof about the protocols says
//! nothing about the code that runs. The scenarios ([`crate::SCENARIOS`]) exercise the
//! backends only through the protocols; this suite checks each clause of the written contracts
//! (`core/src/hal/mod.rs`) directly, with litmus-sized programs, so a backend that breaks one
//! fails a check that names the clause.
//!
//! ## The checks
//!
//! [`Check::ALL`] lists them; each is a small scenario-like body, generic over the HAL and the
//! [`Executor`], that runs its roles (role `i` as CPU `i`) and panics through
//! [`contract_broken`] (a message starting with [`VIOLATION`]) when it observes an outcome the
//! contract forbids. Some checks have several *cases* ([`Check::cases`]): one per fence pair,
//! one per named [`Barrier`]. Runners iterate over every check and every case, so a check added
//! to the list runs on every backend.
//!
//! * orderings: message passing through each pair of fences, store buffering through `Mb`,
//!   and each named barrier through the litmus shape of its kind (so a barrier that issues no
//!   fence, or a weaker one, is caught where the memory model can show it);
//! * the raw locks (through core's [`SpinLock`] and [`MmuLock`]): mutual exclusion, readers
//!   sharing the read side, and unlock→lock carrying data;
//! * interrupts: save/restore brackets nest and restore the previous state, per CPU, and
//!   `current_cpu` stays put;
//! * IPIs: `ipi_and_wait` returns (at once for the caller itself and the empty set, after the
//!   IPI for a CPU with interrupts on), does not return while the target has interrupts off,
//!   and orders the target's interrupts-off section against the sender's accesses in both
//!   directions;
//! * page allocation: `alloc` hands back the value it was given, in distinct pages; after
//!   `free`, a backend that promises [`Poisoning`] shows poison;
//! * the model hooks: `keeps` answers `true` for every [`Rule`] on an unmutated backend.
//!
//! ## Outcomes, not probabilities
//!
//! Every check asserts only that a *forbidden* outcome never appears; none asserts that an
//! allowed-but-rare outcome shows up. So on a correct backend every check passes whatever the
//! schedule, on every executor: exhaustively under loom, for the sampled schedules under
//! shuttle, and for the sampled rounds on real threads. What each executor can *show* differs:
//! loom explores every interleaving under C11's weak memory (a missing fence is found); shuttle
//! is sequentially consistent (the ordering checks cannot fail there, the lock, interrupt and
//! IPI checks can); real threads sample the hardware's behaviour (x86 is TSO: only store
//! buffering can show a missing full barrier). [`Caps::rounds`] is how many times a check
//! repeats its body inside one run: 1 for the model checkers (which explore schedules instead),
//! many on real threads (which sample). A round-start rendezvous on plain `core` atomics lines
//! the roles up on real threads; with one round there is none, so model checkers see only the
//! check's own accesses. A role that fails makes the roles waiting for it give up (with a
//! panic that is not a [`VIOLATION`]), so a real-thread run reports the failure, not a hang.

use crate::exec::{Executor, Role, VIOLATION};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool as GhostBool, AtomicUsize as GhostUsize, Ordering as GhostOrdering};
use mmusync::hal::{Atomic, CpuId, CpuSet, Cpus, Hal, IrqState, Ordering::*, PageAlloc};
use mmusync::lock::{MmuLock, SpinLock};
use mmusync::mmu::Table;
use mmusync::{Barrier, FenceKind, Rule};

/// Entries of a [`Page`].
pub const PAGE_ENTRIES: usize = 4;

/// The page type the allocation checks allocate: a small table page of the backend's atomics
/// (what core's page tables allocate, and what poisoning allocators know how to poison).
pub type Page<H> = Table<H, PAGE_ENTRIES>;

/// What the suite needs of an allocator: [`PageAlloc`] of [`Page`]s, shareable with roles.
pub trait SuiteAlloc<H: Hal>: PageAlloc<Page<H>> + Clone + Send + Sync + 'static {}

impl<H: Hal, A: PageAlloc<Page<H>> + Clone + Send + Sync + 'static> SuiteAlloc<H> for A {}

/// A promise about an allocator: freed pages stay allocated and readable for as long as the
/// allocator lives (a quarantine), and `free` overwrites every entry with [`word`](Self::word).
///
/// The allocation check reads a page after freeing it only when given this promise, so a
/// backend that does not poison is not pretended to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Poisoning {
    word: u64,
}

impl Poisoning {
    /// The promise that freed pages hold `word` in every entry and stay readable.
    ///
    /// # Safety
    ///
    /// Every page the allocator frees must stay allocated (reading it is defined) until the
    /// allocator and all its clones are dropped. The check reads freed pages relying on this.
    pub const unsafe fn new(word: u64) -> Self {
        Poisoning { word }
    }

    /// What every entry of a freed page holds.
    pub const fn word(self) -> u64 {
        self.word
    }
}

/// What a backend can show, as the runner tells the suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caps {
    /// Repetitions of each check's body in one run (at least 1): 1 under a model checker,
    /// many on real threads.
    pub rounds: usize,
    /// Whether (and how) the allocator poisons freed pages; `None`: the poison check is
    /// skipped.
    pub poisoning: Option<Poisoning>,
}

impl Caps {
    /// One round, no poisoning: what the model checkers run.
    pub const MODEL: Caps = Caps { rounds: 1, poisoning: None };
}

/// A backend under test: its HAL, the executor that runs roles on its CPUs, its page
/// allocator, and what it can show.
#[derive(Clone, Debug)]
pub struct Subject<H, X, A> {
    /// The HAL.
    pub hal: H,
    /// The executor (role `i` is CPU `i`).
    pub exec: X,
    /// The page allocator.
    pub alloc: A,
    /// What the backend can show.
    pub caps: Caps,
}

/// Fails a check: `what` (a clause of the contract) does not hold; `detail` says what was
/// observed. The message starts with [`VIOLATION`], so executors classify it as the check's
/// verdict.
#[track_caller]
pub fn contract_broken(what: &str, detail: fmt::Arguments<'_>) -> ! {
    panic!("{VIOLATION}: HAL contract broken: {what}: {detail}")
}

macro_rules! checks {
    ($(
        $(#[doc = $doc:literal])*
        $variant:ident => $name:literal, cases: $cases:expr, run: $body:path;
    )*) => {
        /// One check of the suite. [`Check::ALL`] lists every one; runners iterate over it.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Check {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl Check {
            /// Every check, in the order runners report them.
            pub const ALL: &'static [Check] = &[$(Check::$variant),*];

            /// The check's name, as runners print it.
            pub const fn name(self) -> &'static str {
                match self { $(Check::$variant => $name,)* }
            }

            /// How many cases the check has (each runs separately: one per fence pair, one
            /// per barrier, or just one).
            pub fn cases(self) -> usize {
                match self { $(Check::$variant => $cases,)* }
            }

            /// Runs case `case` (`< self.cases()`) of the check once against `s`: its roles,
            /// its rounds, its final assertions. Panics through [`contract_broken`] when the
            /// backend breaks the clause checked.
            pub fn run<H: Cpus, X: Executor, A: SuiteAlloc<H>>(self, case: usize, s: &Subject<H, X, A>) {
                assert!(case < self.cases(), "{}: no case {case}", self.name());
                match self { $(Check::$variant => $body(case, s),)* }
            }
        }
    };
}

checks! {
    /// Message passing: data, fence, flag on CPU 0; flag, fence, data on CPU 1. Seeing the
    /// flag means seeing the data. One case per writer/reader fence pair of [`MP_FENCES`].
    MessagePassing => "message-passing", cases: MP_FENCES.len(), run: message_passing;
    /// Store buffering with `Mb` on both sides: the two CPUs never both read 0.
    StoreBuffering => "store-buffering-mb", cases: 1, run: store_buffering;
    /// Each named barrier, in the litmus shape of its kind (message passing with the barrier on
    /// its side for `Wmb`/`Release`/`Rmb`/`Acquire`, store buffering for `Mb`): `barrier(b)`
    /// issues a fence at least as strong as `b.kind()`. One case per [`Barrier::ALL`].
    BarrierFences => "barrier-issues-its-fence", cases: Barrier::ALL.len(), run: barrier_fences;
    /// The raw mutex (through core's [`SpinLock`]) excludes: two CPUs increment a counter
    /// with a plain load and store under it, and no increment is lost; no CPU finds the other
    /// inside.
    MutexExcludes => "mutex-excludes", cases: 1, run: mutex_excludes;
    /// The raw mutex's unlock releases and its lock acquires: what one critical section wrote
    /// is visible to the next.
    MutexCarriesData => "mutex-unlock-lock-carries-data", cases: 1, run: mutex_carries_data;
    /// The reader-writer lock's write side (through core's [`MmuLock`]) excludes writers.
    RwLockWritersExclude => "rwlock-writers-exclude", cases: 1, run: rwlock_writers_exclude;
    /// The read side is shared: two CPUs hold it at the same time (each waits, holding it, for
    /// the other to come in).
    RwLockReadersShare => "rwlock-readers-share", cases: 1, run: rwlock_readers_share;
    /// A writer's critical section is atomic for readers and carries its data to them: a
    /// reader sees both of its stores or neither.
    RwLockWriterToReader => "rwlock-writer-to-reader", cases: 1, run: rwlock_writer_to_reader;
    /// `irq_save` returns the previous state; nested brackets restore correctly; interrupts
    /// are on again after the outermost restore; `current_cpu` names the role's CPU
    /// throughout. Two CPUs at once: interrupt state is per CPU.
    IrqNesting => "irq-save-restore-nests", cases: 1, run: irq_nesting;
    /// An IPI to a CPU with interrupts off is held until it restores them: `ipi_and_wait`
    /// does not return before, and what the target wrote before restoring is visible after.
    IpiWaitsForIrqsOn => "ipi-waits-for-irqs-on", cases: 1, run: ipi_waits_for_irqs_on;
    /// The IPI orders an interrupts-off section both ways (store buffering through the IPI):
    /// either the section sees what the sender wrote before the call, or the sender sees, after
    /// the call, what the section wrote.
    IpiOrdersIrqsOffSection => "ipi-orders-irqs-off-section", cases: 1, run: ipi_orders_section;
    /// `ipi_and_wait` returns: at once for the caller itself and for the empty set, and after
    /// the IPI is taken for a CPU with interrupts on (two CPUs interrupting each other at once).
    IpiReturns => "ipi-returns", cases: 1, run: ipi_returns;
    /// `alloc` returns an aligned page holding the value it was given (or gives the value back);
    /// after `free`, a poisoning backend's page holds its poison.
    PageAllocHoldsValue => "page-alloc-holds-value", cases: 1, run: page_alloc_holds_value;
    /// Pages allocated by two CPUs at once, all live together, are distinct and keep what each
    /// CPU put in them.
    PageAllocDistinct => "page-alloc-distinct-pages", cases: 1, run: page_alloc_distinct;
    /// `keeps` answers `true` for every rule (an unmutated backend breaks none).
    KeepsEveryRule => "keeps-every-rule", cases: 1, run: keeps_every_rule;
}

impl Check {
    /// The name of case `case`: the fence pair, the barrier, or the check's name.
    pub fn case_name(self, case: usize) -> String {
        match self {
            Check::MessagePassing => match MP_FENCES.get(case) {
                Some((w, r)) => format!("{}: {} / {}", self.name(), w.kernel_name(), r.kernel_name()),
                None => format!("{}: case {case}", self.name()),
            },
            Check::BarrierFences => match Barrier::ALL.get(case) {
                Some(b) => format!("{}: {} ({})", self.name(), b.name(), b.kind().kernel_name()),
                None => format!("{}: case {case}", self.name()),
            },
            _ => String::from(self.name()),
        }
    }

    /// The check called `name`.
    pub fn by_name(name: &str) -> Option<Check> {
        Check::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// Whether a sequentially consistent executor can fail this check (only the orderings
    /// cannot: every access is already `SeqCst` there).
    pub const fn needs_weak_memory(self) -> bool {
        matches!(self, Check::MessagePassing | Check::StoreBuffering | Check::BarrierFences)
    }
}

/// The fence pairs of [`Check::MessagePassing`]: (writer's fence, reader's fence). Each writer
/// fence is at least a release fence and each reader fence at least an acquire fence.
pub const MP_FENCES: &[(FenceKind, FenceKind)] = &[
    (FenceKind::Wmb, FenceKind::Rmb),
    (FenceKind::Release, FenceKind::Acquire),
    (FenceKind::Wmb, FenceKind::Acquire),
    (FenceKind::Release, FenceKind::Rmb),
    (FenceKind::Mb, FenceKind::Mb),
];

// ---------------------------------------------------------------------------------------------
// Helpers

/// `n` fresh atomics holding 0.
fn cells<H: Hal>(n: usize) -> Vec<H::AtomicU64> {
    (0..n).map(|_| H::AtomicU64::new(0)).collect()
}

/// What the roles of one check share besides the check's own cells: a round-start rendezvous
/// and a "some role failed" flag. Ghost state (`core` atomics, `SeqCst`), touched only before a
/// round's accesses or inside wait loops, never between two accesses whose order a check tests.
///
/// * The rendezvous lines the roles up at the start of each round on real threads. With one
///   round it does nothing at all, so a model checker sees only the check's own accesses.
/// * A role that fails (panics) marks the team failed as it unwinds; a role waiting for it (at
///   the rendezvous or in [`Team::wait_until`]) then gives up with a panic that is *not* a
///   [`VIOLATION`], instead of waiting for ever. On real threads that keeps the failing
///   role's message, which the executor prefers, from being replaced by a hang.
struct Team {
    arrived: GhostUsize,
    roles: usize,
    rendezvous: bool,
    failed: GhostBool,
}

impl Team {
    /// A team of `roles` roles that run `rounds` rounds.
    fn new(roles: usize, rounds: usize) -> Arc<Self> {
        Arc::new(Team {
            arrived: GhostUsize::new(0),
            roles,
            rendezvous: rounds > 1,
            failed: GhostBool::new(false),
        })
    }

    /// A role of this team: `body`, marking the team failed if it unwinds.
    fn role(self: &Arc<Self>, name: &'static str, body: impl FnOnce() + Send + 'static) -> Role {
        /// Marks the team failed when dropped while armed (that is, while unwinding).
        struct Member(Arc<Team>, bool);
        impl Drop for Member {
            fn drop(&mut self) {
                if self.1 {
                    self.0.failed.store(true, GhostOrdering::SeqCst);
                }
            }
        }
        let team = self.clone();
        Role::new(name, move || {
            let mut member = Member(team, true);
            body();
            member.1 = false;
        })
    }

    fn give_up(&self) -> ! {
        panic!("conformance: another role of this check failed; this one gives up waiting")
    }

    /// Waits until every role has reached round `round` (real threads only).
    fn start<X: Executor>(&self, round: usize, exec: &X) {
        if !self.rendezvous {
            return;
        }
        self.arrived.fetch_add(1, GhostOrdering::SeqCst);
        let target = self.roles * (round + 1);
        let mut spins = 0u32;
        while self.arrived.load(GhostOrdering::SeqCst) < target {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 {
                if self.failed.load(GhostOrdering::SeqCst) {
                    self.give_up();
                }
                exec.yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// Waits (yielding to the executor) until `cond` holds.
    fn wait_until<X: Executor>(&self, exec: &X, mut cond: impl FnMut() -> bool) {
        while !cond() {
            if self.failed.load(GhostOrdering::SeqCst) {
                self.give_up();
            }
            exec.yield_now();
        }
    }
}

/// Runs `roles` (role `i` as CPU `i`), after checking that the executor has room for them.
fn run_roles<X: Executor>(check: Check, exec: &X, roles: Vec<Role>) {
    assert!(
        roles.len() <= X::MAX_ROLES,
        "{}: {} roles, the executor runs at most {}",
        check.name(),
        roles.len(),
        X::MAX_ROLES
    );
    exec.run(roles);
}

/// `CpuSet` holding `cpu` only.
fn just(cpu: usize) -> CpuSet {
    let mut set = CpuSet::empty();
    match CpuId::new(cpu) {
        Ok(id) => set.insert(id),
        Err(e) => panic!("conformance: CPU {cpu}: {e}"),
    }
    set
}

// ---------------------------------------------------------------------------------------------
// Orderings

/// The writer and reader sides of a litmus test: what to call where the fence goes.
type Side<H> = Arc<dyn Fn(&H) + Send + Sync>;

fn message_passing<H: Cpus, X: Executor, A: SuiteAlloc<H>>(case: usize, s: &Subject<H, X, A>) {
    let (w, r) = MP_FENCES[case];
    let label = Check::MessagePassing.case_name(case);
    mp(s, label, Arc::new(move |h: &H| h.fence(w)), Arc::new(move |h: &H| h.fence(r)));
}

fn store_buffering<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let mb: Side<H> = Arc::new(|h: &H| h.fence(FenceKind::Mb));
    sb(s, Check::StoreBuffering.case_name(0), mb.clone(), mb);
}

fn barrier_fences<H: Cpus, X: Executor, A: SuiteAlloc<H>>(case: usize, s: &Subject<H, X, A>) {
    let b = Barrier::ALL[case];
    let label = Check::BarrierFences.case_name(case);
    let named: Side<H> = Arc::new(move |h: &H| h.barrier(b));
    match b.kind() {
        FenceKind::Wmb | FenceKind::Release => {
            mp(s, label, named, Arc::new(|h: &H| h.fence(FenceKind::Acquire)))
        }
        FenceKind::Rmb | FenceKind::Acquire => {
            mp(s, label, Arc::new(|h: &H| h.fence(FenceKind::Release)), named)
        }
        FenceKind::Mb => sb(s, label, named, Arc::new(|h: &H| h.fence(FenceKind::Mb))),
    }
}

/// Message passing, `rounds` times: CPU 0 stores data, `write`, stores the flag; CPU 1 waits
/// for the flag, `read`, loads the data, which must be there.
fn mp<H: Cpus, X: Executor, A: SuiteAlloc<H>>(
    s: &Subject<H, X, A>,
    label: String,
    write: Side<H>,
    read: Side<H>,
) {
    let rounds = s.caps.rounds.max(1);
    let data = Arc::new(cells::<H>(rounds));
    let flag = Arc::new(cells::<H>(rounds));
    let team = Team::new(2, rounds);
    let writer = {
        let (hal, exec, data, flag, t) =
            (s.hal.clone(), s.exec.clone(), data.clone(), flag.clone(), team.clone());
        team.role("mp-writer", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                data[i].store(i as u64 + 1, Relaxed);
                write(&hal);
                flag[i].store(1, Relaxed);
            }
        })
    };
    let reader = {
        let (hal, exec, t) = (s.hal.clone(), s.exec.clone(), team.clone());
        team.role("mp-reader", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                t.wait_until(&exec, || flag[i].load(Relaxed) == 1);
                read(&hal);
                let d = data[i].load(Relaxed);
                if d != i as u64 + 1 {
                    contract_broken(
                        &label,
                        format_args!("round {i}: the reader saw the flag but read data {d}, not {}", i + 1),
                    );
                }
            }
        })
    };
    run_roles(Check::MessagePassing, &s.exec, alloc::vec![writer, reader]);
}

/// Store buffering, `rounds` times: CPU `c` stores its own word, fences, loads the other's.
/// Never both 0.
fn sb<H: Cpus, X: Executor, A: SuiteAlloc<H>>(
    s: &Subject<H, X, A>,
    label: String,
    fence0: Side<H>,
    fence1: Side<H>,
) {
    let rounds = s.caps.rounds.max(1);
    let words: Arc<[Vec<H::AtomicU64>; 2]> = Arc::new([cells::<H>(rounds), cells::<H>(rounds)]);
    let seen: Arc<[Vec<H::AtomicU64>; 2]> = Arc::new([cells::<H>(rounds), cells::<H>(rounds)]);
    let team = Team::new(2, rounds);
    let roles = [fence0, fence1]
        .into_iter()
        .enumerate()
        .map(|(cpu, fence)| {
            let (hal, exec, words, seen, t) =
                (s.hal.clone(), s.exec.clone(), words.clone(), seen.clone(), team.clone());
            team.role(if cpu == 0 { "sb-cpu0" } else { "sb-cpu1" }, move || {
                for i in 0..rounds {
                    t.start(i, &exec);
                    words[cpu][i].store(1, Relaxed);
                    fence(&hal);
                    let v = words[1 - cpu][i].load(Relaxed);
                    // Recorded as 1 + the value read, so that 0 means "not recorded".
                    seen[cpu][i].store(v + 1, Relaxed);
                }
            })
        })
        .collect();
    run_roles(Check::StoreBuffering, &s.exec, roles);
    for i in 0..rounds {
        let (a, b) = (seen[0][i].load(Relaxed), seen[1][i].load(Relaxed));
        if a == 1 && b == 1 {
            contract_broken(
                &label,
                format_args!("round {i}: both CPUs read 0 (store buffering through the fences)"),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Locks

/// Two CPUs, `rounds` increments each, with a plain load and store inside `locked`; an
/// `inside` flag catches overlap directly.
fn exclusion<H: Cpus, X: Executor, A: SuiteAlloc<H>, L: Send + Sync + 'static>(
    check: Check,
    s: &Subject<H, X, A>,
    lock: L,
    locked: fn(&L, &mut dyn FnMut()),
) {
    struct State<H: Hal, L> {
        lock: L,
        counter: H::AtomicU64,
        inside: H::AtomicBool,
    }
    let rounds = s.caps.rounds.max(1);
    let st =
        Arc::new(State::<H, L> { lock, counter: H::AtomicU64::new(0), inside: H::AtomicBool::new(false) });
    let team = Team::new(2, rounds);
    let roles = (0..2)
        .map(|cpu| {
            let (st, t, exec) = (st.clone(), team.clone(), s.exec.clone());
            team.role(if cpu == 0 { "locker0" } else { "locker1" }, move || {
                for i in 0..rounds {
                    // Both CPUs go for the lock at once (on real threads).
                    t.start(i, &exec);
                    locked(&st.lock, &mut || {
                        if st.inside.swap(true, Relaxed) {
                            contract_broken(
                                check.name(),
                                format_args!(
                                    "CPU {cpu}, round {i}: another CPU was inside the critical section"
                                ),
                            );
                        }
                        let v = st.counter.load(Relaxed);
                        st.counter.store(v + 1, Relaxed);
                        st.inside.store(false, Relaxed);
                    });
                }
            })
        })
        .collect();
    run_roles(check, &s.exec, roles);
    let total = st.counter.load(Relaxed);
    if total != 2 * rounds as u64 {
        contract_broken(
            check.name(),
            format_args!("{total} increments survived of {} (lost updates under the lock)", 2 * rounds),
        );
    }
}

fn mutex_excludes<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    exclusion(Check::MutexExcludes, s, SpinLock::<H, ()>::new(()), |l, f| {
        let _g = l.lock();
        f();
    });
}

fn rwlock_writers_exclude<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    exclusion(Check::RwLockWritersExclude, s, MmuLock::<H>::new(), |l, f| {
        let _g = l.write();
        f();
    });
}

fn mutex_carries_data<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    struct State<H: Cpus> {
        lock: SpinLock<H, ()>,
        data: Vec<H::AtomicU64>,
        flag: Vec<H::AtomicU64>,
    }
    let rounds = s.caps.rounds.max(1);
    let st = Arc::new(State::<H> {
        lock: SpinLock::<H, ()>::new(()),
        data: cells::<H>(rounds),
        flag: cells::<H>(rounds),
    });
    let team = Team::new(2, rounds);
    let writer = {
        let (st, t, exec) = (st.clone(), team.clone(), s.exec.clone());
        team.role("lock-writer", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                let _g = st.lock.lock();
                st.data[i].store(1, Relaxed);
                st.flag[i].store(1, Relaxed);
            }
        })
    };
    let reader = {
        let (exec, t) = (s.exec.clone(), team.clone());
        team.role("lock-reader", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                let (f, d) = {
                    let _g = st.lock.lock();
                    (st.flag[i].load(Relaxed), st.data[i].load(Relaxed))
                };
                if f == 1 && d != 1 {
                    contract_broken(
                        Check::MutexCarriesData.name(),
                        format_args!(
                            "round {i}: a critical section saw the previous one's flag but not its data"
                        ),
                    );
                }
            }
        })
    };
    run_roles(Check::MutexCarriesData, &s.exec, alloc::vec![writer, reader]);
}

fn rwlock_readers_share<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    struct State<H: Cpus> {
        lock: MmuLock<H>,
        inside: [Vec<H::AtomicU64>; 2],
    }
    let rounds = s.caps.rounds.max(1);
    let st = Arc::new(State::<H> { lock: MmuLock::new(), inside: [cells::<H>(rounds), cells::<H>(rounds)] });
    let team = Team::new(2, rounds);
    let roles = (0..2)
        .map(|cpu| {
            let (st, exec, t) = (st.clone(), s.exec.clone(), team.clone());
            team.role(if cpu == 0 { "reader0" } else { "reader1" }, move || {
                for i in 0..rounds {
                    let _g = st.lock.read();
                    st.inside[cpu][i].store(1, Relaxed);
                    // Holding the read side, wait for the other reader to come in. A lock whose
                    // readers exclude each other never lets it: the check hangs (a deadlock
                    // or a branch limit under a model checker, the hang timeout on threads).
                    t.wait_until(&exec, || st.inside[1 - cpu][i].load(Relaxed) == 1);
                }
            })
        })
        .collect();
    run_roles(Check::RwLockReadersShare, &s.exec, roles);
}

fn rwlock_writer_to_reader<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    struct State<H: Cpus> {
        lock: MmuLock<H>,
        first: Vec<H::AtomicU64>,
        second: Vec<H::AtomicU64>,
    }
    let rounds = s.caps.rounds.max(1);
    let st =
        Arc::new(State::<H> { lock: MmuLock::new(), first: cells::<H>(rounds), second: cells::<H>(rounds) });
    let team = Team::new(2, rounds);
    let writer = {
        let (st, t, exec) = (st.clone(), team.clone(), s.exec.clone());
        team.role("rw-writer", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                let _g = st.lock.write();
                st.first[i].store(1, Relaxed);
                st.second[i].store(1, Relaxed);
            }
        })
    };
    let reader = {
        let (exec, t) = (s.exec.clone(), team.clone());
        team.role("rw-reader", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                let (second, first) = {
                    let _g = st.lock.read();
                    (st.second[i].load(Relaxed), st.first[i].load(Relaxed))
                };
                if second != first {
                    contract_broken(
                        Check::RwLockWriterToReader.name(),
                        format_args!(
                            "round {i}: a reader saw second = {second}, first = {first} (the writer's section \
                             was not atomic for it, or its data did not carry)"
                        ),
                    );
                }
            }
        })
    };
    run_roles(Check::RwLockWriterToReader, &s.exec, alloc::vec![writer, reader]);
}

// ---------------------------------------------------------------------------------------------
// Interrupts and IPIs

fn irq_nesting<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let rounds = s.caps.rounds.max(1);
    let name = Check::IrqNesting.name();
    let team = Team::new(2, rounds);
    let roles = (0..2)
        .map(|cpu| {
            let hal = s.hal.clone();
            team.role(if cpu == 0 { "irq0" } else { "irq1" }, move || {
                let here = |when: &str| {
                    let c = hal.current_cpu().map(CpuId::index);
                    if c != Some(cpu) {
                        contract_broken(name, format_args!("role {cpu} runs on CPU {c:?} {when}"));
                    }
                };
                here("at its start");
                for i in 0..rounds {
                    let outer = hal.irq_save();
                    if outer != IrqState(true) {
                        contract_broken(name, format_args!("CPU {cpu}, round {i}: the outermost irq_save returned {outer:?}, not enabled"));
                    }
                    here("with interrupts off");
                    let inner = hal.irq_save();
                    let innermost = hal.irq_save();
                    if inner != IrqState(false) || innermost != IrqState(false) {
                        contract_broken(
                            name,
                            format_args!("CPU {cpu}, round {i}: nested irq_save returned {inner:?}, {innermost:?}, not disabled"),
                        );
                    }
                    // SAFETY: the innermost open bracket on this CPU (`innermost`), then the
                    // next one out (`inner`): saves and restores nest.
                    unsafe {
                        hal.irq_restore(innermost);
                        hal.irq_restore(inner);
                    }
                    let again = hal.irq_save();
                    if again != IrqState(false) {
                        contract_broken(
                            name,
                            format_args!("CPU {cpu}, round {i}: interrupts came back on at an inner irq_restore ({again:?})"),
                        );
                    }
                    // SAFETY: `again` is the innermost open bracket, then `outer` the last.
                    unsafe {
                        hal.irq_restore(again);
                        hal.irq_restore(outer);
                    }
                    here("after restoring");
                    let after = hal.irq_save();
                    // SAFETY: `after` is the only open bracket on this CPU.
                    unsafe { hal.irq_restore(after) };
                    if after != IrqState(true) {
                        contract_broken(
                            name,
                            format_args!("CPU {cpu}, round {i}: interrupts still off after the outermost irq_restore ({after:?})"),
                        );
                    }
                }
            })
        })
        .collect();
    run_roles(Check::IrqNesting, &s.exec, roles);
}

fn ipi_waits_for_irqs_on<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    struct State<H: Cpus> {
        /// The target has interrupts off (release, after `irq_save`).
        off: Vec<H::AtomicU64>,
        /// The sender is about to call `ipi_and_wait`.
        sent: Vec<H::AtomicU64>,
        /// The target's write inside its interrupts-off section.
        data: Vec<H::AtomicU64>,
        /// Set by the target just before `irq_restore`.
        restoring: Vec<H::AtomicU64>,
        /// The sender's `ipi_and_wait` of this round returned.
        done: Vec<H::AtomicU64>,
    }
    let name = Check::IpiWaitsForIrqsOn.name();
    let rounds = s.caps.rounds.max(1);
    let st = Arc::new(State::<H> {
        off: cells::<H>(rounds),
        sent: cells::<H>(rounds),
        data: cells::<H>(rounds),
        restoring: cells::<H>(rounds),
        done: cells::<H>(rounds),
    });
    // No rendezvous: the flags order each round. The team only stops a waiting role when the
    // other failed.
    let team = Team::new(2, 1);
    let sender = {
        let (hal, exec, st, t) = (s.hal.clone(), s.exec.clone(), st.clone(), team.clone());
        team.role("ipi-sender", move || {
            for i in 0..rounds {
                t.wait_until(&exec, || st.off[i].load(Acquire) == 1);
                st.sent[i].store(1, Relaxed);
                hal.ipi_and_wait(just(1));
                if st.restoring[i].load(Relaxed) != 1 {
                    contract_broken(
                        name,
                        format_args!(
                            "round {i}: ipi_and_wait returned while the target still had interrupts off"
                        ),
                    );
                }
                let d = st.data[i].load(Relaxed);
                if d != i as u64 + 1 {
                    contract_broken(
                        name,
                        format_args!("round {i}: after the wait, the target's write before restoring is not visible (read {d})"),
                    );
                }
                st.done[i].store(1, Relaxed);
            }
        })
    };
    let target = {
        let (hal, exec, t) = (s.hal.clone(), s.exec.clone(), team.clone());
        team.role("ipi-target", move || {
            for i in 0..rounds {
                let saved = hal.irq_save();
                st.off[i].store(1, Release);
                // Keep interrupts off until the sender is (about to be) in `ipi_and_wait`, so
                // that the IPI arrives while they are off.
                t.wait_until(&exec, || st.sent[i].load(Relaxed) == 1);
                st.data[i].store(i as u64 + 1, Relaxed);
                st.restoring[i].store(1, Relaxed);
                // SAFETY: `saved` is the only open bracket on this CPU.
                unsafe { hal.irq_restore(saved) };
                // Wait (interrupts on) for this round's IPI to be taken before disabling
                // interrupts again: a signal-based IPI may still be in flight, and waiting for the
                // sender with interrupts off while it waits for us would be a deadlock of the
                // check, not of the backend. (Nothing to wait for after the last round.)
                if i + 1 < rounds {
                    t.wait_until(&exec, || st.done[i].load(Relaxed) == 1);
                }
            }
        })
    };
    run_roles(Check::IpiWaitsForIrqsOn, &s.exec, alloc::vec![sender, target]);
}

fn ipi_orders_section<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    struct State<H: Cpus> {
        payload: Vec<H::AtomicU64>,
        mark: Vec<H::AtomicU64>,
        /// 1 + what the section read of `payload`; 1 + what the sender read of `mark`.
        seen: [Vec<H::AtomicU64>; 2],
    }
    let rounds = s.caps.rounds.max(1);
    let st = Arc::new(State::<H> {
        payload: cells::<H>(rounds),
        mark: cells::<H>(rounds),
        seen: [cells::<H>(rounds), cells::<H>(rounds)],
    });
    let team = Team::new(2, rounds);
    let sender = {
        let (hal, exec, st, t) = (s.hal.clone(), s.exec.clone(), st.clone(), team.clone());
        team.role("ipi-sender", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                st.payload[i].store(1, Relaxed);
                hal.ipi_and_wait(just(1));
                let m = st.mark[i].load(Relaxed);
                st.seen[0][i].store(m + 1, Relaxed);
            }
        })
    };
    let target = {
        let (hal, exec, st, t) = (s.hal.clone(), s.exec.clone(), st.clone(), team.clone());
        team.role("irqs-off-section", move || {
            for i in 0..rounds {
                t.start(i, &exec);
                let saved = hal.irq_save();
                let p = st.payload[i].load(Relaxed);
                st.mark[i].store(1, Relaxed);
                // SAFETY: `saved` is the only open bracket on this CPU.
                unsafe { hal.irq_restore(saved) };
                st.seen[1][i].store(p + 1, Relaxed);
            }
        })
    };
    run_roles(Check::IpiOrdersIrqsOffSection, &s.exec, alloc::vec![sender, target]);
    for i in 0..rounds {
        if st.seen[0][i].load(Relaxed) == 1 && st.seen[1][i].load(Relaxed) == 1 {
            contract_broken(
                Check::IpiOrdersIrqsOffSection.name(),
                format_args!(
                    "round {i}: the interrupts-off section missed the sender's payload and the sender, after \
                     ipi_and_wait, missed the section's write"
                ),
            );
        }
    }
}

fn ipi_returns<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let rounds = s.caps.rounds.max(1);
    let team = Team::new(2, 1);
    let roles = (0..2)
        .map(|cpu| {
            let hal = s.hal.clone();
            team.role(if cpu == 0 { "ipi0" } else { "ipi1" }, move || {
                for _ in 0..rounds {
                    let Some(me) = hal.current_cpu().map(CpuId::index) else {
                        contract_broken(Check::IpiReturns.name(), format_args!("role {cpu} is not a CPU"));
                    };
                    // The caller itself and the empty set: nothing to wait for.
                    hal.ipi_and_wait(just(me));
                    hal.ipi_and_wait(CpuSet::empty());
                    // Both CPUs, from both CPUs at once: the caller is skipped, and the other
                    // CPU never disables interrupts in this check, so it takes the IPI.
                    let mut both = just(0);
                    both.insert(CpuId::new(1).unwrap_or_else(|e| panic!("conformance: CPU 1: {e}")));
                    hal.ipi_and_wait(both);
                }
            })
        })
        .collect();
    run_roles(Check::IpiReturns, &s.exec, roles);
}

// ---------------------------------------------------------------------------------------------
// Page allocation and the model hooks

/// The value entry `e` of the page of round `i` holds.
fn pattern(i: usize, e: usize) -> u64 {
    0x5a00_0000 | (i as u64) << 8 | e as u64
}

/// Checks that `page` holds `pattern(i, _)`.
fn holds_pattern<H: Hal>(page: &Page<H>, i: usize, what: &str) {
    for e in 0..PAGE_ENTRIES {
        let v = page.entry(e).map(|a| a.load(Relaxed));
        if v != Some(pattern(i, e)) {
            contract_broken(
                Check::PageAllocHoldsValue.name(),
                format_args!("page {i}: {what}: entry {e} holds {v:x?}, not {:#x}", pattern(i, e)),
            );
        }
    }
}

fn filled<H: Hal>(i: usize) -> Page<H> {
    let page = Page::<H>::empty();
    for e in 0..PAGE_ENTRIES {
        if let Some(a) = page.entry(e) {
            a.store(pattern(i, e), Relaxed);
        }
    }
    page
}

fn page_alloc_holds_value<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let name = Check::PageAllocHoldsValue.name();
    let caps = s.caps;
    let rounds = caps.rounds.clamp(1, 256);
    // Two CPUs allocate and free at once; CPU `cpu` fills page `i` with `pattern(k, _)`.
    let body = move |cpu: usize, alloc: A| {
        for i in 0..rounds {
            let k = cpu * rounds + i;
            let p = match alloc.alloc(filled::<H>(k)) {
                Ok(p) => p,
                Err(back) => {
                    // Out of memory: the value must come back unchanged; nothing else to check.
                    holds_pattern(&back, k, "the value alloc gave back");
                    continue;
                }
            };
            if p.as_ptr() as usize % core::mem::align_of::<Page<H>>() != 0 {
                contract_broken(name, format_args!("CPU {cpu}, round {i}: page {p:p} is misaligned"));
            }
            // SAFETY: `p` came from `alloc` and is not freed yet: a valid page we own.
            holds_pattern(unsafe { p.as_ref() }, k, "the allocated page");
            if let Ok(q) = alloc.alloc(filled::<H>(k)) {
                if q == p {
                    contract_broken(
                        name,
                        format_args!("CPU {cpu}, round {i}: a live page {p:p} was handed out again"),
                    );
                }
                // SAFETY: `q` came from `alloc` on this allocator and is freed once, here;
                // nothing reads it afterwards.
                unsafe { alloc.free(q) };
            }
            // SAFETY: `p` came from `alloc` on this allocator and is freed once, here. It is
            // read afterwards only under the `Poisoning` promise that freed pages stay
            // allocated.
            unsafe { alloc.free(p) };
            if let Some(poison) = caps.poisoning {
                // SAFETY: `Poisoning::new`'s contract: a freed page of this allocator stays
                // allocated while the allocator lives, and we hold a clone of it.
                let page = unsafe { p.as_ref() };
                for e in 0..PAGE_ENTRIES {
                    let v = page.entry(e).map(|a| a.load(Relaxed));
                    if v != Some(poison.word()) {
                        contract_broken(
                            name,
                            format_args!(
                                "round {i}: freed page entry {e} holds {v:x?}, not the poison {:#x}",
                                poison.word()
                            ),
                        );
                    }
                }
            }
        }
    };
    let team = Team::new(2, 1);
    let roles = (0..2)
        .map(|cpu| {
            let alloc = s.alloc.clone();
            team.role(if cpu == 0 { "allocator0" } else { "allocator1" }, move || body(cpu, alloc))
        })
        .collect();
    run_roles(Check::PageAllocHoldsValue, &s.exec, roles);
}

fn page_alloc_distinct<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let name = Check::PageAllocDistinct.name();
    let per_cpu = s.caps.rounds.clamp(1, 16);
    // Page addresses (0: none), by CPU; each CPU fills its pages with `pattern(cpu * per_cpu + k)`.
    let pages: Arc<[Vec<H::AtomicUsize>; 2]> =
        Arc::new(core::array::from_fn(|_| (0..per_cpu).map(|_| H::AtomicUsize::new(0)).collect()));
    let team = Team::new(2, 1);
    let roles = (0..2)
        .map(|cpu| {
            let (alloc, pages) = (s.alloc.clone(), pages.clone());
            team.role(if cpu == 0 { "allocator0" } else { "allocator1" }, move || {
                for k in 0..per_cpu {
                    if let Ok(p) = alloc.alloc(filled::<H>(cpu * per_cpu + k)) {
                        pages[cpu][k].store(p.as_ptr() as usize, Relaxed);
                    }
                }
            })
        })
        .collect();
    run_roles(Check::PageAllocDistinct, &s.exec, roles);
    let live: Vec<(usize, NonNull<Page<H>>)> = (0..2)
        .flat_map(|cpu| (0..per_cpu).map(move |k| (cpu, k)))
        .filter_map(|(cpu, k)| {
            NonNull::new(pages[cpu][k].load(Relaxed) as *mut Page<H>).map(|p| (cpu * per_cpu + k, p))
        })
        .collect();
    let mut addrs: Vec<usize> = live.iter().map(|(_, p)| p.as_ptr() as usize).collect();
    addrs.sort_unstable();
    let distinct = addrs.windows(2).all(|w| w[0] != w[1]);
    let mut wrong = None;
    for &(i, p) in &live {
        // SAFETY: every page in `live` came from `alloc` and is not freed yet.
        let page = unsafe { p.as_ref() };
        if (0..PAGE_ENTRIES).any(|e| page.entry(e).map(|a| a.load(Relaxed)) != Some(pattern(i, e))) {
            wrong = Some(i);
        }
    }
    for &(_, p) in &live {
        // SAFETY: from `alloc` on this allocator, freed once; nobody reads it afterwards.
        unsafe { s.alloc.free(p) };
    }
    if !distinct {
        contract_broken(name, format_args!("two live pages share an address ({} pages)", live.len()));
    }
    if let Some(i) = wrong {
        contract_broken(name, format_args!("live page {i} does not hold what its CPU put in it"));
    }
}

fn keeps_every_rule<H: Cpus, X: Executor, A: SuiteAlloc<H>>(_case: usize, s: &Subject<H, X, A>) {
    let team = Team::new(2, 1);
    let roles = (0..2)
        .map(|cpu| {
            let hal = s.hal.clone();
            team.role(if cpu == 0 { "keeps0" } else { "keeps1" }, move || {
                for &rule in Rule::ALL {
                    if !hal.keeps(rule) {
                        contract_broken(
                            Check::KeepsEveryRule.name(),
                            format_args!("CPU {cpu}: keeps({rule}) returned false"),
                        );
                    }
                }
            })
        })
        .collect();
    run_roles(Check::KeepsEveryRule, &s.exec, roles);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_check_has_a_case() {
        for (i, a) in Check::ALL.iter().enumerate() {
            assert!(a.cases() > 0, "{}", a.name());
            assert_eq!(Check::by_name(a.name()), Some(*a));
            assert!(Check::ALL[i + 1..].iter().all(|b| b.name() != a.name()));
        }
    }
}
