//! Named ordering points.
//!
//! Every barrier the protocols need is one value of [`Barrier`]. Each value knows its
//! [`FenceKind`], the barrier(s) it pairs with, the protocol it belongs to, and the KVM code it
//! stands for. Protocol code never issues a fence directly: it calls
//! [`Hal::barrier`](crate::hal::Hal::barrier) with a name. Production backends turn the name
//! into the fence of its kind at compile time; model backends can drop one named barrier at run
//! time, which makes every barrier a mutant without a rebuild.
//!
//! The pairing table in the crate documentation is generated from this enum by
//! [`pairing_table`], and a test compares it with `docs/barriers.md`, so the two cannot drift.
//!
//! Notation follows [`crate::protocols`]: `wmb` = `smp_wmb` (store→store), `rmb` = `smp_rmb`
//! (load→load), `mb` = `smp_mb` (full). Under C11 a `wmb` is a release fence, an `rmb` an
//! acquire fence and an `mb` a `SeqCst` fence.

use core::fmt;

/// What kind of fence a named barrier is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FenceKind {
    /// `smp_wmb()`: earlier stores before later stores. C11: a release fence.
    Wmb,
    /// `smp_rmb()`: earlier loads before later loads. C11: an acquire fence.
    Rmb,
    /// `smp_mb()`: a full barrier, including store→load. C11: a `SeqCst` fence.
    Mb,
    /// `smp_store_release` (or a release fence before a store). C11: a release fence.
    Release,
    /// `smp_load_acquire` (or an acquire fence after a load). C11: an acquire fence.
    Acquire,
}

impl FenceKind {
    /// The kernel spelling of this kind.
    pub const fn kernel_name(self) -> &'static str {
        match self {
            FenceKind::Wmb => "smp_wmb",
            FenceKind::Rmb => "smp_rmb",
            FenceKind::Mb => "smp_mb",
            FenceKind::Release => "release",
            FenceKind::Acquire => "acquire",
        }
    }
}

/// The protocol a barrier, rule or scenario belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// P1: invalidate_range_start/end.
    P1Invalidation,
    /// P2: fault-side retry checks and the translation cache.
    P2Retry,
    /// P3: memslot updates and SRCU.
    P3Memslots,
    /// P4: unsync shadow pages.
    P4Unsync,
    /// P5: lockless walks and freeing of table pages.
    P5Walks,
}

impl Protocol {
    /// Every protocol, in order.
    pub const ALL: [Protocol; 5] = [
        Protocol::P1Invalidation,
        Protocol::P2Retry,
        Protocol::P3Memslots,
        Protocol::P4Unsync,
        Protocol::P5Walks,
    ];

    /// Short name, such as `P1`.
    pub const fn short(self) -> &'static str {
        match self {
            Protocol::P1Invalidation => "P1",
            Protocol::P2Retry => "P2",
            Protocol::P3Memslots => "P3",
            Protocol::P4Unsync => "P4",
            Protocol::P5Walks => "P5",
        }
    }
}

macro_rules! barriers {
    ($(
        $(#[doc = $doc:literal])*
        $name:ident = {
            kind: $kind:ident,
            protocol: $proto:ident,
            pairs: [$($pair:ident),* $(,)?],
            kvm: $kvm:literal,
        }
    ),* $(,)?) => {
        /// Every ordering point of P1–P5, by name.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Barrier {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Barrier {
            /// All named barriers, in declaration order.
            pub const ALL: &'static [Barrier] = &[$(Barrier::$name),*];

            /// The fence this barrier is.
            pub const fn kind(self) -> FenceKind {
                match self { $(Barrier::$name => FenceKind::$kind,)* }
            }

            /// The protocol it belongs to.
            pub const fn protocol(self) -> Protocol {
                match self { $(Barrier::$name => Protocol::$proto,)* }
            }

            /// The barriers it pairs with: the other side of its message-passing or
            /// store-buffering pattern.
            pub const fn pairs_with(self) -> &'static [Barrier] {
                match self { $(Barrier::$name => &[$(Barrier::$pair),*],)* }
            }

            /// The KVM code it stands for ([barrier tag](crate::protocols#barrier-tags) and function).
            pub const fn kvm(self) -> &'static str {
                match self { $(Barrier::$name => $kvm,)* }
            }

            /// The variant's name.
            pub const fn name(self) -> &'static str {
                match self { $(Barrier::$name => stringify!($name),)* }
            }
        }
    };
}

