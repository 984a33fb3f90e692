//! Settings: flags, then the environment, then a YAML file, then defaults
//! (highest precedence first), resolved once at startup into [`Config`].
//!
//! Every value is parsed by the same functions whichever layer it comes
//! from, so `--interval 10s`, `SYSMON_AGENT_INTERVAL=10` and `interval: 10`
//! mean the same thing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::error::{Error, Result};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/sysmon-agent";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
pub const DEFAULT_BATCH_SIZE: usize = 500;
pub const DEFAULT_OUTBOX_MAX_BYTES: u64 = 100 * 1024 * 1024;
pub const DEFAULT_OUTBOX_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(1);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The server takes at most this many samples in one batch.
pub const MAX_BATCH_SIZE: usize = sysmon_core::v1::MAX_BATCH_SAMPLES;
/// The smallest outbox: one sample (samples are charged in 4 KiB blocks).
pub const MIN_OUTBOX_BYTES: u64 = 4096;

const AFTER_HELP: &str = "\
Environment (overridden by flags, overriding the config file):
  SYSMON_AGENT_CONFIG            YAML file, as --config
  SYSMON_AGENT_SERVER            as --server
  SYSMON_AGENT_NAME              as --name
  SYSMON_AGENT_PASSWORD          as --password
  SYSMON_AGENT_TOKEN             as --token
  SYSMON_AGENT_STATE_DIR         as --state-dir
  SYSMON_AGENT_INTERVAL          as --interval
  SYSMON_AGENT_TRANSPORT         as --transport
  SYSMON_AGENT_BATCH_SIZE        as --batch-size
  SYSMON_AGENT_OUTBOX_MAX_SIZE   as --outbox-max-size
  SYSMON_AGENT_OUTBOX_MAX_AGE    as --outbox-max-age
  SYSMON_AGENT_RETRY_MIN         as --retry-min
  SYSMON_AGENT_RETRY_MAX         as --retry-max
  SYSMON_AGENT_TIMEOUT           as --timeout
  SYSMON_AGENT_LOG_FORMAT        as --log-format
  RUST_LOG                       log filter [default: info], e.g. sysmon_agent=debug

Durations: a number of seconds, or a number with ms, s, m, h or d (90s, 5m, 7d).
Sizes: a number of bytes, or with KiB, MiB, GiB (1024-based; K, M, G too) or KB, MB, GB.

Examples:
  Enroll once (registers NAME, or logs in), keeping the token in the state directory:
    sysmon-agent --server http://monitor.internal:5000 --name web1 --password secret --enroll
  Then run (as the systemd unit does), with the stored token:
    sysmon-agent --server http://monitor.internal:5000
  Enroll and run in one go, over WebSocket, every 30 seconds:
    sysmon-agent --server http://mon:5000 --name web1 --password pw --transport ws --interval 30
  Run with a token obtained elsewhere:
    sysmon-agent --server https://monitor.example.com --token Lq5d6H...
  Everything from a file:
    sysmon-agent --config /etc/sysmon-agent/agent.yaml
  Print one sample of this host and exit (no server needed):
    sysmon-agent --once

Exit status: 0 stopped by SIGTERM/SIGINT or done; 1 runtime failure; 2 bad
configuration, or enrollment refused (wrong password).
See docs/agent.md for the YAML keys and the outbox.";

