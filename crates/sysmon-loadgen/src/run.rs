//! A whole run: users, connections, the measured part, the end check, and
//! the report.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::check::{self, CheckOutcome};
use crate::client::{self, ClientReport, Context};
use crate::options::{Length, Mode, Plan};
use crate::stats::{round3, LatencySummary, Stats};
use crate::{users, Result};

/// Everything printed at the end; serialized as the `RESULT` line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: &'static str,
    pub url: String,
    pub clients: usize,
    /// Samples per second per client; `null` at full speed.
    pub rate: Option<f64>,
    pub batch_size: usize,
    /// The planned length: `{"duration_s": 10}` or `{"count": 1000}`.
    pub planned: BTreeMap<&'static str, f64>,
    /// From the start to the last acknowledgement, seconds.
    pub elapsed_s: f64,
    /// Requests acknowledged.
    pub requests: u64,
    pub acked_samples: u64,
    pub samples_per_s: f64,
    pub requests_per_s: f64,
    /// With --rate: clients × rate, what a server keeping up would take.
    pub target_samples_per_s: Option<f64>,
    pub latency_ms: LatencySummary,
    pub errors: Errors,
    pub overloaded: Overloaded,
    /// Acknowledged samples the server reported as already stored (v1).
    pub duplicates: u64,
    /// Acknowledged samples not found stored; `null` without a check.
    pub missing: Option<u64>,
    pub check: Option<CheckOutcome>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    /// Requests that failed (other than 503).
    pub requests: u64,
    /// Samples they carried.
    pub samples: u64,
    pub by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Overloaded {
    /// Requests answered 503 (or a WebSocket "retry shortly" ERROR),
    /// retries included.
    pub requests: u64,
    pub samples: u64,
    pub retries: u64,
}

impl Report {
    /// Whether the run proved nothing was lost: checked, nothing missing,
    /// every client read back.
    pub fn check_passed(&self) -> Option<bool> {
        self.check
            .as_ref()
            .map(|check| check.missing == 0 && check.failed_clients == 0)
    }

    pub fn json_line(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        format!("RESULT {json}")
    }

    /// The human-readable summary.
    pub fn human(&self) -> String {
        let mut lines = Vec::new();
        let speed = match self.rate {
            Some(rate) => format!("{rate} samples/s per client"),
            None => "full speed".into(),
        };
        lines.push(format!(
            "sysmon-loadgen: {} against {}, {} clients, {speed}, {:.1} s",
            self.mode, self.url, self.clients, self.elapsed_s
        ));
        lines.push(format!(
            "acknowledged:  {} samples in {} requests",
            self.acked_samples, self.requests
        ));
        let target = match self.target_samples_per_s {
            Some(target) => format!(" (target {target:.1} samples/s)"),
            None => String::new(),
        };
        lines.push(format!(
            "throughput:    {:.1} samples/s, {:.1} requests/s{target}",
            self.samples_per_s, self.requests_per_s
        ));
        let l = &self.latency_ms;
        lines.push(format!(
            "latency (ms):  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}  mean {:.3}",
            l.p50, l.p90, l.p99, l.max, l.mean
        ));
        lines.push(format!(
            "errors:        {} requests ({} samples)",
            self.errors.requests, self.errors.samples
        ));
        for (kind, count) in &self.errors.by_kind {
            lines.push(format!("  {kind}: {count}"));
        }
        lines.push(format!(
            "overloaded:    {} requests answered 503 ({} samples), {} retries",
            self.overloaded.requests, self.overloaded.samples, self.overloaded.retries
        ));
        if self.duplicates > 0 {
            lines.push(format!("duplicates:    {}", self.duplicates));
        }
        match &self.check {
            Some(check) => {
                lines.push(format!(
                    "missing: {} (checked {} samples of {} clients via {}; {} stored but not acknowledged)",
                    check.missing, check.samples, check.clients, check.api, check.stored_unacknowledged
                ));
                if check.failed_clients > 0 {
                    lines.push(format!(
                        "check FAILED for {} clients: {}",
                        check.failed_clients,
                        check.first_failure.as_deref().unwrap_or("?")
                    ));
                }
            }
            None => lines.push("missing: not checked".into()),
        }
        lines.join("\n")
    }
}

