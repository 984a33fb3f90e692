//! The `sysmon-agent` program: parse the settings, then collect and send
//! until SIGTERM (or print one sample, or only enroll). The binaries are
//! this with a hook at the start of each worker thread: none in
//! `sysmon-agent`, a crash on request in the tests' fault-injection one.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::agent::{self, ThreadStart};
use crate::config::{LogFormat, Mode};
use crate::error::EXIT_FAILURE;
use crate::wake::Wake;
use crate::{Config, Error};
use anyhow::Context;
use nix::sys::signal::{SigSet, Signal};
use sysmon_core::collect::SampleCollector;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The whole program; `at_thread_start` is called by each worker thread
/// first.
pub fn main(at_thread_start: ThreadStart) -> ExitCode {
    let config = match Config::load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sysmon-agent: {error}");
            return ExitCode::from(error.exit_status());
        }
    };
    init_logging(config.log_format);
    let outcome = match config.mode {
        Mode::Once => print_one_sample(),
        Mode::Enroll => enroll_only(&config),
        Mode::Run => run(&config, at_thread_start),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            // Failures outside the library (the clock, stdout) are runtime
            // ones: restartable.
            let status = error
                .downcast_ref::<Error>()
                .map_or(EXIT_FAILURE, Error::exit_status);
            ExitCode::from(status)
        }
    }
}

/// Logs go to standard error (standard output is for `--once`). `RUST_LOG`
/// takes `LEVEL` and `TARGET=LEVEL` directives, comma-separated; a simple
/// target filter rather than tracing's `EnvFilter`, whose regex engine
/// would add a megabyte to the binary.
fn init_logging(format: LogFormat) {
    let (filter, bad_filter) = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => match text.parse::<Targets>() {
            Ok(filter) => (filter, None),
            Err(error) => (default_filter(), Some((text, error))),
        },
        _ => (default_filter(), None),
    };
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
    if let Some((text, error)) = bad_filter {
        tracing::warn!(RUST_LOG = text, %error, "ignoring RUST_LOG; logging at info");
    }
}

fn default_filter() -> Targets {
    Targets::new().with_default(tracing::Level::INFO)
}

fn run(config: &Config, at_thread_start: ThreadStart) -> anyhow::Result<()> {
    // Signals are taken by one thread with sigwait, so every other thread
    // runs undisturbed; block them before any thread starts.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals
        .thread_block()
        .context("cannot block SIGTERM/SIGINT")?;
    let wake = Arc::new(Wake::new());
    {
        let wake = wake.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Ok(signal) = signals.wait() {
                    tracing::info!(%signal, "stopping");
                }
                wake.stop();
            })
            .context("cannot start the signal thread")?;
    }
    agent::run(config, wake, at_thread_start)?;
    Ok(())
}

fn enroll_only(config: &Config) -> anyhow::Result<()> {
    agent::enroll_and_store(config)?;
    tracing::info!(
        name = config.name.as_deref().unwrap_or_default(),
        token_file = %config.state_dir.join("token").display(),
        "enrolled; token stored"
    );
    Ok(())
}

fn print_one_sample() -> anyhow::Result<()> {
    let mut collector = SampleCollector::new();
    // Cpu load and rates are measured over this second.
    std::thread::sleep(Duration::from_secs(1));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let sample = collector.collect(now.as_secs() as f64);
    println!("{}", serde_json::to_string(&sample)?);
    Ok(())
}
