//! The metric list: every measurement a sample can carry, written once.
//!
//! Each entry of the [`metric_list!`] invocation below gives a metric's
//! name, value type, unit, accepted range and whether it is charted. From
//! it come the wire struct [`ExtendedMetrics`], validation, the stores'
//! sample columns and their binding, the rollup columns (charted metrics),
//! the CSV header and the names the query API accepts. Adding a metric is
//! one entry here and a migration adding its column (and, when charted, its
//! rollup columns); the server's `metric_list` test fails until the
//! migration matches.
//!
//! The original API's three metrics (`cpu_load`, `mem`, `storage`) live on
//! [`Sample`] itself; the others in its boxed [`ExtendedMetrics`], which
//! only v1 samples carry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sample::{Sample, SampleError};

/// The largest magnitude a float metric may have: more than any machine
/// measures (an exabyte, in bytes), and small enough that summing a
/// bucket's values can never overflow.
pub const MAX_MAGNITUDE: f64 = 1e18;

/// File systems one sample may list: more than any host mounts, so that one
/// sample cannot turn into an unbounded number of rows.
pub const MAX_FILESYSTEMS: usize = 256;

/// How a metric's values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// A float: percentages, rates, load, temperature.
    Float,
    /// A whole count (bytes, seconds): kept exactly, as a signed 64-bit
    /// integer in the stores, so at most `i64::MAX`.
    Count,
}

/// Which values a metric accepts; every value must be finite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Zero or more.
    NonNegative,
    /// 0 to 100.
    Percent,
    /// Any finite value (a temperature may be below zero).
    Any,
}

/// One metric's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricValue {
    Float(f64),
    Count(u64),
}

impl MetricValue {
    /// As a float, for charts and rollup sums.
    pub fn as_f64(self) -> f64 {
        match self {
            MetricValue::Float(value) => value,
            MetricValue::Count(value) => value as f64,
        }
    }
}

impl From<f64> for MetricValue {
    fn from(value: f64) -> Self {
        MetricValue::Float(value)
    }
}

impl From<u64> for MetricValue {
    fn from(value: u64) -> Self {
        MetricValue::Count(value)
    }
}

/// The shortest text that reads back as the same value: what CSV exports.
impl fmt::Display for MetricValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricValue::Float(value) => write!(f, "{value}"),
            MetricValue::Count(value) => write!(f, "{value}"),
        }
    }
}

/// A Rust type a metric field may have.
pub trait MetricType: Copy + Into<MetricValue> {
    const KIND: ValueKind;
    fn from_value(value: MetricValue) -> Self;
}

impl MetricType for f64 {
    const KIND: ValueKind = ValueKind::Float;
    fn from_value(value: MetricValue) -> Self {
        value.as_f64()
    }
}

impl MetricType for u64 {
    const KIND: ValueKind = ValueKind::Count;
    fn from_value(value: MetricValue) -> Self {
        match value {
            MetricValue::Count(value) => value,
            // Saturating: only a store holding a float in a count column
            // could get here.
            MetricValue::Float(value) => value.max(0.0) as u64,
        }
    }
}

/// A metric: its name is its key on the wire, its column in the samples
/// table, the prefix of its rollup columns and its name in the API.
pub struct Metric {
    pub name: &'static str,
    /// For people: `%`, `MB`, `bytes`, `bytes/s`, `s`, `°C`, or empty.
    pub unit: &'static str,
    pub description: &'static str,
    pub kind: ValueKind,
    pub range: Range,
    /// Summarised into the rollup tiers, served as series and charted.
    pub charted: bool,
    read: fn(&Sample) -> Option<MetricValue>,
    write: fn(&mut Sample, Option<MetricValue>),
}

impl Metric {
    /// The value in a sample; `None` when the sample lacks it.
    pub fn get(&self, sample: &Sample) -> Option<MetricValue> {
        (self.read)(sample)
    }

    /// Sets (or with `None`, clears) the value in a sample.
    pub fn set(&self, sample: &mut Sample, value: Option<MetricValue>) {
        (self.write)(sample, value)
    }

