//! # mmusync
//!
//! The synchronization protocols Linux KVM uses to keep a *secondary* MMU (EPT/NPT/stage-2
//! tables, shadow page tables, translation caches) coherent with a *primary* MMU that changes
//! underneath it, written once against an abstract hardware layer ([`hal`]) so that the same
//! code runs on real threads, in ring 0, and inside the loom and shuttle model checkers.
//!
//! | # | protocol | module | KVM names |
//! |---|---|---|---|
//! | P1 | invalidation start/end: in-progress count, sequence, merged gfn range | [`invalidation`], [`notifier`] | `kvm_mmu_notifier_invalidate_range_start/end`, `kvm_mmu_invalidate_begin/range_add/end` |
//! | P2 | fault-side retry checks and the translation cache | [`retry`], [`pfncache`] | `mmu_invalidate_retry{,_gfn,_gfn_unsafe}`, `hva_to_pfn_retry` |
//! | P3 | memslot swaps that wait out open invalidations | [`memslot`], [`srcu`] | `mn_active_invalidate_count`, `kvm_swap_active_memslots` |
//! | P4 | unsync shadow pages and the lockless sync-root check | [`unsync`] | `mmu_try_to_unsync_pages`, `is_unsync_root` |
//! | P5 | lockless page-table walks and safe freeing of table pages | [`vcpu`], [`walk`], [`epoch`], [`reclamation`] | `walk_shadow_page_lockless_begin/end`, `kvm_flush_remote_tlbs`, TDP MMU RCU walks |
//!
//! Every ordering point has a name ([`Barrier`]); protocol code asks the HAL for barriers
//! only by name, so model backends can drop any one of them at run time and show that it is
//! needed. Every lock and check that a mutant may remove has a name too ([`Rule`]).
//!
//! ## Protocols and step labels
//!
//! The documentation refers to protocol steps by short labels: S1–S5 and E1–E2 for
//! `invalidate_range_start`/`end`, G1–G4 for a zap that is not a notifier event
//! (`Vm::zap_gfn_range`), A1–A3 for the aging notifiers, F0–F16 for the fault path (with prefetch and prefault), R1–R5 for a translation-cache
//! refresh, W1–W8 for a memslot swap, U1–U5 and C1–C3 for unsync marking and checking, L1–L4,
//! Z1–Z2, Q1–Q6, M1–M2, D1–D3 and V1–V6 for lockless walks, frees, requests and flushes, SPTE
//! updates, accessed/dirty bits and guest entry; to barrier tags
//! such as \[B1-end-wmb\]; to the litmus shapes MP-1, MP-2, SB-walk and SB-entry; and to
//! invariants I1.1–I5.8. All of them are defined in [`protocols`] (the crate's
//! `docs/protocols.md`), one heading per label, with the function that implements each step
//! and the KVM code it mirrors.
//!
//! ## Memory models
//!
//! The code is written for the C11 model Rust uses. Where C11 needs a stronger ordering than
//! the Linux kernel memory model (LKMM) that KVM relies on, the crate uses the stronger one and
//! the barrier's documentation says so (see [`Barrier::InvalidateEndZapBeforeSeq`] and
//! [`Barrier::InvalidateEndSeqBeforeActiveCount`]).
//!
//! ## Features
//!
//! * `alloc`: the epoch-based reclamation ([`epoch`]) and the reference MMU ([`mmu`]).
//! * `std` (default): the [`hal::std`] backend. Real threads; a real-time signal plays the IPI
//!   and a blocked signal mask plays disabled interrupts.
//! * `x86`: the `hal::x86` backend's barrier mapping under x86-TSO.
//! * `x86-ring0`: privileged instructions (`cli`/`sti`, local-APIC IPIs) for a ring-0 guest.
//! * `shuttle`: the `hal::shuttle` model backend, for testing your own integration (your
//!   [`notifier::SecondaryMmu`], fault path, walker) under the [shuttle] model checker.
//! * `--cfg loom` (a compiler flag, not a feature, as in tokio and crossbeam): the `hal::loom`
//!   model backend, for the same under [loom]. Build with
//!   `RUSTFLAGS="--cfg loom --cfg crossbeam_loom"`. The crate README's "Model-check your own
//!   integration" says how.
//!
//! [shuttle]: https://docs.rs/shuttle
//! [loom]: https://docs.rs/loom
//!
//! crossbeam-epoch is compiled only with `alloc` (or `std`); the no-feature build depends on
//! lock_api alone.
//!
//! ## Public dependencies
//!
//! Types and traits of these crates appear in mmusync's API, so their major versions are part
//! of it: **lock_api 0.4** ([`hal::Hal::RawRwLock`] and `RawMutex` are bounded by its raw-lock
//! traits; [`lock::SpinLock`] and [`lock::SpinGuard`] are its types), **parking_lot 0.12**
//! (the `std` backend's raw locks) and **spin 0.9** (the `x86` backend's). Moving to a
//! semver-incompatible release of any of them (lock_api 0.5, parking_lot 0.13, spin 0.10) is a
//! breaking change of mmusync and gets a new minor version while mmusync is 0.x (a new major
//! version after 1.0); compatible updates are not. **crossbeam-epoch 0.9** is private: no type
//! of it is exposed (the `epoch` module wraps it), so it may be upgraded or replaced in any release.
//! libc is private too. The model backends expose their checker's types (their `spawn_cpu`
//! returns a loom or shuttle join handle), so **loom 0.7** (under `--cfg loom`) and **shuttle
//! 0.9** (feature `shuttle`) are public dependencies of those backends, under the same rule. **serde 1** (feature `serde`) is public: its traits are implemented for
//! the step types and CPU ids; the serialized form of a [`Step`] follows its variants, so adding
//! a variant is not a breaking change (`Step` is `#[non_exhaustive]`) but renaming one is.
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations)]

