//! The CI set and the soak mode.
//!
//! **CI** ([`ci`]): for every target,
//!
//! 1. the correct code under the random scheduler and under PCT, each for the target's pass
//!    iterations: every execution must pass (or, for a target that models a bug on purpose,
//!    the bug must be found: a failure of the expected kind within the kill cap);
//! 2. every rule mutant the target lists: random and PCT in turn, in [`KILL_ROUNDS`] rounds,
//!    up to the kill cap per scheduler, stopping at the first failure. A failure other than
//!    [`Outcome::Error`] is a kill; a mutant that survives fails the CI run (a check that cannot
//!    fail is a defect), unless it is documented in [`SHUTTLE_BLIND`];
//! 3. the barrier mutants the target lists are reported as invisible to shuttle (sequential
//!    consistency), not run.
//!
//! Seeds are fixed, so a CI run is deterministic: the same executions, the same kills, the same
//! iterations to failure. Iteration counts scale with [`Plan::scale`].
//!
//! **Soak** ([`soak`]): the correct code only, every passing target under both schedulers, with
//! fresh seeds and a time budget instead of an iteration count.

use crate::runner::{self, Options, Outcome, Persist, Report, Sched, Target};
use mmusync::{Barrier, Rule};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

/// What to run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Multiplies every iteration count (1.0: the CI set).
    pub scale: f64,
    /// PCT's bug depth.
    pub pct_depth: usize,
    /// The schedulers' seed.
    pub seed: u64,
    /// Where reports and schedules go.
    pub out: PathBuf,
    /// Only these targets (all when empty).
    pub only: Vec<String>,
    /// Spin hints per CPU and execution before a liveness failure.
    pub spin_budget: u64,
    /// Whether the CI set runs the rule mutants the targets list (and reports the barrier
    /// mutants as invisible); without them it runs the correct code only.
    pub mutants: bool,
}

impl Plan {
    /// The CI plan, writing under `out`.
    pub fn ci(out: PathBuf) -> Self {
        Plan {
            scale: 1.0,
            pct_depth: 3,
            seed: Options::default().seed,
            out,
            only: Vec::new(),
            spin_budget: runner::SPIN_BUDGET,
            mutants: true,
        }
    }

    fn selected(&self) -> Vec<Target> {
        runner::targets()
            .into_iter()
            .filter(|t| self.only.is_empty() || self.only.iter().any(|o| o == t.name))
            .collect()
    }

    fn options(&self, iterations: usize) -> Options {
        Options {
            iterations: ((iterations as f64 * self.scale).ceil() as usize).max(1),
            seed: self.seed,
            spin_budget: self.spin_budget,
            persist: Persist::Dir(self.out.clone()),
            ..Options::default()
        }
    }
}

/// CI iteration counts for a target: (correct code, per scheduler; kill cap, per scheduler).
/// Chosen so that the whole CI set runs in a few minutes on two cores (docs/shuttle.md has the
/// measured times): a small scenario's execution takes tens of microseconds, a large one's
/// about a millisecond.
pub fn ci_iterations(t: &Target) -> (usize, usize) {
    match t.roles {
        0..=3 => (10_000, 10_000),
        _ => (3_000, 20_000),
    }
}

/// Rule mutants that a target lists but shuttle cannot kill in it, and why. They are still
/// run (their rows say "not killed (documented)"), but do not fail the CI set. None today:
/// `FlushBeforeUnpin` in `epoch-walk`, once listed because crossbeam-epoch is opaque to
/// shuttle, is killed by PCT (its bug needs a preemption between crossbeam calls, not inside).
pub const SHUTTLE_BLIND: &[(&str, Rule, &str)] = &[];

/// Why shuttle cannot kill `rule` in `target`, if it is documented as blind to it.
pub fn blind(target: &str, rule: Rule) -> Option<&'static str> {
    SHUTTLE_BLIND.iter().find(|(t, r, _)| *t == target && *r == rule).map(|(_, _, why)| *why)
}

/// What a CI row ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// The correct code of a target that must pass, under this scheduler.
    Correct(Sched),
    /// The correct code of a target that models a bug on purpose: the bug must show.
    Bug,
    /// A rule mutant.
    Rule(Rule),
    /// A barrier mutant the target lists, which shuttle cannot see (not run).
    Barrier(Barrier),
}

