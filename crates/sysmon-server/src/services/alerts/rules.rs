//! Alert rules: what they watch, when they fire, and how one is written
//! (the same shape in the YAML file and the API), checked once here.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sysmon_core::metrics::{charted_index, CHARTED};
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::services::host_pattern;

/// Rules a server holds at most (file and API together): evaluation is
/// hosts × rules every tick.
pub const MAX_RULES: usize = 200;
/// The longest window a rule may average over, and the longest it may
/// wait: a day.
const MAX_WINDOW: Duration = Duration::from_secs(86_400);
const MAX_NAME_CHARS: usize = 64;
/// The longest a firing alert may wait before it is notified again.
const MAX_REPEAT_SECONDS: f64 = 7.0 * 86_400.0;

/// A rule as written: in the YAML file's `alerts.rules`, or the body of
/// `PUT /api/v1/alerts/rules/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Letters, digits, `-`, `_` and `.`; unique.
    pub name: String,
    /// A metric of the samples (`cpu_load`, `temperature_celsius`, ...), a
    /// share derived from them (`memory_used_percent`, `swap_used_percent`,
    /// `filesystem_used_percent`: the fullest file system), or
    /// `host_silent`.
    pub metric: String,
    /// How the window's samples are combined: `avg` (default), `min`,
    /// `max` or `last`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// The window, in seconds; 0 (default): the latest sample alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub over_seconds: Option<f64>,
    /// Fires when the value is above this...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// ...or below this (exactly one of the two, except for `host_silent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// `host_silent`: no sample for this many seconds...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_seconds: Option<f64>,
    /// ...or for this many of the host's own intervals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silent_intervals: Option<f64>,
    /// How long the condition must hold before the alert fires (pending
    /// until then); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_seconds: Option<f64>,
    /// Which hosts: `"*"` (default), a pattern with `*` and `?`, or a list
    /// of names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<HostsSpec>,
    #[serde(default)]
    pub severity: Severity,
    /// While firing, notify again this often; default never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_seconds: Option<f64>,
    /// Where notifications go, by channel name.
    #[serde(default)]
    pub channels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum HostsSpec {
    Pattern(String),
    Names(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Avg,
    Min,
    Max,
    Last,
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    #[default]
    Warning,
    Critical,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Shares derived from a sample that rules may watch, beside the charted
/// metrics.
const DERIVED: [&str; 3] = [
    "memory_used_percent",
    "swap_used_percent",
    "filesystem_used_percent",
];
/// The rule kind that watches for no samples at all.
const HOST_SILENT: &str = "host_silent";

/// Every `metric` a rule may name: the charted metrics, the derived
/// shares, and `host_silent`.
pub fn rule_metrics() -> Vec<&'static str> {
    CHARTED
        .iter()
        .map(|metric| metric.name)
        .chain(DERIVED)
        .chain([HOST_SILENT])
        .collect()
}

/// What a rule reads of a host's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// A charted metric, by its index in [`CHARTED`].
    Metric(usize),
    MemoryUsedPercent,
    SwapUsedPercent,
    /// The fullest file system's share used.
    FilesystemUsedPercent,
}

impl Signal {
    fn parse(name: &str) -> Option<Signal> {
        match name {
            "memory_used_percent" => Some(Signal::MemoryUsedPercent),
            "swap_used_percent" => Some(Signal::SwapUsedPercent),
            "filesystem_used_percent" => Some(Signal::FilesystemUsedPercent),
            _ => charted_index(name).map(Signal::Metric),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::Metric(index) => CHARTED[index].name,
            Signal::MemoryUsedPercent => "memory_used_percent",
            Signal::SwapUsedPercent => "swap_used_percent",
            Signal::FilesystemUsedPercent => "filesystem_used_percent",
        }
    }
}

/// When a rule's condition holds for a host.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Threshold {
        signal: Signal,
        aggregate: Aggregate,
        over: Duration,
        above: bool,
        threshold: f64,
    },
    Silent(Silence),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Silence {
    For(Duration),
    Intervals(f64),
}

/// Which hosts a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Hosts {
    All,
    Pattern(String),
    Names(BTreeSet<String>),
}

