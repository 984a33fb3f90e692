//! Rollups kept off the commit path.
//!
//! An ingest commit stores raw samples and one journal entry naming the new
//! ones (see [`crate::store::journal`]); the writer then adds their
//! summaries to an in-memory accumulator per (client, tier, bucket). Every
//! `fold_interval` the accumulator is merged into the 1m/10m/1h tables in
//! one transaction that also deletes the journal entries it accounts for,
//! so a sample is in the rollups exactly once whatever happens: a crash
//! loses the accumulator but not the journal, and journal entries whose
//! process is gone are folded from the raw samples (at start, and by any
//! server on the same PostgreSQL while it runs).
//!
//! On SQLite the journal is the hot table new samples are appended to, and
//! a fold also moves the samples it accounts for from there into `samples`
//! (see `store::sqlite`): the fold interval is how long a sample stays hot,
//! and the store asks for an early fold ([`Inserted::fold_soon`]) when the
//! hot table grows large.
//!
//! The accumulator is bounded: past [`RollupsConfig::max_pending_buckets`]
//! a writer waits ([`Rollups::wait_for_room`]) until a fold has taken what
//! is pending, so ingest slows to the pace of the folds instead of memory
//! growing (samples spread over many hours, each its own bucket in every
//! tier, once took a server to 23 GB while its folds fell behind).
//!
//! Series read from a rollup tier add the buckets still pending here, so a
//! chart never lags by the fold interval. A fold's commit is bracketed by a
//! generation counter that readers check (a seqlock), so a reader never
//! counts a bucket both as pending and as folded, and neither side waits
//! for the other. A store may commit a fold in parts by client (SQLite
//! does, so as not to hold its one writer long): readers then count the
//! pending buckets of the clients past the last part committed. A fold
//! that fails part way is never retried (its first parts would count
//! twice): the accumulator is given up to the journal instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::services::metrics::Metrics;
use crate::store::rollup::{bucket_start, summarise, Bucket, SeriesQuery, Tier};
use crate::store::{
    ClientSample, Fold, FoldProgress, Inserted, InstanceId, JournalEntry, Store, StoreOptions,
    Unobserved,
};

/// Pending buckets past which a fold starts at once instead of waiting for
/// its interval (about 64 MB of summaries).
const EARLY_FOLD_BUCKETS: usize = 100_000;

/// How long a writer waits for room before the accumulator is given up
/// (its journal entries then folded from the samples, a bounded part at a
/// time), so a fold that cannot keep up never stalls ingest for good.
const ROOM_WAIT: Duration = Duration::from_secs(30);

/// Journal entries folded from samples per transaction.
const RECOVERY_ENTRIES: usize = 500;

/// Times a series read is retried when a fold committed while it read.
const CONSISTENT_READ_ATTEMPTS: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupsConfig {
    /// How often pending summaries are merged into the rollup tables.
    pub fold_interval: Duration,
    /// Hosts per transaction of a fold, on a store that folds in parts.
    pub fold_part_hosts: usize,
    /// Pending buckets past which writers wait for a fold before they
    /// commit more, and past which, folds failing, the accumulator is given
    /// up: its journal entries stay, and are folded from the samples
    /// instead, so memory stays bounded and nothing is lost. Not a setting:
    /// the default (~160 MB; a fold in progress holds as much again) is
    /// tests' to change.
    pub max_pending_buckets: usize,
}

impl Default for RollupsConfig {
    fn default() -> Self {
        Self {
            fold_interval: Duration::from_secs(5),
            fold_part_hosts: StoreOptions::default().fold_part_hosts,
            max_pending_buckets: 250_000,
        }
    }
}

/// Summaries of committed samples not yet merged into the tables.
#[derive(Default)]
struct Accumulator {
    tiers: [HashMap<(i64, i64), Bucket>; 3],
    journal: Vec<i64>,
}

