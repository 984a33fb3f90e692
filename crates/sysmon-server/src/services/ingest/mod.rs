//! The ingest pipeline: every route that stores samples hands them here.
//!
//! Requests queue their samples; writer tasks take everything queued at that
//! moment (up to `max_batch` rows), store it in one transaction, and only
//! then answer each request (group commit). An acknowledgement therefore
//! always means "committed". The queue is bounded: when the store falls
//! behind, a request waits at most `enqueue_timeout` and then gets 503.
//!
//! Committed samples are also published to [`Ingest::subscribe`]rs, which is
//! how dashboards update live.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sysmon_core::metrics::fill_missing;
use sysmon_core::v1::BatchAck;
use sysmon_core::{Sample, UnixTime};
use tokio::sync::{broadcast, mpsc, oneshot, Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

mod deferred;

use super::metrics::{Metrics, Source};
use super::rollups::{Rollups, RollupsConfig};
use crate::error::{Error, Result};
use crate::store::{
    Announcement, ClientId, ClientSample, Durability, SampleKey, Store, StoreOptions,
};

#[derive(Debug, Clone, PartialEq)]
pub struct IngestConfig {
    /// Most rows written in one transaction.
    pub max_batch: usize,
    /// Requests that may wait for a writer before new ones are refused.
    pub queue_capacity: usize,
    /// Samples that may be waiting for or in a commit: a request waits
    /// (up to `enqueue_timeout`) for room for its samples, so memory
    /// holds at most this many whatever the requests' sizes.
    pub queue_rows: usize,
    /// Concurrent writer tasks, at most what the store can use (one for SQLite).
    pub writers: usize,
    /// How long a request may wait for room in the queue before a 503.
    pub enqueue_timeout: Duration,
    /// When a commit counts as done, and so when samples are acknowledged.
    pub durability: Durability,
    /// How rollups are folded from committed samples.
    pub rollups: RollupsConfig,
}

impl IngestConfig {
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            durability: self.durability,
            fold_part_hosts: self.rollups.fold_part_hosts,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_batch: 5_000,
            queue_capacity: 20_000,
            queue_rows: 200_000,
            writers: 2,
            enqueue_timeout: Duration::from_secs(5),
            durability: Durability::Full,
            rollups: RollupsConfig::default(),
        }
    }
}

/// One request's samples and the way to answer it.
struct Job {
    rows: Vec<ClientSample>,
    done: oneshot::Sender<Result<BatchAck>>,
}

/// Newly committed samples, as one commit published them.
pub type Committed = Arc<[ClientSample]>;

/// Commits kept for live readers. The channel holds its last this-many
/// commits whole (every client's rows, up to `max_batch` each) for as long
/// as anyone listens, so it is short: each live socket drains it at once
/// into a queue of its own client's samples (`routes::query::live`), and a
/// socket that stops reading backs up only that queue.
const LIVE_BACKLOG: usize = 32;

/// The handle routes use; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    queue: mpsc::Sender<Job>,
    /// One permit per sample queued or being committed.
    room: Arc<Semaphore>,
    queue_rows: usize,
    enqueue_timeout: Duration,
    metrics: Arc<Metrics>,
    live: broadcast::Sender<Committed>,
    /// The alert evaluator's feed, for other servers' commits.
    alerts: Option<mpsc::Sender<Committed>>,
    raw_retention: Option<Duration>,
}

/// Where committed samples go besides live readers.
#[derive(Clone, Default)]
pub struct Feeds {
    /// The alert evaluator, when alerts run.
    pub alerts: Option<mpsc::Sender<Committed>>,
    /// The announcer that tells other servers on the database
    /// ([`crate::services::peers`]), on PostgreSQL.
    pub peers: Option<mpsc::Sender<Announcement>>,
}

