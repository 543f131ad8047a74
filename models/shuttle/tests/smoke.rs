//! A few executions of every target under both schedulers, so that `cargo test` exercises the
//! executor, the HAL and every scenario (the CI set, `ci/shuttle.sh`, runs the real counts).

use mmusync::Rule;
use mmusync_shuttle::runner::{self, Options, Outcome, Sched};

fn opts(iterations: usize) -> Options {
    Options { iterations, ..Options::default() }
}

#[test]
fn every_passing_target_passes_a_few_executions() {
    for t in runner::targets().into_iter().filter(|t| t.expect == Outcome::Pass) {
        for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
            let r = runner::run(t, None, sched, &opts(5));
            assert_eq!(r.outcome, Outcome::Pass, "{} under {sched}: {:?}", t.name, r.message);
            assert_eq!(r.executions, 5);
        }
    }
}

#[test]
fn the_bugs_on_purpose_are_found() {
    for name in ["prefault-holds-srcu", "notifier-rwsem-2021"] {
        let t = runner::target(name).expect("target");
        let r = runner::run(t, None, Sched::Random, &opts(50));
        assert!(r.outcome.is(t.expect), "{name}: expected {}, got {} ({:?})", t.expect, r.outcome, r.message);
        assert!(r.trace.is_some(), "{name}: a failure keeps its trace");
    }
}

#[test]
fn a_lock_order_mutant_is_killed_and_its_schedule_replays() {
    let t = runner::target("memslot-swap-vs-invalidation").expect("target");
    let m = Some(Rule::MemslotSwapWaitsForInvalidations);
    let dir = std::env::temp_dir().join(format!("mmusync-shuttle-smoke-{}", std::process::id()));
    let o = Options { persist: runner::Persist::Dir(dir.clone()), ..opts(200) };
    let r = runner::run(t, m, Sched::Random, &o);
    assert_eq!(r.outcome, Outcome::Violation, "{:?}", r.message);
    let schedule = r.schedule.expect("the failing schedule is captured");
    let again = runner::replay_report(t, m, &schedule, &Options::default());
    assert_eq!(again.outcome, Outcome::Violation);
    assert_eq!(again.message, r.message, "the replay fails the same way");
    let _ = std::fs::remove_dir_all(dir);
}
