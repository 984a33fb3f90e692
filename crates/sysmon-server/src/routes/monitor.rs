//! The server's own health (`/monitor/...`, also under `/api`), the API
//! banner and start time.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use sysmon_core::host::{CpuInfo, MemoryInfo, StorageInfo};
use sysmon_core::Units;

use super::{query_params, work_time};
use crate::error::{Error, Result};
use crate::state::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/monitor/cpu/load", get(cpu_load))
        .route("/monitor/cpu/info", get(cpu_info))
        .route("/monitor/memory/info", get(memory_info))
        .route("/monitor/memory/total", get(memory_total))
        .route("/monitor/storage/info", get(storage_info))
        .route("/monitor/storage/total", get(storage_total))
}

/// `?interval=S` measures over S seconds (at most 10); without it the
/// background sampler's last one-second reading answers at once.
async fn cpu_load(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Value>> {
    let query = query_params(query.as_deref())?;
    let interval = match query.get("interval").map(|text| text.trim()) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<f64>()
                .ok()
                .filter(|seconds| seconds.is_finite() && *seconds >= 0.0)
                .ok_or_else(|| {
                    Error::BadRequest("interval must be a non-negative number of seconds (longer waits are capped at 10)".into())
                })?,
        ),
    };
    let load = match interval {
        Some(seconds) if seconds > 0.0 => {
            state
                .monitor
                .cpu_load_over(Duration::from_secs_f64(seconds.min(10.0)))
                .await
        }
        _ => state.monitor.latest().cpu_load,
    };
    Ok(Json(json!({"load": load})))
}

async fn cpu_info(State(state): State<AppState>) -> Json<CpuInfo> {
    Json(state.monitor.cpu_info())
}

async fn memory_info(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<MemoryInfo>> {
    let units = units(query.as_deref())?;
    Ok(Json(state.monitor.memory().in_units(units)))
}

async fn memory_total(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let units = units(query.as_deref())?;
    let memory = state.monitor.memory().in_units(units);
    Ok(Json(
        json!({"total": memory.total, "units": units.as_str()}),
    ))
}

#[derive(Serialize)]
struct StorageWithUnits {
    #[serde(flatten)]
    storage: StorageInfo,
    units: &'static str,
}

async fn storage_info(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<StorageWithUnits>> {
    let units = units(query.as_deref())?;
    Ok(Json(StorageWithUnits {
        storage: state.monitor.storage()?.in_units(units),
        units: units.as_str(),
    }))
}

async fn storage_total(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let units = units(query.as_deref())?;
    let storage = state.monitor.storage()?.in_units(units);
    Ok(Json(
        json!({"total": storage.total, "used": storage.used, "units": units.as_str()}),
    ))
}

/// `?units=` (TB GB MB KB B), GB when absent.
fn units(query: Option<&str>) -> Result<Units> {
    match query_params(query)?.get("units") {
        None => Ok(Units::default()),
        Some(text) => text
            .parse()
            .map_err(|e: sysmon_core::units::UnknownUnits| Error::BadRequest(e.to_string())),
    }
}

pub async fn api_info() -> Json<Value> {
    Json(json!({"name": "system monitor", "version": env!("CARGO_PKG_VERSION")}))
}

/// When the server started, and the time now.
pub async fn start_time(State(state): State<AppState>) -> Json<Value> {
    Json(work_time(state.started_at).to_json())
}
