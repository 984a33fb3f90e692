//! The production store: PostgreSQL.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use sysmon_core::{Sample, UnixTime};

use super::{
    attach_filesystems, filesystem_rows, full_sample_from_row, now_micros, redact_password,
    sample_from_row, ClientId, ClientRecord, ClientSample, Column, FilesystemRow, SampleKey,
    SampleRow, Store, TimeRange, TokenOwner, SAMPLE_COLUMNS,
};
use crate::error::{Error, Result};

const MAX_CONNECTIONS: u32 = 16;

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact_password(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid PostgreSQL URL `{shown}`: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| {
                Error::Config(format!("cannot connect to PostgreSQL at `{shown}`: {e}"))
            })?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(Self { pool })
    }
}

/// `INSERT ... SELECT * FROM UNNEST(...)` with one array per column, typed
/// from the rows' own columns so the SQL and the binds cannot disagree.
fn insert_sample_rows(
    rows: &[SampleRow],
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    static SQL: OnceLock<String> = OnceLock::new();
    let template = SampleRow::default().columns();
    let sql = SQL.get_or_init(|| {
        let arrays: Vec<String> = template
            .iter()
            .enumerate()
            .map(|(index, column)| match column {
                Column::Integer(_) => format!("${}::BIGINT[]", index + 1),
                Column::Float(_) => format!("${}::FLOAT8[]", index + 1),
            })
            .collect();
        format!(
            "INSERT INTO samples ({SAMPLE_COLUMNS}) SELECT * FROM UNNEST({})
             ON CONFLICT (client_id, time_us) DO NOTHING RETURNING client_id, time_us",
            arrays.join(", ")
        )
    });
    let columns: Vec<_> = rows.iter().map(SampleRow::columns).collect();
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
}

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
    }

    fn max_concurrent_writers(&self) -> usize {
        // Leave pool connections for reads and registrations.
        MAX_CONNECTIONS as usize / 2
    }

    async fn create_client(&self, name: &str, password_hash: &str) -> Result<Option<ClientId>> {
        let row = sqlx::query(
            "INSERT INTO clients (name, password_hash, created_at_us) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING RETURNING id",
        )
        .bind(name)
        .bind(password_hash)
        .bind(now_micros())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| ClientId(row.get(0))))
    }

    async fn find_client(&self, name: &str) -> Result<Option<ClientRecord>> {
        let row = sqlx::query("SELECT id, name, password_hash FROM clients WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| ClientRecord {
            id: ClientId(row.get(0)),
            name: row.get(1),
            password_hash: row.get(2),
        }))
    }

    async fn add_token(&self, client: ClientId, token_hash: &[u8]) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (token_hash, client_id, created_at_us) VALUES ($1, $2, $3)",
        )
        .bind(token_hash)
        .bind(client.0)
        .bind(now_micros())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>> {
        let row = sqlx::query(
            "SELECT c.id, c.name FROM tokens t JOIN clients c ON c.id = t.client_id
             WHERE t.token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| TokenOwner {
            id: ClientId(row.get(0)),
            name: row.get(1),
        }))
    }

    async fn insert_samples(&self, samples: &[ClientSample]) -> Result<Vec<SampleKey>> {
        // One statement whatever the batch size: arrays in, UNNEST out. Rows
        // are sorted so concurrent writers lock keys in the same order.
        let mut rows: Vec<SampleRow> = samples.iter().map(SampleRow::from_sample).collect();
        rows.sort_by_key(|row| (row.client_id, row.time_us));
        let filesystems = filesystem_rows(samples);
        let mut transaction = self.pool.begin().await?;
        let inserted = insert_sample_rows(&rows)
            .fetch_all(&mut *transaction)
            .await?
            .into_iter()
            .map(|row| Ok((row.try_get::<i64, _>(0)?, row.try_get::<i64, _>(1)?)))
            .collect::<Result<Vec<SampleKey>>>()?;
        if !filesystems.is_empty() {
            sqlx::query(
                "INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
                 SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
                 ON CONFLICT DO NOTHING",
            )
            .bind(filesystems.iter().map(|(client, _, _)| *client).collect::<Vec<i64>>())
            .bind(filesystems.iter().map(|(_, time, _)| *time).collect::<Vec<i64>>())
            .bind(filesystems.iter().map(|(_, _, fs)| fs.mount_point.clone()).collect::<Vec<String>>())
            .bind(filesystems.iter().map(|(_, _, fs)| fs.used_bytes as i64).collect::<Vec<i64>>())
            .bind(filesystems.iter().map(|(_, _, fs)| fs.total_bytes as i64).collect::<Vec<i64>>())
            .execute(&mut *transaction)
            .await?;
        }
        transaction.commit().await?;
        Ok(inserted)
    }

    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>> {
        let row =
            sqlx::query("SELECT MIN(time_us), MAX(time_us) FROM samples WHERE client_id = $1")
                .bind(client.0)
                .fetch_one(&self.pool)
                .await?;
        let first: Option<i64> = row.get(0);
        let last: Option<i64> = row.get(1);
        Ok(first
            .zip(last)
            .map(|(first, last)| (UnixTime::from_micros(first), UnixTime::from_micros(last))))
    }

    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>> {
        let (start, end) = range.bounds_micros();
        let rows = sqlx::query_as::<_, (i64, Option<f64>, Option<f64>, Option<f64>)>(
            "SELECT time_us, cpu_load, mem, storage FROM samples
             WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3 ORDER BY time_us",
        )
        .bind(client.0)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(time, cpu, mem, storage)| sample_from_row(time, cpu, mem, storage))
            .collect())
    }

    async fn full_samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>> {
        let (start, end) = range.bounds_micros();
        let rows = sqlx::query(&format!(
            "SELECT {SAMPLE_COLUMNS} FROM samples
             WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3 ORDER BY time_us"
        ))
        .bind(client.0)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        let mut samples = rows
            .iter()
            .map(full_sample_from_row)
            .collect::<Result<Vec<_>>>()?;
        let filesystems = sqlx::query_as::<_, (i64, String, i64, i64)>(
            "SELECT time_us, mount_point, used_bytes, total_bytes FROM sample_filesystems
             WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3 ORDER BY time_us, mount_point",
        )
        .bind(client.0)
        .bind(start)
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        attach_filesystems(
            &mut samples,
            filesystems.into_iter().map(FilesystemRow::from).collect(),
        );
        Ok(samples)
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
