//! `/api/v1/alerts/...`: what fires now, the history, rules and channels.
//! Everyone logged in sees the alerts of the hosts they may read; only
//! admins change rules or send test notifications.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::body::JsonBody;
use super::extract::Path;
use super::parse_params;
use super::session::Authenticated;
use crate::error::{Error, Result};
use crate::services::alerts::rules::{rule_metrics, RuleSpec};
use crate::services::alerts::{ActiveAlert, ChannelView, RuleView};
use crate::state::AppState;
use crate::store::{AlertEvent, Delivery};

#[derive(Serialize, ToSchema)]
pub struct ActiveAlerts {
    /// Every (rule, host) pending, firing or resolved, firing first.
    alerts: Vec<ActiveAlert>,
}

/// Alerts not `ok` now, for the hosts the caller may read.
#[utoipa::path(get, path = "/api/v1/alerts", tag = "alerts",
    responses((status = 200, body = ActiveAlerts), (status = 401, description = "Not logged in")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn active(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<ActiveAlerts>> {
    Ok(Json(ActiveAlerts {
        alerts: state.alerts.active(&principal),
    }))
}

/// Query parameters of the history.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Transitions per page, 1 to 500 (default 100).
    limit: Option<String>,
    /// Only transitions before this id (the previous page's `next_before`).
    before: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryEntry {
    id: i64,
    rule: String,
    host: String,
    /// pending, firing, resolved or ok (a pending that did not fire).
    state: String,
    /// Unix seconds of the transition, and of the state's start.
    at: f64,
    since: f64,
    value: Option<f64>,
    threshold: Option<f64>,
    severity: String,
    condition: String,
    repeat: bool,
    deliveries: Vec<DeliveryView>,
}

/// A notification of a transition to a channel.
#[derive(Serialize, ToSchema)]
pub struct DeliveryView {
    channel: String,
    /// pending (not sent yet, or retrying), sent, or failed (given up).
    status: String,
    attempts: i32,
    /// Why the last attempt failed (admins only).
    last_error: Option<String>,
    /// Unix seconds.
    sent_at: Option<f64>,
    next_attempt_at: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct History {
    transitions: Vec<HistoryEntry>,
    /// Pass as `before` for the next page; null on the last.
    next_before: Option<i64>,
}

/// Every transition stored, newest first, with its notifications.
#[utoipa::path(get, path = "/api/v1/alerts/history", tag = "alerts", params(HistoryParams),
    responses((status = 200, body = History), (status = 400, description = "A parameter is malformed"),
              (status = 401, description = "Not logged in")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn history(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    RawQuery(raw): RawQuery,
) -> Result<Json<History>> {
    let params: HistoryParams = parse_params(raw.as_deref())?;
    let number = |name: &str, value: &Option<String>| -> Result<Option<i64>> {
        value
            .as_deref()
            .map(|text| {
                text.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::BadRequest(format!("`{name}` must be a whole number")))
            })
            .transpose()
    };
    let limit = number("limit", &params.limit)?.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(Error::BadRequest("`limit` must be 1 to 500".into()));
    }
    let before = number("before", &params.before)?;
    let (page, next_before) = state.alerts.history(&principal, limit, before).await?;
    Ok(Json(History {
        transitions: page
            .into_iter()
            .map(|found| entry(found, principal.is_admin()))
            .collect(),
        next_before,
    }))
}

/// A transition as the history shows it; why a delivery failed only to
/// admins (a channel's answer can say more than a viewer should read).
fn entry((event, deliveries): (AlertEvent, Vec<Delivery>), admin: bool) -> HistoryEntry {
    let seconds = |micros: i64| micros as f64 / 1e6;
    HistoryEntry {
        id: event.id,
        rule: event.rule,
        host: event.host,
        state: event.state,
        at: seconds(event.at_us),
        since: seconds(event.since_us),
        value: event.value,
        threshold: event.threshold,
        severity: event.severity,
        condition: event.summary,
        repeat: event.repeat,
        deliveries: deliveries
            .into_iter()
            .map(|delivery| DeliveryView {
                next_attempt_at: (delivery.status == "pending")
                    .then(|| seconds(delivery.next_attempt_us)),
                channel: delivery.channel,
                status: delivery.status,
                attempts: delivery.attempts,
                last_error: delivery.last_error.filter(|_| admin),
                sent_at: delivery.sent_at_us.map(seconds),
            })
            .collect(),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Rules {
    rules: Vec<RuleView>,
    channels: Vec<ChannelView>,
    /// Every `metric` a rule may name.
    metrics: Vec<&'static str>,
}

/// Every rule (from the config file and the API) and every channel.
#[utoipa::path(get, path = "/api/v1/alerts/rules", tag = "alerts",
    responses((status = 200, body = Rules), (status = 401, description = "Not logged in")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn rules(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<Rules>> {
    Ok(Json(Rules {
        rules: state.alerts.rules(&principal),
        channels: state.alerts.channels(),
        metrics: rule_metrics(),
    }))
}

/// Create or replace a rule (admins). Rules of the config file are
/// read-only here (403).
#[utoipa::path(put, path = "/api/v1/alerts/rules/{name}", tag = "alerts",
    params(("name" = String, Path, description = "The rule; must match the body's name")),
    request_body = RuleSpec,
    responses(
        (status = 200, body = RuleView),
        (status = 400, description = "The rule is malformed; the message names the field"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin, or a rule of the config file"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn put_rule(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    JsonBody(spec): JsonBody<RuleSpec>,
) -> Result<Json<RuleView>> {
    principal.check_admin()?;
    if spec.name != name {
        return Err(Error::BadRequest(format!(
            "the body's `name` ({}) differs from the address's ({name})",
            spec.name
        )));
    }
    Ok(Json(state.alerts.put_rule(&principal, spec).await?))
}

/// Delete a rule made through the API (admins), with its states.
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{name}", tag = "alerts",
    params(("name" = String, Path, description = "The rule")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin, or a rule of the config file"),
        (status = 404, description = "No such rule"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn delete_rule(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    principal.check_admin()?;
    state.alerts.delete_rule(&principal, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send a test notification to a channel now (admins): 204 when the
/// channel took it, 502 with its answer when not.
#[utoipa::path(post, path = "/api/v1/alerts/channels/{name}/test", tag = "alerts",
    params(("name" = String, Path, description = "The channel")),
    responses(
        (status = 204, description = "The channel took it"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such channel"),
        (status = 502, description = "The channel refused it or did not answer; the message says how"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn test_channel(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    principal.check_admin()?;
    state.alerts.test_channel(&principal, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}
