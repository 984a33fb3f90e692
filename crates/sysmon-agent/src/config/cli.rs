//! The command line (clap): every flag, the variable that stands for it
//! (clap's `env`), and `--help`.
//!
//! [`Settings`] is also the YAML file's shape, so each setting is declared
//! once: its flag, its variable, its key and its help text.

use std::path::PathBuf;

use clap::{Args, Parser};
use serde::Deserialize;

use super::layering::{section, text};

const AFTER_HELP: &str = "\
Each setting can also come from the variable shown beside it, or from the
YAML file (--config); flags win over variables, variables over the file.
A variable set to the empty string counts as unset.
  RUST_LOG    log filter [default: info], e.g. sysmon_agent=debug

Durations: a number of seconds, or a number with ms, s, m, h, d or w (90s, 5m,
7d, 2w), or several (1h30m); no months or years. Sizes: a number of bytes, or with KiB, MiB, GiB (1024-based;
K, M, G too) or KB, MB, GB.

Examples:
  Enroll once (registers NAME, or logs in), keeping the token in the state directory:
    sysmon-agent --server https://monitor.internal:5000 --name web1 --password secret --enroll
  Then run (as the systemd unit does), with the stored token:
    sysmon-agent --server https://monitor.internal:5000
  Enroll and run in one go, over WebSocket, every 30 seconds:
    sysmon-agent --server https://mon:5000 --name web1 --password pw --transport ws --interval 30
  A server whose certificate a private CA signed:
    sysmon-agent --server https://mon.lan:5000 --ca-file /etc/sysmon-agent/ca.pem
  Plain HTTP to another host, on a network you trust (refused without the flag):
    sysmon-agent --server http://10.0.0.5:5000 --allow-insecure
  Run with a token obtained elsewhere:
    sysmon-agent --server https://monitor.example.com --token Lq5d6H...
  Everything from a file:
    sysmon-agent --config /etc/sysmon-agent/agent.yaml
  Print one sample of this host and exit (no server needed):
    sysmon-agent --once

Exit status: 0 stopped by SIGTERM/SIGINT or done; 1 runtime failure (the
systemd unit restarts the agent); 2 bad configuration, or enrollment refused
(wrong password). See docs/agent.md for the YAML keys and the outbox.";

/// sysmon-agent: measures this host every interval and delivers every
/// sample to a sysmon server, keeping them on disk until the server has
/// committed them.
#[derive(Debug, Clone, Parser)]
#[command(name = "sysmon-agent", version, after_help = AFTER_HELP)]
pub struct CliOptions {
    /// YAML configuration file (unknown keys are an error).
    #[arg(long, env = "SYSMON_AGENT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub settings: Settings,
    /// Enroll with --name/--password, store the token, and exit.
    #[arg(long, conflicts_with = "once")]
    pub enroll: bool,
    /// Print one sample of this host as JSON on standard output and exit.
    #[arg(long)]
    pub once: bool,
    /// Allow an http:// server URL to another host: the password, the
    /// token and every sample then cross the network unencrypted. Without
    /// it, http:// is refused except to localhost. A flag only, so that
    /// the choice is seen where the agent is started.
    #[arg(long)]
    pub allow_insecure: bool,
}

