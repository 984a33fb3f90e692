//! Telegraf's standard measurements, as InfluxDB line protocol carries
//! them, turned into sysmon samples: points of one host (its `host` tag)
//! within one whole second become one sample at that second.
//!
//! | measurement | fields | sysmon |
//! |---|---|---|
//! | `cpu` (`cpu=cpu-total`) | `usage_idle` | `cpu_load` = 100 − idle |
//! | `mem` | `total`, `available`, `used` | `memory_*_bytes`; `mem` = used MiB |
//! | `swap` | `total`, `used` | `swap_*_bytes` |
//! | `disk` (per `path`) | `total`, `used` | file systems; `storage` = used MiB of `/` |
//! | `diskio` (per `name`) | `read_bytes`, `write_bytes` | disk rates (whole disks) |
//! | `net` (per `interface`) | `bytes_recv`, `bytes_sent` | network rates (not `lo`, not `all`) |
//! | `system` | `load1`, `load5`, `load15`, `uptime` | `load_average_*`, `uptime_seconds` |
//! | `temp` (per `sensor`) | `temp` | `temperature_celsius` = the hottest |
//!
//! Counters become rates against the same host's previous request
//! ([`Counters`]); the first request of a host after a start has none.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sysmon_core::collect::{rates, CounterMap};
use sysmon_core::v1::{ExtendedMetrics, FilesystemUsage, HostSample};
use sysmon_core::{Sample, UnixTime};

use super::line_protocol::{FieldValue, LineError, Point};

const MIB: f64 = 1024.0 * 1024.0;
/// Hosts whose counters are kept for rates, at most; past it they start
/// over (a rate missed once each), so memory stays bounded whatever
/// names a fleet token pushes.
const MAX_COUNTED_HOSTS: usize = 100_000;

/// One host's byte counters at one time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostCounters {
    pub time_us: i64,
    pub disks: CounterMap,
    pub networks: CounterMap,
}

/// The newest counters of every host, for the next request's rates.
#[derive(Debug, Default)]
pub struct Counters {
    hosts: HashMap<String, HostCounters>,
}

impl Counters {
    fn of(&self, host: &str) -> Option<&HostCounters> {
        self.hosts.get(host)
    }

    /// Takes counters read from a stored request (newer ones only).
    pub fn update(&mut self, readings: Vec<(String, HostCounters)>) {
        if self.hosts.len() + readings.len() > MAX_COUNTED_HOSTS {
            self.hosts.clear();
        }
        for (host, counters) in readings {
            match self.hosts.get(&host) {
                Some(kept) if kept.time_us >= counters.time_us => {}
                _ => {
                    self.hosts.insert(host, counters);
                }
            }
        }
    }
}

/// A request's points, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    /// Each host's samples, with the first line that went into each.
    pub samples: Vec<(String, usize, Sample)>,
    /// The newest counters of each host, to keep once stored.
    pub counters: Vec<(String, HostCounters)>,
    /// Points of measurements (or `cpu` lines of single cores) sysmon has
    /// no metric for.
    pub unmapped: u64,
    /// Lines that parsed but cannot be taken: no `host` tag, or a sample
    /// out of range.
    pub refused: Vec<LineError>,
}

/// What one host sent within one second.
#[derive(Debug, Default)]
struct Second {
    first_line: usize,
    cpu_load: Option<f64>,
    mem: Option<f64>,
    storage: Option<f64>,
    extended: ExtendedMetrics,
    disks: CounterMap,
    networks: CounterMap,
    temperatures: Vec<f64>,
}

/// Maps parsed points (each with its line number); `now` stands in for a
/// point without a timestamp.
pub fn map_points(points: Vec<(usize, Point)>, counters: &Counters, now: UnixTime) -> Mapped {
    let mut mapped = Mapped::default();
    let mut seconds: BTreeMap<(String, i64), Second> = BTreeMap::new();
    for (line, point) in points {
        let Some(host) = point.tag("host").map(str::to_owned) else {
            mapped.refused.push(LineError {
                line,
                message: format!(
                    "measurement `{}` has no `host` tag: sysmon stores samples per host",
                    point.measurement
                ),
            });
            continue;
        };
        let second = point.time_us.unwrap_or(now.micros()).div_euclid(1_000_000);
        let entry = seconds.entry((host, second)).or_insert_with(|| Second {
            first_line: line,
            ..Second::default()
        });
        if !take(entry, &point) {
            mapped.unmapped += 1;
        }
    }
    let mut newest: HashMap<String, HostCounters> = HashMap::new();
    for ((host, second), mut taken) in seconds {
        let time_us = second * 1_000_000;
        let previous = newest.get(&host).or_else(|| counters.of(&host));
        add_rates(&mut taken, previous, time_us);
        if !taken.disks.is_empty() || !taken.networks.is_empty() {
            let kept = newest.entry(host.clone()).or_default();
            kept.time_us = time_us;
            if !taken.disks.is_empty() {
                kept.disks = std::mem::take(&mut taken.disks);
            }
            if !taken.networks.is_empty() {
                kept.networks = std::mem::take(&mut taken.networks);
            }
        }
        let line = taken.first_line;
        match finish(taken, second, now) {
            Ok(sample) => mapped.samples.push((host, line, sample)),
            Err(message) => mapped.refused.push(LineError {
                line,
                message: format!("host `{host}` at {second}: {message}"),
            }),
        }
    }
    mapped.counters = newest.into_iter().collect();
    mapped
}

