//! The barrier judgement as the main job's rows ([`mmusync_models::Row`], checker `proofs`).
//!
//! [`barrier_rows`] judges every skeleton of [`crate::barriers`] and returns:
//!
//! * one correct-code row per skeleton (and per protocol its barriers belong to): `Pass` when
//!   the forbidden outcome is Never under every model that can express the skeleton with every
//!   barrier present;
//! * one mutant row per [`Barrier`]: `Killed(Invariant)` when dropping it makes a skeleton's
//!   forbidden outcome reachable under at least one of the five models ([`Model::ALL`]: the
//!   models say which), `Documented` when it is redundant under every model (with why).
//!
//! Every barrier is judged on the two-thread skeletons of its pairings, except two, which are
//! judged where the two-thread skeleton is the wrong question: `InvalidateEndSeqBeforeActiveCount`
//! on the three-thread E2 chain ([`crate::barriers::e2_chain`]) and `SyncRootSpteBeforeFlags` in
//! its context after the VM exit ([`crate::barriers::contexts`]). A context that core's code
//! does not have (`GuestExitReadsBeforeMode` behind a VM exit that is a full barrier) gets a
//! correct-code row of its own, and the bare pairing still decides the barrier's verdict.

use crate::ast::{Model, Verdict};
use crate::barriers::{contexts, e2_chain, judge, killed_under, model_list, pairings, Judged};
use crate::suite::{litmus_dir, run_dir, summary};
use mmusync::barrier::Protocol;
use mmusync::Barrier;
use mmusync_models::{Bound, Checker, Failure, Mutant, Row, Verdict as RowVerdict};
use std::time::Instant;

/// The scenario name of the E2 chain's skeleton.
pub const E2_CHAIN: &str = "E2-release-sequence (3 threads)";

fn row(
    scenario: &str,
    protocol: Protocol,
    mutant: Option<Mutant>,
    verdict: RowVerdict,
    executions: usize,
    time_s: f64,
    detail: String,
) -> Row {
    Row {
        checker: Checker::Proofs,
        scenario: scenario.to_string(),
        protocol,
        mutant,
        verdict,
        executions: executions as u64,
        time_s,
        bound: Bound::Exhaustive,
        detail,
        replay: None,
    }
}

