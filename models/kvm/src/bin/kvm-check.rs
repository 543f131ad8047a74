//! `kvm-check`: the catalogue's scenarios in ring 0 inside a multi-vCPU KVM guest, on core's
//! `x86-ring0` backend, with or without a mutant; writes the main job's rows.
//!
//! ```text
//! kvm-check                                   # every scenario the guest can run, 4 vCPUs
//! kvm-check --vcpus 2 --scenario sb-walk --rounds 1000
//! kvm-check --scenario sb-walk --mutant WalkBeginModeBeforeSpteReads --rounds 5000
//! kvm-check --guest-mutants                   # the guest's mutant set (see --help)
//! kvm-check --json results/kvm/rows.json
//! ```
//!
//! Where KVM is not usable it prints why, writes an empty row list and exits 0 ("skipped"),
//! unless `MMUSYNC_REQUIRE_KVM=1`, which makes that exit 2. Exit status otherwise: 1 if the
//! correct code showed a violation or an error (a mutant's violations are its hits, never a
//! failure), 2 if the harness could not run.

use clap::Parser;
use mmusync_kvm::check::{self, cannot_run, not_run_row, Config, Outcome};
use mmusync_kvm::vm::{max_vcpus, Vm};
use mmusync_kvm::{kvm_required, probe, REQUIRE_ENV};
use mmusync_kvm_shared::MAX_VCPUS;
use mmusync_models::{Checker, Mutant, Row, Scenario, SCENARIOS};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The guest's mutant set (`--guest-mutants`): the walk-begin and guest-entry full barriers
/// dropped on the two store-buffering scenarios, and three rule mutants of the same protocol.
const GUEST_MUTANTS: &[(&str, &str)] = &[
    ("sb-walk", "WalkBeginModeBeforeSpteReads"),
    ("sb-entry", "GuestEntryModeBeforeRequests"),
    ("sb-walk", "FreeAfterFlush"),
    ("sb-walk", "FlushWaitsForReaders"),
    ("sb-entry", "EntryChecksRequests"),
];

/// Run mmusync's scenarios in ring 0 inside a KVM guest.
#[derive(Parser, Debug)]
#[command(name = "kvm-check", version)]
struct Cli {
    /// vCPUs of the VM (2 up to this machine's CPU count) [env: MMUSYNC_KVM_VCPUS; default: 4,
    /// or the CPU count if smaller].
    #[arg(long)]
    vcpus: Option<usize>,
    /// Scenario to run (repeatable; default: every scenario the guest can run).
    #[arg(long = "scenario", value_name = "NAME")]
    scenarios: Vec<String>,
    /// Apply this mutant (a Barrier or Rule variant name).
    #[arg(long, value_name = "NAME")]
    mutant: Option<String>,
    /// Run the guest's mutant set instead of the correct code: the walk-begin full barrier
    /// dropped on sb-walk, the guest-entry one on sb-entry, and three rule mutants of P5.
    #[arg(long, conflicts_with = "mutant")]
    guest_mutants: bool,
    /// Run each selected scenario against every mutant it targets.
    #[arg(long, conflicts_with_all = ["mutant", "guest_mutants"])]
    sweep: bool,
    /// Rounds per scenario.
    #[arg(long, default_value_t = 200)]
    rounds: u64,
    /// Time cap per scenario (and mutant), in seconds.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Roles start after 0..N spin iterations, drawn per round and role.
    #[arg(long, default_value_t = 64)]
    jitter: u32,
    /// Seed of the jitter.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A run that completes no round for this many seconds is a hang.
    #[arg(long, default_value_t = 20.0)]
    hang_seconds: f64,
    /// Record every executor step as text, for hang reports (slows the guest down a lot).
    #[arg(long)]
    trace: bool,
    /// Print the guest's log lines.
    #[arg(long)]
    verbose: bool,
    /// Allow more vCPUs than this machine has CPUs: `--vcpus` up to 32, and a scenario with
    /// more roles than `--vcpus` runs on a second VM with one vCPU per role (the vCPUs then
    /// share host CPUs).
    #[arg(long)]
    overcommit: bool,
    /// Write the rows (JSON array of mmusync_models::Row) to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// List the scenarios the guest runs, those it does not (and why), and exit.
    #[arg(long)]
    list: bool,
}

const HEADER: &str = "| scenario | mutant | vCPUs | rounds | violations | per million | errors | flush IPIs | wake IPIs | guest starts | ms/round | seconds |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|";

fn table_row(o: &Outcome) -> String {
    format!(
        "| {} | {} | {} | {}{} | {} | {:.0} | {} | {} | {} | {} | {:.1} | {:.1} |",
        o.scenario.name,
        o.mutant.map_or("-", |m| m.name()),
        o.vcpus,
        o.rounds,
        if o.capped { " (capped)" } else { "" },
        o.violations,
        o.per_million(),
        o.errors,
        o.ipis,
        o.wakes,
        o.starts,
        o.ms_per_round(),
        o.elapsed.as_secs_f64(),
    )
}

