#!/usr/bin/env bash
# The publishable package: what `cargo publish` would upload must build and pass its own tests.
#
#   1. cargo package -p mmusync, then unpack the .crate in a temporary directory outside the
#      workspace and run its tests and doctests there (default features, then with `x86`), with
#      the package's own Cargo.lock and its own target directory; build its model backends as
#      a downstream user would (feature `shuttle`; `--cfg loom` in a target directory of its
#      own, as loom users build);
#   2. cargo publish --dry-run -p mmusync (manifest checks, packaging, verify build);
#   3. cargo-deny (deny.toml): licenses, bans and sources of the published crate (all
#      features); licenses and sources of the whole workspace. Advisories need the RustSec
#      database, which this network cannot fetch: reported as NOT CHECKED, with the command
#      that checks them where it can (`cargo deny --workspace check advisories`).
#
# Installs cargo-deny (`cargo install --locked`, a few minutes on 2 cores) if it is missing.
# `--allow-dirty` lets it run on a working tree with uncommitted changes, as CI's checkout may.
# The crate is unpacked outside the workspace into PACKAGE_CHECK_DIR (default
# /tmp/mmusync-package-check; the crate is recreated each run, always at the same path: a test
# binary records its manifest directory, so a build reused from another path would read files
# that are gone) and built in its target/ subdirectory.
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
step() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 ))s"; }

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "mmusync"))')

step "license files: the package's copies match the repository's"
for f in LICENSE-MIT LICENSE-APACHE; do
    cmp "$f" "core/$f" || { echo "core/$f differs from $f: copy it again" >&2; exit 1; }
done

step "cargo package -p mmusync"
cargo package -p mmusync --allow-dirty --no-verify
crate="target/package/mmusync-$version.crate"
cargo package -p mmusync --allow-dirty --list > /dev/null
work="${PACKAGE_CHECK_DIR:-/tmp/mmusync-package-check}"
rm -rf "$work/mmusync-$version"
mkdir -p "$work"
# -m: the files get the time of extraction. With the archive's times (those of the packaged
# sources) a build left in $work/target by an earlier run can look newer than changed sources,
# and cargo would test the old crate.
tar -m -xzf "$crate" -C "$work"
unpacked="$work/mmusync-$version"
# Outside the workspace, a file the crate reads from outside the package (include_str!, a
# test's fs::read) does not exist, so the build or the tests below fail.
echo "unpacked into $unpacked ($(elapsed))"

step "the unpacked crate's tests and doctests (default features, then x86)"
export CARGO_TARGET_DIR="$work/target"
(cd "$unpacked" && cargo test --locked && cargo test --locked --features x86)
(cd "$unpacked" && cargo build --locked --no-default-features)
step "the unpacked crate's model backends (feature shuttle; --cfg loom)"
(cd "$unpacked" && cargo build --locked --features shuttle)
(cd "$unpacked" && RUSTFLAGS="--cfg loom --cfg crossbeam_loom" CARGO_TARGET_DIR="$work/target-loom" cargo build --locked)
unset CARGO_TARGET_DIR
echo "unpacked tests passed ($(elapsed))"

step "cargo publish --dry-run -p mmusync"
cargo publish --dry-run -p mmusync --allow-dirty
echo "($(elapsed))"

step "cargo-deny"
if ! cargo deny --version 2> /dev/null | grep -q "$DENY_VERSION"; then
    d0=$(date +%s)
    cargo install cargo-deny --locked --version "$DENY_VERSION"
    echo "installed cargo-deny $DENY_VERSION in $(( $(date +%s) - d0 ))s"
fi
cargo deny --manifest-path core/Cargo.toml --all-features check licenses bans sources
cargo deny --workspace check licenses sources
cargo deny --manifest-path models/kvm/guest/Cargo.toml check licenses sources
echo "advisories: NOT CHECKED (the RustSec database cannot be fetched from this network; run"
echo "  cargo deny --workspace check advisories   where it can)"
echo "package check done ($(elapsed))"
