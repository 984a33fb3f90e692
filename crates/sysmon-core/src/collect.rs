//! Measures the whole host for one [`HostSample`]: what an agent sends.
//!
//! A [`SampleCollector`] keeps the counters that rates need between two
//! calls (cpu time, disk sectors, network bytes), so each sample describes
//! the interval since the previous one. It never fails: a metric that
//! cannot be read on this host is left out of the sample.
//!
//! Sources: sysinfo for cpu, swap, load average, uptime, network counters
//! and temperature sensors; [`crate::host`] for memory and file system
//! usage (psutil's definitions, the same as the server's own `/monitor`
//! answers); `/proc/self/mounts` and `/proc/diskstats` on Linux, read here
//! directly, because sysinfo calls `statvfs` on every mount before one can
//! filter (a hung network mount would hang the collector) and its disk I/O
//! counters are per mount, which counts one disk once per mount.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use sysinfo::{Components, CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::host::{memory_info, storage_info};
use crate::units::Units;
use crate::v1::{ExtendedMetrics, FilesystemUsage, HostSample};

/// How often the list of temperature sensors is read again (sensors
/// themselves are read at every sample).
const SENSOR_RESCAN: Duration = Duration::from_secs(600);
/// Rates over less than this are noise and are left out.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(100);
const SECTOR_BYTES: u64 = 512;

/// Byte counters of each device or interface: (read or received, written
/// or transmitted).
pub type CounterMap = HashMap<String, (u64, u64)>;

struct Counters {
    at: Instant,
    disks: CounterMap,
    networks: CounterMap,
}

/// Takes [`HostSample`]s; keeps what rates need between two calls.
pub struct SampleCollector {
    system: System,
    networks: Networks,
    components: Components,
    sensors_listed_at: Instant,
    previous: Counters,
    /// `/sys/block` classification per device name: counted or not.
    disk_kinds: HashMap<String, bool>,
    /// Interface classification per name.
    interface_kinds: HashMap<String, InterfaceKind>,
}

