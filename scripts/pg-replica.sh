#!/usr/bin/env bash
# A streaming replica of this machine's PostgreSQL (the cluster on
# 127.0.0.1:5432) on 127.0.0.1:5433, for tests/read_replica.rs. Run as
# root; .ci/run calls it. Idempotent: leaves a running replica alone, starts
# a stopped one, and makes a new one from a base backup when there is none
# (or the old one cannot start).
#
#   scripts/pg-replica.sh          # then SYSMON_TEST_REPLICA_URL=postgres://sysmon@127.0.0.1:5433/sysmon_test
set -euo pipefail
PORT=${REPLICA_PORT:-5433}
VERSION=$(ls /etc/postgresql | sort -n | tail -1)
BIN=/usr/lib/postgresql/$VERSION/bin
PRIMARY_CONF=/etc/postgresql/$VERSION/main
DATA=/var/lib/postgresql/sysmon-replica
LOG=/var/lib/postgresql/sysmon-replica.log
as_postgres() { su postgres -s /bin/bash -c "$*"; }

# Streaming (not only running): a replica left behind past the primary's
# WAL, or of a cluster made anew, runs but never catches up.
streaming() {
  for _ in $(seq 1 20); do
    [ "$(psql -h 127.0.0.1 -p "$PORT" -U postgres -qAt -c \
        "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null)" = streaming ] && return 0
    sleep 0.5
  done
  return 1
}

# The primary must let a replica connect for replication from this host.
if ! grep -Eq '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$PRIMARY_CONF/pg_hba.conf"; then
  echo "host replication all 127.0.0.1/32 trust" >>"$PRIMARY_CONF/pg_hba.conf"
  psql -h 127.0.0.1 -U postgres -qAt -c "SELECT pg_reload_conf()" >/dev/null
fi

if pg_isready -h 127.0.0.1 -p "$PORT" -q && streaming; then
  echo "replica: already running on $PORT"
  exit 0
fi

start() {
  as_postgres "$BIN/pg_ctl -D $DATA -l $LOG -w -t 60 start" >/dev/null
}

if [ -f "$DATA/standby.signal" ] && start && streaming; then
  echo "replica: started on $PORT"
  exit 0
fi

echo "replica: a new base backup of the primary into $DATA"
as_postgres "$BIN/pg_ctl -D $DATA -m immediate stop" >/dev/null 2>&1 || true
rm -rf "$DATA"
as_postgres "$BIN/pg_basebackup -h 127.0.0.1 -p 5432 -U postgres -D $DATA -R -X stream -c fast"
# Debian keeps the configuration outside the data directory: the replica
# gets its own, on its own port and socket.
cp "$PRIMARY_CONF/pg_hba.conf" "$DATA/pg_hba.conf"
# max_connections may not be below the primary's. Long reports and
# exports are not cancelled by replay (max_standby_streaming_delay -1: the
# replica waits for them instead), and tell the primary what they read.
cat >"$DATA/postgresql.conf" <<CONF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '/tmp'
hot_standby = on
max_connections = $(psql -h 127.0.0.1 -U postgres -qAt -c "SHOW max_connections")
max_standby_streaming_delay = -1
hot_standby_feedback = on
CONF
chown -R postgres:postgres "$DATA"
start
streaming || { echo "replica: started but not streaming; see $LOG" >&2; exit 1; }
echo "replica: running on $PORT"
