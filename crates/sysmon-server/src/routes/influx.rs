//! InfluxDB's write API, for Telegraf and InfluxDB clients: `POST /write`
//! (1.x: `db`, `precision`, `u`/`p` or Basic auth) and `POST
//! /api/v2/write` (2.x: `org`, `bucket`, `precision`, `Authorization:
//! Token ...`), and `/ping`, which clients call first. The token is a
//! fleet token, or a client's own for its own host. sysmon keeps one
//! database: `db`, `org` and `bucket` are accepted and ignored. See
//! docs/integrations.md.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use super::body::read_foreign;
use super::query_params;
use crate::error::{Error, Result};
use crate::services::integrations::line_protocol::Precision;
use crate::services::integrations::WriteOutcome;
use crate::state::AppState;

/// The InfluxDB version `/ping` reports: the 1.x write API's.
const COMPATIBLE_VERSION: &str = "1.8.10";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/write", post(write_lines))
        .route("/api/v2/write", post(write_lines))
        .route("/ping", get(ping).head(ping))
}

/// Both versions' write: the token in `Authorization` (`Token T`,
/// `Bearer T`, Basic auth's password) or 1.x's `p` parameter, checked
/// before the body is read; the precision defaults to nanoseconds.
async fn write_lines(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<StatusCode> {
    let params = query_params(query.as_deref())?;
    let pusher = state.auth.pusher(&token(&headers, &params)?).await?;
    let precision = match params.get("precision").map(String::as_str) {
        None | Some("") => Precision::Nanoseconds,
        Some(text) => Precision::parse(text).ok_or_else(|| {
            Error::BadRequest(format!(
                "unknown precision `{text}`: use ns, us, ms or s (1.x also n, u, m, h)"
            ))
        })?,
    };
    let body = read_foreign(&headers, body).await?;
    let outcome = state
        .integrations
        .write_line_protocol(&pusher, body, precision)
        .await?;
    answer(outcome)
}

/// `204` when everything was stored; else `400` saying what was not, and
/// whether the rest was (a partial write).
pub(super) fn answer(outcome: WriteOutcome) -> Result<StatusCode> {
    match outcome.first_refused {
        None => Ok(StatusCode::NO_CONTENT),
        Some(first) if outcome.samples == 0 => Err(Error::InvalidPayload(format!(
            "nothing stored: {first} ({} refused)",
            outcome.refused
        ))),
        Some(first) => Err(Error::InvalidPayload(format!(
            "partial write: {first} ({} refused; the rest was stored)",
            outcome.refused
        ))),
    }
}

/// The token: `Authorization: Token T` or `Bearer T`, Basic auth's
/// password, or 1.x's `p` parameter.
pub(super) fn token(headers: &HeaderMap, params: &HashMap<String, String>) -> Result<String> {
    let header = headers
        .get(AUTHORIZATION)
        .map(|value| value.to_str().map_err(|_| Error::Unauthorized))
        .transpose()?;
    let Some(header) = header else {
        return params.get("p").cloned().ok_or(Error::Unauthorized);
    };
    let (scheme, credentials) = header.trim().split_once(' ').ok_or(Error::Unauthorized)?;
    match scheme.to_ascii_lowercase().as_str() {
        "token" | "bearer" => Ok(credentials.trim().to_owned()),
        "basic" => {
            let decoded = STANDARD
                .decode(credentials.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or(Error::Unauthorized)?;
            let (_user, password) = decoded.split_once(':').ok_or(Error::Unauthorized)?;
            Ok(password.to_owned())
        }
        _ => Err(Error::Unauthorized),
    }
}

/// InfluxDB clients check the server with `/ping` before writing.
async fn ping() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            (
                HeaderName::from_static("x-influxdb-version"),
                HeaderValue::from_static(COMPATIBLE_VERSION),
            ),
            (
                HeaderName::from_static("x-influxdb-build"),
                HeaderValue::from_static("OSS"),
            ),
        ],
    )
}
