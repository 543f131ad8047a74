//! The `std` backend: real threads on the host CPU.
//!
//! Fences are the portable C11 fences (`core::sync::atomic::fence`), locks are parking_lot's
//! raw locks.
//!
//! ## CPUs, interrupts and IPIs (Linux only)
//!
//! [`StdHal`] also implements [`Cpus`](crate::hal::Cpus), with threads playing CPUs:
//!
//! * **CPUs.** A thread becomes a CPU by calling [`StdHal::register_cpu`], which claims one of
//!   [`CpuSet::CAPACITY`](crate::hal::CpuSet::CAPACITY) (256) slots and returns a
//!   [`CpuRegistration`]; the slot is given back when that guard drops (or, if it is leaked,
//!   when the thread exits). The slots are **process-global**, like a host's CPUs: every
//!   `StdHal` value (it is a zero-sized handle) sees the same CPUs, and every VM of the process
//!   runs its vCPUs on them. A VM's flush interrupts only the CPUs its own vCPUs are loaded
//!   on, so VMs do not wait for each other. `current_cpu` reads a thread-local; on a thread
//!   that did not register it returns `None`. Such a thread may still flush (it is no IPI
//!   target, so nothing waits for it); the vCPU-side calls refuse it with
//!   [`VcpuError::NotACpu`](crate::vcpu::VcpuError::NotACpu). Nothing panics for want of a
//!   registration.
//! * **Interrupts: a soft mask.** A real-time signal, [`StdHal::ipi_signal`] (by default
//!   `SIGRTMIN() +` [`IPI_SIGNAL_OFFSET`]; choose another with [`StdHal::set_ipi_signal`]
//!   before the first registration), plays the IPI. It is never blocked on a CPU thread: as with
//!   PowerPC's lazy interrupt masking, "interrupts off" is a thread-local flag. `irq_save`
//!   only clears the flag (no system call). The handler, when it finds the flag clear, records
//!   the IPI as pending in another thread-local and returns *without* acknowledging it;
//!   `irq_restore`, when it turns interrupts back on, sets the flag and then acknowledges a
//!   pending IPI itself, exactly as the handler would. So an IPI sent while interrupts are off
//!   is taken, at the latest, before the re-enabling `irq_restore` returns: the "pending IPI is
//!   taken at `local_irq_enable`" behaviour the protocols rely on. The flag and the pending
//!   bit are touched only by their thread and by its signal handler (which interrupts that
//!   thread), so relaxed atomics and `compiler_fence`s order them; no hardware fence is
//!   needed for that, and interrupts off/on cost a few loads and stores.
//! * **IPI with wait.** `ipi_and_wait` takes a ticket from each target slot's `sent` counter,
//!   sends the signal with `pthread_kill`, and spins (yielding) until the slot's `acked`
//!   counter reaches the ticket. An acknowledgement (async-signal-safe: atomics only), by the
//!   handler or by a deferring `irq_restore`, raises `acked` to the `sent` value it reads
//!   (`fetch_max`), between two `SeqCst` fences. Signals may coalesce or be delivered more
//!   than once, and an IPI may be acknowledged twice; the counters make that harmless.
//!   Offline slots and the caller's own slot are skipped.
//!
//! The handler is installed once per process (`sigaction`, `SA_RESTART`) by the first
//! registration, before any slot can be signalled; from then on the signal number is fixed.
//! Registration fails with [`CpuError::SignalInUse`] if something else already handles that
//! signal.

#[cfg(target_os = "linux")]
pub use self::cpus::{CpuError, CpuRegistration, IPI_SIGNAL_OFFSET};
use super::Hal;
use crate::barrier::FenceKind;
use core::sync::atomic::{self, Ordering};

/// The `std` backend: C11 fences, `core` atomics, parking_lot locks; on Linux, threads as CPUs
/// and a real-time signal as the IPI (see the [module documentation](self)).
#[derive(Clone, Copy, Debug, Default)]
pub struct StdHal;

// SAFETY: core atomics and C11 fences give exactly the C11 guarantees; `barrier` and `keeps`
// keep their defaults; parking_lot's raw locks keep the lock_api contract; `spin_hint` returns.
unsafe impl Hal for StdHal {
    type AtomicU64 = atomic::AtomicU64;
    type AtomicUsize = atomic::AtomicUsize;
    type AtomicBool = atomic::AtomicBool;
    type RawRwLock = parking_lot::RawRwLock;
    type RawMutex = parking_lot::RawMutex;

    #[inline(always)]
    fn fence(&self, kind: FenceKind) {
        atomic::fence(match kind {
            FenceKind::Wmb | FenceKind::Release => Ordering::Release,
            FenceKind::Rmb | FenceKind::Acquire => Ordering::Acquire,
            FenceKind::Mb => Ordering::SeqCst,
        })
    }

    #[inline(always)]
    fn spin_hint(&self) {
        // Two cores and more threads than cores are the normal case in tests: yield rather
        // than burn the time slice of the thread we wait for.
        std::thread::yield_now()
    }
}

#[cfg(target_os = "linux")]
mod cpus {
    use super::StdHal;
    use crate::hal::{CpuId, CpuSet, Cpus, IrqState};
    use core::cell::Cell;
    use core::fmt;
    use core::marker::PhantomData;
    use core::sync::atomic::{
        compiler_fence, fence, AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed, Ordering::SeqCst,
    };
    use std::sync::OnceLock;

