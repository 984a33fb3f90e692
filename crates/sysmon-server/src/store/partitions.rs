//! The partitions of the samples tables on PostgreSQL (migration 0005):
//! `samples` and `sample_filesystems` each have one partition per UTC day,
//! `samples_p20261202` and `sample_filesystems_p20261202`, which the server
//! creates and which raw retention drops whole.
//!
//! A batch must never fail for want of a partition, and should not pay a
//! round trip to learn that its partitions exist. [`Partitions`] remembers
//! the days whose partitions exist; ingest asks it before each batch
//! ([`Partitions::insert_with`]), and only a day it does not know costs a
//! visit to the database. The retention job creates the coming days ahead
//! ([`Partitions::create_ahead`]), so in practice only back-filled days are
//! created on demand.
//!
//! Several servers may share a database. Creators take SHARE UPDATE
//! EXCLUSIVE on both parent tables, which they conflict on with each other
//! but not with inserts or reads, and look in the catalog under it, so two
//! servers never race to create one table. A partition that another server
//! (or a person) dropped while this server still remembered it fails the
//! insert, which then stores nothing; the insert is retried once with the
//! partition created again.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::sync::{PoisonError, RwLock};

use chrono::{DateTime, NaiveDate};
use sqlx::{Executor, PgExecutor, PgPool};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// Width of a partition. Why a day: see the migration.
const DAY_US: i64 = 86_400_000_000;

/// The partitioned tables; each has a partition for every day.
const TABLES: [&str; 2] = ["samples", "sample_filesystems"];

/// Days after today whose partitions are created ahead: a sample may be
/// dated up to a day ahead (clock drift), and one more day covers a
/// retention job that runs late.
const DAYS_AHEAD: i64 = 2;

/// How long dropping a partition waits for its tables. Dropping needs them
/// exclusively, so it waits for every read in flight (a long report to a
/// slow client, say) while inserts queue behind it; past this it gives up
/// until the retention job's next run, so ingest never stalls for long.
/// Below PostgreSQL's default `deadlock_timeout` (1 s), so that in a lock
/// cycle with a writer the drop gives way, not the batch.
const DROP_LOCK_TIMEOUT: &str = "500ms";

/// SQLSTATE of `no partition of relation ... found for row`.
const CHECK_VIOLATION: &str = "23514";
/// SQLSTATE of a lock wait that ran out of `lock_timeout`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// A UTC day: days since 1970-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(i64);

impl Day {
    /// The day holding a time in microseconds.
    pub fn of(time_us: i64) -> Day {
        Day(time_us.div_euclid(DAY_US))
    }

    pub fn start_us(self) -> i64 {
        self.0 * DAY_US
    }

    pub fn end_us(self) -> i64 {
        (self.0 + 1) * DAY_US
    }

    /// The name of this day's partition of `table`: `samples_p20261202`.
    fn partition(self, table: &str) -> Result<String> {
        let date = DateTime::from_timestamp(self.0 * 86_400, 0)
            .ok_or_else(|| Error::Internal(format!("day {} has no date", self.0)))?;
        Ok(format!("{table}_p{}", date.format("%Y%m%d")))
    }

    /// The day a partition of `table` is named after, if it is one of ours.
    fn of_partition(table: &str, name: &str) -> Option<Day> {
        let digits = name.strip_prefix(table)?.strip_prefix("_p")?;
        if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let number = |range: std::ops::Range<usize>| digits[range].parse::<u32>().ok();
        let year = i32::try_from(number(0..4)?).ok()?;
        let date = NaiveDate::from_ymd_opt(year, number(4..6)?, number(6..8)?)?;
        let midnight = date.and_hms_opt(0, 0, 0)?.and_utc();
        Some(Day(midnight.timestamp().div_euclid(86_400)))
    }
}

/// A partition found in the catalog.
struct Found {
    table: &'static str,
    day: Day,
    /// The planner's estimate of its rows (exact after a vacuum or analyze).
    estimated_rows: u64,
}

/// The days whose partitions this server knows to exist, and the way to
/// create and drop them.
pub struct Partitions {
    /// Days with a partition in every table.
    known: RwLock<HashSet<Day>>,
    /// One creator at a time in this server: a writer that waited here
    /// usually finds its days created by the one before it.
    creating: Mutex<()>,
}

impl Partitions {
    /// Starts from the partitions the database has now.
    pub async fn load(pool: &PgPool) -> Result<Partitions> {
        let found = list(pool).await?;
        let mut tables_per_day: BTreeMap<Day, usize> = BTreeMap::new();
        for partition in &found {
            *tables_per_day.entry(partition.day).or_default() += 1;
        }
        let complete = tables_per_day
            .into_iter()
            .filter(|(_, tables)| *tables == TABLES.len())
            .map(|(day, _)| day);
        Ok(Partitions {
            known: RwLock::new(complete.collect()),
            creating: Mutex::new(()),
        })
    }

