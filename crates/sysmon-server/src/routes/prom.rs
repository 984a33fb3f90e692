//! Prometheus remote write 1.0 in: `POST /api/v1/prom/write`, a snappy
//! protobuf `WriteRequest` from Prometheus or vmagent, with a push token
//! (`authorization: {credentials: TOKEN}`, or Basic auth's password).
//! node_exporter's series become samples (docs/integrations.md).

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;

use super::body::read_foreign_raw;
use super::influx::{answer, token};
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/prom/write", post(remote_write))
}

/// The token is checked before the body is read. `204` once stored; `400`
/// (which Prometheus does not resend) for a body that cannot be read or
/// hosts the token may not write; `503` with `Retry-After` (resent) under
/// load.
async fn remote_write(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode> {
    let pusher = state
        .auth
        .pusher(&token(&headers, &HashMap::new())?)
        .await?;
    // Remote write 2.0 says so in its content type; read as 1.0 it would
    // look empty and be acknowledged with nothing stored.
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    if content_type.contains("io.prometheus.write.v2") {
        return Err(Error::UnsupportedMediaType(
            "remote write 2.0 is not supported: send remote write 1.0 (`protobuf_message: prometheus.WriteRequest`)".into(),
        ));
    }
    let body = read_foreign_raw(body).await?;
    answer(state.integrations.write_remote(&pusher, body).await?)
}
