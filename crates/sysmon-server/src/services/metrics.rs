//! The server's own telemetry, exposed at `/metrics` in the Prometheus text
//! format. One registry per running server (no global state), so every
//! test server counts only its own traffic.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::error::{Error, Result};

/// Where acknowledged samples came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /client/<U>`
    Http,
    /// WebSocket `CLIENT_DATA`
    WebSocket,
    /// `POST /api/v1/samples`
    V1Http,
    /// WebSocket `CLIENT_BATCH`
    V1WebSocket,
    /// InfluxDB line protocol, `POST /write` and `/api/v2/write`
    Influx,
    /// Prometheus remote write, `POST /api/v1/prom/write`
    RemoteWrite,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::WebSocket => "websocket",
            Source::V1Http => "v1_http",
            Source::V1WebSocket => "v1_websocket",
            Source::Influx => "influx",
            Source::RemoteWrite => "remote_write",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SampleLabels {
    source: &'static str,
    /// "stored" (new) or "duplicate" (already stored; a replay).
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: String,
    status: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServedByLabels {
    served_by: &'static str,
}

pub struct Metrics {
    registry: Registry,
    samples: Family<SampleLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Family<RouteLabels, Histogram>,
    batch_rows: Histogram,
    commit_seconds: Histogram,
    commit_failures: Counter,
    fold_waits: Counter,
    fold_seconds: Histogram,
    pending_buckets: Gauge,
    queue_depth: Gauge,
    rejected: Family<ReasonLabels, Counter>,
    websockets: Gauge,
    connections_refused: Family<ReasonLabels, Counter>,
    alert_evaluation_seconds: Histogram,
    alert_deliveries: Family<ReasonLabels, Counter>,
    alert_feed_dropped: Counter,
    peer_feed_dropped: Counter,
    replica_reads: Family<ServedByLabels, Counter>,
    unmapped: Family<ReasonLabels, Counter>,
    /// The sum over `samples`' stored series, for the health page.
    stored_total: std::sync::atomic::AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("sysmon");
        let samples = Family::<SampleLabels, Counter>::default();
        registry.register(
            "samples_acknowledged",
            "Samples acknowledged to clients after commit, by source and outcome",
            samples.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        let request_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by route",
            request_seconds.clone(),
        );
        let batch_rows = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register(
            "ingest_batch_rows",
            "Rows written per ingest transaction",
            batch_rows.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 16));
        registry.register(
            "ingest_commit_duration_seconds",
            "Time to write and commit one ingest transaction",
            commit_seconds.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "ingest_commit_failures",
            "Ingest transactions that failed: their requests got 503, or were stored one by one when the database refused their data",
            commit_failures.clone(),
        );
        let fold_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "rollup_fold_duration_seconds",
            "Time to merge pending summaries into the rollup tables (on SQLite also moving the hot rows into samples); ingest commits wait while it runs on SQLite",
            fold_seconds.clone(),
        );
        let pending_buckets = Gauge::default();
        registry.register(
            "rollup_pending_buckets",
            "Rollup buckets summarised in memory, not yet folded into the tables",
            pending_buckets.clone(),
        );
        let fold_waits = Counter::default();
        registry.register(
            "ingest_fold_waits",
            "Ingest transactions that waited for a rollup fold first, because too many summaries were pending",
            fold_waits.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "ingest_queue_depth",
            "Requests waiting for an ingest writer",
            queue_depth.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ingest_rejected",
            "Requests refused with 503 before reaching the queue, by reason",
            rejected.clone(),
        );
        let websockets = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open WebSocket connections",
            websockets.clone(),
        );
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "connections_refused",
            "Connections closed unserved, by the limit they were over (max_connections, max_connections_per_ip)",
            connections_refused.clone(),
        );
        let alert_evaluation_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "alert_evaluation_duration_seconds",
            "Time to check every alert rule against every host, per tick",
            alert_evaluation_seconds.clone(),
        );
        let alert_deliveries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "alert_deliveries",
            "Attempts to send alert notifications, by outcome (sent, retrying, failed)",
            alert_deliveries.clone(),
        );
        let alert_feed_dropped = Counter::default();
        registry.register(
            "alert_feed_dropped",
            "Commits the alert evaluator missed because its feed was full (their samples were stored; only evaluation skipped them)",
            alert_feed_dropped.clone(),
        );
        let peer_feed_dropped = Counter::default();
        registry.register(
            "peer_feed_dropped",
            "Commits not announced to the other servers on the database because the announcer fell behind (stored all the same; their live views and alerts missed them)",
            peer_feed_dropped.clone(),
        );
        let replica_reads = Family::<ServedByLabels, Counter>::default();
        registry.register(
            "replica_reads",
            "Reads of samples and rollups (reports, exports, charts, pages) with a read replica configured, by what served them: `replica`, or `primary` when the replica had not replayed the latest commits within a second or did not answer",
            replica_reads.clone(),
        );
        let unmapped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "ingest_unmapped_points",
            "Points (line protocol) or series (remote write) received but not stored because sysmon has no metric for them, by protocol (label `reason`)",
            unmapped.clone(),
        );
        Metrics {
            unmapped,
            alert_evaluation_seconds,
            alert_deliveries,
            alert_feed_dropped,
            peer_feed_dropped,
            replica_reads,
            registry,
            samples,
            requests,
            request_seconds,
            batch_rows,
            commit_seconds,
            commit_failures,
            fold_waits,
            fold_seconds,
            pending_buckets,
            queue_depth,
            rejected,
            websockets,
            connections_refused,
            stored_total: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The few figures the dashboard's health page shows.
    pub fn ingest_snapshot(&self) -> IngestSnapshot {
        IngestSnapshot {
            samples_stored: self.stored_total.load(std::sync::atomic::Ordering::Relaxed),
            queue_depth: self.queue_depth.get().max(0) as u64,
            open_websockets: self.websockets.get().max(0) as u64,
        }
    }

    pub fn samples_acknowledged(&self, source: Source, stored: usize, duplicates: usize) {
        self.stored_total
            .fetch_add(stored as u64, std::sync::atomic::Ordering::Relaxed);
        for (outcome, count) in [("stored", stored), ("duplicate", duplicates)] {
            if count > 0 {
                self.samples
                    .get_or_create(&SampleLabels {
                        source: source.label(),
                        outcome,
                    })
                    .inc_by(count as u64);
            }
        }
    }

    pub fn request_answered(&self, route: &str, method: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status: status.to_string(),
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(seconds);
    }

    pub fn batch_committed(&self, rows: usize, seconds: f64) {
        self.batch_rows.observe(rows as f64);
        self.commit_seconds.observe(seconds);
    }

    pub fn fold_done(&self, seconds: f64) {
        self.fold_seconds.observe(seconds);
    }

    pub fn set_pending_buckets(&self, buckets: usize) {
        self.pending_buckets
            .set(i64::try_from(buckets).unwrap_or(i64::MAX));
    }

    pub fn commit_waited_for_fold(&self) {
        self.fold_waits.inc();
    }

    pub fn batch_failed(&self) {
        self.commit_failures.inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(depth as i64);
    }

    pub fn rejected(&self, error: &Error) {
        let reason = match error {
            Error::Overloaded => "overloaded",
            Error::ShuttingDown => "shutting_down",
            _ => return,
        };
        self.rejected.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn alert_evaluated(&self, seconds: f64) {
        self.alert_evaluation_seconds.observe(seconds);
    }

    pub fn alert_delivery(&self, outcome: &'static str) {
        self.alert_deliveries
            .get_or_create(&ReasonLabels { reason: outcome })
            .inc();
    }

    pub fn alert_feed_dropped(&self) {
        self.alert_feed_dropped.inc();
    }

    /// The counters a store with a read replica counts its reads in.
    pub fn replica_reads(&self) -> crate::store::ReplicaReads {
        let served_by = |served_by| {
            self.replica_reads
                .get_or_create(&ServedByLabels { served_by })
                .clone()
        };
        crate::store::ReplicaReads {
            replica: served_by("replica"),
            primary: served_by("primary"),
        }
    }

    pub fn peer_feed_dropped(&self) {
        self.peer_feed_dropped.inc();
    }

    /// Points or series of a foreign protocol that map to no metric.
    pub fn unmapped(&self, protocol: &'static str, count: u64) {
        if count > 0 {
            self.unmapped
                .get_or_create(&ReasonLabels { reason: protocol })
                .inc_by(count);
        }
    }

    pub fn connection_refused(&self, limit: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabels { reason: limit })
            .inc();
    }

    /// Counts an open WebSocket until the returned guard is dropped.
    pub fn websocket_opened(&self) -> WebSocketGuard {
        self.websockets.inc();
        WebSocketGuard(self.websockets.clone())
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn render(&self) -> Result<String> {
        let mut text = String::new();
        encode(&mut text, &self.registry)
            .map_err(|e| Error::Internal(format!("metrics encoding: {e}")))?;
        Ok(text)
    }
}

/// Ingest figures since the server started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestSnapshot {
    pub samples_stored: u64,
    pub queue_depth: u64,
    pub open_websockets: u64,
}

pub struct WebSocketGuard(Gauge);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_names() {
        let metrics = Metrics::new();
        metrics.samples_acknowledged(Source::Http, 3, 1);
        metrics.request_answered("/client/{username}", "POST", 202, 0.001);
        metrics.batch_committed(4, 0.002);
        let guard = metrics.websocket_opened();
        let text = metrics.render().unwrap();
        assert!(
            text.contains(r#"sysmon_samples_acknowledged_total{source="http",outcome="stored"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"sysmon_samples_acknowledged_total{source="http",outcome="duplicate"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"sysmon_http_requests_total{route="/client/{username}",method="POST",status="202"} 1"#), "{text}");
        assert!(text.contains("sysmon_ingest_batch_rows_count 1"), "{text}");
        assert!(text.contains("sysmon_websocket_connections 1"), "{text}");
        drop(guard);
        assert!(metrics
            .render()
            .unwrap()
            .contains("sysmon_websocket_connections 0"));
    }
}