/// Takes one point into its host's second; false when sysmon has no
/// metric for it.
fn take(second: &mut Second, point: &Point) -> bool {
    let number = |key: &str| point.field(key).and_then(FieldValue::as_f64);
    let count = |key: &str| number(key).filter(|v| *v >= 0.0).map(|v| v as u64);
    let extended = &mut second.extended;
    match point.measurement.as_str() {
        "cpu" if point.tag("cpu") == Some("cpu-total") => match number("usage_idle") {
            Some(idle) => {
                // Telegraf's rounding can put idle a hair past 0 or 100;
                // anything further is refused by validation, not hidden.
                let busy = 100.0 - idle;
                second.cpu_load = Some(if (-0.5..=100.5).contains(&busy) {
                    busy.clamp(0.0, 100.0)
                } else {
                    busy
                });
                true
            }
            None => false,
        },
        // A measurement may come in several lines (`swap`'s sizes and its
        // in/out counts): a field a line lacks keeps what another gave.
        "mem" => {
            keep(&mut extended.memory_total_bytes, count("total"));
            keep(&mut extended.memory_available_bytes, count("available"));
            keep(&mut extended.memory_used_bytes, count("used"));
            second.mem = extended.memory_used_bytes.map(|used| used as f64 / MIB);
            true
        }
        "swap" => {
            keep(&mut extended.swap_total_bytes, count("total"));
            keep(&mut extended.swap_used_bytes, count("used"));
            true
        }
        "disk" => match (point.tag("path"), count("total"), count("used")) {
            (Some(path), Some(total), Some(used)) => {
                if path == "/" {
                    second.storage = Some(used as f64 / MIB);
                }
                extended.filesystems.push(FilesystemUsage {
                    mount_point: path.to_owned(),
                    used_bytes: used,
                    total_bytes: total,
                });
                true
            }
            _ => false,
        },
        "diskio" => match (point.tag("name"), count("read_bytes"), count("write_bytes")) {
            (Some(name), Some(read), Some(written)) => {
                second.disks.insert(name.to_owned(), (read, written));
                true
            }
            _ => false,
        },
        "net" => match (
            point.tag("interface"),
            count("bytes_recv"),
            count("bytes_sent"),
        ) {
            (Some("all" | "lo"), _, _) => false,
            (Some(name), Some(received), Some(sent)) => {
                second.networks.insert(name.to_owned(), (received, sent));
                true
            }
            _ => false,
        },
        "system" => {
            let before = (extended.load_average_1m, extended.uptime_seconds);
            keep(&mut extended.load_average_1m, number("load1"));
            keep(&mut extended.load_average_5m, number("load5"));
            keep(&mut extended.load_average_15m, number("load15"));
            keep(&mut extended.uptime_seconds, count("uptime"));
            // Its `uptime_format` line has nothing sysmon keeps.
            before != (extended.load_average_1m, extended.uptime_seconds)
        }
        "temp" => match number("temp") {
            Some(celsius) => {
                second.temperatures.push(celsius);
                true
            }
            None => false,
        },
        _ => false,
    }
}

/// Sets `field` when a value came.
fn keep<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

/// Disk and network rates against the host's previous counters.
fn add_rates(second: &mut Second, previous: Option<&HostCounters>, time_us: i64) {
    let Some(previous) = previous.filter(|previous| previous.time_us < time_us) else {
        return;
    };
    let window = Duration::from_micros((time_us - previous.time_us) as u64);
    if !second.disks.is_empty() && !previous.disks.is_empty() {
        let (read, written) = rates(&previous.disks, &whole_disks(&second.disks), window);
        second.extended.disk_read_bytes_per_second = read;
        second.extended.disk_write_bytes_per_second = written;
    }
    if !second.networks.is_empty() && !previous.networks.is_empty() {
        let (received, sent) = rates(&previous.networks, &second.networks, window);
        second.extended.network_receive_bytes_per_second = received;
        second.extended.network_transmit_bytes_per_second = sent;
    }
}

