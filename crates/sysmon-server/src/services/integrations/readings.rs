//! What a host sent at one time, whatever the protocol, and the counters
//! carried from one request to the next to make rates: both mappers
//! ([`super::telegraf`], [`super::node_exporter`]) fill [`HostReading`]s
//! and [`finish`] turns them into samples.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sysmon_core::collect::{rates, CounterMap, InterfaceKind};
use sysmon_core::v1::{ExtendedMetrics, HostSample};
use sysmon_core::{Sample, UnixTime};

pub const MIB: f64 = 1024.0 * 1024.0;
/// Hosts whose counters are kept for rates, at most; past it they start
/// over (a rate missed once each), so memory stays bounded whatever
/// names a fleet token pushes.
const MAX_COUNTED_HOSTS: usize = 100_000;
/// Disks, and network interfaces, taken per host and time: more than any
/// host has; the rest are ignored, so one request cannot make the
/// counters (or the work of telling partitions apart) grow without bound.
pub const MAX_DEVICES: usize = 256;
/// CPU load over less than this is the counters' rounding, not load.
const MIN_CPU_WINDOW: Duration = Duration::from_secs(1);

/// One kind of byte counters (disks, or network interfaces) of a host, at
/// the time they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceReading {
    pub time_us: i64,
    pub devices: CounterMap,
}

/// A host's CPU time, summed over its CPUs, at the time it was read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuReading {
    pub time_us: i64,
    pub idle_seconds: f64,
    pub total_seconds: f64,
    /// How many (CPU, mode) counters were summed: a reading of other
    /// counters (a CPU added, a scrape split over two requests) is not
    /// compared with it.
    pub series: u32,
}

/// A host's newest counters of each kind, read at their own times (a
/// collector may gather disks less often than the network).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostCounters {
    pub disks: Option<DeviceReading>,
    pub networks: Option<DeviceReading>,
    pub cpu: Option<CpuReading>,
}

impl HostCounters {
    /// Each kind from `newer` where it is newer.
    fn merge(&mut self, newer: HostCounters) {
        fn newest<T>(kept: &mut Option<T>, new: Option<T>, time: impl Fn(&T) -> i64) {
            if let Some(new) = new {
                if kept.as_ref().is_none_or(|kept| time(kept) < time(&new)) {
                    *kept = Some(new);
                }
            }
        }
        newest(&mut self.disks, newer.disks, |r| r.time_us);
        newest(&mut self.networks, newer.networks, |r| r.time_us);
        newest(&mut self.cpu, newer.cpu, |r| r.time_us);
    }

    fn is_empty(&self) -> bool {
        self.disks.is_none() && self.networks.is_none() && self.cpu.is_none()
    }
}

/// The newest counters of every host, for the next request's rates.
#[derive(Debug, Default)]
pub struct Counters {
    hosts: HashMap<String, HostCounters>,
}

impl Counters {
    /// The counters of these hosts, copied: a request maps its points
    /// from them without holding the shared map.
    pub fn of_hosts<'a>(&self, hosts: impl Iterator<Item = &'a str>) -> Counters {
        Counters {
            hosts: hosts
                .filter_map(|host| Some((host.to_owned(), self.hosts.get(host)?.clone())))
                .collect(),
        }
    }

    pub fn of(&self, host: &str) -> Option<&HostCounters> {
        self.hosts.get(host)
    }

    /// Takes counters read from a stored request (each kind where newer).
    pub fn update(&mut self, readings: Vec<(String, HostCounters)>) {
        if self.hosts.len() + readings.len() > MAX_COUNTED_HOSTS {
            self.hosts.clear();
        }
        for (host, counters) in readings {
            self.hosts.entry(host).or_default().merge(counters);
        }
    }
}

/// What one host sent at one time.
#[derive(Debug, Default)]
pub struct HostReading {
    /// Where it came from (a line's number), for errors.
    pub first_line: usize,
    /// Whether anything mapped to a metric: a reading of only unmapped
    /// points makes no sample.
    pub mapped: bool,
    pub cpu_load: Option<f64>,
    /// CPU time so far (idle, all), for `cpu_load` against the previous,
    /// summed over `cpu_series` counters.
    pub cpu_seconds: Option<(f64, f64)>,
    pub cpu_series: u32,
    pub mem: Option<f64>,
    pub storage: Option<f64>,
    pub extended: ExtendedMetrics,
    pub disks: CounterMap,
    pub networks: CounterMap,
    pub temperatures: Vec<f64>,
}

/// A host's readings turned into samples, in time order per host, rates
/// and CPU load from the counters before each.
pub struct Finished {
    /// Each host's samples (or why one was refused), with the reading's
    /// first line.
    pub samples: Vec<(String, usize, Result<Sample, String>)>,
    /// The newest counters of each host, to keep once stored.
    pub counters: Vec<(String, HostCounters)>,
}

