//! Command-line options, and the checked plan derived from them.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use sysmon_core::v1::MAX_BATCH_SAMPLES;

use crate::{Error, Result};

const EXAMPLES: &str = "\
Examples:
  # 64 clients pushing form samples as fast as they are acknowledged, for 10 s
  sysmon-loadgen --url http://127.0.0.1:5000 --mode http-form --clients 64 --duration 10

  # 64 WebSocket clients (original /echo protocol)
  sysmon-loadgen --mode ws --clients 64 --duration 10

  # v1 batches of 1000 samples from 64 clients
  sysmon-loadgen --mode v1-batch --batch-size 1000 --clients 64 --duration 10

  # 10,000 WebSocket clients at 1 sample/s each, spread over 8 source addresses;
  # the users file keeps the tokens so the next run skips registration
  sysmon-loadgen --mode ws --clients 10000 --rate 1 --duration 60 \\
      --source-ips 8 --users-file /tmp/lg-users.json

  # exactly 100,000 samples over HTTP JSON, then check every one was stored
  sysmon-loadgen --mode http-json --clients 16 --count 100000

  # 30 days of history for one host, one sample per second with every metric,
  # ending at 2025-11-25 00:00 UTC (2,592,000 samples in batches of 10,000)
  sysmon-loadgen --mode v1-batch --clients 1 --batch-size 10000 --count 2592000 \
      --start-time 1761436800 --time-step-us 1000000 --no-check

  # the same line-protocol load against InfluxDB 1.x or VictoriaMetrics
  sysmon-loadgen --url http://127.0.0.1:8428 --mode influx --clients 64 --batch-size 1000

The last line on stdout is `RESULT {json}` for scripts. The exit status is 0
when every acknowledged sample was found stored, 2 when some are missing or
could not be checked, 1 when the run could not be set up.
See docs/loadgen.md for every option and measured figures.";

/// How samples travel to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// `POST /client/USER`, form body, one sample per request, expects 202.
    HttpForm,
    /// `POST /client/USER`, JSON body, one sample per request, expects 202.
    HttpJson,
    /// WebSocket `/echo`: HELLO once, then CLIENT_DATA, awaiting each DATA_RETURN.
    Ws,
    /// `POST /api/v1/samples`, a JSON array of --batch-size samples, expects 200.
    V1Batch,
    /// InfluxDB line protocol, `POST /write?db=DB`, --batch-size lines; no registration or check.
    Influx,
    /// Prometheus remote write (snappy protobuf) to --remote-write-path: a
    /// request is one scrape of --batch-size hosts, node_exporter's series
    /// of each (25 series per host: --batch-size 40 sends 1,000 series);
    /// no registration or check.
    RemoteWrite,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::HttpForm => "http-form",
            Mode::HttpJson => "http-json",
            Mode::Ws => "ws",
            Mode::V1Batch => "v1-batch",
            Mode::Influx => "influx",
            Mode::RemoteWrite => "remote-write",
        }
    }

    /// Whether a request carries a batch of samples rather than one.
    pub fn batches(self) -> bool {
        matches!(self, Mode::V1Batch | Mode::Influx | Mode::RemoteWrite)
    }

    /// Whether clients are sysmon users (registered, checked at the end).
    pub fn is_sysmon(self) -> bool {
        !matches!(self, Mode::Influx | Mode::RemoteWrite)
    }
}

/// Which API the end check reads stored samples back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckApi {
    /// `v1` for --mode v1-batch, `report` otherwise.
    Auto,
    /// `GET /client/USER/time/report?start=S&end=E`.
    Report,
    /// `GET /api/v1/samples?from=S&to=E`.
    V1,
}

/// Simulates a fleet of clients pushing samples to a running sysmon server,
/// then checks that every acknowledged sample was stored.
#[derive(Debug, Clone, Parser)]
#[command(name = "sysmon-loadgen", version, after_help = EXAMPLES)]
pub struct Options {
    /// Base URL of the server (for --mode influx: of InfluxDB or VictoriaMetrics).
    #[arg(long, default_value = "http://127.0.0.1:5000", value_name = "URL")]
    pub url: String,

