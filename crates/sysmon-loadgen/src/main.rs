//! `sysmon-loadgen`: simulates a fleet of clients against a running sysmon
//! server (or InfluxDB / VictoriaMetrics) and reports throughput, latency,
//! errors and whether every acknowledged sample was stored.
//! See `sysmon-loadgen --help` and docs/loadgen.md.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use sysmon_loadgen::net::{raise_file_limit, FileLimit};
use sysmon_loadgen::options::Options;

fn main() -> ExitCode {
    let options = Options::parse();
    match run(options) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sysmon-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(options: Options) -> anyhow::Result<ExitCode> {
    let plan = options.plan()?;
    match raise_file_limit() {
        Ok(FileLimit::Raised { from, to }) => {
            eprintln!("open-file limit: raised from {from} to {to} (the hard limit)")
        }
        Ok(FileLimit::AlreadyAtHard(_)) => {}
        Err(e) => eprintln!("open-file limit: {e}; keeping the current one"),
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        let needed = plan.clients as u64 + 64;
        if soft < needed {
            eprintln!(
                "warning: {} clients need about {needed} open files, but the limit is {soft}; \
                 raise it (ulimit -n) or expect connection errors",
                plan.clients
            );
        }
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let report = runtime.block_on(sysmon_loadgen::run::run(plan))?;
    println!("{}", report.human());
    println!("{}", report.json_line());
    Ok(match report.check_passed() {
        Some(false) => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}
