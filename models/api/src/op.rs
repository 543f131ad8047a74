//! The operation vocabulary: one [`Op`] per public API call the harness can make.
//!
//! Operands are raw integers ([`Val`]), never pre-validated ranges, so inverted, empty,
//! overflowing and overlapping ranges are generated as often as good ones. Objects that an
//! operation creates (fault snapshots, open guards, SRCU read sections) are kept by the
//! harness in lists and named by a `u8` index taken modulo the list's length.

use arbitrary::{Arbitrary, Unstructured};
use mmusync::{MAX_GFN, MAX_HVA, PAGE_SIZE};

/// Values that sit on an edge of some check: the gfn and hva limits and their neighbours, and
/// the top of `u64` (where `start + len` overflows).
pub const BOUNDARIES: [u64; 12] = [
    0,
    1,
    MAX_GFN.0 - 1,
    MAX_GFN.0,
    MAX_GFN.0 + 1,
    MAX_HVA.0 - PAGE_SIZE,
    MAX_HVA.0,
    MAX_HVA.0 + PAGE_SIZE,
    u64::MAX - PAGE_SIZE + 1,
    u64::MAX - 1,
    u64::MAX,
    1 << 63,
];

/// A raw `u64` operand (an address, a gfn, a page count).
///
/// Its [`Arbitrary`] form makes the values that matter common: half are small (`0..64`), a
/// quarter are small multiples of the page size (so host ranges hit memslots), and the rest
/// are [`BOUNDARIES`] or any `u64` at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Val(pub u64);

impl<'a> Arbitrary<'a> for Val {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let tag = u8::arbitrary(u)?;
        let low = u64::from(tag & 0x3f);
        Ok(Val(match tag >> 6 {
            0 | 1 => low,
            2 => low * PAGE_SIZE,
            _ if (low as usize) < BOUNDARIES.len() => BOUNDARIES[low as usize],
            _ => u64::arbitrary(u)?,
        }))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(9))
    }
}

/// A memslot id. Generated from a small set (`0..6`) so that creates collide with existing
/// slots and deletes and moves find them; every `u16` is a valid id, so nothing is lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotKey(pub u16);

impl<'a> Arbitrary<'a> for SlotKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(SlotKey(u16::from(u8::arbitrary(u)? % 6)))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// Whose `mmu_lock` guard a write-side call is given: the VM's own, or another
/// [`Invalidation`](mmusync::invalidation::Invalidation)'s (which must be refused with
/// [`Error::Foreign`](mmusync::Error::Foreign)).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// The VM's own object.
    Own,
    /// A second, unrelated object.
    Foreign,
}

/// Which `mmu_lock` guard a read-side call is given.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lock {
    /// The VM's lock, held for write.
    OwnWrite,
    /// The VM's lock, held for read.
    OwnRead,
    /// Another object's lock, held for write.
    ForeignWrite,
    /// Another object's lock, held for read.
    ForeignRead,
}

impl Lock {
    /// Whether the guard belongs to another object.
    pub fn is_foreign(self) -> bool {
        matches!(self, Lock::ForeignWrite | Lock::ForeignRead)
    }
}

/// An invalidation that a translation-cache refresh races with: run by the resolver, after it
/// read the primary MMU, so it falls inside the refresh's resolution window.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Race {
    /// Nothing races.
    None,
    /// `Vm::start` of `[start, end)` (left open: the refresh must retry while it is active).
    Start {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `Vm::start` then `Vm::end` of `[start, end)`, both inside the window.
    StartEnd {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
}

/// Which vCPU an operation names (the harness has two).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VcpuKey(pub u8);

impl<'a> Arbitrary<'a> for VcpuKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(VcpuKey(u8::arbitrary(u)? % 2))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// A CPU, relative to the harness's thread: the thread's own CPU or another one.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Whose {
    /// The CPU the harness runs on.
    Mine,
    /// A CPU the harness does not run on.
    Other,
}

/// Which of the VM's own translation caches an operation names: `0..4` (decoded modulo 4), so
/// with [`VM_CACHES`](crate::VM_CACHES) caches some indices name no cache and must be refused
/// with [`Error::NoSuchCache`](mmusync::Error::NoSuchCache).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey(pub u8);

impl<'a> Arbitrary<'a> for CacheKey {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(CacheKey(u8::arbitrary(u)? % 4))
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (1, Some(1))
    }
}

/// The invalidation state and active count a direct refresh of one of the VM's own caches is
/// given. Only the VM's own pair is accepted; every other is refused with
/// [`Error::Foreign`](mmusync::Error::Foreign).
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Counters {
    /// The VM's own invalidation state and active count.
    Own,
    /// Another VM's invalidation state and active count.
    OtherVm,
    /// The VM's own invalidation state with another VM's active count.
    OtherActive,
    /// The VM's own invalidation state with a standalone active count.
    StandaloneActive,
    /// A standalone invalidation state with the VM's own active count.
    StandaloneInvalidation,
}

