//! Mutants: one named barrier dropped, or one named rule broken.
//!
//! The type lives in core ([`mmusync::Mutant`]) so that core's model backends (`hal::loom`,
//! `hal::shuttle`) can take one without depending on this catalogue; it is re-exported here so
//! that `mmusync_models::Mutant` keeps working.

pub use mmusync::Mutant;
