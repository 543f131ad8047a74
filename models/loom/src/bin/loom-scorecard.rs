//! `loom-scorecard`: runs every mutant of mmusync's named barriers and rules against the
//! scenarios under loom, and prints (and saves) the scorecard.
//!
//! Build and run it with loom's cfg:
//!
//! ```text
//! RUSTFLAGS="--cfg loom --cfg crossbeam_loom" cargo run -p mmusync-loom --release --bin loom-scorecard -- --json results/loom-scorecard.json
//! ```
//!
//! Without `--cfg loom` the binary only says how to build it.

#[cfg(loom)]
fn main() {
    std::process::exit(cli::main());
}

#[cfg(not(loom))]
fn main() {
    eprintln!("loom-scorecard needs a loom build: RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\" cargo run -p mmusync-loom --release --bin loom-scorecard");
    std::process::exit(2);
}

#[cfg(loom)]
mod cli {
    use clap::Parser;
    use mmusync::barrier::Protocol;
    use mmusync_loom::runner::bound;
    use mmusync_loom::runner::{run_traced, Options, Outcome};
    use mmusync_loom::scorecard::{
        known_hole, mutant_names, not_killable, replay_command, result_rows, scorecard, table, Row, Selection,
    };
    use mmusync_loom::trace::{render, Entry, Event};
    use mmusync_models::{Checker, Mutant, Scenario, TraceStep, Traces};
    use std::path::PathBuf;

    /// Runs every barrier and rule mutant of mmusync against the loom scenarios and prints the
    /// scorecard. Environment: `MMUSYNC_LOOM_BOUND` (a preemption bound, or `none` for
    /// exhaustive) replaces every scenario's bound; `LOOM_MAX_BRANCHES` loom's branch limit.
    #[derive(Debug, Parser)]
    #[command(name = "loom-scorecard", version)]
    struct Cli {
        /// Only this scenario.
        #[arg(long, value_name = "NAME")]
        scenario: Option<String>,
        /// Only this protocol's mutants, its scenarios, and the scenarios that target (or check)
        /// one of its mutants (P1..P5, any case).
        #[arg(long, value_name = "P1..P5", value_parser = parse_protocol)]
        protocol: Option<Protocol>,
        /// Only this mutant (a Barrier or Rule variant name; `none` = only the correct code).
        #[arg(long, value_name = "NAME")]
        mutant: Option<String>,
        /// Also write the scorecard as JSON: the main job's typed rows (mmusync_models::Row).
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
        /// Also write the scorecard as a Markdown table.
        #[arg(long, value_name = "PATH")]
        table: Option<PathBuf>,
        /// Record a loom checkpoint of each failing execution, so that it can be replayed
        /// (counterexample traces are always printed).
        #[arg(long)]
        replay: bool,
        /// Where --replay keeps loom checkpoint files.
        #[arg(long, value_name = "DIR", default_value = "results/replay")]
        replay_dir: PathBuf,
        /// Loom models run in parallel.
        #[arg(long, value_name = "N", env = "MMUSYNC_LOOM_JOBS", default_value_t = 2)]
        jobs: usize,
        /// List scenarios and mutants, then exit.
        #[arg(long)]
        list: bool,
        /// Instead of the scorecard: explore --scenario once, with --mutant (or the correct code),
        /// keeping the trace of core's steps of every execution, and write them to this file
        /// (`mmusync_models::Traces`, JSON) for the proofs' `trace-conformance`.
        #[arg(long, value_name = "PATH", requires = "scenario")]
        traces: Option<PathBuf>,
    }

