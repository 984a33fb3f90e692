//! node_exporter's standard series, as Prometheus remote write carries
//! them, turned into sysmon samples: the series of one host (its `host`
//! label, else `instance` without the port) at one timestamp become one
//! sample at that time.
//!
//! | series | sysmon |
//! |---|---|
//! | `node_cpu_seconds_total{cpu,mode}` | `cpu_load` = 100 × (1 − Δ(idle + iowait) / Δall), over all CPUs, against the previous scrape |
//! | `node_load1`, `node_load5`, `node_load15` | `load_average_1m`, `_5m`, `_15m` |
//! | `node_memory_MemTotal_bytes`, `node_memory_MemAvailable_bytes` | `memory_total_bytes`, `memory_available_bytes`, `memory_used_bytes` = total − available; `mem` = used MiB |
//! | `node_memory_SwapTotal_bytes`, `node_memory_SwapFree_bytes` | `swap_total_bytes`, `swap_used_bytes` = total − free |
//! | `node_filesystem_size_bytes`, `node_filesystem_free_bytes` (or `_avail_bytes`) per `mountpoint` | file systems (used = size − free); `storage` = used MiB of `/` |
//! | `node_disk_read_bytes_total`, `node_disk_written_bytes_total` per `device` | disk rates (the disks the agent counts) |
//! | `node_network_receive_bytes_total`, `node_network_transmit_bytes_total` per `device` | network rates (the interfaces the agent counts) |
//! | `node_hwmon_temp_celsius` | `temperature_celsius` = the hottest |
//! | `node_time_seconds` − `node_boot_time_seconds` | `uptime_seconds` |

use std::collections::BTreeMap;

use sysmon_core::metrics::MAX_FILESYSTEMS;
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::{Sample, UnixTime};

use super::readings::{self, Counters, HostCounters, HostReading, MAX_DEVICES, MIB};
use super::remote_write::{TimeSeries, WriteRequest};

/// File-system types that are not storage anyone runs out of (memory,
/// kernel views, read-only images, container layers).
const NOT_STORAGE: [&str; 14] = [
    "tmpfs",
    "devtmpfs",
    "ramfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "overlay",
    "squashfs",
    "autofs",
    "nsfs",
    "tracefs",
    "debugfs",
    "fuse.lxcfs",
];

/// A request's series, mapped.
#[derive(Debug, Default)]
pub struct Mapped {
    pub samples: Vec<(String, Sample)>,
    pub counters: Vec<(String, HostCounters)>,
    /// Series sysmon has no metric for.
    pub unmapped: u64,
    /// Why a host's series (or sample) were not taken.
    pub refused: Vec<String>,
}

/// What one host's series say at one timestamp, before the parts that
/// need each other (total and available memory) are put together.
#[derive(Debug, Default)]
struct Scrape {
    reading: HostReading,
    memory_total: Option<f64>,
    memory_available: Option<f64>,
    swap_total: Option<f64>,
    swap_free: Option<f64>,
    /// Per mount point.
    filesystems: BTreeMap<String, FilesystemSeries>,
    boot_time: Option<f64>,
    time: Option<f64>,
}

/// A mount point's series at one scrape, in bytes.
#[derive(Debug, Default)]
struct FilesystemSeries {
    size: Option<f64>,
    free: Option<f64>,
    available: Option<f64>,
}

/// The host a series is about: its `host` label, else its `instance`
/// without the port.
pub fn host_of(series: &TimeSeries) -> Option<&str> {
    if let Some(host) = series.label("host") {
        return Some(host);
    }
    let instance = series.label("instance")?;
    Some(match instance.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => instance,
    })
}

/// Maps a request's series; `counters` holds (at least) the previous
/// counters of the request's hosts.
pub fn map_series(request: &WriteRequest, counters: &Counters, now: UnixTime) -> Mapped {
    let mut mapped = Mapped::default();
    let mut scrapes: BTreeMap<(String, i64), Scrape> = BTreeMap::new();
    for series in &request.timeseries {
        let Some(name) = series.label("__name__") else {
            mapped.unmapped += 1;
            continue;
        };
        if !name.starts_with("node_") {
            mapped.unmapped += 1;
            continue;
        }
        let Some(host) = host_of(series) else {
            mapped.refused.push(format!(
                "series `{name}` has neither a `host` nor an `instance` label"
            ));
            continue;
        };
        let mut taken = false;
        for sample in &series.samples {
            if !sample.value.is_finite() {
                continue;
            }
            let key = (host.to_owned(), sample.timestamp.saturating_mul(1_000));
            let scrape = scrapes.entry(key).or_default();
            taken |= take(scrape, name, series, sample.value);
        }
        if !taken {
            mapped.unmapped += 1;
        }
    }
    let readings = scrapes
        .into_iter()
        .map(|(key, scrape)| (key, assemble(scrape)))
        .collect();
    let finished = readings::finish(readings, counters, now);
    for (host, _, sample) in finished.samples {
        match sample {
            Ok(sample) => mapped.samples.push((host, sample)),
            Err(message) => mapped.refused.push(format!("host `{host}`: {message}")),
        }
    }
    mapped.counters = finished.counters;
    mapped
}

