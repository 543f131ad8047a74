#!/usr/bin/env bash
# Mutation testing of core's protocol modules with cargo-mutants (the files and exclusions are
# in .cargo/mutants.toml): every mutant of the source (an operator flipped, a function body
# replaced, a condition forced) must turn some test red. Not part of .ci/run: each mutant
# rebuilds and reruns a test command, hours on 2 cores. Run it in tiers, each on what the
# previous tier missed, so the expensive checkers only see the mutants the cheap ones miss:
#
#   tier 1  core's own tests: unit tests, doctests, the integration tests (every mutant)
#   tier 2  + the API oracle (proptest state machine, regressions) and the examples' tests
#           (the std-threads and userfaultfd VMMs, the user-MMU model tests)
#   tier 3  + every loom scenario on the mutated code (`mmusync-loom --test loom`, release,
#           --cfg loom): the concurrent invariants
#
#   ci/mutants.sh --tier 1 [--shard k/n] [cargo-mutants args...]
#   ci/mutants.sh --tier 2        (needs tier 1's results; reruns only its missed mutants)
#   ci/mutants.sh --tier 3        (needs tier 2's results)
#   ci/mutants.sh --summary       caught / missed / timeout / unviable of each tier
#
# Results: results/mutants/tierN/mutants.out/{caught,missed,timeout,unviable}.txt (ignored by
# git; docs/mutants.md records the numbers and the triage of every miss). A timeout is a mutant
# that makes the tests hang (a count that never drops, a lock never released): the suite does
# not pass, so it counts as detected, and is reported apart.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=27.1.0
if ! cargo mutants --version 2> /dev/null | grep -q "$VERSION"; then
    cargo install cargo-mutants --locked --version "$VERSION"
fi

summary() {
    for dir in results/mutants/tier*/mutants.out; do
        [ -d "$dir" ] || continue
        printf '%s:' "${dir%/mutants.out}"
        for kind in caught missed timeout unviable; do
            printf ' %s %s' "$kind" "$(wc -l < "$dir/$kind.txt" 2> /dev/null || echo 0)"
        done
        echo
    done
}

tier=""
case "${1:-}" in
    --summary) summary; exit 0 ;;
    --tier) tier="$2"; shift 2 ;;
    *) echo "usage: ci/mutants.sh --tier 1|2|3 [cargo-mutants args] | --summary" >&2; exit 2 ;;
esac

out="results/mutants/tier$tier"
prev="results/mutants/tier$((tier - 1))/mutants.out"
if [ "$tier" != 1 ]; then
    [ -f "$prev/missed.txt" ] || { echo "run tier $((tier - 1)) first ($prev)" >&2; exit 1; }
    # --iterate skips what the previous run caught: seed this tier with the previous one.
    rm -rf "$out" && mkdir -p "$out" && cp -r "$prev" "$out/mutants.out"
fi
mkdir -p "$out"
case "$tier" in
    1) cargo mutants -p mmusync --output "$out" "$@" || true ;;
    2) cargo mutants -p mmusync --iterate --output "$out" \
           --test-package mmusync --test-package mmusync-api-model --test-package mmusync-examples "$@" || true ;;
    # cargo-mutants 27.1 runs its baseline with the mutated package's tests whatever
    # --test-package says, and core has no `loom` test: check the correct code here and skip it
    # there (the loom suite takes ~3 min on 2 cores; hence the fixed timeout).
    3) RUSTFLAGS="--cfg loom --cfg crossbeam_loom" CARGO_TARGET_DIR=target/loom \
           cargo test -p mmusync-loom --release --test loom
       RUSTFLAGS="--cfg loom --cfg crossbeam_loom" \
           cargo mutants -p mmusync --iterate --output "$out" --test-package mmusync-loom \
           --cargo-arg=--release --baseline=skip --timeout 900 "$@" -- --test loom || true ;;
    *) echo "no tier $tier" >&2; exit 2 ;;
esac
summary
