//! The fleet exporter: every readable host's newest values as Prometheus
//! gauges (`GET /metrics/fleet`), so an existing Prometheus scrapes the
//! whole fleet from sysmon. Rendered by hand in the text exposition format
//! (0.0.4): the prometheus-client crate keeps a registry of live metric
//! families, while this is a snapshot of the store rebuilt per scrape.

use std::fmt::Write as _;

use sysmon_core::metrics::{MetricValue, METRICS};
use sysmon_core::v1::FilesystemUsage;

use super::query::ClientStatus;

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The hosts' newest values: `sysmon_up`, `sysmon_last_sample_timestamp_seconds`,
/// one gauge per metric, and each file system's used and total bytes.
pub fn render(hosts: &[ClientStatus]) -> String {
    // About 20 lines of 60 bytes per host.
    let mut text = String::with_capacity(64 + hosts.len() * 1_200);
    family(
        &mut text,
        "sysmon_up",
        "1 while the host sends (a sample within 3 of its intervals), else 0",
    );
    for host in hosts {
        line(
            &mut text,
            "sysmon_up",
            &host.name,
            None,
            if host.online { 1.0 } else { 0.0 },
        );
    }
    family(
        &mut text,
        "sysmon_last_sample_timestamp_seconds",
        "Unix time of the host's newest sample",
    );
    for host in hosts {
        if let Some(last) = host.last_seen {
            let name = "sysmon_last_sample_timestamp_seconds";
            line(&mut text, name, &host.name, None, last.as_secs_f64());
        }
    }
    for metric in &METRICS {
        let name = format!("sysmon_{}", metric.name);
        let unit = match metric.unit {
            "" => String::new(),
            unit => format!(" ({unit})"),
        };
        family(&mut text, &name, &format!("{}{unit}", metric.description));
        for host in hosts {
            let value = host.latest.as_ref().and_then(|sample| metric.get(sample));
            if let Some(value) = value.map(MetricValue::as_f64) {
                line(&mut text, &name, &host.name, None, value);
            }
        }
    }
    filesystems(&mut text, hosts);
    text
}

/// What a file-system family reads of each file system.
type FilesystemValue = fn(&FilesystemUsage) -> u64;

fn filesystems(text: &mut String, hosts: &[ClientStatus]) {
    let families: [(&str, &str, FilesystemValue); 2] = [
        (
            "sysmon_filesystem_used_bytes",
            "Bytes used on a file system of the host (bytes)",
            |fs| fs.used_bytes,
        ),
        (
            "sysmon_filesystem_size_bytes",
            "Size of a file system of the host (bytes)",
            |fs| fs.total_bytes,
        ),
    ];
    for (name, help, value) in families {
        family(text, name, help);
        for host in hosts {
            let mounted = host
                .latest
                .as_ref()
                .and_then(|sample| sample.extended.as_deref())
                .map_or(&[][..], |extended| extended.filesystems.as_slice());
            for fs in mounted {
                line(
                    text,
                    name,
                    &host.name,
                    Some(&fs.mount_point),
                    value(fs) as f64,
                );
            }
        }
    }
}

fn family(text: &mut String, name: &str, help: &str) {
    let _ = writeln!(text, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(text, "# TYPE {name} gauge");
}

fn line(text: &mut String, name: &str, host: &str, mount_point: Option<&str>, value: f64) {
    let _ = write!(text, "{name}{{host=\"");
    escape_label(text, host);
    if let Some(mount_point) = mount_point {
        text.push_str("\",mount_point=\"");
        escape_label(text, mount_point);
    }
    let _ = writeln!(text, "\"}} {value}");
}

/// A label value: backslash, double quote and line feed escaped.
fn escape_label(text: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            c => text.push(c),
        }
    }
}

/// A HELP text: backslash and line feed escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sysmon_core::v1::ExtendedMetrics;
    use sysmon_core::{Sample, UnixTime};

    fn host(name: &str, online: bool, cpu: Option<f64>) -> ClientStatus {
        ClientStatus {
            name: name.into(),
            first_seen: None,
            last_seen: Some(UnixTime::from_micros(1_700_000_000_500_000)),
            interval: None,
            online,
            latest: Some(Sample {
                time: UnixTime::from_micros(1_700_000_000_500_000),
                cpu_load: cpu,
                mem: None,
                storage: None,
                extended: Some(Box::new(ExtendedMetrics {
                    memory_total_bytes: Some(8 << 30),
                    filesystems: vec![FilesystemUsage {
                        mount_point: "/mnt/\"odd\"\\dir".into(),
                        used_bytes: 5,
                        total_bytes: 10,
                    }],
                    ..ExtendedMetrics::default()
                })),
            }),
            labels: Vec::new(),
        }
    }

    #[test]
    fn hosts_render_as_gauges_with_escaped_labels() {
        let text = render(&[host("web-1", true, Some(12.5)), host("db\"1", false, None)]);
        for expected in [
            "# TYPE sysmon_up gauge\n",
            "sysmon_up{host=\"web-1\"} 1\n",
            "sysmon_up{host=\"db\\\"1\"} 0\n",
            "sysmon_cpu_load{host=\"web-1\"} 12.5\n",
            "sysmon_memory_total_bytes{host=\"web-1\"} 8589934592\n",
            "sysmon_last_sample_timestamp_seconds{host=\"web-1\"} 1700000000.5\n",
            "sysmon_filesystem_used_bytes{host=\"web-1\",mount_point=\"/mnt/\\\"odd\\\"\\\\dir\"} 5\n",
            "sysmon_filesystem_size_bytes{host=\"web-1\",mount_point=\"/mnt/\\\"odd\\\"\\\\dir\"} 10\n",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        assert!(
            !text.contains("sysmon_cpu_load{host=\"db"),
            "no value, no line"
        );
        // Every family is declared once, before its lines.
        let families = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        assert_eq!(families, 2 + METRICS.len() + 2);
    }
}
