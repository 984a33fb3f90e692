//! The versioned API: agents' batches in and their samples back out
//! (client token, `Authorization: Bearer T`), plus the dashboard's session
//! and read routes. Every route is registered through one OpenAPI router,
//! so `/api/v1/openapi.json` is generated from the same code that serves
//! the routes and cannot drift from it.

use axum::extract::FromRequestParts;
use axum::extract::{RawQuery, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use sysmon_core::v1::{self, BatchAck, HostSample};
use sysmon_core::UnixTime;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::body::BatchBody;
use super::session::{self, SESSION_COOKIE};
use super::{admin, alerts};
use super::{parse_bound, query, query_params};
use crate::error::{Error, Result};
use crate::services::metrics::Source;
use crate::services::reads::MAX_PAGE_SAMPLES;
use crate::state::AppState;
use crate::store::{TimeRange, TokenOwner};

/// A full batch of 10,000 samples with many file systems fits.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "sysmon v1 API",
        description = "Agents push batches of samples; dashboards and scripts read the fleet back. The original server's routes are described in docs/api.md."
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "ingest", description = "Samples in, with a client's token"),
        (name = "session", description = "Dashboard logins"),
        (name = "query", description = "Reading the fleet back"),
        (name = "admin", description = "Managing clients (dashboard admins)"),
    )
)]
struct ApiDoc;

struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(SESSION_COOKIE))),
        );
    }
}

pub fn routes() -> Router<AppState> {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(ingest_batch, read_samples))
        .routes(routes!(session::login, session::whoami, session::logout))
        .routes(routes!(query::list_clients))
        .routes(routes!(query::series))
        .routes(routes!(query::filesystems))
        .routes(routes!(query::filesystem_history))
        .routes(routes!(query::export_csv))
        .routes(routes!(query::live))
        .routes(routes!(query::server_health))
        .routes(routes!(admin::revoke_tokens))
        .routes(routes!(admin::remove_client))
        .routes(routes!(admin::set_labels))
        .routes(routes!(
            admin::create_enrollment_token,
            admin::list_enrollment_tokens
        ))
        .routes(routes!(admin::revoke_enrollment_token))
        .routes(routes!(admin::create_fleet_token, admin::list_fleet_tokens))
        .routes(routes!(admin::revoke_fleet_token))
        .routes(routes!(alerts::active))
        .routes(routes!(alerts::history))
        .routes(routes!(alerts::rules))
        .routes(routes!(alerts::put_rule, alerts::delete_rule))
        .routes(routes!(alerts::test_channel))
        .split_for_parts();
    let document = std::sync::Arc::new(openapi);
    router.route(
        "/api/v1/openapi.json",
        get(move || {
            let document = document.clone();
            async move { Json(document.as_ref().clone()) }
        }),
    )
}

/// Store a batch of samples in one transaction. The answer lists which
/// sample times were new and which were already stored, so a retry after
/// a lost answer is harmless.
#[utoipa::path(post, path = "/api/v1/samples", tag = "ingest",
    request_body(content = Vec<Object>, description = "A JSON array of samples, or NDJSON (Content-Type: application/x-ndjson); fields in docs/api.md", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored: `{\"stored\": [times], \"duplicates\": [times]}`"),
        (status = 400, description = "A sample is invalid; the message names it"),
        (status = 401, description = "Bad token"),
        (status = 503, description = "The store is behind; retry after `Retry-After`"),
    ),
    security(("bearer" = [])))]
async fn ingest_batch(
    State(state): State<AppState>,
    ClientToken(owner): ClientToken,
    body: BatchBody,
) -> Result<Json<BatchAck>> {
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

/// The calling client's own full samples from `from` to `to` (unix
/// seconds, inclusive), by time, a page of at most `limit` at a time.
#[utoipa::path(get, path = "/api/v1/samples", tag = "ingest",
    params(
        ("from" = Option<f64>, Query, description = "Start, unix seconds"),
        ("to" = Option<f64>, Query, description = "End, unix seconds"),
        ("limit" = Option<u32>, Query, description = "Samples per page, 1 to 10,000 (default)"),
    ),
    responses(
        (status = 200, description = "`{\"samples\": [...], \"next_from\": T or null}`: read on with `from=next_from` while it is not null"),
        (status = 400, description = "A bound is not unix seconds, or `limit` out of range"),
        (status = 401, description = "Bad token"),
    ),
    security(("bearer" = [])))]
async fn read_samples(
    State(state): State<AppState>,
    ClientToken(owner): ClientToken,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let query = query_params(query.as_deref())?;
    let bound = |name: &str| {
        parse_bound(query.get(name).map(String::as_str))
            .map_err(|_| Error::BadRequest(format!("`{name}` must be unix seconds")))
    };
    let range = TimeRange {
        start: bound("from")?,
        end: bound("to")?,
    };
    let limit = match query.get("limit") {
        None => MAX_PAGE_SAMPLES,
        Some(text) => text.parse().map_err(|_| {
            Error::BadRequest(format!("`limit` must be from 1 to {MAX_PAGE_SAMPLES}"))
        })?,
    };
    let page = state.reads.samples_page(owner.id, range, limit).await?;
    let samples: Vec<HostSample> = page.samples.iter().map(HostSample::from_sample).collect();
    Ok(Json(json!({
        "samples": samples,
        "next_from": page.next_from.map(UnixTime::as_secs_f64),
    })))
}

/// The client whose token the request carries, checked from the headers
/// before any body is read: a request with a wrong token costs no memory
/// for its body.
struct ClientToken(TokenOwner);

impl FromRequestParts<AppState> for ClientToken {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        state
            .auth
            .authenticate_header(header)
            .await
            .map(ClientToken)
    }
}
