//! The production store: PostgreSQL.

mod announcements;
mod completion;
mod reads;
mod replica;

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::Connection;
use sqlx::{PgPool, Row};
use sysmon_core::metrics::CHARTED;
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::Sample;
use tokio::sync::mpsc;

use super::copy_binary::SampleRowDecoder;
use super::partitions::Partitions;
use super::rollup::{self, Bucket, SeriesQuery, Tier};
use super::{
    filesystem_rows, full_sample_from_row, redact_password, sample_chunks, sample_columns,
    ClientId, ClientSample, Column, Durability, Fold, FoldProgress, Inserted, InstanceId,
    JournalEntry, SampleChunks, SampleKey, SampleRow, Store, TimeRange, SAMPLE_CHUNK_ROWS,
    SAMPLE_COLUMN_COUNT,
};
use crate::error::{Error, Result};

/// Connections for everything but ingest: reads, reports, logins, upkeep.
const MAX_CONNECTIONS: u32 = 16;
/// Connections for ingest and the rollup fold, which readers cannot take:
/// reports that stall (a client reading slowly) never starve writes.
const WRITER_CONNECTIONS: u32 = 10;
/// Connections for streamed reports and exports, which last as long as
/// their client takes to read them: at most this many run at once, and
/// the rest wait (then get 503) without holding up logins and charts.
const STREAM_CONNECTIONS: u32 = 8;

pub struct PostgresStore {
    pool: PgPool,
    /// Ingest's own connections (see [`WRITER_CONNECTIONS`]).
    writers: PgPool,
    /// Streamed reports' own connections (see [`STREAM_CONNECTIONS`]).
    streams: PgPool,
    /// For connections of its own, outside the pool.
    options: PgConnectOptions,
    /// The connection holding this process's instance claim (an advisory
    /// lock lives as long as the session that took it).
    instance_lock: tokio::sync::Mutex<Option<(InstanceId, PgConnection)>>,
    /// The samples tables' day partitions (see partitions.rs).
    partitions: Partitions,
    /// This store's random id in the announcements of its commits, so it
    /// skips its own (see announcements.rs).
    announcer: i64,
    /// The connection the leader lock is held or tried on, and whether it
    /// holds it: one connection a server, not one per try.
    leader: tokio::sync::Mutex<Option<(PgConnection, bool)>>,
    /// Sessions that took the leader lock (see [`Store::leader_session`]).
    lock_sessions: std::sync::atomic::AtomicU64,
    /// The leader lock's advisory-lock key (see [`leader_lock_key`]), which
    /// also names this deployment's announcements channel.
    leader_lock: i64,
    /// Where reports, exports, charts and pages of samples are read, when
    /// it has caught up (`read_replica_url`).
    replica: Option<replica::Replica>,
}

/// `pg_try_advisory_lock` on the leader lock, within `wait`.
async fn try_leader_lock(connection: &mut PgConnection, key: i64, wait: Duration) -> Result<bool> {
    let tried = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(connection);
    tokio::time::timeout(wait, tried)
        .await
        .map_err(|_| Error::Internal("the leader lock did not answer within 0.8 s".into()))?
        .map_err(Error::from)
}

/// The leader lock's key: advisory locks are per database, so the key
/// names the schema too (two deployments in one database, or the tests'
/// schemas, each have their leader), and it is negative, where instance
/// claims are positive.
async fn leader_lock_key(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT hashtextextended('sysmon leader ' || current_database() || '.' || current_schema(), 0)
                | (1::BIGINT << 63)",
    )
    .fetch_one(pool)
    .await?)
}