    /// Runs `insert` (which stores rows dated `times`) once their days have
    /// partitions. If a partition turns out to be gone, the insert stored
    /// nothing: the days are created again and it runs once more.
    pub async fn insert_with<T, F, Fut>(
        &self,
        pool: &PgPool,
        times: impl Iterator<Item = i64> + Clone,
        mut insert: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.ensure(pool, times.clone()).await?;
        match insert().await {
            Err(Error::Database(error)) if is_missing_partition(&error) => {
                tracing::warn!(
                    %error,
                    "a partition this server knew of is gone (dropped by another server or by \
                     hand); creating it again and retrying the batch"
                );
                self.forget(times.clone().map(Day::of));
                self.ensure(pool, times).await?;
                insert().await
            }
            outcome => outcome,
        }
    }

    /// Creates the partitions of today and the next [`DAYS_AHEAD`] days
    /// that do not exist yet.
    pub async fn create_ahead(&self, pool: &PgPool, now_us: i64) -> Result<()> {
        let times = (0..=DAYS_AHEAD).map(|ahead| now_us.saturating_add(ahead * DAY_US));
        self.ensure(pool, times).await
    }

    /// Drops the partitions whose whole day lies before `before_us`, both
    /// tables' at once, oldest first; returns the rows they held (the
    /// planner's estimate: counting would read every row dropped). The
    /// partition holding `before_us` stays until its day has passed too.
    /// If a drop cannot get its tables in time, the rest waits for the next
    /// run.
    pub async fn drop_before(&self, pool: &PgPool, before_us: i64) -> Result<u64> {
        let found = list(pool).await?;
        let mut expired: BTreeMap<Day, u64> = BTreeMap::new();
        for partition in found.iter().filter(|p| p.day.end_us() <= before_us) {
            let rows = expired.entry(partition.day).or_default();
            if partition.table == TABLES[0] {
                *rows += partition.estimated_rows;
            }
        }
        let mut dropped_rows = 0;
        for (day, rows) in expired {
            match self.drop_day(pool, day).await {
                Ok(()) => dropped_rows += rows,
                Err(Error::Database(error)) if is_lock_timeout(&error) => {
                    tracing::warn!(
                        day_start_us = day.start_us(),
                        "expired partitions are in use; dropping them at the next retention run"
                    );
                    break;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(dropped_rows)
    }

    /// Makes sure every day of `times` has its partitions. Asks the
    /// database only about days this server does not know.
    async fn ensure(&self, pool: &PgPool, times: impl Iterator<Item = i64>) -> Result<()> {
        let unknown = self.unknown(times.map(Day::of));
        if unknown.is_empty() {
            return Ok(());
        }
        let _creating = self.creating.lock().await;
        let unknown = self.unknown(unknown.into_iter());
        if unknown.is_empty() {
            return Ok(());
        }
        self.create(pool, &unknown).await?;
        self.known
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(unknown);
        Ok(())
    }

    /// The days among `days` not known to have partitions, each once.
    fn unknown(&self, days: impl Iterator<Item = Day>) -> BTreeSet<Day> {
        let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
        let mut unknown = BTreeSet::new();
        let mut previous = None;
        for day in days {
            // Rows come sorted by client and time, so runs of one day are
            // the rule: look each run up once.
            if previous != Some(day) && !known.contains(&day) {
                unknown.insert(day);
            }
            previous = Some(day);
        }
        unknown
    }

    fn forget(&self, days: impl Iterator<Item = Day>) {
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        for day in days {
            known.remove(&day);
        }
    }

    /// Creates the partitions of `days` that the catalog lacks, in one
    /// transaction.
    async fn create(&self, pool: &PgPool, days: &BTreeSet<Day>) -> Result<()> {
        let mut transaction = pool.begin().await?;
        // Serialises creators across servers; inserts and reads go on.
        sqlx::query(
            "LOCK TABLE ONLY samples, ONLY sample_filesystems IN SHARE UPDATE EXCLUSIVE MODE",
        )
        .execute(&mut *transaction)
        .await?;
        let existing: HashSet<(&str, Day)> = list(&mut *transaction)
            .await?
            .into_iter()
            .map(|found| (found.table, found.day))
            .collect();
        let mut statements = String::new();
        let mut created = Vec::new();
        for &day in days {
            for table in TABLES
                .into_iter()
                .filter(|t| !existing.contains(&(*t, day)))
            {
                let name = day.partition(table)?;
                // Created apart and attached: ATTACH PARTITION takes SHARE
                // UPDATE EXCLUSIVE on the parent where CREATE TABLE ...
                // PARTITION OF takes ACCESS EXCLUSIVE, which would queue
                // every insert behind the longest read in flight. The new
                // table is empty, so checking its rows against the bounds
                // costs nothing; ATTACH adds the primary key. ATTACH
                // also demands every CHECK constraint of the parent, so
                // the table copies them.
                statements.push_str(&format!(
                    "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
                     ALTER TABLE {table} ATTACH PARTITION {name}
                         FOR VALUES FROM ({from}) TO ({to});",
                    from = day.start_us(),
                    to = day.end_us(),
                ));
                created.push((name, day));
            }
        }
        if !statements.is_empty() {
            // Several statements in one simple query: one round trip.
            transaction.execute(sqlx::raw_sql(&statements)).await?;
        }
        transaction.commit().await?;
        for (partition, day) in created {
            log_partition("created a partition", &partition, day);
        }
        Ok(())
    }

    /// Drops one day's partitions, of every table, in one transaction.
    async fn drop_day(&self, pool: &PgPool, day: Day) -> Result<()> {
        let names = TABLES
            .into_iter()
            .map(|table| day.partition(table))
            .collect::<Result<Vec<_>>>()?;
        let mut transaction = pool.begin().await?;
        // Both parents locked up front, in the order creators lock them.
        let statements = format!(
            "SET LOCAL lock_timeout = '{DROP_LOCK_TIMEOUT}';
             LOCK TABLE ONLY samples, ONLY sample_filesystems IN ACCESS EXCLUSIVE MODE;
             DROP TABLE IF EXISTS {};",
            names.join(", ")
        );
        transaction.execute(sqlx::raw_sql(&statements)).await?;
        transaction.commit().await?;
        self.forget(std::iter::once(day));
        for partition in names {
            log_partition("dropped a partition: raw retention", &partition, day);
        }
        Ok(())
    }
}

fn log_partition(what: &str, partition: &str, day: Day) {
    tracing::info!(
        partition,
        from_us = day.start_us(),
        to_us = day.end_us(),
        "{what}"
    );
}

/// Every partition of the partitioned tables named as this module names
/// them, from the catalog.
async fn list<'c>(executor: impl PgExecutor<'c>) -> Result<Vec<Found>> {
    let rows: Vec<(String, String, f32)> = sqlx::query_as(
        "SELECT parent.relname::TEXT, child.relname::TEXT, child.reltuples
         FROM pg_inherits
         JOIN pg_class parent ON parent.oid = pg_inherits.inhparent
         JOIN pg_class child ON child.oid = pg_inherits.inhrelid
         WHERE pg_inherits.inhparent IN ('samples'::regclass, 'sample_filesystems'::regclass)",
    )
    .fetch_all(executor)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(parent, child, reltuples)| {
            let table = TABLES.into_iter().find(|table| *table == parent)?;
            Some(Found {
                table,
                day: Day::of_partition(table, &child)?,
                // -1 for a table never vacuumed or analyzed.
                estimated_rows: reltuples.max(0.0) as u64,
            })
        })
        .collect())
}

