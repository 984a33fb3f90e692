//! The bytes a simulated client sends: one sample as form fields, as a JSON
//! object, as a WebSocket `CLIENT_DATA`; a v1 batch; InfluxDB line protocol.
//!
//! Values are made up but plausible (and deterministic, so a failing run can
//! be repeated): CPU load in tenths of a percent, memory and storage in MB.
//! Historical runs (`--start-time`) also carry every other metric the server
//! charts, from [`crate::walk`].

use std::fmt::Write as _;

use sysmon_core::v1::{ExtendedMetrics, HostSample};

use crate::clock::{seconds_text, MICROS_PER_SECOND};

/// The measured values of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// CPU load in tenths of a percent, 0..=1000.
    pub cpu_tenths: u32,
    /// Memory used, MB.
    pub mem: u32,
    /// Storage used, MB.
    pub storage: u32,
    /// The metrics beyond the original three; only v1 batches send them.
    pub host: Option<HostMetrics>,
}

/// The v1 metrics beyond the original three. Whole numbers (fixed-point
/// where the metric has decimals), so that a reading stays `Copy` and `Eq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMetrics {
    pub load_average_hundredths: u32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub disk_read_bytes_per_second: u64,
    pub disk_write_bytes_per_second: u64,
    pub network_receive_bytes_per_second: u64,
    pub network_transmit_bytes_per_second: u64,
    pub temperature_tenths: i32,
}

impl HostMetrics {
    pub fn extended(&self) -> ExtendedMetrics {
        ExtendedMetrics {
            load_average_1m: Some(f64::from(self.load_average_hundredths) / 100.0),
            memory_used_bytes: Some(self.memory_used_bytes),
            memory_total_bytes: Some(self.memory_total_bytes),
            swap_used_bytes: Some(self.swap_used_bytes),
            disk_read_bytes_per_second: Some(self.disk_read_bytes_per_second as f64),
            disk_write_bytes_per_second: Some(self.disk_write_bytes_per_second as f64),
            network_receive_bytes_per_second: Some(self.network_receive_bytes_per_second as f64),
            network_transmit_bytes_per_second: Some(self.network_transmit_bytes_per_second as f64),
            temperature_celsius: Some(f64::from(self.temperature_tenths) / 10.0),
            ..ExtendedMetrics::default()
        }
    }
}

impl Reading {
    /// A reading for client `client`'s `sequence`-th sample.
    pub fn synthetic(client: usize, sequence: u64) -> Reading {
        let client = client as u64;
        Reading {
            cpu_tenths: ((client * 31 + sequence * 7) % 1001) as u32,
            mem: 1024 + ((client * 17 + sequence * 13) % 15_000) as u32,
            storage: 50_000 + (client % 10_000) as u32 + (sequence % 100) as u32,
            host: None,
        }
    }

    /// CPU load as the decimal text of a percentage: `12.5`, `100`.
    pub fn cpu_text(&self) -> String {
        match self.cpu_tenths % 10 {
            0 => (self.cpu_tenths / 10).to_string(),
            tenth => format!("{}.{tenth}", self.cpu_tenths / 10),
        }
    }

    pub fn cpu_load(&self) -> f64 {
        f64::from(self.cpu_tenths) / 10.0
    }
}

/// `time=..&cpu_load=..&mem=..&storage=..`, as the GUI client sends it.
pub fn form_body(time_micros: i64, reading: &Reading) -> String {
    format!(
        "time={}&cpu_load={}&mem={}&storage={}",
        seconds_text(time_micros),
        reading.cpu_text(),
        reading.mem,
        reading.storage
    )
}

/// `{"time":..,"cpu_load":..,"mem":..,"storage":..}`.
pub fn json_object(time_micros: i64, reading: &Reading) -> String {
    format!(
        r#"{{"time":{},"cpu_load":{},"mem":{},"storage":{}}}"#,
        seconds_text(time_micros),
        reading.cpu_text(),
        reading.mem,
        reading.storage
    )
}

/// The original WebSocket push of one sample.
pub fn ws_client_data(time_micros: i64, reading: &Reading, token: &str) -> String {
    let token = serde_json::Value::from(token);
    format!(
        r#"{{"type":"CLIENT_DATA","data":{},"interval":1,"client_id":{token}}}"#,
        json_object(time_micros, reading)
    )
}

/// The WebSocket greeting sent once per connection.
pub const WS_HELLO: &str = r#"{"type":"HELLO"}"#;

/// One v1 sample: the original's three metrics, and the others when the
/// reading has them.
pub fn host_sample(time_micros: i64, reading: &Reading) -> HostSample {
    HostSample {
        time: time_micros as f64 / MICROS_PER_SECOND as f64,
        cpu_load: Some(reading.cpu_load()),
        mem: Some(f64::from(reading.mem)),
        storage: Some(f64::from(reading.storage)),
        extended: reading.host.map(|host| host.extended()).unwrap_or_default(),
    }
}

