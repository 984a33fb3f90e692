//! The embedded default: one SQLite file in WAL mode. Samples are written
//! through one connection ([`writer`]: ingest appends to a hot table, which
//! is also the rollup journal, and the fold moves what it folded into
//! `samples`) and read through a pool of read-only ones ([`readers`], which
//! read both tables); everything else goes through sqlx.

mod completion;
mod readers;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use sysmon_core::UnixTime;

use crate::store::FullSamples;

use super::rollup::{Bucket, SeriesQuery, Tier};
use super::{
    sample_chunks, ClientId, ClientOverview, ClientSample, FilesystemRow, Fold, FoldProgress,
    Inserted, InstanceId, JournalEntry, SampleChunks, SampleKey, SampleReads, Store, StoreOptions,
    TimeRange,
};
use crate::error::{Error, Result};
use readers::BlockingReaders;
use writer::BlockingWriter;

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<BlockingWriter>,
    readers: Arc<BlockingReaders>,
}

impl SqliteStore {
    pub async fn connect(url: &str, store: StoreOptions) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid SQLite URL `{url}`: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: an acknowledged sample survives a power cut, not only a
            // crash. Group commit pays the fsync once per batch.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options.clone())
            .await
            .map_err(|e| Error::Config(format!("cannot open SQLite database `{url}`: {e}")))?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        let path = options.get_filename().to_owned();
        let writer = Arc::new(BlockingWriter::open(
            &path,
            store.durability,
            store.fold_part_hosts,
        )?);
        let readers = Arc::new(BlockingReaders::new(path));
        Ok(Self {
            pool,
            writer,
            readers,
        })
    }

    /// Streams a client's samples from a blocking thread into `sender`.
    fn spawn_report(&self, client: ClientId, start: i64, end: i64) -> SampleChunks {
        let (sender, chunks) = sample_chunks();
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let read = readers.with_connection(|connection| {
                readers::send_samples(connection, client, start, end, &sender)
            });
            if let Err(error) = read {
                let _ = sender.blocking_send(Err(error));
            }
        });
        chunks
    }

    /// Deletes a tier's expired rows of one client.
    async fn prune_client(&self, tier: Tier, client: i64, before_us: i64) -> Result<u64> {
        let mut transaction = self.pool.begin().await?;
        if tier == Tier::Raw {
            sqlx::query("DELETE FROM sample_filesystems WHERE client_id = ? AND time_us < ?")
                .bind(client)
                .bind(before_us)
                .execute(&mut *transaction)
                .await?;
        }
        let deleted = sqlx::query(&format!(
            "DELETE FROM {} WHERE client_id = ? AND {} < ?",
            tier.table(),
            tier.time_column()
        ))
        .bind(client)
        .bind(before_us)
        .execute(&mut *transaction)
        .await?
        .rows_affected();
        transaction.commit().await?;
        Ok(deleted)
    }
}

/// Runs a blocking store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::Internal(format!("SQLite writer task: {e}")))?
}

impl_client_store!(SqliteStore, sqlx::Sqlite);
impl_user_store!(SqliteStore);
impl_enrollment_store!(SqliteStore);
impl_fleet_token_store!(SqliteStore);
impl_alert_store!(SqliteStore, sqlx::SqliteConnection, lock_rows: "");

#[async_trait]
impl SampleReads for SqliteStore {
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>> {
        self.readers
            .read(move |connection| readers::read_log_span(connection, client))
            .await
    }

    async fn full_samples(
        &self,
        client: ClientId,
        range: TimeRange,
        limit: u32,
    ) -> Result<FullSamples> {
        let (start, end) = range.bounds_micros();
        self.readers
            .read(move |connection| {
                readers::read_full_samples(connection, client, (start, end), limit)
            })
            .await
    }

    async fn client_overviews(&self) -> Result<Vec<ClientOverview>> {
        self.readers.read(readers::read_overviews).await
    }

    async fn filesystem_history(
        &self,
        client: ClientId,
        range: TimeRange,
        step: std::time::Duration,
    ) -> Result<Vec<FilesystemRow>> {
        let bounds = range.bounds_micros();
        let step_us = i64::try_from(step.as_micros()).unwrap_or(i64::MAX);
        self.readers
            .read(move |connection| {
                readers::read_filesystem_history(connection, client, bounds, step_us)
            })
            .await
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn max_concurrent_writers(&self) -> usize {
        1
    }

    /// One process writes a SQLite file, so its claim needs no lock.
    async fn claim_instance(&self) -> Result<InstanceId> {
        Ok(InstanceId::random())
    }

    async fn instance_alive(&self, _instance: InstanceId) -> bool {
        true
    }

    async fn insert_samples(
        &self,
        samples: Arc<[ClientSample]>,
        instance: InstanceId,
    ) -> Result<Inserted> {
        let writer = self.writer.clone();
        blocking(move || Ok(writer.insert(&samples, instance)?)).await
    }

    async fn fold(&self, fold: Arc<Fold>, progress: Arc<dyn FoldProgress>) -> Result<()> {
        let writer = self.writer.clone();
        blocking(move || writer.fold(&fold, progress.as_ref())).await
    }

    /// The file has one server, so every other instance's entries are
    /// orphans: left by an earlier run, or by a claim this run gave up.
    async fn orphaned_journal(&self, live: InstanceId, limit: usize) -> Result<Vec<JournalEntry>> {
        let writer = self.writer.clone();
        blocking(move || writer.orphans(live, limit)).await
    }

    async fn samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>> {
        self.readers
            .read(move |connection| readers::read_samples_by_keys(connection, &keys))
            .await
    }

    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks> {
        let (start, end) = range.bounds_micros();
        Ok(self.spawn_report(client, start, end))
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Bucket>> {
        let query = query.clone();
        self.readers
            .read(move |connection| readers::read_series(connection, &query))
            .await
    }

    /// `samples` only: a hot sample is moved there by the next fold,
    /// within `ingest.fold_interval_seconds`, and pruned from there by the
    /// next round; deleting it from the hot table would delete its journal
    /// entry before its summary is folded.
    async fn prune(&self, tier: Tier, before_us: i64) -> Result<u64> {
        let clients = sqlx::query_scalar::<_, i64>("SELECT id FROM clients")
            .fetch_all(&self.pool)
            .await?;
        let mut deleted = 0;
        // One client at a time, so the single writer lock is never held
        // long enough to stall ingest.
        for client in clients {
            deleted += self.prune_client(tier, client, before_us).await?;
        }
        Ok(deleted)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