impl Default for SampleCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl SampleCollector {
    /// Reads every counter once, so that the first [`collect`] already
    /// reports rates (over the time since `new`).
    ///
    /// [`collect`]: SampleCollector::collect
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_cpu_usage()),
        );
        let networks = Networks::new_with_refreshed_list();
        let components = Components::new_with_refreshed_list();
        let mut collector = SampleCollector {
            system,
            networks,
            components,
            sensors_listed_at: Instant::now(),
            previous: Counters {
                at: Instant::now(),
                disks: HashMap::new(),
                networks: HashMap::new(),
            },
            disk_kinds: HashMap::new(),
            interface_kinds: HashMap::new(),
        };
        collector.previous = collector.read_counters();
        collector
    }

    /// Measures the host now and labels the sample with `time` (unix
    /// seconds): the caller decides what instant a sample stands for.
    ///
    /// Called within [`MIN_RATE_WINDOW`] (or sysinfo's minimum CPU window)
    /// of the previous measurement, as an agent's first tick can be when
    /// it starts just before a second boundary, it first waits out the
    /// rest of that window (at most 200 ms): a sample without its CPU
    /// load and rates would be worse than one a moment late.
    pub fn collect(&mut self, time: f64) -> HostSample {
        let shortest = MIN_RATE_WINDOW.max(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL);
        let since = self.previous.at.elapsed();
        if since < shortest {
            std::thread::sleep(shortest - since);
        }
        self.system.refresh_cpu_usage();
        let cpu_load = f64::from(self.system.global_cpu_usage());
        let cpu_load = cpu_load
            .is_finite()
            .then(|| round_to(cpu_load.clamp(0.0, 100.0), 1));

        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_swap());
        let memory = memory_info();
        let memory_known = memory.total > 0;
        let root = storage_info(Path::new("/")).ok();
        let load = System::load_average();

        let counters = self.read_counters();
        let window = counters.at.saturating_duration_since(self.previous.at);
        let (disk_read, disk_write) = rates(&self.previous.disks, &counters.disks, window);
        let (net_rx, net_tx) = rates(&self.previous.networks, &counters.networks, window);
        self.previous = counters;

        // Every field named, no `..Default::default()`: a metric added to
        // the metric list must be measured here, or be `None` on purpose.
        let extended = ExtendedMetrics {
            load_average_1m: finite_non_negative(load.one).map(|v| round_to(v, 2)),
            load_average_5m: finite_non_negative(load.five).map(|v| round_to(v, 2)),
            load_average_15m: finite_non_negative(load.fifteen).map(|v| round_to(v, 2)),
            memory_used_bytes: memory_known.then_some(memory.used),
            memory_available_bytes: memory_known.then_some(memory.available),
            memory_total_bytes: memory_known.then_some(memory.total),
            swap_used_bytes: Some(self.system.used_swap()),
            swap_total_bytes: Some(self.system.total_swap()),
            disk_read_bytes_per_second: disk_read,
            disk_write_bytes_per_second: disk_write,
            network_receive_bytes_per_second: net_rx,
            network_transmit_bytes_per_second: net_tx,
            uptime_seconds: Some(System::uptime()).filter(|&seconds| seconds > 0),
            temperature_celsius: self.hottest_sensor(),
            filesystems: filesystems(),
        };
        HostSample {
            time,
            cpu_load,
            mem: memory_known.then(|| memory.in_units(Units::MB).used as f64),
            storage: root.map(|root| root.in_units(Units::MB).used as f64),
            extended,
        }
    }

    fn read_counters(&mut self) -> Counters {
        let disks = match std::fs::read_to_string("/proc/diskstats") {
            Ok(text) => parse_diskstats(&text)
                .into_iter()
                .filter(|(name, _)| {
                    *self
                        .disk_kinds
                        .entry(name.clone())
                        .or_insert_with(|| is_counted_disk(name))
                })
                .collect(),
            Err(_) => HashMap::new(),
        };

        self.networks.refresh(true);
        let kinds = &mut self.interface_kinds;
        let all: Vec<(String, InterfaceKind, (u64, u64))> = self
            .networks
            .list()
            .iter()
            .map(|(name, data)| {
                let kind = *kinds
                    .entry(name.clone())
                    .or_insert_with(|| InterfaceKind::of(name));
                (
                    name.clone(),
                    kind,
                    (data.total_received(), data.total_transmitted()),
                )
            })
            .collect();
        let networks = counted_interfaces(all);
        Counters {
            at: Instant::now(),
            disks,
            networks,
        }
    }

    fn hottest_sensor(&mut self) -> Option<f64> {
        if self.sensors_listed_at.elapsed() >= SENSOR_RESCAN {
            self.components.refresh(true);
            self.sensors_listed_at = Instant::now();
        } else {
            for component in self.components.list_mut() {
                component.refresh();
            }
        }
        self.components
            .list()
            .iter()
            .filter_map(|component| component.temperature())
            .map(f64::from)
            .filter(|celsius| celsius.is_finite() && *celsius > -273.15)
            .reduce(f64::max)
            .map(|celsius| round_to(celsius, 1))
    }
}

