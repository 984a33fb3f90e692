//! Layered settings, shared by the server and the agent: each resolves one
//! typed `Config` from, highest precedence first, its flags, the
//! environment, a YAML file and built-in defaults.
//!
//! Flags and the variables that stand for them are declared once, with
//! clap (`#[arg(long, env = "...")]`); the file is serde's. This module adds
//! what both binaries need around them: an empty variable counting as
//! unset, help that never prints a variable's value, reading the file, and
//! [`parse_layers`], which reads the variables through an environment it
//! is given (the process's, or a test's map) rather than clap's.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, Command, CommandFactory, Parser};
use serde::de::DeserializeOwned;

/// Where variables are read from: `std::env::var_os` in a binary, a map in
/// a test, so that tests never change the process's environment.
pub type Environment<'a> = &'a dyn Fn(&str) -> Option<OsString>;

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

/// One command line and one environment, layer by layer: what the
/// arguments gave and what the variables gave, each as clap matches of
/// [`command`], so that both go through the same declarations and a caller
/// can tell which layer a value came from.
pub struct Layers {
    /// [`command`]: its help shows each variable (`[env: NAME]`).
    pub command: Command,
    /// The arguments' values only.
    pub flags: ArgMatches,
    /// The variables' values only, each under its argument's id.
    pub variables: ArgMatches,
}

/// Parses `args` (the program name first) and the variables that `T`'s
/// arguments declare, read through `env`; a variable set to the empty
/// string is unset. clap reads the process's variables itself, when the
/// command is built, and cannot be given others: those values are dropped,
/// and each variable read through `env` is parsed as its own flag would be
/// (`--interval=VALUE`). Variables stand for top-level flags that take a
/// value. Errors are clap's: `--help` and `--version` too, for
/// [`clap::Error::exit`].
pub fn parse_layers<T: CommandFactory>(
    args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    env: Environment,
) -> Result<Layers, clap::Error> {
    let command = command::<T>();
    let flags = command_line_only(&command, command.clone().try_get_matches_from(args)?);
    let mut variables = vec![OsString::from(command.get_name())];
    for arg in command.get_arguments() {
        let Some(name) = arg.get_env() else {
            continue;
        };
        // Checked whether set or not, so that any test finds a mistake.
        let long = arg
            .get_long()
            .filter(|_| arg.get_action().takes_values())
            .unwrap_or_else(|| panic!("{name:?} must stand for a --flag that takes a value"));
        if let Some(value) = name
            .to_str()
            .and_then(env)
            .filter(|value| !value.is_empty())
        {
            let mut flag = OsString::from(format!("--{long}="));
            flag.push(value);
            variables.push(flag);
        }
    }
    let variables = command_line_only(&command, command.clone().try_get_matches_from(variables)?);
    Ok(Layers {
        command,
        flags,
        variables,
    })
}

/// `matches` without the values clap took from the process's variables.
fn command_line_only(command: &Command, mut matches: ArgMatches) -> ArgMatches {
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(ValueSource::EnvVariable) {
            matches
                .try_clear_id(id)
                .expect("the id is one of the command's");
        }
    }
    matches
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
/// variables it reads, for tests that parse with the command; without
/// changing the process's environment. clap takes a variable's value only
/// from the process's environment, so each value in `vars` becomes its
/// argument's default instead: the parsed values are the same, but
/// `value_source` says `DefaultValue` (a test that needs the layer a value
/// came from uses [`parse_layers`]).
#[cfg(feature = "test-support")]
pub fn command_with_env<T: CommandFactory>(vars: &[(&str, &str)]) -> Command {
    T::command().mut_args(|arg| {
        let value = arg.get_env().and_then(|name| {
            vars.iter()
                .find(|(var, _)| std::ffi::OsStr::new(var) == name)
                .map(|(_, value)| value.to_string())
                .filter(|value| !value.is_empty())
        });
        // Not the process's value, which clap read when it built the arg.
        let arg = arg.env(None::<&str>);
        match value {
            Some(value) => arg.default_value(value),
            None => arg,
        }
    })
}

#[cfg(test)]
mod tests {
    use clap::FromArgMatches;

    use super::*;

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Shape {
        name: Option<String>,
    }

    #[derive(Debug, Parser)]
    #[command(name = "t")]
    struct Options {
        /// Set in every process's environment: must never leak in.
        #[arg(long, env = "PATH")]
        path: Option<String>,
        #[arg(long, env = "SYSMON_TEST_NAME")]
        name: Option<String>,
        #[arg(long, env = "SYSMON_TEST_SIZE")]
        size: Option<String>,
        #[arg(long)]
        once: bool,
    }

    fn environment(
        vars: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&str) -> Option<OsString> {
        move |name| {
            vars.iter()
                .find(|(var, _)| *var == name)
                .map(|(_, value)| OsString::from(value))
        }
    }

    #[test]
    fn layers_come_from_the_arguments_and_the_given_environment_only() {
        assert!(
            std::env::var_os("PATH").is_some(),
            "the test needs PATH set"
        );
        let env = environment(&[
            ("SYSMON_TEST_NAME", "from-variable"),
            ("SYSMON_TEST_SIZE", "-3=x"),
        ]);
        let layers = parse_layers::<Options>(["t", "--name", "from-flag", "--once"], &env).unwrap();
        let flags = Options::from_arg_matches(&layers.flags).unwrap();
        let variables = Options::from_arg_matches(&layers.variables).unwrap();
        assert_eq!(flags.name.as_deref(), Some("from-flag"));
        assert_eq!((flags.size, flags.path, flags.once), (None, None, true));
        assert_eq!(variables.name.as_deref(), Some("from-variable"));
        assert_eq!(variables.size.as_deref(), Some("-3=x"), "taken whole");
        assert_eq!((variables.path, variables.once), (None, false));
        assert_eq!(
            layers.variables.value_source("name"),
            Some(ValueSource::CommandLine)
        );

        let layers =
            parse_layers::<Options>(["t"], &environment(&[("SYSMON_TEST_NAME", "")])).unwrap();
        let variables = Options::from_arg_matches(&layers.variables).unwrap();
        assert_eq!(variables.name, None, "an empty variable is unset");

        let help = layers.command.clone().render_long_help().to_string();
        assert!(help.contains("[env: SYSMON_TEST_NAME]"), "{help}");
        assert!(help.contains("[env: PATH]"), "values stay hidden: {help}");
        assert!(parse_layers::<Options>(["t", "--bogus"], &env).is_err());
    }

    #[cfg(feature = "test-support")]
    #[test]
    fn command_with_env_takes_the_given_variables_only() {
        let command = command_with_env::<Options>(&[
            ("SYSMON_TEST_NAME", "from-variable"),
            ("SYSMON_TEST_SIZE", ""),
        ]);
        let parse = |args: &[&str]| {
            Options::from_arg_matches(&command.clone().try_get_matches_from(args).unwrap()).unwrap()
        };
        let options = parse(&["t"]);
        assert_eq!(options.name.as_deref(), Some("from-variable"));
        assert_eq!((options.size, options.path), (None, None));
        assert_eq!(
            parse(&["t", "--name", "flag"]).name.as_deref(),
            Some("flag")
        );
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
