#!/usr/bin/env bash
# Issue 4's speed target for dashboard queries: server time for a 30-day
# chart of one host sampled every second (2,592,000 raw samples) at about
# 1000 points, under 50 ms median, on SQLite and on PostgreSQL. Run by
# hand, not in CI.
#
#   scripts/bench-query.sh [RUNS=31]
#
# For each store: a fresh database (a temporary SQLite file; the PostgreSQL
# database sysmon_bench_query, created as the postgres superuser and
# dropped at the end), a release server on a free port, 30 days of
# per-second history ending at the last whole hour sent by sysmon-loadgen
# --start-time, then RUNS timed requests (after 3 warm-ups) of each query
# below. Writes target/bench/query.md and prints it. Honours
# CARGO_TARGET_DIR for the build. About 3 minutes on 2 cores after the build
# (seeding is most of it).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-31}"
WARMUPS=3
DAYS=30
SAMPLES=$((DAYS * 86400))
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PG_HOST=127.0.0.1
PG_PORT=5432
PG_DB=sysmon_bench_query
PG_URL="postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB"
OUT=target/bench
mkdir -p "$OUT"
work=$(mktemp -d)
server_pid=""
pg_created=""

# client_min_messages: no NOTICE for a database that is not there to drop.
pg_admin() { PGOPTIONS='-c client_min_messages=warning' psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  if [ -n "$pg_created" ]; then pg_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p sysmon-server -p sysmon-loadgen
SERVER="$TARGET_DIR/release/sysmon-server"
LOADGEN="$TARGET_DIR/release/sysmon-loadgen"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
start_server() { # DATABASE_URL
  local port; port=$(free_port)
  URL="http://127.0.0.1:$port"
  # warn, as in bench.sh: per-request logging would be part of what is timed.
  RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$port" --database-url "$1" --status-log "$work/load.csv" \
    >"$work/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 1 300); do curl -sf "$URL/api" >/dev/null && return; sleep 0.1; done
  echo "server did not start:" >&2; cat "$work/server.log" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }

json() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"; }
# "median p90" in ms of seconds on stdin (p90: nearest rank)
stats() {
  python3 -c 'import math,statistics,sys
v=sorted(float(x)*1000 for x in sys.stdin.read().split())
print(f"{statistics.median(v):.1f} {v[math.ceil(0.9*len(v))-1]:.1f}")'
}
# "SUM COUNT" of the server's own duration histogram for the series route:
# from request to response, body serialized, transfer not included.
server_clock() {
  curl -sf "$URL/metrics" | python3 -c 'import sys
s = c = 0.0
for line in sys.stdin:
    if "series" in line and line.startswith("sysmon_http_request_duration_seconds_sum"): s += float(line.split()[-1])
    if "series" in line and line.startswith("sysmon_http_request_duration_seconds_count"): c += float(line.split()[-1])
print(s, c)'
}

# The queries: key, what it is, its parameters (END and START are filled
# in per store).
KEYS=(a b c d d2 e)
declare -A WHAT PARAMS
WHAT[a]="30 days, all 12 metrics, default ~1000 points"
PARAMS[a]='from=$START&to=$END'
WHAT[b]="30 days, \`metrics=cpu_load\`"
PARAMS[b]='from=$START&to=$END&metrics=cpu_load'
WHAT[c]="30 days, \`step=2592\`"
PARAMS[c]='from=$START&to=$END&step=2592'
WHAT[d]="24 hours, default ~1000 points"
PARAMS[d]='from=$((END - 86400))&to=$END'
WHAT[d2]="24 hours, \`step=86\`"
PARAMS[d2]='from=$((END - 86400))&to=$END&step=86'
WHAT[e]="1 hour raw, \`resolution=raw&step=1\`"
PARAMS[e]='from=$((END - 3600))&to=$END&resolution=raw&step=1'

