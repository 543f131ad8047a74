//! Trace conformance: shuttle runs of core's own code replay as paths of the protocol models
//! ([`mmusync_protocol_proofs::conformance`]): `mmu-fault-vs-invalidation` (through
//! `ReferenceMmu::fault` and `Vm::invalidate_range_start`/`end`) in the fault model, `sb-walk`
//! (`walk_lockless_begin`/end vs `ZapList::commit`) in the walk model (IPI scheme). A core
//! mutant's failing execution and hand-altered traces do not.

use mmusync::{Rule, Step};
use mmusync_protocol_proofs::conformance::{replay, replay_fault, FaultSetup, TraceStep, WalkSetup};
use mmusync_protocol_proofs::models::fault::FaultMutant;
use mmusync_protocol_proofs::models::walk::WalkMutant;
use mmusync_shuttle::runner::{run_traced, target, Options, Outcome, Sched};
use mmusync_shuttle::trace::What;

const SCENARIO: &str = "mmu-fault-vs-invalidation";
const EXECUTIONS: usize = 200;

/// `EXECUTIONS` shuttle executions of the fault scenario (fixed seed), each execution's core
/// steps.
fn traces(mutant: Option<Rule>, sched: Sched) -> (Outcome, Vec<Vec<TraceStep>>) {
    traces_of(SCENARIO, mutant, sched)
}

/// `EXECUTIONS` shuttle executions of `scenario` (fixed seed), each execution's core steps.
fn traces_of(scenario: &str, mutant: Option<Rule>, sched: Sched) -> (Outcome, Vec<Vec<TraceStep>>) {
    let t = target(scenario).expect("scenario");
    let opts = Options { iterations: EXECUTIONS, seed: 0x0063_6f6e_666f_726d, ..Options::default() };
    let (report, traces) = run_traced(t, mutant, sched, &opts);
    let steps = traces
        .iter()
        .map(|tr| {
            assert_eq!(
                tr.dropped(),
                0,
                "a trace lost its first entries: it cannot be replayed from the start"
            );
            tr.entries()
                .into_iter()
                .filter_map(|e| match e.what {
                    What::Core(step) => {
                        let roles = e.who != "setup" && e.who != "final checks";
                        Some(TraceStep { cpu: roles.then_some(e.cpu), step })
                    }
                    What::Text(_) => None,
                })
                .collect()
        })
        .collect();
    (report.outcome, steps)
}

fn has(trace: &[TraceStep], f: impl Fn(&Step) -> bool) -> bool {
    trace.iter().any(|s| f(&s.step))
}

#[test]
fn shuttle_traces_of_core_replay_in_the_fault_model() {
    let setup = FaultSetup::mmu_fault_vs_invalidation(None);
    for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
        let (outcome, traces) = traces(None, sched);
        assert_eq!(outcome, Outcome::Pass);
        assert_eq!(traces.len(), EXECUTIONS);
        let (mut retried, mut installed, mut flushed) = (0, 0, 0);
        for (i, trace) in traces.iter().enumerate() {
            if let Err(m) = replay_fault(&setup, trace) {
                panic!("{sched} execution {i} does not conform: {m}\ntrace: {trace:#?}");
            }
            retried += usize::from(has(trace, |s| matches!(s, Step::Retry { retry: true, .. })));
            installed += usize::from(has(trace, |s| matches!(s, Step::FaultInstall { .. })));
            flushed += usize::from(has(trace, |s| matches!(s, Step::InvalidateFlush)));
        }
        // The executions cover the interesting orders: faults that retry, faults that install
        // before the invalidation (which then zaps and flushes), and ones that install after.
        assert!(retried > 0 && installed > 0 && flushed > 0, "{sched}: {retried} {installed} {flushed}");
    }
}

