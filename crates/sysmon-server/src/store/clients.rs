//! Clients, their tokens and what they have sent, read back one sample or
//! one overview at a time. None of it is a hot path, so most is written
//! once: the SQL uses `$N` placeholders, which sqlx accepts for SQLite as
//! well as PostgreSQL (and SQLite itself, by position), and the macros only
//! supply each store's pool, whose types differ.
//!
//! - [`ClientStore`] (clients and tokens): one implementation for both
//!   stores, [`impl_client_store!`].
//! - [`SampleReads`] (a client's span, its full samples, the fleet's
//!   overviews): each store's own, as each keeps samples its own way
//!   (SQLite reads its hot table and `samples` and merges them; PostgreSQL
//!   bounds every lookup so it touches few of its day partitions), with the
//!   SQL below where they agree.
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

    /// The client a token was issued to, and when (unix microseconds).
    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<(TokenOwner, i64)>>;

    async fn count_clients(&self) -> Result<u64>;
    /// Every client with when it registered and how many tokens it holds,
    /// by name.
    async fn list_clients(&self) -> Result<Vec<ClientListing>>;
    /// Deletes every token and dashboard session of a client and bumps the
    /// auth epoch, in one transaction; the tokens deleted.
    async fn revoke_tokens(&self, client: ClientId) -> Result<u64>;
    /// Bumped by every revocation (see migration 0006).
    async fn auth_epoch(&self) -> Result<i64>;
    /// Turns a client into a tombstone (migration 0007), freeing its name,
    /// and deletes its tokens, sessions and viewers' grants, bumping the
    /// auth epoch, in one transaction. Its samples stay for
    /// [`ClientStore::purge_removed_clients`].
    async fn remove_client(&self, client: ClientId, name: &str) -> Result<()>;
    /// Deletes what removed clients left (file systems, samples, rollups),
    /// a few thousand rows per transaction so the writer is never held
    /// long; the rows deleted. A row that a late commit adds while it runs
    /// is left for the next run.
    async fn purge_removed_clients(&self) -> Result<u64>;
    /// Replaces a client's labels.
    async fn set_labels(&self, client: ClientId, labels: &[String]) -> Result<()>;
    /// Every label of every client that has some, by client then label.
    async fn all_labels(&self) -> Result<Vec<(ClientId, String)>>;
}

/// Tables holding a client's data, in the order a purge empties them
/// (file systems reference samples), each with the column its rows are
/// keyed by after the client.
const PURGED_TABLES: [(&str, &str); 5] = [
    ("sample_filesystems", "time_us"),
    ("samples", "time_us"),
    ("rollup_1m", "bucket_us"),
    ("rollup_10m", "bucket_us"),
    ("rollup_1h", "bucket_us"),
];

/// Rows a purge deletes per transaction: on SQLite a few milliseconds of
/// the single writer's lock.
const PURGE_CHUNK_ROWS: i64 = 1_000;

/// The pause between a purge's chunks, in which ingest takes the writer.
pub const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// One chunk of a removed client's rows in `table`.
pub fn purge_chunk_sql(table: &str, key: &str) -> String {
    format!(
        "DELETE FROM {table} WHERE client_id = $1 AND {key} IN
            (SELECT {key} FROM {table} WHERE client_id = $1 LIMIT {PURGE_CHUNK_ROWS})"
    )
}

/// The name a removed client's row takes: `validate_username` refuses
/// control characters, so no one can register or log in as it.
pub fn tombstone_name(client: ClientId) -> String {
    format!("\u{1}removed client {}", client.0)
}

/// The tables [`ClientStore::purge_removed_clients`] empties, in order.
pub fn purged_tables() -> &'static [(&'static str, &'static str)] {
    &PURGED_TABLES
}

/// Samples read whole, and where the next read starts when the file-system
/// budget cut them short.
#[derive(Debug, Default)]
pub struct FullSamples {
    pub samples: Vec<Sample>,
    pub cut_at: Option<UnixTime>,
}

/// File-system rows one read of full samples holds at most. A sample has
/// at most 256 (each mount point up to 4 KiB), so this is 8 whole samples
/// at the worst and some 8 MiB of text; typically hundreds of samples.
pub const PAGE_FILESYSTEM_ROWS: usize = 2_048;

/// The last time of a file-system table's rows when it returned more than
/// the budget (so its later rows were not read).
pub fn budget_end(rows: &[super::FilesystemRow]) -> Option<i64> {
    (rows.len() > PAGE_FILESYSTEM_ROWS).then(|| rows.last().map(|row| row.time_us))?
}

