//! The YAML file's shape, laid over the defaults: every key is optional
//! (a key left empty too), and each numeric key is converted to its unit
//! where it is declared, by serde, so that a bad value's message names the
//! key, the line and the column.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Unexpected, Visitor};
use serde::Deserialize;

use super::{set, Config, LogFormat};
use crate::services::auth::RegistrationMode;
use crate::store::Durability;

const DAY: f64 = 86_400.0;
const MIB: u64 = 1024 * 1024;

/// Unknown keys are an error, so a typo is caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    bind: Option<String>,
    database_url: Option<String>,
    read_replica_url: Option<String>,
    log_format: Option<LogFormat>,
    #[serde(default, deserialize_with = "seconds")]
    shutdown_grace_seconds: Option<Duration>,
    #[serde(default, deserialize_with = "seconds")]
    shutdown_drain_seconds: Option<Duration>,
    status_log: Option<FileStatusLog>,
    ingest: Option<FileIngest>,
    dashboard: Option<FileDashboard>,
    retention: Option<FileRetention>,
    limits: Option<FileLimits>,
    registration: Option<FileRegistration>,
    tls: Option<FileTls>,
    proxy: Option<FileProxy>,
    alerts: Option<FileAlerts>,
}

/// Alert rules and channels (docs/alerts.md), and how they run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAlerts {
    #[serde(default)]
    rules: Vec<crate::services::alerts::rules::RuleSpec>,
    #[serde(default)]
    channels: Vec<crate::services::alerts::channels::ChannelSpec>,
    #[serde(default, deserialize_with = "positive_seconds")]
    evaluation_interval_seconds: Option<Duration>,
    #[serde(default, deserialize_with = "positive_seconds")]
    retry_base_seconds: Option<Duration>,
    max_attempts: Option<std::num::NonZeroU32>,
    #[serde(default, deserialize_with = "positive_seconds")]
    send_timeout_seconds: Option<Duration>,
    public_url: Option<String>,
    #[serde(default, deserialize_with = "days_or_forever")]
    history_days: Option<Option<Duration>>,
}

/// Reverse proxies whose forwarding headers are believed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProxy {
    #[serde(default, deserialize_with = "networks")]
    trusted: Option<Vec<ipnet::IpNet>>,
}

/// Built-in TLS: both files, PEM.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRegistration {
    mode: Option<RegistrationMode>,
    min_password_chars: Option<NonZeroUsize>,
    #[serde(default, deserialize_with = "days_or_forever")]
    token_lifetime_days: Option<Option<Duration>>,
}

/// Connection limits and timeouts (`connections::ConnectionLimits`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLimits {
    max_connections: Option<NonZeroUsize>,
    max_connections_per_ip: Option<NonZeroUsize>,
    #[serde(default, deserialize_with = "positive_seconds")]
    header_timeout_seconds: Option<Duration>,
    #[serde(default, deserialize_with = "positive_seconds")]
    request_timeout_seconds: Option<Duration>,
    #[serde(default, deserialize_with = "positive_seconds")]
    send_timeout_seconds: Option<Duration>,
    login_failures_per_minute: Option<NonZeroU32>,
    #[serde(default, deserialize_with = "positive_seconds")]
    websocket_hello_timeout_seconds: Option<Duration>,
    #[serde(default, deserialize_with = "positive_seconds")]
    websocket_idle_timeout_seconds: Option<Duration>,
    max_downloads: Option<NonZeroUsize>,
    max_downloads_per_client: Option<NonZeroUsize>,
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
    queue_rows: Option<usize>,
    writers: Option<usize>,
    enqueue_timeout_ms: Option<u64>,
    durability: Option<Durability>,
    #[serde(default, deserialize_with = "positive_seconds")]
    fold_interval_seconds: Option<Duration>,
    fold_part_hosts: Option<NonZeroUsize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDashboard {
    initial_admin_password: Option<String>,
    #[serde(default, deserialize_with = "positive_days")]
    session_days: Option<Duration>,
}

