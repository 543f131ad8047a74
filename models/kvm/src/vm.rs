//! The VM: guest memory, the in-kernel irqchip, vCPUs started in 64-bit mode, one host thread
//! per vCPU, and the watchdog.
//!
//! A [`Vm`] is made once and reused for every run (registering guest memory with KVM is the
//! dominant fixed cost). [`Vm::run`] loads a fresh copy of the guest image, writes the command
//! to the mailbox, resets every vCPU (registers, segment and control registers, APIC base and
//! local-APIC state, pending events) and runs them on scoped threads until the guest reports
//! the end, a panic or an exception, or the watchdog calls it a hang. Then every vCPU is
//! kicked out of `KVM_RUN`: a real-time signal whose handler sets the vCPU's `immediate_exit`,
//! so a kick that lands just before the thread enters `KVM_RUN` is not lost.

use crate::error::{Ctx, KvmError};
use crate::image::GuestImage;
use kvm_bindings::{
    kvm_dtable, kvm_lapic_state, kvm_mp_state, kvm_regs, kvm_run, kvm_segment, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE,
    KVM_VCPUEVENT_VALID_NMI_PENDING, KVM_VCPUEVENT_VALID_SHADOW,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd, VmFd};
use mmusync_kvm_shared::{
    stack_top, Mailbox, PerCpu, CODE_SELECTOR, DATA_SELECTOR, FLAG_TRACE, GDT, MAGIC, MAILBOX, MAX_VCPUS, PD,
    PDPT, PHASE_DONE, PHASE_REFUSED, PML4, PORT_DONE, PORT_EXCEPTION, PORT_LOG, PORT_PANIC, RAM_SIZE, TSS,
    TSS_SELECTOR,
};
use mmusync_models::Mutant;
use std::cell::Cell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{mpsc, Once};
use std::time::{Duration, Instant};

/// The real-time signal (offset from `SIGRTMIN`) that kicks a vCPU thread out of `KVM_RUN`.
const KICK_SIGNAL_OFFSET: i32 = 2;

std::thread_local! {
    /// The `kvm_run` page of the vCPU this thread runs (null outside a run). A `const`
    /// thread-local without a destructor: the signal handler may read it.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer is this thread's vCPU's `kvm_run` mapping, set while the vCPU
        // (and so its mapping) is alive and cleared before the thread lets go of it. KVM reads
        // the byte at the next `KVM_RUN` entry; a volatile store is what the kernel expects of
        // a signal handler here.
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
        std::sync::atomic::fence(SeqCst);
    }
}

fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN() + KICK_SIGNAL_OFFSET
}

/// Installs the kick handler once per process.
fn install_kick_handler() -> Result<(), KvmError> {
    static ONCE: Once = Once::new();
    static FAILED: AtomicBool = AtomicBool::new(false);
    ONCE.call_once(|| {
        if vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick).is_err() {
            FAILED.store(true, SeqCst);
        }
    });
    if FAILED.load(SeqCst) {
        Err(KvmError::Unavailable("cannot install the vCPU kick signal handler".into()))
    } else {
        Ok(())
    }
}

/// Guest RAM: an anonymous mapping registered as memslot 0 at guest-physical 0.
struct GuestMem {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the mapping is plain memory owned by this value; concurrent access goes through
// atomics (the mailbox) or happens while no vCPU runs (image loading).
unsafe impl Send for GuestMem {}
// SAFETY: as above.
unsafe impl Sync for GuestMem {}

impl GuestMem {
    fn new(size: usize) -> Result<Self, KvmError> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(KvmError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(GuestMem { ptr: ptr.cast(), size })
    }

