# sysmon-server image.
#
#   docker build -t sysmon .
#   docker run -d -p 5000:5000 -v sysmon-data:/var/lib/sysmon sysmon
#
# By default the server stores its data in SQLite at /var/lib/sysmon/sysmon.db;
# set DATABASE_URL=postgres://... (or the original's DB_* variables) to use
# PostgreSQL instead. The dashboard is at http://HOST:5000/; set
# SYSMON_INITIAL_ADMIN_PASSWORD on the first run, or read the generated one
# from the volume (`docker exec CONTAINER cat initial-admin-password`, then
# delete it). See README.md.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src

# npm: the build script installs the dashboard's chart library (uPlot) from
# the npm registry and compiles it into the binary.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*

# The whole workspace: the migrations under crates/sysmon-server/migrations
# are compiled into the binary.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates

RUN cargo build --release --locked -p sysmon-server \
 && cp target/release/sysmon-server /usr/local/bin/sysmon-server

# --- run ---------------------------------------------------------------------
FROM debian:bookworm-slim

# tzdata lets TZ=Area/City set the time zone of WORK_TIME and the status log.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/*

# An unprivileged user owning the data directory. The directory is created
# (and chowned) before VOLUME, so a new volume starts out writable by it.
RUN groupadd --system --gid 10001 sysmon \
 && useradd --system --uid 10001 --gid sysmon --home-dir /var/lib/sysmon \
      --no-create-home --shell /usr/sbin/nologin sysmon \
 && mkdir -p /var/lib/sysmon \
 && chown sysmon:sysmon /var/lib/sysmon

COPY --from=builder /usr/local/bin/sysmon-server /usr/local/bin/sysmon-server

# The defaults (sysmon.db and server_system_load.csv, relative paths) land in
# the data volume. Only the original's APP_HOST is set, the lowest-precedence
# way to listen on all interfaces, so DATABASE_URL, DB_* or SYSMON_BIND given
# at `docker run` still take effect.
WORKDIR /var/lib/sysmon
ENV APP_HOST=0.0.0.0

USER sysmon:sysmon
EXPOSE 5000
VOLUME ["/var/lib/sysmon"]

# The server stops cleanly on SIGTERM (docker stop): it finishes requests in
# flight and commits every acknowledged sample before exiting.
ENTRYPOINT ["/usr/local/bin/sysmon-server"]
