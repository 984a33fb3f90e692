//! Alert evaluation in memory: committed samples go into short per-host
//! windows as they arrive ([`Evaluator::observe`]); every tick each rule is
//! checked against each host it watches from those windows alone
//! ([`Evaluator::tick`]), never by a query per host. Pure: no I/O, no
//! clock; the service feeds it and stores what it decides.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sysmon_core::metrics::charted_values;
use sysmon_core::{Sample, UnixTime};

use super::rules::{Condition, Rule, Signal, Silence};
use super::window::Window;
use crate::store::{ClientId, ClientSample};

/// What a window holds: a signal over a span. Rules that read the same
/// signal over the same span share one.
type WindowKey = (Signal, Duration);
/// A host's values count while it sent within this many of its intervals
/// (or the rule's window, or a minute, whichever is longest); after that a
/// threshold rule has no data for it and keeps its state.
const FRESH_INTERVALS: f64 = 3.0;
const MIN_FRESH: Duration = Duration::from_secs(60);
/// Samples timed further ahead of the server's clock than this stay out
/// of the windows (they would push every real point out until the clock
/// caught up with them).
const MAX_AHEAD: Duration = Duration::from_secs(300);
/// The interval assumed for a host whose samples have not told it yet.
const UNKNOWN_INTERVAL: Duration = Duration::from_secs(60);

/// Where an alert of one rule for one host stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Ok,
    Pending,
    Firing,
    Resolved,
}

impl AlertState {
    pub fn label(self) -> &'static str {
        match self {
            AlertState::Ok => "ok",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }

    pub fn parse(label: &str) -> Option<AlertState> {
        [
            AlertState::Ok,
            AlertState::Pending,
            AlertState::Firing,
            AlertState::Resolved,
        ]
        .into_iter()
        .find(|state| state.label() == label)
    }
}

/// One (rule, host)'s state as it is kept and stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    pub state: AlertState,
    /// When it entered this state.
    pub since: UnixTime,
    /// The value last evaluated (none for silence).
    pub value: Option<f64>,
    /// When a notification was last sent for it (firing or repeat).
    pub notified_at: Option<UnixTime>,
}

/// A change the evaluator decided; the service stores it and, for
/// `notify`, sends it.
#[derive(Debug, Clone)]
pub struct Transition {
    pub rule: Arc<Rule>,
    pub client: ClientId,
    pub host: String,
    pub from: AlertState,
    pub standing: Standing,
    /// Notified: firing (first or repeat) and resolved; pending and its
    /// cancellation are history only.
    pub notify: bool,
    pub repeat: bool,
}

/// What the evaluator knows of one host.
#[derive(Debug, Default)]
struct HostWindow {
    name: Option<String>,
    /// When the server last got a sample of it (its own clock).
    received_at: Option<UnixTime>,
    /// When the server learnt of it without a sample (its start): silence
    /// is not judged, either way, until a rule's wait has passed since.
    known_since: Option<UnixTime>,
    /// Times of its newest samples, newest last, for its interval.
    recent: VecDeque<i64>,
    /// Its newest sample as the store last told (see
    /// [`Evaluator::know_host`]), so a rule made later starts from it.
    latest: Option<Sample>,
    /// Its window of each of the evaluator's [`WindowKey`]s, by index;
    /// `None` until it sends the signal.
    windows: Vec<Option<Window>>,
}

impl HostWindow {
    fn interval(&self) -> Option<Duration> {
        self.recent
            .iter()
            .zip(self.recent.iter().skip(1))
            .map(|(a, b)| b - a)
            .filter(|gap| *gap > 0)
            .min()
            .map(|gap| Duration::from_micros(gap as u64))
    }

    /// Windows for `keys`, each from the newest stored sample when the
    /// host has one.
    fn seeded_windows(&self, keys: &[WindowKey]) -> Vec<Option<Window>> {
        keys.iter()
            .map(|&(signal, span)| {
                let latest = self.latest.as_ref()?;
                let value = signal_value(signal, latest)?;
                Some(Window::new(span, latest.time.micros(), value))
            })
            .collect()
    }
}

