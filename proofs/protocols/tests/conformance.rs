//! Trace conformance: shuttle runs of core's own code replay as paths of the protocol models
//! ([`mmusync_protocol_proofs::conformance`]): `mmu-fault-vs-invalidation` (through
//! `ReferenceMmu::fault` and `Vm::invalidate_range_start`/`end`) in the fault model, `sb-walk`
//! (`walk_lockless_begin`/end vs `ZapList::commit`) in the walk model (IPI scheme),
//! `memslot-swap-vs-invalidation` (`Vm::set_memslot` vs start/end) in the memslot model,
//! `cache-refresh-vs-invalidation` (`TranslationCache::try_refresh` vs start/end) in the
//! pfncache model, `epoch-walk` (`ReclaimHandle::zap` vs a pinned walk and guest entry) in
//! the walk model's epoch scheme. A core mutant's failing execution and hand-altered traces do
//! not.

use mmusync::{Rule, Step};
use mmusync_protocol_proofs::conformance::{
    replay, replay_fault, replay_lagging, CacheSetup, EpochSetup, FaultSetup, Lag, MemslotSetup, Mismatch,
    Replayed, TraceStep, WalkSetup,
};
use mmusync_protocol_proofs::models::fault::FaultMutant;
use mmusync_protocol_proofs::models::memslot::MemslotMutant;
use mmusync_protocol_proofs::models::pfncache::PfnCacheMutant;
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
    assert_rejected(replay_fault(&setup, &t), "wrong seq", "seq snapshot: the model has 0, the trace 1");

    // S3c says nothing needed a flush although the fault's SPTE was zapped.
    let mut t = trace.clone();
    let i = pos(&t, &|s| matches!(s, Step::Unmap { .. }));
    if let Step::Unmap { slot, start, end, .. } = t[i].step {
        t[i].step = Step::Unmap { slot, start, end, flush: false };
    }
    assert_rejected(
        replay_fault(&setup, &t),
        "flush needed",
        "flush needed: the model has true, the trace false",
    );
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
    assert_rejected(
        replay(&setup, &t),
        "Q5 before the walk ended",
        "zapper cannot take Q5 here (the model enables: walker0 L3",
    );
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

/// The position of the first step of `t` that `f` accepts.
/// Asserts that a replay failed (`what`: the alteration) with a reason that names `why`.
fn assert_rejected(r: Result<Replayed, Mismatch>, what: &str, why: &str) {
    match r {
        Ok(r) => panic!("{what}: the altered trace replays ({r:?})"),
        Err(m) => assert!(m.to_string().contains(why), "{what}: {m}"),
    }
}

fn pos(t: &[TraceStep], f: impl Fn(&Step) -> bool) -> usize {
    t.iter().position(|s| f(&s.step)).expect("step")
}

/// `memslot-swap-vs-invalidation`: `Vm::set_memslot` (a memslot created: W2-W5, and W7-W8
/// abstracted) vs `Vm::start`/`end` over its page (S1-E2) in the memslot model.
#[test]
fn shuttle_traces_of_memslot_swap_replay_in_the_memslot_model() {
    let setup = MemslotSetup::memslot_swap_vs_invalidation(None);
    let (mut waited, mut began, mut missed) = (0, 0, 0);
    for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
        let (outcome, traces) = traces_of("memslot-swap-vs-invalidation", None, sched);
        assert_eq!(outcome, Outcome::Pass);
        for (i, trace) in traces.iter().enumerate() {
            if let Err(m) = replay(&setup, trace) {
                panic!("{sched} execution {i} does not conform: {m}\ntrace: {trace:#?}");
            }
            waited += usize::from(has(trace, |s| matches!(s, Step::MemslotWait { .. })));
            let hit = has(trace, |s| matches!(s, Step::InvalidateBegin { .. }));
            began += usize::from(hit);
            missed += usize::from(!hit);
        }
    }
    // Both orders: the swap first (the invalidation then hits the new slot), and the
    // invalidation first (it hits nothing, and the swap waits for it or starts after it).
    assert!(waited > 0 && began > 0 && missed > 0, "{waited} {began} {missed}");
}

