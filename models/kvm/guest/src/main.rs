//! # mmusync-kvm-guest
//!
//! The guest of mmusync's KVM harness (`mmusync-kvm`): a bare-metal program for
//! `x86_64-unknown-none` that runs in ring 0 on every vCPU of the harness's VM and runs the
//! catalogue's scenarios (`mmusync_models::SCENARIOS`, their shared bodies, unchanged) on core's
//! ring-0 backend, [`mmusync::hal::x86::X86Ring0Hal`]: `cli`/`sti` as interrupts off, x2APIC IPIs
//! with acknowledgement as the flush, one role per vCPU.
//!
//! The host starts every vCPU at [`_start`] in 64-bit mode with paging on (identity map),
//! vCPU `i` on its own stack. vCPU 0 sets up the heap and the IDT; every vCPU loads the IDT
//! and enables its x2APIC; then vCPU 0 runs the command in the mailbox
//! (`mmusync_kvm_shared::Mailbox`) and the others run the roles it posts ([`exec`]). Results,
//! panics and exceptions go to the mailbox and out through I/O ports.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod exec;
mod idt;

use core::fmt::Write as _;
use core::sync::atomic::{AtomicU32, Ordering::Relaxed, Ordering::SeqCst};
use linked_list_allocator::LockedHeap;
use mmusync::hal::x86::X86Ring0Hal;
use mmusync_kvm_shared::{
    ERR_BAD_MAGIC, ERR_NOT_SHARED, ERR_NO_MUTANT, ERR_NO_SCENARIO, ERR_TOO_FEW_CPUS, HEAP, MAGIC, PHASE_DONE,
    PHASE_REFUSED, PHASE_RUNNING, PORT_DONE, PORT_LOG, PORT_PANIC, RAM_SIZE, SELFTEST_HANG,
    SELFTEST_VIOLATION, WORKLOAD, WORKLOAD_ACCESSES, WORKLOAD_GPA, WORKLOAD_GUEST_BYTES, WORKLOAD_PAGES,
};
use mmusync_models::{Executor, Mutant, Role, Scenario};

/// The heap: the rest of guest RAM after the stacks.
#[global_allocator]
static ALLOCATOR: LockedHeap = LockedHeap::empty();

/// Set by vCPU 0 once the heap and the IDT are ready.
static SETUP_DONE: AtomicU32 = AtomicU32::new(0);

/// The entry point of every vCPU: `cpu` (RDI) is its number, which is also its APIC id.
///
/// # Safety
///
/// Entered only by the harness, once per vCPU, in ring 0 and 64-bit mode with the identity
/// map, the GDT and the stack of `cpu` set up as `mmusync_kvm_shared` describes.
#[no_mangle]
#[link_section = ".text.start"]
pub unsafe extern "C" fn _start(cpu: u64) -> ! {
    if cpu == 0 {
        // SAFETY: the heap range is guest RAM that nothing else uses (the layout keeps it
        // apart from the image, the stacks and the mailbox), and this runs once, before any
        // allocation.
        unsafe { ALLOCATOR.lock().init(HEAP as *mut u8, (RAM_SIZE - HEAP) as usize) };
        idt::build();
        SETUP_DONE.store(1, SeqCst);
    } else {
        while SETUP_DONE.load(SeqCst) == 0 {
            core::hint::spin_loop();
        }
    }
    idt::load();
    // SAFETY: ring 0; the harness advertises x2APIC in CPUID.
    unsafe { arch::enable_x2apic() };
    arch::sti();
    arch::me().booted.store(1, SeqCst);
    if cpu == 0 {
        drive()
    } else {
        exec::worker()
    }
}

/// Writes a line to the host's log.
fn log(args: core::fmt::Arguments<'_>) {
    let me = arch::me();
    me.log.clear();
    let _ = (&me.log).write_fmt(args);
    arch::outl(PORT_LOG, arch::cpu_index() as u32);
}

/// Refuses the command with `error` and stops.
fn refuse(error: u32) -> ! {
    let st = &arch::mailbox().status;
    st.error.store(error, SeqCst);
    st.phase.store(PHASE_REFUSED, SeqCst);
    arch::outl(PORT_DONE, 1);
    arch::halt_forever()
}

