//! Read-only connections, and every read of samples: each reads
//! `samples` and the hot table (see `writer`) in one transaction, so one
//! snapshot, and merges them. A fold moves samples between the tables in
//! one transaction, between two reads, never inside one: a read sees every
//! sample exactly once.
//!
//! The two tables are read apart rather than through a UNION ALL because
//! SQLite answers `samples`' side from its primary key (MIN/MAX of a
//! client's time, a range in time order) only when it reads that table
//! alone; the hot table is small (folded into `samples` every few seconds,
//! and early past `FOLD_SOON_ROWS`) and is scanned.

use crate::store::FullSamples;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sysmon_core::{Sample, UnixTime};
use tokio::sync::mpsc;

use super::super::clients::{self, OVERVIEW_SAMPLE_COLUMN};
use super::super::rollup::{self, Bucket, SeriesQuery, Tier};
use super::super::{
    attach_filesystems, full_sample_from_columns, sample_columns, sample_from_row, ClientId,
    ClientOverview, ClientSample, FilesystemRow, SampleKey, SAMPLE_CHUNK_ROWS,
};
use crate::error::{Error, Result};

/// Read-only connections for the reads, used on blocking threads.
///
/// Through sqlx each row is copied value by value and handed from its
/// worker thread to the request: about 45% of a 30-day chart's time and
/// most of a 100k-row report's (profiles in docs/benchmarks.md). Read here,
/// the values go straight into their final shape. WAL mode lets these read
/// while the writer commits.
pub(super) struct BlockingReaders {
    path: PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
}

