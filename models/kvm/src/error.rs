//! The harness's errors.

use std::fmt;

/// What can go wrong on the host side.
#[derive(Debug)]
pub enum KvmError {
    /// `/dev/kvm` cannot be opened or a VM cannot be created: the checker cannot run here.
    Unavailable(String),
    /// A KVM ioctl failed.
    Ioctl {
        /// What was being done.
        what: &'static str,
        /// The error.
        err: kvm_ioctls::Error,
    },
    /// Mapping guest memory failed.
    Mmap(std::io::Error),
    /// The embedded guest ELF is malformed or does not fit the layout.
    Image(String),
    /// A vCPU count outside `2..=` the host's CPUs (or the layout's maximum).
    BadVcpus {
        /// Asked for.
        asked: usize,
        /// The most allowed.
        max: usize,
    },
    /// A host thread could not be started.
    Thread(std::io::Error),
    /// The VMM side failed: a memslot change refused, or a setup step, a thread or the guest
    /// of the `kvm-vmm` example.
    Vmm(String),
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvmError::Unavailable(why) => write!(f, "KVM is not usable here: {why}"),
            KvmError::Ioctl { what, err } => write!(f, "{what}: {err}"),
            KvmError::Mmap(e) => write!(f, "cannot map guest memory: {e}"),
            KvmError::Image(why) => write!(f, "guest image: {why}"),
            KvmError::BadVcpus { asked, max } => write!(f, "{asked} vCPUs asked for; allowed: 2..={max}"),
            KvmError::Thread(e) => write!(f, "cannot start a vCPU thread: {e}"),
            KvmError::Vmm(why) => write!(f, "the VMM failed: {why}"),
        }
    }
}

impl std::error::Error for KvmError {}

/// `Result` of an ioctl, with what it was for.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &'static str) -> Result<T, KvmError>;
}

impl<T> Ctx<T> for Result<T, kvm_ioctls::Error> {
    fn ctx(self, what: &'static str) -> Result<T, KvmError> {
        self.map_err(|err| KvmError::Ioctl { what, err })
    }
}
