//! `protocol-proofs`: runs every protocol model and mutant, prints states, depth, time and the
//! mutants' shortest counterexamples (`--json`: one serde row per run; `--rows PATH`: the main
//! job's rows, `Vec<mmusync_models::Row>` as JSON).

use clap::Parser;
use mmusync_protocol_proofs::{checks, rows, Expect, Scale, Search};
use serde::Serialize;
use std::process::ExitCode;

/// Exhaustive stateright checks of mmusync's protocols.
#[derive(Parser, Debug)]
#[command(name = "protocol-proofs", version)]
struct Args {
    /// Instance sizes: `ci` (what `cargo test` runs) or `full`.
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Only checks whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Emit one JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Skip the DFS + symmetry run of the passing models (BFS only).
    #[arg(long)]
    no_symmetry: bool,
    /// Also write the main job's rows (`Vec<mmusync_models::Row>`, JSON) here.
    #[arg(long, value_name = "PATH")]
    rows: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Row<'a> {
    check: &'a str,
    model: &'a str,
    memory: &'a str,
    mutant: Option<&'a str>,
    size: &'a str,
    search: Search,
    expected_failure: Option<&'a str>,
    ok: bool,
    states: usize,
    unique_states: usize,
    max_depth: usize,
    seconds: f64,
    failures: Vec<&'a str>,
    counterexample: Option<&'a [String]>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut bad = 0;
    let mut out_rows = Vec::new();
    for check in checks(args.scale) {
        if args.filter.as_deref().is_some_and(|f| !check.name.contains(f)) {
            continue;
        }
        let mut searches = Vec::new();
        if check.expect != Expect::Pass || check.bfs_fits || args.no_symmetry {
            searches.push(Search::Bfs);
        }
        if check.expect == Expect::Pass && !args.no_symmetry {
            searches.push(Search::DfsSymmetry);
        }
        for search in searches {
            let report = check.run(search);
            let verdict = check.verdict(&report);
            let expected = match check.expect {
                Expect::Pass => None,
                Expect::Fail(p) => Some(p),
            };
            let cex = expected.and_then(|p| report.counterexample(p)).map(|d| d.steps.as_slice());
            if verdict.is_err() {
                bad += 1;
            }
            out_rows.extend(rows::rows(&check, args.scale, search, &report));
            if args.json {
                let row = Row {
                    check: &check.name,
                    model: check.model,
                    memory: check.memory.name(),
                    mutant: check.mutant,
                    size: &check.size,
                    search,
                    expected_failure: expected,
                    ok: verdict.is_ok(),
                    states: report.states,
                    unique_states: report.unique_states,
                    max_depth: report.max_depth,
                    seconds: report.seconds,
                    failures: report.failures(),
                    counterexample: cex,
                };
                println!("{}", serde_json::to_string(&row).expect("rows serialize"));
                continue;
            }
            println!(
                "{:<40} {:<4} {:<12} states {:>10} unique {:>9} depth {:>3} {:>8.3}s  {}",
                check.name,
                check.memory.name(),
                format!("{search:?}"),
                report.states,
                report.unique_states,
                report.max_depth,
                report.seconds,
                match &verdict {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("UNEXPECTED: {e}"),
                }
            );
            if let (Some(p), Some(steps)) = (expected, cex) {
                let what = check.mutant.unwrap_or(&check.name);
                println!("    {what}: {p} fails after {} steps:", steps.len());
                for (i, step) in steps.iter().enumerate() {
                    println!("    {:>3}. {step}", i + 1);
                }
            }
        }
    }
    if let Some(path) = &args.rows {
        let text = serde_json::to_string_pretty(&out_rows).expect("rows serialize");
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("{bad} unexpected results");
        ExitCode::FAILURE
    }
}
