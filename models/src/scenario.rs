//! The catalogue: one descriptor for every scenario, shared or checker-specific.
//!
//! A [`Scenario`] is data (name, protocol, roles, setup, invariants, the mutants it targets,
//! the [`Checker`]s that run it, what the correct code must do) plus a [`Body`] that says where
//! its code is:
//!
//! * [`Body::Shared`]: a body in this crate, generic over the HAL and the executor, run
//!   unchanged by every checker the descriptor names (loom, shuttle, real threads). The body
//!   builds the shared state (the setup), hands the roles to [`Executor::run`], and runs the
//!   final ghost-state checks. [`Shared::run`] dispatches to it.
//! * [`Body::Shuttle`] / [`Body::Hardware`]: a body that only one checker can run (many
//!   threads and long runs for shuttle; rounds with jitter and per-round counting for real
//!   threads), written in that checker's crate. That crate matches on [`ShuttleBody`] or
//!   [`HardwareBody`] exhaustively, so a new id is a compile error there until its body exists.
//!
//! Every checker selects its work from [`SCENARIOS`] with [`Scenario::runs_on`]: there is no
//! other list of scenarios, and the rows a checker writes name the scenario by
//! [`Scenario::name`].

use crate::exec::{Executor, Invariant};
use crate::mutant::Mutant;
use crate::row::Checker;
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
    /// Unique name, as the CLI takes it and the rows carry it.
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
    /// The checkers that run it.
    pub checkers: &'static [Checker],
    /// What the correct code does under it.
    pub expect: Expect,
    /// Where its code is.
    pub body: Body,
}

/// What the correct code must do under a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expect {
    /// Keep every invariant and finish.
    Pass,
    /// Break a safety invariant: the scenario reproduces a known gap in KVM's algorithm (it is
    /// documented where the scenario is written).
    Violation,
    /// Never finish (a livelock): the scenario reproduces a known liveness bug.
    Liveness,
    /// Deadlock: the scenario reproduces a known deadlock.
    Deadlock,
}

/// Where a scenario's code is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Body {
    /// In this crate, run unchanged by every checker the descriptor names.
    Shared(Shared),
    /// In the shuttle checker's crate.
    Shuttle(ShuttleBody),
    /// In the real-thread checker's crate.
    Hardware(HardwareBody),
}

/// The shuttle checker's own scenarios: many threads, long runs, liveness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShuttleBody {
    /// `fault-storm`.
    FaultStorm,
    /// `memslot-churn`.
    MemslotChurn,
    /// `cache-churn`.
    CacheChurn,
    /// `cache-outside-memslots`.
    CacheOutsideMemslots,
    /// `reference-mmu-long-run`.
    ReferenceMmuLongRun,
    /// `prefault-holds-srcu`.
    PrefaultHoldsSrcu,
    /// `prefault-drops-srcu`.
    PrefaultDropsSrcu,
    /// `notifier-rwsem-2021`.
    NotifierRwsem2021,
    /// `notifier-never-blocks`.
    NotifierNeverBlocks,
}

/// The real-thread checker's own scenarios: many rounds per run, jittered, counted per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HardwareBody {
    /// `hw-sb-walk`.
    SbWalk,
    /// `hw-sb-entry`.
    SbEntry,
    /// `hw-epoch-walk`.
    EpochWalk,
    /// `hw-mmu-fault-vs-invalidation`.
    MmuFaultVsInvalidation,
}

/// The shared bodies (in this crate).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the scenario of the same name in `SCENARIOS`
pub enum Shared {
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
    ZapGfnRangeVsFault,
    MemslotGenerationVsCache,
    MmuMapWriteProtectVsGuest,
    MmuPrefetchVsInvalidation,
    PrefaultVsMemslotDelete,
    MmuDirtyBitVsWriteProtect,
    MmuClearFlushYoungVsGuest,
    CacheDeactivateVsInvalidation,
    MmuAgeLocklessVsZapEpoch,
    MemslotCacheInSwapWindow,
    SrcuReaderStraddlesTwoSyncs,
    MmuAgeLocklessVsMap,
}

