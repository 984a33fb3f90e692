//! Counters and latency histograms shared by every client task, and the
//! summary printed at the end.
//!
//! Counters are atomics; latencies go into one HDR histogram behind a mutex
//! (a per-client histogram would cost tens of KiB per client, too much for
//! ten thousand of them). Latency is per request, from sending it to its
//! acknowledgement, in microseconds; only acknowledged requests count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency the histogram holds exactly; longer ones are recorded
/// as this.
const HISTOGRAM_MAX_MICROS: u64 = 3_600_000_000;

/// Why a request was not acknowledged (503s are counted apart, as
/// "overloaded", because they are the server saying "send again").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureKind {
    /// An HTTP status other than the expected one (and other than 503).
    Status(u16),
    /// Could not open a connection.
    Connect,
    /// No reply within `--timeout`.
    Timeout,
    /// The connection broke or was closed while a reply was awaited.
    Closed,
    /// Another transport error.
    Request,
    /// A WebSocket `ERROR` reply other than an overload.
    WsError(String),
    /// A reply that does not fit the request (wrong type, wrong count).
    BadReply,
    /// The client ran out of sample times (see [`crate::clock`]).
    TimeBudget,
}

impl FailureKind {
    /// The key under which it is counted.
    pub fn label(&self) -> String {
        match self {
            FailureKind::Status(status) => format!("http_{status}"),
            FailureKind::Connect => "connect".into(),
            FailureKind::Timeout => "timeout".into(),
            FailureKind::Closed => "connection_closed".into(),
            FailureKind::Request => "request".into(),
            FailureKind::WsError(reason) => {
                let reason: String = reason.chars().take(80).collect();
                format!("ws_error: {reason}")
            }
            FailureKind::BadReply => "bad_reply".into(),
            FailureKind::TimeBudget => "time_budget".into(),
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts.
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_MICROS, 3)
        .unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}

struct Latencies {
    total: Histogram<u64>,
    /// Since the last progress line.
    recent: Histogram<u64>,
}

/// Everything the clients report while they run.
pub struct Stats {
    requests_acked: AtomicU64,
    samples_acked: AtomicU64,
    requests_failed: AtomicU64,
    samples_failed: AtomicU64,
    overloaded_requests: AtomicU64,
    overloaded_samples: AtomicU64,
    retries: AtomicU64,
    duplicates: AtomicU64,
    connected: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    latencies: Mutex<Latencies>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            requests_acked: AtomicU64::new(0),
            samples_acked: AtomicU64::new(0),
            requests_failed: AtomicU64::new(0),
            samples_failed: AtomicU64::new(0),
            overloaded_requests: AtomicU64::new(0),
            overloaded_samples: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            connected: AtomicU64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            latencies: Mutex::new(Latencies {
                total: new_histogram(),
                recent: new_histogram(),
            }),
        }
    }

    /// A request carrying `samples` samples was acknowledged after
    /// `latency`; `duplicates` of them the server already had.
    pub fn acked(&self, samples: u64, duplicates: u64, latency: Duration) {
        self.requests_acked.fetch_add(1, Ordering::Relaxed);
        self.samples_acked.fetch_add(samples, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        let micros = (latency.as_micros() as u64).clamp(1, HISTOGRAM_MAX_MICROS);
        if let Ok(mut latencies) = self.latencies.lock() {
            latencies.total.saturating_record(micros);
            latencies.recent.saturating_record(micros);
        }
    }

    pub fn failed(&self, samples: u64, kind: &FailureKind) {
        self.requests_failed.fetch_add(1, Ordering::Relaxed);
        self.samples_failed.fetch_add(samples, Ordering::Relaxed);
        if let Ok(mut failures) = self.failures.lock() {
            *failures.entry(kind.label()).or_default() += 1;
        }
    }

    /// A request answered 503 (or a WebSocket overload ERROR).
    pub fn overloaded(&self, samples: u64) {
        self.overloaded_requests.fetch_add(1, Ordering::Relaxed);
        self.overloaded_samples
            .fetch_add(samples, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts open WebSocket connections (or warmed-up HTTP clients).
    pub fn connection_opened(&self) {
        self.connected.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connected.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn connected(&self) -> u64 {
        self.connected.load(Ordering::Relaxed)
    }

    /// The counters now, and the latencies since the previous call.
    pub fn progress(&self) -> Progress {
        let recent = self
            .latencies
            .lock()
            .map(|mut latencies| {
                let summary = LatencySummary::from_histogram(&latencies.recent);
                latencies.recent.reset();
                summary
            })
            .unwrap_or_default();
        Progress {
            samples_acked: self.samples_acked.load(Ordering::Relaxed),
            requests_acked: self.requests_acked.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            overloaded_requests: self.overloaded_requests.load(Ordering::Relaxed),
            connected: self.connected(),
            recent,
        }
    }

    /// The final figures of the measured part of the run.
    pub fn totals(&self) -> Totals {
        let latency = self
            .latencies
            .lock()
            .map(|latencies| LatencySummary::from_histogram(&latencies.total))
            .unwrap_or_default();
        let failures = self
            .failures
            .lock()
            .map(|failures| failures.clone())
            .unwrap_or_default();
        Totals {
            requests_acked: self.requests_acked.load(Ordering::Relaxed),
            samples_acked: self.samples_acked.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            samples_failed: self.samples_failed.load(Ordering::Relaxed),
            overloaded_requests: self.overloaded_requests.load(Ordering::Relaxed),
            overloaded_samples: self.overloaded_samples.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            latency,
            failures,
        }
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl LatencySummary {
    /// From a histogram of microseconds; all zero when it is empty.
    pub fn from_histogram(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| round3(micros as f64 / 1000.0);
        LatencySummary {
            count: histogram.len(),
            mean: round3(histogram.mean() / 1000.0),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// Rounds to three decimals, for printing.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// What a progress line shows.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    pub samples_acked: u64,
    pub requests_acked: u64,
    pub requests_failed: u64,
    pub overloaded_requests: u64,
    pub connected: u64,
    pub recent: LatencySummary,
}

#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub requests_acked: u64,
    pub samples_acked: u64,
    pub requests_failed: u64,
    pub samples_failed: u64,
    pub overloaded_requests: u64,
    pub overloaded_samples: u64,
    pub retries: u64,
    pub duplicates: u64,
    pub latency: LatencySummary,
    pub failures: BTreeMap<String, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let stats = Stats::new();
        // 1 ms .. 1000 ms, one request each.
        for ms in 1..=1000u64 {
            stats.acked(1, 0, Duration::from_millis(ms));
        }
        let latency = stats.totals().latency;
        assert_eq!(latency.count, 1000);
        // HDR keeps three significant digits: within 0.1 %.
        let close =
            |value: f64, expected: f64| (value - expected).abs() <= expected * 0.001 + 0.001;
        assert!(close(latency.p50, 500.0), "{latency:?}");
        assert!(close(latency.p90, 900.0), "{latency:?}");
        assert!(close(latency.p99, 990.0), "{latency:?}");
        assert!(close(latency.max, 1000.0), "{latency:?}");
        assert!(close(latency.mean, 500.5), "{latency:?}");
    }

    #[test]
    fn one_slow_request_shows_in_max_and_p99_only() {
        let stats = Stats::new();
        for _ in 0..999 {
            stats.acked(1000, 0, Duration::from_micros(2000));
        }
        stats.acked(1000, 0, Duration::from_secs(3));
        let totals = stats.totals();
        assert_eq!(totals.samples_acked, 1_000_000);
        assert_eq!(totals.latency.p50, 2.0);
        assert_eq!(totals.latency.p99, 2.0);
        assert!((totals.latency.max - 3000.0).abs() < 3.0);
    }

    #[test]
    fn empty_and_recent_windows() {
        let stats = Stats::new();
        assert_eq!(stats.totals().latency, LatencySummary::default());
        stats.acked(1, 0, Duration::from_millis(5));
        assert_eq!(stats.progress().recent.count, 1);
        // The progress window starts again; the totals keep everything.
        assert_eq!(stats.progress().recent.count, 0);
        assert_eq!(stats.totals().latency.count, 1);
    }

    #[test]
    fn failures_by_kind() {
        let stats = Stats::new();
        stats.failed(1, &FailureKind::Status(500));
        stats.failed(1, &FailureKind::Status(500));
        stats.failed(1000, &FailureKind::Timeout);
        stats.overloaded(10);
        let totals = stats.totals();
        assert_eq!(totals.failures.get("http_500"), Some(&2));
        assert_eq!(totals.failures.get("timeout"), Some(&1));
        assert_eq!(totals.requests_failed, 3);
        assert_eq!(totals.samples_failed, 1002);
        assert_eq!(totals.overloaded_samples, 10);
    }
}