/// Days each tier is kept; 0 keeps it forever (`Some(None)`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetention {
    #[serde(default, deserialize_with = "days_or_forever")]
    raw_days: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "days_or_forever")]
    minute_days: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "days_or_forever")]
    ten_minute_days: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "days_or_forever")]
    hour_days: Option<Option<Duration>>,
    #[serde(default, deserialize_with = "positive_seconds")]
    check_interval_seconds: Option<Duration>,
}

impl FileConfig {
    /// Lays the keys the file gives over `config`.
    pub(super) fn apply(self, config: &mut Config) {
        set(&mut config.bind, self.bind);
        set(&mut config.database_url, self.database_url);
        if let Some(url) = self.read_replica_url {
            config.read_replica_url = Some(url);
        }
        set(&mut config.log_format, self.log_format);
        set(&mut config.shutdown_grace, self.shutdown_grace_seconds);
        set(&mut config.shutdown_drain, self.shutdown_drain_seconds);
        if let Some(file) = self.status_log {
            let status_log = &mut config.status_log;
            set(&mut status_log.path, file.path);
            // Saturating: a size past 16 EiB means "never rotate" anyway.
            set(
                &mut status_log.max_bytes,
                file.max_size_mb.map(|mb| mb.saturating_mul(MIB)),
            );
            set(&mut status_log.keep, file.keep_files);
        }
        if let Some(file) = self.ingest {
            let ingest = &mut config.ingest;
            set(&mut ingest.max_batch, file.max_batch);
            set(&mut ingest.queue_capacity, file.queue_capacity);
            set(&mut ingest.queue_rows, file.queue_rows);
            set(&mut ingest.writers, file.writers);
            set(
                &mut ingest.enqueue_timeout,
                file.enqueue_timeout_ms.map(Duration::from_millis),
            );
            set(&mut ingest.durability, file.durability);
            set(
                &mut ingest.rollups.fold_interval,
                file.fold_interval_seconds,
            );
            set(
                &mut ingest.rollups.fold_part_hosts,
                file.fold_part_hosts.map(NonZeroUsize::get),
            );
        }
        if let Some(trusted) = self.proxy.and_then(|proxy| proxy.trusted) {
            config.trusted_proxies = crate::proxy::TrustedProxies::new(trusted);
        }
        if let Some(file) = self.tls {
            config.tls = Some(crate::tls::TlsFiles {
                cert: file.cert,
                key: file.key,
            });
        }
        if let Some(file) = self.registration {
            set(&mut config.registration.mode, file.mode);
            set(
                &mut config.registration.min_password_chars,
                file.min_password_chars.map(NonZeroUsize::get),
            );
            set(
                &mut config.registration.token_lifetime,
                file.token_lifetime_days,
            );
        }
        if let Some(file) = self.limits {
            let limits = &mut config.limits;
            set(
                &mut limits.max_connections,
                file.max_connections.map(|max| Some(max.get())),
            );
            set(
                &mut limits.max_connections_per_ip,
                file.max_connections_per_ip.map(NonZeroUsize::get),
            );
            set(&mut limits.header_timeout, file.header_timeout_seconds);
            set(&mut limits.request_timeout, file.request_timeout_seconds);
            set(&mut limits.send_timeout, file.send_timeout_seconds);
            set(
                &mut limits.websocket_hello_timeout,
                file.websocket_hello_timeout_seconds,
            );
            set(
                &mut limits.websocket_idle_timeout,
                file.websocket_idle_timeout_seconds,
            );
            set(
                &mut config.downloads.max_downloads,
                file.max_downloads.map(NonZeroUsize::get),
            );
            set(
                &mut config.downloads.max_downloads_per_client,
                file.max_downloads_per_client.map(NonZeroUsize::get),
            );
            set(
                &mut config.login.failures_per_minute,
                file.login_failures_per_minute,
            );
        }
        if let Some(file) = self.dashboard {
            let dashboard = &mut config.dashboard;
            set(
                &mut dashboard.initial_admin_password,
                file.initial_admin_password.map(Some),
            );
            set(&mut dashboard.session_lifetime, file.session_days);
        }
        if let Some(file) = self.alerts {
            let alerts = &mut config.alerts;
            alerts.rules = file.rules;
            alerts.channels = file.channels;
            set(
                &mut alerts.evaluation_interval,
                file.evaluation_interval_seconds,
            );
            set(&mut alerts.retry_base, file.retry_base_seconds);
            set(
                &mut alerts.max_attempts,
                file.max_attempts.map(std::num::NonZeroU32::get),
            );
            set(&mut alerts.send_timeout, file.send_timeout_seconds);
            set(&mut alerts.public_url, file.public_url.map(Some));
            set(&mut alerts.history, file.history_days);
        }
        if let Some(file) = self.retention {
            let retention = &mut config.retention;
            set(&mut retention.raw, file.raw_days);
            set(&mut retention.one_minute, file.minute_days);
            set(&mut retention.ten_minutes, file.ten_minute_days);
            set(&mut retention.one_hour, file.hour_days);
            set(&mut retention.check_interval, file.check_interval_seconds);
        }
    }
}

