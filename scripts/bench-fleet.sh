#!/usr/bin/env bash
# The fleet overview (GET /api/v1/clients: every host's first sample,
# latest sample and the two before it) on PostgreSQL after a long history,
# where the samples are spread over one day partition per day: two server
# builds side by side on the same database, rounds alternating A, B, A, B.
# Run by hand, not in CI.
#
#   scripts/bench-fleet.sh SERVER_A SERVER_B [HOSTS=300] [DAYS=365] [ROUNDS=3] [REQUESTS=21]
#
# Seeds HOSTS hosts with one sample an hour for DAYS days (so DAYS
# partitions; 2.6M samples with the defaults, ~4 minutes to seed) and one sample a second for
# each host's last minute (so the overview's interval is 1 s), through
# server B; its shutdown folds the rollups. Then each round starts each server in turn, warms up with 3
# requests and times REQUESTS more with curl (client side, new connection
# each). Prints the medians. LOADGEN names the load generator (default
# target/release/sysmon-loadgen); the database is sysmon_bench_fleet,
# created as the postgres superuser and dropped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,17p "$0"; exit 2; }
SERVER_A=$1 SERVER_B=$2 HOSTS=${3:-300} DAYS=${4:-365} ROUNDS=${5:-3} REQUESTS=${6:-21}
LOADGEN=${LOADGEN:-target/release/sysmon-loadgen}
PORT=5083
URL="http://127.0.0.1:$PORT"
DB=sysmon_bench_fleet
DB_URL="postgres://postgres@127.0.0.1:5432/$DB"
ADMIN_PASSWORD=bench-fleet-admin
work=$(mktemp -d)
server_pid=""
pg_admin() { PGOPTIONS='-c client_min_messages=warning' psql -h 127.0.0.1 -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
cleanup() {
  [ -n "$server_pid" ] && { kill "$server_pid" 2>/dev/null; wait "$server_pid" 2>/dev/null || true; }
  pg_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

start_server() { # BINARY
  SYSMON_INITIAL_ADMIN_PASSWORD=$ADMIN_PASSWORD RUST_LOG=warn "$1" --bind "127.0.0.1:$PORT" \
    --database-url "$DB_URL" --status-log "$work/load.csv" >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do curl -sf "$URL/api" >/dev/null && return; sleep 0.1; done
  echo "server $1 did not start:" >&2; cat "$work/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.1f}")'; }

pg_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
# Seeded through B, the newer build: before the rollup accumulator was
# bounded, samples an hour apart (a bucket each in every tier) could grow a
# server past the machine's memory. A day per batch: a batch spanning many
# days routes its rows to as many partitions, one statement each.
start_server "$SERVER_B"
now=$(date +%s)
echo "seeding $HOSTS hosts x $DAYS days" >&2
"$LOADGEN" --url "$URL" --progress 60 --mode v1-batch --clients "$HOSTS" --batch-size 24 \
  --count $((HOSTS * DAYS * 24)) --start-time $((now - DAYS * 86400)) --time-step-us 3600000000 \
  --users-file "$work/users.json" --no-check | grep '^RESULT ' >&2
"$LOADGEN" --url "$URL" --progress 0 --mode v1-batch --clients "$HOSTS" --batch-size 1000 \
  --count $((HOSTS * 60)) --start-time $((now - 60)) --time-step-us 1000000 \
  --users-file "$work/users.json" --no-check | grep '^RESULT ' >&2
stop_server
echo "day partitions: $(psql "$DB_URL" -qAt -c "SELECT count(*) FROM pg_inherits WHERE inhparent = 'samples'::regclass")" >&2

time_overview() { # -> REQUESTS timings in ms, one per line
  local session
  session=$(curl -sf "$URL/api/v1/session" -H 'Content-Type: application/json' \
    -d "{\"username\":\"admin\",\"password\":\"$ADMIN_PASSWORD\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
  local hosts
  hosts=$(curl -sf "$URL/api/v1/clients" -H "Authorization: Bearer $session" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["clients"]))')
  [ "$hosts" = "$HOSTS" ] || echo "the overview lists $hosts hosts, expected $HOSTS" >&2
  for _ in 1 2 3; do curl -sf -o /dev/null "$URL/api/v1/clients" -H "Authorization: Bearer $session"; done
  for _ in $(seq 1 "$REQUESTS"); do
    curl -sf -o /dev/null -w '%{time_total}\n' "$URL/api/v1/clients" -H "Authorization: Bearer $session"
  done | awk '{print $1 * 1000}'
}

: > "$work/a.ms"; : > "$work/b.ms"
for round in $(seq 1 "$ROUNDS"); do
  for side in a b; do
    binary=$SERVER_A; [ $side = b ] && binary=$SERVER_B
    start_server "$binary"
    time_overview > "$work/round.ms"
    echo "round $round $side: median $(median < "$work/round.ms") ms" >&2
    cat "$work/round.ms" >> "$work/$side.ms"
    stop_server
  done
done
a=$(median < "$work/a.ms"); b=$(median < "$work/b.ms")
echo "fleet overview, $HOSTS hosts x $DAYS days, PostgreSQL: A $a ms, B $b ms (B/A $(python3 -c "print(f'{$b/$a:.2f}')"))"
