//! How to run each checker, and how to read what it writes.

use crate::Cli;
use indicatif::{ProgressBar, ProgressStyle};
use mmusync_models::{Checker, Row};
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How often a checker's latest output line is printed when stdout is not a terminal.
const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// Runs `checker` and collects its rows.
pub fn run(cli: &Cli, checker: Checker) -> Result<Vec<Row>, String> {
    std::fs::create_dir_all(&cli.results)
        .map_err(|e| format!("cannot create {}: {e}", cli.results.display()))?;
    match checker {
        Checker::Loom => loom(cli),
        Checker::Shuttle => shuttle(cli),
        Checker::Hardware => hardware(cli),
        Checker::Kvm => kvm(cli),
        Checker::Proofs => proofs(cli),
    }
}

/// With `--protocol`, the scenarios `checker` runs that belong to it or target one of its
/// mutants (`None` without `--protocol`: everything).
fn only(cli: &Cli, checker: Checker) -> Option<Vec<&'static str>> {
    let p = cli.protocol?;
    Some(
        mmusync_models::Scenario::run_by(checker)
            .filter(|s| s.protocol == p || s.kills.iter().any(|m| m.protocol() == p))
            .map(|s| s.name)
            .collect(),
    )
}

/// `cargo run --release -q -p <package> --bin <bin> -- <args>`, from the workspace root.
fn cargo_run(package: &str, bin: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["run", "--release", "-q", "-p", package, "--bin", bin, "--"]).args(args);
    cmd.current_dir(workspace_root());
    cmd
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs `cmd`, showing its latest output line on a spinner and saving everything to `log`.
fn run_logged(label: &str, mut cmd: Command, log: &Path) -> Result<(), String> {
    // Where stdout is not a terminal (a CI log) the spinner draws nothing: say what is
    // happening, and then print the latest line at most every PROGRESS_EVERY.
    let plain = !std::io::stdout().is_terminal();
    if plain {
        println!(
            "{label}: building (the first build of each checker takes a few minutes) and running; log: {}",
            log.display()
        );
    }
    let started = Instant::now();
    let mut last_progress = Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {prefix}: {wide_msg}").expect("template"),
    );
    bar.set_prefix(label.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut file = std::fs::File::create(log).map_err(|e| format!("cannot create {}: {e}", log.display()))?;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    let stderr = child.stderr.take().expect("piped");
    let err_thread =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).collect::<Vec<_>>());
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let _ = writeln!(file, "{line}");
        let short: String = line.chars().take(120).collect();
        if plain && last_progress.elapsed() >= PROGRESS_EVERY && !short.trim().is_empty() {
            println!("{label} [{:.0}s]: {short}", started.elapsed().as_secs_f64());
            last_progress = Instant::now();
        }
        bar.set_message(short);
    }
    let err_lines = err_thread.join().unwrap_or_default();
    for line in &err_lines {
        let _ = writeln!(file, "{line}");
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!(
        "{label}: {} (log: {})",
        if status.success() { "done" } else { "exited with failures" },
        log.display()
    );
    if status.code() == Some(2) || status.code().is_none() {
        let tail: Vec<&String> = err_lines.iter().rev().take(15).collect();
        return Err(format!(
            "{label} did not complete ({status}); last stderr lines:\n{}",
            tail.into_iter().rev().cloned().collect::<Vec<_>>().join("\n")
        ));
    }
    Ok(())
}

/// Reads the rows a checker wrote.
fn read_rows(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("no results at {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad rows in {}: {e}", path.display()))
}

fn loom_command(extra: &[String]) -> Command {
    let mut args: Vec<String> = vec!["--jobs".into(), "2".into()];
    args.extend_from_slice(extra);
    let mut cmd = cargo_run("mmusync-loom", "loom-scorecard", &args);
    cmd.env("RUSTFLAGS", "--cfg loom --cfg crossbeam_loom");
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cmd.env("CARGO_TARGET_DIR", workspace_root().join("target/loom"));
    }
    cmd
}