    /// Transport to use.
    #[arg(long, value_enum, default_value_t = Mode::HttpForm)]
    pub mode: Mode,

    /// Number of simulated clients, each its own user and connection.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub clients: usize,

    /// Run for this many seconds [default: 10 unless --count is given].
    #[arg(long, value_name = "SECONDS", conflicts_with = "count")]
    pub duration: Option<f64>,

    /// Send this many samples in total (spread evenly over the clients), then stop.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,

    /// Samples per second per client; without it each client sends its next
    /// request as soon as the previous one is acknowledged. With batches, a
    /// batch is sent every batch-size/rate seconds.
    #[arg(long, value_name = "R")]
    pub rate: Option<f64>,

    /// Samples per request in v1-batch and influx modes (v1: at most 10000).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub batch_size: usize,

    /// Username prefix; client i is PREFIX + i [default: random, e.g. lg3fa9c01b_].
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Password of the simulated users.
    #[arg(long, default_value = "loadgen-password", value_name = "PASSWORD")]
    pub password: String,

    /// Keep users and tokens in this JSON file: created on the first run, read
    /// on later runs to skip registering (and logging in) users it already holds.
    #[arg(long, value_name = "FILE")]
    pub users_file: Option<PathBuf>,

    /// Local addresses to connect from, comma-separated; client i uses the
    /// (i mod count)-th. Spreads connections over more source ports.
    #[arg(long, value_delimiter = ',', value_name = "IP,IP,...")]
    pub source_addresses: Vec<IpAddr>,

    /// Connect from 127.0.0.1 .. 127.0.0.N (a shorthand for --source-addresses).
    #[arg(long, value_name = "N", conflicts_with = "source_addresses")]
    pub source_ips: Option<u32>,

    /// Seconds to wait for a reply (or a connection) before counting a timeout.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub timeout: f64,

    /// Resend a sample answered 503 (server busy) after its Retry-After,
    /// up to 20 times, as long as the run lasts.
    #[arg(long)]
    pub retry_503: bool,

    /// Registrations (and token checks) in flight at once; each costs the
    /// server an argon2 hash.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub register_concurrency: usize,

    /// Connections being opened at once before the run starts.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub connect_concurrency: usize,

    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 5.0, value_name = "SECONDS")]
    pub progress: f64,

    /// Skip the end check (reading back every client's samples).
    #[arg(long)]
    pub no_check: bool,

    /// API the end check reads with.
    #[arg(long, value_enum, default_value_t = CheckApi::Auto)]
    pub check_api: CheckApi,

    /// Database name for --mode influx (`/write?db=DB`).
    #[arg(long, default_value = "sysmon", value_name = "DB")]
    pub influx_db: String,

    /// Path of --mode remote-write: sysmon's, or VictoriaMetrics'
    /// `/api/v1/write`.
    #[arg(long, default_value = "/api/v1/prom/write", value_name = "PATH")]
    pub remote_write_path: String,

    /// Bearer token of --mode influx and remote-write (sysmon's push
    /// token; InfluxDB and VictoriaMetrics need none).
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,

    /// Microseconds between a client's consecutive sample times.
    #[arg(long, default_value_t = 1000, value_name = "MICROS")]
    pub time_step_us: u64,

    /// Send history: each client's samples start at this unix time (whole
    /// seconds) instead of now, and carry every metric the server charts
    /// (a deterministic random walk). Only with --mode v1-batch and --count.
    #[arg(long, value_name = "UNIX", requires = "count")]
    pub start_time: Option<i64>,
}

/// How long the measured part lasts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Length {
    Duration(Duration),
    /// Total samples over all clients.
    Count(u64),
}