/// Cuts samples and their file-system rows (merged, by time) to what was
/// read whole: before `tables_end` (see [`budget_end`]) and within the
/// budget; the samples past the cut are left for the next read, which
/// starts at the returned time. None: nothing was cut.
pub fn cut_to_budget(
    samples: &mut Vec<Sample>,
    rows: &mut Vec<super::FilesystemRow>,
    tables_end: Option<i64>,
) -> Option<UnixTime> {
    let mut cut = tables_end;
    if let Some(end) = cut {
        rows.retain(|row| row.time_us < end);
    }
    if let Some(row) = rows.get(PAGE_FILESYSTEM_ROWS) {
        let end = row.time_us;
        rows.retain(|row| row.time_us < end);
        cut = Some(cut.map_or(end, |cut| cut.min(end)));
    }
    let cut = cut?;
    samples.retain(|sample| sample.time.micros() < cut);
    Some(UnixTime::from_micros(cut))
}

/// A client as `sysmon-server client list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientListing {
    pub name: String,
    pub created_at: UnixTime,
    pub tokens: i64,
}

/// What clients have sent, read back; every stored sample, whichever table
/// it waits in.
#[async_trait]
pub trait SampleReads: Send + Sync {
    /// Time of the first and of the last sample of a client.
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>>;

    /// The first `limit` of a client's samples within the range, with
    /// every metric, extended ones and file systems included, ordered by
    /// time; fewer when their file systems pass [`PAGE_FILESYSTEM_ROWS`],
    /// and then where the rest starts. Memory is bounded by `limit` and
    /// that budget however long the range and however large the samples.
    async fn full_samples(
        &self,
        client: ClientId,
        range: TimeRange,
        limit: u32,
    ) -> Result<FullSamples>;

    /// Every client with its first and latest samples, by name; the
    /// latest with its file systems.
    async fn client_overviews(&self) -> Result<Vec<ClientOverview>>;

    /// A client's file systems over a range, sampled: those of the first
    /// sample in each `step`-long bucket from the range's start, by time
    /// and mount point, at most [`HISTORY_FILESYSTEM_ROWS`] rows.
    async fn filesystem_history(
        &self,
        client: ClientId,
        range: TimeRange,
        step: std::time::Duration,
    ) -> Result<Vec<super::FilesystemRow>>;
}

/// File-system rows one history read returns at most: 400 points of 20
/// file systems; a host with more gets fewer points, never more memory.
pub const HISTORY_FILESYSTEM_ROWS: usize = 8_192;

/// The file systems of the first sample in each `$4`-µs bucket of client
/// `$1`'s rows in `table` within `[$2, $3]`, buckets starting at `$2`, by
/// time and mount point: one probe of the primary key per bucket, so a
/// year's chart costs what an hour's does. Disk usage moves slowly, so the
/// first sample of a bucket stands for it (an average would need a scan).
/// The parameters are named once, in order, in `args`: SQLite numbers `$N`
/// by first appearance. `MATERIALIZED` and `CROSS JOIN` fix the plan on
/// both stores: buckets first, then a probe per bucket (SQLite otherwise
/// scans the client's rows and runs the subquery for each: 90 s, not 7 ms,
/// for 3 days of 5-second samples).
pub fn filesystem_history_sql(table: &str) -> String {
    format!(
        "WITH RECURSIVE args (client_id, start_us, end_us, step_us) AS (
             SELECT CAST($1 AS BIGINT), CAST($2 AS BIGINT), CAST($3 AS BIGINT), CAST($4 AS BIGINT)),
         buckets (start_us) AS (
             SELECT start_us FROM args
             UNION ALL SELECT b.start_us + a.step_us FROM buckets b, args a
             WHERE b.start_us + a.step_us <= a.end_us),
         firsts (client_id, time_us) AS MATERIALIZED (
             SELECT a.client_id,
                    (SELECT MIN(time_us) FROM {table}
                     WHERE client_id = a.client_id AND time_us >= b.start_us
                       AND time_us < b.start_us + a.step_us AND time_us <= a.end_us)
             FROM buckets b CROSS JOIN args a)
         SELECT f.time_us, f.mount_point, f.used_bytes, f.total_bytes
         FROM firsts CROSS JOIN {table} f
         WHERE f.client_id = firsts.client_id AND f.time_us = firsts.time_us
         ORDER BY f.time_us, f.mount_point LIMIT {HISTORY_FILESYSTEM_ROWS}"
    )
}

