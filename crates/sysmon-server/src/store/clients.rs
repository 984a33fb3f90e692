//! Clients, their tokens and what they have sent, read back one sample or
//! one overview at a time. None of it is a hot path, so most is written
//! once: the SQL uses `$N` placeholders, which sqlx accepts for SQLite as
//! well as PostgreSQL (and SQLite itself, by position), and the macros only
//! supply each store's pool, whose types differ.
//!
//! - [`ClientStore`] (clients and tokens): one implementation for both
//!   stores, [`impl_client_store!`].
//! - [`SampleReads`] (a client's span, its full samples, the fleet's
//!   overviews): PostgreSQL's is [`impl_sample_reads!`]; SQLite's reads two
//!   tables (its hot table and `samples`, see `sqlite`) and merges them, with
//!   the SQL below for the `samples` side.
//!
//! Ingest, reports, series and pruning are per store (see their modules).

use async_trait::async_trait;
use sysmon_core::{Sample, UnixTime};

use super::{ClientId, ClientOverview, ClientRecord, TimeRange, TokenOwner};
use crate::error::Result;

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Creates a client; `None` when the name is taken.
    async fn create_client(&self, name: &str, password_hash: &str) -> Result<Option<ClientId>>;

    async fn find_client(&self, name: &str) -> Result<Option<ClientRecord>>;

    async fn add_token(&self, client: ClientId, token_hash: &[u8]) -> Result<()>;

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>>;

    async fn count_clients(&self) -> Result<u64>;
}

/// What clients have sent, read back; every stored sample, whichever table
/// it waits in.
#[async_trait]
pub trait SampleReads: Send + Sync {
    /// Time of the first and of the last sample of a client.
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>>;

    /// A client's samples within the range with every metric, extended
    /// ones and file systems included, ordered by time.
    async fn full_samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>>;

    /// Every client with its first and latest samples, by name.
    async fn client_overviews(&self) -> Result<Vec<ClientOverview>>;
}

/// A client's samples in `table` (samples, or a table of the same columns)
/// within `[$2, $3]`, every column of [`super::sample_columns`], by time.
pub fn full_samples_sql(table: &str) -> String {
    format!(
        "SELECT {} FROM {table}
         WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3 ORDER BY time_us",
        super::sample_columns()
    )
}

/// The file systems in `table` of a client's samples within `[$2, $3]`,
/// by time and mount point, as [`super::FilesystemRow`] reads them.
pub fn filesystems_sql(table: &str) -> String {
    format!(
        "SELECT time_us, mount_point, used_bytes, total_bytes FROM {table}
         WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3
         ORDER BY time_us, mount_point"
    )
}

/// Every client with the time of its first sample, its latest sample
/// (every column) and the times of the two before it, in one statement:
/// each subquery is one probe of the samples table's primary key, so the
/// cost grows with the number of clients, not of samples.
pub fn overviews_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let latest: Vec<String> = super::sample_columns()
            .split(", ")
            .map(|column| format!("s.{column}"))
            .collect();
        format!(
            "WITH span AS (
                SELECT c.id, c.name,
                       (SELECT MIN(time_us) FROM samples WHERE client_id = c.id) AS first_us,
                       (SELECT MAX(time_us) FROM samples WHERE client_id = c.id) AS last_us
                FROM clients c)
             SELECT span.id, span.name, span.first_us,
                    (SELECT time_us FROM samples WHERE client_id = span.id AND time_us < span.last_us
                     ORDER BY time_us DESC LIMIT 1),
                    (SELECT time_us FROM samples WHERE client_id = span.id AND time_us < span.last_us
                     ORDER BY time_us DESC LIMIT 1 OFFSET 1),
                    {}
             FROM span LEFT JOIN samples s ON s.client_id = span.id AND s.time_us = span.last_us
             ORDER BY span.name",
            latest.join(", ")
        )
    })
}

/// Where the latest sample's columns start in a row of [`overviews_sql`].
pub const OVERVIEW_SAMPLE_COLUMN: usize = 5;

