//! Summaries of samples over fixed buckets: the charted metrics, the tiers
//! they are kept at, and the arithmetic that merges them.
//!
//! Every tier row holds, per metric, min, max, sum and count, so rows merge
//! exactly (min of mins, sum of sums) and a mean over any union of buckets
//! is `sum / count`. The same shape comes out of a query over raw samples,
//! which is why one set of types serves every resolution.

use std::collections::{BTreeMap, HashSet};

use sqlx::{ColumnIndex, Decode, Row, Type};
use sysmon_core::metrics::{charted_values, CHARTED, CHARTED_COUNT};
use sysmon_core::Sample;

use super::{ClientSample, SampleKey};
use crate::error::Result;

/// Where a series is read from: the samples themselves or a rollup table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Raw,
    OneMinute,
    TenMinutes,
    OneHour,
}

impl Tier {
    /// Finest first.
    pub const ALL: [Tier; 4] = [Tier::Raw, Tier::OneMinute, Tier::TenMinutes, Tier::OneHour];
    /// The tiers kept as tables, finest first.
    pub const ROLLUPS: [Tier; 3] = [Tier::OneMinute, Tier::TenMinutes, Tier::OneHour];

    /// Bucket width; 0 for raw samples, which have none.
    pub const fn bucket_micros(self) -> i64 {
        match self {
            Tier::Raw => 0,
            Tier::OneMinute => 60_000_000,
            Tier::TenMinutes => 600_000_000,
            Tier::OneHour => 3_600_000_000,
        }
    }

    /// Position in [`Tier::ROLLUPS`], for per-tier tables of SQL; 0 for raw,
    /// which has no rollup table and no upsert.
    pub fn rollup_index(self) -> usize {
        Tier::ROLLUPS
            .iter()
            .position(|tier| *tier == self)
            .unwrap_or(0)
    }

    /// The name used in the API and in configuration.
    pub const fn label(self) -> &'static str {
        match self {
            Tier::Raw => "raw",
            Tier::OneMinute => "1m",
            Tier::TenMinutes => "10m",
            Tier::OneHour => "1h",
        }
    }

    pub fn from_label(label: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|tier| tier.label() == label)
    }

    /// The table holding this tier's rows.
    pub const fn table(self) -> &'static str {
        match self {
            Tier::Raw => "samples",
            Tier::OneMinute => "rollup_1m",
            Tier::TenMinutes => "rollup_10m",
            Tier::OneHour => "rollup_1h",
        }
    }

    /// The column holding the time a row is filed under.
    pub const fn time_column(self) -> &'static str {
        match self {
            Tier::Raw => "time_us",
            _ => "bucket_us",
        }
    }
}

/// Min, max, sum and count of one metric over a bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct MetricSummary {
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub sum: f64,
    pub count: i64,
}

impl MetricSummary {
    pub fn add(&mut self, value: f64) {
        self.min = Some(self.min.map_or(value, |min| min.min(value)));
        self.max = Some(self.max.map_or(value, |max| max.max(value)));
        self.sum += value;
        self.count += 1;
    }

    pub fn merge(&mut self, other: &MetricSummary) {
        if other.count == 0 {
            return;
        }
        self.min = min_option(self.min, other.min);
        self.max = max_option(self.max, other.max);
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The mean; `None` for a bucket without values.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }
}

fn min_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_option(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// One bucket of one client: the unit rollup tables store and series return.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    pub client_id: i64,
    /// Start of the bucket, in microseconds since the epoch.
    pub start_us: i64,
    pub sample_count: i64,
    pub metrics: [MetricSummary; CHARTED_COUNT],
}

impl Bucket {
    pub fn empty(client_id: i64, start_us: i64) -> Self {
        Bucket {
            client_id,
            start_us,
            sample_count: 0,
            metrics: [MetricSummary::default(); CHARTED_COUNT],
        }
    }

    pub fn add_sample(&mut self, sample: &Sample) {
        self.sample_count += 1;
        self.add_values(sample);
    }

    /// Values added to a sample already counted (see [`summarise_added`]).
    pub fn add_values(&mut self, sample: &Sample) {
        for (summary, value) in self.metrics.iter_mut().zip(charted_values(sample)) {
            if let Some(value) = value {
                summary.add(value);
            }
        }
    }

