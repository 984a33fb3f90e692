//! What only dashboard admins may do to clients.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use axum::http::StatusCode;

use super::extract::Path;
use super::session::Authenticated;
use crate::error::Result;
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
