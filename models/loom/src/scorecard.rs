//! The scorecard: every mutant against the scenarios.
//!
//! 1. Every scenario runs unmutated; each must pass. These runs also record which barriers and
//!    rules each scenario reaches.
//! 2. Every mutant runs against its candidate scenarios: first those that list it in
//!    [`Scenario::kills`], then every other scenario that reaches it. It stops at the first
//!    *kill*: a violation of the scenario's own invariant, or a loom deadlock for a mutant in
//!    [`LIVENESS`]. Other failures (a deadlock of a safety mutant, loom's branch limit, an
//!    unrelated panic) are reported but are not kills.
//! 3. A mutant no scenario kills must be in [`NOT_KILLABLE`], with the reason; otherwise the
//!    scorecard fails. A reason that says "redundant: covered by these other barriers" is
//!    checked: [`COVERED`] names the barriers and a scenario, and the scorecard runs that
//!    scenario with the mutant *and* those barriers dropped, which must fail (otherwise the
//!    reason is wrong, and the scorecard fails).

use crate::runner::{run, Bound, Options, Outcome, Report};
use mmusync::barrier::Protocol;
use mmusync::{Barrier, Rule};
use mmusync_models::row::{Failure, Verdict};
use mmusync_models::scenario::Scenario;
use mmusync_models::Checker;
use mmusync_models::Mutant;
use std::collections::{BTreeMap, BTreeSet};
use std::string::{String, ToString};
use std::sync::Mutex;
use std::time::Duration;
use std::vec::Vec;

/// Mutants whose failure mode is a hang, not a broken safety invariant: for them (only) a loom
/// deadlock is a kill.
pub const LIVENESS: &[Mutant] = &[];

/// Mutants that loom cannot show to be needed, and why. Each is still run against every
/// scenario that reaches it; the scorecard lists it as "not killable (documented)".
pub const NOT_KILLABLE: &[(Mutant, &str)] = &[
    (
        Mutant::Rule(Rule::PrefaultReturnsOnInvalidSlot),
        "liveness, not safety: without it ReferenceMmu::prefault spins on the invalid slot inside its SRCU section while the memslot delete spins in synchronize; loom sees two spinning threads, never all of them blocked, and stops at its branch limit, which is no kill. Shuttle's spin budget kills it in prefault-vs-memslot-delete (liveness)",
    ),
    (
        Mutant::Barrier(Barrier::SrcuReadUnlockMb),
        "needed under C11, but the forbidden outcome is load buffering (a read inside the SRCU section reading a write the updater makes after its scan saw the section end), which loom never produces",
    ),
    (
        Mutant::Barrier(Barrier::SrcuSyncAfterScan),
        "pairs with SrcuReadUnlockMb: the same load-buffering shape, which loom never produces",
    ),
    (
        Mutant::Barrier(Barrier::SyncRootSpteBeforeFlags),
        "redundant where KVM calls it: the load it orders is the hardware walker's read of SPTE.W, and the guest's TLB flush reaches kvm_mmu_sync_roots through a VM exit, which is serializing (unsync-vs-guest-write models it as a SeqCst fence, an acquire fence too); KVM's smp_rmb is a compiler barrier on x86. Checked by hand: without the VM exit's fence, unsync-vs-guest-write kills it (docs/models.md)",
    ),
    (
        Mutant::Barrier(Barrier::WalkEndSpteReadsBeforeMode),
        "needed under C11, but the forbidden outcome is load buffering: the walker's read of the table page returning what the freer writes after it read the walk's final OUTSIDE, which that read follows; loom never produces it (and on x86-TSO loads are never reordered with later stores)",
    ),
    (
        Mutant::Barrier(Barrier::GuestExitReadsBeforeMode),
        "needed under C11, the VM-exit twin of WalkEndSpteReadsBeforeMode: the guest's read of a table page returning what the requester's free writes after it read the exit's OUTSIDE is load buffering, which loom never produces (on x86 the VM exit is serializing anyway)",
    ),
    (
        Mutant::Barrier(Barrier::KickModeReadBeforeFree),
        "the acquire half of WalkEndSpteReadsBeforeMode and GuestExitReadsBeforeMode: without it the same load-buffering outcome is allowed, which loom never produces; the requester's cpu read after the mode needs no acquire (the SB-walk/SB-entry full barriers order the vCPU's cpu store before it, see Vcpu::load), so no other outcome depends on it",
    ),
];