/// Takes one value of a series; false when sysmon has no metric for it.
fn take(scrape: &mut Scrape, name: &str, series: &TimeSeries, value: f64) -> bool {
    let reading = &mut scrape.reading;
    let extended = &mut reading.extended;
    let device = || series.label("device").map(str::to_owned);
    let taken = match name {
        "node_cpu_seconds_total" => {
            let (idle, all) = reading.cpu_seconds.get_or_insert((0.0, 0.0));
            *all += value;
            if matches!(series.label("mode"), Some("idle" | "iowait")) {
                *idle += value;
            }
            true
        }
        "node_load1" => set(&mut extended.load_average_1m, value),
        "node_load5" => set(&mut extended.load_average_5m, value),
        "node_load15" => set(&mut extended.load_average_15m, value),
        "node_memory_MemTotal_bytes" => set(&mut scrape.memory_total, value),
        "node_memory_MemAvailable_bytes" => set(&mut scrape.memory_available, value),
        "node_memory_SwapTotal_bytes" => set(&mut scrape.swap_total, value),
        "node_memory_SwapFree_bytes" => set(&mut scrape.swap_free, value),
        "node_boot_time_seconds" => set(&mut scrape.boot_time, value),
        "node_time_seconds" => set(&mut scrape.time, value),
        "node_hwmon_temp_celsius" => {
            reading.temperatures.push(value);
            true
        }
        "node_filesystem_size_bytes"
        | "node_filesystem_free_bytes"
        | "node_filesystem_avail_bytes" => {
            let (Some(mount), Some(fstype)) = (series.label("mountpoint"), series.label("fstype"))
            else {
                return false;
            };
            if NOT_STORAGE.contains(&fstype)
                || (!scrape.filesystems.contains_key(mount)
                    && scrape.filesystems.len() >= MAX_FILESYSTEMS)
            {
                return false;
            }
            let entry = scrape.filesystems.entry(mount.to_owned()).or_default();
            let slot = match name {
                "node_filesystem_size_bytes" => &mut entry.size,
                "node_filesystem_free_bytes" => &mut entry.free,
                _ => &mut entry.available,
            };
            *slot = Some(value);
            true
        }
        "node_disk_read_bytes_total" | "node_disk_written_bytes_total" => {
            let Some(device) = device() else {
                return false;
            };
            counter(
                &mut reading.disks,
                device,
                value,
                name == "node_disk_read_bytes_total",
            )
        }
        "node_network_receive_bytes_total" | "node_network_transmit_bytes_total" => {
            let Some(device) = device() else {
                return false;
            };
            let received = name == "node_network_receive_bytes_total";
            counter(&mut reading.networks, device, value, received)
        }
        _ => false,
    };
    reading.mapped |= taken;
    taken
}

fn set(field: &mut Option<f64>, value: f64) -> bool {
    *field = Some(value);
    true
}

/// One of a device's two byte counters (the first when `first`).
fn counter(
    devices: &mut sysmon_core::collect::CounterMap,
    device: String,
    value: f64,
    first: bool,
) -> bool {
    if value < 0.0 || (!devices.contains_key(&device) && devices.len() >= MAX_DEVICES) {
        return false;
    }
    let entry = devices.entry(device).or_insert((0, 0));
    if first {
        entry.0 = value as u64;
    } else {
        entry.1 = value as u64;
    }
    true
}

/// The reading, with the parts that need each other put together.
fn assemble(scrape: Scrape) -> HostReading {
    let mut reading = scrape.reading;
    let bytes = |value: f64| (value >= 0.0).then_some(value as u64);
    let extended = &mut reading.extended;
    extended.memory_total_bytes = scrape.memory_total.and_then(bytes);
    extended.memory_available_bytes = scrape.memory_available.and_then(bytes);
    if let (Some(total), Some(available)) = (scrape.memory_total, scrape.memory_available) {
        extended.memory_used_bytes = bytes(total - available);
        reading.mem = Some((total - available).max(0.0) / MIB);
    }
    extended.swap_total_bytes = scrape.swap_total.and_then(bytes);
    if let (Some(total), Some(free)) = (scrape.swap_total, scrape.swap_free) {
        extended.swap_used_bytes = bytes(total - free);
    }
    if let (Some(boot), Some(time)) = (scrape.boot_time, scrape.time) {
        extended.uptime_seconds = bytes(time - boot);
    }
    for (mount, series) in scrape.filesystems {
        let (Some(size), Some(free)) = (series.size, series.free.or(series.available)) else {
            continue;
        };
        let used = (size - free).max(0.0);
        if mount == "/" {
            reading.storage = Some(used / MIB);
        }
        extended.filesystems.push(FilesystemUsage {
            mount_point: mount,
            used_bytes: used as u64,
            total_bytes: size.max(0.0) as u64,
        });
    }
    reading
}

