//! Trace conformance: a step trace recorded from core's own code must replay as a path of a
//! protocol model.
//!
//! core reports each labelled protocol step through `Hal::step` ([`Step`], with the values it
//! read or wrote), and the loom and shuttle HALs record the steps per CPU. The models here name
//! their actions after the same labels. This module replays a recorded trace in a model, so a
//! change to core that the model does not allow fails a test, and the model cannot drift from
//! the code unnoticed.
//!
//! ## How a trace is replayed
//!
//! A trace is a sequence of [`TraceStep`]s: the CPU that made the step (`None` for the setup and
//! final-check phases, which build and inspect the initial state and are not replayed) and the
//! [`Step`]. A [`Projection`] is what is particular to one model and one scenario: which model
//! thread each CPU plays, what the model's abstract values stand for, and what each step is in
//! the model. Five exist, one module each: [`FaultSetup`] (the `fault` model, P1 + P2),
//! [`WalkSetup`] (the `walk` model, IPI scheme, P5), [`EpochSetup`] (the `walk` model, epoch
//! scheme), [`MemslotSetup`] (the `memslot` model, P3) and [`CacheSetup`] (the `pfncache`
//! model, the translation-cache refresh). [`conform`] picks
//! the projection of a recorded run's scenario. Each step is *projected*
//! ([`Projection::project`]) to one of:
//!
//! * an **action** of the model, for the CPU's thread: the replay takes a model action of that
//!   kind and thread that the model enables, then checks the step's values against the model
//!   state after it (a `seq` snapshot, a retry answer, a count, a pfn): a disagreement is a
//!   mismatch, exactly like a step the model does not enable;
//! * an **observation**: a step inside a model action that the model takes at once (S3c's
//!   `unmap` inside S3): no transition, its values are checked against the current state;
//! * **abstracted**: a step the model leaves out on purpose (documented per step);
//! * **outside the model**: a step the model cannot explain at all (a memslot change, a
//!   multi-slot range, a lockless walk): the trace is rejected.
//!
//! Some model actions report no step (taking and dropping `mmu_lock`, the primary MMU's remap,
//! the guest filling its TLB, S4 when nothing was zapped, S3 when no memslot overlaps): they are
//! *silent*. The replay keeps
//! the set of model states reachable by silent actions from where the last step left it, and a
//! step must be matched from one of them: the trace is accepted when it is the visible part of
//! some path of the model (trace inclusion with silent steps), rejected at the first step that
//! no such path allows, with the reasons for each candidate.
//!
//! Steps are recorded right after the access they report, with no scheduling point in between
//! for the steps checked by value (the locked ones, and F4's single load), so a sequentially
//! consistent trace (shuttle's) orders them as they happened. The lockless `_unsafe` checks
//! read several words with scheduling points in between, so their answers are not checked.
//! A few steps are reported after a scheduling point that follows what they report: `Kick`
//! (Q3–Q4) reads the vCPU's mode, then its CPU, then reports, so a walk can begin in between.
//! Such a step *may lag* ([`Projection::may_lag`], argued per projection): the replay also
//! tries it at each earlier position after its own thread's previous step, which is exactly
//! where the access can have happened.

mod conform;
mod epoch;
mod fault;
mod memslot;
mod pfncache;
mod replay;
mod walk;

pub use conform::{conform, Conformance, Instance};
pub use epoch::{EpochSetup, EpochThread};
pub use fault::{FaultSetup, FaultThread};
pub use memslot::{MemslotSetup, MemslotThread};
pub use pfncache::{CacheSetup, CacheThread};
pub use replay::{replay, replay_fault, replay_lagging, Lag, Mismatch, Replayed};
pub use walk::{WalkSetup, WalkThread};

pub use mmusync_models::TraceStep;

use mmusync::{Gfn, Step};
use stateright::Model;
use std::fmt;
use std::hash::Hash;

/// What a step is in a model ([`Projection::project`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projected {
    /// A model action of the reporting thread, by its label (the model's name for it).
    Action(&'static str),
    /// A step inside the thread's last action (S3c inside S3): values checked, no transition.
    Observe,
    /// Left out of the model on purpose; the reason.
    Abstracted(&'static str),
    /// Not a step this model can explain; the reason.
    Outside(&'static str),
}

/// A gfn of the trace as a model gfn.
fn gfn(g: Gfn) -> Result<u8, String> {
    u8::try_from(g.0).map_err(|_| format!("gfn {g:#x} is outside the model's gfns"))
}

/// A model gfn as a gfn of the trace.
fn trace_gfn(g: u8) -> Gfn {
    Gfn(u64::from(g))
}

/// `Ok` when the model's value and the trace's agree, else a message naming `what` and both.
fn expect<T: PartialEq + fmt::Debug>(what: &str, model: T, trace: T) -> Result<(), String> {
    if model == trace {
        Ok(())
    } else {
        Err(format!("{what}: the model has {model:?}, the trace {trace:?}"))
    }
}

/// How a model explains core's steps: the part of trace conformance that is particular to one
/// model and one scenario setup. [`replay`] does the rest.
pub trait Projection {
    /// The model.
    type Model: Model<State: Clone + Hash + Eq, Action: Clone + fmt::Debug>;
    /// A thread of the model that a CPU of the trace plays.
    type Thread: Copy + PartialEq + fmt::Display;

    /// The model instance.
    fn model(&self) -> &Self::Model;
    /// The model states a trace starts from: the model's initial states, unless the scenario's
    /// setup already took the model some way (a memslot layout created before the roles run).
    fn init_states(&self) -> Vec<State<Self>> {
        self.model().init_states()
    }
    /// The thread CPU `cpu` plays.
    fn thread(&self, cpu: usize) -> Option<Self::Thread>;
    /// What `step` is in the model.
    fn project(&self, step: &Step) -> Projected;
    /// Whether action `a`, enabled in `s`, reports no step.
    fn silent(&self, s: &State<Self>, a: &Action<Self>) -> bool;
    /// Whether the visible action `a` is the one `thread` reports with `step` (projected to the
    /// action `label`).
    fn reports(&self, a: &Action<Self>, label: &str, thread: Self::Thread, step: &Step) -> bool;
    /// Checks the values of `step`, reported by `thread`'s action from `before` to `after`;
    /// `history`: the trace's steps before it (in replay order).
    fn check_action(
        &self,
        thread: Self::Thread,
        before: &State<Self>,
        after: &State<Self>,
        step: &Step,
        history: &[TraceStep],
    ) -> Result<(), String>;
    /// Checks an observed step against the current state.
    fn check_observe(&self, s: &State<Self>, thread: Self::Thread, step: &Step) -> Result<(), String>;
    /// Whether `step` may be reported late: after steps of other threads that came after the
    /// access it reports (a scheduling point between the access and the report). Such a step
    /// may be matched anywhere after its own thread's previous step.
    fn may_lag(&self, step: &Step) -> bool {
        let _ = step;
        false
    }
    /// Whether a lagging `step` may also be matched before `earlier`, a step of its own thread
    /// that came before it: only where nothing orders the two (no barrier, no lock between them,
    /// and `earlier` is a step the model does not place).
    fn may_pass(&self, step: &Step, earlier: &Step) -> bool {
        let _ = (step, earlier);
        false
    }
}

/// The model state of a projection.
pub type State<P> = <<P as Projection>::Model as Model>::State;
/// The model action of a projection.
pub type Action<P> = <<P as Projection>::Model as Model>::Action;
