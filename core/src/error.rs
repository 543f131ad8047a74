//! Typed errors for misuse and bad input.

use crate::memslot::SlotId;
use crate::range::{Gfn, Hva};
use crate::registry::RegistryError;
use crate::unsync::UnsyncError;
use crate::vcpu::VcpuError;
use crate::walk::ZapListFull;
use core::fmt;

/// What went wrong.
///
/// The protocol calls return this; the vCPU, registry and unsync-page calls have their own
/// narrower error types ([`VcpuError`], [`RegistryError`], [`UnsyncError`], [`ZapListFull`]),
/// each of which converts into an `Error` with `From`, so that a caller's function returning
/// `Result<_, mmusync::Error>` can use `?` on all of them. Errors about an address or a slot
/// carry it.
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
    /// A memslot that overlaps an existing one (or reuses its id).
    SlotOverlap {
        /// The slot being created or moved.
        slot: SlotId,
        /// The existing slot it collides with.
        existing: SlotId,
    },
    /// No memslot with that id.
    NoSuchSlot {
        /// The id asked for.
        slot: SlotId,
    },
    /// No room for another memslot.
    SlotsFull,
    /// A translation-cache operation on an inactive cache.
    CacheInactive,
    /// No translation cache with that index in the VM.
    NoSuchCache {
        /// The index asked for.
        index: usize,
    },
    /// The page allocator has no page left.
    OutOfMemory,
    /// A guest-frame number that no memslot maps (or whose host page the primary MMU cannot
    /// resolve).
    NoMapping {
        /// The frame that failed.
        gfn: Gfn,
    },
    /// A host address the primary MMU maps nothing at: what a resolver passed to the fault
    /// path or a translation-cache refresh returns when `hva → pfn` fails (KVM's `-EFAULT`).
    Unmapped {
        /// The address that failed.
        hva: Hva,
    },
    /// A host address that is not page aligned where a page boundary is required.
    Misaligned {
        /// The address that failed.
        hva: Hva,
    },
    /// A memslot generation with the update-in-progress bit: nothing may be cached by it
    /// ([`GEN_UPDATE_IN_PROGRESS`](crate::memslot::GEN_UPDATE_IN_PROGRESS)).
    GenerationInProgress,
    /// The operation cannot complete now and must not wait where it is (a memslot update is
    /// under way and waiting for it inside an SRCU read section would deadlock): the caller
    /// retries after leaving its read sections (KVM's `-EAGAIN`).
    TryAgain,
    /// A vCPU operation failed.
    Vcpu(VcpuError),
    /// A vCPU registry operation failed.
    Registry(RegistryError),
    /// An unsync-page (shadow page) operation failed.
    Unsync(UnsyncError),
    /// A zap list was full ([`ZapListFull`] hands the page back; this conversion drops the
    /// pointer, so convert only once the page is safe elsewhere).
    ZapListFull,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::SlotOverlap { slot, existing } => {
                return write!(f, "memslot {slot} overlaps memslot {existing}");
            }
            Error::NoSuchSlot { slot } => return write!(f, "no memslot {slot}"),
            Error::NoSuchCache { index } => return write!(f, "no translation cache {index}"),
            Error::NoMapping { gfn } => return write!(f, "no memslot maps gfn {gfn:#x}"),
            Error::Misaligned { hva } => return write!(f, "hva {hva:#x} is not page aligned"),
            Error::Unmapped { hva } => return write!(f, "the primary MMU maps nothing at hva {hva:#x}"),
            Error::Vcpu(e) => return write!(f, "vCPU: {e}"),
            Error::Registry(e) => return write!(f, "vCPU registry: {e}"),
            Error::Unsync(e) => return write!(f, "shadow page: {e}"),
            Error::EmptyRange => "empty range",
            Error::InvertedRange => "range start lies after its end",
            Error::RangeOverflow => "range reaches past the largest accepted address",
            Error::Unbalanced => "invalidation end without a matching begin",
            Error::CountOverflow => "counter overflow",
            Error::Foreign => "snapshot or guard belongs to another object",
            Error::CpuOutOfRange => "CPU id out of range",
            Error::SlotsFull => "no room for another memslot",
            Error::CacheInactive => "translation cache is not active",
            Error::OutOfMemory => "out of pages",
            Error::GenerationInProgress => "memslot update in progress: generation not cacheable",
            Error::TryAgain => "try again outside the SRCU read section",
            Error::ZapListFull => "zap list is full",
        })
    }
}

impl core::error::Error for Error {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            Error::Vcpu(e) => Some(e),
            Error::Registry(e) => Some(e),
            Error::Unsync(e) => Some(e),
            _ => None,
        }
    }
}

impl From<VcpuError> for Error {
    fn from(e: VcpuError) -> Self {
        Error::Vcpu(e)
    }
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Self {
        Error::Registry(e)
    }
}

impl From<UnsyncError> for Error {
    fn from(e: UnsyncError) -> Self {
        Error::Unsync(e)
    }
}

impl<P> From<ZapListFull<P>> for Error {
    fn from(_: ZapListFull<P>) -> Self {
        Error::ZapListFull
    }
}
