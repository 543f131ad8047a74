//! The protocol steps the crate reports through [`Hal::step`](crate::hal::Hal::step).
//!
//! Model checkers run the crate's own code, so a counterexample must be told in the protocol's
//! terms without the scenario re-implementing any of it. Protocol code therefore announces each
//! labelled step as it happens, with the values it read or wrote: a [`Step`]. Production
//! backends keep the default [`Hal::step`](crate::hal::Hal::step), an empty inline function,
//! so the announcement compiles away; model backends record it in the trace of the current
//! execution, next to the barriers and the mutant, and replay tools can match a recorded trace
//! against a protocol model step by step.
//!
//! Each variant names the step label it stands for ([`Step::label`]); the labels are defined in
//! [`crate::protocols`]. Values are plain `Copy` data (`Gfn`, `Hva`, `Pfn`, counts), copied at the
//! moment of the step, so a step costs nothing to build and never borrows protocol state.

use crate::hal::{CpuId, CpuSet};
use crate::range::{Gfn, Hva, Pfn};
use core::fmt;

/// Which retry check ran (P2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub enum RetryCheck {
    /// `mmu_invalidate_retry`, under `mmu_lock`.
    Locked,
    /// `mmu_invalidate_retry` without the lock (MP-1).
    Lockless,
    /// `mmu_invalidate_retry_gfn`, under `mmu_lock` (F12).
    Gfn,
    /// `mmu_invalidate_retry_gfn_unsafe`, the lockless hint (F7, F10).
    GfnUnsafe,
}

