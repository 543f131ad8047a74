//! P5: the vCPU mode machine, requests, kicks and `kvm_flush_remote_tlbs`.
//!
//! KVM frees a page-table page only after every CPU that might still read it has been
//! interrupted. Each vCPU publishes what it is doing in `vcpu->mode`:
//!
//! | [`VcpuMode`] | KVM | may read SPTEs / page tables |
//! |---|---|---|
//! | `Outside` | `OUTSIDE_GUEST_MODE` | no |
//! | `InGuest` | `IN_GUEST_MODE` | yes: the hardware walker |
//! | `Exiting` | `EXITING_GUEST_MODE` | yes, until the exit completes |
//! | `ReadingShadowPageTables` | `READING_SHADOW_PAGE_TABLES` | yes: a lockless walk ([`crate::walk`]) |
//!
//! Both readers disable interrupts for as long as they read, so an IPI sent to them is taken
//! only after they stop.
//!
//! ## Algorithm
//!
//! **Requester** ([`make_all_cpus_request`], [`flush_remote_tlbs`]), after it changed the
//! page tables: for each vCPU, set the request bit ([`Vcpu::make_request`], Q1), then
//! ([`Vcpu::exiting_guest_mode`], Q3) a full barrier and `cmpxchg(mode, InGuest, Exiting)`,
//! which returns the mode. If the mode was not `Outside`, add the vCPU's CPU ([`Vcpu::cpu`], Q4)
//! to the IPI set, unless it is the caller's own CPU. Then IPI the set and wait for every
//! target to take the IPI (Q5).
//!
//! **vCPU entry** ([`Vcpu::enter_guest`]): disable interrupts (V1), `mode = InGuest` (V2), full
//! barrier (V3), and if `mode == Exiting` or a request is pending, go back to `Outside` and
//! handle requests first (V4). Otherwise the returned [`InGuest`] guard is the guest running;
//! dropping it is the VM exit (V6): `mode = Outside`, interrupts back on.
//!
//! Why it is safe: the requester's `W(page tables); mb; R(mode)` and the vCPU's
//! `W(mode); mb; R(requests / page tables)` are a store-buffering pair (SB-entry, and SB-walk
//! for lockless walks): at least one side sees the other. Either the requester sees a mode
//! other than `Outside` and waits for the IPI, which the vCPU takes only with interrupts on,
//! after it stopped reading; or the vCPU sees the request (and the new tables) before it
//! starts.
//!
//! ## Ownership
//!
//! A vCPU is *loaded* on one CPU at a time ([`Vcpu::load`] / [`Vcpu::put`], like
//! `vcpu_load`/`vcpu_put`). Only code running on that CPU may change its mode: entry and
//! lockless walks fail with [`VcpuError::NotLoaded`] or [`VcpuError::WrongCpu`] otherwise. This
//! is what makes the mode a single-writer state (other CPUs only `cmpxchg` `InGuest` to
//! `Exiting`), and it is why the requester can trust `cpu` to name the CPU to interrupt.

use crate::barrier::Barrier;
use crate::hal::{Atomic, AtomicInt, CpuId, CpuSet, Cpus, IrqGuard, Ordering};
use crate::range::GfnRange;
use crate::rule::Rule;
use crate::step::Step;
use core::fmt;

/// What a vCPU is doing, as far as page-table reclamation is concerned (`vcpu->mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum VcpuMode {
    /// `OUTSIDE_GUEST_MODE`: reads no page tables without `mmu_lock`.
    Outside = 0,
    /// `IN_GUEST_MODE`: the guest runs and the hardware may walk the tables.
    InGuest = 1,
    /// `EXITING_GUEST_MODE`: a requester kicked the vCPU; it is on its way out.
    Exiting = 2,
    /// `READING_SHADOW_PAGE_TABLES`: a lockless software walk is open.
    ReadingShadowPageTables = 3,
}

impl VcpuMode {
    /// The mode stored as `v`. Only this crate writes mode cells, and only these values.
    fn from_raw(v: u64) -> Self {
        match v {
            0 => VcpuMode::Outside,
            1 => VcpuMode::InGuest,
            2 => VcpuMode::Exiting,
            3 => VcpuMode::ReadingShadowPageTables,
            _ => unreachable!("vCPU mode cell holds {v}, which no mode has"),
        }
    }
}

/// A vCPU request: one bit of `vcpu->requests`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request(u8);