#[test]
fn a_core_mutant_is_rejected_and_matches_the_model_mutant() {
    // Rule::RetryChecksInProgress broken: F12 ignores an open invalidation covering the gfn.
    let (outcome, traces) = traces(Some(Rule::RetryChecksInProgress), Sched::Random);
    assert_eq!(outcome, Outcome::Violation, "shuttle kills the mutant");
    let correct = FaultSetup::mmu_fault_vs_invalidation(None);
    let mutant = FaultSetup::mmu_fault_vs_invalidation(Some(FaultMutant::SkipInProgressCheck));
    let mut rejected = 0;
    for trace in &traces {
        if let Err(m) = replay_fault(&correct, trace) {
            let msg = m.to_string();
            assert!(
                msg.contains("vcpu0 F12 retry_gfn check: the model answers retry = true (in_progress 1")
                    && msg.contains("the trace false"),
                "{msg}"
            );
            assert!(matches!(m.step.step, Step::Retry { retry: false, .. }), "{msg}");
            rejected += 1;
        }
        // The same trace is a path of the model with the same rule broken.
        if let Err(m) = replay_fault(&mutant, trace) {
            panic!("the mutant's trace does not replay in the model mutant: {m}");
        }
    }
    // The failing execution is the last; the model rejects it (and any earlier execution that
    // hit the window without a visible violation).
    assert!(replay_fault(&correct, traces.last().expect("traces")).is_err());
    assert!(rejected >= 1);
}

/// The other F12 rules: PCT (depth 2) finds the `seq` window that random scheduling misses in
/// 200 executions. The core mutant's traces are paths of the model mutant; the correct model
/// rejects the failing execution at its F12.
#[test]
fn other_retry_mutants_replay_in_their_model_mutants() {
    for (rule, model_mutant) in [
        (Rule::RetryChecksSeq, FaultMutant::SkipSeqCheck),
        (Rule::RetryGfnChecksRange, FaultMutant::SkipRangeCheck),
    ] {
        let (outcome, traces) = traces(Some(rule), Sched::Pct { depth: 2 });
        let correct = FaultSetup::mmu_fault_vs_invalidation(None);
        let mutant = FaultSetup::mmu_fault_vs_invalidation(Some(model_mutant));
        let mut rejected = 0;
        for trace in &traces {
            if let Err(m) = replay_fault(&correct, trace) {
                assert!(
                    m.to_string().contains("vcpu0 F12 retry_gfn check: the model answers retry = true"),
                    "{m}"
                );
                rejected += 1;
            }
            if let Err(m) = replay_fault(&mutant, trace) {
                panic!("{rule:?}: the trace does not replay in {model_mutant:?}: {m}");
            }
        }
        assert_eq!(outcome, Outcome::Violation, "{rule:?}: shuttle kills the mutant");
        assert!(rejected >= 1, "{rule:?}: the model rejects the failing execution");
    }
}

#[test]
fn altered_traces_are_rejected() {
    let setup = FaultSetup::mmu_fault_vs_invalidation(None);
    let (_, traces) = traces(None, Sched::Random);
    let pos = |t: &[TraceStep], f: &dyn Fn(&Step) -> bool| t.iter().position(|s| f(&s.step)).expect("step");
    // One where the fault installs before the invalidation begins.
    let trace = traces
        .iter()
        .find(|t| {
            has(t, |s| matches!(s, Step::FaultInstall { .. }))
                && pos(t, &|s| matches!(s, Step::FaultInstall { .. }))
                    < pos(t, &|s| matches!(s, Step::InvalidateBegin { .. }))
        })
        .expect("an install before the invalidation");
    replay_fault(&setup, trace).expect("the original conforms");

    // A step deleted: no F4 before F8.
    let mut t = trace.clone();
    t.remove(pos(&t, &|s| matches!(s, Step::Snapshot { .. })));
    let m = replay_fault(&setup, &t).expect_err("F8 without F4");
    assert!(matches!(m.step.step, Step::FaultResolved { .. }), "{m}");
    assert!(
        m.to_string().contains("vcpu0 cannot take F8 here (the model enables: vcpu0 F4 snapshot seq"),
        "{m}"
    );

    // Steps reordered: E1 before S3.
    let mut t = trace.clone();
    let end = t.remove(pos(&t, &|s| matches!(s, Step::InvalidateEnd { .. })));
    t.insert(pos(&t, &|s| matches!(s, Step::InvalidateBegin { .. })), end);
    let m = replay_fault(&setup, &t).expect_err("E1 before S3");
    assert!(
        matches!(m.step.step, Step::InvalidateEnd { .. }) && m.to_string().contains("cannot take E1"),
        "{m}"
    );

    // A value changed: the snapshot saw another seq.
    let mut t = trace.clone();
    let i = pos(&t, &|s| matches!(s, Step::Snapshot { .. }));
    t[i].step = Step::Snapshot { seq: 1 };
    let m = replay_fault(&setup, &t).expect_err("wrong seq");
    assert!(m.to_string().contains("seq snapshot: the model has 0, the trace 1"), "{m}");

    // S3c says nothing needed a flush although the fault's SPTE was zapped.
    let mut t = trace.clone();
    let i = pos(&t, &|s| matches!(s, Step::Unmap { .. }));
    if let Step::Unmap { slot, start, end, .. } = t[i].step {
        t[i].step = Step::Unmap { slot, start, end, flush: false };
    }
    let m = replay_fault(&setup, &t).expect_err("flush needed");
    assert!(m.to_string().contains("flush needed: the model has true, the trace false"), "{m}");
}

