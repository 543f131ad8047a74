//! P2: the translation-cache refresh (`hva_to_pfn_retry`) vs invalidations of its hva.
//!
//! **Threads.** One refresher (refreshes are serialized by `refresh_lock`, so one suffices)
//! refreshing an active, invalid cache of one hva, and `invalidators` invalidations whose
//! range covers that hva. Each invalidation either hits a memslot or not ([`PfnCacheModel`]'s
//! `in_memslot`): a cache activated by hva (`kvm_gpc_activate_hva`, Xen's shared-info and
//! vcpu-info pages) may cache an hva no memslot maps.
//!
//! **Steps.** Refresher, as `TranslationCache::try_refresh` (`core/src/pfncache.rs`): R2 take
//! the cache lock, R4a `valid = false`; R4b snapshot `seq` (and, with the fix, the cache's own
//! invalidation count), drop the lock; R4d resolve hva → pfn in the primary MMU (reads the
//! current pfn generation); R4f take the cache lock; R4g `mmu_notifier_retry_cache`: retry if
//! the active count is non-zero or `seq` moved (with the fix: or the cache's invalidation count
//! moved) — a retry goes back to R4b with the lock held; R4h `valid = true`, store the pfn,
//! drop the lock. Invalidation, as `Vm::start`/`end`: S1 `active++`; S2 under the cache lock,
//! if the cache is valid and its hva is in the range, `valid = false`; S3 if a memslot
//! overlaps, `begin` (`in_progress++`); `Unmap` the primary MMU remaps the hva (new pfn, the
//! old one is freed once the refresher drops its reference); E1 if a memslot overlaps, `seq++`,
//! `in_progress--`; E2 `active--`. The candidate fixes ([`Fix`]) add a cache-local invalidation
//! count that the refresh snapshots at R4b and re-checks at R4g, bumped at S2
//! ([`Fix::StartBump`], refuted by the model), at E1 before E2 ([`Fix::EndBump`], proved), or
//! after E2 ([`Fix::EndBumpAfterCount`], refuted).
//!
//! **Abstracted away.** Consumers (`check` + use under the read lock: a valid cache is what
//! they trust, so the property is stated on `valid`); `refresh_lock`; the hva change of R3
//! (loom's `cache-hva-change-vs-consumer`); weak memory (every access the check makes is under
//! the cache lock except the count and `seq` reads, whose order is load → load, which x86-TSO
//! keeps; `CacheCountBeforeSeq` is a C11/Arm matter that loom checks); `mmu_lock` (no fault
//! here). Each invalidation runs once, so the retry loop terminates.
//!
//! **Property.** `valid-cache-not-stale`: whenever the cache is valid, its pfn is the one the
//! primary MMU maps the hva to now.

use serde::Serialize;
use stateright::{Model, Property, Representative};
use std::fmt;

/// A rule of the refresh a mutant breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum PfnCacheMutant {
    /// R4g ignores the active count (`Rule::CacheChecksActiveCount`).
    SkipActiveCount,
    /// R4g ignores `seq`.
    SkipSeq,
    /// The snapshot (R4b) is taken after the resolution (R4d).
    SnapshotAfterResolve,
}

/// A candidate fix for the race of caches outside memslots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Fix {
    /// None: KVM's algorithm (active count + `seq`).
    None,
    /// S2 bumps the cache's count (valid or not). Not enough: an invalidation whose S2 ran
    /// before the refresh's snapshot and whose `Unmap` and E2 fall inside the resolution
    /// window still goes unseen.
    StartBump,
    /// The end bumps the cache's count at E1, before E2 lowers the active count (the proposal).
    EndBump,
    /// As `EndBump` but after E2 lowered the count: the order matters.
    EndBumpAfterCount,
}

/// The refresh-vs-invalidation model.
#[derive(Clone, Debug)]
pub struct PfnCacheModel {
    /// Number of invalidations of the cached hva.
    pub invalidators: usize,
    /// Whether the invalidated range overlaps a memslot (KVM bumps `seq` only then).
    pub in_memslot: bool,
    /// Which fix, if any: a cache-local invalidation count, snapshotted at R4b and re-checked
    /// at R4g, bumped by the invalidations that cover the cache's hva.
    pub fix: Fix,
    /// The broken rule, if any.
    pub mutant: Option<PfnCacheMutant>,
}

/// Where the refresher is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefreshPc {
    /// Next R2.
    Idle,
    /// Holding the cache lock; next R4b.
    Locked,
    /// Snapshot taken, lock dropped; next R4d (mutant: R4d done, next R4b).
    Snapped,
    /// Resolved; next R4f.
    Resolved,
    /// Holding the lock again; next R4g.
    Relocked,
    /// R4g passed; next R4h.
    Checked,
    /// Done: the cache is valid (unless invalidated since).
    Done,
}