/// One public API call.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `Invalidation::begin(guard, GfnRange::new(start, end)?)` under a write guard.
    Begin {
        /// Whose write guard.
        owner: Owner,
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// `Invalidation::add_range(guard, GfnRange::new(start, end)?)` under a write guard.
    AddRange {
        /// Whose write guard.
        owner: Owner,
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// `Invalidation::end(guard)` under a write guard.
    End {
        /// Whose write guard.
        owner: Owner,
    },
    /// `in_progress`, `seq` and `range` of the VM's invalidation, read with `lock`.
    Inspect {
        /// The guard passed.
        lock: Lock,
    },
    /// `Invalidation::open(GfnRange::new(start, end)?)`: keeps the returned guard.
    Open {
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// `OpenInvalidation::add_range` on a kept guard.
    OpenAddRange {
        /// Which kept guard (modulo their number).
        guard: u8,
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// Drops a kept [`OpenInvalidation`](mmusync::invalidation::OpenInvalidation) (its `end`).
    Close {
        /// Which kept guard (modulo their number).
        guard: u8,
    },
    /// `Invalidation::snapshot()` of the VM's or the foreign object; the snapshot is kept.
    Snapshot {
        /// Whose snapshot.
        owner: Owner,
    },
    /// `Invalidation::retry(guard, snapshot)`.
    Retry {
        /// The guard passed.
        lock: Lock,
        /// Which kept snapshot (modulo their number).
        snap: u8,
    },
    /// `Invalidation::retry_gfn(guard, snapshot, gfn)`.
    RetryGfn {
        /// The guard passed.
        lock: Lock,
        /// Which kept snapshot (modulo their number).
        snap: u8,
        /// The faulting gfn (any `u64`).
        gfn: Val,
    },
    /// `Invalidation::retry_gfn_unsafe(snapshot, gfn)`.
    RetryGfnUnsafe {
        /// Which kept snapshot (modulo their number).
        snap: u8,
        /// The faulting gfn (any `u64`).
        gfn: Val,
    },
    /// `Invalidation::retry_lockless(snapshot)`.
    RetryLockless {
        /// Which kept snapshot (modulo their number).
        snap: u8,
    },
    /// `ActiveInvalidations::start()` on the VM's count.
    ActiveStart,
    /// `ActiveInvalidations::end()` on the VM's count.
    ActiveEnd,
    /// `Vm::start(mmu, HvaRange::new(start, end)?)`, the unguarded notifier start.
    NotifierStart {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `Vm::end(HvaRange::new(start, end)?)`, the unguarded notifier end.
    NotifierEnd {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `Vm::invalidate_range_start(mmu, HvaRange::new(start, end)?)`: keeps the guard.
    NotifierOpen {
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// Drops a kept [`InvalidateRange`](mmusync::notifier::InvalidateRange) (its `end`).
    NotifierClose {
        /// Which kept guard (modulo their number).
        guard: u8,
    },
    /// `Vm::set_memslot(mmu, SlotChange::Create(Memslot::new(MemslotConfig { id, base_gfn,
    /// npages, hva })?))`.
    CreateSlot {
        /// The slot id.
        id: SlotKey,
        /// Raw first gfn.
        base_gfn: Val,
        /// Raw page count.
        npages: Val,
        /// Raw host address (must be page aligned).
        hva: Val,
    },
    /// `Vm::set_memslot(mmu, SlotChange::Delete(id))`.
    DeleteSlot {
        /// The slot id.
        id: SlotKey,
    },
    /// `Vm::set_memslot(mmu, SlotChange::Move { id, base_gfn })`.
    MoveSlot {
        /// The slot id.
        id: SlotKey,
        /// Raw new first gfn.
        base_gfn: Val,
    },
    /// `Memslots::read().find(gfn)`.
    FindSlot {
        /// The gfn looked up (any `u64`).
        gfn: Val,
    },
    /// `Srcu::read_lock()` on the memslots' SRCU domain; the read section is kept open.
    SrcuLock,
    /// Ends a kept SRCU read section.
    SrcuUnlock {
        /// Which kept section (modulo their number).
        section: u8,
    },
    /// `TranslationCache::activate(hva)`.
    CacheActivate {
        /// The host address (any `u64`).
        hva: Val,
    },
    /// `TranslationCache::deactivate()`.
    CacheDeactivate,
    /// `TranslationCache::check(hva)`, the guard dropped at once.
    CacheCheck {
        /// The host address (any `u64`).
        hva: Val,
    },
    /// `TranslationCache::try_refresh(hva, attempts, ..)` (`attempts == 0`: the unbounded
    /// `refresh` / `refresh_hva`), resolving through the harness's primary MMU.
    CacheRefresh {
        /// A new host address (`refresh_hva`), or none (`refresh`).
        hva: Option<Val>,
        /// At most this many resolutions, `0` for no bound.
        attempts: u8,
        /// Whether the resolution fails: the primary MMU cannot supply the page, and the
        /// resolver returns [`Error::Unmapped`](mmusync::Error::Unmapped) for the cache's host
        /// address (`hva_to_pfn` failing), which the refresh hands back as is.
        fail: bool,
        /// What races with the first resolution.
        race: Race,
    },
    /// `Vcpu::load(cpu)`.
    VcpuLoad {
        /// Which vCPU.
        vcpu: VcpuKey,
        /// On which CPU.
        cpu: Whose,
    },
    /// `Vcpu::put()`.
    VcpuPut {
        /// Which vCPU.
        vcpu: VcpuKey,
    },
    /// `Vcpu::walk_lockless_begin()`; the walk guard is kept.
    WalkBegin {
        /// Which vCPU.
        vcpu: VcpuKey,
    },
    /// `Vcpu::enter_guest()`; the guest guard is kept.
    EnterGuest {
        /// Which vCPU.
        vcpu: VcpuKey,
    },
    /// Drops the most recent kept walk or guest guard (these guards disable interrupts, whose
    /// save/restore must nest, so they end in reverse order).
    GuardExit,
    /// `Vcpu::make_request(Request::new(bit)?)`.
    MakeRequest {
        /// Which vCPU.
        vcpu: VcpuKey,
        /// The request bit (any `u8`).
        bit: u8,
    },
    /// `Vcpu::check_request(Request::new(bit)?)`.
    CheckRequest {
        /// Which vCPU.
        vcpu: VcpuKey,
        /// The request bit (any `u8`).
        bit: u8,
    },
    /// `Vcpu::exiting_guest_mode()`, the kick.
    Kick {
        /// Which vCPU.
        vcpu: VcpuKey,
    },
    /// `flush_remote_tlbs(hal, vcpus)`.
    FlushRemoteTlbs,
    /// `Vm::zap_gfn_range(mmu, GfnRange::new(start, end)?)`: a zap that is not a notifier
    /// event.
    ZapGfnRange {
        /// Raw range start.
        start: Val,
        /// Raw range end.
        end: Val,
    },
    /// `SlotCache::lookup(&memslots.read(), gfn)` on the harness's generation cache.
    SlotCacheLookup {
        /// The gfn (any `u64`).
        gfn: Val,
    },
    /// `SlotCache::fill(generation, gfn, hva)` with the active set's generation, or that
    /// generation with the update-in-progress bit (which must be refused).
    SlotCacheFill {
        /// Set the in-progress bit on the generation.
        in_progress: bool,
        /// The gfn (any `u64`).
        gfn: Val,
        /// The answer cached (`None`: no memslot).
        hva: Option<Val>,
    },
    /// `SlotCache::get(generation, gfn)` with the active set's generation.
    SlotCacheGet {
        /// The gfn (any `u64`).
        gfn: Val,
    },
    /// `Vm::clear_flush_young` / `clear_young` / `test_young` over `HvaRange::new(start, end)?`
    /// with the recording secondary MMU (which has no accessed bits: never young).
    Age {
        /// Which notifier.
        how: crate::page_table::AgeHow,
        /// Raw host-address start.
        start: Val,
        /// Raw host-address end.
        end: Val,
    },
    /// `Vm::activate_cache(index, hva)` (K1: put the VM's cache on its list, then mark it
    /// active).
    VmCacheActivate {
        /// Which cache.
        index: CacheKey,
        /// The host address (any `u64`).
        hva: Val,
    },
    /// `Vm::deactivate_cache(index)` (K2: mark the cache inactive and invalid, then take it off
    /// the list).
    VmCacheDeactivate {
        /// Which cache.
        index: CacheKey,
    },
    /// `Vm::refresh_cache(index, ..)`, the unbounded refresh against the VM's own counters,
    /// resolving through the harness's primary MMU.
    VmCacheRefresh {
        /// Which cache.
        index: CacheKey,
        /// Whether the resolution fails (see [`Op::CacheRefresh`]).
        fail: bool,
        /// What races with the first resolution.
        race: Race,
    },
    /// `Vm::translation_cache(index)?.check(hva)`, the guard dropped at once.
    VmCacheCheck {
        /// Which cache.
        index: CacheKey,
        /// The host address (any `u64`).
        hva: Val,
    },
    /// `TranslationCache::activate(hva)` called on the VM's cache `index` directly, bypassing
    /// the VM's list (refused with [`Error::Foreign`](mmusync::Error::Foreign)).
    VmCacheActivateDirect {
        /// Which cache.
        index: CacheKey,
        /// The host address (any `u64`).
        hva: Val,
    },
    /// `TranslationCache::deactivate()` called on the VM's cache `index` directly: inactive
    /// and invalid, but left on the VM's list until `Vm::deactivate_cache`.
    VmCacheDeactivateDirect {
        /// Which cache.
        index: CacheKey,
    },
    /// `TranslationCache::try_refresh` (`attempts == 0`: `refresh` / `refresh_hva`) called on
    /// the VM's cache `index` directly, with the counters `counters` names.
    VmCacheRefreshWith {
        /// Which cache.
        index: CacheKey,
        /// Whose invalidation state and active count.
        counters: Counters,
        /// A new host address (`refresh_hva`), or none (`refresh`).
        hva: Option<Val>,
        /// At most this many resolutions, `0` for no bound.
        attempts: u8,
        /// Whether the resolution fails.
        fail: bool,
        /// What races with the first resolution.
        race: Race,
    },
}
