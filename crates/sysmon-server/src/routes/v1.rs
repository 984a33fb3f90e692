//! The versioned API for agents: full samples in batches, and reading them
//! back. Authenticated by the client's token (`Authorization: Bearer T`).

use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sysmon_core::v1::{self, BatchAck, HostSample};
use sysmon_core::UnixTime;

use super::body::BatchBody;
use super::{parse_bound, query_params};
use crate::error::{Error, Result};
use crate::services::metrics::Source;
use crate::state::AppState;
use crate::store::{TimeRange, TokenOwner};

/// A full batch of 10,000 samples with many file systems fits.
const MAX_BATCH_BODY_BYTES: usize = 16 * 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/samples", post(ingest_batch).get(read_samples))
        .layer(DefaultBodyLimit::max(MAX_BATCH_BODY_BYTES))
}

/// `POST /api/v1/samples`: one transaction for the whole batch; the answer
/// lists which sample times were new and which were already stored.
async fn ingest_batch(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: BatchBody,
) -> Result<Json<BatchAck>> {
    let owner = authenticate(&state, &headers).await?;
    let now = UnixTime::now();
    let samples = if body.ndjson {
        v1::parse_ndjson_batch(&body.bytes, now)?
    } else {
        v1::parse_json_batch(&body.bytes, now)?
    };
    let ack = state
        .ingest
        .store(owner.id, samples, Source::V1Http)
        .await?;
    Ok(Json(ack))
}

/// `GET /api/v1/samples?from=S&to=E`: the client's full samples, by time.
async fn read_samples(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let owner = authenticate(&state, &headers).await?;
    let query = query_params(query.as_deref())?;
    let bound = |name: &str| {
        parse_bound(query.get(name).map(String::as_str))
            .map_err(|_| Error::BadRequest(format!("`{name}` must be unix seconds")))
    };
    let range = TimeRange {
        start: bound("from")?,
        end: bound("to")?,
    };
    let samples = state.store.full_samples(owner.id, range).await?;
    let samples: Vec<HostSample> = samples.iter().map(HostSample::from_sample).collect();
    Ok(Json(json!({"samples": samples})))
}

async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<TokenOwner> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    state.auth.authenticate_header(header).await
}
