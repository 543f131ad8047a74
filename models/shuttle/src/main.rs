//! `mmusync-shuttle`: run the shuttle targets.
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
//! Environment: `MMUSYNC_SHUTTLE_SCALE` (default scale of `ci`), `MMUSYNC_SHUTTLE_PANICS=1`
//! (print every panic in full, not only the reports), `SHUTTLE_RANDOM_SEED` (shuttle's own
//! override of every seed).

use mmusync::Rule;
use mmusync_shuttle::runner::{self, Options, Outcome, Persist, Report, Sched};
use mmusync_shuttle::suite::{self, Plan};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  mmusync-shuttle list
  mmusync-shuttle ci     [--scale F] [--seed S] [--depth D] [--out DIR] [--only T,..] [--record DIR]
  mmusync-shuttle soak   [--minutes M] [--seed S] [--depth D] [--out DIR] [--only T,..]
  mmusync-shuttle run    TARGET [--mutant RULE] [--sched random|pct|dfs] [--depth D] [--iterations N] [--seed S] [--out DIR]
  mmusync-shuttle replay TARGET [--mutant RULE] (--schedule S | --schedule-file PATH)";

/// Parsed command-line flags.
#[derive(Default)]
struct Args {
    positional: Vec<String>,
    flags: Vec<(String, String)>,
}

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut out = Args::default();
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            if let Some(name) = a.strip_prefix("--") {
                let value = args.next().ok_or_else(|| format!("--{name} needs a value"))?;
                out.flags.push((name.to_string(), value));
            } else {
                out.positional.push(a);
            }
        }
        Ok(out)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.flags.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.get(name).map(|v| v.parse().map_err(|_| format!("--{name}: bad value {v:?}"))).transpose()
    }

    fn check_known(&self, known: &[&str]) -> Result<(), String> {
        match self.flags.iter().find(|(n, _)| !known.contains(&n.as_str())) {
            Some((n, _)) => Err(format!("unknown flag --{n}")),
            None => Ok(()),
        }
    }

    fn mutant(&self) -> Result<Option<Rule>, String> {
        self.get("mutant")
            .map(|m| runner::rule(m).ok_or_else(|| format!("no rule named {m:?} (see `list`)")))
            .transpose()
    }

    fn out(&self) -> PathBuf {
        PathBuf::from(self.get("out").unwrap_or("results/shuttle"))
    }

    fn only(&self) -> Vec<String> {
        self.get("only").map(|o| o.split(',').map(str::to_string).collect()).unwrap_or_default()
    }
}

fn install_quiet_panic_hook() {
    if std::env::var_os("MMUSYNC_SHUTTLE_PANICS").is_none() {
        // Shuttle's hook, installed on the first run, prints the failing schedule and then
        // calls this one; the reports print the panic message, so the default output (a second
        // copy, with a backtrace hint) is left out.
        std::panic::set_hook(Box::new(|_| {}));
    }
}

fn target(name: Option<&String>) -> Result<runner::Target, String> {
    let name = name.ok_or("missing TARGET (see `list`)")?;
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

fn plan(args: &Args) -> Result<Plan, String> {
    let mut p = Plan::ci(args.out());
    let env_scale = std::env::var("MMUSYNC_SHUTTLE_SCALE").ok().and_then(|s| s.parse().ok());
    p.scale = args.parsed("scale")?.or(env_scale).unwrap_or(1.0);
    if let Some(s) = args.parsed("seed")? {
        p.seed = s;
    }
    if let Some(d) = args.parsed("depth")? {
        p.pct_depth = d;
    }
    p.only = args.only();
    Ok(p)
}

fn ci(args: &Args) -> Result<ExitCode, String> {
    args.check_known(&["scale", "seed", "depth", "out", "only", "record"])?;
    let plan = plan(args)?;
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

    if let Some(dir) = args.get("record") {
        record(&rows, PathBuf::from(dir))?;
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

fn soak(args: &Args) -> Result<ExitCode, String> {
    args.check_known(&["minutes", "seed", "depth", "out", "only"])?;
    let mut plan = plan(args)?;
    if args.get("seed").is_none() {
        plan.seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    let minutes: f64 = args.parsed("minutes")?.unwrap_or(60.0);
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

fn run(args: &Args) -> Result<ExitCode, String> {
    args.check_known(&["mutant", "sched", "depth", "iterations", "seed", "out"])?;
    let t = target(args.positional.get(1))?;
    let depth = args.parsed("depth")?.unwrap_or(3);
    let sched = match args.get("sched").unwrap_or("random") {
        "random" => Sched::Random,
        "pct" => Sched::Pct { depth },
        "dfs" => Sched::Dfs,
        s => return Err(format!("--sched: {s:?} is neither random nor pct")),
    };
    let mut opts = Options { persist: Persist::Dir(args.out()), ..Options::default() };
    if let Some(n) = args.parsed("iterations")? {
        opts.iterations = n;
    }
    if let Some(s) = args.parsed("seed")? {
        opts.seed = s;
    }
    std::fs::create_dir_all(args.out().join("schedules")).map_err(|e| e.to_string())?;
    let r = runner::run(t, args.mutant()?, sched, &opts);
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

fn replay(args: &Args) -> Result<ExitCode, String> {
    args.check_known(&["mutant", "schedule", "schedule-file"])?;
    let t = target(args.positional.get(1))?;
    let schedule = match (args.get("schedule"), args.get("schedule-file")) {
        (Some(s), None) => s.to_string(),
        (None, Some(f)) => std::fs::read_to_string(f).map_err(|e| format!("{f}: {e}"))?,
        _ => return Err("give exactly one of --schedule and --schedule-file".into()),
    };
    let r = runner::replay_report(t, args.mutant()?, &schedule, &Options::default());
    println!("{}: replay ended with {}", t.name, r.outcome);
    if r.outcome != Outcome::Pass {
        println!("\n{}", suite::failure_details(&r));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    install_quiet_panic_hook();
    let result = match args.positional.first().map(String::as_str) {
        Some("list") => {
            list();
            Ok(ExitCode::SUCCESS)
        }
        Some("ci") => ci(&args),
        Some("soak") => soak(&args),
        Some("run") => run(&args),
        Some("replay") => replay(&args),
        _ => Err("missing or unknown command".to_string()),
    };
    result.unwrap_or_else(|e| {
        eprintln!("{e}\n{USAGE}");
        ExitCode::from(2)
    })
}
