//! Hardware scenarios: the P5 store-buffering shapes and the reference MMU's fault path,
//! written directly over core's vCPU, walk, epoch and reference-MMU API for real threads.
//!
//! The model scenarios ([`mmusync_models::SCENARIOS`]) run each role once per iteration, which
//! is right for loom's exhaustive search but leaves a real CPU little chance to show a rare
//! reordering. These run many *rounds* per role invocation: both roles meet at a rendezvous,
//! each waits a random short delay (so that, over many rounds, the two sides' critical
//! instructions line up at every offset), and then they race. Violations are counted per round
//! instead of panicking, so a mutant's hit rate can be reported per million rounds.
//!
//! Freed table pages and guest pages are poisoned and quarantined ([`crate::poison`]): a walker
//! that reads poison, or an SPTE that points at a freed guest page, is a violation, and no read
//! is ever a real use-after-free.
//!
//! | scenario | shape | roles |
//! |---|---|---|
//! | `sb-walk` | SB-walk: lockless walk vs unlink + IPI flush + free | walker (vCPU 0), zapper |
//! | `sb-entry` | SB-entry: guest entry with a TLB vs unlink + flush request + free | vcpu, requester |
//! | `epoch-walk` | epoch (RCU) walks and a guest TLB vs epoch zaps (flush before unpin) | vcpu, zapper |
//! | `mmu-fault-vs-invalidation` | the reference MMU: faults, lockless walks, fast path vs MMU-notifier invalidations that free guest pages and table pages | vcpu, invalidator |

mod entry;
mod epoch;
mod mmu;
mod walk;

use crate::exec::ThreadExec;
use mmusync_models::{HardwareBody, Invariant, ScenarioHal};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Mutex;

/// Knobs of the hardware scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Each side adds a random `0..jitter` delay steps (a step is one iteration of an empty
    /// loop, about a nanosecond) to its wait after the rendezvous.
    pub jitter: u32,
    /// How many entry reads a walk (or a guest run) does through the page it found (about a
    /// nanosecond each): how long it holds the page.
    pub hold: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { jitter: 256, hold: 2048 }
    }
}

/// What one batch of rounds saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// Rounds run.
    pub rounds: u64,
    /// Rounds (or, for free-running roles, observations) that violated an invariant.
    pub violations: u64,
    /// Rounds in which the race the scenario is about was on (the walker or the guest reached
    /// the page before the zapper unlinked it): the denominator that matters for a barrier
    /// mutant. `hw-mmu-fault-vs-invalidation` counts the vCPU's iterations here.
    pub contended: u64,
    /// The first violation, in words.
    pub first: Option<String>,
}

impl Batch {
    /// Adds `other`'s counts; keeps the first violation seen.
    pub fn absorb(&mut self, other: Batch) {
        self.rounds += other.rounds;
        self.violations += other.violations;
        self.contended += other.contended;
        if self.first.is_none() {
            self.first = other.first;
        }
    }
}

/// Violation counter shared by the roles of one batch.
#[derive(Default)]
struct Recorder {
    violations: AtomicU64,
    contended: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Recorder {
    fn violation(&self, inv: Invariant, detail: std::fmt::Arguments<'_>) {
        if self.violations.fetch_add(1, SeqCst) == 0 {
            let msg = format!("{}: {inv}: {detail}", mmusync_models::exec::VIOLATION);
            *self.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
        }
    }

    fn contended(&self) {
        self.contended.fetch_add(1, SeqCst);
    }

    fn finish(self, rounds: u64) -> Batch {
        Batch {
            rounds,
            violations: self.violations.into_inner(),
            contended: self.contended.into_inner(),
            first: self.first.into_inner().unwrap_or_else(|e| e.into_inner()),
        }
    }
}

/// Two roles meet here before each phase of a round. Counting, so it never needs resetting.
/// It spins (yielding now and then, for machines with fewer cores than roles): a thread woken
/// from a sleep would arrive far too late to race.
#[repr(align(128))]
struct Rendezvous {
    count: AtomicU64,
}

impl Rendezvous {
    fn new() -> Self {
        Rendezvous { count: AtomicU64::new(0) }
    }

    /// Meeting number `n` (0, 1, 2, ...) of two parties.
    fn meet(&self, n: u64) {
        self.count.fetch_add(1, SeqCst);
        let target = 2 * (n + 1);
        let mut spins = 0u32;
        while self.count.load(SeqCst) < target {
            std::hint::spin_loop();
            spins = spins.wrapping_add(1);
            if spins % 512 == 0 {
                std::thread::yield_now();
            }
        }
    }
}

/// xorshift64*: cheap per-role randomness for the delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: u32) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        if n == 0 {
            0
        } else {
            ((x >> 32) % u64::from(n)) as u32
        }
    }
}

/// Waits `n` delay steps (iterations of an empty loop the compiler cannot remove).
#[inline(always)]
fn delay(n: u32) {
    for i in 0..n {
        std::hint::black_box(i);
    }
}

/// Keeps the race centred: the side that starts the race (the zapper) waits `base + 0..jitter`
/// steps, and `base` follows what the other side saw. When the other side was early (it
/// reached the page before the unlink), the zapper moves earlier by `down` steps, otherwise
/// later by `up`; so the other side is early in about `up / (up + down)` of the rounds, and the
/// rounds gather around the point where the two sides' critical accesses meet.
struct Pacer {
    base: u32,
    up: u32,
    down: u32,
}

impl Pacer {
    /// At most this many steps of base delay (about 50 us).
    const MAX: u32 = 50_000;

    fn new(up: u32, down: u32) -> Self {
        Pacer { base: 0, up, down }
    }

    fn delay(&self, rng: &mut Rng, jitter: u32) -> u32 {
        self.base + rng.below(jitter)
    }

    fn feedback(&mut self, other_was_early: bool) {
        self.base = if other_was_early {
            self.base.saturating_sub(self.down)
        } else {
            (self.base + self.up).min(Self::MAX)
        };
    }
}

/// Runs one batch of `rounds` rounds of the real-thread body `body` under `hal` on `exec`
/// (which must have a CPU for each of the scenario's roles) and reports what it saw. Every
/// [`HardwareBody`] is listed, so a scenario added to the catalogue does not compile until its
/// body is here.
pub fn run_batch<H: ScenarioHal>(
    body: HardwareBody,
    hal: &H,
    exec: &ThreadExec,
    rounds: u64,
    tuning: Tuning,
    seed: u64,
) -> Batch {
    match body {
        HardwareBody::SbWalk => walk::sb_walk(hal, exec, rounds, tuning, seed),
        HardwareBody::SbEntry => entry::sb_entry(hal, exec, rounds, tuning, seed),
        HardwareBody::EpochWalk => epoch::epoch_walk(hal, exec, rounds, tuning, seed),
        HardwareBody::MmuFaultVsInvalidation => mmu::fault_vs_invalidation(hal, exec, rounds, tuning, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_range() {
        let mut rng = Rng::new(7);
        assert!((0..1000).all(|_| rng.below(5) < 5));
        assert_eq!(rng.below(0), 0);
    }
}
