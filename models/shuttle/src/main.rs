//! `mmusync-shuttle`: run the shuttle targets (the catalogue's scenarios that name shuttle).
//!
//! ```text
//! mmusync-shuttle list
//! mmusync-shuttle ci     [--scale F] [--seed S] [--depth D] [--out DIR] [--only T,..] [--record DIR]
//! mmusync-shuttle soak   [--minutes M] [--seed S] [--depth D] [--out DIR] [--only T,..]
//! mmusync-shuttle run    TARGET [--mutant RULE] [--sched random|pct|dfs] [--depth D] [--iterations N]
//!                        [--seed S] [--out DIR]
//! mmusync-shuttle replay TARGET [--mutant RULE] (--schedule S | --schedule-file PATH)
//! ```
//!
//! `--help` on each command documents every option and the environment variable that
//! overrides it (`MMUSYNC_SHUTTLE_SCALE`, `MMUSYNC_SHUTTLE_SEED`, `MMUSYNC_SHUTTLE_DEPTH`,
//! `MMUSYNC_SHUTTLE_OUT`). Also read: `MMUSYNC_SHUTTLE_PANICS=1` (print every panic in full, not
//! only the reports) and `SHUTTLE_RANDOM_SEED` (shuttle's own override of every seed).

use clap::{Args, Parser, Subcommand, ValueEnum};
use mmusync::Rule;
use mmusync_shuttle::runner::{self, Options, Outcome, Persist, Report, Sched};
use mmusync_shuttle::suite::{self, Plan};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Runs mmusync's shuttle targets: the CI set, a soak, one target, or a replay.
#[derive(Debug, Parser)]
#[command(name = "mmusync-shuttle", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the targets and the rule mutants each one kills.
    List,
    /// The CI set: every target's correct code under random, PCT (and DFS where it fits), and
    /// every rule mutant it targets; writes summary.md and ci.json (typed rows) under --out.
    Ci {
        #[command(flatten)]
        plan: PlanArgs,
        /// Also copy each kill's schedule here and print its `regressions!` entry.
        #[arg(long, value_name = "DIR")]
        record: Option<PathBuf>,
        /// The correct code only: no rule mutants (the main job's quick mode).
        #[arg(long, conflicts_with = "record")]
        no_mutants: bool,
    },
    /// The correct code only, with fresh seeds, for a time budget.
    Soak {
        #[command(flatten)]
        plan: PlanArgs,
        /// How long to run.
        #[arg(long, default_value_t = 60.0, value_name = "M")]
        minutes: f64,
    },
    /// One target under one scheduler, with or without a rule mutant.
    Run {
        /// The target (see `list`).
        target: String,
        /// Break this rule (a `Rule` variant name).
        #[arg(long, value_name = "RULE")]
        mutant: Option<String>,
        /// The scheduler.
        #[arg(long, value_enum, default_value_t = SchedArg::Random)]
        sched: SchedArg,
        /// PCT's bug depth.
        #[arg(long, default_value_t = 3, value_name = "D")]
        depth: usize,
        /// Executions (default: the runner's).
        #[arg(long, value_name = "N")]
        iterations: Option<usize>,
        /// The scheduler's seed (default: the runner's).
        #[arg(long, value_name = "S")]
        seed: Option<u64>,
        /// Where failing schedules go.
        #[arg(long, default_value = "results/shuttle", value_name = "DIR")]
        out: PathBuf,
    },
    /// Replays a recorded schedule of a target.
    Replay {
        /// The target (see `list`).
        target: String,
        /// Break this rule (a `Rule` variant name), as when the schedule was recorded.
        #[arg(long, value_name = "RULE")]
        mutant: Option<String>,
        /// The schedule, as shuttle prints it.
        #[arg(
            long,
            value_name = "S",
            required_unless_present = "schedule_file",
            conflicts_with = "schedule_file"
        )]
        schedule: Option<String>,
        /// A file holding the schedule.
        #[arg(long, value_name = "PATH")]
        schedule_file: Option<PathBuf>,
    },
}

/// The options of the CI set and the soak ([`Plan`]); each can also come from the environment.
#[derive(Debug, Args)]
struct PlanArgs {
    /// Multiplies every iteration count (1: the CI set).
    #[arg(long, env = "MMUSYNC_SHUTTLE_SCALE", default_value_t = 1.0, value_name = "F")]
    scale: f64,
    /// The schedulers' seed (default: the CI set's fixed seed; a soak picks a fresh one).
    #[arg(long, env = "MMUSYNC_SHUTTLE_SEED", value_name = "S")]
    seed: Option<u64>,
    /// PCT's bug depth.
    #[arg(long, env = "MMUSYNC_SHUTTLE_DEPTH", default_value_t = 3, value_name = "D")]
    depth: usize,
    /// Where reports and schedules go.
    #[arg(long, env = "MMUSYNC_SHUTTLE_OUT", default_value = "results/shuttle", value_name = "DIR")]
    out: PathBuf,
    /// Only these targets.
    #[arg(long, value_delimiter = ',', value_name = "T,..")]
    only: Vec<String>,
}

