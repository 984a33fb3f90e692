//! Alerts (migration 0010): API rules, the standing of each (rule, host),
//! the history of transitions and their deliveries. An [`AlertStore`]
//! trait (part of every [`Store`](super::Store)) with the same SQL on both
//! stores; the macro only supplies each store's pool.

use async_trait::async_trait;

use crate::error::Result;

/// A (rule, host) standing as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredStanding {
    pub rule: String,
    pub client_id: i64,
    pub state: String,
    pub since_us: i64,
    pub value: Option<f64>,
    pub notified_at_us: Option<i64>,
}

/// A transition, stored with the standing it leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAlertEvent {
    pub standing: StoredStanding,
    pub host: String,
    pub threshold: Option<f64>,
    pub severity: String,
    pub summary: String,
    pub repeat: bool,
    /// Channels to notify; a delivery each, due at once.
    pub channels: Vec<String>,
}

/// A stored transition, as history shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AlertEvent {
    pub id: i64,
    #[sqlx(rename = "rule_name")]
    pub rule: String,
    pub client_id: i64,
    pub host: String,
    pub state: String,
    pub at_us: i64,
    pub since_us: i64,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub severity: String,
    pub summary: String,
    #[sqlx(rename = "is_repeat")]
    pub repeat: bool,
}

/// A notification of one event to one channel.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub event_id: i64,
    pub channel: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_us: i64,
    pub last_error: Option<String>,
    pub sent_at_us: Option<i64>,
}

/// How an attempt at a delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryOutcome {
    Sent {
        at_us: i64,
    },
    /// Failed; tried again at `retry_at_us`, or given up when `None`.
    Failed {
        error: String,
        retry_at_us: Option<i64>,
    },
}

#[async_trait]
pub trait AlertStore: Send + Sync {
    async fn alert_rules(&self) -> Result<Vec<(String, String)>>;

    /// Creates or replaces an API rule (its spec as JSON).
    async fn put_alert_rule(&self, name: &str, spec: &str) -> Result<()>;

    /// Deletes an API rule and its standings; false when there was none.
    async fn delete_alert_rule(&self, name: &str) -> Result<bool>;

    /// Deletes the standings of a rule (not the rule).
    async fn delete_alert_states(&self, rule: &str) -> Result<()>;

    async fn alert_standings(&self) -> Result<Vec<StoredStanding>>;

    /// Stores transitions in one transaction: each standing, its event and
    /// its deliveries, so a transition is notified once whatever happens
    /// (a restart reads the standing back and does not decide it again).
    /// Transitions of hosts removed meanwhile are left out: their clients'
    /// rows are locked (PostgreSQL), so a removal waits for this commit or
    /// this sees it. Returns the hosts left out.
    async fn record_alert_events(&self, events: &[NewAlertEvent]) -> Result<Vec<i64>>;

    /// Newest first, at most `limit`, before `before_id` when given.
    async fn alert_events(&self, limit: i64, before_id: Option<i64>) -> Result<Vec<AlertEvent>>;

    async fn alert_event(&self, id: i64) -> Result<Option<AlertEvent>>;

    /// Events with ids above `after_id`, oldest first, at most `limit`.
    async fn alert_events_after(&self, after_id: i64, limit: i64) -> Result<Vec<AlertEvent>>;

    /// Whether the host an event is of has been removed since.
    async fn event_host_removed(&self, event_id: i64) -> Result<bool>;

    /// Deliveries of these events.
    async fn deliveries_of(&self, event_ids: &[i64]) -> Result<Vec<Delivery>>;

    /// Claims pending deliveries due by `now_us`, oldest first, at most
    /// `limit`: each is put off until `lease_until_us`, so that an attempt
    /// whose outcome is never recorded (a crash, the database gone) is
    /// retried then rather than at once, and a second server reading the
    /// same rows does not take them too.
    async fn claim_deliveries(
        &self,
        now_us: i64,
        lease_until_us: i64,
        limit: i64,
    ) -> Result<Vec<Delivery>>;

