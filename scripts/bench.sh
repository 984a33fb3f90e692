#!/usr/bin/env bash
# The throughput benchmark of issue 5: every workload of its table, on
# SQLite and PostgreSQL, each run RUNS times (medians reported), plus the
# same samples fed to InfluxDB and VictoriaMetrics when they are installed
# (apt-get install influxdb victoria-metrics). Run by hand, not in CI.
#
#   scripts/bench.sh [DURATION_S=10] [RUNS=3] [FLEET=10000]
#
# DURABILITY=relaxed runs the server with `ingest.durability: relaxed` (no
# flush per commit) and only the ingest workloads, to show what the flush
# costs; the peers are skipped then (PEERS=0 skips them too).
#
# Writes target/bench/results.md, or results-relaxed.md (and the raw
# RESULT lines next to it).
# The load generator runs on the same machine as the server: numbers are
# for one 2-core box shared by both.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${1:-10}"
RUNS="${2:-3}"
FLEET="${3:-10000}"
PORT=5090
PG_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
PG_URL="postgres://sysmon@127.0.0.1:5432/sysmon_bench"
DURABILITY="${DURABILITY:-full}"
PEERS="${PEERS:-1}"
OUT=target/bench
mkdir -p "$OUT"
SUFFIX=""; [ "$DURABILITY" = full ] || { SUFFIX="-$DURABILITY"; PEERS=0; }
RAW="$OUT/raw$SUFFIX.jsonl"; : > "$RAW"
work=$(mktemp -d)
printf 'ingest:\n  durability: %s\n' "$DURABILITY" > "$work/server.yaml"
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"

cargo build --release -q -p sysmon-server -p sysmon-loadgen
SERVER="${CARGO_TARGET_DIR:-target}/release/sysmon-server"
LOADGEN="${CARGO_TARGET_DIR:-target}/release/sysmon-loadgen"
URL="http://127.0.0.1:$PORT"

start_server() { # DATABASE_URL
  RUST_LOG=warn "$SERVER" --config "$work/server.yaml" --bind "127.0.0.1:$PORT" --database-url "$1" --status-log "$work/load.csv" &
  server_pid=$!
  for _ in $(seq 1 100); do curl -sf "$URL/api" >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }
fresh_database() { # STORE -> DATABASE_URL
  if [ "$1" = sqlite ]; then rm -f "$work"/bench.db*; echo "sqlite://$work/bench.db"
  else psql "$PG_ADMIN" -qAt -c "DROP DATABASE IF EXISTS sysmon_bench WITH (FORCE)" -c "CREATE DATABASE sysmon_bench OWNER sysmon"; echo "$PG_URL"; fi
}

# loadgen ARGS... -> prints its RESULT json and appends it to the raw log
loadgen() {
  local result
  result=$("$LOADGEN" --url "$URL" --progress 0 "$@" | grep '^RESULT ' | sed 's/^RESULT //')
  echo "$result" >> "$RAW"
  echo "$result"
}
# median of numbers on stdin
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.1f}" if v else "n/a")'; }
field() { python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print($1)"; }
# one RESULT json -> "N samples/s, p99 X ms, errors E, 503s O, missing M"
summary() {
  python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("%.0f samples/s, p99 %s ms, errors %s, 503s %s, missing %s" % (r["samples_per_s"], r["latency_ms"]["p99"], r["errors"]["requests"], r["overloaded"]["requests"], r["missing"]))'
}

declare -A TABLE
run_workload() { # STORE NAME ARGS...
  local store=$1 name=$2; shift 2
  local rates="" p99s="" missing=0
  for run in $(seq 1 "$RUNS"); do
    local r; r=$(loadgen "$@")
    rates+="$(echo "$r" | field 'r["samples_per_s"]') "
    p99s+="$(echo "$r" | field 'r["latency_ms"]["p99"]') "
    missing=$((missing + $(echo "$r" | field 'r["missing"] or 0')))
    echo "  $store $name run $run: $(echo "$r" | summary)" >&2
  done
  TABLE["$store|$name"]="$(echo "$rates" | median) samples/s, p99 $(echo "$p99s" | median) ms, missing $missing"
}

report_latency() { # STORE -> median ms of the 100k-sample report
  local users="$work/report-users.json"
  rm -f "$users"
  loadgen --mode v1-batch --clients 1 --batch-size 10000 --count 100000 --users-file "$users" --no-check >/dev/null
  local user token
  user=$(python3 -c "import json; u=json.load(open('$users')); print(u['users'][0]['username'])")
  token=$(python3 -c "import json; u=json.load(open('$users')); print(u['users'][0]['token'])")
  local rows; rows=$(curl -sf "$URL/client/$user/time/report" -H "Authorization: $token" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["payload"]))')
  [ "$rows" = 100000 ] || { echo "report has $rows rows, expected 100000" >&2; }
  for _ in $(seq 1 21); do
    curl -sf -o /dev/null -w '%{time_total}\n' "$URL/client/$user/time/report" -H "Authorization: $token"
  done | awk '{print $1 * 1000}' | median
}

