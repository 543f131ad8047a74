#!/usr/bin/env bash
# The example programs (examples/), in release and for longer than `cargo test` runs them
# (examples/tests/examples.rs, part of the README's test command): each normal run must exit 0,
# and each planted bug must make its program exit 1. Every run takes seconds (the bug runs stop
# at the first violation).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p mmusync-examples --bins
bin=target/release

expect() {
  local want=$1
  shift
  local start=$SECONDS code=0
  printf '\n$ %s\n' "$*"
  "$@" || code=$?
  if [ "$code" -ne "$want" ]; then
    echo "ci/examples.sh: '$*' exited $code, expected $want" >&2
    exit 1
  fi
  echo "(exit $code as expected, $((SECONDS - start)) s)"
}

expect 0 "$bin/std-vmm" --seconds 2 --vcpus 3
expect 0 "$bin/std-vmm" --seconds 1 --vcpus 6 --ipi-signal-offset 6
for bug in skip-flush skip-zap skip-cache-invalidate; do
  expect 1 "$bin/std-vmm" --seconds 20 --bug "$bug"
done
expect 0 "$bin/uffd-vmm" --seconds 2
expect 1 "$bin/uffd-vmm" --seconds 20 --bug skip-cache-invalidate