impl Accumulator {
    fn add(&mut self, rows: &[ClientSample], inserted: &Inserted) {
        for (tier, pending) in Tier::ROLLUPS.into_iter().zip(&mut self.tiers) {
            for bucket in summarise(rows, &inserted.keys, tier) {
                pending
                    .entry((bucket.client_id, bucket.start_us))
                    .and_modify(|existing| existing.merge(&bucket))
                    .or_insert(bucket);
            }
        }
        self.journal.extend_from_slice(&inserted.journal);
    }

    fn buckets(&self) -> usize {
        self.tiers.iter().map(HashMap::len).sum()
    }

    fn into_fold(self) -> Fold {
        let mut fold = Fold {
            journal: self.journal,
            ..Fold::default()
        };
        for (sorted, pending) in fold.buckets.iter_mut().zip(self.tiers) {
            *sorted = pending.into_values().collect();
            sorted.sort_by_key(|bucket| (bucket.client_id, bucket.start_us));
        }
        fold
    }
}

struct State {
    instance: InstanceId,
    current: Accumulator,
    /// What the fold in progress (or failed, to be retried) merges.
    folding: Option<Arc<Fold>>,
    /// The clients up to this one are folded of `folding` (its parts
    /// committed so far); `i64::MIN` when none are.
    folded_through: i64,
}