/// Rows (by time) cut to those of the first time in each `step_us`-long
/// bucket from `start_us`: what [`filesystem_history_sql`] picks, for rows
/// merged from two tables.
pub fn first_per_bucket(
    rows: Vec<super::FilesystemRow>,
    start_us: i64,
    step_us: i64,
) -> Vec<super::FilesystemRow> {
    let step_us = step_us.max(1);
    let mut picked: Option<(i64, i64)> = None; // (bucket, its first time)
    rows.into_iter()
        .filter(|row| {
            let bucket = row.time_us.saturating_sub(start_us).div_euclid(step_us);
            match picked {
                Some((current, time)) if current == bucket => row.time_us == time,
                _ => {
                    picked = Some((bucket, row.time_us));
                    true
                }
            }
        })
        .take(HISTORY_FILESYSTEM_ROWS)
        .collect()
}

/// The usages of rows (from one or two tables) keyed by client and time:
/// what attaches the latest samples' file systems to the overviews.
pub fn filesystems_by_sample(
    rows: impl IntoIterator<Item = (i64, super::FilesystemRow)>,
) -> std::collections::HashMap<(i64, i64), Vec<sysmon_core::v1::FilesystemUsage>> {
    let mut usages: std::collections::HashMap<_, Vec<_>> = std::collections::HashMap::new();
    for (client, row) in rows {
        usages
            .entry((client, row.time_us))
            .or_default()
            .push(row.usage);
    }
    usages
}

/// Attaches to each overview's latest sample the file systems stored for
/// it (see [`filesystems_by_sample`]).
pub fn attach_latest_filesystems(
    overviews: &mut [ClientOverview],
    mut usages: std::collections::HashMap<(i64, i64), Vec<sysmon_core::v1::FilesystemUsage>>,
) {
    for overview in overviews {
        let Some(latest) = overview.latest.as_mut() else {
            continue;
        };
        let key = (overview.id.0, latest.time.micros());
        if let (Some(extended), Some(found)) = (latest.extended.as_deref_mut(), usages.remove(&key))
        {
            extended.filesystems = found;
        }
    }
}

/// The first `$4` of a client's samples in `table` (samples, or a table of
/// the same columns) within `[$2, $3]`, every column of
/// [`super::sample_columns`], by time.
pub fn full_samples_sql(table: &str) -> String {
    format!(
        "SELECT {} FROM {table}
         WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3 ORDER BY time_us LIMIT $4",
        super::sample_columns()
    )
}

/// The end of the range the file systems of `samples` are read from: the
/// requested end, or the last sample's time when a page stopped short of it.
pub fn page_end(samples: &[Sample], limit: u32, end_us: i64) -> i64 {
    match samples.last() {
        Some(last) if samples.len() >= limit as usize => last.time.micros(),
        _ => end_us,
    }
}

/// The first [`PAGE_FILESYSTEM_ROWS`] + 1 file systems in `table` of a
/// client's samples within `[$2, $3]`, by time and mount point, as
/// [`super::FilesystemRow`] reads them.
pub fn filesystems_sql(table: &str) -> String {
    format!(
        "SELECT time_us, mount_point, used_bytes, total_bytes FROM {table}
         WHERE client_id = $1 AND time_us >= $2 AND time_us <= $3
         ORDER BY time_us, mount_point LIMIT {}",
        PAGE_FILESYSTEM_ROWS + 1
    )
}

/// Every client with the time of its first sample, its latest sample
/// (every column) and the times of the two before it, in one statement:
/// each subquery is one probe of the samples table's primary key, so the
/// cost grows with the number of clients, not of samples. SQLite's (its
/// `samples` table is one B-tree; PostgreSQL's day partitions need the
/// bounded lookups of `postgres::reads`).
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
                FROM clients c WHERE c.removed_at_us IS NULL)
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

