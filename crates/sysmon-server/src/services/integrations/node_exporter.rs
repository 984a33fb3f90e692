//! node_exporter's standard series, as Prometheus remote write carries
//! them, turned into sysmon samples: the series of one host (its `host`
//! label, else `instance` without the port) at one timestamp become one
//! sample at that time.
//!
//! | series | sysmon |
//! |---|---|
//! | `node_cpu_seconds_total{cpu,mode}` | `cpu_load` = 100 × (1 − Δ(idle + iowait) / Δall), over all CPUs, against the previous scrape |
//! | `node_load1`, `node_load5`, `node_load15` | `load_average_1m`, `_5m`, `_15m` |
//! | `node_memory_MemTotal_bytes`, `_MemFree_bytes`, `_Buffers_bytes`, `_Cached_bytes`, `_SReclaimable_bytes`, `_MemAvailable_bytes` | `memory_total_bytes`, `memory_available_bytes`, `memory_used_bytes` = total − free − buffers − cache (as the agent), else total − available; `mem` = used MiB |
//! | `node_memory_SwapTotal_bytes`, `node_memory_SwapFree_bytes` | `swap_total_bytes`, `swap_used_bytes` = total − free |
//! | `node_filesystem_size_bytes`, `node_filesystem_free_bytes` (or `_avail_bytes`) per `mountpoint` of a `/dev/` device or ZFS | file systems (used = size − free; a device once); `storage` = used MiB of `/` |
//! | `node_disk_read_bytes_total`, `node_disk_written_bytes_total` per `device` | disk rates (the disks the agent counts) |
//! | `node_network_receive_bytes_total`, `node_network_transmit_bytes_total` per `device` | network rates (the interfaces the agent counts) |
//! | `node_hwmon_temp_celsius` | `temperature_celsius` = the hottest |
//! | `node_time_seconds` − `node_boot_time_seconds` | `uptime_seconds` |

use std::collections::BTreeMap;

use sysmon_core::metrics::MAX_FILESYSTEMS;
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::{Sample, UnixTime};

use super::super::auth::validate_new_username;
use super::readings::{self, Counters, HostCounters, HostReading, MAX_DEVICES, MIB};
use super::remote_write::{TimeSeries, WriteRequest};

/// File-system types that are not storage anyone runs out of (memory,
/// kernel views, read-only images, container layers).
/// The longest device or mount-point name taken.
const MAX_NAME_BYTES: usize = 256;
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
    /// Why the first series (or sample) not taken was not, and how many
    /// were not.
    pub first_refused: Option<String>,
    pub refused: usize,
}

impl Mapped {
    fn refuse(&mut self, why: impl FnOnce() -> String) {
        if self.first_refused.is_none() {
            self.first_refused = Some(why());
        }
        self.refused += 1;
    }
}

/// Labels a series may have, and the longest value: more than any
/// exporter writes; a series beyond them is refused before it costs more.
const MAX_LABELS: usize = 64;
const MAX_LABEL_BYTES: usize = 4_096;

/// The labels sysmon reads of a series, read once.
struct Labels<'a> {
    name: &'a str,
    host: Option<&'a str>,
    mode: Option<&'a str>,
    device: Option<&'a str>,
    mountpoint: Option<&'a str>,
    fstype: Option<&'a str>,
}

