//! Property tests for every parser of untrusted input in the wire types:
//! whatever arrives, parsing returns a value or a typed error, never
//! panics, and what it accepts is valid (the same check ingest relies on).

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sysmon_core::metrics::{self, MAX_FILESYSTEMS};
use sysmon_core::sample::FieldValue;
use sysmon_core::v1::{self, MAX_BATCH_SAMPLES};
use sysmon_core::ws::ClientMessage;
use sysmon_core::{Sample, UnixTime};

/// A fixed "now", so that times are judged the same in every case.
fn now() -> UnixTime {
    UnixTime::from_micros(1_764_000_000_000_000)
}

/// Field names: the ones parsers know, their other spellings, and noise.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "time",
            "unix_time",
            "cpu_load",
            "cpu",
            "mem",
            "storage",
            "username",
            "pass",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{0,12}",
        any::<String>(),
    ]
}

/// Numbers that break parsers: non-finite, huge, tiny, negative, and the
/// plausible ones around now.
fn nasty_number() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e308,
            -1e308,
            1e18,
            1e18 + 1e3,
            -0.0,
            100.0,
            100.000_001,
            i64::MAX as f64,
            u64::MAX as f64,
        ]),
        (1_700_000_000.0..1_764_086_400.0f64),
        (0.0..100.0f64),
    ]
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        nasty_number().prop_map(FieldValue::Number),
        nasty_number().prop_map(|number| FieldValue::Text(number.to_string())),
        any::<String>().prop_map(FieldValue::Text),
        Just(FieldValue::Null),
        Just(FieldValue::Other("an array")),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        nasty_number().prop_map(|number| json!(number)),
        any::<i64>().prop_map(|number| json!(number)),
        any::<u64>().prop_map(|number| json!(number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(field_name(), inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

/// What every accepted sample must be: valid by the metric list's rules.
fn assert_valid(sample: &Sample) -> Result<(), TestCaseError> {
    prop_assert_eq!(metrics::validate(sample), Ok(()));
    if let Some(cpu) = sample.cpu_load {
        prop_assert!((0.0..=100.0).contains(&cpu), "cpu_load {}", cpu);
    }
    Ok(())
}

proptest! {
    #[test]
    fn form_and_json_fields_parse_or_are_refused(
        fields in prop::collection::vec((field_name(), field_value()), 0..8)
    ) {
        if let Ok(sample) = Sample::from_fields(fields, now()) {
            assert_valid(&sample)?;
        }
    }

    #[test]
    fn json_objects_parse_or_are_refused(
        object in prop::collection::btree_map(field_name(), json_value(), 0..8)
    ) {
        let object: Map<String, Value> = object.into_iter().collect();
        if let Ok(sample) = Sample::from_json_object(&object, now()) {
            assert_valid(&sample)?;
        }
    }

    #[test]
    fn batches_of_any_bytes_parse_or_are_refused(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let parsed = [v1::parse_json_batch(&body, now()), v1::parse_ndjson_batch(&body, now())];
        for samples in parsed.into_iter().flatten() {
            prop_assert!(!samples.is_empty() && samples.len() <= MAX_BATCH_SAMPLES);
            for sample in &samples {
                assert_valid(sample)?;
            }
        }
    }

    #[test]
    fn batches_of_any_json_parse_or_are_refused(items in prop::collection::vec(json_value(), 0..6)) {
        let body = serde_json::to_vec(&items).expect("JSON");
        if let Ok(samples) = v1::parse_json_batch(&body, now()) {
            prop_assert_eq!(samples.len(), items.len());
            for sample in &samples {
                assert_valid(sample)?;
            }
        }
        let lines: Vec<String> = items.iter().map(Value::to_string).collect();
        let _ = v1::parse_ndjson_batch(lines.join("\n").as_bytes(), now());
    }

    /// Samples a real agent sends come back as they went, whatever values
    /// within range they hold.
    #[test]
    fn valid_samples_survive_the_round_trip(
        time in 1_700_000_000.0..1_764_000_000.0f64,
        cpu in proptest::option::of(0.0..=100.0f64),
        mem in proptest::option::of(0.0..1e18f64),
        used in proptest::option::of(0..=i64::MAX as u64),
        mounts in prop::collection::vec(("/[a-z/]{0,40}", 0..=i64::MAX as u64), 0..4),
    ) {
        let mut sample = json!({"time": time});
        if let Some(cpu) = cpu { sample["cpu_load"] = json!(cpu); }
        if let Some(mem) = mem { sample["mem"] = json!(mem); }
        if let Some(used) = used { sample["memory_used_bytes"] = json!(used); }
        let filesystems: Vec<Value> = mounts
            .iter()
            .map(|(mount, size)| json!({"mount_point": mount, "used_bytes": size / 2, "total_bytes": size}))
            .collect();
        if !filesystems.is_empty() { sample["filesystems"] = json!(filesystems); }
        let body = serde_json::to_vec(&[&sample]).expect("JSON");
        let parsed = v1::parse_json_batch(&body, now());
        prop_assert!(parsed.is_ok(), "{:?} refused: {:?}", sample, parsed);
        let parsed = parsed.unwrap();
        let back = v1::HostSample::from_sample(&parsed[0]);
        prop_assert!((back.time - time).abs() < 1e-6);
        prop_assert_eq!(back.cpu_load, cpu);
        prop_assert_eq!(back.mem, mem);
        prop_assert_eq!(back.extended.memory_used_bytes, used);
        prop_assert_eq!(back.extended.filesystems.len(), mounts.len());
    }

    #[test]
    fn websocket_messages_parse_or_are_refused(text in any::<String>()) {
        let _ = ClientMessage::parse(&text);
    }

    #[test]
    fn websocket_messages_of_any_shape_parse_or_are_refused(
        kind in prop::sample::select(vec![
            "HELLO", "CLIENT_DATA", "CLIENT_BATCH", "SUBSCRIBE", "UNSUBSCRIBE", "WORK_TIME", "hello", "",
        ]),
        fields in prop::collection::btree_map(
            prop::sample::select(vec!["data", "client_id", "request_id", "interval", "batch_id", "samples", "x"]),
            json_value(),
            0..5,
        ),
    ) {
        let mut message: Map<String, Value> = fields
            .into_iter()
            .map(|(key, value)| (key.to_owned(), value))
            .collect();
        message.insert("type".into(), json!(kind));
        if let Ok(ClientMessage::ClientBatch { samples, .. }) = ClientMessage::parse(&Value::Object(message).to_string()) {
            if let Ok(samples) = v1::parse_batch_items(samples, now()) {
                for sample in &samples {
                    assert_valid(sample)?;
                }
            }
        }
    }
}

#[test]
fn file_system_lists_past_the_cap_are_refused() {
    let filesystems: Vec<Value> = (0..=MAX_FILESYSTEMS)
        .map(
            |index| json!({"mount_point": format!("/m{index}"), "used_bytes": 1, "total_bytes": 2}),
        )
        .collect();
    let body = serde_json::to_vec(&[json!({"time": 1_763_000_000, "filesystems": filesystems})])
        .expect("JSON");
    assert!(v1::parse_json_batch(&body, now()).is_err());
}