impl State {
    fn new(instance: InstanceId) -> State {
        State {
            instance,
            current: Accumulator::default(),
            folding: None,
            folded_through: i64::MIN,
        }
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Follows one fold's commits for readers (see the module's documentation).
struct FoldTracker {
    state: Arc<Mutex<State>>,
    generation: Arc<AtomicU64>,
    fold: Arc<Fold>,
    /// A part is committing, so the generation is odd.
    committing: AtomicBool,
    parts_committed: AtomicUsize,
}

impl FoldProgress for FoldTracker {
    fn committing(&self) {
        self.committing.store(true, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn committed(&self, through: i64) {
        let mut state = lock(&self.state);
        if state
            .folding
            .as_ref()
            .is_some_and(|folding| Arc::ptr_eq(folding, &self.fold))
        {
            state.folded_through = through;
        }
        self.parts_committed.fetch_add(1, Ordering::SeqCst);
        self.committing.store(false, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

pub struct Rollups {
    store: Arc<dyn Store>,
    config: RollupsConfig,
    metrics: Arc<Metrics>,
    state: Arc<Mutex<State>>,
    /// Odd while a fold commits; see the module's documentation.
    generation: Arc<AtomicU64>,
    fold_now: Notify,
    /// Signalled after every fold attempt, for writers waiting for room.
    folded: Notify,
    /// The fold loop has ended (shutdown): writers no longer wait for it.
    stopped: AtomicBool,
    /// When a fold was last asked for ahead of its interval for parts
    /// waiting on it ([`Rollups::fold_and_wait`]).
    last_asked: Mutex<Option<std::time::Instant>>,
}

/// Parts waiting for a fold ask for one at most this often: a client
/// sending split samples on purpose cannot make the server fold the whole
/// fleet's pending summaries on every request.
const MIN_ASKED_GAP: Duration = Duration::from_secs(1);

impl Rollups {
    /// Claims an instance and folds what earlier runs left in the journal,
    /// so the rollups are whole before the first request.
    pub async fn start(
        store: Arc<dyn Store>,
        config: RollupsConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Rollups>> {
        let instance = store.claim_instance().await?;
        let rollups = Arc::new(Rollups {
            store,
            config,
            metrics,
            state: Arc::new(Mutex::new(State::new(instance))),
            generation: Arc::new(AtomicU64::new(0)),
            fold_now: Notify::new(),
            folded: Notify::new(),
            stopped: AtomicBool::new(false),
            last_asked: Mutex::new(None),
        });
        let recovered = rollups.fold_orphans().await?;
        if recovered > 0 {
            tracing::info!(
                samples = recovered,
                "folded into the rollups the samples an earlier run stored but had not summarised"
            );
        }
        Ok(rollups)
    }

    /// The instance a commit's journal entry must carry.
    pub fn instance(&self) -> InstanceId {
        self.lock().instance
    }

    /// Adds a commit's new samples to the pending summaries. A commit made
    /// under an instance since given up is left to the journal.
    pub fn record(&self, instance: InstanceId, rows: &[ClientSample], inserted: &Inserted) {
        if inserted.keys.is_empty() {
            return;
        }
        let mut state = self.lock();
        if state.instance != instance {
            return;
        }
        state.current.add(rows, inserted);
        self.metrics.set_pending_buckets(state.current.buckets());
        if inserted.fold_soon || state.current.buckets() >= EARLY_FOLD_BUCKETS {
            self.fold_now.notify_one();
        }
    }

    /// Waits, before a writer commits more, while the pending summaries are
    /// at their bound: until a fold has taken them, or for at most
    /// [`ROOM_WAIT`], after which they are given up to the journal. Whether
    /// it waited.
    pub async fn wait_for_room(&self) -> bool {
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        let mut waited = false;
        loop {
            let folded = self.folded.notified();
            tokio::pin!(folded);
            // Registered before the check, so a fold ending in between
            // still wakes this writer.
            folded.as_mut().enable();
            if self.stopped.load(Ordering::SeqCst)
                || self.lock().current.buckets() < self.config.max_pending_buckets
            {
                return waited;
            }
            if !waited {
                tracing::debug!("ingest waits for the rollup fold: too much is pending");
                waited = true;
            }
            self.fold_now.notify_one();
            if tokio::time::timeout_at(deadline, folded).await.is_err() {
                // Another writer may have given them up already.
                if self.lock().current.buckets() < self.config.max_pending_buckets {
                    return waited;
                }
                if let Err(error) = self
                    .give_up_instance("folds fall behind what ingest commits")
                    .await
                {
                    tracing::error!(%error, "cannot give the pending rollup summaries up");
                }
                return waited;
            }
        }
    }

    /// Asks for a fold (at most once per [`MIN_ASKED_GAP`]) and waits until
    /// one has ended (or `deadline`); whether folds still run. For samples
    /// that must be folded before a later part can complete them.
    pub async fn fold_and_wait(&self, deadline: tokio::time::Instant) -> bool {
        let folded = self.folded.notified();
        tokio::pin!(folded);
        folded.as_mut().enable();
        if self.stopped.load(Ordering::SeqCst) {
            return false;
        }
        {
            let mut last = self.last_asked.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_none_or(|asked| asked.elapsed() >= MIN_ASKED_GAP) {
                *last = Some(std::time::Instant::now());
                self.fold_now.notify_one();
            }
        }
        let _ = tokio::time::timeout_at(deadline, folded).await;
        !self.stopped.load(Ordering::SeqCst)
    }

    /// Folds every `fold_interval` (sooner when much is pending) and takes
    /// over orphaned journal entries, until `stop`. The last fold is
    /// [`Rollups::fold`]'s caller's, once the writers have stopped.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => {
                        self.stopped.store(true, Ordering::SeqCst);
                        self.folded.notify_waiters();
                        return;
                    }
                    _ = tokio::time::sleep(self.config.fold_interval) => {}
                    _ = self.fold_now.notified() => {}
                }
                if let Err(error) = self.fold().await {
                    tracing::warn!(%error, "rollup fold failed; retrying at the next interval");
                }
                self.folded.notify_waiters();
                if let Err(error) = self.fold_orphans().await {
                    tracing::warn!(%error, "folding orphaned rollup journal entries failed");
                }
            }
        })
    }