/// One labelled protocol step, with the values it saw. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum Step {
    /// S1: the invalidation is counted as active; `count` after the increment.
    ActiveStart {
        /// The active count after this invalidation's increment.
        count: u64,
    },
    /// S2: translation caches overlapping `[start, end)` are about to be invalidated.
    InvalidateCaches {
        /// First host address of the range.
        start: Hva,
        /// One past the last host address.
        end: Hva,
    },
    /// S2, one cache: `hit` when the cache was valid for an hva in the range and is now
    /// invalid.
    CacheInvalidated {
        /// The cache's hva.
        hva: Hva,
        /// Whether this invalidation made it invalid.
        hit: bool,
    },
    /// K1/K2: translation cache `index` of a VM put on (`listed`) or taken off the VM's cache
    /// list under `gpc_lock`.
    CacheListed {
        /// The cache's index in its VM.
        index: usize,
        /// On the list now.
        listed: bool,
    },
    /// S3b: `begin` under `mmu_lock`; `in_progress` after the increment and the merged range
    /// after the first `range_add`.
    InvalidateBegin {
        /// `in_progress` after the increment.
        in_progress: u64,
        /// Merged range start.
        start: Gfn,
        /// Merged range end.
        end: Gfn,
    },
    /// S3b: a further memslot's gfns merged into the range; the merged range after.
    InvalidateRangeAdd {
        /// Merged range start.
        start: Gfn,
        /// Merged range end.
        end: Gfn,
    },
    /// S3c: the secondary MMU zapped `[start, end)` of memslot `slot`; `flush` when it asks
    /// for a TLB flush.
    Unmap {
        /// The memslot.
        slot: u16,
        /// First gfn zapped.
        start: Gfn,
        /// One past the last gfn zapped.
        end: Gfn,
        /// Whether a TLB flush is needed.
        flush: bool,
    },
    /// S4: remote TLBs flushed, `mmu_lock` still held.
    InvalidateFlush,
    /// E1: `seq++` then `in_progress--` under `mmu_lock`; the values after.
    InvalidateEnd {
        /// `seq` after the increment.
        seq: u64,
        /// `in_progress` after the decrement.
        in_progress: u64,
    },
    /// E2: the active count dropped; `count` after the decrement.
    ActiveEnd {
        /// The active count after this invalidation's decrement.
        count: u64,
    },
    /// F4: the fault's `seq` snapshot.
    Snapshot {
        /// The `seq` read.
        seq: u64,
    },
    /// F7, F10, F12 (and MP-1): a retry check and its answer.
    Retry {
        /// Which check.
        check: RetryCheck,
        /// The gfn for the ranged checks.
        gfn: Option<Gfn>,
        /// `true`: the fault must retry.
        retry: bool,
    },
    /// R4b: a cache refresh's `seq` snapshot.
    CacheSnapshot {
        /// The `seq` read.
        seq: u64,
    },
    /// R4g: the refresh's `mmu_notifier_retry_cache` and its answer.
    CacheRetry {
        /// The active count read (0 when the check was skipped by a mutant).
        active: u64,
        /// `true`: the refresh must retry.
        retry: bool,
    },
    /// R4h: the cache is valid for `hva` with `pfn`.
    CacheValid {
        /// The cached hva.
        hva: Hva,
        /// The pfn validated.
        pfn: Pfn,
    },
    /// W3: a memslot swap found `active` invalidations open and waits.
    MemslotWait {
        /// The active count read under the spinlock.
        active: u64,
    },
    /// W4: the memslot set of `generation` is published.
    MemslotPublish {
        /// The new set's generation.
        generation: u64,
    },
    /// W7: the swap waited for every SRCU reader of the old set.
    MemslotSynchronized,
    /// W8: the swap gave the new set its final `generation` (the update-in-progress bit
    /// cleared), after the SRCU synchronize.
    MemslotGeneration {
        /// The final generation.
        generation: u64,
    },
    /// G2–G3: a zap of `[start, end)` that is not an MMU-notifier event
    /// (`Vm::zap_gfn_range`) removed the SPTEs of every memslot's part, flushing when `flush`.
    ZapGfnRange {
        /// First gfn zapped.
        start: Gfn,
        /// One past the last gfn zapped.
        end: Gfn,
        /// Whether a TLB flush was needed (and made).
        flush: bool,
    },
    /// Q6: a remote TLB flush of the gfns `[start, end)` (`kvm_flush_remote_tlbs_range`).
    FlushRange {
        /// First gfn.
        start: Gfn,
        /// One past the last gfn.
        end: Gfn,
    },
    /// F15: the fault prefetched `gfn -> pfn` (read-only) under its `mmu_lock`.
    Prefetch {
        /// The prefetched gfn.
        gfn: Gfn,
        /// The pfn installed.
        pfn: Pfn,
    },
    /// F15: the prefetch was skipped: `in_progress` invalidations were open.
    PrefetchSkipped {
        /// `in_progress` read under `mmu_lock`.
        in_progress: u64,
    },
    /// F16: a prefault found `gfn`'s memslot invalid and returns "try again" instead of
    /// waiting inside its SRCU read section.
    PrefaultTryAgain {
        /// The gfn.
        gfn: Gfn,
    },
    /// A1–A3: an aging notifier ran: `young` when an accessed bit was set, `flush` when it
    /// flushed remote TLBs (`clear_flush_young` only).
    Age {
        /// Whether the range was young.
        young: bool,
        /// Whether it flushed.
        flush: bool,
    },
    /// D3: the accessed and dirty bits of a leaf `ReferenceMmu` replaced or zapped were
    /// handed to the primary MMU (`PageTracker`).
    SpteBits {
        /// The old leaf's pfn.
        pfn: Pfn,
        /// Its accessed bit.
        accessed: bool,
        /// Its dirty bit.
        dirty: bool,
    },
    /// M1–M2: `ReferenceMmu::map` replaced the leaf of `gfn`; `flush` when the old leaf was
    /// writable and the new one is not (or maps another pfn), so remote TLBs were flushed
    /// before returning.
    MapUpdate {
        /// The gfn.
        gfn: Gfn,
        /// Whether the update flushed.
        flush: bool,
    },
    /// L1–L2: a lockless walk began on the reporting CPU (interrupts off, mode
    /// READING_SHADOW_PAGE_TABLES). Model backends know which CPU reports a step, so steps do
    /// not carry it (reading it would cost the hot path a call that the compiler cannot drop).
    WalkBegin,
    /// L3–L4: the walk ended (mode OUTSIDE_GUEST_MODE; interrupts come back on next).
    WalkEnd,
    /// V1–V4: the vCPU loaded on the reporting CPU tried to enter guest mode; `requests` when a
    /// pending request or a kick made it turn back (V4).
    GuestEnter {
        /// Whether requests were pending after the mode store and barrier.
        requests: bool,
    },
    /// V5–V6: the vCPU left guest mode (interrupts come back on next).
    GuestExit,
    /// Q1: request bit `request` made for a vCPU.
    Request {
        /// The request's bit number.
        request: u8,
    },
    /// Q3–Q4: the kick read the vCPU's mode; `ipi` when it must be interrupted (it was in the
    /// guest or in a lockless walk) on `cpu`.
    Kick {
        /// The vCPU's CPU, if loaded.
        cpu: Option<CpuId>,
        /// Whether it needs an IPI.
        ipi: bool,
    },
    /// Q5: IPIs sent to `targets` and acknowledged by each.
    IpiAndWait {
        /// The CPUs interrupted.
        targets: CpuSet,
    },
    /// Z2: a batch of `pages` table pages freed after the remote flush returned.
    ZapCommit {
        /// Pages freed.
        pages: usize,
    },
    /// Epoch scheme: `pages` table pages handed to the epoch collector after the flush, before
    /// the zapper unpins.
    EpochDefer {
        /// Pages deferred.
        pages: usize,
    },
    /// F1–F6: the fault found the memslot of `gfn` (`invalid` when it is being deleted or
    /// moved, which makes the fault retry).
    FaultSlot {
        /// The faulting gfn.
        gfn: Gfn,
        /// The memslot.
        slot: u16,
        /// Whether the slot is marked invalid.
        invalid: bool,
    },
    /// F8: the fault resolved `gfn` to `pfn` through the primary MMU.
    FaultResolved {
        /// The faulting gfn.
        gfn: Gfn,
        /// The pfn resolved.
        pfn: Pfn,
    },
    /// F13–F14: the SPTE `gfn -> pfn` installed under `mmu_lock`.
    FaultInstall {
        /// The faulting gfn.
        gfn: Gfn,
        /// The pfn installed.
        pfn: Pfn,
    },
}