/// `sb-walk`: a lockless walk (L1-L4) vs unlink + `ZapList::commit` (Q1-Q5, Z2).
#[test]
fn shuttle_traces_of_sb_walk_replay_in_the_walk_model() {
    let setup = WalkSetup::sb_walk(None);
    for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
        let (outcome, traces) = traces_of("sb-walk", None, sched);
        assert_eq!(outcome, Outcome::Pass);
        let (mut ipi, mut no_ipi, mut lagged) = (0, 0, 0);
        for (i, trace) in traces.iter().enumerate() {
            match replay(&setup, trace) {
                Ok(r) => lagged += r.lagged,
                Err(m) => panic!("{sched} execution {i} does not conform: {m}\ntrace: {trace:#?}"),
            }
            ipi += usize::from(has(trace, |s| matches!(s, Step::Kick { ipi: true, .. })));
            no_ipi += usize::from(has(trace, |s| matches!(s, Step::Kick { ipi: false, .. })));
        }
        assert!(ipi > 0 && no_ipi > 0, "{sched}: {ipi} {no_ipi}");
        if sched == Sched::Random {
            // Kick's report lags its mode read (a scheduling point between them): without the
            // lag rule, these traces would be rejected although the code is correct.
            assert!(lagged > 0, "no Kick was reported late");
        }
    }
}

#[test]
fn altered_walk_traces_are_rejected() {
    let setup = WalkSetup::sb_walk(None);
    let (_, traces) = traces_of("sb-walk", None, Sched::Random);
    let trace = traces
        .iter()
        .find(|t| has(t, |s| matches!(s, Step::Kick { ipi: true, .. })))
        .expect("a walk the zapper had to interrupt");
    replay(&setup, trace).expect("the original conforms");
    // The walk ends only after the page was freed: the zapper's Q5 cannot return while the
    // walker has interrupts off.
    let mut t = trace.clone();
    let end = t.remove(t.iter().position(|s| s.step == Step::WalkEnd).expect("WalkEnd"));
    t.push(end);
    let m = replay(&setup, &t).expect_err("Q5 before the walk ended");
    assert!(m.to_string().contains("zapper cannot take Q5 here (the model enables: walker0 L3"), "{m}");
}

/// `WalkDisablesInterrupts` (the IPI is taken at once, Q5 returns mid-walk) and
/// `FlushWaitsForReaders` (no IPI for a walker): the correct model rejects the failing
/// execution; every trace replays in the matching model mutant.
#[test]
fn walk_mutants_are_rejected_and_match_the_model_mutants() {
    for (rule, model_mutant) in [
        (Rule::WalkDisablesInterrupts, WalkMutant::NoIrqDisable),
        (Rule::FlushWaitsForReaders, WalkMutant::IpiOnlyInGuest),
    ] {
        let (outcome, traces) = traces_of("sb-walk", Some(rule), Sched::Pct { depth: 2 });
        let correct = WalkSetup::sb_walk(None);
        let mutant = WalkSetup::sb_walk(Some(model_mutant));
        let mut rejected = 0;
        for trace in &traces {
            if let Err(m) = replay(&correct, trace) {
                let msg = m.to_string();
                assert!(
                    msg.contains("zapper cannot take Q5 here (the model enables: walker0 L3")
                        || msg
                            .contains("IPI needed (walker not OUTSIDE): the model has true, the trace false"),
                    "{rule:?}: {msg}"
                );
                rejected += 1;
            }
            if let Err(m) = replay(&mutant, trace) {
                panic!("{rule:?}: the trace does not replay in {model_mutant:?}: {m}\n{trace:#?}");
            }
        }
        assert_eq!(outcome, Outcome::Violation, "{rule:?}: shuttle kills the mutant");
        assert!(rejected >= 1, "{rule:?}: the model rejects the failing execution");
        assert!(replay(&correct, traces.last().expect("traces")).is_err());
    }
}