/// `N N S S N` per model, with the models named.
fn per_model(v: &[Verdict]) -> String {
    Model::ALL
        .iter()
        .zip(v)
        .map(|(m, v)| format!("{}={}", m.name(), if *v == Verdict::Never { "N" } else { "S" }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn protocols(bs: &[Barrier]) -> Vec<Protocol> {
    let mut ps: Vec<Protocol> = bs.iter().map(|b| b.protocol()).collect();
    ps.sort();
    ps.dedup();
    ps
}

/// The fidelity suite in one line, and whether it fully agrees (every supported kernel test
/// with the kernel's stated LKMM result, every stated expectation met).
pub fn fidelity() -> (bool, String) {
    match run_dir(&litmus_dir()) {
        Ok(entries) => {
            let s = summary(&entries);
            let ok = s.kernel_agree == s.kernel_supported && s.expectations_met == s.expectations;
            (
                ok,
                format!(
                    "fidelity suite: {} of {} supported kernel tests agree with the kernel's LKMM result, \
                     {} of {} stated expectations met",
                    s.kernel_agree, s.kernel_supported, s.expectations_met, s.expectations
                ),
            )
        }
        Err(e) => (false, format!("fidelity suite not readable: {e}")),
    }
}

/// Every row: one per skeleton (correct code), one per barrier (its mutant).
///
/// When the fidelity suite does not fully agree (`fidelity_ok` false), the correct-code rows
/// are `Error`: the checker's verdicts are not to be trusted, and no barrier row is a kill.
pub fn barrier_rows(fidelity_ok: bool, fidelity_line: &str) -> Vec<Row> {
    let mut out = Vec::new();
    let mut judged: Vec<(Judged, f64)> = Vec::new();
    for p in pairings() {
        let t = Instant::now();
        let j = judge(p);
        judged.push((j, t.elapsed().as_secs_f64()));
    }
    let t = Instant::now();
    let ctx = contexts();
    let ctx_time = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let chain = e2_chain();
    let chain_time = t.elapsed().as_secs_f64();

    // Correct code: every skeleton forbids its outcome with every barrier present.
    let correct = |forbidden: bool, what: String| {
        if !fidelity_ok {
            (RowVerdict::Error, format!("{what}; {fidelity_line}: verdicts not trusted"))
        } else if forbidden {
            (RowVerdict::Pass, format!("{what}; {fidelity_line}"))
        } else {
            (RowVerdict::Fail(Failure::Invariant), format!("{what}; {fidelity_line}"))
        }
    };
    for (j, time) in &judged {
        let forbidden = j.both.iter().all(|v| *v == Verdict::Never);
        let (verdict, detail) = correct(
            forbidden,
            format!(
                "two-thread {} skeleton with both barriers: forbidden outcome {}",
                j.pairing.shape.name(),
                per_model(&j.both)
            ),
        );
        for p in protocols(&[j.pairing.a, j.pairing.b]) {
            out.push(row(&j.name(), p, None, verdict, j.candidates, *time, detail.clone()));
        }
    }
    for c in &ctx {
        let forbidden = c.both.iter().all(|v| *v == Verdict::Never);
        let (verdict, detail) =
            correct(forbidden, format!("with both barriers, {}: {}", c.what, per_model(&c.both)));
        for p in protocols(&[c.barrier]) {
            out.push(row(c.name, p, None, verdict, c.candidates, ctx_time, detail.clone()));
        }
    }
    {
        let na: Vec<&str> = Model::ALL
            .iter()
            .zip(&chain.after_lock)
            .filter(|(_, v)| v.is_none())
            .map(|(m, _)| m.name())
            .collect();
        let forbidden = chain.after_lock.iter().all(|v| v.is_none_or(|v| v == Verdict::Never));
        let (verdict, detail) = correct(
            forbidden,
            format!(
                "two invalidations' E2s and a cache refresher, release fence after spin_lock (core's code): \
                 forbidden under every model that has a C11 release fence (not expressible under {})",
                if na.is_empty() { "none".to_string() } else { na.join(", ") }
            ),
        );
        for p in protocols(&[Barrier::InvalidateEndSeqBeforeActiveCount, Barrier::CacheCountBeforeSeq]) {
            out.push(row(E2_CHAIN, p, None, verdict, chain.candidates, chain_time, detail.clone()));
        }
    }

    // Mutants: one row per barrier.
    for &b in Barrier::ALL {
        let (scenario, needed, executions, time, detail) = if b == Barrier::InvalidateEndSeqBeforeActiveCount
        {
            let needed = chain.needed_under();
            let detail = format!(
                "skeleton E2 chain (two invalidations, one hitting no memslot, and a cache refresher): \
                 forbidden with the release fence after spin_lock, reachable without it under {}; with the \
                 fence before the lock still reachable under {}; the lock chain alone forbids it under the \
                 others. Its two-thread MP skeleton with CacheCountBeforeSeq is not used: with one \
                 invalidation, InvalidateEndSeqBeforeCount's smp_wmb already orders seq before the count",
                model_list(&needed),
                model_list(&chain.before_lock_fails_under()),
            );
            (E2_CHAIN.to_string(), needed, chain.candidates, chain_time, detail)
        } else if let Some(c) = ctx.iter().find(|c| c.barrier == b && c.in_core) {
            let alone = killed_under(&c.both, &c.without);
            let bare = killed_under(&c.both, &c.without_context);
            let detail = if alone.is_empty() {
                format!(
                    "redundant under every model (lkmm, sc, tso, armv8, rc11) {}: without it {}; \
                     needed without that context under {} (two-thread MP skeleton)",
                    c.what,
                    per_model(&c.without),
                    model_list(&bare)
                )
            } else {
                format!("needed even {} under {}", c.what, model_list(&alone))
            };
            (c.name.to_string(), alone, c.candidates, ctx_time, detail)
        } else {
            let mine: Vec<&(Judged, f64)> =
                judged.iter().filter(|(j, _)| j.pairing.a == b || j.pairing.b == b).collect();
            let mut needed: Vec<Model> = Vec::new();
            let mut first_kill: Option<String> = None;
            let mut shapes = Vec::new();
            for (j, _) in &mine {
                let killed = killed_under(&j.both, j.without(b));
                if !killed.is_empty() && first_kill.is_none() {
                    first_kill = Some(j.name());
                }
                shapes.push(format!(
                    "{}: without it {} (needed under {})",
                    j.name(),
                    per_model(j.without(b)),
                    model_list(&killed)
                ));
                needed.extend(killed);
            }
            needed = Model::ALL.into_iter().filter(|m| needed.contains(m)).collect();
            let scenario =
                first_kill.unwrap_or_else(|| mine.first().map(|(j, _)| j.name()).unwrap_or_default());
            let detail = if needed.is_empty() {
                format!(
                    "redundant under every model: no skeleton's forbidden outcome becomes reachable without \
                     it ({})",
                    shapes.join("; ")
                )
            } else {
                format!(
                    "needed under {} (forbidden with both barriers, reachable without this one): {}",
                    model_list(&needed),
                    shapes.join("; ")
                )
            };
            let executions = mine.iter().map(|(j, _)| j.candidates).sum();
            let time = mine.iter().map(|(_, t)| *t).sum();
            (scenario, needed, executions, time, detail)
        };
        let verdict = if !fidelity_ok {
            RowVerdict::Error
        } else if needed.is_empty() {
            RowVerdict::Documented
        } else {
            RowVerdict::Killed(Failure::Invariant)
        };
        out.push(row(&scenario, b.protocol(), Some(Mutant::Barrier(b)), verdict, executions, time, detail));
    }
    out
}