impl PostgresStore {
    pub async fn connect(
        url: &str,
        durability: Durability,
        read_replica: Option<super::ReadReplica>,
    ) -> Result<Self> {
        let shown = redact_password(url);
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid PostgreSQL URL `{shown}`: {e}")))?;
        if durability == Durability::Relaxed {
            // For every write of this server, which is almost all ingest.
            options = options.options([("synchronous_commit", "off")]);
        }
        // A query over every day partition of the samples (a client's first
        // and latest sample) is costed high enough for PostgreSQL to compile
        // it with JIT: with a year of days, 27 s for the fleet overview
        // instead of 0.3 s.
        options = options.options([("jit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(|e| {
                Error::Config(format!("cannot connect to PostgreSQL at `{shown}`: {e}"))
            })?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let partitions = Partitions::load(&pool).await?;
        let leader_lock = leader_lock_key(&pool).await?;
        let lazy_pool = |connections| {
            PgPoolOptions::new()
                .max_connections(connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options.clone())
        };
        let (writers, streams) = (lazy_pool(WRITER_CONNECTIONS), lazy_pool(STREAM_CONNECTIONS));
        Ok(Self {
            pool,
            writers,
            streams,
            options,
            instance_lock: tokio::sync::Mutex::new(None),
            partitions,
            announcer: rand::random::<i64>() & i64::MAX,
            leader: tokio::sync::Mutex::new(None),
            lock_sessions: std::sync::atomic::AtomicU64::new(0),
            leader_lock,
            replica: read_replica
                .map(|replica| replica::Replica::connect(&replica.url, replica.reads))
                .transpose()?,
        })
    }

    /// The pools a read of samples or rollups uses: the replica's when one
    /// is configured and has caught up, else the primary's.
    async fn read_pools(&self) -> replica::ReadPools<'_> {
        match &self.replica {
            Some(replica) => replica.pools_for_read(&self.pool, &self.streams).await,
            None => replica::ReadPools {
                queries: &self.pool,
                streams: &self.streams,
            },
        }
    }
}

/// A batch in one statement: the samples go in as one array per column
/// (UNNEST makes rows of them), the rows actually inserted (not the
/// replays) come back out of `RETURNING`, and their keys become the
/// commit's rollup journal entry, whose seq every returned row carries.
/// One statement is one implicit transaction and one round trip. Arrays
/// are typed from the rows' own columns, so the SQL and the binds cannot
/// disagree.
fn insert_batch(
    rows: &[SampleRow],
    filesystems: &[(i64, i64, &FilesystemUsage)],
    instance: InstanceId,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let first_fs = SAMPLE_COLUMN_COUNT + 1;
        // File systems of new rows only: those of a sample stored before
        // are a part completing it (completion.rs), bounded there.
        format!(
            "WITH new AS (
               INSERT INTO samples ({}) SELECT * FROM UNNEST({})
               ON CONFLICT (client_id, time_us) DO NOTHING
               RETURNING client_id, time_us
             ), filesystems AS (
               INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
               SELECT f.* FROM UNNEST(${a}::BIGINT[], ${b}::BIGINT[], ${c}::TEXT[], ${d}::BIGINT[], ${e}::BIGINT[])
                 AS f (client_id, time_us, mount_point, used_bytes, total_bytes)
               JOIN new USING (client_id, time_us)
               ON CONFLICT DO NOTHING
             ), journal AS (
               INSERT INTO rollup_journal (instance_id, client_ids, times_us)
               SELECT ${instance}, array_agg(client_id), array_agg(time_us) FROM new
               HAVING COUNT(*) > 0
               RETURNING seq
             )
             SELECT client_id, time_us, (SELECT seq FROM journal) FROM new",
            sample_columns(),
            sample_arrays(),
            a = first_fs,
            b = first_fs + 1,
            c = first_fs + 2,
            d = first_fs + 3,
            e = first_fs + 4,
            instance = first_fs + 5,
        )
    });
    let query = bind_sample_arrays(sqlx::query(sql.as_str()), rows);
    bind_filesystems(query, filesystems).bind(instance.0)
}

/// `$1::BIGINT[], $2::FLOAT8[], ...`: one array parameter per column of
/// [`sample_columns`], typed from the rows' own columns, so the SQL and
/// [`bind_sample_arrays`] cannot disagree.
fn sample_arrays() -> String {
    SampleRow::column_kinds()
        .enumerate()
        .map(|(index, column)| match column {
            Column::Integer(_) => format!("${}::BIGINT[]", index + 1),
            Column::Float(_) => format!("${}::FLOAT8[]", index + 1),
        })
        .collect::<Vec<String>>()
        .join(", ")
}

