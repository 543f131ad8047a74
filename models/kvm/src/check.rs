//! Runs the catalogue's scenarios in the guest and turns what happened into the main job's
//! rows.
//!
//! A scenario runs for a number of rounds (one round = its setup, its roles on vCPUs `0..n`,
//! its final checks). The guest stops at the first panic: an invariant violation (a round that
//! failed its check) or anything else (an error). The harness records it and starts a fresh
//! guest at the next round, until every round ran or the time cap is reached. A mutant's
//! violations are its hits; they are sampled, so a mutant not seen is reported as such, never
//! as killable or not.

use crate::error::KvmError;
use crate::vm::{End, Limits, RunSpec, Vm};
use mmusync_kvm_shared::{ERR_BAD_MAGIC, ERR_NOT_SHARED, ERR_NO_MUTANT, ERR_NO_SCENARIO, ERR_TOO_FEW_CPUS};
use mmusync_models::row::{Bound, Checker, Failure, Row, Verdict};
use mmusync_models::scenario::Expect;
use mmusync_models::{Mutant, Scenario};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long and how hard to run one scenario.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rounds to run.
    pub rounds: u64,
    /// Time cap for the scenario (the guest finishes its current round and stops).
    pub cap: Duration,
    /// Roles start after `0..jitter` spin iterations (drawn per round and role).
    pub jitter: u32,
    /// Seed of the jitter.
    pub seed: u64,
    /// Record executor steps as text (slow; for hang reports).
    pub trace: bool,
    /// No round completed for this long: a hang.
    pub hang: Duration,
    /// Stop a scenario after this many errors (panics that are not violations, hangs).
    pub max_errors: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rounds: 200,
            cap: Duration::from_secs(10),
            jitter: 64,
            seed: 1,
            trace: false,
            hang: Duration::from_secs(20),
            max_errors: 3,
        }
    }
}

/// Every scenario the guest runs: those the catalogue gives the `kvm` checker (shared bodies,
/// whose correct code is expected to finish: a livelock or deadlock scenario would only trip
/// the watchdog).
pub fn scenarios() -> impl Iterator<Item = &'static Scenario> {
    Scenario::run_by(Checker::Kvm)
        .filter(|s| s.shared().is_some() && matches!(s.expect, Expect::Pass | Expect::Violation))
}

/// Why the guest on `ncpus` vCPUs cannot run `s`, if it cannot.
pub fn cannot_run(s: &Scenario, ncpus: usize) -> Option<String> {
    if s.shared().is_none() {
        return Some("its body belongs to another checker's crate (std threads or shuttle)".into());
    }
    if !s.runs_on(Checker::Kvm) {
        return Some("the catalogue does not list the kvm checker for it".into());
    }
    if !matches!(s.expect, Expect::Pass | Expect::Violation) {
        return Some(format!(
            "the correct code is expected to {:?}: the watchdog, not the scenario, would end it",
            s.expect
        ));
    }
    if s.roles.len() > ncpus {
        return Some(format!(
            "{} roles, but the VM has {ncpus} vCPUs (kvm-check --overcommit runs it on a VM with one vCPU per role)",
            s.roles.len()
        ));
    }
    None
}

/// What one scenario did in the guest.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario.
    pub scenario: &'static Scenario,
    /// The mutant applied.
    pub mutant: Option<Mutant>,
    /// vCPUs of the VM.
    pub vcpus: usize,
    /// Rounds run (including the ones that failed).
    pub rounds: u64,
    /// Rounds that failed an invariant.
    pub violations: u64,
    /// Failures that are not violations (other panics, exceptions, hangs, refusals).
    pub errors: u64,
    /// Guest starts (1 + one per panic or hang).
    pub starts: u64,
    /// Flush IPIs taken, over every vCPU.
    pub ipis: u64,
    /// Wake-up IPIs taken.
    pub wakes: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the time cap stopped it before all rounds ran.
    pub capped: bool,
    /// The first violation's message.
    pub first_violation: Option<String>,
    /// The first error, with every vCPU's position for a hang or crash.
    pub first_error: Option<String>,
}