impl<'a> Labels<'a> {
    fn of(series: &'a TimeSeries) -> Labels<'a> {
        let mut labels = Labels {
            name: "",
            host: None,
            mode: None,
            device: None,
            mountpoint: None,
            fstype: None,
        };
        let mut instance = None;
        for label in &series.labels {
            let value = Some(label.value.as_str());
            match label.name.as_str() {
                "__name__" => labels.name = &label.value,
                "host" => labels.host = value,
                "instance" => instance = value,
                "mode" => labels.mode = value,
                "device" => labels.device = value,
                "mountpoint" => labels.mountpoint = value,
                "fstype" => labels.fstype = value,
                _ => {}
            }
        }
        labels.host = labels.host.or_else(|| instance.map(without_port));
        labels
    }
}

/// What one host's series say at one timestamp, before the parts that
/// need each other (total and available memory) are put together.
#[derive(Debug, Default)]
struct Scrape {
    reading: HostReading,
    memory_total: Option<f64>,
    memory_available: Option<f64>,
    memory_free: Option<f64>,
    memory_buffers: Option<f64>,
    memory_cached: Option<f64>,
    memory_reclaimable: Option<f64>,
    /// Per disk, and per interface: the two byte counters as they came
    /// (a device counts only with both: one alone would read as a
    /// counter at zero next time, and make a spike).
    disks: BTreeMap<String, (Option<u64>, Option<u64>)>,
    networks: BTreeMap<String, (Option<u64>, Option<u64>)>,
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
    device: String,
    size: Option<f64>,
    free: Option<f64>,
    available: Option<f64>,
}

/// The host a series is about: its `host` label, else its `instance`
/// without the port.
pub fn host_of(series: &TimeSeries) -> Option<&str> {
    Labels::of(series).host
}

fn without_port(instance: &str) -> &str {
    match instance.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => instance,
    }
}

/// Maps a request's series; `counters` holds (at least) the previous
/// counters of the request's hosts. More than `max_samples` host-times
/// stops it at once (the request is refused whole).
pub fn map_series(
    request: &WriteRequest,
    counters: &Counters,
    now: UnixTime,
    max_samples: usize,
) -> Result<Mapped, usize> {
    let mut mapped = Mapped::default();
    let mut scrapes: BTreeMap<(String, i64), Scrape> = BTreeMap::new();
    for series in &request.timeseries {
        if series.labels.len() > MAX_LABELS
            || series
                .labels
                .iter()
                .any(|label| label.value.len() > MAX_LABEL_BYTES)
        {
            mapped.refuse(|| {
                format!("a series has more than {MAX_LABELS} labels or a label over {MAX_LABEL_BYTES} bytes")
            });
            continue;
        }
        let labels = Labels::of(series);
        if !labels.name.starts_with("node_") {
            mapped.unmapped += 1;
            continue;
        }
        let Some(host) = labels.host else {
            mapped.refuse(|| {
                format!(
                    "series `{}` has neither a `host` nor an `instance` label",
                    labels.name
                )
            });
            continue;
        };
        if validate_new_username(host).is_err() {
            mapped.refuse(|| {
                format!("`{host}` cannot be a host's name (it must start with a letter): give the series a `host` label")
            });
            continue;
        }
        let host = host.to_owned();
        let mut taken = false;
        for sample in &series.samples {
            // NaN: Prometheus's staleness marker, not a value.
            if !sample.value.is_finite() {
                continue;
            }
            let key = (host.clone(), sample.timestamp.saturating_mul(1_000));
            if !scrapes.contains_key(&key) && scrapes.len() >= max_samples {
                return Err(scrapes.len() + 1);
            }
            let scrape = scrapes.entry(key).or_default();
            taken |= take(scrape, &labels, sample.value);
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
            Err(message) => mapped.refuse(|| format!("host `{host}`: {message}")),
        }
    }
    mapped.counters = finished.counters;
    Ok(mapped)
}

