#!/usr/bin/env bash
# The write-path benchmark (issues 5 and 11): every workload of the
# targets' table on SQLite and PostgreSQL, each run RUNS times (medians
# reported), and in the same run the same samples fed to VictoriaMetrics
# and InfluxDB (apt-get install victoria-metrics influxdb): one point per
# request over 64 connections, batches of 1000 over 8, and the export of
# 100k points. Prints each target as a ratio to its peer. Run by hand, not
# in CI.
#
#   scripts/bench.sh [DURATION_S=10] [RUNS=3] [FLEET=10000] [BIG_FLEET=100000]
#
# BIG_FLEET agents send one sample every 10 s from 8 loopback addresses;
# each process may hold only `ulimit -Hn` open files, so the fleet is cut
# to fit under that limit (and the results say so).
#
# DURABILITY=relaxed runs the server with `ingest.durability: relaxed` (no
# flush per commit) and only the ingest workloads, to show what the flush
# costs; the peers are skipped then (PEERS=0 skips them too).
#
# ONLY="report fleet ..." runs only those rows (http ws batch report fleet
# bigfleet remote) and peers (single batch export) to re-measure a few;
# `remote` is Prometheus remote write against VictoriaMetrics'
# (scripts/bench-remote-write.sh).
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
BIG_FLEET="${4:-100000}"
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
# The server holds one file per agent plus its database and listeners.
fd_room=$(( $(ulimit -Hn) - 1000 ))
if [ "$BIG_FLEET" -gt "$fd_room" ]; then
  echo "BIG_FLEET $BIG_FLEET does not fit in $(ulimit -Hn) open files per process: running $fd_room" >&2
  BIG_FLEET_NOTE=" (asked $BIG_FLEET; this machine allows $(ulimit -Hn) open files per process)"
  BIG_FLEET=$fd_room
fi

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
ONLY="${ONLY:-http ws batch report fleet bigfleet single export remote}"
want() { [[ " $ONLY " == *" $1 "* ]]; }
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

fleet() { # CLIENTS RATE SECONDS -> "p99 ms, server peak RSS MB"
  local users="$work/fleet-users.json" r
  rm -f "$users"
  r=$(loadgen --mode ws --clients "$1" --rate "$2" --duration "$3" --source-ips 8 --users-file "$users")
  local rss; rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$server_pid/status")
  echo "$(echo "$r" | summary), server peak RSS ${rss} MB"
}

for store in sqlite postgresql; do
  if [ "$store" = postgresql ] && ! psql "$PG_ADMIN" -qAt -c 'select 1' >/dev/null 2>&1; then
    echo "PostgreSQL unreachable: skipped" >&2; continue
  fi
  echo "== $store" >&2
  start_server "$(fresh_database $store)"
  want http && run_workload $store http "--mode" http-form --clients 64 --duration "$DURATION"
  want ws && run_workload $store ws "--mode" ws --clients 64 --duration "$DURATION"
  want batch && run_workload $store batch "--mode" v1-batch --clients 8 --batch-size 1000 --duration "$DURATION"
  if [ "$DURABILITY" = full ]; then
    want report && TABLE["$store|report"]="$(report_latency)"
    if want fleet; then
      stop_server
      start_server "$(fresh_database $store)"
      TABLE["$store|fleet"]="$(fleet "$FLEET" 1 "$((DURATION * 3))")"
    fi
    if want bigfleet; then
      stop_server
      start_server "$(fresh_database $store)"
      TABLE["$store|bigfleet"]="$(fleet "$BIG_FLEET" 0.1 60)"
    fi
  fi
  stop_server
done