impl Request {
    /// `KVM_REQ_TLB_FLUSH`: flush this vCPU's TLB before the next entry.
    pub const TLB_FLUSH: Request = Request(0);
    /// `KVM_REQ_VM_DEAD`: the VM is dead; do not enter.
    pub const VM_DEAD: Request = Request(1);
    /// `KVM_REQ_UNBLOCK`: leave a blocking wait.
    pub const UNBLOCK: Request = Request(2);
    /// `KVM_REQUEST_ARCH_BASE`: the first bit that architecture-specific requests use.
    pub const ARCH_BASE: u8 = 8;
    /// How many request bits there are.
    pub const COUNT: u8 = 64;

    /// The request with bit `bit`, if `bit < Request::COUNT`.
    pub const fn new(bit: u8) -> Result<Self, VcpuError> {
        if bit < Self::COUNT {
            Ok(Request(bit))
        } else {
            Err(VcpuError::RequestOutOfRange)
        }
    }

    /// The bit number.
    pub const fn bit(self) -> u8 {
        self.0
    }

    const fn mask(self) -> u64 {
        1 << self.0
    }
}

/// Misuse of a vCPU, or an entry that must wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum VcpuError {
    /// A request bit at or beyond [`Request::COUNT`].
    RequestOutOfRange,
    /// The vCPU is not loaded on any CPU.
    NotLoaded,
    /// The vCPU is loaded on another CPU than the caller's; only that CPU may run it.
    WrongCpu,
    /// [`Vcpu::load`] on a vCPU that is already loaded (on the CPU named).
    AlreadyLoaded(CpuId),
    /// The operation needs the vCPU `Outside`, and it is in this mode: a lockless walk inside
    /// guest context or inside another walk, an entry from a walk, a `put` while running.
    NotOutside(VcpuMode),
    /// Not misuse: [`Vcpu::enter_guest`] found a pending request or a kick (V4). Handle the
    /// requests ([`Vcpu::check_request`]) and enter again.
    RequestsPending,
    /// Guest entry or a lockless walk with interrupts already disabled on this CPU (inside
    /// another vCPU's walk or guest run on the same CPU). KVM begins both with interrupts on.
    InterruptsDisabled,
    /// The caller is not a CPU of the backend ([`Cpus::current_cpu`] is `None`: with the
    /// `std` backend, a thread that did not call `StdHal::register_cpu`), so it cannot run a
    /// vCPU. Flushes need no CPU and do not fail this way.
    NotACpu,
}

impl fmt::Display for VcpuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VcpuError::RequestOutOfRange => write!(f, "request bit out of range"),
            VcpuError::NotLoaded => write!(f, "vCPU is not loaded"),
            VcpuError::WrongCpu => write!(f, "vCPU is loaded on another CPU"),
            VcpuError::AlreadyLoaded(cpu) => write!(f, "vCPU is already loaded on CPU {}", cpu.index()),
            VcpuError::NotOutside(mode) => write!(f, "vCPU is in mode {mode:?}, not Outside"),
            VcpuError::RequestsPending => write!(f, "requests pending: handle them before entering"),
            VcpuError::InterruptsDisabled => write!(f, "interrupts are already disabled on this CPU"),
            VcpuError::NotACpu => write!(f, "the calling thread is not a CPU (register it first)"),
        }
    }
}

impl core::error::Error for VcpuError {}

/// `cpu` when the vCPU is not loaded.
const NO_CPU: usize = usize::MAX;

/// Keeps a value alone on its cache line (two lines: Intel's adjacent-line prefetcher pairs
/// them), so that one vCPU's mode writes never invalidate another vCPU's line.
#[repr(align(128))]
struct CachePadded<T>(T);

/// One vCPU's P5 state: `mode`, `requests`, and the CPU it is loaded on.
///
/// `mode` sits alone on its cache line and the struct is line-aligned, so in a `[Vcpu<H>]`
/// no two vCPUs share a line: a lockless walk, which writes only its own vCPU's mode, scales
/// across CPUs.
pub struct Vcpu<H: Cpus> {
    mode: CachePadded<H::AtomicU64>,
    requests: H::AtomicU64,
    cpu: H::AtomicUsize,
    pub(crate) hal: H,
}

impl<H: Cpus> fmt::Debug for Vcpu<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vcpu").finish_non_exhaustive()
    }
}

