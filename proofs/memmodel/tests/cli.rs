//! The `memmodel` binary: text and JSON output, exit status.

use std::process::Command;

fn memmodel(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_memmodel"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run memmodel");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn json_rows_per_model() {
    let (code, out) = memmodel(&["check", "litmus/kernel/sb-once.litmus", "--json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("JSON row")).collect();
    assert_eq!(rows.len(), 5);
    let lkmm = rows.iter().find(|r| r["model"] == "lkmm").expect("lkmm row");
    assert_eq!(lkmm["verdict"], "Sometimes");
    assert_eq!(lkmm["matches"], true);
    let sc = rows.iter().find(|r| r["model"] == "sc").expect("sc row");
    assert_eq!(sc["verdict"], "Never");
}

#[test]
fn one_model_in_text() {
    let (code, out) = memmodel(&["check", "litmus/kernel/mp-wmb-rmb.litmus", "--model", "armv8"]);
    assert_eq!(code, 0);
    assert!(out.contains("armv8  Never"), "{out}");
    assert!(!out.contains("lkmm"), "{out}");
}

#[test]
fn unsupported_and_unknown_model_exit_2() {
    assert_eq!(memmodel(&["check", "litmus/kernel/dep-plain.litmus"]).0, 2);
    assert_eq!(memmodel(&["check", "litmus/kernel/sb-mb.litmus", "--model", "power"]).0, 2);
}