/// sysmon-agent: measures this host every interval and delivers every
/// sample to a sysmon server, keeping them on disk until the server has
/// committed them.
#[derive(Debug, Default, Clone, Parser)]
#[command(name = "sysmon-agent", version, after_help = AFTER_HELP)]
pub struct CliOptions {
    /// YAML configuration file (unknown keys are an error).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's base URL, http://HOST:PORT or https://HOST[:PORT][/PREFIX].
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Client name to register or log in as (with --password); the token
    /// the server returns is stored and the password is not needed again.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Password for --name. Prefer SYSMON_AGENT_PASSWORD: arguments are
    /// visible to other users of this host.
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// A token (client_id) obtained elsewhere, instead of --name/--password;
    /// stored like an enrolled one.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Directory for the token and the outbox [default: /var/lib/sysmon-agent].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Time between samples, whole seconds, at least 1 [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// How samples travel: HTTP POST /api/v1/samples, or WebSocket /echo
    /// [default: http].
    #[arg(long, value_enum)]
    pub transport: Option<TransportKind>,
    /// Most samples per request [default: 500; at most 10000].
    #[arg(long, value_name = "N")]
    pub batch_size: Option<usize>,
    /// Outbox size limit; over it the oldest samples are dropped
    /// [default: 100MiB].
    #[arg(long, value_name = "SIZE")]
    pub outbox_max_size: Option<String>,
    /// Outbox age limit; older samples are dropped [default: 7d].
    #[arg(long, value_name = "DURATION")]
    pub outbox_max_age: Option<String>,
    /// First wait after a failed send [default: 1s].
    #[arg(long, value_name = "DURATION")]
    pub retry_min: Option<String>,
    /// Longest wait between retries (back-off doubles up to it, with
    /// jitter) [default: 60s].
    #[arg(long, value_name = "DURATION")]
    pub retry_max: Option<String>,
    /// Network timeout of one request [default: 30s].
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Log line format [default: text].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Enroll with --name/--password, store the token, and exit.
    #[arg(long, conflicts_with = "once")]
    pub enroll: bool,
    /// Print one sample of this host as JSON on standard output and exit.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    #[default]
    Http,
    Ws,
}

impl TransportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Http => "http",
            TransportKind::Ws => "ws",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// What this run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Collect and send until stopped.
    Run,
    /// Enroll, store the token, exit.
    Enroll,
    /// Print one sample, exit.
    Once,
}

/// The outbox's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_bytes: u64,
    pub max_age: Duration,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_OUTBOX_MAX_BYTES,
            max_age: DEFAULT_OUTBOX_MAX_AGE,
        }
    }
}

/// Back-off bounds after failed sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub min: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min: DEFAULT_RETRY_MIN,
            max: DEFAULT_RETRY_MAX,
        }
    }
}

/// Everything the agent needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub mode: Mode,
    /// Base URL without a trailing slash; `None` only with `--once`.
    pub server: Option<String>,
    pub name: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub state_dir: PathBuf,
    pub interval: Duration,
    pub transport: TransportKind,
    pub batch_size: usize,
    pub outbox: OutboxLimits,
    pub retry: RetryPolicy,
    pub timeout: Duration,
    pub log_format: LogFormat,
    pub config_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Run,
            server: None,
            name: None,
            password: None,
            token: None,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            interval: DEFAULT_INTERVAL,
            transport: TransportKind::Http,
            batch_size: DEFAULT_BATCH_SIZE,
            outbox: OutboxLimits::default(),
            retry: RetryPolicy::default(),
            timeout: DEFAULT_TIMEOUT,
            log_format: LogFormat::Text,
            config_file: None,
        }
    }
}

/// A number or a string in YAML (`interval: 10` and `interval: 10s`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Integer(u64),
    Float(f64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Integer(value) => value.to_string(),
            Scalar::Float(value) => value.to_string(),
            Scalar::Text(text) => text.clone(),
        }
    }
}