impl<H: Cpus> Vcpu<H> {
    /// A vCPU that is `Outside`, loaded nowhere, with no request pending.
    pub fn new(hal: H) -> Self {
        Vcpu {
            mode: CachePadded(H::AtomicU64::new(VcpuMode::Outside as u64)),
            requests: H::AtomicU64::new(0),
            cpu: H::AtomicUsize::new(NO_CPU),
            hal,
        }
    }

    /// The HAL handle.
    pub fn hal(&self) -> &H {
        &self.hal
    }

    /// The current mode (a relaxed read: a snapshot for diagnostics and tests).
    pub fn mode(&self) -> VcpuMode {
        VcpuMode::from_raw(self.mode.0.load(Ordering::Relaxed))
    }

    /// The mode cell, for the lockless walk ([`crate::walk`]), which writes it as the owner.
    pub(crate) fn mode_cell(&self) -> &H::AtomicU64 {
        &self.mode.0
    }

    /// `READ_ONCE(vcpu->cpu)`: the CPU the vCPU is loaded on.
    pub fn cpu(&self) -> Option<CpuId> {
        CpuId::new(self.cpu.load(Ordering::Relaxed)).ok()
    }

    /// `vcpu_load`: the vCPU now runs on `cpu`, and only code on `cpu` may enter it or walk
    /// with it. Fails with [`VcpuError::AlreadyLoaded`] unless it was put (or never loaded).
    ///
    /// A requester reads `cpu` after the mode, and no barrier is needed to make this store
    /// visible to it: every mode store that makes the vCPU busy (guest entry, walk begin) is
    /// followed by a full barrier, and the requester issues one before its mode read (the two
    /// store-buffering pairs). Of those two SeqCst fences, if the requester's comes later its
    /// `cpu` read sees this store; if the vCPU's comes later, the vCPU's reads after it see the
    /// requester's unlink or request, and it reaches nothing the requester frees.
    pub fn load(&self, cpu: CpuId) -> Result<(), VcpuError> {
        match self.cpu.compare_exchange(NO_CPU, cpu.index(), Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => Ok(()),
            Err(other) => match CpuId::new(other) {
                Ok(other) => Err(VcpuError::AlreadyLoaded(other)),
                Err(_) => unreachable!("`cpu` holds NO_CPU or a CpuId index"),
            },
        }
    }

    /// `vcpu_put`: the vCPU is no longer loaded. Must run on the CPU it is loaded on, with the
    /// vCPU `Outside`.
    pub fn put(&self) -> Result<(), VcpuError> {
        self.check_owner()?;
        self.check_outside()?;
        self.cpu.store(NO_CPU, Ordering::Relaxed);
        Ok(())
    }

    /// Fails unless the caller runs on the CPU this vCPU is loaded on.
    #[inline]
    pub(crate) fn check_owner(&self) -> Result<(), VcpuError> {
        match (self.cpu(), self.hal.current_cpu()) {
            (None, _) => Err(VcpuError::NotLoaded),
            (Some(_), None) => Err(VcpuError::NotACpu),
            (Some(cpu), Some(me)) if cpu != me => Err(VcpuError::WrongCpu),
            (Some(_), Some(_)) => Ok(()),
        }
    }

    /// Fails unless the mode is `Outside`. Exact when called by the owner: only the owner
    /// moves the mode away from `Outside`.
    #[inline]
    pub(crate) fn check_outside(&self) -> Result<(), VcpuError> {
        match self.mode.0.load(Ordering::Relaxed) {
            raw if raw == VcpuMode::Outside as u64 => Ok(()),
            raw => Err(VcpuError::NotOutside(VcpuMode::from_raw(raw))),
        }
    }

    /// `kvm_make_request` (Q1): `smp_wmb(); set_bit(req, &vcpu->requests)`. Whatever the
    /// caller wrote for the request to act on is visible to the vCPU that sees the bit.
    pub fn make_request(&self, req: Request) {
        // Pairs with RequestTestBeforeHandle in `check_request`. Without it the vCPU could see
        // the bit and still read the request's payload (say, the new page tables) from before.
        self.hal.barrier(Barrier::RequestBeforeSetBit);
        self.requests.fetch_or(req.mask(), Ordering::Relaxed);
        self.hal.step(Step::Request { request: req.0 });
    }