    /// Checks a value against the metric's range and kind.
    pub fn check(&self, value: MetricValue) -> Result<(), SampleError> {
        let name = self.name;
        match value {
            MetricValue::Count(count) if count > i64::MAX as u64 => {
                Err(SampleError::OutOfRange(name))
            }
            MetricValue::Count(_) => Ok(()),
            MetricValue::Float(value) if !value.is_finite() => Err(SampleError::NotFinite(name)),
            MetricValue::Float(value) if value.abs() > MAX_MAGNITUDE => {
                Err(SampleError::TooLarge(name))
            }
            MetricValue::Float(value) => match self.range {
                Range::Any => Ok(()),
                _ if value < 0.0 => Err(SampleError::Negative(name)),
                Range::Percent if value > 100.0 => Err(SampleError::AbovePercent(name)),
                _ => Ok(()),
            },
        }
    }
}

impl fmt::Debug for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metric").field("name", &self.name).finish()
    }
}

impl PartialEq for Metric {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// Usage of one mounted file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemUsage {
    pub mount_point: String,
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// Writes [`ExtendedMetrics`] and [`METRICS`] from one list.
macro_rules! metric_list {
    (
        original {
            $( $(#[doc = $odoc:literal])+ $oname:ident: $ounit:literal, $orange:ident, charted = $ocharted:literal; )*
        }
        extended {
            $( $(#[doc = $edoc:literal])+ $ename:ident: $etype:ty, $eunit:literal, $erange:ident, charted = $echarted:literal; )*
        }
    ) => {
        /// The metrics beyond the original three. Every field is optional: a
        /// host without swap or sensors simply leaves them out.
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct ExtendedMetrics {
            $(
                $(#[doc = $edoc])+
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $ename: Option<$etype>,
            )*
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub filesystems: Vec<FilesystemUsage>,
        }

        /// How many metrics there are.
        pub const METRIC_COUNT: usize = [$(stringify!($oname),)* $(stringify!($ename),)*].len();

        /// Every metric, in the samples table's column order.
        pub static METRICS: [Metric; METRIC_COUNT] = [
            $(
                Metric {
                    name: stringify!($oname),
                    unit: $ounit,
                    description: concat!($($odoc),+),
                    kind: ValueKind::Float,
                    range: Range::$orange,
                    charted: $ocharted,
                    read: |sample| sample.$oname.map(MetricValue::Float),
                    write: |sample, value| sample.$oname = value.map(MetricValue::as_f64),
                },
            )*
            $(
                Metric {
                    name: stringify!($ename),
                    unit: $eunit,
                    description: concat!($($edoc),+),
                    kind: <$etype as MetricType>::KIND,
                    range: Range::$erange,
                    charted: $echarted,
                    read: |sample| {
                        sample.extended.as_deref().and_then(|e| e.$ename).map(Into::into)
                    },
                    write: |sample, value| {
                        let value = value.map(<$etype as MetricType>::from_value);
                        if value.is_some() || sample.extended.is_some() {
                            sample.extended.get_or_insert_with(Default::default).$ename = value;
                        }
                    },
                },
            )*
        ];
    };
}

metric_list! {
    original {
        /// Cpu load in percent of all cores.
        cpu_load: "%", Percent, charted = true;
        /// Memory used, in the unit the client chose (MB by default).
        mem: "MB", NonNegative, charted = true;
        /// Root file system used, in the unit the client chose (MB by default).
        storage: "MB", NonNegative, charted = true;
    }
    extended {
        /// Load average over one minute.
        load_average_1m: f64, "", NonNegative, charted = true;
        /// Load average over five minutes.
        load_average_5m: f64, "", NonNegative, charted = false;
        /// Load average over fifteen minutes.
        load_average_15m: f64, "", NonNegative, charted = false;
        /// Memory in use.
        memory_used_bytes: u64, "bytes", NonNegative, charted = true;
        /// Memory available to new programs without swapping.
        memory_available_bytes: u64, "bytes", NonNegative, charted = false;
        /// Physical memory.
        memory_total_bytes: u64, "bytes", NonNegative, charted = true;
        /// Swap in use.
        swap_used_bytes: u64, "bytes", NonNegative, charted = true;
        /// Swap space.
        swap_total_bytes: u64, "bytes", NonNegative, charted = false;
        /// Bytes read from disks per second.
        disk_read_bytes_per_second: f64, "bytes/s", NonNegative, charted = true;
        /// Bytes written to disks per second.
        disk_write_bytes_per_second: f64, "bytes/s", NonNegative, charted = true;
        /// Bytes received over the network per second.
        network_receive_bytes_per_second: f64, "bytes/s", NonNegative, charted = true;
        /// Bytes sent over the network per second.
        network_transmit_bytes_per_second: f64, "bytes/s", NonNegative, charted = true;
        /// Time since the host booted.
        uptime_seconds: u64, "s", NonNegative, charted = false;
        /// The hottest sensor, where the host has any. May be below zero.
        temperature_celsius: f64, "°C", Any, charted = true;
    }
}

/// How many metrics are charted.
pub const CHARTED_COUNT: usize = {
    let mut count = 0;
    let mut index = 0;
    while index < METRIC_COUNT {
        if METRICS[index].charted {
            count += 1;
        }
        index += 1;
    }
    count
};

/// The charted metrics, in [`METRICS`] order: the rollup tables' metrics.
pub static CHARTED: [&Metric; CHARTED_COUNT] = {
    let mut charted = [&METRICS[0]; CHARTED_COUNT];
    let (mut index, mut next) = (0, 0);
    while index < METRIC_COUNT {
        if METRICS[index].charted {
            charted[next] = &METRICS[index];
            next += 1;
        }
        index += 1;
    }
    charted
};

/// The metric of that name.
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|metric| metric.name == name)
}

/// The position of a charted metric in [`CHARTED`].
pub fn charted_index(name: &str) -> Option<usize> {
    CHARTED.iter().position(|metric| metric.name == name)
}

/// Every charted metric's value in a sample, in [`CHARTED`] order, as
/// floats.
pub fn charted_values(sample: &Sample) -> [Option<f64>; CHARTED_COUNT] {
    CHARTED.map(|metric| metric.get(sample).map(MetricValue::as_f64))
}

/// Completes `stored` with what a later part of the same sample (same host
/// and time) carries: every metric `stored` lacks, and file systems of
/// mount points it lacks, up to [`MAX_FILESYSTEMS`]. Stored values are
/// never replaced, so a replay changes nothing and parts may arrive in any
/// order. Returns what was added, as a sample of those values only (for the
/// summaries they join), or `None` when nothing was.
pub fn fill_missing(stored: &mut Sample, part: &Sample) -> Option<Sample> {
    let mut added = Sample {
        time: stored.time,
        cpu_load: None,
        mem: None,
        storage: None,
        extended: None,
    };
    let mut changed = false;
    for metric in &METRICS {
        if metric.get(stored).is_none() {
            if let Some(value) = metric.get(part) {
                metric.set(stored, Some(value));
                metric.set(&mut added, Some(value));
                changed = true;
            }
        }
    }
    let incoming = part
        .extended
        .as_deref()
        .map_or(&[][..], |extended| extended.filesystems.as_slice());
    for fs in incoming {
        let kept = stored
            .extended
            .as_deref()
            .map_or(&[][..], |extended| extended.filesystems.as_slice());
        if kept.len() >= MAX_FILESYSTEMS
            || kept.iter().any(|known| known.mount_point == fs.mount_point)
        {
            continue;
        }
        for sample in [&mut *stored, &mut added] {
            sample
                .extended
                .get_or_insert_with(Default::default)
                .filesystems
                .push(fs.clone());
        }
        changed = true;
    }
    changed.then_some(added)
}

/// Checks every metric of a sample against its range, and its file systems.
pub fn validate(sample: &Sample) -> Result<(), SampleError> {
    for metric in &METRICS {
        if let Some(value) = metric.get(sample) {
            metric.check(value)?;
        }
    }
    let filesystems = sample
        .extended
        .as_deref()
        .map_or(&[][..], |extended| extended.filesystems.as_slice());
    if filesystems.len() > MAX_FILESYSTEMS {
        return Err(SampleError::TooManyFilesystems);
    }
    for fs in filesystems {
        let counts = [
            ("filesystems.used_bytes", fs.used_bytes),
            ("filesystems.total_bytes", fs.total_bytes),
        ];
        if let Some((field, _)) = counts.iter().find(|(_, count)| *count > i64::MAX as u64) {
            return Err(SampleError::OutOfRange(field));
        }
        let text = &fs.mount_point;
        if text.is_empty() || text.len() > 4096 || text.chars().any(char::is_control) {
            return Err(SampleError::InvalidText("filesystems.mount_point"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::FilesystemUsage;
    use crate::UnixTime;

    fn empty_sample() -> Sample {
        Sample {
            time: UnixTime::from_micros(0),
            cpu_load: None,
            mem: None,
            storage: None,
            extended: None,
        }
    }

    /// A distinct value of the metric's kind for the metric at `index`.
    fn value_for(index: usize, metric: &Metric) -> MetricValue {
        match metric.kind {
            ValueKind::Float => MetricValue::Float(index as f64 + 0.5),
            ValueKind::Count => MetricValue::Count(1 << 40 | index as u64),
        }
    }

    #[test]
    fn every_metric_round_trips_through_a_sample_and_the_wire() {
        let mut sample = empty_sample();
        for (index, metric) in METRICS.iter().enumerate() {
            metric.set(&mut sample, Some(value_for(index, metric)));
        }
        validate(&sample).unwrap();
        let wire = crate::v1::HostSample::from_sample(&sample);
        let json = serde_json::to_value(&wire).unwrap();
        for (index, metric) in METRICS.iter().enumerate() {
            let expected = value_for(index, metric);
            assert_eq!(metric.get(&sample), Some(expected), "{}", metric.name);
            assert_eq!(
                json[metric.name].as_f64(),
                Some(expected.as_f64()),
                "{} on the wire",
                metric.name
            );
        }
        let parsed: crate::v1::HostSample = serde_json::from_value(json).unwrap();
        assert_eq!(parsed, wire);
    }

    #[test]
    fn names_are_unique_and_charted_ones_are_in_order() {
        let mut names: Vec<&str> = METRICS.iter().map(|metric| metric.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), METRIC_COUNT);
        assert_eq!(CHARTED.len(), METRICS.iter().filter(|m| m.charted).count());
        assert_eq!(charted_index("cpu_load"), Some(0));
        assert_eq!(charted_index("uptime_seconds"), None);
        assert_eq!(
            metric("uptime_seconds").map(|m| m.kind),
            Some(ValueKind::Count)
        );
    }

    #[test]
    fn a_sample_lists_a_bounded_number_of_filesystems() {
        let filesystems = |count: usize| {
            let mut sample = empty_sample();
            let extended = ExtendedMetrics {
                filesystems: (0..count)
                    .map(|index| FilesystemUsage {
                        mount_point: format!("/mnt/{index}"),
                        used_bytes: 1,
                        total_bytes: 2,
                    })
                    .collect(),
                ..ExtendedMetrics::default()
            };
            sample.extended = Some(Box::new(extended));
            validate(&sample)
        };
        assert_eq!(filesystems(MAX_FILESYSTEMS), Ok(()));
        assert_eq!(
            filesystems(MAX_FILESYSTEMS + 1),
            Err(SampleError::TooManyFilesystems)
        );
    }

    #[test]
    fn mount_points_are_plain_text() {
        let mut sample = empty_sample();
        let mut extended = ExtendedMetrics::default();
        extended.filesystems.push(FilesystemUsage {
            mount_point: "/data\0".into(),
            used_bytes: 1,
            total_bytes: 2,
        });
        sample.extended = Some(Box::new(extended));
        assert_eq!(
            validate(&sample),
            Err(SampleError::InvalidText("filesystems.mount_point"))
        );
    }

    fn mount(path: &str, used: u64) -> FilesystemUsage {
        FilesystemUsage {
            mount_point: path.into(),
            used_bytes: used,
            total_bytes: 100,
        }
    }

    #[test]
    fn a_later_part_fills_only_what_the_stored_sample_lacks() {
        let metric = |name: &str| super::metric(name).unwrap();
        let mut stored = empty_sample();
        stored.cpu_load = Some(10.0);
        metric("swap_used_bytes").set(&mut stored, Some(MetricValue::Count(5)));
        stored
            .extended
            .as_mut()
            .unwrap()
            .filesystems
            .push(mount("/", 1));

        let mut part = empty_sample();
        part.cpu_load = Some(99.0);
        part.mem = Some(40.0);
        metric("load_average_1m").set(&mut part, Some(MetricValue::Float(0.5)));
        let extended = part.extended.as_mut().unwrap();
        extended
            .filesystems
            .extend([mount("/", 9), mount("/home", 2)]);

        let added = fill_missing(&mut stored, &part).expect("values added");
        assert_eq!(stored.cpu_load, Some(10.0), "a stored value is kept");
        assert_eq!(stored.mem, Some(40.0));
        assert_eq!(
            metric("load_average_1m").get(&stored),
            Some(MetricValue::Float(0.5))
        );
        let mounts: Vec<_> = stored.extended.as_ref().unwrap().filesystems.clone();
        assert_eq!(mounts, [mount("/", 1), mount("/home", 2)]);

        assert_eq!((added.cpu_load, added.mem), (None, Some(40.0)));
        assert_eq!(metric("swap_used_bytes").get(&added), None);
        assert_eq!(added.extended.unwrap().filesystems, [mount("/home", 2)]);

        assert_eq!(
            fill_missing(&mut stored, &part),
            None,
            "a replay adds nothing"
        );
    }

    #[test]
    fn filled_file_systems_stay_within_the_bound() {
        let mut stored = empty_sample();
        let mut part = empty_sample();
        part.extended = Some(Box::default());
        let extended = part.extended.as_mut().unwrap();
        extended.filesystems = (0..MAX_FILESYSTEMS + 5)
            .map(|index| mount(&format!("/m{index}"), 1))
            .collect();
        fill_missing(&mut stored, &part).unwrap();
        assert_eq!(stored.extended.unwrap().filesystems.len(), MAX_FILESYSTEMS);
    }

    #[test]
    fn clearing_a_value_does_not_invent_extended_metrics() {
        let mut sample = empty_sample();
        for metric in &METRICS {
            metric.set(&mut sample, None);
        }
        assert_eq!(sample, empty_sample());
    }

    #[test]
    fn ranges_are_checked_by_name() {
        let check = |name: &str, value: MetricValue| metric(name).unwrap().check(value);
        assert_eq!(
            check("cpu_load", MetricValue::Float(100.5)),
            Err(SampleError::AbovePercent("cpu_load"))
        );
        assert_eq!(
            check("disk_read_bytes_per_second", MetricValue::Float(-1.0)),
            Err(SampleError::Negative("disk_read_bytes_per_second"))
        );
        assert_eq!(
            check("temperature_celsius", MetricValue::Float(-40.0)),
            Ok(())
        );
        assert_eq!(
            check("temperature_celsius", MetricValue::Float(f64::NAN)),
            Err(SampleError::NotFinite("temperature_celsius"))
        );
        assert_eq!(
            check("swap_used_bytes", MetricValue::Count(u64::MAX)),
            Err(SampleError::OutOfRange("swap_used_bytes"))
        );
        assert_eq!(
            check("temperature_celsius", MetricValue::Float(-1e300)),
            Err(SampleError::TooLarge("temperature_celsius"))
        );
        assert_eq!(check("mem", MetricValue::Float(MAX_MAGNITUDE)), Ok(()));
    }
}
