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

use std::collections::BTreeMap;

use sysmon_core::v1::FilesystemUsage;
use sysmon_core::{Sample, UnixTime};

use super::line_protocol::{FieldValue, LineError, Point};
use super::readings::{self, keep, Counters, HostCounters, HostReading, MAX_DEVICES, MIB};

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

/// Maps parsed points (each with its line number); `now` stands in for a
/// point without a timestamp. `counters` holds (at least) the previous
/// counters of the request's hosts.
pub fn map_points(points: Vec<(usize, Point)>, counters: &Counters, now: UnixTime) -> Mapped {
    let mut mapped = Mapped::default();
    let mut seconds: BTreeMap<(String, i64), HostReading> = BTreeMap::new();
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
            .entry((host.to_owned(), second * 1_000_000))
            .or_insert_with(|| HostReading {
                first_line: line,
                ..HostReading::default()
            });
        if take(entry, &point) {
            entry.mapped = true;
        } else {
            mapped.unmapped += 1;
        }
    }
    let finished = readings::finish(seconds, counters, now);
    for (host, line, sample) in finished.samples {
        match sample {
            Ok(sample) => mapped.samples.push((host, line, sample)),
            Err(message) => mapped.refused.push(LineError {
                line,
                message: format!("host `{host}`: {message}"),
            }),
        }
    }
    mapped.counters = finished.counters;
    mapped
}

/// Takes one point into its host's second; false when sysmon has no
/// metric for it.
fn take(second: &mut HostReading, point: &Point) -> bool {
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
}