/// One line of a CI report.
#[derive(Clone, Debug)]
pub struct Row {
    /// The target.
    pub target: Target,
    /// What was run.
    pub subject: Subject,
    /// What was run, in words: `correct (random)`, a rule name, or a barrier name.
    pub what: String,
    /// What was required.
    pub required: String,
    /// The run(s) behind the row; empty for a barrier mutant (not run).
    pub reports: Vec<Report>,
    /// Whether the requirement holds.
    pub ok: bool,
    /// Whether the run explored every schedule (a depth-first run that ended before its bound).
    pub exhaustive: bool,
    /// What happened, in words.
    pub result: String,
}

/// Targets of at most this many roles also run under shuttle's depth-first scheduler.
pub const DFS_MAX_ROLES: usize = 2;

/// Runs the correct code of `t` under both schedulers, and, for a small target, depth-first up
/// to the same number of executions: a run that ends before that explored every schedule.
fn pass_rows(plan: &Plan, t: &Target, iterations: usize, rows: &mut Vec<Row>) {
    let dfs = (t.roles <= DFS_MAX_ROLES).then_some(Sched::Dfs);
    for sched in [Sched::Random, Sched::Pct { depth: plan.pct_depth }].into_iter().chain(dfs) {
        let opts = plan.options(iterations);
        let r = runner::run(*t, None, sched, &opts);
        let ok = r.outcome == Outcome::Pass;
        let exhaustive = sched == Sched::Dfs && ok && r.executions < opts.iterations as u64;
        let result = if ok && exhaustive {
            format!("pass: every schedule, {} executions, {:.1?}", r.executions, r.time)
        } else if ok && sched == Sched::Dfs {
            format!("pass: the first {} schedules depth-first (not all), {:.1?}", r.executions, r.time)
        } else if ok {
            format!("pass: {} executions, {:.1?}, max {} spins/CPU", r.executions, r.time, r.max_spins)
        } else {
            format!(
                "FAILED ({}) at execution {}: {}",
                r.outcome,
                r.executions,
                r.message.as_deref().unwrap_or("")
            )
        };
        rows.push(Row {
            target: *t,
            subject: Subject::Correct(sched),
            what: format!("correct ({sched})"),
            required: "pass".into(),
            reports: vec![r],
            ok,
            exhaustive,
            result,
        });
    }
}

/// Rounds of a kill attempt: each runs the random scheduler, then PCT, for a quarter of the
/// cap, with the round's own seed, so a mutant that only PCT (or only random) finds is not
/// kept waiting behind the other scheduler's whole cap.
pub const KILL_ROUNDS: usize = 4;

/// Runs `t` with `mutant` (or the correct code of a bug-modelling target) until the first
/// failure: in [`KILL_ROUNDS`] rounds of random then PCT, `cap` executions per scheduler in
/// all. `kill` says which failures count.
fn kill_row(
    plan: &Plan,
    t: &Target,
    mutant: Option<Rule>,
    cap: usize,
    required: &str,
    kill: impl Fn(Outcome) -> bool,
) -> Row {
    let mut reports: Vec<Report> = Vec::new();
    'rounds: for round in 0..KILL_ROUNDS {
        for sched in [Sched::Random, Sched::Pct { depth: plan.pct_depth }] {
            let mut opts = plan.options(cap.div_ceil(KILL_ROUNDS));
            opts.seed = plan.seed.wrapping_add(round as u64);
            let r = runner::run(*t, mutant, sched, &opts);
            let done = r.outcome != Outcome::Pass;
            reports.push(r);
            if done {
                break 'rounds;
            }
        }
    }
    let last = reports.last().cloned();
    let (ok, result) = match last {
        Some(r) if r.outcome != Outcome::Pass => {
            let tried: u64 = reports.iter().map(|r| r.executions).sum();
            let ok = kill(r.outcome);
            let sched = r.sched.map(|s| s.to_string()).unwrap_or_default();
            (
                ok,
                format!(
                    "{} by {sched} (seed {:#x}) at execution {} ({tried} in all, {:.1?})",
                    if ok {
                        format!("killed ({})", r.outcome)
                    } else {
                        format!("WRONG FAILURE ({})", r.outcome)
                    },
                    r.seed,
                    r.executions,
                    reports.iter().map(|r| r.time).sum::<Duration>()
                ),
            )
        }
        _ => {
            let n: u64 =
                reports.iter().filter(|r| r.sched == Some(Sched::Random)).map(|r| r.executions).sum();
            match mutant.and_then(|m| blind(t.name, m)) {
                Some(why) => {
                    (true, format!("not killed in {n} random + {n} PCT executions (documented: {why})"))
                }
                None => (false, format!("NOT KILLED in {n} random + {n} PCT executions")),
            }
        }
    };
    Row {
        target: *t,
        subject: mutant.map_or(Subject::Bug, Subject::Rule),
        what: mutant.map_or_else(|| "correct (a bug on purpose)".to_string(), |m| m.name().to_string()),
        required: required.into(),
        reports,
        ok,
        exhaustive: false,
        result,
    }
}

