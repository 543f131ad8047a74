//! `hw-litmus`: store buffering and message passing on two pinned threads, with and without the
//! `x86` backend's barriers; relaxed outcomes per million rounds.
//!
//! ```text
//! hw-litmus                          # 1,000,000 rounds per test
//! hw-litmus --iterations 10000000 --json results/litmus.json
//! ```
//!
//! Exits 1 if an outcome that x86-TSO forbids (SB with a full barrier, MP) was seen.

use clap::Parser;
use mmusync_hw::litmus::{forbidden, standard_suite, LitmusResult};
use std::path::PathBuf;
use std::process::ExitCode;

/// Litmus tests (SB, MP) on this CPU.
#[derive(Parser, Debug)]
#[command(name = "hw-litmus", version)]
struct Cli {
    /// Rounds per test.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Each thread waits a random 0..=N spin hints after the per-round rendezvous.
    #[arg(long, default_value_t = 0)]
    max_delay: u64,
    /// Do not pin the two threads to CPUs 0 and 1.
    #[arg(long)]
    no_pin: bool,
    /// Write the results as a JSON array to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

/// One result as `--json` writes it.
#[derive(serde::Serialize)]
struct Row {
    test: &'static str,
    fences: String,
    iterations: u64,
    relaxed: u64,
    per_million: f64,
    covered: u64,
    forbidden: bool,
    pinned: bool,
    seconds: f64,
}

fn row(r: &LitmusResult) -> Row {
    Row {
        test: r.test.name(),
        fences: r.fence_name(),
        iterations: r.iterations,
        relaxed: r.relaxed,
        per_million: r.per_million(),
        covered: r.covered,
        forbidden: forbidden(r),
        pinned: r.pinned,
        seconds: r.elapsed.as_secs_f64(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    println!("hw-litmus: {} rounds per test, max delay {} spin hints", cli.iterations, cli.max_delay);
    println!(
        "| test | barrier | rounds | relaxed | per million | covered | TSO forbids | pinned | seconds |"
    );
    println!("|---|---|---:|---:|---:|---:|---|---|---:|");
    let results = standard_suite(cli.iterations, !cli.no_pin, cli.max_delay);
    let mut bad = false;
    for r in &results {
        let forbids = forbidden(r);
        bad |= forbids && r.relaxed > 0;
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {} | {} | {:.2} |",
            r.test.name(),
            r.fence_name(),
            r.iterations,
            r.relaxed,
            r.per_million(),
            r.covered,
            if forbids { "yes" } else { "no" },
            r.pinned,
            r.elapsed.as_secs_f64()
        );
    }
    if let Some(path) = &cli.json {
        let rows: Vec<Row> = results.iter().map(row).collect();
        let written = serde_json::to_string_pretty(&rows)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("hw-litmus: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if bad {
        println!("hw-litmus: an outcome x86-TSO forbids was observed");
        ExitCode::FAILURE
    } else {
        println!("hw-litmus: no forbidden outcome");
        ExitCode::SUCCESS
    }
}
