//! P1 + P2: vCPU faults vs MMU-notifier invalidations with a merged gfn range.
//!
//! **Threads.** `vcpus` identical vCPUs, each taking one fault on a gfn it picks
//! nondeterministically (so the vCPUs are interchangeable and symmetry reduction applies), and
//! one invalidator per entry of `ranges`, each running one `invalidate_range_start`/`end` pair
//! over its gfn range (the default ranges overlap).
//!
//! **State.** The primary MMU maps gfn `g` to pfn generation `gen[g]`; an invalidation's
//! `Unmap` step (the primary MMU changing the mapping once start has returned) bumps the
//! generation of every gfn in its range, i.e. unmaps and frees the old pfn. The secondary MMU
//! is one SPTE per gfn (holding the generation it maps) and one TLB entry per gfn (every vCPU's
//! TLB together; `GuestAccess` fills it from the SPTE). Shared: `seq`, `in_progress`, the merged
//! range, and `mmu_lock` (an exclusive lock, as `ReferenceMmu::fault` takes it for write).
//!
//! **Steps.** The fault path, as `ReferenceMmu::fault` (`core/src/mmu.rs`) and
//! `Invalidation::retry_gfn` (`core/src/retry.rs`): F1 pick the gfn (its memslot lookup; F0's
//! SRCU section is implied), F4 snapshot `seq`, F8 resolve the pfn (read `gen[g]`), F11 take
//! `mmu_lock`, F12 the locked `retry_gfn` check (`in_progress` with the range, then `seq`; a
//! retry drops the lock and goes back to F4), F13 install the SPTE, F14 drop the lock. Labels
//! as in `core/docs/protocols.md`; F2 (fast path), F3, F5, F6, F9 are not modelled. The invalidation, as `Vm::start`/`end`
//! (`core/src/notifier.rs`): S3 take `mmu_lock`, `begin` (`in_progress++`, reset the range on
//! 0 → 1), `range_add` (min/max union), zap the SPTEs in the range; S4 flush the TLBs if
//! anything was zapped; S5 drop the lock (start returns); `Unmap`; E1 take the lock, `seq++`,
//! `in_progress--`, drop it.
//!
//! **Abstracted away.** S1/S2/E2 (the active count and the translation caches: no effect on
//! faults; see [`super::memslot`] and [`super::pfncache`]); the lockless `_unsafe` pre-checks
//! F7/F10 (hints: they only add retries); memslots (every gfn is in one); SRCU; the order of
//! `seq++` and `in_progress--` inside E1 (both under the lock, which the check also holds — the
//! lockless MP-1 form is what loom's `mp1-lockless-retry` checks); weak memory (every shared
//! access is under `mmu_lock` except the snapshot, and the snapshot → resolve order is a
//! load → load order that x86-TSO keeps; `FaultSnapshotBeforeResolve` is a C11 matter that
//! loom covers).
//!
//! **Properties.** `no-translation-in-open-range`: once an invalidation's start has returned
//! and until its end, no SPTE or TLB entry maps a gfn of its range. `no-stale-translation`: no
//! SPTE or TLB entry maps a pfn generation the primary MMU has replaced.

use serde::Serialize;
use stateright::{Model, Property, Representative};
use std::fmt;

/// A rule of P1/P2 a mutant breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum FaultMutant {
    /// F12 does not read `in_progress` (`Rule::RetryChecksInProgress`).
    SkipInProgressCheck,
    /// F12 does not compare `seq` with the snapshot (`Rule::RetryChecksSeq`).
    SkipSeqCheck,
    /// F12 ignores the merged range: an open invalidation forces no retry
    /// (`Rule::RetryGfnChecksRange`).
    SkipRangeCheck,
    /// The fault resolves the pfn (F8) before it snapshots `seq` (F4).
    SnapshotAfterResolve,
    /// No locked re-check at all (`Rule::FaultRetriesUnderLock`).
    NoLockedRecheck,
    /// `range_add` overwrites the range instead of merging it (`Rule::RangeAddMerges`).
    RangeOverwrites,
    /// Start drops `mmu_lock` (S5) before it flushes the TLBs (S4).
    FlushAfterUnlock,
}