/// The checked options.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Without a trailing slash.
    pub url: String,
    pub mode: Mode,
    pub clients: usize,
    pub length: Length,
    /// Samples per second per client.
    pub rate: Option<f64>,
    /// Samples per request.
    pub batch_size: usize,
    pub prefix: Option<String>,
    pub password: String,
    pub users_file: Option<PathBuf>,
    pub source_addresses: Vec<IpAddr>,
    pub timeout: Duration,
    pub retry_503: bool,
    pub register_concurrency: usize,
    pub connect_concurrency: usize,
    pub progress: Option<Duration>,
    pub check: Option<CheckApi>,
    pub influx_db: String,
    pub remote_write_path: String,
    pub token: Option<String>,
    pub time_step_us: i64,
    /// `--start-time`, unix µs: every client's first sample time.
    pub start_micros: Option<i64>,
}

impl Plan {
    /// How many samples client `index` sends in a `--count` run (`None`: as
    /// many as the duration allows).
    pub fn quota(&self, index: usize) -> Option<u64> {
        match self.length {
            Length::Duration(_) => None,
            Length::Count(total) => {
                let clients = self.clients as u64;
                let index = index as u64;
                Some(total / clients + u64::from(index < total % clients))
            }
        }
    }

    /// Time between two requests of one client at `--rate`.
    pub fn request_period(&self) -> Option<Duration> {
        self.rate
            .map(|rate| Duration::from_secs_f64(self.batch_size as f64 / rate))
    }
}

impl Options {
    pub fn plan(&self) -> Result<Plan> {
        let invalid = |message: String| Err(Error::Options(message));
        let url = self.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return invalid(format!("--url must start with http:// (got {url})"));
        }
        if url.starts_with("https://") && self.mode == Mode::Ws {
            return invalid("--mode ws supports only plain ws:// (an http:// --url)".into());
        }
        if self.clients == 0 {
            return invalid("--clients must be at least 1".into());
        }
        let length = match (self.duration, self.count) {
            (Some(seconds), _) if !(seconds.is_finite() && seconds > 0.0 && seconds < 1e9) => {
                return invalid(format!(
                    "--duration must be a positive number of seconds (got {seconds})"
                ))
            }
            (Some(seconds), _) => Length::Duration(Duration::from_secs_f64(seconds)),
            (None, Some(0)) => return invalid("--count must be at least 1".into()),
            (None, Some(count)) => Length::Count(count),
            (None, None) => Length::Duration(Duration::from_secs(10)),
        };
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return invalid(format!("--rate must be a positive number (got {rate})"));
            }
        }
        let batch_size = if self.mode.batches() {
            if self.batch_size == 0 {
                return invalid("--batch-size must be at least 1".into());
            }
            if self.mode == Mode::V1Batch && self.batch_size > MAX_BATCH_SAMPLES {
                return invalid(format!(
                    "--batch-size must be at most {MAX_BATCH_SAMPLES} for v1-batch (the server's limit)"
                ));
            }
            self.batch_size
        } else {
            1
        };
        if let Some(prefix) = &self.prefix {
            check_prefix(prefix)?;
        }
        if self.password.is_empty() || self.password.len() > 1024 {
            return invalid("--password must be 1 to 1024 bytes".into());
        }
        let source_addresses = match self.source_ips {
            Some(count) => loopback_range(count)?,
            None => self.source_addresses.clone(),
        };
        if !(self.timeout.is_finite() && self.timeout > 0.0) {
            return invalid("--timeout must be a positive number of seconds".into());
        }
        if self.register_concurrency == 0 || self.connect_concurrency == 0 {
            return invalid(
                "--register-concurrency and --connect-concurrency must be at least 1".into(),
            );
        }
        let progress = match self.progress {
            0.0 => None,
            p if p.is_finite() && p > 0.0 => Some(Duration::from_secs_f64(p)),
            p => {
                return invalid(format!(
                    "--progress must be 0 or a positive number of seconds (got {p})"
                ))
            }
        };
        if self.time_step_us == 0 || self.time_step_us > 3_600_000_000 {
            return invalid("--time-step-us must be 1 to 3600000000".into());
        }
        let start_micros = match self.start_time {
            None => None,
            Some(_) if self.mode != Mode::V1Batch => {
                return invalid(
                    "--start-time needs --mode v1-batch, the only transport with every metric"
                        .into(),
                )
            }
            Some(seconds) if seconds < EARLIEST_START_SECONDS => {
                return invalid(format!(
                    "--start-time must be unix seconds from {EARLIEST_START_SECONDS} (2000-01-01) \
                     on, which the server accepts (got {seconds})"
                ))
            }
            Some(seconds) => Some(seconds.saturating_mul(crate::clock::MICROS_PER_SECOND)),
        };
        let check = match (self.no_check, self.mode, self.check_api) {
            (true, _, _) | (false, Mode::Influx | Mode::RemoteWrite, _) => None,
            (false, Mode::V1Batch, CheckApi::Auto) => Some(CheckApi::V1),
            (false, _, CheckApi::Auto) => Some(CheckApi::Report),
            (false, _, api) => Some(api),
        };
        let plan = Plan {
            url,
            mode: self.mode,
            clients: self.clients,
            length,
            rate: self.rate,
            batch_size,
            prefix: self.prefix.clone(),
            password: self.password.clone(),
            users_file: self.users_file.clone(),
            source_addresses,
            timeout: Duration::from_secs_f64(self.timeout),
            retry_503: self.retry_503,
            register_concurrency: self.register_concurrency,
            connect_concurrency: self.connect_concurrency,
            progress,
            check,
            influx_db: self.influx_db.clone(),
            remote_write_path: self.remote_write_path.clone(),
            token: self.token.clone(),
            time_step_us: self.time_step_us as i64,
            start_micros,
        };
        if let Some(quota) = plan.quota(0) {
            let span = quota.saturating_mul(self.time_step_us);
            // From now, or from the start time: either may not run more
            // than a day past the clock, or the server refuses the rest.
            let ahead = match start_micros {
                Some(start) => {
                    let last = start.saturating_add(
                        i64::try_from(span.saturating_sub(self.time_step_us)).unwrap_or(i64::MAX),
                    );
                    last.saturating_sub(crate::clock::now_micros())
                }
                None => i64::try_from(span).unwrap_or(i64::MAX),
            };
            if ahead > crate::clock::MAX_AHEAD_MICROS {
                return invalid(format!(
                    "{quota} samples per client at --time-step-us {} would run more than a day \
                     ahead of the clock; use a smaller step or more clients",
                    self.time_step_us
                ));
            }
        }
        Ok(plan)
    }
}

