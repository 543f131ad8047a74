//! The main job's rows: which model mutants stand for a core rule or barrier, and the verdicts
//! the rows carry.

use mmusync_models::{Mutant, Verdict};
use mmusync_protocol_proofs::rows::rows;
use mmusync_protocol_proofs::{checks, Check, Expect, Scale, Search};
use std::collections::BTreeSet;

/// The model mutants `docs/proofs.md` lists as having no core counterpart.
const UNMAPPED: &[&str] = &[
    "fault/SnapshotAfterResolve",
    "fault/FlushAfterUnlock",
    "memslot/WaitHoldingLock",
    "walk-ipi/NoModeStore",
    "walk-epoch/NoPinMb",
    "pfncache/SkipSeq",
    "pfncache/SnapshotAfterResolve",
];

#[test]
fn every_model_mutant_is_mapped_once_or_documented_as_unmapped() {
    let all = checks(Scale::Ci);
    let mut seen: BTreeSet<Mutant> = BTreeSet::new();
    for c in all.iter().filter(|c| c.mutant.is_some()) {
        match c.core {
            Some(m) => {
                assert!(!UNMAPPED.contains(&c.name.as_str()), "{} is mapped and listed as unmapped", c.name);
                assert!(seen.insert(m), "{m} is the counterpart of two model mutants");
            }
            None => assert!(
                UNMAPPED.contains(&c.name.as_str()),
                "{} has no core counterpart: document it",
                c.name
            ),
        }
    }
    assert_eq!(seen.len(), 14);
    assert!(all.iter().filter(|c| c.mutant.is_none()).all(|c| c.core.is_none()));
}

fn run(check: &Check) -> Vec<mmusync_models::Row> {
    rows(check, Scale::Ci, Search::Bfs, &check.run(Search::Bfs))
}

#[test]
fn rows_carry_pass_kill_and_bug_verdicts() {
    let all = checks(Scale::Ci);
    let by_name = |n: &str| all.iter().find(|c| c.name == n).unwrap_or_else(|| panic!("no check {n}"));

    let correct = run(by_name("memslot/correct"));
    assert_eq!(correct.len(), 1);
    assert_eq!(correct[0].verdict, Verdict::Pass);
    assert!(correct[0].mutant.is_none() && correct[0].executions > 0);

    let killed = run(by_name("memslot/NoWait"));
    assert_eq!(killed.len(), 1);
    assert!(killed[0].verdict.killed(), "{:?}", killed[0]);
    assert_eq!(killed[0].mutant, Some(Mutant::Rule(mmusync::Rule::MemslotSwapWaitsForInvalidations)));
    assert!(killed[0].detail.contains("fails after 6 steps"), "{}", killed[0].detail);

    assert!(run(by_name("memslot/WaitHoldingLock")).is_empty(), "unmapped mutants write no row");

    let bug = run(by_name("pfncache/kvm-outside-memslots"));
    assert!(matches!(bug[0].verdict, Verdict::BugShown(_)), "{:?}", bug[0]);

    let tso = by_name("walk-ipi/NoWalkerMb");
    assert_eq!(tso.expect, Expect::Fail("no-walker-reads-freed-table"));
    let r = run(tso);
    assert_eq!(r[0].mutant, Some(Mutant::Barrier(mmusync::Barrier::WalkBeginModeBeforeSpteReads)));
    assert!(r[0].verdict.killed());
}