pub struct Evaluator {
    rules: Vec<Arc<Rule>>,
    /// Every (signal, span) a rule reads, those of a signal together, in
    /// the order of each host's windows.
    windows: Vec<WindowKey>,
    /// Per rule (in order), the index of its window (none for silence).
    rule_windows: Vec<Option<usize>>,
    hosts: HashMap<ClientId, HostWindow>,
    standings: HashMap<(Arc<str>, ClientId), Standing>,
    /// Hosts seen in samples whose names are not known yet.
    unnamed: HashSet<ClientId>,
    /// Rules were set since the last tick: alerts of hosts a rule no
    /// longer watches are released then (not every tick).
    rules_changed: bool,
}

impl Evaluator {
    pub fn new(rules: Vec<Arc<Rule>>) -> Evaluator {
        let mut evaluator = Evaluator {
            rules: Vec::new(),
            windows: Vec::new(),
            rule_windows: Vec::new(),
            hosts: HashMap::new(),
            standings: HashMap::new(),
            unnamed: HashSet::new(),
            rules_changed: false,
        };
        evaluator.set_rules(rules);
        evaluator
    }

    /// Replaces the rules; the states of rules that remain are kept, those
    /// of removed rules dropped.
    pub fn set_rules(&mut self, rules: Vec<Arc<Rule>>) {
        let mut windows: Vec<WindowKey> = Vec::new();
        for rule in &rules {
            if let Condition::Threshold { signal, over, .. } = rule.condition {
                if !windows.contains(&(signal, over)) {
                    windows.push((signal, over));
                }
            }
        }
        let signals: Vec<Signal> = windows.iter().map(|(signal, _)| *signal).collect();
        windows.sort_by_key(|(signal, _)| signals.iter().position(|first| first == signal));
        let names: HashSet<&str> = rules.iter().map(|rule| rule.name()).collect();
        self.standings
            .retain(|(rule, _), _| names.contains(&**rule));
        // A window no rule read before starts from each host's newest
        // sample, and is judged once it has seen its span.
        for host in self.hosts.values_mut() {
            let mut kept = std::mem::take(&mut host.windows);
            let mut seeded = host.seeded_windows(&windows);
            host.windows = windows
                .iter()
                .zip(seeded.iter_mut())
                .map(
                    |(key, seed)| match self.windows.iter().position(|old| old == key) {
                        Some(at) => kept.get_mut(at).and_then(Option::take),
                        None => seed.take(),
                    },
                )
                .collect();
        }
        self.rule_windows = rules
            .iter()
            .map(|rule| match rule.condition {
                Condition::Threshold { signal, over, .. } => {
                    windows.iter().position(|key| *key == (signal, over))
                }
                Condition::Silent(_) => None,
            })
            .collect();
        self.windows = windows;
        self.rules = rules;
        self.rules_changed = true;
    }

    pub fn rules(&self) -> &[Arc<Rule>] {
        &self.rules
    }

    /// A host as the store knows it: its name, its newest sample (where a
    /// rule made later starts), and (after a restart) when it last sent and
    /// its interval, so silence counts from then, but never from before
    /// `known_since` (the server's start: hosts get to reconnect after a
    /// restart before they count as silent).
    pub fn know_host(
        &mut self,
        client: ClientId,
        name: &str,
        latest: Option<Sample>,
        interval: Option<Duration>,
        known_since: UnixTime,
    ) {
        let last_seen = latest.as_ref().map(|sample| sample.time);
        let host = self.hosts.entry(client).or_default();
        host.name = Some(name.to_owned());
        host.latest = latest;
        self.unnamed.remove(&client);
        if host.received_at.is_none() {
            host.received_at = last_seen;
            host.known_since = Some(known_since);
            // Windows start from the stored sample, as a rule made later.
            host.windows = host.seeded_windows(&self.windows);
            if let (Some(last), Some(interval)) = (last_seen, interval) {
                let gap = interval.as_micros() as i64;
                host.recent = VecDeque::from([last.micros() - gap, last.micros()]);
            }
        }
    }

    /// Forgets a host (removed): its windows and states.
    pub fn forget_host(&mut self, client: ClientId) {
        self.hosts.remove(&client);
        self.unnamed.remove(&client);
        self.standings.retain(|(_, kept), _| *kept != client);
    }

