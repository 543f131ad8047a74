//! `kvm-vmm`: a small VMM on real KVM whose device-emulation threads cache guest-physical →
//! host translations with mmusync's translation cache while real vCPUs run guest code on that
//! memory; balloon unmaps (`madvise`) go through the notifier start/end path, memslot changes
//! through KVM and mmusync's memslot protocol, and every device use is checked against ghost
//! state (see `mmusync_kvm::vmm`).
//!
//! ```text
//! kvm-vmm [--seconds S] [--vcpus N] [--devices D]
//!         [--bug skip-cache-invalidate|no-notifier|ignore-memslot-generation]
//! ```
//!
//! Prints the counts and one `kvm-vmm: result key=value ...` line. Exit status: 0 no stale use
//! (or KVM not usable here: "SKIPPED" and the reason); 1 stale uses (printed); 2 bad arguments,
//! a setup or harness failure, or KVM not usable with `MMUSYNC_REQUIRE_KVM=1`; 3 a planted bug
//! went unnoticed.

use clap::Parser;
use mmusync_kvm::vmm::{run, Bug, Config, MAX_DEVICES};
use mmusync_kvm::{kvm_required, probe, REQUIRE_ENV};
use std::process::ExitCode;
use std::time::Duration;

/// A small VMM on real KVM whose device threads cache translations with mmusync.
#[derive(Debug, Parser)]
#[command(name = "kvm-vmm", version)]
struct Cli {
    /// How long the vCPUs, device threads and host-side changes run, in seconds: (0, 600].
    #[arg(long, default_value_t = 2.0, value_parser = seconds)]
    seconds: f64,
    /// vCPUs running the guest workload.
    #[arg(long, default_value_t = 2)]
    vcpus: usize,
    /// Device-emulation threads: 1..=8.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=MAX_DEVICES as i64))]
    devices: u8,
    /// Skip one protocol step in this VMM's own integration (it must then report stale uses):
    /// skip-cache-invalidate, no-notifier or ignore-memslot-generation.
    #[arg(long, value_parser = bug)]
    bug: Option<Bug>,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 600.0 => Ok(v),
        Ok(_) => Err("must be in (0, 600]".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn bug(s: &str) -> Result<Bug, String> {
    Bug::parse(s).ok_or_else(|| format!("unknown bug {s}"))
}

fn parse() -> Result<Config, String> {
    let cli = Cli::parse();
    Ok(Config {
        vcpus: cli.vcpus,
        devices: usize::from(cli.devices),
        duration: Duration::from_secs_f64(cli.seconds),
        bug: cli.bug,
    })
}

fn main() -> ExitCode {
    let cfg = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kvm-vmm: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = probe() {
        if kvm_required() {
            eprintln!("kvm-vmm: FAILED: {e} ({REQUIRE_ENV}=1)");
            return ExitCode::from(2);
        }
        println!("kvm-vmm: SKIPPED: {e}; set {REQUIRE_ENV}=1 to make this a failure");
        return ExitCode::SUCCESS;
    }
    let r = match run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kvm-vmm: {e}");
            return ExitCode::from(2);
        }
    };
    let accesses: u64 = r.vcpu_accesses.iter().sum();
    println!(
        "kvm-vmm: {} vCPUs ran {} workload rounds in {:.2} s: {accesses} guest accesses ({}); \
         {} device threads: {} device uses of a cached translation, {} refreshes ({} raced every attempt, \
         retried later), {} lookups found no memslot; {} invalidations (start/madvise/end, {} pages dropped); \
         {} memslot changes (KVM and mmusync); {} stale uses{}",
        r.vcpus,
        r.guest_rounds,
        r.elapsed.as_secs_f64(),
        r.vcpu_accesses.iter().enumerate().map(|(i, a)| format!("vCPU {i}: {a}")).collect::<Vec<_>>().join(", "),
        r.devices,
        r.device_uses,
        r.refreshes,
        r.refresh_races,
        r.no_slot,
        r.invalidations,
        r.pages_dropped,
        r.memslot_changes,
        r.stale_uses,
        cfg.bug.map(|b| format!(" (planted bug: {b})")).unwrap_or_default(),
    );
    println!(
        "kvm-vmm: result vcpus={} accesses={accesses} device_uses={} refreshes={} invalidations={} \
         memslot_changes={} stale_uses={} seconds={:.2}",
        r.vcpus,
        r.device_uses,
        r.refreshes,
        r.invalidations,
        r.memslot_changes,
        r.stale_uses,
        r.elapsed.as_secs_f64()
    );
    for v in &r.violations {
        println!("{v}");
    }
    match (r.stale_uses, cfg.bug) {
        (0, None) => {
            println!("ok: no device used a stale translation");
            ExitCode::SUCCESS
        }
        (0, Some(bug)) => {
            println!("planted bug {bug} was NOT detected");
            ExitCode::from(3)
        }
        (n, _) => {
            println!("FAILED: {n} stale use(s)");
            ExitCode::from(1)
        }
    }
}