#[cfg(test)]
mod tests {
    use super::super::remote_write::{Label, PromSample};
    use super::*;

    const T: i64 = 1_700_000_000_000;

    fn series(name: &str, labels: &[(&str, &str)], value: f64, at_ms: i64) -> TimeSeries {
        let mut all = vec![Label {
            name: "__name__".into(),
            value: name.into(),
        }];
        all.push(Label {
            name: "instance".into(),
            value: "web-1:9100".into(),
        });
        all.extend(labels.iter().map(|(name, value)| Label {
            name: (*name).into(),
            value: (*value).into(),
        }));
        TimeSeries {
            labels: all,
            samples: vec![PromSample {
                value,
                timestamp: at_ms,
            }],
        }
    }

    fn scrape(at_ms: i64, idle: f64, busy: f64, read: f64) -> Vec<TimeSeries> {
        vec![
            series(
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "idle")],
                idle,
                at_ms,
            ),
            series(
                "node_cpu_seconds_total",
                &[("cpu", "0"), ("mode", "user")],
                busy,
                at_ms,
            ),
            series("node_load1", &[], 0.75, at_ms),
            series("node_memory_MemTotal_bytes", &[], 8e9, at_ms),
            series("node_memory_MemAvailable_bytes", &[], 6e9, at_ms),
            series(
                "node_filesystem_size_bytes",
                &[("mountpoint", "/"), ("fstype", "ext4")],
                100e9,
                at_ms,
            ),
            series(
                "node_filesystem_free_bytes",
                &[("mountpoint", "/"), ("fstype", "ext4")],
                40e9,
                at_ms,
            ),
            series(
                "node_filesystem_size_bytes",
                &[("mountpoint", "/run"), ("fstype", "tmpfs")],
                1e9,
                at_ms,
            ),
            series(
                "node_disk_read_bytes_total",
                &[("device", "sda")],
                read,
                at_ms,
            ),
            series(
                "node_disk_written_bytes_total",
                &[("device", "sda")],
                0.0,
                at_ms,
            ),
            series(
                "node_hwmon_temp_celsius",
                &[("chip", "x"), ("sensor", "temp1")],
                55.0,
                at_ms,
            ),
            series("go_goroutines", &[], 7.0, at_ms),
        ]
    }

    #[test]
    fn a_host_and_timestamp_make_one_sample_and_counters_rates() {
        let request = WriteRequest {
            timeseries: [
                scrape(T, 100.0, 100.0, 1e6),
                scrape(T + 10_000, 105.0, 115.0, 3e6),
            ]
            .concat(),
        };
        let now = UnixTime::from_micros((T + 60_000) * 1_000);
        let mapped = map_series(&request, &Counters::default(), now);
        assert!(mapped.refused.is_empty(), "{:?}", mapped.refused);
        assert_eq!(mapped.samples.len(), 2);
        let (host, second) = &mapped.samples[1];
        assert_eq!(host, "web-1", "the instance without its port");
        assert_eq!(second.cpu_load, Some(75.0), "15 busy of 20 seconds");
        let extended = second.extended.as_deref().unwrap();
        assert_eq!(extended.load_average_1m, Some(0.75));
        assert_eq!(extended.memory_used_bytes, Some(2_000_000_000));
        assert_eq!(extended.disk_read_bytes_per_second, Some(200_000.0));
        assert_eq!(extended.temperature_celsius, Some(55.0));
        assert_eq!(extended.filesystems.len(), 1, "tmpfs is not storage");
        assert_eq!(extended.filesystems[0].used_bytes, 60_000_000_000);
        assert_eq!(mapped.samples[0].1.cpu_load, None, "nothing before it");
        assert_eq!(
            mapped.unmapped, 4,
            "go_goroutines and the tmpfs size, of each scrape"
        );
    }

    #[test]
    fn the_host_label_wins_and_odd_instances_stay_whole() {
        let mut named = series("node_load1", &[("host", "db-7")], 1.0, T);
        assert_eq!(host_of(&named), Some("db-7"));
        named.labels.retain(|label| label.name != "host");
        assert_eq!(host_of(&named), Some("web-1"));
        named.labels[1].value = "[::1]:9100".into();
        assert_eq!(host_of(&named), Some("[::1]"));
        named.labels[1].value = "web-2".into();
        assert_eq!(host_of(&named), Some("web-2"));
    }
}
