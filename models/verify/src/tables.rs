//! The report: protocol × checker, the mutant scorecard, blind spots, and the verdict.

use crate::Cli;
use mmusync_models::{Checker, Mutant, Row, Verdict as RowVerdict};
use std::collections::BTreeMap;
use std::process::ExitCode;

/// The outcome of the whole run.
pub struct Verdict {
    failed_scenarios: usize,
    surviving_mutants: usize,
    checker_errors: usize,
}

impl Verdict {
    /// One line.
    pub fn summary(&self) -> String {
        if self.failed_scenarios + self.surviving_mutants + self.checker_errors == 0 {
            "PASS".into()
        } else {
            format!(
                "FAIL ({} failing scenario runs, {} surviving undocumented mutants, {} checkers that did not run)",
                self.failed_scenarios, self.surviving_mutants, self.checker_errors
            )
        }
    }

    /// 0 pass, 1 a failure, 2 a checker that did not run.
    pub fn exit_code(&self) -> ExitCode {
        if self.checker_errors > 0 {
            ExitCode::from(2)
        } else if self.failed_scenarios + self.surviving_mutants > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// What the checkers that ran say about one mutant.
enum Standing<'a> {
    /// Killed; the fastest kill.
    Killed(&'a Row),
    /// Not killed, and a checker documents why it cannot be.
    Documented(&'a Row),
    /// Not killed, nothing documented, and every checker ran: a hole.
    Survived,
    /// Not killed by the checkers of this run, which are not all of them.
    NotKilledHere,
}

/// The kill to show first: a checker that ran core's own code (loom, shuttle, real threads)
/// before one that checked a model of it (proofs), then the fastest.
fn standing<'a>(cli: &Cli, runs: &[&'a Row]) -> Standing<'a> {
    let best = runs.iter().filter(|r| r.verdict.killed()).min_by(|a, b| {
        (a.checker == Checker::Proofs)
            .cmp(&(b.checker == Checker::Proofs))
            .then(a.time_s.total_cmp(&b.time_s))
    });
    if let Some(b) = best {
        return Standing::Killed(b);
    }
    // With a subset of the checkers, a mutant one checker documents as beyond it may still be
    // killed by a checker that did not run: only the whole suite can call it not killable.
    if !Checker::ALL.into_iter().all(|c| cli.runs(c)) {
        return Standing::NotKilledHere;
    }
    match runs.iter().find(|r| r.verdict == RowVerdict::Documented) {
        Some(d) => Standing::Documented(d),
        None => Standing::Survived,
    }
}

/// Prints every table and returns the verdict.
pub fn print(cli: &Cli, rows: &[Row], broken: &[String]) -> Verdict {
    println!("\n## Protocol × checker (correct code)\n");
    println!("| protocol | checker | scenarios | verdict | executions | time |");
    println!("|---|---|---|---|---|---|");
    let scenarios: Vec<&Row> = rows.iter().filter(|r| r.mutant.is_none()).collect();
    let mut cells: BTreeMap<(&str, Checker), (usize, usize, u64, f64)> = BTreeMap::new();
    for s in &scenarios {
        let c = cells.entry((s.protocol.short(), s.checker)).or_default();
        c.0 += 1;
        c.1 += usize::from(!s.verdict.ok());
        c.2 += s.executions;
        c.3 += s.time_s;
    }
    for ((p, checker), (n, failed, execs, time)) in &cells {
        let verdict = if *failed == 0 { "pass".to_string() } else { format!("**{failed} FAIL**") };
        println!("| {p} | {checker} | {n} | {verdict} | {execs} | {time:.1}s |");
    }
    let failed: Vec<&&Row> = scenarios.iter().filter(|s| !s.verdict.ok()).collect();
    for s in &failed {
        println!("FAILED: {} on {} ({}, {}): {}", s.scenario, s.checker, s.bound, s.verdict, s.detail);
    }

    let mut surviving = 0;
    if cli.with_mutants() {
        println!("\n## Mutant scorecard\n");
        println!("| mutant | protocol | killed by | kill | executions | time | other checkers |");
        println!("|---|---|---|---|---|---|---|");
        for m in Mutant::all() {
            if cli.protocol.is_some_and(|p| p != m.protocol()) {
                continue;
            }
            let runs: Vec<&Row> = rows.iter().filter(|r| r.mutant == Some(m)).collect();
            if runs.is_empty() {
                continue;
            }
            let name = m.name();
            let protocol = m.protocol().short();
            let standing = standing(cli, &runs);
            let shown = match &standing {
                Standing::Killed(b) | Standing::Documented(b) => Some(b.checker),
                _ => None,
            };
            // One entry per checker and verdict (a checker may have run several scenarios).
            let mut others: Vec<String> = Vec::new();
            for r in runs.iter().filter(|r| Some(r.checker) != shown) {
                let entry = format!("{}: {}", r.checker, r.verdict);
                if !others.contains(&entry) {
                    others.push(entry);
                }
            }
            match standing {
                Standing::Killed(b) => println!(
                    "| `{name}` | {protocol} | {} `{}` | {} | {} | {:.2}s | {} |",
                    b.checker,
                    b.scenario,
                    b.verdict,
                    b.executions,
                    b.time_s,
                    others.join("; ")
                ),
                Standing::Documented(d) => {
                    println!(
                        "| `{name}` | {protocol} | not killable (documented, {}) | — | — | — | {} |",
                        d.checker,
                        others.join("; ")
                    );
                    println!("|  | | reason: {} | | | | |", d.detail);
                }
                Standing::Survived => {
                    surviving += 1;
                    println!("| `{name}` | {protocol} | **SURVIVED** | — | — | — | {} |", others.join("; "));
                }
                Standing::NotKilledHere => println!(
                    "| `{name}` | {protocol} | not killed by the checkers run (others may kill it) | — | — | — | {} |",
                    others.join("; ")
                ),
            }
        }
    }

    println!("\n## What each checker cannot see\n");
    for c in Checker::ALL.into_iter().filter(|c| cli.runs(*c)) {
        println!("* **{c}**: {}", c.blind_spots());
    }
    for b in broken {
        println!("\nCHECKER DID NOT RUN: {b}");
    }
    Verdict { failed_scenarios: failed.len(), surviving_mutants: surviving, checker_errors: broken.len() }
}