/// Runs the plan from start to end.
pub async fn run(plan: Plan) -> Result<Report> {
    let plan = Arc::new(plan);
    let planned = match plan.length {
        Length::Duration(duration) => format!("for {:.1} s", duration.as_secs_f64()),
        Length::Count(count) => format!("{count} samples"),
    };
    eprintln!(
        "sysmon-loadgen: {} clients, {}, {planned}, against {}",
        plan.clients,
        plan.mode.name(),
        plan.url
    );

    let users = users::prepare(&plan).await?;
    let ws_server = match plan.mode {
        Mode::Ws => Some(crate::net::resolve(&plan.url).await?),
        _ => None,
    };

    let stats = Arc::new(Stats::new());
    let (start_sender, start) = watch::channel(None);
    let context = Arc::new(Context {
        plan: plan.clone(),
        stats: stats.clone(),
        ws_server,
        connect_gate: Arc::new(Semaphore::new(plan.connect_concurrency)),
        ready: AtomicUsize::new(0),
        ready_signal: Notify::new(),
        start,
    });
    let mut clients = JoinSet::new();
    for (index, user) in users.into_iter().enumerate() {
        clients.spawn(client::run_client(index, user, context.clone()));
    }

    // Connect everyone before the clock starts.
    let connecting = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.tick().await;
    while context.ready.load(Ordering::SeqCst) < plan.clients {
        tokio::select! {
            _ = context.ready_signal.notified() => {}
            _ = tick.tick() => eprintln!(
                "connecting: {}/{} clients ready, {} connections open",
                context.ready.load(Ordering::SeqCst), plan.clients, stats.connected()
            ),
        }
    }
    if plan.mode == Mode::Ws || connecting.elapsed() > Duration::from_secs(2) {
        eprintln!(
            "connected: {} connections open in {:.1} s",
            stats.connected(),
            connecting.elapsed().as_secs_f64()
        );
    }

    let start = Instant::now();
    start_sender.send_replace(Some(start));
    let progress = plan
        .progress
        .map(|every| tokio::spawn(report_progress(stats.clone(), every, plan.mode)));

    let mut reports: Vec<ClientReport> = Vec::with_capacity(plan.clients);
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(report) => reports.push(report),
            Err(e) => eprintln!("a client task failed: {e}"),
        }
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
    }

    let totals = stats.totals();
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let check = match plan.check {
        Some(api) => {
            eprintln!(
                "check: reading back the samples of {} clients",
                reports.len()
            );
            Some(check::check(&plan, api, reports).await)
        }
        None => None,
    };
    let planned = match plan.length {
        Length::Duration(duration) => BTreeMap::from([("duration_s", duration.as_secs_f64())]),
        Length::Count(count) => BTreeMap::from([("count", count as f64)]),
    };
    Ok(Report {
        mode: plan.mode.name(),
        url: plan.url.clone(),
        clients: plan.clients,
        rate: plan.rate,
        batch_size: plan.batch_size,
        planned,
        elapsed_s: round3(seconds),
        requests: totals.requests_acked,
        acked_samples: totals.samples_acked,
        samples_per_s: round3(totals.samples_acked as f64 / seconds),
        requests_per_s: round3(totals.requests_acked as f64 / seconds),
        target_samples_per_s: plan.rate.map(|rate| round3(rate * plan.clients as f64)),
        latency_ms: totals.latency,
        errors: Errors {
            requests: totals.requests_failed,
            samples: totals.samples_failed,
            by_kind: totals.failures,
        },
        overloaded: Overloaded {
            requests: totals.overloaded_requests,
            samples: totals.overloaded_samples,
            retries: totals.retries,
        },
        duplicates: totals.duplicates,
        missing: check.as_ref().map(|check| check.missing),
        check,
    })
}

/// Prints a progress line on stderr every `every`.
async fn report_progress(stats: Arc<Stats>, every: Duration, mode: Mode) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    stats.progress();
    let mut previous = 0u64;
    loop {
        tick.tick().await;
        let now = stats.progress();
        let seconds = start.elapsed().as_secs_f64();
        let connections = if mode == Mode::Ws {
            format!("  open {}", now.connected)
        } else {
            String::new()
        };
        eprintln!(
            "[{seconds:6.1}s] acked {} ({:.0}/s now, {:.0}/s avg)  p50 {:.2} p99 {:.2} max {:.2} ms  errors {}  503 {}{connections}",
            now.samples_acked,
            (now.samples_acked - previous) as f64 / every.as_secs_f64(),
            now.samples_acked as f64 / seconds,
            now.recent.p50,
            now.recent.p99,
            now.recent.max,
            now.requests_failed,
            now.overloaded_requests,
        );
        previous = now.samples_acked;
    }
}
