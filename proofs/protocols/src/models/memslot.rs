//! P3: memslot swaps vs MMU-notifier invalidations.
//!
//! **Threads.** `invalidators` invalidations of one hva range (each one start/end pair) and
//! `swaps` memslot updates; update `k` replaces layout `k` by layout `k + 1`. Even layouts map
//! the range into a memslot, odd layouts do not (a slot created or deleted under the range), so
//! start and end decide differently whether to `begin`/`end` if the layout changes in between.
//!
//! **Steps.** Invalidation, as `Vm::start`/`end` (`core/src/notifier.rs`): S1 take
//! `mn_invalidate_lock`, `active++`, drop it; S3 look the range up in the current layout and,
//! if a slot overlaps, `begin` (`in_progress++`, under `mmu_lock`, which no other thread here
//! needs); E1 look it up again and, if a slot overlaps, `end` (`in_progress--`; an `end` with
//! `in_progress == 0` is the unbalanced end core refuses); E2 take `mn_invalidate_lock`,
//! `active--`, wake a waiting swap, drop it. Swap, as `Memslots::swap` (`core/src/memslot.rs`,
//! KVM's `kvm_swap_active_memslots`): W2 take `mn_invalidate_lock`; W3 if `active != 0`, drop
//! it and sleep until woken (then W2 again); W4 publish the new layout; W5 drop the lock. (Labels
//! as in `core/docs/protocols.md`; W1, W6–W8 — the generation, the arch lock, the SRCU wait —
//! are not modelled.)
//!
//! **Abstracted away.** S2 (caches), the zap, `seq`, faults, SRCU (the swap's
//! `synchronize_srcu` after publishing; loom's `memslot-delete-vs-fault` covers it), the
//! layouts' contents beyond "overlaps the range or not". The wake-up is modelled as a flag the
//! last E2 sets; a sleeping swap is not runnable until it is set, so a lost wake-up shows up as
//! a deadlock. All shared state is under locks, so weak memory adds nothing here (SC only).
//!
//! **Properties.** `start-end-same-layout`: each invalidation's E1 sees the layout its S3 saw.
//! `in-progress-balanced`: no `end` finds `in_progress == 0`, and it is 0 when all are done.
//! `no-deadlock`: in every state some thread can move, or every thread has finished (the swap
//! never blocks the notifier for good). `all-finish` (`Property::eventually`): every path ends
//! with every thread done (the model has no cycles, so stateright's `eventually` is sound here).

use serde::Serialize;
use stateright::{Model, Property, Representative};
use std::fmt;

/// A rule of P3 a mutant breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum MemslotMutant {
    /// The swap publishes without waiting for `active == 0`
    /// (`Rule::MemslotSwapWaitsForInvalidations`).
    NoWait,
    /// The swap checks `active == 0` under the lock, drops it, then publishes
    /// (`Rule::MemslotPublishUnderLock`).
    PublishAfterUnlock,
    /// The swap sleeps while *holding* `mn_invalidate_lock` (the notifier would block on it).
    WaitHoldingLock,
}

/// The memslot-swap model.
#[derive(Clone, Debug)]
pub struct MemslotModel {
    /// Number of invalidations.
    pub invalidators: usize,
    /// Number of memslot updates.
    pub swaps: usize,
    /// The broken rule, if any.
    pub mutant: Option<MemslotMutant>,
}

/// Where an invalidation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvPc {
    /// Next S1.
    Idle,
    /// Next S3.
    Active,
    /// Next E1.
    Started,
    /// Next E2.
    Ended,
    /// Finished.
    Done,
}

/// One invalidation's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvState {
    /// Program counter.
    pub pc: InvPc,
    /// The layout its S3 saw.
    pub layout_at_start: u8,
}