/// Redundancy claims the scorecard checks: `(mutant, also dropped, scenario)`. Running the
/// scenario with the mutant and every barrier of `also dropped` must fail its invariant; that
/// shows the scenario can see the mutant's bug, and that the named barriers are what hide it.
/// Empty today: the one claim it held ("`InvalidateEndSeqBeforeActiveCount` is redundant")
/// was wrong for a three-role shape, which `cache-refresh-vs-two-invalidations` now kills.
pub const COVERED: &[(Mutant, &[Mutant], &str)] = &[];

/// Mutants that are needed but that no scenario kills within the CI budget: holes in the
/// checkers, listed so that the scorecard shows them plainly instead of failing CI. None today
/// (`FlushBeforeUnpin`, the last one, is killed by `epoch-walk`).
pub const KNOWN_HOLES: &[(Mutant, &str)] = &[];

/// The redundancy check for `m`, if it has one.
pub fn covered(m: Mutant) -> Option<(&'static [Mutant], &'static str)> {
    COVERED.iter().find(|(n, _, _)| *n == m).map(|(_, also, s)| (*also, *s))
}

/// The reason `m` is a known hole, if it is.
pub fn known_hole(m: Mutant) -> Option<&'static str> {
    KNOWN_HOLES.iter().find(|(n, _)| *n == m).map(|(_, why)| *why)
}

/// The reason `m` is documented as not killable, if it is.
pub fn not_killable(m: Mutant) -> Option<&'static str> {
    NOT_KILLABLE.iter().find(|(n, _)| *n == m).map(|(_, why)| *why)
}

/// One row of the scorecard.
#[derive(Clone, Debug)]
pub struct Row {
    /// The mutant (`None`: the correct code, one row per scenario).
    pub mutant: Option<Mutant>,
    /// The scenario that killed it (or, for the correct code, the scenario run).
    pub scenario: Option<&'static str>,
    /// Executions until the first failure (or explored in total when nothing failed).
    pub executions: u64,
    /// Time spent on this mutant (all scenarios tried).
    pub time: Duration,
    /// How it ended.
    pub verdict: Verdict,
    /// The run that killed it, with its trace.
    pub report: Option<Report>,
    /// Scenarios tried, with their outcome labels.
    pub tried: Vec<(&'static str, &'static str)>,
    /// The bound of the run the row reports (the scenario's, for the correct code; the killing
    /// run's, for a killed mutant).
    pub bound: Option<Bound>,
    /// For a mutant documented as redundant ([`COVERED`]): the run with the covering barriers
    /// dropped too, which must fail.
    pub confirm: Option<Report>,
}

impl Row {
    /// Whether this row is what the scorecard requires: the correct code passes; a mutant is
    /// killed or documented as not killable.
    pub fn ok(&self) -> bool {
        self.verdict.ok()
    }

    /// What the redundancy check found, for a mutant documented as redundant.
    pub fn confirmation(&self) -> Option<String> {
        let (m, r) = (self.mutant?, self.confirm.as_ref()?);
        let also: Vec<&str> = r.also.iter().map(|a| a.name()).collect();
        Some(match r.outcome {
            Outcome::Violation => std::format!(
                "redundancy checked: with {} also dropped, {} fails after {} executions ({:.2?}): {}",
                also.join(" and "),
                r.scenario,
                r.executions,
                r.time,
                r.message.as_deref().unwrap_or("")
            ),
            _ => std::format!(
                "REDUNDANCY CLAIM NOT CONFIRMED for {m}: with {} also dropped, {} gives {} after {} executions",
                also.join(" and "),
                r.scenario,
                r.outcome.label(),
                r.executions
            ),
        })
    }

    /// Whether a mutant was killed.
    pub fn killed(&self) -> bool {
        self.verdict.killed()
    }
}

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only this scenario (by name).
    pub scenario: Option<String>,
    /// Only this protocol: its mutants, and its scenarios plus those that target (or check the
    /// redundancy of) one of its mutants.
    pub protocol: Option<Protocol>,
    /// Only this mutant (by name); `"none"` runs only the correct code.
    pub mutant: Option<String>,
    /// Worker threads (loom models run one per OS thread).
    pub jobs: usize,
    /// Checkpoint directory for replayable runs (`--replay`).
    pub replay_dir: Option<std::path::PathBuf>,
}

