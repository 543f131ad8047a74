//! `memmodel`: check a C litmus test under SC, x86-TSO, ARMv8, RC11 and LKMM.
//!
//! ```text
//! memmodel check FILE [--model lkmm|rc11|armv8|tso|sc|all] [--json]
//! memmodel barriers [--rows PATH]
//! ```
//!
//! `check` prints one verdict per model (Never / Sometimes / Always: which allowed executions
//! satisfy the final condition's proposition), with the test's stated expectation where it has
//! one. Exit status: 0 when every stated expectation holds, 1 when one does not, 2 when the file
//! cannot be read, parsed or enumerated.
//!
//! `barriers` judges every `mmusync::Barrier` on its litmus skeletons (and runs the fidelity
//! suite, which the verdicts depend on), prints one line per row and writes the main job's rows
//! (`Vec<mmusync_models::Row>`, JSON) to `--rows`. Exit status: 0 when every skeleton forbids
//! its outcome with every barrier present and the fidelity suite agrees, 1 otherwise, 2 when
//! the rows cannot be written.

use clap::{Parser, Subcommand};
use mmusync_memmodel::{check, parse, Model};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "memmodel", about = "Axiomatic memory-model checker for C litmus tests")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check one litmus file.
    Check {
        /// The `.litmus` file.
        file: std::path::PathBuf,
        /// Which model: lkmm, rc11, armv8, tso, sc or all.
        #[arg(long, default_value = "all")]
        model: String,
        /// Print one JSON object per model instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Judge every named barrier on its skeletons and write the main job's rows.
    Barriers {
        /// Write the rows (`Vec<mmusync_models::Row>`, JSON) here.
        #[arg(long, value_name = "PATH")]
        rows: Option<std::path::PathBuf>,
    },
}

/// One JSON row of `--json`.
#[derive(serde::Serialize)]
struct Row<'a> {
    test: &'a str,
    model: Model,
    verdict: Option<mmusync_memmodel::Verdict>,
    unsupported: Option<String>,
    allowed: usize,
    witnesses: usize,
    expected: Option<mmusync_memmodel::Verdict>,
    matches: Option<bool>,
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Check { file, model, json } => check_file(file, model, json),
        Cmd::Barriers { rows } => barriers(rows),
    }
}

fn barriers(path: Option<std::path::PathBuf>) -> ExitCode {
    let start = std::time::Instant::now();
    let (fidelity_ok, fidelity_line) = mmusync_memmodel::rows::fidelity();
    println!("{fidelity_line} ({:.1}s)", start.elapsed().as_secs_f64());
    let rows = mmusync_memmodel::rows::barrier_rows(fidelity_ok, &fidelity_line);
    for r in &rows {
        let what = r.mutant.map_or_else(|| "correct".to_string(), |m| m.name().to_string());
        println!(
            "{:<36} {:<3} {:<28} {}: {}",
            what,
            r.protocol.short(),
            r.verdict.to_string(),
            r.scenario,
            r.detail
        );
    }
    println!("{} rows in {:.1}s", rows.len(), start.elapsed().as_secs_f64());
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&rows).expect("rows serialize");
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if rows.iter().all(|r| r.verdict.ok()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check_file(file: std::path::PathBuf, model: String, json: bool) -> ExitCode {
    let models: Vec<Model> = if model == "all" {
        Model::ALL.to_vec()
    } else if let Some(m) = Model::parse(&model) {
        vec![m]
    } else {
        eprintln!("unknown model `{model}` (lkmm, rc11, armv8, tso, sc, all)");
        return ExitCode::from(2);
    };
    let src = match std::fs::read_to_string(&file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let test = match parse(&src) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let outcomes = match check(&test, &models) {
        Ok((o, _)) => o,
        Err(e) => {
            eprintln!("{}: unsupported: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let mut all_match = true;
    if !json {
        println!("{}", test.name);
    }
    for (&m, o) in models.iter().zip(&outcomes) {
        let expected = test.expect.get(&m).copied();
        let verdict = o.as_ref().ok().map(|o| o.verdict);
        let matches = expected.map(|e| Some(e) == verdict);
        all_match &= matches != Some(false);
        if json {
            let (allowed, witnesses) = o.as_ref().map_or((0, 0), |o| (o.allowed, o.witnesses));
            let row = Row {
                test: &test.name,
                model: m,
                verdict,
                unsupported: o.as_ref().err().map(|e| e.to_string()),
                allowed,
                witnesses,
                expected,
                matches,
            };
            println!("{}", serde_json::to_string(&row).expect("rows serialize"));
        } else {
            let text = match o {
                Ok(o) => format!(
                    "{:<9} ({} of {} allowed executions satisfy it)",
                    o.verdict, o.witnesses, o.allowed
                ),
                Err(e) => format!("n/a       ({e})"),
            };
            let note = match (expected, matches) {
                (Some(e), Some(true)) => format!("  expected {e}: ok"),
                (Some(e), _) => format!("  expected {e}: MISMATCH"),
                _ => String::new(),
            };
            println!("  {:<6} {text}{note}", m.name());
        }
    }
    if all_match {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
