//! The layers: flags and their variables (clap, see [`super::cli`]) over
//! the YAML file (serde), merged setting by setting; and where each
//! merged value came from, so that an error names the flag, the variable
//! or the key that gave it.

use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgMatches, Command};
use serde::{Deserialize, Deserializer};
use sysmon_core::settings::{parse_yaml, FileError};

use super::cli::{OutboxSettings, RetrySettings, Settings};
use crate::error::{Error, Result};

/// One layer over a lower one: what the higher sets, it keeps.
pub trait Merge {
    fn merge(self, lower: Self) -> Self;
}

impl<T> Merge for Option<T> {
    fn merge(self, lower: Self) -> Self {
        self.or(lower)
    }
}

/// [`Merge`] field by field. The struct literal names every field, so a
/// setting added to the struct and not here does not compile.
macro_rules! merge_fields {
    ($type:ident { $($field:ident),+ $(,)? }) => {
        impl Merge for $type {
            fn merge(self, lower: Self) -> Self {
                $type { $($field: self.$field.merge(lower.$field)),+ }
            }
        }
    };
}

merge_fields!(Settings {
    server,
    name,
    password,
    token,
    state_dir,
    interval,
    transport,
    batch_size,
    outbox,
    retry,
    timeout,
    log_format,
});
merge_fields!(OutboxSettings { max_size, max_age });
merge_fields!(RetrySettings { min, max });

/// The YAML file's settings; `read` gets its text (injected by tests).
pub fn read_file(path: &Path, read: &dyn Fn(&Path) -> std::io::Result<String>) -> Result<Settings> {
    let text = read(path).map_err(|error| FileError::Read {
        path: path.to_owned(),
        error,
    });
    text.and_then(|text| parse_yaml(path, &text))
        .map_err(|error| Error::Config(error.to_string()))
}

/// A YAML scalar as text (`interval: 10` and `interval: 10s`), for the
/// parsers that also read flags and variables.
pub fn text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        Integer(u64),
        Float(f64),
        Text(String),
    }
    Ok(Some(match Scalar::deserialize(deserializer)? {
        Scalar::Integer(value) => value.to_string(),
        Scalar::Float(value) => value.to_string(),
        Scalar::Text(text) => text,
    }))
}

/// The merged settings, and where each one's value came from.
pub struct Layers<'a> {
    pub settings: Settings,
    command: &'a Command,
    matches: &'a ArgMatches,
}

impl<'a> Layers<'a> {
    /// `flags` (with their variables, as `matches` parsed them with
    /// `command`) over `file`.
    pub fn new(
        flags: Settings,
        file: Settings,
        command: &'a Command,
        matches: &'a ArgMatches,
    ) -> Self {
        Layers {
            settings: flags.merge(file),
            command,
            matches,
        }
    }

    /// Parses the merged `value` of the setting `key` (its arg id, which is
    /// its YAML path); an error names where the value came from.
    pub fn parse<T>(
        &self,
        key: &str,
        value: &Option<String>,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        value
            .as_deref()
            .map(|text| {
                parse(text).map_err(|error| Error::Config(format!("{}: {error}", self.origin(key))))
            })
            .transpose()
    }

    /// [`Layers::parse`], or `default` when no layer gives the setting.
    pub fn parse_or<T>(
        &self,
        key: &str,
        value: &Option<String>,
        parse: impl Fn(&str) -> std::result::Result<T, String>,
        default: T,
    ) -> Result<T> {
        Ok(self.parse(key, value, parse)?.unwrap_or(default))
    }

    /// `--interval`, `SYSMON_AGENT_INTERVAL` or `interval in the config
    /// file`: the highest layer that set `key`.
    pub fn origin(&self, key: &str) -> String {
        let arg = self.command.get_arguments().find(|arg| arg.get_id() == key);
        match (self.matches.value_source(key), arg) {
            (Some(ValueSource::CommandLine), Some(arg)) => {
                format!("--{}", arg.get_long().unwrap_or(key))
            }
            (Some(ValueSource::EnvVariable), Some(arg)) => arg.get_env().map_or_else(
                || key.to_owned(),
                |name| name.to_string_lossy().into_owned(),
            ),
            _ => format!("{key} in the config file"),
        }
    }
}