    /// Copies `data` to guest-physical `gpa`. Only while no vCPU runs.
    fn write(&self, gpa: u64, data: &[u8]) -> Result<(), KvmError> {
        let end = gpa.checked_add(data.len() as u64).filter(|&e| e <= self.size as u64);
        if end.is_none() {
            return Err(KvmError::Image(format!(
                "write of {} bytes at {gpa:#x} leaves guest RAM",
                data.len()
            )));
        }
        // SAFETY: in bounds (checked); no vCPU runs, so nothing else accesses these bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(gpa as usize), data.len()) };
        Ok(())
    }

    /// Zeroes `len` bytes at `gpa`. Only while no vCPU runs.
    fn zero(&self, gpa: u64, len: u64) -> Result<(), KvmError> {
        if gpa.checked_add(len).is_none_or(|e| e > self.size as u64) {
            return Err(KvmError::Image(format!("{len} bytes at {gpa:#x} leave guest RAM")));
        }
        // SAFETY: in bounds (checked); no vCPU runs.
        unsafe { std::ptr::write_bytes(self.ptr.add(gpa as usize), 0, len as usize) };
        Ok(())
    }

    fn write_u64s(&self, gpa: u64, words: &[u64]) -> Result<(), KvmError> {
        let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        self.write(gpa, &bytes)
    }

    /// The mailbox.
    fn mailbox(&self) -> &Mailbox {
        // SAFETY: the mailbox room lies inside the mapping (the shared crate checks the layout
        // against RAM_SIZE, the size of this mapping), is suitably aligned (MAILBOX is
        // page-aligned), and `Mailbox` is atomics only: any bytes are a valid value, and the
        // guest's concurrent accesses are atomic too.
        unsafe { &*(self.ptr.add(MAILBOX as usize) as *const Mailbox) }
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; the VM that used it is dropped first (field order
        // of `Vm`), and nothing else refers to it.
        unsafe { libc::munmap(self.ptr.cast(), self.size) };
    }
}

mod ioctl {
    #![allow(missing_docs)]
    use kvm_bindings::kvm_userspace_memory_region;
    // `KVM_SET_USER_MEMORY_REGION()`: `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
    vmm_sys_util::ioctl_iow_nr!(KVM_SET_USER_MEMORY_REGION, 0xAE, 0x46, kvm_userspace_memory_region);
}

/// Changes memslots of a [`Vm`] from any thread (its own descriptor of the VM): see
/// [`Vm::memslot_control`].
pub struct MemslotControl {
    fd: OwnedFd,
}

impl MemslotControl {
    /// `KVM_SET_USER_MEMORY_REGION`: creates, moves (same slot, new `gpa`) or, with `size` 0,
    /// deletes memslot `slot`, mapping guest-physical `gpa..gpa + size` to host memory at
    /// `hva`. Slot 0 is the harness's guest RAM and is refused.
    ///
    /// # Safety
    ///
    /// `hva..hva + size` must be memory of this process, mapped read-write, that stays mapped
    /// until the slot is deleted or moved to other memory (KVM accesses it on the guest's
    /// behalf); and it must not be guest RAM used by the harness.
    pub unsafe fn set(&self, slot: u32, gpa: u64, size: u64, hva: u64) -> Result<(), KvmError> {
        if slot == 0 {
            return Err(KvmError::Vmm("memslot 0 is the harness's guest RAM".into()));
        }
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: hva,
        };
        // SAFETY: KVM_SET_USER_MEMORY_REGION reads one `kvm_userspace_memory_region`, which
        // `region` is; the memory it names is the caller's obligation.
        let rc = unsafe {
            vmm_sys_util::ioctl::ioctl_with_ref(&self.fd, ioctl::KVM_SET_USER_MEMORY_REGION(), &region)
        };
        if rc < 0 {
            return Err(KvmError::Ioctl {
                what: "KVM_SET_USER_MEMORY_REGION",
                err: kvm_ioctls::Error::last(),
            });
        }
        Ok(())
    }
}

/// What to run: one scenario, with or without a mutant, rounds `first_round..rounds`.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// The scenario's name in the catalogue.
    pub scenario: String,
    /// The mutant, if any.
    pub mutant: Option<Mutant>,
    /// The first round's index.
    pub first_round: u64,
    /// Run until this round index (exclusive).
    pub rounds: u64,
    /// Start delays of the roles: `0..jitter` spin iterations, drawn per round.
    pub jitter: u32,
    /// Seed of the jitter.
    pub seed: u64,
    /// Record each executor step as text (slow).
    pub trace: bool,
}

