//! Alerts: rules evaluated in memory from the ingest feed, every change of
//! a (rule, host) stored with its notifications in one transaction, and
//! the notifications sent by a task of their own, with retries, so that a
//! slow or failing channel never holds up evaluation or ingest.
//!
//! - [`rules`]: what a rule is and how one is written;
//! - [`evaluate`]: the in-memory evaluator (pure);
//! - [`window`]: a host's bucketed window of one signal over one span;
//! - [`channels`]: where notifications go and what each kind is sent;
//! - here: the service that feeds, ticks, stores and delivers.

pub mod channels;
pub mod evaluate;
pub mod rules;
pub mod window;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use sysmon_core::UnixTime;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use self::channels::{ChannelKind, ChannelSpec, Notification};
use self::evaluate::{AlertState, Evaluator, Standing, Transition};
use self::rules::{HostsSpec, Rule, RuleSource, RuleSpec, MAX_RULES};
use super::auth::Principal;
use super::ingest::Committed;
use super::leadership::Leadership;
use super::metrics::Metrics;
use crate::error::{Error, Result};
use crate::store::{
    AlertEvent, ClientId, Delivery, DeliveryOutcome, NewAlertEvent, Store, StoredStanding,
};

/// Commits the evaluator's feed holds before it drops (and counts) one: a
/// few seconds of a busy server's commits.
const FEED_CAPACITY: usize = 4_096;
/// Transitions kept for storing when the database is down, at most.
const MAX_UNRECORDED: usize = 10_000;
/// Deliveries sent at once, at most.
const DELIVERY_BATCH: i64 = 50;
/// How often the names of hosts are read again (new and removed hosts).
const HOSTS_REFRESH: Duration = Duration::from_secs(60);
/// How often history older than `alerts.history_days` is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3_600);
/// Events deleted per transaction when history is pruned.
const PRUNE_CHUNK: i64 = 1_000;
/// A claimed delivery whose outcome was never recorded is tried again
/// this long after its send timeout.
const CLAIM_MARGIN: Duration = Duration::from_secs(60);
/// Transitions a follower reads per statement.
const FOLLOW_BATCH: i64 = 1_000;

/// Where a follower is in the leader's transitions.
#[derive(Default)]
struct Following {
    /// This server led at its last tick.
    was_leading: bool,
    /// The newest event applied.
    last_event: i64,
    /// When every stored state was last read.
    whole_read_at: Option<Instant>,
}

/// `alerts:` in the YAML file.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    pub rules: Vec<RuleSpec>,
    pub channels: Vec<ChannelSpec>,
    /// How often every rule is checked against every host.
    pub evaluation_interval: Duration,
    /// The first retry of a failed delivery waits this long; each next
    /// one three times longer.
    pub retry_base: Duration,
    /// Attempts at a delivery before it is given up (recorded as failed).
    pub max_attempts: u32,
    /// How long a channel may take to answer.
    pub send_timeout: Duration,
    /// The dashboard's address as people reach it, for links in
    /// notifications; `http://<bind>` when unset.
    pub public_url: Option<String>,
    /// How long transitions and their deliveries are kept; `None`: forever.
    pub history: Option<Duration>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            channels: Vec::new(),
            evaluation_interval: Duration::from_secs(10),
            retry_base: Duration::from_secs(10),
            max_attempts: 6,
            send_timeout: Duration::from_secs(10),
            public_url: None,
            history: Some(Duration::from_secs(90 * 86_400)),
        }
    }
}

/// A rule as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RuleView {
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// `config` (read-only here) or `api`.
    pub source: RuleSource,
    /// The condition as people read it.
    pub condition: String,
}

/// A (rule, host) that is not `ok`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveAlert {
    pub rule: String,
    /// What the rule watches (a metric's name, or `host_silent`), so a
    /// chart of it can draw the threshold.
    pub metric: String,
    pub host: String,
    pub state: AlertState,
    pub severity: String,
    pub condition: String,
    /// Unix seconds it entered this state.
    pub since: f64,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
}

/// A channel as the API shows it: never its secret or token.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChannelView {
    pub name: String,
    pub kind: ChannelKind,
}

