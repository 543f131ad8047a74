//! The shuttle executor: role `i` is a shuttle thread running as CPU `i`.
//!
//! [`ShuttleExec`] implements `mmusync-models`' [`Executor`], so every scenario in
//! [`SCENARIOS`](mmusync_models::SCENARIOS) runs under shuttle unchanged. The larger scenarios
//! of this crate use [`ShuttleExec::run_scoped`], which takes roles that borrow from the
//! caller's stack (a reference MMU borrows its vCPUs), through shuttle's scoped threads.
//!
//! The test's main task runs the scenario's setup and final checks as CPU 0; it is blocked
//! in the scope while the roles run, so it never runs at the same time as role 0.
//!
//! ## Steps are scheduling points
//!
//! Every step a role announces ([`Executor::step`]) is also a point where shuttle may switch
//! to another CPU (the executor reads a private shuttle atomic; it does not yield, so PCT's
//! priorities are left alone). Scenarios announce their *ghost* accesses as steps (a walker
//! reading a table page, a consumer using a cached pfn), and ghost state is plain memory that
//! shuttle does not schedule on: without the switch point, the ghost access and the protocol
//! access before it would always run back to back, and a sequentially consistent model could
//! never put another CPU's free between them.

use crate::hal::{current_cpu, set_current_cpu, MAX_CPUS};
use crate::trace::Trace;
use mmusync_models::{Executor, Role};
use shuttle::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::fmt;
use std::sync::Arc;

/// A role that may borrow from the stack of the caller of [`ShuttleExec::run_scoped`].
pub struct ScopedRole<'a> {
    /// Short name, for traces.
    pub name: &'static str,
    /// What the role does; runs once, on its own CPU.
    pub body: Box<dyn FnOnce() + Send + 'a>,
}

impl<'a> ScopedRole<'a> {
    /// A role named `name` running `body`.
    pub fn new(name: &'static str, body: impl FnOnce() + Send + 'a) -> Self {
        ScopedRole { name, body: Box::new(body) }
    }
}

/// Runs roles as shuttle threads and records their steps in the execution's [`Trace`].
#[derive(Clone)]
pub struct ShuttleExec {
    trace: Arc<Trace>,
    /// Read at every step: a scheduling point that orders nothing (no one writes it).
    point: Arc<AtomicBool>,
}

impl ShuttleExec {
    /// An executor recording into `trace`. Create it inside the shuttle execution.
    pub fn new(trace: Arc<Trace>) -> Self {
        ShuttleExec { trace, point: Arc::new(AtomicBool::new(false)) }
    }

    /// The execution's trace.
    pub fn trace(&self) -> &Arc<Trace> {
        &self.trace
    }

    /// Runs every role concurrently, role `i` as CPU `i`, and returns when all have finished.
    /// A role that panics fails the execution at once (shuttle stops at the first panic).
    pub fn run_scoped(&self, roles: Vec<ScopedRole<'_>>) {
        assert!(roles.len() <= MAX_CPUS, "shuttle executor: {} roles, at most {MAX_CPUS}", roles.len());
        self.trace.set_roles(roles.iter().map(|r| r.name).collect());
        shuttle::thread::scope(|s| {
            let handles: Vec<_> = roles
                .into_iter()
                .enumerate()
                .map(|(cpu, role)| {
                    s.spawn(move || {
                        set_current_cpu(cpu);
                        (role.body)();
                    })
                })
                .collect();
            for h in handles {
                if let Err(panic) = h.join() {
                    std::panic::resume_unwind(panic);
                }
            }
        });
        self.trace.roles_done();
    }
}

impl Executor for ShuttleExec {
    const MAX_ROLES: usize = MAX_CPUS;

    fn run(&self, roles: Vec<Role>) {
        self.run_scoped(roles.into_iter().map(|r| ScopedRole { name: r.name, body: r.body }).collect());
    }

    fn step(&self, what: fmt::Arguments<'_>) {
        self.trace.push(current_cpu(), what);
        self.point.load(SeqCst);
    }

    fn yield_now(&self) {
        shuttle::thread::yield_now();
    }
}