impl Hosts {
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Hosts::All => true,
            Hosts::Pattern(pattern) => host_pattern::matches(pattern, host),
            Hosts::Names(names) => names.contains(host),
        }
    }
}

/// Where a rule was declared: the file's are read-only in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RuleSource {
    Config,
    Api,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub spec: RuleSpec,
    pub source: RuleSource,
    pub condition: Condition,
    pub hosts: Hosts,
    pub hold_for: Duration,
    pub repeat: Option<Duration>,
}

impl Rule {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn severity(&self) -> Severity {
        self.spec.severity
    }

    /// The threshold, for notifications and charts; none for silence.
    pub fn threshold(&self) -> Option<f64> {
        match self.condition {
            Condition::Threshold { threshold, .. } => Some(threshold),
            Condition::Silent(_) => None,
        }
    }

    /// The condition as people read it: `avg(cpu_load over 5m) > 90`.
    pub fn describe(&self) -> String {
        match &self.condition {
            Condition::Threshold {
                signal,
                aggregate,
                over,
                above,
                threshold,
            } => {
                let op = if *above { ">" } else { "<" };
                let value = if over.is_zero() {
                    signal.name().to_owned()
                } else {
                    let aggregate = serde_json::to_value(aggregate)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    format!(
                        "{aggregate}({} over {})",
                        signal.name(),
                        seconds_text(*over)
                    )
                };
                format!("{value} {op} {threshold}")
            }
            Condition::Silent(Silence::For(after)) => {
                format!("no sample for {}", seconds_text(*after))
            }
            Condition::Silent(Silence::Intervals(n)) => {
                format!("no sample for {n} of its intervals")
            }
        }
    }
}

fn seconds_text(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds >= 3600.0 && seconds % 3600.0 == 0.0 {
        format!("{}h", seconds / 3600.0)
    } else if seconds >= 60.0 && seconds % 60.0 == 0.0 {
        format!("{}m", seconds / 60.0)
    } else {
        format!("{seconds}s")
    }
}

