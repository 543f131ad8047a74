//! Runs the `kvm-vmm` example on real KVM: about two seconds of the correct VMM must show guest
//! accesses, device uses, invalidations and memslot changes with 0 stale uses (exit 0), and
//! each planted bug must be caught (exit 1, stale uses reported). Outcomes only, never timings.
//!
//! Skipped, with the reason, where KVM is not usable, unless `MMUSYNC_REQUIRE_KVM=1`.

use mmusync_kvm::{kvm_required, probe, REQUIRE_ENV};
use std::collections::HashMap;
use std::io::Write as _;
use std::process::Command;
use std::sync::Mutex;

/// One VM at a time: the runs share the machine's CPUs.
static ONE_VM: Mutex<()> = Mutex::new(());

/// Whether KVM is usable (after saying why not, where it is not and not required).
fn usable() -> bool {
    if let Err(e) = probe() {
        assert!(!kvm_required(), "{REQUIRE_ENV}=1, but KVM is not usable here: {e}");
        let _ = writeln!(
            std::io::stderr(),
            "mmusync-kvm: skipped: {e}; set {REQUIRE_ENV}=1 to make this a failure"
        );
        return false;
    }
    true
}

/// Runs `kvm-vmm` with `args`: its exit code, stdout, and the numbers of its result line.
fn vmm(args: &[&str]) -> (i32, String, HashMap<String, f64>) {
    let out = Command::new(env!("CARGO_BIN_EXE_kvm-vmm")).args(args).output().expect("kvm-vmm starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("kvm-vmm: result "))
        .unwrap_or_else(|| panic!("no result line; stdout:\n{stdout}\nstderr:\n{stderr}"));
    let nums = result
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    (out.status.code().unwrap_or(-1), stdout, nums)
}

#[test]
fn the_vmm_never_uses_a_stale_translation() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    if !usable() {
        return;
    }
    let (code, stdout, n) = vmm(&["--seconds", "2", "--vcpus", "2", "--devices", "2"]);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(n["stale_uses"], 0.0, "{stdout}");
    for key in ["accesses", "device_uses", "refreshes", "invalidations", "memslot_changes"] {
        assert!(n[key] > 0.0, "{key} is 0: {stdout}");
    }
}

#[test]
fn planted_bugs_are_caught() {
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    if !usable() {
        return;
    }
    for bug in ["skip-cache-invalidate", "no-notifier", "ignore-memslot-generation"] {
        let (code, stdout, n) = vmm(&["--seconds", "1.5", "--bug", bug]);
        assert_eq!(code, 1, "--bug {bug} was not caught: {stdout}");
        assert!(n["stale_uses"] > 0.0, "--bug {bug}: {stdout}");
        assert!(stdout.contains("STALE"), "--bug {bug}: {stdout}");
    }
}