barriers! {
    /// P1, writer side, **C11 only**. In `invalidate_range_end`, before `seq++`: orders the
    /// primary MMU's PTE zap (done between start and end) before the new sequence number.
    /// Without it a fault could snapshot the *new* seq and still read the *old* host PTE
    /// (MP-2), and its later retry check would pass with a stale pfn. LKMM gets this order from
    /// `pte_unmap_unlock` (release) followed by taking `mmu_lock`; in C11 a release followed by
    /// an unrelated acquire orders nothing for a reader that synchronizes through `seq`, so the
    /// crate adds the release fence. Pairs with the fault's snapshot rmb.
    InvalidateEndZapBeforeSeq = {
        kind: Release,
        protocol: P1Invalidation,
        pairs: [FaultSnapshotBeforeResolve, CacheSnapshotBeforeResolve],
        kvm: "none in KVM (LKMM lock chain, MP-2); kvm_mmu_invalidate_end before seq++",
    },
    /// P1, writer side: `seq++` before `in_progress--` ([B1-end-wmb]). Without it a lockless
    /// checker can see the count drop to zero and still read the old seq (MP-1).
    InvalidateEndSeqBeforeCount = {
        kind: Wmb,
        protocol: P1Invalidation,
        pairs: [RetryCountBeforeSeq],
        kvm: "[B1-end-wmb] kvm_mmu_invalidate_end: smp_wmb()",
    },
    /// P1, writer side, **C11 only**: `seq++` before `mn_active_invalidate_count--` (E1 → E2),
    /// issued *after* taking `mn_invalidate_lock`. KVM gets this from the `mmu_lock` release
    /// and the `mn_invalidate_lock` acquire (LKMM's locks are cumulative); in C11 neither
    /// orders an earlier invalidation's `seq++` before *this* invalidation's relaxed decrement
    /// for a cache refresher that reads the count holding only its own lock. Without it (or
    /// with it before the lock is taken) an invalidation that hits no memslot can take the
    /// count to zero after one that bumped `seq`, and a refresher that reads that zero may
    /// read the old seq and validate a stale pfn (`cache-refresh-vs-two-invalidations`).
    InvalidateEndSeqBeforeActiveCount = {
        kind: Release,
        protocol: P1Invalidation,
        pairs: [CacheCountBeforeSeq],
        kvm: "none in KVM (LKMM lock chain E1 -> E2); kvm_mmu_notifier_invalidate_range_end",
    },
    /// P2, fault side: the seq snapshot before every read that resolves the pfn
    /// ([B2-fault-rmb]). Without it the host-PTE read can be satisfied before the snapshot, and
    /// a whole invalidation can hide between them (MP-2).
    FaultSnapshotBeforeResolve = {
        kind: Rmb,
        protocol: P2Retry,
        pairs: [InvalidateEndZapBeforeSeq],
        kvm: "[B2-fault-rmb] kvm_faultin_pfn: smp_rmb() after mmu_seq = mmu_invalidate_seq",
    },
    /// P2, checker side: read `in_progress` before `seq` ([B2-retry-rmb]). Needed when the
    /// check runs without `mmu_lock` (PowerPC Book3S HV); without it the checker can read the
    /// old seq and the decremented count (MP-1).
    RetryCountBeforeSeq = {
        kind: Rmb,
        protocol: P2Retry,
        pairs: [InvalidateEndSeqBeforeCount],
        kvm: "[B2-retry-rmb] mmu_invalidate_retry: smp_rmb()",
    },
    /// P2, translation cache: the seq snapshot before resolving the pfn ([B2-gpc-rmb1]).
    CacheSnapshotBeforeResolve = {
        kind: Rmb,
        protocol: P2Retry,
        pairs: [InvalidateEndZapBeforeSeq],
        kvm: "[B2-gpc-rmb1] hva_to_pfn_retry: smp_rmb() after mmu_seq",
    },
    /// P2, translation cache: read the active-invalidation count before seq ([B2-gpc-rmb2]).
    CacheCountBeforeSeq = {
        kind: Rmb,
        protocol: P2Retry,
        pairs: [InvalidateEndSeqBeforeActiveCount],
        kvm: "[B2-gpc-rmb2] mmu_notifier_retry_cache: smp_rmb()",
    },
    /// P3: publish the new memslot set (`rcu_assign_pointer`). Without it a reader can see the
    /// new active index and stale slot contents.
    MemslotPublish = {
        kind: Release,
        protocol: P3Memslots,
        pairs: [MemslotDereference],
        kvm: "kvm_swap_active_memslots: rcu_assign_pointer(kvm->memslots[as_id], slots)",
    },
    /// P3: read the active memslot set (`srcu_dereference`). LKMM orders this by the address
    /// dependency; C11 needs an acquire.
    MemslotDereference = {
        kind: Acquire,
        protocol: P3Memslots,
        pairs: [MemslotPublish],
        kvm: "__kvm_memslots: srcu_dereference_check (address dependency)",
    },
    /// P3, SRCU reader: the counter increment before the read-side critical section. Without
    /// it the reader's loads can pass the increment and a concurrent synchronize can miss it
    /// (store buffering with the updater's scan).
    SrcuReadLockMb = {
        kind: Mb,
        protocol: P3Memslots,
        pairs: [SrcuSyncBeforeScan],
        kvm: "__srcu_read_lock: smp_mb() /* B */",
    },
    /// P3, SRCU reader: the critical section before the counter decrement. Without it the
    /// updater can see the reader gone while its loads are still pending.
    SrcuReadUnlockMb = {
        kind: Mb,
        protocol: P3Memslots,
        pairs: [SrcuSyncAfterScan],
        kvm: "__srcu_read_unlock: smp_mb() /* C */",
    },
    /// P3, SRCU updater: the update (publish) before scanning the reader counters.
    SrcuSyncBeforeScan = {
        kind: Mb,
        protocol: P3Memslots,
        pairs: [SrcuReadLockMb],
        kvm: "srcu_readers_active_idx_check: smp_mb() /* A */",
    },
    /// P3, SRCU updater: the scan that saw no readers before what the updater does next
    /// (reuse or free of the old data).
    SrcuSyncAfterScan = {
        kind: Mb,
        protocol: P3Memslots,
        pairs: [SrcuReadUnlockMb],
        kvm: "srcu_readers_active_idx_check: smp_mb() /* D */",
    },
    /// P4, host side: `sp->unsync = 1` (and the parents' bits) before the writable SPTE
    /// ([B4-unsync-wmb]). Without it the guest can write through the SPTE, flush, and find no
    /// unsync flag: a missed sync.
    UnsyncMarkBeforeWritableSpte = {
        kind: Wmb,
        protocol: P4Unsync,
        pairs: [SyncRootSpteBeforeFlags],
        kvm: "[B4-unsync-wmb] mmu_try_to_unsync_pages: smp_wmb()",
    },
    /// P4, vCPU side: the hardware walker's read of SPTE.W before the lockless read of the
    /// unsync flags ([B4-sync-rmb]).
    SyncRootSpteBeforeFlags = {
        kind: Rmb,
        protocol: P4Unsync,
        pairs: [UnsyncMarkBeforeWritableSpte],
        kvm: "[B4-sync-rmb] is_unsync_root: smp_rmb()",
    },
    /// P5, walker: `mode = READING_SHADOW_PAGE_TABLES` before the SPTE reads
    /// ([B5-walk-begin-mb]). Store buffering with the zapper: without it the zapper can read
    /// OUTSIDE (no IPI) while the walker reads the unlinked table (SB-walk).
    WalkBeginModeBeforeSpteReads = {
        kind: Mb,
        protocol: P5Walks,
        pairs: [KickRequestBeforeModeRead],
        kvm: "[B5-walk-begin-mb] walk_shadow_page_lockless_begin: smp_store_mb(vcpu->mode, ...)",
    },
    /// P5, walker: the SPTE reads before `mode = OUTSIDE` ([B5-walk-end-rel]). Without it the
    /// zapper can see OUTSIDE and free a page the walker is still reading.
    WalkEndSpteReadsBeforeMode = {
        kind: Release,
        protocol: P5Walks,
        pairs: [KickModeReadBeforeFree],
        kvm: "[B5-walk-end-rel] walk_shadow_page_lockless_end: smp_store_release(vcpu->mode, OUTSIDE)",
    },
    /// P5, requester: the request's payload before `set_bit(request)` ([B5-req-wmb]).
    RequestBeforeSetBit = {
        kind: Wmb,
        protocol: P5Walks,
        pairs: [RequestTestBeforeHandle],
        kvm: "[B5-req-wmb] __kvm_make_request: smp_wmb()",
    },
    /// P5, vCPU: the request bit's read before handling the request.
    RequestTestBeforeHandle = {
        kind: Mb,
        protocol: P5Walks,
        pairs: [RequestBeforeSetBit],
        kvm: "kvm_check_request: smp_mb__after_atomic()",
    },
    /// P5, requester/zapper: page-table changes and the request bit before reading the target's
    /// mode ([B5-req-mb], the barrier `kvm_flush_remote_tlbs` reuses). The zapper side of both
    /// store-buffering pairs, SB-walk and SB-entry.
    KickRequestBeforeModeRead = {
        kind: Mb,
        protocol: P5Walks,
        pairs: [WalkBeginModeBeforeSpteReads, GuestEntryModeBeforeRequests],
        kvm: "[B5-req-mb] kvm_vcpu_exiting_guest_mode: smp_mb__before_atomic() + cmpxchg",
    },
    /// P5, requester/zapper: the mode read (the cmpxchg of `kvm_vcpu_exiting_guest_mode`)
    /// before the caller frees. An `OUTSIDE` stored at the end of a walk or at a VM exit then
    /// puts that walk's or that guest run's table reads before the free (message passing with
    /// `WalkEndSpteReadsBeforeMode` and `GuestExitReadsBeforeMode`). Without it a read of the
    /// table page could return what the free writes: load buffering.
    KickModeReadBeforeFree = {
        kind: Acquire,
        protocol: P5Walks,
        pairs: [WalkEndSpteReadsBeforeMode, GuestExitReadsBeforeMode],
        kvm: "kvm_vcpu_exiting_guest_mode: cmpxchg, fully ordered (its acquire half)",
    },
    /// P5, vCPU entry: `mode = IN_GUEST_MODE` before reading requests and before the hardware
    /// walk ([B5-entry-mb]). Without it the vCPU can miss a TLB-flush request while the
    /// requester reads OUTSIDE and sends no IPI (SB-entry).
    GuestEntryModeBeforeRequests = {
        kind: Mb,
        protocol: P5Walks,
        pairs: [KickRequestBeforeModeRead],
        kvm: "[B5-entry-mb] vcpu_enter_guest: smp_mb__after_srcu_read_unlock()",
    },
    /// P5, VM exit (V6): the guest's table reads (the hardware walker's) before
    /// `mode = OUTSIDE`. Without it a requester can read `OUTSIDE`, send no IPI and free a page
    /// the guest is still reading.
    GuestExitReadsBeforeMode = {
        kind: Release,
        protocol: P5Walks,
        pairs: [KickModeReadBeforeFree],
        kvm: "vcpu_enter_guest: the VM exit (serializing), smp_wmb() and WRITE_ONCE(vcpu->mode, OUTSIDE_GUEST_MODE)",
    },
    /// P5, installer (`map` under `mmu_lock`): a new table page's initialized entries before
    /// the link that publishes it. Without it a lockless walker (an epoch-pinned walk, the
    /// lockless ager) can follow the new link and read what the page held before its
    /// initialization: for a recycled page, a freed table's entries, taken for leaves or links.
    TableLinkPublish = {
        kind: Release,
        protocol: P5Walks,
        pairs: [TableLinkFollow],
        kvm: "tdp_mmu_link_sp: the child's spt initialized, then published by the atomic SPTE cmpxchg",
    },
    /// P5, lockless walker: a table link's load before the reads of the child it names. Without
    /// it the walker (an epoch-pinned walk, the lockless ager, neither holding `mmu_lock`) may
    /// read the child's entries from before `map` initialized the page.
    TableLinkFollow = {
        kind: Acquire,
        protocol: P5Walks,
        pairs: [TableLinkPublish],
        kvm: "tdp_iter_step_down: rcu_dereference(spte_to_child_pt(...)) in lockless walks",
    },
}

impl fmt::Display for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Writes the pairing table (Markdown) that `docs/barriers.md` holds.
///
/// The documentation is generated from [`Barrier`], and a test fails if the committed file
/// differs from this output.
pub fn pairing_table(out: &mut impl fmt::Write) -> fmt::Result {
    writeln!(out, "| barrier | protocol | kind | pairs with | KVM |")?;
    writeln!(out, "|---|---|---|---|---|")?;
    for b in Barrier::ALL {
        write!(out, "| `{}` | {} | {} | ", b.name(), b.protocol().short(), b.kind().kernel_name())?;
        for (i, p) in b.pairs_with().iter().enumerate() {
            if i > 0 {
                write!(out, ", ")?;
            }
            write!(out, "`{}`", p.name())?;
        }
        writeln!(out, " | {} |", b.kvm())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairing_is_symmetric() {
        for b in Barrier::ALL {
            assert!(!b.pairs_with().is_empty(), "{b} pairs with nothing");
            for p in b.pairs_with() {
                assert!(p.pairs_with().contains(b), "{b} names {p}, but {p} does not name {b}");
            }
        }
    }
}