/// The fault-vs-invalidation model.
#[derive(Clone, Debug)]
pub struct FaultModel {
    /// Number of vCPUs (each takes one fault).
    pub vcpus: usize,
    /// Number of gfns (0..gfns).
    pub gfns: u8,
    /// One invalidator per range, `[start, end)`.
    pub ranges: Vec<(u8, u8)>,
    /// The broken rule, if any.
    pub mutant: Option<FaultMutant>,
}

/// Where a vCPU's fault is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum VcpuPc {
    /// Not started.
    Idle,
    /// F1 done: gfn chosen; next F4 (or F8 for the mutant).
    Chosen,
    /// F4 done (correct order) or F8 done (mutant order): the other one is next.
    Half,
    /// F4 and F8 done; next F11.
    Resolved,
    /// Holding `mmu_lock`; next F12.
    Locked,
    /// F12 passed; still holding the lock; next F13.
    Checked,
    /// Installed, still holding the lock; next F14.
    Installed,
    /// Installed.
    Done,
}

/// One vCPU's local state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VcpuState {
    /// Program counter.
    pub pc: VcpuPc,
    /// The gfn it faults on.
    pub gfn: u8,
    /// The `seq` snapshot.
    pub snap: u8,
    /// The resolved pfn generation.
    pub pfn: u8,
    /// Whether it holds `mmu_lock`.
    pub locked: bool,
}

/// Where an invalidation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvPc {
    /// Not started; next S3.
    Idle,
    /// S3 done (holding the lock, zapped); next S4 (or S5 for the mutant).
    Zapped,
    /// S4 done (mutant: S5 done); next S5 (mutant: S4).
    Half,
    /// Start returned; next `Unmap`.
    Started,
    /// The primary MMU changed the mapping; next E1.
    Unmapped,
    /// End done.
    Done,
}

/// One invalidator's local state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InvState {
    /// Program counter.
    pub pc: InvPc,
    /// Whether its zap cleared an SPTE (so S4 must flush).
    pub need_flush: bool,
    /// Whether it holds `mmu_lock`.
    pub locked: bool,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FaultState {
    /// vCPUs (interchangeable).
    pub vcpus: Vec<VcpuState>,
    /// Invalidators (each has its own range).
    pub invs: Vec<InvState>,
    /// `mmu_invalidate_seq`.
    pub seq: u8,
    /// `mmu_invalidate_in_progress`.
    pub in_progress: u8,
    /// The merged range, `None` = `NO_RANGE`.
    pub range: Option<(u8, u8)>,
    /// Primary MMU: pfn generation of each gfn.
    pub gen: Vec<u8>,
    /// Secondary MMU: the generation each gfn's SPTE maps.
    pub spte: Vec<Option<u8>>,
    /// The TLB entry of each gfn.
    pub tlb: Vec<Option<u8>>,
}

impl FaultState {
    fn lock_free(&self) -> bool {
        !self.vcpus.iter().any(|v| v.locked) && !self.invs.iter().any(|i| i.locked)
    }
}

impl Representative for FaultState {
    fn representative(&self) -> Self {
        let mut s = self.clone();
        s.vcpus.sort();
        s
    }
}

