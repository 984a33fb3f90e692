#!/usr/bin/env bash
# Throughput through HAProxy with 1, 2 and 3 sysmon servers on one
# PostgreSQL database (docs/scaling.md), next to one server reached
# directly, in rounds that alternate the setups. On this 2-core machine
# the servers, HAProxy, PostgreSQL and the load generator share the same
# cores, so this measures the overhead of the deployment, not its gain;
# the per-sample CPU costs it prints, the servers' and the database's, are
# what the capacity arithmetic in docs/scaling.md uses. The database's is
# the CPU of the PostgreSQL on 5432 over the run (all its processes), so
# run it while nothing else uses that PostgreSQL. Run by hand (needs haproxy; .ci/run installs it).
#
#   [SETUPS="direct 1 2 3"] [BALANCE=roundrobin] scripts/bench-scale.sh [ROUNDS] [SECONDS] [MODE]
#
# MODE is a loadgen mode (default http-form, 64 clients; v1-batch uses 8
# clients with batches of 1000). Uses target/release binaries, built here.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3} SECONDS_EACH=${2:-10} MODE=${3:-http-form}
# How HAProxy spreads requests: roundrobin, or hdr(Authorization) to keep
# each host (its token) on one server.
BALANCE=${BALANCE:-roundrobin}
command -v haproxy >/dev/null || { echo "needs haproxy (apt-get install haproxy)" >&2; exit 2; }
cargo build --release -q -p sysmon-server -p sysmon-loadgen
SERVER=target/release/sysmon-server LOADGEN=target/release/sysmon-loadgen
FRONT=127.0.0.1:5090
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

fresh_database() {
  psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS sysmon_scale WITH (FORCE)" >/dev/null
  psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE sysmon_scale" >/dev/null
  echo "postgres://postgres@127.0.0.1:5432/sysmon_scale"
}

start_servers() { # COUNT URL -> pids in $work/pids
  : >"$work/pids"
  for n in $(seq 1 "$1"); do
    RUST_LOG=warn "$SERVER" --bind "127.0.0.$((n + 1)):5091" --database-url "$2" \
      --status-log "$work/load-$n.csv" >"$work/server-$n.log" 2>&1 &
    echo $! >>"$work/pids"
    # One after another: the first migrates.
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.$((n + 1)):5091/readyz" >/dev/null && break; sleep 0.1; done
  done
}

start_haproxy() { # COUNT
  {
    printf 'defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n'
    printf '  option http-buffer-request\n  retries 3\n  option redispatch 1\n'
    printf '  retry-on conn-failure empty-response response-timeout\n'
    printf 'frontend sysmon\n  bind %s\n  default_backend servers\n' "$FRONT"
    printf 'backend servers\n  balance %s\n  hash-type consistent\n  option httpchk GET /readyz\n' "$BALANCE"
    printf '  http-check expect status 200\n  default-server inter 250ms fall 2 rise 2\n'
    for n in $(seq 1 "$1"); do printf '  server s%d 127.0.0.%d:5091 check\n' "$n" "$((n + 1))"; done
  } >"$work/haproxy.cfg"
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  echo $! >"$work/haproxy.pid"
  for _ in $(seq 1 100); do curl -sf "http://$FRONT/readyz" >/dev/null && break; sleep 0.1; done
}

cpu_ticks() { # PIDS... -> utime+stime ticks summed
  local sum=0
  for pid in "$@"; do
    read -r -a stat <"/proc/$pid/stat"
    sum=$((sum + stat[13] + stat[14]))
  done
  echo $sum
}

database_ticks() { # -> CPU ticks of the PostgreSQL on 5432 (its postmaster and children, ended ones included)
  local postmaster sum
  postmaster=$(head -1 "$(psql -h 127.0.0.1 -U postgres -qAt -c 'SHOW data_directory')/postmaster.pid")
  read -r -a stat <"/proc/$postmaster/stat"
  sum=$((stat[15] + stat[16])) # its ended children (backends that closed)
  # shellcheck disable=SC2046
  echo $((sum + $(cpu_ticks "$postmaster" $(pgrep -P "$postmaster"))))
}

