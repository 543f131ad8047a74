//! Stress: every scenario, many times, on real threads, with 0 violations expected (or, under a
//! mutant, the violations counted).
//!
//! * A model scenario ([`mmusync_models::Scenario`]) runs `iterations` times; each iteration is
//!   the scenario's setup, its roles on a [`ThreadExec`] (one thread per role, role `i` as CPU
//!   `i`), and its final checks. A violation is an iteration that panicked with the
//!   `VIOLATION` prefix; any other panic is an error.
//! * A hardware scenario (a catalogue scenario with a [`HardwareBody`] body) runs `rounds` rounds in batches; violations are
//!   counted per round (or per observation) by the scenario itself.
//!
//! Both stop early when the per-run time cap is reached, and say so (`capped`). Everything runs
//! from CPU 0 of the pool ([`ThreadExec::on_cpu0`]), as the loom executor runs its setup.

use crate::exec::{is_violation, panic_message, ThreadExec};
use crate::hal::{Backend, HalVisitor};
use crate::scenarios::{run_batch, Batch, Tuning};
use crate::steps::{Recorded, Recording};
use mmusync_models::exec::VIOLATION;
use mmusync_models::{Body, Checker, HardwareBody, Mutant, Scenario, ScenarioHal, Shared, TraceStep};
use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long and how hard to stress.
#[derive(Clone, Debug)]
pub struct StressConfig {
    /// Iterations of each model scenario.
    pub iterations: u64,
    /// Rounds of each hardware scenario.
    pub rounds: u64,
    /// Rounds per hardware batch (memory is released between batches).
    pub batch_rounds: u64,
    /// Time cap for one scenario on one backend.
    pub cap: Duration,
    /// The mutant to apply, if any.
    pub mutant: Option<Mutant>,
    /// Record the steps of model scenarios, to print the first violation's trace.
    pub trace: bool,
    /// Record core's own steps of every iteration of a model scenario ([`crate::steps`]), for
    /// trace conformance; the run stops at the first violation (the last recorded iteration).
    pub record_steps: bool,
    /// Knobs of the hardware scenarios.
    pub tuning: Tuning,
    /// Seed of the hardware scenarios' delays.
    pub seed: u64,
}

impl Default for StressConfig {
    fn default() -> Self {
        StressConfig {
            iterations: 2_000,
            rounds: 100_000,
            batch_rounds: 20_000,
            cap: Duration::from_secs(10),
            mutant: None,
            trace: false,
            record_steps: false,
            tuning: Tuning::default(),
            seed: 1,
        }
    }
}

/// Model scenario or hardware scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A catalogue scenario with a shared body ([`mmusync_models::Body::Shared`]).
    Model,
    /// A catalogue scenario with a body of this crate ([`mmusync_models::Body::Hardware`]).
    Hardware,
}

impl Kind {
    /// `"model"` or `"hw"`.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Model => "model",
            Kind::Hardware => "hw",
        }
    }
}

/// What one scenario did on one backend.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Model or hardware scenario.
    pub kind: Kind,
    /// The backend.
    pub backend: Backend,
    /// The mutant applied.
    pub mutant: Option<Mutant>,
    /// Iterations (model) or rounds (hardware) completed.
    pub iterations: u64,
    /// Violations seen.
    pub violations: u64,
    /// Hardware scenarios: rounds in which the race was on (see [`Batch::contended`]).
    pub contended: u64,
    /// Failures that are not violations (a panic, a hang).
    pub errors: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Whether the time cap stopped it before all iterations ran.
    pub capped: bool,
    /// The first violation's message.
    pub first_violation: Option<String>,
    /// The first error's message.
    pub first_error: Option<String>,
    /// The first violating iteration's steps (model scenarios, with tracing on).
    pub trace: Vec<String>,
    /// Core's steps of each iteration, with [`StressConfig::record_steps`] (model scenarios).
    pub executions: Vec<Vec<TraceStep>>,
}

impl Outcome {
    fn new(scenario: &'static str, kind: Kind, backend: Backend, mutant: Option<Mutant>) -> Self {
        Outcome {
            scenario,
            kind,
            backend,
            mutant,
            iterations: 0,
            violations: 0,
            contended: 0,
            errors: 0,
            elapsed: Duration::ZERO,
            capped: false,
            first_violation: None,
            first_error: None,
            trace: Vec::new(),
            executions: Vec::new(),
        }
    }

    /// Violations per million iterations (or rounds).
    pub fn per_million(&self) -> f64 {
        if self.iterations == 0 {
            0.0
        } else {
            self.violations as f64 * 1e6 / self.iterations as f64
        }
    }

    /// No violation and no error.
    pub fn clean(&self) -> bool {
        self.violations == 0 && self.errors == 0
    }

