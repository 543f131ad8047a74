#!/usr/bin/env bash
# The KVM checker on its own: the catalogue's shared scenarios in ring 0 inside a multi-vCPU
# KVM guest (crate mmusync-kvm, docs/kvm.md), then the guest's mutant set (reported, sampled).
#
#   ci/kvm.sh          every scenario 100 rounds (cap 4 s each), the mutants 800 rounds (cap 8 s)
#   ci/kvm.sh --soak   2,000 rounds per scenario (cap 120 s), 20,000 rounds per mutant (cap 600 s)
#
# Skips with the reason where /dev/kvm is not usable, unless MMUSYNC_REQUIRE_KVM=1. vCPUs:
# MMUSYNC_KVM_VCPUS (default 4, or this machine's CPU count if smaller). Outputs: results/kvm/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh

case "${1:-}" in
  "") sizes=(--rounds 100 --seconds 4); msizes=(--rounds 800 --seconds 8) ;;
  --soak) sizes=(--rounds 2000 --seconds 120); msizes=(--rounds 20000 --seconds 600) ;;
  *) echo "usage: ci/kvm.sh [--soak]" >&2; exit 2 ;;
esac

out=results/kvm
mkdir -p "$out"
t0=$(date +%s)
cargo build --release -p mmusync-kvm --bins
echo "build: $(( $(date +%s) - t0 ))s"
t1=$(date +%s)
target/release/kvm-check --overcommit "${sizes[@]}" --json "$out/scenarios.json" | tee "$out/scenarios.txt"
target/release/kvm-check --guest-mutants "${msizes[@]}" --json "$out/mutants.json" | tee "$out/mutants.txt"
echo "runs: $(( $(date +%s) - t1 ))s"