/// Every setting a flag (or its variable) and the YAML file can both give.
/// Values stay text until the layers are merged, so that `--interval 10s`,
/// `SYSMON_AGENT_INTERVAL=10` and `interval: 10` go through one parser, and
/// an error can name the layer the text came from. A nested section's arg
/// id is its YAML path (`outbox.max_size`), the name errors use for it.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The server's base URL, http://HOST:PORT or https://HOST[:PORT][/PREFIX].
    #[arg(long, env = "SYSMON_AGENT_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// Client name to register or log in as (with --password); the token
    /// the server returns is stored and the password is not needed again.
    #[arg(long, env = "SYSMON_AGENT_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Password for --name. Prefer the variable: arguments are visible to
    /// other users of this host.
    #[arg(long, env = "SYSMON_AGENT_PASSWORD", value_name = "PASSWORD")]
    pub password: Option<String>,
    /// An enrolment token from the server's admin, for a server that takes
    /// new clients only with one (registration.mode: token); sent with
    /// --name/--password when registering.
    #[arg(long, env = "SYSMON_AGENT_ENROLL_TOKEN", value_name = "TOKEN")]
    pub enroll_token: Option<String>,
    /// A token (client_id) obtained elsewhere, instead of --name/--password;
    /// stored like an enrolled one.
    #[arg(long, env = "SYSMON_AGENT_TOKEN", value_name = "TOKEN")]
    pub token: Option<String>,
    /// More certificate authorities to trust for https:// (PEM), besides
    /// the system's: for a server whose certificate a private CA signed.
    #[arg(long, env = "SYSMON_AGENT_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Directory for the token and the outbox [default: /var/lib/sysmon-agent].
    #[arg(long, env = "SYSMON_AGENT_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Time between samples, whole seconds, at least 1 [default: 10s].
    #[arg(long, env = "SYSMON_AGENT_INTERVAL", value_name = "DURATION")]
    #[serde(default, deserialize_with = "text")]
    pub interval: Option<String>,
    /// How samples travel: `http` (POST /api/v1/samples) or `ws`
    /// (WebSocket /echo) [default: http].
    #[arg(long, env = "SYSMON_AGENT_TRANSPORT", value_name = "TRANSPORT")]
    #[serde(default, deserialize_with = "text")]
    pub transport: Option<String>,
    /// Most samples per request [default: 500; at most 10000].
    #[arg(long, env = "SYSMON_AGENT_BATCH_SIZE", value_name = "N")]
    #[serde(default, deserialize_with = "text")]
    pub batch_size: Option<String>,
    #[command(flatten)]
    #[serde(default, deserialize_with = "section")]
    pub outbox: OutboxSettings,
    #[command(flatten)]
    #[serde(default, deserialize_with = "section")]
    pub retry: RetrySettings,
    /// Network timeout of one request [default: 30s].
    #[arg(long, env = "SYSMON_AGENT_TIMEOUT", value_name = "DURATION")]
    #[serde(default, deserialize_with = "text")]
    pub timeout: Option<String>,
    /// Log line format: `text` or `json` [default: text].
    #[arg(long, env = "SYSMON_AGENT_LOG_FORMAT", value_name = "FORMAT")]
    #[serde(default, deserialize_with = "text")]
    pub log_format: Option<String>,
}

/// `outbox:` in the YAML file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxSettings {
    /// Outbox size limit; over it the oldest samples are dropped
    /// [default: 100MiB].
    #[arg(
        id = "outbox.max_size",
        long = "outbox-max-size",
        env = "SYSMON_AGENT_OUTBOX_MAX_SIZE",
        value_name = "SIZE"
    )]
    #[serde(default, deserialize_with = "text")]
    pub max_size: Option<String>,
    /// Outbox age limit; older samples are dropped [default: 7d].
    #[arg(
        id = "outbox.max_age",
        long = "outbox-max-age",
        env = "SYSMON_AGENT_OUTBOX_MAX_AGE",
        value_name = "DURATION"
    )]
    #[serde(default, deserialize_with = "text")]
    pub max_age: Option<String>,
}

/// `retry:` in the YAML file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// First wait after a failed send [default: 1s].
    #[arg(
        id = "retry.min",
        long = "retry-min",
        env = "SYSMON_AGENT_RETRY_MIN",
        value_name = "DURATION"
    )]
    #[serde(default, deserialize_with = "text")]
    pub min: Option<String>,
    /// Longest wait between retries (back-off doubles up to it, with
    /// jitter) [default: 60s].
    #[arg(
        id = "retry.max",
        long = "retry-max",
        env = "SYSMON_AGENT_RETRY_MAX",
        value_name = "DURATION"
    )]
    #[serde(default, deserialize_with = "text")]
    pub max: Option<String>,
}