/// When to stop a run.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A run that completes no round for this long is a hang.
    pub hang: Duration,
    /// At this time the host asks the guest to finish its current round and stop.
    pub deadline: Option<Instant>,
}

/// One vCPU at the end of a run.
#[derive(Clone, Debug)]
pub struct VcpuReport {
    /// Its number.
    pub cpu: usize,
    /// Where it was (symbolized), if its registers could be read.
    pub rip: Option<String>,
    /// The role it ran or last ran.
    pub role: String,
    /// Executor steps it reported.
    pub steps: u64,
    /// Its last step as text (trace mode only).
    pub last_step: String,
    /// Flush IPIs it took.
    pub ipis: u64,
    /// Wake-up IPIs it took.
    pub wakes: u64,
    /// Roles it ran.
    pub roles: u64,
    /// Guest memory accesses it made (the `@workload` command only).
    pub accesses: u64,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// The guest ran its rounds (or stopped at the deadline).
    Done,
    /// The guest refused the command (`mmusync_kvm_shared::ERR_*`).
    Refused(u32),
    /// A vCPU panicked: an invariant violation (`violation`) or anything else.
    Panicked {
        /// The vCPU.
        cpu: usize,
        /// Whether the message is an invariant violation.
        violation: bool,
        /// The message.
        message: String,
    },
    /// A vCPU took a CPU exception.
    Exception {
        /// The vCPU.
        cpu: usize,
        /// What and where.
        what: String,
    },
    /// No round completed within the hang limit.
    Hang,
    /// A vCPU triple-faulted, or exited for a reason the harness does not handle.
    Crashed {
        /// The vCPU.
        cpu: usize,
        /// The exit.
        what: String,
    },
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How it ended.
    pub end: End,
    /// The round being run when it ended (for a panic: the round that panicked).
    pub round: u64,
    /// The index of the next round to run (rounds completed).
    pub rounds_done: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Per vCPU.
    pub vcpus: Vec<VcpuReport>,
}

