//! `memmodel barriers`: one mutant row per barrier, one correct-code row per skeleton.

use mmusync::Barrier;
use mmusync_memmodel::barriers::LOOM_UNKILLABLE;
use mmusync_memmodel::rows::{barrier_rows, fidelity};
use mmusync_models::{Checker, Mutant, Row, Verdict};
use std::process::Command;

#[test]
fn every_barrier_is_killed_or_documented_and_every_skeleton_passes() {
    let (ok, line) = fidelity();
    assert!(ok, "{line}");
    let rows = barrier_rows(ok, &line);
    assert!(rows.iter().all(|r| r.checker == Checker::Proofs));
    for &b in Barrier::ALL {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.mutant == Some(Mutant::Barrier(b))).collect();
        assert_eq!(mine.len(), 1, "{b}");
        let r = mine[0];
        assert_eq!(r.protocol, b.protocol());
        // Only SyncRootSpteBeforeFlags is redundant (in its context, under every model).
        if b == Barrier::SyncRootSpteBeforeFlags {
            assert_eq!(r.verdict, Verdict::Documented, "{b}: {}", r.detail);
        } else {
            assert!(r.verdict.killed(), "{b}: {}", r.detail);
        }
    }
    // The barriers loom cannot kill: the load-buffering ones are needed under LKMM and ARMv8.
    for &b in LOOM_UNKILLABLE {
        let r = rows.iter().find(|r| r.mutant == Some(Mutant::Barrier(b))).expect("row");
        if b != Barrier::SyncRootSpteBeforeFlags {
            assert!(r.verdict.killed(), "{b}: {}", r.detail);
        }
        if b != Barrier::SyncRootSpteBeforeFlags && b != Barrier::InvalidateEndSeqBeforeActiveCount {
            assert!(r.detail.starts_with("needed under lkmm, armv8 "), "{b}: {}", r.detail);
        }
    }
    let correct: Vec<&Row> = rows.iter().filter(|r| r.mutant.is_none()).collect();
    assert!(correct.len() >= 15);
    assert!(correct.iter().all(|r| r.verdict == Verdict::Pass), "{correct:?}");
}

#[test]
fn the_binary_writes_rows_serde_reads() {
    let path = std::env::temp_dir().join(format!("memmodel-rows-{}.json", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_memmodel"))
        .args(["barriers", "--rows"])
        .arg(&path)
        .output()
        .expect("run memmodel");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let rows: Vec<Row> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("rows")).expect("typed rows");
    let _ = std::fs::remove_file(&path);
    assert_eq!(rows.iter().filter(|r| r.mutant.is_some()).count(), Barrier::ALL.len());
}
