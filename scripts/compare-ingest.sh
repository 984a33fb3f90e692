#!/usr/bin/env bash
# Ingest throughput of two server binaries, side by side: the same load
# generator against each in turn, rounds alternating A, B, A, B, ... so a
# noisy machine hurts both alike. Prints each run and the medians.
#
#   scripts/compare-ingest.sh SERVER_A SERVER_B [ROUNDS] [SECONDS]
#
# Workloads (MODES, default "http-form v1-batch"): the original HTTP route
# (64 clients, one sample per request), v1 batches (8 clients, 1000 samples
# per request) and `fleet`: FLEET WebSocket agents (default 10000) at one
# sample a second from 8 source addresses, where the p99 latency is what
# counts. On SQLite and, if reachable, PostgreSQL (STORES="sqlite" or
# "postgres" picks one). LOADGEN names the load generator binary (default
# target/release/sysmon-loadgen).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,15p "$0"; exit 2; }
read -ra modes <<<"${MODES:-http-form v1-batch}"
FLEET=${FLEET:-10000}
ulimit -n "$(ulimit -Hn)"
SERVER_A=$1 SERVER_B=$2 ROUNDS=${3:-3} SECONDS_EACH=${4:-10}
LOADGEN=${LOADGEN:-target/release/sysmon-loadgen}
PORT=5079
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

stores=(sqlite)
if psql -h 127.0.0.1 -U postgres -qAt -c "select 1" >/dev/null 2>&1; then stores+=(postgres); fi
if [ -n "${STORES:-}" ]; then read -ra stores <<<"$STORES"; fi

database_url() { # STORE -> a fresh database's URL
  case $1 in
    sqlite) rm -f "$work"/cmp.db*; echo "sqlite://$work/cmp.db" ;;
    postgres)
      psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS sysmon_compare WITH (FORCE)" >/dev/null
      psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE sysmon_compare" >/dev/null
      echo "postgres://postgres@127.0.0.1:5432/sysmon_compare" ;;
  esac
}

run_once() { # SERVER STORE MODE -> "samples/s p99_ms"
  local server=$1 store=$2 mode=$3 url pid rate
  url=$(database_url "$store")
  RUST_LOG=warn "$server" --bind "127.0.0.1:$PORT" --database-url "$url" \
    --status-log "$work/load.csv" >"$work/server.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/api" >/dev/null && break; sleep 0.1; done
  local args=(--url "http://127.0.0.1:$PORT" --duration "$SECONDS_EACH")
  case $mode in
    http-form) args+=(--mode http-form --clients 64) ;;
    v1-batch) args+=(--mode v1-batch --clients 8 --batch-size 1000) ;;
    fleet) args+=(--mode ws --clients "$FLEET" --rate 1 --source-ips 8) ;;
  esac
  rate=$("$LOADGEN" "${args[@]}" 2>/dev/null | sed -n 's/^RESULT //p' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["missing"]==0, r; print(round(r["samples_per_s"]), r["latency_ms"]["p99"])')
  kill -TERM $pid; wait $pid || true
  echo "$rate"
}

declare -A results latencies
for store in "${stores[@]}"; do
  for mode in "${modes[@]}"; do
    for round in $(seq 1 "$ROUNDS"); do
      for side in A B; do
        server=$SERVER_A; [ $side = B ] && server=$SERVER_B
        read -r rate p99 <<<"$(run_once "$server" "$store" "$mode")"
        echo "$store $mode round $round $side: $rate samples/s, p99 $p99 ms"
        results[$store.$mode.$side]+="$rate "
        latencies[$store.$mode.$side]+="$p99 "
      done
    done
  done
done

echo
echo "| store | workload | A median | B median | B / A | A p99 | B p99 |"
echo "|---|---|---|---|---|---|---|"
for store in "${stores[@]}"; do
  for mode in "${modes[@]}"; do
    python3 - "$store" "$mode" ${results[$store.$mode.A]} -- ${results[$store.$mode.B]} \
      -- ${latencies[$store.$mode.A]} -- ${latencies[$store.$mode.B]} <<'EOF'
import statistics, sys
store, mode, *rest = sys.argv[1:]
groups, current = [], []
for word in rest + ["--"]:
    if word == "--":
        groups.append([float(x) for x in current]); current = []
    else:
        current.append(word)
a, b, a99, b99 = (statistics.median(group) for group in groups)
print(f"| {store} | {mode} | {a:,.0f}/s | {b:,.0f}/s | {b / a:.2f} | {a99:.1f} ms | {b99:.1f} ms |")
EOF
  done
done
