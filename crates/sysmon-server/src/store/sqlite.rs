//! The embedded default: one SQLite file in WAL mode.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;
use sysmon_core::Sample;
use tokio::sync::mpsc;

use super::journal::{self, JournalSeq};
use super::rollup::{self, Bucket, SeriesQuery, Tier};
use super::{
    filesystem_rows, full_sample_from_columns, sample_chunks, sample_columns, sample_from_row,
    ClientId, ClientSample, Column, Durability, Fold, Inserted, InstanceId, JournalEntry,
    SampleChunks, SampleKey, SampleRow, Store, TimeRange, SAMPLE_CHUNK_ROWS, SAMPLE_COLUMN_COUNT,
};
use crate::error::{Error, Result};

/// The upsert of one bucket into a tier's table, kept prepared by the
/// writer; SQL text is parsed once per connection.
fn upsert_sql(tier: Tier) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        Tier::ROLLUPS
            .iter()
            .map(|tier| {
                format!(
                    "INSERT INTO {} AS t ({}) VALUES ({}){}",
                    tier.table(),
                    rollup::rollup_columns(),
                    numbered_parameters(3 + rollup::ROLLUP_VALUE_COLUMNS),
                    rollup::merge_on_conflict()
                )
            })
            .collect()
    });
    &all[tier.rollup_index()]
}

/// `?1, ?2, ..., ?count`.
fn numbered_parameters(count: usize) -> String {
    (1..=count)
        .map(|index| format!("?{index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub struct SqliteStore {
    pool: SqlitePool,
    writer: Arc<BlockingWriter>,
    readers: Arc<BlockingReaders>,
}

impl SqliteStore {
    pub async fn connect(url: &str, durability: Durability) -> Result<Self> {
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
        let writer = Arc::new(BlockingWriter::open(&path, durability)?);
        let readers = Arc::new(BlockingReaders::new(path));
        Ok(Self {
            pool,
            writer,
            readers,
        })
    }
}

/// The writer's page cache, in KiB (a negative `cache_size` is KiB).
const WRITER_CACHE_KIB: i64 = -64 * 1024;

/// The connection samples are written through, on blocking threads.
///
/// Ingest is one writer committing small batches back to back, and through
/// sqlx every statement of a batch is a hop to sqlx's SQLite thread with
/// its parameters copied on the way. Here the batch runs as one blocking
/// call: prepared statements, one row at a time (SQLite's fastest way to
/// insert; multi-row statements only saved hops), one commit. Everything
/// else (clients, tokens, sessions, retention) still goes through sqlx and
/// shares the database lock with it.
struct BlockingWriter {
    connection: std::sync::Mutex<rusqlite::Connection>,
}

impl BlockingWriter {
    fn open(path: &std::path::Path, durability: Durability) -> Result<Self> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(10))?;
        // The file is already in WAL mode (set by the pool, and persistent).
        // FULL: an acknowledged sample survives a power cut, not only a
        // crash; group commit pays the fsync once per batch. NORMAL: WAL
        // writes reach the OS at commit and disk at checkpoints.
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        // Each sample of a big fleet touches its host's rollup rows; with
        // SQLite's 2 MB default cache 10,000 hosts' rows no longer fit and
        // every commit reads pages back from the OS.
        connection.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Self {
            connection: std::sync::Mutex::new(connection),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, rusqlite::Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores a batch and its journal entry in one transaction.
    fn insert(&self, samples: &[ClientSample], instance: InstanceId) -> rusqlite::Result<Inserted> {
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let keys = insert_rows(&transaction, samples)?;
        insert_filesystems(&transaction, samples)?;
        let journal = match keys.is_empty() {
            true => None,
            false => Some(append_journal(&transaction, instance, &keys)?),
        };
        transaction.commit()?;
        Ok(Inserted { keys, journal })
    }

    /// Merges a fold into the rollup tables and deletes its journal
    /// entries, in one transaction.
    fn fold(&self, fold: &Fold, before_commit: &dyn Fn()) -> Result<()> {
        let mut connection = self.lock();
        let transaction =
            connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (tier, buckets) in fold.tier_buckets() {
            upsert_buckets(&transaction, tier, buckets)?;
        }
        let mut delete = transaction.prepare_cached("DELETE FROM rollup_journal WHERE seq = ?1")?;
        let mut deleted = 0;
        for seq in &fold.journal {
            deleted += delete.execute([seq])?;
        }
        drop(delete);
        if deleted != fold.journal.len() {
            return Err(Error::FoldConflict {
                expected: fold.journal.len(),
                found: deleted,
            });
        }
        before_commit();
        transaction.commit()?;
        Ok(())
    }
}

/// Appends the journal entry of a commit's new samples; returns its seq.
fn append_journal(
    connection: &rusqlite::Connection,
    instance: InstanceId,
    keys: &[SampleKey],
) -> rusqlite::Result<JournalSeq> {
    connection
        .prepare_cached("INSERT INTO rollup_journal (instance_id, keys) VALUES (?1, ?2)")?
        .execute((instance.0, journal::pack_keys(keys)))?;
    Ok(connection.last_insert_rowid())
}

/// Inserts samples not stored yet; returns their keys.
fn insert_rows(
    connection: &rusqlite::Connection,
    samples: &[ClientSample],
) -> rusqlite::Result<Vec<SampleKey>> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        format!(
            "INSERT INTO samples ({}) VALUES ({})
             ON CONFLICT (client_id, time_us) DO NOTHING",
            sample_columns(),
            numbered_parameters(SAMPLE_COLUMN_COUNT)
        )
    });
    let mut insert = connection.prepare_cached(sql)?;
    let mut inserted = Vec::with_capacity(samples.len());
    for item in samples {
        for (index, column) in SampleRow::from_sample(item).columns().enumerate() {
            match column {
                Column::Integer(value) => insert.raw_bind_parameter(index + 1, value)?,
                Column::Float(value) => insert.raw_bind_parameter(index + 1, value)?,
            }
        }
        if insert.raw_execute()? == 1 {
            inserted.push((item.client.0, item.sample.time.micros()));
        }
    }
    Ok(inserted)
}

