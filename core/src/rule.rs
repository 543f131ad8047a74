//! Named locks, checks and ordering steps that a mutant may break.
//!
//! Barriers are not the only things a protocol needs: a check that is skipped, a lock that is
//! not taken, or two steps done in the wrong order break it just as surely. Each such point
//! has a [`Rule`] name. Protocol code asks [`Hal::keeps`](crate::hal::Hal::keeps) whether to
//! follow the rule; production backends answer `true` at compile time, model backends can
//! break one rule at run time.

use crate::barrier::Protocol;
use core::fmt;

macro_rules! rules {
    ($( $(#[doc = $doc:literal])* $name:ident = ($proto:ident, $kvm:literal) ),* $(,)?) => {
        /// A lock, check or ordering step of P1–P5 that a mutant can break.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Rule {
            $( $(#[doc = $doc])* $name, )*
        }

        impl Rule {
            /// All rules, in declaration order.
            pub const ALL: &'static [Rule] = &[$(Rule::$name),*];

            /// The protocol it belongs to.
            pub const fn protocol(self) -> Protocol {
                match self { $(Rule::$name => Protocol::$proto,)* }
            }

            /// The KVM code that keeps this rule.
            pub const fn kvm(self) -> &'static str {
                match self { $(Rule::$name => $kvm,)* }
            }

            /// The variant's name.
            pub const fn name(self) -> &'static str {
                match self { $(Rule::$name => stringify!($name),)* }
            }
        }
    };
}

rules! {
    /// The locked retry check reads `in_progress` (an open invalidation forces a retry).
    RetryChecksInProgress = (P2Retry, "mmu_invalidate_retry: if (kvm->mmu_invalidate_in_progress) return 1"),
    /// The locked retry check compares `seq` with the snapshot.
    RetryChecksSeq = (P2Retry, "mmu_invalidate_retry: if (kvm->mmu_invalidate_seq != mmu_seq) return 1"),
    /// The gfn-ranged check retries when the gfn lies in the merged range.
    RetryGfnChecksRange = (P2Retry, "mmu_invalidate_retry_gfn: gfn >= range_start && gfn < range_end"),
    /// `range_add` widens the range by min/max union instead of overwriting it.
    RangeAddMerges = (P1Invalidation, "kvm_mmu_invalidate_range_add: min/max union"),
    /// The translation cache's check reads the active-invalidation count.
    CacheChecksActiveCount = (P2Retry, "mmu_notifier_retry_cache: if (kvm->mn_active_invalidate_count) return true"),
    /// A translation-cache refresh clears `valid` before it drops the cache lock to resolve.
    CacheInvalidatesBeforeResolve = (P2Retry, "hva_to_pfn_retry: gpc->valid = false before write_unlock"),
    /// A VM's translation cache is on the VM's cache list whenever it is active: activation
    /// lists it before marking it active, deactivation unlists it after marking it inactive.
    CacheListedWhileActive = (P2Retry, "kvm_gpc_activate: list_add before gpc->active = true; kvm_gpc_deactivate: list_del after gpc->active = false"),
    /// The memslot swap waits until no invalidation is active before it publishes.
    MemslotSwapWaitsForInvalidations = (P3Memslots, "kvm_swap_active_memslots: while (kvm->mn_active_invalidate_count) wait"),
    /// The memslot swap publishes while still holding `mn_invalidate_lock`.
    MemslotPublishUnderLock = (P3Memslots, "kvm_swap_active_memslots: rcu_assign_pointer under mn_invalidate_lock"),
    /// The memslot update waits for SRCU readers before reusing the old set.
    MemslotSwapSynchronizesSrcu = (P3Memslots, "kvm_swap_active_memslots: synchronize_srcu_expedited"),
    /// Marking a page unsync re-checks `sp->unsync` under `mmu_unsync_pages_lock`.
    UnsyncMarkUnderLock = (P4Unsync, "mmu_try_to_unsync_pages: spin_lock(mmu_unsync_pages_lock) + recheck"),
    /// `kvm_mmu_sync_roots` syncs when `is_unsync_root` says so.
    SyncRootsChecksFlags = (P4Unsync, "kvm_mmu_sync_roots: if (!is_unsync_root(root)) return"),
    /// A lockless walk disables interrupts, so the freeing side's IPI waits for it.
    WalkDisablesInterrupts = (P5Walks, "walk_shadow_page_lockless_begin: local_irq_disable()"),
    /// A flush with WAIT IPIs every vCPU not OUTSIDE (READING_SHADOW_PAGE_TABLES included),
    /// not only those IN_GUEST_MODE.
    FlushWaitsForReaders = (P5Walks, "kvm_request_needs_ipi: mode != OUTSIDE_GUEST_MODE for WAIT requests"),
    /// Table pages are freed only after the remote TLB flush that follows their unlink.
    FreeAfterFlush = (P5Walks, "kvm_mmu_commit_zap_page: kvm_flush_remote_tlbs before kvm_mmu_free_shadow_page"),
    /// Epoch/RCU reclamation: flush TLBs before dropping the read-side protection.
    FlushBeforeUnpin = (P5Walks, "tdp_mmu_iter_cond_resched: flush before rcu_read_unlock"),
    /// The vCPU re-checks requests after publishing IN_GUEST_MODE, before entry.
    EntryChecksRequests = (P5Walks, "vcpu_enter_guest: kvm_request_pending() after mode = IN_GUEST_MODE"),
    /// The fault path re-checks for invalidations under `mmu_lock` before installing.
    FaultRetriesUnderLock = (P2Retry, "is_page_fault_stale: mmu_invalidate_retry_gfn under mmu_lock"),
    /// A zap of a gfn range that is not an MMU-notifier event (G1–G4) opens an invalidation
    /// around the zap (`begin`/`range_add` before, `end` after, in the same `mmu_lock`
    /// critical section), so that faults racing it retry.
    ZapGfnRangeInvalidates = (P1Invalidation, "kvm_zap_gfn_range: kvm_mmu_invalidate_begin + range_add before the zap, kvm_mmu_invalidate_end after"),
    /// A memslot swap publishes the new set with the generation's update-in-progress bit set
    /// and gives it its final generation only after the SRCU synchronize (W1, W8).
    MemslotGenerationInProgress = (P3Memslots, "kvm_swap_active_memslots: generation | KVM_MEMSLOT_GEN_UPDATE_IN_PROGRESS before rcu_assign_pointer, final generation after synchronize_srcu_expedited"),
    /// Every update under `mmu_lock` of a leaf the hardware may change (accessed/dirty bits)
    /// is an atomic exchange or AND that returns the old bits (D2, A2), which go to the primary
    /// MMU (D3).
    SpteUpdateIsAtomic = (P5Walks, "mmu_spte_update_no_track / mmu_spte_clear_track_bits: xchg when spte_has_volatile_bits(), kvm_set_pfn_dirty/accessed from the old SPTE; kvm_age_rmap: atomic clear_bit of the accessed bit"),
    /// The lockless ager (A2 without `mmu_lock`) walks the tables pinned in the epoch domain that
    /// defers their frees.
    LocklessAgingPinsEpoch = (P5Walks, "kvm_tdp_mmu_age_gfn_range: rcu_read_lock() around the lockless walk (table pages are freed by call_rcu)"),
    /// `clear_flush_young` flushes remote TLBs when it cleared an accessed bit (A3).
    ClearFlushYoungFlushes = (P1Invalidation, "kvm_mmu_notifier_clear_flush_young: kvm_handle_hva_range(..., flush_on_ret = true) -> kvm_flush_remote_tlbs when young"),
    /// The prefetch after a fault (F15) is skipped while any invalidation is in progress.
    PrefetchSkipsWhileInvalidating = (P2Retry, "direct_pte_prefetch: if (unlikely(vcpu->kvm->mmu_invalidate_in_progress)) return"),
    /// `ReferenceMmu::prefault` returns [`Error::TryAgain`](crate::Error::TryAgain) when the
    /// gfn's memslot is invalid, instead of retrying inside its SRCU read section (F16).
    PrefaultReturnsOnInvalidSlot = (P3Memslots, "kvm_mmu_faultin_pfn: KVM_MEMSLOT_INVALID -> -EAGAIN for a prefault (fault->prefetch), not RET_PF_RETRY inside kvm->srcu"),
    /// `ReferenceMmu::map` over a present writable leaf that the new entry makes read-only (or
    /// replaces) flushes remote TLBs before it returns (M2).
    MapFlushesLostWrite = (P5Walks, "mmu_set_spte: mmu_spte_update() says flush (a writable SPTE lost W) -> kvm_flush_remote_tlbs_gfn"),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