impl RunReport {
    /// Every vCPU's position, one line each (for hang and crash reports).
    pub fn vcpu_lines(&self) -> String {
        self.vcpus
            .iter()
            .map(|v| {
                format!(
                    "vCPU {}: rip {}, role {:?}, {} steps{}",
                    v.cpu,
                    v.rip.as_deref().unwrap_or("?"),
                    v.role,
                    v.steps,
                    if v.last_step.is_empty() {
                        String::new()
                    } else {
                        format!(", last step {:?}", v.last_step)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What a vCPU thread tells the watchdog.
enum Event {
    Log(usize, String),
    Done,
    Panic(usize),
    Exception(usize),
    Crashed(usize, String),
}

/// The initial state of one vCPU.
struct VcpuInit {
    sregs: kvm_sregs,
    lapic: kvm_lapic_state,
}

/// A KVM VM running the guest on `n` vCPUs (see the module documentation).
pub struct Vm {
    vcpus: Vec<VcpuFd>,
    init: Vec<VcpuInit>,
    _vm: VmFd,
    _kvm: Kvm,
    mem: GuestMem,
    image: GuestImage,
    /// Log lines of the guest go to stderr.
    pub verbose: bool,
}

/// Bytes of a text field of the mailbox.
fn text<const N: usize>(t: &mmusync_kvm_shared::Text<N>) -> String {
    let mut buf = [0u8; N];
    let n = t.read(&mut buf);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn segment(selector: u16, type_: u8, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The most vCPUs this host allows: its CPU count, and the layout's maximum.
pub fn max_vcpus() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, MAX_VCPUS)
}

impl Vm {
    /// A VM with `ncpus` vCPUs (2 up to [`max_vcpus`]).
    pub fn new(ncpus: usize) -> Result<Vm, KvmError> {
        Self::make(ncpus, max_vcpus())
    }

    /// A VM with `ncpus` vCPUs, 2 up to the layout's maximum (32), even beyond this host's
    /// CPU count: vCPUs then share host CPUs (each role still runs on its own vCPU, but the
    /// vCPUs take turns; roles spin, so this is slower).
    pub fn new_overcommitted(ncpus: usize) -> Result<Vm, KvmError> {
        Self::make(ncpus, MAX_VCPUS)
    }

    fn make(ncpus: usize, max: usize) -> Result<Vm, KvmError> {
        if !(2..=max).contains(&ncpus) {
            return Err(KvmError::BadVcpus { asked: ncpus, max });
        }
        let image = GuestImage::load()?;
        install_kick_handler()?;
        let kvm = Kvm::new().map_err(|e| KvmError::Unavailable(format!("cannot open /dev/kvm: {e}")))?;
        let vm = kvm.create_vm().map_err(|e| KvmError::Unavailable(format!("KVM_CREATE_VM failed: {e}")))?;
        // Only VMX uses these, but they must not overlap guest RAM.
        vm.set_tss_address(0xfffb_d000).ctx("KVM_SET_TSS_ADDR")?;
        vm.create_irq_chip().ctx("KVM_CREATE_IRQCHIP")?;
        let mem = GuestMem::new(RAM_SIZE as usize)?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: RAM_SIZE,
            userspace_addr: mem.ptr as u64,
        };
        // SAFETY: the region is our own anonymous mapping of RAM_SIZE bytes, which outlives the
        // VM (`Vm` drops the VM fd before the memory).
        unsafe { vm.set_user_memory_region(region) }.ctx("KVM_SET_USER_MEMORY_REGION")?;
        write_tables(&mem)?;

        let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).ctx("KVM_GET_SUPPORTED_CPUID")?;
        let mut vcpus = Vec::with_capacity(ncpus);
        let mut init = Vec::with_capacity(ncpus);
        for id in 0..ncpus {
            let vcpu = vm.create_vcpu(id as u64).ctx("KVM_CREATE_VCPU")?;
            vcpu.set_cpuid2(&patched_cpuid(&supported, id)?).ctx("KVM_SET_CPUID2")?;
            let mut sregs = vcpu.get_sregs().ctx("KVM_GET_SREGS")?;
            long_mode(&mut sregs);
            let lapic = vcpu.get_lapic().ctx("KVM_GET_LAPIC")?;
            init.push(VcpuInit { sregs, lapic });
            vcpus.push(vcpu);
        }
        Ok(Vm { vcpus, init, _vm: vm, _kvm: kvm, mem, image, verbose: false })
    }

    /// The number of vCPUs.
    pub fn vcpus(&self) -> usize {
        self.vcpus.len()
    }

    /// The guest image.
    pub fn image(&self) -> &GuestImage {
        &self.image
    }

    /// A handle that changes this VM's memslots (other than slot 0, guest RAM) from any
    /// thread, also while [`run`](Self::run) runs the vCPUs: a VMM's memslot updates.
    pub fn memslot_control(&self) -> Result<MemslotControl, KvmError> {
        // SAFETY: `dup` of the VM's open file descriptor; the new descriptor is owned below.
        let fd = unsafe { libc::dup(self._vm.as_raw_fd()) };
        if fd < 0 {
            return Err(KvmError::Unavailable(format!(
                "cannot duplicate the VM file descriptor: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(MemslotControl { fd: unsafe { OwnedFd::from_raw_fd(fd) } })
    }

    /// Loads the image and the command (no vCPU runs).
    fn prepare(&self, spec: &RunSpec) -> Result<(), KvmError> {
        for seg in &self.image.segments {
            self.mem.write(seg.addr, seg.data)?;
            self.mem.zero(seg.addr + seg.data.len() as u64, seg.mem_size - seg.data.len() as u64)?;
        }
        self.mem.zero(MAILBOX, std::mem::size_of::<Mailbox>() as u64)?;
        let mb = self.mem.mailbox();
        let c = &mb.command;
        c.ncpus.store(self.vcpus.len() as u32, SeqCst);
        c.flags.store(if spec.trace { FLAG_TRACE } else { 0 }, SeqCst);
        c.scenario.set(&spec.scenario);
        c.mutant.set(spec.mutant.map_or("", |m| m.name()));
        c.first_round.store(spec.first_round, SeqCst);
        c.rounds.store(spec.rounds, SeqCst);
        c.jitter.store(spec.jitter, SeqCst);
        c.seed.store(spec.seed, SeqCst);
        mb.status.rounds_done.store(spec.first_round, SeqCst);
        mb.status.round.store(spec.first_round, SeqCst);
        mb.magic.store(MAGIC, SeqCst);
        Ok(())
    }

    /// Runs `spec` (see the module documentation). An `Err` is a failure of the harness or of
    /// KVM, not of the guest.
    pub fn run(&mut self, spec: &RunSpec, limits: Limits) -> Result<RunReport, KvmError> {
        self.prepare(spec)?;
        let started = Instant::now();
        let n = self.vcpus.len();
        let entry = self.image.entry;
        let mem = &self.mem;
        let image = &self.image;
        let verbose = self.verbose;
        let stop = AtomicBool::new(false);
        let tids: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(0)).collect();
        let finished: Vec<AtomicBool> = (0..n).map(|_| AtomicBool::new(false)).collect();
        let (tx, rx) = mpsc::channel::<Event>();
        let mut first_event: Option<Event> = None;
        let mut setup_error: Option<KvmError> = None;
        let rips: Vec<Result<u64, KvmError>> = std::thread::scope(|s| {
            let mut handles = Vec::with_capacity(n);
            for (cpu, (vcpu, init)) in self.vcpus.iter_mut().zip(&self.init).enumerate() {
                let tx = tx.clone();
                let (stop, tid, fin) = (&stop, &tids[cpu], &finished[cpu]);
                let h = std::thread::Builder::new()
                    .name(format!("kvm-vcpu{cpu}"))
                    .spawn_scoped(s, move || {
                        let r = vcpu_thread(cpu, vcpu, init, entry, stop, tid, &tx, mem);
                        fin.store(true, SeqCst);
                        r
                    })
                    .map_err(KvmError::Thread);
                match h {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        setup_error = Some(e);
                        break;
                    }
                }
            }
            drop(tx);
            if setup_error.is_none() {
                first_event = watch(mem, &rx, limits, verbose);
            }
            // Stop everyone: set the flag, then kick until every thread has left KVM_RUN.
            stop.store(true, SeqCst);
            let mut last_kick: Option<Instant> = None;
            while !finished.iter().all(|f| f.load(SeqCst)) {
                if last_kick.is_none_or(|t| t.elapsed() > Duration::from_millis(5)) {
                    for (tid, fin) in tids.iter().zip(&finished) {
                        let t = tid.load(SeqCst);
                        if t != 0 && !fin.load(SeqCst) {
                            // SAFETY: `t` is the pthread id of a scoped thread of this scope
                            // that has not returned from its body yet; it is not joined before
                            // the scope ends, so the id stays valid. The signal's handler is
                            // installed (`install_kick_handler`).
                            unsafe { libc::pthread_kill(t as libc::pthread_t, kick_signal()) };
                        }
                    }
                    last_kick = Some(Instant::now());
                }
                // Drain log lines so no sender blocks (the channel is unbounded, but keep the
                // lines in order).
                while let Ok(ev) = rx.try_recv() {
                    if let Event::Log(cpu, line) = ev {
                        if verbose {
                            eprintln!("[guest vCPU {cpu}] {line}");
                        }
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(KvmError::Thread(std::io::Error::other("a vCPU thread panicked")))
                    })
                })
                .collect()
        });
        if let Some(e) = setup_error {
            return Err(e);
        }
        let mut vcpus = Vec::with_capacity(n);
        for (cpu, rip) in rips.into_iter().enumerate() {
            let rip = rip?;
            let pc: &PerCpu = &mem.mailbox().cpus[cpu];
            vcpus.push(VcpuReport {
                cpu,
                rip: Some(image.symbolize(rip)),
                role: text(&pc.role),
                steps: pc.steps.load(SeqCst),
                last_step: text(&pc.last_step),
                ipis: pc.ipis.load(SeqCst),
                wakes: pc.wakes.load(SeqCst),
                roles: pc.roles.load(SeqCst),
                accesses: pc.accesses.load(SeqCst),
            });
        }
        let mb = mem.mailbox();
        let end = classify(mem, image, first_event);
        let status = &mb.status;
        let end = match end {
            End::Done if status.phase.load(SeqCst) == PHASE_REFUSED => {
                End::Refused(status.error.load(SeqCst))
            }
            End::Done if status.phase.load(SeqCst) != PHASE_DONE => {
                End::Crashed { cpu: 0, what: "the guest reported the end without finishing".into() }
            }
            e => e,
        };
        Ok(RunReport {
            end,
            round: status.round.load(SeqCst),
            rounds_done: status.rounds_done.load(SeqCst),
            elapsed: started.elapsed(),
            vcpus,
        })
    }
}

/// The watchdog, on the calling thread: returns the first event that ends the run, or `None`
/// for a hang (no round completed within `limits.hang`).
fn watch(mem: &GuestMem, rx: &mpsc::Receiver<Event>, limits: Limits, verbose: bool) -> Option<Event> {
    let mb = mem.mailbox();
    let mut progress = (mb.status.rounds_done.load(SeqCst), Instant::now());
    let mut stop_sent = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(Event::Log(cpu, line)) => {
                if verbose {
                    eprintln!("[guest vCPU {cpu}] {line}");
                }
            }
            Ok(ev) => return Some(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Every vCPU thread is gone without an event: only a harness failure does that.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Some(Event::Crashed(0, "every vCPU thread ended without a report".into()))
            }
        }
        let done = mb.status.rounds_done.load(SeqCst);
        if done != progress.0 {
            progress = (done, Instant::now());
        } else if progress.1.elapsed() > limits.hang {
            return None;
        }
        if !stop_sent && limits.deadline.is_some_and(|d| Instant::now() >= d) {
            mb.stop.store(1, SeqCst);
            stop_sent = true;
        }
    }
}

/// Turns the first event into an [`End`], preferring an invariant violation on any vCPU (a
/// panic elsewhere may be a consequence of it).
fn classify(mem: &GuestMem, image: &GuestImage, first: Option<Event>) -> End {
    let mb = mem.mailbox();
    let panics: Vec<(usize, String)> = mb
        .cpus
        .iter()
        .enumerate()
        .filter(|(_, c)| c.failed.load(SeqCst) == 1)
        .map(|(i, c)| (i, text(&c.panic)))
        .collect();
    if let Some((cpu, message)) = panics.iter().find(|(_, m)| m.starts_with(mmusync_models::exec::VIOLATION))
    {
        return End::Panicked { cpu: *cpu, violation: true, message: message.clone() };
    }
    let exception = |cpu: usize| {
        let e = &mb.cpus[cpu].exception;
        End::Exception {
            cpu,
            what: format!(
                "vector {} (error {:#x}) at {}, cr2 {:#x}",
                e.vector.load(SeqCst),
                e.error.load(SeqCst),
                image.symbolize(e.rip.load(SeqCst)),
                e.cr2.load(SeqCst)
            ),
        }
    };
    match first {
        None => End::Hang,
        Some(Event::Done) => End::Done,
        Some(Event::Panic(cpu)) => {
            let message = text(&mb.cpus[cpu.min(MAX_VCPUS - 1)].panic);
            End::Panicked { cpu, violation: false, message }
        }
        Some(Event::Exception(cpu)) => exception(cpu.min(MAX_VCPUS - 1)),
        Some(Event::Crashed(cpu, what)) => End::Crashed { cpu, what },
        Some(Event::Log(..)) => End::Crashed { cpu: 0, what: "log event taken for an end".into() },
    }
}

/// The body of vCPU `cpu`'s thread: reset, run until stopped, return the final RIP.
#[allow(clippy::too_many_arguments)]
fn vcpu_thread(
    cpu: usize,
    vcpu: &mut VcpuFd,
    init: &VcpuInit,
    entry: u64,
    stop: &AtomicBool,
    tid: &AtomicU64,
    tx: &mpsc::Sender<Event>,
    mem: &GuestMem,
) -> Result<u64, KvmError> {
    if let Err(e) = reset_vcpu(cpu, vcpu, init, entry) {
        let _ = tx.send(Event::Crashed(cpu, format!("cannot reset the vCPU: {e}")));
        return Err(e);
    }
    KVM_RUN.with(|r| r.set(vcpu.get_kvm_run() as *mut kvm_run));
    // SAFETY: `pthread_self` has no preconditions.
    tid.store(unsafe { libc::pthread_self() } as u64, SeqCst);
    let mut reported = false;
    let mut report = |ev: Event| {
        if !reported {
            let _ = tx.send(ev);
            reported = true;
        }
    };
    while !stop.load(SeqCst) {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                let value = data.first().copied().unwrap_or(0) as usize;
                match port {
                    PORT_LOG => {
                        let line = text(&mem.mailbox().cpus[value.min(MAX_VCPUS - 1)].log);
                        let _ = tx.send(Event::Log(value, line));
                    }
                    PORT_DONE => report(Event::Done),
                    PORT_PANIC => report(Event::Panic(value)),
                    PORT_EXCEPTION => report(Event::Exception(value)),
                    other => report(Event::Crashed(cpu, format!("write to unknown I/O port {other:#x}"))),
                }
            }
            Ok(VcpuExit::Hlt) => {}
            Ok(VcpuExit::Shutdown) => {
                report(Event::Crashed(cpu, "triple fault (KVM_EXIT_SHUTDOWN)".into()));
                break;
            }
            Ok(other) => {
                report(Event::Crashed(cpu, format!("unexpected exit {other:?}")));
                break;
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => vcpu.set_kvm_immediate_exit(0),
            Err(e) => {
                report(Event::Crashed(cpu, format!("KVM_RUN failed: {e}")));
                break;
            }
        }
    }
    KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
    vcpu.set_kvm_immediate_exit(0);
    Ok(vcpu.get_regs().ctx("KVM_GET_REGS")?.rip)
}

/// Puts vCPU `cpu` at the guest's entry in 64-bit mode with its own stack, with its APIC and
/// pending events as after creation.
fn reset_vcpu(cpu: usize, vcpu: &VcpuFd, init: &VcpuInit, entry: u64) -> Result<(), KvmError> {
    // Host-initiated: KVM accepts the x2APIC -> xAPIC transition of the APIC base that a guest
    // may not make, so the saved (xAPIC-mode) local-APIC state applies after it.
    vcpu.set_sregs(&init.sregs).ctx("KVM_SET_SREGS")?;
    vcpu.set_lapic(&init.lapic).ctx("KVM_SET_LAPIC")?;
    let events = kvm_vcpu_events {
        flags: KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW,
        ..Default::default()
    };
    vcpu.set_vcpu_events(&events).ctx("KVM_SET_VCPU_EVENTS")?;
    let regs =
        kvm_regs { rip: entry, rsp: stack_top(cpu), rdi: cpu as u64, rflags: 0x2, ..Default::default() };
    vcpu.set_regs(&regs).ctx("KVM_SET_REGS")?;
    vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE }).ctx("KVM_SET_MP_STATE")?;
    Ok(())
}

