//! The pfncache model (the translation-cache refresh) as a projection:
//! `cache-refresh-vs-invalidation`.
//!
//! The scenario runs one attempt of `TranslationCache::try_refresh` (R2–R4h, a cache active on
//! host page 0 but not valid) against one `Vm::start`/`end` pair over that page, whose primary
//! MMU remaps it from pfn 1 to pfn 2 between start and end. The memslot covers the page, so the
//! model instance has `in_memslot` and KVM's algorithm (`Fix::None`: core has no cache-local
//! invalidation count).
//!
//! The model's refresher loops on a retry, holding the cache lock back to R4b, as KVM's
//! `hva_to_pfn_retry` and core's `TranslationCache::refresh` do. The scenario's bounded
//! `try_refresh` gives up instead once its attempts are spent: it drops the lock, leaving the
//! cache invalid, and an invalidation's S2 can then take it. So the projection replays in
//! [`BoundedRefresh`], the model with that one extra branch. The resolution (R4d) and the
//! primary MMU's remap report no core step: they are silent, and their effect is checked where
//! it shows, in the pfn `CacheValid` reports.

use super::{expect, Projected, Projection, TraceStep};
use crate::models::pfncache::{
    Fix, InvPc, PfnCacheAction, PfnCacheModel, PfnCacheMutant, PfnCacheState, RefreshPc,
};
use mmusync::{Gfn, Hva, Pfn, Step};
use stateright::Model;
use std::fmt;

/// The pfncache model with core's bounded refresh (`TranslationCache::try_refresh`): after
/// `attempts` snapshots (R4b), a retry at R4g gives up (`try_refresh` returns `Ok(None)`: the
/// lock dropped, the cache left invalid, the refresh done) instead of snapshotting again.
#[derive(Clone, Debug)]
pub struct BoundedRefresh {
    /// The model; its refresher's actions are those of one refresh with `attempts` attempts.
    pub model: PfnCacheModel,
    /// The attempts the refresh makes (`max_attempts`).
    pub attempts: u8,
}

/// A state of [`BoundedRefresh`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BoundedState {
    /// The model's state.
    pub model: PfnCacheState,
    /// The attempts begun (R4b taken).
    pub attempts: u8,
}

/// An action of [`BoundedRefresh`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BoundedAction {
    /// A model action.
    Model(PfnCacheAction),
    /// The refresh gives up after its last attempt retried.
    GiveUp,
}

impl BoundedRefresh {
    /// Whether the refresh has spent its attempts and must give up (R4g answered retry).
    fn spent(&self, s: &BoundedState) -> bool {
        s.model.pc == RefreshPc::Locked && s.attempts >= self.attempts
    }
}

impl Model for BoundedRefresh {
    type State = BoundedState;
    type Action = BoundedAction;

    fn init_states(&self) -> Vec<BoundedState> {
        self.model.init_states().into_iter().map(|model| BoundedState { model, attempts: 0 }).collect()
    }

    fn actions(&self, s: &BoundedState, out: &mut Vec<BoundedAction>) {
        let mut acts = Vec::new();
        self.model.actions(&s.model, &mut acts);
        let spent = self.spent(s);
        out.extend(
            acts.into_iter().filter(|a| !(spent && *a == PfnCacheAction::R4b)).map(BoundedAction::Model),
        );
        if spent {
            out.push(BoundedAction::GiveUp);
        }
    }

    fn next_state(&self, last: &BoundedState, action: BoundedAction) -> Option<BoundedState> {
        match action {
            BoundedAction::Model(a) => {
                let attempts = last.attempts + u8::from(a == PfnCacheAction::R4b);
                Some(BoundedState { model: self.model.next_state(&last.model, a)?, attempts })
            }
            BoundedAction::GiveUp => {
                let mut model = last.model.clone();
                model.valid = false;
                model.refresher_holds_lock = false;
                model.pc = RefreshPc::Done;
                Some(BoundedState { model, attempts: last.attempts })
            }
        }
    }

    fn format_action(&self, action: &BoundedAction) -> String {
        match action {
            BoundedAction::Model(a) => a.to_string(),
            BoundedAction::GiveUp => "refresher gives up (attempts spent): valid=false, unlock".into(),
        }
    }
}

/// A thread of the pfncache model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheThread {
    /// The refresher.
    Refresher,
    /// Invalidation `i` (`PfnCacheState::invs[i]`).
    Inv(usize),
}

impl fmt::Display for CacheThread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheThread::Refresher => f.write_str("refresher"),
            CacheThread::Inv(i) => write!(f, "inv{i}"),
        }
    }
}