    /// The IPI signal is `SIGRTMIN() + IPI_SIGNAL_OFFSET`. The offset keeps clear of
    /// `SIGRTMIN() + 0`, which VMMs commonly use to kick vCPU threads out of `KVM_RUN`.
    pub const IPI_SIGNAL_OFFSET: i32 = 4;

    /// `CURRENT` when the thread is not a CPU (beyond every slot number).
    const NO_CPU: u16 = u16::MAX;

    /// The IPI signal chosen with [`StdHal::set_ipi_signal`], or 0 for the default. Written
    /// only under `FROZEN`'s lock while `FROZEN` is false; read by senders, which reach a
    /// target only through a registration made after the freeze.
    static SIGNAL: AtomicI32 = AtomicI32::new(0);

    /// Whether the signal number is fixed (the first registration began installing the
    /// handler for it).
    static FROZEN: parking_lot::Mutex<bool> = parking_lot::const_mutex(false);

    std::thread_local! {
        /// This thread's CPU slot, or `NO_CPU`. Const-initialized and without a destructor, so
        /// reading it compiles to a plain TLS access that the signal handler may do.
        static CURRENT: Cell<u16> = const { Cell::new(NO_CPU) };
        /// This thread's soft interrupt mask. One thread-local for both words, so that the
        /// walk's fast path computes one TLS address. Const-initialized, no destructor.
        static IRQ: SoftIrq = const {
            SoftIrq { on: AtomicBool::new(true), pending: AtomicBool::new(false) }
        };
        /// Gives the slot back at thread exit if the registration guard was leaked.
        static EXIT_RELEASE: ExitRelease = const { ExitRelease };
    }

    /// A thread's soft interrupt mask. Both words are written by the thread and read or
    /// written by its own signal handler only, so relaxed atomics ordered by `compiler_fence`s
    /// suffice (atomics, so that the handler's accesses are not data races).
    struct SoftIrq {
        /// Whether this thread's "interrupts" are enabled. Written only by the thread
        /// (`irq_save`, `irq_restore`), read by it and by its signal handler.
        on: AtomicBool,
        /// Whether an IPI arrived while `on` was clear and is not yet acknowledged. Set only by
        /// the signal handler (while `on` is clear), cleared only by the thread in
        /// `irq_restore` (after it set `on`).
        pending: AtomicBool,
    }

    /// `pthread_t`, which is an integer on Linux but not on every libc.
    #[derive(Clone, Copy)]
    struct Thread(libc::pthread_t);

    // SAFETY: a `pthread_t` names a thread of this process and may be used from any thread;
    // the slot lock keeps it from being used after its thread gives the slot back.
    unsafe impl Send for Thread {}

    /// One CPU slot.
    #[repr(align(128))]
    struct Slot {
        /// The thread that owns the slot, `None` when the CPU is offline. Senders hold the
        /// lock while they signal, so the thread cannot exit between the check and the kill.
        thread: parking_lot::Mutex<Option<Thread>>,
        /// IPIs sent to this slot so far (tickets).
        sent: AtomicU64,
        /// The highest ticket acknowledged by the slot's CPU (or by its going offline).
        acked: AtomicU64,
    }

    #[allow(clippy::declare_interior_mutable_const)] // only used to initialize `SLOTS`
    const EMPTY_SLOT: Slot =
        Slot { thread: parking_lot::const_mutex(None), sent: AtomicU64::new(0), acked: AtomicU64::new(0) };

    static SLOTS: [Slot; CpuSet::CAPACITY] = [EMPTY_SLOT; CpuSet::CAPACITY];

    /// The outcome of installing the handler, once per process.
    static INSTALLED: OnceLock<Result<(), CpuError>> = OnceLock::new();

