//! The command line (clap): flags, the variables that stand for them
//! (clap's `env`), the subcommands, and `--help`.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

const ENVIRONMENT_HELP: &str = "\
Environment (overridden by flags, overriding the config file); a variable
set to the empty string counts as unset. Besides those beside the flags:
  SYSMON_INITIAL_ADMIN_PASSWORD  password of the dashboard user `admin`
                     created on first start (if unset: random, written to
                     initial-admin-password beside the status log, mode 0600)
  RUST_LOG           log filter, e.g. info or sysmon_server=debug
  APP_HOST, APP_PORT                                  the original server's bind address
  DB_HOST, DB_PORT, DB_NAME, DB_USERNAME, DB_PASSWORD the original server's PostgreSQL
                     (SYSMON_BIND and DATABASE_URL take precedence over these)

Examples:
  sysmon-server                                       SQLite file sysmon.db, port 5000
  sysmon-server user add alice --admin                a dashboard admin (prints a password)
  sysmon-server user add bob --client web1 --client web2
  sysmon-server --database-url postgres://sysmon@localhost/sysmon
  sysmon-server --config /etc/sysmon/server.yaml";

/// The sysmon server: stores what machines push, answers reports, and
/// reports on its own health.
#[derive(Debug, Default, Parser)]
#[command(name = "sysmon-server", version, after_help = ENVIRONMENT_HELP)]
pub struct CliOptions {
    /// YAML configuration file; see README.md for its keys.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000]; port 0 picks a free one.
    #[arg(long, env = "SYSMON_BIND", value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// Store: sqlite://FILE (created if missing) or postgres://USER:PASS@HOST:PORT/DB
    /// [default: sqlite://sysmon.db].
    #[arg(long, env = "DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// A streaming replica of the PostgreSQL database that reports,
    /// exports and charts read from once it has caught up.
    #[arg(long, env = "SYSMON_READ_REPLICA_URL", value_name = "URL")]
    pub read_replica_url: Option<String>,
    /// The server's own load log, CSV [default: server_system_load.csv].
    #[arg(long, env = "SYSMON_STATUS_LOG", value_name = "PATH")]
    pub status_log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve HTTPS: the certificate chain, PEM (with --tls-key). Reloaded
    /// on SIGHUP.
    #[arg(long, env = "SYSMON_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key, PEM.
    #[arg(long, env = "SYSMON_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tasks other than serving; they use the same store as the server.
#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum Command {
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage clients (the machines that push samples).
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage enrolment tokens (registration.mode: token): a new client
    /// registers only with one.
    #[command(subcommand)]
    EnrollToken(EnrollTokenCommand),
    /// Manage fleet tokens: Prometheus remote write and InfluxDB line
    /// protocol push samples of many hosts with one.
    #[command(subcommand)]
    FleetToken(FleetTokenCommand),
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ClientCommand {
    /// Add a client (how clients come to be under `registration.mode:
    /// closed`). The password is the first line of stdin; run from a
    /// terminal, a random one is generated and printed instead.
    Add { name: String },
    /// List clients: name, when registered, tokens held.
    List,
    /// Revoke every token and dashboard session of a client: its agent must
    /// log in again with its password. Every running server on the same
    /// database refuses the tokens within a second.
    RevokeTokens { name: String },
    /// Remove a client: its name is free at once, its tokens and sessions
    /// end (on every running server within a second), and its samples and
    /// summaries are deleted now and, for any still in flight, by the
    /// next retention run. An agent still running under the name must
    /// register again.
    Remove { name: String },
}

#[derive(Debug, Clone, PartialEq, clap::Subcommand)]
pub enum EnrollTokenCommand {
    /// Create a token and print its secret (shown only now); give it to
    /// agents with --enroll-token.
    Create {
        /// What it is for, shown in `list`.
        #[arg(long, default_value = "")]
        note: String,
        /// Days it stays valid [default: until revoked].
        #[arg(long, value_name = "DAYS")]
        days: Option<f64>,
        /// Registrations it allows [default: any number].
        #[arg(long, value_name = "N")]
        uses: Option<u32>,
    },
    /// List tokens: id, uses left, used, expiry, note (never the secret).
    List,
    /// Revoke a token by its id: no new client can register with it.
    Revoke { id: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum FleetTokenCommand {
    /// Create a token and print its secret (shown only now): a push token
    /// is Telegraf's (or an InfluxDB client's) password; an export token
    /// (--export) Prometheus's bearer token for /metrics/fleet.
    Create {
        /// What it is for, shown in `list`.
        #[arg(long, default_value = "")]
        note: String,
        /// Which hosts it may push for: `*` or a pattern with `*` and `?`
        /// (quote it in the shell).
        #[arg(long, value_name = "PATTERN", default_value = "*")]
        hosts: String,
        /// A push for a host not seen before creates it (else: refused).
        #[arg(long)]
        create_hosts: bool,
        /// An export token: Prometheus reads /metrics/fleet with it (it
        /// never pushes) [default: a push token].
        #[arg(long, conflicts_with = "create_hosts")]
        export: bool,
    },
    /// List tokens: id, kind, hosts, whether it creates hosts, note (never
    /// the secret).
    List,
    /// Revoke a token by its id: every running server refuses it within a
    /// second.
    Revoke { id: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum UserCommand {
    /// Create a dashboard user. The password is the first line of stdin
    /// (`echo "$PASSWORD" | sysmon-server user add NAME`); run from a
    /// terminal, a random one is generated and printed instead.
    Add {
        /// Login name; starts with a letter.
        name: String,
        /// May read every client and the server's health.
        #[arg(long)]
        admin: bool,
        /// A client this user may read (repeatable); ignored for admins.
        #[arg(long = "client", value_name = "CLIENT")]
        clients: Vec<String>,
    },
    /// List dashboard users.
    List,
    /// Delete a dashboard user and end its sessions.
    Remove { name: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}