fn loom(cli: &Cli) -> Result<Vec<Row>, String> {
    let json = cli.results.join("loom-scorecard.json");
    let _ = std::fs::remove_file(&json);
    let mut args = vec!["--json".to_string(), json.display().to_string()];
    args.push("--table".into());
    args.push(cli.results.join("loom-scorecard.md").display().to_string());
    if !cli.with_mutants() {
        args.push("--mutant".into());
        args.push("none".into());
    }
    if let Some(p) = cli.protocol {
        args.push("--protocol".into());
        args.push(p.short().into());
    }
    run_logged("loom", loom_command(&args), &cli.results.join("loom-scorecard.txt"))?;
    read_rows(&json)
}

fn shuttle(cli: &Cli) -> Result<Vec<Row>, String> {
    let out = cli.results.join("shuttle");
    let json = out.join("ci.json");
    let _ = std::fs::remove_file(&json);
    // The CI set in both modes (its kill targets need their full caps); quick mode runs only
    // its correct-code rows.
    let mut args = vec!["ci".to_string(), "--out".into(), out.display().to_string()];
    if !cli.with_mutants() {
        args.push("--no-mutants".into());
    }
    match only(cli, Checker::Shuttle) {
        Some(names) if names.is_empty() => return Ok(Vec::new()),
        Some(names) => args.extend(["--only".into(), names.join(",")]),
        None => {}
    }
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    run_logged("shuttle", cargo_run("mmusync-shuttle", "mmusync-shuttle", &args), &out.join("verify.log"))?;
    read_rows(&json)
}

/// The mutant run on real hardware in full mode (issue 5's item 3).
const HARDWARE_MUTANT: (&str, &str) = ("hw-sb-walk", "WalkBeginModeBeforeSpteReads");

fn hardware(cli: &Cli) -> Result<Vec<Row>, String> {
    let out = cli.results.join("hw");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let json = out.join("verify-stress.json");
    let _ = std::fs::remove_file(&json);
    let sizes: [&str; 6] = if cli.full {
        ["--iterations", "2000", "--rounds", "20000", "--seconds", "10"]
    } else {
        ["--iterations", "200", "--rounds", "2000", "--seconds", "3"]
    };
    let mut args: Vec<String> = sizes.iter().map(|a| a.to_string()).collect();
    args.extend(["--json".into(), json.display().to_string()]);
    match only(cli, Checker::Hardware) {
        Some(names) if names.is_empty() => return Ok(Vec::new()),
        Some(names) => names.into_iter().for_each(|s| args.extend(["--scenario".into(), s.into()])),
        None => {}
    }
    run_logged("hardware", cargo_run("mmusync-hw", "hw-stress", &args), &out.join("verify-stress.txt"))?;
    let mut rows = read_rows(&json)?;
    let mutant_in_protocol = mmusync_models::Mutant::from_name(HARDWARE_MUTANT.1)
        .is_some_and(|m| cli.protocol.is_none_or(|p| m.protocol() == p));
    if cli.with_mutants() && mutant_in_protocol {
        let (scenario, mutant) = HARDWARE_MUTANT;
        let mjson = out.join("verify-mutant.json");
        let _ = std::fs::remove_file(&mjson);
        let mut args: Vec<String> =
            ["--scenario", scenario, "--mutant", mutant, "--rounds", "200000", "--seconds", "20"]
                .iter()
                .map(|a| a.to_string())
                .collect();
        args.extend(["--json".into(), mjson.display().to_string()]);
        run_logged(
            "hardware mutant",
            cargo_run("mmusync-hw", "hw-stress", &args),
            &out.join("verify-mutant.txt"),
        )?;
        rows.extend(read_rows(&mjson)?);
    }
    Ok(rows)
}

