//! The one state struct every handler receives.

use std::sync::Arc;

use chrono::{DateTime, Local};
use tokio_util::sync::CancellationToken;

use crate::services::auth::Auth;
use crate::services::ingest::Ingest;
use crate::services::metrics::Metrics;
use crate::services::self_monitor::SelfMonitor;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub auth: Arc<Auth>,
    pub ingest: Ingest,
    pub monitor: Arc<SelfMonitor>,
    pub metrics: Arc<Metrics>,
    pub started_at: DateTime<Local>,
    /// Cancelled at shutdown; WebSocket sessions close when it is.
    pub shutdown: CancellationToken,
}
