//! Every failure shuttle has found, kept as a regression test that survives refactoring.
//!
//! Each test states the target, the bug (a rule mutant, or none for a target that models a bug
//! on purpose), the failure it must produce, and a search that must find it: shuttle's random
//! scheduler or PCT of depth 3, from the default seed, within the stated number of executions.
//!
//! The recorded schedule (`tests/regressions/`, written by `bash ci/shuttle.sh --record`) is
//! only a fast path: when it still fits the code, replaying it reproduces the failure in one
//! execution. A schedule is a list of thread choices, so any change that adds or removes a
//! scheduling point (one more relaxed load in a zap path, say) makes it diverge or pass; the
//! test then searches again instead of failing, and fails only if the bug is no longer found.
//! `a_harmless_change_leaves_every_regression_red` runs every entry with one extra scheduling
//! point at each named barrier (`Options::perturb`) to show exactly that. Re-record after such
//! a change to keep the fast path fast.

use mmusync::Rule;
use mmusync_shuttle::runner::{self, Options, Outcome, Sched};

/// One kept failure.
struct Regression {
    /// The target (a scenario).
    target: &'static str,
    /// The bug: a rule mutant, or `None` for a target whose code has the bug on purpose.
    mutant: Option<Rule>,
    /// The recorded schedule's file under `tests/regressions/`.
    file: &'static str,
    /// The failure message must contain this.
    expected: &'static str,
    /// The scheduler of the search (from the default seed).
    sched: Sched,
    /// The search must find the failure within this many executions: the CI set's kill cap for
    /// the target (`suite::ci_iterations`), the budget within which CI requires the kill.
    within: usize,
}

/// How a regression was reproduced.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// The recorded schedule replayed to the expected failure.
    Replayed,
    /// The search found it, after this many executions of this scheduler.
    Searched(Sched, u64),
}

fn schedule(file: &str) -> String {
    let path = format!("{}/tests/regressions/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Reproduces `r`: replay, then search. Panics, naming what ran, if the bug is not found.
fn reproduce(r: &Regression, perturb: bool) -> Found {
    let t = runner::target(r.target).unwrap_or_else(|| panic!("no target named {}", r.target));
    let replay_opts = Options { perturb, ..Options::default() };
    let replayed = runner::replay_report(t, r.mutant, &schedule(r.file), &replay_opts);
    if replayed.outcome != Outcome::Pass
        && replayed.message.as_deref().is_some_and(|m| m.contains(r.expected))
    {
        return Found::Replayed;
    }
    let opts = Options { iterations: r.within, perturb, ..Options::default() };
    let report = runner::run(t, r.mutant, r.sched, &opts);
    let message = report.message.unwrap_or_default();
    if report.outcome != Outcome::Pass && message.contains(r.expected) {
        return Found::Searched(r.sched, report.executions);
    }
    panic!(
        "{} with {:?}: the recorded schedule gave {:?} ({:?}), and {} found {:?} after {} executions ({message}), not \"{}\" within {}",
        r.target,
        r.mutant,
        replayed.outcome,
        replayed.message,
        r.sched,
        report.outcome,
        report.executions,
        r.expected,
        r.within,
    )
}

macro_rules! sched {
    (random) => {
        Sched::Random
    };
    (pct) => {
        Sched::Pct { depth: 3 }
    };
}

macro_rules! regressions {
    ($($test:ident: $target:literal, $mutant:expr, $file:literal, $expected:literal, $sched:ident within $within:literal;)*) => {
        /// Every kept failure.
        const REGRESSIONS: &[Regression] = &[
            $(Regression { target: $target, mutant: $mutant, file: $file, expected: $expected, sched: sched!($sched), within: $within },)*
        ];

        $(
            mod $test {
                use super::*;

                fn entry() -> &'static Regression {
                    REGRESSIONS.iter().find(|r| r.file == $file).expect("listed")
                }

                #[test]
                fn is_found() {
                    let found = reproduce(entry(), false);
                    if found != Found::Replayed {
                        eprintln!("{}: the recorded schedule no longer fits the code; found by {found:?} (re-record: bash ci/shuttle.sh --record)", $file);
                    }
                }

                /// With one extra scheduling point at every named barrier (a harmless change):
                /// the recorded schedule diverges, and the search must still find the bug.
                #[test]
                fn is_found_after_a_harmless_change() {
                    reproduce(entry(), true);
                }
            }
        )*
    };
}

#[test]
fn every_recorded_schedule_has_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/regressions");
    for entry in std::fs::read_dir(dir).expect("tests/regressions") {
        let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
        assert!(
            REGRESSIONS.iter().any(|r| r.file == name),
            "{name} has no regression test: add its entry below"
        );
    }
}

