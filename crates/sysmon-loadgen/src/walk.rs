//! Plausible host readings for historical samples (`--start-time`): every
//! metric the server charts, from a deterministic random walk per client.
//!
//! Charts and rollups of constant or sawtooth values would hide problems
//! (every bucket alike compresses well and has min = max), so each metric
//! wanders the way a real host's does: CPU follows a daily cycle with noise
//! and rare spikes, memory drifts slowly, disk and network rates are bursty
//! (a walk in log space), the load average and the temperature trail the
//! CPU. The walk advances once per sample and depends only on the client's
//! index and the sample times, so the same command sends the same values.

use crate::clock::MICROS_PER_SECOND;
use crate::payload::{HostMetrics, Reading};

/// The simulated host's memory: 16 GiB.
pub const MEMORY_TOTAL_BYTES: u64 = 16 << 30;
/// Cores the load average is relative to.
const CORES: f64 = 8.0;
const SECONDS_PER_DAY: f64 = 86_400.0;

/// SplitMix64: tiny, fast and stable across versions and platforms, which
/// a seeded generator from `rand` does not promise.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// About standard normal: the sum of four uniforms has variance 1/3,
    /// so scaling by √3 gives 1. Cheaper than Box-Muller, and bounded
    /// (±3.46), which keeps a long walk from a freak jump.
    fn normal(&mut self) -> f64 {
        let sum = self.uniform() + self.uniform() + self.uniform() + self.uniform();
        (sum - 2.0) * 3f64.sqrt()
    }
}

/// One client's walk.
#[derive(Debug, Clone)]
pub struct HostWalk {
    rng: SplitMix64,
    cpu_percent: f64,
    load_average: f64,
    memory_fraction: f64,
    swap_bytes: f64,
    storage_mb: f64,
    /// Natural logarithms of bytes per second.
    disk_read: f64,
    disk_write: f64,
    network_receive: f64,
    network_transmit: f64,
    temperature: f64,
}

impl HostWalk {
    pub fn new(client: usize) -> HostWalk {
        let mut rng = SplitMix64(0x5EED_0000 ^ (client as u64).wrapping_mul(0x9E37_79B9));
        // Hosts differ a little, so a fleet's charts are not identical.
        let offset = rng.uniform();
        HostWalk {
            rng,
            cpu_percent: 20.0,
            load_average: 1.5,
            memory_fraction: 0.4 + 0.1 * offset,
            swap_bytes: 256.0 * 1_048_576.0,
            storage_mb: 120_000.0 + 40_000.0 * offset,
            disk_read: 12.0,
            disk_write: 13.0,
            network_receive: 13.5,
            network_transmit: 12.5,
            temperature: 45.0,
        }
    }