impl Shared {
    /// Runs the body once under `hal` and `exec`: setup, the roles, the final checks.
    /// Panics (through [`crate::violated`]) when an invariant fails.
    pub fn run<H: ScenarioHal, X: Executor>(self, hal: &H, exec: &X) {
        match self {
            Shared::FaultVsInvalidation => scenarios::p1p2::fault_vs_invalidation(hal, exec),
            Shared::Mp1LocklessRetry => scenarios::p1p2::mp1_lockless_retry(hal, exec),
            Shared::Mp2SnapshotPlacement => scenarios::p1p2::mp2_snapshot_placement(hal, exec),
            Shared::MultiSlotRangeMerge => scenarios::p1p2::multi_slot_range_merge(hal, exec),
            Shared::MemslotSwapVsInvalidation => scenarios::p3::memslot_swap_vs_invalidation(hal, exec),
            Shared::MemslotDeleteVsFault => scenarios::p3::memslot_delete_vs_fault(hal, exec),
            Shared::CacheRefreshVsInvalidation => scenarios::cache::cache_refresh_vs_invalidation(hal, exec),
            Shared::CacheHvaChangeVsConsumer => scenarios::cache::cache_hva_change_vs_consumer(hal, exec),
            Shared::CacheRefreshVsTwoInvalidations => {
                scenarios::cache::cache_refresh_vs_two_invalidations(hal, exec)
            }
            Shared::UnsyncVsGuestWrite => scenarios::p4::unsync_vs_guest_write(hal, exec),
            Shared::UnsyncTwoMarkers => scenarios::p4::unsync_two_markers(hal, exec),
            Shared::SbWalk => scenarios::p5::sb_walk(hal, exec),
            Shared::SbEntry => scenarios::p5::sb_entry(hal, exec),
            Shared::EpochWalk => scenarios::p5::epoch_walk(hal, exec),
            Shared::RequestPayload => scenarios::p5::request_payload(hal, exec),
            Shared::MmuFaultVsInvalidation => scenarios::mmu::mmu_fault_vs_invalidation(hal, exec),
            Shared::MmuZapIpiVsWalk => scenarios::mmu::mmu_zap_ipi_vs_walk(hal, exec),
            Shared::MmuZapEpochVsWalk => scenarios::mmu::mmu_zap_epoch_vs_walk(hal, exec),
            Shared::MmuInvalidateTwoSlots => scenarios::mmu::mmu_invalidate_two_slots(hal, exec),
            Shared::MmuMemslotDeleteVsGuest => scenarios::mmu::mmu_memslot_delete_vs_guest(hal, exec),
            Shared::ZapGfnRangeVsFault => scenarios::p1p2::zap_gfn_range_vs_fault(hal, exec),
            Shared::MemslotGenerationVsCache => scenarios::p3::memslot_generation_vs_cache(hal, exec),
            Shared::MmuMapWriteProtectVsGuest => scenarios::mmu::mmu_map_write_protect_vs_guest(hal, exec),
            Shared::MmuPrefetchVsInvalidation => scenarios::mmu::mmu_prefetch_vs_invalidation(hal, exec),
            Shared::PrefaultVsMemslotDelete => scenarios::mmu::prefault_vs_memslot_delete(hal, exec),
            Shared::MmuDirtyBitVsWriteProtect => scenarios::mmu::mmu_dirty_bit_vs_write_protect(hal, exec),
            Shared::MmuClearFlushYoungVsGuest => scenarios::mmu::mmu_clear_flush_young_vs_guest(hal, exec),
            Shared::CacheDeactivateVsInvalidation => {
                scenarios::cache::cache_deactivate_vs_invalidation(hal, exec)
            }
            Shared::MmuAgeLocklessVsZapEpoch => scenarios::mmu::mmu_age_lockless_vs_zap_epoch(hal, exec),
            Shared::MemslotCacheInSwapWindow => scenarios::p3::memslot_cache_in_swap_window(hal, exec),
            Shared::SrcuReaderStraddlesTwoSyncs => scenarios::p3::srcu_reader_straddles_two_syncs(hal, exec),
            Shared::MmuAgeLocklessVsMap => scenarios::mmu::mmu_age_lockless_vs_map(hal, exec),
        }
    }
}