/// vCPU 0: runs the command's rounds.
fn drive() -> ! {
    let mb = arch::mailbox();
    if mb.magic.load(SeqCst) != MAGIC {
        refuse(ERR_BAD_MAGIC);
    }
    let cmd = &mb.command;
    let ncpus = cmd.ncpus.load(Relaxed) as usize;
    for c in &mb.cpus[..ncpus] {
        while c.booted.load(SeqCst) == 0 {
            core::hint::spin_loop();
        }
    }
    let mut name = [0u8; 64];
    let n = cmd.scenario.read(&mut name);
    match core::str::from_utf8(&name[..n]) {
        Ok(SELFTEST_VIOLATION) => selftest(|| {
            panic!("{}: harness self-test (vCPU 1 fails on purpose)", mmusync_models::exec::VIOLATION)
        }),
        Ok(SELFTEST_HANG) => selftest(|| {
            arch::cli();
            loop {
                core::hint::spin_loop();
            }
        }),
        Ok(WORKLOAD) => workload(ncpus),
        _ => {}
    }
    let Some(scenario) = core::str::from_utf8(&name[..n]).ok().and_then(Scenario::by_name) else {
        refuse(ERR_NO_SCENARIO)
    };
    let Some(body) = scenario.shared() else { refuse(ERR_NOT_SHARED) };
    if scenario.roles.len() > ncpus {
        refuse(ERR_TOO_FEW_CPUS);
    }
    let n = cmd.mutant.read(&mut name);
    let mutant = match &name[..n] {
        [] => None,
        m => match core::str::from_utf8(m).ok().and_then(Mutant::from_name) {
            Some(m) => Some(m),
            None => refuse(ERR_NO_MUTANT),
        },
    };
    // SAFETY: every vCPU runs in ring 0 with its x2APIC enabled (APIC id = vCPU number, below
    // 64), has loaded the IDT whose IPI_VECTOR handler calls `ack_ipi` and then EOIs, keeps
    // running (idle vCPUs halt with interrupts on), and the scenarios call `ipi_and_wait` only
    // from roles, which run with interrupts on.
    let hal = mmusync_models::Mutated::new(unsafe { X86Ring0Hal::new() }, mutant);
    let first = cmd.first_round.load(Relaxed);
    let rounds = cmd.rounds.load(Relaxed);
    if first == 0 {
        log(format_args!(
            "{}: {} rounds on {ncpus} vCPUs, mutant {}",
            scenario.name,
            rounds,
            mutant.map_or("none", |m| m.name())
        ));
    }
    let st = &mb.status;
    st.tsc_start.store(arch::rdtsc(), SeqCst);
    st.phase.store(PHASE_RUNNING, SeqCst);
    for round in first..rounds {
        if mb.stop.load(SeqCst) != 0 {
            break;
        }
        st.round.store(round, SeqCst);
        exec::set_round(round);
        body.run(&hal, &exec::GuestExec);
        st.rounds_done.store(round + 1, SeqCst);
    }
    st.tsc_end.store(arch::rdtsc(), SeqCst);
    st.phase.store(PHASE_DONE, SeqCst);
    arch::outl(PORT_DONE, 0);
    arch::halt_forever()
}

/// Runs the harness self-test `role1` as role 1 of every round (role 0 does nothing).
fn selftest(role1: fn()) -> ! {
    let mb = arch::mailbox();
    let st = &mb.status;
    st.phase.store(PHASE_RUNNING, SeqCst);
    for round in mb.command.first_round.load(Relaxed)..mb.command.rounds.load(Relaxed) {
        st.round.store(round, SeqCst);
        let roles = alloc::vec![Role::new("self-test-0", || {}), Role::new("self-test-1", role1)];
        exec::GuestExec.run(roles);
        st.rounds_done.store(round + 1, SeqCst);
    }
    st.phase.store(PHASE_DONE, SeqCst);
    arch::outl(PORT_DONE, 0);
    arch::halt_forever()
}

/// The [`WORKLOAD`] command: rounds of [`touch`] on every vCPU until the host says stop.
fn workload(ncpus: usize) -> ! {
    let mb = arch::mailbox();
    let st = &mb.status;
    st.tsc_start.store(arch::rdtsc(), SeqCst);
    st.phase.store(PHASE_RUNNING, SeqCst);
    for round in mb.command.first_round.load(Relaxed)..mb.command.rounds.load(Relaxed) {
        if mb.stop.load(SeqCst) != 0 {
            break;
        }
        st.round.store(round, SeqCst);
        let roles = (0..ncpus).map(|_| Role::new("workload", move || touch(round, ncpus))).collect();
        exec::GuestExec.run(roles);
        st.rounds_done.store(round + 1, SeqCst);
    }
    st.tsc_end.store(arch::rdtsc(), SeqCst);
    st.phase.store(PHASE_DONE, SeqCst);
    arch::outl(PORT_DONE, 0);
    arch::halt_forever()
}

/// One round of the workload on this vCPU: writes and reads back [`WORKLOAD_ACCESSES`] words
/// spread over the data region's pages (the guest's part of each page).
fn touch(round: u64, ncpus: usize) {
    let cpu = arch::cpu_index() as u64;
    let words = WORKLOAD_GUEST_BYTES / 8;
    let mut sum = 0u64;
    for i in 0..WORKLOAD_ACCESSES {
        let page = (i + cpu * 7 + round) % WORKLOAD_PAGES;
        let word = (cpu + i * ncpus as u64) % words;
        let p = (WORKLOAD_GPA + page * 4096 + word * 8) as *mut u64;
        // SAFETY: `p` is an aligned word of the data region, which the host keeps mapped as a
        // memslot for the whole command (the identity map covers it). The host may drop the
        // page's contents at any time (it then reads as zero): the value read is not relied on.
        unsafe {
            p.write_volatile(round ^ i);
            sum = sum.wrapping_add(p.read_volatile());
        }
    }
    core::hint::black_box(sum);
    arch::me().accesses.fetch_add(2 * WORKLOAD_ACCESSES, Relaxed);
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    arch::cli();
    let me = arch::me();
    if me.failed.swap(1, SeqCst) != 0 {
        // A panic while reporting one: the first report stands.
        arch::halt_forever();
    }
    me.panic.clear();
    let _ = write!(&mut &me.panic, "{}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(&mut &me.panic, " (at {}:{})", l.file(), l.line());
    }
    arch::outl(PORT_PANIC, arch::cpu_index() as u32);
    arch::halt_forever()
}
