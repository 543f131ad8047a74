#!/usr/bin/env bash
# The main job: the verification suite (loom with every mutant, shuttle, real hardware) and
# its scorecard. Quick mode by default; pass --full for every mutant and larger runs, or any
# other mmusync-verify option (--protocol P2, --checker loom, --replay MUTANT, --json PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo run --release -q -p mmusync-verify -- "$@"
