//! Health for load balancers and orchestrators: `/healthz` (the process
//! answers) and `/readyz` (it should get traffic; see
//! [`crate::services::readiness`]). Neither needs a token: they say
//! nothing about the fleet.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
}

async fn alive() -> Json<serde_json::Value> {
    Json(json!({"status": "up"}))
}

/// 200 when ready, 503 with the reason when not.
async fn ready(State(state): State<AppState>) -> Response {
    let report = state.readiness.check().await;
    let status = match report.ready {
        true => StatusCode::OK,
        false => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, Json(report)).into_response()
}
