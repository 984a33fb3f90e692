//! Measurements of the machine this process runs on.
//!
//! The shapes mirror what the original server reported through psutil, so
//! that `/monitor/...` answers keep their meaning: memory uses psutil's
//! definitions from `/proc/meminfo`, storage is `statvfs` of a mount point.

use std::path::Path;

use serde::Serialize;
use sysinfo::{CpuRefreshKind, RefreshKind, System};

use crate::units::Units;

/// Why a measurement could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("cannot read file system usage of {path}: {source}")]
    Statvfs {
        path: String,
        #[source]
        source: nix::Error,
    },
}

/// Static facts about the processors.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuInfo {
    #[serde(rename = "physical cores count")]
    pub physical_cores: usize,
    #[serde(rename = "logical cores count")]
    pub logical_cores: usize,
    /// Current, minimum and maximum frequency in MHz (0 where unknown, as
    /// psutil reports on virtual machines).
    #[serde(rename = "cores frequency")]
    pub frequency_mhz: [f64; 3],
}

/// Memory in bytes (or, after [`MemoryInfo::in_units`], in a unit), with
/// psutil's field names and meanings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct MemoryInfo {
    pub total: u64,
    pub available: u64,
    pub percent: f64,
    pub used: u64,
    pub free: u64,
    pub active: u64,
    pub inactive: u64,
    pub buffers: u64,
    pub cached: u64,
    pub shared: u64,
    pub slab: u64,
}

impl MemoryInfo {
    pub fn in_units(&self, units: Units) -> MemoryInfo {
        let convert = |bytes| units.from_bytes(bytes);
        MemoryInfo {
            total: convert(self.total),
            available: convert(self.available),
            percent: self.percent,
            used: convert(self.used),
            free: convert(self.free),
            active: convert(self.active),
            inactive: convert(self.inactive),
            buffers: convert(self.buffers),
            cached: convert(self.cached),
            shared: convert(self.shared),
            slab: convert(self.slab),
        }
    }

    /// Builds psutil's view from the text of `/proc/meminfo` (values in kB).
    pub fn from_proc_meminfo(text: &str) -> MemoryInfo {
        let field = |name: &str| -> u64 {
            text.lines()
                .find_map(|line| {
                    let rest = line.strip_prefix(name)?.strip_prefix(':')?;
                    rest.split_whitespace().next()?.parse::<u64>().ok()
                })
                .unwrap_or(0)
                * 1024
        };
        let total = field("MemTotal");
        let free = field("MemFree");
        let buffers = field("Buffers");
        let cached = field("Cached") + field("SReclaimable");
        let available = match field("MemAvailable") {
            0 => free + buffers + cached,
            available => available,
        };
        let used = match total.checked_sub(free + buffers + cached) {
            Some(used) => used,
            None => total.saturating_sub(free),
        };
        MemoryInfo {
            total,
            available,
            percent: percent_of(total.saturating_sub(available), total),
            used,
            free,
            active: field("Active"),
            inactive: field("Inactive"),
            buffers,
            cached,
            shared: field("Shmem"),
            slab: field("Slab"),
        }
    }
}

/// Usage of one file system, psutil's `disk_usage`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct StorageInfo {
    pub total: u64,
    pub used: u64,
    pub free: u64,
    pub percent: f64,
}

impl StorageInfo {
    pub fn in_units(&self, units: Units) -> StorageInfo {
        StorageInfo {
            total: units.from_bytes(self.total),
            used: units.from_bytes(self.used),
            free: units.from_bytes(self.free),
            percent: self.percent,
        }
    }
}

/// A percentage rounded to one decimal, as psutil reports them.
fn percent_of(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    round_one_decimal(part as f64 / whole as f64 * 100.0)
}

