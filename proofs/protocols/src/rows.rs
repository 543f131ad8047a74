//! Checks as the main job's rows ([`mmusync_models::Row`], checker `proofs`).
//!
//! * A check with no mutant and [`Expect::Pass`] (a correct model, or a pfncache fix): `Pass`,
//!   or `Fail` when a property fails, or `Error` when it is vacuous (a `sometimes` property
//!   without an example). The `fault` model covers P1 and P2, so its rows are written once for
//!   each (the same run).
//! * A check with no mutant and [`Expect::Fail`] (KVM's pfncache algorithm outside memslots, and
//!   the candidate fixes that do not work): `BugShown` when the target property fails, `Error`
//!   otherwise.
//! * A mutant with a core counterpart ([`Check::core`]): `Killed` when its target property fails
//!   (with the counterexample's length in `detail`), `Survived` otherwise. Mutants without one
//!   write no row: they are listed in `docs/proofs.md`.

use crate::registry::{Check, Expect, Scale};
use crate::runner::{Report, Search};
use mmusync::barrier::Protocol;
use mmusync_models::{Bound, Checker, Failure, Row, Verdict};

/// The protocols a model checks.
pub fn protocols(model: &str) -> &'static [Protocol] {
    match model {
        "fault" => &[Protocol::P1Invalidation, Protocol::P2Retry],
        "memslot" => &[Protocol::P3Memslots],
        "walk-ipi" | "walk-epoch" => &[Protocol::P5Walks],
        // The translation-cache refresh is P2's (its check and barriers are P2's).
        _ => &[Protocol::P2Retry],
    }
}

/// How a property's failure shows.
fn failure(property: &str) -> Failure {
    match property {
        "no-deadlock" => Failure::Deadlock,
        "all-finish" => Failure::Liveness,
        _ => Failure::Invariant,
    }
}

/// The rows for one run of `check` at `scale` (none for a mutant without a core counterpart).
pub fn rows(check: &Check, scale: Scale, search: Search, report: &Report) -> Vec<Row> {
    let search_name = match search {
        Search::Bfs => "bfs",
        Search::DfsSymmetry => "dfs+symmetry",
    };
    let scenario = format!("{} [{}, {search_name}]", check.name, check.memory.name());
    let size = format!(
        "{}; depth {}, {} distinct states, {:.2}s",
        check.size, report.max_depth, report.unique_states, report.seconds
    );
    let failures = report.failures();
    let (protocols, mutant, verdict, detail) = match (check.mutant, check.expect) {
        (Some(what), Expect::Fail(target)) => {
            let Some(core) = check.core else { return Vec::new() };
            let (verdict, detail) = match report.counterexample(target) {
                Some(cex) => (
                    Verdict::Killed(failure(target)),
                    format!(
                        "model mutant \"{what}\": {target} fails after {} steps (shortest); {size}",
                        cex.steps.len()
                    ),
                ),
                None => (
                    Verdict::Survived,
                    format!(
                        "model mutant \"{what}\": {target} did not fail (failures: {failures:?}); {size}"
                    ),
                ),
            };
            (vec![core.protocol()], Some(core), verdict, detail)
        }
        (None, Expect::Pass) => {
            let missing = report.missing_examples();
            let (verdict, detail) = if let Some(first) = failures.first() {
                (Verdict::Fail(failure(first)), format!("properties failed: {failures:?}; {size}"))
            } else if !missing.is_empty() {
                (Verdict::Error, format!("vacuous: no example for {missing:?}; {size}"))
            } else {
                (Verdict::Pass, format!("every property holds, every `sometimes` has an example; {size}"))
            };
            (protocols(check.model).to_vec(), None, verdict, detail)
        }
        (None, Expect::Fail(target)) => {
            let (verdict, detail) = match report.counterexample(target) {
                Some(cex) => (
                    Verdict::BugShown(failure(target)),
                    format!(
                        "models a race on purpose (KVM's algorithm outside memslots, or a candidate fix that \
                         does not close it; docs/pfncache-race.md): {target} fails after {} steps, as expected; \
                         {size}",
                        cex.steps.len()
                    ),
                ),
                None => (Verdict::Error, format!("expected {target} to fail; it did not; {size}")),
            };
            (protocols(check.model).to_vec(), None, verdict, detail)
        }
        (Some(_), Expect::Pass) => return Vec::new(),
    };
    // A counterexample is printed by re-running the check alone.
    let replay = matches!(verdict, Verdict::Killed(_) | Verdict::BugShown(_)).then(|| {
        let scale = match scale {
            Scale::Ci => "ci",
            Scale::Full => "full",
        };
        format!(
            "cargo run --release -q -p mmusync-protocol-proofs -- --scale {scale} --filter {}",
            check.name
        )
    });
    protocols
        .into_iter()
        .map(|protocol| Row {
            checker: Checker::Proofs,
            scenario: scenario.clone(),
            protocol,
            mutant,
            verdict,
            executions: report.states as u64,
            time_s: report.seconds,
            bound: Bound::Exhaustive,
            detail: detail.clone(),
            replay: replay.clone(),
        })
        .collect()
}
