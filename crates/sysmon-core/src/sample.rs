//! One pushed measurement: the typed form every ingest route parses into.
//!
//! The original clients send the same sample three ways (form fields, a JSON
//! body, a WebSocket `data` object) and with two spellings of the keys
//! (`time`/`unix_time`, `cpu_load`/`cpu`). All of them go through
//! [`Sample::from_fields`], so validation happens once and in one place.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::number::json_number;

const MICROS_PER_SECOND: i64 = 1_000_000;
/// 2000-01-01T00:00:00Z: nothing a fleet pushes today is older than this.
const EARLIEST_PLAUSIBLE_SECONDS: f64 = 946_684_800.0;
/// Clocks drift; a day ahead is a broken clock, not drift.
const LATEST_PLAUSIBLE_AHEAD_SECONDS: f64 = 86_400.0;

/// A point in time with microsecond precision, as unix time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime {
    micros: i64,
}

impl UnixTime {
    pub fn from_micros(micros: i64) -> Self {
        Self { micros }
    }

    /// Rounds fractional seconds to the nearest microsecond; `None` when the
    /// value is not finite or does not fit.
    pub fn from_secs_f64(seconds: f64) -> Option<Self> {
        let micros = (seconds * MICROS_PER_SECOND as f64).round();
        if micros.is_finite() && micros.abs() < i64::MAX as f64 {
            Some(Self::from_micros(micros as i64))
        } else {
            None
        }
    }

    pub fn now() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Self::from_micros(since_epoch.as_micros() as i64)
    }

    pub fn micros(self) -> i64 {
        self.micros
    }

    pub fn as_secs_f64(self) -> f64 {
        self.micros as f64 / MICROS_PER_SECOND as f64
    }

    /// Whole seconds when the time is whole (as most clients send it),
    /// otherwise fractional seconds: clients get back what they sent.
    pub fn to_json(self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

impl serde::Serialize for UnixTime {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.micros % MICROS_PER_SECOND == 0 {
            serializer.serialize_i64(self.micros / MICROS_PER_SECOND)
        } else {
            serializer.serialize_f64(self.as_secs_f64())
        }
    }
}

impl<'de> serde::Deserialize<'de> for UnixTime {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let seconds = f64::deserialize(deserializer)?;
        UnixTime::from_secs_f64(seconds)
            .ok_or_else(|| serde::de::Error::custom("unix time out of range"))
    }
}

/// A field's value as it arrived, before it is known to be a number.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    /// Form fields, and JSON strings such as `"25.9"`.
    Text(String),
    Number(f64),
    /// JSON `null`: the same as not sending the field.
    Null,
    /// Anything else (booleans, arrays, objects), named for the error.
    Other(&'static str),
}

impl From<&Value> for FieldValue {
    fn from(value: &Value) -> Self {
        match value {
            Value::Null => FieldValue::Null,
            Value::Number(number) => number
                .as_f64()
                .map(FieldValue::Number)
                .unwrap_or(FieldValue::Other("number out of range")),
            Value::String(text) => FieldValue::Text(text.clone()),
            Value::Bool(_) => FieldValue::Other("boolean"),
            Value::Array(_) => FieldValue::Other("array"),
            Value::Object(_) => FieldValue::Other("object"),
        }
    }
}