/// A `POST /api/v1/samples` body: a JSON array of samples.
pub fn v1_batch(samples: &[(i64, Reading)]) -> serde_json::Result<Vec<u8>> {
    let samples: Vec<HostSample> = samples
        .iter()
        .map(|(time, reading)| host_sample(*time, reading))
        .collect();
    serde_json::to_vec(&samples)
}

/// Escapes an InfluxDB tag key or value: commas, spaces and equals signs
/// get a backslash (line protocol has no other escapes for tags).
pub fn escape_tag(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        if matches!(character, ',' | ' ' | '=' | '\\') {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// Appends one line of InfluxDB line protocol, nanosecond timestamp:
/// `system,host=HOST cpu_load=12.5,mem=6172,storage=95888 1764079980123000000`.
/// The fields are floats (no `i` suffix), as a collector would write them.
pub fn influx_line(out: &mut String, escaped_host: &str, time_micros: i64, reading: &Reading) {
    let _ = writeln!(
        out,
        "system,host={escaped_host} cpu_load={},mem={},storage={} {}",
        reading.cpu_text(),
        reading.mem,
        reading.storage,
        i128::from(time_micros) * 1000
    );
}

/// One Prometheus remote-write request (snappy protobuf): one scrape, at
/// the batch's first time, of as many hosts as the batch has readings
/// (`HOST-0`, `HOST-1`, ...), each with node_exporter's series as a
/// 2-CPU host has them, 25 per host.
pub fn remote_write(host: &str, batch: &[(i64, Reading)]) -> Vec<u8> {
    use prost::Message;
    use sysmon_core::prom::{Label, PromSample, TimeSeries, WriteRequest};
    let Some((time, _)) = batch.first() else {
        return Vec::new();
    };
    let timestamp = time / 1_000;
    let mut timeseries = Vec::with_capacity(batch.len() * 25);
    for (index, (_, reading)) in batch.iter().enumerate() {
        let instance = format!("{host}-{index}:9100");
        let mut series = |name: &str, extra: &[(&str, &str)], value: f64| {
            let mut labels = vec![
                Label {
                    name: "__name__".into(),
                    value: name.into(),
                },
                Label {
                    name: "instance".into(),
                    value: instance.clone(),
                },
                Label {
                    name: "job".into(),
                    value: "node".into(),
                },
            ];
            labels.extend(extra.iter().map(|(name, value)| Label {
                name: (*name).into(),
                value: (*value).into(),
            }));
            timeseries.push(TimeSeries {
                labels,
                samples: vec![PromSample { value, timestamp }],
            });
        };
        let seconds = timestamp as f64 / 1_000.0;
        let busy = f64::from(reading.cpu_tenths) / 1_000.0;
        for cpu in ["0", "1"] {
            for (mode, share) in [
                ("idle", 1.0 - busy),
                ("user", busy * 0.7),
                ("system", busy * 0.3),
            ] {
                series(
                    "node_cpu_seconds_total",
                    &[("cpu", cpu), ("mode", mode)],
                    seconds * share,
                );
            }
            series(
                "node_cpu_seconds_total",
                &[("cpu", cpu), ("mode", "iowait")],
                0.0,
            );
        }
        let mib = 1024.0 * 1024.0;
        for (name, value) in [
            ("node_load1", busy * 2.0),
            ("node_load5", busy * 1.8),
            ("node_load15", busy * 1.5),
            ("node_memory_MemTotal_bytes", 8192.0 * mib),
            (
                "node_memory_MemAvailable_bytes",
                (8192.0 - f64::from(reading.mem)).max(0.0) * mib,
            ),
            ("node_memory_SwapTotal_bytes", 2048.0 * mib),
            ("node_memory_SwapFree_bytes", 2048.0 * mib),
            ("node_time_seconds", seconds),
            ("node_boot_time_seconds", 1_700_000_000.0),
        ] {
            series(name, &[], value);
        }
        let root = [("mountpoint", "/"), ("fstype", "ext4"), ("device", "sda1")];
        series("node_filesystem_size_bytes", &root, 512_000.0 * mib);
        series(
            "node_filesystem_free_bytes",
            &root,
            (512_000.0 - f64::from(reading.storage)) * mib,
        );
        series(
            "node_disk_read_bytes_total",
            &[("device", "sda")],
            seconds * 1e5,
        );
        series(
            "node_disk_written_bytes_total",
            &[("device", "sda")],
            seconds * 2e5,
        );
        series(
            "node_network_receive_bytes_total",
            &[("device", "eth0")],
            seconds * 1e6,
        );
        series(
            "node_network_transmit_bytes_total",
            &[("device", "eth0")],
            seconds * 5e5,
        );
        for sensor in ["temp1", "temp2"] {
            series(
                "node_hwmon_temp_celsius",
                &[("chip", "platform_coretemp_0"), ("sensor", sensor)],
                45.0 + busy * 30.0,
            );
        }
    }
    let body = WriteRequest { timeseries }.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&body)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_write_request_is_one_scrape_of_25_series_per_host() {
        use prost::Message;
        let reading = Reading {
            cpu_tenths: 250,
            mem: 1024,
            storage: 2048,
            host: None,
        };
        let body = remote_write("lg", &[(1_764_079_980_123_000, reading); 40]);
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        let request = sysmon_core::prom::WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(request.timeseries.len(), 1_000);
        let first = &request.timeseries[0];
        assert_eq!(first.label("instance"), Some("lg-0:9100"));
        assert_eq!(first.samples[0].timestamp, 1_764_079_980_123);
    }
    use sysmon_core::UnixTime;

    const TIME: i64 = 1_764_079_980_123_000;
    const READING: Reading = Reading {
        cpu_tenths: 125,
        mem: 6172,
        storage: 95_888,
        host: None,
    };

    #[test]
    fn form_and_json_bodies() {
        assert_eq!(
            form_body(TIME, &READING),
            "time=1764079980.123&cpu_load=12.5&mem=6172&storage=95888"
        );
        let json: serde_json::Value = serde_json::from_str(&json_object(TIME, &READING)).unwrap();
        assert_eq!(json["cpu_load"], 12.5);
        assert_eq!(json["time"], 1_764_079_980.123);
        let message: serde_json::Value =
            serde_json::from_str(&ws_client_data(TIME, &READING, "to\"ken")).unwrap();
        assert_eq!(message["type"], "CLIENT_DATA");
        assert_eq!(message["client_id"], "to\"ken");
        assert_eq!(message["interval"], 1);
        assert_eq!(message["data"]["mem"], 6172);
        let hundred = Reading {
            cpu_tenths: 1000,
            ..READING
        };
        assert_eq!(hundred.cpu_text(), "100");
    }

    #[test]
    fn v1_batch_is_what_the_server_parses() {
        let body = v1_batch(&[(TIME, READING), (TIME + 1000, READING)]).unwrap();
        let now = UnixTime::from_micros(TIME);
        let samples = sysmon_core::v1::parse_json_batch(&body, now).unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].time.micros(), TIME);
        assert_eq!(samples[1].time.micros(), TIME + 1000);
        assert_eq!(samples[0].cpu_load, Some(12.5));
        assert!(samples[0]
            .extended
            .as_deref()
            .is_some_and(|e| e.temperature_celsius.is_none()));
    }

    #[test]
    fn historical_readings_carry_every_metric() {
        let mut walk = crate::walk::HostWalk::new(0);
        let reading = walk.next(TIME);
        let body = v1_batch(&[(TIME, reading)]).unwrap();
        let now = UnixTime::from_micros(TIME + 86_400_000_000);
        let samples = sysmon_core::v1::parse_json_batch(&body, now).unwrap();
        let extended = samples[0].extended.as_deref().expect("extended metrics");
        let host = reading.host.expect("host metrics");
        assert_eq!(extended.memory_used_bytes, Some(host.memory_used_bytes));
        assert_eq!(
            extended.temperature_celsius,
            Some(f64::from(host.temperature_tenths) / 10.0)
        );
        for value in [
            extended.load_average_1m,
            extended.disk_read_bytes_per_second,
            extended.disk_write_bytes_per_second,
            extended.network_receive_bytes_per_second,
            extended.network_transmit_bytes_per_second,
        ] {
            assert!(value.is_some());
        }
        assert!(extended.swap_used_bytes.is_some() && extended.memory_total_bytes.is_some());
    }

    #[test]
    fn line_protocol() {
        let mut out = String::new();
        influx_line(&mut out, &escape_tag("lg_1"), TIME, &READING);
        influx_line(&mut out, &escape_tag("a b,c=d"), TIME + 1, &READING);
        assert_eq!(
            out,
            "system,host=lg_1 cpu_load=12.5,mem=6172,storage=95888 1764079980123000000\n\
             system,host=a\\ b\\,c\\=d cpu_load=12.5,mem=6172,storage=95888 1764079980123001000\n"
        );
    }

    #[test]
    fn synthetic_readings_are_in_range() {
        for client in [0, 1, 9_999] {
            for sequence in 0..2_000 {
                let reading = Reading::synthetic(client, sequence);
                assert!(reading.cpu_tenths <= 1000);
            }
        }
    }
}
