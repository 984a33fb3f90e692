#!/usr/bin/env bash
# The fleet exporter (GET /metrics/fleet, every host's newest values as
# Prometheus gauges) beside the dashboard's fleet overview
# (GET /api/v1/clients), which reads the same overviews, for a large
# fleet, timed alternately in one run. Run by hand, not in CI.
#
#   scripts/bench-fleet-export.sh [SERVER=target/release/sysmon-server] [HOSTS=10000] [REQUESTS=21]
#
# Seeds HOSTS hosts with three samples each through the v1 API
# (LOADGEN, default target/release/sysmon-loadgen) on a fresh SQLite file,
# or on DB_URL when set (a PostgreSQL database the script may fill), makes
# a fleet token with `sysmon-server fleet-token create`, then times
# REQUESTS scrapes of each with curl (client side, new connection each,
# after 3 warm-ups) and prints the medians and the sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVER=${1:-target/release/sysmon-server} HOSTS=${2:-10000} REQUESTS=${3:-21}
LOADGEN=${LOADGEN:-target/release/sysmon-loadgen}
PORT=5084
URL="http://127.0.0.1:$PORT"
ADMIN_PASSWORD=bench-export-admin
work=$(mktemp -d)
DB_URL=${DB_URL:-sqlite://$work/bench.db}
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  rm -rf "$work"
}
trap cleanup EXIT
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.1f}")'; }

SYSMON_INITIAL_ADMIN_PASSWORD=$ADMIN_PASSWORD RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$PORT" \
  --database-url "$DB_URL" --status-log "$work/load.csv" >"$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 300); do curl -sf "$URL/api" >/dev/null && break; sleep 0.1; done
echo "seeding $HOSTS hosts x 3 samples on ${DB_URL%%:*}" >&2
now=$(date +%s)
"$LOADGEN" --url "$URL" --progress 0 --mode v1-batch --clients "$HOSTS" --batch-size 3 \
  --count $((HOSTS * 3)) --start-time $((now - 30)) --time-step-us 10000000 --no-check \
  | grep '^RESULT ' >&2
token=$("$SERVER" --database-url "$DB_URL" fleet-token create --export --note bench | sed -n 's/^token: //p')
session=$(curl -sf -X POST "$URL/api/v1/session" -H 'Content-Type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')

time_get() { # PATH TOKEN -> "seconds bytes"
  curl -sf -o /dev/null -w '%{time_total} %{size_download}\n' -H "Authorization: Bearer $2" "$URL$1"
}
for _ in 1 2 3; do time_get /metrics/fleet "$token" >/dev/null; time_get /api/v1/clients "$session" >/dev/null; done
: >"$work/export" ; : >"$work/fleet"
for _ in $(seq 1 "$REQUESTS"); do
  time_get /metrics/fleet "$token" >>"$work/export"
  time_get /api/v1/clients "$session" >>"$work/fleet"
done
export_ms=$(awk '{print $1 * 1000}' "$work/export" | median)
fleet_ms=$(awk '{print $1 * 1000}' "$work/fleet" | median)
export_bytes=$(tail -1 "$work/export" | awk '{print $2}')
fleet_bytes=$(tail -1 "$work/fleet" | awk '{print $2}')
series=$(curl -sf -H "Authorization: Bearer $token" "$URL/metrics/fleet" | grep -vc '^#')
echo "hosts=$HOSTS store=${DB_URL%%:*} requests=$REQUESTS"
echo "GET /metrics/fleet   median ${export_ms} ms  ${export_bytes} bytes  ${series} series"
echo "GET /api/v1/clients  median ${fleet_ms} ms  ${fleet_bytes} bytes"
