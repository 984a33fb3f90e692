//! The one state struct every handler receives.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio_util::sync::CancellationToken;

use crate::services::auth::Auth;
use crate::services::ingest::Ingest;
use crate::services::metrics::Metrics;
use crate::services::query::RetentionConfig;
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
    /// How long each tier is kept: queries avoid tiers that lost a range.
    pub retention: RetentionConfig,
    /// How long a dashboard login lasts.
    pub session_lifetime: Duration,
}