/// Where an invalidation is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvPc {
    /// Next S1.
    Idle,
    /// Next S2.
    Active,
    /// Next S3.
    CacheDone,
    /// Start returned; next `Unmap`.
    Started,
    /// Next E1.
    Unmapped,
    /// Next E2.
    Ended,
    /// `Fix::EndBumpAfterCount` only: next the late bump (E3).
    Late,
    /// Finished.
    Done,
}

/// The whole state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PfnCacheState {
    /// Refresher.
    pub pc: RefreshPc,
    /// The refresher's `seq` snapshot.
    pub snap_seq: u8,
    /// The refresher's snapshot of the cache-local invalidation count (fix).
    pub snap_cinv: u8,
    /// The pfn it resolved.
    pub resolved: u8,
    /// Invalidations (interchangeable).
    pub invs: Vec<InvPc>,
    /// Who holds the cache lock: the refresher.
    pub refresher_holds_lock: bool,
    /// `gpc->valid`.
    pub valid: bool,
    /// `gpc->pfn`.
    pub pfn: u8,
    /// The cache-local invalidation count (fix).
    pub cinv: u8,
    /// `mn_active_invalidate_count`.
    pub active: u8,
    /// `mmu_invalidate_seq`.
    pub seq: u8,
    /// `mmu_invalidate_in_progress`.
    pub in_progress: u8,
    /// The pfn generation the primary MMU maps the hva to.
    pub gen: u8,
}

impl Representative for PfnCacheState {
    fn representative(&self) -> Self {
        let mut s = self.clone();
        s.invs.sort();
        s
    }
}

/// A step of the refresh or of an invalidation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PfnCacheAction {
    /// R2 + R4a: take the cache lock, `valid = false`.
    R2,
    /// R4b: snapshot `seq` (fix: and the cache's invalidation count), drop the lock.
    R4b,
    /// R4d: resolve hva → pfn, no lock held.
    R4d,
    /// R4f: take the cache lock.
    R4f,
    /// R4g: `mmu_notifier_retry_cache` (retry → back to R4b, lock held).
    R4g,
    /// R4h: `valid = true`, store the pfn, drop the lock.
    R4h,
    /// S1: `active++`.
    S1(usize),
    /// S2: invalidate the cache under its lock.
    S2(usize),
    /// S3: `begin` if a memslot overlaps.
    S3(usize),
    /// The primary MMU remaps the hva; the old pfn is freed.
    Unmap(usize),
    /// E1: `seq++`, `in_progress--` if a memslot overlaps.
    E1(usize),
    /// E2: `active--`.
    E2(usize),
    /// `Fix::EndBumpAfterCount`: the cache count bump after E2.
    E3(usize),
}

impl fmt::Display for PfnCacheAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PfnCacheAction::R2 => write!(f, "refresher R2 lock cache, R4a valid=false"),
            PfnCacheAction::R4b => write!(f, "refresher R4b snapshot seq, unlock"),
            PfnCacheAction::R4d => write!(f, "refresher R4d resolve hva->pfn"),
            PfnCacheAction::R4f => write!(f, "refresher R4f lock cache"),
            PfnCacheAction::R4g => write!(f, "refresher R4g retry check (active count, seq)"),
            PfnCacheAction::R4h => write!(f, "refresher R4h valid=true, store pfn, unlock"),
            PfnCacheAction::S1(i) => write!(f, "inv{i} S1 active++"),
            PfnCacheAction::S2(i) => write!(f, "inv{i} S2 invalidate cache if valid"),
            PfnCacheAction::S3(i) => write!(f, "inv{i} S3 begin if a memslot overlaps"),
            PfnCacheAction::Unmap(i) => write!(f, "inv{i} primary MMU remaps hva, old pfn freed"),
            PfnCacheAction::E1(i) => write!(f, "inv{i} E1 seq++ if a memslot overlaps (fix: cache count++)"),
            PfnCacheAction::E2(i) => write!(f, "inv{i} E2 active--"),
            PfnCacheAction::E3(i) => write!(f, "inv{i} late cache count++"),
        }
    }
}

impl PfnCacheModel {
    fn broken(&self, m: PfnCacheMutant) -> bool {
        self.mutant == Some(m)
    }
}

impl Model for PfnCacheModel {
    type State = PfnCacheState;
    type Action = PfnCacheAction;

    fn init_states(&self) -> Vec<PfnCacheState> {
        vec![PfnCacheState {
            pc: RefreshPc::Idle,
            snap_seq: 0,
            snap_cinv: 0,
            resolved: 0,
            invs: vec![InvPc::Idle; self.invalidators],
            refresher_holds_lock: false,
            valid: false,
            pfn: 0,
            cinv: 0,
            active: 0,
            seq: 0,
            in_progress: 0,
            gen: 0,
        }]
    }