/// An insert's row fell outside every partition. Told apart from a CHECK
/// constraint's violation (the same SQLSTATE) by having no constraint, and
/// recognised without reading the message, which may be translated.
pub fn is_missing_partition(error: &sqlx::Error) -> bool {
    error.as_database_error().is_some_and(|error| {
        error.code().as_deref() == Some(CHECK_VIOLATION)
            && error.constraint().is_none()
            && error.table().is_some_and(|table| TABLES.contains(&table))
    })
}

fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|error| error.code().as_deref() == Some(LOCK_NOT_AVAILABLE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_split_at_utc_midnight() {
        // 2025-11-24T16:00:00Z and the midnight before it.
        let midnight_us = 1_763_942_400_000_000;
        assert_eq!(Day::of(1_764_000_000_000_000), Day::of(midnight_us));
        assert_eq!(Day::of(midnight_us - 1).end_us(), midnight_us);
        assert_eq!(Day::of(midnight_us).start_us(), midnight_us);
        assert_eq!(Day::of(-1), Day(-1));
    }

    #[test]
    fn partition_names_round_trip() {
        let day = Day::of(1_764_000_000_000_000);
        let name = day.partition("samples").unwrap();
        assert_eq!(name, "samples_p20251124");
        assert_eq!(Day::of_partition("samples", &name), Some(day));
        assert_eq!(
            Day::of_partition("sample_filesystems", "sample_filesystems_p20000101"),
            Some(Day::of(946_684_800_000_000))
        );
        for foreign in [
            "samples_p2025112",
            "samples_p20251324",
            "samples_x20251124",
            "sample_filesystems_p20251124",
        ] {
            assert_eq!(Day::of_partition("samples", foreign), None, "{foreign}");
        }
    }
}