/// Turns readings, keyed by host and unix microseconds, into samples.
pub fn finish(
    readings: BTreeMap<(String, i64), HostReading>,
    counters: &Counters,
    now: UnixTime,
) -> Finished {
    let mut samples = Vec::new();
    let mut newest: HashMap<String, HostCounters> = HashMap::new();
    for ((host, time_us), mut reading) in readings {
        if !reading.mapped {
            continue;
        }
        let previous = newest.get(&host).or_else(|| counters.of(&host));
        add_rates(&mut reading, previous, time_us);
        let devices = |devices: &mut CounterMap| {
            (!devices.is_empty()).then(|| DeviceReading {
                time_us,
                devices: std::mem::take(devices),
            })
        };
        let counted = HostCounters {
            disks: devices(&mut reading.disks),
            networks: devices(&mut reading.networks),
            cpu: reading.cpu_seconds.map(|(idle, total)| CpuReading {
                time_us,
                idle_seconds: idle,
                total_seconds: total,
                series: reading.cpu_series,
            }),
        };
        let line = reading.first_line;
        let sample = to_sample(reading, time_us, now);
        // Only a sample taken carries its counters on: a refused one's
        // (a time far ahead, say) must not stand for the host's next.
        if sample.is_ok() && !counted.is_empty() {
            newest.entry(host.clone()).or_default().merge(counted);
        }
        samples.push((host, line, sample));
    }
    Finished {
        samples,
        counters: newest.into_iter().collect(),
    }
}

/// Sets `field` when a value came.
pub fn keep<T>(field: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *field = value;
    }
}

/// Disk and network rates, and CPU load, against the host's previous
/// counters of each kind; the devices counted are those the agent counts.
fn add_rates(reading: &mut HostReading, previous: Option<&HostCounters>, time_us: i64) {
    let Some(previous) = previous else {
        return;
    };
    if let Some((before, window)) = earlier(&previous.disks, time_us) {
        if !reading.disks.is_empty() {
            let (read, written) = rates(before, &counted_disks(&reading.disks), window);
            reading.extended.disk_read_bytes_per_second = read;
            reading.extended.disk_write_bytes_per_second = written;
        }
    }
    if let Some((before, window)) = earlier(&previous.networks, time_us) {
        if !reading.networks.is_empty() {
            let (received, sent) = rates(before, &counted_interfaces(&reading.networks), window);
            reading.extended.network_receive_bytes_per_second = received;
            reading.extended.network_transmit_bytes_per_second = sent;
        }
    }
    let before = previous.cpu.filter(|cpu| {
        cpu.series == reading.cpu_series
            && time_us - cpu.time_us >= MIN_CPU_WINDOW.as_micros() as i64
    });
    if let (Some(before), Some((idle, total))) = (before, reading.cpu_seconds) {
        let (idle, total) = (idle - before.idle_seconds, total - before.total_seconds);
        // A counter that went back (a reboot) gives no load, not a spike.
        if total > 0.0 && idle >= 0.0 && idle <= total {
            reading.cpu_load = Some((100.0 * (1.0 - idle / total)).clamp(0.0, 100.0));
        }
    }
}

/// A reading from before `time_us`, and how long before.
fn earlier(reading: &Option<DeviceReading>, time_us: i64) -> Option<(&CounterMap, Duration)> {
    let reading = reading
        .as_ref()
        .filter(|reading| reading.time_us < time_us)?;
    Some((
        &reading.devices,
        Duration::from_micros((time_us - reading.time_us) as u64),
    ))
}