    /// Merges what is pending into the rollup tables.
    pub async fn fold(&self) -> Result<()> {
        if self.lock().folded_through != i64::MIN {
            // A fold failed after some parts, and giving up failed too.
            self.give_up_instance("a rollup fold failed part way")
                .await?;
        }
        let (instance, fold) = {
            let mut state = self.lock();
            if state.folding.is_none() {
                let taken = std::mem::take(&mut state.current);
                state.folding = Some(Arc::new(taken.into_fold()));
            }
            let folding = state.folding.clone().unwrap_or_default();
            (state.instance, folding)
        };
        if fold.is_empty() {
            self.lock().folding = None;
            return Ok(());
        }
        if !self.store.instance_alive(instance).await {
            // Another server may be folding these entries from the samples:
            // merging them too would count them twice.
            self.give_up_instance("its claim lapsed").await?;
            return Err(Error::Internal(
                "the rollup instance claim lapsed; pending summaries left to the journal".into(),
            ));
        }
        let tracker = Arc::new(FoldTracker {
            state: self.state.clone(),
            generation: self.generation.clone(),
            fold: fold.clone(),
            committing: AtomicBool::new(false),
            parts_committed: AtomicUsize::new(0),
        });
        let started = std::time::Instant::now();
        let outcome = self.store.fold(fold.clone(), tracker.clone()).await;
        if outcome.is_ok() {
            self.metrics.fold_done(started.elapsed().as_secs_f64());
        }
        {
            let mut state = self.lock();
            if outcome.is_ok() {
                state.folding = None;
                state.folded_through = i64::MIN;
            }
            self.metrics.set_pending_buckets(state.current.buckets());
            if tracker.committing.load(Ordering::SeqCst) {
                self.generation.fetch_add(1, Ordering::SeqCst);
            }
        }
        if outcome.is_err() && tracker.parts_committed.load(Ordering::SeqCst) > 0 {
            self.give_up_instance("a rollup fold failed part way")
                .await?;
        }
        match outcome {
            Ok(()) => {
                tracing::debug!(
                    buckets = fold.buckets.iter().map(Vec::len).sum::<usize>(),
                    commits = fold.journal.len(),
                    "rollups folded"
                );
                Ok(())
            }
            Err(Error::FoldConflict { .. }) => {
                self.give_up_instance("another server folded its journal entries")
                    .await?;
                Err(Error::Internal(
                    "rollup fold conflict; pending summaries left to the journal".into(),
                ))
            }
            Err(error) => {
                if self.lock().current.buckets() >= self.config.max_pending_buckets {
                    self.give_up_instance("too much is pending while folds fail")
                        .await?;
                }
                Err(error)
            }
        }
    }

    /// Drops the pending summaries and claims a new instance: the old
    /// instance's journal entries become orphans, folded from the samples.
    async fn give_up_instance(&self, why: &str) -> Result<()> {
        let instance = self.store.claim_instance().await?;
        let mut state = self.lock();
        tracing::warn!(
            why,
            pending_buckets = state.current.buckets(),
            "giving up the in-memory rollup summaries; their journal entries will be folded from the samples"
        );
        // A visible change for readers, like a fold's commit.
        self.generation.fetch_add(2, Ordering::SeqCst);
        *state = State::new(instance);
        self.metrics.set_pending_buckets(0);
        Ok(())
    }

    /// Folds from the samples every journal entry whose process is gone;
    /// returns how many samples that summarised.
    async fn fold_orphans(&self) -> Result<usize> {
        let mut folded = 0;
        loop {
            let live = self.instance();
            let entries = self.store.orphaned_journal(live, RECOVERY_ENTRIES).await?;
            if entries.is_empty() {
                return Ok(folded);
            }
            let fold = self.fold_from_samples(&entries).await?;
            match self.store.fold(Arc::new(fold), Arc::new(Unobserved)).await {
                Ok(()) => folded += entries.iter().map(|entry| entry.keys.len()).sum::<usize>(),
                // Another server took these over first; look again.
                Err(Error::FoldConflict { .. }) => continue,
                Err(error) => return Err(error),
            }
        }
    }