peer_rate() { # URL CLIENTS BATCH -> median samples/s of influx line protocol
  local rates=""
  for _ in $(seq 1 "$RUNS"); do
    rates+="$("$LOADGEN" --url "$1" --mode influx --clients "$2" --batch-size "$3" --duration "$DURATION" --progress 0 | grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$RAW" | field 'r["samples_per_s"]') "
  done
  echo "$rates" | median
}
peer_rates() { # NAME URL: single points over 64 connections, batches of 1000 over 8
  if want single || want http || want ws; then TABLE["$1|single"]=$(peer_rate "$2" 64 1); fi
  if want batch; then TABLE["$1|batch"]=$(peer_rate "$2" 8 1000); fi
}
victoria_export() { # -> median ms to export 100k points of one host, VictoriaMetrics on :8428
  "$LOADGEN" --url http://127.0.0.1:8428 --mode influx --clients 1 --batch-size 10000 --count 100000 --progress 0 >/dev/null
  curl -sf http://127.0.0.1:8428/internal/force_flush >/dev/null
  # The load generator's points run 1 ms apart from now into the next
  # 100 s, and an export ends at now unless told otherwise.
  local end=$(( $(date +%s) + 86400 ))
  local points; points=$(curl -sf http://127.0.0.1:8428/api/v1/export -d 'match[]={__name__="system_cpu_load"}' -d "end=$end" | python3 -c 'import json,sys; print(sum(len(json.loads(l)["values"]) for l in sys.stdin if l.strip()))')
  if [ "$points" != 100000 ]; then
    echo "VictoriaMetrics exported $points cpu_load points, expected 100000" >&2; echo n/a; return
  fi
  for _ in $(seq 1 21); do
    curl -sf -o /dev/null -w '%{time_total}\n' http://127.0.0.1:8428/api/v1/export -d 'match[]={__name__=~"system_.*"}' -d "end=$end"
  done | awk '{print $1 * 1000}' | median
}
if [ "$PEERS" = 1 ] && command -v victoria-metrics >/dev/null; then
  victoria-metrics -storageDataPath "$work/vm" -httpListenAddr 127.0.0.1:8428 >/dev/null 2>&1 & vm=$!
  sleep 2; peer_rates victoria http://127.0.0.1:8428
  kill $vm; wait $vm 2>/dev/null || true; rm -rf "$work/vm"
  if want export || want report; then
    victoria-metrics -storageDataPath "$work/vm" -httpListenAddr 127.0.0.1:8428 >/dev/null 2>&1 & vm=$!
    sleep 2; TABLE["victoria|export"]=$(victoria_export)
    kill $vm; wait $vm 2>/dev/null || true
  fi
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
  peer_rates influx http://127.0.0.1:8086
  kill $ix; wait $ix 2>/dev/null || true
fi

rate_of() { echo "${TABLE[$1]:-}" | awk '{print $1}'; }
ratio() { # OURS PEER -> "1.23x" (OURS / PEER), or n/a
  python3 -c 'import sys; a,b=sys.argv[1:3]
try: print(f"{float(a)/float(b):.2f}x")
except Exception: print("n/a")' "$1" "$2"
}
# A row: workload, target, per store "value (ratio to the peer)"
row() { # LABEL TARGET KEY PEER_KEY
  local sqlite postgres
  sqlite="${TABLE[sqlite|$3]:-} ($(ratio "$(rate_of "sqlite|$3")" "${TABLE[$4]:-}"))"
  postgres="${TABLE[postgresql|$3]:-} ($(ratio "$(rate_of "postgresql|$3")" "${TABLE[$4]:-}"))"
  echo "| $1 | $2 | $sqlite | $postgres |"
}
{
  echo "| workload | target | SQLite | PostgreSQL |"
  echo "|---|---|---|---|"
  row "original HTTP route, 1 sample/request, 64 connections (ratio to VictoriaMetrics single points)" ">= 1.2x SQLite, >= 1.0x PostgreSQL" http "victoria|single"
  row "original WebSocket CLIENT_DATA, 64 connections (ratio to VictoriaMetrics single points)" ">= 1.4x SQLite, >= 1.2x PostgreSQL" ws "victoria|single"
  row "v1 batches of 1000, 8 connections (ratio to InfluxDB batches)" ">= 1.0x" batch "influx|batch"
  echo "| 100k-sample report, ms (ratio to VictoriaMetrics' export of 100k points) | <= 1.0x | ${TABLE[sqlite|report]:-} ($(ratio "${TABLE[sqlite|report]:-}" "${TABLE[victoria|export]:-}")) | ${TABLE[postgresql|report]:-} ($(ratio "${TABLE[postgresql|report]:-}" "${TABLE[victoria|export]:-}")) |"
  echo "| $FLEET WebSocket agents at 1 sample/s | p99 < 50 ms, RSS < 300 MB | ${TABLE[sqlite|fleet]:-} | ${TABLE[postgresql|fleet]:-} |"
  echo "| $BIG_FLEET WebSocket agents at 1 sample/10 s, 8 source addresses${BIG_FLEET_NOTE:-} | p99 < 100 ms, RSS < 1 GB | ${TABLE[sqlite|bigfleet]:-} | ${TABLE[postgresql|bigfleet]:-} |"
  echo
  echo "Peers, the same samples as InfluxDB line protocol (one line = one sample of three metrics), same machine, same run:"
  echo
  echo "| peer | 1 point/request, 64 connections | 1000 points/request, 8 connections | export of 100k points |"
  echo "|---|---|---|---|"
  echo "| VictoriaMetrics | ${TABLE[victoria|single]:-n/a} samples/s | ${TABLE[victoria|batch]:-n/a} samples/s | ${TABLE[victoria|export]:-n/a} ms |"
  echo "| InfluxDB | ${TABLE[influx|single]:-n/a} samples/s | ${TABLE[influx|batch]:-n/a} samples/s | |"
  echo
  echo "Medians of $RUNS runs of ${DURATION}s (the report: of 21 requests); ingest.durability $DURABILITY; $(nproc) cores; $(date -u +%Y-%m-%d); load generator on the same machine."
  if [ "$PEERS" = 1 ] && want remote && command -v victoria-metrics >/dev/null; then
    echo
    echo "Prometheus remote write in, 1,000 series (40 hosts' node_exporter series) per request, 8 connections, against VictoriaMetrics' remote write in the same run (scripts/bench-remote-write.sh):"
    echo
    SERVER="${CARGO_TARGET_DIR:-target}/release/sysmon-server" LOADGEN="$LOADGEN" scripts/bench-remote-write.sh "$DURATION" "$RUNS" 8
  fi
} | tee "$OUT/results$SUFFIX.md"
