//! Settings: flags, then the environment, then a YAML file, then defaults
//! (highest precedence first), resolved once at startup into [`Config`].
//!
//! - [`cli`]: the flags and their variables (clap), and the YAML file's
//!   shape, declared once per setting;
//! - [`layering`]: the file read, the layers merged, and where each value
//!   came from;
//! - [`parse`]: text to values (durations, sizes, the URL), the same
//!   functions for every layer, and the checks across settings.

mod cli;
mod layering;
pub mod parse;

use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use clap::{FromArgMatches, ValueEnum};

pub use cli::{CliOptions, OutboxSettings, RetrySettings, Settings};
use layering::Layers;

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
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
    /// Plain http:// to a host other than this one (`--allow-insecure`).
    pub allow_insecure: bool,
    /// More certificate authorities for https:// (`--ca-file`, PEM).
    pub ca_file: Option<PathBuf>,
    /// Sent when registering, for a server in `registration.mode: token`.
    pub enroll_token: Option<String>,
}

impl Config {
    /// Resolves the configuration from the process's flags, its
    /// environment and the YAML file they name. Like clap's `parse`, exits
    /// on `--help`, `--version` and a malformed command line.
    pub fn load() -> Result<Config> {
        let sources =
            sysmon_core::settings::parse_layers::<CliOptions>(std::env::args_os(), &|name| {
                std::env::var_os(name)
            })
            .unwrap_or_else(|error| error.exit());
        Self::resolve(&sources, &|path| std::fs::read_to_string(path))
    }