fn write_rows(path: Option<&PathBuf>, rows: &[Row]) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(rows).map_err(|e| e.to_string())?;
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn vcpus(cli: &Cli) -> Result<usize, String> {
    let from_env = match std::env::var("MMUSYNC_KVM_VCPUS") {
        Ok(v) => Some(v.parse::<usize>().map_err(|_| format!("MMUSYNC_KVM_VCPUS={v:?} is not a number"))?),
        Err(_) => None,
    };
    Ok(cli.vcpus.or(from_env).unwrap_or_else(|| 4.min(max_vcpus())))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let n = match vcpus(&cli) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("kvm-check: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.list {
        for s in SCENARIOS {
            match cannot_run(s, n) {
                None => println!("{:<36} {} roles: {}", s.name, s.protocol.short(), s.roles.join(", ")),
                Some(why) => println!("{:<36} not run: {why}", s.name),
            }
        }
        return ExitCode::SUCCESS;
    }
    let mut selected: Vec<&'static Scenario> = Vec::new();
    for name in &cli.scenarios {
        match Scenario::by_name(name) {
            Some(s) => selected.push(s),
            None => {
                eprintln!("kvm-check: no scenario is called {name:?} (see --list)");
                return ExitCode::from(2);
            }
        }
    }
    let mut runs: Vec<(&'static Scenario, Option<Mutant>)> = Vec::new();
    if cli.guest_mutants {
        for &(s, m) in GUEST_MUTANTS {
            let (Some(s), Some(m)) = (Scenario::by_name(s), Mutant::from_name(m)) else {
                eprintln!("kvm-check: the guest mutant set names {s:?} / {m:?}, which the catalogue lacks");
                return ExitCode::from(2);
            };
            if selected.is_empty() || selected.iter().any(|x| x.name == s.name) {
                runs.push((s, Some(m)));
            }
        }
    } else {
        let mutant = match cli.mutant.as_deref() {
            None => None,
            Some(name) => match Mutant::from_name(name) {
                Some(m) => Some(m),
                None => {
                    eprintln!("kvm-check: no barrier or rule is called {name:?}");
                    return ExitCode::from(2);
                }
            },
        };
        let scenarios: Vec<&'static Scenario> =
            if selected.is_empty() { Scenario::run_by(Checker::Kvm).collect() } else { selected.clone() };
        for s in scenarios {
            if cli.sweep {
                runs.extend(s.kills.iter().map(|&m| (s, Some(m))));
            } else {
                runs.push((s, mutant));
            }
        }
    }

    let mut rows: Vec<Row> = Vec::new();
    if let Err(e) = probe() {
        let required = kvm_required();
        println!(
            "kvm-check: SKIPPED: {e}{}",
            if required { format!(" ({REQUIRE_ENV}=1: this is a failure)") } else { String::new() }
        );
        if let Err(e) = write_rows(cli.json.as_ref(), &rows) {
            eprintln!("kvm-check: {e}");
        }
        return if required { ExitCode::from(2) } else { ExitCode::SUCCESS };
    }
    let built = Instant::now();
    let make = |n: usize| if cli.overcommit { Vm::new_overcommitted(n) } else { Vm::new(n) };
    let mut vm = match make(n) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("kvm-check: cannot make the VM: {e}");
            return ExitCode::from(2);
        }
    };
    vm.verbose = cli.verbose;
    let cfg = Config {
        rounds: cli.rounds,
        cap: Duration::from_secs_f64(cli.seconds.max(0.0)),
        jitter: cli.jitter,
        seed: cli.seed,
        trace: cli.trace,
        hang: Duration::from_secs_f64(cli.hang_seconds.max(0.1)),
        ..Config::default()
    };
    println!(
        "kvm-check: {} run(s) on {n} vCPUs (VM made in {:.1} ms); {} rounds, cap {:?} per run, jitter {}",
        runs.len(),
        built.elapsed().as_secs_f64() * 1e3,
        cfg.rounds,
        cfg.cap,
        cfg.jitter
    );
    println!("{HEADER}");
    let mut failed = false;
    let mut skipped: Vec<String> = Vec::new();
    // Scenarios with more roles than `n` (with --overcommit): one more VM, sized to them.
    let wide = runs
        .iter()
        .filter(|(s, _)| cli.overcommit && cannot_run(s, MAX_VCPUS).is_none())
        .map(|(s, _)| s.roles.len())
        .filter(|&r| r > n)
        .max();
    let mut wide_vm = None;
    if let Some(w) = wide {
        match make(w) {
            Ok(mut v) => {
                v.verbose = cli.verbose;
                wide_vm = Some(v);
            }
            Err(e) => {
                eprintln!("kvm-check: cannot make the {w}-vCPU VM: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for (s, m) in runs {
        let vm = match wide_vm.as_mut() {
            Some(w) if s.roles.len() > n => w,
            _ => &mut vm,
        };
        if let Some(why) = cannot_run(s, vm.vcpus()) {
            // Other checkers' own scenarios are theirs: no row. A shared one that does not fit
            // this VM gets a row that says so.
            if s.shared().is_some() {
                rows.push(not_run_row(s, m, &why));
            }
            skipped.push(format!("{}: {why}", s.name));
            continue;
        }
        let out = match check::run_scenario(vm, s, m, &cfg) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("kvm-check: {}: the harness failed: {e}", s.name);
                let _ = write_rows(cli.json.as_ref(), &rows);
                return ExitCode::from(2);
            }
        };
        println!("{}", table_row(&out));
        if m.is_none() && !out.verdict().ok() {
            failed = true;
        }
        if let Some(e) = &out.first_error {
            println!("  error: {e}");
        }
        if let Some(v) = &out.first_violation {
            println!("  first violation: {v}");
        }
        rows.push(out.row());
    }
    if !skipped.is_empty() {
        println!("\nnot run in the guest:");
        for s in &skipped {
            println!("  {s}");
        }
    }
    if let Err(e) = write_rows(cli.json.as_ref(), &rows) {
        eprintln!("kvm-check: {e}");
        return ExitCode::from(2);
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
