//! The one state struct every handler receives: the services, never the
//! store itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio_util::sync::CancellationToken;

use crate::connections::ConnectionLimits;
use crate::services::alerts::Alerts;
use crate::services::auth::Auth;
use crate::services::ingest::Ingest;
use crate::services::integrations::Integrations;
use crate::services::metrics::Metrics;
use crate::services::readiness::Readiness;
use crate::services::reads::Reads;
use crate::services::self_monitor::SelfMonitor;

/// A handle on [`Services`], cloned for every request by each extractor
/// and middleware: one reference count instead of one per service. Cloning
/// the services themselves cost 10% of the CPU of a single-sample HTTP
/// request (perf, 64 clients on SQLite), more than the database.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
    pub alerts: Arc<Alerts>,
    pub auth: Arc<Auth>,
    pub reads: Reads,
    pub ingest: Ingest,
    /// Foreign protocols in (InfluxDB line protocol).
    pub integrations: Integrations,
    pub monitor: Arc<SelfMonitor>,
    /// What `/readyz` answers.
    pub readiness: Arc<Readiness>,
    pub metrics: Arc<Metrics>,
    pub started_at: DateTime<Local>,
    /// Cancelled at shutdown; WebSocket sessions close when it is.
    pub shutdown: CancellationToken,
    /// How long a dashboard login lasts.
    pub session_lifetime: Duration,
    /// Timeouts a handler or a WebSocket session applies itself.
    pub limits: ConnectionLimits,
}
