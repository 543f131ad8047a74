//! The `std` backend: real threads on the host CPU.
//!
//! Fences are the portable C11 fences (`core::sync::atomic::fence`), locks are parking_lot's
//! raw locks.

use super::Hal;
use crate::barrier::FenceKind;
use core::sync::atomic::{self, Ordering};

/// The `std` backend's memory half: C11 fences, `core` atomics, parking_lot locks.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdHal;

// SAFETY: core atomics and C11 fences give exactly the C11 guarantees; `barrier` and `keeps`
// keep their defaults; parking_lot's raw locks keep the lock_api contract; `spin_hint` returns.
unsafe impl Hal for StdHal {
    type AtomicU64 = atomic::AtomicU64;
    type AtomicUsize = atomic::AtomicUsize;
    type AtomicBool = atomic::AtomicBool;
    type RawRwLock = parking_lot::RawRwLock;
    type RawMutex = parking_lot::RawMutex;

    #[inline(always)]
    fn fence(&self, kind: FenceKind) {
        atomic::fence(match kind {
            FenceKind::Wmb | FenceKind::Release => Ordering::Release,
            FenceKind::Rmb | FenceKind::Acquire => Ordering::Acquire,
            FenceKind::Mb => Ordering::SeqCst,
        })
    }

    #[inline(always)]
    fn spin_hint(&self) {
        // Two cores and more threads than cores are the normal case in tests: yield rather
        // than burn the time slice of the thread we wait for.
        std::thread::yield_now()
    }
}