impl Outcome {
    /// Violations per million rounds.
    pub fn per_million(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.violations as f64 * 1e6 / self.rounds as f64
        }
    }

    /// Milliseconds per round (wall time, including guest restarts).
    pub fn ms_per_round(&self) -> f64 {
        if self.rounds == 0 {
            0.0
        } else {
            self.elapsed.as_secs_f64() * 1e3 / self.rounds as f64
        }
    }

    /// The verdict: for the correct code, pass or fail (or, for a scenario that shows a known
    /// bug, whether it showed); for a mutant, killed or not seen (sampled).
    pub fn verdict(&self) -> Verdict {
        let shown = Failure::Invariant;
        match (self.mutant, self.violations, self.errors) {
            (_, _, e) if e > 0 => Verdict::Error,
            (None, 0, _) if self.scenario.expect == Expect::Violation => Verdict::NotSeen,
            (None, 0, _) => Verdict::Pass,
            (None, _, _) if self.scenario.expect == Expect::Violation => Verdict::BugShown(shown),
            (None, _, _) => Verdict::Fail(shown),
            (Some(_), 0, _) => Verdict::NotSeen,
            (Some(_), _, _) => Verdict::Killed(shown),
        }
    }

    /// The main job's row.
    pub fn row(&self) -> Row {
        let mut detail = format!(
            "{} vCPUs: {} violation(s) in {} rounds ({:.1} per million), {} error(s), {:.1} ms/round, {} flush IPIs, {} wake-up IPIs, {} guest start(s){}",
            self.vcpus,
            self.violations,
            self.rounds,
            self.per_million(),
            self.errors,
            self.ms_per_round(),
            self.ipis,
            self.wakes,
            self.starts,
            if self.capped { ", stopped by the time cap" } else { "" }
        );
        if let Some(first) = self.first_violation.as_deref().or(self.first_error.as_deref()) {
            let _ = write!(detail, "; first: {first}");
        }
        Row {
            checker: Checker::Kvm,
            scenario: self.scenario.name.to_string(),
            protocol: self.scenario.protocol,
            mutant: self.mutant,
            verdict: self.verdict(),
            executions: self.rounds,
            time_s: self.elapsed.as_secs_f64(),
            bound: Bound::Sampled,
            detail,
            replay: None,
        }
    }
}

/// A row for a scenario the guest does not run, saying why.
pub fn not_run_row(s: &Scenario, mutant: Option<Mutant>, why: &str) -> Row {
    Row {
        checker: Checker::Kvm,
        scenario: s.name.to_string(),
        protocol: s.protocol,
        mutant,
        verdict: Verdict::NotRun,
        executions: 0,
        time_s: 0.0,
        bound: Bound::Sampled,
        detail: why.to_string(),
        replay: None,
    }
}

fn refusal(code: u32) -> &'static str {
    match code {
        ERR_NO_SCENARIO => {
            "the guest has no scenario of that name (host and guest built from different catalogues?)"
        }
        ERR_NOT_SHARED => "the scenario has no shared body",
        ERR_NO_MUTANT => "the guest has no mutant of that name",
        ERR_TOO_FEW_CPUS => "more roles than vCPUs",
        ERR_BAD_MAGIC => "the mailbox was not written by this harness",
        _ => "unknown refusal",
    }
}

/// Runs `s` in the guest of `vm` with `mutant` applied (see the module documentation).
pub fn run_scenario(
    vm: &mut Vm,
    s: &'static Scenario,
    mutant: Option<Mutant>,
    cfg: &Config,
) -> Result<Outcome, KvmError> {
    let start = Instant::now();
    let deadline = start + cfg.cap;
    let mut out = Outcome {
        scenario: s,
        mutant,
        vcpus: vm.vcpus(),
        rounds: 0,
        violations: 0,
        errors: 0,
        starts: 0,
        ipis: 0,
        wakes: 0,
        elapsed: Duration::ZERO,
        capped: false,
        first_violation: None,
        first_error: None,
    };
    let mut next = 0;
    while next < cfg.rounds {
        if Instant::now() >= deadline {
            out.capped = true;
            break;
        }
        let spec = RunSpec {
            scenario: s.name.to_string(),
            mutant,
            first_round: next,
            rounds: cfg.rounds,
            jitter: cfg.jitter,
            seed: cfg.seed,
            trace: cfg.trace,
        };
        let report = vm.run(&spec, Limits { hang: cfg.hang, deadline: Some(deadline) })?;
        out.starts += 1;
        out.ipis += report.vcpus.iter().map(|v| v.ipis).sum::<u64>();
        out.wakes += report.vcpus.iter().map(|v| v.wakes).sum::<u64>();
        let error = |out: &mut Outcome, what: String| {
            out.errors += 1;
            out.first_error.get_or_insert(what);
        };
        match report.end {
            End::Done => {
                next = report.rounds_done;
                if next < cfg.rounds {
                    out.capped = true;
                }
                break;
            }
            End::Refused(code) => {
                error(&mut out, format!("refused: {}", refusal(code)));
                break;
            }
            End::Panicked { violation: true, message, cpu } => {
                out.violations += 1;
                out.first_violation
                    .get_or_insert_with(|| format!("round {}, vCPU {cpu}: {message}", report.round));
                next = report.round + 1;
            }
            End::Panicked { violation: false, message, cpu } => {
                error(&mut out, format!("round {}, vCPU {cpu} panicked: {message}", report.round));
                next = report.round + 1;
            }
            End::Exception { cpu, what } => {
                error(&mut out, format!("round {}, vCPU {cpu} exception: {what}", report.round));
                next = report.round + 1;
            }
            End::Hang => {
                let lines = report.vcpu_lines();
                error(
                    &mut out,
                    format!("round {}: hang (no round for {:?}): {lines}", report.round, cfg.hang),
                );
                next = report.round + 1;
            }
            End::Crashed { cpu, ref what } => {
                let lines = report.vcpu_lines();
                error(&mut out, format!("round {}, vCPU {cpu}: {what}: {lines}", report.round));
                next = report.round + 1;
            }
        }
        if out.errors >= cfg.max_errors {
            break;
        }
    }
    out.rounds = next;
    out.elapsed = start.elapsed();
    Ok(out)
}
