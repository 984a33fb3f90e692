//! HTTP and WebSocket routes. Handlers are thin: parse the request into
//! typed values, call a service, shape the reply. Errors become replies in
//! one place, [`crate::error::Error`]'s `IntoResponse`.

mod admin;
mod alerts;
mod body;
mod compat;
mod dashboard;
mod extract;
mod health;
mod influx;
mod monitor;
mod prom;
mod query;
mod session;
pub use session::SessionCookie;
mod v1;
mod ws;

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Local};
use sysmon_core::ws::ServerMessage;
use sysmon_core::UnixTime;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Largest request body (and WebSocket message) accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(dashboard::routes())
        .route("/client", post(compat::register))
        .route("/client/", post(compat::register))
        .route("/client/{username}", post(compat::push_sample))
        .route(
            "/client/{username}/time",
            get(compat::log_span).post(compat::log_span),
        )
        .route(
            "/client/{username}/time/report",
            get(compat::report).post(compat::report),
        )
        .route("/echo", get(ws::upgrade))
        .route("/api", get(monitor::api_info))
        .route("/api/", get(monitor::api_info))
        .route("/metrics", get(metrics))
        .route("/metrics/fleet", get(fleet_metrics))
        .route("/api/start_time", get(monitor::start_time))
        .route("/start_time", get(monitor::start_time))
        .merge(health::routes())
        .merge(v1::routes())
        .merge(influx::routes())
        .merge(prom::routes())
        .merge(monitor::routes())
        .nest("/api", monitor::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            answer_in_time,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            track_requests,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(CatchPanicLayer::custom(panicked))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

async fn not_found() -> Error {
    Error::NotFound
}

/// A handler that panicked answers like any internal error (and the panic
/// is logged where every internal error is).
fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::Internal(format!("a request handler panicked: {what}")).into_response()
}

/// `/metrics`: the server's telemetry for Prometheus.
async fn metrics(State(state): State<AppState>) -> Result<Response> {
    let text = state.metrics.render()?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// `/metrics/fleet`: every readable host's newest values for Prometheus
/// (docs/integrations.md). An export token reads the hosts it covers; a
/// dashboard login's or a client's token, the hosts it may read.
async fn fleet_metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .map(crate::services::auth::strip_bearer)
        .ok_or(Error::NotLoggedIn)?;
    let hosts = match state.auth.fleet_tokens().find(token).await? {
        Some(fleet) if fleet.export => state.reads.fleet_where(|name| fleet.covers(name)).await?,
        Some(fleet) => {
            return Err(Error::Forbidden(format!(
                "fleet token {} is a push token: read /metrics/fleet with an export token",
                fleet.id
            )))
        }
        None => {
            let principal = state
                .auth
                .principal(token)
                .await
                .map_err(|error| match error {
                    Error::Unauthorized => Error::NotLoggedIn,
                    error => error,
                })?;
            state.reads.fleet(&principal).await?
        }
    };
    Ok((
        [(CONTENT_TYPE, crate::services::exporter::CONTENT_TYPE)],
        crate::services::exporter::render(&hosts),
    )
        .into_response())
}

/// A handler that has not answered within `limits.request_timeout_seconds`
/// is dropped (its work with it) and the client told to retry; a streamed
/// body is bounded by the send timeout instead.
async fn answer_in_time(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => Error::TimedOut.into_response(),
    }
}

/// Counts and times every request by its route pattern (not its path, so
/// user names do not become label values).
async fn track_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    state.metrics.request_answered(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The original's WORK_TIME message: when something started, and now.
fn work_time(started: DateTime<Local>) -> ServerMessage {
    ServerMessage::WorkTime {
        start_work: started.format("%a, %d %b %Y %H:%M:%S").to_string(),
        actual_time: Local::now().format("%d %b %Y %H:%M:%S").to_string(),
    }
}

/// A time bound in unix seconds; an empty or absent one is no bound.
fn parse_bound(text: Option<&str>) -> Result<Option<UnixTime>> {
    match text.map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<f64>()
            .ok()
            .and_then(UnixTime::from_secs_f64)
            .map(Some)
            .ok_or(Error::ValueError),
    }
}

/// Typed query-string parameters (unknown ones refused when the type
/// denies them); the error names the problem.
fn parse_params<T: serde::de::DeserializeOwned + Default>(raw: Option<&str>) -> Result<T> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| Error::BadRequest(format!("query string: {e}")))
}

/// Query-string parameters; a malformed query is the client's error.
fn query_params(raw: Option<&str>) -> Result<HashMap<String, String>> {
    serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|_| Error::BadRequest("malformed query string".into()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A time bound is a time, no bound, or the original's 400.
        #[test]
        fn time_bounds_parse_or_are_refused(text in prop_oneof![
            "-?[0-9]{0,20}(\\.[0-9]{0,9})?(e[0-9]{1,3})?",
            any::<String>(),
        ]) {
            match parse_bound(Some(&text)) {
                Ok(Some(time)) => prop_assert!(time.as_secs_f64().is_finite()),
                Ok(None) => prop_assert!(text.trim().is_empty()),
                Err(error) => prop_assert_eq!(error.status().as_u16(), 400),
            }
        }

        #[test]
        fn query_strings_parse_or_are_refused(raw in any::<String>()) {
            if let Err(error) = query_params(Some(&raw)) {
                prop_assert_eq!(error.status().as_u16(), 400);
            }
        }
    }

    #[test]
    fn a_panic_is_a_coded_internal_error() {
        let response = panicked(Box::new("boom"));
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn bounds_are_optional_numbers() {
        assert_eq!(parse_bound(None).unwrap(), None);
        assert_eq!(parse_bound(Some("")).unwrap(), None);
        assert_eq!(
            parse_bound(Some("1651155333.5")).unwrap(),
            Some(UnixTime::from_micros(1_651_155_333_500_000))
        );
        assert!(matches!(
            parse_bound(Some("yesterday")),
            Err(Error::ValueError)
        ));
        assert!(matches!(parse_bound(Some("NaN")), Err(Error::ValueError)));
    }
}
