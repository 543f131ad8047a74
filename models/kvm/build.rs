//! Builds the guest (`guest/`, its own workspace) for `x86_64-unknown-none` with a nested
//! `cargo build --release`, and puts the ELF where `src/image.rs` embeds it
//! (`$OUT_DIR/mmusync-kvm-guest.elf`).
//!
//! The nested build gets its own target directory, `mmusync-kvm-guest/` next to the outer
//! build's profile directories (so the debug, release and clippy builds of this crate share one
//! guest build; cargo's lock on that directory serializes them), or under `OUT_DIR` when the
//! outer layout is not the usual one. It runs without the outer build's `RUSTFLAGS` and rustc
//! wrappers, and links with `-Crelocation-model=static` so the ELF is a fixed-address
//! executable (the target's default is a static PIE with relocations to apply).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let guest = manifest.join("guest");
    for p in [
        guest.join("src"),
        guest.join("Cargo.toml"),
        guest.join("Cargo.lock"),
        guest.join("build.rs"),
        guest.join("link.ld"),
        manifest.join("shared/src"),
        manifest.join("shared/Cargo.toml"),
        manifest.join("../src"),
        manifest.join("../Cargo.toml"),
        manifest.join("../../core/src"),
        manifest.join("../../core/Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    println!("cargo:rerun-if-env-changed=MMUSYNC_KVM_GUEST_TARGET_DIR");

    let target_dir = std::env::var_os("MMUSYNC_KVM_GUEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_target_dir(&out).unwrap_or_else(|| out.join("guest-target")));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest)
        .args(["build", "--release", "--target", "x86_64-unknown-none", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=static");
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CLIPPY_ARGS",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("cannot run cargo to build the KVM guest: {e}"));
    if !status.success() {
        panic!(
            "building the KVM guest (models/kvm/guest) for x86_64-unknown-none failed ({status}); \
             if the target is missing: rustup target add x86_64-unknown-none (ci/setup.sh does it)"
        );
    }
    let elf = target_dir.join("x86_64-unknown-none/release/mmusync-kvm-guest");
    let dest = out.join("mmusync-kvm-guest.elf");
    std::fs::copy(&elf, &dest)
        .unwrap_or_else(|e| panic!("cannot copy the guest ELF {} to {}: {e}", elf.display(), dest.display()));
}

/// `<target dir>/mmusync-kvm-guest` when `out` is `<target dir>[/<triple>]/<profile>/build/<unit>/out`.
fn shared_target_dir(out: &Path) -> Option<PathBuf> {
    let build = out.parent()?.parent()?;
    if build.file_name()? != "build" {
        return None;
    }
    Some(build.parent()?.parent()?.join("mmusync-kvm-guest"))
}
