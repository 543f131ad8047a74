#!/usr/bin/env bash
# The publishable package: what `cargo publish` would upload must build and pass its own tests.
#
#   1. cargo package -p mmusync, then unpack the .crate in a temporary directory outside the
#      workspace and run its tests and doctests there (default features, then with `x86`), with
#      the package's own Cargo.lock and its own target directory;
#   2. cargo publish --dry-run -p mmusync (manifest checks, packaging, verify build);
#   3. cargo-deny (deny.toml): licenses, bans and sources of the published crate (all
#      features); licenses and sources of the whole workspace; advisories only when the
#      RustSec database on github.com can be reached, else reported as NOT CHECKED.
#
# Installs cargo-deny (`cargo install --locked`, a few minutes on 2 cores) if it is missing.
# `--allow-dirty` lets it run on a working tree with uncommitted changes, as CI's checkout may.
# PACKAGE_TARGET_DIR (default /tmp/mmusync-package-target) holds the unpacked crate's build.
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
work=$(mktemp -d /tmp/mmusync-package.XXXXXX)
trap 'rm -rf "$work"' EXIT
tar -xzf "$crate" -C "$work"
unpacked="$work/mmusync-$version"
# Outside the workspace, a file the crate reads from outside the package (include_str!, a
# test's fs::read) does not exist, so the build or the tests below fail.
echo "unpacked into $unpacked ($(elapsed))"

step "the unpacked crate's tests and doctests (default features, then x86)"
export CARGO_TARGET_DIR="${PACKAGE_TARGET_DIR:-/tmp/mmusync-package-target}"
(cd "$unpacked" && cargo test --locked && cargo test --locked --features x86)
(cd "$unpacked" && cargo build --locked --no-default-features)
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
if timeout 20 git ls-remote https://github.com/rustsec/advisory-db HEAD > /dev/null 2>&1; then
    cargo deny --workspace check advisories
else
    echo "advisories: NOT CHECKED (github.com, where the RustSec database lives, is unreachable)"
fi
echo "package check done ($(elapsed))"
