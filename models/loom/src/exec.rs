//! The loom executor: role `i` is loom thread `i` (role 0 on the model's main thread, the others
//! spawned), and CPU `i` for the HAL.

use crate::hal::{set_current_cpu, MAX_CPUS};
use crate::trace::{self, Event};
use mmusync_models::exec::{Executor, Role};
use std::fmt;
use std::vec::Vec;

/// Runs a scenario's roles as loom threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoomExec;

impl Executor for LoomExec {
    const MAX_ROLES: usize = MAX_CPUS;

    fn run(&self, roles: Vec<Role>) {
        trace::set_roles(roles.iter().map(|r| r.name).collect());
        trace::record(Event::RolesStart);
        let mut roles = roles.into_iter();
        let Some(first) = roles.next() else { return };
        let handles: Vec<_> = roles
            .enumerate()
            .map(|(i, role)| {
                loom::thread::spawn(move || {
                    set_current_cpu(i + 1);
                    (role.body)();
                })
            })
            .collect();
        set_current_cpu(0);
        (first.body)();
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        trace::record(Event::RolesEnd);
    }

    fn step(&self, what: fmt::Arguments<'_>) {
        trace::record(Event::Step(std::fmt::format(what)));
    }

    fn yield_now(&self) {
        loom::thread::yield_now();
    }
}