/// `shutdown_grace_seconds`: 0 or more.
fn seconds<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    number(deserializer, "a number of seconds, 0 or more", |seconds| {
        Duration::try_from_secs_f64(seconds).ok()
    })
}

/// `retention.check_interval_seconds`: more than 0.
fn positive_seconds<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Duration>, D::Error> {
    number(
        deserializer,
        "a number of seconds, more than 0",
        |seconds| {
            Duration::try_from_secs_f64(seconds)
                .ok()
                .filter(|duration| !duration.is_zero())
        },
    )
}

/// `dashboard.session_days`: more than 0.
fn positive_days<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    number(deserializer, "a number of days, more than 0", |days| {
        Duration::try_from_secs_f64(days * DAY)
            .ok()
            .filter(|duration| !duration.is_zero())
    })
}

/// `retention.*_days`: 0 or more, 0 being "forever".
fn days_or_forever<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Duration>>, D::Error> {
    number(
        deserializer,
        "a number of days, 0 (forever) or more",
        |days| {
            if days == 0.0 {
                return Some(None);
            }
            Duration::try_from_secs_f64(days * DAY).ok().map(Some)
        },
    )
}

/// A YAML number through `convert`, which returns `None` for a value out
/// of range (described by `expected`); an empty value is `None`, unset.
/// The check runs inside serde_norway's visit of the value, which is what
/// makes its error name the key and the position.
fn number<'de, D, T>(
    deserializer: D,
    expected: &'static str,
    convert: fn(f64) -> Option<T>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Number<T> {
        expected: &'static str,
        convert: fn(f64) -> Option<T>,
    }

    impl<T> Number<T> {
        fn check<E: de::Error>(self, value: f64, as_given: Unexpected) -> Result<Option<T>, E> {
            match (self.convert)(value) {
                Some(converted) => Ok(Some(converted)),
                None => Err(E::invalid_value(as_given, &self)),
            }
        }
    }

    impl<'de, T> Visitor<'de> for Number<T> {
        type Value = Option<T>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str(self.expected)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, value: D) -> Result<Self::Value, D::Error> {
            value.deserialize_f64(self)
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
            self.check(value, Unexpected::Float(value))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
            self.check(value as f64, Unexpected::Signed(value))
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
            self.check(value as f64, Unexpected::Unsigned(value))
        }
    }

    deserializer.deserialize_option(Number { expected, convert })
}

/// `proxy.trusted`: addresses (`10.0.0.7`) or networks (`10.0.0.0/8`).
fn networks<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Vec<ipnet::IpNet>>, D::Error> {
    let Some(texts) = Option::<Vec<String>>::deserialize(deserializer)? else {
        return Ok(None);
    };
    texts
        .iter()
        .map(|text| {
            let text = text.trim();
            text.parse::<ipnet::IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    de::Error::invalid_value(
                        Unexpected::Str(text),
                        &"an address (10.0.0.7) or a network (10.0.0.0/8)",
                    )
                })
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Some)
}
