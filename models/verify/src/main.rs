//! `mmusync-verify`: the main job. Runs the verification suite — loom (weak memory, every
//! barrier and rule mutant), shuttle (many threads, liveness), real threads on this CPU, ring 0
//! inside a KVM guest (skipped where /dev/kvm is not usable), the proofs — and ends with the
//! protocol × checker table, the mutant scorecard, and what each checker cannot see.
//!
//! Each checker is its own program (loom needs a `--cfg loom` build of its own, in its own
//! target directory), so this binary runs them as child processes through `cargo run`, shows
//! their progress, and reads the JSON each one writes. `ci/verify.sh` is the entry point.
//!
//! Exit status: 0 when every scenario passes on the correct code and every mutant is killed by
//! some checker or documented as not killable; 1 otherwise; 2 when a checker could not run.

mod checkers;
mod tables;

use clap::Parser;
use mmusync::barrier::Protocol;
use mmusync_models::{Checker, Row};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Runs mmusync's verification suite and prints the scorecard.
#[derive(Parser, Debug)]
#[command(name = "mmusync-verify", version, about)]
pub struct Cli {
    /// Full mode: adds every barrier and rule mutant under loom (the scorecard), shuttle's rule
    /// mutants, the hardware mutant, the KVM guest's mutants, and larger hardware and KVM runs.
    /// Without it: quick mode: the correct code only (loom under each scenario's bound,
    /// shuttle's CI set without its mutants, real threads and the KVM guest with small
    /// iteration counts, the proofs at CI scale); the summary says what was skipped.
    #[arg(long)]
    pub full: bool,
    /// Run the mutant scorecard (implied by --full).
    #[arg(long)]
    pub mutants: bool,
    /// Only scenarios and mutants of this protocol (P1..P5, any case).
    #[arg(long, value_parser = parse_protocol)]
    pub protocol: Option<Protocol>,
    /// Only these checkers (repeatable): loom, shuttle, hardware, kvm, proofs.
    #[arg(long, value_parser = parse_checker)]
    pub checker: Vec<Checker>,
    /// Print the counterexample of this killed mutant (a Barrier or Rule name) with the command
    /// that replays it, then exit.
    #[arg(long, value_name = "MUTANT")]
    pub replay: Option<String>,
    /// List the checkers, every scenario of the catalogue with the checkers that run it, and
    /// every mutant, then exit.
    #[arg(long)]
    pub list: bool,
    /// Also write every result as JSON.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Where checkers write their own results.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results: PathBuf,
}

fn list() {
    println!("checkers:");
    for c in Checker::ALL {
        println!("  {c}");
    }
    println!("scenarios (the catalogue):");
    for s in mmusync_models::SCENARIOS {
        let checkers: Vec<&str> = s.checkers.iter().map(|c| c.name()).collect();
        println!(
            "  {:<36} {} [{}] roles: {}",
            s.name,
            s.protocol.short(),
            checkers.join(", "),
            s.roles.join(", ")
        );
    }
    println!("mutants:");
    for m in mmusync_models::Mutant::all() {
        println!("  {:<8} {:<36} {}", m.kind(), m.name(), m.protocol().short());
    }
}

fn parse_protocol(s: &str) -> Result<Protocol, String> {
    Protocol::ALL
        .into_iter()
        .find(|p| p.short().eq_ignore_ascii_case(s))
        .ok_or_else(|| format!("no protocol {s}: one of P1, P2, P3, P4, P5"))
}

fn parse_checker(s: &str) -> Result<Checker, String> {
    Checker::from_name(&s.to_ascii_lowercase()).ok_or_else(|| {
        let names: Vec<&str> = Checker::ALL.iter().map(|c| c.name()).collect();
        format!("no checker {s}: one of {}", names.join(", "))
    })
}

impl Cli {
    fn runs(&self, c: Checker) -> bool {
        self.checker.is_empty() || self.checker.contains(&c)
    }

    fn with_mutants(&self) -> bool {
        self.full || self.mutants || self.replay.is_some()
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        list();
        return ExitCode::SUCCESS;
    }
    if let Some(mutant) = &cli.replay {
        return checkers::replay(&cli, mutant);
    }
    let start = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    let mut broken = Vec::new();
    for checker in Checker::ALL.into_iter().filter(|c| cli.runs(*c)) {
        match checkers::run(&cli, checker) {
            Ok(r) => rows.extend(r),
            Err(e) => broken.push(format!("{checker}: {e}")),
        }
    }
    if let Some(p) = cli.protocol {
        rows.retain(|r| r.mutant.map_or(r.protocol, |m| m.protocol()) == p);
    }
    let verdict = tables::print(&cli, &rows, &broken);
    if !cli.with_mutants() {
        println!(
            "\nquick mode: the correct code only. Not run: the mutant scorecard (every barrier and rule \
             mutant under loom, shuttle's rule mutants, the hardware and KVM mutants) and the larger \
             hardware and KVM runs; `--full` (or `--mutants`) runs them."
        );
    }
    println!("\nmmusync-verify: {} in {:.0}s", verdict.summary(), start.elapsed().as_secs_f64());
    if let Some(path) = &cli.json {
        let doc = serde_json::json!({
            "mode": if cli.full { "full" } else { "quick" },
            "rows": rows,
            "checker_errors": broken,
            "verdict": verdict.summary(),
        });
        if let Err(e) = std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap_or_default()) {
            eprintln!("cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    verdict.exit_code()
}
