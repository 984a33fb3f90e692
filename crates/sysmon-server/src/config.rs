//! Configuration: one typed struct, loaded once at startup from (lowest to
//! highest precedence) defaults, a YAML file, the environment, and flags.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::services::ingest::IngestConfig;
use crate::services::query::RetentionConfig;
use crate::services::status_log::StatusLogConfig;
use crate::store::Durability;

pub const DEFAULT_BIND: &str = "127.0.0.1:5000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sysmon.db";
const DEFAULT_APP_HOST: &str = "127.0.0.1";
const DEFAULT_APP_PORT: &str = "5000";

const ENVIRONMENT_HELP: &str = "\
Environment (overridden by flags, overriding the config file):
  SYSMON_BIND        address to listen on, HOST:PORT
  DATABASE_URL       sqlite://FILE or postgres://USER:PASS@HOST:PORT/DB
  SYSMON_STATUS_LOG  path of the status log CSV
  SYSMON_INITIAL_ADMIN_PASSWORD  password of the dashboard user `admin`
                     created on first start (random and logged once if unset)
  RUST_LOG           log filter, e.g. info or sysmon_server=debug
  APP_HOST, APP_PORT                                  the original server's bind address
  DB_HOST, DB_PORT, DB_NAME, DB_USERNAME, DB_PASSWORD the original server's PostgreSQL

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
    #[arg(long, value_name = "HOST:PORT")]
    pub bind: Option<String>,
    /// Store: sqlite://FILE (created if missing) or postgres://USER:PASS@HOST:PORT/DB
    /// [default: sqlite://sysmon.db].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// The server's own load log, CSV [default: server_system_load.csv].
    #[arg(long, value_name = "PATH")]
    pub status_log: Option<PathBuf>,
    /// Log line format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Tasks other than serving; they use the same store as the server.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Manage dashboard users.
    #[command(subcommand)]
    User(UserCommand),
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

/// Everything the server needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: String,
    pub database_url: String,
    pub status_log: StatusLogConfig,
    pub ingest: IngestConfig,
    pub log_format: LogFormat,
    /// How long shutdown waits for in-flight requests and batches.
    pub shutdown_grace: Duration,
    /// The file this was read from, for the startup log.
    pub config_file: Option<PathBuf>,
    pub dashboard: DashboardConfig,
    pub retention: RetentionConfig,
}

/// Dashboard logins.
#[derive(Clone, PartialEq)]
pub struct DashboardConfig {
    /// Password of `admin`, created on first start when there are no
    /// dashboard users; random (and logged once) when unset.
    pub initial_admin_password: Option<String>,
    /// How long a dashboard login lasts.
    pub session_lifetime: Duration,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            initial_admin_password: None,
            session_lifetime: Duration::from_secs(30 * 86_400),
        }
    }
}

// Hand-written so that a logged config never shows the password.
impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field(
                "initial_admin_password",
                &self.initial_admin_password.as_ref().map(|_| "***"),
            )
            .field("session_lifetime", &self.session_lifetime)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: DEFAULT_BIND.to_owned(),
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            status_log: StatusLogConfig::default(),
            ingest: IngestConfig::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            config_file: None,
            dashboard: DashboardConfig::default(),
            retention: RetentionConfig::default(),
        }
    }
}

/// The YAML file's shape. Unknown keys are an error, so a typo is caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    log_format: Option<LogFormat>,
    shutdown_grace_seconds: Option<f64>,
    status_log: Option<FileStatusLog>,
    ingest: Option<FileIngest>,
    dashboard: Option<FileDashboard>,
    retention: Option<FileRetention>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDashboard {
    initial_admin_password: Option<String>,
    session_days: Option<f64>,
}