    /// Silence is judged, either way, only once a rule's wait has passed
    /// since `now` (a server taking the lead: hosts that sent through
    /// others are known to it from the store alone).
    pub fn settle_all(&mut self, now: UnixTime) {
        for host in self.hosts.values_mut() {
            host.known_since = Some(now);
        }
    }

    /// The host sent no earlier than `time` (its newest stored sample).
    pub fn seen_no_earlier(&mut self, client: ClientId, time: UnixTime) {
        if let Some(host) = self.hosts.get_mut(&client) {
            if host.received_at.is_none_or(|seen| seen < time) {
                host.received_at = Some(time);
            }
        }
    }

    /// A host's name as a stored transition tells it (a follower learns
    /// names from the leader's transitions, not from samples).
    pub fn name_host(&mut self, client: ClientId, name: &str) {
        let host = self.hosts.entry(client).or_default();
        if host.name.as_deref() != Some(name) {
            host.name = Some(name.to_owned());
        }
        self.unnamed.remove(&client);
    }

    /// Forgets every state (before they are all read again).
    pub fn forget_standings(&mut self) {
        self.standings.clear();
    }

    /// Hosts seen in samples whose names the service should look up.
    pub fn take_unnamed(&mut self) -> Vec<ClientId> {
        self.unnamed.drain().collect()
    }

    pub fn known_hosts(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.hosts.keys().copied()
    }

    /// States read back after a restart, so nothing is notified again;
    /// false (and nothing kept) for a rule this evaluator does not have.
    pub fn restore(&mut self, rule: &str, client: ClientId, standing: Standing) -> bool {
        let Some(rule) = self.rules.iter().find(|kept| kept.name() == rule) else {
            return false;
        };
        self.standings
            .insert((Arc::from(rule.name()), client), standing);
        true
    }

    pub fn standings(&self) -> impl Iterator<Item = (&str, ClientId, &Standing)> {
        self.standings
            .iter()
            .map(|((rule, client), standing)| (&**rule, *client, standing))
    }

    pub fn host_name(&self, client: ClientId) -> Option<&str> {
        self.hosts.get(&client)?.name.as_deref()
    }

    /// Newly committed samples, received at `now`.
    pub fn observe(&mut self, samples: &[ClientSample], now: UnixTime) {
        for row in samples {
            let host = self.hosts.entry(row.client).or_default();
            if host.name.is_none() {
                self.unnamed.insert(row.client);
            }
            host.received_at = Some(now);
            let time_us = row.sample.time.micros();
            if time_us > now.micros().saturating_add(MAX_AHEAD.as_micros() as i64) {
                continue;
            }
            // Back-fills land in place; the newest three times stay.
            let at = host.recent.partition_point(|&kept| kept < time_us);
            if host.recent.get(at) != Some(&time_us) {
                host.recent.insert(at, time_us);
                while host.recent.len() > 3 {
                    host.recent.pop_front();
                }
            }
            host.windows.resize_with(self.windows.len(), || None);
            // Rules reading one signal over different spans share its value.
            let mut last_signal: Option<(Signal, Option<f64>)> = None;
            for (&(signal, span), window) in self.windows.iter().zip(host.windows.iter_mut()) {
                let value = match last_signal {
                    Some((kept, value)) if kept == signal => value,
                    _ => signal_value(signal, &row.sample),
                };
                last_signal = Some((signal, value));
                let Some(value) = value else {
                    continue;
                };
                match window {
                    Some(window) => window.add(time_us, value),
                    None => *window = Some(Window::new(span, time_us, value)),
                }
            }
        }
    }

