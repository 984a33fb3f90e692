//! The other servers on this database (docs/scaling.md). Each commit's new
//! samples, and the stored samples it completed, are announced to them
//! through the store; what they announce is read back by key, file systems
//! included, and handed to this server's live readers (new samples) and
//! alert evaluator (both), as if committed here. Only PostgreSQL has
//! peers; on SQLite nothing runs.
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
use crate::store::{Announcement, SampleKey, Store};

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
) -> Option<(mpsc::Sender<Announcement>, mpsc::Receiver<Announcement>)> {
    (store.kind() == "postgresql").then(|| mpsc::channel(ANNOUNCE_BACKLOG))
}

/// Runs the announcer and the hearer until `stop`. What is heard is read
/// back only while a live socket here watches or `evaluating` says this
/// server judges alert rules (completions: only for the rules).
pub fn start(
    store: Arc<dyn Store>,
    ingest: Ingest,
    evaluating: Arc<dyn Fn() -> bool + Send + Sync>,
    commits: mpsc::Receiver<Announcement>,
    stop: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let mut tasks = vec![tokio::spawn(announce(store.clone(), commits))];
    if let Some(heard) = store.hear_committed(stop) {
        tasks.push(tokio::spawn(hear(store, ingest, evaluating, heard)));
    }
    tasks
}

/// Announces commits until the writers are gone (their senders dropped).
async fn announce(store: Arc<dyn Store>, mut commits: mpsc::Receiver<Announcement>) {
    while let Some(mut announcement) = commits.recv().await {
        tokio::time::sleep(GATHER).await;
        while let Ok(more) = commits.try_recv() {
            announcement.extend(more);
        }
        if let Err(error) = store.announce_committed(&announcement).await {
            tracing::warn!(
                %error,
                samples = announcement.new.len() + announcement.completed.len(),
                "cannot announce commits to the other servers"
            );
        }
    }
}

/// Reads what other servers announce and publishes it here.
async fn hear(
    store: Arc<dyn Store>,
    ingest: Ingest,
    evaluating: Arc<dyn Fn() -> bool + Send + Sync>,
    mut heard: mpsc::Receiver<Announcement>,
) {
    while let Some(mut announcement) = heard.recv().await {
        tokio::time::sleep(GATHER).await;
        while announcement.new.len() + announcement.completed.len() < MOST_KEYS_READ {
            match heard.try_recv() {
                Ok(more) => announcement.extend(more),
                Err(_) => break,
            }
        }
        let judging = evaluating();
        if !announcement.new.is_empty() && (judging || ingest.watched()) {
            if let Some(rows) = read_back(store.as_ref(), announcement.new).await {
                ingest.publish_from_peers(rows);
            }
        }
        if !announcement.completed.is_empty() && judging {
            if let Some(rows) = read_back(store.as_ref(), announcement.completed).await {
                ingest.publish_completed_from_peers(rows);
            }
        }
    }
}

/// The samples of these keys, whole; `None` when there are none or the
/// read failed (logged: live views and alerts miss them, the store has
/// them).
async fn read_back(store: &dyn Store, keys: Vec<SampleKey>) -> Option<Committed> {
    match store.whole_samples_by_keys(keys).await {
        Ok(rows) if !rows.is_empty() => Some(rows.into()),
        Ok(_) => None,
        Err(error) => {
            tracing::warn!(%error, "cannot read the samples another server committed");
            None
        }
    }
}