/// The earliest sample time the server accepts (2000-01-01, its
/// plausibility bound).
pub const EARLIEST_START_SECONDS: i64 = 946_684_800;

/// A username prefix must keep usernames valid on the server (start with a
/// letter, at most 64 characters) and safe in a URL path.
pub fn check_prefix(prefix: &str) -> Result<()> {
    let starts_with_letter = prefix
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic());
    let safe = prefix
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !starts_with_letter || !safe || prefix.len() > 50 {
        return Err(Error::Options(format!(
            "--prefix must start with a letter and use only letters, digits, `_`, `-`, `.` \
             (at most 50 characters); got {prefix:?}"
        )));
    }
    Ok(())
}

/// 127.0.0.1 .. 127.0.0.N (continuing into 127.0.1.0 and on past 255).
pub fn loopback_range(count: u32) -> Result<Vec<IpAddr>> {
    if count == 0 || count > 65_536 {
        return Err(Error::Options(format!(
            "--source-ips must be 1 to 65536 (got {count})"
        )));
    }
    let first = u32::from(Ipv4Addr::new(127, 0, 0, 1));
    Ok((0..count)
        .map(|offset| IpAddr::V4(Ipv4Addr::from(first + offset)))
        .collect())
}

/// A random username prefix: `lg` and 8 hex digits and `_`.
pub fn random_prefix() -> String {
    use rand::Rng;
    format!("lg{:08x}_", rand::thread_rng().gen::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan> {
        let mut argv = vec!["sysmon-loadgen"];
        argv.extend_from_slice(args);
        Options::try_parse_from(argv)
            .map_err(|e| Error::Options(e.to_string()))?
            .plan()
    }

    #[test]
    fn defaults() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.mode, Mode::HttpForm);
        assert_eq!(plan.clients, 64);
        assert_eq!(plan.length, Length::Duration(Duration::from_secs(10)));
        assert_eq!(plan.batch_size, 1);
        assert_eq!(plan.check, Some(CheckApi::Report));
        let plan = self::plan(&["--mode", "v1-batch", "--count", "5"]).unwrap();
        assert_eq!(plan.batch_size, 1000);
        assert_eq!(plan.check, Some(CheckApi::V1));
        let plan = self::plan(&["--mode", "influx"]).unwrap();
        assert_eq!(plan.check, None);
    }

    #[test]
    fn count_is_spread_over_clients() {
        let plan = plan(&["--clients", "3", "--count", "10"]).unwrap();
        let quotas: Vec<u64> = (0..3).filter_map(|i| plan.quota(i)).collect();
        assert_eq!(quotas, vec![4, 3, 3]);
    }

    #[test]
    fn source_addresses() {
        let plan = plan(&["--source-ips", "3"]).unwrap();
        assert_eq!(
            plan.source_addresses,
            vec![
                "127.0.0.1".parse::<IpAddr>().unwrap(),
                "127.0.0.2".parse().unwrap(),
                "127.0.0.3".parse().unwrap()
            ]
        );
        let plan = self::plan(&["--source-addresses", "127.0.0.5,::1"]).unwrap();
        assert_eq!(plan.source_addresses.len(), 2);
        assert!(self::plan(&["--source-ips", "2", "--source-addresses", "127.0.0.1"]).is_err());
        assert_eq!(
            loopback_range(300).unwrap()[299],
            "127.0.1.44".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn history_starts_at_the_given_time() {
        let plan = plan(&[]).unwrap();
        assert_eq!(plan.start_micros, None);
        // 30 days of one sample a second, ending now: allowed.
        let now_s = crate::clock::now_micros() / 1_000_000;
        let start = (now_s - 2_592_000).to_string();
        let plan = self::plan(&[
            "--mode",
            "v1-batch",
            "--clients",
            "1",
            "--count",
            "2592000",
            "--batch-size",
            "10000",
            "--time-step-us",
            "1000000",
            "--start-time",
            &start,
        ])
        .unwrap();
        assert_eq!(plan.start_micros, Some((now_s - 2_592_000) * 1_000_000));
        assert_eq!(plan.quota(0), Some(2_592_000));
        assert_eq!(plan.batch_size, 10_000);
    }

    #[test]
    fn refusals() {
        for args in [
            &["--clients", "0"][..],
            &["--duration", "0"],
            &["--duration", "5", "--count", "5"],
            &["--count", "0"],
            &["--rate", "-1"],
            &["--mode", "v1-batch", "--batch-size", "10001"],
            &["--prefix", "1abc"],
            &["--prefix", "a/b"],
            &["--url", "127.0.0.1:5000"],
            &["--count", "100000000", "--clients", "1"],
            // History: needs v1 batches and a count, and must not end in
            // the far future.
            &["--mode", "v1-batch", "--start-time", "1764000000"],
            &[
                "--mode",
                "http-form",
                "--count",
                "5",
                "--start-time",
                "1764000000",
            ],
            &[
                "--mode",
                "v1-batch",
                "--count",
                "5",
                "--start-time",
                "900000000",
            ],
            &[
                "--mode",
                "v1-batch",
                "--count",
                "5",
                "--start-time",
                "99999999999",
            ],
            &[
                "--mode",
                "v1-batch",
                "--count",
                "200000",
                "--clients",
                "1",
                "--time-step-us",
                "1000000",
                "--start-time",
                (crate::clock::now_micros() / 1_000_000)
                    .to_string()
                    .as_str(),
            ],
        ] {
            assert!(plan(args).is_err(), "{args:?} should be refused");
        }
        assert!(check_prefix("lg_ok-1.x").is_ok());
        assert!(check_prefix(&random_prefix()).is_ok());
    }
}
