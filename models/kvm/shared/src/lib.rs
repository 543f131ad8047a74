//! # mmusync-kvm-shared
//!
//! The contract between the KVM harness (`mmusync-kvm`, on the host) and its guest
//! (`mmusync-kvm-guest`, ring 0 inside the VM): where things live in guest-physical memory,
//! which I/O ports the guest writes, and the layout of the mailbox page through which the host
//! gives commands and the guest reports results.
//!
//! Both sides compile this crate, so the layout is one definition. Guest memory is identity
//! mapped (guest-virtual = guest-physical), and the host reads and writes the mailbox through its
//! own mapping of guest RAM: both sides use real x86 atomics on the same memory.
//!
//! ## How a run goes
//!
//! 1. The host zeroes the mailbox, fills in [`Command`] and starts every vCPU at the guest's
//!    entry point, vCPU `i` with its own stack ([`stack_top`]).
//! 2. vCPU 0 sets up the heap and the IDT; every vCPU enables its x2APIC and sets its
//!    [`PerCpu::booted`] flag.
//! 3. vCPU 0 runs the command's scenario round after round, handing role `i` to vCPU `i`, and
//!    raises [`Status::rounds_done`] after each round. It stops after [`Command::rounds`] rounds
//!    or when the host sets [`Mailbox::stop`], sets [`Status::phase`] to [`PHASE_DONE`] and
//!    writes [`PORT_DONE`].
//! 4. A panic (an invariant violation or anything else) on any vCPU is written to that vCPU's
//!    [`PerCpu::panic`] text and reported through [`PORT_PANIC`]; a CPU exception through
//!    [`PORT_EXCEPTION`]. The host then stops every vCPU, resets them, and starts again at the
//!    next round: the guest never continues after a panic.
#![no_std]

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// Size of guest RAM (one memslot at guest-physical 0).
pub const RAM_SIZE: u64 = 128 << 20;
/// The page-map level-4 table (identity map of the first GiB with 2 MiB pages).
pub const PML4: u64 = 0x1000;
/// The page-directory-pointer table.
pub const PDPT: u64 = 0x2000;
/// The page directory (512 entries of 2 MiB).
pub const PD: u64 = 0x3000;
/// The GDT: null, 64-bit code ([`CODE_SELECTOR`]), data ([`DATA_SELECTOR`]), a 64-bit TSS
/// ([`TSS_SELECTOR`]).
pub const GDT: u64 = 0x4000;
/// The (shared, never written) task-state segment.
pub const TSS: u64 = 0x5000;
/// The 64-bit code segment selector.
pub const CODE_SELECTOR: u16 = 0x08;
/// The data segment selector.
pub const DATA_SELECTOR: u16 = 0x10;
/// The TSS selector.
pub const TSS_SELECTOR: u16 = 0x18;
/// The mailbox page(s).
pub const MAILBOX: u64 = 0x10_0000;
/// Room reserved for the mailbox.
pub const MAILBOX_SIZE: u64 = 0x10_0000;
/// Where the guest image is linked (the guest's linker script uses the same address).
pub const IMAGE_BASE: u64 = 0x20_0000;
/// The end of the room for the image.
pub const IMAGE_END: u64 = STACKS;
/// The first vCPU stack.
pub const STACKS: u64 = 0x100_0000;
/// Bytes of stack per vCPU.
pub const STACK_SIZE: u64 = 0x8_0000;
/// The most vCPUs the layout has room for.
pub const MAX_VCPUS: usize = 32;
/// The guest heap: from here to the end of RAM.
pub const HEAP: u64 = STACKS + STACK_SIZE * MAX_VCPUS as u64;

/// The initial stack pointer of vCPU `cpu` (16-byte aligned minus 8, as at a function entry).
pub const fn stack_top(cpu: usize) -> u64 {
    STACKS + STACK_SIZE * (cpu as u64 + 1) - 8
}

/// `out` here (any value): vCPU `value` has a log line in [`PerCpu::log`].
pub const PORT_LOG: u16 = 0xe9;
/// `out` here: vCPU 0 finished the command ([`Status::phase`] says how).
pub const PORT_DONE: u16 = 0xf4;
/// `out` here: the vCPU whose number is written panicked ([`PerCpu::panic`]).
pub const PORT_PANIC: u16 = 0xf5;
/// `out` here: the vCPU whose number is written took a CPU exception ([`PerCpu::exception`]).
pub const PORT_EXCEPTION: u16 = 0xf6;

/// [`Mailbox::magic`]: the host wrote a command.
pub const MAGIC: u64 = 0x6d6d_7573_796e_634b; // "mmusyncK"

/// [`Status::phase`]: the guest has not finished booting.
pub const PHASE_BOOT: u32 = 0;
/// Running rounds.
pub const PHASE_RUNNING: u32 = 1;
/// Finished the command: every round ran, or the host asked it to stop.
pub const PHASE_DONE: u32 = 2;
/// Refused the command ([`Status::error`] says why).
pub const PHASE_REFUSED: u32 = 3;

