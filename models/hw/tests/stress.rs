//! Every scenario on real threads, both backends, a few iterations each: no violation, no
//! error (the correct code never shows one, whatever the schedule). And the harness can fail:
//! a violation in any role fails the run.
//!
//! Whether a *mutant* shows on real threads is a sampled outcome that depends on the schedule
//! and the machine's load, so it is never asserted here: `ci/hw.sh` runs the rule and barrier
//! mutants on real threads and reports their hit rates.
//!
//! The tests share the process-wide CPU slots of the `std` backend, and a pool needs CPUs
//! `0..n` free, so they run one at a time (`SERIAL`).

use mmusync::Rule;
use mmusync_hw::exec::{is_violation, ScopedRole, ThreadExec};
use mmusync_hw::hal::{Backend, HalVisitor, Mutated};
use mmusync_hw::stress::{quiet_violation_panics, AnyScenario, StressConfig};
use mmusync_models::exec::VIOLATION;
use mmusync_models::{Executor, Role, ScenarioHal};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn quick() -> StressConfig {
    StressConfig {
        iterations: 100,
        rounds: 400,
        batch_rounds: 200,
        cap: Duration::from_secs(20),
        ..Default::default()
    }
}

#[test]
fn every_scenario_is_clean_on_both_backends() {
    let _s = serial();
    quiet_violation_panics();
    let cfg = quick();
    let mut ran = 0;
    for s in AnyScenario::all() {
        for backend in Backend::ALL {
            let o = s.stress(backend, &cfg);
            assert!(o.iterations > 0, "{} [{backend}] ran nothing", o.scenario);
            assert!(
                o.clean(),
                "{} [{backend}]: {} violation(s), {} error(s): {:?} {:?}",
                o.scenario,
                o.violations,
                o.errors,
                o.first_violation,
                o.first_error
            );
            ran += 1;
        }
    }
    assert!(ran >= 2 * 4, "expected every model and hardware scenario on both backends");
}

struct CpuOfEachRole(Arc<Vec<AtomicUsize>>);

impl HalVisitor for CpuOfEachRole {
    type Output = ();
    fn visit<H: ScenarioHal>(self, hal: H) {
        let exec = ThreadExec::new(3).expect("three free CPUs");
        let roles = (0..3)
            .map(|i| {
                let (seen, hal) = (self.0.clone(), hal.clone());
                Role::new("probe", move || {
                    seen[i].store(hal.current_cpu().map_or(usize::MAX, |c| c.index()), SeqCst)
                })
            })
            .collect();
        exec.run(roles);
        let on0 = exec.on_cpu0(|| hal.current_cpu().map(|c| c.index()));
        assert_eq!(on0, Some(0), "on_cpu0 ran elsewhere");
    }
}

#[test]
fn role_i_runs_as_cpu_i() {
    let _s = serial();
    for backend in Backend::ALL {
        let seen = Arc::new((0..3).map(|_| AtomicUsize::new(usize::MAX)).collect::<Vec<_>>());
        backend.visit(None, CpuOfEachRole(seen.clone()));
        let cpus: Vec<_> = seen.iter().map(|c| c.load(SeqCst)).collect();
        assert_eq!(cpus, [0, 1, 2], "{backend}");
    }
}

#[test]
fn a_violation_in_any_role_fails_the_run_after_every_role_finished() {
    let _s = serial();
    quiet_violation_panics();
    let exec = ThreadExec::new(2).expect("two free CPUs");
    let finished = Arc::new(AtomicUsize::new(0));
    let f = finished.clone();
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        exec.run(vec![
            Role::new("slow", move || {
                std::thread::sleep(Duration::from_millis(50));
                f.fetch_add(1, SeqCst);
            }),
            Role::new("bad", || panic!("{VIOLATION}: test")),
        ])
    }));
    let p = run.expect_err("the run must fail");
    assert!(is_violation(p.as_ref()));
    assert_eq!(finished.load(SeqCst), 1, "the run returned before the other role finished");
    // The pool still works.
    let mut x = 0;
    let slot = &mut x;
    exec.run_scoped(vec![ScopedRole::new("borrow", move || *slot = 7)]);
    assert_eq!(x, 7);
}

#[test]
fn a_mutated_backend_is_the_backend_without_a_mutant() {
    let h = Mutated::new(mmusync::hal::std::StdHal, None);
    assert!(Rule::ALL.iter().all(|&r| mmusync::hal::Hal::keeps(&h, r)));
    assert_eq!(h.mutant(), None);
}
