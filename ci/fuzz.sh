#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each for a bounded time.
#
#   bash ci/fuzz.sh [SECONDS]        # or FUZZ_SECONDS=SECONDS; default 60 per target
#   FUZZ_TARGETS="api" bash ci/fuzz.sh 10   # only some targets
#
# Needs the nightly toolchain; installs cargo-fuzz (crates.io, about 40 s) if it is missing.
# Each target starts from its committed seed corpus (fuzz/corpus/<target>, read only) and
# writes what it finds to a scratch corpus, so the work tree stays clean. Fails if any target
# crashes (a panic, a model disagreement, a sanitizer report, or an input that runs longer
# than FUZZ_INPUT_TIMEOUT seconds, default 10: a hang is a blocked call); the crashing input
# is kept under fuzz/artifacts/<target>/ with the command that replays it. Prints executions,
# executions per second and coverage for each target.
#
# Sanitizers: `api` and `page_table` run under AddressSanitizer (cargo-fuzz's default).
# `schedule` runs without one: under ASan it managed 115 executions/s against 545-695 without (each
# execution allocates shuttle's task stacks), and the code it reaches is safe Rust plus core's
# page-table code, whose unsafe parts `page_table` fuzzes under ASan.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-${FUZZ_SECONDS:-60}}"
input_timeout="${FUZZ_INPUT_TIMEOUT:-10}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo +nightly install cargo-fuzz --locked
fi

cd fuzz
targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"

sanitizer() {
    case "$1" in
        schedule) echo none ;;
        *) echo address ;;
    esac
}

# cargo-fuzz's flags per sanitizer, each with its own target directory so that switching does
# not rebuild everything.
flags() {
    local s
    s="$(sanitizer "$1")"
    echo "-s $s --target-dir target/sanitizer-$s"
}

echo "== building fuzz targets: $(echo $targets)"
for t in $targets; do
    cargo +nightly fuzz build $(flags "$t") "$t"
done

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for t in $targets; do
    echo
    echo "== fuzzing $t for ${seconds}s"
    mkdir -p "$scratch/$t" "corpus/$t" "artifacts/$t"
    log="$scratch/$t.log"
    set +e
    cargo +nightly fuzz run $(flags "$t") "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout="$input_timeout" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    # The last status line carries the coverage (cov: edges, ft: features, corp: corpus).
    status_line="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")"
    corp="$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$status_line")"
    line="$t: ${execs:-?} executions, ${rate:-?} exec/s, cov ${cov:-?} edges, ft ${ft:-?}, corpus ${corp:-?}"
    summary+=("$line")
    echo "$line"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        echo "!! $t crashed (exit $rc):"
        grep -m 1 -A 40 "panicked at" "$log" || true
        echo "!! the end of its log:"
        tail -n 25 "$log"
        for a in artifacts/"$t"/*; do
            [ -e "$a" ] || continue
            echo "!! input kept at fuzz/$a; replay: (cd fuzz && cargo +nightly fuzz run $(flags "$t") $t $a)"
        done
    fi
done

echo
echo "== fuzz summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
fi
