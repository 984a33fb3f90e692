//! The retention job: drops each tier's rows once they are older than that
//! tier is kept, so the store stops growing while long ranges stay
//! answerable from the coarser tiers. It also deletes removed clients'
//! samples, forgets expired dashboard
//! sessions, and readies the store for the coming days (on PostgreSQL,
//! creates their partitions of the samples tables ahead of the samples).

use std::sync::Arc;

use sysmon_core::UnixTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::leadership::Leadership;
use super::query::RetentionConfig;
use crate::error::Result;
use crate::store::{Store, Tier};

/// Prunes every tier once; returns the rows deleted per tier.
pub async fn prune_once(
    store: &dyn Store,
    retention: &RetentionConfig,
    now: UnixTime,
) -> Result<Vec<(Tier, u64)>> {
    let mut deleted = Vec::new();
    for tier in Tier::ALL {
        if let Some(horizon) = retention.horizon_us(tier, now.micros()) {
            deleted.push((tier, store.prune(tier, horizon).await?));
        }
    }
    Ok(deleted)
}

/// Deletes what removed clients left behind; failures are logged and
/// retried at the next round.
pub async fn purge_removed_clients(store: &dyn Store) {
    match store.purge_removed_clients().await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "deleted the rows of removed clients"),
        Err(error) => {
            tracing::warn!(%error, "cannot delete the rows of removed clients; retrying later")
        }
    }
}

/// Readies the store for the coming days and runs [`prune_once`], at start
/// and then every `check_interval`, until `stop`. Failures are logged and
/// retried at the next round.
pub fn spawn(
    store: Arc<dyn Store>,
    retention: RetentionConfig,
    leadership: Arc<Leadership>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            // Every server: each keeps its own list of the partitions.
            if let Err(error) = store.prepare_ahead(UnixTime::now().micros()).await {
                // Ingest creates what is missing itself; this only saves it the wait.
                tracing::warn!(%error, "cannot prepare the store for the coming days");
            }
            if !leadership.is_leader() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(retention.check_interval) => continue,
                }
            }
            if let Err(error) = store
                .delete_expired_sessions(UnixTime::now().micros())
                .await
            {
                tracing::warn!(%error, "cannot delete expired dashboard sessions");
            }
            purge_removed_clients(store.as_ref()).await;
            match prune_once(store.as_ref(), &retention, UnixTime::now()).await {
                Ok(deleted) => {
                    for (tier, rows) in deleted.into_iter().filter(|(_, rows)| *rows > 0) {
                        tracing::info!(
                            tier = tier.label(),
                            rows,
                            kept_days = retention
                                .keep(tier)
                                .map_or(0.0, |keep| keep.as_secs_f64() / 86_400.0),
                            "retention removed expired rows"
                        );
                    }
                }
                Err(error) => tracing::warn!(%error, "retention run failed; retrying later"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(retention.check_interval) => {}
            }
        }
    })
}
