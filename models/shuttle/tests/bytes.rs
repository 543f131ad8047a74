//! The byte-driven scheduler behind the `schedule` fuzz target: an empty schedule runs every
//! target to completion on the correct code, byte schedules can express the interleavings that
//! kill a rule mutant, and a failure found that way replays without the fuzzer. Also the
//! target's seed corpus (`fuzz/corpus/schedule/`): one seed per target, 128 schedule bytes each,
//! checked to be up to date (rerun with `MMUSYNC_BLESS=1` after adding a target) and to pass.

use mmusync::Rule;
use mmusync_shuttle::bytes::FuzzSetup;
use mmusync_shuttle::runner::{self, Options, Outcome};
use std::path::PathBuf;

/// Byte strings from a fixed xorshift generator: reproducible "fuzzer inputs".
fn inputs(n: usize, len: usize) -> impl Iterator<Item = Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..n).map(move |_| {
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
}

#[test]
fn an_empty_schedule_runs_every_passing_target_to_completion() {
    for t in runner::targets().into_iter().filter(|t| t.expect == Outcome::Pass) {
        let r = runner::run_bytes(t, None, &[], &Options::default());
        assert_eq!(r.outcome, Outcome::Pass, "{}: {:?}", t.name, r.message);
        assert_eq!(r.executions, 1, "{}: one execution per input", t.name);
    }
}

#[test]
fn byte_schedules_keep_the_correct_code_passing() {
    let t = runner::target("fault-vs-invalidation").expect("target");
    for bytes in inputs(300, 48) {
        let r = runner::run_bytes(t, None, &bytes, &Options::default());
        assert_eq!(r.outcome, Outcome::Pass, "schedule {bytes:?}: {:?}", r.message);
    }
}

#[test]
fn byte_schedules_kill_a_rule_mutant_and_the_failure_replays() {
    let t = runner::target("fault-vs-invalidation").expect("target");
    let mutant = Some(Rule::RetryChecksInProgress);
    let opts = Options::default();
    let killed = inputs(2_000, 48)
        .map(|bytes| runner::run_bytes(t, mutant, &bytes, &opts))
        .find(|r| r.outcome != Outcome::Pass)
        .expect("no byte schedule of 2,000 broke RetryChecksInProgress");
    assert_eq!(killed.outcome, Outcome::Violation, "{:?}", killed.message);
    let schedule = killed.schedule.as_deref().expect("a failing run records its schedule");
    let replayed = runner::replay_report(t, mutant, schedule, &opts);
    assert_eq!(replayed.outcome, Outcome::Violation, "{:?}", replayed.message);
    assert_eq!(replayed.message, killed.message);
}

/// The seeds: for the `i`-th target the correct code must pass (the fuzz target's order), byte
/// `i` and then 128 schedule bytes. Long enough that libFuzzer starts with room for choices.
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let passing: Vec<_> = runner::targets().into_iter().filter(|t| t.expect == Outcome::Pass).collect();
    assert!(passing.len() <= 256, "a seed's first byte names the target");
    passing
        .iter()
        .zip(inputs(passing.len(), 128))
        .enumerate()
        .map(|(i, (t, schedule))| (t.name, [vec![i as u8], schedule].concat()))
        .collect()
}

#[test]
fn seed_corpus_is_up_to_date_and_passes() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/schedule");
    let bless = std::env::var_os("MMUSYNC_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).expect("create the corpus directory");
    }
    let setup = FuzzSetup::from_env().expect("the default fuzz setup");
    for (name, bytes) in seeds() {
        let path = dir.join(name);
        if bless {
            std::fs::write(&path, &bytes).expect("write a seed");
        }
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(committed == bytes, "{} is out of date: rerun with MMUSYNC_BLESS=1", path.display());
        let r = setup.run(&bytes).expect("a seed is not empty");
        assert_eq!(r.target, name, "the seed's first byte picks its target");
        assert_eq!(r.outcome, Outcome::Pass, "{name}: {:?}", r.message);
    }
}