fn is_kill(m: Mutant, o: &Outcome) -> bool {
    match o {
        Outcome::Violation => true,
        Outcome::Deadlock => LIVENESS.contains(&m),
        _ => false,
    }
}

/// The verdict of a run of the correct code.
fn correct_verdict(o: &Outcome) -> Verdict {
    match o {
        Outcome::Pass => Verdict::Pass,
        Outcome::Violation => Verdict::Fail(Failure::Invariant),
        Outcome::Deadlock => Verdict::Fail(Failure::Deadlock),
        Outcome::Error => Verdict::Error,
    }
}

fn options(sel: &Selection, s: &Scenario, m: Option<Mutant>) -> Options {
    Options {
        checkpoint: sel
            .replay_dir
            .as_ref()
            .map(|d| d.join(std::format!("{}--{}.json", s.name, m.map(|m| m.name()).unwrap_or("none")))),
        also: Vec::new(),
    }
}

fn run_pool<T: Send, R: Send>(jobs: usize, items: Vec<T>, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let n = items.len();
    let queue = Mutex::new(items.into_iter().enumerate().collect::<Vec<_>>());
    let out = Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|sc| {
        for _ in 0..jobs.max(1) {
            sc.spawn(|| loop {
                let next = queue.lock().unwrap().pop();
                let Some((i, item)) = next else { break };
                let r = f(item);
                out.lock().unwrap().push((i, r));
            });
        }
    });
    let mut out = out.into_inner().unwrap();
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Runs the selection and returns the rows: first the correct code (one row per scenario),
/// then one row per mutant.
pub fn scorecard(sel: &Selection) -> Vec<Row> {
    let mutants: Vec<Mutant> = match sel.mutant.as_deref() {
        Some("none") => Vec::new(),
        Some(name) => Mutant::from_name(name).into_iter().collect(),
        None => Mutant::all().collect(),
    };
    let mutants: Vec<Mutant> =
        mutants.into_iter().filter(|m| sel.protocol.is_none_or(|p| m.protocol() == p)).collect();
    let scenarios: Vec<&'static Scenario> = Scenario::run_by(Checker::Loom)
        .filter(|s| sel.scenario.as_deref().is_none_or(|n| n == s.name))
        .filter(|s| {
            sel.protocol.is_none_or(|p| {
                s.protocol == p
                    || mutants.iter().any(|m| s.targets(*m) || covered(*m).is_some_and(|(_, c)| c == s.name))
            })
        })
        .collect();

    // 1. The correct code, and coverage.
    let correct = run_pool(sel.jobs, scenarios.clone(), |s| run(s, None, &options(sel, s, None)));
    let mut touched: BTreeMap<&'static str, BTreeSet<Mutant>> = BTreeMap::new();
    let mut rows: Vec<Row> = Vec::new();
    for r in correct {
        touched.insert(r.scenario, r.touched.clone());
        rows.push(Row {
            mutant: None,
            scenario: Some(r.scenario),
            executions: r.executions,
            time: r.time,
            verdict: correct_verdict(&r.outcome),
            tried: std::vec![(r.scenario, r.outcome.label())],
            bound: Some(r.bound),
            confirm: None,
            report: (r.outcome != Outcome::Pass).then_some(r),
        });
    }

    // 2. The mutants.
    let mutant_rows = run_pool(sel.jobs, mutants, |m| {
        let mut candidates: Vec<&'static Scenario> =
            scenarios.iter().copied().filter(|s| s.targets(m)).collect();
        candidates.extend(
            scenarios
                .iter()
                .copied()
                .filter(|s| !s.targets(m) && touched.get(s.name).is_some_and(|t| t.contains(&m))),
        );
        let mut row = Row {
            mutant: Some(m),
            scenario: None,
            executions: 0,
            time: Duration::ZERO,
            verdict: if not_killable(m).is_some() || known_hole(m).is_some() {
                Verdict::Documented
            } else {
                Verdict::Survived
            },
            report: None,
            tried: Vec::new(),
            bound: None,
            confirm: None,
        };
        for s in candidates {
            let r = run(s, Some(m), &options(sel, s, Some(m)));
            row.time += r.time;
            row.tried.push((s.name, r.outcome.label()));
            if is_kill(m, &r.outcome) {
                row.scenario = Some(s.name);
                row.executions = r.executions;
                row.verdict = Verdict::Killed(match r.outcome {
                    Outcome::Deadlock => Failure::Deadlock,
                    _ => Failure::Invariant,
                });
                row.bound = Some(r.bound);
                row.report = Some(r);
                break;
            }
            if row.report.is_none() && r.outcome != Outcome::Pass {
                // Not a kill, but keep the first failure for the report.
                row.report = Some(r);
            }
        }
        if !row.killed() && not_killable(m).is_some() {
            // A redundancy claim: the scenario must fail once the covering barriers go too.
            if let Some((also, name)) = covered(m) {
                if let Some(s) = scenarios.iter().copied().find(|s| s.name == name) {
                    let mut opts = options(sel, s, Some(m));
                    opts.checkpoint = None;
                    opts.also = also.to_vec();
                    let r = run(s, Some(m), &opts);
                    row.time += r.time;
                    if r.outcome != Outcome::Violation {
                        // The claim that named barriers cover it does not hold.
                        row.verdict = Verdict::Error;
                    }
                    row.confirm = Some(r);
                }
            }
        }
        row
    });
    rows.extend(mutant_rows);
    rows
}

