//! `hw-stress`: every scenario on real threads, a fixed number of iterations (bounded in time),
//! on the `std` and `x86` backends, with or without a mutant.
//!
//! ```text
//! hw-stress                                   # all scenarios, both backends, quick defaults
//! hw-stress --soak                            # long mode (see --help)
//! hw-stress --scenario sb-walk --mutant WalkBeginModeBeforeSpteReads --rounds 1000000
//! hw-stress --sweep                           # every scenario against each mutant it targets
//! hw-stress --json results/stress.json
//! hw-stress --scenario sb-walk --backend x86 --traces sb-walk.json   # core's steps, for trace-conformance
//! ```
//!
//! Exit status: without a mutant, 1 if any scenario saw a violation or an error; with a mutant
//! (or `--sweep`), violations are the point and only a failure to run at all exits non-zero.

use clap::Parser;
use mmusync_hw::hal::Backend;
use mmusync_hw::scenarios::Tuning;
use mmusync_hw::stress::{
    quiet_violation_panics, table_row, AnyScenario, Outcome, StressConfig, TABLE_HEADER,
};
use mmusync_models::{Bound, Checker, Mutant, Traces};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Stress the mmusync scenarios on real threads. Every sizing option can also come from the
/// environment variable `--help` names next to it.
#[derive(Parser, Debug)]
#[command(name = "hw-stress", version)]
struct Cli {
    /// Scenario to run (repeatable; model or hardware scenario names, see --list). Default: all.
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Backend (repeatable). Default: both.
    #[arg(long = "backend", value_enum)]
    backends: Vec<Backend>,
    /// Iterations of each model scenario [default: 2000; --soak: 1000000].
    #[arg(long, env = "MMUSYNC_HW_ITERATIONS")]
    iterations: Option<u64>,
    /// Rounds of each hardware scenario [default: 100000; --soak: 10000000].
    #[arg(long, env = "MMUSYNC_HW_ROUNDS")]
    rounds: Option<u64>,
    /// Time cap per scenario and backend, in seconds [default: 10; --soak: 300].
    #[arg(long, env = "MMUSYNC_HW_SECONDS")]
    seconds: Option<f64>,
    /// Soak mode: far more iterations and a 5-minute cap per scenario and backend (about 1 h 40
    /// min for everything on both backends).
    #[arg(long)]
    soak: bool,
    /// Apply this mutant (a Barrier or Rule variant name, e.g. WalkBeginModeBeforeSpteReads).
    #[arg(long, value_name = "NAME")]
    mutant: Option<String>,
    /// Run each scenario against every mutant it targets (instead of the correct code).
    #[arg(long, conflicts_with = "mutant")]
    sweep: bool,
    /// Record the steps of model scenarios and print the first violation's trace (slows the
    /// run down and changes its timing).
    #[arg(long)]
    trace: bool,
    /// Hardware scenarios: each side adds a random 0..N delay steps (about 1 ns each) before
    /// racing.
    #[arg(long, env = "MMUSYNC_HW_JITTER", default_value_t = Tuning::default().jitter)]
    jitter: u32,
    /// Hardware scenarios: entry reads (about 1 ns each) per walk or guest run through the page
    /// found.
    #[arg(long, env = "MMUSYNC_HW_HOLD", default_value_t = Tuning::default().hold)]
    hold: u32,
    /// Seed of the hardware scenarios' delays.
    #[arg(long, env = "MMUSYNC_HW_SEED", default_value_t = 1)]
    seed: u64,
    /// Write the results as a JSON array to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Record core's own steps of every iteration and write them to this file (one model
    /// scenario, one backend; with a mutant the run stops at its first violation), for the
    /// protocol proofs' `trace-conformance`. Recording takes a lock at every step.
    #[arg(long, value_name = "PATH")]
    traces: Option<PathBuf>,
    /// List the scenarios and the mutants they target, and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for s in AnyScenario::all() {
            let kind = match s {
                AnyScenario::Model(..) => "model",
                AnyScenario::Hardware(..) => "hw",
            };
            let kills: Vec<_> = s.kills().iter().map(|m| m.name()).collect();
            println!("{:<28} {kind:<5} targets: {}", s.name(), kills.join(", "));
        }
        return ExitCode::SUCCESS;
    }
    let mutant = match cli.mutant.as_deref().map(|n| (n, Mutant::from_name(n))) {
        None => None,
        Some((_, Some(m))) => Some(m),
        Some((n, None)) => {
            eprintln!("hw-stress: no barrier or rule is called {n:?}");
            return ExitCode::from(2);
        }
    };
    let scenarios: Vec<AnyScenario> = if cli.scenarios.is_empty() {
        AnyScenario::all().collect()
    } else {
        let mut v = Vec::new();
        for n in &cli.scenarios {
            match AnyScenario::by_name(n) {
                Some(s) => v.push(s),
                None => {
                    eprintln!("hw-stress: no scenario is called {n:?} (see --list)");
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    let backends = if cli.backends.is_empty() { Backend::ALL.to_vec() } else { cli.backends.clone() };
    if cli.traces.is_some()
        && (scenarios.len() != 1
            || backends.len() != 1
            || cli.sweep
            || !matches!(scenarios[0], AnyScenario::Model(..)))
    {
        eprintln!("hw-stress: --traces records one model scenario on one backend (--scenario, --backend)");
        return ExitCode::from(2);
    }
    let (iterations, rounds, seconds) =
        if cli.soak { (1_000_000, 10_000_000, 300.0) } else { (2_000, 100_000, 10.0) };
    let base = StressConfig {
        iterations: cli.iterations.unwrap_or(iterations),
        rounds: cli.rounds.unwrap_or(rounds),
        cap: Duration::from_secs_f64(cli.seconds.unwrap_or(seconds).max(0.0)),
        mutant,
        trace: cli.trace,
        record_steps: cli.traces.is_some(),
        tuning: Tuning { jitter: cli.jitter, hold: cli.hold },
        seed: cli.seed,
        ..StressConfig::default()
    };
    quiet_violation_panics();

    let mut runs: Vec<(AnyScenario, Option<Mutant>)> = Vec::new();
    for s in &scenarios {
        if cli.sweep {
            runs.extend(s.kills().iter().map(|&m| (*s, Some(m))));
        } else {
            runs.push((*s, mutant));
        }
    }
    println!(
        "hw-stress: {} run(s) on {}; model iterations {}, hardware rounds {}, cap {:?} per run{}",
        runs.len() * backends.len(),
        backends.iter().map(|b| b.name()).collect::<Vec<_>>().join("+"),
        base.iterations,
        base.rounds,
        base.cap,
        if cli.soak { " (soak)" } else { "" },
    );
    println!("{TABLE_HEADER}");
    let mut outcomes: Vec<Outcome> = Vec::new();
    for (s, m) in runs {
        for &backend in &backends {
            let cfg = StressConfig { mutant: m, ..base.clone() };
            let o = s.stress(backend, &cfg);
            println!("{}", table_row(&o));
            let _ = std::io::stdout().flush();
            outcomes.push(o);
        }
    }
    println!();
    for o in &outcomes {
        let label =
            format!("{} [{}{}]", o.scenario, o.backend, o.mutant.map_or(String::new(), |m| format!(", {m}")));
        if let Some(v) = &o.first_violation {
            println!("{label}: first violation: {v}");
            for line in &o.trace {
                println!("    {line}");
            }
        }
        if let Some(e) = &o.first_error {
            println!("{label}: first error: {e}");
        }
    }
    if let Some(path) = &cli.json {
        let rows: Vec<_> = outcomes.iter().map(Outcome::row).collect();
        let written = serde_json::to_string_pretty(&rows)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("hw-stress: writing {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if let (Some(path), [o]) = (&cli.traces, outcomes.as_mut_slice()) {
        if o.errors > 0 {
            eprintln!("hw-stress: not writing {}: the run had errors", path.display());
            return ExitCode::from(2);
        }
        let traces = Traces {
            checker: Checker::Hardware,
            scenario: o.scenario.to_string(),
            mutant: o.mutant,
            bound: Bound::Sampled,
            failed: o.violations > 0,
            executions: std::mem::take(&mut o.executions),
        };
        let steps: usize = traces.executions.iter().map(Vec::len).sum();
        let written = serde_json::to_string(&traces)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!(
                "hw-stress: {} execution(s), {steps} core step(s) written to {}",
                traces.executions.len(),
                path.display()
            ),
            Err(e) => {
                eprintln!("hw-stress: writing {}: {e}", path.display());
                return ExitCode::from(2);
            }
        }
    }
    let violations: u64 = outcomes.iter().map(|o| o.violations).sum();
    let errors: u64 = outcomes.iter().map(|o| o.errors).sum();
    println!("hw-stress: {} run(s), {violations} violation(s), {errors} error(s)", outcomes.len());
    let mutated = mutant.is_some() || cli.sweep;
    if !mutated && outcomes.iter().any(|o| !o.clean()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
