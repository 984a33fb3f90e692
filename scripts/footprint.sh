#!/usr/bin/env bash
# Bytes on disk per stored sample: SAMPLES agent samples (every charted
# metric, no file systems) from HOSTS hosts, one per second per host ending
# now, sent as v1 batches of 1000; then the server is stopped (its last
# rollup fold done) and the store measured: SQLite's file, PostgreSQL's
# tables with their indexes and partitions, rollups included. Run by hand.
#
#   scripts/footprint.sh [SAMPLES=10000000] [HOSTS=1000]
#
# STORES="sqlite" or "postgresql" picks one. SERVER and LOADGEN name other
# binaries than this checkout's release build (to measure an older build).
# Writes target/bench/footprint.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES="${1:-10000000}"
HOSTS="${2:-1000}"
PORT=5091
PG_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
PG_URL="postgres://sysmon@127.0.0.1:5432/sysmon_footprint"
OUT=target/bench
mkdir -p "$OUT"
work=$(mktemp -d)
server_pid=""
cleanup() { [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
read -ra stores <<<"${STORES:-sqlite postgresql}"

[ -n "${SERVER:-}" ] && [ -n "${LOADGEN:-}" ] || cargo build --release -q -p sysmon-server -p sysmon-loadgen
SERVER="${SERVER:-${CARGO_TARGET_DIR:-target}/release/sysmon-server}"
LOADGEN="${LOADGEN:-${CARGO_TARGET_DIR:-target}/release/sysmon-loadgen}"
URL="http://127.0.0.1:$PORT"

start_server() { # DATABASE_URL
  RUST_LOG=warn "$SERVER" --bind "127.0.0.1:$PORT" --database-url "$1" --status-log "$work/load.csv" &
  server_pid=$!
  for _ in $(seq 1 100); do curl -sf "$URL/api" >/dev/null && return; sleep 0.1; done
  echo "server did not start" >&2; exit 1
}
stop_server() { kill -TERM "$server_pid"; wait "$server_pid" || true; server_pid=""; }

# PostgreSQL: bytes of every table of the database with its indexes,
# TOAST and partitions, largest first ("relation bytes" lines).
pg_relations() {
  psql "$PG_URL" -qAt -F ' ' -c "
    SELECT c.relname, pg_total_relation_size(c.oid)
      + COALESCE((SELECT SUM(pg_total_relation_size(i.inhrelid)) FROM pg_inherits i WHERE i.inhparent = c.oid), 0)
    FROM pg_class c
    WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relispartition
    ORDER BY 2 DESC"
}

declare -A RESULT
for store in "${stores[@]}"; do
  echo "== $store: $SAMPLES samples from $HOSTS hosts" >&2
  if [ "$store" = sqlite ]; then
    url="sqlite://$work/footprint.db"
  else
    psql "$PG_ADMIN" -qAt -c "DROP DATABASE IF EXISTS sysmon_footprint WITH (FORCE)" -c "CREATE DATABASE sysmon_footprint OWNER sysmon"
    url="$PG_URL"
  fi
  start_server "$url"
  seconds_each=$(( SAMPLES / HOSTS ))
  started=$(date +%s)
  "$LOADGEN" --url "$URL" --progress 0 --mode v1-batch --clients "$HOSTS" --batch-size 1000 \
    --count "$SAMPLES" --start-time "$(( $(date +%s) - seconds_each ))" --time-step-us 1000000 \
    --users-file "$work/users-$store.json" \
    | grep '^RESULT ' >&2
  echo "   stored in $(( $(date +%s) - started )) s" >&2
  stop_server
  if [ "$store" = sqlite ]; then
    bytes=$(du -cb "$work"/footprint.db* | tail -1 | cut -f1)
    detail="file $(ls -l "$work"/footprint.db* | awk '{printf "%s %d B; ", $9, $5}')"
  else
    psql "$PG_URL" -qAt -c "CHECKPOINT" >/dev/null 2>&1 || true
    relations=$(pg_relations)
    bytes=$(echo "$relations" | awk '{s += $2} END {print s}')
    detail=$(echo "$relations" | awk '$2 > 65536 {printf "%s %.1f MB; ", $1, $2 / 1048576}')
  fi
  per_sample=$(python3 -c "print(f'{$bytes / $SAMPLES:.1f}')")
  RESULT[$store]="$(( bytes / 1048576 )) MiB, $per_sample bytes per sample"
  echo "   $store: ${RESULT[$store]} ($detail)" >&2
  RESULT[$store|detail]="$detail"
done

{
  echo "| store | on disk after $SAMPLES samples from $HOSTS hosts | where |"
  echo "|---|---|---|"
  for store in "${stores[@]}"; do echo "| $store | ${RESULT[$store]} | ${RESULT[$store|detail]} |"; done
  echo
  echo "Samples with every charted metric and no file systems; rollups (1m/10m/1h) included; $(date -u +%Y-%m-%d)."
} | tee "$OUT/footprint.md"