/// Telegraf's `diskio` lists partitions beside their disks (`sda` and
/// `sda1`, `nvme0n1` and `nvme0n1p1`) and loop devices: counting both would
/// count each byte twice, so only whole disks, and no loop or RAM disks.
fn whole_disks(disks: &CounterMap) -> CounterMap {
    disks
        .iter()
        .filter(|(name, _)| !name.starts_with("loop") && !name.starts_with("ram"))
        .filter(|(name, _)| !disks.keys().any(|disk| is_partition_of(name, disk)))
        .map(|(name, counters)| (name.clone(), *counters))
        .collect()
}

/// `sda1` of `sda`, `nvme0n1p1` of `nvme0n1`, `mmcblk0p2` of `mmcblk0`;
/// not `dm-10` of `dm-1`.
fn is_partition_of(name: &str, disk: &str) -> bool {
    let Some(rest) = name.strip_prefix(disk).filter(|rest| !rest.is_empty()) else {
        return false;
    };
    let disk_ends_in_digit = disk.ends_with(|c: char| c.is_ascii_digit());
    let number = match rest.strip_prefix('p') {
        Some(number) if disk_ends_in_digit => number,
        _ if disk_ends_in_digit => return false,
        _ => rest,
    };
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

/// The sample of a host's second, validated as every ingest route's.
fn finish(mut second: Second, at: i64, now: UnixTime) -> Result<Sample, String> {
    second.extended.temperature_celsius = second.temperatures.iter().copied().reduce(f64::max);
    HostSample {
        time: at as f64,
        cpu_load: second.cpu_load,
        mem: second.mem,
        storage: second.storage,
        extended: second.extended,
    }
    .into_sample(now)
    .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::line_protocol::{parse_body, Precision};
    use super::*;

    fn mapped(body: &str, counters: &Counters) -> Mapped {
        let (points, errors) = parse_body(body, Precision::Seconds);
        assert!(errors.is_empty(), "{errors:?}");
        map_points(
            points,
            counters,
            UnixTime::from_micros(2_000_000_000_000_000),
        )
    }

    #[test]
    fn partitions_are_told_from_their_disks() {
        for (name, disk) in [
            ("sda1", "sda"),
            ("nvme0n1p1", "nvme0n1"),
            ("mmcblk0p2", "mmcblk0"),
        ] {
            assert!(is_partition_of(name, disk), "{name} of {disk}");
        }
        for (name, disk) in [
            ("dm-10", "dm-1"),
            ("sda", "sda"),
            ("sdab", "sda"),
            ("nvme0n12", "nvme0n1"),
        ] {
            assert!(!is_partition_of(name, disk), "{name} of {disk}");
        }
    }

    #[test]
    fn points_of_one_second_make_one_sample_and_rates_span_requests() {
        let first = mapped(
            "net,host=a,interface=eth0 bytes_recv=1000i,bytes_sent=0i 1999999990\n\
             cpu,cpu=cpu-total,host=a usage_idle=75 1999999990\n",
            &Counters::default(),
        );
        assert_eq!(first.samples.len(), 1);
        let extended = first.samples[0].2.extended.as_deref().unwrap();
        assert_eq!(
            extended.network_receive_bytes_per_second, None,
            "no previous counters"
        );
        let mut counters = Counters::default();
        counters.update(first.counters);
        let second = mapped(
            "net,host=a,interface=eth0 bytes_recv=3000i,bytes_sent=500i 2000000000\n",
            &counters,
        );
        let extended = second.samples[0].2.extended.as_deref().unwrap();
        assert_eq!(extended.network_receive_bytes_per_second, Some(200.0));
        assert_eq!(extended.network_transmit_bytes_per_second, Some(50.0));
    }

    #[test]
    fn gross_idle_values_are_refused_and_small_overshoots_clamped() {
        let counters = Counters::default();
        let overshoot = mapped(
            "cpu,cpu=cpu-total,host=a usage_idle=100.2 2000000000\n",
            &counters,
        );
        assert_eq!(overshoot.samples[0].2.cpu_load, Some(0.0));
        let garbage = mapped(
            "cpu,cpu=cpu-total,host=a usage_idle=250 2000000000\n",
            &counters,
        );
        assert!(garbage.samples.is_empty());
        assert!(
            garbage.refused[0].message.contains("cpu_load"),
            "{:?}",
            garbage.refused
        );
    }

    #[test]
    fn counters_stay_bounded_and_never_go_back_in_time() {
        let mut counters = Counters::default();
        let reading = |time_us| HostCounters {
            time_us,
            ..HostCounters::default()
        };
        counters.update(vec![("a".into(), reading(10))]);
        counters.update(vec![("a".into(), reading(5))]);
        assert_eq!(counters.of("a").map(|c| c.time_us), Some(10));
        counters.update(
            (0..MAX_COUNTED_HOSTS)
                .map(|i| (format!("h{i}"), reading(1)))
                .collect(),
        );
        assert!(counters.hosts.len() <= MAX_COUNTED_HOSTS);
    }
}