fn round_one_decimal(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// Takes measurements; keeps the state cpu usage needs between two calls.
pub struct HostCollector {
    system: System,
}

impl Default for HostCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCollector {
    pub fn new() -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing().with_cpu(CpuRefreshKind::nothing().with_cpu_usage()),
        );
        Self { system }
    }

    /// Cpu load in percent of all cores since the previous call (or since
    /// [`HostCollector::new`]). Calls closer than
    /// [`sysinfo::MINIMUM_CPU_UPDATE_INTERVAL`] apart are meaningless.
    pub fn cpu_load(&mut self) -> f64 {
        self.system.refresh_cpu_usage();
        round_one_decimal(f64::from(self.system.global_cpu_usage()).clamp(0.0, 100.0))
    }

    pub fn cpu_info(&mut self) -> CpuInfo {
        self.system
            .refresh_cpu_specifics(CpuRefreshKind::nothing().with_frequency());
        let cpus = self.system.cpus();
        let current = cpus
            .first()
            .map(|cpu| cpu.frequency() as f64)
            .unwrap_or(0.0);
        CpuInfo {
            physical_cores: System::physical_core_count().unwrap_or(cpus.len()),
            logical_cores: cpus.len(),
            frequency_mhz: [
                current,
                cpufreq_mhz("cpuinfo_min_freq"),
                cpufreq_mhz("cpuinfo_max_freq"),
            ],
        }
    }
}

/// Reads a cpufreq limit (kHz) from sysfs; 0 where the kernel has none.
fn cpufreq_mhz(file: &str) -> f64 {
    std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cpufreq/{file}"))
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .map(|khz| khz / 1000.0)
        .unwrap_or(0.0)
}

/// Memory of this machine right now.
pub fn memory_info() -> MemoryInfo {
    match std::fs::read_to_string("/proc/meminfo") {
        Ok(text) => MemoryInfo::from_proc_meminfo(&text),
        Err(_) => memory_info_portable(),
    }
}

/// Where there is no `/proc/meminfo`, sysinfo still knows the essentials.
fn memory_info_portable() -> MemoryInfo {
    let mut system = System::new();
    system.refresh_memory();
    let total = system.total_memory();
    let available = system.available_memory();
    MemoryInfo {
        total,
        available,
        percent: percent_of(total.saturating_sub(available), total),
        used: system.used_memory(),
        free: system.free_memory(),
        ..MemoryInfo::default()
    }
}

/// Usage of the file system holding `path`.
pub fn storage_info(path: &Path) -> Result<StorageInfo, HostError> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(|source| HostError::Statvfs {
        path: path.display().to_string(),
        source,
    })?;
    let fragment = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * fragment;
    let free = stat.blocks_available() as u64 * fragment;
    let used = (stat.blocks() as u64).saturating_sub(stat.blocks_free() as u64) * fragment;
    Ok(StorageInfo {
        total,
        used,
        free,
        percent: percent_of(used, used + free),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO: &str = "MemTotal:       16000000 kB\nMemFree:         4000000 kB\nMemAvailable:    9000000 kB\nBuffers:          500000 kB\nCached:          3000000 kB\nShmem:            200000 kB\nSReclaimable:     500000 kB\nActive:          6000000 kB\nInactive:        2000000 kB\nSlab:             700000 kB\n";

    #[test]
    fn meminfo_follows_psutil() {
        let memory = MemoryInfo::from_proc_meminfo(MEMINFO);
        assert_eq!(memory.total, 16_000_000 * 1024);
        assert_eq!(memory.cached, 3_500_000 * 1024);
        assert_eq!(
            memory.used,
            (16_000_000 - 4_000_000 - 500_000 - 3_500_000) * 1024
        );
        assert_eq!(memory.percent, 43.8);
        assert_eq!(memory.shared, 200_000 * 1024);
        assert_eq!(memory.in_units(Units::MB).total, 15_625);
    }

    #[test]
    fn real_host_has_memory_and_a_root_file_system() {
        let memory = memory_info();
        assert!(memory.total > 0 && memory.used <= memory.total);
        let root = storage_info(Path::new("/")).unwrap();
        assert!(root.total > 0 && root.used <= root.total);
        assert!((0.0..=100.0).contains(&root.percent));
        assert!(storage_info(Path::new("/no/such/dir")).is_err());
    }

    #[test]
    fn cpu_info_counts_cores() {
        let info = HostCollector::new().cpu_info();
        assert!(info.logical_cores >= 1);
        assert!(info.physical_cores >= 1);
    }
}
