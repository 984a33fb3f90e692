//! Values from text (durations with humantime, sizes with bytesize, the
//! server URL, choices), whichever layer the text came from; and the
//! checks across settings, once they are merged. A parser's error says
//! what is wrong with the value; the caller adds where it came from.

use std::time::Duration;

use bytesize::ByteSize;
use clap::ValueEnum;

use super::{Config, Mode, MAX_BATCH_SIZE, MIN_OUTBOX_BYTES};
use crate::error::{Error, Result};

type Parsed<T> = std::result::Result<T, String>;

/// A duration: seconds, or humantime's forms (`250ms`, `90s`, `5m`, `2h`,
/// `7d`, `2w`, `1h30m`, ...) in the units the docs list.
pub fn duration(text: &str) -> Parsed<Duration> {
    let text = text.trim();
    // humantime wants a unit; a plain number has always meant seconds.
    let parsed = match text.parse::<f64>() {
        Ok(seconds) => {
            Duration::try_from_secs_f64(seconds).map_err(|_| "negative or out of range".to_owned())
        }
        Err(_) => {
            if let Some(unit) = text
                .split(|c: char| !c.is_alphabetic())
                .find(|unit| !unit.is_empty() && !DURATION_UNITS.contains(unit))
            {
                return Err(format!(
                    "`{text}`: unknown unit `{unit}` (use {DURATION_UNITS_HELP})"
                ));
            }
            humantime::parse_duration(text).map_err(|error| error.to_string())
        }
    };
    parsed.map_err(|reason| {
        format!("`{text}` is not a duration such as 30, 30s, 5m, 2h or 7d: {reason}")
    })
}

/// The duration units the docs list, in humantime's spellings. humantime
/// knows more: months and years (`M` is a month there, where a size reads
/// it as MiB) and units below a millisecond, which no setting needs.
const DURATION_UNITS: &[&str] = &[
    "ms", "msec", "millis", //
    "s", "sec", "secs", "second", "seconds", //
    "m", "min", "mins", "minute", "minutes", //
    "h", "hr", "hrs", "hour", "hours", //
    "d", "day", "days", //
    "w", "wk", "wks", "week", "weeks",
];
const DURATION_UNITS_HELP: &str = "ms, s, m, h, d or w, or sec, min, hours, days, weeks";

/// A duration that is more than zero (a timeout, a retry wait, an age).
pub fn positive_duration(text: &str) -> Parsed<Duration> {
    let duration = duration(text)?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

/// The sampling interval: whole seconds, at least one.
pub fn interval(text: &str) -> Parsed<Duration> {
    let duration = duration(text)?;
    if duration < Duration::from_secs(1) || duration.subsec_nanos() != 0 {
        return Err(format!(
            "the interval must be a whole number of seconds, at least 1, got `{}`",
            text.trim()
        ));
    }
    Ok(duration)
}

/// A size: bytes, or a number with KiB/MiB/GiB (or K/M/G, 1024-based) or
/// KB/MB/GB (1000-based).
pub fn size(text: &str) -> Parsed<u64> {
    let text = text.trim();
    let unit_start = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let not_a_size = || format!("`{text}` is not a size such as 4096, 512KiB or 100MiB");
    if number.trim().is_empty() {
        return Err(not_a_size());
    }
    let unit = documented_size_unit(unit).ok_or_else(|| {
        format!("`{text}`: unknown unit `{unit}` (use KiB, MiB, GiB, KB, MB or GB)")
    })?;
    let bytes = format!("{} {unit}", number.trim())
        .parse::<ByteSize>()
        .map_err(|_| not_a_size())?
        .as_u64();
    // bytesize saturates rather than fail.
    if bytes == u64::MAX {
        return Err(format!("`{text}` is out of range"));
    }
    Ok(bytes)
}

/// The units the docs list, spelled for bytesize. bytesize knows more (TB,
/// PiB, ...) and reads a bare K, M or G as 1000-based, where the agent has
/// always documented 1024: both stay as documented.
fn documented_size_unit(unit: &str) -> Option<&'static str> {
    Some(match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => "B",
        "k" | "kib" => "KiB",
        "m" | "mib" => "MiB",
        "g" | "gib" => "GiB",
        "kb" => "KB",
        "mb" => "MB",
        "gb" => "GB",
        _ => return None,
    })
}

/// The outbox limit: at least one sample's worth.
pub fn outbox_size(text: &str) -> Parsed<u64> {
    let bytes = size(text)?;
    if bytes < MIN_OUTBOX_BYTES {
        return Err(format!(
            "the outbox must hold at least one sample ({MIN_OUTBOX_BYTES} bytes), got {bytes}"
        ));
    }
    Ok(bytes)
}

/// Samples per request, as many as the server takes at most.
pub fn batch_size(text: &str) -> Parsed<usize> {
    let size: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a whole number"))?;
    if !(1..=MAX_BATCH_SIZE).contains(&size) {
        return Err(format!(
            "the batch size must be from 1 to {MAX_BATCH_SIZE}, got {size}"
        ));
    }
    Ok(size)
}

/// One of `T`'s values, by name, in any case.
pub fn choice<T: ValueEnum>(text: &str) -> Parsed<T> {
    T::from_str(text.trim(), true).map_err(|_| {
        let choices: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!("`{text}` is not one of {}", choices.join(", "))
    })
}

/// Checks the server URL and drops a trailing slash.
pub fn server_url(url: &str) -> Parsed<String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("server URL `{url}` must start with http:// or https://"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(['?', '#', ' ']) {
        return Err(format!(
            "server URL `{url}` must be http(s)://HOST[:PORT][/PATH] without query or fragment"
        ));
    }
    // `user@host`: the host is what follows the `@`, which a reader (and a
    // check for loopback) easily takes for what precedes it.
    if rest
        .split('/')
        .next()
        .is_some_and(|authority| authority.contains('@'))
    {
        return Err(format!(
            "server URL `{url}` must not hold a user name or password (`...@`): give them with --name and --password"
        ));
    }
    Ok(url.to_owned())
}

/// The checks across settings, on the merged configuration.
pub fn check(config: &Config) -> Result<()> {
    let fail = |message: &str| Err(Error::Config(message.to_owned()));
    if config.name.is_some() != config.password.is_some() {
        return fail("--name and --password go together (the password may also come from SYSMON_AGENT_PASSWORD)");
    }
    if config.name.as_deref().is_some_and(str::is_empty) {
        return fail("--name must not be empty");
    }
    if config.token.as_deref().is_some_and(str::is_empty) {
        return fail("--token must not be empty");
    }
    if config.retry.min > config.retry.max {
        return Err(Error::Config(format!(
            "the retry minimum ({:?}) is above the retry maximum ({:?})",
            config.retry.min, config.retry.max
        )));
    }
    match config.mode {
        Mode::Once => Ok(()),
        Mode::Enroll if config.server.is_none() || config.name.is_none() => {
            fail("--enroll needs --server, --name and --password")
        }
        Mode::Run if config.server.is_none() => fail(
            "no server: give --server URL (or SYSMON_AGENT_SERVER, or `server:` in the config file)",
        ),
        Mode::Enroll | Mode::Run => Ok(()),
    }
}