    /// The main job's typed row for this run. A mutant that a sampled run did not show is
    /// [`Verdict::NotSeen`](mmusync_models::Verdict::NotSeen): reported, never required.
    pub fn row(&self) -> mmusync_models::Row {
        use mmusync_models::row::{Bound, Checker, Failure, Verdict};
        let verdict = match (self.mutant, self.violations, self.errors) {
            (_, _, e) if e > 0 => Verdict::Error,
            (None, 0, _) => Verdict::Pass,
            (None, _, _) => Verdict::Fail(Failure::Invariant),
            (Some(_), 0, _) => Verdict::NotSeen,
            (Some(_), _, _) => Verdict::Killed(Failure::Invariant),
        };
        let protocol =
            AnyScenario::by_name(self.scenario).map_or(mmusync::barrier::Protocol::P5Walks, |s| s.protocol());
        let mut detail = format!(
            "{} violation(s) in {} iterations ({:.1} per million), {} contended, {} error(s){}",
            self.violations,
            self.iterations,
            self.per_million(),
            self.contended,
            self.errors,
            if self.capped { ", stopped by the time cap" } else { "" }
        );
        if let Some(first) = self.first_violation.as_deref().or(self.first_error.as_deref()) {
            let _ = write!(detail, "; first: {first}");
        }
        mmusync_models::Row {
            checker: Checker::Hardware,
            scenario: format!("{} ({})", self.scenario, self.backend.name()),
            protocol,
            mutant: self.mutant,
            verdict,
            executions: self.iterations,
            time_s: self.elapsed.as_secs_f64(),
            bound: Bound::Sampled,
            detail,
            replay: None,
        }
    }
}

/// Installs (once) a panic hook that stays quiet about invariant violations, which the stress
/// loop counts and reports itself; every other panic is printed as usual.
pub fn quiet_violation_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !panic_message(info.payload()).starts_with(VIOLATION) {
                default(info)
            }
        }));
    });
}

struct ModelRun<'a> {
    body: Shared,
    cfg: &'a StressConfig,
    exec: &'a ThreadExec,
    out: Outcome,
}

impl HalVisitor for ModelRun<'_> {
    type Output = Outcome;

    fn visit<H: ScenarioHal>(self, hal: H) -> Outcome {
        if self.cfg.record_steps {
            let Some(recording) = Recording::start() else {
                let mut out = self.out;
                out.errors = 1;
                out.first_error = Some("another step recording is live in this process".into());
                return out;
            };
            self.iterate(Recorded(hal), Some(&recording))
        } else {
            self.iterate(hal, None)
        }
    }
}

impl ModelRun<'_> {
    /// Runs the iterations on `hal`; with `recording`, keeps each iteration's core steps and
    /// stops after the first violation.
    fn iterate<H: ScenarioHal>(self, hal: H, recording: Option<&Recording>) -> Outcome {
        let ModelRun { body, cfg, exec, mut out } = self;
        let start = Instant::now();
        exec.set_tracing(cfg.trace);
        out = exec.on_cpu0(|| {
            for _ in 0..cfg.iterations {
                if start.elapsed() >= cfg.cap {
                    out.capped = true;
                    break;
                }
                if cfg.trace {
                    exec.clear_trace();
                }
                let run = panic::catch_unwind(AssertUnwindSafe(|| body.run(&hal, exec)));
                out.iterations += 1;
                if let Some(r) = recording {
                    out.executions.push(r.take());
                }
                let Err(p) = run else { continue };
                if is_violation(p.as_ref()) {
                    out.violations += 1;
                    if out.first_violation.is_none() {
                        out.first_violation = Some(panic_message(p.as_ref()).to_string());
                        out.trace = exec.take_trace().iter().map(ToString::to_string).collect();
                    }
                    if recording.is_some() {
                        // A trace file's last execution is its failing one.
                        break;
                    }
                } else {
                    out.errors += 1;
                    let msg = panic_message(p.as_ref()).to_string();
                    let hung = msg.contains("hang");
                    out.first_error.get_or_insert(msg);
                    if hung {
                        // The pool refuses further runs after a hang.
                        break;
                    }
                }
            }
            out
        });
        out.elapsed = start.elapsed();
        out
    }
}

/// Stresses scenario `s`, whose shared body is `body`, on `backend`.
pub fn run_model(s: &'static Scenario, body: Shared, backend: Backend, cfg: &StressConfig) -> Outcome {
    let mut out = Outcome::new(s.name, Kind::Model, backend, cfg.mutant);
    let exec = match ThreadExec::new(s.roles.len()) {
        Ok(e) => e,
        Err(e) => {
            out.errors = 1;
            out.first_error = Some(e.to_string());
            return out;
        }
    };
    backend.visit(cfg.mutant, ModelRun { body, cfg, exec: &exec, out })
}

struct HwRun<'a> {
    body: HardwareBody,
    cfg: &'a StressConfig,
    exec: &'a ThreadExec,
    out: Outcome,
}