/// Takes one value of a series; false when sysmon has no metric for it.
fn take(scrape: &mut Scrape, labels: &Labels, value: f64) -> bool {
    let reading = &mut scrape.reading;
    let extended = &mut reading.extended;
    let name = labels.name;
    let taken = match name {
        "node_cpu_seconds_total" => {
            let (idle, all) = reading.cpu_seconds.get_or_insert((0.0, 0.0));
            *all += value;
            if matches!(labels.mode, Some("idle" | "iowait")) {
                *idle += value;
            }
            reading.cpu_series += 1;
            true
        }
        "node_load1" => set(&mut extended.load_average_1m, value),
        "node_load5" => set(&mut extended.load_average_5m, value),
        "node_load15" => set(&mut extended.load_average_15m, value),
        "node_memory_MemTotal_bytes" => set(&mut scrape.memory_total, value),
        "node_memory_MemAvailable_bytes" => set(&mut scrape.memory_available, value),
        "node_memory_MemFree_bytes" => set(&mut scrape.memory_free, value),
        "node_memory_Buffers_bytes" => set(&mut scrape.memory_buffers, value),
        "node_memory_Cached_bytes" => set(&mut scrape.memory_cached, value),
        "node_memory_SReclaimable_bytes" => set(&mut scrape.memory_reclaimable, value),
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
        | "node_filesystem_avail_bytes" => take_filesystem(scrape, labels, value),
        "node_disk_read_bytes_total" | "node_disk_written_bytes_total" => {
            let first = name == "node_disk_read_bytes_total";
            counter(&mut scrape.disks, labels.device, value, first)
        }
        "node_network_receive_bytes_total" | "node_network_transmit_bytes_total" => {
            let first = name == "node_network_receive_bytes_total";
            counter(&mut scrape.networks, labels.device, value, first)
        }
        _ => false,
    };
    scrape.reading.mapped |= taken;
    taken
}

/// A file system's size, free or available bytes: storage only (a block
/// device's, or ZFS), as the agent counts it.
fn take_filesystem(scrape: &mut Scrape, labels: &Labels, value: f64) -> bool {
    let (Some(mount), Some(fstype), Some(device)) =
        (labels.mountpoint, labels.fstype, labels.device)
    else {
        return false;
    };
    let storage = device.starts_with("/dev/") || fstype == "zfs";
    if !storage
        || NOT_STORAGE.contains(&fstype)
        || mount.len() > MAX_NAME_BYTES
        || (!scrape.filesystems.contains_key(mount) && scrape.filesystems.len() >= MAX_FILESYSTEMS)
    {
        return false;
    }
    let entry = scrape.filesystems.entry(mount.to_owned()).or_default();
    entry.device = device.to_owned();
    let slot = match labels.name {
        "node_filesystem_size_bytes" => &mut entry.size,
        "node_filesystem_free_bytes" => &mut entry.free,
        _ => &mut entry.available,
    };
    *slot = Some(value);
    true
}

fn set(field: &mut Option<f64>, value: f64) -> bool {
    *field = Some(value);
    true
}

