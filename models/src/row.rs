//! The one result row every checker writes and the main job reads.
//!
//! Each checker (loom, shuttle, real threads) is its own program; the main job
//! (`mmusync-verify`) runs them and reads what they found. They talk through [`Row`]s,
//! serialized with serde as a JSON array: a row says which checker ran which scenario, with which
//! mutant (or the correct code), how that ended ([`Verdict`]), how far it looked ([`Bound`]) and
//! at what cost. Nothing is classified by the text of a message: a new checker, scenario or
//! verdict is a change the compiler checks on both sides.

use crate::mutant::Mutant;
use alloc::string::String;
use core::fmt;
use mmusync::barrier::Protocol;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The programs that check the protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checker {
    /// loom: exhaustive or preemption-bounded exploration under C11 weak memory.
    Loom,
    /// shuttle: random and PCT schedules, many threads, sequentially consistent memory.
    Shuttle,
    /// Real threads on this CPU (x86-TSO), signals as IPIs.
    Hardware,
    /// Ring 0 inside a multi-vCPU KVM guest (`mmusync-kvm`): core's `x86-ring0` backend, with
    /// `cli`/`sti` and x2APIC IPIs, running the shared scenario bodies one role per vCPU.
    Kvm,
    /// The proof crates: `mmusync-memmodel` (every barrier's litmus skeleton under SC, x86-TSO,
    /// ARMv8, RC11 and LKMM) and `mmusync-protocol-proofs` (exhaustive stateright models of the
    /// protocols and their mutants).
    Proofs,
}

impl Checker {
    /// Every checker, in the order the main job runs them.
    pub const ALL: [Checker; 5] =
        [Checker::Loom, Checker::Shuttle, Checker::Hardware, Checker::Kvm, Checker::Proofs];

    /// The name the command line and the tables use.
    pub const fn name(self) -> &'static str {
        match self {
            Checker::Loom => "loom",
            Checker::Shuttle => "shuttle",
            Checker::Hardware => "hardware",
            Checker::Kvm => "kvm",
            Checker::Proofs => "proofs",
        }
    }

    /// The checker called `name`.
    pub fn from_name(name: &str) -> Option<Checker> {
        Checker::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What this checker cannot see. Printed under every scorecard.
    pub const fn blind_spots(self) -> &'static str {
        match self {
            Checker::Loom => {
                "never produces load buffering (a load reading a store that is later in the other \
                 thread's program order); treats SeqCst loads/stores as AcqRel (the models use \
                 SeqCst fences for every full barrier); issues stores as swaps unless a scenario \
                 asks for plain stores (a swap continues a release sequence a store would end); \
                 explores only up to its preemption bound where a scenario is not exhaustive; at \
                 most 4 threads"
            }
            Checker::Shuttle => {
                "sequentially consistent: every atomic is SeqCst and fences are no-ops, so no \
                 missing barrier is visible; random/PCT schedules sample, they do not exhaust"
            }
            Checker::Hardware => {
                "x86-TSO only shows store->load reordering (store buffering); a missing wmb/rmb \
                 or release/acquire is invisible on x86; outcomes are sampled, and a rare window \
                 may never be hit in the iterations run"
            }
            Checker::Kvm => {
                "runs where /dev/kvm is PVM (no VMX/SVM): guest ring 0 is emulated instruction by \
                 instruction (about a million instructions a second per vCPU) and the emulator's \
                 accesses are far apart, so store buffering, the one reordering x86 allows, is \
                 practically never observable and a dropped full barrier is rarely or never \
                 seen; a missing wmb/rmb or release/acquire is invisible on x86 anyway; ring-0 \
                 loads go through software page walks, so no stale TLB entry is observable (the \
                 scenarios' TLBs are ghost state); an interrupt is taken late (0.3-0.8 ms after \
                 sti, and an IPI is delivered late too), which can hide a missing interrupt \
                 disable; rounds are sampled (hundreds, \
                 not millions), so a rare window may never be hit; skipped, with a message, where \
                 /dev/kvm is missing (MMUSYNC_REQUIRE_KVM=1 makes that a failure)"
            }
            Checker::Proofs => {
                "checks hand-written models, not core's code (except that loom's and real threads' \
                 traces of core's steps in five scenarios must replay in the fault, walk (both \
                 schemes), memslot and pfncache models): the memory-model verdicts are for \
                 two-thread litmus skeletons of each barrier pairing (three threads for the E2 \
                 chain), which leave out the surrounding locks and barriers that can make a \
                 barrier redundant in the real code (only SyncRootSpteBeforeFlags and \
                 InvalidateEndSeqBeforeActiveCount are judged in context; GuestExitReadsBeforeMode \
                 is shown in context beside its bare pairing); its models are SC, \
                 x86-TSO, ARMv8 (no ISB/LDAPR), RC11 (forbids all load buffering) and LKMM (marked \
                 accesses, no SRCU, no plain accesses); the stateright models are the protocol \
                 steps written from core's docs, at small sizes (3 vCPUs/walkers, 2-3 \
                 invalidations, one table page, each thread running once), under SC or x86-TSO \
                 store buffers only, so a rule or barrier they do not model, or a bug that needs \
                 more threads or repetitions, goes unseen"
            }
        }
    }
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a failure showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Failure {
    /// A scenario's safety invariant failed.
    Invariant,
    /// A liveness check failed (a spin budget, a bounded retry).
    Liveness,
    /// Every thread blocked.
    Deadlock,
    /// No end within the step bound (a livelock).
    StepBound,
}