/// A step of the fault path or of an invalidation, labelled as in core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultAction {
    /// F1: the vCPU finds the memslot of the gfn it faults on (the gfn is picked here; F0's
    /// SRCU section is implied, no memslot changes in this model).
    F1 {
        /// vCPU index.
        vcpu: usize,
        /// The gfn.
        gfn: u8,
    },
    /// F4: `mmu_seq = seq` (snapshot).
    F4 {
        /// vCPU index.
        vcpu: usize,
    },
    /// F8: resolve gfn → pfn in the primary MMU (reads the current generation).
    F8 {
        /// vCPU index.
        vcpu: usize,
    },
    /// F11: take `mmu_lock`.
    F11 {
        /// vCPU index.
        vcpu: usize,
    },
    /// F12: `retry_gfn` under the lock (a retry drops the lock and returns to F4).
    F12 {
        /// vCPU index.
        vcpu: usize,
    },
    /// F13: install the SPTE.
    F13 {
        /// vCPU index.
        vcpu: usize,
    },
    /// F14: drop `mmu_lock`.
    F14 {
        /// vCPU index.
        vcpu: usize,
    },
    /// The guest touches the gfn: the TLB caches its SPTE.
    GuestAccess {
        /// The gfn.
        gfn: u8,
    },
    /// S3: `mmu_lock`, `begin` (`in_progress++`), `range_add`, zap the range's SPTEs.
    S3 {
        /// Invalidator index.
        inv: usize,
    },
    /// S4: flush remote TLBs if the zap cleared anything.
    S4 {
        /// Invalidator index.
        inv: usize,
    },
    /// S5: drop `mmu_lock`.
    S5 {
        /// Invalidator index.
        inv: usize,
    },
    /// The primary MMU unmaps the range (start has returned): new pfns, old ones freed.
    Unmap {
        /// Invalidator index.
        inv: usize,
    },
    /// E1: `mmu_lock`, `seq++`, `in_progress--`, unlock.
    E1 {
        /// Invalidator index.
        inv: usize,
    },
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FaultAction::F1 { vcpu, gfn } => write!(f, "vcpu{vcpu} F1 fault on gfn {gfn}"),
            FaultAction::F4 { vcpu } => write!(f, "vcpu{vcpu} F4 snapshot seq"),
            FaultAction::F8 { vcpu } => write!(f, "vcpu{vcpu} F8 resolve pfn"),
            FaultAction::F11 { vcpu } => write!(f, "vcpu{vcpu} F11 take mmu_lock"),
            FaultAction::F12 { vcpu } => write!(f, "vcpu{vcpu} F12 retry_gfn check"),
            FaultAction::F13 { vcpu } => write!(f, "vcpu{vcpu} F13 install SPTE"),
            FaultAction::F14 { vcpu } => write!(f, "vcpu{vcpu} F14 unlock"),
            FaultAction::GuestAccess { gfn } => write!(f, "guest accesses gfn {gfn} (TLB fill)"),
            FaultAction::S3 { inv } => write!(f, "inv{inv} S3 lock, begin, range_add, zap"),
            FaultAction::S4 { inv } => write!(f, "inv{inv} S4 flush TLBs if zapped"),
            FaultAction::S5 { inv } => write!(f, "inv{inv} S5 unlock"),
            FaultAction::Unmap { inv } => write!(f, "inv{inv} primary MMU unmaps range, frees pfns"),
            FaultAction::E1 { inv } => write!(f, "inv{inv} E1 lock, seq++, in_progress--, unlock"),
        }
    }
}

impl FaultModel {
    /// The default instance: `vcpus` vCPUs, 3 gfns, invalidators over `[0,2)` and `[1,3)`.
    pub fn new(vcpus: usize, mutant: Option<FaultMutant>) -> Self {
        FaultModel { vcpus, gfns: 3, ranges: vec![(0, 2), (1, 3)], mutant }
    }

    fn broken(&self, m: FaultMutant) -> bool {
        self.mutant == Some(m)
    }

    fn in_range(&self, inv: usize, g: u8) -> bool {
        let (s, e) = self.ranges[inv];
        s <= g && g < e
    }
}

impl Model for FaultModel {
    type State = FaultState;
    type Action = FaultAction;

