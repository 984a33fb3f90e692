//! The one state struct every handler receives: the services, never the
//! store itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio_util::sync::CancellationToken;

use crate::connections::ConnectionLimits;
use crate::services::auth::Auth;
use crate::services::ingest::Ingest;
use crate::services::metrics::Metrics;
use crate::services::reads::Reads;
use crate::services::self_monitor::SelfMonitor;

#[derive(Clone)]
pub struct AppState {
    pub auth: Arc<Auth>,
    pub reads: Reads,
    pub ingest: Ingest,
    pub monitor: Arc<SelfMonitor>,
    pub metrics: Arc<Metrics>,
    pub started_at: DateTime<Local>,
    /// Cancelled at shutdown; WebSocket sessions close when it is.
    pub shutdown: CancellationToken,
    /// How long a dashboard login lasts.
    pub session_lifetime: Duration,
    /// Timeouts a handler or a WebSocket session applies itself.
    pub limits: ConnectionLimits,
}