/// The YAML file's shape. Unknown keys are an error, so a typo is caught.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    server: Option<String>,
    name: Option<String>,
    password: Option<String>,
    token: Option<String>,
    state_dir: Option<PathBuf>,
    interval: Option<Scalar>,
    transport: Option<TransportKind>,
    batch_size: Option<usize>,
    timeout: Option<Scalar>,
    log_format: Option<LogFormat>,
    outbox: Option<FileOutbox>,
    retry: Option<FileRetry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileOutbox {
    max_size: Option<Scalar>,
    max_age: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRetry {
    min: Option<Scalar>,
    max: Option<Scalar>,
}

impl Config {
    /// Resolves the configuration from the flags, the process environment
    /// and the YAML file they name.
    pub fn load(options: &CliOptions) -> Result<Config> {
        // A missing file is a configuration error (exit status 2): a
        // restart would not make it appear.
        Self::resolve(options, &|name| std::env::var(name).ok(), &|path| {
            std::fs::read_to_string(path).map_err(|e| {
                Error::Config(format!("cannot read config file {}: {e}", path.display()))
            })
        })
    }

    /// [`Config::load`] with the environment and file reading passed in, so
    /// the layering can be tested without touching the process.
    pub fn resolve(
        options: &CliOptions,
        env: &dyn Fn(&str) -> Option<String>,
        read_file: &dyn Fn(&Path) -> Result<String>,
    ) -> Result<Config> {
        // An empty variable counts as unset.
        let env = |name: &str| env(name).filter(|value| !value.is_empty());
        let config_file = options
            .config
            .clone()
            .or_else(|| env("SYSMON_AGENT_CONFIG").map(PathBuf::from));
        let file = match &config_file {
            Some(path) => {
                let text = read_file(path)?;
                if text.trim().is_empty() {
                    FileConfig::default()
                } else {
                    serde_norway::from_str::<FileConfig>(&text).map_err(|e| {
                        Error::Config(format!("config file {}: {e}", path.display()))
                    })?
                }
            }
            None => FileConfig::default(),
        };
        let file_outbox = file.outbox.unwrap_or_default();
        let file_retry = file.retry.unwrap_or_default();

        // flag > environment > file, for a setting given as text.
        let text = |flag: &Option<String>, variable: &str, from_file: Option<&Scalar>| {
            flag.clone()
                .map(|value| (value, format!("--{}", flag_name(variable))))
                .or_else(|| env(variable).map(|value| (value, variable.to_owned())))
                .or_else(|| {
                    from_file.map(|value| {
                        (
                            value.text(),
                            format!("{} in the config file", yaml_name(variable)),
                        )
                    })
                })
        };

        let mut config = Config {
            config_file: config_file.clone(),
            ..Config::default()
        };
        config.mode = match (options.once, options.enroll) {
            (true, _) => Mode::Once,
            (false, true) => Mode::Enroll,
            _ => Mode::Run,
        };

        let plain = |flag: &Option<String>, variable: &str, from_file: Option<String>| {
            flag.clone().or_else(|| env(variable)).or(from_file)
        };
        config.server = plain(&options.server, "SYSMON_AGENT_SERVER", file.server)
            .map(|url| normalize_server_url(&url))
            .transpose()?;
        config.name = plain(&options.name, "SYSMON_AGENT_NAME", file.name);
        config.password = plain(&options.password, "SYSMON_AGENT_PASSWORD", file.password);
        config.token = plain(&options.token, "SYSMON_AGENT_TOKEN", file.token)
            .map(|token| token.trim().to_owned());
        if let Some(dir) = options
            .state_dir
            .clone()
            .or_else(|| env("SYSMON_AGENT_STATE_DIR").map(PathBuf::from))
            .or(file.state_dir)
        {
            config.state_dir = dir;
        }

        if let Some((value, source)) = text(
            &options.interval,
            "SYSMON_AGENT_INTERVAL",
            file.interval.as_ref(),
        ) {
            config.interval = parse_interval(&value).map_err(|e| named(&source, e))?;
        }
        if let Some(transport) = options.transport.or(match env("SYSMON_AGENT_TRANSPORT") {
            Some(value) => Some(parse_enum::<TransportKind>(
                &value,
                "SYSMON_AGENT_TRANSPORT",
            )?),
            None => None,
        }) {
            config.transport = transport;
        } else if let Some(transport) = file.transport {
            config.transport = transport;
        }
        let batch_size = match (options.batch_size, env("SYSMON_AGENT_BATCH_SIZE")) {
            (Some(size), _) => Some((size, "--batch-size".to_owned())),
            (None, Some(value)) => Some((
                value.trim().parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "SYSMON_AGENT_BATCH_SIZE: `{value}` is not a whole number"
                    ))
                })?,
                "SYSMON_AGENT_BATCH_SIZE".to_owned(),
            )),
            (None, None) => file
                .batch_size
                .map(|size| (size, "batch_size in the config file".to_owned())),
        };
        if let Some((size, source)) = batch_size {
            if !(1..=MAX_BATCH_SIZE).contains(&size) {
                return Err(Error::Config(format!(
                    "{source}: the batch size must be from 1 to {MAX_BATCH_SIZE}, got {size}"
                )));
            }
            config.batch_size = size;
        }
        if let Some((value, source)) = text(
            &options.outbox_max_size,
            "SYSMON_AGENT_OUTBOX_MAX_SIZE",
            file_outbox.max_size.as_ref(),
        ) {
            let bytes = parse_size(&value).map_err(|e| named(&source, e))?;
            if bytes < MIN_OUTBOX_BYTES {
                return Err(Error::Config(format!(
                    "{source}: the outbox must hold at least one sample ({MIN_OUTBOX_BYTES} bytes), got {bytes}"
                )));
            }
            config.outbox.max_bytes = bytes;
        }
        if let Some((value, source)) = text(
            &options.outbox_max_age,
            "SYSMON_AGENT_OUTBOX_MAX_AGE",
            file_outbox.max_age.as_ref(),
        ) {
            config.outbox.max_age = positive(
                parse_duration(&value).map_err(|e| named(&source, e))?,
                &source,
            )?;
        }
        if let Some((value, source)) = text(
            &options.retry_min,
            "SYSMON_AGENT_RETRY_MIN",
            file_retry.min.as_ref(),
        ) {
            config.retry.min = positive(
                parse_duration(&value).map_err(|e| named(&source, e))?,
                &source,
            )?;
        }
        if let Some((value, source)) = text(
            &options.retry_max,
            "SYSMON_AGENT_RETRY_MAX",
            file_retry.max.as_ref(),
        ) {
            config.retry.max = positive(
                parse_duration(&value).map_err(|e| named(&source, e))?,
                &source,
            )?;
        }
        if config.retry.min > config.retry.max {
            return Err(Error::Config(format!(
                "the retry minimum ({:?}) is above the retry maximum ({:?})",
                config.retry.min, config.retry.max
            )));
        }
        if let Some((value, source)) = text(
            &options.timeout,
            "SYSMON_AGENT_TIMEOUT",
            file.timeout.as_ref(),
        ) {
            config.timeout = positive(
                parse_duration(&value).map_err(|e| named(&source, e))?,
                &source,
            )?;
        }
        if let Some(format) = options.log_format.or(match env("SYSMON_AGENT_LOG_FORMAT") {
            Some(value) => Some(parse_enum::<LogFormat>(&value, "SYSMON_AGENT_LOG_FORMAT")?),
            None => None,
        }) {
            config.log_format = format;
        } else if let Some(format) = file.log_format {
            config.log_format = format;
        }

        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        if self.name.is_some() != self.password.is_some() {
            return Err(Error::Config(
                "--name and --password go together (the password may also come from SYSMON_AGENT_PASSWORD)".into(),
            ));
        }
        if self.name.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Config("--name must not be empty".into()));
        }
        if self.token.as_deref().is_some_and(str::is_empty) {
            return Err(Error::Config("--token must not be empty".into()));
        }
        match self.mode {
            Mode::Once => {}
            Mode::Enroll => {
                if self.server.is_none() || self.name.is_none() {
                    return Err(Error::Config(
                        "--enroll needs --server, --name and --password".into(),
                    ));
                }
            }
            Mode::Run => {
                if self.server.is_none() {
                    return Err(Error::Config(
                        "no server: give --server URL (or SYSMON_AGENT_SERVER, or `server:` in the config file)".into(),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn named(source: &str, error: String) -> Error {
    Error::Config(format!("{source}: {error}"))
}

fn positive(duration: Duration, source: &str) -> Result<Duration> {
    if duration.is_zero() {
        Err(Error::Config(format!("{source}: must be more than zero")))
    } else {
        Ok(duration)
    }
}

fn parse_enum<T: ValueEnum>(value: &str, variable: &str) -> Result<T> {
    T::from_str(value.trim(), true).map_err(|_| {
        let choices: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        Error::Config(format!(
            "{variable}: `{value}` is not one of {}",
            choices.join(", ")
        ))
    })
}

/// `SYSMON_AGENT_OUTBOX_MAX_SIZE` -> `outbox-max-size`.
fn flag_name(variable: &str) -> String {
    variable
        .trim_start_matches("SYSMON_AGENT_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// `SYSMON_AGENT_OUTBOX_MAX_SIZE` -> `outbox.max_size`.
fn yaml_name(variable: &str) -> String {
    let key = variable
        .trim_start_matches("SYSMON_AGENT_")
        .to_ascii_lowercase();
    for section in ["outbox_", "retry_"] {
        if let Some(rest) = key.strip_prefix(section) {
            return format!("{}.{rest}", section.trim_end_matches('_'));
        }
    }
    key
}

/// Checks the server URL and drops a trailing slash.
pub fn normalize_server_url(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            Error::Config(format!(
                "server URL `{url}` must start with http:// or https://"
            ))
        })?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(Error::Config(format!(
            "server URL `{url}` must be http(s)://HOST[:PORT][/PATH] without query or fragment"
        )));
    }
    Ok(url.to_owned())
}

/// A duration: seconds, or a number with `ms`, `s`, `m`, `h` or `d`.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 30, 30s, 5m, 2h or 7d"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m, h or d)"
            ))
        }
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| format!("`{text}` is out of range"))
}

