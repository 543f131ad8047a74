//! The report: protocol × checker, the mutant scorecard, blind spots, and the verdict.

use crate::results::{all_mutants, mutant_protocol, Checker, MutantRun, ScenarioRun};
use crate::Cli;
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

/// Prints every table and returns the verdict.
pub fn print(cli: &Cli, scenarios: &[ScenarioRun], mutants: &[MutantRun], broken: &[String]) -> Verdict {
    println!("\n## Protocol × checker (correct code)\n");
    println!("| protocol | checker | scenarios | verdict | executions | time |");
    println!("|---|---|---|---|---|---|");
    let mut cells: BTreeMap<(&str, Checker), (usize, usize, u64, f64)> = BTreeMap::new();
    for s in scenarios {
        let c = cells.entry((s.protocol.as_str(), s.checker)).or_default();
        c.0 += 1;
        c.1 += usize::from(!s.passed);
        c.2 += s.executions;
        c.3 += s.time_s;
    }
    for ((p, checker), (n, failed, execs, time)) in &cells {
        let verdict = if *failed == 0 { "pass".to_string() } else { format!("**{failed} FAIL**") };
        println!("| {p} | {checker} | {n} | {verdict} | {execs} | {time:.1}s |");
    }
    let failed_scenarios = scenarios.iter().filter(|s| !s.passed).count();
    for s in scenarios.iter().filter(|s| !s.passed) {
        println!("FAILED: {} on {} ({})", s.scenario, s.checker, s.bound);
    }

    let mut surviving = 0;
    if cli.with_mutants() {
        println!("\n## Mutant scorecard\n");
        println!("| mutant | protocol | killed by | kill | executions | time | other checkers |");
        println!("|---|---|---|---|---|---|---|");
        for name in all_mutants() {
            let protocol = mutant_protocol(name).map(|p| p.short()).unwrap_or("?");
            if cli.protocol.as_deref().is_some_and(|p| p != protocol) {
                continue;
            }
            let runs: Vec<&MutantRun> = mutants.iter().filter(|m| m.mutant == name).collect();
            if runs.is_empty() {
                continue;
            }
            // The fastest kill across checkers.
            let best = runs.iter().filter(|m| m.killed()).min_by(|a, b| a.time_s.total_cmp(&b.time_s));
            let others: Vec<String> = runs
                .iter()
                .filter(|m| best.is_none_or(|b| b.checker != m.checker))
                .map(|m| format!("{}: {}", m.checker, if m.killed() { "killed" } else { m.outcome.as_str() }))
                .collect();
            match best {
                Some(b) => println!(
                    "| `{name}` | {protocol} | {} `{}` | {} | {} | {:.2}s | {} |",
                    b.checker,
                    b.killed_by.as_deref().unwrap_or("?"),
                    b.outcome,
                    b.executions,
                    b.time_s,
                    others.join("; ")
                ),
                None => {
                    let why = runs.iter().find_map(|m| m.documented.clone());
                    if why.is_none() {
                        surviving += 1;
                    }
                    println!(
                        "| `{name}` | {protocol} | {} | — | — | — | {} |",
                        if why.is_some() { "not killable (documented)" } else { "**SURVIVED**" },
                        others.join("; ")
                    );
                    if let Some(why) = why {
                        println!("|  | | reason: {why} | | | | |");
                    }
                }
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
    Verdict { failed_scenarios, surviving_mutants: surviving, checker_errors: broken.len() }
}
