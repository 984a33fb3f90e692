#!/usr/bin/env bash
# A quick, rough ingest-rate check of the original HTTP route (one sample
# per request) with wrk, on SQLite and, if reachable, PostgreSQL. The full
# benchmark with its own load generator is a separate piece of work.
#
#   scripts/quick-ingest.sh [SECONDS] [CONNECTIONS]
#
# Needs: wrk (apt-get install wrk), psql for the PostgreSQL run.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
CONNECTIONS="${2:-64}"
PORT=5077
PG_URL="${SYSMON_BENCH_POSTGRES_URL:-postgres://sysmon@127.0.0.1:5432/sysmon_bench}"

cargo build --release -q -p sysmon-server
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

run() { # STORE_NAME DATABASE_URL
  local name=$1 url=$2
  RUST_LOG=warn target/release/sysmon-server --bind "127.0.0.1:$PORT" --database-url "$url" \
    --status-log "$work/load.csv" &
  local pid=$!
  for _ in $(seq 1 50); do curl -sf "http://127.0.0.1:$PORT/api" >/dev/null && break; sleep 0.2; done
  local token
  token=$(curl -sf -XPOST "http://127.0.0.1:$PORT/client" -H 'content-type: application/json' \
    -d '{"username": "bench", "pass": "bench-password"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  echo "== $name: $CONNECTIONS connections, ${DURATION}s"
  USER_NAME=bench TOKEN=$token wrk -t2 -c"$CONNECTIONS" -d"${DURATION}s" --latency \
    -s scripts/wrk-ingest.lua "http://127.0.0.1:$PORT" | grep -E 'Requests/sec|50%|99%|requests:'
  local stored
  stored=$(curl -sf -XPOST "http://127.0.0.1:$PORT/client/bench/time/report" -H "Authorization: $token" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["payload"]))')
  echo "stored samples: $stored"
  kill -TERM $pid; wait $pid || true
}

run sqlite "sqlite://$work/bench.db"
if psql -h 127.0.0.1 -U postgres -qAt -c "select 1" >/dev/null 2>&1; then
  psql -h 127.0.0.1 -U postgres -q -c "DROP DATABASE IF EXISTS sysmon_bench WITH (FORCE)" -c "CREATE DATABASE sysmon_bench OWNER sysmon"
  run postgresql "$PG_URL"
fi
