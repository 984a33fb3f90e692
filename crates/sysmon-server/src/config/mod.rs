//! Configuration: one typed struct, loaded once at startup from (lowest to
//! highest precedence) defaults, a YAML file, the environment, and flags.
//!
//! - [`cli`]: the flags, and the variables clap reads for them
//!   (`SYSMON_BIND`, `DATABASE_URL`, `SYSMON_STATUS_LOG`);
//! - [`file`]: the YAML file's keys and their units, laid over the defaults;
//! - here: the variables that stand for no flag (the original server's
//!   `APP_*` and `DB_*`, the initial admin password), the layers in order,
//!   and the checks on the result.

mod cli;
mod file;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

pub use cli::{
    CliOptions, ClientCommand, Command, EnrollTokenCommand, FleetTokenCommand, LogFormat,
    UserCommand,
};

use crate::connections::ConnectionLimits;
use crate::error::{Error, Result};
use crate::proxy::TrustedProxies;
use crate::services::alerts::AlertsConfig;
use crate::services::auth::RegistrationConfig;
use crate::services::downloads::DownloadLimits;
use crate::services::ingest::IngestConfig;
use crate::services::login_guard::LoginLimits;
use crate::services::query::RetentionConfig;
use crate::services::status_log::StatusLogConfig;
use crate::tls::TlsFiles;

pub const DEFAULT_BIND: &str = "127.0.0.1:5000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sysmon.db";
const DEFAULT_APP_HOST: &str = "127.0.0.1";
const DEFAULT_APP_PORT: &str = "5000";

/// Everything the server needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub bind: String,
    pub database_url: String,
    /// A PostgreSQL streaming replica of `database_url` that reports,
    /// exports, charts and pages of samples read from once it has caught
    /// up with the primary (docs/scaling.md).
    pub read_replica_url: Option<String>,
    pub status_log: StatusLogConfig,
    pub ingest: IngestConfig,
    pub log_format: LogFormat,
    /// How long shutdown waits for in-flight requests and batches.
    pub shutdown_grace: Duration,
    /// How long, after SIGTERM, `/readyz` fails while requests are still
    /// served (behind a load balancer: longer than its check interval ×
    /// failures to mark a server down).
    pub shutdown_drain: Duration,
    /// The file this was read from, for the startup log.
    pub config_file: Option<PathBuf>,
    pub dashboard: DashboardConfig,
    pub retention: RetentionConfig,
    pub limits: ConnectionLimits,
    pub login: LoginLimits,
    /// Who may register new clients, and with what passwords.
    pub registration: RegistrationConfig,
    /// Reports and exports running at once.
    pub downloads: DownloadLimits,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Reverse proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are
    /// believed.
    pub trusted_proxies: TrustedProxies,
    /// Alert rules, channels, and how often rules are checked.
    pub alerts: AlertsConfig,
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
            read_replica_url: None,
            status_log: StatusLogConfig::default(),
            ingest: IngestConfig::default(),
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(10),
            shutdown_drain: Duration::ZERO,
            config_file: None,
            dashboard: DashboardConfig::default(),
            retention: RetentionConfig::default(),
            limits: ConnectionLimits::default(),
            login: LoginLimits::default(),
            registration: RegistrationConfig::default(),
            downloads: DownloadLimits::default(),
            tls: None,
            trusted_proxies: TrustedProxies::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