/// The KVM checker (`kvm-check`, crate `mmusync-kvm`): the shared scenarios in ring 0 inside a
/// KVM guest on core's `x86-ring0` backend (a VM with one vCPU per role where a scenario has
/// more roles than the host has CPUs), and in full mode the guest's mutant set (reported,
/// sampled). Where KVM is not usable, `kvm-check` says why and writes no rows: this prints the
/// reason and the checker adds nothing to the tables; with `MMUSYNC_REQUIRE_KVM=1` it exits 2
/// instead, and the checker counts as not run.
fn kvm(cli: &Cli) -> Result<Vec<Row>, String> {
    let out = cli.results.join("kvm");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let json = out.join("verify-kvm.json");
    let _ = std::fs::remove_file(&json);
    let sizes: [&str; 4] =
        if cli.full { ["--rounds", "100", "--seconds", "4"] } else { ["--rounds", "30", "--seconds", "3"] };
    let mut args: Vec<String> = sizes.iter().map(|a| a.to_string()).collect();
    args.extend(["--overcommit".into(), "--json".into(), json.display().to_string()]);
    match only(cli, Checker::Kvm) {
        Some(names) if names.is_empty() => return Ok(Vec::new()),
        Some(names) => names.into_iter().for_each(|s| args.extend(["--scenario".into(), s.into()])),
        None => {}
    }
    let log = out.join("verify-kvm.txt");
    run_logged("kvm", cargo_run("mmusync-kvm", "kvm-check", &args), &log)?;
    let mut rows = read_rows(&json)?;
    if rows.is_empty() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let why = text.lines().find(|l| l.contains("SKIPPED")).unwrap_or("kvm-check wrote no rows");
        println!("kvm: {why}");
        return Ok(rows);
    }
    if cli.with_mutants() {
        let mjson = out.join("verify-kvm-mutants.json");
        let _ = std::fs::remove_file(&mjson);
        let args: Vec<String> = ["--guest-mutants", "--rounds", "800", "--seconds", "8", "--json"]
            .iter()
            .map(|a| a.to_string())
            .chain([mjson.display().to_string()])
            .collect();
        run_logged(
            "kvm mutants",
            cargo_run("mmusync-kvm", "kvm-check", &args),
            &out.join("verify-kvm-mutants.txt"),
        )?;
        rows.extend(read_rows(&mjson)?);
    }
    Ok(rows)
}

/// The proof crates: `memmodel barriers` (every barrier's litmus skeletons under five memory
/// models), `protocol-proofs` (the stateright models and their mutants) and the trace
/// conformance of loom's and real threads' traces of core's code ([`trace_conformance`]), at the CI scale in
/// quick and full mode (about a minute in release; the full scale adds minutes for
/// larger instances of the same models). Both write [`Row`]s; `--protocol` is applied by the
/// caller.
fn proofs(cli: &Cli) -> Result<Vec<Row>, String> {
    let out = cli.results.join("proofs");
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let runs: [(&str, &str, &str, &[&str], &str); 2] = [
        ("proofs memmodel", "mmusync-memmodel", "memmodel", &["barriers"], "memmodel"),
        ("proofs protocols", "mmusync-protocol-proofs", "protocol-proofs", &["--scale", "ci"], "protocols"),
    ];
    for (label, package, bin, args, name) in runs {
        let json = out.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&json);
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["--rows".into(), json.display().to_string()]);
        run_logged(label, cargo_run(package, bin, &args), &out.join(format!("{name}.txt")))?;
        rows.extend(read_rows(&json)?);
    }
    rows.extend(trace_conformance(&out, cli.protocol)?);
    Ok(rows)
}

/// The loom runs whose every execution's trace of core's steps the proofs replay: the scenarios
/// a model projection covers, on the correct code and with each rule mutant that has a model
/// counterpart (`mmusync_protocol_proofs::conformance::conform` says which).
const TRACED: [(&str, &str); 15] = [
    ("mmu-fault-vs-invalidation", "none"),
    ("mmu-fault-vs-invalidation", "RetryChecksInProgress"),
    ("mmu-fault-vs-invalidation", "RetryChecksSeq"),
    ("mmu-fault-vs-invalidation", "RetryGfnChecksRange"),
    ("sb-walk", "none"),
    ("sb-walk", "WalkDisablesInterrupts"),
    ("sb-walk", "FlushWaitsForReaders"),
    ("sb-walk", "FreeAfterFlush"),
    ("epoch-walk", "none"),
    ("epoch-walk", "FlushBeforeUnpin"),
    ("memslot-swap-vs-invalidation", "none"),
    ("memslot-swap-vs-invalidation", "MemslotSwapWaitsForInvalidations"),
    ("memslot-swap-vs-invalidation", "MemslotPublishUnderLock"),
    ("cache-refresh-vs-invalidation", "none"),
    ("cache-refresh-vs-invalidation", "CacheChecksActiveCount"),
];

/// Traced scenarios explored below their scorecard bound (`MMUSYNC_LOOM_BOUND`): `epoch-walk`
/// at its bound of 3 is 232k executions (about 58 s and 80 MB of traces); at 2 it is 22.6k
/// (4 s, 7 MB), and every one of `FlushBeforeUnpin`'s 4,833 executions there is still rejected.
const TRACE_BOUNDS: [(&str, usize); 1] = [("epoch-walk", 2)];

