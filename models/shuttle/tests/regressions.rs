//! Every failure shuttle has found, kept: each test replays one recorded schedule and must fail
//! with the same message, so a regression stays a regression.
//!
//! The schedules are in `tests/regressions/`, written by the CI set (`bash ci/shuttle.sh
//! --record`, which runs `mmusync-shuttle ci --record models/shuttle/tests/regressions` and
//! prints the entries below). A schedule is a list of thread choices, so it replays only the
//! code it was recorded on: a change to a scenario, to core's protocol code or to the HAL that
//! adds or removes a scheduling point makes the replay diverge ("expected task ... to be
//! runnable", "schedule ended early"), and the test fails. Then record again and check that the
//! new failures are the same kills (`results/shuttle/summary.md`).

use mmusync::Rule;
use mmusync_shuttle::runner::{self, Options};

fn replay(target: &str, mutant: Option<Rule>, schedule: &str) {
    let t = runner::target(target).unwrap_or_else(|| panic!("no target named {target}"));
    runner::replay(t, mutant, schedule, &Options::default());
}

macro_rules! regressions {
    ($($test:ident: $target:literal, $mutant:expr, $file:literal, $expected:literal;)*) => {
        $(
            #[test]
            #[should_panic(expected = $expected)]
            fn $test() {
                replay($target, $mutant, include_str!(concat!("regressions/", $file)));
            }
        )*

        /// Every schedule file a test replays.
        const FILES: &[&str] = &[$($file),*];
    };
}

#[test]
fn every_recorded_schedule_has_a_test() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/regressions");
    for entry in std::fs::read_dir(dir).expect("tests/regressions") {
        let name = entry.expect("entry").file_name().into_string().expect("utf-8 name");
        assert!(FILES.contains(&name.as_str()), "{name} has no regression test: add its entry below");
    }
}

