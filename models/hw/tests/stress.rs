//! Every scenario on real threads, both backends, a few iterations each: no violation, no
//! error. And the harness can fail: rule mutants that break the IPI protocol are caught.
//!
//! The tests share the process-wide CPU slots of the `std` backend, and a pool needs CPUs
//! `0..n` free, so they run one at a time (`SERIAL`).

use mmusync::Rule;
use mmusync_hw::exec::{is_violation, ScopedRole, ThreadExec};
use mmusync_hw::hal::{Backend, HalVisitor, Mutated};
use mmusync_hw::stress::{quiet_violation_panics, AnyScenario, StressConfig};
use mmusync_models::exec::VIOLATION;
use mmusync_models::{Executor, Mutant, Role, ScenarioHal};
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

/// Rule mutants of the IPI protocol free a page under an open walk in every round in which the
/// walker reached the page (about a quarter of them): a few hundred rounds always show it.
#[test]
fn the_harness_catches_rule_mutants_on_real_threads() {
    let _s = serial();
    quiet_violation_panics();
    let walk = AnyScenario::by_name("hw-sb-walk").expect("hw-sb-walk exists");
    for rule in [Rule::FlushWaitsForReaders, Rule::FreeAfterFlush] {
        let cfg = StressConfig { rounds: 2_000, mutant: Some(Mutant::Rule(rule)), ..quick() };
        let o = walk.stress(Backend::X86, &cfg);
        assert_eq!(o.errors, 0, "{rule}: {:?}", o.first_error);
        assert!(
            o.violations > 0,
            "{rule}: no violation in {} rounds ({} contended)",
            o.iterations,
            o.contended
        );
        let first = o.first_violation.unwrap_or_default();
        assert!(first.starts_with(VIOLATION) && first.contains("poison"), "{first}");
    }
    let entry = AnyScenario::by_name("hw-sb-entry").expect("hw-sb-entry exists");
    let cfg =
        StressConfig { rounds: 2_000, mutant: Some(Mutant::Rule(Rule::EntryChecksRequests)), ..quick() };
    let o = entry.stress(Backend::Std, &cfg);
    assert!(o.violations > 0, "EntryChecksRequests: no stale TLB use in {} rounds", o.iterations);
}

struct CpuOfEachRole(Arc<Vec<AtomicUsize>>);

impl HalVisitor for CpuOfEachRole {
    type Output = ();
    fn visit<H: ScenarioHal>(self, hal: H) {
        let exec = ThreadExec::new(3).expect("three free CPUs");
        let roles = (0..3)
            .map(|i| {
                let (seen, hal) = (self.0.clone(), hal.clone());
                Role::new("probe", move || seen[i].store(hal.current_cpu().index(), SeqCst))
            })
            .collect();
        exec.run(roles);
        let on0 = exec.on_cpu0(|| hal.current_cpu().index());
        assert_eq!(on0, 0, "on_cpu0 ran elsewhere");
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