    pub fn merge(&mut self, other: &Bucket) {
        self.sample_count += other.sample_count;
        for (summary, other) in self.metrics.iter_mut().zip(&other.metrics) {
            summary.merge(other);
        }
    }
}

/// Start of the bucket of width `width_us` that holds `time_us`.
pub fn bucket_start(time_us: i64, width_us: i64) -> i64 {
    time_us.div_euclid(width_us) * width_us
}

/// Summarises the newly stored samples for one tier, a row per (client,
/// bucket), ordered by key so concurrent writers lock rows in one order.
pub fn summarise(samples: &[ClientSample], stored: &[SampleKey], tier: Tier) -> Vec<Bucket> {
    let width = tier.bucket_micros();
    // Usually every sample is new; only replays need the lookup. A key
    // twice in one batch is stored once, from its first row: taking keys
    // out of the set as they are used counts it once too.
    let mut stored: Option<HashSet<SampleKey>> =
        (stored.len() != samples.len()).then(|| stored.iter().copied().collect());
    let mut buckets: BTreeMap<(i64, i64), Bucket> = BTreeMap::new();
    for row in samples {
        let key = (row.client.0, row.sample.time.micros());
        if stored.as_mut().is_some_and(|stored| !stored.remove(&key)) {
            continue;
        }
        let start = bucket_start(key.1, width);
        buckets
            .entry((key.0, start))
            .or_insert_with(|| Bucket::empty(key.0, start))
            .add_sample(&row.sample);
    }
    buckets.into_values().collect()
}

/// Summaries of values added to samples already stored and counted: the
/// values join their buckets, the buckets' sample counts stay.
pub fn summarise_added<'a>(
    added: impl IntoIterator<Item = &'a ClientSample>,
    tier: Tier,
) -> Vec<Bucket> {
    let width = tier.bucket_micros();
    let mut buckets: BTreeMap<(i64, i64), Bucket> = BTreeMap::new();
    for row in added {
        let (client, start) = (row.client.0, bucket_start(row.sample.time.micros(), width));
        buckets
            .entry((client, start))
            .or_insert_with(|| Bucket::empty(client, start))
            .add_values(&row.sample);
    }
    buckets.into_values().collect()
}

/// The columns of a rollup table, in the order rows are bound.
pub fn rollup_columns() -> String {
    let mut columns = String::from("client_id, bucket_us, sample_count");
    for metric in CHARTED {
        let m = metric.name;
        columns.push_str(&format!(", {m}_min, {m}_max, {m}_sum, {m}_count"));
    }
    columns
}

/// Rollup columns after the three key columns: four per metric.
pub const ROLLUP_VALUE_COLUMNS: usize = 4 * CHARTED_COUNT;

/// The tail of an upsert into a tier's table (aliased `t`): merges a new
/// bucket into a stored one. The same SQL on both stores.
pub fn merge_on_conflict() -> String {
    let mut updates = String::from("sample_count = t.sample_count + excluded.sample_count");
    for metric in CHARTED {
        let m = metric.name;
        // A NULL comparison is not true, so a missing side keeps the other.
        updates.push_str(&format!(
            ", {m}_min = CASE WHEN t.{m}_min IS NULL OR excluded.{m}_min < t.{m}_min \
                 THEN excluded.{m}_min ELSE t.{m}_min END\
             , {m}_max = CASE WHEN t.{m}_max IS NULL OR excluded.{m}_max > t.{m}_max \
                 THEN excluded.{m}_max ELSE t.{m}_max END\
             , {m}_sum = t.{m}_sum + excluded.{m}_sum\
             , {m}_count = t.{m}_count + excluded.{m}_count"
        ));
    }
    format!(" ON CONFLICT (client_id, bucket_us) DO UPDATE SET {updates}")
}

/// What a series query reads: one client's buckets of `step_us` from a tier
/// over `[start_us, end_us)`, for the metrics at `metrics` (indices into
/// [`CHARTED`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesQuery {
    pub client_id: i64,
    pub tier: Tier,
    pub step_us: i64,
    pub start_us: i64,
    pub end_us: i64,
    pub metrics: Vec<usize>,
}

