//! Fuzz target 2, `schedule`: bytes → one shuttle execution of a scenario (`mmusync-shuttle`'s
//! targets: every `mmusync-models` scenario and the larger shuttle ones), with every scheduling
//! decision taken from the input (`ByteScheduler`), so that libFuzzer's coverage of core's
//! protocol code steers which interleavings run. The first byte picks the scenario. Any
//! invariant violation, deadlock or liveness failure is a crash; shuttle prints the failing
//! schedule, which `mmusync-shuttle replay` reproduces without the fuzzer.
//!
//! `MMUSYNC_FUZZ_TARGET=NAME` fuzzes one scenario; `MMUSYNC_FUZZ_MUTANT=RULE` breaks a rule in
//! every execution, to measure how fast the fuzzer kills it (see `fuzz/README.md`).
#![no_main]

use mmusync_shuttle::bytes::FuzzSetup;
use mmusync_shuttle::runner::Outcome;
use std::sync::OnceLock;

fn setup() -> &'static FuzzSetup {
    static SETUP: OnceLock<FuzzSetup> = OnceLock::new();
    SETUP.get_or_init(|| {
        // libfuzzer-sys's panic hook aborts at the first panic, which would be the failing
        // shuttle task's, before the runner records the schedule and builds the report. Put
        // the standard hook back: the runner catches that panic, and the one below (which
        // libfuzzer-sys turns into an abort, a crash) carries the report and its replay.
        drop(std::panic::take_hook());
        FuzzSetup::from_env().unwrap_or_else(|e| panic!("schedule fuzz target: {e}"))
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(report) = setup().run(data) else { return };
    if report.outcome != Outcome::Pass {
        panic!(
            "{} ({}) under the fuzzer's schedule: {}\nreplay: {}",
            report.target,
            report.outcome,
            report.message.as_deref().unwrap_or(""),
            report.replay_command().unwrap_or_default()
        );
    }
});
