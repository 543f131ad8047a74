//! The CI checks: every correct model passes exhaustively at the CI bounds ([`Scale::Ci`]),
//! every mutant fails the property it targets, with a shortest counterexample of a pinned
//! length, and the pfncache race and its fix behave as `docs/pfncache-race.md` says.
//!
//! Bounds (debug build): fault 3 vCPUs × 2 invalidators × 3 gfns (DFS + symmetry only: BFS
//! without symmetry takes ~65 s in debug, so the binary runs it); memslot 2 invalidators × 2
//! swaps; walks 3 walkers, SC and TSO; pfncache 1 refresher × 2 invalidations.

use mmusync_protocol_proofs::models::pfncache::{Fix, PfnCacheAction, PfnCacheModel};
use mmusync_protocol_proofs::models::walk::{Reclaim, WalkModel, WalkMutant};
use mmusync_protocol_proofs::tso::Memory;
use mmusync_protocol_proofs::{checks, explore, Check, Expect, Scale, Search};
use stateright::{Model, Path};

fn run_passing(model: &str, searches: &[Search]) {
    let all = checks(Scale::Ci);
    let selected: Vec<&Check> = all.iter().filter(|c| c.model == model && c.expect == Expect::Pass).collect();
    assert!(!selected.is_empty(), "no passing checks for {model}");
    for check in selected {
        for &search in searches {
            let report = check.run(search);
            if let Err(e) = check.verdict(&report) {
                panic!("{e} ({search:?})");
            }
            assert!(report.unique_states > 0);
        }
    }
}

#[test]
fn fault_model_passes() {
    run_passing("fault", &[Search::DfsSymmetry]);
}

#[test]
fn memslot_model_passes() {
    run_passing("memslot", &[Search::Bfs, Search::DfsSymmetry]);
}

#[test]
fn walk_models_pass_under_sc_and_tso() {
    run_passing("walk-ipi", &[Search::Bfs, Search::DfsSymmetry]);
    run_passing("walk-epoch", &[Search::Bfs, Search::DfsSymmetry]);
}

#[test]
fn pfncache_kvm_in_memslot_and_fix_pass() {
    run_passing("pfncache", &[Search::Bfs, Search::DfsSymmetry]);
}

/// The length of each failing check's shortest counterexample (BFS).
const SHORTEST: &[(&str, usize)] = &[
    ("fault/SkipInProgressCheck", 9),
    ("fault/SkipSeqCheck", 11),
    ("fault/SkipRangeCheck", 9),
    ("fault/SnapshotAfterResolve", 11),
    ("fault/NoLockedRecheck", 9),
    ("fault/RangeOverwrites", 12),
    ("fault/FlushAfterUnlock", 13),
    ("memslot/NoWait", 6),
    ("memslot/PublishAfterUnlock", 6),
    ("memslot/WaitHoldingLock", 5),
    ("walk-ipi/NoModeStore", 11),
    ("walk-ipi/NoIrqDisable", 12),
    ("walk-ipi/IpiOnlyInGuest", 12),
    ("walk-ipi/FreeBeforeFlush", 8),
    ("walk-ipi/NoWalkerMb", 12),
    ("walk-ipi/NoZapperMb", 12),
    ("walk-epoch/UnpinBeforeFlush", 10),
    ("walk-epoch/NoPinMb", 13),
    ("pfncache/kvm-outside-memslots", 12),
    ("pfncache/start-bump-outside-memslots", 12),
    ("pfncache/end-bump-after-count-outside", 12),
    ("pfncache/SkipActiveCount", 10),
    ("pfncache/SkipSeq", 12),
    ("pfncache/SnapshotAfterResolve", 12),
];

#[test]
fn every_mutant_is_killed_by_its_target_with_a_shortest_counterexample() {
    let all = checks(Scale::Ci);
    let failing: Vec<&Check> = all.iter().filter(|c| c.expect != Expect::Pass).collect();
    assert_eq!(failing.len(), SHORTEST.len(), "every failing check has a pinned length");
    for check in failing {
        let Expect::Fail(target) = check.expect else { unreachable!() };
        let report = check.run(Search::Bfs);
        if let Err(e) = check.verdict(&report) {
            panic!("{e}");
        }
        let cex = report.counterexample(target).expect("verdict checked it");
        let want = SHORTEST.iter().find(|(n, _)| *n == check.name).map(|(_, l)| *l);
        assert_eq!(Some(cex.steps.len()), want, "{}: {target} counterexample {:#?}", check.name, cex.steps);
        // The symmetry-reduced search must find the same violation (a cross-check of the
        // `Representative` implementations: a wrong one could merge a failing state away).
        let reduced = check.run(Search::DfsSymmetry);
        assert!(reduced.counterexample(target).is_some(), "{}: DfsSymmetry misses {target}", check.name);
    }
}

/// The TSO mutants need store buffers: under SC the same mutants pass, so it is the TSO
/// model, not a coarser protocol mistake, that kills them.
#[test]
fn tso_mutants_survive_sequential_consistency() {
    for (reclaim, mutant) in [
        (Reclaim::Ipi, WalkMutant::NoWalkerMb),
        (Reclaim::Ipi, WalkMutant::NoZapperMb),
        (Reclaim::Epoch, WalkMutant::NoPinMb),
    ] {
        let report = explore(WalkModel::new(3, reclaim, Memory::Sc, Some(mutant)), Search::Bfs, None);
        assert!(report.failures().is_empty(), "{mutant:?} under SC: {:?}", report.failures());
    }
}

/// The race of `docs/pfncache-race.md`, replayed as a labelled trace: valid under KVM's
/// algorithm and ends with a valid, stale cache; not a valid trace with the fix (R4g retries).
#[test]
fn pfncache_race_trace_replays() {
    use PfnCacheAction::*;
    let trace = [R2, R4b, R4d, S1(0), S2(0), S3(0), Unmap(0), E1(0), E2(0), R4f, R4g, R4h];
    let kvm = PfnCacheModel { invalidators: 1, in_memslot: false, fix: Fix::None, mutant: None };
    let init = kvm.init_states().remove(0);
    let path = Path::from_actions(&kvm, init, trace.iter()).expect("a valid KVM trace");
    let last = path.last_state();
    assert!(last.valid && last.pfn != last.gen, "the cache is valid and stale: {last:?}");

    let fixed = PfnCacheModel { fix: Fix::EndBump, ..kvm.clone() };
    let init = fixed.init_states().remove(0);
    assert!(Path::from_actions(&fixed, init, trace.iter()).is_none(), "with the fix R4g retries");

    let in_slot = PfnCacheModel { in_memslot: true, ..kvm };
    let init = in_slot.init_states().remove(0);
    assert!(Path::from_actions(&in_slot, init, trace.iter()).is_none(), "in a memslot seq moved");
}