    /// Why a thread could not become a CPU, or the IPI signal could not be chosen.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum CpuError {
        /// The thread is already this CPU; a thread is at most one CPU.
        AlreadyRegistered(CpuId),
        /// All [`CpuSet::CAPACITY`] slots are taken.
        NoFreeSlot,
        /// Another handler is already installed for the IPI signal (the signal number).
        SignalInUse(i32),
        /// `sigaction` failed (the `errno`).
        Signal(i32),
        /// [`StdHal::set_ipi_signal`] with a signal outside `SIGRTMIN()..=SIGRTMAX()` (the
        /// number): only real-time signals queue, which the IPI's retry on a full queue assumes.
        NotRealtime(i32),
        /// [`StdHal::set_ipi_signal`] after the first registration fixed the IPI signal (the
        /// signal in use).
        SignalFixed(i32),
    }

    impl fmt::Display for CpuError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                CpuError::AlreadyRegistered(cpu) => write!(f, "thread is already CPU {}", cpu.index()),
                CpuError::NoFreeSlot => write!(f, "all {} CPU slots are taken", CpuSet::CAPACITY),
                CpuError::SignalInUse(sig) => write!(f, "signal {sig} already has a handler"),
                CpuError::Signal(errno) => write!(f, "sigaction failed (errno {errno})"),
                CpuError::NotRealtime(sig) => {
                    write!(f, "signal {sig} is not a real-time signal (SIGRTMIN..=SIGRTMAX)")
                }
                CpuError::SignalFixed(sig) => {
                    write!(f, "the IPI signal is already fixed to {sig} by the first CPU registration")
                }
            }
        }
    }

    impl core::error::Error for CpuError {}

    /// The current thread's CPU registration. Dropping it takes the CPU offline.
    ///
    /// Not `Send`: the registration belongs to the thread that made it.
    #[must_use = "the thread stops being a CPU when the registration drops"]
    #[derive(Debug)]
    pub struct CpuRegistration {
        cpu: CpuId,
        _not_send: PhantomData<*const ()>,
    }

    impl CpuRegistration {
        /// The CPU this thread now is.
        pub fn cpu(&self) -> CpuId {
            self.cpu
        }
    }

    impl Drop for CpuRegistration {
        /// Takes the CPU offline. IPIs sent to it and not yet taken count as taken: an offline
        /// CPU runs no protocol code.
        ///
        /// # Panics
        ///
        /// If interrupts are disabled on this thread: a CPU inside a critical section (a
        /// lockless walk, guest mode) must not go offline, or a flusher would stop waiting
        /// for it while it still reads.
        fn drop(&mut self) {
            assert!(
                IRQ.with(|m| m.on.load(Relaxed)),
                "CpuRegistration dropped with interrupts disabled (CPU {} still in a critical section)",
                self.cpu.index()
            );
            release(self.cpu.index());
        }
    }

    /// Thread-exit fallback for a leaked [`CpuRegistration`].
    struct ExitRelease;

    impl Drop for ExitRelease {
        fn drop(&mut self) {
            let slot = CURRENT.with(Cell::get);
            if slot != NO_CPU {
                release(usize::from(slot));
            }
        }
    }

    /// Takes slot `i`, owned by the current thread, offline.
    fn release(i: usize) {
        let slot = &SLOTS[i];
        let mut thread = slot.thread.lock();
        *thread = None;
        CURRENT.with(|c| c.set(NO_CPU));
        // Senders that took a ticket before we went offline stop waiting; later senders see
        // `None` under the lock and skip the slot.
        slot.acked.fetch_max(slot.sent.load(SeqCst), SeqCst);
    }

    /// Acknowledges every IPI sent to this thread's slot so far: raises `acked` to the `sent`
    /// value read now. Called by the handler (interrupts on) and by `irq_restore` (an IPI that
    /// arrived while they were off). Async-signal-safe. Idempotent: acknowledging twice, or
    /// with no IPI outstanding, only raises `acked` to a value `sent` already reached, which
    /// no sender waits beyond.
    #[inline]
    fn ack_ipis() {
        // Everything the sender wrote before taking its ticket is visible from here on, and
        // everything this thread did before this point (in particular every access it made
        // while interrupts were off) is visible to a sender that reads our ack (the contract's
        // "full barrier on both sides").
        fence(SeqCst);
        let i = CURRENT.with(Cell::get);
        if i != NO_CPU {
            let slot = &SLOTS[usize::from(i)];
            slot.acked.fetch_max(slot.sent.load(SeqCst), SeqCst);
        }
        fence(SeqCst);
    }

    /// The IPI handler. Async-signal-safe: const thread-local reads and atomics, no locks, no
    /// allocation, no `errno`.
    ///
    /// The handler interrupts its own thread between two instructions, so it sees every
    /// access the thread made before that point and none after (program order; the
    /// `compiler_fence`s in `irq_save`/`irq_restore` keep the compiler from moving the
    /// thread's accesses across the flag). If interrupts are soft-disabled it only records
    /// the IPI; the re-enabling `irq_restore` acknowledges it.
    extern "C" fn on_ipi(_sig: libc::c_int) {
        compiler_fence(SeqCst);
        if IRQ.with(|m| m.on.load(Relaxed)) {
            ack_ipis();
        } else {
            IRQ.with(|m| m.pending.store(true, Relaxed));
        }
        compiler_fence(SeqCst);
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Installs `on_ipi` for the IPI signal, refusing to replace another handler. Fixes the
    /// signal number first, whatever the outcome (the outcome is kept for the process).
    fn install() -> Result<(), CpuError> {
        *FROZEN.lock() = true;
        let sig = StdHal::ipi_signal();
        // SAFETY: `sigaction` with a null new action only reads the current one into `old`,
        // a zero-initialized `sigaction` (a plain C struct for which all-zero is valid).
        let old = unsafe {
            let mut old: libc::sigaction = core::mem::zeroed();
            if libc::sigaction(sig, core::ptr::null(), &mut old) != 0 {
                return Err(CpuError::Signal(errno()));
            }
            old
        };
        if old.sa_sigaction != libc::SIG_DFL {
            return Err(CpuError::SignalInUse(sig));
        }
        // SAFETY: `act` is a fully initialized `sigaction` whose handler, `on_ipi`, is an
        // `extern "C" fn(c_int)` (no SA_SIGINFO, so the one-argument form) and is
        // async-signal-safe; the mask starts empty; nothing else handles this signal (checked
        // above), so no other code's handler is replaced.
        unsafe {
            let mut act: libc::sigaction = core::mem::zeroed();
            act.sa_sigaction = on_ipi as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            if libc::sigaction(sig, &act, core::ptr::null_mut()) != 0 {
                return Err(CpuError::Signal(errno()));
            }
        }
        Ok(())
    }

    /// This thread's soft mask: (`on`, `pending`).
    #[cfg(test)]
    pub(super) fn soft_mask() -> (bool, bool) {
        (IRQ.with(|m| m.on.load(Relaxed)), IRQ.with(|m| m.pending.load(Relaxed)))
    }

    /// Blocks (`libc::SIG_BLOCK`) or unblocks (`libc::SIG_UNBLOCK`) the IPI signal for the
    /// calling thread. Only registration uses it (and tests): interrupts off is the soft mask.
    pub(super) fn mask_ipi(how: libc::c_int) {
        // SAFETY: `set` is initialized by `sigemptyset` before use; `pthread_sigmask` reads
        // it and writes no old set (null).
        let rc = unsafe {
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, StdHal::ipi_signal());
            libc::pthread_sigmask(how, &set, core::ptr::null_mut())
        };
        // Fails only for an invalid `how` or signal, neither of which we pass.
        assert_eq!(rc, 0, "pthread_sigmask failed");
    }

    impl StdHal {
        /// The signal that plays the IPI: the one chosen with
        /// [`set_ipi_signal`](Self::set_ipi_signal), by default `SIGRTMIN() +`
        /// [`IPI_SIGNAL_OFFSET`]. The process must not use it for anything else.
        pub fn ipi_signal() -> i32 {
            match SIGNAL.load(Relaxed) {
                0 => libc::SIGRTMIN() + IPI_SIGNAL_OFFSET,
                sig => sig,
            }
        }

        /// Chooses the real-time signal that plays the IPI, for the whole process. Call it
        /// before the first [`register_cpu`](Self::register_cpu) (the first registration
        /// installs the handler and fixes the number); a VMM calls it at start-up if the
        /// default collides with a signal it uses.
        ///
        /// Fails with [`CpuError::NotRealtime`] for a signal outside
        /// `SIGRTMIN()..=SIGRTMAX()`, and with [`CpuError::SignalFixed`] once the signal is
        /// fixed to another number (asking for the number in use succeeds).
        pub fn set_ipi_signal(signal: i32) -> Result<(), CpuError> {
            if !(libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&signal) {
                return Err(CpuError::NotRealtime(signal));
            }
            let frozen = FROZEN.lock();
            if *frozen {
                let current = Self::ipi_signal();
                return if current == signal { Ok(()) } else { Err(CpuError::SignalFixed(current)) };
            }
            SIGNAL.store(signal, Relaxed);
            Ok(())
        }

        /// Makes the calling thread a CPU: claims the lowest free slot (process-wide), installs
        /// the IPI handler if this is the first registration in the process, and unblocks the
        /// signal (a new thread inherits its creator's signal mask, which may have it blocked).
        /// Interrupts off is the soft mask, so the signal stays unblocked even inside
        /// `irq_save`: the handler defers the IPI itself.
        ///
        /// The thread must keep the registration while it runs vCPU-side protocol code (guest
        /// entry, lockless walks): on a thread that is not a CPU,
        /// [`current_cpu`](Cpus::current_cpu) is `None` and those calls fail with
        /// [`VcpuError::NotACpu`](crate::vcpu::VcpuError::NotACpu). Flushes need no
        /// registration.
        pub fn register_cpu() -> Result<CpuRegistration, CpuError> {
            let current = CURRENT.with(Cell::get);
            if current != NO_CPU {
                return Err(CpuError::AlreadyRegistered(slot_id(current)));
            }
            (*INSTALLED.get_or_init(install))?;
            // A new thread inherits its creator's mask, which may have the IPI blocked; a CPU
            // must always be able to receive it (the soft mask decides when it is taken).
            mask_ipi(libc::SIG_UNBLOCK);
            // Registers the thread-exit fallback (first access of a thread-local with a
            // destructor).
            EXIT_RELEASE.with(|_| ());
            // SAFETY: `pthread_self` has no preconditions.
            let me = Thread(unsafe { libc::pthread_self() });
            for (i, slot) in SLOTS.iter().enumerate() {
                let mut thread = slot.thread.lock();
                if thread.is_none() {
                    // The slot number fits: `i < CpuSet::CAPACITY < NO_CPU`.
                    CURRENT.with(|c| c.set(i as u16));
                    *thread = Some(me);
                    return Ok(CpuRegistration { cpu: slot_id(i as u16), _not_send: PhantomData });
                }
            }
            Err(CpuError::NoFreeSlot)
        }
    }

    #[inline]
    fn slot_id(i: u16) -> CpuId {
        match CpuId::new(usize::from(i)) {
            Ok(cpu) => cpu,
            Err(_) => unreachable!("slot numbers are below CpuSet::CAPACITY"),
        }
    }

    // SAFETY:
    // * `current_cpu` returns the slot the calling thread claimed under the slot lock; a slot
    //   has one owner at a time, so no two running threads share an id. A thread that owns no
    //   slot gets `None`: no slot names it, so no IPI is ever sent to it.
    // * After `irq_save` returns, this thread's `IRQ.on` is clear. An IPI is acknowledged to
    //   this CPU only by `ack_ipis`, called by the handler only when it reads `IRQ.on` set,
    //   and by `irq_restore` only after it re-enables (sets `IRQ.on`); nothing else sets the
    //   flag (restores nest), so no acknowledgement happens until the matching `irq_restore`
    //   re-enables. The handler runs on this thread, between two of its instructions, so its
    //   relaxed read sees the thread's latest store in program order; the `compiler_fence`s
    //   keep the compiler from moving the accesses made while interrupts are off (the walk's
    //   reads) above the clearing store or below the setting store. Hence every such access
    //   precedes, in program order, the acknowledging `ack_ipis`, whose leading `SeqCst` fence
    //   and `SeqCst` RMW publish them to the sender: the same ordering the old blocked-signal
    //   handler gave.
    // * No IPI is lost: a signal delivered while the flag is clear sets `IRQ.pending`, which
    //   only `irq_restore` clears, after setting the flag and before acknowledging. A signal
    //   delivered after the flag is set is acknowledged by the handler. If one lands between
    //   the flag store and the `IRQ.pending` check, the handler acknowledges and `irq_restore`
    //   may acknowledge again: harmless, since an acknowledgement is a `fetch_max` of the
    //   current `sent`. The handler never sets `IRQ.pending` once the flag is set, so the
    //   clear cannot discard an unacknowledged IPI.
    // * `ipi_and_wait` takes a ticket from each online target's `sent` (a SeqCst RMW after a
    //   SeqCst fence: the caller's earlier writes are ordered before it), signals the thread
    //   while holding the slot lock (so the thread is alive and online), and returns only when
    //   `acked` reaches the ticket. `acked` rises only in the handler, which reads `sent` after
    //   the signal was delivered and so sees our ticket, or when the CPU goes offline. The
    //   handler's SeqCst fences and the SeqCst `acked` RMW/loads, followed by our final fence,
    //   make the target's earlier work visible to us. Offline slots and the caller's own slot
    //   are skipped.
    unsafe impl Cpus for StdHal {
        /// `None` if the calling thread is not a CPU (see [`StdHal::register_cpu`]).
        #[inline]
        fn current_cpu(&self) -> Option<CpuId> {
            let i = CURRENT.with(Cell::get);
            (i != NO_CPU).then(|| slot_id(i))
        }

        #[inline]
        fn irq_save(&self) -> IrqState {
            // Only this thread writes `on`, so a load and a store (no RMW) suffice: a handler
            // that runs between them reads "on" and acknowledges, which is fine, since nothing
            // of the critical section has run yet.
            let was_on = IRQ.with(|m| {
                let was_on = m.on.load(Relaxed);
                m.on.store(false, Relaxed);
                was_on
            });
            // The caller's accesses with interrupts off stay after the clearing store.
            compiler_fence(SeqCst);
            IrqState(was_on)
        }

        #[inline]
        unsafe fn irq_restore(&self, state: IrqState) {
            if state.0 {
                // The caller's accesses with interrupts off stay before the setting store.
                compiler_fence(SeqCst);
                let pending = IRQ.with(|m| {
                    m.on.store(true, Relaxed);
                    // The pending check stays after the setting store: from the store on,
                    // the handler acknowledges by itself and no longer sets `pending`.
                    compiler_fence(SeqCst);
                    let pending = m.pending.load(Relaxed);
                    if pending {
                        m.pending.store(false, Relaxed);
                    }
                    pending
                });
                if pending {
                    // What the handler would have done. A signal landing anywhere in this
                    // block is acknowledged by the handler too; the second `fetch_max` is
                    // harmless.
                    ack_ipis();
                }
                compiler_fence(SeqCst);
            }
        }

        /// The caller need not be a CPU: a thread that did not register is no target, so
        /// nothing can wait for it, and it interrupts every online CPU of `targets`.
        ///
        /// # Panics
        ///
        /// If the caller is a CPU with interrupts disabled and some target must be
        /// interrupted (two such callers would wait for each other forever, which Linux also
        /// forbids; the crate never makes such a call), or if `pthread_kill` fails for a
        /// reason other than a full signal queue (it cannot: the target is alive and the
        /// signal valid).
        fn ipi_and_wait(&self, targets: CpuSet) {
            let me = CURRENT.with(Cell::get);
            let mut tickets = [0u64; CpuSet::CAPACITY];
            // The caller's writes before the call, before any ticket is taken.
            fence(SeqCst);
            for cpu in targets.iter() {
                let i = cpu.index();
                if i == usize::from(me) {
                    continue;
                }
                let slot = &SLOTS[i];
                let thread = slot.thread.lock();
                let Some(Thread(t)) = *thread else { continue };
                assert!(
                    me == NO_CPU || IRQ.with(|m| m.on.load(Relaxed)),
                    "ipi_and_wait with interrupts disabled would wait for CPU {i} forever if it waits for us"
                );
                tickets[i] = slot.sent.fetch_add(1, SeqCst) + 1;
                loop {
                    // SAFETY: `t` is a live thread of this process: it owns the slot, and it
                    // cannot give the slot back (and exit) while we hold the slot lock. The
                    // signal has our handler installed (registration installs it before any
                    // slot goes online).
                    let rc = unsafe { libc::pthread_kill(t, StdHal::ipi_signal()) };
                    match rc {
                        0 => break,
                        // The real-time signal queue is full: signals for the target are
                        // pending, but maybe none sent after our ticket. Try again.
                        libc::EAGAIN => std::thread::yield_now(),
                        err => panic!("pthread_kill to CPU {i} failed (errno {err})"),
                    }
                }
            }
            for i in targets.iter().map(CpuId::index) {
                let ticket = tickets[i];
                if ticket != 0 {
                    while SLOTS[i].acked.load(SeqCst) < ticket {
                        std::thread::yield_now();
                    }
                }
            }
            // Everything the targets did before taking the IPI, before what the caller does
            // next.
            fence(SeqCst);
        }
    }
}