/// `SELECT` every column of the samples with the keys in `$1` (client ids)
/// and `$2` (times), then `rest` (an order, a lock).
fn samples_by_keys_sql(rest: &str) -> String {
    let columns: Vec<String> = sample_columns()
        .split(", ")
        .map(|column| format!("s.{column}"))
        .collect();
    format!(
        "SELECT {} FROM samples s
         JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS k (client_id, time_us)
           ON s.client_id = k.client_id AND s.time_us = k.time_us {rest}",
        columns.join(", ")
    )
}

/// The stored samples with these keys, with their file systems; `rest`
/// ends the samples' statement (an order, a lock).
async fn read_samples_by_keys(
    connection: &mut sqlx::PgConnection,
    keys: &[SampleKey],
    rest: &str,
) -> Result<std::collections::HashMap<SampleKey, sysmon_core::Sample>> {
    let (clients, times): (Vec<i64>, Vec<i64>) = keys.iter().copied().unzip();
    let rows = sqlx::query(&samples_by_keys_sql(rest))
        .bind(&clients)
        .bind(&times)
        .fetch_all(&mut *connection)
        .await?;
    let mut stored = std::collections::HashMap::with_capacity(rows.len());
    for row in &rows {
        let sample = full_sample_from_row(row, 0)?;
        stored.insert((row.try_get(0)?, sample.time.micros()), sample);
    }
    let filesystems = sqlx::query(
        "SELECT f.client_id, f.time_us, f.mount_point, f.used_bytes, f.total_bytes
         FROM sample_filesystems f
         JOIN UNNEST($1::BIGINT[], $2::BIGINT[]) AS k (client_id, time_us)
           ON f.client_id = k.client_id AND f.time_us = k.time_us",
    )
    .bind(&clients)
    .bind(&times)
    .fetch_all(&mut *connection)
    .await?;
    for row in &filesystems {
        let key: SampleKey = (row.try_get(0)?, row.try_get(1)?);
        if let Some(sample) = stored.get_mut(&key) {
            sample
                .extended
                .get_or_insert_with(Default::default)
                .filesystems
                .push(sysmon_core::v1::FilesystemUsage {
                    mount_point: row.try_get(2)?,
                    used_bytes: row.try_get::<i64, _>(3)?.max(0) as u64,
                    total_bytes: row.try_get::<i64, _>(4)?.max(0) as u64,
                });
        }
    }
    Ok(stored)
}

/// Binds rows as the arrays of [`sample_arrays`].
fn bind_sample_arrays<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &[SampleRow],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let columns: Vec<Vec<Column>> = rows.iter().map(|row| row.columns().collect()).collect();
    for (index, kind) in SampleRow::column_kinds().enumerate() {
        query = match kind {
            Column::Integer(_) => query.bind(
                columns
                    .iter()
                    .map(|row| match row[index] {
                        Column::Integer(value) => value,
                        Column::Float(_) => None,
                    })
                    .collect::<Vec<Option<i64>>>(),
            ),
            Column::Float(_) => query.bind(
                columns
                    .iter()
                    .map(|row| match row[index] {
                        Column::Float(value) => value,
                        Column::Integer(_) => None,
                    })
                    .collect::<Vec<Option<f64>>>(),
            ),
        };
    }
    query
}

/// Binds (client, time, file system) rows as five arrays: client ids,
/// times, mount points, used and total bytes.
fn bind_filesystems<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    filesystems: &[(i64, i64, &FilesystemUsage)],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let column = |pick: &dyn Fn(&(i64, i64, &FilesystemUsage)) -> i64| {
        filesystems.iter().map(pick).collect::<Vec<i64>>()
    };
    query
        .bind(column(&|(client, _, _)| *client))
        .bind(column(&|(_, time, _)| *time))
        .bind(
            filesystems
                .iter()
                .map(|(_, _, fs)| fs.mount_point.clone())
                .collect::<Vec<String>>(),
        )
        .bind(column(&|(_, _, fs)| fs.used_bytes as i64))
        .bind(column(&|(_, _, fs)| fs.total_bytes as i64))
}