    /// The reading of the next sample, taken at `time_micros`.
    pub fn next(&mut self, time_micros: i64) -> Reading {
        let seconds = time_micros.div_euclid(MICROS_PER_SECOND) as f64;
        // Busiest mid-afternoon UTC, quietest at night: -1 ..= 1.
        let day =
            (seconds.rem_euclid(SECONDS_PER_DAY) / SECONDS_PER_DAY - 0.375) * std::f64::consts::TAU;
        let daily = day.sin();
        let rng = &mut self.rng;

        // Each metric reverts towards a target (an Ornstein-Uhlenbeck
        // walk), so it wanders but never drifts off for good.
        let cpu_target = 25.0 + 20.0 * daily;
        self.cpu_percent += 0.05 * (cpu_target - self.cpu_percent) + 2.5 * rng.normal();
        if rng.uniform() < 0.001 {
            self.cpu_percent += 40.0;
        }
        self.cpu_percent = self.cpu_percent.clamp(0.0, 100.0);
        self.load_average +=
            (self.cpu_percent / 100.0 * CORES - self.load_average) / 60.0 + 0.02 * rng.normal();
        self.load_average = self.load_average.max(0.0);

        let memory_target = 0.45 + 0.1 * daily;
        self.memory_fraction +=
            0.002 * (memory_target - self.memory_fraction) + 0.002 * rng.normal();
        self.memory_fraction = self.memory_fraction.clamp(0.1, 0.95);
        self.swap_bytes +=
            0.001 * (256.0 * 1_048_576.0 - self.swap_bytes) + 1_048_576.0 * rng.normal();
        self.swap_bytes = self.swap_bytes.clamp(0.0, 2.0 * 1_073_741_824.0);
        // Logs and databases grow (about 170 MB a day at a sample a
        // second); about every twelve days of that someone frees a GB.
        self.storage_mb += 0.002 + 0.01 * rng.normal();
        if rng.uniform() < 0.000_001 {
            self.storage_mb -= 1_000.0;
        }
        self.storage_mb = self.storage_mb.max(1_000.0);

        let rates = [
            (&mut self.disk_read, 12.0),
            (&mut self.disk_write, 13.0),
            (&mut self.network_receive, 13.5),
            (&mut self.network_transmit, 12.5),
        ];
        for (log_rate, centre) in rates {
            *log_rate += 0.1 * (centre + 0.8 * daily - *log_rate) + 0.3 * rng.normal();
        }
        let temperature_target = 38.0 + 0.35 * self.cpu_percent;
        self.temperature += 0.02 * (temperature_target - self.temperature) + 0.1 * rng.normal();

        let memory_used = (self.memory_fraction * MEMORY_TOTAL_BYTES as f64) as u64 & !4095;
        Reading {
            cpu_tenths: (self.cpu_percent * 10.0).round() as u32,
            mem: (memory_used >> 20) as u32,
            storage: self.storage_mb as u32,
            host: Some(HostMetrics {
                load_average_hundredths: (self.load_average * 100.0).round() as u32,
                memory_used_bytes: memory_used,
                memory_total_bytes: MEMORY_TOTAL_BYTES,
                swap_used_bytes: self.swap_bytes as u64 & !4095,
                disk_read_bytes_per_second: self.disk_read.exp() as u64,
                disk_write_bytes_per_second: self.disk_write.exp() as u64,
                network_receive_bytes_per_second: self.network_receive.exp() as u64,
                network_transmit_bytes_per_second: self.network_transmit.exp() as u64,
                temperature_tenths: (self.temperature * 10.0).round() as i32,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_AGO: i64 = 1_764_000_000 * MICROS_PER_SECOND;

    fn walk(client: usize, samples: i64) -> Vec<Reading> {
        let mut walk = HostWalk::new(client);
        (0..samples)
            .map(|i| walk.next(DAY_AGO + i * MICROS_PER_SECOND))
            .collect()
    }

    #[test]
    fn deterministic_per_client() {
        assert_eq!(walk(3, 500), walk(3, 500));
        assert_ne!(walk(3, 500), walk(4, 500));
    }

    #[test]
    fn every_metric_stays_plausible_and_varies_over_a_day() {
        let readings = walk(0, 86_400);
        let mut cpu = (u32::MAX, 0);
        let mut temperatures = (i32::MAX, i32::MIN);
        for reading in &readings {
            let host = reading.host.expect("every metric");
            assert!(reading.cpu_tenths <= 1000);
            assert!(host.memory_used_bytes < host.memory_total_bytes);
            assert_eq!(u64::from(reading.mem), host.memory_used_bytes >> 20);
            assert!(host.swap_used_bytes <= 2 << 30);
            assert!(host.load_average_hundredths < 100 * CORES as u32);
            assert!(host.disk_read_bytes_per_second < 1 << 40);
            assert!((200..=1000).contains(&host.temperature_tenths));
            cpu = (cpu.0.min(reading.cpu_tenths), cpu.1.max(reading.cpu_tenths));
            temperatures = (
                temperatures.0.min(host.temperature_tenths),
                temperatures.1.max(host.temperature_tenths),
            );
        }
        assert!(cpu.1 - cpu.0 > 300, "cpu range {cpu:?}");
        assert!(temperatures.1 - temperatures.0 > 50, "{temperatures:?}");
        let distinct_rates: std::collections::HashSet<u64> = readings
            .iter()
            .filter_map(|reading| reading.host)
            .map(|host| host.network_receive_bytes_per_second)
            .collect();
        assert!(distinct_rates.len() > 10_000);
    }
}
