//! The scenario descriptor and the registry of every scenario.
//!
//! A [`Scenario`] is data (name, protocol, roles, setup, invariants, the mutants it targets)
//! plus a body that is generic over the HAL and the executor. The body builds the shared state
//! (the setup), hands the roles to [`Executor::run`], and runs the final ghost-state checks.
//! [`Scenario::run`] dispatches to it; executors iterate over [`SCENARIOS`].

use crate::exec::{Executor, Invariant};
use crate::mutant::Mutant;
use crate::scenarios;
use mmusync::barrier::Protocol;
use mmusync::hal::Cpus;
use mmusync::{Barrier as B, Rule as R};

/// What a scenario needs from the HAL: memory, locks, CPUs, interrupts and IPIs.
pub trait ScenarioHal: Cpus {}

impl<H: Cpus> ScenarioHal for H {}

/// One scenario.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Unique name, as the CLI takes it.
    pub name: &'static str,
    /// The protocol under test.
    pub protocol: Protocol,
    /// The protocol steps and litmus shape it models (labels: core/docs/protocols.md).
    pub shape: &'static str,
    /// Its roles, in CPU order (role `i` runs as CPU `i`).
    pub roles: &'static [&'static str],
    /// What the setup builds before the roles start.
    pub setup: &'static str,
    /// The invariants it asserts.
    pub invariants: &'static [Invariant],
    /// The mutants it is meant to kill.
    pub kills: &'static [Mutant],
    /// loom only: issue atomic stores as plain stores rather than swaps (see the loom HAL's
    /// note on its stores). A swap continues another thread's release sequence where a plain
    /// store ends it, so the default hides every bug in which a relaxed store breaks a release
    /// sequence; a scenario about such a bug sets this. The other executors ignore it.
    pub plain_stores: bool,
    id: Id,
}

/// Which body a descriptor runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Id {
    FaultVsInvalidation,
    Mp1LocklessRetry,
    Mp2SnapshotPlacement,
    MultiSlotRangeMerge,
    MemslotSwapVsInvalidation,
    MemslotDeleteVsFault,
    CacheRefreshVsInvalidation,
    CacheHvaChangeVsConsumer,
    CacheRefreshVsTwoInvalidations,
    UnsyncVsGuestWrite,
    UnsyncTwoMarkers,
    SbWalk,
    SbEntry,
    EpochWalk,
    RequestPayload,
    MmuFaultVsInvalidation,
    MmuZapIpiVsWalk,
    MmuZapEpochVsWalk,
    MmuInvalidateTwoSlots,
    MmuMemslotDeleteVsGuest,
}

impl Scenario {
    /// Runs the scenario once under `hal` and `exec`: setup, the roles, the final checks.
    /// Panics (through [`crate::violated`]) when an invariant fails.
    pub fn run<H: ScenarioHal, X: Executor>(&self, hal: &H, exec: &X) {
        assert!(self.roles.len() <= X::MAX_ROLES, "{}: too many roles for this executor", self.name);
        match self.id {
            Id::FaultVsInvalidation => scenarios::p1p2::fault_vs_invalidation(hal, exec),
            Id::Mp1LocklessRetry => scenarios::p1p2::mp1_lockless_retry(hal, exec),
            Id::Mp2SnapshotPlacement => scenarios::p1p2::mp2_snapshot_placement(hal, exec),
            Id::MultiSlotRangeMerge => scenarios::p1p2::multi_slot_range_merge(hal, exec),
            Id::MemslotSwapVsInvalidation => scenarios::p3::memslot_swap_vs_invalidation(hal, exec),
            Id::MemslotDeleteVsFault => scenarios::p3::memslot_delete_vs_fault(hal, exec),
            Id::CacheRefreshVsInvalidation => scenarios::cache::cache_refresh_vs_invalidation(hal, exec),
            Id::CacheHvaChangeVsConsumer => scenarios::cache::cache_hva_change_vs_consumer(hal, exec),
            Id::CacheRefreshVsTwoInvalidations => {
                scenarios::cache::cache_refresh_vs_two_invalidations(hal, exec)
            }
            Id::UnsyncVsGuestWrite => scenarios::p4::unsync_vs_guest_write(hal, exec),
            Id::UnsyncTwoMarkers => scenarios::p4::unsync_two_markers(hal, exec),
            Id::SbWalk => scenarios::p5::sb_walk(hal, exec),
            Id::SbEntry => scenarios::p5::sb_entry(hal, exec),
            Id::EpochWalk => scenarios::p5::epoch_walk(hal, exec),
            Id::RequestPayload => scenarios::p5::request_payload(hal, exec),
            Id::MmuFaultVsInvalidation => scenarios::mmu::mmu_fault_vs_invalidation(hal, exec),
            Id::MmuZapIpiVsWalk => scenarios::mmu::mmu_zap_ipi_vs_walk(hal, exec),
            Id::MmuZapEpochVsWalk => scenarios::mmu::mmu_zap_epoch_vs_walk(hal, exec),
            Id::MmuInvalidateTwoSlots => scenarios::mmu::mmu_invalidate_two_slots(hal, exec),
            Id::MmuMemslotDeleteVsGuest => scenarios::mmu::mmu_memslot_delete_vs_guest(hal, exec),
        }
    }