fn finite_non_negative(value: f64) -> Option<f64> {
    (value.is_finite() && value >= 0.0).then_some(value)
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Bytes per second of both counters, summed over the devices present at
/// both readings (a device that appeared or vanished, or whose counter
/// went backwards, contributes nothing rather than a spike).
pub fn rates(
    before: &CounterMap,
    after: &CounterMap,
    window: Duration,
) -> (Option<f64>, Option<f64>) {
    if window < MIN_RATE_WINDOW {
        return (None, None);
    }
    let seconds = window.as_secs_f64();
    let (mut first, mut second) = (0u64, 0u64);
    for (name, (a_after, b_after)) in after {
        if let Some((a_before, b_before)) = before.get(name) {
            first = first.saturating_add(a_after.saturating_sub(*a_before));
            second = second.saturating_add(b_after.saturating_sub(*b_before));
        }
    }
    (
        Some(round_to(first as f64 / seconds, 1)),
        Some(round_to(second as f64 / seconds, 1)),
    )
}

/// `/proc/diskstats` as (device, (bytes read, bytes written)).
pub fn parse_diskstats(text: &str) -> Vec<(String, (u64, u64))> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let name = fields.get(2)?;
            let read: u64 = fields.get(5)?.parse().ok()?;
            let written: u64 = fields.get(9)?.parse().ok()?;
            Some((
                (*name).to_owned(),
                (
                    read.saturating_mul(SECTOR_BYTES),
                    written.saturating_mul(SECTOR_BYTES),
                ),
            ))
        })
        .collect()
}

/// Whether a `/proc/diskstats` device is a disk whose traffic counts: a
/// whole disk (partitions repeat their disk's traffic), not a loop, RAM or
/// compressed-RAM device, and not stacked on other disks (device-mapper,
/// md RAID: their traffic is already counted on the disks below).
pub fn is_counted_disk(name: &str) -> bool {
    if ["loop", "ram", "zram", "fd", "sr", "nbd"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
    {
        return false;
    }
    let block = Path::new("/sys/block").join(name.replace('/', "!"));
    if !block.exists() {
        return false;
    }
    match std::fs::read_dir(block.join("slaves")) {
        Ok(mut slaves) => slaves.next().is_none(),
        Err(_) => true,
    }
}

/// What kind of network interface a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceKind {
    Loopback,
    /// Bridges, veth pairs, tunnels, bonds: software interfaces whose
    /// traffic also crosses a physical one.
    Virtual,
    Physical,
}

impl InterfaceKind {
    fn of(name: &str) -> InterfaceKind {
        let sys = Path::new("/sys/class/net").join(name);
        let flags = std::fs::read_to_string(sys.join("flags"))
            .ok()
            .and_then(|text| u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok());
        const IFF_LOOPBACK: u32 = 0x8;
        match flags {
            Some(flags) if flags & IFF_LOOPBACK != 0 => InterfaceKind::Loopback,
            Some(_) => match std::fs::read_link(&sys) {
                Ok(target) if target.to_string_lossy().contains("devices/virtual/") => {
                    InterfaceKind::Virtual
                }
                _ => InterfaceKind::Physical,
            },
            // No sysfs (not Linux): go by the conventional names.
            None if name == "lo" || name.starts_with("lo0") => InterfaceKind::Loopback,
            None => InterfaceKind::Physical,
        }
    }
}

/// The interfaces whose traffic counts: the physical ones, or, where there
/// is none (a container sees only its veth end), every one but loopback.
pub fn counted_interfaces(all: Vec<(String, InterfaceKind, (u64, u64))>) -> CounterMap {
    let any_physical = all
        .iter()
        .any(|(_, kind, _)| *kind == InterfaceKind::Physical);
    all.into_iter()
        .filter(|(_, kind, _)| match kind {
            InterfaceKind::Physical => true,
            InterfaceKind::Virtual => !any_physical,
            InterfaceKind::Loopback => false,
        })
        .map(|(name, _, counters)| (name, counters))
        .collect()
}

