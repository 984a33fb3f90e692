//! A sample as a row of the samples table, both ways: its columns come from
//! the metric list ([`sysmon_core::metrics::METRICS`]), so a new metric
//! needs no change here, only its migration.

use std::sync::OnceLock;

use sqlx::{ColumnIndex, Decode, Row, Type};
use sysmon_core::metrics::{MetricValue, ValueKind, METRICS, METRIC_COUNT};
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::{Sample, UnixTime};

use super::ClientSample;
use crate::error::Result;

/// Columns of the samples table: the key, then one per metric.
pub const SAMPLE_COLUMN_COUNT: usize = 2 + METRIC_COUNT;

/// Every column of the samples table, comma-separated, in the order rows
/// are bound ([`SampleRow::columns`]) and read ([`full_sample_from_row`]).
pub fn sample_columns() -> &'static str {
    static COLUMNS: OnceLock<String> = OnceLock::new();
    COLUMNS.get_or_init(|| {
        let names: Vec<&str> = ["client_id", "time_us"]
            .into_iter()
            .chain(METRICS.iter().map(|metric| metric.name))
            .collect();
        names.join(", ")
    })
}

/// A value to bind: the samples table's columns are either of these.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Column {
    Integer(Option<i64>),
    Float(Option<f64>),
}

impl Column {
    /// A metric's value as the column its kind is kept in.
    fn of_kind(kind: ValueKind, value: Option<MetricValue>) -> Column {
        match kind {
            ValueKind::Float => Column::Float(value.map(MetricValue::as_f64)),
            // Validation keeps counts within i64; the clamp only guards it.
            ValueKind::Count => Column::Integer(value.map(|value| match value {
                MetricValue::Count(count) => count.min(i64::MAX as u64) as i64,
                MetricValue::Float(float) => float as i64,
            })),
        }
    }
}

/// One sample as the samples table's columns.
#[derive(Debug, Clone)]
pub struct SampleRow {
    pub client_id: i64,
    pub time_us: i64,
    values: [Option<MetricValue>; METRIC_COUNT],
}

impl SampleRow {
    pub fn from_sample(row: &ClientSample) -> Self {
        SampleRow {
            client_id: row.client.0,
            time_us: row.sample.time.micros(),
            values: std::array::from_fn(|index| METRICS[index].get(&row.sample)),
        }
    }

    /// The values in [`sample_columns`] order, for binding.
    pub fn columns(&self) -> impl Iterator<Item = Column> + '_ {
        let key = [
            Column::Integer(Some(self.client_id)),
            Column::Integer(Some(self.time_us)),
        ];
        let metrics = METRICS
            .iter()
            .zip(self.values)
            .map(|(metric, value)| Column::of_kind(metric.kind, value));
        key.into_iter().chain(metrics)
    }

    /// Each column's kind, in [`sample_columns`] order (values empty).
    pub fn column_kinds() -> impl Iterator<Item = Column> {
        [Column::Integer(None), Column::Integer(None)]
            .into_iter()
            .chain(
                METRICS
                    .iter()
                    .map(|metric| Column::of_kind(metric.kind, None)),
            )
    }
}

/// Reads the columns of [`sample_columns`], starting at column `first`,
/// from a row sqlx fetched, into a full sample (file systems attached
/// later).
pub fn full_sample_from_row<'r, R>(row: &'r R, first: usize) -> Result<Sample>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let float = |index| row.try_get::<Option<f64>, _>(index);
    let integer = |index| row.try_get::<Option<i64>, _>(index);
    Ok(full_sample_from_columns(
        row.try_get(first + 1)?,
        first + 2,
        float,
        integer,
    )?)
}

/// A full sample from its time and its metric columns, whatever library
/// read them: `float(i)` and `integer(i)` read column `i`, and the metrics
/// start at column `first_metric`.
pub fn full_sample_from_columns<E>(
    time_us: i64,
    first_metric: usize,
    float: impl Fn(usize) -> std::result::Result<Option<f64>, E>,
    integer: impl Fn(usize) -> std::result::Result<Option<i64>, E>,
) -> std::result::Result<Sample, E> {
    let mut sample = sample_from_row(time_us, None, None, None);
    sample.extended = Some(Box::default());
    for (offset, metric) in METRICS.iter().enumerate() {
        let column = first_metric + offset;
        let value = match metric.kind {
            ValueKind::Float => float(column)?.map(MetricValue::Float),
            ValueKind::Count => {
                integer(column)?.map(|count| MetricValue::Count(count.max(0) as u64))
            }
        };
        metric.set(&mut sample, value);
    }
    Ok(sample)
}

/// A sample of the original three metrics.
pub fn sample_from_row(
    time_us: i64,
    cpu_load: Option<f64>,
    mem: Option<f64>,
    storage: Option<f64>,
) -> Sample {
    Sample {
        time: UnixTime::from_micros(time_us),
        cpu_load,
        mem,
        storage,
        extended: None,
    }
}

/// A file system's usage at one sample's time.
#[derive(Debug, Clone, PartialEq)]
pub struct FilesystemRow {
    pub time_us: i64,
    pub usage: FilesystemUsage,
}

impl From<(i64, String, i64, i64)> for FilesystemRow {
    fn from((time_us, mount_point, used, total): (i64, String, i64, i64)) -> Self {
        FilesystemRow {
            time_us,
            usage: FilesystemUsage {
                mount_point,
                used_bytes: used.max(0) as u64,
                total_bytes: total.max(0) as u64,
            },
        }
    }
}

/// Attaches file-system rows (ordered by time) to samples (ordered by time).
pub fn attach_filesystems(samples: &mut [Sample], rows: Vec<FilesystemRow>) {
    let mut rows = rows.into_iter().peekable();
    for sample in samples.iter_mut() {
        while rows
            .next_if(|row| row.time_us < sample.time.micros())
            .is_some()
        {}
        while let Some(row) = rows.next_if(|row| row.time_us == sample.time.micros()) {
            if let Some(extended) = sample.extended.as_deref_mut() {
                extended.filesystems.push(row.usage);
            }
        }
    }
}

/// File systems of the given samples as (client id, time, usage).
pub fn filesystem_rows(samples: &[ClientSample]) -> Vec<(i64, i64, &FilesystemUsage)> {
    samples
        .iter()
        .flat_map(|row| {
            let (client, time) = (row.client.0, row.sample.time.micros());
            row.sample.extended.iter().flat_map(move |extended| {
                extended
                    .filesystems
                    .iter()
                    .map(move |fs| (client, time, fs))
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClientId;

    #[test]
    fn columns_follow_the_metric_list() {
        let columns: Vec<&str> = sample_columns().split(", ").collect();
        assert_eq!(columns.len(), SAMPLE_COLUMN_COUNT);
        assert_eq!(&columns[..3], ["client_id", "time_us", "cpu_load"]);
        assert_eq!(SampleRow::column_kinds().count(), SAMPLE_COLUMN_COUNT);
        let row = SampleRow::from_sample(&ClientSample {
            client: ClientId(3),
            sample: sample_from_row(7, Some(1.5), None, None),
        });
        let bound: Vec<Column> = row.columns().collect();
        assert_eq!(bound.len(), SAMPLE_COLUMN_COUNT);
        assert_eq!(
            bound[..3],
            [
                Column::Integer(Some(3)),
                Column::Integer(Some(7)),
                Column::Float(Some(1.5))
            ]
        );
    }
}