#[cfg(feature = "alloc")]
extern crate alloc;
// The model backends (`hal::loom` under `--cfg loom`, `hal::shuttle`) are std programs.
#[cfg(any(feature = "std", feature = "shuttle", loom))]
extern crate std;

pub mod active;
pub mod barrier;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub mod epoch;
pub mod error;
pub mod hal;
pub mod invalidation;
pub mod link;
pub mod lock;
pub mod memslot;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub mod mmu;
pub mod mutant;
pub mod notifier;
pub mod pfncache;
pub mod range;
#[cfg(feature = "alloc")]
pub mod reclamation;
pub mod registry;
pub mod retry;
pub mod rule;
pub mod srcu;
pub mod step;
pub mod unsync;
pub mod vcpu;
pub mod walk;

// Step labels, invariants and barrier tags of P1–P5 (core/docs/protocols.md).
#[doc = include_str!("../docs/protocols.md")]
pub mod protocols {}

/// The crate README's example (`core/README.md`), compiled and run as a doctest so it cannot
/// rot. It lies inside the package, so the check also runs from the published crate.
#[cfg(all(doctest, feature = "std"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// The public API, flat at the root: a VMM needs one `use mmusync::{...}`. The modules stay
// public for their documentation (each explains its protocol) and for the rarer items.
pub use active::ActiveInvalidations;
pub use barrier::{Barrier, FenceKind};
#[cfg(feature = "alloc")]
pub use epoch::{EpochReclaimer, EpochWalk, ReclaimHandle};
pub use error::Error;
#[cfg(feature = "std")]
pub use hal::std::{CpuError, CpuRegistration, StdHal};
pub use hal::{CpuId, CpuSet, Cpus, Hal, PageAlloc};
pub use invalidation::{Invalidation, OpenInvalidation};
pub use link::{TableLink, WalkGuard};
pub use lock::{MmuLock, MmuLocked, MmuReadGuard, MmuWriteGuard};
pub use memslot::{
    Memslot, MemslotConfig, Memslots, MemslotsRead, SlotCache, SlotChange, SlotId, GEN_UPDATE_IN_PROGRESS,
    PAGE_SIZE,
};
#[cfg(feature = "alloc")]
pub use mmu::{Access, BoxAlloc, FastFault, FaultOutcome, PageTable, PageTracker, ReferenceMmu, Spte};
pub use mutant::Mutant;
pub use notifier::{InvalidateRange, SecondaryMmu, Vm};
pub use pfncache::{CacheRead, TranslationCache};
pub use range::{Gfn, GfnRange, Hva, HvaRange, Pfn, MAX_GFN, MAX_HVA};
#[cfg(feature = "alloc")]
pub use reclamation::{EpochReclamation, IpiReclamation, Reclamation};
pub use registry::{RegistryError, VcpuRegistry};
pub use retry::FaultSnapshot;
pub use rule::Rule;
pub use srcu::{Srcu, SrcuReadGuard};
pub use step::{RetryCheck, Step};
pub use unsync::{ShadowPages, SpIndex, UnsyncError};
pub use vcpu::{
    flush_remote_tlbs, flush_remote_tlbs_range, make_all_cpus_request, Request, Vcpu, VcpuError, VcpuMode,
};
pub use walk::{Committed, LocklessWalk, ZapList, ZapListFull};