pub struct Alerts {
    store: Arc<dyn Store>,
    evaluator: Mutex<Evaluator>,
    config_rules: Vec<Arc<Rule>>,
    channels: Vec<ChannelSpec>,
    config: AlertsConfig,
    link_base: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    /// Wakes the delivery task when transitions were stored.
    deliveries_due: Notify,
    /// Transitions the store could not take yet, oldest first.
    unrecorded: Mutex<Vec<NewAlertEvent>>,
    /// Rule changes one at a time: each stores, then reloads every rule.
    rule_changes: tokio::sync::Mutex<()>,
    /// When this server started, or last took the lead: silence counts
    /// from no earlier.
    settled_from: Mutex<UnixTime>,
    /// Whether this server evaluates (several servers share a database).
    leadership: Arc<Leadership>,
    /// The API rules as last read, to skip reloading them unchanged.
    stored_rules: Mutex<Option<Vec<(String, String)>>>,
}

impl Alerts {
    /// Checks the configuration, reads the API rules and the stored states,
    /// and starts evaluating; returns the service, the feed ingest sends
    /// committed samples to, and its tasks.
    pub async fn start(
        store: Arc<dyn Store>,
        config: AlertsConfig,
        bind: &str,
        metrics: Arc<Metrics>,
        leadership: Arc<Leadership>,
        stop: CancellationToken,
    ) -> Result<(Arc<Alerts>, mpsc::Sender<Committed>, Vec<JoinHandle<()>>)> {
        let channels = checked_channels(&config.channels)?;
        let config_rules = config
            .rules
            .iter()
            .cloned()
            .map(|spec| spec.check(RuleSource::Config).map(Arc::new))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::Config(e.to_string()))?;
        check_unique(&config_rules)?;
        for rule in &config_rules {
            check_channels(rule, &channels).map_err(|e| Error::Config(e.to_string()))?;
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Config(format!("cannot make the alert HTTP client: {e}")))?;
        let link_base = config
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{bind}"))
            .trim_end_matches('/')
            .to_owned();
        let alerts = Arc::new(Alerts {
            store,
            evaluator: Mutex::new(Evaluator::new(Vec::new())),
            config_rules,
            channels,
            config,
            link_base,
            http,
            metrics,
            deliveries_due: Notify::new(),
            unrecorded: Mutex::new(Vec::new()),
            rule_changes: tokio::sync::Mutex::new(()),
            settled_from: Mutex::new(UnixTime::now()),
            leadership,
            stored_rules: Mutex::new(None),
        });
        alerts.reload_rules().await?;
        alerts.refresh_hosts().await?;
        let leading = alerts.leadership.is_leader();
        alerts.restore_standings(leading).await?;
        let (feed, receiver) = mpsc::channel(FEED_CAPACITY);
        let tasks = vec![
            tokio::spawn(alerts.clone().observe(receiver, stop.clone())),
            tokio::spawn(alerts.clone().evaluate(stop.clone())),
            tokio::spawn(alerts.clone().deliver(stop)),
        ];
        Ok((alerts, feed, tasks))
    }

    /// Config rules, then the stored API rules (one shadowed by a config
    /// rule of the same name is left out, with a warning).
    async fn reload_rules(&self) -> Result<()> {
        let stored = self.store.alert_rules().await?;
        {
            let mut loaded = self.stored_rules.lock();
            if loaded.as_ref() == Some(&stored) {
                return Ok(()); // as loaded last time
            }
            *loaded = Some(stored.clone());
        }
        let mut rules = self.config_rules.clone();
        for (name, text) in stored {
            if rules.iter().any(|rule| rule.name() == name) {
                tracing::warn!(rule = %name, "an API alert rule has the name of a config rule; the config rule applies");
                continue;
            }
            let parsed = serde_json::from_str::<RuleSpec>(&text)
                .map_err(|e| Error::BadRequest(e.to_string()))
                .and_then(|spec| spec.check(RuleSource::Api));
            match parsed {
                Ok(rule) => rules.push(Arc::new(rule)),
                Err(error) => tracing::error!(rule = %name, %error, "stored alert rule skipped"),
            }
        }
        self.evaluator.lock().set_rules(rules);
        Ok(())
    }

    /// Names (and, for hosts not seen yet, last samples) of every client;
    /// removed ones are forgotten.
    async fn refresh_hosts(&self) -> Result<()> {
        self.refresh_hosts_seen(None).await
    }

    /// [`Alerts::refresh_hosts`]; with `taking_over` (now), each host
    /// counts as sent no earlier than its newest stored sample (the samples
    /// other servers took did not reach this one while it followed).
    async fn refresh_hosts_seen(&self, taking_over: Option<UnixTime>) -> Result<()> {
        let overviews = self.store.client_overviews().await?;
        let mut evaluator = self.evaluator.lock();
        let present: HashSet<ClientId> = overviews.iter().map(|o| o.id).collect();
        let gone: Vec<ClientId> = evaluator
            .known_hosts()
            .filter(|client| !present.contains(client))
            .collect();
        for client in gone {
            evaluator.forget_host(client);
        }
        for overview in overviews {
            let last_seen = overview.latest.as_ref().map(|sample| sample.time);
            let interval = last_seen
                .zip(overview.previous.first())
                .map(|(last, before)| last.micros() - before.micros())
                .filter(|gap| *gap > 0)
                .map(|gap| Duration::from_micros(gap as u64));
            if let (Some(now), Some(last)) = (taking_over, last_seen) {
                let seen = UnixTime::from_micros(last.micros().min(now.micros()));
                evaluator.seen_no_earlier(overview.id, seen);
            }
            evaluator.know_host(
                overview.id,
                &overview.name,
                overview.latest,
                interval,
                *self.settled_from.lock(),
            );
        }
        Ok(())
    }

    /// The stored states of current rules, in place of those held; those
    /// of rules no longer declared are deleted when `prune` (the leader's
    /// to do).
    async fn restore_standings(&self, prune: bool) -> Result<()> {
        let stored = self.store.alert_standings().await?;
        let known: HashSet<String> = self
            .evaluator
            .lock()
            .rules()
            .iter()
            .map(|rule| rule.name().to_owned())
            .collect();
        let gone: HashSet<&str> = stored
            .iter()
            .map(|standing| standing.rule.as_str())
            .filter(|rule| !known.contains(*rule))
            .collect();
        for rule in gone.into_iter().filter(|_| prune) {
            tracing::info!(rule, "alerts: states of a rule no longer declared deleted");
            self.store.delete_alert_states(rule).await?;
        }
        let mut evaluator = self.evaluator.lock();
        // States deleted since (a removed host's) go too.
        evaluator.forget_standings();
        for standing in stored {
            let Some(state) = AlertState::parse(&standing.state) else {
                continue;
            };
            evaluator.restore(
                &standing.rule,
                ClientId(standing.client_id),
                Standing {
                    state,
                    since: UnixTime::from_micros(standing.since_us),
                    value: standing.value,
                    notified_at: standing.notified_at_us.map(UnixTime::from_micros),
                },
            );
        }
        Ok(())
    }

    async fn observe(
        self: Arc<Self>,
        mut feed: mpsc::Receiver<Committed>,
        stop: CancellationToken,
    ) {
        loop {
            let committed = tokio::select! {
                committed = feed.recv() => committed,
                _ = stop.cancelled() => None,
            };
            let Some(committed) = committed else {
                return;
            };
            // A follower keeps the samples it took itself (other servers'
            // only reach the leader): windows that cover their span when
            // it takes over are judged at once.
            self.evaluator.lock().observe(&committed, UnixTime::now());
        }
    }

    async fn evaluate(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.config.evaluation_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut refreshed = Instant::now();
        let mut pruned: Option<Instant> = None;
        let mut term = self.leadership.term();
        let mut following = Following::default();
        loop {
            tokio::select! {
                _ = ticks.tick() => {},
                _ = stop.cancelled() => return,
            }
            let leading = self.lead_this_tick(&mut term, &mut following).await;
            // Hourly; history kept for less than an hour, as often as kept.
            let prune_every = self
                .config
                .history
                .map_or(PRUNE_EVERY, |keep| keep.min(PRUNE_EVERY));
            if leading && pruned.is_none_or(|at| at.elapsed() >= prune_every) {
                self.prune_history().await;
                pruned = Some(Instant::now());
            }
            // No rules, nothing to do (not even reading the hosts).
            if self.evaluator.lock().rules().is_empty() {
                continue;
            }
            let unnamed = self.evaluator.lock().take_unnamed();
            if !unnamed.is_empty() || refreshed.elapsed() >= HOSTS_REFRESH {
                match self.refresh_hosts().await {
                    Ok(()) => refreshed = Instant::now(),
                    Err(error) => tracing::warn!(%error, "alerts: cannot read the hosts"),
                }
            }
            // Followers keep names and hosts current too (what
            // /api/v1/alerts shows), but only the leader judges.
            if !leading {
                continue;
            }
            // Tens of milliseconds for a large fleet: off the async workers.
            let alerts = self.clone();
            let ticked = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let transitions = alerts.evaluator.lock().tick(UnixTime::now());
                (transitions, started.elapsed())
            })
            .await;
            let Ok((transitions, took)) = ticked else {
                tracing::error!("alerts: an evaluation failed; the next tick tries again");
                continue;
            };
            self.metrics.alert_evaluated(took.as_secs_f64());
            self.record(transitions).await;
        }
    }

    /// Whether this server evaluates this tick. Every server follows the
    /// rules; only the leader reads every host's samples (through
    /// [`crate::services::peers`]), judges and notifies. The others follow
    /// the transitions it stores, so `/api/v1/alerts` answers alike on
    /// every server. A server that takes the lead starts as after a
    /// restart: from the stored states (a transition the previous leader
    /// recorded is not notified again) and each host's stored newest
    /// sample, judging a window once it has filled again.
    async fn lead_this_tick(&self, term: &mut u64, following: &mut Following) -> bool {
        let leading = self.leadership.is_leader();
        let current = self.leadership.term();
        let took_over = leading && current != *term;
        // Rules may change through the API of any server. Under the lock
        // of rule changes here, so an older read never lands after a
        // newer one.
        {
            let _one_at_a_time = self.rule_changes.lock().await;
            if let Err(error) = self.reload_rules().await {
                tracing::warn!(%error, "alerts: cannot read the rules");
            }
        }
        if took_over {
            // A takeover that could not read the store is tried again next
            // tick; this server does not judge meanwhile.
            let ready = self.take_over().await;
            if ready {
                *term = current;
            }
            following.was_leading = ready;
            return ready;
        }
        if !leading {
            if std::mem::take(&mut following.was_leading) {
                // What it judged but could not store is not the record:
                // read every stored state now.
                following.whole_read_at = None;
            }
            if let Err(error) = self.follow(following).await {
                tracing::warn!(%error, "alerts: cannot read the stored states");
            }
        }
        leading
    }

    /// This server leads from now. It keeps its windows (the samples it
    /// took itself while following, and everything if it led a moment ago:
    /// a window is judged once what it holds covers its span), reads the
    /// stored states and when each host last sent, and counts silence from
    /// no earlier than now. Transitions it decided in an earlier term and
    /// could not store are dropped: the stored states stand.
    async fn take_over(&self) -> bool {
        let now = UnixTime::now();
        *self.settled_from.lock() = now;
        self.evaluator.lock().settle_all(now);
        let stale = std::mem::take(&mut *self.unrecorded.lock());
        if !stale.is_empty() {
            tracing::warn!(
                dropped = stale.len(),
                "alerts: transitions decided in an earlier term and never stored are dropped"
            );
        }
        let restored = async {
            self.refresh_hosts_seen(Some(now)).await?;
            self.restore_standings(true).await
        };
        match restored.await {
            Ok(()) => {
                tracing::info!("alerts: this server evaluates now, from the stored states");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "alerts: cannot read the stored states to take over");
                false
            }
        }
    }

    /// A follower's tick: the transitions stored since the last one, and
    /// every stored state each [`HOSTS_REFRESH`] (deleted states, and any
    /// transition committed out of id order).
    async fn follow(&self, following: &mut Following) -> Result<()> {
        let whole = following
            .whole_read_at
            .is_none_or(|at| at.elapsed() >= HOSTS_REFRESH);
        if whole {
            // The newest id first: a transition stored meanwhile is read
            // again next tick, which changes nothing.
            let newest = self.store.alert_events(1, None).await?;
            self.restore_standings(false).await?;
            following.last_event = newest.first().map_or(0, |event| event.id);
            following.whole_read_at = Some(Instant::now());
            return Ok(());
        }
        loop {
            let events = self
                .store
                .alert_events_after(following.last_event, FOLLOW_BATCH)
                .await?;
            let mut evaluator = self.evaluator.lock();
            for event in &events {
                let Some(state) = AlertState::parse(&event.state) else {
                    continue;
                };
                evaluator.name_host(ClientId(event.client_id), &event.host);
                let known = evaluator.restore(
                    &event.rule,
                    ClientId(event.client_id),
                    Standing {
                        state,
                        since: UnixTime::from_micros(event.since_us),
                        value: event.value,
                        notified_at: None,
                    },
                );
                if !known {
                    // A rule made since this server read the rules (or
                    // one deleted): every state is read again next tick,
                    // after the rules.
                    following.whole_read_at = None;
                }
            }
            following.last_event = events.last().map_or(following.last_event, |event| event.id);
            if (events.len() as i64) < FOLLOW_BATCH {
                return Ok(());
            }
        }
    }

    /// Deletes history older than `alerts.history_days`.
    async fn prune_history(&self) {
        let Some(keep) = self.config.history else {
            return;
        };
        let before = now_us().saturating_sub(keep.as_micros().min(i64::MAX as u128) as i64);
        // In chunks with pauses, as removed clients are purged: the first
        // run after an upgrade may find months of history, and SQLite's
        // single writer is ingest's too.
        let mut deleted = 0;
        loop {
            match self.store.prune_alert_history(before, PRUNE_CHUNK).await {
                Ok(chunk) => {
                    deleted += chunk;
                    if chunk < PRUNE_CHUNK as u64 {
                        break;
                    }
                    tokio::time::sleep(crate::store::PURGE_PAUSE).await;
                }
                Err(error) => {
                    tracing::warn!(%error, "alerts: cannot delete old history");
                    break;
                }
            }
        }
        if deleted > 0 {
            tracing::info!(deleted, "alerts: old history deleted");
        }
    }

    /// Stores transitions (and any the store could not take before); kept
    /// for the next tick when it cannot.
    async fn record(&self, transitions: Vec<Transition>) {
        for transition in &transitions {
            tracing::info!(
                rule = %transition.rule.name(),
                host = %transition.host,
                from = transition.from.label(),
                to = transition.standing.state.label(),
                value = transition.standing.value,
                "alert"
            );
        }
        let mut events: Vec<NewAlertEvent> = std::mem::take(&mut *self.unrecorded.lock());
        events.extend(transitions.iter().map(new_event));
        if events.is_empty() {
            return;
        }
        match self.store.record_alert_events_as_leader(&events).await {
            Ok(None) => {
                // Another server leads now (this one learns of it at its
                // next check): it decides from what is stored.
                tracing::warn!(
                    dropped = events.len(),
                    "alerts: this server no longer holds the leader lock; its transitions are not stored"
                );
            }
            Ok(Some(removed)) => {
                // Removed on some server since this one read the hosts:
                // forgotten now, not at the next refresh.
                let mut evaluator = self.evaluator.lock();
                for client in removed {
                    evaluator.forget_host(ClientId(client));
                }
                drop(evaluator);
                self.deliveries_due.notify_one();
            }
            Err(error) => {
                tracing::error!(%error, waiting = events.len(), "alerts: transitions not stored yet; retrying next tick");
                let excess = events.len().saturating_sub(MAX_UNRECORDED);
                if excess > 0 {
                    tracing::error!(
                        dropped = excess,
                        "alerts: too many transitions waiting; the oldest are dropped"
                    );
                    events.drain(..excess);
                }
                *self.unrecorded.lock() = events;
            }
        }
    }

    async fn deliver(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = self.deliveries_due.notified() => {},
                _ = tokio::time::sleep(Duration::from_secs(1)) => {},
                _ = stop.cancelled() => return,
            }
            let now = now_us();
            let lease = (self.config.send_timeout + CLAIM_MARGIN).as_micros() as i64;
            let due = match self
                .store
                .claim_deliveries(now, now.saturating_add(lease), DELIVERY_BATCH)
                .await
            {
                Ok(due) => due,
                Err(error) => {
                    tracing::warn!(%error, "alerts: cannot read due notifications");
                    continue;
                }
            };
            let mut sends = tokio::task::JoinSet::new();
            for delivery in due {
                let alerts = self.clone();
                sends.spawn(async move { alerts.attempt(delivery).await });
            }
            // Shutdown does not wait for a slow channel: an attempt cut
            // short stays pending and is sent after the restart.
            loop {
                tokio::select! {
                    sent = sends.join_next() => if sent.is_none() { break },
                    _ = stop.cancelled() => return,
                }
            }
        }
    }

    /// One attempt at a delivery, its outcome recorded.
    async fn attempt(&self, delivery: Delivery) {
        let outcome = match self.notification_of(&delivery).await {
            Ok((channel, notification)) => {
                match channels::deliver(
                    &self.http,
                    channel,
                    &notification,
                    self.config.send_timeout,
                )
                .await
                {
                    Ok(()) => DeliveryOutcome::Sent { at_us: now_us() },
                    Err(error) => self.failed(&delivery, error),
                }
            }
            Err(error) => DeliveryOutcome::Failed {
                error: error.to_string(),
                retry_at_us: None,
            },
        };
        let label = match &outcome {
            DeliveryOutcome::Sent { .. } => "sent",
            DeliveryOutcome::Failed {
                retry_at_us: Some(_),
                ..
            } => "retrying",
            DeliveryOutcome::Failed { .. } => "failed",
        };
        self.metrics.alert_delivery(label);
        if let DeliveryOutcome::Failed { error, retry_at_us } = &outcome {
            tracing::warn!(channel = %delivery.channel, event = delivery.event_id, %error, retrying = retry_at_us.is_some(), "alert notification not delivered");
        }
        if let Err(error) = self.store.finish_delivery(delivery.id, &outcome).await {
            tracing::warn!(%error, delivery = delivery.id, "alerts: cannot record a delivery");
        }
    }

    /// A failed attempt: retried after `retry_base × 3^(attempts)`, until
    /// `max_attempts`.
    fn failed(&self, delivery: &Delivery, error: String) -> DeliveryOutcome {
        let attempts = u32::try_from(delivery.attempts).unwrap_or(0) + 1;
        let retry_at_us = (attempts < self.config.max_attempts).then(|| {
            let wait = self
                .config
                .retry_base
                .saturating_mul(3u32.saturating_pow(attempts - 1));
            now_us() + wait.as_micros().min(i64::MAX as u128 / 2) as i64
        });
        DeliveryOutcome::Failed { error, retry_at_us }
    }

    async fn notification_of(&self, delivery: &Delivery) -> Result<(&ChannelSpec, Notification)> {
        let channel = self.channel(&delivery.channel).ok_or_else(|| {
            Error::NotFoundNamed(format!(
                "no alert channel named `{}` (removed from the config?)",
                delivery.channel
            ))
        })?;
        let event = self
            .store
            .alert_event(delivery.event_id)
            .await?
            .ok_or_else(|| {
                Error::NotFoundNamed(format!("alert event {} is gone", delivery.event_id))
            })?;
        // Decided just before its host was removed: nobody wants it now.
        if self.store.event_host_removed(event.id).await? {
            return Err(Error::NotFoundNamed(format!(
                "host `{}` was removed before this was sent",
                event.host
            )));
        }
        Ok((channel, self.notification(&event)))
    }

    fn channel(&self, name: &str) -> Option<&ChannelSpec> {
        self.channels.iter().find(|channel| channel.name == name)
    }

    fn notification(&self, event: &AlertEvent) -> Notification {
        Notification {
            version: 1,
            rule: event.rule.clone(),
            host: event.host.clone(),
            state: event.state.clone(),
            severity: event.severity.clone(),
            condition: event.summary.clone(),
            value: event.value,
            threshold: event.threshold,
            since: event.since_us as f64 / 1e6,
            at: event.at_us as f64 / 1e6,
            repeat: event.repeat,
            link: self.host_link(&event.host),
        }
    }

    fn host_link(&self, host: &str) -> String {
        let encoded: String = host
            .bytes()
            .map(|byte| match byte {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (byte as char).to_string()
                }
                _ => format!("%{byte:02X}"),
            })
            .collect();
        format!("{}/#/host/{encoded}", self.link_base)
    }

    /// Whether this server judges rules (it leads, and some are declared),
    /// so the samples other servers commit are worth reading back (see
    /// [`crate::services::peers`]). A follower does not: it takes over as
    /// after a restart, from the stored states and samples.
    pub fn wants_peer_samples(&self) -> bool {
        self.leadership.is_leader() && !self.evaluator.lock().rules().is_empty()
    }

    // ---- what the routes ask

    /// Every (rule, host) not `ok` that the principal may read, firing
    /// first, then by rule and host.
    pub fn active(&self, principal: &Principal) -> Vec<ActiveAlert> {
        let evaluator = self.evaluator.lock();
        let mut active: Vec<ActiveAlert> = evaluator
            .standings()
            .filter(|(_, _, standing)| standing.state != AlertState::Ok)
            .filter_map(|(rule_name, client, standing)| {
                let host = evaluator.host_name(client)?;
                if !principal.may_read(host) {
                    return None;
                }
                let rule = evaluator
                    .rules()
                    .iter()
                    .find(|rule| rule.name() == rule_name)?;
                Some(ActiveAlert {
                    rule: rule_name.to_owned(),
                    metric: rule.spec.metric.clone(),
                    host: host.to_owned(),
                    state: standing.state,
                    severity: rule.severity().label().to_owned(),
                    condition: rule.describe(),
                    since: standing.since.as_secs_f64(),
                    value: standing.value,
                    threshold: rule.threshold(),
                })
            })
            .collect();
        active.sort_by(|a, b| {
            (a.state != AlertState::Firing, &a.rule, &a.host).cmp(&(
                b.state != AlertState::Firing,
                &b.rule,
                &b.host,
            ))
        });
        active
    }

    /// Transitions, newest first, of hosts the principal may read, with
    /// their deliveries.
    pub async fn history(
        &self,
        principal: &Principal,
        limit: i64,
        before: Option<i64>,
    ) -> Result<(Vec<(AlertEvent, Vec<Delivery>)>, Option<i64>)> {
        let page = self.store.alert_events(limit, before).await?;
        // From the page read, so a viewer's shorter page does not end the
        // history early.
        let next_before = (page.len() as i64 == limit)
            .then(|| page.last().map(|event| event.id))
            .flatten();
        let events: Vec<AlertEvent> = page
            .into_iter()
            .filter(|event| principal.may_read(&event.host))
            .collect();
        let ids: Vec<i64> = events.iter().map(|event| event.id).collect();
        let mut deliveries = self.store.deliveries_of(&ids).await?;
        let entries = events
            .into_iter()
            .map(|event| {
                let (mine, rest): (Vec<Delivery>, Vec<Delivery>) =
                    deliveries.drain(..).partition(|d| d.event_id == event.id);
                deliveries = rest;
                (event, mine)
            })
            .collect();
        Ok((entries, next_before))
    }

    /// Every rule; a rule's list of host names shows a viewer only the
    /// hosts they may read (the names of others are not theirs to learn).
    pub fn rules(&self, principal: &Principal) -> Vec<RuleView> {
        self.evaluator
            .lock()
            .rules()
            .iter()
            .map(|rule| {
                let mut view = view(rule);
                if let Some(HostsSpec::Names(names)) = &mut view.spec.hosts {
                    names.retain(|name| principal.may_read(name));
                }
                view
            })
            .collect()
    }

    pub fn channels(&self) -> Vec<ChannelView> {
        self.channels
            .iter()
            .map(|channel| ChannelView {
                name: channel.name.clone(),
                kind: channel.kind,
            })
            .collect()
    }

    /// Creates or replaces an API rule (admins).
    pub async fn put_rule(&self, principal: &Principal, spec: RuleSpec) -> Result<RuleView> {
        principal.check_admin()?;
        let rule = spec.check(RuleSource::Api)?;
        let _one_at_a_time = self.rule_changes.lock().await;
        if self
            .config_rules
            .iter()
            .any(|kept| kept.name() == rule.name())
        {
            return Err(Error::Forbidden(format!(
                "alert rule `{}` is declared in the config file; change it there",
                rule.name()
            )));
        }
        check_channels(&rule, &self.channels)?;
        let full = {
            let evaluator = self.evaluator.lock();
            let rules = evaluator.rules();
            rules.len() >= MAX_RULES && !rules.iter().any(|kept| kept.name() == rule.name())
        };
        if full {
            return Err(Error::BadRequest(format!(
                "at most {MAX_RULES} alert rules"
            )));
        }
        let text = serde_json::to_string(&rule.spec).map_err(|e| Error::Internal(e.to_string()))?;
        self.store.put_alert_rule(rule.name(), &text).await?;
        // The hosts' newest samples first: the new rule starts from them.
        self.refresh_hosts().await?;
        self.reload_rules().await?;
        Ok(view(&rule))
    }

    /// Deletes an API rule and its states (admins).
    pub async fn delete_rule(&self, principal: &Principal, name: &str) -> Result<()> {
        principal.check_admin()?;
        let _one_at_a_time = self.rule_changes.lock().await;
        if self.config_rules.iter().any(|kept| kept.name() == name) {
            return Err(Error::Forbidden(format!(
                "alert rule `{name}` is declared in the config file; remove it there"
            )));
        }
        if !self.store.delete_alert_rule(name).await? {
            return Err(Error::NotFoundNamed(format!(
                "no alert rule named `{name}`"
            )));
        }
        self.reload_rules().await
    }

    /// Sends a test notification to a channel now (admins); the error says
    /// why the channel did not take it.
    pub async fn test_channel(&self, principal: &Principal, name: &str) -> Result<()> {
        principal.check_admin()?;
        let channel = self
            .channel(name)
            .ok_or_else(|| Error::NotFoundNamed(format!("no alert channel named `{name}`")))?;
        let now = UnixTime::now().as_secs_f64();
        let notification = Notification {
            version: 1,
            rule: "test".into(),
            host: "sysmon".into(),
            state: "test".into(),
            severity: "info".into(),
            condition: format!("a test notification to channel `{name}`"),
            value: None,
            threshold: None,
            since: now,
            at: now,
            repeat: false,
            link: format!("{}/#/alerts", self.link_base),
        };
        channels::deliver(&self.http, channel, &notification, self.config.send_timeout)
            .await
            .map_err(|error| Error::ChannelFailed(format!("channel `{name}`: {error}")))
    }
}