impl Ingest {
    /// Starts the writers. They run until `stop` is cancelled, then store
    /// whatever is still queued and end; `writers` ends when they have.
    /// Samples older than `raw_retention` are refused.
    pub fn start(
        store: Arc<dyn Store>,
        rollups: Arc<Rollups>,
        config: &IngestConfig,
        raw_retention: Option<Duration>,
        metrics: Arc<Metrics>,
        feeds: Feeds,
        stop: CancellationToken,
    ) -> (Ingest, JoinSet<()>) {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let mut writers = JoinSet::new();
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        let writer_count = config.writers.clamp(1, store.max_concurrent_writers());
        let retries = Arc::new(Semaphore::new(deferred::AT_ONCE));
        for _ in 0..writer_count {
            writers.spawn(run_writer(Writer {
                store: store.clone(),
                rollups: rollups.clone(),
                receiver: receiver.clone(),
                max_batch: config.max_batch.max(1),
                metrics: metrics.clone(),
                live: live.clone(),
                feeds: feeds.clone(),
                retries: retries.clone(),
                stop: stop.clone(),
            }));
        }
        let queue_rows = config.queue_rows.clamp(1, Semaphore::MAX_PERMITS);
        let ingest = Ingest {
            queue,
            room: Arc::new(Semaphore::new(queue_rows)),
            queue_rows,
            enqueue_timeout: config.enqueue_timeout,
            metrics,
            live,
            alerts: feeds.alerts,
            raw_retention,
        };
        (ingest, writers)
    }

    /// Samples another server on this database committed (see
    /// [`crate::services::peers`]): to live readers and the alert
    /// evaluator, as this server's own commits are.
    pub fn publish_from_peers(&self, rows: Committed) {
        if let Some(alerts) = &self.alerts {
            feed_alerts(alerts, &self.metrics, rows.clone());
        }
        if self.live.receiver_count() > 0 {
            let _ = self.live.send(rows);
        }
    }

    /// Samples another server completed with a later part, whole: to the
    /// alert evaluator only (a live chart already drew their time, as for
    /// this server's own completions). The evaluator takes a signal once
    /// per time, so the values it had are not counted again.
    pub fn publish_completed_from_peers(&self, rows: Committed) {
        if let Some(alerts) = &self.alerts {
            feed_alerts(alerts, &self.metrics, rows);
        }
    }

    /// Whether a live reader here would see other servers' commits.
    pub fn watched(&self) -> bool {
        self.live.receiver_count() > 0
    }

    /// Stores a client's samples; returns once they are committed, saying
    /// which were new and which the store already had.
    pub async fn store(
        &self,
        client: ClientId,
        samples: Vec<Sample>,
        source: Source,
    ) -> Result<BatchAck> {
        let rows = samples
            .into_iter()
            .map(|sample| ClientSample { client, sample })
            .collect();
        self.store_rows(rows, source).await
    }

    /// Stores samples of any clients (protocols that carry many hosts in
    /// one request), all in one transaction; returns once committed.
    pub async fn store_rows(&self, rows: Vec<ClientSample>, source: Source) -> Result<BatchAck> {
        self.check_retention(rows.iter().map(|row| &row.sample))?;
        let deadline = tokio::time::Instant::now() + self.enqueue_timeout;
        let room = self.wait_for_room(rows.len(), deadline).await;
        if let Err(error) = &room {
            self.metrics.rejected(error);
        }
        let _room = room?;
        let (done, committed) = oneshot::channel();
        let queued = tokio::time::timeout_at(deadline, self.queue.send(Job { rows, done }))
            .await
            .map_err(|_| Error::Overloaded)
            .and_then(|sent| sent.map_err(|_| Error::ShuttingDown));
        if let Err(error) = &queued {
            self.metrics.rejected(error);
        }
        queued?;
        let ack = committed.await.map_err(|_| Error::ShuttingDown)??;
        self.metrics
            .samples_acknowledged(source, ack.stored.len(), ack.duplicates.len());
        Ok(ack)
    }