run_setup() { # SETUP ("direct" or the number of servers behind HAProxy) -> "rate p99 cpu_us_per_sample db_us_per_sample"
  local setup=$1 url count=1 target
  url=$(fresh_database)
  [ "$setup" != direct ] && count=$setup
  start_servers "$count" "$url"
  if [ "$setup" = direct ]; then target="http://127.0.0.2:5091"; else start_haproxy "$count"; target="http://$FRONT"; fi
  mapfile -t pids <"$work/pids"
  local args=(--url "$target" --mode "$MODE" --users-file "$work/users-$setup" --prefix scale)
  case $MODE in
    v1-batch) args+=(--clients 8 --batch-size 1000) ;;
    *) args+=(--clients 64) ;;
  esac
  # Registering the users costs an argon2 hash each: done first, outside
  # the CPU measured.
  rm -f "$work/users-$setup"
  "$LOADGEN" "${args[@]}" --count 64 --no-check >/dev/null 2>&1
  local before db_before; before=$(cpu_ticks "${pids[@]}") db_before=$(database_ticks)
  local result
  result=$("$LOADGEN" "${args[@]}" --duration "$SECONDS_EACH" --retry-503 2>/dev/null | sed -n 's/^RESULT //p')
  local after db_after; after=$(cpu_ticks "${pids[@]}") db_after=$(database_ticks)
  kill -TERM "${pids[@]}" 2>/dev/null || true
  [ -f "$work/haproxy.pid" ] && kill "$(cat "$work/haproxy.pid")" 2>/dev/null || true
  rm -f "$work/haproxy.pid"
  wait 2>/dev/null || true
  python3 -c '
import json, os, sys
r = json.loads(sys.argv[1])
assert r["missing"] == 0, r
acked = max(r["acked_samples"], 1)
per_sample = lambda ticks: round(ticks / os.sysconf("SC_CLK_TCK") * 1e6 / acked, 1)
server, database = int(sys.argv[2]) - int(sys.argv[3]), int(sys.argv[4]) - int(sys.argv[5])
print(round(r["samples_per_s"]), r["latency_ms"]["p99"], per_sample(server), per_sample(database))
' "$result" "$after" "$before" "$db_after" "$db_before"
}

declare -A rates p99s costs db_costs
read -r -a setups <<<"${SETUPS:-direct 1 2 3}"
for round in $(seq 1 "$ROUNDS"); do
  for setup in "${setups[@]}"; do
    read -r rate p99 cost db_cost <<<"$(run_setup "$setup")"
    echo "round $round, $setup: $rate samples/s, p99 $p99 ms, $cost us of server CPU and $db_cost us of database CPU per sample"
    rates[$setup]+="$rate " p99s[$setup]+="$p99 " costs[$setup]+="$cost " db_costs[$setup]+="$db_cost "
  done
done

echo
echo "| setup ($MODE) | samples/s (median) | / first | p99 ms (median) | server CPU per sample, us (median) | database CPU per sample, us (median) |"
echo "|---|---|---|---|---|---|"
# shellcheck disable=SC2086
first=$(python3 -c 'import statistics,sys; print(statistics.median(map(float, sys.argv[1:])))' ${rates[${setups[0]}]})
for setup in "${setups[@]}"; do
  python3 - "$setup" "$first" "${rates[$setup]}" "${p99s[$setup]}" "${costs[$setup]}" "${db_costs[$setup]}" <<'EOF'
import statistics, sys
setup, first = sys.argv[1], float(sys.argv[2])
rate, p99, cost, db_cost = (statistics.median(map(float, s.split())) for s in sys.argv[3:7])
name = "one server, direct" if setup == "direct" else f"HAProxy, {setup} server{'s' if setup != '1' else ''}"
print(f"| {name} | {rate:,.0f} | {rate / first:.2f} | {p99:.1f} | {cost:.1f} | {db_cost:.1f} |")
EOF
done
