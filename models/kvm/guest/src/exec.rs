//! The guest's executor: role `i` of a scenario runs on vCPU `i`.
//!
//! vCPU 0 drives: it runs a scenario's setup and final checks, and [`GuestExec::run`] posts
//! roles `1..n` to the other vCPUs' slots, runs role 0 itself, and waits until every posted
//! role has finished. A vCPU that is not driving sits in [`worker`]: it spins on its slot for a
//! while after each role (rounds follow each other closely), then halts with interrupts on
//! until vCPU 0 sends it the wake-up IPI.
//!
//! Each role first spins a pseudo-random number of iterations (`0..jitter`, drawn per round and
//! role from the command's seed), so that rounds start the roles at different offsets.
//!
//! A role that panics does not come back: the panic handler reports it to the host, which
//! stops the VM and starts a fresh guest at the next round.

use crate::arch::{self, cpu_index, mailbox, me};
use crate::idt::WAKE_VECTOR;
use alloc::vec::Vec;
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst};
use mmusync_kvm_shared::{FLAG_TRACE, MAX_VCPUS};
use mmusync_models::{Executor, Role};

/// How long an idle vCPU spins on its slot before it halts (TSC cycles, about 50 ms).
const SPIN_TSC: u64 = 120_000_000;

/// One vCPU's work slot.
struct Slot {
    /// The posted role and its start delay (spin iterations).
    job: UnsafeCell<Option<(Role, u32)>>,
    /// Roles posted so far.
    posted: AtomicU64,
    /// Roles finished so far.
    done: AtomicU64,
    /// Set while the vCPU is about to halt or halted (the poster then sends a wake-up IPI).
    sleeping: AtomicU32,
}

// SAFETY: `job` is written only by vCPU 0 while `posted == done` (the worker is not reading
// it), before the SeqCst increment of `posted`; the worker reads it only after seeing that
// increment, and raises `done` (SeqCst) only after it took the job. So the two never access
// `job` at the same time, and each access happens-after the other's last one.
unsafe impl Sync for Slot {}

#[allow(clippy::declare_interior_mutable_const)] // only used to initialize `SLOTS`
const EMPTY: Slot = Slot {
    job: UnsafeCell::new(None),
    posted: AtomicU64::new(0),
    done: AtomicU64::new(0),
    sleeping: AtomicU32::new(0),
};

static SLOTS: [Slot; MAX_VCPUS] = [EMPTY; MAX_VCPUS];

/// The round vCPU 0 is running (for the jitter).
static ROUND: AtomicU64 = AtomicU64::new(0);

/// Sets the round whose jitter the next [`GuestExec::run`] draws.
pub fn set_round(round: u64) {
    ROUND.store(round, Relaxed);
}

/// splitmix64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The delay of role `role` in this round.
fn delay(role: usize) -> u32 {
    let cmd = &mailbox().command;
    let jitter = cmd.jitter.load(Relaxed);
    if jitter == 0 {
        return 0;
    }
    let r = mix(cmd.seed.load(Relaxed) ^ mix(ROUND.load(Relaxed)) ^ (role as u64).wrapping_mul(0x1234_5677));
    (r % u64::from(jitter)) as u32
}

/// Runs one role on this vCPU: the delay, then the body.
fn run_role(role: Role, delay: u32) {
    let me = me();
    me.role.set(role.name);
    me.roles.fetch_add(1, Relaxed);
    for _ in 0..delay {
        core::hint::spin_loop();
    }
    (role.body)();
}

/// What a vCPU other than 0 does once booted: run the roles posted to it, for ever.
pub fn worker() -> ! {
    let slot = &SLOTS[cpu_index()];
    // The jobs taken so far: `done`, which only this worker raises. Not `posted`: vCPU 0 posts
    // as soon as this vCPU reported booted, so a first job can already be there, and starting
    // from it would skip that job and leave vCPU 0 waiting for it for ever (seen as a hang).
    let mut seen = slot.done.load(SeqCst);
    loop {
        let start = arch::rdtsc();
        while slot.posted.load(SeqCst) == seen {
            if arch::rdtsc().wrapping_sub(start) > SPIN_TSC {
                // Announce the halt, then check again with interrupts off: a poster that
                // missed `sleeping` posted before our check (both sides order their store
                // before their load with a full barrier), and one that saw it sends the
                // wake-up IPI, which `sti; hlt` cannot miss.
                arch::cli();
                slot.sleeping.store(1, SeqCst);
                if slot.posted.load(SeqCst) == seen {
                    arch::sti_hlt();
                } else {
                    arch::sti();
                }
                slot.sleeping.store(0, SeqCst);
                break;
            }
            core::hint::spin_loop();
        }
        let posted = slot.posted.load(SeqCst);
        if posted == seen {
            continue;
        }
        seen = posted;
        // SAFETY: `posted` moved past `done`: vCPU 0 wrote the job before that and does not
        // touch it again until we raise `done` (see `Slot`).
        let job = unsafe { (*slot.job.get()).take() };
        if let Some((role, delay)) = job {
            run_role(role, delay);
        }
        slot.done.store(seen, SeqCst);
    }
}

/// The executor of the guest (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestExec;

impl Executor for GuestExec {
    const MAX_ROLES: usize = MAX_VCPUS;

    fn run(&self, roles: Vec<Role>) {
        let ncpus = mailbox().command.ncpus.load(Relaxed) as usize;
        assert!(cpu_index() == 0, "GuestExec::run must be called on vCPU 0 (no nested runs)");
        assert!(roles.len() <= ncpus, "{} roles for {ncpus} vCPUs", roles.len());
        let mut roles = roles.into_iter();
        let first = roles.next();
        let mut waits = [0u64; MAX_VCPUS];
        for (i, role) in roles.enumerate().map(|(i, r)| (i + 1, r)) {
            let slot = &SLOTS[i];
            let d = delay(i);
            // SAFETY: `posted == done` here (every earlier run waited for its roles), so the
            // worker does not touch `job` (see `Slot`).
            unsafe { *slot.job.get() = Some((role, d)) };
            waits[i] = slot.posted.fetch_add(1, SeqCst) + 1;
            if slot.sleeping.load(SeqCst) != 0 {
                // SAFETY: x2APIC mode; vCPU `i` exists (i < ncpus) and handles WAKE_VECTOR.
                unsafe { arch::send_ipi(i, WAKE_VECTOR) };
            }
        }
        if let Some(role) = first {
            run_role(role, delay(0));
        }
        for (i, &w) in waits.iter().enumerate().skip(1) {
            if w != 0 {
                while SLOTS[i].done.load(SeqCst) < w {
                    core::hint::spin_loop();
                }
            }
        }
    }

    fn step(&self, what: fmt::Arguments<'_>) {
        let me = me();
        me.steps.fetch_add(1, Relaxed);
        if mailbox().command.flags.load(Relaxed) & FLAG_TRACE != 0 {
            me.last_step.clear();
            let _ = fmt::write(&mut &me.last_step, what);
        }
    }

    fn yield_now(&self) {
        core::hint::spin_loop()
    }
}