    /// Checks every rule against every host it watches at `now`; returns
    /// the transitions, each already applied.
    pub fn tick(&mut self, now: UnixTime) -> Vec<Transition> {
        let mut transitions = Vec::new();
        for (rule, &window) in self.rules.iter().zip(&self.rule_windows) {
            let key_rule: Arc<str> = Arc::from(rule.name());
            for (&client, host) in &self.hosts {
                let Some(name) = host.name.as_deref() else {
                    continue;
                };
                if !rule.hosts.matches(name) {
                    continue;
                }
                let Some((holds, value)) = verdict(rule, host, window, now) else {
                    continue;
                };
                let key = (key_rule.clone(), client);
                let current = self.standings.get(&key).copied().unwrap_or(Standing {
                    state: AlertState::Ok,
                    since: now,
                    value: None,
                    notified_at: None,
                });
                let Some((next, notify, repeat)) = step(rule, &current, holds, value, now) else {
                    if let Some(kept) = self.standings.get_mut(&key) {
                        kept.value = value;
                    }
                    continue;
                };
                self.standings.insert(key, next);
                transitions.push(Transition {
                    rule: rule.clone(),
                    client,
                    host: name.to_owned(),
                    from: current.state,
                    standing: next,
                    notify,
                    repeat,
                });
            }
        }
        if std::mem::take(&mut self.rules_changed) {
            self.release_unwatched(now, &mut transitions);
        }
        transitions
    }

    /// Alerts of hosts their rule no longer watches (its `hosts` narrowed):
    /// a firing one resolves (notified, so nobody waits on it), a pending
    /// one returns to ok, and neither is judged again.
    fn release_unwatched(&mut self, now: UnixTime, transitions: &mut Vec<Transition>) {
        let unwatched: Vec<(Arc<str>, ClientId)> = self
            .standings
            .keys()
            .filter(|(rule_name, client)| {
                let name = self.hosts.get(client).and_then(|host| host.name.as_deref());
                let rule = self.rules.iter().find(|rule| rule.name() == &**rule_name);
                match (rule, name) {
                    (Some(rule), Some(name)) => !rule.hosts.matches(name),
                    _ => false,
                }
            })
            .cloned()
            .collect();
        for key in unwatched {
            let Some(current) = self.standings.remove(&key) else {
                continue;
            };
            let (state, notify) = match current.state {
                AlertState::Firing => (AlertState::Resolved, true),
                AlertState::Pending => (AlertState::Ok, false),
                AlertState::Ok | AlertState::Resolved => continue,
            };
            let (Some(rule), Some(host)) = (
                self.rules.iter().find(|rule| rule.name() == &*key.0),
                self.host_name(key.1),
            ) else {
                continue;
            };
            transitions.push(Transition {
                rule: rule.clone(),
                client: key.1,
                host: host.to_owned(),
                from: current.state,
                standing: Standing {
                    state,
                    since: now,
                    value: current.value,
                    notified_at: None,
                },
                notify,
                repeat: false,
            });
        }
    }
}

/// The next standing when it changes (or a notification is due), with
/// whether to notify and whether it is a repeat; `None`: nothing to do.
fn step(
    rule: &Rule,
    current: &Standing,
    holds: bool,
    value: Option<f64>,
    now: UnixTime,
) -> Option<(Standing, bool, bool)> {
    let enter = |state: AlertState, notified_at: Option<UnixTime>| Standing {
        state,
        since: now,
        value,
        notified_at,
    };
    match (current.state, holds) {
        (AlertState::Ok | AlertState::Resolved, true) if rule.hold_for.is_zero() => {
            Some((enter(AlertState::Firing, Some(now)), true, false))
        }
        (AlertState::Ok | AlertState::Resolved, true) => {
            Some((enter(AlertState::Pending, None), false, false))
        }
        (AlertState::Pending, true) if elapsed(current.since, now) >= rule.hold_for => {
            Some((enter(AlertState::Firing, Some(now)), true, false))
        }
        (AlertState::Pending, false) => Some((enter(AlertState::Ok, None), false, false)),
        (AlertState::Firing, false) => Some((enter(AlertState::Resolved, None), true, false)),
        (AlertState::Firing, true) => {
            let repeat = rule.repeat?;
            let last = current.notified_at.unwrap_or(current.since);
            (elapsed(last, now) >= repeat).then(|| {
                let standing = Standing {
                    notified_at: Some(now),
                    value,
                    ..*current
                };
                (standing, true, true)
            })
        }
        _ => None,
    }
}

