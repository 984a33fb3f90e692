//! The other servers on this database (docs/scaling.md). Each commit's new
//! samples are announced to them through the store; what they announce is
//! read back by key and handed to this server's live readers and alert
//! evaluator, as if committed here. Only PostgreSQL has peers; on SQLite
//! nothing runs.
//!
//! Both directions stay off the ingest path: the writers hand commits to
//! the announcer through a bounded channel (full: counted, dropped), the
//! announcer sends one `NOTIFY` statement per gathering of commits, and the
//! hearer gathers announcements for [`GATHER`] before one read, and reads
//! only while something here listens.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::ingest::{Committed, Ingest};
use crate::store::{SampleKey, Store};

/// How long announcements are gathered into one `NOTIFY` statement, and
/// heard ones into one read.
const GATHER: Duration = Duration::from_millis(50);

/// Commits waiting for the announcer.
const ANNOUNCE_BACKLOG: usize = 256;

/// Most keys read back at once (a bound on one read's size).
const MOST_KEYS_READ: usize = 20_000;

/// The channel the ingest writers announce through, when the store has
/// peers; its receiving end goes to [`start`].
pub fn announce_channel(
    store: &dyn Store,
) -> Option<(mpsc::Sender<Committed>, mpsc::Receiver<Committed>)> {
    (store.kind() == "postgresql").then(|| mpsc::channel(ANNOUNCE_BACKLOG))
}

/// Runs the announcer and the hearer until `stop`. What is heard is read
/// back only while a live socket here watches or `evaluating` says alert
/// rules want it.
pub fn start(
    store: Arc<dyn Store>,
    ingest: Ingest,
    evaluating: Arc<dyn Fn() -> bool + Send + Sync>,
    commits: mpsc::Receiver<Committed>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(announce(store.clone(), commits))];
    if let Some(heard) = store.hear_committed(stop) {
        tasks.push(tokio::spawn(hear(store, ingest, evaluating, heard)));
    }
    tasks
}

/// Announces commits until the writers are gone (their senders dropped).
async fn announce(store: Arc<dyn Store>, mut commits: mpsc::Receiver<Committed>) {
    while let Some(first) = commits.recv().await {
        let mut keys: Vec<SampleKey> = keys_of(&first);
        tokio::time::sleep(GATHER).await;
        while let Ok(more) = commits.try_recv() {
            keys.extend(keys_of(&more));
        }
        if let Err(error) = store.announce_committed(&keys).await {
            tracing::warn!(%error, samples = keys.len(), "cannot announce commits to the other servers");
        }
    }
}

fn keys_of(rows: &Committed) -> Vec<SampleKey> {
    rows.iter()
        .map(|row| (row.client.0, row.sample.time.micros()))
        .collect()
}

/// Reads what other servers announce and publishes it here.
async fn hear(
    store: Arc<dyn Store>,
    ingest: Ingest,
    evaluating: Arc<dyn Fn() -> bool + Send + Sync>,
    mut heard: mpsc::Receiver<Vec<SampleKey>>,
) {
    while let Some(first) = heard.recv().await {
        let mut keys = first;
        tokio::time::sleep(GATHER).await;
        while keys.len() < MOST_KEYS_READ {
            match heard.try_recv() {
                Ok(more) => keys.extend(more),
                Err(_) => break,
            }
        }
        if !ingest.watched() && !evaluating() {
            continue; // nobody here would see them
        }
        match store.samples_by_keys(keys).await {
            Ok(mut rows) if !rows.is_empty() => {
                rows.sort_by_key(|row| (row.client.0, row.sample.time.micros()));
                ingest.publish_from_peers(rows.into());
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "cannot read the samples another server committed")
            }
        }
    }
}
