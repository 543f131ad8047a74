//! The shuttle HAL: core's own shuttle backend ([`mmusync::hal::shuttle`], feature `shuttle`),
//! re-exported under this crate's old path. It lives in core so that a VMM can shuttle-test its
//! own integration with the same backend; its documentation (locks that block, interrupt lines
//! and blocking IPIs, the spin budget, what shuttle cannot see) is there.

pub use mmusync::hal::shuttle::{
    current_cpu, liveness_violated, set_current_cpu, spawn_cpu, ShuttleAtomicBool, ShuttleAtomicU64,
    ShuttleAtomicUsize, ShuttleHal, ShuttleRawMutex, ShuttleRawRwLock, LIVENESS, MAX_CPUS,
};
