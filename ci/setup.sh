#!/usr/bin/env bash
# Installs what a fresh machine (stable + nightly toolchains only) lacks. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

have_target() { rustup target list --installed --toolchain "$1" | grep -qx "$2"; }
have_component() { rustup component list --installed --toolchain "$1" | grep -q "^$2"; }

# x86_64-unknown-none: the no_std builds of the crate, and the KVM checker's guest
# (models/kvm/guest), which models/kvm/build.rs builds for it.
have_target stable x86_64-unknown-none || rustup target add --toolchain stable x86_64-unknown-none
for c in clippy rustfmt; do
    have_component stable "$c" || rustup component add --toolchain stable "$c"
done
