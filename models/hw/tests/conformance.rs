//! The HAL conformance suite on real threads: every check, every case, on both backends
//! ([`Backend::ALL`]: `StdHal`, and the `x86` backend's barrier mapping on `StdHal`'s CPUs), with
//! the pool executor ([`ThreadExec`]) and the poisoning allocator ([`PoisonAlloc`], which
//! promises [`Poisoning`], so the poison check runs here and only here).
//!
//! Real threads *sample*: each check repeats its body [`ROUNDS`] times in one run, the roles
//! lined up at every round start. The checks assert only that forbidden outcomes never appear,
//! so a correct backend passes whatever the schedule; whether a broken one would be caught in
//! these rounds is a matter of chance, which is why the deliberately broken backends are shown
//! failing under loom and shuttle instead. x86 is TSO: of the ordering checks, only store
//! buffering can show a missing full barrier on this machine.

use mmusync_hw::exec::ThreadExec;
use mmusync_hw::hal::{Backend, HalVisitor};
use mmusync_hw::poison::{PoisonAlloc, POISON_SPTE};
use mmusync_models::conformance::{Caps, Check, Page, Poisoning, Subject};
use mmusync_models::ScenarioHal;
use std::time::{Duration, Instant};

/// Rounds of each check case per run.
const ROUNDS: usize = 10_000;

/// How long the whole test may take before it is called hung.
const WATCHDOG: Duration = Duration::from_secs(300);

/// Runs every check on the backend it is given.
struct EveryCheck {
    exec: ThreadExec,
}

impl HalVisitor for EveryCheck {
    type Output = usize;

    fn visit<H: ScenarioHal>(self, hal: H) -> usize {
        // SAFETY: `PoisonAlloc` keeps every freed page allocated (in its quarantine) until the
        // last handle drops or `release_quarantine` is called, which this test never does, and
        // `free` stores `POISON_SPTE` into every entry of a table page (mmusync_hw::poison).
        let poisoning = unsafe { Poisoning::new(POISON_SPTE) };
        let subject = Subject {
            hal,
            exec: self.exec.clone(),
            alloc: PoisonAlloc::<Page<H>>::new(),
            caps: Caps { rounds: ROUNDS, poisoning: Some(poisoning) },
        };
        let mut runs = 0;
        for &check in Check::ALL {
            for case in 0..check.cases() {
                let t = Instant::now();
                // On CPU 0: the check's setup and final assertions run there, its role 0 inline.
                self.exec.on_cpu0(|| check.run(case, &subject));
                runs += 1;
                println!("  {:<64} {ROUNDS} rounds {:>9.2?}  pass", check.case_name(case), t.elapsed());
            }
        }
        runs
    }
}

#[test]
fn every_check_passes_on_both_backends() {
    // The only test in this file: the pool takes the process-wide CPU slots 0 and 1.
    // A check whose role 0 never returns would block `on_cpu0` for ever (the hang timeout
    // covers only the other roles): abort the process after a generous bound instead.
    let (finished, watchdog) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = watchdog.recv_timeout(WATCHDOG) {
            eprintln!("conformance: the checks did not finish within {WATCHDOG:?}: a hang; aborting");
            std::process::abort();
        }
    });
    let exec = ThreadExec::new(2).expect("a pool of two CPUs");
    // A backend that breaks an IPI or lock contract hangs some check; fail it rather than wait
    // for the default minute.
    exec.set_hang_timeout(Duration::from_secs(20));
    let start = Instant::now();
    for backend in Backend::ALL {
        let t = Instant::now();
        println!("{backend}:");
        let runs = backend.visit(None, EveryCheck { exec: exec.clone() });
        assert_eq!(runs, Check::ALL.iter().map(|c| c.cases()).sum::<usize>());
        println!("{backend}: {runs} check cases in {:.2?}", t.elapsed());
    }
    println!("both backends: {:.2?}", start.elapsed());
    let _ = finished.send(());
}
