#!/usr/bin/env bash
# Runs the core crate's unit tests under Miri (nightly): undefined behaviour, data races
# between the tests' threads, and leaks in the unsafe code they reach.
#
#   bash ci/miri.sh [extra `cargo miri test` arguments, e.g. a test name filter]
#
# Installs the nightly `miri` and `rust-src` components if they are missing (a few seconds).
# MIRIFLAGS may be overridden; the default keeps Miri's checks on and only makes its
# scheduler's choices reproducible. Tests that Miri cannot run (real signals, FFI) carry
# `#[cfg_attr(miri, ignore = "...")]` in the source with the reason; the ignored ones are
# listed in the output.
set -euo pipefail
cd "$(dirname "$0")/.."

have_component() { rustup component list --installed --toolchain nightly | grep -q "^$1"; }
for c in miri rust-src; do
    have_component "$c" || rustup component add --toolchain nightly "$c"
done

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-seed=1}"
echo "== cargo +nightly miri test -p mmusync --lib (MIRIFLAGS=$MIRIFLAGS)"
cargo +nightly miri setup >/dev/null
start=$(date +%s)
cargo +nightly miri test -p mmusync --lib "$@"
echo "== miri: passed in $(( $(date +%s) - start ))s"
