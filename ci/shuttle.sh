#!/usr/bin/env bash
# The shuttle part of CI (crate mmusync-shuttle, docs/shuttle.md): random and PCT schedules over
# the scenarios of mmusync-models and the larger shuttle-only ones, every rule mutant they
# target, the liveness checks, and a replay of every failure found so far.
#
#   bash ci/shuttle.sh                  # the CI set: under a minute on 2 cores
#   bash ci/shuttle.sh --soak [MINUTES] # soak: the correct code only, fresh seeds, MINUTES in all
#                                       # (default 60), split over the targets and both schedulers
#   bash ci/shuttle.sh --record         # the CI set, then rewrite models/shuttle/tests/regressions/
#                                       # (and the list in tests/regressions.rs) from its failures
#
# Environment: MMUSYNC_SHUTTLE_SCALE=F multiplies every CI iteration count (default 1);
# SHUTTLE_RANDOM_SEED=N replaces every scheduler seed (shuttle's own override).
#
# Output goes to results/shuttle/ (gitignored): ci.log (one line per run), summary.md (every
# row, the rule scorecard, and each failure with its message, schedule, replay command and
# trace), schedules/*.schedule, tests.log; soak runs go to results/shuttle/soak-<time>/.
# Exit status: non-zero if a correct target failed, a targeted mutant survived, a bug modelled
# on purpose was not found, or a regression replay did not fail as recorded.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=ci
minutes=60
case "${1:-}" in
    "") ;;
    --soak)
        mode=soak
        minutes="${2:-60}"
        ;;
    --record) mode=record ;;
    *)
        sed -n '2,21p' "$0"
        exit 2
        ;;
esac

out=results/shuttle
mkdir -p "$out"
bin=target/release/mmusync-shuttle

echo "== building mmusync-shuttle (release)"
cargo build --release -p mmusync-shuttle
cargo test --release -p mmusync-shuttle --no-run 2>&1 | tail -n 1

case "$mode" in
soak)
    dir="$out/soak-$(date +%Y%m%d-%H%M%S)"
    mkdir -p "$dir"
    echo "== soak: $minutes minutes, output under $dir"
    "$bin" soak --minutes "$minutes" --out "$dir" 2>"$dir/stderr.log" | tee "$dir/soak.log"
    exit "${PIPESTATUS[0]}"
    ;;
record)
    regressions=models/shuttle/tests/regressions
    rm -rf "$regressions"
    echo "== CI set, recording failures in $regressions"
    start=$(date +%s)
    set +e
    "$bin" ci --out "$out" --record "$regressions" 2>"$out/ci.stderr" | tee "$out/ci.log"
    rc=${PIPESTATUS[0]}
    set -e
    echo "== CI set took $(($(date +%s) - start)) s"
    # The entries `ci --record` printed replace the list at the end of tests/regressions.rs.
    list=models/shuttle/tests/regressions.rs
    awk '/^regressions! \{$/ { print; exit } { print }' "$list" >"$list.new"
    grep -E '^    [a-z0-9_]+: ".*\.schedule", ' "$out/ci.log" >>"$list.new" || true
    echo "}" >>"$list.new"
    mv "$list.new" "$list"
    echo "== rewrote $list with $(grep -c '\.schedule", ' "$list") regressions"
    cargo test --release -p mmusync-shuttle 2>&1 | tee "$out/tests.log" | grep -E '^test result|FAILED|panicked' || true
    exit "$rc"
    ;;
esac

echo "== regression replays and smoke tests"
set +e
cargo test --release -p mmusync-shuttle >"$out/tests.log" 2>&1
test_rc=$?
set -e
grep -E '^test result|FAILED' "$out/tests.log" || true

echo "== CI set (scale ${MMUSYNC_SHUTTLE_SCALE:-1})"
start=$(date +%s)
set +e
# A run that outlives the budget fails CI instead of hanging it.
timeout 570 "$bin" ci --out "$out" 2>"$out/ci.stderr" | tee "$out/ci.log"
ci_rc=${PIPESTATUS[0]}
set -e
echo "== CI set took $(($(date +%s) - start)) s; summary in $out/summary.md"

if [ "$test_rc" -ne 0 ]; then
    echo "FAILED: regression replays or smoke tests (see $out/tests.log)"
fi
if [ "$ci_rc" -ne 0 ]; then
    echo "FAILED: CI set (exit $ci_rc; see $out/ci.log and $out/summary.md)"
fi
[ "$test_rc" -eq 0 ] && [ "$ci_rc" -eq 0 ]