fleet() { # STORE -> "p99 ms, server peak RSS MB"
  local users="$work/fleet-users.json" r
  r=$(loadgen --mode ws --clients "$FLEET" --rate 1 --duration "$((DURATION * 3))" --source-ips 8 --users-file "$users")
  local rss; rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$server_pid/status")
  echo "$(echo "$r" | summary), server peak RSS ${rss} MB"
}

for store in sqlite postgresql; do
  if [ "$store" = postgresql ] && ! psql "$PG_ADMIN" -qAt -c 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL unreachable: skipped" >&2; continue
  fi
  echo "== $store" >&2
  start_server "$(fresh_database $store)"
  run_workload $store http "--mode" http-form --clients 64 --duration "$DURATION"
  run_workload $store ws "--mode" ws --clients 64 --duration "$DURATION"
  run_workload $store batch "--mode" v1-batch --clients 8 --batch-size 1000 --duration "$DURATION"
  if [ "$DURABILITY" = full ]; then
    TABLE["$store|report"]="$(report_latency) ms median of 21"
    stop_server
    start_server "$(fresh_database $store)"
    TABLE["$store|fleet"]="$(fleet)"
  fi
  stop_server
done

peer() { # NAME URL -> samples/s of influx line protocol, 64 clients x 1000
  local rates=""
  for _ in $(seq 1 "$RUNS"); do
    rates+="$("$LOADGEN" --url "$2" --mode influx --clients 64 --batch-size 1000 --duration "$DURATION" --progress 0 | grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$RAW" | field 'r["samples_per_s"]') "
  done
  echo "$(echo "$rates" | median) samples/s"
}
if [ "$PEERS" = 1 ] && command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath "$work/vm" -httpListenAddr 127.0.0.1:8428 >/dev/null 2>&1 & vm=$!
  sleep 2; TABLE["peer|victoria"]="$(peer VictoriaMetrics http://127.0.0.1:8428)"; kill $vm; wait $vm 2>/dev/null || true
fi
if [ "$PEERS" = 1 ] && command -v influxd >/dev/null; then
  mkdir -p "$work/influx"
  cat > "$work/influx.conf" <<CONF
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
[http]
  bind-address = "127.0.0.1:8086"
CONF
  influxd -config "$work/influx.conf" >/dev/null 2>&1 & ix=$!
  sleep 3; curl -sf -XPOST 'http://127.0.0.1:8086/query' --data-urlencode 'q=CREATE DATABASE sysmon' >/dev/null
  TABLE["peer|influx"]="$(peer InfluxDB http://127.0.0.1:8086)"; kill $ix; wait $ix 2>/dev/null || true
fi

{
  echo "| workload | target | SQLite | PostgreSQL |"
  echo "|---|---|---|---|"
  echo "| original HTTP route, 1 sample/request, 64 connections | >= 50,000 samples/s | ${TABLE[sqlite|http]:-} | ${TABLE[postgresql|http]:-} |"
  echo "| original WebSocket CLIENT_DATA, 64 connections | >= 60,000 messages/s | ${TABLE[sqlite|ws]:-} | ${TABLE[postgresql|ws]:-} |"
  echo "| v1 batches of 1000, 8 connections | >= 600,000 samples/s (PostgreSQL) | ${TABLE[sqlite|batch]:-} | ${TABLE[postgresql|batch]:-} |"
  echo "| 100k-sample report (original route) | <= 25 ms | ${TABLE[sqlite|report]:-} | ${TABLE[postgresql|report]:-} |"
  echo "| $FLEET WebSocket clients at 1 sample/s | p99 < 50 ms, < 300 MB | ${TABLE[sqlite|fleet]:-} | ${TABLE[postgresql|fleet]:-} |"
  echo
  echo "Peers, InfluxDB line protocol, 64 connections x 1000 points: VictoriaMetrics ${TABLE[peer|victoria]:-not installed}; InfluxDB ${TABLE[peer|influx]:-not installed}."
  echo
  echo "Medians of $RUNS runs of ${DURATION}s; ingest.durability $DURABILITY; $(nproc) cores; $(date -u +%Y-%m-%d); load generator on the same machine."
} | tee "$OUT/results$SUFFIX.md"
