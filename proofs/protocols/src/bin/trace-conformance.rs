//! `trace-conformance`: replays step traces recorded from core's code (`mmusync_models::Traces`
//! files, as `loom-scorecard --traces` writes them) in the protocol models, and fails (exit
//! status 2) when a trace of the correct code is not a path of its model, when a mutant's failing
//! execution is, or when a mutant's execution is not a path of the model mutant that breaks the
//! same rule.

use clap::Parser;
use mmusync_models::{Checker, Failure, Row, Scenario, Verdict};
use mmusync_protocol_proofs::conformance::conform;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Replays recorded step traces in the protocol models.
#[derive(Debug, Parser)]
#[command(name = "trace-conformance", version)]
struct Args {
    /// Trace files (`mmusync_models::Traces` as JSON).
    #[arg(required = true, value_name = "PATH")]
    traces: Vec<PathBuf>,
    /// Also write the main job's rows (`Vec<mmusync_models::Row>`, JSON) here: one per trace file
    /// of the correct code (checker `proofs`, scenario `trace-conformance/<checker>/<scenario>`).
    #[arg(long, value_name = "PATH")]
    rows: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut bad = 0;
    let mut rows = Vec::new();
    for path in &args.traces {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let traces: mmusync_models::Traces = match serde_json::from_str(&text) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: not a trace file: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let what = format!(
            "{} {} ({}, {}, {} executions)",
            traces.checker,
            traces.scenario,
            traces.mutant.map_or("correct code", |m| m.name()),
            traces.bound,
            traces.executions.len()
        );
        let start = Instant::now();
        let result = conform(&traces);
        let seconds = start.elapsed().as_secs_f64();
        match result {
            Err(e) => {
                eprintln!("{what}: {e}");
                bad += 1;
            }
            Ok(c) => {
                let protocol = Scenario::by_name(&traces.scenario).map(|s| s.protocol);
                if let (None, Some(protocol)) = (traces.mutant, protocol) {
                    rows.push(Row {
                        checker: Checker::Proofs,
                        scenario: format!("trace-conformance/{}/{}", traces.checker, traces.scenario),
                        protocol,
                        mutant: None,
                        verdict: if c.problems.is_empty() {
                            Verdict::Pass
                        } else {
                            Verdict::Fail(Failure::Invariant)
                        },
                        executions: traces.executions.len() as u64,
                        time_s: seconds,
                        bound: traces.bound,
                        detail: format!(
                            "{} of {} executions replay in the model ({} steps lagged)",
                            c.accepted,
                            traces.executions.len(),
                            c.lagged
                        ),
                        replay: Some(format!("trace-conformance {}", path.display())),
                    });
                }
                println!(
                    "{what}: {} replay in the model, {} rejected, {} replay in the model mutant, {} lagged steps{}",
                    c.accepted,
                    c.rejected,
                    c.in_model_mutant,
                    c.lagged,
                    if !c.problems.is_empty() {
                        ": DISAGREES"
                    } else if c.failure_unseen {
                        " (the failing execution also replays: its trace does not show the order that failed)"
                    } else {
                        ""
                    }
                );
                for p in c.problems.iter().take(5) {
                    eprintln!("{what}: {p}");
                }
                bad += usize::from(!c.problems.is_empty());
            }
        }
    }
    if let Some(path) = &args.rows {
        let text = match serde_json::to_string_pretty(&rows) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot serialize the rows: {e}");
                return ExitCode::from(2);
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        // Not a kill or a survivor to tabulate: the code and its model disagree, which stops
        // the main job (exit status 2: the checker did not complete).
        eprintln!("{bad} trace file(s) disagree with their model");
        ExitCode::from(2)
    }
}