/// [`Status::error`]: no scenario has the command's name.
pub const ERR_NO_SCENARIO: u32 = 1;
/// The scenario has no shared body (it belongs to one checker's crate).
pub const ERR_NOT_SHARED: u32 = 2;
/// No mutant has the command's name.
pub const ERR_NO_MUTANT: u32 = 3;
/// The scenario has more roles than the VM has vCPUs.
pub const ERR_TOO_FEW_CPUS: u32 = 4;
/// The mailbox was not written by a host that speaks this layout.
pub const ERR_BAD_MAGIC: u32 = 5;

/// A scenario name the guest handles itself, to check the harness: in every round, vCPU 1
/// panics with an invariant-violation message (the host must count it and start a fresh guest
/// at the next round).
pub const SELFTEST_VIOLATION: &str = "@violation";
/// A scenario name the guest handles itself, to check the harness: vCPU 1 spins for ever with
/// interrupts off (the watchdog must call it a hang, kick every vCPU and report where each was).
pub const SELFTEST_HANG: &str = "@hang";

/// A command name the guest handles itself: the VMM workload of `kvm-vmm`. Every vCPU, round
/// after round until the host sets [`Mailbox::stop`], writes and reads back
/// [`WORKLOAD_ACCESSES`] words of the data region ([`WORKLOAD_GPA`], [`WORKLOAD_PAGES`] pages),
/// only in the first [`WORKLOAD_GUEST_BYTES`] of each page (the rest of each page belongs to
/// the host's device threads), and counts each write and each read in [`PerCpu::accesses`].
/// The region is a memslot of its own, which the host may madvise away page by page (the
/// guest then reads zeroes: it checks nothing, it only keeps the memory busy).
pub const WORKLOAD: &str = "@workload";
/// The workload's data region: guest-physical start (above RAM, inside the identity map).
pub const WORKLOAD_GPA: u64 = 0x1000_0000;
/// Pages in the workload's data region.
pub const WORKLOAD_PAGES: u64 = 64;
/// Bytes at the start of each data page that the guest uses.
pub const WORKLOAD_GUEST_BYTES: u64 = 2048;
/// Words each vCPU writes (and reads back) per round of the workload.
pub const WORKLOAD_ACCESSES: u64 = 256;

/// [`Command::flags`]: record every executor step as text in [`PerCpu::last_step`] (slow:
/// formatting costs hundreds of emulated instructions per step).
pub const FLAG_TRACE: u32 = 1;

/// Short text in shared memory: written by one side, read by the other after a handshake.
#[repr(C)]
pub struct Text<const N: usize> {
    len: AtomicU32,
    bytes: [AtomicU8; N],
}

impl<const N: usize> Text<N> {
    /// Replaces the text with as much of `s` as fits (cut at a character boundary).
    pub fn set(&self, s: &str) {
        self.len.store(0, Relaxed);
        let mut n = s.len().min(N);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        for (dst, b) in self.bytes.iter().zip(&s.as_bytes()[..n]) {
            dst.store(*b, Relaxed);
        }
        self.len.store(n as u32, Relaxed);
    }

    /// Appends as much of `s` as fits; returns whether all of it did.
    pub fn push(&self, s: &str) -> bool {
        let at = (self.len.load(Relaxed) as usize).min(N);
        let mut n = s.len().min(N - at);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        for (dst, b) in self.bytes[at..].iter().zip(&s.as_bytes()[..n]) {
            dst.store(*b, Relaxed);
        }
        self.len.store((at + n) as u32, Relaxed);
        n == s.len()
    }

    /// Copies the text into `out`, returning the number of bytes (the text is UTF-8 when only
    /// [`set`](Self::set) and [`push`](Self::push) wrote it).
    pub fn read(&self, out: &mut [u8; N]) -> usize {
        let n = (self.len.load(Relaxed) as usize).min(N);
        for (o, b) in out.iter_mut().zip(&self.bytes[..n]) {
            *o = b.load(Relaxed);
        }
        n
    }

    /// Empties it.
    pub fn clear(&self) {
        self.len.store(0, Relaxed);
    }
}

impl<const N: usize> core::fmt::Write for &Text<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        // A text that is full drops the rest: a cut message is better than none.
        self.push(s);
        Ok(())
    }
}

/// What the host asks the guest to do. Written before the vCPUs start; read-only after.
#[repr(C)]
pub struct Command {
    /// vCPUs in the VM (APIC ids `0..ncpus`).
    pub ncpus: AtomicU32,
    /// [`FLAG_TRACE`].
    pub flags: AtomicU32,
    /// The scenario's name in `mmusync_models::SCENARIOS`.
    pub scenario: Text<64>,
    /// The mutant's name (a `Barrier` or `Rule` variant), empty for the correct code.
    pub mutant: Text<64>,
    /// The index of the first round to run (rounds after a panic continue the count).
    pub first_round: AtomicU64,
    /// Run rounds until this index (exclusive).
    pub rounds: AtomicU64,
    /// Each role first waits a pseudo-random `0..jitter` spin iterations, drawn per round.
    pub jitter: AtomicU32,
    /// Seed of the jitter.
    pub seed: AtomicU64,
}