/// The aggregate `SELECT` for a series: grouped by bucket in the database,
/// so only one row per bucket travels. `placeholders` stand for the client
/// id, the start and the end, in the store's syntax.
pub fn series_sql(query: &SeriesQuery, placeholders: [&str; 3]) -> String {
    series_sql_from(query, query.tier.table(), placeholders)
}

/// [`series_sql`] over `table`, which has the columns of the query's tier's
/// table: SQLite's raw series reads its hot table this way too.
pub fn series_sql_from(query: &SeriesQuery, table: &str, placeholders: [&str; 3]) -> String {
    let time = query.tier.time_column();
    let step = query.step_us;
    let mut sql = format!("SELECT {time} / {step} AS bucket, ");
    if query.tier == Tier::Raw {
        sql.push_str("COUNT(*)");
        for &index in &query.metrics {
            // Byte counts are integer columns; aggregate them as floats so
            // both stores return one type (PostgreSQL sums BIGINT as NUMERIC).
            let m = CHARTED[index].name;
            let value = format!("CAST({m} AS DOUBLE PRECISION)");
            sql.push_str(&format!(
                ", MIN({value}), MAX({value}), SUM({value}), COUNT({m})"
            ));
        }
    } else {
        sql.push_str("CAST(SUM(sample_count) AS BIGINT)");
        for &index in &query.metrics {
            let m = CHARTED[index].name;
            sql.push_str(&format!(
                ", MIN({m}_min), MAX({m}_max), SUM({m}_sum), CAST(SUM({m}_count) AS BIGINT)"
            ));
        }
    }
    let [client, start, end] = placeholders;
    sql.push_str(&format!(
        " FROM {table} WHERE client_id = {client} AND {time} >= {start} AND {time} < {end} \
         GROUP BY bucket ORDER BY bucket"
    ));
    sql
}

/// Two series of one query (each ordered by start) as one: buckets with
/// the same start merge exactly, as any two summaries do.
pub fn merge_series(left: Vec<Bucket>, right: Vec<Bucket>) -> Vec<Bucket> {
    if right.is_empty() {
        return left;
    }
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut right = right.into_iter().peekable();
    for bucket in left {
        while let Some(earlier) = right.next_if(|other| other.start_us < bucket.start_us) {
            merged.push(earlier);
        }
        match right.next_if(|other| other.start_us == bucket.start_us) {
            Some(same) => {
                let mut bucket = bucket;
                bucket.merge(&same);
                merged.push(bucket);
            }
            None => merged.push(bucket),
        }
    }
    merged.extend(right);
    merged
}

/// One metric's columns in a row of [`series_sql`]: min, max, sum, count.
pub type SummaryColumns = (Option<f64>, Option<f64>, Option<f64>, i64);

/// Builds a bucket from a row of [`series_sql`], whatever library read it:
/// `bucket` and `count` are its first two columns, `metric(i)` the i-th
/// metric's four (metrics not asked for stay empty).
pub fn bucket_from_columns<E>(
    query: &SeriesQuery,
    bucket: i64,
    count: i64,
    mut metric: impl FnMut(usize) -> std::result::Result<SummaryColumns, E>,
) -> std::result::Result<Bucket, E> {
    let mut result = Bucket::empty(query.client_id, bucket * query.step_us);
    result.sample_count = count;
    for (position, &index) in query.metrics.iter().enumerate() {
        let (min, max, sum, count) = metric(2 + position * 4)?;
        result.metrics[index] = MetricSummary {
            min,
            max,
            sum: sum.unwrap_or(0.0),
            count,
        };
    }
    Ok(result)
}