impl Config {
    /// Whether the server listens only on a loopback address, where open
    /// registration reaches no one else.
    pub fn listens_on_loopback(&self) -> bool {
        let host = self.bind.rsplit_once(':').map_or("", |(host, _)| host);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// Loads the configuration from the process's flags and environment.
    pub fn load(options: &CliOptions) -> Result<Config> {
        // A variable that is not Unicode cannot be any of ours.
        let environment: HashMap<String, String> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        Self::from_sources(options, &environment)
    }

    /// Layers the sources; separate from [`Config::load`] so tests can pass
    /// an environment of their own. `options` holds the flags, and the
    /// variables clap read for flags that were not given.
    pub fn from_sources(
        options: &CliOptions,
        environment: &HashMap<String, String>,
    ) -> Result<Config> {
        let mut config = Config::default();
        if let Some(path) = &options.config {
            let file: file::FileConfig = sysmon_core::settings::read_yaml(path)
                .map_err(|error| Error::Config(error.to_string()))?;
            file.apply(&mut config);
            config.config_file = Some(path.clone());
        }
        // An empty variable counts as unset.
        let get = |name: &str| {
            environment
                .get(name)
                .filter(|value| !value.is_empty())
                .cloned()
        };
        // The original's variables under sysmon's own (`options`).
        let bind = options.bind.clone().or_else(|| original_bind(&get));
        let database_url = (options.database_url.clone()).or_else(|| original_database_url(&get));
        set(&mut config.bind, bind);
        set(&mut config.database_url, database_url);
        if let Some(url) = &options.read_replica_url {
            config.read_replica_url = Some(url.clone());
        }
        set(&mut config.status_log.path, options.status_log.clone());
        set(&mut config.log_format, options.log_format);
        config.tls = tls_files(
            options
                .tls_cert
                .clone()
                .or(config.tls.as_ref().map(|tls| tls.cert.clone())),
            options
                .tls_key
                .clone()
                .or(config.tls.as_ref().map(|tls| tls.key.clone())),
        )?;
        set(
            &mut config.dashboard.initial_admin_password,
            get("SYSMON_INITIAL_ADMIN_PASSWORD").map(Some),
        );
        config.validate()?;
        Ok(config)
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
        if let Some(replica) = &self.read_replica_url {
            let postgres =
                |url: &str| url.starts_with("postgres://") || url.starts_with("postgresql://");
            if !postgres(replica) || !postgres(&self.database_url) {
                return Err(Error::Config(format!(
                    "read_replica_url `{}` must be postgres://..., a streaming replica of a \
                     PostgreSQL database_url",
                    crate::store::redact_password(replica)
                )));
            }
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
        let ingest = &self.ingest;
        if [
            ingest.max_batch,
            ingest.queue_capacity,
            ingest.queue_rows,
            ingest.writers,
        ]
        .contains(&0)
        {
            return Err(Error::Config(
                "ingest max_batch, queue_capacity, queue_rows and writers must be at least 1"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A higher layer's value, if it has one, over what lower layers left.
fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

/// The original server's `APP_HOST` and `APP_PORT`, as an address.
fn original_bind(get: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    if get("APP_HOST").is_none() && get("APP_PORT").is_none() {
        return None;
    }
    let host = get("APP_HOST").unwrap_or_else(|| DEFAULT_APP_HOST.to_owned());
    let port = get("APP_PORT").unwrap_or_else(|| DEFAULT_APP_PORT.to_owned());
    Some(format!("{host}:{port}"))
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

/// The certificate and key, given together or not at all.
fn tls_files(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<TlsFiles>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(Error::Config(
            "TLS needs both a certificate and its key (tls.cert and tls.key, or --tls-cert and --tls-key)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Durability;
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

    /// The options the binary would parse from `args` with exactly the
    /// variables in `vars` set, for the variables clap reads.
    fn parse(args: &[&str], vars: &[(&str, &str)]) -> CliOptions {
        use clap::FromArgMatches;
        let command = sysmon_core::settings::command_with_env::<CliOptions>(vars);
        let argv = std::iter::once("sysmon-server").chain(args.iter().copied());
        CliOptions::from_arg_matches(&command.try_get_matches_from(argv).unwrap()).unwrap()
    }

    /// The configuration from the YAML `text` alone.
    fn from_file(text: &str) -> Result<Config> {
        let file = yaml(text);
        let options = CliOptions {
            config: Some(file.path().to_owned()),
            ..Default::default()
        };
        Config::from_sources(&options, &env(&[]))
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
        let path = file.path().to_str().unwrap();
        // clap reads SYSMON_BIND and DATABASE_URL, for --bind and --database-url.
        let options = parse(
            &["--config", path, "--bind", "127.0.0.1:3"],
            &[
                ("SYSMON_BIND", "0.0.0.0:2"),
                ("DATABASE_URL", "sqlite://env.db"),
            ],
        );
        let config = Config::from_sources(&options, &env(&[])).unwrap();
        assert_eq!(config.bind, "127.0.0.1:3");
        assert_eq!(config.database_url, "sqlite://env.db");
        assert_eq!(config.status_log.path, PathBuf::from("f.csv"));
        assert_eq!(config.status_log.max_bytes, 2 * 1024 * 1024);
        assert_eq!(config.config_file.as_deref(), Some(file.path()));
    }

    #[test]
    fn registration_is_open_unless_closed_and_loopback_is_recognised() {
        use crate::services::auth::RegistrationMode;
        assert_eq!(Config::default().registration.mode, RegistrationMode::Open);
        assert_eq!(Config::default().registration.min_password_chars, 8);
        let config =
            from_file("registration:\n  mode: closed\n  min_password_chars: 12\n").unwrap();
        assert_eq!(config.registration.mode, RegistrationMode::Closed);
        assert_eq!(config.registration.min_password_chars, 12);
        assert_eq!(Config::default().registration.token_lifetime, None);
        let config = from_file("registration:\n  token_lifetime_days: 30\n").unwrap();
        assert_eq!(
            config.registration.token_lifetime,
            Some(Duration::from_secs(30 * 86_400))
        );
        let config = from_file("registration:\n  token_lifetime_days: 0\n").unwrap();
        assert_eq!(config.registration.token_lifetime, None, "0 is never");
        assert!(from_file("registration:\n  mode: ajar\n").is_err());
        for (bind, loopback) in [
            ("127.0.0.1:5000", true),
            ("127.0.0.2:5000", true),
            ("[::1]:5000", true),
            ("localhost:5000", true),
            ("0.0.0.0:5000", false),
            ("[::]:5000", false),
            ("10.1.2.3:5000", false),
        ] {
            let config = Config {
                bind: bind.into(),
                ..Config::default()
            };
            assert_eq!(config.listens_on_loopback(), loopback, "{bind}");
        }
    }

    #[test]
    fn durability_is_full_unless_relaxed_by_name() {
        let default = Config::from_sources(&CliOptions::default(), &env(&[])).unwrap();
        assert_eq!(default.ingest.durability, Durability::Full);
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

    #[test]
    fn sysmon_variables_beat_the_original_ones_and_empty_counts_as_unset() {
        let original = env(&[("APP_PORT", "8080"), ("DB_HOST", "db")]);
        let options = parse(&[], &[("SYSMON_BIND", "0.0.0.0:2")]);
        let config = Config::from_sources(&options, &original).unwrap();
        assert_eq!(config.bind, "0.0.0.0:2");
        assert_eq!(config.database_url, "postgres://postgres@db:5432/postgres");

        let options = parse(&[], &[("SYSMON_BIND", ""), ("DATABASE_URL", "")]);
        let config = Config::from_sources(&options, &original).unwrap();
        assert_eq!(config.bind, "127.0.0.1:8080");
        let config = Config::from_sources(&options, &env(&[("APP_PORT", "")])).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn file_values_in_their_units_and_empty_keys_keep_the_default() {
        let config = from_file(
            "shutdown_grace_seconds: 2.5\ningest:\n  enqueue_timeout_ms: 250\ndashboard:\n  session_days: 0.5\nretention:\n  raw_days: 7\n  minute_days: 0\n  check_interval_seconds: 60\n",
        )
        .unwrap();
        assert_eq!(config.shutdown_grace, Duration::from_millis(2500));
        assert_eq!(config.ingest.enqueue_timeout, Duration::from_millis(250));
        assert_eq!(
            config.dashboard.session_lifetime,
            Duration::from_secs(43_200)
        );
        assert_eq!(config.retention.raw, Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(config.retention.one_minute, None, "0 days is forever");
        assert_eq!(config.retention.check_interval, Duration::from_secs(60));

        let config = from_file("bind:\nretention:\n  raw_days:\ndashboard:\n").unwrap();
        assert_eq!(config.bind, DEFAULT_BIND);
        assert_eq!(config.retention, RetentionConfig::default());
    }

    #[test]
    fn a_value_out_of_range_names_its_key_and_file() {
        for (text, key) in [
            ("shutdown_grace_seconds: -1\n", "shutdown_grace_seconds"),
            ("dashboard:\n  session_days: 0\n", "dashboard.session_days"),
            ("retention:\n  raw_days: -2\n", "retention.raw_days"),
            (
                "retention:\n  check_interval_seconds: 0\n",
                "retention.check_interval_seconds",
            ),
        ] {
            let error = from_file(text).unwrap_err().to_string();
            assert!(
                error.contains("config file /") && error.contains(&format!("{key}: invalid value")),
                "{error}"
            );
        }
    }
}