fn insert_filesystems(
    connection: &rusqlite::Connection,
    samples: &[ClientSample],
) -> rusqlite::Result<()> {
    let rows = filesystem_rows(samples);
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = connection.prepare_cached(
        "INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
    )?;
    for (client, time, fs) in rows {
        insert.execute((
            client,
            time,
            &fs.mount_point,
            fs.used_bytes as i64,
            fs.total_bytes as i64,
        ))?;
    }
    Ok(())
}

fn upsert_buckets(
    connection: &rusqlite::Connection,
    tier: Tier,
    buckets: &[Bucket],
) -> rusqlite::Result<()> {
    let mut upsert = connection.prepare_cached(upsert_sql(tier))?;
    for bucket in buckets {
        upsert.raw_bind_parameter(1, bucket.client_id)?;
        upsert.raw_bind_parameter(2, bucket.start_us)?;
        upsert.raw_bind_parameter(3, bucket.sample_count)?;
        let mut index = 4;
        for summary in &bucket.metrics {
            upsert.raw_bind_parameter(index, summary.min)?;
            upsert.raw_bind_parameter(index + 1, summary.max)?;
            upsert.raw_bind_parameter(index + 2, summary.sum)?;
            upsert.raw_bind_parameter(index + 3, summary.count)?;
            index += 4;
        }
        upsert.raw_execute()?;
    }
    Ok(())
}

/// Read-only connections for the big reads (chart series, reports), used
/// on blocking threads.
///
/// Through sqlx each row is copied value by value and handed from its
/// worker thread to the request: about 45% of a 30-day chart's time and
/// most of a 100k-row report's (profiles in docs/benchmarks.md). Read here,
/// the values go straight into their final shape. WAL mode lets these read
/// while the writer commits.
struct BlockingReaders {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl BlockingReaders {
    fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection, on a blocking thread.
    async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || readers.with_connection(read))
            .await
            .map_err(|e| Error::Internal(format!("SQLite reader task: {e}")))?
    }

    /// Runs `read` on an idle connection, on this (blocking) thread.
    fn with_connection<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let connection = self.checkout()?;
        let result = read(&connection);
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(connection);
        Ok(result?)
    }

    fn checkout(&self) -> Result<rusqlite::Connection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop();
        if let Some(connection) = idle {
            return Ok(connection);
        }
        let connection = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(10))?;
        Ok(connection)
    }
}

fn read_series(
    connection: &rusqlite::Connection,
    query: &SeriesQuery,
) -> rusqlite::Result<Vec<Bucket>> {
    let mut statement =
        connection.prepare_cached(&rollup::series_sql(query, ["?1", "?2", "?3"]))?;
    let mut rows = statement.query((query.client_id, query.start_us, query.end_us))?;
    let mut buckets = Vec::new();
    while let Some(row) = rows.next()? {
        let summary = |column: usize| -> rusqlite::Result<rollup::SummaryColumns> {
            Ok((
                row.get(column)?,
                row.get(column + 1)?,
                row.get(column + 2)?,
                row.get(column + 3)?,
            ))
        };
        buckets.push(rollup::bucket_from_columns(
            query,
            row.get(0)?,
            row.get(1)?,
            summary,
        )?);
    }
    Ok(buckets)
}

