#!/usr/bin/env bash
# Issue 14's target for alert evaluation: 10,000 hosts × 10 rules checked
# every tick in under 100 ms of CPU. Builds the bench in release mode and
# runs crates/sysmon-server/benches/alert_evaluation.rs, which fills the
# evaluator with 5 minutes of 10-second samples per host and times 21
# ticks (thread CPU time, so other load on the machine does not count).
# Writes target/bench/alerts.md and prints it. Run by hand, not in CI.
#
#   scripts/bench-alerts.sh [HOSTS=10000] [TICKS=21]
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p target/bench
cargo bench -q -p sysmon-server --bench alert_evaluation -- "${1:-10000}" "${2:-21}" | tee target/bench/alerts.md
