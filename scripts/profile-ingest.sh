#!/usr/bin/env bash
# Where an ingest workload's CPU goes: starts a release server on a fresh
# database, runs one sysmon-loadgen workload under `perf record -a`
# (software cpu-clock, so it works on VMs without hardware counters), and
# prints the CPU share of each process (server, load generator,
# PostgreSQL) and the server's hottest functions. Run by hand.
#
#   scripts/profile-ingest.sh STORE MODE [SECONDS] [-- LOADGEN ARGS...]
#
# STORE is sqlite or postgres; MODE a loadgen --mode (http-form, ws,
# v1-batch). Default load: 64 clients (8 with 1000-sample batches for
# v1-batch). DURABILITY=relaxed runs the server without a flush per
# commit. Needs linux-perf (apt-get install linux-perf).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { sed -n 2,14p "$0"; exit 2; }
STORE=$1 MODE=$2 SECS=${3:-10}
shift $(( $# >= 3 ? 3 : 2 )); [ "${1:-}" = -- ] && shift
TARGET=${CARGO_TARGET_DIR:-target}
PORT=5081
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
cargo build --release -q -p sysmon-server -p sysmon-loadgen

case $STORE in
  sqlite) url="sqlite://$work/profile.db" ;;
  postgres)
    psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS sysmon_profile WITH (FORCE)" -c "CREATE DATABASE sysmon_profile" >/dev/null
    url="postgres://postgres@127.0.0.1:5432/sysmon_profile" ;;
  *) echo "STORE must be sqlite or postgres" >&2; exit 2 ;;
esac
printf 'ingest:\n  durability: %s\n' "${DURABILITY:-full}" > "$work/server.yaml"
RUST_LOG=warn "$TARGET/release/sysmon-server" --config "$work/server.yaml" --bind "127.0.0.1:$PORT" \
  --database-url "$url" --status-log "$work/load.csv" >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/api" >/dev/null && break; sleep 0.1; done

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  if [ "$MODE" = v1-batch ]; then args=(--clients 8 --batch-size 1000); else args=(--clients 64); fi
fi
# Register the clients first, so argon2 logins stay out of the profile.
"$TARGET/release/sysmon-loadgen" --url "http://127.0.0.1:$PORT" --progress 0 --mode "$MODE" \
  "${args[@]}" --count 64 --users-file "$work/users.json" --no-check >/dev/null
"$TARGET/release/sysmon-loadgen" --url "http://127.0.0.1:$PORT" --progress 0 --mode "$MODE" \
  "${args[@]}" --duration "$SECS" --users-file "$work/users.json" > "$work/result" &
loadgen=$!
sleep 1 # past the load generator's start
written_before=$(awk '/^write_bytes/ {print $2}' "/proc/$server/io")
rows_before=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^sysmon_ingest_batch_rows_sum/ {print $2}')
perf record -q -F 999 -e cpu-clock -a -g -o "$work/perf.data" -- sleep "$((SECS - 2))" 2>/dev/null
written=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$server/io") - written_before ))
rows=$(curl -s "http://127.0.0.1:$PORT/metrics" | awk -v before="$rows_before" '/^sysmon_ingest_batch_rows_sum/ {print $2 - before}')
wait "$loadgen"
grep '^RESULT' "$work/result"
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^sysmon_ingest_(commit_duration_seconds|batch_rows)_(sum|count)'

echo "== the server wrote $((written / 1048576)) MiB to disk for $rows rows: $(( written / ${rows%.*} )) bytes per row (SQLite; PostgreSQL writes from its own processes)"
echo "== CPU by process, % of both cores over $((SECS - 2)) s of the run"
perf script -i "$work/perf.data" -F pid,comm 2>/dev/null | awk -v server="$server" -v loadgen="$loadgen" '
  { n++; pid = $NF; comm = $1
    if (pid == server) k = "sysmon-server"; else if (pid == loadgen) k = "sysmon-loadgen"
    else if (pid == 0) k = "idle"; else if (comm == "postgres") k = "postgres"; else k = "other" 
    c[k]++ }
  END { for (k in c) printf "  %-15s %5.1f%%\n", k, 100 * c[k] / n }' | sort -k2 -rn
echo "== the server's hottest functions (% of all samples)"
perf report -i "$work/perf.data" --no-children --pid "$server" --sort symbol -g none 2>/dev/null \
  | grep -E '^ +[0-9]' | sed -n 1,25p | cut -c1-120