/// The scorecard as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| mutant | kind | killing scenario | executions to first failure | time | kill | scenarios tried |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---|---|");
    for r in rows {
        let (name, kind) = match r.mutant {
            None => ("(correct code)", "-"),
            Some(m) => (m.name(), m.kind()),
        };
        let tried: Vec<String> = r.tried.iter().map(|(s, o)| std::format!("{s}: {o}")).collect();
        let _ = writeln!(
            out,
            "| {name} | {kind} | {} | {} | {:.2?} | {} | {} |",
            r.scenario.unwrap_or("-"),
            if r.executions == 0 { "-".into() } else { r.executions.to_string() },
            r.time,
            r.verdict,
            if tried.is_empty() { "(none reaches it)".into() } else { tried.join(", ") },
        );
    }
    out
}

/// The scorecard as the main job's typed rows ([`mmusync_models::row::Row`]).
pub fn result_rows(rows: &[Row]) -> Vec<mmusync_models::row::Row> {
    use mmusync_models::row;
    rows.iter()
        .map(|r| {
            let scenario = r.scenario.and_then(Scenario::by_name);
            let protocol = match (scenario, r.mutant) {
                (_, Some(m)) => m.protocol(),
                (Some(s), None) => s.protocol,
                (None, None) => mmusync::barrier::Protocol::P1Invalidation,
            };
            let bound = match r.bound.or(r.report.as_ref().map(|rep| rep.bound)).and_then(|b| b.preemptions) {
                Some(n) => row::Bound::Preemptions(n),
                None => row::Bound::Exhaustive,
            };
            let detail = r
                .mutant
                .and_then(|m| {
                    if r.killed() {
                        None
                    } else {
                        not_killable(m).or(known_hole(m)).map(str::to_string)
                    }
                })
                .or_else(|| r.confirmation())
                .or_else(|| r.report.as_ref().and_then(|rep| rep.message.clone()))
                .unwrap_or_default();
            let replay = match (r.mutant, r.scenario) {
                (Some(m), Some(s)) if r.killed() => Some(replay_command(s, m)),
                _ => None,
            };
            row::Row {
                checker: Checker::Loom,
                scenario: r.scenario.unwrap_or("-").to_string(),
                protocol,
                mutant: r.mutant,
                verdict: r.verdict,
                executions: r.executions,
                time_s: r.time.as_secs_f64(),
                bound,
                detail,
                replay,
            }
        })
        .collect()
}

/// The command that re-runs `m` against `scenario` alone and records a loom checkpoint of the
/// failing execution, from the workspace root, in loom's own target directory (the one
/// `ci/loom.sh` builds, so nothing is rebuilt).
pub fn replay_command(scenario: &str, m: Mutant) -> String {
    std::format!(
        "RUSTFLAGS=\"--cfg loom --cfg crossbeam_loom\" CARGO_TARGET_DIR=target/loom cargo run -q -p mmusync-loom --release --bin loom-scorecard -- --scenario {scenario} --mutant {} --replay",
        m.name()
    )
}

/// The names of every barrier and rule, for `--list`.
pub fn mutant_names() -> impl Iterator<Item = (&'static str, &'static str)> {
    Barrier::ALL.iter().map(|b| ("barrier", b.name())).chain(Rule::ALL.iter().map(|r| ("rule", r.name())))
}
