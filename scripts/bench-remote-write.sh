#!/usr/bin/env bash
# Prometheus remote write in, side by side in one run: sysmon
# (POST /api/v1/prom/write, SQLite, and PostgreSQL when reachable) and
# VictoriaMetrics (apt-get install victoria-metrics; POST /api/v1/write)
# fed the same requests by the load generator: each request one scrape of
# 40 hosts' node_exporter series, 1,000 series, snappy protobuf as
# Prometheus sends them; rounds alternate sysmon, VictoriaMetrics. Prints
# each run, the medians in datapoints (series values) per second, and the
# ratio. Run by hand, not in CI (scripts/bench.sh calls it too).
#
#   scripts/bench-remote-write.sh [SECONDS=10] [ROUNDS=3] [CLIENTS=8]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-10} ROUNDS=${2:-3} CLIENTS=${3:-8}
SERVER=${SERVER:-target/release/sysmon-server}
LOADGEN=${LOADGEN:-target/release/sysmon-loadgen}
PORT=5091
SERIES_PER_HOST=25 HOSTS_PER_REQUEST=40
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
command -v victoria-metrics >/dev/null || { echo "victoria-metrics is not installed (apt-get install victoria-metrics)" >&2; exit 1; }
median() { python3 -c 'import sys,statistics; v=[float(x) for x in sys.stdin.read().split()]; print(f"{statistics.median(v):.0f}")'; }

run() { # NAME URL PATH [TOKEN] -> datapoints/s of one run
  local token_args=()
  [ -n "${4:-}" ] && token_args=(--token "$4")
  "$LOADGEN" --url "$2" --mode remote-write --remote-write-path "$3" "${token_args[@]}" \
    --clients "$CLIENTS" --batch-size "$HOSTS_PER_REQUEST" --prefix rw --duration "$SECONDS_EACH" \
    --progress 0 | grep '^RESULT ' | sed 's/^RESULT //' >"$work/last.json"
  python3 -c "import json; r=json.load(open('$work/last.json')); e=r['errors']['requests']; print(r['samples_per_s']*$SERIES_PER_HOST, e)"
}

victoria-metrics -storageDataPath "$work/vm" -httpListenAddr 127.0.0.1:8428 >"$work/vm.log" 2>&1 &
pids+=($!)
stores=(sqlite)
if psql -h 127.0.0.1 -U postgres -qAt -c "select 1" >/dev/null 2>&1; then stores+=(postgres); fi
[ -n "${STORES:-}" ] && read -ra stores <<<"$STORES"
echo "| store | sysmon datapoints/s | VictoriaMetrics datapoints/s | sysmon / VM |"
echo "|---|---|---|---|"
for store in "${stores[@]}"; do
  case $store in
    sqlite) db="sqlite://$work/bench.db" ;;
    postgres)
      psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS sysmon_bench_rw WITH (FORCE)" -c "CREATE DATABASE sysmon_bench_rw" >/dev/null
      db="postgres://postgres@127.0.0.1:5432/sysmon_bench_rw" ;;
  esac
  token=$("$SERVER" --database-url "$db" fleet-token create --hosts 'rw*' --create-hosts --note bench | sed -n 's/^token: //p')
  RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$PORT" --database-url "$db" --status-log "$work/load.csv" >"$work/server.log" 2>&1 &
  server=$!; pids+=("$server")
  for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$PORT/api" >/dev/null && curl -sf http://127.0.0.1:8428/health >/dev/null && break; sleep 0.1; done
  : >"$work/sysmon.txt"; : >"$work/vm.txt"
  for round in $(seq 1 "$ROUNDS"); do
    read -r s errors < <(run sysmon "http://127.0.0.1:$PORT" /api/v1/prom/write "$token")
    echo "$store round $round sysmon: $s datapoints/s ($errors failed requests)" >&2
    echo "$s" >>"$work/sysmon.txt"
    read -r v errors < <(run victoria http://127.0.0.1:8428 /api/v1/write)
    echo "$store round $round VictoriaMetrics: $v datapoints/s ($errors failed requests)" >&2
    echo "$v" >>"$work/vm.txt"
  done
  kill -TERM "$server"; wait "$server" || true
  s=$(median <"$work/sysmon.txt"); v=$(median <"$work/vm.txt")
  echo "| $store | $s | $v | $(python3 -c "print(f'{$s/$v:.2f}')") |"
  [ "$store" = postgres ] && psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS sysmon_bench_rw WITH (FORCE)" >/dev/null
done
