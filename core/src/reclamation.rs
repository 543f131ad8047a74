//! How a [`ReferenceMmu`](crate::ReferenceMmu) frees the table pages its zaps unlink, chosen
//! once, in its type.
//!
//! P5 has two ways to free a table page that lockless walkers may still be reading, and each
//! protects a different kind of walker:
//!
//! | scheme | a zap frees an unlinked table after | walkers it waits for | KVM |
//! |---|---|---|---|
//! | [`IpiReclamation`] | a remote TLB flush that waits for every vCPU outside guest mode ([`crate::walk`]) | vCPUs in guest mode or in a [`LocklessWalk`](crate::LocklessWalk) | the shadow MMU: `kvm_mmu_commit_zap_page` |
//! | [`EpochReclamation`] | that flush, *and* a grace period of the MMU's epoch domain ([`crate::epoch`]) | the above, and every [`EpochWalk`](crate::EpochWalk) pin of the domain | the TDP MMU: `call_rcu` after the flush |
//!
//! An epoch pin is only a promise if **every** zap of the MMU honours it: one IPI-way free
//! (which waits for vCPUs, not for pins) while an epoch walker reads the table is a use after
//! free. The walker and the zapper are usually different code (a notifier's lockless ager, a
//! memslot deletion), so the choice cannot be left to each call site. It is a type parameter
//! of the MMU instead:
//!
//! * `ReferenceMmu<…, IpiReclamation>` (the default) has [`zap_ipi`](crate::ReferenceMmu::zap_ipi)
//!   and no epoch domain at all: no [`EpochWalk`](crate::EpochWalk) can cover one of its walks,
//!   and it has no lockless aging;
//! * `ReferenceMmu<…, EpochReclamation>` has [`zap_epoch`](crate::ReferenceMmu::zap_epoch), its
//!   [`reclaimer`](crate::ReferenceMmu::reclaimer) to pin,
//!   [`age_lockless`](crate::ReferenceMmu::age_lockless), and a notifier implementation
//!   ([`SecondaryMmu`](crate::SecondaryMmu)) that zaps the epoch way and ages without
//!   `mmu_lock`; it has no `zap_ipi`.
//!
//! An epoch pin never counts as a walk of an IPI-way MMU, whatever domain it pins:
//!
//! ```
//! use mmusync::{BoxAlloc, EpochReclaimer, Error, Gfn, ReferenceMmu, StdHal, Vcpu};
//!
//! let domain = EpochReclaimer::new(); // some epoch domain (here, this process's first)
//! let vcpus = [Vcpu::new(StdHal)];
//! let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus)?;
//! let pin = domain.register();
//! assert_eq!(mmu.walk(&pin.walk_begin(), Gfn(3)), Err(Error::Foreign));
//! # Ok::<(), Error>(())
//! ```
//!
//! Mixing the two on one MMU is a compile error, not a runtime check:
//!
//! ```compile_fail,E0599
//! use mmusync::{BoxAlloc, EpochReclamation, Gfn, GfnRange, MmuLock, ReferenceMmu, StdHal, Vcpu};
//!
//! let vcpus = [Vcpu::new(StdHal)];
//! let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8, EpochReclamation> =
//!     ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
//! let lock = MmuLock::<StdHal>::new();
//! // error[E0599]: an epoch-way MMU has no `zap_ipi`.
//! mmu.zap_ipi(&lock.write(), GfnRange::new(Gfn(0), Gfn(8)).unwrap());
//! ```
//!
//! ```compile_fail,E0599
//! use mmusync::{BoxAlloc, ReferenceMmu, StdHal, Vcpu};
//!
//! let vcpus = [Vcpu::new(StdHal)];
//! let mmu: ReferenceMmu<'_, StdHal, BoxAlloc, 2, 8> = ReferenceMmu::new(StdHal, BoxAlloc, &vcpus).unwrap();
//! // error[E0599]: an IPI-way MMU has no epoch domain to pin.
//! let pin = mmu.reclaimer().register();
//! ```

use crate::epoch::EpochReclaimer;
use core::fmt;

mod sealed {
    pub trait Sealed {}
}

/// The scheme by which a [`ReferenceMmu`](crate::ReferenceMmu) frees unlinked table pages
/// (see the [module docs](self)). Sealed: the two schemes are [`IpiReclamation`] and
/// [`EpochReclamation`].
pub trait Reclamation: sealed::Sealed + fmt::Debug + Send + Sync {
    /// The scheme's state for a new MMU.
    #[doc(hidden)]
    fn new() -> Self;

    /// The id of the epoch domain whose pins the MMU's frees wait for, if any.
    #[doc(hidden)]
    fn epoch_domain(&self) -> Option<u64>;
}

/// Tables are freed after a remote TLB flush that waits for the MMU's vCPUs (the IPI/vCPU-mode
/// scheme): lockless walkers are vCPUs in a [`LocklessWalk`](crate::LocklessWalk).
#[derive(Debug, Default)]
pub struct IpiReclamation;

impl sealed::Sealed for IpiReclamation {}

impl Reclamation for IpiReclamation {
    fn new() -> Self {
        IpiReclamation
    }

    fn epoch_domain(&self) -> Option<u64> {
        None
    }
}

/// Tables are freed after that flush and a grace period of the MMU's own epoch domain (the
/// RCU scheme): lockless walkers may also pin the domain ([`EpochWalk`](crate::EpochWalk)).
#[derive(Debug, Default)]
pub struct EpochReclamation {
    reclaimer: EpochReclaimer,
}

impl EpochReclamation {
    /// The epoch domain of the MMU's tables.
    pub(crate) fn reclaimer(&self) -> &EpochReclaimer {
        &self.reclaimer
    }
}

impl sealed::Sealed for EpochReclamation {}

impl Reclamation for EpochReclamation {
    fn new() -> Self {
        EpochReclamation { reclaimer: EpochReclaimer::new() }
    }

    fn epoch_domain(&self) -> Option<u64> {
        Some(self.reclaimer.id())
    }
}
