//! The counterexample trace and the coverage of named barriers and rules.
//!
//! [`LoomHal`](super::LoomHal) records every barrier (issued or dropped by the mutant), every
//! broken rule, every protocol step core reports through [`Hal::step`](crate::hal::Hal::step),
//! and interrupts and IPIs; an executor adds the roles' own steps ([`Event::Step`]) and where the
//! roles start and end. [`LoomHal::new`](super::LoomHal::new) clears the trace, so after a failing
//! `loom::model` (caught with `catch_unwind`) [`take`] returns the failing execution, and
//! [`render`] prints it.
//!
//! loom runs every thread of a model on the OS thread that called it, one at a time, so the
//! trace is an ordinary (OS-)thread-local list in the order steps actually ran. It is cleared at
//! the start of each execution; after a failure it holds the failing execution.

use super::current_cpu;
use crate::{Barrier, Mutant, Rule, Step};
use ::std::cell::RefCell;
use ::std::collections::BTreeSet;
use ::std::fmt;
use ::std::string::String;
use ::std::vec::Vec;

/// One step of an execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A protocol step a role announced, with the values it read.
    Step(String),
    /// A protocol step the crate reported through `Hal::step`, with its values.
    Core(Step),
    /// A named barrier was issued.
    Barrier(Barrier),
    /// The mutant dropped this barrier here.
    BarrierDropped(Barrier),
    /// The mutant broke this rule here.
    RuleBroken(Rule),
    /// Interrupts off on this CPU.
    IrqsOff,
    /// Interrupts back on: a pending IPI is taken now.
    IrqsOn,
    /// This CPU sent an IPI to the CPU and waits for it.
    IpiSent(usize),
    /// The CPU took this CPU's IPI.
    IpiTaken(usize),
    /// The roles start: what came before was the scenario's setup.
    RolesStart,
    /// Every role has finished: what follows is the scenario's final check.
    RolesEnd,
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Step(s) => f.write_str(s),
            Event::Core(s) => write!(f, "{s}"),
            Event::Barrier(b) => write!(f, "barrier {b} ({})", b.kind().kernel_name()),
            Event::BarrierDropped(b) => {
                write!(f, "*** barrier {b} ({}) DROPPED by the mutant ***", b.kind().kernel_name())
            }
            Event::RuleBroken(r) => write!(f, "*** rule {r} BROKEN by the mutant ***"),
            Event::IrqsOff => f.write_str("interrupts off"),
            Event::IrqsOn => f.write_str("interrupts on (pending IPIs taken)"),
            Event::IpiSent(c) => write!(f, "IPI -> cpu{c}, waiting"),
            Event::IpiTaken(c) => write!(f, "cpu{c} took the IPI"),
            Event::RolesStart => f.write_str("-- the roles start --"),
            Event::RolesEnd => f.write_str("-- every role finished --"),
        }
    }
}

/// An event and the CPU (role index) that did it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Role index.
    pub cpu: usize,
    /// What happened.
    pub event: Event,
}

::std::thread_local! {
    static TRACE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    static ROLES: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
    static TOUCHED: RefCell<BTreeSet<Mutant>> = const { RefCell::new(BTreeSet::new()) };
}

/// Records an event of the current CPU.
pub fn record(event: Event) {
    let cpu = current_cpu();
    TRACE.with(|t| t.borrow_mut().push(Entry { cpu, event }));
}

/// Notes that a barrier or rule was reached (whether or not it is the mutant).
pub fn touch(m: Mutant) {
    TOUCHED.with(|t| {
        t.borrow_mut().insert(m);
    });
}

/// Clears the trace at the start of an execution.
pub fn start_execution() {
    TRACE.with(|t| t.borrow_mut().clear());
}

/// Sets the role names for the current execution.
pub fn set_roles(names: Vec<&'static str>) {
    ROLES.with(|r| *r.borrow_mut() = names);
}

/// Takes the trace of the last execution, with the role names.
pub fn take() -> (Vec<&'static str>, Vec<Entry>) {
    (ROLES.with(|r| r.borrow().clone()), TRACE.with(|t| ::core::mem::take(&mut *t.borrow_mut())))
}

/// Takes (and clears) the set of barriers and rules reached since the last call.
pub fn take_touched() -> BTreeSet<Mutant> {
    TOUCHED.with(|t| ::core::mem::take(&mut *t.borrow_mut()))
}

/// Formats a trace as numbered lines, one per step: `  12 cpu1 invalidator  end: seq++`.
pub fn render(roles: &[&'static str], entries: &[Entry], with_barriers: bool) -> String {
    use fmt::Write;
    let mut out = String::new();
    for (i, e) in entries.iter().enumerate() {
        if !with_barriers && matches!(e.event, Event::Barrier(_)) {
            continue;
        }
        let role = roles.get(e.cpu).copied().unwrap_or("setup");
        let _ = writeln!(out, "  {:>3}  cpu{} {:<16} {}", i + 1, e.cpu, role, e.event);
    }
    out
}