    fn init_states(&self) -> Vec<FaultState> {
        let g = self.gfns as usize;
        vec![FaultState {
            vcpus: vec![VcpuState { pc: VcpuPc::Idle, gfn: 0, snap: 0, pfn: 0, locked: false }; self.vcpus],
            invs: vec![InvState { pc: InvPc::Idle, need_flush: false, locked: false }; self.ranges.len()],
            seq: 0,
            in_progress: 0,
            range: None,
            gen: vec![0; g],
            spte: vec![None; g],
            tlb: vec![None; g],
        }]
    }

    fn actions(&self, s: &FaultState, out: &mut Vec<FaultAction>) {
        let free = s.lock_free();
        for (vcpu, v) in s.vcpus.iter().enumerate() {
            match v.pc {
                VcpuPc::Idle => out.extend((0..self.gfns).map(|gfn| FaultAction::F1 { vcpu, gfn })),
                VcpuPc::Chosen if self.broken(FaultMutant::SnapshotAfterResolve) => {
                    out.push(FaultAction::F8 { vcpu })
                }
                VcpuPc::Chosen => out.push(FaultAction::F4 { vcpu }),
                VcpuPc::Half if self.broken(FaultMutant::SnapshotAfterResolve) => {
                    out.push(FaultAction::F4 { vcpu })
                }
                VcpuPc::Half => out.push(FaultAction::F8 { vcpu }),
                VcpuPc::Resolved if free => out.push(FaultAction::F11 { vcpu }),
                VcpuPc::Locked => out.push(FaultAction::F12 { vcpu }),
                VcpuPc::Checked => out.push(FaultAction::F13 { vcpu }),
                VcpuPc::Installed => out.push(FaultAction::F14 { vcpu }),
                _ => {}
            }
        }
        for gfn in 0..self.gfns {
            if s.spte[gfn as usize].is_some() && s.tlb[gfn as usize] != s.spte[gfn as usize] {
                out.push(FaultAction::GuestAccess { gfn });
            }
        }
        for (inv, i) in s.invs.iter().enumerate() {
            let flush_late = self.broken(FaultMutant::FlushAfterUnlock);
            match i.pc {
                InvPc::Idle if free => out.push(FaultAction::S3 { inv }),
                InvPc::Zapped if flush_late => out.push(FaultAction::S5 { inv }),
                InvPc::Zapped => out.push(FaultAction::S4 { inv }),
                InvPc::Half if flush_late => out.push(FaultAction::S4 { inv }),
                InvPc::Half => out.push(FaultAction::S5 { inv }),
                InvPc::Started => out.push(FaultAction::Unmap { inv }),
                InvPc::Unmapped if free => out.push(FaultAction::E1 { inv }),
                _ => {}
            }
        }
    }

