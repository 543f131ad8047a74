#!/usr/bin/env bash
# Runs the core crate's unit tests under Miri (nightly): undefined behaviour, data races
# between the tests' threads, leaks, and aliasing violations in the unsafe code they reach.
#
#   bash ci/miri.sh [FILTER]     # only the tests whose names contain FILTER
#   MIRI_TEST_TIMEOUT=SECONDS    # per test, default 180; MIRI_JOBS=N, default nproc
#
# Installs the nightly `miri` and `rust-src` components if they are missing (a few seconds;
# the first run also builds Miri's sysroot, about half a minute).
#
# Each test runs in its own Miri process, so that one test Miri cannot run does not hide the
# others. A test that stops at an operation Miri does not support (the std backend's CPUs use
# `sigaction` and `pthread_kill`, which Miri cannot emulate) is listed as unsupported, not
# failed: Miri checked it up to that call. A test that runs past MIRI_TEST_TIMEOUT (a stress
# loop whose iteration count suits real threads, not an interpreter about 1000 times slower)
# is listed as timed out, not failed: Miri checked it for as long as it ran. Any other failure
# (UB, a data race, a leak, a failed assertion) fails the script and prints Miri's report.
#
# MIRIFLAGS defaults to Tree Borrows: crossbeam-epoch (the epoch reclamation backend) is known
# not to satisfy Stacked Borrows but to satisfy Tree Borrows (crossbeam's own Miri CI uses
# `-Zmiri-tree-borrows`), and permissive provenance silences its integer-to-pointer warnings.
set -euo pipefail
cd "$(dirname "$0")/.."

filter="${1:-}"
jobs="${MIRI_JOBS:-$(nproc)}"
export MIRI_TEST_TIMEOUT="${MIRI_TEST_TIMEOUT:-180}"

have_component() { rustup component list --installed --toolchain nightly | grep -q "^$1"; }
for c in miri rust-src; do
    have_component "$c" || rustup component add --toolchain nightly "$c"
done

export MIRIFLAGS="${MIRIFLAGS:--Zmiri-tree-borrows -Zmiri-permissive-provenance -Zmiri-seed=1}"
start=$(date +%s)
echo "== building the tests under Miri (MIRIFLAGS=$MIRIFLAGS)"
cargo +nightly miri setup
cargo +nightly miri test -p mmusync --lib --no-run

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo +nightly miri test -q -p mmusync --lib -- --list --format terse 2>/dev/null \
    | sed -n 's/: test$//p' | grep -F -- "$filter" >"$out/tests" || true
echo "== running $(wc -l <"$out/tests") tests, one Miri process each, $jobs at a time"

run_one() {
    local name="$1" out="$2" log
    log="$out/$(printf '%s' "$name" | tr -c 'A-Za-z0-9_' '_').log"
    local rc=0
    timeout "$MIRI_TEST_TIMEOUT" cargo +nightly miri test -q -p mmusync --lib -- --exact "$name" >"$log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        if grep -q "1 ignored" "$log"; then echo "ignored $name"; else echo "ok $name"; fi
    elif [ "$rc" -eq 124 ]; then
        echo "timeout $name"
    elif grep -q "unsupported operation" "$log"; then
        echo "unsupported $name ($(grep -o -m1 "can't call foreign function \`[a-z_0-9]*\`" "$log" || echo "see log"))"
    else
        echo "FAILED $name"
        cat "$log" >"$out/failed-$(basename "$log")"
    fi
}
export -f run_one

xargs -a "$out/tests" -d '\n' -P "$jobs" -I{} bash -c 'run_one "$1" "$2"' _ {} "$out" | sort >"$out/results"

echo
grep -c '^ok ' "$out/results" | sed 's/^/passed: /'
echo "unsupported by Miri (checked up to the unsupported call):"
grep '^unsupported ' "$out/results" | sed 's/^unsupported /  /' || echo "  none"
grep '^ignored ' "$out/results" | sed 's/^ignored /ignored: /' || true
echo "timed out after ${MIRI_TEST_TIMEOUT}s (checked for as long as they ran):"
grep '^timeout ' "$out/results" | sed 's/^timeout /  /' || echo "  none"
echo "== miri: $(( $(date +%s) - start ))s"
if grep -q '^FAILED ' "$out/results"; then
    for f in "$out"/failed-*; do
        echo
        echo "== $(basename "$f")"
        cat "$f"
    done
    grep '^FAILED ' "$out/results"
    exit 1
fi