/// Backends for tests: [`StdHal`], except that one breaks a [`Rule`](crate::rule::Rule) (a
/// mutant), as a model backend may, and one records the [`Step`](crate::step::Step)s core
/// reports, as the checkers' trace recorders do. Tests use the first to show that a
/// real-thread test fails when the rule it checks is broken, and the second to check the
/// values the steps carry (the checkers replay traces by them).
#[cfg(all(test, target_os = "linux"))]
pub(crate) mod mutant {
    use super::StdHal;
    use crate::hal::{CpuId, CpuSet, Cpus, Hal, IrqState};
    use crate::rule::Rule;
    use crate::step::Step;
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;

    /// The part of a test backend's `Hal` that is all `StdHal`'s: the atomics, the locks and
    /// the fences. An `unsafe impl Hal` of a test backend invokes it, then writes the methods
    /// it changes, and `spin_hint`.
    macro_rules! std_hal_items {
        () => {
            type AtomicU64 = <$crate::hal::std::StdHal as $crate::hal::Hal>::AtomicU64;
            type AtomicUsize = <$crate::hal::std::StdHal as $crate::hal::Hal>::AtomicUsize;
            type AtomicBool = <$crate::hal::std::StdHal as $crate::hal::Hal>::AtomicBool;
            type RawRwLock = <$crate::hal::std::StdHal as $crate::hal::Hal>::RawRwLock;
            type RawMutex = <$crate::hal::std::StdHal as $crate::hal::Hal>::RawMutex;

            fn fence(&self, kind: $crate::barrier::FenceKind) {
                $crate::hal::Hal::fence(&$crate::hal::std::StdHal, kind)
            }
        };
    }
    pub(crate) use std_hal_items;