/// The disks whose traffic counts, as the agent counts them by name
/// (the collector's host is not this one, so its `/sys` cannot be read): whole
/// disks, not their partitions (`sda1` of `sda`, `nvme0n1p1` of
/// `nvme0n1`, which repeat their disk's traffic), not loop, RAM or
/// optical devices, and not device-mapper or md RAID devices (stacked on
/// disks already counted).
fn counted_disks(disks: &CounterMap) -> CounterMap {
    disks
        .iter()
        .filter(|(name, _)| {
            !["loop", "ram", "zram", "fd", "sr", "nbd", "dm-", "md"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
        })
        .filter(|(name, _)| !is_partition(name, disks))
        .map(|(name, counters)| (name.clone(), *counters))
        .collect()
}

/// Whether `name` is a partition of a disk also listed: its disk's name
/// and a number (`sda` + `1`), or, for a disk whose name ends in a digit,
/// `p` and a number (`nvme0n1` + `p1`). A lookup, not a scan of the list.
fn is_partition(name: &str, disks: &CounterMap) -> bool {
    let disk = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if disk.len() == name.len() || disk.is_empty() {
        return false;
    }
    let ends_in_digit = |text: &str| text.ends_with(|c: char| c.is_ascii_digit());
    if !ends_in_digit(disk) && disks.contains_key(disk) {
        return true;
    }
    disk.strip_suffix('p')
        .is_some_and(|disk| ends_in_digit(disk) && disks.contains_key(disk))
}

/// The interfaces whose traffic counts, as the agent counts them: the
/// physical ones, or, where there is none (a container), every one but
/// loopback. Told apart by the conventional names of software interfaces.
fn counted_interfaces(interfaces: &CounterMap) -> CounterMap {
    const VIRTUAL: [&str; 14] = [
        "veth", "docker", "br-", "virbr", "vnet", "cni", "flannel", "cali", "tun", "tap", "vxlan",
        "kube", "lxc", "wg",
    ];
    let kind = |name: &str| {
        if name == "lo" || name.starts_with("lo:") {
            InterfaceKind::Loopback
        } else if VIRTUAL.iter().any(|prefix| name.starts_with(prefix)) {
            InterfaceKind::Virtual
        } else {
            InterfaceKind::Physical
        }
    };
    sysmon_core::collect::counted_interfaces(
        interfaces
            .iter()
            .map(|(name, counters)| (name.clone(), kind(name), *counters))
            .collect(),
    )
}

/// The sample of a reading, validated as every ingest route's.
fn to_sample(mut reading: HostReading, time_us: i64, now: UnixTime) -> Result<Sample, String> {
    reading.extended.temperature_celsius = reading.temperatures.iter().copied().reduce(f64::max);
    HostSample {
        time: time_us as f64 / 1e6,
        cpu_load: reading.cpu_load,
        mem: reading.mem,
        storage: reading.storage,
        extended: reading.extended,
    }
    .into_sample(now)
    .map_err(|error| error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_disks_and_interfaces_the_agent_counts() {
        let devices = |names: &[&str]| -> CounterMap {
            names
                .iter()
                .map(|name| (name.to_string(), (1, 1)))
                .collect()
        };
        let disks = devices(&[
            "sda",
            "sda1",
            "nvme0n1",
            "nvme0n1p1",
            "mmcblk0",
            "mmcblk0p2",
            "dm-1",
            "dm-10",
            "loop0",
            "md0",
            "vdb",
        ]);
        let mut counted: Vec<String> = counted_disks(&disks).into_keys().collect();
        counted.sort();
        assert_eq!(counted, ["mmcblk0", "nvme0n1", "sda", "vdb"]);
        let interfaces = devices(&["lo", "eth0", "docker0", "veth12ab", "br-1f2e"]);
        let counted: Vec<String> = counted_interfaces(&interfaces).into_keys().collect();
        assert_eq!(counted, ["eth0"]);
        let container = devices(&["lo", "veth12ab"]);
        let counted: Vec<String> = counted_interfaces(&container).into_keys().collect();
        assert_eq!(counted, ["veth12ab"], "no physical one: all but loopback");
    }

    #[test]
    fn counters_stay_bounded_and_each_kind_keeps_its_newest() {
        let mut counters = Counters::default();
        let reading = |time_us| {
            Some(DeviceReading {
                time_us,
                devices: CounterMap::new(),
            })
        };
        counters.update(vec![(
            "a".into(),
            HostCounters {
                disks: reading(10),
                networks: reading(10),
                cpu: None,
            },
        )]);
        // A later request with only networks, and a stale disk reading.
        counters.update(vec![(
            "a".into(),
            HostCounters {
                disks: reading(5),
                networks: reading(20),
                cpu: None,
            },
        )]);
        let kept = counters.of("a").unwrap();
        assert_eq!(kept.disks.as_ref().map(|r| r.time_us), Some(10));
        assert_eq!(kept.networks.as_ref().map(|r| r.time_us), Some(20));
        counters.update(
            (0..MAX_COUNTED_HOSTS)
                .map(|i| (format!("h{i}"), HostCounters::default()))
                .collect(),
        );
        assert!(counters.hosts.len() <= MAX_COUNTED_HOSTS);
    }

    #[test]
    fn cpu_load_comes_from_cpu_time_between_readings() {
        let mut readings = BTreeMap::new();
        for (second, idle, total) in [
            (1_700_000_010, 100.0, 200.0),
            (1_700_000_020, 115.0, 220.0),
            (1_700_000_030, 0.0, 5.0),
        ] {
            readings.insert(
                ("a".to_owned(), second * 1_000_000),
                HostReading {
                    mapped: true,
                    cpu_seconds: Some((idle, total)),
                    cpu_series: 2,
                    ..HostReading::default()
                },
            );
        }
        let now = UnixTime::from_micros(1_700_000_060_000_000);
        let finished = finish(readings, &Counters::default(), now);
        let loads: Vec<Option<f64>> = finished
            .samples
            .iter()
            .map(|(_, _, sample)| sample.as_ref().unwrap().cpu_load)
            .collect();
        // None first (nothing before), then 1 - 15/20 busy, then a reboot.
        assert_eq!(loads, [None, Some(25.0), None]);
    }
}