/// Why a pushed sample was refused. The messages are shown to clients, so
/// each names the field and what would be accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    /// The original's wording, which clients match on.
    #[error("incorrect data size")]
    Empty,
    #[error("unknown field `{0}`: expected time, cpu_load, mem, storage")]
    UnknownField(String),
    #[error("field `{0}` is given twice")]
    DuplicateField(&'static str),
    #[error("field `{field}` must be a number, got {got}")]
    NotNumeric { field: &'static str, got: String },
    #[error("field `{0}` must be a finite number")]
    NotFinite(&'static str),
    #[error("field `{0}` must not be negative")]
    Negative(&'static str),
    #[error("field `{0}` must be a percentage between 0 and 100")]
    AbovePercent(&'static str),
    #[error("field `time` must be unix seconds between the year 2000 and one day from now")]
    ImplausibleTime,
    #[error("field `{0}` is out of range")]
    OutOfRange(&'static str),
    /// Past [`crate::metrics::MAX_MAGNITUDE`]: no machine measures that
    /// much, and sums of such values overflow the rollups.
    #[error("field `{0}` is too large: the limit is 1e18")]
    TooLarge(&'static str),
    #[error("field `{0}` must be 1 to 4096 bytes of text without control characters")]
    InvalidText(&'static str),
    #[error("field `filesystems` lists more than {max} file systems", max = crate::metrics::MAX_FILESYSTEMS)]
    TooManyFilesystems,
}

/// The fields a sample may carry, with the spellings each may arrive in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Time,
    CpuLoad,
    Mem,
    Storage,
}

impl Field {
    fn from_key(key: &str) -> Option<Self> {
        match key {
            "time" | "unix_time" => Some(Field::Time),
            "cpu_load" | "cpu" => Some(Field::CpuLoad),
            "mem" => Some(Field::Mem),
            "storage" => Some(Field::Storage),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Field::Time => "time",
            Field::CpuLoad => "cpu_load",
            Field::Mem => "mem",
            Field::Storage => "storage",
        }
    }
}

/// One measurement of one client. Metrics the client did not send are `None`
/// and come back as `null` in reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub time: UnixTime,
    pub cpu_load: Option<f64>,
    pub mem: Option<f64>,
    pub storage: Option<f64>,
    /// What an agent measures beyond the original three (v1 API only).
    pub extended: Option<Box<crate::v1::ExtendedMetrics>>,
}

impl Sample {
    /// Parses and validates a sample from `(key, value)` pairs. `now` stands
    /// in for a missing time and bounds a plausible one.
    pub fn from_fields<K: AsRef<str>>(
        fields: impl IntoIterator<Item = (K, FieldValue)>,
        now: UnixTime,
    ) -> Result<Sample, SampleError> {
        let mut time = None;
        let mut cpu_load = None;
        let mut mem = None;
        let mut storage = None;
        let mut any_field = false;
        for (key, value) in fields {
            let key = key.as_ref();
            let field =
                Field::from_key(key).ok_or_else(|| SampleError::UnknownField(key.to_owned()))?;
            let Some(number) = parse_number(field, value)? else {
                continue;
            };
            any_field = true;
            let slot = match field {
                Field::Time => &mut time,
                Field::CpuLoad => &mut cpu_load,
                Field::Mem => &mut mem,
                Field::Storage => &mut storage,
            };
            if slot.replace(number).is_some() {
                return Err(SampleError::DuplicateField(field.name()));
            }
        }
        if !any_field {
            return Err(SampleError::Empty);
        }
        if cpu_load.is_some_and(|cpu| cpu > 100.0) {
            return Err(SampleError::AbovePercent("cpu_load"));
        }
        let time = match time {
            Some(seconds) => plausible_time(seconds, now)?,
            None => now,
        };
        let sample = Sample {
            time,
            cpu_load,
            mem,
            storage,
            extended: None,
        };
        crate::metrics::validate(&sample)?;
        Ok(sample)
    }

    /// Parses a JSON object such as a request body or a WebSocket `data`.
    pub fn from_json_object(
        object: &Map<String, Value>,
        now: UnixTime,
    ) -> Result<Sample, SampleError> {
        Self::from_fields(
            object
                .iter()
                .map(|(key, value)| (key.as_str(), FieldValue::from(value))),
            now,
        )
    }

    /// The original's acknowledgement: the stored fields as numbers, keyed
    /// the way the original client sends them.
    pub fn echo_json(&self) -> Value {
        let mut echo = Map::new();
        echo.insert("time".into(), self.time.to_json());
        let metrics = [
            ("cpu_load", self.cpu_load),
            ("mem", self.mem),
            ("storage", self.storage),
        ];
        for (key, value) in metrics {
            if let Some(value) = value {
                echo.insert(key.into(), json_number(value));
            }
        }
        Value::Object(echo)
    }
}

fn parse_number(field: Field, value: FieldValue) -> Result<Option<f64>, SampleError> {
    let number = match value {
        FieldValue::Null => return Ok(None),
        FieldValue::Number(number) => number,
        FieldValue::Text(text) => {
            let trimmed = text.trim();
            trimmed
                .parse::<f64>()
                .map_err(|_| SampleError::NotNumeric {
                    field: field.name(),
                    got: quote_for_error(trimmed),
                })?
        }
        FieldValue::Other(kind) => {
            return Err(SampleError::NotNumeric {
                field: field.name(),
                got: format!("a {kind}"),
            })
        }
    };
    if !number.is_finite() {
        return Err(SampleError::NotFinite(field.name()));
    }
    if number < 0.0 {
        return Err(SampleError::Negative(field.name()));
    }
    Ok(Some(number))
}

fn plausible_time(seconds: f64, now: UnixTime) -> Result<UnixTime, SampleError> {
    let latest = now.as_secs_f64() + LATEST_PLAUSIBLE_AHEAD_SECONDS;
    if !(EARLIEST_PLAUSIBLE_SECONDS..=latest).contains(&seconds) {
        return Err(SampleError::ImplausibleTime);
    }
    UnixTime::from_secs_f64(seconds).ok_or(SampleError::ImplausibleTime)
}

/// Echoes a bad value back in the error, shortened so a huge field cannot
/// turn an error message into a second copy of the request.
fn quote_for_error(text: &str) -> String {
    const LIMIT: usize = 40;
    if text.chars().count() <= LIMIT {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(LIMIT).collect();
        format!("{head:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_764_000_000;

    fn now() -> UnixTime {
        UnixTime::from_micros(NOW * MICROS_PER_SECOND)
    }

    fn text(pairs: &[(&str, &str)]) -> Result<Sample, SampleError> {
        Sample::from_fields(
            pairs
                .iter()
                .map(|(k, v)| (*k, FieldValue::Text((*v).to_owned()))),
            now(),
        )
    }

    #[test]
    fn parses_form_fields() {
        let sample = text(&[
            ("time", "1646650624"),
            ("cpu_load", "25.9"),
            ("mem", "6172"),
        ])
        .unwrap();
        assert_eq!(sample.time, UnixTime::from_micros(1_646_650_624_000_000));
        assert_eq!(sample.cpu_load, Some(25.9));
        assert_eq!(sample.mem, Some(6172.0));
        assert_eq!(sample.storage, None);
    }

    #[test]
    fn accepts_readme_spellings() {
        let object = json!({"unix_time": 1651155333, "cpu": 18, "mem": 8513, "storage": 81720});
        let sample = Sample::from_json_object(object.as_object().unwrap(), now()).unwrap();
        assert_eq!(sample.cpu_load, Some(18.0));
        assert_eq!(sample.time.to_json(), json!(1651155333));
    }

    #[test]
    fn missing_time_means_now() {
        let sample = text(&[("cpu_load", "1")]).unwrap();
        assert_eq!(sample.time, now());
    }

    #[test]
    fn empty_is_incorrect_data_size() {
        assert_eq!(text(&[]), Err(SampleError::Empty));
        let nulls = json!({"cpu_load": null});
        assert_eq!(
            Sample::from_json_object(nulls.as_object().unwrap(), now()),
            Err(SampleError::Empty)
        );
        assert_eq!(SampleError::Empty.to_string(), "incorrect data size");
    }

    #[test]
    fn rejects_bad_values_naming_the_field() {
        let err = text(&[("mem", "lots")]).unwrap_err();
        assert!(err.to_string().contains("`mem`"), "{err}");
        assert_eq!(text(&[("mem", "NaN")]), Err(SampleError::NotFinite("mem")));
        assert_eq!(
            text(&[("storage", "inf")]),
            Err(SampleError::NotFinite("storage"))
        );
        assert_eq!(
            text(&[("storage", "-1")]),
            Err(SampleError::Negative("storage"))
        );
        assert_eq!(
            text(&[("cpu_load", "100.5")]),
            Err(SampleError::AbovePercent("cpu_load"))
        );
        assert_eq!(text(&[("time", "12")]), Err(SampleError::ImplausibleTime));
        assert_eq!(text(&[("mem", "1e308")]), Err(SampleError::TooLarge("mem")));
        let too_late = (NOW + 2 * 86_400).to_string();
        assert_eq!(
            text(&[("time", &too_late)]),
            Err(SampleError::ImplausibleTime)
        );
        assert_eq!(
            text(&[("disk", "1")]),
            Err(SampleError::UnknownField("disk".into()))
        );
        assert_eq!(
            text(&[("cpu", "1"), ("cpu_load", "2")]),
            Err(SampleError::DuplicateField("cpu_load"))
        );
        let object = json!({"mem": true});
        let err = Sample::from_json_object(object.as_object().unwrap(), now()).unwrap_err();
        assert!(err.to_string().contains("boolean"), "{err}");
    }

    #[test]
    fn fractional_time_keeps_what_was_sent() {
        let sample = text(&[("time", "1646650624.123"), ("mem", "1")]).unwrap();
        assert_eq!(sample.time.micros(), 1_646_650_624_123_000);
        assert_eq!(sample.time.to_json().to_string(), "1646650624.123");
    }

    #[test]
    fn echo_has_only_sent_metrics() {
        let sample = text(&[
            ("time", "1646650624"),
            ("cpu_load", "25.9"),
            ("mem", "6172"),
        ])
        .unwrap();
        assert_eq!(
            sample.echo_json().to_string(),
            r#"{"cpu_load":25.9,"mem":6172,"time":1646650624}"#
        );
    }
}