/// `impl ClientStore for $store`, for a store with a sqlx `pool` field.
macro_rules! impl_client_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::ClientStore for $store {
            async fn create_client(
                &self,
                name: &str,
                password_hash: &str,
            ) -> $crate::error::Result<Option<$crate::store::ClientId>> {
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO clients (name, password_hash, created_at_us) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .bind(name)
                .bind(password_hash)
                .bind($crate::store::now_micros())
                .fetch_optional(&self.pool)
                .await?;
                Ok(id.map($crate::store::ClientId))
            }

            async fn find_client(
                &self,
                name: &str,
            ) -> $crate::error::Result<Option<$crate::store::ClientRecord>> {
                let row = sqlx::query_as::<_, (i64, String, String)>(
                    "SELECT id, name, password_hash FROM clients WHERE name = $1",
                )
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                Ok(
                    row.map(|(id, name, password_hash)| $crate::store::ClientRecord {
                        id: $crate::store::ClientId(id),
                        name,
                        password_hash,
                    }),
                )
            }

            async fn add_token(
                &self,
                client: $crate::store::ClientId,
                token_hash: &[u8],
            ) -> $crate::error::Result<()> {
                sqlx::query(
                    "INSERT INTO tokens (token_hash, client_id, created_at_us) VALUES ($1, $2, $3)",
                )
                .bind(token_hash)
                .bind(client.0)
                .bind($crate::store::now_micros())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_owner(
                &self,
                token_hash: &[u8],
            ) -> $crate::error::Result<Option<$crate::store::TokenOwner>> {
                let row = sqlx::query_as::<_, (i64, String)>(
                    "SELECT c.id, c.name FROM tokens t JOIN clients c ON c.id = t.client_id
                     WHERE t.token_hash = $1",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(id, name)| $crate::store::TokenOwner {
                    id: $crate::store::ClientId(id),
                    name,
                }))
            }

            async fn count_clients(&self) -> $crate::error::Result<u64> {
                let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM clients")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }
        }
    };
}

/// `impl SampleReads for $store` on the `samples` table alone, for a store
/// with a sqlx `pool` field whose ingest writes there directly
/// (PostgreSQL's).
macro_rules! impl_sample_reads {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::SampleReads for $store {
            async fn log_span(
                &self,
                client: $crate::store::ClientId,
            ) -> $crate::error::Result<Option<(sysmon_core::UnixTime, sysmon_core::UnixTime)>> {
                let (first, last) = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
                    "SELECT MIN(time_us), MAX(time_us) FROM samples WHERE client_id = $1",
                )
                .bind(client.0)
                .fetch_one(&self.pool)
                .await?;
                Ok(first.zip(last).map(|(first, last)| {
                    (
                        sysmon_core::UnixTime::from_micros(first),
                        sysmon_core::UnixTime::from_micros(last),
                    )
                }))
            }

            async fn full_samples(
                &self,
                client: $crate::store::ClientId,
                range: $crate::store::TimeRange,
            ) -> $crate::error::Result<Vec<sysmon_core::Sample>> {
                let (start, end) = range.bounds_micros();
                let rows = sqlx::query(&$crate::store::clients::full_samples_sql("samples"))
                    .bind(client.0)
                    .bind(start)
                    .bind(end)
                    .fetch_all(&self.pool)
                    .await?;
                let mut samples = rows
                    .iter()
                    .map(|row| $crate::store::full_sample_from_row(row, 0))
                    .collect::<$crate::error::Result<Vec<_>>>()?;
                let filesystems = sqlx::query_as::<_, (i64, String, i64, i64)>(
                    &$crate::store::clients::filesystems_sql("sample_filesystems"),
                )
                .bind(client.0)
                .bind(start)
                .bind(end)
                .fetch_all(&self.pool)
                .await?;
                $crate::store::attach_filesystems(
                    &mut samples,
                    filesystems
                        .into_iter()
                        .map($crate::store::FilesystemRow::from)
                        .collect(),
                );
                Ok(samples)
            }

            async fn client_overviews(
                &self,
            ) -> $crate::error::Result<Vec<$crate::store::ClientOverview>> {
                use sqlx::Row;
                let rows = sqlx::query($crate::store::clients::overviews_sql())
                    .fetch_all(&self.pool)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let time = |index: usize| -> $crate::error::Result<_> {
                            Ok(row
                                .try_get::<Option<i64>, _>(index)?
                                .map(sysmon_core::UnixTime::from_micros))
                        };
                        let first_sample = $crate::store::clients::OVERVIEW_SAMPLE_COLUMN;
                        let latest = match row.try_get::<Option<i64>, _>(first_sample)? {
                            Some(_) => {
                                Some($crate::store::full_sample_from_row(row, first_sample)?)
                            }
                            None => None,
                        };
                        Ok($crate::store::ClientOverview {
                            id: $crate::store::ClientId(row.try_get(0)?),
                            name: row.try_get(1)?,
                            first_seen: time(2)?,
                            latest,
                            previous: [time(3)?, time(4)?].into_iter().flatten().collect(),
                        })
                    })
                    .collect()
            }
        }
    };
}