/// What a trace's scenario is, in the pfncache model's terms.
#[derive(Clone, Debug)]
pub struct CacheSetup {
    /// The model instance, with the scenario's bounded refresh.
    pub model: BoundedRefresh,
    /// `cpus[c]`: the model thread that CPU `c` plays.
    pub cpus: Vec<CacheThread>,
    /// The cached hva.
    pub hva: Hva,
    /// `pfns[k]`: the pfn the primary MMU maps the hva to in generation `k` (the model's `gen`;
    /// each invalidation's remap makes the next one).
    pub pfns: Vec<Pfn>,
    /// The gfns of the memslot the invalidations hit (`begin`'s range and S3c's zap).
    pub slot_gfns: (Gfn, Gfn),
}

impl CacheSetup {
    /// `cache-refresh-vs-invalidation` (models/src/scenarios/cache.rs): CPU 0 is the refresher
    /// (`try_refresh` with one attempt), CPU 1 one invalidation of host page 0 (hva 0x1000, memslot 0 = gfn 0),
    /// which remaps it from pfn 1 to pfn 2.
    pub fn cache_refresh_vs_invalidation(model_mutant: Option<PfnCacheMutant>) -> Self {
        CacheSetup {
            model: BoundedRefresh {
                model: PfnCacheModel {
                    invalidators: 1,
                    in_memslot: true,
                    fix: Fix::None,
                    mutant: model_mutant,
                },
                attempts: 1,
            },
            cpus: vec![CacheThread::Refresher, CacheThread::Inv(0)],
            hva: Hva(0x1000),
            pfns: vec![Pfn(1), Pfn(2)],
            slot_gfns: (Gfn(0), Gfn(1)),
        }
    }

    /// The pfn of generation `k`.
    fn pfn(&self, k: u8) -> Result<Pfn, String> {
        self.pfns
            .get(usize::from(k))
            .copied()
            .ok_or_else(|| format!("generation {k} has no pfn in the setup"))
    }
}

impl Projection for CacheSetup {
    type Model = BoundedRefresh;
    type Thread = CacheThread;

    fn model(&self) -> &BoundedRefresh {
        &self.model
    }

    fn thread(&self, cpu: usize) -> Option<CacheThread> {
        self.cpus.get(cpu).copied()
    }

    fn project(&self, step: &Step) -> Projected {
        use Projected::*;
        match step {
            Step::CacheSnapshot { .. } => Action("R4b"),
            Step::CacheRetry { .. } => Action("R4g"),
            Step::CacheValid { .. } => Action("R4h"),
            Step::ActiveStart { .. } => Action("S1"),
            Step::InvalidateCaches { .. } => Observe,
            Step::CacheInvalidated { .. } => Action("S2"),
            Step::InvalidateBegin { .. } => Action("S3"),
            Step::Unmap { .. } => Observe,
            Step::InvalidateEnd { .. } => Action("E1"),
            Step::ActiveEnd { .. } => Action("E2"),
            Step::InvalidateFlush => Abstracted("S4: the zap's TLB flush (the pfncache model has no SPTEs)"),
            Step::InvalidateRangeAdd { .. } => {
                Outside("S3b range_add: a start over several memslots (one memslot here)")
            }
            Step::CacheListed { .. } => Outside("K1-K2: the VM's cache list (not in the pfncache model)"),
            _ => Outside("not a step of a cache refresh or of invalidate_range_start/end"),
        }
    }

    /// Visible: R4b, R4g, R4h; S1, E2; S2 when it makes a valid cache invalid (core reports
    /// `CacheInvalidated` only then); S3 and E1 when a memslot overlaps (`begin` and `end` run
    /// only then). Silent: taking the cache lock (R2, R4f), the resolution (R4d), the primary
    /// MMU's remap (`Unmap`), the late count bump of a candidate fix core does not have, and
    /// the bounded refresh giving up (core reports nothing).
    fn silent(&self, s: &BoundedState, a: &BoundedAction) -> bool {
        let (s, a) = match a {
            BoundedAction::Model(a) => (&s.model, a),
            BoundedAction::GiveUp => return true,
        };
        match a {
            PfnCacheAction::R4b
            | PfnCacheAction::R4g
            | PfnCacheAction::R4h
            | PfnCacheAction::S1(_)
            | PfnCacheAction::E2(_) => false,
            PfnCacheAction::S2(_) => !s.valid,
            PfnCacheAction::S3(_) | PfnCacheAction::E1(_) => !self.model.model.in_memslot,
            PfnCacheAction::R2
            | PfnCacheAction::R4d
            | PfnCacheAction::R4f
            | PfnCacheAction::Unmap(_)
            | PfnCacheAction::E3(_) => true,
        }
    }