/// Runs the CI set. Returns every row; the run passed when every row is `ok`.
pub fn ci(plan: &Plan, mut progress: impl FnMut(&Row)) -> Vec<Row> {
    let mut rows = Vec::new();
    for t in plan.selected() {
        let (pass, cap) = ci_iterations(&t);
        let start = rows.len();
        if t.expect == Outcome::Pass {
            pass_rows(plan, &t, pass, &mut rows);
        } else {
            let expect = t.expect;
            rows.push(kill_row(plan, &t, None, cap, &format!("found ({expect})"), |o| o.is(expect)));
        }
        let mutants =
            if plan.mutants { (t.kills(), t.invisible_barriers()) } else { (Vec::new(), Vec::new()) };
        for rule in mutants.0 {
            rows.push(kill_row(plan, &t, Some(rule), cap, "killed", |o| o != Outcome::Error));
        }
        for b in mutants.1 {
            rows.push(Row {
                target: t,
                subject: Subject::Barrier(b),
                what: b.name().to_string(),
                required: "none (barrier)".into(),
                reports: Vec::new(),
                ok: true,
                exhaustive: false,
                result: "invisible to shuttle: every access is SeqCst, every fence a no-op (loom kills it)"
                    .into(),
            });
        }
        for row in &rows[start..] {
            progress(row);
        }
    }
    rows
}

/// The soak mode: the correct code of every passing target (or of `plan.only`), under both
/// schedulers, for `total` in all, split evenly; fresh seeds unless `plan.seed` was given.
pub fn soak(plan: &Plan, total: Duration, mut progress: impl FnMut(&Report)) -> Vec<Report> {
    let targets: Vec<Target> = plan.selected().into_iter().filter(|t| t.expect == Outcome::Pass).collect();
    let per_run = total / (2 * targets.len().max(1)) as u32;
    let mut reports = Vec::new();
    for t in targets {
        for sched in [Sched::Random, Sched::Pct { depth: plan.pct_depth }] {
            let opts = Options { iterations: usize::MAX, max_time: Some(per_run), ..plan.options(1) };
            let r = runner::run(t, None, sched, &opts);
            progress(&r);
            reports.push(r);
        }
    }
    reports
}

