//! The `std` backend's IPI signal is configurable. Its own test binary, so its own process:
//! the signal is chosen before the process's first CPU registration, which fixes it.

#![cfg(all(feature = "std", target_os = "linux"))]

use mmusync::hal::std::{CpuError, StdHal, IPI_SIGNAL_OFFSET};
use mmusync::hal::{CpuSet, Cpus};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::mpsc;
use std::thread;

/// The handler installed for `sig` (`SIG_DFL` if none).
fn handler(sig: i32) -> libc::sighandler_t {
    // SAFETY: a null new action only reads the current one into `old`, a zeroed plain C
    // struct.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        assert_eq!(libc::sigaction(sig, std::ptr::null(), &mut old), 0);
        old.sa_sigaction
    }
}

/// One test only: tests of one binary share the process.
#[test]
fn the_ipi_signal_is_chosen_before_the_first_registration() {
    let default = libc::SIGRTMIN() + IPI_SIGNAL_OFFSET;
    let chosen = libc::SIGRTMIN() + 7;
    assert_eq!(StdHal::ipi_signal(), default);
    assert_eq!(StdHal::set_ipi_signal(libc::SIGTERM), Err(CpuError::NotRealtime(libc::SIGTERM)));
    assert_eq!(
        StdHal::set_ipi_signal(libc::SIGRTMAX() + 1),
        Err(CpuError::NotRealtime(libc::SIGRTMAX() + 1))
    );
    StdHal::set_ipi_signal(chosen).unwrap();
    assert_eq!(StdHal::ipi_signal(), chosen);

    // A CPU that spins with interrupts on takes IPIs on the chosen signal.
    let stop = &AtomicBool::new(false);
    let (tx, rx) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(move || {
            let reg = StdHal::register_cpu().unwrap();
            tx.send(reg.cpu()).unwrap();
            while !stop.load(SeqCst) {
                thread::yield_now();
            }
        });
        let mut set = CpuSet::empty();
        set.insert(rx.recv().unwrap());
        for _ in 0..10 {
            StdHal.ipi_and_wait(set);
        }
        stop.store(true, SeqCst);
    });
    assert_ne!(handler(chosen), libc::SIG_DFL, "the handler is on the chosen signal");
    assert_eq!(handler(default), libc::SIG_DFL, "the default signal is left alone");
    // Fixed now.
    assert_eq!(StdHal::set_ipi_signal(chosen), Ok(()));
    assert_eq!(StdHal::set_ipi_signal(default), Err(CpuError::SignalFixed(chosen)));
}