/// 64-bit mode with paging: flat segments from the GDT, the identity map, no IDT yet.
fn long_mode(s: &mut kvm_sregs) {
    let code = segment(CODE_SELECTOR, 0xb, true);
    let data = segment(DATA_SELECTOR, 0x3, false);
    s.cs = code;
    s.ds = data;
    s.es = data;
    s.fs = data;
    s.gs = data;
    s.ss = data;
    s.tr = kvm_segment {
        base: TSS,
        limit: 0x67,
        selector: TSS_SELECTOR,
        type_: 0xb,
        present: 1,
        dpl: 0,
        db: 0,
        s: 0,
        l: 0,
        g: 0,
        avl: 0,
        unusable: 0,
        padding: 0,
    };
    s.gdt = kvm_dtable { base: GDT, limit: 5 * 8 - 1, padding: [0; 3] };
    s.idt = kvm_dtable { base: 0, limit: 0, padding: [0; 3] };
    // PE, MP, ET, NE, WP, PG.
    s.cr0 = 0x1 | 0x2 | 0x10 | 0x20 | 0x1_0000 | 0x8000_0000;
    s.cr3 = PML4;
    // PAE, OSFXSR, OSXMMEXCPT.
    s.cr4 = 0x20 | 0x200 | 0x400;
    // LME, LMA, NXE.
    s.efer = 0x100 | 0x400 | 0x800;
    s.interrupt_bitmap = [0; 4];
}