/// The run's state, written by the guest.
#[repr(C)]
pub struct Status {
    /// [`PHASE_BOOT`], [`PHASE_RUNNING`], [`PHASE_DONE`] or [`PHASE_REFUSED`].
    pub phase: AtomicU32,
    /// Why the command was refused (`ERR_*`).
    pub error: AtomicU32,
    /// The index of the round being run (valid in [`PHASE_RUNNING`]).
    pub round: AtomicU64,
    /// Rounds completed (an index: the next round to run).
    pub rounds_done: AtomicU64,
    /// Guest TSC when the first round started.
    pub tsc_start: AtomicU64,
    /// Guest TSC when the last round ended.
    pub tsc_end: AtomicU64,
}

/// A CPU exception the guest took.
#[repr(C)]
pub struct Exception {
    /// The vector (0-31).
    pub vector: AtomicU64,
    /// The error code the CPU pushed, or 0.
    pub error: AtomicU64,
    /// Where it happened.
    pub rip: AtomicU64,
    /// CR2 (the faulting address of a page fault).
    pub cr2: AtomicU64,
}

/// What one vCPU reports.
#[repr(C, align(64))]
pub struct PerCpu {
    /// Set once the vCPU has its IDT and x2APIC and waits for work.
    pub booted: AtomicU32,
    /// 1: panicked ([`panic`](Self::panic)); 2: took an exception ([`exception`](Self::exception)).
    pub failed: AtomicU32,
    /// Flush IPIs (`X86Ring0Hal::IPI_VECTOR`) this vCPU took.
    pub ipis: AtomicU64,
    /// Wake-up IPIs this vCPU took.
    pub wakes: AtomicU64,
    /// Roles this vCPU ran.
    pub roles: AtomicU64,
    /// Executor steps this vCPU reported (each `Executor::step` call).
    pub steps: AtomicU64,
    /// Guest memory accesses of the [`WORKLOAD`] command (each write and each read).
    pub accesses: AtomicU64,
    /// The role it runs or last ran.
    pub role: Text<32>,
    /// The last executor step, as text (only with [`FLAG_TRACE`]).
    pub last_step: Text<160>,
    /// A log line for [`PORT_LOG`].
    pub log: Text<200>,
    /// The panic message.
    pub panic: Text<600>,
    /// The exception.
    pub exception: Exception,
}

/// The mailbox at [`MAILBOX`].
#[repr(C)]
pub struct Mailbox {
    /// [`MAGIC`], written by the host with the command.
    pub magic: AtomicU64,
    /// The command.
    pub command: Command,
    /// The run's state.
    pub status: Status,
    /// Set by the host while the guest runs: finish after the current round.
    pub stop: AtomicU32,
    /// Per vCPU.
    pub cpus: [PerCpu; MAX_VCPUS],
}

// The mailbox must fit its room, and the layout must not reach the image.
const _: () = assert!(core::mem::size_of::<Mailbox>() as u64 <= MAILBOX_SIZE);
const _: () = assert!(MAILBOX + MAILBOX_SIZE <= IMAGE_BASE);
const _: () = assert!(HEAP < RAM_SIZE);
const _: () = assert!(TSS < MAILBOX && GDT < TSS && PD < GDT);
// The workload's region lies above RAM and inside the guest's identity map (1 GiB).
const _: () = assert!(WORKLOAD_GPA >= RAM_SIZE && WORKLOAD_GPA + WORKLOAD_PAGES * 4096 <= 1 << 30);
const _: () = assert!(WORKLOAD_GUEST_BYTES < 4096 && WORKLOAD_GUEST_BYTES % 8 == 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cuts_at_char_boundaries() {
        // SAFETY: all-zero bytes are a valid `Text` (atomics of zero).
        let t: Text<4> = unsafe { core::mem::zeroed() };
        let read = |t: &Text<4>| {
            let mut buf = [0u8; 4];
            let n = t.read(&mut buf);
            (buf, n)
        };
        t.set("abcdef");
        let (buf, n) = read(&t);
        assert_eq!(&buf[..n], b"abcd");
        t.set("a\u{e9}\u{20ac}");
        let (buf, n) = read(&t);
        assert_eq!(core::str::from_utf8(&buf[..n]), Ok("a\u{e9}"));
        t.clear();
        assert!(t.push("ab") && !t.push("xyz"));
        let (buf, n) = read(&t);
        assert_eq!(&buf[..n], b"abxy");
    }
}