    fn parse_protocol(s: &str) -> Result<Protocol, String> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.short().eq_ignore_ascii_case(s))
            .ok_or_else(|| std::format!("no protocol {s}: one of P1, P2, P3, P4, P5"))
    }

    fn list() {
        println!("scenarios:");
        for s in Scenario::run_by(Checker::Loom) {
            println!(
                "  {:<32} {} [{}] roles: {}",
                s.name,
                s.protocol.short(),
                bound(s).describe(),
                s.roles.join(", ")
            );
        }
        println!("mutants:");
        for (kind, name) in mutant_names() {
            println!("  {kind:<8} {name}");
        }
    }

    /// `--traces`: one exploration of `scenario`, every execution's core steps written to `path`.
    fn write_traces(scenario: &str, mutant: Option<&str>, path: &std::path::Path) -> i32 {
        let Some(s) = Scenario::by_name(scenario) else { return 2 };
        let mutant = mutant.filter(|m| *m != "none").and_then(Mutant::from_name);
        let (report, executions) = run_traced(s, mutant, &Options::default());
        let failed = !matches!(report.outcome, Outcome::Pass);
        let mut executions: Vec<Vec<TraceStep>> = executions.iter().map(|e| core_steps(e)).collect();
        if failed {
            executions.push(core_steps(&report.trace));
        }
        let traces = Traces {
            checker: Checker::Loom,
            scenario: s.name.into(),
            mutant,
            bound: match report.bound.preemptions {
                None => mmusync_models::Bound::Exhaustive,
                Some(n) => mmusync_models::Bound::Preemptions(n),
            },
            failed,
            executions,
        };
        let text = match serde_json::to_string(&traces) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("cannot serialize the traces: {e}");
                return 2;
            }
        };
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("cannot write {}: {e}", path.display());
            return 2;
        }
        println!(
            "{} ({}): {} executions, {}; traces in {}",
            s.name,
            mutant.map_or("correct code", |m| m.name()),
            traces.executions.len(),
            report.outcome.label(),
            path.display()
        );
        0
    }

    /// core's steps of one execution; a CPU only between the roles' start and end (the setup and
    /// the final checks run on the model's main thread, as CPU 0, and are not replayed).
    fn core_steps(entries: &[Entry]) -> Vec<TraceStep> {
        let mut in_roles = false;
        let mut steps = Vec::new();
        for e in entries {
            match &e.event {
                Event::RolesStart => in_roles = true,
                Event::RolesEnd => in_roles = false,
                Event::Core(step) => steps.push(TraceStep { cpu: in_roles.then_some(e.cpu), step: *step }),
                _ => {}
            }
        }
        steps
    }

    fn counterexample(row: &Row, replay_dir: Option<&PathBuf>) {
        let (Some(m), Some(r)) = (row.mutant, row.report.as_ref()) else { return };
        println!();
        println!(
            "=== {} ({}) killed by {} after {} executions [{}] ===",
            m.name(),
            m.kind(),
            r.scenario,
            r.executions,
            r.bound.describe()
        );
        println!("{}", r.message.as_deref().unwrap_or(""));
        println!("interleaving (cpu, role, step; issued barriers included, the mutant marked ***):");
        print!("{}", render(&r.roles, &r.trace, true));
        let cmd = replay_command(r.scenario, m);
        match replay_dir {
            Some(dir) => {
                let cp = dir.join(std::format!("{}--{}.json", r.scenario, m.name()));
                println!("replay: loom checkpoint {} holds this execution; re-running", cp.display());
                println!("  {cmd} --replay-dir {}", dir.display());
                println!("starts from it (the first execution is this one). Add LOOM_LOG=1 LOOM_LOCATION=1 for loom's own per-access log.");
            }
            None => println!("replay: {cmd}\n  (records a loom checkpoint of the failing execution under results/replay/, then replays from it)"),
        }
    }

    pub fn main() -> i32 {
        let cli = Cli::parse();
        if cli.list {
            list();
            return 0;
        }
        let scenario = cli.scenario.clone();
        if let Some(name) = &scenario {
            if Scenario::run_by(Checker::Loom).all(|s| s.name != name) {
                eprintln!("no loom scenario {name}; --list shows them");
                return 2;
            }
        }
        if let Some(path) = &cli.traces {
            return write_traces(cli.scenario.as_deref().unwrap_or_default(), cli.mutant.as_deref(), path);
        }
        let protocol = cli.protocol;
        let mutant = cli.mutant.clone();
        if let Some(name) = &mutant {
            if name != "none" && Mutant::from_name(name).is_none() {
                eprintln!("no mutant {name}; --list shows them");
                return 2;
            }
        }
        let replay = cli.replay;
        let replay_dir = replay.then(|| cli.replay_dir.clone());
        if let Some(dir) = &replay_dir {
            if let Err(e) = std::fs::create_dir_all(dir) {
                eprintln!("cannot create {}: {e}", dir.display());
                return 2;
            }
        }
        let sel = Selection { scenario, protocol, mutant, jobs: cli.jobs, replay_dir: replay_dir.clone() };
        let start = std::time::Instant::now();
        let rows = scorecard(&sel);
        let elapsed = start.elapsed();

        let md = table(&rows);
        println!("{md}");
        for row in &rows {
            if let (Some(m), false) = (row.mutant, row.killed()) {
                if let Some(why) = not_killable(m) {
                    println!("- {}: not killable by loom: {why}", m.name());
                    if let Some(c) = row.confirmation() {
                        println!("  {c}");
                    }
                }
                if let Some(why) = known_hole(m) {
                    println!("- {}: NOT KILLED, known checker hole: {why}", m.name());
                }
            }
            if row.mutant.is_none() && !row.ok() {
                if let Some(r) = &row.report {
                    println!(
                        "!! the correct code FAILED {}: {}\n{}",
                        r.scenario,
                        r.message.as_deref().unwrap_or(""),
                        render(&r.roles, &r.trace, true)
                    );
                }
            }
        }
        for row in rows.iter().filter(|r| r.killed()) {
            counterexample(row, replay_dir.as_ref());
        }
        let bad: Vec<String> = rows
            .iter()
            .filter(|r| !r.ok())
            .map(|r| {
                r.mutant
                    .map(|m| m.name().to_string())
                    .unwrap_or_else(|| std::format!("correct code in {}", r.scenario.unwrap_or("?")))
            })
            .collect();
        let killed = rows.iter().filter(|r| r.mutant.is_some() && r.killed()).count();
        let mutants = rows.iter().filter(|r| r.mutant.is_some()).count();
        let documented = rows
            .iter()
            .filter(|r| !r.killed() && r.mutant.is_some_and(|m| not_killable(m).is_some()))
            .count();
        let holes =
            rows.iter().filter(|r| !r.killed() && r.mutant.is_some_and(|m| known_hole(m).is_some())).count();
        let scenarios = rows.iter().filter(|r| r.mutant.is_none()).count();
        let passed = rows.iter().filter(|r| r.mutant.is_none() && r.ok()).count();
        println!(
            "\ncorrect code: {passed} of {scenarios} scenarios pass; mutants: {killed} of {mutants} killed, {documented} documented as not killable, {holes} known holes, {} survived; {} problems; total {elapsed:.2?}",
            mutants - killed - documented - holes,
            bad.len()
        );
        let json = match serde_json::to_string_pretty(&result_rows(&rows)) {
            Ok(text) => text,
            Err(e) => {
                eprintln!("cannot serialize the rows: {e}");
                return 2;
            }
        };
        for (path, text) in [(&cli.json, json), (&cli.table, md)] {
            if let Some(path) = path {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::create_dir_all(dir);
                }
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("cannot write {}: {e}", path.display());
                    return 2;
                }
            }
        }
        if bad.is_empty() {
            0
        } else {
            eprintln!("scorecard problems: {}", bad.join(", "));
            1
        }
    }
}