    fn next_state(&self, last: &FaultState, action: FaultAction) -> Option<FaultState> {
        let mut s = last.clone();
        let snap_last = self.broken(FaultMutant::SnapshotAfterResolve);
        match action {
            FaultAction::F1 { vcpu, gfn } => {
                let v = &mut s.vcpus[vcpu];
                v.gfn = gfn;
                v.pc = VcpuPc::Chosen;
            }
            FaultAction::F4 { vcpu } => {
                let seq = s.seq;
                let v = &mut s.vcpus[vcpu];
                v.snap = seq;
                v.pc = if snap_last { VcpuPc::Resolved } else { VcpuPc::Half };
            }
            FaultAction::F8 { vcpu } => {
                let g = s.vcpus[vcpu].gfn as usize;
                let v = &mut s.vcpus[vcpu];
                v.pfn = last.gen[g];
                v.pc = if snap_last { VcpuPc::Half } else { VcpuPc::Resolved };
            }
            FaultAction::F11 { vcpu } => {
                let v = &mut s.vcpus[vcpu];
                v.locked = true;
                v.pc = VcpuPc::Locked;
            }
            FaultAction::F12 { vcpu } => {
                let v = &s.vcpus[vcpu];
                let retry = if self.broken(FaultMutant::NoLockedRecheck) {
                    false
                } else {
                    let mut r = false;
                    if !self.broken(FaultMutant::SkipInProgressCheck) && s.in_progress != 0 {
                        match s.range {
                            None => r = true,
                            Some((a, b)) => {
                                if !self.broken(FaultMutant::SkipRangeCheck) && a <= v.gfn && v.gfn < b {
                                    r = true;
                                }
                            }
                        }
                    }
                    r || (!self.broken(FaultMutant::SkipSeqCheck) && s.seq != v.snap)
                };
                let v = &mut s.vcpus[vcpu];
                if retry {
                    v.locked = false;
                    v.pc = VcpuPc::Chosen;
                } else {
                    v.pc = VcpuPc::Checked;
                }
            }
            FaultAction::F13 { vcpu } => {
                let (g, pfn) = (s.vcpus[vcpu].gfn as usize, s.vcpus[vcpu].pfn);
                s.spte[g] = Some(pfn);
                s.vcpus[vcpu].pc = VcpuPc::Installed;
            }
            FaultAction::F14 { vcpu } => {
                let v = &mut s.vcpus[vcpu];
                v.locked = false;
                v.pc = VcpuPc::Done;
            }
            FaultAction::GuestAccess { gfn } => s.tlb[gfn as usize] = s.spte[gfn as usize],
            FaultAction::S3 { inv } => {
                let (a, b) = self.ranges[inv];
                s.in_progress += 1;
                if s.in_progress == 1 {
                    s.range = None;
                }
                s.range = match s.range {
                    Some((x, y)) if !self.broken(FaultMutant::RangeOverwrites) => Some((x.min(a), y.max(b))),
                    _ => Some((a, b)),
                };
                let mut zapped = false;
                for g in a..b {
                    zapped |= s.spte[g as usize].take().is_some();
                }
                let i = &mut s.invs[inv];
                i.locked = true;
                i.need_flush = zapped;
                i.pc = InvPc::Zapped;
            }
            FaultAction::S4 { inv } => {
                if s.invs[inv].need_flush {
                    s.tlb.iter_mut().for_each(|t| *t = None);
                }
                let i = &mut s.invs[inv];
                i.need_flush = false;
                i.pc = if i.pc == InvPc::Zapped { InvPc::Half } else { InvPc::Started };
            }
            FaultAction::S5 { inv } => {
                let i = &mut s.invs[inv];
                i.locked = false;
                i.pc = if i.pc == InvPc::Zapped { InvPc::Half } else { InvPc::Started };
            }
            FaultAction::Unmap { inv } => {
                for g in 0..self.gfns {
                    if self.in_range(inv, g) {
                        s.gen[g as usize] += 1;
                    }
                }
                s.invs[inv].pc = InvPc::Unmapped;
            }
            FaultAction::E1 { inv } => {
                s.seq += 1;
                s.in_progress -= 1;
                s.invs[inv].pc = InvPc::Done;
            }
        }
        Some(s)
    }

    fn format_action(&self, action: &FaultAction) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("no-translation-in-open-range", |m: &FaultModel, s: &FaultState| {
                s.invs.iter().enumerate().all(|(inv, i)| {
                    !matches!(i.pc, InvPc::Started | InvPc::Unmapped)
                        || (0..m.gfns)
                            .filter(|g| m.in_range(inv, *g))
                            .all(|g| s.spte[g as usize].is_none() && s.tlb[g as usize].is_none())
                })
            }),
            Property::always("no-stale-translation", |_: &FaultModel, s: &FaultState| {
                s.gen
                    .iter()
                    .enumerate()
                    .all(|(g, gen)| s.spte[g].is_none_or(|p| p == *gen) && s.tlb[g].is_none_or(|p| p == *gen))
            }),
            Property::sometimes("fault-installs-new-pfn", |_: &FaultModel, s: &FaultState| {
                s.spte.iter().any(|p| matches!(p, Some(g) if *g > 0))
            }),
        ]
    }
}
