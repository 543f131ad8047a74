//! How to run each checker, and how to read what it writes.

use crate::results::{Checker, MutantRun, ScenarioRun};
use crate::Cli;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

type Results = (Vec<ScenarioRun>, Vec<MutantRun>);

/// Runs `checker` and collects its results.
pub fn run(cli: &Cli, checker: Checker) -> Result<Results, String> {
    std::fs::create_dir_all(&cli.results)
        .map_err(|e| format!("cannot create {}: {e}", cli.results.display()))?;
    match checker {
        Checker::Loom => loom(cli),
        Checker::Shuttle => shuttle(cli),
        Checker::Hardware => hardware(cli),
    }
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
        bar.set_message(line.chars().take(120).collect::<String>());
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

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("no results at {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("bad JSON in {}: {e}", path.display()))
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn num_of(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn protocol_of(scenario: &str) -> String {
    mmusync_models::Scenario::by_name(scenario)
        .map(|s| s.protocol.short().to_string())
        .unwrap_or_else(|| "?".into())
}

fn loom_command(extra: &[String]) -> Command {
    let mut args: Vec<String> = vec!["--jobs".into(), "2".into()];
    args.extend_from_slice(extra);
    let mut cmd = cargo_run("mmusync-models", "loom-scorecard", &args);
    cmd.env("RUSTFLAGS", "--cfg loom --cfg crossbeam_loom");
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        cmd.env("CARGO_TARGET_DIR", workspace_root().join("target/loom"));
    }
    cmd
}

fn loom(cli: &Cli) -> Result<Results, String> {
    let json = cli.results.join("loom-scorecard.json");
    let _ = std::fs::remove_file(&json);
    let mut args = vec!["--json".to_string(), json.display().to_string()];
    args.push("--table".into());
    args.push(cli.results.join("loom-scorecard.md").display().to_string());
    if !cli.with_mutants() {
        args.push("--mutant".into());
        args.push("none".into());
    }
    if let Some(p) = &cli.protocol {
        args.push("--protocol".into());
        args.push(p.clone());
    }
    run_logged("loom", loom_command(&args), &cli.results.join("loom-scorecard.txt"))?;
    let rows = read_json(&json)?;
    let rows = rows.as_array().ok_or("loom scorecard is not an array")?;
    let mut scenarios = Vec::new();
    let mut mutants = Vec::new();
    for row in rows {
        let kill = str_of(row, "kill").unwrap_or_default();
        let scenario = str_of(row, "scenario");
        match str_of(row, "mutant") {
            None => scenarios.push(ScenarioRun {
                checker: Checker::Loom,
                protocol: protocol_of(scenario.as_deref().unwrap_or("")),
                scenario: scenario.unwrap_or_default(),
                passed: kill == "pass",
                executions: num_of(row, "executions") as u64,
                time_s: num_of(row, "time_s"),
                bound: str_of(row, "bound").unwrap_or_else(|| "?".into()),
            }),
            Some(mutant) => {
                let killed = kill.starts_with("invariant") || kill.starts_with("deadlock (liveness)");
                mutants.push(MutantRun {
                    checker: Checker::Loom,
                    mutant,
                    killed_by: if killed { scenario } else { None },
                    outcome: kill,
                    executions: num_of(row, "executions") as u64,
                    time_s: num_of(row, "time_s"),
                    documented: str_of(row, "not_killable_reason"),
                })
            }
        }
    }
    Ok((scenarios, mutants))
}

/// Protocols of the shuttle-only scenarios (the shared ones come from `mmusync_models`).
const SHUTTLE_ONLY: &[(&str, &str)] = &[
    ("fault-storm", "P1"),
    ("memslot-churn", "P3"),
    ("cache-churn", "P2"),
    ("cache-outside-memslots", "P2"),
    ("reference-mmu-long-run", "P5"),
    ("prefault-holds-srcu", "P3"),
    ("prefault-drops-srcu", "P3"),
    ("notifier-rwsem-2021", "P3"),
    ("notifier-never-blocks", "P3"),
];

fn shuttle(cli: &Cli) -> Result<Results, String> {
    let out = cli.results.join("shuttle");
    let json = out.join("ci.json");
    let _ = std::fs::remove_file(&json);
    // The CI set in both modes: under a minute, and its kill targets need their full caps.
    let args = vec!["ci".to_string(), "--out".into(), out.display().to_string()];
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    run_logged("shuttle", cargo_run("mmusync-shuttle", "mmusync-shuttle", &args), &out.join("verify.log"))?;
    let rows = read_json(&json)?;
    let rows = rows.as_array().ok_or("shuttle results are not an array")?;
    let mut scenarios = Vec::new();
    let mut mutants = Vec::new();
    for row in rows {
        let target = str_of(row, "target").unwrap_or_default();
        let what = str_of(row, "what").unwrap_or_default();
        let ok = row.get("ok").and_then(Value::as_bool).unwrap_or(false);
        let outcome = str_of(row, "outcome").unwrap_or_default();
        let protocol = SHUTTLE_ONLY
            .iter()
            .find(|(t, _)| *t == target)
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| protocol_of(&target));
        let executions = num_of(row, "executions") as u64;
        let time_s = num_of(row, "time_s");
        if what.starts_with("correct") || what.starts_with("bug") {
            scenarios.push(ScenarioRun {
                checker: Checker::Shuttle,
                scenario: format!("{target} {}", what.trim_start_matches("correct ")),
                protocol,
                passed: ok,
                executions,
                time_s,
                bound: "sampled".into(),
            });
        } else {
            let killed = ok && outcome != "pass" && outcome != "not run";
            let result = str_of(row, "result").unwrap_or_default();
            mutants.push(MutantRun {
                checker: Checker::Shuttle,
                mutant: what,
                killed_by: killed.then(|| target.clone()),
                outcome: if killed { outcome.clone() } else { result.clone() },
                executions,
                time_s,
                documented: (!killed && ok).then_some(result),
            });
        }
    }
    Ok((scenarios, mutants))
}

/// Protocols of the hardware-only scenarios.
const HARDWARE_ONLY: &[(&str, &str)] = &[
    ("hw-sb-walk", "P5"),
    ("hw-sb-entry", "P5"),
    ("hw-epoch-walk", "P5"),
    ("hw-mmu-fault-vs-invalidation", "P2"),
];

/// The mutant run on real hardware in full mode (issue 5's item 3).
const HARDWARE_MUTANT: (&str, &str) = ("hw-sb-walk", "WalkBeginModeBeforeSpteReads");

fn hardware(cli: &Cli) -> Result<Results, String> {
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
    run_logged("hardware", cargo_run("mmusync-hw", "hw-stress", &args), &out.join("verify-stress.txt"))?;
    let mut scenarios = Vec::new();
    for row in read_json(&json)?.as_array().ok_or("hardware results are not an array")? {
        let name = str_of(row, "scenario").unwrap_or_default();
        let protocol = HARDWARE_ONLY
            .iter()
            .find(|(t, _)| *t == name)
            .map(|(_, p)| p.to_string())
            .unwrap_or_else(|| protocol_of(&name));
        let violations = num_of(row, "violations") as u64;
        let errors = num_of(row, "errors") as u64;
        scenarios.push(ScenarioRun {
            checker: Checker::Hardware,
            scenario: format!("{name} ({})", str_of(row, "backend").unwrap_or_default()),
            protocol,
            passed: violations == 0 && errors == 0,
            executions: num_of(row, "iterations") as u64,
            time_s: num_of(row, "seconds"),
            bound: "sampled".into(),
        });
    }
    let mut mutants = Vec::new();
    if cli.with_mutants() {
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
        for row in read_json(&mjson)?.as_array().ok_or("hardware mutant results are not an array")? {
            let violations = num_of(row, "violations") as u64;
            mutants.push(MutantRun {
                checker: Checker::Hardware,
                mutant: mutant.to_string(),
                killed_by: (violations > 0).then(|| scenario.to_string()),
                outcome: format!(
                    "{violations} violations in {} iterations ({:.1} per million)",
                    num_of(row, "iterations"),
                    num_of(row, "per_million")
                ),
                executions: num_of(row, "iterations") as u64,
                time_s: num_of(row, "seconds"),
                documented: None,
            });
        }
    }
    Ok((scenarios, mutants))
}

/// Prints a killed mutant's counterexample (loom's trace, in protocol terms) and records a
/// checkpoint that replays it.
pub fn replay(cli: &Cli, mutant: &str) -> ExitCode {
    let dir = cli.results.join("replay");
    let args = vec![
        "--mutant".into(),
        mutant.to_string(),
        "--replay".into(),
        "--replay-dir".into(),
        dir.display().to_string(),
    ];
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