/// Reads a client's samples into `sender` chunk by chunk; stops early when
/// the receiver is gone (the client hung up).
fn send_samples(
    connection: &rusqlite::Connection,
    client: ClientId,
    start_us: i64,
    end_us: i64,
    sender: &mpsc::Sender<Result<Vec<Sample>>>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare_cached(
        "SELECT time_us, cpu_load, mem, storage FROM samples
         WHERE client_id = ?1 AND time_us >= ?2 AND time_us <= ?3 ORDER BY time_us",
    )?;
    let mut rows = statement.query((client.0, start_us, end_us))?;
    let mut chunk = Vec::with_capacity(SAMPLE_CHUNK_ROWS);
    while let Some(row) = rows.next()? {
        chunk.push(sample_from_row(
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
        ));
        if chunk.len() == SAMPLE_CHUNK_ROWS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(SAMPLE_CHUNK_ROWS));
            if sender.blocking_send(Ok(full)).is_err() {
                return Ok(());
            }
        }
    }
    if !chunk.is_empty() {
        let _ = sender.blocking_send(Ok(chunk));
    }
    Ok(())
}

/// Runs a blocking store call on a blocking thread.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(call)
        .await
        .map_err(|e| Error::Internal(format!("SQLite writer task: {e}")))?
}

fn read_orphans(
    connection: &rusqlite::Connection,
    live: InstanceId,
    limit: usize,
) -> rusqlite::Result<Result<Vec<JournalEntry>>> {
    let mut statement = connection.prepare_cached(
        "SELECT seq, keys FROM rollup_journal WHERE instance_id <> ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map((live.0, limit), |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, keys) = row?;
        let Some(keys) = journal::unpack_keys(&keys) else {
            return Ok(Err(Error::Internal(format!(
                "rollup journal entry {seq} is not a list of sample keys"
            ))));
        };
        entries.push(JournalEntry { seq, keys });
    }
    Ok(Ok(entries))
}

fn read_samples_by_keys(
    connection: &rusqlite::Connection,
    keys: &[SampleKey],
) -> rusqlite::Result<Vec<ClientSample>> {
    let mut statement = connection.prepare_cached(&format!(
        "SELECT {} FROM samples WHERE client_id = ?1 AND time_us = ?2",
        sample_columns()
    ))?;
    let mut samples = Vec::with_capacity(keys.len());
    for &(client, time) in keys {
        let mut rows = statement.query((client, time))?;
        if let Some(row) = rows.next()? {
            let sample =
                full_sample_from_columns(time, 2, |index| row.get(index), |index| row.get(index))?;
            samples.push(ClientSample {
                client: ClientId(client),
                sample,
            });
        }
    }
    Ok(samples)
}

impl_client_store!(SqliteStore);
impl_sample_reads!(SqliteStore);
impl_user_store!(SqliteStore);

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

    async fn fold(
        &self,
        fold: Arc<Fold>,
        before_commit: Arc<dyn Fn() + Send + Sync>,
    ) -> Result<()> {
        let writer = self.writer.clone();
        blocking(move || writer.fold(&fold, before_commit.as_ref())).await
    }

    /// The file has one server, so every other instance's entries are
    /// orphans: left by an earlier run, or by a claim this run gave up.
    async fn orphaned_journal(&self, live: InstanceId, limit: usize) -> Result<Vec<JournalEntry>> {
        self.readers
            .read(move |connection| read_orphans(connection, live, limit))
            .await?
    }

    async fn samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>> {
        self.readers
            .read(move |connection| read_samples_by_keys(connection, &keys))
            .await
    }

    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks> {
        let (start, end) = range.bounds_micros();
        let (sender, chunks) = sample_chunks();
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let read = readers.with_connection(|connection| {
                send_samples(connection, client, start, end, &sender)
            });
            if let Err(error) = read {
                let _ = sender.blocking_send(Err(error));
            }
        });
        Ok(chunks)
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Bucket>> {
        let query = query.clone();
        self.readers
            .read(move |connection| read_series(connection, &query))
            .await
    }

    async fn prune(&self, tier: Tier, before_us: i64) -> Result<u64> {
        let clients = sqlx::query_scalar::<_, i64>("SELECT id FROM clients")
            .fetch_all(&self.pool)
            .await?;
        let mut deleted = 0;
        // One client at a time, so the single writer lock is never held
        // long enough to stall ingest.
        for client in clients {
            let mut transaction = self.pool.begin().await?;
            if tier == Tier::Raw {
                sqlx::query("DELETE FROM sample_filesystems WHERE client_id = ? AND time_us < ?")
                    .bind(client)
                    .bind(before_us)
                    .execute(&mut *transaction)
                    .await?;
            }
            deleted += sqlx::query(&format!(
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
        }
        Ok(deleted)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