impl PlanArgs {
    fn plan(&self) -> Plan {
        let mut p = Plan::ci(self.out.clone());
        p.scale = self.scale;
        if let Some(s) = self.seed {
            p.seed = s;
        }
        p.pct_depth = self.depth;
        p.only = self.only.clone();
        p
    }
}

/// A scheduler, as the command line names it.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum SchedArg {
    /// Shuttle's random scheduler.
    Random,
    /// Probabilistic concurrency testing (--depth).
    Pct,
    /// Depth-first: every schedule in turn, up to --iterations.
    Dfs,
}

fn rule(name: Option<&str>) -> Result<Option<Rule>, String> {
    name.map(|m| runner::rule(m).ok_or_else(|| format!("no rule named {m:?} (see `list`)"))).transpose()
}

fn install_quiet_panic_hook() {
    if std::env::var_os("MMUSYNC_SHUTTLE_PANICS").is_none() {
        // Shuttle's hook, installed on the first run, prints the failing schedule and then
        // calls this one; the reports print the panic message, so the default output (a second
        // copy, with a backtrace hint) is left out.
        std::panic::set_hook(Box::new(|_| {}));
    }
}

fn target(name: &str) -> Result<runner::Target, String> {
    runner::target(name).ok_or_else(|| format!("no target named {name:?} (see `list`)"))
}

fn list() {
    println!("targets (name, origin, roles, correct code must, rule mutants it kills):");
    for t in runner::targets() {
        let kills: Vec<&str> = t.kills().iter().map(|r| r.name()).collect();
        println!(
            "  {:28} {:?} {:2} roles, {:9} {}",
            t.name,
            t.origin,
            t.roles,
            t.expect.label(),
            kills.join(" ")
        );
        println!("  {:28} {}", "", t.about);
    }
    println!("\nrules (mutants) and the targets that kill them:");
    for r in Rule::ALL {
        let by: Vec<String> = suite::targeted_by(*r)
            .into_iter()
            .map(|t| {
                if suite::blind(t, *r).is_some() {
                    format!("{t} (blind: documented)")
                } else {
                    t.to_string()
                }
            })
            .collect();
        println!(
            "  {:36} {}",
            r.name(),
            if by.is_empty() { "not targeted".to_string() } else { by.join(", ") }
        );
    }
}

fn ci(plan: &PlanArgs, record_in: Option<&PathBuf>, mutants: bool) -> Result<ExitCode, String> {
    let mut plan = plan.plan();
    plan.mutants = mutants;
    std::fs::create_dir_all(plan.out.join("schedules")).map_err(|e| e.to_string())?;
    println!(
        "== shuttle CI set: scale {}, PCT depth {}, seed {:#x}, output under {}",
        plan.scale,
        plan.pct_depth,
        plan.seed,
        plan.out.display()
    );
    let start = Instant::now();
    let rows = suite::ci(&plan, |row| {
        println!(
            "{:28} {:38} {}{}",
            row.target.name,
            row.what,
            if row.ok { "" } else { "FAIL: " },
            row.result
        );
    });
    let elapsed = start.elapsed();
    let executions: u64 = rows.iter().flat_map(|r| &r.reports).map(|r| r.executions).sum();
    let failed: Vec<&suite::Row> = rows.iter().filter(|r| !r.ok).collect();

    let mut md = format!(
        "# shuttle CI set\n\nscale {}, PCT depth {}, seed {:#x}: {executions} executions in {elapsed:.1?}\n\n",
        plan.scale, plan.pct_depth, plan.seed
    );
    md.push_str(&suite::table(&rows));
    md.push_str("\n## Rule scorecard\n\n");
    md.push_str(&suite::scorecard(&rows));
    md.push_str("\n## Failures found (each kept with its replay schedule)\n\n");
    for r in rows.iter().flat_map(|r| &r.reports).filter(|r| r.outcome != Outcome::Pass) {
        md.push_str(&format!("```text\n{}```\n\n", suite::failure_details(r)));
    }
    let summary = plan.out.join("summary.md");
    std::fs::write(&summary, md).map_err(|e| e.to_string())?;
    let json = serde_json::to_string_pretty(&suite::result_rows(&rows)).map_err(|e| e.to_string())?;
    std::fs::write(plan.out.join("ci.json"), json).map_err(|e| e.to_string())?;

    if let Some(dir) = record_in {
        record(&rows, dir.clone())?;
    }
    for row in &failed {
        for r in &row.reports {
            println!("\n{}", suite::failure_details(r));
        }
    }
    println!(
        "\n== {} rows, {} failed; {executions} executions in {elapsed:.1?}; summary in {}",
        rows.len(),
        failed.len(),
        summary.display()
    );
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Copies each kill's schedule to `dir/<target>--<mutant>.schedule` (the regression tests'
/// files; `bug` for a target that models a bug on purpose) and prints the `regressions!` entry
/// of each, for `tests/regressions.rs`: the scheduler that killed it, and the CI set's kill cap
/// as the bound its search must stay within.
fn record(rows: &[suite::Row], dir: PathBuf) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    println!("\n== recorded in {} (entries for tests/regressions.rs):", dir.display());
    for r in
        rows.iter().filter(|r| r.ok).filter_map(|r| r.reports.last()).filter(|r| r.outcome != Outcome::Pass)
    {
        let Some(schedule) = &r.schedule else { continue };
        let mutant = r.mutant.map_or("bug", Rule::name);
        let file = format!("{}--{mutant}.schedule", r.target);
        std::fs::write(dir.join(&file), format!("{schedule}\n")).map_err(|e| e.to_string())?;
        let test = format!("{}_{}", r.target.replace('-', "_"), snake(mutant));
        let rule = r.mutant.map_or_else(|| "None".to_string(), |m| format!("Some(Rule::{m})"));
        let expected = suite::expected_message(r.message.as_deref().unwrap_or(""));
        let sched = match r.sched {
            Some(runner::Sched::Pct { .. }) => "pct",
            _ => "random",
        };
        let within = runner::target(r.target).map_or(0, |t| suite::ci_iterations(&t).1);
        println!("    {test}: {:?}, {rule}, {file:?}, {expected:?}, {sched} within {within};", r.target);
    }
    Ok(())
}