/// Where a swap is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SwapPc {
    /// Next W2.
    Idle,
    /// Holding the lock; next W3 (check the count).
    Locked,
    /// Asleep without the lock, waiting for the last E2's wake-up.
    Sleeping,
    /// Checked the count (and still holds the lock, except for the mutant); next W4.
    Checked,
    /// Published; next W5.
    Published,
    /// Finished.
    Done,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemslotState {
    /// Invalidations.
    pub invs: Vec<InvState>,
    /// Swaps (they run in order: swap `k` may start once swap `k - 1` is done).
    pub swaps: Vec<SwapPc>,
    /// Who holds `mn_invalidate_lock`: `None`, or `Some(i)` for swap `i`. (Invalidations
    /// take it only inside one atomic step.)
    pub lock: Option<usize>,
    /// `mn_active_invalidate_count`.
    pub active: u8,
    /// `mmu_invalidate_in_progress`.
    pub in_progress: u8,
    /// The current layout number.
    pub layout: u8,
    /// The wake-up flag for a sleeping swap.
    pub woken: bool,
    /// Some invalidation's end saw another layout than its start.
    pub layout_mismatch: bool,
    /// Some `end` found `in_progress == 0`.
    pub unbalanced: bool,
}

impl Representative for MemslotState {
    /// The invalidations are interchangeable (same range): sort them.
    fn representative(&self) -> Self {
        let mut s = self.clone();
        s.invs.sort();
        s
    }
}

/// A step of an invalidation or a memslot swap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemslotAction {
    /// S1: `active++` under `mn_invalidate_lock`.
    S1(usize),
    /// S3: look up the layout; `begin` if a slot overlaps.
    S3(usize),
    /// E1: look up the layout; `end` if a slot overlaps.
    E1(usize),
    /// E2: `active--` under `mn_invalidate_lock`; wake the swap if it hit zero.
    E2(usize),
    /// W2: the swap takes `mn_invalidate_lock`.
    W2(usize),
    /// W3: the swap checks `active`: zero → go on (holding the lock); else drop it and sleep.
    W3(usize),
    /// W4: publish the next layout.
    W4(usize),
    /// W5: drop `mn_invalidate_lock`.
    W5(usize),
}

impl fmt::Display for MemslotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MemslotAction::S1(i) => write!(f, "inv{i} S1 active++"),
            MemslotAction::S3(i) => write!(f, "inv{i} S3 lookup layout, begin if a slot overlaps"),
            MemslotAction::E1(i) => write!(f, "inv{i} E1 lookup layout, end if a slot overlaps"),
            MemslotAction::E2(i) => write!(f, "inv{i} E2 active--, wake swap"),
            MemslotAction::W2(k) => write!(f, "swap{k} W2 take mn_invalidate_lock"),
            MemslotAction::W3(k) => write!(f, "swap{k} W3 check active count"),
            MemslotAction::W4(k) => write!(f, "swap{k} W4 publish layout {}", k + 1),
            MemslotAction::W5(k) => write!(f, "swap{k} W5 drop mn_invalidate_lock"),
        }
    }
}

fn overlaps(layout: u8) -> bool {
    layout % 2 == 0
}

impl MemslotModel {
    fn broken(&self, m: MemslotMutant) -> bool {
        self.mutant == Some(m)
    }

    fn all_done(s: &MemslotState) -> bool {
        s.invs.iter().all(|i| i.pc == InvPc::Done) && s.swaps.iter().all(|w| *w == SwapPc::Done)
    }
}

impl Model for MemslotModel {
    type State = MemslotState;
    type Action = MemslotAction;

    fn init_states(&self) -> Vec<MemslotState> {
        vec![MemslotState {
            invs: vec![InvState { pc: InvPc::Idle, layout_at_start: 0 }; self.invalidators],
            swaps: vec![SwapPc::Idle; self.swaps],
            lock: None,
            active: 0,
            in_progress: 0,
            layout: 0,
            woken: false,
            layout_mismatch: false,
            unbalanced: false,
        }]
    }

