#!/usr/bin/env bash
# A streaming replica of this machine's PostgreSQL (the cluster on
# 127.0.0.1:5432) on 127.0.0.1:5433, for tests/read_replica.rs. Run as
# root; .ci/run calls it. Idempotent: leaves a running, streaming replica
# with the settings below alone, restarts one whose settings differ,
# starts a stopped one, and makes a new one from a base backup when there
# is none (or the old one cannot start or stream).
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
primary() { psql -h 127.0.0.1 -U postgres -qAt -c "$1"; }

# The replica's settings. A standby refuses to start with these below the
# primary's, so they are copied. Long reports and exports are not
# cancelled by replay (max_standby_streaming_delay -1: the replica waits
# for them instead), and they tell the primary what they read.
wanted=$(
  echo "port = $PORT"
  echo "listen_addresses = '127.0.0.1'"
  echo "unix_socket_directories = '/tmp'"
  echo "hot_standby = on"
  for setting in max_connections max_locks_per_transaction max_worker_processes \
                 max_wal_senders max_prepared_transactions; do
    echo "$setting = $(primary "SHOW $setting")"
  done
  echo "max_standby_streaming_delay = -1"
  echo "hot_standby_feedback = on"
)

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
start() { as_postgres "$BIN/pg_ctl -D $DATA -l $LOG -w -t 60 start" >/dev/null; }
stop() { as_postgres "$BIN/pg_ctl -D $DATA -m fast stop" >/dev/null 2>&1 || true; }

# The primary lets a replica connect for replication from this host. The
# first matching line of pg_hba.conf decides, so ours goes first unless the
# first replication line for 127.0.0.1 already trusts it.
first_replication=$(grep -E '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+127\.0\.0\.1/32' \
  "$PRIMARY_CONF/pg_hba.conf" | head -1 || true)
if ! grep -Eq '[[:space:]]trust$' <<<"$first_replication"; then
  sed -i '1i host replication all 127.0.0.1/32 trust' "$PRIMARY_CONF/pg_hba.conf"
  primary "SELECT pg_reload_conf()" >/dev/null
fi

if [ -f "$DATA/standby.signal" ]; then
  if [ "$(cat "$DATA/postgresql.conf" 2>/dev/null)" != "$wanted" ]; then
    echo "replica: its settings changed; restarting it"
    stop
    echo "$wanted" >"$DATA/postgresql.conf"
    chown postgres:postgres "$DATA/postgresql.conf"
  fi
  if pg_isready -h 127.0.0.1 -p "$PORT" -q && streaming; then
    echo "replica: running on $PORT"
    exit 0
  fi
  if start && streaming; then
    echo "replica: started on $PORT"
    exit 0
  fi
fi

echo "replica: a new base backup of the primary into $DATA"
stop
rm -rf "$DATA"
as_postgres "$BIN/pg_basebackup -h 127.0.0.1 -p 5432 -U postgres -D $DATA -R -X stream -c fast"
# Debian keeps the configuration outside the data directory: the replica
# gets its own, on its own port and socket.
cp "$PRIMARY_CONF/pg_hba.conf" "$DATA/pg_hba.conf"
echo "$wanted" >"$DATA/postgresql.conf"
chown -R postgres:postgres "$DATA"
start
streaming || { echo "replica: started but not streaming; see $LOG" >&2; exit 1; }
echo "replica: running on $PORT"