fn elapsed(from: UnixTime, to: UnixTime) -> Duration {
    Duration::from_micros(to.micros().saturating_sub(from.micros()).max(0) as u64)
}

/// Whether the rule's condition holds for the host now, and the value it
/// judged; `None` when there is nothing to judge (no fresh data).
fn verdict(
    rule: &Rule,
    host: &HostWindow,
    window: Option<usize>,
    now: UnixTime,
) -> Option<(bool, Option<f64>)> {
    let interval = host.interval().unwrap_or(UNKNOWN_INTERVAL);
    let since_received = elapsed(host.received_at?, now);
    match &rule.condition {
        Condition::Silent(silence) => {
            let after = match *silence {
                Silence::For(after) => after,
                Silence::Intervals(n) => interval.mul_f64(n),
            };
            let settling = host
                .known_since
                .is_some_and(|since| elapsed(since, now) <= after);
            if since_received > after && settling {
                // Just restarted: hosts get to reconnect first, and an alert
                // restored firing is not resolved by the restart either.
                return None;
            }
            Some((since_received > after, Some(since_received.as_secs_f64())))
        }
        Condition::Threshold {
            aggregate,
            over,
            above,
            threshold,
            ..
        } => {
            let fresh = interval.mul_f64(FRESH_INTERVALS).max(*over).max(MIN_FRESH);
            if since_received > fresh {
                return None;
            }
            let window = host.windows.get(window?)?.as_ref()?;
            let newest = window.newest_us();
            // A signal the host stopped sending (while it sends others) is
            // not judged on its last value forever.
            let host_newest = host.recent.back().copied().unwrap_or(newest);
            if host_newest.saturating_sub(newest) > fresh.as_micros() as i64 {
                return None;
            }
            // After a restart or for a new rule, not on a few samples:
            // the state held (or restored) stays until the window is full.
            if !window.is_full(host.interval().unwrap_or(Duration::ZERO)) {
                return None;
            }
            let value = window.aggregate(*aggregate);
            let holds = if *above {
                value > *threshold
            } else {
                value < *threshold
            };
            Some((holds, Some(value)))
        }
    }
}