impl RuleSpec {
    /// Checks the rule; the error names the rule and the field.
    pub fn check(self, source: RuleSource) -> Result<Rule> {
        let name = self.name.clone();
        let fail = |message: String| Error::BadRequest(format!("alert rule `{name}`: {message}"));
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Error::BadRequest(format!(
                "alert rule name `{name}`: use 1 to {MAX_NAME_CHARS} letters, digits, `-`, `_` or `.`"
            )));
        }
        let duration = |field: &str, value: Option<f64>| -> Result<Duration> {
            match value {
                None => Ok(Duration::ZERO),
                Some(seconds)
                    if seconds.is_finite()
                        && (0.0..=MAX_WINDOW.as_secs_f64()).contains(&seconds) =>
                {
                    Ok(Duration::from_secs_f64(seconds))
                }
                Some(_) => Err(fail(format!("`{field}` must be 0 to 86400 seconds"))),
            }
        };
        let hold_for = duration("for_seconds", self.for_seconds)?;
        let repeat = match self.repeat_seconds {
            None | Some(0.0) => None,
            Some(seconds)
                if seconds.is_finite() && (60.0..=MAX_REPEAT_SECONDS).contains(&seconds) =>
            {
                Some(Duration::from_secs_f64(seconds))
            }
            Some(_) => {
                return Err(fail(
                    "`repeat_seconds` must be 0 (never) or 60 to 604800 (a week)".into(),
                ))
            }
        };
        let condition = if self.metric == HOST_SILENT {
            if self.above.is_some()
                || self.below.is_some()
                || self.aggregate.is_some()
                || self.over_seconds.is_some()
            {
                return Err(fail(
                    "`host_silent` takes `silent_seconds` or `silent_intervals`, not a threshold"
                        .into(),
                ));
            }
            match (self.silent_seconds, self.silent_intervals) {
                (Some(_), None) => {
                    let after = duration("silent_seconds", self.silent_seconds)?;
                    if after.is_zero() {
                        return Err(fail("`silent_seconds` must be above 0".into()));
                    }
                    Condition::Silent(Silence::For(after))
                }
                (None, Some(n)) if n.is_finite() && (1.0..=1000.0).contains(&n) => {
                    Condition::Silent(Silence::Intervals(n))
                }
                (None, Some(_)) => return Err(fail("`silent_intervals` must be 1 to 1000".into())),
                _ => {
                    return Err(fail(
                        "`host_silent` needs one of `silent_seconds` or `silent_intervals`".into(),
                    ))
                }
            }
        } else {
            let signal = Signal::parse(&self.metric).ok_or_else(|| {
                fail(format!(
                    "unknown metric `{}`; known: {}",
                    self.metric,
                    rule_metrics().join(", ")
                ))
            })?;
            if self.silent_seconds.is_some() || self.silent_intervals.is_some() {
                return Err(fail("`silent_*` belongs to `host_silent` rules".into()));
            }
            let (above, threshold) = match (self.above, self.below) {
                (Some(value), None) => (true, value),
                (None, Some(value)) => (false, value),
                _ => return Err(fail("give exactly one of `above` or `below`".into())),
            };
            if !threshold.is_finite() {
                return Err(fail("the threshold must be a finite number".into()));
            }
            Condition::Threshold {
                signal,
                aggregate: self.aggregate.unwrap_or(Aggregate::Avg),
                over: duration("over_seconds", self.over_seconds)?,
                above,
                threshold,
            }
        };
        let hosts = match &self.hosts {
            None => Hosts::All,
            Some(HostsSpec::Pattern(pattern)) if pattern == "*" => Hosts::All,
            Some(HostsSpec::Pattern(pattern)) if !pattern.is_empty() && pattern.len() <= 256 => {
                Hosts::Pattern(pattern.clone())
            }
            Some(HostsSpec::Names(names)) if !names.is_empty() && names.len() <= 10_000 => {
                Hosts::Names(names.iter().cloned().collect())
            }
            Some(_) => {
                return Err(fail(
                    "`hosts` must be \"*\", a pattern or a list of names".into(),
                ))
            }
        };
        if self.channels.len() > 16 {
            return Err(fail("at most 16 channels".into()));
        }
        Ok(Rule {
            condition,
            hosts,
            hold_for,
            repeat,
            source,
            spec: self,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> RuleSpec {
        serde_norway::from_str(yaml).expect("a rule spec")
    }

    #[test]
    fn threshold_rules_read_as_written() {
        let rule = spec("{name: cpu-hot, metric: cpu_load, over_seconds: 300, above: 90, for_seconds: 60, hosts: 'web-*'}")
            .check(RuleSource::Config)
            .unwrap();
        assert_eq!(rule.describe(), "avg(cpu_load over 5m) > 90");
        assert_eq!(rule.hold_for, Duration::from_secs(60));
        assert!(rule.hosts.matches("web-12") && !rule.hosts.matches("db-1"));
        let silent = spec("{name: down, metric: host_silent, silent_intervals: 5}")
            .check(RuleSource::Api)
            .unwrap();
        assert_eq!(silent.describe(), "no sample for 5 of its intervals");
    }

    #[test]
    fn bad_rules_name_the_field() {
        for (yaml, field) in [
            ("{name: a, metric: cpu, above: 1}", "unknown metric `cpu`"),
            ("{name: a, metric: cpu_load}", "`above` or `below`"),
            (
                "{name: a, metric: cpu_load, above: 1, below: 2}",
                "`above` or `below`",
            ),
            (
                "{name: a, metric: cpu_load, above: 1, over_seconds: -1}",
                "`over_seconds`",
            ),
            ("{name: a, metric: host_silent}", "`silent_seconds`"),
            (
                "{name: a, metric: host_silent, silent_seconds: 5, above: 1}",
                "not a threshold",
            ),
            ("{name: 'a b', metric: cpu_load, above: 1}", "name `a b`"),
            (
                "{name: a, metric: cpu_load, above: 1, repeat_seconds: 5}",
                "`repeat_seconds`",
            ),
        ] {
            let error = spec(yaml).check(RuleSource::Api).unwrap_err().to_string();
            assert!(error.contains(field), "{yaml}: {error}");
        }
    }

    #[test]
    fn patterns_match_like_a_shell() {
        let matches = host_pattern::matches;
        assert!(matches("web-*", "web-1"));
        assert!(matches("*-db-?", "eu-db-1"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(!matches("web-?", "web-10"));
        assert!(matches("*", ""));
    }
}
