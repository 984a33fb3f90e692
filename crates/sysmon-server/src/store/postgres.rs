//! The production store: PostgreSQL.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use sysmon_core::{Sample, UnixTime};

use super::{
    now_micros, redact_password, sample_from_row, ClientId, ClientRecord, ClientSample, Store,
    TimeRange, TokenOwner,
};
use crate::error::{Error, Result};

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    pub async fn connect(url: &str) -> Result<Self> {
        let shown = redact_password(url);
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Config(format!("invalid PostgreSQL URL `{shown}`: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
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

#[async_trait]
impl Store for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgresql"
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

    async fn insert_samples(&self, samples: &[ClientSample]) -> Result<()> {
        // One statement whatever the batch size: arrays in, UNNEST out. Rows
        // are sorted so concurrent writers lock keys in the same order.
        let mut rows = samples.to_vec();
        rows.sort_by_key(|row| (row.client.0, row.sample.time.micros()));
        let clients: Vec<i64> = rows.iter().map(|row| row.client.0).collect();
        let times: Vec<i64> = rows.iter().map(|row| row.sample.time.micros()).collect();
        let cpu: Vec<Option<f64>> = rows.iter().map(|row| row.sample.cpu_load).collect();
        let mem: Vec<Option<f64>> = rows.iter().map(|row| row.sample.mem).collect();
        let storage: Vec<Option<f64>> = rows.iter().map(|row| row.sample.storage).collect();
        sqlx::query(
            "INSERT INTO samples (client_id, time_us, cpu_load, mem, storage)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::FLOAT8[], $4::FLOAT8[], $5::FLOAT8[])
             ON CONFLICT (client_id, time_us) DO NOTHING",
        )
        .bind(clients)
        .bind(times)
        .bind(cpu)
        .bind(mem)
        .bind(storage)
        .execute(&self.pool)
        .await?;
        Ok(())
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

    async fn close(&self) {
        self.pool.close().await;
    }
}