/// The part of a failure's panic message that a regression test expects: up to the second
/// `:` (`invariant violated: SPTE maps a freed page`, `liveness violated: starvation`,
/// `deadlock! blocked tasks`), or the whole first line.
pub fn expected_message(msg: &str) -> &str {
    let line = msg.lines().next().unwrap_or("");
    if line.starts_with("deadlock!") {
        // The rest names shuttle's task ids, which say nothing the trace does not.
        return "deadlock! blocked tasks";
    }
    match line.match_indices(':').nth(1) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

/// A failure in full: message, schedule, replay command, trace.
pub fn failure_details(r: &Report) -> String {
    let mut out = String::new();
    let mutant = r.mutant.map(|m| format!(" with rule {m} broken")).unwrap_or_default();
    let sched =
        r.sched.map(|s| format!(" under {s} (seed {})", r.seed)).unwrap_or_else(|| " on replay".into());
    let _ = writeln!(out, "### {}{mutant}{sched}: {} at execution {}", r.target, r.outcome, r.executions);
    if let Some(m) = &r.message {
        let _ = writeln!(out, "panic: {m}");
    }
    if r.outcome == Outcome::Deadlock {
        let _ = writeln!(
            out,
            "(shuttle's task 0 is the main task, blocked while the roles run; task k is CPU k-1)"
        );
    }
    if let Some(s) = &r.schedule {
        let _ = writeln!(out, "schedule: {s}");
    }
    if let Some(f) = &r.schedule_file {
        let _ = writeln!(out, "schedule file: {}", f.display());
    }
    if let Some(c) = r.replay_command() {
        let _ = writeln!(out, "replay: {c}");
    }
    if let Some(t) = &r.trace {
        let _ = writeln!(out, "trace of the failing execution (last steps):\n{t}");
    }
    out
}

/// The CI rows as the main job's typed rows ([`mmusync_models::Row`]): one per row, with the
/// executions and time of all its runs, the last run's failure, and its replay command.
pub fn result_rows(rows: &[Row]) -> Vec<mmusync_models::Row> {
    use mmusync_models::row::{Bound, Checker, Failure, Verdict};
    rows.iter()
        .map(|r| {
            let last = r.reports.last();
            let failure = last.and_then(|rep| match rep.outcome {
                Outcome::Pass | Outcome::Error => None,
                Outcome::Violation => Some(Failure::Invariant),
                Outcome::Liveness => Some(Failure::Liveness),
                Outcome::Deadlock => Some(Failure::Deadlock),
                Outcome::StepBound => Some(Failure::StepBound),
            });
            let verdict = match (r.subject, failure) {
                (Subject::Barrier(_), _) => Verdict::NotRun,
                (_, None) if last.is_some_and(|rep| rep.outcome == Outcome::Error) => Verdict::Error,
                (Subject::Correct(_), None) => Verdict::Pass,
                (Subject::Correct(_), Some(f)) => Verdict::Fail(f),
                (Subject::Bug, Some(f)) if r.ok => Verdict::BugShown(f),
                (Subject::Bug, _) => Verdict::Error,
                (Subject::Rule(_), Some(f)) if r.ok => Verdict::Killed(f),
                (Subject::Rule(_), Some(_)) => Verdict::Error,
                (Subject::Rule(_), None) if r.ok => Verdict::Documented,
                (Subject::Rule(_), None) => Verdict::Survived,
            };
            let mutant = match r.subject {
                Subject::Rule(rule) => Some(mmusync_models::Mutant::Rule(rule)),
                Subject::Barrier(b) => Some(mmusync_models::Mutant::Barrier(b)),
                Subject::Correct(_) | Subject::Bug => None,
            };
            let scenario = match r.subject {
                Subject::Correct(sched) => format!("{} ({sched})", r.target.name),
                _ => r.target.name.to_string(),
            };
            mmusync_models::Row {
                checker: Checker::Shuttle,
                scenario,
                protocol: r.target.protocol,
                mutant,
                verdict,
                executions: r.reports.iter().map(|x| x.executions).sum(),
                time_s: r.reports.iter().map(|x| x.time).sum::<Duration>().as_secs_f64(),
                bound: if r.exhaustive { Bound::Exhaustive } else { Bound::Sampled },
                detail: r.result.clone(),
                replay: last.filter(|rep| rep.outcome != Outcome::Pass).and_then(Report::replay_command),
            }
        })
        .collect()
}

/// The CI rows as a markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| target | run | required | result |\n|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {}{} |",
            r.target.name,
            r.what,
            r.required,
            if r.ok { "" } else { "**FAIL** " },
            r.result
        );
    }
    out
}

/// The rule scorecard of a CI run, as markdown: for every [`Rule`], the targets that killed
/// it under shuttle (scheduler and executions to the kill), or why none did.
pub fn scorecard(rows: &[Row]) -> String {
    let mut out = String::from("| rule | killed by (scheduler, executions to the kill) |\n|---|---|\n");
    for rule in Rule::ALL {
        let kills: Vec<String> = rows
            .iter()
            .filter(|r| r.ok && r.subject == Subject::Rule(*rule))
            .filter_map(|r| r.reports.last().filter(|rep| rep.outcome != Outcome::Pass).map(|rep| (r, rep)))
            .map(|(r, rep)| {
                let sched = rep.sched.map(|s| s.to_string()).unwrap_or_default();
                format!("{} ({sched}, {}; {})", r.target.name, rep.executions, rep.outcome)
            })
            .collect();
        let cell = if kills.is_empty() {
            let why: Vec<&str> = runner::targets().iter().filter_map(|t| blind(t.name, *rule)).collect();
            if why.is_empty() {
                "**not killed**".to_string()
            } else {
                format!("not killed: {}", why.join("; "))
            }
        } else {
            kills.join(", ")
        };
        let _ = writeln!(out, "| `{rule}` | {cell} |");
    }
    out
}

/// Which targets list `rule`.
pub fn targeted_by(rule: Rule) -> Vec<&'static str> {
    runner::targets().into_iter().filter(|t| t.kills().contains(&rule)).map(|t| t.name).collect()
}