impl Step {
    /// The label of the step in [`crate::protocols`], such as `"S1"` or `"F12"`; a range of
    /// labels for steps that cover several (`"L1-L2"`).
    pub const fn label(&self) -> &'static str {
        match self {
            Step::ActiveStart { .. } => "S1",
            Step::InvalidateCaches { .. } | Step::CacheInvalidated { .. } => "S2",
            Step::CacheListed { listed: true, .. } => "K1",
            Step::CacheListed { listed: false, .. } => "K2",
            Step::InvalidateBegin { .. } | Step::InvalidateRangeAdd { .. } => "S3b",
            Step::Unmap { .. } => "S3c",
            Step::InvalidateFlush => "S4",
            Step::InvalidateEnd { .. } => "E1",
            Step::ActiveEnd { .. } => "E2",
            Step::Snapshot { .. } => "F4",
            Step::Retry { check: RetryCheck::Gfn, .. } => "F12",
            Step::Retry { check: RetryCheck::GfnUnsafe, .. } => "F7",
            Step::Retry { check: RetryCheck::Lockless, .. } => "MP-1",
            Step::Retry { check: RetryCheck::Locked, .. } => "F12",
            Step::CacheSnapshot { .. } => "R4b",
            Step::CacheRetry { .. } => "R4g",
            Step::CacheValid { .. } => "R4h",
            Step::MemslotWait { .. } => "W3",
            Step::MemslotPublish { .. } => "W4",
            Step::MemslotSynchronized => "W7",
            Step::MemslotGeneration { .. } => "W8",
            Step::ZapGfnRange { .. } => "G2-G3",
            Step::FlushRange { .. } => "Q6",
            Step::MapUpdate { .. } => "M1-M2",
            Step::SpteBits { .. } => "D3",
            Step::Age { .. } => "A1-A3",
            Step::Prefetch { .. } | Step::PrefetchSkipped { .. } => "F15",
            Step::PrefaultTryAgain { .. } => "F16",
            Step::WalkBegin => "L1-L2",
            Step::WalkEnd => "L3-L4",
            Step::GuestEnter { .. } => "V1-V4",
            Step::GuestExit => "V5-V6",
            Step::Request { .. } => "Q1",
            Step::Kick { .. } => "Q3-Q4",
            Step::IpiAndWait { .. } => "Q5",
            Step::ZapCommit { .. } => "Z2",
            Step::EpochDefer { .. } => "Z2",
            Step::FaultSlot { .. } => "F1-F6",
            Step::FaultResolved { .. } => "F8",
            Step::FaultInstall { .. } => "F13-F14",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.label())?;
        match *self {
            Step::ActiveStart { count } => write!(f, "active invalidations -> {count}"),
            Step::InvalidateCaches { start, end } => {
                write!(f, "invalidate translation caches over {start:#x}..{end:#x}")
            }
            Step::CacheInvalidated { hva, hit } => write!(f, "cache at {hva:#x} invalidated: {hit}"),
            Step::CacheListed { index, listed: true } => write!(f, "cache {index} put on the VM's list"),
            Step::CacheListed { index, listed: false } => write!(f, "cache {index} taken off the VM's list"),
            Step::InvalidateBegin { in_progress, start, end } => {
                write!(f, "begin: in_progress -> {in_progress}, range {start:#x}..{end:#x}")
            }
            Step::InvalidateRangeAdd { start, end } => write!(f, "range_add: range {start:#x}..{end:#x}"),
            Step::Unmap { slot, start, end, flush } => {
                write!(f, "unmap slot {slot} gfns {start:#x}..{end:#x}, flush needed: {flush}")
            }
            Step::InvalidateFlush => f.write_str("flush remote TLBs under mmu_lock"),
            Step::InvalidateEnd { seq, in_progress } => {
                write!(f, "end: seq -> {seq}, in_progress -> {in_progress}")
            }
            Step::ActiveEnd { count } => write!(f, "active invalidations -> {count}"),
            Step::Snapshot { seq } => write!(f, "snapshot seq = {seq}"),
            Step::Retry { check, gfn: Some(gfn), retry } => {
                write!(f, "retry check {check:?} gfn {gfn:#x} -> {retry}")
            }
            Step::Retry { check, gfn: None, retry } => write!(f, "retry check {check:?} -> {retry}"),
            Step::CacheSnapshot { seq } => write!(f, "cache refresh: snapshot seq = {seq}"),
            Step::CacheRetry { active, retry } => {
                write!(f, "cache refresh: active count {active}, retry -> {retry}")
            }
            Step::CacheValid { hva, pfn } => write!(f, "cache valid: hva {hva:#x} -> pfn {pfn:#x}"),
            Step::MemslotWait { active } => write!(f, "memslot swap waits for {active} invalidation(s)"),
            Step::MemslotPublish { generation } => write!(f, "memslots of generation {generation} published"),
            Step::MemslotSynchronized => f.write_str("memslot swap: SRCU readers of the old set done"),
            Step::MemslotGeneration { generation } => {
                write!(f, "memslots: final generation {generation} (update no longer in progress)")
            }
            Step::ZapGfnRange { start, end, flush } => {
                write!(f, "zap_gfn_range {start:#x}..{end:#x}, flushed: {flush}")
            }
            Step::FlushRange { start, end } => write!(f, "flush remote TLBs for gfns {start:#x}..{end:#x}"),
            Step::Prefetch { gfn, pfn } => write!(f, "prefetch gfn {gfn:#x} -> pfn {pfn:#x}"),
            Step::PrefetchSkipped { in_progress } => {
                write!(f, "prefetch skipped: {in_progress} invalidation(s) in progress")
            }
            Step::PrefaultTryAgain { gfn } => {
                write!(f, "prefault of gfn {gfn:#x}: memslot invalid, try again")
            }
            Step::Age { young, flush } => write!(f, "aging: young {young}, flushed {flush}"),
            Step::SpteBits { pfn, accessed, dirty } => {
                write!(
                    f,
                    "old SPTE bits of pfn {pfn:#x} to the primary MMU: accessed {accessed}, dirty {dirty}"
                )
            }
            Step::MapUpdate { gfn, flush } => write!(f, "map gfn {gfn:#x} over a leaf, flushed: {flush}"),
            Step::WalkBegin => f.write_str("lockless walk begins"),
            Step::WalkEnd => f.write_str("lockless walk ends"),
            Step::GuestEnter { requests: false } => f.write_str("enters the guest"),
            Step::GuestEnter { requests: true } => {
                f.write_str("sees pending requests or a kick, does not enter")
            }
            Step::GuestExit => f.write_str("exits the guest"),
            Step::Request { request } => write!(f, "request bit {request} set"),
            Step::Kick { cpu: Some(cpu), ipi } => write!(f, "kick cpu{}: IPI needed: {ipi}", cpu.index()),
            Step::Kick { cpu: None, ipi } => write!(f, "kick (vCPU not loaded): IPI needed: {ipi}"),
            Step::IpiAndWait { targets } => {
                f.write_str("IPI and wait for")?;
                for cpu in targets.iter() {
                    write!(f, " cpu{}", cpu.index())?;
                }
                Ok(())
            }
            Step::ZapCommit { pages } => write!(f, "{pages} table page(s) freed after the flush"),
            Step::EpochDefer { pages } => write!(f, "{pages} table page(s) deferred to the epoch collector"),
            Step::FaultSlot { gfn, slot, invalid } => {
                write!(f, "gfn {gfn:#x} in memslot {slot} (invalid: {invalid})")
            }
            Step::FaultResolved { gfn, pfn } => write!(f, "gfn {gfn:#x} resolves to pfn {pfn:#x}"),
            Step::FaultInstall { gfn, pfn } => write!(f, "install SPTE gfn {gfn:#x} -> pfn {pfn:#x}"),
        }
    }
}