declare -A R
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for store in sqlite postgresql; do
  if [ "$store" = postgresql ]; then
    if ! pg_admin -c 'select 1' >/dev/null 2>&1; then
      echo "PostgreSQL unreachable at $PG_HOST:$PG_PORT as postgres: skipped" >&2; continue
    fi
    pg_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" -c "CREATE DATABASE $PG_DB"
    pg_created=1
    database_url="$PG_URL"
  else
    database_url="sqlite://$work/bench.db"
  fi
  echo "== $store" >&2
  start_server "$database_url"

  END=$(( $(date +%s) / 3600 * 3600 ))
  START=$((END - SAMPLES))
  echo "seeding $SAMPLES samples from $START to $END" >&2
  "$LOADGEN" --url "$URL" --mode v1-batch --clients 1 --batch-size 10000 --count "$SAMPLES" \
    --start-time "$START" --time-step-us 1000000 --no-check --progress 30 \
    --users-file "$work/users-$store.json" | grep '^RESULT ' | sed 's/^RESULT //' >"$work/seed.json"
  acked=$(json "$work/seed.json" 'r["acked_samples"]')
  [ "$acked" = "$SAMPLES" ] || { echo "seeding acknowledged $acked of $SAMPLES samples" >&2; cat "$work/seed.json" >&2; exit 1; }
  R["$store|seed"]="$(json "$work/seed.json" '"{:,.0f} samples/s ({:.0f} s)".format(r["samples_per_s"], r["elapsed_s"])')"
  if [ "$store" = sqlite ]; then
    size=$(du -cb "$work"/bench.db* | tail -1 | cut -f1)
  else
    size=$(pg_admin -c "SELECT pg_database_size('$PG_DB')")
  fi
  R["$store|size"]="$((size / 1048576)) MiB"
  name=$(json "$work/users-$store.json" 'r["users"][0]["username"]')
  token=$(json "$work/users-$store.json" 'r["users"][0]["token"]')

  for key in "${KEYS[@]}"; do
    params=$(eval "echo \"${PARAMS[$key]}\"")
    url="$URL/api/v1/clients/$name/series?$params"
    curl -sf -H "Authorization: Bearer $token" -o "$work/response.json" "$url"
    R["$store|$key|shape"]=$(json "$work/response.json" \
      '"{} | {:g} s | {:,} | {:,}".format(r["resolution"], r["step"], len(r["time"]), sum(r["count"]))')
    # KiB: the last digits of float sums differ between the stores.
    R["$store|$key|bytes"]="$(( ($(stat -c %s "$work/response.json") + 512) / 1024 )) KiB"
    for _ in $(seq 1 "$WARMUPS"); do
      curl -sf -H "Authorization: Bearer $token" -o /dev/null "$url"
    done
    read -r sum0 count0 < <(server_clock)
    times=""
    for _ in $(seq 1 "$RUNS"); do
      times+="$(curl -sf -H "Authorization: Bearer $token" -o /dev/null -w '%{time_total}' "$url") "
    done
    read -r sum1 count1 < <(server_clock)
    read -r median p90 < <(echo "$times" | stats)
    server=$(python3 -c "print(f'{($sum1 - $sum0) / max($count1 - $count0, 1) * 1000:.1f}')")
    R["$store|$key"]="$median / $p90 / $server"
    echo "  $store $key (${WHAT[$key]}): ${R["$store|$key|shape"]} points/samples, ${R["$store|$key|bytes"]}; median / p90 / server mean ms: ${R["$store|$key"]}" >&2
  done
  stop_server
  if [ "$store" = postgresql ]; then pg_admin -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)"; pg_created=""; fi
done

# The shape of an answer is the same on both stores; show it once unless
# they differ.
both() { # KEY FIELD
  local a="${R["sqlite|$1|$2"]:-}" b="${R["postgresql|$1|$2"]:-}"
  if [ -z "$b" ] || [ "$a" = "$b" ]; then echo "${a:-$b}"; elif [ -z "$a" ]; then echo "$b"; else echo "$a (SQLite) / $b (PostgreSQL)"; fi
}
{
  echo "| query | tier | step | points | samples summarised | response | SQLite ms: median / p90 / server mean | PostgreSQL ms: median / p90 / server mean |"
  echo "|---|---|---|---|---|---|---|---|"
  for key in "${KEYS[@]}"; do
    echo "| ($key) ${WHAT[$key]} | $(both "$key" shape) | $(both "$key" bytes) | ${R["sqlite|$key"]:-n/a} | ${R["postgresql|$key"]:-n/a} |"
  done
  echo
  echo "Target (issue 4): (a) under 50 ms median on each store."
  echo
  echo "Seeding $SAMPLES samples (one host, one a second, all 12 metrics, v1 batches of 10,000, one connection):" \
    "SQLite ${R["sqlite|seed"]:-n/a}, database ${R["sqlite|size"]:-n/a};" \
    "PostgreSQL ${R["postgresql|seed"]:-n/a}, database ${R["postgresql|size"]:-n/a}."
  echo
  echo "$RUNS timed requests per query after $WARMUPS warm-ups; median and p90 of curl's time_total" \
    "(loopback, a new connection per request); server mean from the server's" \
    "sysmon_http_request_duration_seconds histogram (_sum / _count over the timed requests)." \
    "$(nproc) cores, load average $load_before before and $(cut -d' ' -f1-3 /proc/loadavg) after; $(date -u +%Y-%m-%d)."
} | tee "$OUT/query.md"