/// Reads one row of [`series_sql`] fetched with sqlx.
pub fn bucket_from_row<'r, R>(row: &'r R, query: &SeriesQuery) -> Result<Bucket>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let summary = |column: usize| -> Result<SummaryColumns> {
        Ok((
            row.try_get(column)?,
            row.try_get(column + 1)?,
            row.try_get(column + 2)?,
            row.try_get(column + 3)?,
        ))
    };
    bucket_from_columns(query, row.try_get(0)?, row.try_get(1)?, summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClientId;
    use sysmon_core::UnixTime;

    fn sample(seconds: i64, cpu: Option<f64>) -> ClientSample {
        ClientSample {
            client: ClientId(7),
            sample: Sample {
                time: UnixTime::from_micros(seconds * 1_000_000),
                cpu_load: cpu,
                mem: Some(seconds as f64),
                storage: None,
                extended: None,
            },
        }
    }

    #[test]
    fn summaries_merge_exactly() {
        let mut left = MetricSummary::default();
        [3.0, 1.0].into_iter().for_each(|v| left.add(v));
        let mut right = MetricSummary::default();
        [8.0, 4.0].into_iter().for_each(|v| right.add(v));
        left.merge(&right);
        left.merge(&MetricSummary::default());
        assert_eq!(left.min, Some(1.0));
        assert_eq!(left.max, Some(8.0));
        assert_eq!(left.count, 4);
        assert_eq!(left.mean(), Some(4.0));
        assert_eq!(MetricSummary::default().mean(), None);
    }

    #[test]
    fn samples_fall_into_buckets_by_start() {
        assert_eq!(bucket_start(119_999_999, 60_000_000), 60_000_000);
        assert_eq!(bucket_start(120_000_000, 60_000_000), 120_000_000);
        assert_eq!(bucket_start(-1, 60_000_000), -60_000_000);
    }

    #[test]
    fn summarise_groups_by_client_and_bucket_and_skips_duplicates() {
        let samples = vec![
            sample(60, Some(10.0)),
            sample(61, None),
            sample(119, Some(30.0)),
            sample(120, Some(50.0)),
        ];
        let all: Vec<SampleKey> = samples
            .iter()
            .map(|s| (s.client.0, s.sample.time.micros()))
            .collect();
        let buckets = summarise(&samples, &all, Tier::OneMinute);
        assert_eq!(buckets.len(), 2);
        assert_eq!(buckets[0].start_us, 60_000_000);
        assert_eq!(buckets[0].sample_count, 3);
        let cpu = buckets[0].metrics[0];
        assert_eq!((cpu.min, cpu.max, cpu.count), (Some(10.0), Some(30.0), 2));
        assert_eq!(cpu.mean(), Some(20.0));
        assert_eq!(buckets[0].metrics[1].count, 3);

        // Only the first two were new: the others were replays.
        let buckets = summarise(&samples, &all[..2], Tier::OneHour);
        assert_eq!(buckets.len(), 1);
        assert_eq!(buckets[0].sample_count, 2);
        assert_eq!(buckets[0].metrics[0].max, Some(10.0));

        // The same time twice in one batch: stored once, counted once,
        // with the first row's values.
        let twice = vec![sample(60, Some(10.0)), sample(60, Some(90.0))];
        let buckets = summarise(&twice, &all[..1], Tier::OneMinute);
        assert_eq!(buckets[0].sample_count, 1);
        assert_eq!(buckets[0].metrics[0].max, Some(10.0));
    }

    #[test]
    fn series_merge_by_start() {
        let bucket = |start_us: i64, cpu: f64| {
            let mut bucket = Bucket::empty(7, start_us);
            bucket.add_sample(&sample(start_us, Some(cpu)).sample);
            bucket
        };
        let merged = merge_series(
            vec![bucket(0, 1.0), bucket(20, 2.0)],
            vec![bucket(10, 3.0), bucket(20, 4.0), bucket(30, 5.0)],
        );
        let starts: Vec<i64> = merged.iter().map(|bucket| bucket.start_us).collect();
        assert_eq!(starts, [0, 10, 20, 30]);
        assert_eq!(merged[2].sample_count, 2);
        assert_eq!(merged[2].metrics[0].mean(), Some(3.0));
        assert_eq!(merge_series(vec![bucket(0, 1.0)], vec![]).len(), 1);
        assert_eq!(merge_series(vec![], vec![bucket(0, 1.0)]).len(), 1);
    }

    #[test]
    fn tiers_round_trip_their_labels() {
        for tier in Tier::ALL {
            assert_eq!(Tier::from_label(tier.label()), Some(tier));
        }
        assert_eq!(Tier::from_label("5m"), None);
    }
}