    fn actions(&self, s: &PfnCacheState, out: &mut Vec<PfnCacheAction>) {
        let free = !s.refresher_holds_lock;
        let late_snap = self.broken(PfnCacheMutant::SnapshotAfterResolve);
        match s.pc {
            RefreshPc::Idle if free => out.push(PfnCacheAction::R2),
            RefreshPc::Locked if late_snap => out.push(PfnCacheAction::R4d),
            RefreshPc::Locked => out.push(PfnCacheAction::R4b),
            RefreshPc::Snapped if late_snap => out.push(PfnCacheAction::R4b),
            RefreshPc::Snapped => out.push(PfnCacheAction::R4d),
            RefreshPc::Resolved => out.push(PfnCacheAction::R4f),
            RefreshPc::Relocked => out.push(PfnCacheAction::R4g),
            RefreshPc::Checked => out.push(PfnCacheAction::R4h),
            _ => {}
        }
        for (i, inv) in s.invs.iter().enumerate() {
            match inv {
                InvPc::Idle => out.push(PfnCacheAction::S1(i)),
                InvPc::Active if free => out.push(PfnCacheAction::S2(i)),
                InvPc::CacheDone => out.push(PfnCacheAction::S3(i)),
                InvPc::Started => out.push(PfnCacheAction::Unmap(i)),
                InvPc::Unmapped => out.push(PfnCacheAction::E1(i)),
                InvPc::Ended => out.push(PfnCacheAction::E2(i)),
                InvPc::Late => out.push(PfnCacheAction::E3(i)),
                _ => {}
            }
        }
    }

    fn next_state(&self, last: &PfnCacheState, action: PfnCacheAction) -> Option<PfnCacheState> {
        let mut s = last.clone();
        let late_snap = self.broken(PfnCacheMutant::SnapshotAfterResolve);
        match action {
            PfnCacheAction::R2 => {
                s.refresher_holds_lock = true;
                s.valid = false;
                s.pc = RefreshPc::Locked;
            }
            PfnCacheAction::R4b => {
                s.snap_seq = s.seq;
                s.snap_cinv = s.cinv;
                if late_snap {
                    // The mutant snapshots outside the lock, after resolving.
                    s.pc = RefreshPc::Resolved;
                } else {
                    s.refresher_holds_lock = false;
                    s.pc = RefreshPc::Snapped;
                }
            }
            PfnCacheAction::R4d => {
                s.resolved = s.gen;
                if late_snap {
                    s.refresher_holds_lock = false;
                    s.pc = RefreshPc::Snapped;
                } else {
                    s.pc = RefreshPc::Resolved;
                }
            }
            PfnCacheAction::R4f => {
                s.refresher_holds_lock = true;
                s.pc = RefreshPc::Relocked;
            }
            PfnCacheAction::R4g => {
                let retry = (!self.broken(PfnCacheMutant::SkipActiveCount) && s.active != 0)
                    || (!self.broken(PfnCacheMutant::SkipSeq) && s.seq != s.snap_seq)
                    || (self.fix != Fix::None && s.cinv != s.snap_cinv);
                s.pc = if retry { RefreshPc::Locked } else { RefreshPc::Checked };
            }
            PfnCacheAction::R4h => {
                s.valid = true;
                s.pfn = s.resolved;
                s.refresher_holds_lock = false;
                s.pc = RefreshPc::Done;
            }
            PfnCacheAction::S1(i) => {
                s.active += 1;
                s.invs[i] = InvPc::Active;
            }
            PfnCacheAction::S2(i) => {
                // The range covers the cache's hva.
                s.valid = false;
                if self.fix == Fix::StartBump {
                    s.cinv += 1;
                }
                s.invs[i] = InvPc::CacheDone;
            }
            PfnCacheAction::S3(i) => {
                if self.in_memslot {
                    s.in_progress += 1;
                }
                s.invs[i] = InvPc::Started;
            }
            PfnCacheAction::Unmap(i) => {
                s.gen += 1;
                s.invs[i] = InvPc::Unmapped;
            }
            PfnCacheAction::E1(i) => {
                if self.in_memslot {
                    s.seq += 1;
                    s.in_progress -= 1;
                }
                if self.fix == Fix::EndBump {
                    s.cinv += 1;
                }
                s.invs[i] = InvPc::Ended;
            }
            PfnCacheAction::E2(i) => {
                s.active -= 1;
                s.invs[i] = if self.fix == Fix::EndBumpAfterCount { InvPc::Late } else { InvPc::Done };
            }
            PfnCacheAction::E3(i) => {
                s.cinv += 1;
                s.invs[i] = InvPc::Done;
            }
        }
        Some(s)
    }

    fn format_action(&self, action: &PfnCacheAction) -> String {
        action.to_string()
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("valid-cache-not-stale", |_: &PfnCacheModel, s: &PfnCacheState| {
                !s.valid || s.pfn == s.gen
            }),
            Property::sometimes("refresh-validates", |_: &PfnCacheModel, s: &PfnCacheState| {
                s.valid && s.gen > 0
            }),
        ]
    }
}
