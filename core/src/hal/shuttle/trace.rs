//! The counterexample trace of one execution, in the protocols' own terms.
//!
//! The HAL records IPIs, broken rules and the protocol steps core reports
//! ([`Hal::step`](crate::hal::Hal::step)); an executor (or your test) adds the roles' own steps
//! ([`Trace::push`]) and names the roles ([`Trace::set_roles`]). The trace keeps the last [`Trace::CAPACITY`] entries (long
//! runs make thousands of steps; the end of the trace is where the failure is), each with the
//! CPU that made it. Shuttle runs every task on one OS thread, so a plain `std` mutex here never
//! contends and adds no scheduling point: recording does not change the schedules explored.

use crate::Step;
use ::std::collections::VecDeque;
use ::std::fmt::{self, Write as _};
use ::std::string::String;
use ::std::sync::{Mutex, PoisonError};
use ::std::vec::Vec;

/// One recorded step.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The CPU (role index) that made it.
    pub cpu: usize,
    /// The role running as that CPU when it was made (`setup` and `final checks` for the main
    /// task before and after the roles).
    pub who: &'static str,
    /// What it did.
    pub what: What,
}

/// What a trace entry says.
#[derive(Clone, Debug)]
pub enum What {
    /// A step a role or the HAL announced, as text.
    Text(String),
    /// A protocol step the crate reported through `Hal::step`; formatted only when the trace
    /// is rendered, so that recording stays cheap in passing executions.
    Core(Step),
}

impl fmt::Display for What {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            What::Text(s) => f.write_str(s),
            What::Core(s) => write!(f, "{s}"),
        }
    }
}

/// One execution's trace.
#[derive(Debug, Default)]
pub struct Trace {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The roles' names while they run; empty before and after.
    roles: Vec<&'static str>,
    /// The roles' names, kept for the rendered role table.
    table: Vec<&'static str>,
    /// Whether the roles have finished (the final checks run).
    done: bool,
    entries: VecDeque<Entry>,
    dropped: u64,
}

impl Inner {
    fn who(&self, cpu: usize) -> &'static str {
        match self.roles.get(cpu) {
            Some(name) => name,
            None if self.done => "final checks",
            None => "setup",
        }
    }
}

impl Trace {
    /// How many entries a trace keeps (the most recent ones).
    pub const CAPACITY: usize = 400;

    /// An empty trace.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The roles start: names them, in CPU order.
    pub fn set_roles(&self, roles: Vec<&'static str>) {
        self.with(|t| {
            t.table = roles.clone();
            t.roles = roles;
        });
    }

    /// The roles have finished: what follows are the final checks.
    pub fn roles_done(&self) {
        self.with(|t| {
            t.roles.clear();
            t.done = true;
        });
    }

    /// The name of the role running as `cpu` now (`setup` or `final checks` outside the
    /// roles).
    pub fn role(&self, cpu: usize) -> &'static str {
        self.with(|t| t.who(cpu))
    }

    /// Records that `cpu` did `what`.
    pub fn push(&self, cpu: usize, what: fmt::Arguments<'_>) {
        self.push_what(cpu, What::Text(fmt::format(what)));
    }

    /// Records that `cpu` reached the protocol step `step`.
    pub fn push_step(&self, cpu: usize, step: Step) {
        self.push_what(cpu, What::Core(step));
    }

    fn push_what(&self, cpu: usize, what: What) {
        self.with(|t| {
            if t.entries.len() == Self::CAPACITY {
                t.entries.pop_front();
                t.dropped += 1;
            }
            let who = t.who(cpu);
            t.entries.push_back(Entry { cpu, who, what });
        });
    }

    /// The entries kept, oldest first (all of them when [`dropped`](Self::dropped) is 0).
    pub fn entries(&self) -> Vec<Entry> {
        self.with(|t| t.entries.iter().cloned().collect())
    }

    /// How many of the earliest entries were not kept ([`Self::CAPACITY`]): a trace that
    /// dropped none is complete, from setup to the final checks.
    pub fn dropped(&self) -> u64 {
        self.with(|t| t.dropped)
    }

    /// The trace as text: the role table, then one line per step.
    pub fn render(&self) -> String {
        self.with(|t| {
            let mut out = String::new();
            for (cpu, role) in t.table.iter().enumerate() {
                let _ = writeln!(out, "  CPU {cpu:2} = {role}");
            }
            if t.dropped > 0 {
                let _ = writeln!(out, "  ... {} earlier steps not kept ...", t.dropped);
            }
            for e in &t.entries {
                let _ = writeln!(out, "  [CPU {:2} {:>18}] {}", e.cpu, e.who, e.what);
            }
            out
        })
    }
}
