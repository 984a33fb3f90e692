//! The versioned ingest format, for agents: a full host sample with every
//! unit explicit in its name, sent in batches (`POST /api/v1/samples` as a
//! JSON array or NDJSON, or a WebSocket `CLIENT_BATCH`).
//!
//! A [`HostSample`] also carries the original's `cpu_load`, `mem` and
//! `storage`, so the original API's reports work for agent hosts too.

use serde::{Deserialize, Serialize};

pub use crate::metrics::{ExtendedMetrics, FilesystemUsage};
use crate::sample::{Sample, SampleError, UnixTime};

/// Most samples one batch may carry.
pub const MAX_BATCH_SAMPLES: usize = 10_000;

/// One full sample as an agent sends it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSample {
    /// Unix seconds, fractional allowed.
    pub time: f64,
    /// Cpu load in percent of all cores (the original's `cpu_load`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_load: Option<f64>,
    /// Memory used in MB (the original's `mem`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem: Option<f64>,
    /// Root file system used in MB (the original's `storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<f64>,
    #[serde(flatten)]
    pub extended: ExtendedMetrics,
}

impl HostSample {
    /// The wire form of a stored sample (extended metrics empty when the
    /// sample came through the original API).
    pub fn from_sample(sample: &Sample) -> HostSample {
        HostSample {
            time: sample.time.as_secs_f64(),
            cpu_load: sample.cpu_load,
            mem: sample.mem,
            storage: sample.storage,
            extended: sample.extended.as_deref().cloned().unwrap_or_default(),
        }
    }

    /// Validates into the typed sample every ingest route hands on.
    pub fn into_sample(self, now: UnixTime) -> Result<Sample, SampleError> {
        use crate::sample::FieldValue;
        let fields = [
            ("time", Some(self.time)),
            ("cpu_load", self.cpu_load),
            ("mem", self.mem),
            ("storage", self.storage),
        ];
        let mut sample = Sample::from_fields(
            fields
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key, FieldValue::Number(value)))),
            now,
        )?;
        sample.extended = Some(Box::new(self.extended));
        crate::metrics::validate(&sample)?;
        Ok(sample)
    }
}

/// Why a batch body was refused; the message names the sample and field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("sample {index}: {message}")]
    Malformed { index: usize, message: String },
    #[error("sample {index}: {source}")]
    Invalid {
        index: usize,
        #[source]
        source: SampleError,
    },
    #[error("a batch must be a JSON array of samples or NDJSON (one sample per line)")]
    NotABatch,
    #[error("a batch may hold at most {MAX_BATCH_SAMPLES} samples")]
    TooLarge,
    #[error("the batch is empty")]
    Empty,
}

/// Parses and validates a JSON array of samples straight into samples, one
/// item at a time: no generic JSON tree of the whole body (3 to 5 times its
/// size) is ever built, and parsing stops at the first bad item or past
/// [`MAX_BATCH_SAMPLES`].
pub fn parse_json_batch(body: &[u8], now: UnixTime) -> Result<Vec<Sample>, BatchError> {
    let refusal = std::cell::RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = serde::Deserializer::deserialize_seq(
        &mut deserializer,
        BatchVisitor {
            now,
            refusal: &refusal,
        },
    )
    .and_then(|samples| deserializer.end().map(|()| samples));
    match (parsed, refusal.into_inner()) {
        (Ok(samples), _) => check_count(samples.len()).map(|()| samples),
        (Err(_), Some(BatchError::Malformed { .. })) if cut_short(body) => {
            Err(BatchError::NotABatch)
        }
        (Err(_), Some(refusal)) => Err(refusal),
        (Err(_), None) => Err(BatchError::NotABatch),
    }
}

/// Whether the body ends before its JSON does: then it is no batch,
/// whichever item it ended in. Checked only when an item failed, without
/// building anything.
fn cut_short(body: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err_and(|error| error.is_eof())
}

