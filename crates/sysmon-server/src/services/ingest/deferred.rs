//! Parts that complete samples not folded yet.
//!
//! A later part of a sample (the rest of a Prometheus scrape or a Telegraf
//! tick, a request or two later) completes the stored sample only once its
//! summary is in the rollup tables: before that, the summary waits in
//! memory or, after a crash, is read back whole from the row, so values
//! added to the row then would be counted twice. The store says which
//! parts it left for that reason; their requests wait here for a fold
//! (asked for at once) and are stored again, off the writer, which goes on
//! with other requests meanwhile. A request is answered when all its parts
//! are stored, or refused with 503 (its retry is a replay for what was
//! stored) when folds do not let them in within [`WAIT`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{acknowledge, answer, coalesce, feed_alerts, key_of, refusal, Committed, Job, Stored};
use crate::error::Error;
use crate::services::metrics::Metrics;
use crate::services::rollups::Rollups;
use crate::store::{ClientSample, Store};

/// How long a request waits for folds to let its parts in.
const WAIT: Duration = Duration::from_secs(10);

/// Deferred parts stored again at once, at most: they wake together after
/// a fold, and each takes connections the next fold needs (PostgreSQL's
/// writer pool keeps two for it).
pub(super) const AT_ONCE: usize = 2;

/// What storing the parts again needs.
pub(super) struct Completer {
    pub store: Arc<dyn Store>,
    pub rollups: Arc<Rollups>,
    pub metrics: Arc<Metrics>,
    pub alerts: Option<mpsc::Sender<Committed>>,
    /// See [`AT_ONCE`].
    pub at_once: Arc<tokio::sync::Semaphore>,
}

/// Stores the deferred parts of `jobs` after folds, then answers them.
pub(super) async fn complete_after_fold(completer: Completer, jobs: Vec<Job>, mut stored: Stored) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let parts = coalesce(
        jobs.iter()
            .flat_map(|job| job.rows.iter())
            .filter(|row| stored.deferred.contains(&key_of(row)))
            .cloned(),
    );
    while !stored.deferred.is_empty() {
        if !completer.rollups.fold_and_wait(deadline).await {
            break; // shutting down
        }
        let pending: Arc<[ClientSample]> = parts
            .iter()
            .filter(|row| stored.deferred.contains(&key_of(row)))
            .cloned()
            .collect();
        let Ok(Ok(_turn)) =
            tokio::time::timeout_at(deadline, completer.at_once.clone().acquire_owned()).await
        else {
            break; // out of time (or closed): refused for a retry below
        };
        let instance = completer.rollups.instance();
        match completer
            .store
            .insert_samples(pending.clone(), instance)
            .await
        {
            Ok(inserted) => {
                // New only if the sample was deleted meanwhile (its host
                // removed): then a sample like any other.
                completer.rollups.record(instance, &pending, &inserted);
                stored.keys.extend(inserted.keys.iter().copied());
                stored.keys.extend(inserted.completed.iter().map(key_of));
                if let Some(alerts) = &completer.alerts {
                    feed_alerts(alerts, &completer.metrics, inserted.completed.into());
                }
                stored.deferred = inserted.deferred.into_iter().collect();
            }
            Err(error) => {
                tracing::warn!(%error, "parts completing stored samples not stored");
                return answer(jobs, |_| Err(refusal(&error)));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    let left = &stored.deferred;
    if !left.is_empty() {
        tracing::warn!(
            parts = left.len(),
            "parts completing stored samples waited for folds in vain; refused for a retry"
        );
    }
    answer(jobs, |job| {
        match job.rows.iter().any(|row| left.contains(&key_of(row))) {
            true => Err(Error::Overloaded),
            false => Ok(acknowledge(&job.rows, &stored.keys)),
        }
    });
}