    /// [`Config::load`] from the flags and the variables as parsed (from
    /// whichever environment), with the file reading passed in, so that
    /// tests give variables and a file without setting or writing any.
    pub fn resolve(
        sources: &sysmon_core::settings::Layers,
        read_file: &dyn Fn(&Path) -> std::io::Result<String>,
    ) -> Result<Config> {
        let options = |matches| {
            CliOptions::from_arg_matches(matches).map_err(|e| Error::Config(e.to_string()))
        };
        let (flags, variables) = (options(&sources.flags)?, options(&sources.variables)?);
        let config_file = flags.config.or(variables.config);
        let file = match &config_file {
            Some(path) => layering::read_file(path, read_file)?,
            None => Settings::default(),
        };
        let layers = Layers::new(flags.settings, variables.settings, file, sources);
        let s = &layers.settings;
        let config = Config {
            mode: match (flags.once, flags.enroll) {
                (true, _) => Mode::Once,
                (false, true) => Mode::Enroll,
                _ => Mode::Run,
            },
            server: layers.parse("server", &s.server, parse::server_url)?,
            name: s.name.clone(),
            password: s.password.clone(),
            token: s.token.as_deref().map(|token| token.trim().to_owned()),
            state_dir: s.state_dir.clone().unwrap_or(DEFAULT_STATE_DIR.into()),
            interval: layers.parse_or(
                "interval",
                &s.interval,
                parse::interval,
                DEFAULT_INTERVAL,
            )?,
            transport: layers.parse_or(
                "transport",
                &s.transport,
                parse::choice,
                TransportKind::Http,
            )?,
            batch_size: layers.parse_or(
                "batch_size",
                &s.batch_size,
                parse::batch_size,
                DEFAULT_BATCH_SIZE,
            )?,
            outbox: OutboxLimits {
                max_bytes: layers.parse_or(
                    "outbox.max_size",
                    &s.outbox.max_size,
                    parse::outbox_size,
                    DEFAULT_OUTBOX_MAX_BYTES,
                )?,
                max_age: layers.parse_or(
                    "outbox.max_age",
                    &s.outbox.max_age,
                    parse::positive_duration,
                    DEFAULT_OUTBOX_MAX_AGE,
                )?,
            },
            retry: RetryPolicy {
                min: layers.parse_or(
                    "retry.min",
                    &s.retry.min,
                    parse::positive_duration,
                    DEFAULT_RETRY_MIN,
                )?,
                max: layers.parse_or(
                    "retry.max",
                    &s.retry.max,
                    parse::positive_duration,
                    DEFAULT_RETRY_MAX,
                )?,
            },
            timeout: layers.parse_or(
                "timeout",
                &s.timeout,
                parse::positive_duration,
                DEFAULT_TIMEOUT,
            )?,
            log_format: layers.parse_or(
                "log_format",
                &s.log_format,
                parse::choice,
                LogFormat::Text,
            )?,
            config_file,
            allow_insecure: flags.allow_insecure,
            ca_file: s.ca_file.clone(),
            enroll_token: s
                .enroll_token
                .as_deref()
                .map(|token| token.trim().to_owned()),
        };
        parse::check(&config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves as the binary would with `args`, exactly the variables in
    /// `env` set, and `file` as the text of whichever file is named.
    fn resolve_with(args: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Config> {
        let argv = std::iter::once("sysmon-agent").chain(args.iter().copied());
        let env = |name: &str| {
            env.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| value.into())
        };
        let sources = sysmon_core::settings::parse_layers::<CliOptions>(argv, &env)
            .map_err(|e| Error::Config(e.to_string()))?;
        let file = file.map(str::to_owned);
        Config::resolve(&sources, &|_| {
            file.clone()
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
        })
    }

    #[test]
    fn server_urls_hold_no_credentials() {
        for url in [
            "http://127.0.0.1:5000@evil.example",
            "https://user:pw@mon.example/x",
        ] {
            let error = resolve_with(&["--server", url], &[], None)
                .unwrap_err()
                .to_string();
            assert!(error.contains("--name and --password"), "{url}: {error}");
        }
        // An `@` in the path is not a user name.
        let config = resolve_with(&["--server", "http://m:5000/a@b"], &[], None).unwrap();
        assert_eq!(config.server.as_deref(), Some("http://m:5000/a@b"));
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

    /// The variables are read through the environment given, not clap's
    /// `env`; each flag's help still names its variable, without its value.
    #[test]
    fn help_names_each_variable() {
        let help = sysmon_core::settings::command::<CliOptions>()
            .render_long_help()
            .to_string();
        for variable in [
            "SYSMON_AGENT_CONFIG",
            "SYSMON_AGENT_PASSWORD",
            "SYSMON_AGENT_INTERVAL",
            "SYSMON_AGENT_OUTBOX_MAX_SIZE",
            "SYSMON_AGENT_RETRY_MAX",
        ] {
            assert!(help.contains(&format!("[env: {variable}]")), "{help}");
        }
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

    /// An empty or null value is unset, as it was before the layers and
    /// as in the server's file: every key, and every section.
    #[test]
    fn empty_keys_keep_the_default() {
        let file = "server: http://a\nname:\npassword: ~\ntoken:\nstate_dir:\ninterval:\ntransport: ~\nbatch_size:\ntimeout: ~\nlog_format:\noutbox:\n  max_size:\n  max_age: ~\nretry:\n  min:\n  max: null\n";
        let config = resolve_with(&["--config", "a.yaml"], &[], Some(file)).unwrap();
        let defaults = resolve_with(&["--server", "http://a"], &[], None).unwrap();
        assert_eq!(
            Config {
                config_file: None,
                ..config
            },
            defaults
        );
        let sections = "server: http://a\noutbox:\nretry: ~\n";
        let config = resolve_with(&["--config", "a.yaml"], &[], Some(sections)).unwrap();
        assert_eq!(
            (config.outbox, config.retry),
            (defaults.outbox, defaults.retry)
        );
    }

    /// A value of the wrong type names the file and the key (and its line).
    #[test]
    fn a_value_of_the_wrong_type_names_the_key_and_the_file() {
        for (yaml, key) in [
            ("interval: [1, 2]\n", "interval"),
            ("transport: true\n", "transport"),
            ("retry:\n  min:\n    seconds: 5\n", "retry.min"),
            ("outbox:\n  max_age: [7d]\n", "outbox.max_age"),
            ("outbox: 5\n", "outbox"),
        ] {
            let yaml = format!("server: http://a\n{yaml}");
            let error = resolve_with(&["--config", "a.yaml"], &[], Some(&yaml))
                .unwrap_err()
                .to_string();
            assert!(
                error.starts_with(&format!("config file a.yaml: {key}: invalid type: ")),
                "{error}"
            );
            assert!(error.contains("line "), "{error}");
        }
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
        use parse::{duration, interval, size};
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(duration("5 parsecs").is_err());
        assert!(duration("-1").is_err());
        assert!(interval("1").is_ok());
        assert!(interval("1500ms").is_err());
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("16KiB"), Ok(16 * 1024));
        assert_eq!(size("100 MiB"), Ok(100 * 1024 * 1024));
        assert_eq!(size("2MB"), Ok(2_000_000));
        assert!(size("1PB").is_err());
    }

    /// Every form the docs list, and what humantime and bytesize add.
    #[test]
    fn documented_forms_still_parse() {
        use parse::{duration, size};
        assert_eq!(duration(" 30 "), Ok(Duration::from_secs(30)));
        assert_eq!(duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("5 m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("2 weeks"), Ok(Duration::from_secs(14 * 86_400)));
        // K, M and G stay 1024-based (bytesize alone reads them as 1000).
        assert_eq!(size("16K"), Ok(16 * 1024));
        assert_eq!(size("16k"), Ok(16 * 1024));
        assert_eq!(size("1.5M"), Ok(1024 * 1024 * 3 / 2));
        assert_eq!(size("2g"), Ok(2 << 30));
        assert_eq!(size("16 kib"), Ok(16 * 1024));
        assert_eq!(size("512b"), Ok(512));
        assert_eq!(size("3kb"), Ok(3000));
        assert!(size("-1").is_err());
        assert_eq!(
            size("lots"),
            Err("`lots` is not a size such as 4096, 512KiB or 100MiB".to_owned()),
            "as docs/agent.md quotes it"
        );
        assert!(size("1.2.3KiB").is_err());
        assert!(size("99999999999GiB").is_err(), "out of range");
    }

    /// humantime also reads months and years (`1M` is a month there, where
    /// a size reads `M` as MiB) and units below a millisecond; the docs list
    /// none of them, so they are refused, naming the setting and the units.
    #[test]
    fn durations_take_only_the_documented_units() {
        use parse::duration;
        for (text, unit) in [
            ("1M", "M"),
            ("2months", "months"),
            ("1y", "y"),
            ("1year", "year"),
            ("1h 2yrs", "yrs"),
            ("500us", "us"),
            ("10ns", "ns"),
            ("5 parsecs", "parsecs"),
        ] {
            assert_eq!(
                duration(text),
                Err(format!(
                    "`{text}`: unknown unit `{unit}` (use ms, s, m, h, d or w, or sec, min, hours, days, weeks)"
                ))
            );
        }
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(
            duration("1 week 2days"),
            Ok(Duration::from_secs(9 * 86_400))
        );
        assert_eq!(duration("3 hrs"), Ok(Duration::from_secs(3 * 3600)));
        assert_eq!(duration("1500 millis"), Ok(Duration::from_millis(1500)));

        let error = resolve_with(&["--server", "http://a", "--retry-max", "1M"], &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--retry-max: `1M`: unknown unit `M` (use ms, s, m, h, d or w"),
            "{error}"
        );
        let error = resolve_with(
            &["--config", "agent.yaml"],
            &[],
            Some("server: http://a\noutbox:\n  max_age: 1y\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("outbox.max_age in the config file: `1y`: unknown unit `y`"),
            "{error}"
        );
    }

    /// A bad value names the flag, the variable or the key it came from,
    /// for every setting that is parsed.
    #[test]
    fn every_setting_names_its_flag_variable_and_key() {
        let settings = [
            ("server", "--server", "SYSMON_AGENT_SERVER", "ftp://a"),
            ("interval", "--interval", "SYSMON_AGENT_INTERVAL", "soon"),
            (
                "transport",
                "--transport",
                "SYSMON_AGENT_TRANSPORT",
                "smoke",
            ),
            ("batch_size", "--batch-size", "SYSMON_AGENT_BATCH_SIZE", "0"),
            (
                "outbox.max_size",
                "--outbox-max-size",
                "SYSMON_AGENT_OUTBOX_MAX_SIZE",
                "1",
            ),
            (
                "outbox.max_age",
                "--outbox-max-age",
                "SYSMON_AGENT_OUTBOX_MAX_AGE",
                "0s",
            ),
            ("retry.min", "--retry-min", "SYSMON_AGENT_RETRY_MIN", "x"),
            ("retry.max", "--retry-max", "SYSMON_AGENT_RETRY_MAX", "x"),
            ("timeout", "--timeout", "SYSMON_AGENT_TIMEOUT", "0"),
            (
                "log_format",
                "--log-format",
                "SYSMON_AGENT_LOG_FORMAT",
                "xml",
            ),
        ];
        let server = ["--server", "http://a"];
        for (key, flag, variable, bad) in settings {
            let args: Vec<&str> = if key == "server" {
                vec![]
            } else {
                server.to_vec()
            };
            let error = |result: Result<Config>| result.unwrap_err().to_string();

            let mut with_flag = args.clone();
            with_flag.extend([flag, bad]);
            let message = error(resolve_with(&with_flag, &[], None));
            assert!(message.starts_with(&format!("{flag}: ")), "{message}");

            let message = error(resolve_with(&args, &[(variable, bad)], None));
            assert!(message.starts_with(&format!("{variable}: ")), "{message}");

            let yaml = match key.split_once('.') {
                Some((section, leaf)) => format!("{section}:\n  {leaf}: {bad}\n"),
                None => format!("{key}: {bad}\n"),
            };
            let mut with_file = args.clone();
            with_file.extend(["--config", "agent.yaml"]);
            let message = error(resolve_with(&with_file, &[], Some(&yaml)));
            assert!(
                message.starts_with(&format!("{key} in the config file: ")),
                "{message}"
            );
        }
    }
}
