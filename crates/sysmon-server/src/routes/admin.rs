//! What only dashboard admins may do: to clients, and to the enrolment
//! tokens new clients register with.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sysmon_core::UnixTime;
use utoipa::ToSchema;

use axum::http::StatusCode;

use super::body::JsonBody;
use super::extract::Path;
use super::session::Authenticated;
use crate::error::Result;
use crate::services::enrollment::TokenRequest;
use crate::services::fleet_tokens::FleetTokenRequest;
use crate::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    client: String,
    /// Tokens revoked; the client's dashboard sessions end too.
    tokens: u64,
}

/// Revoke every token and dashboard session of a client: its agent must
/// log in again with its password. Every server on the database refuses
/// the tokens within a second.
#[utoipa::path(post, path = "/api/v1/clients/{name}/revoke-tokens", tag = "admin",
    params(("name" = String, Path, description = "The client")),
    responses(
        (status = 200, body = Revoked),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_tokens(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<Revoked>> {
    principal.check_admin()?;
    let tokens = state.auth.revoke_tokens(&name).await?;
    Ok(Json(Revoked {
        client: name,
        tokens,
    }))
}

/// Remove a client: its name is free at once, its tokens and sessions end
/// on every server within a second, and its samples and summaries are
/// deleted in the background (whatever a request still had in flight, by
/// the next retention run).
#[utoipa::path(delete, path = "/api/v1/clients/{name}", tag = "admin",
    params(("name" = String, Path, description = "The client")),
    responses(
        (status = 204, description = "Removed; its data is being deleted"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn remove_client(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    principal.check_admin()?;
    state.auth.remove_client(&name).await?;
    state.auth.purge_removed_clients_in_background();
    Ok(StatusCode::NO_CONTENT)
}

/// What an admin asks for when creating an enrolment token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTokenRequest {
    /// What the token is for (shown in lists).
    #[serde(default)]
    note: String,
    /// Days it stays valid; absent: until revoked.
    valid_days: Option<f64>,
    /// Registrations it allows; absent: any number.
    uses: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatedTokenResponse {
    id: i64,
    /// The secret: shown only now. New clients send it as `enroll_token`.
    token: String,
}

/// An enrolment token, without its secret.
#[derive(Serialize, ToSchema)]
pub struct TokenListing {
    id: i64,
    note: String,
    /// Unix seconds.
    created_at: f64,
    /// Unix seconds; null: never.
    expires_at: Option<f64>,
    /// Null: any number.
    uses_left: Option<i64>,
    used: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TokenList {
    tokens: Vec<TokenListing>,
}

/// Create an enrolment token (`registration.mode: token`): a new client
/// registers with `POST /client` only by sending it as `enroll_token`.
#[utoipa::path(post, path = "/api/v1/enrollment-tokens", tag = "admin",
    request_body = NewTokenRequest,
    responses(
        (status = 201, body = CreatedTokenResponse),
        (status = 400, description = "A field out of range"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_enrollment_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonBody(request): JsonBody<NewTokenRequest>,
) -> Result<(StatusCode, Json<CreatedTokenResponse>)> {
    principal.check_admin()?;
    let created = state
        .auth
        .enrollment()
        .create(TokenRequest {
            note: request.note,
            valid_days: request.valid_days,
            uses: request.uses,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenResponse {
            id: created.id,
            token: created.secret,
        }),
    ))
}

/// Every enrolment token, without secrets.
#[utoipa::path(get, path = "/api/v1/enrollment-tokens", tag = "admin",
    responses(
        (status = 200, body = TokenList),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_enrollment_tokens(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<TokenList>> {
    principal.check_admin()?;
    let tokens = state.auth.enrollment().list().await?;
    Ok(Json(TokenList {
        tokens: tokens
            .into_iter()
            .map(|token| TokenListing {
                id: token.id,
                note: token.note,
                created_at: token.created_at.as_secs_f64(),
                expires_at: token.expires_at.map(UnixTime::as_secs_f64),
                uses_left: token.uses_left,
                used: token.used,
            })
            .collect(),
    }))
}

/// Revoke an enrolment token: no new client can register with it.
/// Clients it enrolled keep their own tokens.
#[utoipa::path(delete, path = "/api/v1/enrollment-tokens/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such token"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_enrollment_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    principal.check_admin()?;
    state.auth.enrollment().revoke(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What an admin asks for when creating a fleet token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFleetTokenRequest {
    /// What the token is for (shown in lists).
    #[serde(default)]
    note: String,
    /// Which hosts it may push for: `*` (default) or a pattern with `*`
    /// and `?`.
    #[serde(default = "any_host")]
    hosts: String,
    /// A push for a host not seen before creates it (default false).
    #[serde(default)]
    create_hosts: bool,
    /// An export token, for `/metrics/fleet` (default false: a push token).
    #[serde(default)]
    export: bool,
}

fn any_host() -> String {
    "*".into()
}

/// A fleet token, without its secret.
#[derive(Serialize, ToSchema)]
pub struct FleetTokenListing {
    id: i64,
    note: String,
    hosts: String,
    create_hosts: bool,
    /// An export token (reads `/metrics/fleet`) or a push token.
    export: bool,
    /// Unix seconds.
    created_at: f64,
}

#[derive(Serialize, ToSchema)]
pub struct FleetTokenList {
    tokens: Vec<FleetTokenListing>,
}

/// Create a fleet token: a push token (InfluxDB line protocol writes the
/// hosts it covers and created) or an export token (Prometheus reads
/// `/metrics/fleet` with it). See docs/integrations.md.
#[utoipa::path(post, path = "/api/v1/fleet-tokens", tag = "admin",
    request_body = NewFleetTokenRequest,
    responses(
        (status = 201, body = CreatedTokenResponse),
        (status = 400, description = "A field out of range"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn create_fleet_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    JsonBody(request): JsonBody<NewFleetTokenRequest>,
) -> Result<(StatusCode, Json<CreatedTokenResponse>)> {
    principal.check_admin()?;
    let created = state
        .auth
        .fleet_tokens()
        .create(FleetTokenRequest {
            note: request.note,
            hosts: request.hosts,
            create_hosts: request.create_hosts,
            export: request.export,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTokenResponse {
            id: created.id,
            token: created.secret,
        }),
    ))
}

/// Every fleet token, without secrets.
#[utoipa::path(get, path = "/api/v1/fleet-tokens", tag = "admin",
    responses(
        (status = 200, body = FleetTokenList),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_fleet_tokens(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<FleetTokenList>> {
    principal.check_admin()?;
    let tokens = state.auth.fleet_tokens().list().await?;
    Ok(Json(FleetTokenList {
        tokens: tokens
            .into_iter()
            .map(|token| FleetTokenListing {
                id: token.id,
                note: token.note,
                hosts: token.hosts,
                create_hosts: token.create_hosts,
                export: token.export,
                created_at: token.created_at.as_secs_f64(),
            })
            .collect(),
    }))
}

/// Revoke a fleet token: refused by every server within a second. Hosts
/// it created stay.
#[utoipa::path(delete, path = "/api/v1/fleet-tokens/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such token"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn revoke_fleet_token(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(id): Path<i64>,
) -> Result<StatusCode> {
    principal.check_admin()?;
    state.auth.fleet_tokens().revoke(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A host's labels, to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelsRequest {
    labels: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Labels {
    client: String,
    /// Sorted, without duplicates.
    labels: Vec<String>,
}

/// Set a host's labels (replacing its previous ones), to group and filter
/// the fleet by: at most 16, each 1 to 40 characters without spaces or
/// commas.
#[utoipa::path(put, path = "/api/v1/clients/{name}/labels", tag = "admin",
    params(("name" = String, Path, description = "The client")),
    request_body = LabelsRequest,
    responses(
        (status = 200, body = Labels),
        (status = 400, description = "A label is malformed, or too many"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Not an admin"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn set_labels(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<LabelsRequest>,
) -> Result<Json<Labels>> {
    principal.check_admin()?;
    let labels = state.auth.set_labels(&name, request.labels).await?;
    Ok(Json(Labels {
        client: name,
        labels,
    }))
}
