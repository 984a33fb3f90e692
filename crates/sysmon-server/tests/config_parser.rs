//! The configuration file is read at startup: whatever it holds, the
//! server starts with a typed configuration or stops with one message
//! naming the problem, never a panic.

use proptest::prelude::*;
use sysmon_server::config::CliOptions;
use sysmon_server::Config;

/// YAML-ish text: known sections and keys with values of any kind, and
/// noise.
fn config_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "bind",
        "database_url",
        "log_format",
        "shutdown_grace_seconds",
        "ingest",
        "limits",
        "registration",
        "retention",
        "dashboard",
        "status_log",
        "max_batch",
        "mode",
        "fold_interval_seconds",
        "header_timeout_seconds",
        "raw_days",
        "unknown",
    ]);
    let value = prop_oneof![
        "-?[0-9]{1,25}(\\.[0-9]{0,5})?",
        Just("1e400".to_owned()),
        Just("[1, 2]".to_owned()),
        Just("{a: 1}".to_owned()),
        Just("closed".to_owned()),
        Just("".to_owned()),
        "[ -~]{0,20}",
    ];
    prop_oneof![
        prop::collection::vec(
            (key.clone(), value.clone(), prop::option::of((key, value))),
            0..6
        )
        .prop_map(|entries| {
            entries
                .into_iter()
                .map(|(key, value, nested)| match nested {
                    Some((inner, inner_value)) => format!("{key}:\n  {inner}: {inner_value}\n"),
                    None => format!("{key}: {value}\n"),
                })
                .collect::<String>()
        }),
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_config_file_loads_or_is_refused_with_a_message(text in config_text()) {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("sysmon.yaml");
        std::fs::write(&path, &text).expect("write the file");
        let options = CliOptions { config: Some(path), ..Default::default() };
        if let Err(error) = Config::from_sources(&options, &Default::default()) {
            prop_assert!(!error.to_string().is_empty());
        }
    }
}