impl BlockingReaders {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            idle: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on an idle connection, on a blocking thread.
    pub(super) async fn read<T, F>(self: &Arc<Self>, read: F) -> Result<T>
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
    pub(super) fn with_connection<T>(
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

/// A read transaction: both tables from one snapshot. Rolled back when
/// dropped, which for a read only ends it.
fn snapshot(connection: &rusqlite::Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    connection.unchecked_transaction()
}

/// Two lists, each ordered by `key`, as one; on equal keys `left` first.
fn merge_sorted<T, K: Ord>(left: Vec<T>, right: Vec<T>, key: impl Fn(&T) -> K) -> Vec<T> {
    if right.is_empty() {
        return left;
    }
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut right = right.into_iter().peekable();
    for item in left {
        while let Some(earlier) = right.next_if(|other| key(other) < key(&item)) {
            merged.push(earlier);
        }
        merged.push(item);
    }
    merged.extend(right);
    merged
}

pub(super) fn read_series(
    connection: &rusqlite::Connection,
    query: &SeriesQuery,
) -> rusqlite::Result<Vec<Bucket>> {
    if query.tier != Tier::Raw {
        return read_series_from(connection, query, query.tier.table());
    }
    let snapshot = snapshot(connection)?;
    let stored = read_series_from(&snapshot, query, "samples")?;
    let hot = read_series_from(&snapshot, query, "hot_samples")?;
    Ok(rollup::merge_series(stored, hot))
}

fn read_series_from(
    connection: &rusqlite::Connection,
    query: &SeriesQuery,
    table: &str,
) -> rusqlite::Result<Vec<Bucket>> {
    let sql = rollup::series_sql_from(query, table, ["?1", "?2", "?3"]);
    let mut statement = connection.prepare_cached(&sql)?;
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

/// The original report's columns of a client's samples in `table`.
fn report_sql(table: &str) -> String {
    format!(
        "SELECT time_us, cpu_load, mem, storage FROM {table}
         WHERE client_id = ?1 AND time_us >= ?2 AND time_us <= ?3 ORDER BY time_us"
    )
}

fn report_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Sample> {
    Ok(sample_from_row(
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
    ))
}

/// Fills chunks of [`SAMPLE_CHUNK_ROWS`] and hands each to the report.
struct Chunks<'a> {
    sender: &'a mpsc::Sender<Result<Vec<Sample>>>,
    chunk: Vec<Sample>,
}

impl Chunks<'_> {
    /// False once the receiver is gone (the client hung up).
    fn push(&mut self, sample: Sample) -> bool {
        self.chunk.push(sample);
        if self.chunk.len() < SAMPLE_CHUNK_ROWS {
            return true;
        }
        let full = std::mem::replace(&mut self.chunk, Vec::with_capacity(SAMPLE_CHUNK_ROWS));
        self.sender.blocking_send(Ok(full)).is_ok()
    }

    fn finish(self) {
        if !self.chunk.is_empty() {
            let _ = self.sender.blocking_send(Ok(self.chunk));
        }
    }
}

/// Reads a client's samples into `sender` chunk by chunk; stops early when
/// the receiver is gone. The hot rows of the range (few) are read first and
/// slotted in as `samples` streams by in time order.
pub(super) fn send_samples(
    connection: &rusqlite::Connection,
    client: ClientId,
    start_us: i64,
    end_us: i64,
    sender: &mpsc::Sender<Result<Vec<Sample>>>,
) -> rusqlite::Result<()> {
    let snapshot = snapshot(connection)?;
    let range = (client.0, start_us, end_us);
    let hot: Vec<Sample> = snapshot
        .prepare_cached(&report_sql("hot_samples"))?
        .query_map(range, report_row)?
        .collect::<rusqlite::Result<_>>()?;
    let mut hot = hot.into_iter().peekable();
    let mut statement = snapshot.prepare_cached(&report_sql("samples"))?;
    let mut rows = statement.query(range)?;
    let mut chunks = Chunks {
        sender,
        chunk: Vec::with_capacity(SAMPLE_CHUNK_ROWS),
    };
    while let Some(row) = rows.next()? {
        let sample = report_row(row)?;
        while let Some(earlier) = hot.next_if(|other| other.time.micros() < sample.time.micros()) {
            if !chunks.push(earlier) {
                return Ok(());
            }
        }
        if !chunks.push(sample) {
            return Ok(());
        }
    }
    for rest in hot {
        if !chunks.push(rest) {
            return Ok(());
        }
    }
    chunks.finish();
    Ok(())
}

/// A row of [`sample_columns`] as a client's full sample.
fn client_sample(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClientSample> {
    let sample = full_sample_from_columns(
        row.get(1)?,
        2,
        |index| row.get(index),
        |index| row.get(index),
    )?;
    Ok(ClientSample {
        client: ClientId(row.get(0)?),
        sample,
    })
}

/// The stored samples with these keys: looked up in `samples` by key, and
/// those not there found in one scan of the hot table.
pub(super) fn read_samples_by_keys(
    connection: &rusqlite::Connection,
    keys: &[SampleKey],
) -> rusqlite::Result<Vec<ClientSample>> {
    let snapshot = snapshot(connection)?;
    let mut statement = snapshot.prepare_cached(&format!(
        "SELECT {} FROM samples WHERE client_id = ?1 AND time_us = ?2",
        sample_columns()
    ))?;
    let mut samples = Vec::with_capacity(keys.len());
    let mut missing = HashSet::new();
    for &key in keys {
        let mut rows = statement.query(key)?;
        match rows.next()? {
            Some(row) => samples.push(client_sample(row)?),
            None => {
                missing.insert(key);
            }
        }
    }
    if missing.is_empty() {
        return Ok(samples);
    }
    let mut hot =
        snapshot.prepare_cached(&format!("SELECT {} FROM hot_samples", sample_columns()))?;
    let mut rows = hot.query([])?;
    while let Some(row) = rows.next()? {
        if missing.remove(&(row.get(0)?, row.get(1)?)) {
            samples.push(client_sample(row)?);
        }
    }
    Ok(samples)
}

/// First and last sample time of a client: one statement (one snapshot),
/// each of `samples`' MIN and MAX its own subquery so that each is one
/// probe of the primary key (SQLite optimises a lone MIN or MAX only).
pub(super) fn read_log_span(
    connection: &rusqlite::Connection,
    client: ClientId,
) -> rusqlite::Result<Option<(UnixTime, UnixTime)>> {
    let mut statement = connection.prepare_cached(
        "SELECT (SELECT MIN(time_us) FROM samples WHERE client_id = ?1),
                (SELECT MAX(time_us) FROM samples WHERE client_id = ?1),
                hot.first, hot.last
         FROM (SELECT MIN(time_us) AS first, MAX(time_us) AS last
               FROM hot_samples WHERE client_id = ?1) AS hot",
    )?;
    let (first, last, hot_first, hot_last) = statement.query_row([client.0], |row| {
        Ok((
            row.get::<_, Option<i64>>(0)?,
            row.get::<_, Option<i64>>(1)?,
            row.get::<_, Option<i64>>(2)?,
            row.get::<_, Option<i64>>(3)?,
        ))
    })?;
    let first = [first, hot_first].into_iter().flatten().min();
    let last = [last, hot_last].into_iter().flatten().max();
    Ok(first
        .zip(last)
        .map(|(first, last)| (UnixTime::from_micros(first), UnixTime::from_micros(last))))
}

/// The first `limit` of a client's full samples in a range from both
/// tables, file systems attached.
pub(super) fn read_full_samples(
    connection: &rusqlite::Connection,
    client: ClientId,
    (start_us, end_us): (i64, i64),
    limit: u32,
) -> rusqlite::Result<FullSamples> {
    let snapshot = snapshot(connection)?;
    let samples = |table: &str| -> rusqlite::Result<Vec<Sample>> {
        snapshot
            .prepare_cached(&clients::full_samples_sql(table))?
            .query_map((client.0, start_us, end_us, limit), |row| {
                Ok(client_sample(row)?.sample)
            })?
            .collect()
    };
    let mut merged = merge_sorted(samples("samples")?, samples("hot_samples")?, |sample| {
        sample.time.micros()
    });
    merged.truncate(limit as usize);
    let range = (
        client.0,
        start_us,
        clients::page_end(&merged, limit, end_us),
    );
    let filesystems = |table: &str| -> rusqlite::Result<Vec<FilesystemRow>> {
        snapshot
            .prepare_cached(&clients::filesystems_sql(table))?
            .query_map(range, |row| {
                Ok(FilesystemRow::from((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                )))
            })?
            .collect()
    };
    let (stored, hot) = (
        filesystems("sample_filesystems")?,
        filesystems("hot_sample_filesystems")?,
    );
    let tables_end = [clients::budget_end(&stored), clients::budget_end(&hot)]
        .into_iter()
        .flatten()
        .min();
    let mut filesystems = merge_sorted(stored, hot, |row| {
        (row.time_us, row.usage.mount_point.clone())
    });
    let cut_at = clients::cut_to_budget(&mut merged, &mut filesystems, tables_end);
    attach_filesystems(&mut merged, filesystems);
    Ok(FullSamples {
        samples: merged,
        cut_at,
    })
}

/// A client's newest hot rows: what the overview needs of the hot table.
#[derive(Debug, Clone, Default, PartialEq)]
struct HotSpan {
    first_us: i64,
    /// The three newest (time, rowid), newest first.
    newest: Vec<(i64, i64)>,
}

impl HotSpan {
    fn add(&mut self, time_us: i64, rowid: i64) {
        if self.newest.is_empty() || time_us < self.first_us {
            self.first_us = time_us;
        }
        let at = self.newest.partition_point(|&(time, _)| time > time_us);
        if at < 3 {
            self.newest.insert(at, (time_us, rowid));
            self.newest.truncate(3);
        }
    }
}

/// Every client's [`HotSpan`], in one scan of the hot table.
fn read_hot_spans(connection: &rusqlite::Connection) -> rusqlite::Result<HashMap<i64, HotSpan>> {
    let mut spans: HashMap<i64, HotSpan> = HashMap::new();
    let mut statement =
        connection.prepare_cached("SELECT client_id, time_us, rowid FROM hot_samples")?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        spans
            .entry(row.get(0)?)
            .or_default()
            .add(row.get(1)?, row.get(2)?);
    }
    Ok(spans)
}

/// The overview of a client from `samples` ([`clients::overviews_sql`]).
fn overview_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ClientOverview> {
    let time = |index: usize| -> rusqlite::Result<Option<UnixTime>> {
        Ok(row.get::<_, Option<i64>>(index)?.map(UnixTime::from_micros))
    };
    let first_sample = OVERVIEW_SAMPLE_COLUMN;
    let latest = match row.get::<_, Option<i64>>(first_sample + 1)? {
        Some(time_us) => Some(full_sample_from_columns(
            time_us,
            first_sample + 2,
            |index| row.get(index),
            |index| row.get(index),
        )?),
        None => None,
    };
    Ok(ClientOverview {
        id: ClientId(row.get(0)?),
        name: row.get(1)?,
        first_seen: time(2)?,
        latest,
        previous: [time(3)?, time(4)?].into_iter().flatten().collect(),
    })
}

/// Adds a client's hot rows to its overview from `samples`: the first time
/// is the earlier of the two, the latest sample and the two before it are
/// the newest three of both. `hot_sample` reads a hot row by rowid (only
/// when the latest sample is hot).
fn add_hot_span<E>(
    overview: &mut ClientOverview,
    hot: &HotSpan,
    hot_sample: impl FnOnce(i64) -> std::result::Result<Sample, E>,
) -> std::result::Result<(), E> {
    let hot_first = UnixTime::from_micros(hot.first_us);
    overview.first_seen = Some(overview.first_seen.map_or(hot_first, |first| {
        UnixTime::from_micros(first.micros().min(hot.first_us))
    }));
    // (time, the hot row's rowid; None for a row of `samples`)
    let mut newest: Vec<(i64, Option<i64>)> = overview
        .latest
        .iter()
        .map(|sample| sample.time)
        .chain(overview.previous.iter().copied())
        .map(|time| (time.micros(), None))
        .chain(hot.newest.iter().map(|&(time, rowid)| (time, Some(rowid))))
        .collect();
    newest.sort_by_key(|&(time, _)| std::cmp::Reverse(time));
    newest.truncate(3);
    if let Some(&(_, Some(rowid))) = newest.first() {
        overview.latest = Some(hot_sample(rowid)?);
    }
    overview.previous = newest
        .iter()
        .skip(1)
        .map(|&(time, _)| UnixTime::from_micros(time))
        .collect();
    Ok(())
}

/// Every client's overview: the shared statement on `samples` (a probe of
/// the primary key per client), and one scan of the hot table.
pub(super) fn read_overviews(
    connection: &rusqlite::Connection,
) -> rusqlite::Result<Vec<ClientOverview>> {
    let snapshot = snapshot(connection)?;
    let mut overviews: Vec<ClientOverview> = snapshot
        .prepare_cached(clients::overviews_sql())?
        .query_map([], overview_row)?
        .collect::<rusqlite::Result<_>>()?;
    let spans = read_hot_spans(&snapshot)?;
    if !spans.is_empty() {
        let mut hot_row = snapshot.prepare_cached(&format!(
            "SELECT {} FROM hot_samples WHERE rowid = ?1",
            sample_columns()
        ))?;
        for overview in &mut overviews {
            if let Some(span) = spans.get(&overview.id.0) {
                add_hot_span(overview, span, |rowid| {
                    hot_row.query_row([rowid], |row| Ok(client_sample(row)?.sample))
                })?;
            }
        }
    }
    let usages = read_latest_filesystems(&snapshot, &overviews, !spans.is_empty())?;
    clients::attach_latest_filesystems(&mut overviews, usages);
    Ok(overviews)
}

/// The file systems of each overview's latest sample: a probe of the
/// primary key per client, and a scan of the (small) hot table when it
/// holds rows.
fn read_latest_filesystems(
    snapshot: &rusqlite::Transaction<'_>,
    overviews: &[ClientOverview],
    hot: bool,
) -> rusqlite::Result<HashMap<(i64, i64), Vec<sysmon_core::v1::FilesystemUsage>>> {
    let latest: HashSet<(i64, i64)> = overviews
        .iter()
        .filter_map(|overview| Some((overview.id.0, overview.latest.as_ref()?.time.micros())))
        .collect();
    let mut rows: Vec<(i64, FilesystemRow)> = Vec::new();
    let mut stored = snapshot.prepare_cached(
        "SELECT mount_point, used_bytes, total_bytes FROM sample_filesystems
         WHERE client_id = ?1 AND time_us = ?2",
    )?;
    for &(client, time_us) in &latest {
        for row in stored.query_map((client, time_us), |row| {
            Ok(FilesystemRow::from((
                time_us,
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
            )))
        })? {
            rows.push((client, row?));
        }
    }
    if hot {
        let mut scan = snapshot.prepare_cached(
            "SELECT client_id, time_us, mount_point, used_bytes, total_bytes
             FROM hot_sample_filesystems",
        )?;
        for row in scan.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                FilesystemRow::from((row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
            ))
        })? {
            let (client, row) = row?;
            if latest.contains(&(client, row.time_us)) {
                rows.push((client, row));
            }
        }
    }
    Ok(clients::filesystems_by_sample(rows))
}