fn view(rule: &Rule) -> RuleView {
    RuleView {
        spec: rule.spec.clone(),
        source: rule.source,
        condition: rule.describe(),
    }
}

fn new_event(transition: &Transition) -> NewAlertEvent {
    let rule = &transition.rule;
    let standing = &transition.standing;
    NewAlertEvent {
        standing: StoredStanding {
            rule: rule.name().to_owned(),
            client_id: transition.client.0,
            state: standing.state.label().to_owned(),
            since_us: standing.since.micros(),
            value: standing.value,
            notified_at_us: standing.notified_at.map(UnixTime::micros),
        },
        host: transition.host.clone(),
        threshold: rule.threshold(),
        severity: rule.severity().label().to_owned(),
        summary: rule.describe(),
        repeat: transition.repeat,
        channels: if transition.notify {
            rule.spec.channels.clone()
        } else {
            Vec::new()
        },
    }
}

fn checked_channels(specs: &[ChannelSpec]) -> Result<Vec<ChannelSpec>> {
    let mut names = HashSet::new();
    let mut channels = Vec::new();
    for spec in specs {
        if !names.insert(spec.name.clone()) {
            return Err(Error::Config(format!(
                "alert channel `{}` is declared twice",
                spec.name
            )));
        }
        channels.push(spec.clone().check()?);
    }
    Ok(channels)
}

fn check_unique(rules: &[Arc<Rule>]) -> Result<()> {
    let mut names = HashSet::new();
    for rule in rules {
        if !names.insert(rule.name()) {
            return Err(Error::Config(format!(
                "alert rule `{}` is declared twice",
                rule.name()
            )));
        }
    }
    if rules.len() > MAX_RULES {
        return Err(Error::Config(format!("at most {MAX_RULES} alert rules")));
    }
    Ok(())
}

fn check_channels(rule: &Rule, channels: &[ChannelSpec]) -> Result<()> {
    for name in &rule.spec.channels {
        if !channels.iter().any(|channel| &channel.name == name) {
            return Err(Error::BadRequest(format!(
                "alert rule `{}`: no channel named `{name}` (channels are declared in the config file's `alerts.channels`)",
                rule.name()
            )));
        }
    }
    Ok(())
}

fn now_us() -> i64 {
    UnixTime::now().micros()
}
