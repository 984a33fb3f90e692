//! Layered settings, shared by the server and the agent: each resolves one
//! typed `Config` from, highest precedence first, its flags, the
//! environment, a YAML file and built-in defaults.
//!
//! Flags and the variables that stand for them are clap's
//! (`#[arg(long, env = "...")]`); the file is serde's. This module adds
//! what both binaries need around them: an empty variable counting as
//! unset, help that never prints a variable's value, and reading the file.

use std::path::{Path, PathBuf};

use clap::{Command, CommandFactory, Parser};
use serde::de::DeserializeOwned;

/// `T`'s command, ready to parse the process's arguments and environment.
pub fn command<T: CommandFactory>() -> Command {
    T::command().mut_args(|arg| {
        // clap takes a variable set to "" as an empty value; sysmon has
        // always taken it as unset (`DATABASE_URL=` in a compose file).
        let empty = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|value| value.is_empty());
        // Values can be secrets (DATABASE_URL, SYSMON_AGENT_PASSWORD).
        let arg = arg.hide_env_values(true);
        if empty {
            arg.env(None::<&str>)
        } else {
            arg
        }
    })
}

/// Parses the process's arguments with [`command`]. Like `T::parse()`, it
/// exits on `--help`, `--version` and usage errors.
pub fn parse<T: Parser>() -> T {
    let matches = command::<T>().get_matches();
    T::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// A YAML file that could not be used. The message names the file, and
/// serde_norway's names the key, line and column.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {}: {error}", path.display())]
    Parse {
        path: PathBuf,
        error: serde_norway::Error,
    },
}

/// Reads and parses the YAML file at `path`, see [`parse_yaml`].
pub fn read_yaml<T: DeserializeOwned + Default>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|error| FileError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_yaml(path, &text)
}

/// Parses `text`, read from `path`. An empty file is every default
/// (serde_norway would call it invalid), so that a packaged empty file works.
pub fn parse_yaml<T: DeserializeOwned + Default>(path: &Path, text: &str) -> Result<T, FileError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_norway::from_str(text).map_err(|error| FileError::Parse {
        path: path.to_owned(),
        error,
    })
}

/// `T`'s [`command`] as if the environment held exactly `vars` among the
/// variables it reads, for tests. clap reads each variable when the command
/// is built, from the process's environment, with no way to pass another;
/// so the variables are swapped in for that moment, under a lock that
/// every caller shares, and put back.
#[cfg(feature = "test-support")]
pub fn command_with_env<T: CommandFactory>(vars: &[(&str, &str)]) -> Command {
    use std::ffi::OsString;
    use std::sync::{Mutex, PoisonError};

    static ENVIRONMENT: Mutex<()> = Mutex::new(());
    let _lock = ENVIRONMENT.lock().unwrap_or_else(PoisonError::into_inner);
    let names: Vec<OsString> = T::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env().map(OsString::from))
        .chain(vars.iter().map(|(name, _)| OsString::from(name)))
        .collect();
    let saved: Vec<(OsString, Option<OsString>)> = names
        .into_iter()
        .map(|name| {
            let value = std::env::var_os(&name);
            std::env::remove_var(&name);
            (name, value)
        })
        .collect();
    for (name, value) in vars {
        std::env::set_var(name, value);
    }
    let command = command::<T>();
    for (name, value) in saved {
        match value {
            Some(value) => std::env::set_var(name, value),
            None => std::env::remove_var(name),
        }
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        name: Option<String>,
    }

    #[test]
    fn an_empty_file_is_every_default_and_errors_name_the_file() {
        let path = Path::new("/etc/x.yaml");
        assert_eq!(parse_yaml::<Shape>(path, " \n").unwrap(), Shape::default());
        let error = parse_yaml::<Shape>(path, "nam: a\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("config file /etc/x.yaml: unknown field `nam`"),
            "{error}"
        );
        let error = read_yaml::<Shape>(Path::new("/no/such.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("cannot read config file /no/such.yaml: "),
            "{error}"
        );
    }
}
