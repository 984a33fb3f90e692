//! The original server's client API: registration, pushing a sample, and
//! reading a client's log back.

use axum::extract::{Path, RawQuery, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use sysmon_core::number::MetricNumber;
use sysmon_core::{Sample, UnixTime};

use super::body::Fields;
use super::{parse_bound, query_params};
use crate::error::{Error, Result};
use crate::services::metrics::Source;
use crate::state::AppState;
use crate::store::{TimeRange, TokenOwner};

/// `POST /client`: register a new user, or log an existing one in.
pub async fn register(State(state): State<AppState>, fields: Fields) -> Result<Json<Value>> {
    let username = fields
        .text(&["username"])
        .ok_or(Error::UnsupportableUsername)?;
    let password = fields.text(&["pass", "password"]).unwrap_or_default();
    let login = state.auth.register_or_login(&username, &password).await?;
    if login.registered {
        tracing::info!(client = %username, "client registered");
        Ok(Json(
            json!({"registration": username, "client_id": login.token}),
        ))
    } else {
        Ok(Json(json!({"client_id": login.token})))
    }
}

/// `POST /client/<U>`: store one sample; 202 once it is committed.
pub async fn push_sample(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: HeaderMap,
    fields: Fields,
) -> Result<(StatusCode, Json<Value>)> {
    let owner = authorize(&state, &headers, &username).await?;
    let sample = Sample::from_fields(fields.0, UnixTime::now())?;
    let echo = sample.echo_json();
    state
        .ingest
        .store(owner.id, vec![sample], Source::Http)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(echo)))
}

/// `/client/<U>/time`: the first and last time in the client's log.
pub async fn log_span(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let owner = authorize(&state, &headers, &username).await?;
    let (start, end) = state
        .store
        .log_span(owner.id)
        .await?
        .ok_or(Error::LogEmpty)?;
    Ok(Json(json!({"start": start, "end": end})))
}

/// `/client/<U>/time/report?start=S&end=E`: the client's samples in
/// `S..=E`, ordered by time. The real client POSTs, so a body may carry
/// `start` and `end` too; the query string wins.
pub async fn report(
    State(state): State<AppState>,
    Path(username): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    fields: Fields,
) -> Result<Json<Report>> {
    let owner = authorize(&state, &headers, &username).await?;
    let query = query_params(query.as_deref()).map_err(|_| Error::ValueError)?;
    let bound = |name: &str| -> Result<Option<UnixTime>> {
        let text = query.get(name).cloned().or_else(|| fields.text(&[name]));
        parse_bound(text.as_deref())
    };
    let range = TimeRange {
        start: bound("start")?,
        end: bound("end")?,
    };
    let samples = state.store.samples(owner.id, range).await?;
    Ok(Json(Report {
        payload: samples.into_iter().map(ReportRow::from).collect(),
    }))
}

async fn authorize(state: &AppState, headers: &HeaderMap, username: &str) -> Result<TokenOwner> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    state.auth.authorize(header, username).await
}

#[derive(Debug, Serialize)]
pub struct Report {
    payload: Vec<ReportRow>,
}

/// One row of a report, in the README's keys; unsent metrics are `null`.
#[derive(Debug, Serialize)]
struct ReportRow {
    cpu: Option<MetricNumber>,
    mem: Option<MetricNumber>,
    storage: Option<MetricNumber>,
    unix_time: UnixTime,
}

impl From<Sample> for ReportRow {
    fn from(sample: Sample) -> Self {
        ReportRow {
            cpu: sample.cpu_load.map(MetricNumber),
            mem: sample.mem.map(MetricNumber),
            storage: sample.storage.map(MetricNumber),
            unix_time: sample.time,
        }
    }
}