impl Scenario {
    /// Its shared body: `None` for a checker's own scenario, whose body is in that checker's
    /// crate.
    pub const fn shared(&self) -> Option<Shared> {
        match self.body {
            Body::Shared(b) => Some(b),
            Body::Shuttle(_) | Body::Hardware(_) => None,
        }
    }

    /// Whether `checker` runs it.
    pub fn runs_on(&self, checker: Checker) -> bool {
        self.checkers.contains(&checker)
    }

    /// Every scenario `checker` runs, in catalogue order.
    pub fn run_by(checker: Checker) -> impl Iterator<Item = &'static Scenario> {
        SCENARIOS.iter().filter(move |s| s.runs_on(checker))
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

/// The checkers that run a shared body on the crate's own code: loom, shuttle, real threads, and
/// ring 0 in a KVM guest.
const CODE: &[Checker] = &[Checker::Loom, Checker::Shuttle, Checker::Hardware, Checker::Kvm];

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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::FaultVsInvalidation),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::Mp1LocklessRetry),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::Mp2SnapshotPlacement),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MultiSlotRangeMerge),
    },
    Scenario {
        name: "zap-gfn-range-vs-fault",
        protocol: Protocol::P1Invalidation,
        shape: "G1-G4 vs F0-F14: Vm::zap_gfn_range (kvm_zap_gfn_range, a zap that is no MMU-notifier event) vs the x86 fault path",
        roles: &["vcpu", "zapper"],
        setup: "one memslot (gfn 0 <- hva 0x1000 -> pfn 1); the zapper remaps host page 0 to pfn 2 without a notifier, calls zap_gfn_range(gfn 0), then frees pfn 1",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[r(R::ZapGfnRangeInvalidates)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::ZapGfnRangeVsFault),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuFaultVsInvalidation),
    },
    Scenario {
        name: "mmu-prefetch-vs-invalidation",
        protocol: Protocol::P2Retry,
        shape: "F0-F15 vs S1-S5, E1-E2 on core's ReferenceMmu: fault_around (fault on gfn 0, prefetch of gfn 1 under mmu_lock) vs an invalidation of gfn 1's host page",
        roles: &["vcpu", "invalidator"],
        setup: "ReferenceMmu (1 level, fanout 2); memslots gfn 0 <- page 0 (pfn 1), gfn 1 <- page 1 (pfn 2); the invalidator remaps page 1 to pfn 3 and frees pfn 2",
        invariants: &[Invariant::SpteMapsFreedPage],
        kills: &[r(R::PrefetchSkipsWhileInvalidating)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuPrefetchVsInvalidation),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuInvalidateTwoSlots),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MemslotSwapVsInvalidation),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MemslotDeleteVsFault),
    },
    Scenario {
        name: "memslot-generation-vs-cache",
        protocol: Protocol::P3Memslots,
        shape: "W1-W8, I3.4: a lookup in the old memslot set stamped with a generation read from the new one (MMIO SPTE / gfn_to_hva_cache) vs a memslot swap",
        roles: &["vcpu", "memslot-updater"],
        setup: "no memslot; the updater creates slot 0 (gfn 0 <- hva 0x1000); the vCPU caches its lookup of gfn 0 in a SlotCache",
        invariants: &[Invariant::StaleGenerationCache],
        kills: &[r(R::MemslotGenerationInProgress)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MemslotGenerationVsCache),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuMemslotDeleteVsGuest),
    },
    Scenario {
        name: "prefault-vs-memslot-delete",
        protocol: Protocol::P3Memslots,
        shape: "F16 (F0-F14 retried inside one SRCU section) vs P3 delete (W1-W8 twice) on core's ReferenceMmu: ReferenceMmu::prefault vs Vm::set_memslot(DELETE); liveness",
        roles: &["vcpu", "memslot-updater"],
        setup: "ReferenceMmu (1 level, fanout 2); one memslot (gfn 0 <- page 0, pfn 1); the updater deletes it",
        invariants: &[Invariant::SpteMapsDeletedSlot],
        kills: &[r(R::PrefaultReturnsOnInvalidSlot)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::PrefaultVsMemslotDelete),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::CacheRefreshVsInvalidation),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::CacheHvaChangeVsConsumer),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::CacheRefreshVsTwoInvalidations),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::UnsyncVsGuestWrite),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::UnsyncTwoMarkers),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::SbWalk),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::SbEntry),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::EpochWalk),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuZapIpiVsWalk),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuZapEpochVsWalk),
    },
    Scenario {
        name: "mmu-dirty-bit-vs-write-protect",
        protocol: Protocol::P5Walks,
        shape: "D1-D3 on core's ReferenceMmu: the hardware's atomic OR of the dirty bit (a guest write) vs map() write-protecting the leaf under mmu_lock (dirty logging)",
        roles: &["vcpu", "write-protector"],
        setup: "ReferenceMmu (1 level, fanout 2) with a ghost PageTracker; vCPU 0 on CPU 0; gfn 0 -> pfn 1 writable, accessed, in the vCPU's TLB as writable but not yet written through",
        invariants: &[Invariant::DirtyBitLost],
        kills: &[r(R::SpteUpdateIsAtomic)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuDirtyBitVsWriteProtect),
    },
    Scenario {
        name: "mmu-clear-flush-young-vs-guest",
        protocol: Protocol::P1Invalidation,
        shape: "A1-A3 vs V1-V6 and D1 on core's ReferenceMmu: Vm::clear_flush_young (atomic accessed-bit clear, flush when young) vs a guest writing the page twice",
        roles: &["vcpu", "ager"],
        setup: "ReferenceMmu (1 level, fanout 2) with a ghost PageTracker; vCPU 0 on CPU 0; one memslot (gfn 0 <- page 0); gfn 0 -> pfn 1 writable, accessed, in the vCPU's TLB as writable but not yet written through",
        invariants: &[Invariant::AccessNotRecorded, Invariant::DirtyBitLost],
        kills: &[r(R::ClearFlushYoungFlushes), r(R::SpteUpdateIsAtomic)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuClearFlushYoungVsGuest),
    },
    Scenario {
        name: "mmu-map-write-protect-vs-guest",
        protocol: Protocol::P5Walks,
        shape: "M1-M2 (Q1-Q6 inside) vs V1-V6 on core's ReferenceMmu: map() write-protecting a writable leaf vs a guest writing through its TLB",
        roles: &["vcpu", "write-protector"],
        setup: "ReferenceMmu (1 level, fanout 2); vCPU 0 on CPU 0; gfn 0 -> pfn 1 writable, in the vCPU's TLB as writable",
        invariants: &[Invariant::WriteAfterWriteProtect],
        kills: &[r(R::MapFlushesLostWrite)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuMapWriteProtectVsGuest),
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
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::RequestPayload),
    },
    // The shuttle checker's own scenarios (bodies in models/shuttle/src/scenarios).
    Scenario {
        name: "fault-storm",
        protocol: Protocol::P1Invalidation,
        shape: "8 vCPUs fault (reference MMU) vs 3 invalidators with overlapping ranges across 4 memslots",
        roles: &["vcpu", "vcpu", "vcpu", "vcpu", "vcpu", "vcpu", "vcpu", "vcpu", "invalidator", "invalidator", "invalidator"],
        setup: "ReferenceMmu over 4 memslots; every host page mapped; the invalidators remap and free overlapping host ranges",
        invariants: &[Invariant::SpteMapsFreedPage, Invariant::InProgressUnbalanced],
        // Not RetryChecksSeq: only an invalidation that starts after the fault's last lockless
        // pre-check and ends before its locked check needs the seq test, a window shuttle hits
        // about once in 10,000 PCT executions among 11 threads (fault-vs-invalidation kills it).
        kills: &[
            r(R::RetryChecksInProgress),
            r(R::RetryGfnChecksRange),
            r(R::RangeAddMerges),
            r(R::FaultRetriesUnderLock),
        ],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::FaultStorm),
    },
    Scenario {
        name: "memslot-churn",
        protocol: Protocol::P3Memslots,
        shape: "memslot delete, move and create vs 4 faulting vCPUs and 2 invalidators across the changing slots",
        roles: &["memslot-updater", "vcpu", "vcpu", "vcpu", "vcpu", "invalidator", "invalidator"],
        setup: "ReferenceMmu over changing memslots; the updater deletes, moves and creates slots",
        invariants: &[Invariant::SpteMapsDeletedSlot, Invariant::SpteMapsFreedPage, Invariant::InProgressUnbalanced],
        kills: &[
            r(R::MemslotSwapWaitsForInvalidations),
            r(R::MemslotPublishUnderLock),
            r(R::MemslotSwapSynchronizesSrcu),
        ],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::MemslotChurn),
    },
    Scenario {
        name: "cache-churn",
        protocol: Protocol::P2Retry,
        shape: "2 translation caches activated, refreshed, moved and deactivated while 2 consumers use them and 2 invalidators run",
        roles: &["cache-owner", "cache-owner", "consumer", "consumer", "invalidator", "invalidator"],
        setup: "memslots over the cached pages; two caches, each moved between two host pages",
        invariants: &[Invariant::CacheStale],
        kills: &[r(R::CacheChecksActiveCount), r(R::CacheInvalidatesBeforeResolve)],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::CacheChurn),
    },
    Scenario {
        name: "cache-outside-memslots",
        protocol: Protocol::P2Retry,
        shape: "the translation-cache open issue (R4g): the same, with the cached pages outside every memslot (KVM's algorithm misses it)",
        roles: &["cache-owner", "cache-owner", "consumer", "consumer", "invalidator", "invalidator"],
        setup: "as cache-churn, but no memslot covers the cached pages",
        invariants: &[Invariant::CacheStale],
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Violation,
        body: Body::Shuttle(ShuttleBody::CacheOutsideMemslots),
    },
    Scenario {
        name: "reference-mmu-long-run",
        protocol: Protocol::P5Walks,
        shape: "4 vCPUs (faults, lockless walks + fast faults, guest runs) vs 2 zappers freeing table pages and an invalidator",
        roles: &["vcpu", "vcpu", "vcpu", "vcpu", "zapper", "zapper", "invalidator"],
        setup: "ReferenceMmu (2 levels) over poisoning table pages; ghost vCPU TLBs",
        invariants: &[Invariant::WalkerReadFreedTable, Invariant::SpteMapsFreedPage],
        kills: &[r(R::FreeAfterFlush)],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::ReferenceMmuLongRun),
    },
    Scenario {
        name: "prefault-holds-srcu",
        protocol: Protocol::P3Memslots,
        shape: "P3 liveness bug: a prefault retrying while holding SRCU vs a memslot delete (livelock: both spin)",
        roles: &["prefault", "memslot-updater", "invalidator"],
        setup: "one memslot; an invalidation keeps the prefault retrying",
        invariants: &[],
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Liveness,
        body: Body::Shuttle(ShuttleBody::PrefaultHoldsSrcu),
    },
    Scenario {
        name: "prefault-drops-srcu",
        protocol: Protocol::P3Memslots,
        shape: "P3 liveness fix: the same roles, each attempt in its own SRCU section",
        roles: &["prefault", "memslot-updater", "invalidator"],
        setup: "as prefault-holds-srcu",
        invariants: &[],
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::PrefaultDropsSrcu),
    },
    Scenario {
        name: "notifier-rwsem-2021",
        protocol: Protocol::P3Memslots,
        shape: "P3 bug: a notifier that blocks (2021 rwsem) vs a memslot writer and an rmap lock (deadlock)",
        roles: &["invalidator-a", "invalidator-b", "memslot-updater", "vcpu", "vcpu"],
        setup: "one memslot; the notifier takes a reader-writer semaphore the memslot writer holds",
        invariants: &[],
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Deadlock,
        body: Body::Shuttle(ShuttleBody::NotifierRwsem2021),
    },
    Scenario {
        name: "notifier-never-blocks",
        protocol: Protocol::P3Memslots,
        shape: "P3 fix: the same roles with core's notifier (the active count never blocks)",
        roles: &["invalidator-a", "invalidator-b", "memslot-updater", "vcpu", "vcpu"],
        setup: "as notifier-rwsem-2021, with core's Vm",
        invariants: &[],
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Shuttle],
        expect: Expect::Pass,
        body: Body::Shuttle(ShuttleBody::NotifierNeverBlocks),
    },
    // The real-thread checker's own scenarios (bodies in models/hw/src/scenarios).
    Scenario {
        name: "hw-sb-walk",
        protocol: Protocol::P5Walks,
        shape: "SB-walk: walker W(mode) mb R(link) R(page) vs zapper W(unlink) mb R(mode), IPI if busy, free",
        roles: &["walker", "zapper"],
        setup: "vCPU 0 loaded on CPU 0; each round the root links a fresh table page, poisoned and quarantined when freed",
        invariants: &[Invariant::WalkerReadFreedTable],
        kills: &[
            b(B::WalkBeginModeBeforeSpteReads),
            r(R::WalkDisablesInterrupts),
            r(R::FlushWaitsForReaders),
            r(R::FreeAfterFlush),
        ],
        plain_stores: false,
        checkers: &[Checker::Hardware],
        expect: Expect::Pass,
        body: Body::Hardware(HardwareBody::SbWalk),
    },
    Scenario {
        name: "hw-sb-entry",
        protocol: Protocol::P5Walks,
        shape: "SB-entry: vCPU W(mode=IN_GUEST) mb R(requests), guest walks through its TLB vs requester W(unlink) W(request) mb R(mode), IPI if in guest, free",
        roles: &["vcpu", "requester"],
        setup: "vCPU 0 loaded on CPU 0; each round a fresh table page linked from the root and in the vCPU's ghost TLB",
        invariants: &[Invariant::StaleTlbAfterFlush, Invariant::WalkerReadFreedTable],
        kills: &[b(B::GuestEntryModeBeforeRequests), r(R::EntryChecksRequests), r(R::FreeAfterFlush)],
        plain_stores: false,
        checkers: &[Checker::Hardware],
        expect: Expect::Pass,
        body: Body::Hardware(HardwareBody::SbEntry),
    },
    Scenario {
        name: "hw-epoch-walk",
        protocol: Protocol::P5Walks,
        shape: "P5 epoch reclamation: pinned software walks and a guest TLB vs pin, unlink, flush, defer, unpin",
        roles: &["vcpu", "zapper"],
        setup: "one crossbeam-epoch collector; each round a fresh table page linked from the root and in the vCPU's ghost TLB",
        invariants: &[Invariant::WalkerReadFreedTable, Invariant::StaleTlbAfterFlush],
        // None reachable: see the module docs of models/hw/src/scenarios/epoch.rs.
        kills: &[],
        plain_stores: false,
        checkers: &[Checker::Hardware],
        expect: Expect::Pass,
        body: Body::Hardware(HardwareBody::EpochWalk),
    },
    Scenario {
        name: "hw-mmu-fault-vs-invalidation",
        protocol: Protocol::P2Retry,
        shape: "F0-F14 and L1-L4 on the reference MMU: faults (F0-F14), lockless walks and the fast path vs invalidate_range_start/end that remap and free guest pages and unlink table pages",
        roles: &["vcpu", "invalidator"],
        setup: "ReferenceMmu over poisoning table pages; one memslot; the invalidator remaps and frees guest pages and unlinks table pages",
        invariants: &[Invariant::SpteMapsFreedPage, Invariant::WalkerReadFreedTable],
        kills: &[
            r(R::RetryChecksInProgress),
            r(R::FaultRetriesUnderLock),
            r(R::WalkDisablesInterrupts),
            r(R::FlushWaitsForReaders),
            r(R::FreeAfterFlush),
        ],
        plain_stores: false,
        checkers: &[Checker::Hardware],
        expect: Expect::Pass,
        body: Body::Hardware(HardwareBody::MmuFaultVsInvalidation),
    },
    // Shared scenarios added since the `schedule` fuzz target's seeds were written come last:
    // a seed names its target by its position among shuttle's passing targets
    // (models/shuttle/tests/bytes.rs), so one inserted earlier would rewrite every later seed.
    Scenario {
        name: "cache-deactivate-vs-invalidation",
        protocol: Protocol::P2Retry,
        shape: "K2 vs S1-S2, E1-E2: a VM deactivates its own valid translation cache (mark inactive, then unlist) while a vCPU unmaps its page (the VM invalidates its listed caches at S2; the page is freed) and checks the cache",
        roles: &["cache-owner", "vcpu"],
        setup: "Vm<_, 1, 1>: one memslot on host page 0 (pfn 1); cache 0 activated and refreshed through the VM (listed, valid, pfn 1); the secondary MMU's cache hook does nothing; the vCPU's invalidation remaps page 0 to pfn 2 and frees pfn 1",
        invariants: &[Invariant::CacheStale],
        kills: &[r(R::CacheListedWhileActive)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::CacheDeactivateVsInvalidation),
    },
    Scenario {
        name: "mmu-age-lockless-vs-zap-epoch",
        protocol: Protocol::P5Walks,
        shape: "A1-A2 lockless (the TDP MMU's aging under rcu_read_lock) vs S1-S5, E1-E2 with zap_epoch on core's epoch-way ReferenceMmu (EpochReclamation), both through its notifier: Vm::clear_young then test_young, each an epoch-pinned walk without mmu_lock, vs an invalidation that unlinks leaf table T0 and defers its free, then the RCU callbacks",
        roles: &["ager", "zapper"],
        setup: "ReferenceMmu (2 levels, fanout 2) over ghost table pages whose poison carries the accessed bit; one memslot (gfns 0..2 <- host pages 0..2); gfn 0 -> pfn 1 and gfn 1 -> pfn 2 in leaf table T0, accessed bits set; the zapper's invalidation covers both pages, and its own collects free T0 unless a pinned walk holds the epoch back",
        invariants: &[Invariant::WalkerReadFreedTable],
        kills: &[r(R::LocklessAgingPinsEpoch)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuAgeLocklessVsZapEpoch),
    },
    Scenario {
        name: "memslot-cache-in-swap-window",
        protocol: Protocol::P3Memslots,
        shape: "W1-W8, I3.4 at the cache's use: a lookup cached by generation (MMIO SPTE / gfn_to_hva_cache) filled before or across a memslot swap, then answered from the cache inside or after the swap window",
        roles: &["vcpu", "memslot-updater"],
        setup: "no memslot, generation 0; the updater creates slot 0 (gfn 0 <- hva 0x1000); the vCPU fills its SlotCache for gfn 0 (lookup, then the generation of a second dereference), then looks gfn 0 up through it in a second SRCU read section",
        invariants: &[Invariant::StaleGenerationCache],
        kills: &[r(R::MemslotGenerationInProgress)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MemslotCacheInSwapWindow),
    },
    Scenario {
        name: "srcu-reader-straddles-two-syncs",
        protocol: Protocol::P3Memslots,
        shape: "SRCU read section vs two synchronize_srcu calls, I3.2: a reader that loads the index before the first call's flip and increments its counter after that call's scan, vs an updater that publishes, synchronizes and frees twice",
        roles: &["reader", "updater"],
        setup: "core's Srcu; a published word naming host page 1 of pages 1-3 (each with a payload word; liveness in ghost state); the updater publishes page 2, synchronizes, frees page 1, then publishes page 3, synchronizes, frees page 2",
        invariants: &[Invariant::SrcuReaderUsesFreedData],
        kills: &[b(B::SrcuReadLockMb), b(B::SrcuSyncBeforeScan)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::SrcuReaderStraddlesTwoSyncs),
    },
    Scenario {
        name: "mmu-age-lockless-vs-map",
        protocol: Protocol::P5Walks,
        shape: "A1-A2 lockless vs map publishing a recycled table page (the TDP MMU linking a new spt while kvm_age_gfn walks under rcu_read_lock): a fault whose map reuses a freed leaf table's page, initializes it and links it, vs test_young without mmu_lock of a gfn nothing maps, on core's epoch-way ReferenceMmu through its notifier",
        roles: &["vcpu", "ager"],
        setup: "ReferenceMmu (2 levels, fanout 2, EpochReclamation) over ghost table pages that are recycled once freed and whose poison carries the accessed bit; one memslot (gfns 0..4 <- host pages 0..4, pfns 1..=4); gfn 2 mapped, then zapped the epoch way and its leaf table T1 freed (poisoned); the vcpu's fault on gfn 3 gets T1's page back from the allocator",
        invariants: &[Invariant::WalkerReadUninitializedTable],
        kills: &[b(B::TableLinkPublish), b(B::TableLinkFollow)],
        plain_stores: false,
        checkers: CODE,
        expect: Expect::Pass,
        body: Body::Shared(Shared::MmuAgeLocklessVsMap),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique() {
        for (i, s) in SCENARIOS.iter().enumerate() {
            assert!(SCENARIOS[..i].iter().all(|o| o.name != s.name), "duplicate {}", s.name);
            assert_eq!(Scenario::by_name(s.name).map(|x| x.body), Some(s.body));
            assert!(SCENARIOS[..i].iter().all(|o| o.body != s.body), "{}: body listed twice", s.name);
        }
    }

    #[test]
    fn a_checkers_own_scenario_runs_on_that_checker_only() {
        for s in SCENARIOS {
            match s.body {
                Body::Shuttle(_) => assert_eq!(s.checkers, [Checker::Shuttle], "{}", s.name),
                Body::Hardware(_) => assert_eq!(s.checkers, [Checker::Hardware], "{}", s.name),
                Body::Shared(_) => assert!(!s.checkers.is_empty(), "{}: no checker", s.name),
            }
        }
    }

    #[test]
    fn loom_runs_only_shared_bodies_that_fit_it() {
        for s in Scenario::run_by(Checker::Loom) {
            assert!(s.shared().is_some(), "{}: loom runs shared bodies only", s.name);
            assert!(!s.roles.is_empty() && s.roles.len() <= 5, "{}: 1..=5 roles", s.name);
        }
    }

    #[test]
    fn a_passing_shared_scenario_targets_mutants_and_checks_invariants() {
        for s in SCENARIOS.iter().filter(|s| s.shared().is_some()) {
            assert_eq!(s.expect, Expect::Pass, "{}", s.name);
            assert!(!s.kills.is_empty() && !s.invariants.is_empty(), "{}: kills and invariants", s.name);
        }
    }

    #[test]
    fn every_code_checker_has_scenarios() {
        for c in CODE {
            assert!(Scenario::run_by(*c).next().is_some(), "{c}: no scenario");
        }
    }
}