/// Real-thread executions recorded per correct-code scenario of [`TRACED`] (x86 backend).
const HW_TRACED_ITERATIONS: &str = "2000";

/// Trace conformance: each run of [`TRACED`] writes every execution's core steps under loom
/// (`loom-scorecard --traces`), each of its correct-code scenarios also
/// [`HW_TRACED_ITERATIONS`] executions on real threads (`hw-stress --traces`, the x86 backend;
/// a sample, and a mutant's failure there is too rare to wait for), and `trace-conformance`
/// replays them all in the protocol models (a row per correct-code run; a disagreement on a
/// mutant's traces fails the checker).
fn trace_conformance(
    out: &Path,
    cli_protocol: Option<mmusync::barrier::Protocol>,
) -> Result<Vec<Row>, String> {
    let dir = out.join("traces");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut files = Vec::new();
    for (scenario, mutant) in TRACED.into_iter().filter(|(s, m)| {
        let in_protocol = |p| {
            mmusync_models::Scenario::by_name(s).is_some_and(|s| s.protocol == p)
                || mmusync_models::Mutant::from_name(m).is_some_and(|m| m.protocol() == p)
        };
        cli_protocol.is_none_or(in_protocol)
    }) {
        let file = dir.join(format!("loom-{scenario}--{mutant}.json"));
        let _ = std::fs::remove_file(&file);
        let args: Vec<String> =
            ["--scenario", scenario, "--mutant", mutant, "--traces"].iter().map(|a| a.to_string()).collect();
        let mut cmd = loom_command(&args);
        cmd.arg(&file);
        if let Some((_, bound)) = TRACE_BOUNDS.iter().find(|(s, _)| *s == scenario) {
            cmd.env("MMUSYNC_LOOM_BOUND", bound.to_string());
        }
        run_logged("proofs loom traces", cmd, &dir.join(format!("loom-{scenario}--{mutant}.txt")))?;
        files.push(file.display().to_string());
        if mutant == "none" {
            let file = dir.join(format!("hw-{scenario}.json"));
            let _ = std::fs::remove_file(&file);
            let args: Vec<String> = [
                "--scenario",
                scenario,
                "--backend",
                "x86",
                "--iterations",
                HW_TRACED_ITERATIONS,
                "--seconds",
                "60",
                "--traces",
            ]
            .iter()
            .map(|a| a.to_string())
            .chain([file.display().to_string()])
            .collect();
            run_logged(
                "proofs real-thread traces",
                cargo_run("mmusync-hw", "hw-stress", &args),
                &dir.join(format!("hw-{scenario}.txt")),
            )?;
            files.push(file.display().to_string());
        }
    }
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let json = out.join("trace-conformance.json");
    let _ = std::fs::remove_file(&json);
    let mut args = files;
    args.extend(["--rows".into(), json.display().to_string()]);
    run_logged(
        "proofs trace conformance",
        cargo_run("mmusync-protocol-proofs", "trace-conformance", &args),
        &out.join("trace-conformance.txt"),
    )?;
    read_rows(&json)
}

/// Prints a killed mutant's counterexample (loom's trace, in protocol terms) and records a
/// checkpoint that replays it.
pub fn replay(cli: &Cli, mutant: &str) -> ExitCode {
    let Some(m) = mmusync_models::Mutant::from_name(mutant) else {
        eprintln!("no mutant {mutant}: `mmusync-verify --list` lists them");
        return ExitCode::from(2);
    };
    let dir = cli.results.join("replay");
    let mut args = vec![
        "--mutant".into(),
        mutant.to_string(),
        "--replay".into(),
        "--replay-dir".into(),
        dir.display().to_string(),
    ];
    // Only the scenario that targets the mutant (the scorecard would otherwise run every
    // scenario's correct code first, to learn which ones reach it).
    if let Some(s) = mmusync_models::Scenario::run_by(Checker::Loom).find(|s| s.targets(m)) {
        args.extend(["--scenario".into(), s.name.into()]);
    }
    match loom_command(&args).status() {
        Ok(s) if s.success() || s.code() == Some(1) => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("loom-scorecard exited with {s}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("cannot run loom-scorecard: {e}");
            ExitCode::from(2)
        }
    }
}