/// A signal's value in one sample, when the sample has what it needs.
pub fn signal_value(signal: Signal, sample: &Sample) -> Option<f64> {
    let share = |used: Option<u64>, total: Option<u64>| match (used, total) {
        (Some(used), Some(total)) if total > 0 => Some(100.0 * used as f64 / total as f64),
        _ => None,
    };
    let extended = sample.extended.as_deref();
    match signal {
        Signal::Metric(index) => charted_values(sample)[index],
        Signal::MemoryUsedPercent => {
            let extended = extended?;
            share(extended.memory_used_bytes, extended.memory_total_bytes)
        }
        Signal::SwapUsedPercent => {
            let extended = extended?;
            share(extended.swap_used_bytes, extended.swap_total_bytes)
        }
        Signal::FilesystemUsedPercent => extended?
            .filesystems
            .iter()
            .filter_map(|fs| share(Some(fs.used_bytes), Some(fs.total_bytes)))
            .reduce(f64::max),
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{RuleSource, RuleSpec};
    use super::*;

    fn rule(yaml: &str) -> Arc<Rule> {
        let spec: RuleSpec = serde_norway::from_str(yaml).unwrap();
        Arc::new(spec.check(RuleSource::Config).unwrap())
    }

    fn at(seconds: i64) -> UnixTime {
        UnixTime::from_micros(seconds * 1_000_000)
    }

    fn cpu(client: i64, seconds: i64, value: f64) -> ClientSample {
        ClientSample {
            client: ClientId(client),
            sample: Sample {
                time: at(seconds),
                cpu_load: Some(value),
                mem: None,
                storage: None,
                extended: None,
            },
        }
    }

    fn states(transitions: &[Transition]) -> Vec<(&str, AlertState, bool)> {
        transitions
            .iter()
            .map(|t| (t.host.as_str(), t.standing.state, t.notify))
            .collect()
    }

    #[test]
    fn a_threshold_goes_pending_fires_and_resolves_once_each() {
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: hot, metric: cpu_load, over_seconds: 20, above: 90, for_seconds: 20}",
        )]);
        evaluator.know_host(ClientId(1), "web-1", None, None, at(0));
        let mut all = Vec::new();
        for s in 0..=100 {
            let value = if (10..70).contains(&s) { 95.0 } else { 10.0 };
            evaluator.observe(&[cpu(1, s, value)], at(s));
            all.extend(evaluator.tick(at(s)));
        }
        assert_eq!(
            states(&all),
            [
                ("web-1", AlertState::Pending, false),
                ("web-1", AlertState::Firing, true),
                ("web-1", AlertState::Resolved, true)
            ]
        );
        // Pending once the 20 s average passed 90 (at 29 s: 19 of 20 at 95
        // and one 10 average 90.75... the first second above 90).
        assert!(
            all[0].standing.since > at(20) && all[0].standing.since < at(35),
            "{all:?}"
        );
        assert_eq!(
            elapsed(all[0].standing.since, all[1].standing.since),
            Duration::from_secs(20)
        );
    }

    #[test]
    fn silence_counts_from_the_last_sample_and_in_intervals() {
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: down, metric: host_silent, silent_intervals: 3}",
        )]);
        evaluator.know_host(ClientId(1), "a", None, None, at(0));
        for s in [0, 10, 20] {
            evaluator.observe(&[cpu(1, s, 1.0)], at(s));
        }
        assert!(evaluator.tick(at(49)).is_empty(), "29 s: under 3 × 10 s");
        assert_eq!(
            states(&evaluator.tick(at(51))),
            [("a", AlertState::Firing, true)]
        );
        evaluator.observe(&[cpu(1, 52, 1.0)], at(52));
        assert_eq!(
            states(&evaluator.tick(at(53))),
            [("a", AlertState::Resolved, true)]
        );
    }

    #[test]
    fn a_restored_firing_alert_is_not_notified_again_and_repeats_when_asked() {
        let firing = Standing {
            state: AlertState::Firing,
            since: at(0),
            value: Some(99.0),
            notified_at: Some(at(0)),
        };
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: hot, metric: cpu_load, above: 90, repeat_seconds: 60}",
        )]);
        evaluator.know_host(ClientId(1), "a", None, None, at(0));
        evaluator.restore("hot", ClientId(1), firing);
        evaluator.observe(&[cpu(1, 30, 99.0)], at(30));
        assert!(
            evaluator.tick(at(30)).is_empty(),
            "still firing: nothing new"
        );
        evaluator.observe(&[cpu(1, 61, 99.0)], at(61));
        let repeat = evaluator.tick(at(61));
        assert_eq!(states(&repeat), [("a", AlertState::Firing, true)]);
        assert!(repeat[0].repeat);
        assert_eq!(repeat[0].standing.since, at(0), "the alert started then");
    }

    #[test]
    fn a_rule_made_later_starts_from_the_newest_sample() {
        let mut evaluator = Evaluator::new(Vec::new());
        evaluator.know_host(ClientId(1), "a", Some(cpu(1, 0, 99.0).sample), None, at(0));
        evaluator.set_rules(vec![rule("{name: hot, metric: cpu_load, above: 90}")]);
        assert_eq!(
            states(&evaluator.tick(at(1))),
            [("a", AlertState::Firing, true)]
        );
    }

    #[test]
    fn after_a_restart_silence_waits_for_hosts_to_reconnect() {
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: down, metric: host_silent, silent_seconds: 30}",
        )]);
        // Last sample at 0, the server back at 100.
        evaluator.know_host(ClientId(1), "a", Some(cpu(1, 0, 1.0).sample), None, at(100));
        evaluator.know_host(ClientId(2), "b", Some(cpu(2, 0, 1.0).sample), None, at(100));
        evaluator.restore(
            "down",
            ClientId(2),
            Standing {
                state: AlertState::Firing,
                since: at(40),
                value: None,
                notified_at: Some(at(40)),
            },
        );
        assert!(
            evaluator.tick(at(110)).is_empty(),
            "neither fired nor resolved by the restart"
        );
        // b came back: resolved (once, by its sample); a did not: firing.
        evaluator.observe(&[cpu(2, 111, 1.0)], at(111));
        let ticked = evaluator.tick(at(131));
        let mut after = states(&ticked);
        after.sort_by_key(|(host, _, _)| *host);
        assert_eq!(
            after,
            [
                ("a", AlertState::Firing, true),
                ("b", AlertState::Resolved, true)
            ]
        );
        assert!(evaluator.tick(at(132)).is_empty());
    }

    #[test]
    fn after_a_restart_a_window_is_judged_once_it_has_filled_again() {
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: hot, metric: cpu_load, over_seconds: 300, above: 90}",
        )]);
        // Firing before the restart at 1,000 s; 10 s samples.
        evaluator.know_host(
            ClientId(1),
            "a",
            Some(cpu(1, 990, 99.0).sample),
            Some(Duration::from_secs(10)),
            at(1_000),
        );
        evaluator.restore(
            "hot",
            ClientId(1),
            Standing {
                state: AlertState::Firing,
                since: at(500),
                value: Some(99.0),
                notified_at: Some(at(500)),
            },
        );
        // One cool sample is not five minutes of them: still firing.
        let mut ticked = Vec::new();
        for s in (1_000..1_280).step_by(10) {
            evaluator.observe(&[cpu(1, s, 10.0)], at(s));
            ticked.extend(evaluator.tick(at(s)));
        }
        assert!(ticked.is_empty(), "{ticked:?}");
        // Five minutes after the sample it started from: judged, resolved.
        evaluator.observe(&[cpu(1, 1_280, 10.0)], at(1_280));
        assert_eq!(
            states(&evaluator.tick(at(1_280))),
            [("a", AlertState::Resolved, true)]
        );
    }

    #[test]
    fn stale_data_and_unwatched_hosts_change_nothing() {
        let mut evaluator = Evaluator::new(vec![rule(
            "{name: hot, metric: cpu_load, above: 90, hosts: 'web-*'}",
        )]);
        evaluator.know_host(ClientId(1), "web-1", None, None, at(0));
        evaluator.know_host(ClientId(2), "db-1", None, None, at(0));
        evaluator.observe(&[cpu(1, 0, 99.0), cpu(2, 0, 99.0), cpu(3, 0, 99.0)], at(0));
        assert_eq!(evaluator.take_unnamed(), [ClientId(3)]);
        assert_eq!(
            states(&evaluator.tick(at(1))),
            [("web-1", AlertState::Firing, true)]
        );
        // Silent for ten minutes: no data, so no resolution either.
        assert!(evaluator.tick(at(600)).is_empty());
    }

    #[test]
    fn narrowing_a_rule_releases_the_hosts_it_no_longer_watches() {
        let mut evaluator = Evaluator::new(vec![
            rule("{name: hot, metric: cpu_load, above: 90, hosts: 'web-*'}"),
            rule("{name: warm, metric: cpu_load, above: 50, for_seconds: 60, hosts: 'web-*'}"),
        ]);
        evaluator.know_host(ClientId(1), "web-1", None, None, at(0));
        evaluator.know_host(ClientId(2), "web-2", None, None, at(0));
        evaluator.observe(&[cpu(1, 0, 99.0), cpu(2, 0, 99.0)], at(0));
        assert_eq!(evaluator.tick(at(1)).len(), 4, "two firing, two pending");
        evaluator.set_rules(vec![
            rule("{name: hot, metric: cpu_load, above: 90, hosts: [web-2]}"),
            rule("{name: warm, metric: cpu_load, above: 50, for_seconds: 60, hosts: [web-2]}"),
        ]);
        let mut released: Vec<_> = evaluator
            .tick(at(2))
            .iter()
            .map(|t| {
                (
                    t.rule.name().to_owned(),
                    t.host.clone(),
                    t.standing.state,
                    t.notify,
                )
            })
            .collect();
        released.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            released,
            [
                ("hot".into(), "web-1".into(), AlertState::Resolved, true),
                ("warm".into(), "web-1".into(), AlertState::Ok, false),
            ]
        );
        assert!(evaluator.tick(at(3)).is_empty(), "released once");
        assert_eq!(evaluator.standings().count(), 2, "web-2 still judged");
    }
}
