//! Boots the guest on real KVM and checks outcomes (never timings, never sampled mutant hit
//! rates): a catalogue scenario passes on the correct code, a refused command is reported, a
//! panicking vCPU is counted and the guest restarted, and a stuck vCPU is reported as a hang.
//!
//! Skipped, with the reason, where KVM is not usable, unless `MMUSYNC_REQUIRE_KVM=1`.

use mmusync_kvm::check::{run_scenario, Config};
use mmusync_kvm::vm::{End, Limits, RunSpec, Vm};
use mmusync_kvm::{kvm_required, probe, REQUIRE_ENV};
use mmusync_kvm_shared::{ERR_NO_SCENARIO, SELFTEST_HANG, SELFTEST_VIOLATION};
use mmusync_models::row::Verdict;
use mmusync_models::Scenario;
use std::io::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// One VM at a time: the tests share the machine's CPUs with each other.
static ONE_VM: Mutex<()> = Mutex::new(());

/// A 2-vCPU VM, or `None` (after saying why) where KVM is not usable and not required.
fn vm() -> Option<Vm> {
    if let Err(e) = probe() {
        assert!(!kvm_required(), "{REQUIRE_ENV}=1, but KVM is not usable here: {e}");
        // Straight to stderr, past the test harness's capture, so the skip shows.
        let _ = writeln!(
            std::io::stderr(),
            "mmusync-kvm: skipped: {e}; set {REQUIRE_ENV}=1 to make this a failure"
        );
        return None;
    }
    Some(Vm::new(2).expect("a 2-vCPU VM"))
}

fn spec(scenario: &str, rounds: u64) -> RunSpec {
    RunSpec {
        scenario: scenario.into(),
        mutant: None,
        first_round: 0,
        rounds,
        jitter: 16,
        seed: 7,
        trace: false,
    }
}

#[test]
fn sb_walk_passes_on_the_correct_code() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut vm) = vm() else { return };
    let s = Scenario::by_name("sb-walk").expect("sb-walk is in the catalogue");
    let cfg = Config { rounds: 20, cap: Duration::from_secs(300), ..Config::default() };
    let out = run_scenario(&mut vm, s, None, &cfg).expect("the harness runs");
    assert_eq!(out.verdict(), Verdict::Pass, "{out:?}");
    assert_eq!((out.rounds, out.violations, out.errors, out.starts), (20, 0, 0, 1), "{out:?}");
    // The zapper flushes while the walker may be inside its walk: some rounds IPI it, and the
    // VM is reused for a second run.
    let again = run_scenario(&mut vm, s, None, &cfg).expect("the VM runs again");
    assert_eq!(again.verdict(), Verdict::Pass, "{again:?}");
}

#[test]
fn a_bad_command_is_refused() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut vm) = vm() else { return };
    let limits = Limits { hang: Duration::from_secs(60), deadline: None };
    let r = vm.run(&spec("no-such-scenario", 1), limits).expect("the harness runs");
    assert_eq!(r.end, End::Refused(ERR_NO_SCENARIO), "{r:?}");
}

#[test]
fn a_violation_is_counted_and_the_guest_restarted() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut vm) = vm() else { return };
    let limits = Limits { hang: Duration::from_secs(60), deadline: None };
    let mut next = 0;
    let mut violations = 0;
    while next < 3 {
        let r = vm.run(&RunSpec { first_round: next, ..spec(SELFTEST_VIOLATION, 3) }, limits).expect("runs");
        match r.end {
            End::Panicked { cpu: 1, violation: true, .. } => violations += 1,
            other => panic!("round {next}: expected vCPU 1's violation, got {other:?}"),
        }
        assert_eq!(r.round, next);
        next = r.round + 1;
    }
    assert_eq!(violations, 3);
}

#[test]
fn a_stuck_vcpu_is_reported_as_a_hang() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mut vm) = vm() else { return };
    let limits = Limits { hang: Duration::from_secs(3), deadline: None };
    let r = vm.run(&spec(SELFTEST_HANG, 1), limits).expect("the harness runs and kicks");
    assert_eq!(r.end, End::Hang, "{r:?}");
    let stuck = &r.vcpus[1];
    assert_eq!(stuck.role, "self-test-1", "{r:?}");
    // Its RIP was read after the kick and points into the guest image (a symbol was found).
    assert!(stuck.rip.as_deref().is_some_and(|rip| rip.contains('+')), "{}", r.vcpu_lines());
    // The VM is still usable after the kick.
    let cfg = Config { rounds: 3, cap: Duration::from_secs(300), ..Config::default() };
    let s = Scenario::by_name("sb-entry").expect("sb-entry is in the catalogue");
    let out = run_scenario(&mut vm, s, None, &cfg).expect("the harness runs");
    assert_eq!(out.verdict(), Verdict::Pass, "{out:?}");
}