/// `MemslotSwapWaitsForInvalidations` (the swap publishes under an open invalidation) and
/// `MemslotPublishUnderLock` (the swap checks the count, drops the lock, re-takes it and
/// publishes): the correct model rejects the failing execution, at the publish; every trace
/// replays in the model mutant that breaks the same rule.
#[test]
fn memslot_mutants_are_rejected_and_match_the_model_mutants() {
    for (rule, model_mutant) in [
        (Rule::MemslotSwapWaitsForInvalidations, MemslotMutant::NoWait),
        (Rule::MemslotPublishUnderLock, MemslotMutant::PublishAfterUnlock),
    ] {
        let (outcome, traces) =
            traces_of("memslot-swap-vs-invalidation", Some(rule), Sched::Pct { depth: 3 });
        let correct = MemslotSetup::memslot_swap_vs_invalidation(None);
        let mutant = MemslotSetup::memslot_swap_vs_invalidation(Some(model_mutant));
        let mut rejected = 0;
        for trace in &traces {
            if let Err(m) = replay(&correct, trace) {
                let msg = m.to_string();
                assert!(
                    matches!(m.step.step, Step::MemslotPublish { .. })
                        && msg.contains(
                            "swap1 cannot take W4-W5 here (the model enables: swap1 W3 check active count"
                        ),
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

#[test]
fn altered_memslot_traces_are_rejected() {
    let setup = MemslotSetup::memslot_swap_vs_invalidation(None);
    let (_, traces) = traces_of("memslot-swap-vs-invalidation", None, Sched::Random);
    let trace = traces
        .iter()
        .find(|t| has(t, |s| matches!(s, Step::MemslotWait { .. })))
        .expect("a swap that waited for the invalidation");
    replay(&setup, trace).expect("the original conforms");

    // The swap publishes before the invalidation it waits for has ended.
    let mut t = trace.clone();
    let publish = t.remove(pos(&t, |s| matches!(s, Step::MemslotPublish { .. })));
    t.insert(pos(&t, |s| matches!(s, Step::ActiveEnd { .. })), publish);
    assert_rejected(
        replay(&setup, &t),
        "a publish under an open invalidation",
        "swap1 cannot take W4-W5 here",
    );

    // The swap says it waits for two invalidations.
    let mut t = trace.clone();
    let i = pos(&t, |s| matches!(s, Step::MemslotWait { .. }));
    t[i].step = Step::MemslotWait { active: 2 };
    assert_rejected(
        replay(&setup, &t),
        "a wrong count",
        "active count the swap waits for: the model has 1, the trace 2",
    );
}

/// `cache-refresh-vs-invalidation`: one `TranslationCache::try_refresh` attempt (R2-R4h) vs
/// `Vm::start`/`end` over the cached page, which the primary MMU remaps from pfn 1 to pfn 2.
#[test]
fn shuttle_traces_of_cache_refresh_replay_in_the_pfncache_model() {
    let setup = CacheSetup::cache_refresh_vs_invalidation(None);
    for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
        let (outcome, traces) = traces_of("cache-refresh-vs-invalidation", None, sched);
        assert_eq!(outcome, Outcome::Pass);
        let (mut validated, mut retried, mut invalidated) = (0, 0, 0);
        for (i, trace) in traces.iter().enumerate() {
            if let Err(m) = replay(&setup, trace) {
                panic!("{sched} execution {i} does not conform: {m}\ntrace: {trace:#?}");
            }
            validated += usize::from(has(trace, |s| matches!(s, Step::CacheValid { .. })));
            retried += usize::from(has(trace, |s| matches!(s, Step::CacheRetry { retry: true, .. })));
            invalidated += usize::from(has(trace, |s| matches!(s, Step::CacheInvalidated { .. })));
        }
        // Both orders: refreshes that validate (before the invalidation, which then makes the
        // cache invalid, or after it) and refreshes that race with it and retry.
        assert!(
            validated > 0 && retried > 0 && invalidated > 0,
            "{sched}: {validated} {retried} {invalidated}"
        );
    }
}

/// `CacheChecksActiveCount` (R4g ignores the active count): the correct model rejects the
/// failing execution at its R4g; every trace replays in the model mutant `SkipActiveCount`.
#[test]
fn cache_mutant_is_rejected_and_matches_the_model_mutant() {
    let (outcome, traces) = traces_of(
        "cache-refresh-vs-invalidation",
        Some(Rule::CacheChecksActiveCount),
        Sched::Pct { depth: 3 },
    );
    assert_eq!(outcome, Outcome::Violation, "shuttle kills the mutant");
    let correct = CacheSetup::cache_refresh_vs_invalidation(None);
    let mutant = CacheSetup::cache_refresh_vs_invalidation(Some(PfnCacheMutant::SkipActiveCount));
    let mut rejected = 0;
    for trace in &traces {
        if let Err(m) = replay(&correct, trace) {
            let msg = m.to_string();
            assert!(
                matches!(m.step.step, Step::CacheRetry { retry: false, .. })
                    && msg.contains("refresher R4g retry check (active count, seq): active count: the model has 1, the trace 0"),
                "{msg}"
            );
            rejected += 1;
        }
        if let Err(m) = replay(&mutant, trace) {
            panic!("the trace does not replay in SkipActiveCount: {m}\n{trace:#?}");
        }
    }
    assert!(rejected >= 1);
    assert!(replay(&correct, traces.last().expect("traces")).is_err());
}

#[test]
fn altered_cache_traces_are_rejected() {
    let setup = CacheSetup::cache_refresh_vs_invalidation(None);
    let (_, traces) = traces_of("cache-refresh-vs-invalidation", None, Sched::Random);
    // One where the refresh validated pfn 1 before the invalidation, whose S2 then made the
    // cache invalid.
    let trace = traces
        .iter()
        .find(|t| has(t, |s| matches!(s, Step::CacheInvalidated { .. })))
        .expect("a refresh before the invalidation");
    replay(&setup, trace).expect("the original conforms");

    // The refresh caches the pfn of the remap that has not happened yet.
    let mut t = trace.clone();
    let i = pos(&t, |s| matches!(s, Step::CacheValid { .. }));
    if let Step::CacheValid { hva, .. } = t[i].step {
        t[i].step = Step::CacheValid { hva, pfn: mmusync::Pfn(2) };
    }
    assert_rejected(
        replay(&setup, &t),
        "a pfn from the future",
        "validated pfn: the model has Pfn(0x1), the trace Pfn(0x2)",
    );

    // S2 leaves the valid cache alone: the invalidation cannot go on to S3.
    let mut t = trace.clone();
    t.remove(pos(&t, |s| matches!(s, Step::CacheInvalidated { .. })));
    assert_rejected(
        replay(&setup, &t),
        "a valid cache left valid",
        "inv0 cannot take S3 here (the model enables: inv0 S2",
    );

    // The invalidation ends without bumping seq.
    let mut t = trace.clone();
    let i = pos(&t, |s| matches!(s, Step::InvalidateEnd { .. }));
    t[i].step = Step::InvalidateEnd { seq: 0, in_progress: 0 };
    assert_rejected(replay(&setup, &t), "no seq bump", "seq: the model has 1, the trace 0");
}

/// `epoch-walk`: `ReclaimHandle::zap` (flush, then `EpochDefer`, then unpin) vs a pinned walk,
/// the collector and guest entry, in the walk model's epoch scheme.
#[test]
fn shuttle_traces_of_epoch_walk_replay_in_the_walk_model() {
    let setup = EpochSetup::epoch_walk(None);
    let (mut turned_back, mut entered_first) = (0, 0);
    for sched in [Sched::Random, Sched::Pct { depth: 3 }] {
        let (outcome, traces) = traces_of("epoch-walk", None, sched);
        assert_eq!(outcome, Outcome::Pass);
        for (i, trace) in traces.iter().enumerate() {
            if let Err(m) = replay(&setup, trace) {
                panic!("{sched} execution {i} does not conform: {m}\ntrace: {trace:#?}");
            }
            turned_back += usize::from(has(trace, |s| matches!(s, Step::GuestEnter { requests: true })));
            entered_first += usize::from(
                pos(trace, |s| matches!(s, Step::GuestEnter { .. }))
                    < pos(trace, |s| matches!(s, Step::Request { .. })),
            );
        }
    }
    // Both orders: guests that entered before the flush's request, and guests the request
    // turned back.
    assert!(turned_back > 0 && entered_first > 0, "{turned_back} {entered_first}");
}

/// `FlushBeforeUnpin` broken (the zapper defers and unpins, then flushes): the correct model
/// rejects the failing execution at the defer; every trace replays in `UnpinBeforeFlush`.
#[test]
fn epoch_mutant_is_rejected_and_matches_the_model_mutant() {
    let (outcome, traces) = traces_of("epoch-walk", Some(Rule::FlushBeforeUnpin), Sched::Pct { depth: 2 });
    assert_eq!(outcome, Outcome::Violation, "shuttle kills the mutant");
    let correct = EpochSetup::epoch_walk(None);
    let mutant = EpochSetup::epoch_walk(Some(WalkMutant::UnpinBeforeFlush));
    for trace in &traces {
        let m = replay(&correct, trace).expect_err("the mutant defers before it flushes, always");
        assert!(
            matches!(m.step.step, Step::EpochDefer { .. })
                && m.to_string()
                    .contains("zapper cannot take Defer here (the model enables: zapper flushes remote TLBs"),
            "{m}"
        );
        if let Err(m) = replay(&mutant, trace) {
            panic!("the trace does not replay in UnpinBeforeFlush: {m}\n{trace:#?}");
        }
    }
}

#[test]
fn altered_epoch_traces_are_rejected() {
    let setup = EpochSetup::epoch_walk(None);
    let (_, traces) = traces_of("epoch-walk", None, Sched::Random);
    let trace = &traces[0];
    replay(&setup, trace).expect("the original conforms");

    // The defer reported before the flush returned.
    let mut t = trace.clone();
    let defer = t.remove(pos(&t, |s| matches!(s, Step::EpochDefer { .. })));
    t.insert(pos(&t, |s| matches!(s, Step::IpiAndWait { .. })), defer);
    assert_rejected(replay(&setup, &t), "defer before the flush", "zapper cannot take Defer here");

    // One page deferred instead of the 65 unlinked.
    let mut t = trace.clone();
    let i = pos(&t, |s| matches!(s, Step::EpochDefer { .. }));
    t[i].step = Step::EpochDefer { pages: 1 };
    assert_rejected(replay(&setup, &t), "a page count", "pages deferred: the model has 65, the trace 1");
}

/// A real-thread trace (`hw-stress --traces`, recorded on x86): the walker's `WalkEnd` was
/// logged after the zapper's kick had already read its `OUTSIDE`. As recorded the correct model
/// rejects it; with every step allowed to lag back to its thread's previous step ([`Lag::Every`],
/// what a real-thread log means) it replays. Values still count: a kick that found the walker
/// busy and then waited for no CPU fits no placement.
#[test]
fn real_thread_traces_let_every_step_lag_but_keep_their_values() {
    let setup = WalkSetup::sb_walk(None);
    let at = |cpu: usize, step: Step| TraceStep { cpu: Some(cpu), step };
    let kick = |ipi| Step::Kick { cpu: Some(mmusync::CpuId::new(0).unwrap()), ipi };
    let logged = [
        at(0, Step::WalkBegin),
        at(1, Step::Request { request: 0 }),
        at(1, kick(false)),
        at(0, Step::WalkEnd),
        at(1, Step::IpiAndWait { targets: mmusync::CpuSet::empty() }),
        at(1, Step::ZapCommit { pages: 1 }),
    ];
    assert_rejected(
        replay(&setup, &logged),
        "as logged, the kick read a walker mid-walk",
        "IPI needed (walker not OUTSIDE)",
    );
    let r = replay_lagging(&setup, &logged, Lag::Every).expect("WalkEnd's store came before the kick");
    assert!(r.lagged >= 1, "placed by the lag rule");
    let mut waited_for_nobody = logged;
    waited_for_nobody[2] = at(1, kick(true));
    assert_rejected(replay_lagging(&setup, &waited_for_nobody, Lag::Every), "an IPI needed, none sent", "Q5");
}
