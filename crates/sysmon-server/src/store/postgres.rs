//! The production store: PostgreSQL.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::{PgPool, Row};
use sysmon_core::metrics::CHARTED;
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::Sample;
use tokio::sync::mpsc;

use super::copy_binary::SampleRowDecoder;
use super::partitions::Partitions;
use super::rollup::{self, Bucket, SeriesQuery, Tier};
use super::{
    filesystem_rows, redact_password, sample_chunks, sample_columns, ClientId, ClientSample,
    Column, Durability, SampleChunks, SampleKey, SampleRow, Store, TimeRange, SAMPLE_CHUNK_ROWS,
};
use crate::error::{Error, Result};

const MAX_CONNECTIONS: u32 = 16;

pub struct PostgresStore {
    pool: PgPool,
    /// The samples tables' day partitions (see partitions.rs).
    partitions: Partitions,
}

impl PostgresStore {
    pub async fn connect(url: &str, durability: Durability) -> Result<Self> {
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
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::Config(format!("cannot connect to PostgreSQL at `{shown}`: {e}"))
            })?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        let partitions = Partitions::load(&pool).await?;
        Ok(Self { pool, partitions })
    }
}

/// A batch in one statement: the samples go in as one array per column
/// (UNNEST makes rows of them), and the rows actually inserted (not the
/// replays) come back out of `RETURNING` to be summarised into every rollup
/// tier and returned. One statement is one implicit transaction and one
/// round trip, where separate statements took six. Arrays are typed from
/// the rows' own columns, so the SQL and the binds cannot disagree.
fn insert_batch(
    rows: &[SampleRow],
    filesystems: &[(i64, i64, &FilesystemUsage)],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    static SQL: OnceLock<String> = OnceLock::new();
    let template: Vec<Column> = SampleRow::column_kinds().collect();
    let sql = SQL.get_or_init(|| {
        let arrays: Vec<String> = template
            .iter()
            .enumerate()
            .map(|(index, column)| match column {
                Column::Integer(_) => format!("${}::BIGINT[]", index + 1),
                Column::Float(_) => format!("${}::FLOAT8[]", index + 1),
            })
            .collect();
        let first_fs = template.len() + 1;
        let metrics: Vec<&str> = CHARTED.iter().map(|m| m.name).collect();
        let mut sql = format!(
            "WITH new AS (
               INSERT INTO samples ({}) SELECT * FROM UNNEST({arrays})
               ON CONFLICT (client_id, time_us) DO NOTHING
               RETURNING client_id, time_us, {metrics}
             ), filesystems AS (
               INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
               SELECT * FROM UNNEST(${a}::BIGINT[], ${b}::BIGINT[], ${c}::TEXT[], ${d}::BIGINT[], ${e}::BIGINT[])
               ON CONFLICT DO NOTHING
             )",
            sample_columns(),
            arrays = arrays.join(", "),
            metrics = metrics.join(", "),
            a = first_fs,
            b = first_fs + 1,
            c = first_fs + 2,
            d = first_fs + 3,
            e = first_fs + 4,
        );
        for tier in Tier::ROLLUPS {
            sql.push_str(&format!(
                ", {table} AS (INSERT INTO {table} AS t ({columns}) {aggregate}{merge})",
                table = tier.table(),
                columns = rollup::rollup_columns(),
                aggregate = rollup::aggregate_sql(tier, "new"),
                merge = rollup::merge_on_conflict(),
            ));
        }
        sql.push_str(" SELECT client_id, time_us FROM new");
        sql
    });
    let columns: Vec<Vec<Column>> = rows.iter().map(|row| row.columns().collect()).collect();
    let mut query = sqlx::query(sql.as_str());
    for (index, kind) in template.iter().enumerate() {
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
        .bind(
            filesystems
                .iter()
                .map(|(client, _, _)| *client)
                .collect::<Vec<i64>>(),
        )
        .bind(
            filesystems
                .iter()
                .map(|(_, time, _)| *time)
                .collect::<Vec<i64>>(),
        )
        .bind(
            filesystems
                .iter()
                .map(|(_, _, fs)| fs.mount_point.clone())
                .collect::<Vec<String>>(),
        )
        .bind(
            filesystems
                .iter()
                .map(|(_, _, fs)| fs.used_bytes as i64)
                .collect::<Vec<i64>>(),
        )
        .bind(
            filesystems
                .iter()
                .map(|(_, _, fs)| fs.total_bytes as i64)
                .collect::<Vec<i64>>(),
        )
}

impl_client_store!(PostgresStore);
impl_user_store!(PostgresStore);

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn max_concurrent_writers(&self) -> usize {
        // Leave pool connections for reads and registrations.
        MAX_CONNECTIONS as usize / 2
    }

    async fn insert_samples(&self, samples: Arc<[ClientSample]>) -> Result<Vec<SampleKey>> {
        let samples = &samples[..];
        // One statement whatever the batch size: arrays in, UNNEST out. Rows
        // are sorted so concurrent writers lock keys in the same order.
        let mut rows: Vec<SampleRow> = samples.iter().map(SampleRow::from_sample).collect();
        rows.sort_by_key(|row| (row.client_id, row.time_us));
        let filesystems = filesystem_rows(samples);
        let (rows, filesystems, pool) = (&rows, &filesystems, &self.pool);
        let times = rows.iter().map(|row| row.time_us);
        self.partitions
            .insert_with(pool, times, move || async move {
                insert_batch(rows, filesystems)
                    .fetch_all(pool)
                    .await?
                    .into_iter()
                    .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)))
                    .collect()
            })
            .await
    }

    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks> {
        let (start, end) = range.bounds_micros();
        let (sender, chunks) = sample_chunks();
        let pool = self.pool.clone();
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
            .fetch_all(&self.pool)
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

    async fn prepare_ahead(&self, now_us: i64) -> Result<()> {
        self.partitions.create_ahead(&self.pool, now_us).await
    }

    async fn close(&self) {
        self.pool.close().await;
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