/// The identity map of the first GiB (2 MiB pages), the GDT and the TSS.
fn write_tables(mem: &GuestMem) -> Result<(), KvmError> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    mem.zero(PML4, 0x1000)?;
    mem.zero(PDPT, 0x1000)?;
    mem.write_u64s(PML4, &[PDPT | PRESENT_RW])?;
    mem.write_u64s(PDPT, &[PD | PRESENT_RW])?;
    let pd: Vec<u64> = (0..512u64).map(|i| (i << 21) | PRESENT_RW | HUGE).collect();
    mem.write_u64s(PD, &pd)?;
    // Null, 64-bit code (L=1, P, DPL 0, execute/read), data (P, read/write, 4 GiB), then the
    // 16-byte 64-bit TSS descriptor (busy, limit 0x67).
    let tss_lo = 0x67 | (TSS & 0xff_ffff) << 16 | 0x8b << 40 | ((TSS >> 24) & 0xff) << 56;
    mem.write_u64s(GDT, &[0, 0x00af_9a00_0000_ffff, 0x00cf_9200_0000_ffff, tss_lo, TSS >> 32])?;
    mem.zero(TSS, 0x1000)?;
    Ok(())
}

/// The supported CPUID with the x2APIC advertised and `id` as the APIC id.
fn patched_cpuid(supported: &CpuId, id: usize) -> Result<CpuId, KvmError> {
    let mut entries = supported.as_slice().to_vec();
    for e in entries.iter_mut() {
        match e.function {
            1 => {
                e.ecx |= 1 << 21;
                e.ebx = (e.ebx & 0x00ff_ffff) | ((id as u32) << 24);
            }
            0xb | 0x1f => e.edx = id as u32,
            _ => {}
        }
    }
    CpuId::from_entries(&entries).map_err(|e| KvmError::Unavailable(format!("CPUID entries: {e:?}")))
}
