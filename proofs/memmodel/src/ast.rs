//! Litmus programs: threads of statements over shared locations, and a final condition.
//!
//! The vocabulary is the kernel's (`READ_ONCE`, `smp_store_release`, `xchg_acquire`,
//! `smp_wmb`, `spin_lock`, ...) plus C11's explicit atomics and fences. Every primitive is
//! lowered into events by [`crate::exec`]; what each event means under each model is decided
//! in [`crate::model`] and documented in `docs/memmodel.md`.

use std::collections::BTreeMap;
use std::fmt;

/// A value: an integer, or the address of a location (see [`loc_value`]).
pub type Value = i64;

/// Addresses of locations are values `LOC_BASE + index`, far from any integer a test uses.
pub const LOC_BASE: Value = 1 << 40;

/// The value that is the address of location `loc`.
pub fn loc_value(loc: usize) -> Value {
    LOC_BASE + loc as Value
}

/// The location a value points to, if it is an address.
pub fn value_loc(v: Value, nlocs: usize) -> Option<usize> {
    let i = v.checked_sub(LOC_BASE)?;
    usize::try_from(i).ok().filter(|&i| i < nlocs)
}

/// A register of one thread (index into [`Thread::regs`]).
pub type Reg = usize;

/// Binary operators of register expressions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `&`
    And,
    /// `|`
    Or,
    /// `^`
    Xor,
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `>=`
    Ge,
    /// `&&`
    LAnd,
    /// `||`
    LOr,
}

/// A pure expression over registers, constants and location addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expr {
    /// An integer or an address.
    Const(Value),
    /// A register of the executing thread.
    Reg(Reg),
    /// A binary operation.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// Logical negation (`!e`).
    Not(Box<Expr>),
}

/// Where an access goes: a named location, or the location a register points to (an
/// address dependency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    /// A shared location.
    Loc(usize),
    /// `*r`: the location whose address register `r` holds.
    Reg(Reg),
}

/// Ordering of a load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadOrd {
    /// `READ_ONCE`, `atomic_read`, `rcu_dereference`; C11 relaxed.
    Once,
    /// `smp_load_acquire`, `atomic_read_acquire`; C11 acquire.
    Acquire,
    /// C11 `memory_order_seq_cst` load.
    Sc,
}

/// Ordering of a store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOrd {
    /// `WRITE_ONCE`, `atomic_set`; C11 relaxed.
    Once,
    /// `smp_store_release`, `rcu_assign_pointer`, `atomic_set_release`; C11 release.
    Release,
    /// C11 `memory_order_seq_cst` store.
    Sc,
}

/// Ordering of a read-modify-write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmwOrd {
    /// `_relaxed` variants, non-value-returning kernel atomics; C11 relaxed.
    Relaxed,
    /// `_acquire` variants; C11 acquire.
    Acquire,
    /// `_release` variants; C11 release.
    Release,
    /// C11 `memory_order_acq_rel`.
    AcqRel,
    /// Fully ordered kernel RMWs (`xchg`, `cmpxchg`, `atomic_add_return`, ...): as if
    /// `smp_mb()` came right before and right after (when the RMW succeeds).
    Full,
    /// C11 `memory_order_seq_cst`.
    Sc,
}

/// What a read-modify-write computes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RmwOp {
    /// Store the value, return the old one.
    Xchg(Expr),
    /// If the old value equals `old`, store `new`; return the old value. A failed
    /// compare-exchange is a lone read with no ordering (as in the kernel).
    CmpXchg {
        /// Expected value.
        old: Expr,
        /// Value stored on success.
        new: Expr,
    },
    /// Add `delta`; return the old value, or the new one when `ret_new`.
    Add {
        /// Added value (negative for subtraction).
        delta: Expr,
        /// `atomic_add_return` (new value) rather than `atomic_fetch_add` (old value).
        ret_new: bool,
    },
    /// `atomic_add_unless(v, delta, unless)`: add unless the old value is `unless`;
    /// return 1 when it added. The failing case is a lone read.
    AddUnless {
        /// Added value.
        delta: Expr,
        /// The value that prevents the addition.
        unless: Expr,
    },
}

/// A fence statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fence {
    /// `smp_wmb()`.
    Wmb,
    /// `smp_rmb()`.
    Rmb,
    /// `smp_mb()` (also emitted around fully ordered RMWs).
    Mb,
    /// `smp_mb__before_atomic()`.
    BeforeAtomic,
    /// `smp_mb__after_atomic()`.
    AfterAtomic,
    /// `smp_mb__after_spinlock()`.
    AfterSpinlock,
    /// C11 `atomic_thread_fence(memory_order_acquire)`.
    C11Acquire,
    /// C11 `atomic_thread_fence(memory_order_release)`.
    C11Release,
    /// C11 `atomic_thread_fence(memory_order_acq_rel)`.
    C11AcqRel,
    /// C11 `atomic_thread_fence(memory_order_seq_cst)`.
    C11SeqCst,
    /// `rcu_read_lock()`: opens an RCU read-side critical section (LKMM only).
    RcuLock,
    /// `rcu_read_unlock()`: closes the innermost open critical section (LKMM only).
    RcuUnlock,
    /// `synchronize_rcu()`: an RCU grace period (LKMM only).
    SyncRcu,
}