/// The upsert of a tier's buckets from one array per rollup column, merging
/// into stored rows; the same text every time, so PostgreSQL plans it once.
fn upsert_buckets(
    tier: Tier,
    buckets: &[Bucket],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        let mut types = vec!["BIGINT[]"; 3];
        for _ in CHARTED {
            types.extend(["FLOAT8[]", "FLOAT8[]", "FLOAT8[]", "BIGINT[]"]);
        }
        let arrays: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(index, kind)| format!("${}::{kind}", index + 1))
            .collect();
        Tier::ROLLUPS
            .iter()
            .map(|tier| {
                format!(
                    "INSERT INTO {} AS t ({}) SELECT * FROM UNNEST({}){}",
                    tier.table(),
                    rollup::rollup_columns(),
                    arrays.join(", "),
                    rollup::merge_on_conflict()
                )
            })
            .collect()
    });
    let column = |pick: &dyn Fn(&Bucket) -> i64| buckets.iter().map(pick).collect::<Vec<i64>>();
    let mut query = sqlx::query(all[tier.rollup_index()].as_str())
        .bind(column(&|bucket| bucket.client_id))
        .bind(column(&|bucket| bucket.start_us))
        .bind(column(&|bucket| bucket.sample_count));
    for index in 0..CHARTED.len() {
        let summaries = || buckets.iter().map(move |bucket| bucket.metrics[index]);
        query = query
            .bind(summaries().map(|s| s.min).collect::<Vec<Option<f64>>>())
            .bind(summaries().map(|s| s.max).collect::<Vec<Option<f64>>>())
            .bind(summaries().map(|s| s.sum).collect::<Vec<f64>>())
            .bind(summaries().map(|s| s.count).collect::<Vec<i64>>());
    }
    query
}

