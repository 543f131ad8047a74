//! The scenarios that only shuttle runs: too many threads and steps for loom.
//!
//! They are written against core's public API and the [`ShuttleHal`](crate::hal::ShuttleHal)
//! (not generic: they need scoped roles that borrow a reference MMU, and shuttle's random data
//! source), with the ghost state and invariants of `mmusync-models` ([`violated`],
//! [`Invariant`], [`Pages`]) plus the liveness checks of this crate
//! ([`liveness_violated`](crate::hal::liveness_violated)).
//!
//! Random choices (which gfn a vCPU faults, which range an invalidator hits) come from
//! `shuttle::rand`, so they are part of the recorded schedule and replay exactly.
//!
//! [`violated`]: mmusync_models::violated
//! [`Invariant`]: mmusync_models::Invariant
//! [`Pages`]: mmusync_models::ghost::Pages

pub mod cache;
pub mod churn;
pub mod liveness;
pub mod longrun;
pub mod storm;
pub mod world;