    /// [`StdHal`] with one rule broken.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Breaks(pub(crate) Rule);

    // SAFETY: everything delegates to `StdHal`, except `keeps`, which returns `false` for the
    // one rule this model-style backend was told to break, as the contract allows.
    unsafe impl Hal for Breaks {
        std_hal_items!();

        fn keeps(&self, rule: Rule) -> bool {
            rule != self.0
        }

        fn spin_hint(&self) {
            StdHal.spin_hint()
        }
    }

    /// [`StdHal`] that keeps every step core reports, in order.
    #[derive(Clone, Debug, Default)]
    pub(crate) struct Records(Arc<Mutex<Vec<Step>>>);

    impl Records {
        /// The steps reported so far; the record starts again empty.
        pub(crate) fn take(&self) -> Vec<Step> {
            core::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    // SAFETY: everything delegates to `StdHal`, except `step`, which only appends to a list.
    unsafe impl Hal for Records {
        std_hal_items!();

        fn step(&self, step: Step) {
            self.0.lock().unwrap().push(step);
        }

        fn spin_hint(&self) {
            StdHal.spin_hint()
        }
    }

    /// `Cpus` of a test backend: all of it `StdHal`'s.
    macro_rules! std_cpus {
        ($backend:ty) => {
            // SAFETY: delegates to `StdHal`'s `Cpus`, which keeps the contract.
            unsafe impl Cpus for $backend {
                fn current_cpu(&self) -> Option<CpuId> {
                    StdHal.current_cpu()
                }

                fn irq_save(&self) -> IrqState {
                    StdHal.irq_save()
                }

                unsafe fn irq_restore(&self, state: IrqState) {
                    // SAFETY: the caller's obligation, passed on unchanged.
                    unsafe { StdHal.irq_restore(state) }
                }

                fn ipi_and_wait(&self, targets: CpuSet) {
                    StdHal.ipi_and_wait(targets)
                }
            }
        };
    }
    std_cpus!(Breaks);
    std_cpus!(Records);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::hal::{CpuId, CpuSet, Cpus, IrqGuard, IrqState};
    use core::sync::atomic::AtomicBool;
    use core::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;
    use std::thread;

    /// Spins (yielding) until `cond` holds. Liveness only: a generous bound turns a hang into
    /// a failure; nothing asserts how long it took.
    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    /// Whether the IPI signal is blocked in the thread's real signal mask.
    fn signal_blocked() -> bool {
        // SAFETY: `cur` is written by `pthread_sigmask` (null new set: query only) before
        // `sigismember` reads it.
        unsafe {
            let mut cur: libc::sigset_t = core::mem::zeroed();
            assert_eq!(libc::pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut cur), 0);
            libc::sigismember(&cur, StdHal::ipi_signal()) == 1
        }
    }