    fn reports(&self, a: &BoundedAction, _label: &str, thread: CacheThread, step: &Step) -> bool {
        use CacheThread::{Inv, Refresher};
        let BoundedAction::Model(a) = *a else { return false };
        match (a, thread, *step) {
            (PfnCacheAction::R4b, Refresher, Step::CacheSnapshot { .. })
            | (PfnCacheAction::R4g, Refresher, Step::CacheRetry { .. })
            | (PfnCacheAction::R4h, Refresher, Step::CacheValid { .. }) => true,
            (PfnCacheAction::S1(i), Inv(j), Step::ActiveStart { .. })
            | (PfnCacheAction::S2(i), Inv(j), Step::CacheInvalidated { .. })
            | (PfnCacheAction::S3(i), Inv(j), Step::InvalidateBegin { .. })
            | (PfnCacheAction::E1(i), Inv(j), Step::InvalidateEnd { .. })
            | (PfnCacheAction::E2(i), Inv(j), Step::ActiveEnd { .. }) => i == j,
            _ => false,
        }
    }

    fn check_action(
        &self,
        _thread: CacheThread,
        before: &BoundedState,
        after: &BoundedState,
        step: &Step,
        _history: &[TraceStep],
    ) -> Result<(), String> {
        let (before, after) = (&before.model, &after.model);
        match *step {
            Step::CacheSnapshot { seq } => expect("seq snapshot", u64::from(after.snap_seq), seq),
            Step::CacheRetry { active, retry } => {
                // Core reports the count it read when it was non-zero (and returns at once), 0
                // when it read 0 or skipped the read (the mutant).
                let counted = self.model.model.mutant != Some(PfnCacheMutant::SkipActiveCount);
                let read = if counted { u64::from(before.active) } else { 0 };
                expect("active count", read, active)?;
                let answer = after.pc == RefreshPc::Locked;
                if answer != retry {
                    return Err(format!(
                        "the model answers retry = {answer} (active {}, seq {}, snapshot {}), the trace {retry}",
                        before.active, before.seq, before.snap_seq
                    ));
                }
                Ok(())
            }
            Step::CacheValid { hva, pfn } => {
                expect("cached hva", self.hva, hva)?;
                expect("validated pfn", self.pfn(after.pfn)?, pfn)
            }
            Step::ActiveStart { count } | Step::ActiveEnd { count } => {
                expect("active count", u64::from(after.active), count)
            }
            Step::CacheInvalidated { hva, hit } => {
                expect("invalidated hva", self.hva, hva)?;
                expect("cache made invalid", true, hit)
            }
            Step::InvalidateBegin { in_progress, start, end } => {
                expect("in_progress", u64::from(after.in_progress), in_progress)?;
                expect("begin's range", self.slot_gfns, (start, end))
            }
            Step::InvalidateEnd { seq, in_progress } => {
                expect("seq", u64::from(after.seq), seq)?;
                expect("in_progress", u64::from(after.in_progress), in_progress)
            }
            step => Err(format!("no value check for {step:?}")),
        }
    }

    /// S2's announcement (`InvalidateCaches`, before the cache lock is taken): the invalidation
    /// is between S1 and S2, over the cached hva. S3c (`Unmap`): it is inside S3 (begun, the
    /// primary MMU not yet remapped), zapping the slot's gfns.
    fn check_observe(&self, s: &BoundedState, thread: CacheThread, step: &Step) -> Result<(), String> {
        let at = |i: usize, want: InvPc, what: &str| {
            let pc = s.model.invs[i];
            if pc == want {
                Ok(())
            } else {
                Err(format!("{what}: inv{i} is at {pc:?}, not {want:?}"))
            }
        };
        match (*step, thread) {
            (Step::InvalidateCaches { start, end }, CacheThread::Inv(i)) => {
                at(i, InvPc::Active, "S2")?;
                expect("the range covers the cached hva", true, start <= self.hva && self.hva < end)
            }
            (Step::Unmap { start, end, .. }, CacheThread::Inv(i)) => {
                at(i, InvPc::Started, "S3c")?;
                expect("zapped range", self.slot_gfns, (start, end))
            }
            (step, thread) => Err(format!("{thread} cannot report {step:?}")),
        }
    }

    /// Steps that may be reported later than the access they report.
    ///
    /// * `CacheRetry` with a zero count: R4g reads the count, then `seq` (a scheduling point),
    ///   then reports; an invalidation's S1 can come in between.
    /// * `InvalidateEnd`: E1 stores `seq`, then `in_progress`, then reports; the refresher can
    ///   read the new `seq` in between.
    /// * Under C11 (loom), R4b's `seq` and R4g's count are plain loads that no lock orders after
    ///   the invalidation's stores (the cache lock orders only S2): each may read the value an
    ///   earlier position would, which is where the lag rule tries it, after the refresher's
    ///   previous step. (A non-zero count returns at once, so lagging it moves no other read.)
    fn may_lag(&self, step: &Step) -> bool {
        matches!(step, Step::CacheSnapshot { .. } | Step::CacheRetry { .. } | Step::InvalidateEnd { .. })
    }
}