/// Days each tier is kept; 0 keeps it forever.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    raw_days: Option<f64>,
    minute_days: Option<f64>,
    ten_minute_days: Option<f64>,
    hour_days: Option<f64>,
    check_interval_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileStatusLog {
    path: Option<PathBuf>,
    max_size_mb: Option<u64>,
    keep_files: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIngest {
    max_batch: Option<usize>,
    queue_capacity: Option<usize>,
    writers: Option<usize>,
    enqueue_timeout_ms: Option<u64>,
    durability: Option<Durability>,
}

impl Config {
    /// Loads the configuration from the process's flags and environment.
    pub fn load(options: &CliOptions) -> Result<Config> {
        let environment: HashMap<String, String> = std::env::vars().collect();
        Self::from_sources(options, &environment)
    }

    /// Layers the sources; separate from [`Config::load`] so tests can pass
    /// an environment of their own.
    pub fn from_sources(
        options: &CliOptions,
        environment: &HashMap<String, String>,
    ) -> Result<Config> {
        let mut config = Config::default();
        if let Some(path) = &options.config {
            config.apply_file(path)?;
        }
        config.apply_environment(environment)?;
        config.apply_flags(options);
        config.validate()?;
        Ok(config)
    }

    fn apply_file(&mut self, path: &PathBuf) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let file: FileConfig = if text.trim().is_empty() {
            FileConfig::default()
        } else {
            serde_norway::from_str(&text)
                .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?
        };
        self.config_file = Some(path.clone());
        set(&mut self.bind, file.bind);
        set(&mut self.database_url, file.database_url);
        set(&mut self.log_format, file.log_format);
        if let Some(seconds) = file.shutdown_grace_seconds {
            self.shutdown_grace = Duration::try_from_secs_f64(seconds).map_err(|_| {
                Error::Config("shutdown_grace_seconds must be a non-negative number".into())
            })?;
        }
        if let Some(status_log) = file.status_log {
            set(&mut self.status_log.path, status_log.path);
            set(
                &mut self.status_log.max_bytes,
                status_log.max_size_mb.map(|mb| mb * 1024 * 1024),
            );
            set(&mut self.status_log.keep, status_log.keep_files);
        }
        if let Some(ingest) = file.ingest {
            set(&mut self.ingest.max_batch, ingest.max_batch);
            set(&mut self.ingest.queue_capacity, ingest.queue_capacity);
            set(&mut self.ingest.writers, ingest.writers);
            set(
                &mut self.ingest.enqueue_timeout,
                ingest.enqueue_timeout_ms.map(Duration::from_millis),
            );
            set(&mut self.ingest.durability, ingest.durability);
        }
        if let Some(dashboard) = file.dashboard {
            if dashboard.initial_admin_password.is_some() {
                self.dashboard.initial_admin_password = dashboard.initial_admin_password;
            }
            if let Some(days) = dashboard.session_days {
                self.dashboard.session_lifetime = days_setting("dashboard.session_days", days)?
                    .ok_or_else(|| {
                        Error::Config("dashboard.session_days must be more than 0".into())
                    })?;
            }
        }
        if let Some(retention) = file.retention {
            let tiers = [
                (
                    "retention.raw_days",
                    retention.raw_days,
                    &mut self.retention.raw,
                ),
                (
                    "retention.minute_days",
                    retention.minute_days,
                    &mut self.retention.one_minute,
                ),
                (
                    "retention.ten_minute_days",
                    retention.ten_minute_days,
                    &mut self.retention.ten_minutes,
                ),
                (
                    "retention.hour_days",
                    retention.hour_days,
                    &mut self.retention.one_hour,
                ),
            ];
            for (key, days, slot) in tiers {
                if let Some(days) = days {
                    *slot = days_setting(key, days)?;
                }
            }
            if let Some(seconds) = retention.check_interval_seconds {
                self.retention.check_interval = Duration::try_from_secs_f64(seconds)
                    .ok()
                    .filter(|interval| !interval.is_zero())
                    .ok_or_else(|| {
                        Error::Config(
                            "retention.check_interval_seconds must be a positive number".into(),
                        )
                    })?;
            }
        }
        Ok(())
    }

    fn apply_environment(&mut self, environment: &HashMap<String, String>) -> Result<()> {
        let get = |name: &str| {
            environment
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        // The original's variables first, so that sysmon's own win.
        if get("APP_HOST").is_some() || get("APP_PORT").is_some() {
            let host = get("APP_HOST").unwrap_or_else(|| DEFAULT_APP_HOST.to_owned());
            let port = get("APP_PORT").unwrap_or_else(|| DEFAULT_APP_PORT.to_owned());
            self.bind = format!("{host}:{port}");
        }
        if let Some(url) = original_database_url(&get) {
            self.database_url = url;
        }
        set(&mut self.bind, get("SYSMON_BIND"));
        set(&mut self.database_url, get("DATABASE_URL"));
        set(
            &mut self.status_log.path,
            get("SYSMON_STATUS_LOG").map(PathBuf::from),
        );
        if let Some(password) = get("SYSMON_INITIAL_ADMIN_PASSWORD") {
            self.dashboard.initial_admin_password = Some(password);
        }
        Ok(())
    }

    fn apply_flags(&mut self, options: &CliOptions) {
        set(&mut self.bind, options.bind.clone());
        set(&mut self.database_url, options.database_url.clone());
        set(&mut self.status_log.path, options.status_log.clone());
        set(&mut self.log_format, options.log_format);
    }

    fn validate(&self) -> Result<()> {
        let port_ok = self
            .bind
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(Error::Config(format!(
                "bind address `{}` is not HOST:PORT (for example 0.0.0.0:5000)",
                self.bind
            )));
        }
        let scheme = self
            .database_url
            .split_once("://")
            .map(|(scheme, _)| scheme);
        if !matches!(scheme, Some("sqlite" | "postgres" | "postgresql")) {
            return Err(Error::Config(format!(
                "database URL `{}` is not sqlite://FILE or postgres://USER@HOST/DB",
                crate::store::redact_password(&self.database_url)
            )));
        }
        if self.status_log.max_bytes == 0 {
            return Err(Error::Config(
                "status_log max_size_mb must be at least 1".into(),
            ));
        }
        if let Some(password) = &self.dashboard.initial_admin_password {
            if password.chars().count() < crate::services::auth::MIN_DASHBOARD_PASSWORD_CHARS {
                return Err(Error::Config(format!(
                    "the initial admin password needs at least {} characters",
                    crate::services::auth::MIN_DASHBOARD_PASSWORD_CHARS
                )));
            }
        }
        if self.ingest.max_batch == 0 || self.ingest.queue_capacity == 0 || self.ingest.writers == 0
        {
            return Err(Error::Config(
                "ingest max_batch, queue_capacity and writers must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// A number of days as a duration; 0 means "no limit".
fn days_setting(key: &str, days: f64) -> Result<Option<Duration>> {
    if days == 0.0 {
        return Ok(None);
    }
    Duration::try_from_secs_f64(days * 86_400.0)
        .map(Some)
        .map_err(|_| Error::Config(format!("{key} must be a number of days, 0 or more")))
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The original server's `DB_*` variables, as a PostgreSQL URL.
fn original_database_url(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let names = [
        "DB_HOST",
        "DB_PORT",
        "DB_NAME",
        "DB_USERNAME",
        "DB_PASSWORD",
    ];
    if names.iter().all(|name| get(name).is_none()) {
        return None;
    }
    let host = get("DB_HOST").unwrap_or_else(|| "localhost".to_owned());
    let port = get("DB_PORT").unwrap_or_else(|| "5432".to_owned());
    let name = get("DB_NAME").unwrap_or_else(|| "postgres".to_owned());
    let user = get("DB_USERNAME").unwrap_or_else(|| "postgres".to_owned());
    let credentials = match get("DB_PASSWORD") {
        Some(password) => format!("{}:{}", percent_encode(&user), percent_encode(&password)),
        None => percent_encode(&user),
    };
    Some(format!(
        "postgres://{credentials}@{host}:{port}/{}",
        percent_encode(&name)
    ))
}

/// Escapes what may not appear raw in a URL's user, password or path.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn yaml(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn defaults_are_the_embedded_store_on_port_5000() {
        let config = Config::from_sources(&CliOptions::default(), &env(&[])).unwrap();
        assert_eq!(config.bind, "127.0.0.1:5000");
        assert_eq!(config.database_url, "sqlite://sysmon.db");
        assert_eq!(
            config.status_log.path,
            PathBuf::from("server_system_load.csv")
        );
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = yaml("bind: 0.0.0.0:1\ndatabase_url: sqlite://file.db\nstatus_log:\n  path: f.csv\n  max_size_mb: 2\n");
        let options = CliOptions {
            config: Some(file.path().to_owned()),
            bind: Some("127.0.0.1:3".into()),
            ..Default::default()
        };
        let config = Config::from_sources(
            &options,
            &env(&[
                ("SYSMON_BIND", "0.0.0.0:2"),
                ("DATABASE_URL", "sqlite://env.db"),
            ]),
        )
        .unwrap();
        assert_eq!(config.bind, "127.0.0.1:3");
        assert_eq!(config.database_url, "sqlite://env.db");
        assert_eq!(config.status_log.path, PathBuf::from("f.csv"));
        assert_eq!(config.status_log.max_bytes, 2 * 1024 * 1024);
        assert_eq!(config.config_file.as_deref(), Some(file.path()));
    }

    #[test]
    fn durability_is_full_unless_relaxed_by_name() {
        let default = Config::from_sources(&CliOptions::default(), &env(&[])).unwrap();
        assert_eq!(default.ingest.durability, Durability::Full);
        let from_file = |text: &str| {
            let file = yaml(text);
            let options = CliOptions {
                config: Some(file.path().to_owned()),
                ..Default::default()
            };
            Config::from_sources(&options, &env(&[]))
        };
        let config = from_file("ingest:\n  durability: relaxed\n").unwrap();
        assert_eq!(config.ingest.durability, Durability::Relaxed);
        let error = from_file("ingest:\n  durability: fast\n").unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("fast") && message.contains("relaxed"),
            "{message}"
        );
    }

    #[test]
    fn original_variables_still_work() {
        let config = Config::from_sources(
            &CliOptions::default(),
            &env(&[
                ("APP_HOST", "0.0.0.0"),
                ("APP_PORT", "8080"),
                ("DB_HOST", "db"),
                ("DB_NAME", "monitor"),
                ("DB_USERNAME", "app"),
                ("DB_PASSWORD", "p@ss:word"),
            ]),
        )
        .unwrap();
        assert_eq!(config.bind, "0.0.0.0:8080");
        assert_eq!(
            config.database_url,
            "postgres://app:p%40ss%3Aword@db:5432/monitor"
        );
    }

    #[test]
    fn bad_configuration_is_one_clear_error() {
        let typo = yaml("bnd: 0.0.0.0:1\n");
        let options = CliOptions {
            config: Some(typo.path().to_owned()),
            ..Default::default()
        };
        let error = Config::from_sources(&options, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `bnd`"), "{error}");

        let options = CliOptions {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        };
        let error = Config::from_sources(&options, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("database URL"), "{error}");

        let options = CliOptions {
            bind: Some("localhost".into()),
            ..Default::default()
        };
        let error = Config::from_sources(&options, &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("HOST:PORT"), "{error}");
    }
}