    /// Deletes at most `limit` of the events older than `before_us`, oldest
    /// first, with their deliveries (never an event with a delivery still
    /// pending); returns the events deleted.
    async fn prune_alert_history(&self, before_us: i64, limit: i64) -> Result<u64>;

    async fn finish_delivery(&self, id: i64, outcome: &DeliveryOutcome) -> Result<()>;
}

/// Columns of `alert_events`, as [`AlertEvent`] reads them.
pub const EVENT_COLUMNS: &str =
    "id, rule_name, client_id, host, state, at_us, since_us, value, threshold, severity, summary, is_repeat";
/// Columns of `alert_deliveries`, as [`Delivery`] reads them.
pub const DELIVERY_COLUMNS: &str =
    "id, event_id, channel, status, attempts, next_attempt_us, last_error, sent_at_us";

/// `impl AlertStore for $store`, for a store with a sqlx `pool` field.
macro_rules! impl_alert_store {
    ($store:ty, $connection:ty, lock_rows: $lock_rows:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::AlertStore for $store {
            async fn alert_rules(&self) -> $crate::error::Result<Vec<(String, String)>> {
                Ok(sqlx::query_as("SELECT name, spec FROM alert_rules ORDER BY name")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn put_alert_rule(&self, name: &str, spec: &str) -> $crate::error::Result<()> {
                sqlx::query(
                    "INSERT INTO alert_rules (name, spec, created_at_us) VALUES ($1, $2, $3)
                     ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                )
                .bind(name)
                .bind(spec)
                .bind($crate::store::now_micros())
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_alert_rule(&self, name: &str) -> $crate::error::Result<bool> {
                let mut transaction = self.pool.begin().await?;
                let deleted = sqlx::query("DELETE FROM alert_rules WHERE name = $1")
                    .bind(name)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM alert_states WHERE rule_name = $1")
                    .bind(name)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
                Ok(deleted > 0)
            }

            async fn delete_alert_states(&self, rule: &str) -> $crate::error::Result<()> {
                sqlx::query("DELETE FROM alert_states WHERE rule_name = $1")
                    .bind(rule)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn alert_standings(
                &self,
            ) -> $crate::error::Result<Vec<$crate::store::StoredStanding>> {
                let rows: Vec<(String, i64, String, i64, Option<f64>, Option<i64>)> = sqlx::query_as(
                    "SELECT rule_name, client_id, state, since_us, value, notified_at_us
                     FROM alert_states",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(rule, client_id, state, since_us, value, notified_at_us)| {
                        $crate::store::StoredStanding {
                            rule,
                            client_id,
                            state,
                            since_us,
                            value,
                            notified_at_us,
                        }
                    })
                    .collect())
            }

            async fn record_alert_events(
                &self,
                events: &[$crate::store::NewAlertEvent],
            ) -> $crate::error::Result<Vec<i64>> {
                if events.is_empty() {
                    return Ok(Vec::new());
                }
                let mut connection = self.pool.acquire().await?;
                Self::record_alert_events_on(&mut connection, events).await
            }

            async fn alert_events(
                &self,
                limit: i64,
                before_id: Option<i64>,
            ) -> $crate::error::Result<Vec<$crate::store::AlertEvent>> {
                Ok(sqlx::query_as(&format!(
                    "SELECT {} FROM alert_events WHERE id < $1 ORDER BY id DESC LIMIT $2",
                    $crate::store::alerts::EVENT_COLUMNS
                ))
                .bind(before_id.unwrap_or(i64::MAX))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn alert_event(
                &self,
                id: i64,
            ) -> $crate::error::Result<Option<$crate::store::AlertEvent>> {
                Ok(sqlx::query_as(&format!(
                    "SELECT {} FROM alert_events WHERE id = $1",
                    $crate::store::alerts::EVENT_COLUMNS
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn alert_events_after(
                &self,
                after_id: i64,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::store::AlertEvent>> {
                Ok(sqlx::query_as(&format!(
                    "SELECT {} FROM alert_events WHERE id > $1 ORDER BY id LIMIT $2",
                    $crate::store::alerts::EVENT_COLUMNS
                ))
                .bind(after_id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn event_host_removed(&self, event_id: i64) -> $crate::error::Result<bool> {
                Ok(sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM alert_events e JOIN clients c ON c.id = e.client_id
                                    WHERE e.id = $1 AND c.removed_at_us IS NOT NULL)",
                )
                .bind(event_id)
                .fetch_one(&self.pool)
                .await?)
            }

            async fn deliveries_of(
                &self,
                event_ids: &[i64],
            ) -> $crate::error::Result<Vec<$crate::store::Delivery>> {
                let (Some(&first), Some(&last)) =
                    (event_ids.iter().min(), event_ids.iter().max())
                else {
                    return Ok(Vec::new());
                };
                // One statement for a page of history: its ids are a range
                // (less those a viewer may not read, dropped here).
                let rows: Vec<$crate::store::Delivery> = sqlx::query_as(&format!(
                    "SELECT {} FROM alert_deliveries WHERE event_id BETWEEN $1 AND $2
                     ORDER BY event_id, id",
                    $crate::store::alerts::DELIVERY_COLUMNS
                ))
                .bind(first)
                .bind(last)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .filter(|delivery| event_ids.contains(&delivery.event_id))
                    .collect())
            }

            async fn claim_deliveries(
                &self,
                now_us: i64,
                lease_until_us: i64,
                limit: i64,
            ) -> $crate::error::Result<Vec<$crate::store::Delivery>> {
                // Most seconds nothing is due: a read, not a write (which
                // would take SQLite's writer every second).
                let due: bool = sqlx::query_scalar(
                    "SELECT EXISTS (SELECT 1 FROM alert_deliveries
                                    WHERE status = 'pending' AND next_attempt_us <= $1)",
                )
                .bind(now_us)
                .fetch_one(&self.pool)
                .await?;
                if !due {
                    return Ok(Vec::new());
                }
                // The outer WHERE is checked again against a row another
                // transaction just claimed (PostgreSQL re-reads it before
                // updating), so a row is claimed once.
                let mut claimed: Vec<$crate::store::Delivery> = sqlx::query_as(&format!(
                    "UPDATE alert_deliveries SET next_attempt_us = $2
                     WHERE status = 'pending' AND next_attempt_us <= $1 AND id IN (
                         SELECT id FROM alert_deliveries
                         WHERE status = 'pending' AND next_attempt_us <= $1
                         ORDER BY next_attempt_us, id LIMIT $3)
                     RETURNING {}",
                    $crate::store::alerts::DELIVERY_COLUMNS
                ))
                .bind(now_us)
                .bind(lease_until_us)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                claimed.sort_by_key(|delivery| delivery.id);
                Ok(claimed)
            }

            async fn prune_alert_history(
                &self,
                before_us: i64,
                limit: i64,
            ) -> $crate::error::Result<u64> {
                let mut transaction = self.pool.begin().await?;
                sqlx::query(
                    // The oldest events with nothing pending: events still
                    // being notified are passed over, so a chunk of them
                    // cannot stop the pruning of those after.
                    "DELETE FROM alert_deliveries WHERE event_id IN (
                         SELECT id FROM alert_events WHERE at_us < $1 AND NOT EXISTS (
                             SELECT 1 FROM alert_deliveries
                             WHERE event_id = alert_events.id AND status = 'pending')
                         ORDER BY id LIMIT $2)",
                )
                .bind(before_us)
                .bind(limit)
                .execute(&mut *transaction)
                .await?;
                let deleted = sqlx::query(
                    "DELETE FROM alert_events WHERE id IN (
                         SELECT id FROM alert_events WHERE at_us < $1 AND NOT EXISTS (
                             SELECT 1 FROM alert_deliveries WHERE event_id = alert_events.id)
                         ORDER BY id LIMIT $2)",
                )
                .bind(before_us)
                .bind(limit)
                .execute(&mut *transaction)
                .await?
                .rows_affected();
                transaction.commit().await?;
                Ok(deleted)
            }

            async fn finish_delivery(
                &self,
                id: i64,
                outcome: &$crate::store::DeliveryOutcome,
            ) -> $crate::error::Result<()> {
                let query = match outcome {
                    $crate::store::DeliveryOutcome::Sent { at_us } => sqlx::query(
                        "UPDATE alert_deliveries SET status = 'sent', attempts = attempts + 1,
                                sent_at_us = $2, last_error = NULL WHERE id = $1",
                    )
                    .bind(id)
                    .bind(*at_us),
                    $crate::store::DeliveryOutcome::Failed { error, retry_at_us } => sqlx::query(
                        "UPDATE alert_deliveries SET attempts = attempts + 1, last_error = $2,
                                status = CASE WHEN $3 IS NULL THEN 'failed' ELSE 'pending' END,
                                next_attempt_us = COALESCE($3, next_attempt_us)
                         WHERE id = $1",
                    )
                    .bind(id)
                    .bind(error.as_str())
                    .bind(*retry_at_us),
                };
                query.execute(&self.pool).await?;
                Ok(())
            }
        }
        impl $store {
            /// [`AlertStore::record_alert_events`](crate::store::AlertStore::record_alert_events)
            /// on `connection`, in one transaction.
            pub(crate) async fn record_alert_events_on(
                connection: &mut $connection,
                events: &[$crate::store::NewAlertEvent],
            ) -> $crate::error::Result<Vec<i64>> {
                let mut removed = Vec::new();
                let now = $crate::store::now_micros();
                let mut transaction = sqlx::Connection::begin(&mut *connection).await?;
                for event in events {
                    let standing = &event.standing;
                    // The write comes first (SQLite takes its writer with
                    // the statement, not after a read).
                    let stored = sqlx::query(&format!(
                        "INSERT INTO alert_states
                            (rule_name, client_id, state, since_us, value, notified_at_us)
                         SELECT $1, $2, $3, $4, $5, $6
                         WHERE EXISTS (SELECT 1 FROM clients
                                       WHERE id = $2 AND removed_at_us IS NULL {})
                         ON CONFLICT (rule_name, client_id) DO UPDATE SET
                            state = excluded.state, since_us = excluded.since_us,
                            value = excluded.value, notified_at_us = excluded.notified_at_us",
                        $lock_rows
                    ))
                    .bind(&standing.rule)
                    .bind(standing.client_id)
                    .bind(&standing.state)
                    .bind(standing.since_us)
                    .bind(standing.value)
                    .bind(standing.notified_at_us)
                    .execute(&mut *transaction)
                    .await?
                    .rows_affected();
                    if stored == 0 {
                        removed.push(standing.client_id);
                        continue;
                    }
                    let event_id: i64 = sqlx::query_scalar(
                        "INSERT INTO alert_events (rule_name, client_id, host, state, at_us, since_us,
                                                   value, threshold, severity, summary, is_repeat)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
                    )
                    .bind(&standing.rule)
                    .bind(standing.client_id)
                    .bind(&event.host)
                    .bind(&standing.state)
                    .bind(now)
                    .bind(standing.since_us)
                    .bind(standing.value)
                    .bind(event.threshold)
                    .bind(&event.severity)
                    .bind(&event.summary)
                    .bind(event.repeat)
                    .fetch_one(&mut *transaction)
                    .await?;
                    for channel in &event.channels {
                        sqlx::query(
                            "INSERT INTO alert_deliveries
                                (event_id, channel, status, attempts, next_attempt_us)
                             VALUES ($1, $2, 'pending', 0, $3)",
                        )
                        .bind(event_id)
                        .bind(channel)
                        .bind(now)
                        .execute(&mut *transaction)
                        .await?;
                    }
                }
                transaction.commit().await?;
                Ok(removed)
            }
        }
    };
}
