//! Every check: the correct models (which must pass), the mutants (each must fail the property
//! it targets) and the pfncache finding (KVM's algorithm for caches outside memslots, which
//! fails; the fix, which passes).

use crate::models::fault::{FaultModel, FaultMutant};
use crate::models::memslot::{MemslotModel, MemslotMutant};
use crate::models::pfncache::{Fix, PfnCacheModel, PfnCacheMutant};
use crate::models::walk::{Reclaim, WalkModel, WalkMutant};
use crate::runner::{explore, Report, Search};
use crate::tso::Memory;
use mmusync::{Barrier, Rule};
use mmusync_models::Mutant;
use serde::Serialize;

/// How big the instances are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
pub enum Scale {
    /// The bounds `cargo test` uses (debug build, CI budget).
    Ci,
    /// Larger bounds for the release binary.
    Full,
}

/// What a check must find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Expect {
    /// No property fails, and every `sometimes` property has an example (not vacuous).
    Pass,
    /// This property fails (a mutant's target, or the pfncache race).
    Fail(&'static str),
}

type Runner = Box<dyn Fn(Search, Option<&'static str>) -> Report + Send + Sync>;

/// One model instance to check.
pub struct Check {
    /// Unique name, `model/variant`.
    pub name: String,
    /// The model ("fault", "memslot", "walk-ipi", "walk-epoch", "pfncache").
    pub model: &'static str,
    /// The memory model.
    pub memory: Memory,
    /// The mutant, if any, and the rule it breaks.
    pub mutant: Option<&'static str>,
    /// The core [`Rule`] or [`Barrier`] the mutant breaks, when it is the same rule removed
    /// (`docs/proofs.md` lists the mutants without one).
    pub core: Option<Mutant>,
    /// The instance size, in words.
    pub size: String,
    /// What the check must find.
    pub expect: Expect,
    /// Whether a plain BFS (no symmetry reduction) of a passing check fits in memory; where
    /// not, the binary runs the DFS with symmetry reduction only.
    pub bfs_fits: bool,
    run: Runner,
}

impl Check {
    /// Runs the check: a failing check stops at its target's first (with BFS: shortest)
    /// counterexample; a passing one explores everything.
    pub fn run(&self, search: Search) -> Report {
        let stop = match self.expect {
            Expect::Pass => None,
            Expect::Fail(p) => Some(p),
        };
        (self.run)(search, stop)
    }

    /// Whether `report` is what this check expects.
    pub fn verdict(&self, report: &Report) -> Result<(), String> {
        match self.expect {
            Expect::Pass => {
                if !report.failures().is_empty() {
                    return Err(format!("{}: unexpected failures {:?}", self.name, report.failures()));
                }
                if !report.missing_examples().is_empty() {
                    return Err(format!(
                        "{}: vacuous, no example for {:?}",
                        self.name,
                        report.missing_examples()
                    ));
                }
                Ok(())
            }
            Expect::Fail(p) => match report.counterexample(p) {
                Some(_) => Ok(()),
                None => Err(format!("{}: {p} did not fail (failures: {:?})", self.name, report.failures())),
            },
        }
    }
}

fn check(
    name: String,
    model: &'static str,
    memory: Memory,
    mutant: Option<&'static str>,
    size: String,
    expect: Expect,
    run: Runner,
) -> Check {
    Check { name, model, memory, mutant, core: None, size, expect, bfs_fits: true, run }
}

/// All checks at `scale`.
pub fn checks(scale: Scale) -> Vec<Check> {
    let mut v = Vec::new();
    let full = scale == Scale::Full;

    // P1 + P2.
    let vcpus = if full { 4 } else { 3 };
    let fsize = format!("{vcpus} vCPUs, 2 invalidators [0,2) [1,3), 3 gfns");
    v.push(check(
        "fault/correct".into(),
        "fault",
        Memory::Sc,
        None,
        fsize.clone(),
        Expect::Pass,
        Box::new(move |s, stop| explore(FaultModel::new(vcpus, None), s, stop)),
    ));
    // 4 vCPUs without symmetry reduction: more than 100 million states (BFS memory grows by
    // ~2.5 GB every 40 s); with it, see docs/proofs.md.
    if full {
        v.last_mut().expect("just pushed").bfs_fits = false;
    }
    let fault_mutants: [(FaultMutant, &'static str, &'static str); 7] = [
        (
            FaultMutant::SkipInProgressCheck,
            "fault skips the in_progress check",
            "no-translation-in-open-range",
        ),
        (FaultMutant::SkipSeqCheck, "fault skips the seq check", "no-stale-translation"),
        (FaultMutant::SkipRangeCheck, "fault skips the range check", "no-translation-in-open-range"),
        (FaultMutant::SnapshotAfterResolve, "snapshot taken after resolve", "no-stale-translation"),
        (FaultMutant::NoLockedRecheck, "no locked re-check", "no-translation-in-open-range"),
        (FaultMutant::RangeOverwrites, "range_add overwrites", "no-translation-in-open-range"),
        (
            FaultMutant::FlushAfterUnlock,
            "start flushes after dropping mmu_lock",
            "no-translation-in-open-range",
        ),
    ];
    for (m, what, target) in fault_mutants {
        v.push(check(
            format!("fault/{m:?}"),
            "fault",
            Memory::Sc,
            Some(what),
            fsize.clone(),
            Expect::Fail(target),
            Box::new(move |s, stop| explore(FaultModel::new(vcpus, Some(m)), s, stop)),
        ));
        v.last_mut().expect("just pushed").core = fault_core(m);
    }

    // P3.
    let (invs, swaps) = if full { (3, 2) } else { (2, 2) };
    let msize = format!("{invs} invalidators, {swaps} swaps");
    let mk = move |mutant| MemslotModel { invalidators: invs, swaps, mutant };
    v.push(check(
        "memslot/correct".into(),
        "memslot",
        Memory::Sc,
        None,
        msize.clone(),
        Expect::Pass,
        Box::new(move |s, stop| explore(mk(None), s, stop)),
    ));
    let memslot_mutants: [(MemslotMutant, &'static str, &'static str); 3] = [
        (MemslotMutant::NoWait, "swap doesn't wait for the active count", "start-end-same-layout"),
        (
            MemslotMutant::PublishAfterUnlock,
            "swap publishes after dropping the lock",
            "start-end-same-layout",
        ),
        (MemslotMutant::WaitHoldingLock, "swap waits holding mn_invalidate_lock", "no-deadlock"),
    ];
    for (m, what, target) in memslot_mutants {
        v.push(check(
            format!("memslot/{m:?}"),
            "memslot",
            Memory::Sc,
            Some(what),
            msize.clone(),
            Expect::Fail(target),
            Box::new(move |s, stop| explore(mk(Some(m)), s, stop)),
        ));
        v.last_mut().expect("just pushed").core = memslot_core(m);
    }

    // P5.
    let walkers = if full { 4 } else { 3 };
    for reclaim in [Reclaim::Ipi, Reclaim::Epoch] {
        let model = match reclaim {
            Reclaim::Ipi => "walk-ipi",
            Reclaim::Epoch => "walk-epoch",
        };
        for memory in [Memory::Sc, Memory::Tso] {
            v.push(check(
                format!("{model}/correct-{}", memory.name()),
                model,
                memory,
                None,
                format!("{walkers} walkers, 1 zapper"),
                Expect::Pass,
                Box::new(move |s, stop| explore(WalkModel::new(walkers, reclaim, memory, None), s, stop)),
            ));
        }
    }
    let walk_mutants: [(WalkMutant, Reclaim, Memory, &'static str, &'static str); 8] = [
        (
            WalkMutant::NoModeStore,
            Reclaim::Ipi,
            Memory::Sc,
            "walker doesn't set its mode",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::NoIrqDisable,
            Reclaim::Ipi,
            Memory::Sc,
            "walker doesn't disable interrupts",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::IpiOnlyInGuest,
            Reclaim::Ipi,
            Memory::Sc,
            "flush IPIs only IN_GUEST vCPUs",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::FreeBeforeFlush,
            Reclaim::Ipi,
            Memory::Sc,
            "zapper frees before its flush",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::NoWalkerMb,
            Reclaim::Ipi,
            Memory::Tso,
            "TSO: no full barrier after the mode store",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::NoZapperMb,
            Reclaim::Ipi,
            Memory::Tso,
            "TSO: no full barrier between unlink and mode reads",
            "no-walker-reads-freed-table",
        ),
        (
            WalkMutant::UnpinBeforeFlush,
            Reclaim::Epoch,
            Memory::Sc,
            "epoch: unpin before flush",
            "no-guest-uses-freed-table",
        ),
        (
            WalkMutant::NoPinMb,
            Reclaim::Epoch,
            Memory::Tso,
            "epoch, TSO: no full barrier after the pin",
            "no-walker-reads-freed-table",
        ),
    ];
    for (m, reclaim, memory, what, target) in walk_mutants {
        let model = match reclaim {
            Reclaim::Ipi => "walk-ipi",
            Reclaim::Epoch => "walk-epoch",
        };
        v.push(check(
            format!("{model}/{m:?}"),
            model,
            memory,
            Some(what),
            format!("{walkers} walkers, 1 zapper"),
            Expect::Fail(target),
            Box::new(move |s, stop| explore(WalkModel::new(walkers, reclaim, memory, Some(m)), s, stop)),
        ));
        v.last_mut().expect("just pushed").core = walk_core(m);
    }

    // The translation cache.
    let cinvs = if full { 3 } else { 2 };
    let csize = format!("1 refresher, {cinvs} invalidations");
    let cache = [
        ("pfncache/kvm-in-memslot", true, Fix::None, Expect::Pass),
        ("pfncache/kvm-outside-memslots", false, Fix::None, Expect::Fail("valid-cache-not-stale")),
        (
            "pfncache/start-bump-outside-memslots",
            false,
            Fix::StartBump,
            Expect::Fail("valid-cache-not-stale"),
        ),
        (
            "pfncache/end-bump-after-count-outside",
            false,
            Fix::EndBumpAfterCount,
            Expect::Fail("valid-cache-not-stale"),
        ),
        ("pfncache/fixed-in-memslot", true, Fix::EndBump, Expect::Pass),
        ("pfncache/fixed-outside-memslots", false, Fix::EndBump, Expect::Pass),
    ];
    for (name, in_memslot, fix, expect) in cache {
        v.push(check(
            name.into(),
            "pfncache",
            Memory::Sc,
            None,
            csize.clone(),
            expect,
            Box::new(move |s, stop| {
                explore(PfnCacheModel { invalidators: cinvs, in_memslot, fix, mutant: None }, s, stop)
            }),
        ));
    }
    let cache_mutants: [(PfnCacheMutant, &'static str); 3] = [
        (PfnCacheMutant::SkipActiveCount, "refresh ignores the active count"),
        (PfnCacheMutant::SkipSeq, "refresh ignores seq"),
        (PfnCacheMutant::SnapshotAfterResolve, "refresh snapshots after resolving"),
    ];
    for (m, what) in cache_mutants {
        v.push(check(
            format!("pfncache/{m:?}"),
            "pfncache",
            Memory::Sc,
            Some(what),
            format!("{csize}, in a memslot"),
            Expect::Fail("valid-cache-not-stale"),
            Box::new(move |s, stop| {
                explore(
                    PfnCacheModel { invalidators: cinvs, in_memslot: true, fix: Fix::None, mutant: Some(m) },
                    s,
                    stop,
                )
            }),
        ));
        v.last_mut().expect("just pushed").core = pfncache_core(m);
    }
    v
}

/// The core rule a fault-model mutant breaks, where it is the same rule removed.
///
/// Not mapped: `SnapshotAfterResolve` reorders F4 and F8 in an SC model, while core's
/// counterpart (`Barrier::FaultSnapshotBeforeResolve` dropped) lets weak memory reorder them,
/// which this model cannot do; `FlushAfterUnlock` (S4 after S5) has no `Rule` in core.
pub fn fault_core(m: FaultMutant) -> Option<Mutant> {
    match m {
        FaultMutant::SkipInProgressCheck => Some(Mutant::Rule(Rule::RetryChecksInProgress)),
        FaultMutant::SkipSeqCheck => Some(Mutant::Rule(Rule::RetryChecksSeq)),
        FaultMutant::SkipRangeCheck => Some(Mutant::Rule(Rule::RetryGfnChecksRange)),
        FaultMutant::NoLockedRecheck => Some(Mutant::Rule(Rule::FaultRetriesUnderLock)),
        FaultMutant::RangeOverwrites => Some(Mutant::Rule(Rule::RangeAddMerges)),
        FaultMutant::SnapshotAfterResolve | FaultMutant::FlushAfterUnlock => None,
    }
}

/// The core rule a memslot-model mutant breaks, where it is the same rule removed.
///
/// Not mapped: `WaitHoldingLock` (the swap sleeps holding `mn_invalidate_lock`) has no `Rule`.
pub fn memslot_core(m: MemslotMutant) -> Option<Mutant> {
    match m {
        MemslotMutant::NoWait => Some(Mutant::Rule(Rule::MemslotSwapWaitsForInvalidations)),
        MemslotMutant::PublishAfterUnlock => Some(Mutant::Rule(Rule::MemslotPublishUnderLock)),
        MemslotMutant::WaitHoldingLock => None,
    }
}

/// The core rule or barrier a walk-model mutant breaks, where it is the same one removed.
///
/// Not mapped: `NoModeStore` (no L2 store at all; core has no rule for it) and `NoPinMb`
/// (crossbeam-epoch's fence in `pin`, not a core barrier).
pub fn walk_core(m: WalkMutant) -> Option<Mutant> {
    match m {
        WalkMutant::NoIrqDisable => Some(Mutant::Rule(Rule::WalkDisablesInterrupts)),
        WalkMutant::IpiOnlyInGuest => Some(Mutant::Rule(Rule::FlushWaitsForReaders)),
        WalkMutant::FreeBeforeFlush => Some(Mutant::Rule(Rule::FreeAfterFlush)),
        WalkMutant::NoWalkerMb => Some(Mutant::Barrier(Barrier::WalkBeginModeBeforeSpteReads)),
        WalkMutant::NoZapperMb => Some(Mutant::Barrier(Barrier::KickRequestBeforeModeRead)),
        WalkMutant::UnpinBeforeFlush => Some(Mutant::Rule(Rule::FlushBeforeUnpin)),
        WalkMutant::NoModeStore | WalkMutant::NoPinMb => None,
    }
}

/// The core rule a pfncache-model mutant breaks, where it is the same rule removed.
///
/// Not mapped: `SkipSeq` (R4g's `seq` test has no `Rule`) and `SnapshotAfterResolve` (a
/// reordering in an SC model; core's counterpart is `Barrier::CacheSnapshotBeforeResolve`
/// dropped, visible only under weak memory).
pub fn pfncache_core(m: PfnCacheMutant) -> Option<Mutant> {
    match m {
        PfnCacheMutant::SkipActiveCount => Some(Mutant::Rule(Rule::CacheChecksActiveCount)),
        PfnCacheMutant::SkipSeq | PfnCacheMutant::SnapshotAfterResolve => None,
    }
}