    /// Room in the queue for `samples` samples (all of it for a request
    /// larger than the queue), held until they are committed.
    async fn wait_for_room(
        &self,
        samples: usize,
        deadline: tokio::time::Instant,
    ) -> Result<OwnedSemaphorePermit> {
        let wanted = u32::try_from(samples.clamp(1, self.queue_rows)).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline, self.room.clone().acquire_many_owned(wanted)).await
        {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(Error::ShuttingDown),
            Err(_elapsed) => Err(Error::Overloaded),
        }
    }

    /// Refuses samples older than raw samples are kept: retention would
    /// delete them at once, and a replay of one would be counted into the
    /// rollups a second time, since the raw row it duplicates is gone.
    fn check_retention<'a>(&self, samples: impl Iterator<Item = &'a Sample>) -> Result<()> {
        let Some(keep) = self.raw_retention else {
            return Ok(());
        };
        match samples.enumerate().find(|(_, sample)| self.expired(sample)) {
            Some((index, sample)) => Err(Error::RetentionExpired {
                index,
                time: sample.time.to_json().to_string(),
                keep_days: keep.as_secs_f64() / 86_400.0,
            }),
            None => Ok(()),
        }
    }

    /// Whether a sample is older than raw samples are kept (see
    /// [`Ingest::store`]'s refusal).
    pub fn expired(&self, sample: &Sample) -> bool {
        self.raw_retention.is_some_and(|keep| {
            let horizon = UnixTime::now()
                .micros()
                .saturating_sub(i64::try_from(keep.as_micros()).unwrap_or(i64::MAX));
            sample.time.micros() < horizon
        })
    }

    /// Whether the writers still take samples (they stop at shutdown, or
    /// if they all failed).
    pub fn is_running(&self) -> bool {
        !self.queue.is_closed()
    }

    /// Every sample committed from now on, newly stored ones only.
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.live.subscribe()
    }
}

/// What one writer task works with.
struct Writer {
    store: Arc<dyn Store>,
    /// Where the new samples' summaries wait to be folded into the tables.
    rollups: Arc<Rollups>,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
    metrics: Arc<Metrics>,
    live: broadcast::Sender<Committed>,
    feeds: Feeds,
    /// Deferred parts stored again at once, at most (shared by writers).
    retries: Arc<Semaphore>,
    stop: CancellationToken,
}

async fn run_writer(writer: Writer) {
    while let Some(jobs) = next_batch(
        &writer.receiver,
        writer.max_batch,
        &writer.metrics,
        &writer.stop,
    )
    .await
    {
        commit(&writer, jobs).await;
    }
}

/// Waits for the first job, then takes whatever else is already queued.
/// `None` once the pipeline is stopped and drained.
async fn next_batch(
    receiver: &Mutex<mpsc::Receiver<Job>>,
    max_batch: usize,
    metrics: &Metrics,
    stop: &CancellationToken,
) -> Option<Vec<Job>> {
    let mut receiver = receiver.lock().await;
    let first = tokio::select! {
        biased;
        job = receiver.recv() => job,
        _ = stop.cancelled() => {
            // Refuse new work, but keep what was accepted.
            receiver.close();
            receiver.recv().await
        }
    }?;
    let mut rows = first.rows.len();
    let mut jobs = vec![first];
    while rows < max_batch {
        match receiver.try_recv() {
            Ok(job) => {
                rows += job.rows.len();
                jobs.push(job);
            }
            Err(_) => break,
        }
    }
    metrics.set_queue_depth(receiver.len());
    Some(jobs)
}

/// Stores a batch of requests in one transaction and answers each. When the
/// database refuses the data itself (a value or constraint, not its
/// availability), the requests are stored one by one, so that only the
/// guilty one is refused and the others are not held up by it.
async fn commit(writer: &Writer, jobs: Vec<Job>) {
    match store_jobs(writer, &jobs).await {
        Ok(stored) => settle(writer, jobs, stored),
        Err(error) if error.is_refused_data() && jobs.len() > 1 => {
            tracing::warn!(
                %error,
                requests = jobs.len(),
                "the database refused a batch's data; storing its requests one by one"
            );
            for job in jobs {
                match store_jobs(writer, std::slice::from_ref(&job)).await {
                    Ok(stored) => settle(writer, vec![job], stored),
                    Err(error) => answer(vec![job], |_| Err(refusal(&error))),
                }
            }
        }
        Err(error) => answer(jobs, |_| Err(refusal(&error))),
    }
}