/// How one run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The correct code kept every invariant in every execution explored.
    Pass,
    /// The correct code failed (a bug in the protocols, or in the scenario).
    Fail(Failure),
    /// A scenario that models a bug on purpose showed it, as expected.
    BugShown(Failure),
    /// The mutant was killed: the scenario's own check failed.
    Killed(Failure),
    /// The mutant survived, and nothing documents why this checker cannot kill it.
    Survived,
    /// The mutant survived, and the row's `detail` says why this checker cannot kill it.
    Documented,
    /// The mutant was not run: this checker cannot see it (the row's `detail` says why).
    NotRun,
    /// A sampled run (real threads) did not show the mutant: reported, never required, and no
    /// documentation that it cannot be killed.
    NotSeen,
    /// The run did not complete (a branch limit, an unrelated panic): never a kill.
    Error,
}

impl Verdict {
    /// Whether the row is as it should be (no failure of the correct code, no undocumented
    /// survivor, no error).
    pub const fn ok(self) -> bool {
        !matches!(self, Verdict::Fail(_) | Verdict::Survived | Verdict::Error)
    }

    /// Whether a mutant was killed.
    pub const fn killed(self) -> bool {
        matches!(self, Verdict::Killed(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail(k) => write!(f, "FAIL ({k:?})"),
            Verdict::BugShown(k) => write!(f, "bug shown ({k:?})"),
            Verdict::Killed(k) => write!(f, "killed ({k:?})"),
            Verdict::Survived => f.write_str("SURVIVED"),
            Verdict::Documented => f.write_str("not killable (documented)"),
            Verdict::NotRun => f.write_str("not run"),
            Verdict::NotSeen => f.write_str("not seen (sampled)"),
            Verdict::Error => f.write_str("ERROR"),
        }
    }
}

/// How far a run looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// Every interleaving (up to the checker's partial-order reduction).
    Exhaustive,
    /// Every interleaving with at most this many preemptions.
    Preemptions(usize),
    /// A sample of schedules or rounds.
    Sampled,
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Exhaustive => f.write_str("exhaustive"),
            Bound::Preemptions(n) => write!(f, "bounded ({n} preemptions)"),
            Bound::Sampled => f.write_str("sampled"),
        }
    }
}

/// One run of one scenario by one checker, on the correct code or with one mutant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The checker.
    pub checker: Checker,
    /// The scenario (loom, shuttle) or hardware scenario and backend.
    pub scenario: String,
    /// The scenario's protocol.
    #[serde(with = "protocol_name")]
    pub protocol: Protocol,
    /// The mutant, or `None` for the correct code.
    #[serde(with = "mutant_name")]
    pub mutant: Option<Mutant>,
    /// How it ended.
    pub verdict: Verdict,
    /// Executions (loom, shuttle) or rounds (hardware) run: up to and including the failing one
    /// when something failed.
    pub executions: u64,
    /// Wall time in seconds.
    pub time_s: f64,
    /// How far it looked.
    pub bound: Bound,
    /// What happened, in words: the failure message, or why a mutant is not killable.
    pub detail: String,
    /// A command that replays the failure, when the checker recorded one.
    pub replay: Option<String>,
}

/// `Protocol` as its short name (`"P1"`).
mod protocol_name {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.short())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        let name = String::deserialize(d)?;
        Protocol::ALL
            .into_iter()
            .find(|p| p.short() == name)
            .ok_or_else(|| serde::de::Error::custom(alloc::format!("no protocol named {name}")))
    }
}

/// `Option<Mutant>` as the mutant's name, or null.
pub(crate) mod mutant_name {
    use super::*;

    pub fn serialize<S: Serializer>(m: &Option<Mutant>, s: S) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_some(m.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mutant>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(name) => Mutant::from_name(&name)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(alloc::format!("no mutant named {name}"))),
        }
    }
}