/// The harmless change of the `is_found_after_a_harmless_change` tests does make recorded
/// schedules diverge (one replay each, no search): so those tests exercise the search, not the
/// replay.
#[test]
fn a_harmless_change_makes_recorded_schedules_diverge() {
    let diverged = REGRESSIONS
        .iter()
        .filter(|r| {
            let t = runner::target(r.target).expect("a target");
            let opts = Options { perturb: true, ..Options::default() };
            let replayed = runner::replay_report(t, r.mutant, &schedule(r.file), &opts);
            !(replayed.outcome != Outcome::Pass
                && replayed.message.as_deref().is_some_and(|m| m.contains(r.expected)))
        })
        .count();
    assert!(
        diverged * 2 > REGRESSIONS.len(),
        "only {diverged} of {} recorded schedules diverged",
        REGRESSIONS.len()
    );
}

regressions! {
    fault_vs_invalidation_retry_checks_in_progress: "fault-vs-invalidation", Some(Rule::RetryChecksInProgress), "fault-vs-invalidation--RetryChecksInProgress.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    fault_vs_invalidation_retry_checks_seq: "fault-vs-invalidation", Some(Rule::RetryChecksSeq), "fault-vs-invalidation--RetryChecksSeq.schedule", "invariant violated: SPTE maps a freed page", pct within 10000;
    fault_vs_invalidation_retry_gfn_checks_range: "fault-vs-invalidation", Some(Rule::RetryGfnChecksRange), "fault-vs-invalidation--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    fault_vs_invalidation_fault_retries_under_lock: "fault-vs-invalidation", Some(Rule::FaultRetriesUnderLock), "fault-vs-invalidation--FaultRetriesUnderLock.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    multi_slot_range_merge_range_add_merges: "multi-slot-range-merge", Some(Rule::RangeAddMerges), "multi-slot-range-merge--RangeAddMerges.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    multi_slot_range_merge_retry_gfn_checks_range: "multi-slot-range-merge", Some(Rule::RetryGfnChecksRange), "multi-slot-range-merge--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    zap_gfn_range_vs_fault_zap_gfn_range_invalidates: "zap-gfn-range-vs-fault", Some(Rule::ZapGfnRangeInvalidates), "zap-gfn-range-vs-fault--ZapGfnRangeInvalidates.schedule", "invariant violated: SPTE maps a freed page", pct within 10000;
    mmu_fault_vs_invalidation_retry_checks_in_progress: "mmu-fault-vs-invalidation", Some(Rule::RetryChecksInProgress), "mmu-fault-vs-invalidation--RetryChecksInProgress.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    mmu_fault_vs_invalidation_retry_checks_seq: "mmu-fault-vs-invalidation", Some(Rule::RetryChecksSeq), "mmu-fault-vs-invalidation--RetryChecksSeq.schedule", "invariant violated: SPTE maps a freed page", pct within 10000;
    mmu_fault_vs_invalidation_retry_gfn_checks_range: "mmu-fault-vs-invalidation", Some(Rule::RetryGfnChecksRange), "mmu-fault-vs-invalidation--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    mmu_fault_vs_invalidation_fault_retries_under_lock: "mmu-fault-vs-invalidation", Some(Rule::FaultRetriesUnderLock), "mmu-fault-vs-invalidation--FaultRetriesUnderLock.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    mmu_fault_vs_invalidation_entry_checks_requests: "mmu-fault-vs-invalidation", Some(Rule::EntryChecksRequests), "mmu-fault-vs-invalidation--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", random within 10000;
    mmu_prefetch_vs_invalidation_prefetch_skips_while_invalidating: "mmu-prefetch-vs-invalidation", Some(Rule::PrefetchSkipsWhileInvalidating), "mmu-prefetch-vs-invalidation--PrefetchSkipsWhileInvalidating.schedule", "invariant violated: SPTE maps a freed page", random within 10000;
    mmu_invalidate_two_slots_entry_checks_requests: "mmu-invalidate-two-slots", Some(Rule::EntryChecksRequests), "mmu-invalidate-two-slots--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", pct within 10000;
    memslot_swap_vs_invalidation_memslot_swap_waits_for_invalidations: "memslot-swap-vs-invalidation", Some(Rule::MemslotSwapWaitsForInvalidations), "memslot-swap-vs-invalidation--MemslotSwapWaitsForInvalidations.schedule", "invariant violated: in_progress unbalanced", random within 10000;
    memslot_swap_vs_invalidation_memslot_publish_under_lock: "memslot-swap-vs-invalidation", Some(Rule::MemslotPublishUnderLock), "memslot-swap-vs-invalidation--MemslotPublishUnderLock.schedule", "invariant violated: in_progress unbalanced", pct within 10000;
    memslot_delete_vs_fault_memslot_swap_synchronizes_srcu: "memslot-delete-vs-fault", Some(Rule::MemslotSwapSynchronizesSrcu), "memslot-delete-vs-fault--MemslotSwapSynchronizesSrcu.schedule", "invariant violated: SPTE maps a gfn of a deleted memslot", random within 10000;
    memslot_generation_vs_cache_memslot_generation_in_progress: "memslot-generation-vs-cache", Some(Rule::MemslotGenerationInProgress), "memslot-generation-vs-cache--MemslotGenerationInProgress.schedule", "invariant violated: a generation-stamped memslot lookup answers for another layout", random within 10000;
    mmu_memslot_delete_vs_guest_memslot_swap_synchronizes_srcu: "mmu-memslot-delete-vs-guest", Some(Rule::MemslotSwapSynchronizesSrcu), "mmu-memslot-delete-vs-guest--MemslotSwapSynchronizesSrcu.schedule", "invariant violated: SPTE maps a gfn of a deleted memslot", random within 10000;
    mmu_memslot_delete_vs_guest_entry_checks_requests: "mmu-memslot-delete-vs-guest", Some(Rule::EntryChecksRequests), "mmu-memslot-delete-vs-guest--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", pct within 10000;
    prefault_vs_memslot_delete_prefault_returns_on_invalid_slot: "prefault-vs-memslot-delete", Some(Rule::PrefaultReturnsOnInvalidSlot), "prefault-vs-memslot-delete--PrefaultReturnsOnInvalidSlot.schedule", "liveness violated: CPU ", pct within 10000;
    cache_refresh_vs_invalidation_cache_checks_active_count: "cache-refresh-vs-invalidation", Some(Rule::CacheChecksActiveCount), "cache-refresh-vs-invalidation--CacheChecksActiveCount.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", random within 10000;
    cache_hva_change_vs_consumer_cache_invalidates_before_resolve: "cache-hva-change-vs-consumer", Some(Rule::CacheInvalidatesBeforeResolve), "cache-hva-change-vs-consumer--CacheInvalidatesBeforeResolve.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", random within 10000;
    cache_refresh_vs_two_invalidations_cache_checks_active_count: "cache-refresh-vs-two-invalidations", Some(Rule::CacheChecksActiveCount), "cache-refresh-vs-two-invalidations--CacheChecksActiveCount.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", random within 10000;
    unsync_vs_guest_write_sync_roots_checks_flags: "unsync-vs-guest-write", Some(Rule::SyncRootsChecksFlags), "unsync-vs-guest-write--SyncRootsChecksFlags.schedule", "invariant violated: missed sync", pct within 10000;
    unsync_two_markers_unsync_mark_under_lock: "unsync-two-markers", Some(Rule::UnsyncMarkUnderLock), "unsync-two-markers--UnsyncMarkUnderLock.schedule", "invariant violated: unsync bookkeeping inconsistent (unsync_children, bitmap)", random within 10000;
    sb_walk_walk_disables_interrupts: "sb-walk", Some(Rule::WalkDisablesInterrupts), "sb-walk--WalkDisablesInterrupts.schedule", "invariant violated: walker read a freed table page", random within 10000;
    sb_walk_flush_waits_for_readers: "sb-walk", Some(Rule::FlushWaitsForReaders), "sb-walk--FlushWaitsForReaders.schedule", "invariant violated: walker read a freed table page", random within 10000;
    sb_walk_free_after_flush: "sb-walk", Some(Rule::FreeAfterFlush), "sb-walk--FreeAfterFlush.schedule", "invariant violated: walker read a freed table page", random within 10000;
    sb_entry_entry_checks_requests: "sb-entry", Some(Rule::EntryChecksRequests), "sb-entry--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", random within 10000;
    epoch_walk_flush_before_unpin: "epoch-walk", Some(Rule::FlushBeforeUnpin), "epoch-walk--FlushBeforeUnpin.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", pct within 10000;
    mmu_zap_ipi_vs_walk_walk_disables_interrupts: "mmu-zap-ipi-vs-walk", Some(Rule::WalkDisablesInterrupts), "mmu-zap-ipi-vs-walk--WalkDisablesInterrupts.schedule", "invariant violated: walker read a freed table page", pct within 10000;
    mmu_zap_ipi_vs_walk_flush_waits_for_readers: "mmu-zap-ipi-vs-walk", Some(Rule::FlushWaitsForReaders), "mmu-zap-ipi-vs-walk--FlushWaitsForReaders.schedule", "invariant violated: walker read a freed table page", random within 10000;
    mmu_zap_ipi_vs_walk_free_after_flush: "mmu-zap-ipi-vs-walk", Some(Rule::FreeAfterFlush), "mmu-zap-ipi-vs-walk--FreeAfterFlush.schedule", "invariant violated: walker read a freed table page", random within 10000;
    mmu_zap_ipi_vs_walk_entry_checks_requests: "mmu-zap-ipi-vs-walk", Some(Rule::EntryChecksRequests), "mmu-zap-ipi-vs-walk--EntryChecksRequests.schedule", "invariant violated: walker read a freed table page", random within 10000;
    mmu_zap_epoch_vs_walk_entry_checks_requests: "mmu-zap-epoch-vs-walk", Some(Rule::EntryChecksRequests), "mmu-zap-epoch-vs-walk--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned", random within 10000;
    mmu_dirty_bit_vs_write_protect_spte_update_is_atomic: "mmu-dirty-bit-vs-write-protect", Some(Rule::SpteUpdateIsAtomic), "mmu-dirty-bit-vs-write-protect--SpteUpdateIsAtomic.schedule", "invariant violated: a page the guest wrote is not marked dirty anywhere", random within 10000;
    mmu_clear_flush_young_vs_guest_clear_flush_young_flushes: "mmu-clear-flush-young-vs-guest", Some(Rule::ClearFlushYoungFlushes), "mmu-clear-flush-young-vs-guest--ClearFlushYoungFlushes.schedule", "invariant violated: guest accessed an aged page without setting its accessed bit", random within 10000;
    mmu_clear_flush_young_vs_guest_spte_update_is_atomic: "mmu-clear-flush-young-vs-guest", Some(Rule::SpteUpdateIsAtomic), "mmu-clear-flush-young-vs-guest--SpteUpdateIsAtomic.schedule", "invariant violated: a page the guest wrote is not marked dirty anywhere", random within 10000;
    mmu_map_write_protect_vs_guest_map_flushes_lost_write: "mmu-map-write-protect-vs-guest", Some(Rule::MapFlushesLostWrite), "mmu-map-write-protect-vs-guest--MapFlushesLostWrite.schedule", "invariant violated: guest wrote a page after its write protection returned", random within 10000;
    fault_storm_retry_checks_in_progress: "fault-storm", Some(Rule::RetryChecksInProgress), "fault-storm--RetryChecksInProgress.schedule", "invariant violated: SPTE maps a freed page", random within 20000;
    fault_storm_retry_gfn_checks_range: "fault-storm", Some(Rule::RetryGfnChecksRange), "fault-storm--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page", random within 20000;
    fault_storm_range_add_merges: "fault-storm", Some(Rule::RangeAddMerges), "fault-storm--RangeAddMerges.schedule", "invariant violated: SPTE maps a freed page", random within 20000;
    fault_storm_fault_retries_under_lock: "fault-storm", Some(Rule::FaultRetriesUnderLock), "fault-storm--FaultRetriesUnderLock.schedule", "invariant violated: SPTE maps a freed page", random within 20000;
    memslot_churn_memslot_swap_waits_for_invalidations: "memslot-churn", Some(Rule::MemslotSwapWaitsForInvalidations), "memslot-churn--MemslotSwapWaitsForInvalidations.schedule", "violated: ", random within 20000;
    memslot_churn_memslot_publish_under_lock: "memslot-churn", Some(Rule::MemslotPublishUnderLock), "memslot-churn--MemslotPublishUnderLock.schedule", "violated: ", pct within 20000;
    memslot_churn_memslot_swap_synchronizes_srcu: "memslot-churn", Some(Rule::MemslotSwapSynchronizesSrcu), "memslot-churn--MemslotSwapSynchronizesSrcu.schedule", "invariant violated: SPTE maps a gfn of a deleted memslot", random within 20000;
    cache_churn_cache_checks_active_count: "cache-churn", Some(Rule::CacheChecksActiveCount), "cache-churn--CacheChecksActiveCount.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", random within 20000;
    cache_churn_cache_invalidates_before_resolve: "cache-churn", Some(Rule::CacheInvalidatesBeforeResolve), "cache-churn--CacheInvalidatesBeforeResolve.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", random within 20000;
    cache_outside_memslots_bug: "cache-outside-memslots", None, "cache-outside-memslots--bug.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", pct within 20000;
    reference_mmu_long_run_free_after_flush: "reference-mmu-long-run", Some(Rule::FreeAfterFlush), "reference-mmu-long-run--FreeAfterFlush.schedule", "invariant violated: walker read a freed table page", random within 20000;
    prefault_holds_srcu_bug: "prefault-holds-srcu", None, "prefault-holds-srcu--bug.schedule", "liveness violated: CPU 1 (memslot-updater) made more than 5000 spin-waits in one execution", random within 10000;
    notifier_rwsem_2021_bug: "notifier-rwsem-2021", None, "notifier-rwsem-2021--bug.schedule", "deadlock! blocked tasks", random within 20000;
    cache_deactivate_vs_invalidation_cache_listed_while_active: "cache-deactivate-vs-invalidation", Some(Rule::CacheListedWhileActive), "cache-deactivate-vs-invalidation--CacheListedWhileActive.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page", pct within 10000;
    mmu_age_lockless_vs_zap_epoch_lockless_aging_pins_epoch: "mmu-age-lockless-vs-zap-epoch", Some(Rule::LocklessAgingPinsEpoch), "mmu-age-lockless-vs-zap-epoch--LocklessAgingPinsEpoch.schedule", "invariant violated: walker read a freed table page", pct within 10000;
    memslot_cache_in_swap_window_memslot_generation_in_progress: "memslot-cache-in-swap-window", Some(Rule::MemslotGenerationInProgress), "memslot-cache-in-swap-window--MemslotGenerationInProgress.schedule", "invariant violated: a generation-stamped memslot lookup answers for another layout", random within 10000;
}