/// One line of `/proc/self/mounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// Parses `/proc/self/mounts` (fstab format; spaces and other special
/// characters in paths are octal escapes such as `\040`).
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(Mount {
                device: unescape_octal(fields.next()?),
                mount_point: unescape_octal(fields.next()?),
                fs_type: fields.next()?.to_owned(),
            })
        })
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        if let Some(digits) = octal {
            let value = digits
                .iter()
                .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Read-only images that are always full: not storage anyone can run out of.
const IMAGE_FILE_SYSTEMS: [&str; 5] = ["squashfs", "iso9660", "udf", "erofs", "cramfs"];

/// The mounts that are real storage, one per device: block-device backed
/// (or ZFS datasets), not pseudo (proc, sysfs, cgroup), memory (tmpfs),
/// overlay, network or FUSE file systems, and not read-only images. A
/// device mounted several times (bind mounts, btrfs subvolumes) is kept
/// once, under its shortest mount point. `is_directory` tells bind-mounted
/// files (a container's `/etc/hosts`) from mount points.
pub fn real_filesystems(mounts: Vec<Mount>, is_directory: impl Fn(&str) -> bool) -> Vec<Mount> {
    let mut by_device: HashMap<String, Mount> = HashMap::new();
    for mount in mounts {
        let block_backed = mount.device.starts_with("/dev/");
        let real = (block_backed || mount.fs_type == "zfs")
            && !IMAGE_FILE_SYSTEMS.contains(&mount.fs_type.as_str())
            && !mount.mount_point.starts_with("/proc")
            && !mount.mount_point.starts_with("/sys/");
        if !real || !is_directory(&mount.mount_point) {
            continue;
        }
        match by_device.get(&mount.device) {
            Some(kept) if kept.mount_point.len() <= mount.mount_point.len() => {}
            _ => {
                by_device.insert(mount.device.clone(), mount);
            }
        }
    }
    let mut real: Vec<Mount> = by_device.into_values().collect();
    real.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    real
}

/// Usage of every real file system of this host.
fn filesystems() -> Vec<FilesystemUsage> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return Vec::new();
    };
    real_filesystems(parse_mounts(&text), |path| Path::new(path).is_dir())
        .into_iter()
        .filter_map(|mount| {
            let usage = storage_info(Path::new(&mount.mount_point)).ok()?;
            (usage.total > 0).then_some(FilesystemUsage {
                mount_point: mount.mount_point,
                used_bytes: usage.used,
                total_bytes: usage.total,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTS: &str = "\
proc /proc proc rw,relatime 0 0
sysfs /sys sysfs rw,relatime 0 0
/dev/sda2 / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw 0 0
/dev/sda1 /boot/efi vfat rw 0 0
/dev/sda2 /var/lib/docker/btrfs ext4 rw 0 0
overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0
/dev/loop3 /snap/core/123 squashfs ro 0 0
server:/export /mnt/nfs nfs4 rw 0 0
sshfs#me@host: /mnt/ssh fuse.sshfs rw 0 0
tank/home /home zfs rw 0 0
/dev/sdb1 /mnt/My\\040Disk ext4 rw 0 0
/dev/sda2 /etc/hosts ext4 rw 0 0
/dev/sdc1 /sys/firmware/x ext4 rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
";

    #[test]
    fn parses_mounts_with_escapes() {
        let mounts = parse_mounts(MOUNTS);
        assert_eq!(mounts.len(), 15);
        assert_eq!(mounts[11].mount_point, "/mnt/My Disk");
        assert_eq!(mounts[2].fs_type, "ext4");
        assert_eq!(unescape_octal(r"a\134b\011c"), "a\\b\tc");
        assert_eq!(unescape_octal(r"trailing\04"), r"trailing\04");
    }

    #[test]
    fn keeps_real_file_systems_once_each() {
        let real = real_filesystems(parse_mounts(MOUNTS), |path| path != "/etc/hosts");
        let points: Vec<&str> = real.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/boot/efi", "/home", "/mnt/My Disk"]);
    }

    #[test]
    fn bind_mounted_files_are_not_file_systems() {
        let mounts = parse_mounts("overlay / overlay rw 0 0\n/dev/vda /etc/hosts ext4 rw 0 0\n");
        assert!(real_filesystems(mounts, |path| path != "/etc/hosts").is_empty());
    }

    #[test]
    fn diskstats_in_bytes() {
        let text = "   8       0 sda 100 0 2048 10 50 0 4096 20 0 0 0 0 0 0 0 0 0\n   8       1 sda1 1 0 8 0 1 0 8 0 0 0 0\nbroken line\n";
        let stats = parse_diskstats(text);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0], ("sda".to_owned(), (2048 * 512, 4096 * 512)));
        assert!(!is_counted_disk("loop0"));
        assert!(!is_counted_disk("zram0"));
        assert!(!is_counted_disk("no-such-disk"));
    }

    #[test]
    fn rates_sum_devices_seen_twice() {
        let before: CounterMap = [("a".into(), (100, 1000)), ("gone".into(), (5, 5))].into();
        let after: CounterMap = [
            ("a".into(), (300, 1000)),
            ("new".into(), (1_000_000, 1_000_000)),
        ]
        .into();
        let (read, write) = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(read, Some(100.0));
        assert_eq!(write, Some(0.0));
        // A counter that went backwards (reset) adds nothing.
        let reset: CounterMap = [("a".into(), (50, 10))].into();
        assert_eq!(
            rates(&before, &reset, Duration::from_secs(1)),
            (Some(0.0), Some(0.0))
        );
        assert_eq!(
            rates(&before, &after, Duration::from_millis(10)),
            (None, None)
        );
    }

    #[test]
    fn counts_physical_interfaces_or_else_all_but_loopback() {
        let host = vec![
            ("lo".into(), InterfaceKind::Loopback, (9, 9)),
            ("eth0".into(), InterfaceKind::Physical, (1, 2)),
            ("docker0".into(), InterfaceKind::Virtual, (3, 4)),
        ];
        let counted = counted_interfaces(host);
        assert_eq!(counted.keys().collect::<Vec<_>>(), ["eth0"]);
        let container = vec![
            ("lo".into(), InterfaceKind::Loopback, (9, 9)),
            ("eth0".into(), InterfaceKind::Virtual, (1, 2)),
        ];
        assert_eq!(
            counted_interfaces(container).keys().collect::<Vec<_>>(),
            ["eth0"]
        );
        assert_eq!(InterfaceKind::of("lo"), InterfaceKind::Loopback);
    }

    #[test]
    fn a_collect_right_after_new_still_has_rates() {
        // An agent started just before a second boundary collects at once.
        let mut collector = SampleCollector::new();
        let sample = collector.collect(1_764_000_000.0);
        assert!(sample.cpu_load.is_some());
        assert!(sample.extended.disk_read_bytes_per_second.is_some());
        assert!(sample.extended.network_receive_bytes_per_second.is_some());
        let again = collector.collect(1_764_000_001.0);
        assert!(again.extended.disk_write_bytes_per_second.is_some());
    }

    #[test]
    fn samples_this_host() {
        let mut collector = SampleCollector::new();
        std::thread::sleep(Duration::from_millis(300));
        let sample = collector.collect(1_764_000_000.0);
        assert_eq!(sample.time, 1_764_000_000.0);
        let cpu = sample.cpu_load.expect("cpu load");
        assert!((0.0..=100.0).contains(&cpu));
        let extended = &sample.extended;
        let total = extended.memory_total_bytes.expect("memory total");
        assert!(extended.memory_used_bytes.expect("memory used") <= total);
        assert!(sample.mem.expect("mem") > 0.0);
        assert!(sample.storage.is_some());
        assert!(extended.load_average_1m.is_some());
        assert!(extended.disk_read_bytes_per_second.is_some());
        assert!(extended.network_receive_bytes_per_second.is_some());
        assert!(extended.uptime_seconds.is_some());
        assert!(extended
            .filesystems
            .iter()
            .all(|fs| fs.used_bytes <= fs.total_bytes && fs.mount_point.starts_with('/')));
        // What the collector produces, the server accepts.
        let now = crate::UnixTime::from_micros(1_764_000_000_000_000);
        assert!(sample.clone().into_sample(now).is_ok());
    }
}