impl_client_store!(PostgresStore, sqlx::Postgres);
impl_user_store!(PostgresStore);
impl_enrollment_store!(PostgresStore);
impl_fleet_token_store!(PostgresStore);
impl_alert_store!(PostgresStore, sqlx::PgConnection, lock_rows: "FOR SHARE");

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn max_concurrent_writers(&self) -> usize {
        // Leave writer connections for the fold and orphan recovery.
        WRITER_CONNECTIONS as usize - 2
    }

    async fn claim_instance(&self) -> Result<InstanceId> {
        let instance = InstanceId::random();
        let mut connection = PgConnection::connect_with(&self.options).await?;
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(instance.0)
            .execute(&mut connection)
            .await?;
        // Replacing the connection closes the previous one, releasing its lock.
        *self.instance_lock.lock().await = Some((instance, connection));
        Ok(instance)
    }

    async fn instance_alive(&self, instance: InstanceId) -> bool {
        let mut held = self.instance_lock.lock().await;
        match held.as_mut() {
            Some((claimed, connection)) if *claimed == instance => connection.ping().await.is_ok(),
            _ => false,
        }
    }

    async fn insert_samples(
        &self,
        samples: Arc<[ClientSample]>,
        instance: InstanceId,
    ) -> Result<Inserted> {
        let samples = &samples[..];
        // One statement whatever the batch size: arrays in, UNNEST out. Rows
        // are sorted so concurrent writers lock keys in the same order.
        let mut rows: Vec<SampleRow> = samples.iter().map(SampleRow::from_sample).collect();
        rows.sort_by_key(|row| (row.client_id, row.time_us));
        let filesystems = filesystem_rows(samples);
        let (rows, filesystems, pool) = (&rows, &filesystems, &self.writers);
        let times = rows.iter().map(|row| row.time_us);
        let mut inserted = self
            .partitions
            .insert_with(pool, times, move || async move {
                let mut inserted = Inserted::default();
                let mut journal: Option<i64> = None;
                for row in insert_batch(rows, filesystems, instance)
                    .fetch_all(pool)
                    .await?
                {
                    inserted.keys.push((row.try_get(0)?, row.try_get(1)?));
                    journal = row.try_get(2)?;
                }
                inserted.journal.extend(journal);
                Ok(inserted)
            })
            .await?;
        if inserted.keys.len() < samples.len() {
            // Replays, or parts completing stored samples: a second
            // transaction, only for them. Should it fail, the batch is
            // refused and its retry finds the new rows stored (replays).
            let new: HashSet<SampleKey> = inserted.keys.iter().copied().collect();
            let mut parts: Vec<&ClientSample> = samples
                .iter()
                .filter(|row| !new.contains(&(row.client.0, row.sample.time.micros())))
                .collect();
            parts.sort_by_key(|row| (row.client.0, row.sample.time.micros()));
            match completion::complete_stored(pool, &parts).await {
                Ok(completion) => {
                    inserted.completed = completion.added;
                    inserted.deferred = completion.deferred;
                }
                // The new rows are committed with their journal entry: the
                // caller must record them whatever happens here. The parts
                // go the way of pending ones: tried again after a fold,
                // refused with 503 if that fails too.
                Err(error) => {
                    tracing::warn!(%error, parts = parts.len(), "completing stored samples failed; trying again after a fold");
                    inserted.deferred = parts
                        .iter()
                        .map(|row| (row.client.0, row.sample.time.micros()))
                        .collect();
                }
            }
        }
        Ok(inserted)
    }

    async fn fold(&self, fold: Arc<Fold>, progress: Arc<dyn FoldProgress>) -> Result<()> {
        let mut transaction = self.writers.begin().await?;
        for (tier, buckets) in fold.tier_buckets() {
            if !buckets.is_empty() {
                upsert_buckets(tier, buckets)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
        let deleted = sqlx::query("DELETE FROM rollup_journal WHERE seq = ANY($1)")
            .bind(&fold.journal)
            .execute(&mut *transaction)
            .await?
            .rows_affected();
        if deleted != fold.journal.len() as u64 {
            return Err(Error::FoldConflict {
                expected: fold.journal.len(),
                found: deleted as usize,
            });
        }
        progress.committing();
        transaction.commit().await?;
        progress.committed(i64::MAX);
        Ok(())
    }

    /// Entries of instances whose advisory lock is free: their server is
    /// gone (or gave the claim up), taking its summaries with it.
    async fn orphaned_journal(&self, live: InstanceId, limit: usize) -> Result<Vec<JournalEntry>> {
        let mut connection = self.writers.acquire().await?;
        let instances: Vec<i64> = sqlx::query_scalar(
            "SELECT DISTINCT instance_id FROM rollup_journal WHERE instance_id <> $1",
        )
        .bind(live.0)
        .fetch_all(&mut *connection)
        .await?;
        let mut lapsed = Vec::new();
        for instance in instances {
            let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(instance)
                .fetch_one(&mut *connection)
                .await?;
            if free {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(instance)
                    .execute(&mut *connection)
                    .await?;
                lapsed.push(instance);
            }
        }
        if lapsed.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as::<_, (i64, Vec<i64>, Vec<i64>)>(
            "SELECT seq, client_ids, times_us FROM rollup_journal
             WHERE instance_id = ANY($1) ORDER BY seq LIMIT $2",
        )
        .bind(&lapsed)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut *connection)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, clients, times)| JournalEntry {
                seq,
                keys: clients.into_iter().zip(times).collect(),
            })
            .collect())
    }

    async fn whole_samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>> {
        let mut connection = self.pool.acquire().await?;
        let mut samples: Vec<ClientSample> = read_samples_by_keys(&mut connection, &keys, "")
            .await?
            .into_iter()
            .map(|((client, _), sample)| ClientSample {
                client: ClientId(client),
                sample,
            })
            .collect();
        samples.sort_by_key(|row| (row.client.0, row.sample.time.micros()));
        Ok(samples)
    }

    async fn samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>> {
        let (clients, times): (Vec<i64>, Vec<i64>) = keys.into_iter().unzip();
        let rows = sqlx::query(&samples_by_keys_sql(""))
            .bind(clients)
            .bind(times)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ClientSample {
                    client: ClientId(row.try_get(0)?),
                    sample: full_sample_from_row(row, 0)?,
                })
            })
            .collect()
    }

    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks> {
        let (start, end) = range.bounds_micros();
        let (sender, chunks) = sample_chunks();
        let pool = self.read_pools().await.streams.clone();
        tokio::spawn(async move {
            if let Err(error) = send_samples(&pool, client, start, end, &sender).await {
                let _ = sender.send(Err(error)).await;
            }
        });
        Ok(chunks)
    }

    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Bucket>> {
        let rows = sqlx::query(&rollup::series_sql(query, ["$1", "$2", "$3"]))
            .bind(query.client_id)
            .bind(query.start_us)
            .bind(query.end_us)
            .fetch_all(self.read_pools().await.queries)
            .await?;
        rows.iter()
            .map(|row| rollup::bucket_from_row(row, query))
            .collect()
    }

    async fn prune(&self, tier: Tier, before_us: i64) -> Result<u64> {
        if tier == Tier::Raw {
            // Whole days of samples and file systems, never single rows.
            return self.partitions.drop_before(&self.pool, before_us).await;
        }
        let clients = sqlx::query_scalar::<_, i64>("SELECT id FROM clients")
            .fetch_all(&self.pool)
            .await?;
        let sql = format!(
            "DELETE FROM {} WHERE client_id = $1 AND {} < $2",
            tier.table(),
            tier.time_column()
        );
        let mut deleted = 0;
        // A statement per client: each stays short and uses the primary key.
        for client in clients {
            deleted += sqlx::query(&sql)
                .bind(client)
                .bind(before_us)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }

    async fn hold_leadership(&self) -> Result<bool> {
        // Bounded waits: a half-open connection is given up, not waited on.
        const WAIT: Duration = Duration::from_millis(800);
        // Busy storing transitions, which happens only while it leads, 0.8 s
        // at most at a time: the session holds the lock.
        let Ok(mut kept) = self.leader.try_lock() else {
            return Ok(true);
        };
        if let Some((connection, leading)) = kept.as_mut() {
            let alive = tokio::time::timeout(WAIT, connection.ping()).await;
            if matches!(alive, Ok(Ok(()))) {
                if *leading {
                    return Ok(true);
                }
                *leading = try_leader_lock(connection, self.leader_lock, WAIT).await?;
                if *leading {
                    self.lock_sessions.fetch_add(1, Ordering::SeqCst);
                }
                return Ok(*leading);
            }
            // Gone, and any lock with it; start afresh.
            *kept = None;
        }
        // A cut network must not keep a dead session (and the lock, and the
        // rows a transition store locked) alive for hours on the server.
        let options = self.options.clone().options([
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_keepalives_count", "3"),
            ("tcp_user_timeout", "10000"),
            ("idle_in_transaction_session_timeout", "5000"),
        ]);
        let mut connection = tokio::time::timeout(WAIT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                Error::Internal("no connection for the leader lock within 0.8 s".into())
            })??;
        let leading = try_leader_lock(&mut connection, self.leader_lock, WAIT).await?;
        if leading {
            self.lock_sessions.fetch_add(1, Ordering::SeqCst);
        }
        *kept = Some((connection, leading));
        Ok(leading)
    }

    fn leader_session(&self) -> u64 {
        self.lock_sessions.load(Ordering::SeqCst)
    }

    async fn record_alert_events_as_leader(
        &self,
        events: &[super::NewAlertEvent],
    ) -> Result<Option<Vec<i64>>> {
        /// Transitions per transaction: the lock's session is held a few
        /// milliseconds at a time, so the leadership check gets in between.
        const CHUNK: usize = 200;
        /// Longest one chunk may take; past it the session is given up
        /// (and the lock with it). The leadership check counts a session
        /// busy storing as leading, so this also bounds how long a dead
        /// session can pass for a live one.
        const CHUNK_WAIT: Duration = Duration::from_millis(800);
        let mut removed = Vec::new();
        for chunk in events.chunks(CHUNK) {
            let mut kept = self.leader.lock().await;
            let Some((connection, true)) = kept.as_mut() else {
                // Chunks already stored stand; the rest is decided again
                // by whoever leads next, from what is stored.
                return Ok(None);
            };
            match tokio::time::timeout(CHUNK_WAIT, Self::record_alert_events_on(connection, chunk))
                .await
            {
                Ok(Ok(left_out)) => removed.extend(left_out),
                Ok(Err(error)) => {
                    // The session may be gone: a new one is a new term.
                    *kept = None;
                    return Err(error);
                }
                Err(_) => {
                    *kept = None;
                    return Err(Error::Internal(
                        "storing alert transitions took over 0.8 s; the leader lock is given up"
                            .into(),
                    ));
                }
            }
        }
        Ok(Some(removed))
    }

    async fn announce_committed(&self, announcement: &super::Announcement) -> Result<()> {
        let channel = announcements::channel(self.leader_lock);
        announcements::announce(&self.pool, &channel, self.announcer, announcement).await
    }

    fn hear_committed(
        &self,
        stop: tokio_util::sync::CancellationToken,
    ) -> Option<mpsc::Receiver<super::Announcement>> {
        let channel = announcements::channel(self.leader_lock);
        Some(announcements::hear(
            self.pool.clone(),
            channel,
            self.announcer,
            stop,
        ))
    }

    async fn prepare_ahead(&self, now_us: i64) -> Result<()> {
        self.partitions.create_ahead(&self.pool, now_us).await
    }

    async fn close(&self) {
        self.pool.close().await;
        self.writers.close().await;
        self.streams.close().await;
        if let Some(replica) = &self.replica {
            replica.close().await;
        }
    }
}