    /// `kvm_check_request`: whether `req` is pending; if so, clears it. The caller then handles
    /// it (for [`Request::TLB_FLUSH`]: flushes this vCPU's TLB).
    pub fn check_request(&self, req: Request) -> bool {
        if self.requests.load(Ordering::Relaxed) & req.mask() == 0 {
            return false;
        }
        self.requests.fetch_and(!req.mask(), Ordering::Relaxed);
        // Pairs with RequestBeforeSetBit in `make_request`. Without it the handling below
        // could read the request's payload from before the requester wrote it.
        self.hal.barrier(Barrier::RequestTestBeforeHandle);
        true
    }

    /// `kvm_request_pending`: whether any request bit is set (a relaxed read).
    pub fn requests_pending(&self) -> bool {
        self.requests.load(Ordering::Relaxed) != 0
    }

    /// `kvm_vcpu_exiting_guest_mode` (Q3): `cmpxchg(mode, InGuest, Exiting)`, fully ordered;
    /// returns the mode it found. A vCPU found `InGuest` will see `Exiting` at its next entry
    /// check, or is interrupted by the IPI that follows.
    pub fn exiting_guest_mode(&self) -> VcpuMode {
        // The zapper side of SB-walk and SB-entry. Pairs with WalkBeginModeBeforeSpteReads and
        // GuestEntryModeBeforeRequests: the page-table changes and the request bit come before
        // the mode read. Without it the read could pass the unlink: we would see Outside (no
        // IPI) while the vCPU, having entered, reads the old tables and no request. It also
        // pairs with WalkEndSpteReadsBeforeMode: seeing that walk's final Outside means all of
        // its SPTE reads are done (the acquire below completes that message passing).
        self.hal.barrier(Barrier::KickRequestBeforeModeRead);
        // Relaxed: the barriers on either side give the order. Nobody acquires `Exiting` (the
        // vCPU reads it after its own full barrier, GuestEntryModeBeforeRequests), so KVM's
        // release half is KickRequestBeforeModeRead above; its acquire half is next.
        let raw = match self.mode.0.compare_exchange(
            VcpuMode::InGuest as u64,
            VcpuMode::Exiting as u64,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(old) | Err(old) => old,
        };
        // Pairs with WalkEndSpteReadsBeforeMode and GuestExitReadsBeforeMode: the mode read
        // comes before our caller's free, so a final Outside puts the walk's or the guest's
        // reads before it. Without it a read of the page could return what the free writes.
        // (The `cpu` read after this needs no barrier of its own: see `Vcpu::load`.)
        self.hal.barrier(Barrier::KickModeReadBeforeFree);
        VcpuMode::from_raw(raw)
    }

    /// `vcpu_enter_guest`, V1–V4: disables interrupts, publishes `InGuest`, and re-checks for
    /// requests and kicks. On success the guest "runs" until the returned guard drops (the VM
    /// exit, V6).
    ///
    /// Returns [`VcpuError::RequestsPending`] (mode back to `Outside`, interrupts restored)
    /// when a request is pending or a requester kicked the vCPU between V2 and V4; handle the
    /// requests and call again. Fails with [`VcpuError::NotLoaded`] or [`VcpuError::WrongCpu`]
    /// unless called on the CPU the vCPU is loaded on, and with [`VcpuError::NotOutside`]
    /// from inside a lockless walk or a running guest.
    pub fn enter_guest(&self) -> Result<InGuest<'_, H>, VcpuError> {
        self.check_owner()?;
        self.check_outside()?;
        // V1: an IPI sent from now on is taken only after the exit.
        let irq = IrqGuard::outermost(&self.hal).ok_or(VcpuError::InterruptsDisabled)?;
        // V2. Relaxed, as in KVM: V3's full barrier and the requester's orders our `load`
        // (the `cpu` store) before its `cpu` read, or our request read after its request (see
        // `Vcpu::load`).
        self.mode.0.store(VcpuMode::InGuest as u64, Ordering::Relaxed);
        // V3: pairs with KickRequestBeforeModeRead (SB-entry). The mode write comes before the
        // request read below and before the guest's (hardware) table walks. Without it we could
        // read no request while the requester reads Outside and sends no IPI: the guest would
        // run on stale TLB entries, or walk tables that are about to be freed.
        self.hal.barrier(Barrier::GuestEntryModeBeforeRequests);
        // V4.
        if self.hal.keeps(Rule::EntryChecksRequests)
            && (self.mode() == VcpuMode::Exiting || self.requests_pending())
        {
            // Nothing was read from the tables yet, so no ordering is needed before this
            // store (KVM's smp_wmb() here orders nothing that the IPI's full barrier does not:
            // a requester that saw InGuest waits for our `irq` to drop).
            self.mode.0.store(VcpuMode::Outside as u64, Ordering::Relaxed);
            self.hal.step(Step::GuestEnter { requests: true });
            drop(irq);
            return Err(VcpuError::RequestsPending);
        }
        self.hal.step(Step::GuestEnter { requests: false });
        Ok(InGuest { vcpu: self, _irq: irq })
    }
}