/// `impl ClientStore for $store`, for a store with a sqlx `pool` field of
/// `$database`.
macro_rules! impl_client_store {
    ($store:ty, $database:ty) => {
        impl $store {
            /// Deletes a client's tokens and dashboard sessions and bumps
            /// the auth epoch, in `transaction`; the tokens deleted.
            async fn end_tokens_in(
                transaction: &mut sqlx::Transaction<'_, $database>,
                client: $crate::store::ClientId,
            ) -> $crate::error::Result<u64> {
                let revoked = sqlx::query("DELETE FROM tokens WHERE client_id = $1")
                    .bind(client.0)
                    .execute(&mut **transaction)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM dashboard_sessions WHERE client_id = $1")
                    .bind(client.0)
                    .execute(&mut **transaction)
                    .await?;
                sqlx::query("UPDATE auth_epoch SET epoch = epoch + 1 WHERE id = 1")
                    .execute(&mut **transaction)
                    .await?;
                Ok(revoked)
            }
        }

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
                    "SELECT id, name, password_hash FROM clients
                     WHERE name = $1 AND removed_at_us IS NULL",
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
            ) -> $crate::error::Result<Option<($crate::store::TokenOwner, i64)>> {
                let row = sqlx::query_as::<_, (i64, String, i64)>(
                    // A token issued while its client was being removed
                    // (a login racing the removal) names a tombstone.
                    "SELECT c.id, c.name, t.created_at_us FROM tokens t JOIN clients c ON c.id = t.client_id
                     WHERE t.token_hash = $1 AND c.removed_at_us IS NULL",
                )
                .bind(token_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(id, name, issued_us)| {
                    let owner = $crate::store::TokenOwner {
                        id: $crate::store::ClientId(id),
                        name,
                    };
                    (owner, issued_us)
                }))
            }

            async fn count_clients(&self) -> $crate::error::Result<u64> {
                let count: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM clients WHERE removed_at_us IS NULL",
                )
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count.max(0) as u64)
            }

            async fn list_clients(
                &self,
            ) -> $crate::error::Result<Vec<$crate::store::ClientListing>> {
                let rows = sqlx::query_as::<_, (String, i64, i64)>(
                    "SELECT c.name, c.created_at_us,
                            (SELECT COUNT(*) FROM tokens t WHERE t.client_id = c.id)
                     FROM clients c WHERE c.removed_at_us IS NULL ORDER BY c.name",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(name, created_us, tokens)| $crate::store::ClientListing {
                        name,
                        created_at: sysmon_core::UnixTime::from_micros(created_us),
                        tokens,
                    })
                    .collect())
            }

            async fn revoke_tokens(
                &self,
                client: $crate::store::ClientId,
            ) -> $crate::error::Result<u64> {
                let mut transaction = self.pool.begin().await?;
                let revoked = Self::end_tokens_in(&mut transaction, client).await?;
                transaction.commit().await?;
                Ok(revoked)
            }

            async fn remove_client(
                &self,
                client: $crate::store::ClientId,
                name: &str,
            ) -> $crate::error::Result<()> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("UPDATE clients SET name = $1, removed_at_us = $2 WHERE id = $3")
                    .bind($crate::store::clients::tombstone_name(client))
                    .bind($crate::store::now_micros())
                    .bind(client.0)
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query("DELETE FROM dashboard_user_clients WHERE client_name = $1")
                    .bind(name)
                    .execute(&mut *transaction)
                    .await?;
                sqlx::query("DELETE FROM client_labels WHERE client_id = $1")
                    .bind(client.0)
                    .execute(&mut *transaction)
                    .await?;
                // Its alerts end with it (their history stays).
                sqlx::query("DELETE FROM alert_states WHERE client_id = $1")
                    .bind(client.0)
                    .execute(&mut *transaction)
                    .await?;
                Self::end_tokens_in(&mut transaction, client).await?;
                transaction.commit().await?;
                Ok(())
            }

            async fn purge_removed_clients(&self) -> $crate::error::Result<u64> {
                let removed = sqlx::query_scalar::<_, i64>(
                    "SELECT id FROM clients WHERE removed_at_us IS NOT NULL",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut deleted = 0;
                for client in removed {
                    for (table, key) in $crate::store::clients::purged_tables() {
                        let statement = $crate::store::clients::purge_chunk_sql(table, key);
                        loop {
                            let rows = sqlx::query(&statement)
                                .bind(client)
                                .execute(&self.pool)
                                .await?
                                .rows_affected();
                            deleted += rows;
                            if rows == 0 {
                                break;
                            }
                            // SQLite has one writer: let ingest commit
                            // between chunks.
                            tokio::time::sleep($crate::store::clients::PURGE_PAUSE).await;
                        }
                    }
                }
                Ok(deleted)
            }

            async fn set_labels(
                &self,
                client: $crate::store::ClientId,
                labels: &[String],
            ) -> $crate::error::Result<()> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query("DELETE FROM client_labels WHERE client_id = $1")
                    .bind(client.0)
                    .execute(&mut *transaction)
                    .await?;
                for label in labels {
                    sqlx::query("INSERT INTO client_labels (client_id, label) VALUES ($1, $2)")
                        .bind(client.0)
                        .bind(label)
                        .execute(&mut *transaction)
                        .await?;
                }
                transaction.commit().await?;
                Ok(())
            }

            async fn all_labels(
                &self,
            ) -> $crate::error::Result<Vec<($crate::store::ClientId, String)>> {
                let rows = sqlx::query_as::<_, (i64, String)>(
                    "SELECT client_id, label FROM client_labels ORDER BY client_id, label",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(id, label)| ($crate::store::ClientId(id), label))
                    .collect())
            }

            async fn auth_epoch(&self) -> $crate::error::Result<i64> {
                Ok(
                    sqlx::query_scalar("SELECT epoch FROM auth_epoch WHERE id = 1")
                        .fetch_one(&self.pool)
                        .await?,
                )
            }
        }
    };
}
