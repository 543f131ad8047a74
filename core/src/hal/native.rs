//! [`Atomic`] and [`AtomicInt`] for the `core::sync::atomic` types, which the `std` and `x86`
//! backends share.

use super::{Atomic, AtomicInt, Ordering};
use core::sync::atomic;

macro_rules! native_atomic {
    ($atomic:ty, $t:ty) => {
        impl Atomic<$t> for $atomic {
            #[inline(always)]
            fn new(v: $t) -> Self {
                <$atomic>::new(v)
            }
            #[inline(always)]
            fn load(&self, order: Ordering) -> $t {
                <$atomic>::load(self, order)
            }
            #[inline(always)]
            fn store(&self, v: $t, order: Ordering) {
                <$atomic>::store(self, v, order)
            }
            #[inline(always)]
            fn swap(&self, v: $t, order: Ordering) -> $t {
                <$atomic>::swap(self, v, order)
            }
            #[inline(always)]
            fn compare_exchange(
                &self,
                current: $t,
                new: $t,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$t, $t> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
        }
    };
}

macro_rules! native_atomic_int {
    ($atomic:ty, $t:ty) => {
        native_atomic!($atomic, $t);
        impl AtomicInt<$t> for $atomic {
            #[inline(always)]
            fn fetch_add(&self, v: $t, order: Ordering) -> $t {
                <$atomic>::fetch_add(self, v, order)
            }
            #[inline(always)]
            fn fetch_sub(&self, v: $t, order: Ordering) -> $t {
                <$atomic>::fetch_sub(self, v, order)
            }
            #[inline(always)]
            fn fetch_or(&self, v: $t, order: Ordering) -> $t {
                <$atomic>::fetch_or(self, v, order)
            }
            #[inline(always)]
            fn fetch_and(&self, v: $t, order: Ordering) -> $t {
                <$atomic>::fetch_and(self, v, order)
            }
        }
    };
}

native_atomic_int!(atomic::AtomicU64, u64);
native_atomic_int!(atomic::AtomicUsize, usize);
native_atomic!(atomic::AtomicBool, bool);
