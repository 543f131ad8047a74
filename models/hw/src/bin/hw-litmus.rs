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
use mmusync_hw::stress::json_str;
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

fn json(r: &LitmusResult) -> String {
    format!(
        "{{\"test\":{},\"fences\":{},\"iterations\":{},\"relaxed\":{},\"per_million\":{:.3},\"covered\":{},\"forbidden\":{},\"pinned\":{},\"seconds\":{:.3}}}",
        json_str(r.test.name()),
        json_str(&r.fence_name()),
        r.iterations,
        r.relaxed,
        r.per_million(),
        r.covered,
        forbidden(r),
        r.pinned,
        r.elapsed.as_secs_f64()
    )
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
        let body: Vec<String> = results.iter().map(json).collect();
        if let Err(e) = std::fs::write(path, format!("[\n{}\n]\n", body.join(",\n"))) {
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
