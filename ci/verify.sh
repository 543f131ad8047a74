#!/usr/bin/env bash
# The main job: the verification suite (loom with every mutant, shuttle, real hardware, ring 0
# in a KVM guest, the proofs) and its scorecard. The KVM checker is skipped, with the reason,
# where /dev/kvm is not usable; MMUSYNC_REQUIRE_KVM=1 (set by .ci/run) makes that a failure. Quick mode by default; pass --full for every mutant and larger runs, or any
# other mmusync-verify option (--protocol P2, --checker loom, --replay MUTANT, --json PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
cargo run --release -q -p mmusync-verify -- "$@"