/// The sampling interval: whole seconds, at least one.
pub fn parse_interval(text: &str) -> std::result::Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "the interval must be a whole number of seconds, at least 1, got `{}`",
            text.trim()
        ));
    }
    Ok(duration)
}

/// A size: bytes, or a number with KiB/MiB/GiB (or K/M/G, 1024-based) or
/// KB/MB/GB (1000-based).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 4096, 512KiB or 100MiB"))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use KiB, MiB, GiB, KB, MB or GB)"
            ))
        }
    };
    let bytes = (number * scale).round();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Config> {
        let mut argv = vec!["sysmon-agent"];
        argv.extend_from_slice(args);
        let options = CliOptions::try_parse_from(argv).map_err(|e| Error::Config(e.to_string()))?;
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let file = file.map(str::to_owned);
        Config::resolve(&options, &|name| env.get(name).cloned(), &|path| {
            file.clone().ok_or_else(|| {
                Error::io(
                    format!("cannot read {}", path.display()),
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })
        })
    }

    #[test]
    fn defaults() {
        let config = resolve_with(&["--server", "http://m:5000/"], &[], None).unwrap();
        assert_eq!(config.server.as_deref(), Some("http://m:5000"));
        assert_eq!(config.interval, Duration::from_secs(10));
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/sysmon-agent"));
        assert_eq!(config.transport, TransportKind::Http);
        assert_eq!(config.batch_size, 500);
        assert_eq!(config.outbox, OutboxLimits::default());
        assert_eq!(config.retry, RetryPolicy::default());
        assert_eq!(config.mode, Mode::Run);
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let file = "server: http://file:1\ninterval: 30\ntransport: ws\nbatch_size: 7\noutbox:\n  max_size: 1MiB\n  max_age: 2h\nretry:\n  max: 5s\n";
        let env = [
            ("SYSMON_AGENT_CONFIG", "/etc/agent.yaml"),
            ("SYSMON_AGENT_INTERVAL", "20s"),
            ("SYSMON_AGENT_SERVER", "http://env:2"),
            ("SYSMON_AGENT_OUTBOX_MAX_AGE", ""),
        ];
        let config = resolve_with(&["--interval", "5"], &env, Some(file)).unwrap();
        assert_eq!(config.interval, Duration::from_secs(5), "flag wins");
        assert_eq!(
            config.server.as_deref(),
            Some("http://env:2"),
            "env beats file"
        );
        assert_eq!(config.transport, TransportKind::Ws, "file beats default");
        assert_eq!(config.batch_size, 7);
        assert_eq!(config.outbox.max_bytes, 1024 * 1024);
        assert_eq!(
            config.outbox.max_age,
            Duration::from_secs(7200),
            "an empty variable counts as unset"
        );
        assert_eq!(config.retry.max, Duration::from_secs(5));
        assert_eq!(config.retry.min, DEFAULT_RETRY_MIN);
        assert_eq!(config.config_file, Some(PathBuf::from("/etc/agent.yaml")));

        let config = resolve_with(&[], &env, Some(file)).unwrap();
        assert_eq!(config.interval, Duration::from_secs(20), "env beats file");
        let config = resolve_with(
            &["--transport", "http", "--server", "http://flag:3"],
            &[("SYSMON_AGENT_TRANSPORT", "ws")],
            None,
        )
        .unwrap();
        assert_eq!(config.transport, TransportKind::Http);
        assert_eq!(config.server.as_deref(), Some("http://flag:3"));
    }

    #[test]
    fn unknown_yaml_keys_are_errors() {
        let error = resolve_with(
            &["--config", "a.yaml"],
            &[],
            Some("server: http://a\nintervall: 5\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("intervall") && error.contains("a.yaml"),
            "{error}"
        );
        let error = resolve_with(
            &["--config", "a.yaml"],
            &[],
            Some("server: http://a\noutbox:\n  size: 5\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("size"), "{error}");
        assert!(resolve_with(&["--config", "missing.yaml"], &[], None).is_err());
    }

    #[test]
    fn invalid_values_name_their_source() {
        let error = resolve_with(&["--server", "http://a", "--interval", "0.5"], &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("--interval") && error.contains("at least 1"),
            "{error}"
        );
        let error = resolve_with(
            &["--server", "http://a"],
            &[("SYSMON_AGENT_OUTBOX_MAX_SIZE", "lots")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("SYSMON_AGENT_OUTBOX_MAX_SIZE"), "{error}");
        let error = resolve_with(
            &["--config", "f"],
            &[],
            Some("server: http://a\nretry:\n  min: 9s\n  max: 2s\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("retry"), "{error}");
        let error = resolve_with(
            &["--config", "f"],
            &[],
            Some("server: http://a\nbatch_size: 20000\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("batch_size in the config file"), "{error}");
        assert!(resolve_with(&["--server", "ftp://a"], &[], None).is_err());
        assert!(resolve_with(&["--server", "http://a", "--name", "x"], &[], None).is_err());
        assert!(resolve_with(&[], &[], None)
            .unwrap_err()
            .to_string()
            .contains("no server"));
        assert!(resolve_with(&["--enroll", "--server", "http://a"], &[], None).is_err());
        assert_eq!(
            resolve_with(&["--once"], &[], None).unwrap().mode,
            Mode::Once
        );
        let error = resolve_with(
            &["--server", "http://a"],
            &[("SYSMON_AGENT_TRANSPORT", "carrier-pigeon")],
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("http, ws"), "{error}");
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_interval("1").is_ok());
        assert!(parse_interval("1500ms").is_err());
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16KiB"), Ok(16 * 1024));
        assert_eq!(parse_size("100 MiB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("1PB").is_err());
        assert_eq!(yaml_name("SYSMON_AGENT_OUTBOX_MAX_SIZE"), "outbox.max_size");
        assert_eq!(flag_name("SYSMON_AGENT_RETRY_MAX"), "retry-max");
    }
}