/// The guest is running on this vCPU (`IN_GUEST_MODE`, interrupts disabled). Dropping the
/// guard is the VM exit (V6): `mode = Outside`, then interrupts on, which takes any IPI that
/// arrived meanwhile.
///
/// A requester may move the mode to [`VcpuMode::Exiting`] while the guard lives: that is the
/// kick, and the guest should exit soon ([`InGuest::kicked`]).
#[must_use = "dropping the guard exits the guest at once"]
pub struct InGuest<'a, H: Cpus> {
    vcpu: &'a Vcpu<H>,
    _irq: IrqGuard<'a, H>,
}

impl<H: Cpus> fmt::Debug for InGuest<'_, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InGuest").field("vcpu", &self.vcpu).finish_non_exhaustive()
    }
}

impl<H: Cpus> InGuest<'_, H> {
    /// The vCPU.
    pub fn vcpu(&self) -> &Vcpu<H> {
        self.vcpu
    }

    /// Whether a requester has kicked the vCPU (mode `Exiting`): the hardware would exit now.
    pub fn kicked(&self) -> bool {
        self.vcpu.mode() == VcpuMode::Exiting
    }
}

impl<H: Cpus> Drop for InGuest<'_, H> {
    fn drop(&mut self) {
        // V6. Pairs with KickModeReadBeforeFree: everything the guest read (a model's
        // hardware walk) comes before the Outside a requester reads, so a requester that sees
        // Outside (and sends no IPI) frees nothing the guest was still reading. (KVM: the VM
        // exit is serializing, and its smp_wmb() follows.) Then `_irq` drops: interrupts on.
        self.vcpu.hal.barrier(Barrier::GuestExitReadsBeforeMode);
        self.vcpu.mode.0.store(VcpuMode::Outside as u64, Ordering::Relaxed);
        self.vcpu.hal.step(Step::GuestExit);
    }
}

/// `kvm_make_all_cpus_request(kvm, req)` with `KVM_REQUEST_WAIT`: sets `req` on every vCPU,
/// kicks those not `Outside` and waits until each of their CPUs has taken the IPI. Returns the
/// CPUs interrupted.
///
/// When it returns, every vCPU is either `Outside` with `req` pending or will see `req` before
/// its next entry (I5.2), and no vCPU is still inside a lockless walk or guest run that began
/// before the call (I5.1). Must be called with interrupts enabled; the caller need not be a
/// CPU ([`Cpus::current_cpu`] `None`: with the `std` backend, a thread that did not register,
/// such as a VMM's MMU-notifier thread): it is no IPI target, so there is no own CPU to skip.
/// `vcpus` must include every vCPU of the VM ([`crate::registry::VcpuRegistry`] keeps such a
/// list for a VM whose vCPUs are created at run time).
pub fn make_all_cpus_request<H: Cpus>(hal: &H, vcpus: &[Vcpu<H>], req: Request) -> CpuSet {
    let me = hal.current_cpu();
    let mut targets = CpuSet::empty();
    for vcpu in vcpus {
        // Q1 (with RequestBeforeSetBit inside).
        vcpu.make_request(req);
        // Q3 (with KickRequestBeforeModeRead inside).
        let mode = vcpu.exiting_guest_mode();
        let needs_ipi = if hal.keeps(Rule::FlushWaitsForReaders) {
            // WAIT requests: also wait for lockless walkers and vCPUs on their way out.
            mode != VcpuMode::Outside
        } else {
            mode == VcpuMode::InGuest
        };
        // Q4: a vCPU that moves to another CPU, or begins a walk, after this point is fine: it
        // reads only tables from after our changes.
        let cpu = vcpu.cpu();
        hal.step(Step::Kick { cpu, ipi: needs_ipi });
        if let Some(cpu) = cpu.filter(|&cpu| needs_ipi && Some(cpu) != me) {
            targets.insert(cpu);
        }
    }
    // Q5: smp_call_function_many(mask, ack_kick, NULL, wait = true).
    hal.ipi_and_wait(targets);
    hal.step(Step::IpiAndWait { targets });
    targets
}