    fn actions(&self, s: &MemslotState, out: &mut Vec<MemslotAction>) {
        let free = s.lock.is_none();
        for (i, inv) in s.invs.iter().enumerate() {
            match inv.pc {
                InvPc::Idle if free => out.push(MemslotAction::S1(i)),
                InvPc::Active => out.push(MemslotAction::S3(i)),
                InvPc::Started => out.push(MemslotAction::E1(i)),
                InvPc::Ended if free => out.push(MemslotAction::E2(i)),
                _ => {}
            }
        }
        for (k, w) in s.swaps.iter().enumerate() {
            let prev_done = k == 0 || s.swaps[k - 1] == SwapPc::Done;
            match w {
                SwapPc::Idle if free && prev_done => out.push(MemslotAction::W2(k)),
                SwapPc::Sleeping if free && s.woken => out.push(MemslotAction::W2(k)),
                SwapPc::Locked => out.push(MemslotAction::W3(k)),
                SwapPc::Checked if self.broken(MemslotMutant::PublishAfterUnlock) => {
                    // The mutant dropped the lock in W3; it publishes whenever it runs.
                    out.push(MemslotAction::W4(k))
                }
                SwapPc::Checked => out.push(MemslotAction::W4(k)),
                SwapPc::Published => out.push(MemslotAction::W5(k)),
                _ => {}
            }
            // The mutant that sleeps holding the lock: W3 re-checks when woken.
            if *w == SwapPc::Sleeping && self.broken(MemslotMutant::WaitHoldingLock) && s.woken {
                out.push(MemslotAction::W3(k));
            }
        }
    }

    fn next_state(&self, last: &MemslotState, action: MemslotAction) -> Option<MemslotState> {
        let mut s = last.clone();
        match action {
            MemslotAction::S1(i) => {
                s.active += 1;
                s.invs[i].pc = InvPc::Active;
            }
            MemslotAction::S3(i) => {
                if overlaps(s.layout) {
                    s.in_progress += 1;
                }
                s.invs[i].layout_at_start = s.layout;
                s.invs[i].pc = InvPc::Started;
            }
            MemslotAction::E1(i) => {
                if s.layout != s.invs[i].layout_at_start {
                    s.layout_mismatch = true;
                }
                if overlaps(s.layout) {
                    if s.in_progress == 0 {
                        s.unbalanced = true;
                    } else {
                        s.in_progress -= 1;
                    }
                }
                s.invs[i].pc = InvPc::Ended;
            }
            MemslotAction::E2(i) => {
                s.active -= 1;
                if s.active == 0 {
                    s.woken = true;
                }
                s.invs[i].pc = InvPc::Done;
            }
            MemslotAction::W2(k) => {
                s.lock = Some(k);
                s.woken = false;
                s.swaps[k] = SwapPc::Locked;
            }
            MemslotAction::W3(k) => {
                if s.active == 0 || self.broken(MemslotMutant::NoWait) {
                    s.swaps[k] = SwapPc::Checked;
                    if self.broken(MemslotMutant::PublishAfterUnlock) {
                        s.lock = None;
                    }
                } else {
                    s.swaps[k] = SwapPc::Sleeping;
                    s.woken = false;
                    if !self.broken(MemslotMutant::WaitHoldingLock) {
                        s.lock = None;
                    }
                }
            }
            MemslotAction::W4(k) => {
                s.layout += 1;
                s.swaps[k] = SwapPc::Published;
            }
            MemslotAction::W5(k) => {
                if s.lock == Some(k) {
                    s.lock = None;
                }
                s.swaps[k] = SwapPc::Done;
            }
        }
        Some(s)
    }

    fn format_action(&self, action: &MemslotAction) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("start-end-same-layout", |_: &MemslotModel, s: &MemslotState| {
                !s.layout_mismatch
            }),
            Property::always("in-progress-balanced", |_: &MemslotModel, s: &MemslotState| {
                !s.unbalanced && (!MemslotModel::all_done(s) || s.in_progress == 0)
            }),
            Property::always("no-deadlock", |m: &MemslotModel, s: &MemslotState| {
                let mut acts = Vec::new();
                m.actions(s, &mut acts);
                !acts.is_empty() || MemslotModel::all_done(s)
            }),
            Property::eventually("all-finish", |_: &MemslotModel, s: &MemslotState| {
                MemslotModel::all_done(s)
            }),
            Property::sometimes("swap-waits-for-invalidation", |_: &MemslotModel, s: &MemslotState| {
                s.swaps.contains(&SwapPc::Sleeping)
            }),
        ]
    }
}