    async fn fold_from_samples(&self, entries: &[JournalEntry]) -> Result<Fold> {
        let keys: Vec<_> = entries
            .iter()
            .flat_map(|entry| entry.keys.clone())
            .collect();
        let samples = self.store.samples_by_keys(keys).await?;
        let stored: Vec<_> = samples
            .iter()
            .map(|row| (row.client.0, row.sample.time.micros()))
            .collect();
        let mut fold = Fold {
            journal: entries.iter().map(|entry| entry.seq).collect(),
            ..Fold::default()
        };
        for (tier, buckets) in Tier::ROLLUPS.into_iter().zip(&mut fold.buckets) {
            *buckets = summarise(&samples, &stored, tier);
        }
        Ok(fold)
    }

    /// Reads a rollup tier's series with `read` and adds what is pending
    /// for it, consistently: retried when a fold committed meanwhile.
    pub async fn series_with_pending<F, Fut>(
        &self,
        query: &SeriesQuery,
        read: F,
    ) -> Result<Vec<Bucket>>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Bucket>>>,
    {
        for _ in 0..CONSISTENT_READ_ATTEMPTS {
            let before = self.generation.load(Ordering::SeqCst);
            if before % 2 == 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let pending = self.pending(query);
            let stored = read().await?;
            if self.generation.load(Ordering::SeqCst) == before {
                return Ok(merge_pending(stored, pending, query.step_us));
            }
        }
        Err(Error::Overloaded)
    }

    /// The pending buckets of a query's client, tier and range.
    fn pending(&self, query: &SeriesQuery) -> Vec<Bucket> {
        let index = query.tier.rollup_index();
        let in_range = |bucket: &&Bucket| {
            bucket.client_id == query.client_id
                && (query.start_us..query.end_us).contains(&bucket.start_us)
        };
        let state = self.lock();
        let current = state.current.tiers[index].values().filter(in_range);
        let unfolded = query.client_id > state.folded_through;
        let folding = state.folding.iter().filter(|_| unfolded).flat_map(|fold| {
            let sorted = &fold.buckets[index];
            let first = sorted.partition_point(|bucket| {
                (bucket.client_id, bucket.start_us) < (query.client_id, query.start_us)
            });
            sorted[first..].iter().take_while(in_range)
        });
        current.chain(folding).cloned().collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Adds pending tier buckets into a series' step buckets (ordered by start).
fn merge_pending(stored: Vec<Bucket>, pending: Vec<Bucket>, step_us: i64) -> Vec<Bucket> {
    if pending.is_empty() {
        return stored;
    }
    let mut buckets: std::collections::BTreeMap<i64, Bucket> = stored
        .into_iter()
        .map(|bucket| (bucket.start_us, bucket))
        .collect();
    for bucket in pending {
        let start = bucket_start(bucket.start_us, step_us);
        buckets
            .entry(start)
            .or_insert_with(|| Bucket::empty(bucket.client_id, start))
            .merge(&bucket);
    }
    buckets.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(start_us: i64, count: i64, cpu: f64) -> Bucket {
        let mut bucket = Bucket::empty(1, start_us);
        bucket.sample_count = count;
        for _ in 0..count {
            bucket.metrics[0].add(cpu);
        }
        bucket
    }

    #[test]
    fn pending_buckets_merge_into_their_step() {
        let minute = 60_000_000;
        let stored = vec![bucket(0, 2, 10.0), bucket(10 * minute, 1, 50.0)];
        let pending = vec![bucket(minute, 1, 30.0), bucket(20 * minute, 1, 70.0)];
        let merged = merge_pending(stored, pending, 10 * minute);
        let starts: Vec<i64> = merged.iter().map(|b| b.start_us).collect();
        assert_eq!(starts, [0, 10 * minute, 20 * minute]);
        assert_eq!(merged[0].sample_count, 3);
        assert_eq!(merged[0].metrics[0].max, Some(30.0));
        assert_eq!(merged[0].metrics[0].mean(), Some(50.0 / 3.0));
        assert_eq!(merged[2].metrics[0].min, Some(70.0));
    }
}