impl HalVisitor for HwRun<'_> {
    type Output = Outcome;

    fn visit<H: ScenarioHal>(self, hal: H) -> Outcome {
        let HwRun { body, cfg, exec, mut out } = self;
        let start = Instant::now();
        out = exec.on_cpu0(|| {
            let mut total = Batch::default();
            let mut batch_no = 0u64;
            while total.rounds < cfg.rounds {
                if start.elapsed() >= cfg.cap {
                    out.capped = true;
                    break;
                }
                let n = cfg.batch_rounds.max(1).min(cfg.rounds - total.rounds);
                let seed = cfg.seed.wrapping_add(batch_no.wrapping_mul(0x9e37_79b9));
                batch_no += 1;
                match panic::catch_unwind(AssertUnwindSafe(|| {
                    run_batch(body, &hal, exec, n, cfg.tuning, seed)
                })) {
                    Ok(b) => total.absorb(b),
                    Err(p) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| panic_message(p.as_ref()).to_string());
                        break;
                    }
                }
            }
            out.iterations = total.rounds;
            out.violations = total.violations;
            out.contended = total.contended;
            out.first_violation = total.first;
            out
        });
        out.elapsed = start.elapsed();
        out
    }
}

/// Stresses scenario `s`, whose real-thread body is `body`, on `backend`.
pub fn run_hw(s: &'static Scenario, body: HardwareBody, backend: Backend, cfg: &StressConfig) -> Outcome {
    let mut out = Outcome::new(s.name, Kind::Hardware, backend, cfg.mutant);
    let exec = match ThreadExec::new(s.roles.len()) {
        Ok(e) => e,
        Err(e) => {
            out.errors = 1;
            out.first_error = Some(e.to_string());
            return out;
        }
    };
    backend.visit(cfg.mutant, HwRun { body, cfg, exec: &exec, out })
}

/// A catalogue scenario that names the real-thread checker, with its body.
#[derive(Clone, Copy, Debug)]
pub enum AnyScenario {
    /// A shared body (run once per iteration, as loom and shuttle run it).
    Model(&'static Scenario, Shared),
    /// A body of this crate (rounds in batches).
    Hardware(&'static Scenario, HardwareBody),
}

impl AnyScenario {
    /// Every scenario the catalogue gives this checker, in catalogue order.
    pub fn all() -> impl Iterator<Item = AnyScenario> {
        Scenario::run_by(Checker::Hardware).filter_map(|s| match s.body {
            Body::Shared(b) => Some(AnyScenario::Model(s, b)),
            Body::Hardware(b) => Some(AnyScenario::Hardware(s, b)),
            // The catalogue's own test forbids it: a shuttle body names no other checker.
            Body::Shuttle(_) => None,
        })
    }

    /// The scenario called `name`.
    pub fn by_name(name: &str) -> Option<AnyScenario> {
        Self::all().find(|s| s.name() == name)
    }

    /// Its descriptor.
    pub fn scenario(&self) -> &'static Scenario {
        match self {
            AnyScenario::Model(s, _) | AnyScenario::Hardware(s, _) => s,
        }
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.scenario().name
    }

    /// The mutants it targets.
    pub fn kills(&self) -> &'static [Mutant] {
        self.scenario().kills
    }

    /// The protocol it checks.
    pub fn protocol(&self) -> mmusync::barrier::Protocol {
        self.scenario().protocol
    }

    /// Stresses it on `backend`.
    pub fn stress(&self, backend: Backend, cfg: &StressConfig) -> Outcome {
        match *self {
            AnyScenario::Model(s, b) => run_model(s, b, backend, cfg),
            AnyScenario::Hardware(s, b) => run_hw(s, b, backend, cfg),
        }
    }
}

/// The report table's header.
pub const TABLE_HEADER: &str = "| scenario | kind | backend | mutant | iterations | violations | per million | contended | errors | seconds |\n|---|---|---|---|---:|---:|---:|---:|---:|---:|";

/// One Markdown table row for `o`.
pub fn table_row(o: &Outcome) -> String {
    format!(
        "| {} | {} | {} | {} | {}{} | {} | {:.1} | {} | {} | {:.2} |",
        o.scenario,
        o.kind.name(),
        o.backend,
        o.mutant.map_or("-", |m| m.name()),
        o.iterations,
        if o.capped { " (capped)" } else { "" },
        o.violations,
        o.per_million(),
        if o.kind == Kind::Hardware { o.contended.to_string() } else { "-".to_string() },
        o.errors,
        o.elapsed.as_secs_f64(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_resolves_once() {
        let names: Vec<_> = AnyScenario::all().map(|s| s.name()).collect();
        for (i, n) in names.iter().enumerate() {
            assert!(!names[..i].contains(n), "{n} twice");
            assert_eq!(AnyScenario::by_name(n).map(|s| s.name()), Some(*n));
        }
    }
}
