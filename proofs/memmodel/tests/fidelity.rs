//! The fidelity suite: every litmus test under `litmus/`, under every model, against every
//! stated expectation; the judgement of mmusync's named barriers; and the drift check of the
//! generated sections of `docs/memmodel.md` (regenerate with `MMUSYNC_BLESS=1`).

use mmusync_memmodel::barriers::{
    barrier_tables, contexts, e2_chain, e2_source, judge, pairings, Placement, LOOM_UNKILLABLE,
};
use mmusync_memmodel::suite::{fidelity_table, litmus_dir, run_dir, splice, summary, Entry};
use mmusync_memmodel::{Model, Verdict};
use std::path::Path;
use std::sync::OnceLock;

/// Kernel tests the checker does not support, and why (see `docs/memmodel.md`).
const KNOWN_UNSUPPORTED: &[(&str, &str)] = &[("kernel/dep-plain.litmus", "plain accesses")];

fn entries() -> &'static [Entry] {
    static E: OnceLock<Vec<Entry>> = OnceLock::new();
    E.get_or_init(|| run_dir(&litmus_dir()).expect("litmus directory readable"))
}

#[test]
fn every_supported_kernel_test_matches_its_stated_lkmm_result() {
    let s = summary(entries());
    for e in entries().iter().filter(|e| e.is_kernel()) {
        let Ok(j) = &e.result else { continue };
        let stated = j.test.expect.get(&Model::Lkmm).copied();
        assert!(stated.is_some(), "{}: kernel tests state their LKMM result", e.file);
        assert_eq!(j.verdict(Model::Lkmm), stated, "{}: LKMM verdict", e.file);
    }
    assert_eq!(s.kernel_agree, s.kernel_supported);
    assert!(s.kernel_supported * 100 >= s.kernel_written * 90, "{s:?}");
}

#[test]
fn every_stated_expectation_holds() {
    let bad: Vec<String> = entries()
        .iter()
        .filter_map(|e| e.result.as_ref().ok().map(|j| (e, j)))
        .flat_map(|(e, j)| {
            j.mismatches()
                .into_iter()
                .map(move |(m, want, got)| format!("{}: {m}: expected {want}, got {got:?}", e.file))
        })
        .collect();
    assert!(bad.is_empty(), "{bad:#?}");
}

#[test]
fn only_the_documented_tests_are_unsupported() {
    let unsupported: Vec<(&str, &str)> = entries()
        .iter()
        .filter_map(|e| e.result.as_ref().err().map(|why| (e.file.as_str(), why.as_str())))
        .collect();
    assert_eq!(unsupported.len(), KNOWN_UNSUPPORTED.len(), "{unsupported:#?}");
    for ((file, why), (want_file, want_why)) in unsupported.iter().zip(KNOWN_UNSUPPORTED) {
        assert_eq!(file, want_file);
        assert!(why.contains(want_why), "{file}: {why}");
    }
}

#[test]
fn every_classic_test_states_its_verdicts() {
    for e in entries().iter().filter(|e| !e.is_kernel()) {
        let j = e.result.as_ref().unwrap_or_else(|why| panic!("{}: {why}", e.file));
        // LKMM verdicts of classic shapes are stated where known (`Result:`), not required.
        for m in [Model::Sc, Model::Tso, Model::Armv8, Model::Rc11] {
            if j.verdict(m).is_some() {
                assert!(j.test.expect.contains_key(&m), "{}: no expectation for {m}", e.file);
            }
        }
    }
}

#[test]
fn every_pairing_forbids_its_outcome_and_each_side_matters_somewhere() {
    let ps = pairings();
    let named: usize =
        mmusync::Barrier::ALL.iter().filter(|b| ps.iter().any(|p| p.a == **b || p.b == **b)).count();
    assert_eq!(named, mmusync::Barrier::ALL.len(), "every barrier is in some pairing");
    for p in ps {
        let j = judge(p);
        assert!(j.both.iter().all(|v| *v == Verdict::Never), "{p:?}: the pairing forbids its outcome");
        let lkmm = Model::ALL.iter().position(|m| *m == Model::Lkmm).unwrap();
        assert_eq!(j.without_a[lkmm], Verdict::Sometimes, "{p:?}: LKMM needs the first side");
        assert_eq!(j.without_b[lkmm], Verdict::Sometimes, "{p:?}: LKMM needs the second side");
    }
}