/// `MemslotPublishUnderLock` -> `memslot_publish_under_lock`.
fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

fn soak(args: &PlanArgs, minutes: f64) -> Result<ExitCode, String> {
    let mut plan = args.plan();
    if args.seed.is_none() {
        plan.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    std::fs::create_dir_all(plan.out.join("schedules")).map_err(|e| e.to_string())?;
    println!("== shuttle soak: {minutes} minutes, seed {}, PCT depth {}", plan.seed, plan.pct_depth);
    let start = Instant::now();
    let reports = suite::soak(&plan, Duration::from_secs_f64(minutes * 60.0), |r| {
        println!(
            "{:28} {:8} {:>9} executions {:>8.1?} max {} spins/CPU: {}",
            r.target,
            r.sched.map(|s| s.to_string()).unwrap_or_default(),
            r.executions,
            r.time,
            r.max_spins,
            r.outcome
        );
    });
    let failed: Vec<&Report> = reports.iter().filter(|r| r.outcome != Outcome::Pass).collect();
    for r in &failed {
        println!("\n{}", suite::failure_details(r));
    }
    let executions: u64 = reports.iter().map(|r| r.executions).sum();
    println!("\n== soak: {executions} executions in {:.1?}; {} failed", start.elapsed(), failed.len());
    Ok(if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

struct RunArgs<'a> {
    target: &'a str,
    mutant: Option<&'a str>,
    sched: SchedArg,
    depth: usize,
    iterations: Option<usize>,
    seed: Option<u64>,
    out: &'a PathBuf,
}

fn run(args: RunArgs<'_>) -> Result<ExitCode, String> {
    let t = target(args.target)?;
    let sched = match args.sched {
        SchedArg::Random => Sched::Random,
        SchedArg::Pct => Sched::Pct { depth: args.depth },
        SchedArg::Dfs => Sched::Dfs,
    };
    let mut opts = Options { persist: Persist::Dir(args.out.clone()), ..Options::default() };
    if let Some(n) = args.iterations {
        opts.iterations = n;
    }
    if let Some(s) = args.seed {
        opts.seed = s;
    }
    std::fs::create_dir_all(args.out.join("schedules")).map_err(|e| e.to_string())?;
    let r = runner::run(t, rule(args.mutant)?, sched, &opts);
    println!(
        "{} ({sched}, seed {}): {} after {} executions in {:.1?}, max {} spins/CPU",
        t.name, opts.seed, r.outcome, r.executions, r.time, r.max_spins
    );
    if r.outcome != Outcome::Pass {
        println!("\n{}", suite::failure_details(&r));
    }
    Ok(if r.outcome == t.expect || (r.mutant.is_some() && r.outcome != Outcome::Error) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn replay(
    name: &str,
    mutant: Option<&str>,
    schedule: Option<&str>,
    file: Option<&PathBuf>,
) -> Result<ExitCode, String> {
    let t = target(name)?;
    let schedule = match (schedule, file) {
        (Some(s), None) => s.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?,
        _ => return Err("give exactly one of --schedule and --schedule-file".into()),
    };
    let r = runner::replay_report(t, rule(mutant)?, &schedule, &Options::default());
    println!("{}: replay ended with {}", t.name, r.outcome);
    if r.outcome != Outcome::Pass {
        println!("\n{}", suite::failure_details(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_quiet_panic_hook();
    let result = match &cli.command {
        Command::List => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        Command::Ci { plan, record, no_mutants } => ci(plan, record.as_ref(), !no_mutants),
        Command::Soak { plan, minutes } => soak(plan, *minutes),
        Command::Run { target, mutant, sched, depth, iterations, seed, out } => run(RunArgs {
            target,
            mutant: mutant.as_deref(),
            sched: *sched,
            depth: *depth,
            iterations: *iterations,
            seed: *seed,
            out,
        }),
        Command::Replay { target, mutant, schedule, schedule_file } => {
            replay(target, mutant.as_deref(), schedule.as_deref(), schedule_file.as_ref())
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("mmusync-shuttle: {e}");
        ExitCode::from(2)
    })
}
