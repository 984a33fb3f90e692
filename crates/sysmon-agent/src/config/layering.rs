//! The layers: flags over their variables (both declared with clap, see
//! [`super::cli`], and parsed apart by [`settings::parse_layers`]) over the
//! YAML file (serde), merged setting by setting; and where each merged
//! value came from, so that an error names the flag, the variable or the
//! key that gave it.

use std::path::Path;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer};
use sysmon_core::settings::{self, parse_yaml, FileError};

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
    ca_file,
    enroll_token,
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
/// parsers that also read flags and variables. An empty value
/// (`interval:`, `interval: ~`) is unset, as in the server's file. A value
/// of the wrong type (a list, a mapping, `true`) is refused inside
/// serde_norway's visit of the key, so that its error names the key, the
/// line and the column, and the caller's names the file.
pub fn text<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<String>, D::Error> {
    struct Text;

    impl<'de> Visitor<'de> for Text {
        type Value = Option<String>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter) -> std::fmt::Result {
            formatter.write_str("a number or a text, or nothing")
        }

        fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(
            self,
            value: D,
        ) -> std::result::Result<Self::Value, D::Error> {
            value.deserialize_any(self)
        }

        fn visit_u64<E: de::Error>(self, value: u64) -> std::result::Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_i64<E: de::Error>(self, value: i64) -> std::result::Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_f64<E: de::Error>(self, value: f64) -> std::result::Result<Self::Value, E> {
            Ok(Some(value.to_string()))
        }

        fn visit_str<E: de::Error>(self, value: &str) -> std::result::Result<Self::Value, E> {
            Ok(Some(value.to_owned()))
        }
    }

    deserializer.deserialize_option(Text)
}

/// A section (`retry:`, `outbox:`): an empty one is every key unset.
pub fn section<'de, D, T>(deserializer: D) -> std::result::Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

/// The merged settings, and where each one's value came from.
pub struct Layers<'a> {
    pub settings: Settings,
    sources: &'a settings::Layers,
}

impl<'a> Layers<'a> {
    /// `flags` over `variables` (as `sources` parsed them) over `file`.
    pub fn new(
        flags: Settings,
        variables: Settings,
        file: Settings,
        sources: &'a settings::Layers,
    ) -> Self {
        Layers {
            settings: flags.merge(variables).merge(file),
            sources,
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
        let given =
            |matches: &ArgMatches| matches.value_source(key) == Some(ValueSource::CommandLine);
        let arg = self
            .sources
            .command
            .get_arguments()
            .find(|arg| arg.get_id() == key);
        match arg {
            Some(arg) if given(&self.sources.flags) => {
                format!("--{}", arg.get_long().unwrap_or(key))
            }
            Some(arg) if given(&self.sources.variables) => arg.get_env().map_or_else(
                || key.to_owned(),
                |name| name.to_string_lossy().into_owned(),
            ),
            _ => format!("{key} in the config file"),
        }
    }
}
