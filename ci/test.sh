#!/usr/bin/env bash
# The tests: formatting, lints, docs, the no_std build, and the workspace's test suites.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh

step() { printf '\n== %s\n' "$*"; }

step "rustfmt"
cargo fmt --all -- --check
step "clippy (all targets, default features)"
cargo clippy --workspace --all-targets -- -D warnings
step "clippy (x86 backend)"
cargo clippy -p mmusync --features x86 --all-targets -- -D warnings
step "clippy (the loom build: --cfg loom, in loom's own target directory)"
# mmusync: its loom backend (hal::loom); mmusync-examples: the user-MMU loom test.
RUSTFLAGS="--cfg loom --cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom \
  cargo clippy -p mmusync -p mmusync-models -p mmusync-loom -p mmusync-examples --all-targets -- -D warnings
step "clippy (the fuzz workspace)"
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings
step "clippy (the KVM guest: its own workspace, x86_64-unknown-none)"
(cd models/kvm/guest && env -u RUSTFLAGS CARGO_ENCODED_RUSTFLAGS=-Crelocation-model=static \
  cargo clippy --release --target x86_64-unknown-none --target-dir ../../../target/mmusync-kvm-guest -- -D warnings)
step "no_std build for x86_64-unknown-none (no features; x86-ring0)"
cargo build -p mmusync --no-default-features --target x86_64-unknown-none
cargo build -p mmusync --no-default-features --features alloc,x86-ring0 --target x86_64-unknown-none
step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps
step "tests"
cargo test --workspace