#[test]
fn documented_redundancies_hold_under_every_model() {
    let ctx = contexts();
    for c in &ctx {
        assert!(c.without.iter().all(|v| *v == Verdict::Never), "{:?} redundant in context", c.barrier);
        assert!(c.without_context.contains(&Verdict::Sometimes), "{:?} needed without context", c.barrier);
    }
    let in_core: Vec<_> = ctx.iter().filter(|c| c.in_core).map(|c| c.barrier).collect();
    assert_eq!(in_core, [mmusync::Barrier::SyncRootSpteBeforeFlags]);
    assert_eq!(LOOM_UNKILLABLE.len(), 7);
}

/// `GuestExitReadsBeforeMode` behind a full-barrier VM exit: redundant there under every model,
/// needed under LKMM and ARMv8 without it (the bare pairing, which decides its verdict).
#[test]
fn guest_exit_release_is_redundant_only_behind_a_full_barrier_exit() {
    use Verdict::{Never, Sometimes};
    let c = contexts().into_iter().find(|c| c.barrier == mmusync::Barrier::GuestExitReadsBeforeMode).unwrap();
    assert!(!c.in_core);
    // Model::ALL order: lkmm sc tso armv8 rc11.
    assert_eq!(c.without, [Never; 5]);
    assert_eq!(c.without_context, [Sometimes, Never, Never, Sometimes, Never]);
    assert!(barrier_tables().contains("core cannot assume that context, so the bare pairing decides"));
}

/// The three-thread E2 chain: `InvalidateEndSeqBeforeActiveCount` is needed under RC11 only,
/// and only after the lock; KVM's fence-free E2 is correct under LKMM, ARMv8, TSO and SC.
#[test]
fn e2_chain_needs_the_fence_after_the_lock_under_rc11_only() {
    use Verdict::{Never, Sometimes};
    let c = e2_chain();
    // Model::ALL order: lkmm sc tso armv8 rc11.
    assert_eq!(c.after_lock, [None, Some(Never), Some(Never), Some(Never), Some(Never)]);
    assert_eq!(c.before_lock, [None, Some(Never), Some(Never), Some(Never), Some(Sometimes)]);
    assert_eq!(c.absent, [Some(Never), Some(Never), Some(Never), Some(Never), Some(Sometimes)]);
    assert_eq!(
        c.absent_no_wmb,
        [Some(Sometimes), Some(Never), Some(Never), Some(Sometimes), Some(Sometimes)]
    );
    assert_eq!(c.needed_under(), [Model::Rc11]);
    assert_eq!(c.before_lock_fails_under(), [Model::Rc11]);
    assert!(!contexts().iter().any(|x| x.barrier == mmusync::Barrier::InvalidateEndSeqBeforeActiveCount));
}

/// The generated E2 sources are the suite's `litmus/mmusync/` files, statement for statement.
#[test]
fn e2_sources_match_the_suite_files() {
    let body = |src: &str| -> Vec<String> {
        src.lines()
            .filter(|l| l.starts_with('{') || l.starts_with('P') || l.starts_with("exists"))
            .map(String::from)
            .collect()
    };
    for (file, place, wmb) in [
        ("fence-after-lock", Placement::AfterLock, true),
        ("fence-before-lock", Placement::BeforeLock, true),
        ("no-fence", Placement::Absent, true),
        ("no-fence+no-wmb", Placement::Absent, false),
    ] {
        let path = litmus_dir().join(format!("mmusync/E2-release-sequence+{file}.litmus"));
        let on_disk = std::fs::read_to_string(&path).expect("suite file");
        assert_eq!(body(&on_disk), body(&e2_source(place, wmb)), "{file}");
    }
}

#[test]
fn docs_are_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/memmodel.md");
    let doc = std::fs::read_to_string(&path).expect("docs/memmodel.md");
    let fresh = splice(&doc, "memmodel fidelity", &fidelity_table(entries())).expect("fidelity markers");
    let fresh = splice(&fresh, "memmodel barriers", &barrier_tables()).expect("barrier markers");
    if std::env::var_os("MMUSYNC_BLESS").is_some() {
        if fresh != doc {
            std::fs::write(&path, &fresh).expect("write docs/memmodel.md");
        }
        return;
    }
    assert!(
        fresh == doc,
        "docs/memmodel.md is stale; regenerate with MMUSYNC_BLESS=1 cargo test -p mmusync-memmodel"
    );
}