/// `kvm_flush_remote_tlbs`: [`make_all_cpus_request`] with [`Request::TLB_FLUSH`]. The barrier
/// that publishes the caller's page-table changes is the one inside the request
/// (`KickRequestBeforeModeRead`), as in KVM. Returns the CPUs interrupted.
pub fn flush_remote_tlbs<H: Cpus>(hal: &H, vcpus: &[Vcpu<H>]) -> CpuSet {
    make_all_cpus_request(hal, vcpus, Request::TLB_FLUSH)
}

/// `kvm_flush_remote_tlbs_range` (Q6): flushes the TLB entries of `gfns` on every vCPU and
/// waits as [`flush_remote_tlbs`] does. No backend has a ranged hardware flush (Hyper-V's
/// enlightened flush, arm64's `TLBI` by range), so this is the full flush, as in KVM when
/// `kvm_arch_flush_remote_tlbs_range` is unsupported; callers name the range so that a backend
/// with one can use it. Returns the CPUs interrupted.
pub fn flush_remote_tlbs_range<H: Cpus>(hal: &H, vcpus: &[Vcpu<H>], gfns: GfnRange) -> CpuSet {
    hal.step(Step::FlushRange { start: gfns.start(), end: gfns.end() });
    flush_remote_tlbs(hal, vcpus)
}

