//! The executor abstraction: what a scenario needs from whoever runs it.
//!
//! An executor runs a scenario's roles concurrently, each as one CPU (role `i` is CPU `i`, as
//! [`Cpus::current_cpu`](mmusync::hal::Cpus::current_cpu) reports it), records the protocol
//! steps the roles announce (for counterexamples), and lets a role yield inside a wait loop.
//! That is all: atomics, fences, locks, interrupts and IPIs come from the HAL, not from here.
//!
//! Invariant failures go through [`violated`], which panics with a message that starts with
//! [`VIOLATION`]; executors tell a real kill (the scenario's own assertion) from anything else
//! (a deadlock, an unrelated panic) by that prefix.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

/// The prefix of every invariant-violation panic message.
pub const VIOLATION: &str = "invariant violated";

/// One role of a scenario: a name for traces and its body.
pub struct Role {
    /// Short name, such as `"vcpu0"` or `"invalidator"`.
    pub name: &'static str,
    /// What the role does. Runs once, on its own CPU.
    pub body: Box<dyn FnOnce() + Send + 'static>,
}

impl Role {
    /// A role named `name` running `body`.
    pub fn new(name: &'static str, body: impl FnOnce() + Send + 'static) -> Self {
        Role { name, body: Box::new(body) }
    }
}

/// Runs roles and records steps.
///
/// Implementations: the loom executor (module `loom`, in `--cfg loom` builds); a shuttle executor, a real-thread
/// executor and a KVM-guest executor can be added without touching the scenarios.
pub trait Executor: Clone + Send + Sync + 'static {
    /// The most roles one scenario may have (loom: 4 spawned threads plus the main thread).
    const MAX_ROLES: usize;

    /// Runs every role concurrently, role `i` as CPU `i`, and returns when all have finished.
    /// A role that panics makes the whole run fail with that panic.
    fn run(&self, roles: Vec<Role>);

    /// Records a protocol step of the current role for the counterexample trace, such as
    /// `"GUP: host PTE -> pfn 1"`. Cheap enough to call on every step; an executor that keeps
    /// no trace ignores it.
    fn step(&self, what: fmt::Arguments<'_>);

    /// Lets the other roles run (inside a wait loop that the HAL's locks do not cover).
    fn yield_now(&self);
}

/// The invariants the scenarios assert, named as the scorecard prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// I2.1 / I1.6: an SPTE maps a page the primary MMU has freed.
    SpteMapsFreedPage,
    /// I1.3 / I3.1: an invalidation's start and end did not balance `in_progress`.
    InProgressUnbalanced,
    /// I3.2: an SPTE maps a gfn of a memslot that was deleted.
    SpteMapsDeletedSlot,
    /// I2.gpc: a valid translation cache maps a page the primary MMU has freed, or a page its
    /// hva never mapped.
    CacheStale,
    /// I4.1 / I4.3: the unsync bookkeeping is inconsistent (a count that is not the bitmap's
    /// popcount, an unsync page whose parent bit is clear).
    UnsyncBookkeeping,
    /// I4.2: the guest used a stale shadow translation after its TLB flush (missed sync).
    MissedSync,
    /// I5.1 / I5.4: a software or hardware walker read a freed table page.
    WalkerReadFreedTable,
    /// I5.2: a vCPU entered the guest, or ran in it, with a stale TLB after a flush returned.
    StaleTlbAfterFlush,
    /// The request contract (Q1 in core/docs/protocols.md): a vCPU handled a request without seeing what the
    /// requester wrote before making it.
    StaleRequestPayload,
    /// I3.4: a lookup cached by memslot generation is accepted by a generation whose layout
    /// answers otherwise.
    StaleGenerationCache,
    /// I5.6: the guest wrote through a writable translation after the update that
    /// write-protected it returned.
    WriteAfterWriteProtect,
    /// I5.7: the guest wrote a page, and no dirty bit (in an SPTE or handed to the primary
    /// MMU) says so.
    DirtyBitLost,
    /// I5.8: the guest accessed a page after `clear_flush_young` aged it without setting its
    /// accessed bit again.
    AccessNotRecorded,
    /// I3.2: an SRCU reader used data that an updater freed after `synchronize` returned, while
    /// the reader's section was still open.
    SrcuReaderUsesFreedData,
    /// I5.9: a walker without `mmu_lock` followed a link to a table page and read entries from
    /// before `map` initialized the page (for a recycled page, its previous life's).
    WalkerReadUninitializedTable,
}

impl Invariant {
    /// What the invariant forbids, in the words of core/docs/protocols.md.
    pub const fn description(self) -> &'static str {
        match self {
            Invariant::SpteMapsFreedPage => "SPTE maps a freed page",
            Invariant::InProgressUnbalanced => "in_progress unbalanced",
            Invariant::SpteMapsDeletedSlot => "SPTE maps a gfn of a deleted memslot",
            Invariant::CacheStale => "valid translation cache maps a freed page or another hva's page",
            Invariant::UnsyncBookkeeping => "unsync bookkeeping inconsistent (unsync_children, bitmap)",
            Invariant::MissedSync => "missed sync: guest used a stale shadow PTE after its TLB flush",
            Invariant::WalkerReadFreedTable => "walker read a freed table page",
            Invariant::StaleTlbAfterFlush => "vCPU used a stale TLB entry after the flush returned",
            Invariant::StaleRequestPayload => {
                "vCPU handled a request without seeing the data written before it"
            }
            Invariant::StaleGenerationCache => {
                "a generation-stamped memslot lookup answers for another layout"
            }
            Invariant::WriteAfterWriteProtect => "guest wrote a page after its write protection returned",
            Invariant::DirtyBitLost => "a page the guest wrote is not marked dirty anywhere",
            Invariant::AccessNotRecorded => "guest accessed an aged page without setting its accessed bit",
            Invariant::SrcuReaderUsesFreedData => "an SRCU reader used data freed after synchronize returned",
            Invariant::WalkerReadUninitializedTable => {
                "a lockless walker read a table page's entries from before its initialization"
            }
        }
    }
}

impl fmt::Display for Invariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

/// Fails the scenario: the invariant `inv` does not hold. `detail` says what was observed.
#[track_caller]
pub fn violated(inv: Invariant, detail: fmt::Arguments<'_>) -> ! {
    panic!("{VIOLATION}: {inv}: {detail}")
}