impl Fence {
    /// The source spelling.
    pub fn name(self) -> &'static str {
        match self {
            Fence::Wmb => "smp_wmb",
            Fence::Rmb => "smp_rmb",
            Fence::Mb => "smp_mb",
            Fence::BeforeAtomic => "smp_mb__before_atomic",
            Fence::AfterAtomic => "smp_mb__after_atomic",
            Fence::AfterSpinlock => "smp_mb__after_spinlock",
            Fence::C11Acquire => "fence(acquire)",
            Fence::C11Release => "fence(release)",
            Fence::C11AcqRel => "fence(acq_rel)",
            Fence::C11SeqCst => "fence(seq_cst)",
            Fence::RcuLock => "rcu_read_lock",
            Fence::RcuUnlock => "rcu_read_unlock",
            Fence::SyncRcu => "synchronize_rcu",
        }
    }
}

/// One statement of a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stmt {
    /// A load into `dst`.
    Load {
        /// Destination register.
        dst: Reg,
        /// What is read.
        addr: Addr,
        /// Its ordering.
        ord: LoadOrd,
    },
    /// A store.
    Store {
        /// What is written.
        addr: Addr,
        /// The stored value.
        val: Expr,
        /// Its ordering.
        ord: StoreOrd,
    },
    /// A read-modify-write; `dst` is `None` for the kernel's non-value-returning atomics
    /// (`atomic_inc`, ...), whose read is `Noreturn` in LKMM.
    Rmw {
        /// Destination register, if the operation returns a value.
        dst: Option<Reg>,
        /// The location.
        addr: Addr,
        /// What it computes.
        op: RmwOp,
        /// Its ordering.
        ord: RmwOrd,
    },
    /// A fence.
    Fence(Fence),
    /// `spin_lock(l)`: an acquire RMW that reads 0 (unlocked) and writes 1.
    Lock(Addr),
    /// `spin_unlock(l)`: a release store of 0.
    Unlock(Addr),
    /// `r = spin_is_locked(l)`: a once read of the lock word, `r = (word != 0)`.
    IsLocked {
        /// Destination register.
        dst: Reg,
        /// The lock.
        addr: Addr,
    },
    /// `r = e` over registers only.
    Assign {
        /// Destination register.
        dst: Reg,
        /// The value.
        val: Expr,
    },
    /// `if (cond) { then } else { els }`; every event after it depends on the registers
    /// in `cond` (a control dependency, extending past the end of the `if` as in herd).
    If {
        /// The condition (non-zero is true).
        cond: Expr,
        /// Taken branch.
        then: Vec<Stmt>,
        /// Other branch.
        els: Vec<Stmt>,
    },
}

/// One thread (`P0`, `P1`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thread {
    /// Register names, indexed by [`Reg`].
    pub regs: Vec<String>,
    /// Initial register values (zero unless the init section says otherwise).
    pub reg_init: Vec<Value>,
    /// The body.
    pub body: Vec<Stmt>,
}

/// What a condition atom reads in the final state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Thread `t`'s register.
    Reg(usize, Reg),
    /// A location's final value (its coherence-last write).
    Loc(usize),
}

/// A proposition over the final state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prop {
    /// Always true.
    True,
    /// `target = value`.
    Eq(Target, Value),
    /// Conjunction.
    And(Box<Prop>, Box<Prop>),
    /// Disjunction.
    Or(Box<Prop>, Box<Prop>),
    /// Negation.
    Not(Box<Prop>),
}

/// The quantifier of the final condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantifier {
    /// `exists (P)`.
    Exists,
    /// `~exists (P)`.
    NotExists,
    /// `forall (P)`.
    Forall,
}

/// Which executions satisfy the proposition of the final condition (herd's "Observation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Verdict {
    /// No allowed execution satisfies it.
    Never,
    /// Some allowed executions satisfy it, some do not.
    Sometimes,
    /// Every allowed execution satisfies it.
    Always,
}

impl Verdict {
    /// Parses `Never`, `Sometimes` or `Always`.
    pub fn parse(s: &str) -> Option<Verdict> {
        match s {
            "Never" => Some(Verdict::Never),
            "Sometimes" => Some(Verdict::Sometimes),
            "Always" => Some(Verdict::Always),
            _ => None,
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Never => "Never",
            Verdict::Sometimes => "Sometimes",
            Verdict::Always => "Always",
        })
    }
}

/// The memory models this crate judges programs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    /// Sequential consistency (Lamport 1979).
    Sc,
    /// x86-TSO (Owens, Sarkar, Sewell 2009).
    Tso,
    /// ARMv8, multi-copy-atomic (Pulte et al., POPL 2018).
    Armv8,
    /// RC11 (Lahav et al., PLDI 2017).
    Rc11,
    /// The Linux kernel memory model (Alglave et al., ASPLOS 2018).
    Lkmm,
}

impl Model {
    /// Every model, in table order.
    pub const ALL: [Model; 5] = [Model::Lkmm, Model::Sc, Model::Tso, Model::Armv8, Model::Rc11];

    /// Short lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Model::Sc => "sc",
            Model::Tso => "tso",
            Model::Armv8 => "armv8",
            Model::Rc11 => "rc11",
            Model::Lkmm => "lkmm",
        }
    }

    /// Parses a short name.
    pub fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.name() == s)
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A litmus test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Test {
    /// Its name (the `C name` line).
    pub name: String,
    /// Location names, indexed by location number.
    pub locs: Vec<String>,
    /// Initial values, one per location.
    pub init: Vec<Value>,
    /// The threads, in order.
    pub threads: Vec<Thread>,
    /// Executions whose final state fails the filter are ignored.
    pub filter: Option<Prop>,
    /// The final condition's quantifier.
    pub quantifier: Quantifier,
    /// The final condition's proposition.
    pub prop: Prop,
    /// Expected verdicts stated in the test's header comment (`Result:` is LKMM's).
    pub expect: BTreeMap<Model, Verdict>,
    /// Where the test comes from (`Source:` in the header comment), if stated.
    pub source: Option<String>,
}