#[cfg(all(test, feature = "std", target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::std::mutant::Breaks;
    use crate::hal::std::StdHal;
    use core::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use std::thread;

    #[test]
    fn errors_print_what_went_wrong() {
        assert_eq!(std::format!("{}", VcpuError::NotLoaded), "vCPU is not loaded");
        assert_eq!(
            std::format!("{}", VcpuError::NotOutside(VcpuMode::InGuest)),
            "vCPU is in mode InGuest, not Outside"
        );
        assert_eq!(
            std::format!("{}", crate::Error::from(VcpuError::NotACpu)),
            "vCPU: the calling thread is not a CPU (register it first)"
        );
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    /// Runs `f` on a fresh thread that is a CPU, with `vcpu` loaded on it.
    fn on_cpu<H: Cpus>(vcpu: &Vcpu<H>, f: impl FnOnce() + Send) {
        thread::scope(|s| {
            s.spawn(|| {
                let reg = StdHal::register_cpu().unwrap();
                vcpu.load(reg.cpu()).unwrap();
                f();
                vcpu.put().unwrap();
            });
        });
    }

    #[test]
    fn each_mode_has_its_cache_lines_to_itself() {
        let vs = [Vcpu::new(StdHal), Vcpu::new(StdHal)];
        let line = |p: *const u64| p as usize / 128;
        let (m0, m1) = (vs[0].mode_cell().as_ptr().cast_const(), vs[1].mode_cell().as_ptr().cast_const());
        assert_eq!(m0 as usize % 128, 0);
        assert_ne!(line(m0), line(m1));
        for v in &vs {
            let mode = line(v.mode_cell().as_ptr());
            assert_ne!(mode, line(v.requests.as_ptr()), "flushers write requests");
            assert_ne!(mode, line(v.cpu.as_ptr().cast::<u64>()));
        }
    }

    #[test]
    fn request_bits_are_checked() {
        assert_eq!(Request::new(63).map(Request::bit), Ok(63));
        assert_eq!(Request::new(64), Err(VcpuError::RequestOutOfRange));
    }

    #[test]
    fn check_request_clears_only_its_bit() {
        let v = Vcpu::new(StdHal);
        let arch = Request::new(Request::ARCH_BASE).unwrap();
        assert!(!v.requests_pending());
        v.make_request(Request::TLB_FLUSH);
        v.make_request(arch);
        assert!(v.check_request(Request::TLB_FLUSH));
        assert!(!v.check_request(Request::TLB_FLUSH));
        assert!(v.requests_pending());
        assert!(v.check_request(arch));
        assert!(!v.requests_pending());
    }

    #[test]
    fn exiting_guest_mode_kicks_only_a_running_guest() {
        let v = Vcpu::new(StdHal);
        assert_eq!(v.exiting_guest_mode(), VcpuMode::Outside);
        assert_eq!(v.mode(), VcpuMode::Outside);
        on_cpu(&v, || {
            let g = v.enter_guest().unwrap();
            assert!(!g.kicked());
            assert_eq!(v.exiting_guest_mode(), VcpuMode::InGuest);
            assert!(g.kicked());
            assert_eq!(v.exiting_guest_mode(), VcpuMode::Exiting);
            drop(g);
            assert_eq!(v.mode(), VcpuMode::Outside);
        });
    }

    #[test]
    fn entry_needs_the_owning_cpu() {
        let v = Vcpu::new(StdHal);
        let reg = StdHal::register_cpu().unwrap();
        assert_eq!(v.enter_guest().err(), Some(VcpuError::NotLoaded));
        let other = CpuId::new((reg.cpu().index() + 1) % CpuSet::CAPACITY).unwrap();
        v.load(other).unwrap();
        assert_eq!(v.load(reg.cpu()), Err(VcpuError::AlreadyLoaded(other)));
        assert_eq!(v.enter_guest().err(), Some(VcpuError::WrongCpu));
        assert_eq!(v.put(), Err(VcpuError::WrongCpu));
        drop(reg);
    }

    #[test]
    fn pending_request_cancels_entry_until_handled() {
        let v = Vcpu::new(StdHal);
        on_cpu(&v, || {
            v.make_request(Request::TLB_FLUSH);
            assert_eq!(v.enter_guest().err(), Some(VcpuError::RequestsPending));
            assert_eq!(v.mode(), VcpuMode::Outside);
            assert!(v.check_request(Request::TLB_FLUSH));
            let g = v.enter_guest().unwrap();
            assert_eq!(v.mode(), VcpuMode::InGuest);
            assert_eq!(v.put(), Err(VcpuError::NotOutside(VcpuMode::InGuest)));
            assert_eq!(v.enter_guest().err(), Some(VcpuError::NotOutside(VcpuMode::InGuest)));
            drop(g);
        });
    }

    #[test]
    fn mutant_entry_without_request_check_enters_with_a_request_pending() {
        let v = Vcpu::new(Breaks(Rule::EntryChecksRequests));
        on_cpu(&v, || {
            v.make_request(Request::TLB_FLUSH);
            let g = v.enter_guest().expect("the mutant skips V4");
            assert!(g.vcpu().requests_pending());
        });
    }

    /// SB-entry on real threads: a flush does not return while the vCPU runs its guest; it
    /// returns after the exit, with the request pending.
    #[test]
    fn flush_waits_for_a_running_guest_to_exit() {
        let vcpus = [Vcpu::new(StdHal), Vcpu::new(StdHal)];
        let in_guest = AtomicBool::new(false);
        let exited = AtomicBool::new(false);
        let flushed = AtomicBool::new(false);
        thread::scope(|s| {
            s.spawn(|| {
                on_cpu(&vcpus[0], || {
                    let g = vcpus[0].enter_guest().unwrap();
                    in_guest.store(true, SeqCst);
                    // The "guest" runs until kicked: the kick is the request's cmpxchg.
                    wait_until("the kick", || g.kicked());
                    assert!(!flushed.load(SeqCst), "flush returned while the guest ran");
                    exited.store(true, SeqCst);
                    drop(g);
                    wait_until("the flush", || flushed.load(SeqCst));
                    assert!(vcpus[0].check_request(Request::TLB_FLUSH));
                });
            });
            let reg = StdHal::register_cpu().unwrap();
            wait_until("the guest", || in_guest.load(SeqCst));
            let targets = flush_remote_tlbs(&StdHal, &vcpus);
            assert!(exited.load(SeqCst), "flush returned before the guest exited");
            assert!(targets.contains(vcpus[0].cpu().unwrap()));
            flushed.store(true, SeqCst);
            // vCPU 1 was never loaded: nothing to interrupt, but its request is set.
            assert!(vcpus[1].check_request(Request::TLB_FLUSH));
            drop(reg);
        });
    }

    #[test]
    fn flush_skips_the_callers_own_cpu() {
        let v = [Vcpu::new(StdHal)];
        on_cpu(&v[0], || {
            // Our own vCPU is in guest mode and our interrupts are off: an IPI to ourselves
            // could never be taken. It is kicked but not interrupted, and the flush returns.
            let g = v[0].enter_guest().unwrap();
            assert!(flush_remote_tlbs(&StdHal, &v).is_empty());
            assert!(g.kicked());
            drop(g);
            assert!(v[0].check_request(Request::TLB_FLUSH));
        });
    }
}