    /// The scenario called `name`.
    pub fn by_name(name: &str) -> Option<&'static Scenario> {
        SCENARIOS.iter().find(|s| s.name == name)
    }

    /// Whether this scenario lists `m` among the mutants it targets.
    pub fn targets(&self, m: Mutant) -> bool {
        self.kills.contains(&m)
    }
}

const fn b(x: B) -> Mutant {
    Mutant::Barrier(x)
}

const fn r(x: R) -> Mutant {
    Mutant::Rule(x)
}

/// Every scenario, in protocol order (P1 to P5).
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "fault-vs-invalidation",
        protocol: Protocol::P2Retry,
        shape: "F0-F14 vs S1-S5, E1-E2: x86 fault (snapshot, _unsafe pre-check, retry_gfn under mmu_lock) vs MMU-notifier start/end",
        roles: &["vcpu", "invalidator"],
        setup: "one memslot (gfn 0 <- hva 0x1000); the primary MMU maps hva 0x1000 -> pfn 1",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[
            b(B::FaultSnapshotBeforeResolve),
            r(R::RetryChecksInProgress),
            r(R::RetryChecksSeq),
            r(R::RetryGfnChecksRange),
            r(R::FaultRetriesUnderLock),
        ],
        plain_stores: false,
        id: Id::FaultVsInvalidation,
    },
    Scenario {
        name: "mp1-lockless-retry",
        protocol: Protocol::P2Retry,
        shape: "MP-1: PowerPC-style retry without mmu_lock, install under a per-HPTE lock",
        roles: &["vcpu", "invalidator"],
        setup: "gfn 0 <- pfn 1 in the primary MMU; no memslot layer; an HPTE lock per SPTE",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[b(B::InvalidateEndSeqBeforeCount), b(B::RetryCountBeforeSeq)],
        plain_stores: false,
        id: Id::Mp1LocklessRetry,
    },
    Scenario {
        name: "mp2-snapshot-placement",
        protocol: Protocol::P2Retry,
        shape: "MP-2: primary-MMU PTE zap under its PTE lock, then end; GUP-fast reader after the snapshot",
        roles: &["vcpu", "invalidator"],
        setup: "gfn 0 <- pfn 1 in the primary MMU behind a PTE lock; no memslot layer",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[b(B::InvalidateEndZapBeforeSeq), b(B::FaultSnapshotBeforeResolve)],
        plain_stores: false,
        id: Id::Mp2SnapshotPlacement,
    },
    Scenario {
        name: "multi-slot-range-merge",
        protocol: Protocol::P1Invalidation,
        shape: "S3b-S3c, range merging: one invalidation hits two memslots; a fault on the first slot",
        roles: &["vcpu", "invalidator"],
        setup: "two memslots (gfn 0 <- hva 0x1000, gfn 1 <- hva 0x2000) mapping pfns 1 and 2",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[r(R::RangeAddMerges), r(R::RetryGfnChecksRange)],
        plain_stores: false,
        id: Id::MultiSlotRangeMerge,
    },
    Scenario {
        name: "mmu-fault-vs-invalidation",
        protocol: Protocol::P1Invalidation,
        shape: "F0-F14 + V1-V6 vs S1-S5 (Q1-Q5 inside S4), E1-E2 on core's ReferenceMmu: ReferenceMmu::fault, two guest runs filling and using the vCPU's TLB, vs Vm::invalidate_range_start/end with the ReferenceMmu as the secondary MMU (zap_ipi + flush_remote_tlbs)",
        roles: &["vcpu", "invalidator"],
        setup: "ReferenceMmu (1 level, fanout 2) over poisoning ghost table pages; vCPU 0 loaded on CPU 0; one memslot (gfn 0 <- host page 0, pfn 1); the invalidator remaps page 0 to pfn 2 and frees pfn 1",
        invariants: &[Invariant::StaleTlbAfterFlush, Invariant::SpteMapsFreedPage],
        kills: &[
            b(B::FaultSnapshotBeforeResolve),
            r(R::RetryChecksInProgress),
            r(R::RetryChecksSeq),
            r(R::RetryGfnChecksRange),
            r(R::FaultRetriesUnderLock),
            b(B::GuestEntryModeBeforeRequests),
            r(R::EntryChecksRequests),
        ],
        plain_stores: false,
        id: Id::MmuFaultVsInvalidation,
    },
    Scenario {
        name: "mmu-invalidate-two-slots",
        protocol: Protocol::P1Invalidation,
        shape: "S3b-S4 across two memslots vs V1-V6 on core's ReferenceMmu: one invalidate_range_start zaps both slots and flushes once; the guest uses TLB entries of both",
        roles: &["vcpu", "invalidator"],
        setup: "ReferenceMmu (1 level, fanout 2); vCPU 0 on CPU 0; memslots gfn 0 <- page 0 (pfn 1), gfn 1 <- page 1 (pfn 2), both faulted in and in the vCPU's TLB; the invalidator remaps both and frees pfns 1, 2",
        invariants: &[Invariant::StaleTlbAfterFlush, Invariant::SpteMapsFreedPage],
        kills: &[
            b(B::GuestEntryModeBeforeRequests),
            b(B::KickRequestBeforeModeRead),
            r(R::EntryChecksRequests),
        ],
        plain_stores: false,
        id: Id::MmuInvalidateTwoSlots,
    },
    Scenario {
        name: "memslot-swap-vs-invalidation",
        protocol: Protocol::P3Memslots,
        shape: "W1-W8 vs S1-E2: a memslot is created under an open invalidation's range",
        roles: &["memslot-updater", "invalidator"],
        setup: "no memslot; the invalidation covers hva 0x1000..0x2000, where the updater creates one",
        invariants: &[Invariant::InProgressUnbalanced],
        kills: &[r(R::MemslotSwapWaitsForInvalidations), r(R::MemslotPublishUnderLock)],
        plain_stores: false,
        id: Id::MemslotSwapVsInvalidation,
    },
    Scenario {
        name: "memslot-delete-vs-fault",
        protocol: Protocol::P3Memslots,
        shape: "P3 delete vs F0-F14, I3.2: a fault under SRCU vs kvm_set_memslot(DELETE) (invalid copy, zap, final layout)",
        roles: &["vcpu", "memslot-updater"],
        setup: "one memslot (gfn 0 <- hva 0x1000 -> pfn 1); the updater deletes it",
        invariants: &[Invariant::SpteMapsDeletedSlot],
        kills: &[
            r(R::MemslotSwapSynchronizesSrcu),
            b(B::SrcuReadLockMb),
            b(B::SrcuSyncBeforeScan),
            b(B::MemslotPublish),
            b(B::MemslotDereference),
        ],
        plain_stores: false,
        id: Id::MemslotDeleteVsFault,
    },
    Scenario {
        name: "mmu-memslot-delete-vs-guest",
        protocol: Protocol::P3Memslots,
        shape: "P3 delete (W1-W8, zap + flush between the swaps) vs V1-V6 and F0-F14 on core's ReferenceMmu: Vm::set_memslot(DELETE) vs a guest using the slot's TLB entry, then a fault",
        roles: &["vcpu", "memslot-updater"],
        setup: "ReferenceMmu (1 level, fanout 2); vCPU 0 on CPU 0; one memslot (gfn 0 <- page 0, pfn 1), faulted in and in the vCPU's TLB",
        invariants: &[Invariant::StaleTlbAfterFlush, Invariant::SpteMapsDeletedSlot],
        kills: &[
            r(R::MemslotSwapSynchronizesSrcu),
            b(B::SrcuReadLockMb),
            b(B::SrcuSyncBeforeScan),
            b(B::MemslotDereference),
            b(B::GuestEntryModeBeforeRequests),
            b(B::KickRequestBeforeModeRead),
            r(R::EntryChecksRequests),
        ],
        plain_stores: false,
        id: Id::MmuMemslotDeleteVsGuest,
    },
    Scenario {
        name: "cache-refresh-vs-invalidation",
        protocol: Protocol::P2Retry,
        shape: "R1-R5 vs S1-S2, E1-E2: one translation-cache refresh attempt (seq snapshot, resolve, count and seq checks) vs an MMU-notifier invalidation of the cached page",
        roles: &["refresher", "invalidator"],
        setup: "one memslot on host page 0 (pfn 1); the cache is active on page 0 but not valid; the invalidation remaps page 0 to pfn 2 and frees pfn 1",
        invariants: &[Invariant::CacheStale],
        kills: &[
            b(B::CacheSnapshotBeforeResolve),
            b(B::CacheCountBeforeSeq),
            r(R::CacheChecksActiveCount),
        ],
        plain_stores: false,
        id: Id::CacheRefreshVsInvalidation,
    },
    Scenario {
        name: "cache-hva-change-vs-consumer",
        protocol: Protocol::P2Retry,
        shape: "R3-R4a: a refresh moves a valid cache to another hva while a consumer checks the new hva",
        roles: &["refresher", "consumer"],
        setup: "the cache is valid on host page 1 (pfn 3); host page 0 maps pfn 1; no invalidation",
        invariants: &[Invariant::CacheStale],
        kills: &[r(R::CacheInvalidatesBeforeResolve)],
        plain_stores: false,
        id: Id::CacheHvaChangeVsConsumer,
    },
    Scenario {
        name: "cache-refresh-vs-two-invalidations",
        protocol: Protocol::P2Retry,
        shape: "E2 under C11: one translation-cache refresh attempt vs an invalidation that hits the memslot (A) and one that hits none (B), B's E2 taking the active count to zero after A's",
        roles: &["refresher", "invalidator-a", "invalidator-b"],
        setup: "one memslot on host page 0 (pfn 1); the cache is active on page 0 but not valid; A remaps page 0 to pfn 2 and frees pfn 1; B invalidates host page 4 (no memslot)",
        invariants: &[Invariant::CacheStale],
        kills: &[b(B::InvalidateEndSeqBeforeActiveCount), b(B::CacheCountBeforeSeq), r(R::CacheChecksActiveCount)],
        plain_stores: true,
        id: Id::CacheRefreshVsTwoInvalidations,
    },
    Scenario {
        name: "unsync-vs-guest-write",
        protocol: Protocol::P4Unsync,
        shape: "U1-U5 vs C3: unsync marking + writable SPTE vs the hardware walker, guest PTE write, guest TLB flush, sync_roots",
        roles: &["host-fault", "vcpu+hw-walker"],
        setup: "a root and one 4K shadow page; the SPTE mapping the guest page table is read-only",
        invariants: &[Invariant::MissedSync],
        kills: &[b(B::UnsyncMarkBeforeWritableSpte), r(R::SyncRootsChecksFlags)],
        plain_stores: false,
        id: Id::UnsyncVsGuestWrite,
    },
    Scenario {
        name: "unsync-two-markers",
        protocol: Protocol::P4Unsync,
        shape: "U2, I4.3: two markers under mmu_lock (read) update one parent's bitmap and count",
        roles: &["host-fault-a", "host-fault-b"],
        setup: "a root with two 4K shadow pages in slots 0 and 1",
        invariants: &[Invariant::UnsyncBookkeeping],
        kills: &[r(R::UnsyncMarkUnderLock)],
        plain_stores: false,
        id: Id::UnsyncTwoMarkers,
    },
    Scenario {
        name: "sb-walk",
        protocol: Protocol::P5Walks,
        shape: "SB-walk (L1-L4 vs Z1-Z2): lockless shadow walk vs unlink + kvm_flush_remote_tlbs + free",
        roles: &["walker", "zapper"],
        setup: "vCPU 0 loaded on CPU 0; the root links table page pfn 1",
        invariants: &[Invariant::WalkerReadFreedTable],
        kills: &[
            b(B::WalkBeginModeBeforeSpteReads),
            b(B::KickRequestBeforeModeRead),
            r(R::WalkDisablesInterrupts),
            r(R::FlushWaitsForReaders),
            r(R::FreeAfterFlush),
        ],
        plain_stores: false,
        id: Id::SbWalk,
    },
    Scenario {
        name: "sb-entry",
        protocol: Protocol::P5Walks,
        shape: "SB-entry (V1-V6 vs Q1-Q5): guest entry (mode, mb, request check) vs request + kick + free",
        roles: &["vcpu", "zapper"],
        setup: "vCPU 0 loaded on CPU 0 with a TLB entry for table page pfn 1",
        invariants: &[Invariant::StaleTlbAfterFlush],
        kills: &[b(B::GuestEntryModeBeforeRequests), b(B::KickRequestBeforeModeRead), r(R::EntryChecksRequests)],
        plain_stores: false,
        id: Id::SbEntry,
    },
    Scenario {
        name: "epoch-walk",
        protocol: Protocol::P5Walks,
        shape: "P5 epoch scheme: unlink of more than a crossbeam bag of table pages + flush-before-unpin + deferred free vs an epoch walk, the RCU callbacks and a guest with a cached TLB entry",
        roles: &["zapper", "vcpu"],
        setup: "vCPU 0 loaded on CPU 1 with a TLB entry for table page pfn 1 (linked from the root); 65 table pages zapped at once; one crossbeam-epoch collector",
        invariants: &[Invariant::WalkerReadFreedTable, Invariant::StaleTlbAfterFlush],
        kills: &[r(R::FlushBeforeUnpin)],
        plain_stores: false,
        id: Id::EpochWalk,
    },
    Scenario {
        name: "mmu-zap-ipi-vs-walk",
        protocol: Protocol::P5Walks,
        shape: "L1-L4 + V1-V6 vs Z1-Z2 on core's ReferenceMmu: a lockless walk (fast_fault + walk) and a guest with a cached leaf table vs zap_ipi unlinking, flushing and freeing that table",
        roles: &["vcpu", "zapper"],
        setup: "ReferenceMmu (2 levels, fanout 2) over poisoning ghost table pages; gfns 0, 1 -> pfns 1, 2 in leaf table T0; vCPU 0 on CPU 0 with gfn 0 in its TLB and T0 in its paging-structure cache",
        invariants: &[Invariant::WalkerReadFreedTable, Invariant::StaleTlbAfterFlush],
        kills: &[
            b(B::WalkBeginModeBeforeSpteReads),
            b(B::KickRequestBeforeModeRead),
            b(B::GuestEntryModeBeforeRequests),
            r(R::WalkDisablesInterrupts),
            r(R::FlushWaitsForReaders),
            r(R::FreeAfterFlush),
            r(R::EntryChecksRequests),
        ],
        plain_stores: false,
        id: Id::MmuZapIpiVsWalk,
    },
    Scenario {
        name: "mmu-zap-epoch-vs-walk",
        protocol: Protocol::P5Walks,
        shape: "P5 epoch scheme on core's ReferenceMmu: an epoch walk, the RCU callbacks and a guest with a cached leaf table vs zap_epoch (unlink, flush, defer, unpin)",
        roles: &["vcpu", "zapper"],
        setup: "as mmu-zap-ipi-vs-walk; the MMU's own crossbeam-epoch collector",
        invariants: &[Invariant::WalkerReadFreedTable, Invariant::StaleTlbAfterFlush],
        kills: &[
            b(B::GuestEntryModeBeforeRequests),
            b(B::KickRequestBeforeModeRead),
            r(R::EntryChecksRequests),
        ],
        plain_stores: false,
        id: Id::MmuZapEpochVsWalk,
    },
    Scenario {
        name: "request-payload",
        protocol: Protocol::P5Walks,
        shape: "Q1, kvm_check_request: data written before kvm_make_request is visible to the vCPU that handles the request",
        roles: &["requester", "vcpu"],
        setup: "vCPU 0 loaded on CPU 1, outside guest mode; the root links table page pfn 1",
        invariants: &[Invariant::StaleRequestPayload],
        kills: &[b(B::RequestBeforeSetBit), b(B::RequestTestBeforeHandle)],
        plain_stores: false,
        id: Id::RequestPayload,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_roles_fit_loom() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.name != s.name), "duplicate {}", s.name);
            assert!(!s.roles.is_empty() && s.roles.len() <= 5, "{}: 1..=5 roles", s.name);
            assert!(!s.kills.is_empty() && !s.invariants.is_empty(), "{}: kills and invariants", s.name);
            assert_eq!(Scenario::by_name(s.name).map(|x| x.id), Some(s.id));
        }
    }
}
