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
//! | `diskio` (per `name`) | `read_bytes`, `write_bytes` | disk rates (the disks the agent counts) |
//! | `net` (per `interface`) | `bytes_recv`, `bytes_sent` | network rates (the interfaces the agent counts) |
//! | `system` | `load1`, `load5`, `load15`, `uptime` | `load_average_*`, `uptime_seconds` |
//! | `temp` (per `sensor`) | `temp` | `temperature_celsius` = the hottest |
//!
//! Counters become rates against the same host's newest earlier reading
//! of each kind ([`Counters`]); the first of a host after a start has none.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sysmon_core::collect::{rates, CounterMap, InterfaceKind};
use sysmon_core::v1::{ExtendedMetrics, FilesystemUsage, HostSample};
use sysmon_core::{Sample, UnixTime};

use super::line_protocol::{FieldValue, LineError, Point};

const MIB: f64 = 1024.0 * 1024.0;
/// Hosts whose counters are kept for rates, at most; past it they start
/// over (a rate missed once each), so memory stays bounded whatever
/// names a fleet token pushes.
const MAX_COUNTED_HOSTS: usize = 100_000;
/// Disks, and network interfaces, taken per host and second: more than any
/// host has; the rest are ignored, so one request cannot make the
/// counters (or the work of telling partitions apart) grow without bound.
pub const MAX_DEVICES: usize = 256;

/// One kind of byte counters (disks, or network interfaces) of a host, at
/// the second they were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub time_us: i64,
    pub devices: CounterMap,
}

/// A host's newest counters of each kind, read at their own seconds
/// (Telegraf may gather `diskio` less often than `net`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostCounters {
    pub disks: Option<Reading>,
    pub networks: Option<Reading>,
}

impl HostCounters {
    /// Each kind from `newer` where it is newer.
    fn merge(&mut self, newer: HostCounters) {
        let newest = |kept: &mut Option<Reading>, new: Option<Reading>| {
            if let Some(new) = new {
                if kept.as_ref().is_none_or(|kept| kept.time_us < new.time_us) {
                    *kept = Some(new);
                }
            }
        };
        newest(&mut self.disks, newer.disks);
        newest(&mut self.networks, newer.networks);
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

    fn of(&self, host: &str) -> Option<&HostCounters> {
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
    /// Whether any point mapped to a metric: a second of only unmapped
    /// points (`processes`, per-core `cpu`) makes no sample.
    mapped: bool,
    cpu_load: Option<f64>,
    mem: Option<f64>,
    storage: Option<f64>,
    extended: ExtendedMetrics,
    disks: CounterMap,
    networks: CounterMap,
    temperatures: Vec<f64>,
}

/// Maps parsed points (each with its line number); `now` stands in for a
/// point without a timestamp. `counters` holds (at least) the previous
/// counters of the request's hosts.
pub fn map_points(points: Vec<(usize, Point)>, counters: &Counters, now: UnixTime) -> Mapped {
    let mut mapped = Mapped::default();
    let mut seconds: BTreeMap<(String, i64), Second> = BTreeMap::new();
    for (line, point) in points {
        let Some(host) = point.tag("host") else {
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
        let entry = seconds
            .entry((host.to_owned(), second))
            .or_insert_with(|| Second {
                first_line: line,
                ..Second::default()
            });
        if take(entry, &point) {
            entry.mapped = true;
        } else {
            mapped.unmapped += 1;
        }
    }
    let mut newest: HashMap<String, HostCounters> = HashMap::new();
    for ((host, second), mut taken) in seconds {
        if !taken.mapped {
            continue;
        }
        let time_us = second * 1_000_000;
        let previous = newest.get(&host).or_else(|| counters.of(&host));
        add_rates(&mut taken, previous, time_us);
        let read = |devices: &mut CounterMap| {
            (!devices.is_empty()).then(|| Reading {
                time_us,
                devices: std::mem::take(devices),
            })
        };
        let counted = HostCounters {
            disks: read(&mut taken.disks),
            networks: read(&mut taken.networks),
        };
        if counted.disks.is_some() || counted.networks.is_some() {
            newest.entry(host.clone()).or_default().merge(counted);
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
                if second.disks.len() < MAX_DEVICES {
                    second.disks.insert(name.to_owned(), (read, written));
                }
                true
            }
            _ => false,
        },
        "net" => match (
            point.tag("interface"),
            count("bytes_recv"),
            count("bytes_sent"),
        ) {
            (Some("all"), _, _) => false,
            (Some(name), Some(received), Some(sent)) => {
                if second.networks.len() < MAX_DEVICES {
                    second.networks.insert(name.to_owned(), (received, sent));
                }
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

/// Disk and network rates against the host's previous counters of each
/// kind; the devices counted are those the agent counts.
fn add_rates(second: &mut Second, previous: Option<&HostCounters>, time_us: i64) {
    let Some(previous) = previous else {
        return;
    };
    if let Some((before, window)) = earlier(&previous.disks, time_us) {
        if !second.disks.is_empty() {
            let (read, written) = rates(before, &counted_disks(&second.disks), window);
            second.extended.disk_read_bytes_per_second = read;
            second.extended.disk_write_bytes_per_second = written;
        }
    }
    if let Some((before, window)) = earlier(&previous.networks, time_us) {
        if !second.networks.is_empty() {
            let (received, sent) = rates(before, &counted_interfaces(&second.networks), window);
            second.extended.network_receive_bytes_per_second = received;
            second.extended.network_transmit_bytes_per_second = sent;
        }
    }
}

/// A reading from before `time_us`, and how long before.
fn earlier(reading: &Option<Reading>, time_us: i64) -> Option<(&CounterMap, Duration)> {
    let reading = reading
        .as_ref()
        .filter(|reading| reading.time_us < time_us)?;
    Some((
        &reading.devices,
        Duration::from_micros((time_us - reading.time_us) as u64),
    ))
}

/// The disks whose traffic counts, as the agent counts them by name
/// (Telegraf's host is not this one, so its `/sys` cannot be read): whole
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
    fn seconds_of_only_unmapped_points_make_no_sample() {
        let only = mapped(
            "processes,host=a total=3i 2000000000\ncpu,cpu=cpu0,host=a usage_idle=5 2000000000\n",
            &Counters::default(),
        );
        assert!(only.samples.is_empty(), "{:?}", only.samples);
        assert_eq!(only.unmapped, 2);
    }

    #[test]
    fn devices_per_host_and_second_are_bounded() {
        let body: String = (0..MAX_DEVICES + 50)
            .map(|i| format!("diskio,host=a,name=d{i} read_bytes=1i,write_bytes=1i 2000000000\n"))
            .collect();
        let many = mapped(&body, &Counters::default());
        let disks = many.counters[0].1.disks.as_ref().unwrap();
        assert_eq!(disks.devices.len(), MAX_DEVICES);
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
    fn counters_stay_bounded_and_each_kind_keeps_its_newest() {
        let mut counters = Counters::default();
        let reading = |time_us| {
            Some(Reading {
                time_us,
                devices: CounterMap::new(),
            })
        };
        counters.update(vec![(
            "a".into(),
            HostCounters {
                disks: reading(10),
                networks: reading(10),
            },
        )]);
        // A later request with only networks, and a stale disk reading.
        counters.update(vec![(
            "a".into(),
            HostCounters {
                disks: reading(5),
                networks: reading(20),
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
}