/// Answers the requests whose samples are all stored; those with parts
/// completing samples not folded yet are answered once a fold let them
/// be stored too ([`deferred`]), without holding this writer up.
fn settle(writer: &Writer, jobs: Vec<Job>, stored: Stored) {
    if stored.deferred.is_empty() {
        return answer(jobs, |job| Ok(acknowledge(&job.rows, &stored.keys)));
    }
    let (waiting, ready): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|job| {
        job.rows
            .iter()
            .any(|row| stored.deferred.contains(&key_of(row)))
    });
    answer(ready, |job| Ok(acknowledge(&job.rows, &stored.keys)));
    tokio::spawn(deferred::complete_after_fold(
        deferred::Completer {
            store: writer.store.clone(),
            rollups: writer.rollups.clone(),
            metrics: writer.metrics.clone(),
            alerts: writer.feeds.alerts.clone(),
            at_once: writer.retries.clone(),
        },
        waiting,
        stored,
    ));
}

fn key_of(row: &ClientSample) -> SampleKey {
    (row.client.0, row.sample.time.micros())
}

/// Sets of sample keys, hashed with foldhash rather than SipHash: a batch
/// of 4,000 rows builds and probes them on the writer's own time. v1
/// batches on SQLite, against the build before coalescing
/// (compare-ingest.sh, 5 rounds): 0.90x with SipHash sets, 1.13x with
/// these. Keys are authenticated clients' own (client, time) pairs.
type KeySet = HashSet<SampleKey, foldhash::fast::RandomState>;

/// What a batch stored: the keys of samples now stored (new or completed)
/// and of parts left for after a fold.
struct Stored {
    keys: KeySet,
    deferred: KeySet,
}

/// What a request is told when its samples were not stored.
fn refusal(error: &Error) -> Error {
    match error.is_refused_data() {
        true => Error::RefusedByStore(error.to_string()),
        false => Error::StoreUnavailable,
    }
}

fn answer(jobs: Vec<Job>, outcome: impl Fn(&Job) -> Result<BatchAck>) {
    for job in jobs {
        let answer = outcome(&job);
        // A requester that went away no longer needs an answer.
        let _ = job.done.send(answer);
    }
}

