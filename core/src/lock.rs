//! Safe lock wrappers over the HAL's raw locks, with guards that prove a lock is held.
//!
//! Protocol steps that KVM runs "under `mmu_lock`" take a guard by reference
//! ([`MmuLocked`] for either mode, [`MmuWriteGuard`] for the write side), so they cannot be
//! called without the lock. Guards remember which lock they hold, and steps that must run
//! under *their* object's lock check it and return [`Error::Foreign`](crate::Error::Foreign).

use crate::hal::Hal;
use core::fmt;

/// `kvm->mmu_lock`: the reader-writer lock that serializes changes to the secondary MMU.
pub struct MmuLock<H: Hal> {
    raw: lock_api::RwLock<H::RawRwLock, ()>,
}

impl<H: Hal> fmt::Debug for MmuLock<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmuLock").finish_non_exhaustive()
    }
}

impl<H: Hal> Default for MmuLock<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: Hal> MmuLock<H> {
    /// An unlocked lock.
    pub fn new() -> Self {
        MmuLock { raw: lock_api::RwLock::new(()) }
    }

    /// Takes the lock for write (`KVM_MMU_LOCK`, `write_lock(&kvm->mmu_lock)`).
    pub fn write(&self) -> MmuWriteGuard<'_, H> {
        MmuWriteGuard { _guard: self.raw.write(), lock: self }
    }

    /// Takes the lock for read (`read_lock(&kvm->mmu_lock)`, the TDP MMU's fault path).
    pub fn read(&self) -> MmuReadGuard<'_, H> {
        MmuReadGuard { _guard: self.raw.read(), lock: self }
    }

    pub(crate) fn id(&self) -> *const () {
        self as *const Self as *const ()
    }
}

/// `mmu_lock` held for write.
#[must_use = "the lock is released when the guard drops"]
pub struct MmuWriteGuard<'a, H: Hal> {
    _guard: lock_api::RwLockWriteGuard<'a, H::RawRwLock, ()>,
    lock: &'a MmuLock<H>,
}

impl<H: Hal> fmt::Debug for MmuWriteGuard<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmuWriteGuard").field("lock", &(self.lock as *const MmuLock<H>)).finish()
    }
}

/// `mmu_lock` held for read.
#[must_use = "the lock is released when the guard drops"]
pub struct MmuReadGuard<'a, H: Hal> {
    _guard: lock_api::RwLockReadGuard<'a, H::RawRwLock, ()>,
    lock: &'a MmuLock<H>,
}

impl<H: Hal> fmt::Debug for MmuReadGuard<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmuReadGuard").field("lock", &(self.lock as *const MmuLock<H>)).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// Proof that `mmu_lock` is held, in either mode.
pub trait MmuLocked: sealed::Sealed {
    /// Identity of the lock held.
    #[doc(hidden)]
    fn lock_id(&self) -> *const ();
}

impl<H: Hal> sealed::Sealed for MmuWriteGuard<'_, H> {}
impl<H: Hal> sealed::Sealed for MmuReadGuard<'_, H> {}

impl<H: Hal> MmuLocked for MmuWriteGuard<'_, H> {
    fn lock_id(&self) -> *const () {
        self.lock.id()
    }
}

impl<H: Hal> MmuLocked for MmuReadGuard<'_, H> {
    fn lock_id(&self) -> *const () {
        self.lock.id()
    }
}

/// A spinlock protecting a `T` (`spinlock_t` in KVM).
pub type SpinLock<H, T> = lock_api::Mutex<<H as Hal>::RawMutex, T>;
/// A held [`SpinLock`].
pub type SpinGuard<'a, H, T> = lock_api::MutexGuard<'a, <H as Hal>::RawMutex, T>;
