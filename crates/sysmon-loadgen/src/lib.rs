//! `sysmon-loadgen`: a load generator that simulates a fleet of machines
//! pushing samples to a *running* sysmon server, to measure its throughput
//! and latency and to prove that nothing it acknowledged was lost.
//!
//! Each simulated client registers as its own user, keeps its own
//! connection (HTTP keep-alive or one WebSocket), and sends samples with
//! times that never repeat, either as fast as the server acknowledges them
//! or at a fixed rate. Supported transports: the original form and JSON
//! pushes (`POST /client/<user>`), the original WebSocket (`/echo`,
//! `CLIENT_DATA`), v1 batches (`POST /api/v1/samples`), and InfluxDB line
//! protocol (`POST /write`, to compare with InfluxDB or VictoriaMetrics).
//!
//! With `--start-time` clients send history instead: samples from a given
//! time on, carrying every metric the server charts, to seed a database
//! for query benchmarks.
//!
//! After the run every client reads back what the server stored and counts
//! the acknowledged samples that are missing; that count must be zero.
//! `docs/loadgen.md` describes the options and the figures measured.
//!
//! The binary is a thin shell around [`run::run`]; the pieces here are
//! public so that they can be tested on their own.

pub mod check;
pub mod client;
pub mod clock;
pub mod net;
pub mod options;
pub mod payload;
pub mod run;
pub mod stats;
pub mod users;
pub mod walk;

use std::path::PathBuf;

/// What can stop a run before or after its measured part. Failures of
/// single requests during the run are not errors of this kind: they are
/// counted by kind in [`stats::Stats`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Options(String),
    #[error("cannot read the users file {path}: {source}")]
    UsersFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the users file {path} is not valid: {source}")]
    UsersFileParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write the users file {path}: {source}")]
    UsersFileWrite {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register or log in user {username}: {reason}")]
    Registration { username: String, reason: String },
    #[error("cannot resolve the server address {address}: {reason}")]
    Resolve { address: String, reason: String },
    #[error("cannot build an HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("cannot raise the open-file limit: {0}")]
    FileLimit(#[source] nix::Error),
    #[error(
        "the next sample time would be more than a day ahead of the clock, which the server \
         refuses; use a smaller --time-step-us or fewer samples per client"
    )]
    TimeBudget,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