/// Stores the requests' samples in one transaction; returns what it
/// stored, once the new samples' summaries wait to be folded and live
/// readers have them.
async fn store_jobs(writer: &Writer, jobs: &[Job]) -> Result<Stored> {
    let (store, metrics) = (writer.store.as_ref(), writer.metrics.as_ref());
    let rows: Arc<[ClientSample]> =
        coalesce(jobs.iter().flat_map(|job| job.rows.iter().cloned())).into();
    // Bounded memory for what commits leave to the rollup fold.
    if writer.rollups.wait_for_room().await {
        metrics.commit_waited_for_fold();
    }
    let started = Instant::now();
    let instance = writer.rollups.instance();
    let inserted = match store.insert_samples(rows.clone(), instance).await {
        Ok(inserted) => inserted,
        Err(error) => {
            metrics.batch_failed();
            tracing::error!(
                rows = rows.len(),
                requests = jobs.len(),
                %error,
                "batch not stored"
            );
            return Err(error);
        }
    };
    metrics.batch_committed(rows.len(), started.elapsed().as_secs_f64());
    tracing::trace!(
        rows = rows.len(),
        requests = jobs.len(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
        "batch committed"
    );
    // Before any answer, so a chart read after the acknowledgement
    // includes these samples.
    writer.rollups.record(instance, &rows, &inserted);
    let mut keys: KeySet = inserted.keys.into_iter().collect();
    let completed: Vec<SampleKey> = inserted.completed.iter().map(key_of).collect();
    publish(writer, rows, &keys, inserted.completed);
    // A part that completed a stored sample was stored too.
    keys.extend(completed);
    Ok(Stored {
        keys,
        deferred: inserted.deferred.into_iter().collect(),
    })
}

/// One row per (client, time): a later row with a key already in the
/// batch completes the first, as it would complete a stored sample.
/// foldhash, as for [`KeySet`].
fn coalesce(rows: impl Iterator<Item = ClientSample>) -> Vec<ClientSample> {
    let (low, _) = rows.size_hint();
    let mut position: HashMap<SampleKey, usize, foldhash::fast::RandomState> =
        HashMap::with_capacity_and_hasher(low, Default::default());
    let mut unique: Vec<ClientSample> = Vec::with_capacity(low);
    for row in rows {
        match position.entry((row.client.0, row.sample.time.micros())) {
            Entry::Occupied(first) => {
                fill_missing(&mut unique[*first.get()].sample, &row.sample);
            }
            Entry::Vacant(slot) => {
                slot.insert(unique.len());
                unique.push(row);
            }
        }
    }
    unique
}

/// Hands the new rows to live readers, if there are any, and to the alert
/// evaluator with the values that completed stored samples (it keeps
/// points per signal, so they fill in the time they belong to; a chart
/// would draw the time twice), without waiting: a full feed drops the
/// commit (counted).
fn publish(writer: &Writer, rows: Committed, new: &KeySet, added: Vec<ClientSample>) {
    let watched = writer.live.receiver_count() > 0;
    let feeds = &writer.feeds;
    if (new.is_empty() && added.is_empty())
        || (!watched && feeds.alerts.is_none() && feeds.peers.is_none())
    {
        return;
    }
    let committed: Committed = if new.len() == rows.len() {
        // Every row is new (the batch has each key once): send as is.
        rows
    } else {
        rows.iter()
            .filter(|row| new.contains(&(row.client.0, row.sample.time.micros())))
            .cloned()
            .collect()
    };
    if let Some(peers) = &feeds.peers {
        let mut completed: Vec<SampleKey> = added
            .iter()
            .map(|row| (row.client.0, row.sample.time.micros()))
            .collect();
        completed.sort_unstable();
        completed.dedup();
        let announcement = Announcement {
            new: committed
                .iter()
                .map(|row| (row.client.0, row.sample.time.micros()))
                .collect(),
            completed,
        };
        if !announcement.is_empty() && peers.try_send(announcement).is_err() {
            writer.metrics.peer_feed_dropped();
        }
    }
    if let Some(alerts) = &feeds.alerts {
        let feed: Committed = match added.is_empty() {
            true => committed.clone(),
            false => committed.iter().cloned().chain(added).collect(),
        };
        feed_alerts(alerts, &writer.metrics, feed);
    }
    if watched && !new.is_empty() {
        // No receiver left since the check is fine: nobody is watching.
        let _ = writer.live.send(committed);
    }
}

/// Hands samples to the alert evaluator without waiting: a full feed
/// drops them (counted).
fn feed_alerts(alerts: &mpsc::Sender<Committed>, metrics: &Metrics, samples: Committed) {
    if samples.is_empty() {
        return;
    }
    if let Err(mpsc::error::TrySendError::Full(_)) = alerts.try_send(samples) {
        metrics.alert_feed_dropped();
    }
}

fn acknowledge(rows: &[ClientSample], inserted: &KeySet) -> BatchAck {
    let mut ack = BatchAck::default();
    for row in rows {
        let time = row.sample.time;
        if inserted.contains(&(row.client.0, time.micros())) {
            ack.stored.push(time);
        } else {
            ack.duplicates.push(time);
        }
    }
    ack
}