/// Visits a batch's array, validating each item as it is read; why it
/// stopped, when an item (not the array) was at fault, goes to `refusal`.
struct BatchVisitor<'a> {
    now: UnixTime,
    refusal: &'a std::cell::RefCell<Option<BatchError>>,
}

impl<'de> serde::de::Visitor<'de> for BatchVisitor<'_> {
    type Value = Vec<Sample>;

    fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
        formatter.write_str("a JSON array of samples")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut items: A,
    ) -> Result<Vec<Sample>, A::Error> {
        let mut samples = Vec::with_capacity(items.size_hint().unwrap_or(0).min(MAX_BATCH_SAMPLES));
        loop {
            let index = samples.len();
            if index == MAX_BATCH_SAMPLES {
                // One more item makes the batch too large; none is fine.
                return match items.next_element::<serde::de::IgnoredAny>() {
                    Ok(None) => Ok(samples),
                    _ => Err(self.refuse(BatchError::TooLarge)),
                };
            }
            match items.next_element::<HostSample>() {
                Ok(Some(item)) => match validate_item(index, Ok(item), self.now) {
                    Ok(sample) => samples.push(sample),
                    Err(refusal) => return Err(self.refuse(refusal)),
                },
                Ok(None) => return Ok(samples),
                Err(error) => {
                    let message = error.to_string();
                    return Err(self.refuse(BatchError::Malformed { index, message }));
                }
            }
        }
    }
}

impl BatchVisitor<'_> {
    fn refuse<E: serde::de::Error>(&self, refusal: BatchError) -> E {
        let error = E::custom(&refusal);
        *self.refusal.borrow_mut() = Some(refusal);
        error
    }
}

/// Validates already-parsed JSON samples (a WebSocket CLIENT_BATCH's).
pub fn parse_batch_items(
    items: Vec<serde_json::Value>,
    now: UnixTime,
) -> Result<Vec<Sample>, BatchError> {
    check_count(items.len())?;
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| validate_item(index, serde_json::from_value(item), now))
        .collect()
}

/// Parses and validates newline-delimited JSON, one sample per line.
pub fn parse_ndjson_batch(body: &[u8], now: UnixTime) -> Result<Vec<Sample>, BatchError> {
    let lines: Vec<&[u8]> = body
        .split(|&byte| byte == b'\n')
        .filter(|line| line.iter().any(|byte| !byte.is_ascii_whitespace()))
        .collect();
    check_count(lines.len())?;
    lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| validate_item(index, serde_json::from_slice(line), now))
        .collect()
}

/// One batch item, deserialized or not, into a validated sample; errors
/// carry the item's index.
fn validate_item(
    index: usize,
    parsed: Result<HostSample, serde_json::Error>,
    now: UnixTime,
) -> Result<Sample, BatchError> {
    let sample = parsed.map_err(|e| BatchError::Malformed {
        index,
        message: e.to_string(),
    })?;
    sample
        .into_sample(now)
        .map_err(|source| BatchError::Invalid { index, source })
}

fn check_count(count: usize) -> Result<(), BatchError> {
    match count {
        0 => Err(BatchError::Empty),
        n if n > MAX_BATCH_SAMPLES => Err(BatchError::TooLarge),
        _ => Ok(()),
    }
}

