//! Typed errors for misuse and bad input.

use core::fmt;

/// What went wrong. Every fallible call in the crate returns this.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// A range whose start equals its end.
    EmptyRange,
    /// A range whose start lies after its end.
    InvertedRange,
    /// A range that reaches past the largest address the crate accepts.
    RangeOverflow,
    /// `end` without a matching `begin`: the in-progress count would go below zero.
    Unbalanced,
    /// A counter would overflow.
    CountOverflow,
    /// A fault snapshot or guard that belongs to another object.
    Foreign,
    /// A CPU id beyond what a [`CpuSet`](crate::hal::CpuSet) can name.
    CpuOutOfRange,
    /// A memslot that overlaps an existing one.
    SlotOverlap,
    /// No memslot with that id.
    NoSuchSlot,
    /// No room for another memslot.
    SlotsFull,
    /// A translation-cache operation on an inactive cache.
    CacheInactive,
    /// The page allocator has no page left.
    OutOfMemory,
    /// A guest-frame number that no memslot maps.
    NoMapping,
    /// An address that is not page aligned where a page boundary is required.
    Misaligned,
    /// A memslot generation with the update-in-progress bit: nothing may be cached by it
    /// ([`GEN_UPDATE_IN_PROGRESS`](crate::memslot::GEN_UPDATE_IN_PROGRESS)).
    GenerationInProgress,
    /// The operation cannot complete now and must not wait where it is (a memslot update is
    /// under way and waiting for it inside an SRCU read section would deadlock): the caller
    /// retries after leaving its read sections (KVM's `-EAGAIN`).
    TryAgain,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::EmptyRange => "empty range",
            Error::InvertedRange => "range start lies after its end",
            Error::RangeOverflow => "range reaches past the largest accepted address",
            Error::Unbalanced => "invalidation end without a matching begin",
            Error::CountOverflow => "counter overflow",
            Error::Foreign => "snapshot or guard belongs to another object",
            Error::CpuOutOfRange => "CPU id out of range",
            Error::SlotOverlap => "memslot overlaps an existing memslot",
            Error::NoSuchSlot => "no such memslot",
            Error::SlotsFull => "no room for another memslot",
            Error::CacheInactive => "translation cache is not active",
            Error::OutOfMemory => "out of pages",
            Error::NoMapping => "no memslot maps this gfn",
            Error::Misaligned => "address is not page aligned",
            Error::GenerationInProgress => "memslot update in progress: generation not cacheable",
            Error::TryAgain => "try again outside the SRCU read section",
        })
    }
}

impl core::error::Error for Error {}