/// A client's file systems over a range, sampled per bucket (see
/// [`clients::filesystem_history_sql`]), from both tables.
pub(super) fn read_filesystem_history(
    connection: &rusqlite::Connection,
    client: ClientId,
    (start_us, end_us): (i64, i64),
    step_us: i64,
) -> rusqlite::Result<Vec<FilesystemRow>> {
    let snapshot = snapshot(connection)?;
    let as_row = |row: &rusqlite::Row<'_>| {
        Ok(FilesystemRow::from((
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
        )))
    };
    let stored: Vec<FilesystemRow> = snapshot
        .prepare_cached(&clients::filesystem_history_sql("sample_filesystems"))?
        .query_map((client.0, start_us, end_us, step_us), as_row)?
        .collect::<rusqlite::Result<_>>()?;
    // The hot table has no index to probe; it holds seconds of samples.
    let hot: Vec<FilesystemRow> = snapshot
        .prepare_cached(&format!(
            "SELECT time_us, mount_point, used_bytes, total_bytes FROM hot_sample_filesystems
             WHERE client_id = ?1 AND time_us >= ?2 AND time_us <= ?3
             ORDER BY time_us, mount_point LIMIT {}",
            clients::HISTORY_FILESYSTEM_ROWS
        ))?
        .query_map((client.0, start_us, end_us), as_row)?
        .collect::<rusqlite::Result<_>>()?;
    let merged = merge_sorted(stored, hot, |row| {
        (row.time_us, row.usage.mount_point.clone())
    });
    Ok(clients::first_per_bucket(merged, start_us, step_us))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> UnixTime {
        UnixTime::from_micros(seconds * 1_000_000)
    }

    fn overview(first: Option<i64>, times: &[i64]) -> ClientOverview {
        ClientOverview {
            id: ClientId(1),
            name: "host".into(),
            first_seen: first.map(at),
            latest: times
                .first()
                .map(|&time| sample_from_row(at(time).micros(), Some(1.0), None, None)),
            previous: times[times.len().min(1)..].iter().map(|&t| at(t)).collect(),
        }
    }

    fn span(rows: &[(i64, i64)]) -> HotSpan {
        let mut span = HotSpan::default();
        for &(time, rowid) in rows {
            span.add(at(time).micros(), rowid);
        }
        span
    }

    #[test]
    fn hot_spans_keep_the_first_time_and_the_newest_three() {
        let span = span(&[(5, 1), (9, 2), (1, 3), (7, 4), (8, 5)]);
        assert_eq!(span.first_us, at(1).micros());
        let newest: Vec<i64> = span.newest.iter().map(|&(_, rowid)| rowid).collect();
        assert_eq!(newest, [2, 5, 4]);
    }

    #[test]
    fn the_newest_of_both_tables_make_the_overview() {
        let hot_sample = |rowid: i64| -> std::result::Result<Sample, ()> {
            Ok(sample_from_row(
                at(100 + rowid).micros(),
                Some(2.0),
                None,
                None,
            ))
        };
        // Hot rows are newer: the latest is read from the hot table.
        let mut mixed = overview(Some(10), &[30, 20, 10]);
        add_hot_span(&mut mixed, &span(&[(101, 1), (25, 2)]), hot_sample).unwrap();
        assert_eq!(mixed.first_seen, Some(at(10)));
        assert_eq!(mixed.latest.as_ref().map(|s| s.time), Some(at(101)));
        assert_eq!(mixed.latest.as_ref().and_then(|s| s.cpu_load), Some(2.0));
        assert_eq!(mixed.previous, [at(30), at(25)]);

        // A back-filled hot row older than `samples`' latest: the latest
        // stays, the first moves.
        let mut backfill = overview(Some(10), &[30]);
        add_hot_span(&mut backfill, &span(&[(5, 1)]), |_| Err(())).unwrap();
        assert_eq!(backfill.latest.as_ref().map(|s| s.time), Some(at(30)));
        assert_eq!(backfill.first_seen, Some(at(5)));
        assert_eq!(backfill.previous, [at(5)]);

        // Only hot rows.
        let mut fresh = overview(None, &[]);
        add_hot_span(&mut fresh, &span(&[(101, 1)]), hot_sample).unwrap();
        assert_eq!(fresh.first_seen, Some(at(101)));
        assert_eq!(fresh.latest.as_ref().map(|s| s.time), Some(at(101)));
        assert!(fresh.previous.is_empty());
    }

    #[test]
    fn sorted_lists_merge_in_order() {
        let merged = merge_sorted(vec![1, 4, 6], vec![2, 3, 7], |&x| x);
        assert_eq!(merged, [1, 2, 3, 4, 6, 7]);
        assert_eq!(merge_sorted(vec![], vec![2], |&x| x), [2]);
    }
}