    /// Whether this thread's soft mask has interrupts off.
    fn irqs_off() -> bool {
        !cpus::soft_mask().0
    }

    #[test]
    fn registration_names_this_thread_and_is_exclusive() {
        thread::spawn(|| {
            let reg = StdHal::register_cpu().unwrap();
            assert_eq!(StdHal.current_cpu(), Some(reg.cpu()));
            assert_eq!(StdHal::register_cpu().unwrap_err(), CpuError::AlreadyRegistered(reg.cpu()));
            drop(reg);
            let again = StdHal::register_cpu().unwrap();
            assert_eq!(StdHal.current_cpu(), Some(again.cpu()));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn current_cpu_is_none_on_a_thread_that_is_not_a_cpu() {
        thread::spawn(|| {
            assert_eq!(StdHal.current_cpu(), None);
            let reg = StdHal::register_cpu().unwrap();
            assert_eq!(StdHal.current_cpu(), Some(reg.cpu()));
            drop(reg);
            assert_eq!(StdHal.current_cpu(), None);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_that_is_not_a_cpu_interrupts_every_target() {
        // The target keeps interrupts off until told; the sender is no CPU. The IPI must
        // still be sent and waited for.
        let target_cpu: Arc<std::sync::Mutex<Option<CpuId>>> = Arc::default();
        let release = Arc::new(AtomicBool::new(false));
        let target = {
            let (target_cpu, release) = (target_cpu.clone(), release.clone());
            thread::spawn(move || {
                let reg = StdHal::register_cpu().unwrap();
                let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
                *target_cpu.lock().unwrap() = Some(reg.cpu());
                wait_until("the sender to start", || release.load(SeqCst));
                drop(guard);
                drop(reg);
            })
        };
        thread::spawn(move || {
            assert_eq!(StdHal.current_cpu(), None);
            wait_until("the target", || target_cpu.lock().unwrap().is_some());
            let mut set = CpuSet::empty();
            set.insert(target_cpu.lock().unwrap().unwrap());
            release.store(true, SeqCst);
            StdHal.ipi_and_wait(set);
        })
        .join()
        .unwrap();
        target.join().unwrap();
    }

    #[test]
    fn more_than_64_cpus_take_ipis() {
        const N: usize = 100;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads: std::vec::Vec<_> = (0..N)
            .map(|_| {
                let (stop, tx) = (stop.clone(), tx.clone());
                thread::spawn(move || {
                    let reg = StdHal::register_cpu().unwrap();
                    tx.send(reg.cpu()).unwrap();
                    wait_until("the end", || stop.load(SeqCst));
                    drop(reg);
                })
            })
            .collect();
        let mut set = CpuSet::empty();
        for _ in 0..N {
            set.insert(rx.recv().unwrap());
        }
        assert_eq!(set.len(), N, "every thread is its own CPU");
        assert!(set.iter().any(|c| c.index() >= 64), "{set:?}");
        // From a thread that is not a CPU, then from one that is.
        StdHal.ipi_and_wait(set);
        thread::spawn(move || {
            let _reg = StdHal::register_cpu().unwrap();
            StdHal.ipi_and_wait(set);
        })
        .join()
        .unwrap();
        stop.store(true, SeqCst);
        for t in threads {
            t.join().unwrap();
        }
    }

    #[test]
    fn the_ipi_signal_is_checked_and_fixed_by_the_first_registration() {
        assert_eq!(StdHal::set_ipi_signal(libc::SIGUSR1), Err(CpuError::NotRealtime(libc::SIGUSR1)));
        // Other tests of this process have registered (or will, before this line matters):
        // register here to be sure, then the number in use is accepted and others refused.
        thread::spawn(|| {
            let _reg = StdHal::register_cpu().unwrap();
            let sig = StdHal::ipi_signal();
            assert_eq!(StdHal::set_ipi_signal(sig), Ok(()));
            let other = if sig == libc::SIGRTMAX() { sig - 1 } else { sig + 1 };
            assert_eq!(StdHal::set_ipi_signal(other), Err(CpuError::SignalFixed(sig)));
        })
        .join()
        .unwrap();
    }

    #[test]
    fn nested_irq_save_restore_keeps_interrupts_off_until_the_outer_restore() {
        thread::spawn(|| {
            let _reg = StdHal::register_cpu().unwrap();
            assert!(!irqs_off());
            let outer = StdHal.irq_save();
            assert_eq!(outer, IrqState(true));
            let inner = StdHal.irq_save();
            assert_eq!(inner, IrqState(false));
            assert!(irqs_off());
            // SAFETY: restores nest: inner first, then outer.
            unsafe { StdHal.irq_restore(inner) };
            assert!(irqs_off(), "the inner restore must not re-enable interrupts");
            // SAFETY: as above.
            unsafe { StdHal.irq_restore(outer) };
            assert!(!irqs_off());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_mask_is_soft_the_signal_stays_unblocked() {
        thread::spawn(|| {
            let _reg = StdHal::register_cpu().unwrap();
            assert!(!signal_blocked());
            let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
            assert!(irqs_off());
            assert!(!signal_blocked(), "irq_save must not touch the real signal mask");
            drop(guard);
            assert!(!irqs_off());
            assert!(!signal_blocked());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn registration_unblocks_an_inherited_mask() {
        thread::spawn(|| {
            cpus::mask_ipi(libc::SIG_BLOCK);
            // The child inherits the blocked signal.
            thread::spawn(|| {
                assert!(signal_blocked());
                let _reg = StdHal::register_cpu().unwrap();
                assert!(!signal_blocked(), "a CPU must be able to receive IPIs");
                assert!(!irqs_off());
            })
            .join()
            .unwrap();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn an_ipi_taken_with_interrupts_off_is_pending_until_the_restore_acknowledges_it() {
        let target_cpu: Arc<std::sync::Mutex<Option<CpuId>>> = Arc::default();
        let irqs_off_now = Arc::new(AtomicBool::new(false));
        let restored = Arc::new(AtomicBool::new(false));
        let target = {
            let (target_cpu, irqs_off_now, restored) =
                (target_cpu.clone(), irqs_off_now.clone(), restored.clone());
            thread::spawn(move || {
                let reg = StdHal::register_cpu().unwrap();
                *target_cpu.lock().unwrap() = Some(reg.cpu());
                let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
                irqs_off_now.store(true, SeqCst);
                // The handler runs on this thread while the flag is clear and defers.
                wait_until("the IPI to arrive and be deferred", || cpus::soft_mask().1);
                restored.store(true, SeqCst);
                drop(guard);
                assert_eq!(cpus::soft_mask(), (true, false), "the restore must take the pending IPI");
                drop(reg);
            })
        };
        let _reg = StdHal::register_cpu().unwrap();
        wait_until("the target to disable interrupts", || irqs_off_now.load(SeqCst));
        let mut set = CpuSet::empty();
        set.insert(target_cpu.lock().unwrap().unwrap());
        StdHal.ipi_and_wait(set);
        assert!(restored.load(SeqCst), "IPI completed before the target re-enabled interrupts");
        target.join().unwrap();
    }

    #[test]
    fn no_ipi_is_lost_while_the_target_toggles_interrupts() {
        // The target opens and closes critical sections back to back, so signals land in every
        // part of `irq_save`/`irq_restore`, including between the flag store and the pending
        // check. Every `ipi_and_wait` must still return (a lost IPI hangs it).
        let target_cpu: Arc<std::sync::Mutex<Option<CpuId>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let target = {
            let (target_cpu, stop) = (target_cpu.clone(), stop.clone());
            thread::spawn(move || {
                let reg = StdHal::register_cpu().unwrap();
                *target_cpu.lock().unwrap() = Some(reg.cpu());
                let mut n = 0u64;
                while !stop.load(SeqCst) {
                    let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
                    n = core::hint::black_box(n.wrapping_add(1));
                    drop(guard);
                    if n % 64 == 0 {
                        thread::yield_now();
                    }
                }
                assert_eq!(cpus::soft_mask(), (true, false));
                drop(reg);
            })
        };
        let _reg = StdHal::register_cpu().unwrap();
        wait_until("the target to register", || target_cpu.lock().unwrap().is_some());
        let mut set = CpuSet::empty();
        set.insert(target_cpu.lock().unwrap().unwrap());
        for _ in 0..300 {
            StdHal.ipi_and_wait(set);
        }
        stop.store(true, SeqCst);
        target.join().unwrap();
    }

    #[test]
    fn ipi_does_not_complete_while_the_target_has_interrupts_disabled() {
        let target_cpu: Arc<std::sync::Mutex<Option<CpuId>>> = Arc::default();
        let irqs_off = Arc::new(AtomicBool::new(false));
        let sending = Arc::new(AtomicBool::new(false));
        let ipi_done = Arc::new(AtomicBool::new(false));
        let restoring = Arc::new(AtomicBool::new(false));

        let target = {
            let (target_cpu, irqs_off, sending, ipi_done, restoring) =
                (target_cpu.clone(), irqs_off.clone(), sending.clone(), ipi_done.clone(), restoring.clone());
            thread::spawn(move || {
                let reg = StdHal::register_cpu().unwrap();
                *target_cpu.lock().unwrap() = Some(reg.cpu());
                let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
                irqs_off.store(true, SeqCst);
                wait_until("the sender to start", || sending.load(SeqCst));
                // Give the IPI every chance to be (wrongly) taken while interrupts are off.
                for _ in 0..1000 {
                    assert!(!ipi_done.load(SeqCst), "IPI completed while interrupts were disabled");
                    thread::yield_now();
                }
                restoring.store(true, SeqCst);
                drop(guard);
                wait_until("the IPI to complete", || ipi_done.load(SeqCst));
                drop(reg);
            })
        };

        let _reg = StdHal::register_cpu().unwrap();
        wait_until("the target to disable interrupts", || irqs_off.load(SeqCst));
        let cpu = target_cpu.lock().unwrap().unwrap();
        let mut set = CpuSet::empty();
        set.insert(cpu);
        sending.store(true, SeqCst);
        StdHal.ipi_and_wait(set);
        assert!(restoring.load(SeqCst), "IPI completed before the target re-enabled interrupts");
        ipi_done.store(true, SeqCst);
        target.join().unwrap();
    }

    #[test]
    fn ipi_to_self_is_skipped() {
        thread::spawn(|| {
            let reg = StdHal::register_cpu().unwrap();
            let mut set = CpuSet::empty();
            set.insert(reg.cpu());
            // With interrupts off, an IPI to ourselves could never be taken: it must be
            // skipped (sending one would also trip the interrupts-disabled assertion).
            let guard = IrqGuard::outermost(&StdHal).expect("interrupts were on");
            StdHal.ipi_and_wait(set);
            drop(guard);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn ipi_to_an_offline_cpu_returns() {
        let cpu = thread::spawn(|| StdHal::register_cpu().unwrap().cpu()).join().unwrap();
        // The slot is offline now (or was taken by another test's thread, which takes the IPI
        // as soon as its interrupts are on); either way the call returns.
        let mut set = CpuSet::empty();
        set.insert(cpu);
        StdHal.ipi_and_wait(set);
    }

    #[test]
    fn leaked_registration_is_released_at_thread_exit() {
        let cpu = thread::spawn(|| {
            let reg = StdHal::register_cpu().unwrap();
            let cpu = reg.cpu();
            core::mem::forget(reg);
            cpu
        })
        .join()
        .unwrap();
        let mut set = CpuSet::empty();
        set.insert(cpu);
        // Would signal an exited thread (or hang) if the slot had stayed online.
        StdHal.ipi_and_wait(set);
    }
}
