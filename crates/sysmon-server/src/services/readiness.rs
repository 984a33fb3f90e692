//! Whether this server should get traffic: what a load balancer's health
//! check asks (`GET /readyz`, docs/scaling.md). Ready means not shutting
//! down, the database answering, and the ingest writers running. On
//! SIGTERM the server turns not ready first and keeps serving for
//! `shutdown_drain_seconds`, so the balancer moves new requests elsewhere
//! before this one stops accepting: a rolling restart loses none.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::ingest::Ingest;
use crate::store::Store;

/// How long the database may take to answer a readiness check.
const DATABASE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Readiness {
    store: Arc<dyn Store>,
    ingest: Ingest,
    draining: AtomicBool,
}

/// A readiness check's answer: each part, and what is wrong if anything.
#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    pub draining: bool,
    pub database: bool,
    pub writers: bool,
    /// Why not ready, for people reading the balancer's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Readiness {
    pub fn new(store: Arc<dyn Store>, ingest: Ingest) -> Self {
        Self {
            store,
            ingest,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on the server answers not ready (shutdown has begun).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub async fn check(&self) -> ReadinessReport {
        let draining = self.draining.load(Ordering::SeqCst);
        let writers = self.ingest.is_running();
        // A read every server does anyway (the revocation epoch): cheap,
        // and it proves the pool can reach the database.
        let database =
            match tokio::time::timeout(DATABASE_CHECK_TIMEOUT, self.store.auth_epoch()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err(format!(
                    "no answer within {} s",
                    DATABASE_CHECK_TIMEOUT.as_secs()
                )),
            };
        let reason = if draining {
            Some("shutting down".to_owned())
        } else if let Err(why) = &database {
            Some(format!("database: {why}"))
        } else if !writers {
            Some("the ingest writers have stopped".to_owned())
        } else {
            None
        };
        ReadinessReport {
            ready: reason.is_none(),
            draining,
            database: database.is_ok(),
            writers,
            reason,
        }
    }
}
