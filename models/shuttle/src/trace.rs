//! The counterexample trace of one execution: core's ([`mmusync::hal::shuttle::trace`]),
//! re-exported under this crate's old path.

pub use mmusync::hal::shuttle::trace::{Entry, Trace, What};