/// One of a device's two byte counters (the first when `first`).
fn counter(
    devices: &mut BTreeMap<String, (Option<u64>, Option<u64>)>,
    device: Option<&str>,
    value: f64,
    first: bool,
) -> bool {
    let Some(device) = device.filter(|device| device.len() <= MAX_NAME_BYTES) else {
        return false;
    };
    if value < 0.0 || (!devices.contains_key(device) && devices.len() >= MAX_DEVICES) {
        return false;
    }
    let entry = devices.entry(device.to_owned()).or_default();
    if first {
        entry.0 = Some(value as u64);
    } else {
        entry.1 = Some(value as u64);
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
    // Used as the agent counts it (total − free − buffers − cache), else
    // total − available.
    let used = match (
        scrape.memory_total,
        scrape.memory_free,
        scrape.memory_buffers,
        scrape.memory_cached,
    ) {
        (Some(total), Some(free), Some(buffers), Some(cached)) => {
            Some(total - free - buffers - cached - scrape.memory_reclaimable.unwrap_or(0.0))
        }
        _ => scrape
            .memory_total
            .zip(scrape.memory_available)
            .map(|(total, available)| total - available),
    };
    if let Some(used) = used.map(|used| used.max(0.0)) {
        extended.memory_used_bytes = bytes(used);
        reading.mem = Some(used / MIB);
    }
    extended.swap_total_bytes = scrape.swap_total.and_then(bytes);
    if let (Some(total), Some(free)) = (scrape.swap_total, scrape.swap_free) {
        extended.swap_used_bytes = bytes(total - free);
    }
    if let (Some(boot), Some(time)) = (scrape.boot_time, scrape.time) {
        extended.uptime_seconds = bytes(time - boot);
    }
    let complete = |devices: BTreeMap<String, (Option<u64>, Option<u64>)>| {
        devices
            .into_iter()
            .filter_map(|(name, (first, second))| Some((name, (first?, second?))))
            .collect()
    };
    reading.disks = complete(scrape.disks);
    reading.networks = complete(scrape.networks);
    // A device mounted twice (bind mounts, subvolumes) counts once, at its
    // shortest mount point.
    let mut by_device: BTreeMap<String, (String, f64, f64)> = BTreeMap::new();
    for (mount, series) in scrape.filesystems {
        let (Some(size), Some(free)) = (series.size, series.free.or(series.available)) else {
            continue;
        };
        let shorter = by_device
            .get(&series.device)
            .is_none_or(|(kept, _, _)| mount.len() < kept.len());
        if shorter {
            by_device.insert(series.device, (mount, size, free));
        }
    }
    for (mount, size, free) in by_device.into_values() {
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
                &[
                    ("mountpoint", "/"),
                    ("fstype", "ext4"),
                    ("device", "/dev/sda1"),
                ],
                100e9,
                at_ms,
            ),
            series(
                "node_filesystem_free_bytes",
                &[
                    ("mountpoint", "/"),
                    ("fstype", "ext4"),
                    ("device", "/dev/sda1"),
                ],
                40e9,
                at_ms,
            ),
            series(
                "node_filesystem_size_bytes",
                &[
                    ("mountpoint", "/run"),
                    ("fstype", "tmpfs"),
                    ("device", "tmpfs"),
                ],
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
        let mapped = map_series(&request, &Counters::default(), now, 10_000).unwrap();
        assert_eq!(mapped.refused, 0, "{:?}", mapped.first_refused);
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

    #[test]
    fn partial_scrapes_make_no_spikes_and_requests_stay_bounded() {
        // A scrape split in two: one direction of a disk alone, and one
        // CPU's counters of two. Neither is compared with a full scrape.
        let full = scrape(T, 100.0, 100.0, 1e6);
        let partial: Vec<TimeSeries> = scrape(T + 10_000, 105.0, 115.0, 3e6)
            .into_iter()
            .filter(|s| s.label("__name__") != Some("node_disk_written_bytes_total"))
            .collect();
        let mut extra_cpu = full.clone();
        extra_cpu.push(series(
            "node_cpu_seconds_total",
            &[("cpu", "1"), ("mode", "idle")],
            50.0,
            T,
        ));
        let request = WriteRequest {
            timeseries: [extra_cpu, partial].concat(),
        };
        let now = UnixTime::from_micros((T + 60_000) * 1_000);
        let mapped = map_series(&request, &Counters::default(), now, 10_000).unwrap();
        let second = mapped.samples[1].1.extended.as_deref().unwrap();
        assert_eq!(
            second.disk_read_bytes_per_second, None,
            "no write counter: no disk"
        );
        assert_eq!(
            mapped.samples[1].1.cpu_load, None,
            "3 CPU counters then 2: not compared"
        );
        // More host-times than allowed: refused before mapping the rest.
        let many = WriteRequest {
            timeseries: (0..20)
                .map(|i| series("node_load1", &[], 1.0, T + i))
                .collect(),
        };
        assert_eq!(
            map_series(&many, &Counters::default(), now, 10).unwrap_err(),
            11
        );
    }

    #[test]
    fn hosts_that_cannot_be_names_and_huge_series_are_refused() {
        let mut by_ip = series("node_load1", &[], 1.0, T);
        by_ip.labels[1].value = "10.0.0.5:9100".into();
        let mut huge = series("node_load1", &[], 1.0, T);
        huge.labels.push(Label {
            name: "junk".into(),
            value: "x".repeat(MAX_LABEL_BYTES + 1),
        });
        let request = WriteRequest {
            timeseries: vec![by_ip, huge],
        };
        let now = UnixTime::from_micros((T + 60_000) * 1_000);
        let mapped = map_series(&request, &Counters::default(), now, 10_000).unwrap();
        assert_eq!(mapped.refused, 2);
        assert!(mapped
            .first_refused
            .unwrap()
            .contains("`10.0.0.5` cannot be a host's name"));
        assert!(mapped.samples.is_empty());
    }
}