regressions! {
    fault_vs_invalidation_retry_checks_in_progress: "fault-vs-invalidation", Some(Rule::RetryChecksInProgress), "fault-vs-invalidation--RetryChecksInProgress.schedule", "invariant violated: SPTE maps a freed page";
    fault_vs_invalidation_retry_checks_seq: "fault-vs-invalidation", Some(Rule::RetryChecksSeq), "fault-vs-invalidation--RetryChecksSeq.schedule", "invariant violated: SPTE maps a freed page";
    fault_vs_invalidation_retry_gfn_checks_range: "fault-vs-invalidation", Some(Rule::RetryGfnChecksRange), "fault-vs-invalidation--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page";
    fault_vs_invalidation_fault_retries_under_lock: "fault-vs-invalidation", Some(Rule::FaultRetriesUnderLock), "fault-vs-invalidation--FaultRetriesUnderLock.schedule", "invariant violated: SPTE maps a freed page";
    multi_slot_range_merge_range_add_merges: "multi-slot-range-merge", Some(Rule::RangeAddMerges), "multi-slot-range-merge--RangeAddMerges.schedule", "invariant violated: SPTE maps a freed page";
    multi_slot_range_merge_retry_gfn_checks_range: "multi-slot-range-merge", Some(Rule::RetryGfnChecksRange), "multi-slot-range-merge--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page";
    memslot_swap_vs_invalidation_memslot_swap_waits_for_invalidations: "memslot-swap-vs-invalidation", Some(Rule::MemslotSwapWaitsForInvalidations), "memslot-swap-vs-invalidation--MemslotSwapWaitsForInvalidations.schedule", "invariant violated: in_progress unbalanced";
    memslot_swap_vs_invalidation_memslot_publish_under_lock: "memslot-swap-vs-invalidation", Some(Rule::MemslotPublishUnderLock), "memslot-swap-vs-invalidation--MemslotPublishUnderLock.schedule", "invariant violated: in_progress unbalanced";
    memslot_delete_vs_fault_memslot_swap_synchronizes_srcu: "memslot-delete-vs-fault", Some(Rule::MemslotSwapSynchronizesSrcu), "memslot-delete-vs-fault--MemslotSwapSynchronizesSrcu.schedule", "invariant violated: SPTE maps a gfn of a deleted memslot";
    cache_refresh_vs_invalidation_cache_checks_active_count: "cache-refresh-vs-invalidation", Some(Rule::CacheChecksActiveCount), "cache-refresh-vs-invalidation--CacheChecksActiveCount.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page";
    cache_hva_change_vs_consumer_cache_invalidates_before_resolve: "cache-hva-change-vs-consumer", Some(Rule::CacheInvalidatesBeforeResolve), "cache-hva-change-vs-consumer--CacheInvalidatesBeforeResolve.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page";
    unsync_vs_guest_write_sync_roots_checks_flags: "unsync-vs-guest-write", Some(Rule::SyncRootsChecksFlags), "unsync-vs-guest-write--SyncRootsChecksFlags.schedule", "invariant violated: missed sync";
    unsync_two_markers_unsync_mark_under_lock: "unsync-two-markers", Some(Rule::UnsyncMarkUnderLock), "unsync-two-markers--UnsyncMarkUnderLock.schedule", "invariant violated: unsync bookkeeping inconsistent (unsync_children, bitmap)";
    sb_walk_walk_disables_interrupts: "sb-walk", Some(Rule::WalkDisablesInterrupts), "sb-walk--WalkDisablesInterrupts.schedule", "invariant violated: walker read a freed table page";
    sb_walk_flush_waits_for_readers: "sb-walk", Some(Rule::FlushWaitsForReaders), "sb-walk--FlushWaitsForReaders.schedule", "invariant violated: walker read a freed table page";
    sb_walk_free_after_flush: "sb-walk", Some(Rule::FreeAfterFlush), "sb-walk--FreeAfterFlush.schedule", "invariant violated: walker read a freed table page";
    sb_entry_entry_checks_requests: "sb-entry", Some(Rule::EntryChecksRequests), "sb-entry--EntryChecksRequests.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned";
    epoch_walk_flush_before_unpin: "epoch-walk", Some(Rule::FlushBeforeUnpin), "epoch-walk--FlushBeforeUnpin.schedule", "invariant violated: vCPU used a stale TLB entry after the flush returned";
    fault_storm_retry_checks_in_progress: "fault-storm", Some(Rule::RetryChecksInProgress), "fault-storm--RetryChecksInProgress.schedule", "invariant violated: SPTE maps a freed page";
    fault_storm_retry_gfn_checks_range: "fault-storm", Some(Rule::RetryGfnChecksRange), "fault-storm--RetryGfnChecksRange.schedule", "invariant violated: SPTE maps a freed page";
    fault_storm_range_add_merges: "fault-storm", Some(Rule::RangeAddMerges), "fault-storm--RangeAddMerges.schedule", "invariant violated: SPTE maps a freed page";
    fault_storm_fault_retries_under_lock: "fault-storm", Some(Rule::FaultRetriesUnderLock), "fault-storm--FaultRetriesUnderLock.schedule", "invariant violated: SPTE maps a freed page";
    memslot_churn_memslot_swap_waits_for_invalidations: "memslot-churn", Some(Rule::MemslotSwapWaitsForInvalidations), "memslot-churn--MemslotSwapWaitsForInvalidations.schedule", "invariant violated: in_progress unbalanced";
    memslot_churn_memslot_publish_under_lock: "memslot-churn", Some(Rule::MemslotPublishUnderLock), "memslot-churn--MemslotPublishUnderLock.schedule", "invariant violated: in_progress unbalanced";
    memslot_churn_memslot_swap_synchronizes_srcu: "memslot-churn", Some(Rule::MemslotSwapSynchronizesSrcu), "memslot-churn--MemslotSwapSynchronizesSrcu.schedule", "invariant violated: SPTE maps a gfn of a deleted memslot";
    cache_churn_cache_checks_active_count: "cache-churn", Some(Rule::CacheChecksActiveCount), "cache-churn--CacheChecksActiveCount.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page";
    cache_churn_cache_invalidates_before_resolve: "cache-churn", Some(Rule::CacheInvalidatesBeforeResolve), "cache-churn--CacheInvalidatesBeforeResolve.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page";
    cache_outside_memslots_bug: "cache-outside-memslots", None, "cache-outside-memslots--bug.schedule", "invariant violated: valid translation cache maps a freed page or another hva's page";
    reference_mmu_long_run_free_after_flush: "reference-mmu-long-run", Some(Rule::FreeAfterFlush), "reference-mmu-long-run--FreeAfterFlush.schedule", "invariant violated: walker read a freed table page";
    prefault_holds_srcu_bug: "prefault-holds-srcu", None, "prefault-holds-srcu--bug.schedule", "liveness violated: CPU 1 (memslot-updater) made more than 5000 spin-waits in one execution";
    notifier_rwsem_2021_bug: "notifier-rwsem-2021", None, "notifier-rwsem-2021--bug.schedule", "deadlock! blocked tasks";
}