/// Reads a client's samples into `sender` chunk by chunk as PostgreSQL
/// sends them (binary COPY, see [`copy_binary`]); stops early when the
/// receiver is gone (the client hung up).
async fn send_samples(
    pool: &PgPool,
    client: ClientId,
    start_us: i64,
    end_us: i64,
    sender: &mpsc::Sender<Result<Vec<Sample>>>,
) -> Result<()> {
    // COPY takes no bind parameters; these are integers formatted here.
    let statement = format!(
        "COPY (SELECT time_us, cpu_load, mem, storage FROM samples
               WHERE client_id = {} AND time_us >= {start_us} AND time_us <= {end_us}
               ORDER BY time_us) TO STDOUT (FORMAT binary)",
        client.0
    );
    let mut connection = pool.acquire().await?;
    let outcome = copy_samples(&mut connection, &statement, sender).await;
    if !matches!(outcome, Ok(Copy::Complete)) {
        // A COPY left part way leaves its rows in the connection's stream:
        // close the connection rather than give it to the next query.
        connection.close_on_drop();
    }
    outcome.map(|_| ())
}

/// How a COPY out ended.
enum Copy {
    Complete,
    Abandoned,
}

async fn copy_samples(
    connection: &mut PgConnection,
    statement: &str,
    sender: &mpsc::Sender<Result<Vec<Sample>>>,
) -> Result<Copy> {
    let mut data = connection.copy_out_raw(statement).await?;
    let mut decoder = SampleRowDecoder::default();
    let mut chunk = Vec::with_capacity(SAMPLE_CHUNK_ROWS);
    while let Some(bytes) = data.try_next().await? {
        decoder.feed(&bytes, &mut chunk)?;
        if chunk.len() >= SAMPLE_CHUNK_ROWS {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(SAMPLE_CHUNK_ROWS));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(Copy::Abandoned);
            }
        }
    }
    decoder.finish()?;
    if !chunk.is_empty() {
        let _ = sender.send(Ok(chunk)).await;
    }
    Ok(Copy::Complete)
}
