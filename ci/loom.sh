#!/usr/bin/env bash
# The loom suite: every scenario on the correct code (cargo test), the HAL conformance suite, the
# user-MMU example test (core's loom backend used as a downstream VMM would), then the mutant
# scorecard (every named barrier and rule dropped/broken in turn, against the scenarios).
#
# Results go to results/ (gitignored):
#   results/loom-test.txt          the correct-code runs: scenario, bound, executions, time
#   results/loom-user-mmu.txt      the user-MMU example: executions to catch each planted bug
#   results/loom-scorecard.md      the scorecard table (mutant, killing scenario, executions
#                                  to first failure, time, kill kind)
#   results/loom-scorecard.json    the same rows as JSON
#   results/loom-scorecard.txt     table + notes (not killable, with reasons) + every killed
#                                  mutant's counterexample trace and its replay command
#   results/loom-time.txt          wall time of each phase and of the whole run
#   results/replay/*.json          loom checkpoints of each failing execution (replayable)
#
# Budget: under 15 minutes on 2 cores (aim: under 8, build included). Per-scenario preemption
# bounds live in models/loom/src/runner.rs (`default_bound`); MMUSYNC_LOOM_BOUND=N|none overrides all of
# them. Extra arguments go to loom-scorecard (for example `--protocol P2`).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="--cfg loom --cfg crossbeam_loom"
# A separate target directory: a cfg change would otherwise rebuild the normal one.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
mkdir -p results
start=$(date +%s)

cargo build -p mmusync-loom --release --tests --bins
cargo build -p mmusync-examples --release --test model_user_mmu_loom
built=$(date +%s)
cargo test -p mmusync-loom --release --test loom -- --nocapture 2>&1 | tee results/loom-test.txt
# The HAL conformance suite against the loom backend, and its deliberately broken backends.
cargo test -p mmusync-loom --release --test conformance 2>&1 | tee results/loom-conformance.txt
# A user-written secondary MMU checked with core's loom backend, as a downstream VMM would
# (examples/tests/model_user_mmu_loom.rs): the correct MMU passes, each planted bug is caught.
cargo test -p mmusync-examples --release --test model_user_mmu_loom -- --nocapture 2>&1 | tee results/loom-user-mmu.txt
tested=$(date +%s)
rm -rf results/replay
cargo run -q -p mmusync-loom --release --bin loom-scorecard -- \
  --jobs 2 --replay --replay-dir results/replay \
  --json results/loom-scorecard.json --table results/loom-scorecard.md "$@" 2>&1 | tee results/loom-scorecard.txt
end=$(date +%s)

{
  echo "build:     $(( built - start ))s"
  echo "test:      $(( tested - built ))s"
  echo "scorecard: $(( end - tested ))s"
  echo "total:     $(( end - start ))s"
} | tee results/loom-time.txt
echo "ci/loom.sh: total $(( end - start ))s"
