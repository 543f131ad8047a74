//! Every scenario, unmutated, under loom: the correct code must pass them all.
#![cfg(loom)]

use mmusync_loom::runner::{run, Options, Outcome};
use mmusync_loom::trace::render;
use mmusync_models::{Checker, Scenario};

#[test]
fn correct_code_passes_every_scenario() {
    let only = std::env::var("SCENARIO").ok();
    let mut failed = Vec::new();
    let start = std::time::Instant::now();
    for s in Scenario::run_by(Checker::Loom).filter(|s| only.as_deref().is_none_or(|o| o == s.name)) {
        let r = run(s, None, &Options::default());
        println!(
            "{:<32} {:<24} {:>9} executions {:>8.2?}  {}",
            s.name,
            r.bound.describe(),
            r.executions,
            r.time,
            r.outcome.label()
        );
        if r.outcome != Outcome::Pass {
            println!("  {}\n{}", r.message.clone().unwrap_or_default(), render(&r.roles, &r.trace, true));
            failed.push(s.name);
        }
    }
    println!("all scenarios: {:.2?}", start.elapsed());
    assert!(failed.is_empty(), "the correct code failed: {failed:?}");
}