/// The answer to a batch: which sample times were newly stored and which
/// the server already had (a replay). Both mean "safe to forget".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchAck {
    pub stored: Vec<UnixTime>,
    pub duplicates: Vec<UnixTime>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> UnixTime {
        UnixTime::from_micros(1_764_000_000_000_000)
    }

    fn full() -> serde_json::Value {
        json!({
            "time": 1_763_999_990.5, "cpu_load": 12.5, "mem": 2048.0, "storage": 10240.0,
            "load_average_1m": 0.5, "load_average_5m": 0.4, "load_average_15m": 0.3,
            "memory_used_bytes": 2_147_483_648u64, "memory_available_bytes": 1u64 << 33,
            "memory_total_bytes": 1u64 << 34, "swap_used_bytes": 0, "swap_total_bytes": 0,
            "disk_read_bytes_per_second": 100.0, "disk_write_bytes_per_second": 2000.0,
            "network_receive_bytes_per_second": 5.0, "network_transmit_bytes_per_second": 6.0,
            "uptime_seconds": 3600, "temperature_celsius": -3.5,
            "filesystems": [{"mount_point": "/", "used_bytes": 10, "total_bytes": 20}]
        })
    }

    #[test]
    fn full_sample_round_trips() {
        let body = serde_json::to_vec(&json!([full()])).unwrap();
        let samples = parse_json_batch(&body, now()).unwrap();
        let extended = samples[0].extended.as_deref().unwrap();
        assert_eq!(samples[0].cpu_load, Some(12.5));
        assert_eq!(extended.temperature_celsius, Some(-3.5));
        assert_eq!(extended.filesystems[0].mount_point, "/");
        let wire: HostSample = serde_json::from_value(full()).unwrap();
        assert_eq!(serde_json::to_value(&wire).unwrap(), full());
    }

    #[test]
    fn ndjson_and_json_agree() {
        let ndjson = format!(
            "{}\n\n{}\n",
            full(),
            json!({"time": 1_763_999_991, "mem": 1})
        );
        let samples = parse_ndjson_batch(ndjson.as_bytes(), now()).unwrap();
        assert_eq!(samples.len(), 2);
        assert!(samples[1]
            .extended
            .as_deref()
            .unwrap()
            .filesystems
            .is_empty());
    }

    #[test]
    fn errors_name_the_sample_and_field() {
        let mut bad = full();
        bad["disk_read_bytes_per_second"] = json!(-1.0);
        let body = serde_json::to_vec(&json!([full(), bad])).unwrap();
        let error = parse_json_batch(&body, now()).unwrap_err().to_string();
        assert!(
            error.contains("sample 1") && error.contains("disk_read_bytes_per_second"),
            "{error}"
        );

        let body = serde_json::to_vec(&json!([{"time": 1_763_999_990, "gpu": 1}])).unwrap();
        let error = parse_json_batch(&body, now()).unwrap_err().to_string();
        assert!(
            error.contains("sample 0") && error.contains("gpu"),
            "{error}"
        );

        let body =
            serde_json::to_vec(&json!([{"time": 1_763_999_990, "memory_used_bytes": -5}])).unwrap();
        assert!(parse_json_batch(&body, now())
            .unwrap_err()
            .to_string()
            .contains("sample 0"));
        assert_eq!(parse_json_batch(b"[]", now()), Err(BatchError::Empty));
        assert_eq!(parse_json_batch(b"{}", now()), Err(BatchError::NotABatch));
        assert!(matches!(
            parse_ndjson_batch(b"{\"time\": 1}\n", now()),
            Err(BatchError::Invalid { index: 0, .. })
        ));
    }

    #[test]
    fn batches_stop_at_the_first_bad_item_or_past_the_limit() {
        let sample = json!({"time": 1_763_999_990, "cpu_load": 1.0}).to_string();
        let batch = |count: usize, tail: &str| {
            let mut items = vec![sample.as_str(); count];
            if !tail.is_empty() {
                items.push(tail);
            }
            format!("[{}]", items.join(","))
        };
        let whole = parse_json_batch(batch(MAX_BATCH_SAMPLES, "").as_bytes(), now());
        assert_eq!(whole.map(|samples| samples.len()), Ok(MAX_BATCH_SAMPLES));
        let over = batch(MAX_BATCH_SAMPLES, "not even JSON");
        assert_eq!(
            parse_json_batch(over.as_bytes(), now()),
            Err(BatchError::TooLarge),
            "refused as too large without reading on"
        );
        assert!(matches!(
            parse_json_batch(batch(3, "[1]").as_bytes(), now()),
            Err(BatchError::Malformed { index: 3, .. })
        ));
        assert_eq!(
            parse_json_batch(format!("{} trailing", batch(1, "")).as_bytes(), now()),
            Err(BatchError::NotABatch)
        );
        assert_eq!(parse_json_batch(b"[", now()), Err(BatchError::NotABatch));
    }
}
