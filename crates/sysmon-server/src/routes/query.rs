//! The read side of the v1 API, for the dashboard and for scripts: the
//! fleet overview, a client's series at any resolution, CSV export, live
//! samples over WebSocket, and the server's own health. Every route takes a
//! session cookie or bearer token and checks what its principal may read.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket};
use axum::extract::{RawQuery, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HOST, ORIGIN};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sysmon_core::metrics::{charted_values, FilesystemUsage, CHARTED, METRICS};
use sysmon_core::{Sample, UnixTime};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::error::TrySendError;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Path, Upgrade};
use super::session::{request_token, Authenticated, SessionCookie};
use super::{parse_bound, parse_params, query_params};
use crate::error::{Error, Result};
use crate::services::query::{self, ClientStatus, SeriesRequest};
use crate::state::AppState;
use crate::store::{ClientId, Tier};

/// A client in the fleet overview.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClientSummary {
    name: String,
    /// Unix seconds of the first and latest sample; null before any.
    first_seen: Option<f64>,
    last_seen: Option<f64>,
    /// The client's sampling interval, from its latest samples.
    interval_seconds: Option<f64>,
    /// A sample arrived within three intervals (a minute when unknown).
    online: bool,
    /// The latest sample's metrics, by name; absent ones left out.
    latest: BTreeMap<&'static str, f64>,
    /// An admin's labels for the host.
    labels: Vec<String>,
    /// Seconds since the host booted, at its latest sample (agents send it).
    #[serde(skip_serializing_if = "Option::is_none")]
    uptime_seconds: Option<u64>,
    /// The latest sample's fullest file system, by share used (agents send
    /// every file system; the original API none).
    #[serde(skip_serializing_if = "Option::is_none")]
    fullest_filesystem: Option<FilesystemShare>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ClientList {
    clients: Vec<ClientSummary>,
}

/// The clients the caller may read, by name.
#[utoipa::path(get, path = "/api/v1/clients", tag = "query",
    responses((status = 200, body = ClientList), (status = 401, description = "Not logged in")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn list_clients(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
) -> Result<Json<ClientList>> {
    let clients = state
        .reads
        .fleet(&principal)
        .await?
        .into_iter()
        .map(summary)
        .collect();
    Ok(Json(ClientList { clients }))
}

fn summary(status: ClientStatus) -> ClientSummary {
    let latest = status
        .latest
        .as_ref()
        .map(|sample| {
            CHARTED
                .iter()
                .zip(charted_values(sample))
                .filter_map(|(metric, value)| value.map(|value| (metric.name, value)))
                .collect()
        })
        .unwrap_or_default();
    let extended = status
        .latest
        .as_ref()
        .and_then(|sample| sample.extended.as_deref());
    let fullest_filesystem = extended
        .into_iter()
        .flat_map(|extended| extended.filesystems.iter())
        .map(FilesystemShare::from)
        .filter_map(|share| Some((share.used_percent?, share)))
        .max_by(|(a, _), (b, _)| a.total_cmp(b))
        .map(|(_, share)| share);
    ClientSummary {
        uptime_seconds: extended.and_then(|extended| extended.uptime_seconds),
        fullest_filesystem,
        name: status.name,
        first_seen: status.first_seen.map(UnixTime::as_secs_f64),
        last_seen: status.last_seen.map(UnixTime::as_secs_f64),
        interval_seconds: status.interval.map(|interval| interval.as_secs_f64()),
        online: status.online,
        latest,
        labels: status.labels,
    }
}

/// Query parameters of a series.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    /// Start, unix seconds (default: an hour before `to`).
    from: Option<String>,
    /// End, unix seconds, exclusive (default: now).
    to: Option<String>,
    /// Bucket width in seconds (default: about `points` buckets).
    step: Option<String>,
    /// Roughly how many buckets when `step` is not given (default 1000).
    points: Option<String>,
    /// Comma-separated metric names (default: all).
    metrics: Option<String>,
    /// Force a tier: raw, 1m, 10m or 1h (default: chosen from the step).
    resolution: Option<String>,
}

/// Min, mean and max of one metric per bucket, aligned with `time`.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricSeries {
    min: Vec<Option<f64>>,
    avg: Vec<Option<f64>>,
    max: Vec<Option<f64>>,
}

/// A client's metrics over a range, one entry per non-empty bucket.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesResponse {
    client: String,
    /// The bucket-aligned range answered, unix seconds, `to` exclusive.
    from: f64,
    to: f64,
    /// Bucket width in seconds.
    step: f64,
    /// Where it was read from: raw, 1m, 10m or 1h.
    resolution: &'static str,
    /// Bucket starts, unix seconds.
    time: Vec<f64>,
    /// Samples in each bucket.
    count: Vec<i64>,
    metrics: BTreeMap<&'static str, MetricSeries>,
    /// Unix seconds of the client's newest sample just before this was
    /// read (null before any): a live view that buffered the samples sent
    /// meanwhile applies those after it.
    latest: Option<f64>,
}

/// The file systems of a client's latest sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct LatestFilesystems {
    /// Unix seconds of that sample; null before the first.
    time: Option<f64>,
    filesystems: Vec<FilesystemShare>,
}

/// One file system: used and total bytes, and the share used.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilesystemShare {
    mount_point: String,
    used_bytes: u64,
    total_bytes: u64,
    /// Null when the size is unknown (0).
    used_percent: Option<f64>,
}

/// Every file system the client's latest sample reported, by mount point.
#[utoipa::path(get, path = "/api/v1/clients/{name}/filesystems", tag = "query",
    params(("name" = String, Path, description = "Client name")),
    responses(
        (status = 200, body = LatestFilesystems),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "The caller may not read this client"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn filesystems(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
) -> Result<Json<LatestFilesystems>> {
    let client = state.reads.readable_client(&principal, &name).await?;
    let latest = state.reads.latest_filesystems(client).await?;
    let (time, filesystems) = match latest {
        Some((time, filesystems)) => (Some(time.as_secs_f64()), filesystems),
        None => (None, Vec::new()),
    };
    Ok(Json(LatestFilesystems {
        time,
        filesystems: filesystems.iter().map(FilesystemShare::from).collect(),
    }))
}

impl From<&FilesystemUsage> for FilesystemShare {
    fn from(fs: &FilesystemUsage) -> Self {
        FilesystemShare {
            used_percent: (fs.total_bytes > 0)
                .then(|| 100.0 * fs.used_bytes as f64 / fs.total_bytes as f64),
            mount_point: fs.mount_point.clone(),
            used_bytes: fs.used_bytes,
            total_bytes: fs.total_bytes,
        }
    }
}

/// A client's file systems over a range, one line per mount point.
#[derive(Debug, Serialize, ToSchema)]
pub struct FilesystemHistoryResponse {
    /// The range read, unix seconds, and the seconds between points: each
    /// point is the first sample of its step (disk usage moves slowly).
    from: f64,
    to: f64,
    step: f64,
    mounts: Vec<MountHistory>,
}

/// One mount point's usage over time; the arrays are parallel.
#[derive(Debug, Serialize, ToSchema)]
pub struct MountHistory {
    mount_point: String,
    /// Unix seconds.
    time: Vec<f64>,
    used_bytes: Vec<u64>,
    total_bytes: Vec<u64>,
}

/// Every file system the client reported from `from` to `to` (default:
/// the hour before now), at most 400 points per mount point.
#[utoipa::path(get, path = "/api/v1/clients/{name}/filesystems/history", tag = "query",
    params(("name" = String, Path, description = "Client name"),
           ("from" = Option<f64>, Query, description = "Start, unix seconds (default: an hour before `to`)"),
           ("to" = Option<f64>, Query, description = "End, unix seconds (default: now)")),
    responses(
        (status = 200, body = FilesystemHistoryResponse),
        (status = 400, description = "A parameter is malformed; the message names it"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "The caller may not read this client"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn filesystem_history(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<FilesystemHistoryResponse>> {
    let client = state.reads.readable_client(&principal, &name).await?;
    let params: RangeParams = parse_params(raw.as_deref())?;
    let request = SeriesRequest {
        from: range_bound("from", &params.from)?,
        to: range_bound("to", &params.to)?,
        ..SeriesRequest::default()
    };
    let history = state.reads.filesystem_history(client, &request).await?;
    let mut mounts: BTreeMap<String, MountHistory> = BTreeMap::new();
    for row in history.rows {
        let mount = mounts
            .entry(row.usage.mount_point.clone())
            .or_insert_with(|| MountHistory {
                mount_point: row.usage.mount_point,
                time: Vec::new(),
                used_bytes: Vec::new(),
                total_bytes: Vec::new(),
            });
        mount.time.push(row.time_us as f64 / 1e6);
        mount.used_bytes.push(row.usage.used_bytes);
        mount.total_bytes.push(row.usage.total_bytes);
    }
    let seconds = |micros: i64| micros as f64 / 1e6;
    Ok(Json(FilesystemHistoryResponse {
        from: seconds(history.plan.start_us),
        to: seconds(history.plan.end_us),
        step: seconds(history.plan.step_us),
        mounts: mounts.into_values().collect(),
    }))
}

/// A range's bounds, as the file-system history takes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

/// A range bound from a query parameter: unix seconds, or absent.
fn range_bound(name: &str, value: &Option<String>) -> Result<Option<UnixTime>> {
    parse_bound(value.as_deref())
        .map_err(|_| Error::BadRequest(format!("`{name}` must be unix seconds")))
}

/// A client's metrics from `from` to `to` in buckets of `step`: min, mean
/// and max each. Long ranges are answered from rollups.
#[utoipa::path(get, path = "/api/v1/clients/{name}/series", tag = "query",
    params(("name" = String, Path, description = "Client name"), SeriesParams),
    responses(
        (status = 200, body = SeriesResponse),
        (status = 400, description = "A parameter is malformed; the message names it"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "The caller may not read this client"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn series(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<SeriesResponse>> {
    let client = state.reads.readable_client(&principal, &name).await?;
    let params: SeriesParams = parse_params(raw.as_deref())?;
    let request = series_request(&params)?;
    let series = state.reads.series(client, &request).await?;
    let seconds = |micros: i64| micros as f64 / 1e6;
    let mut metrics = BTreeMap::new();
    for &index in &series.metrics {
        let summaries = series.buckets.iter().map(|bucket| bucket.metrics[index]);
        metrics.insert(
            CHARTED[index].name,
            MetricSeries {
                min: summaries.clone().map(|s| s.min).collect(),
                avg: summaries.clone().map(|s| s.mean()).collect(),
                max: summaries.map(|s| s.max).collect(),
            },
        );
    }
    Ok(Json(SeriesResponse {
        client: name,
        from: seconds(series.plan.start_us),
        to: seconds(series.plan.end_us),
        step: seconds(series.plan.step_us),
        resolution: series.plan.tier.label(),
        time: series.buckets.iter().map(|b| seconds(b.start_us)).collect(),
        count: series.buckets.iter().map(|b| b.sample_count).collect(),
        metrics,
        latest: series.latest.map(UnixTime::as_secs_f64),
    }))
}

fn series_request(params: &SeriesParams) -> Result<SeriesRequest> {
    let step = match params.step.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<f64>()
                .ok()
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .ok_or_else(|| Error::BadRequest("`step` must be a number of seconds".into()))?,
        ),
    };
    let points = match params.points.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|_| Error::BadRequest("`points` must be a whole number".into()))?,
        ),
    };
    let resolution = match params.resolution.as_deref().map(str::trim) {
        None | Some("") | Some("auto") => None,
        Some(label) => Some(Tier::from_label(label).ok_or_else(|| {
            Error::BadRequest(format!(
                "unknown resolution `{label}`; use raw, 1m, 10m, 1h or auto"
            ))
        })?),
    };
    Ok(SeriesRequest {
        from: range_bound("from", &params.from)?,
        to: range_bound("to", &params.to)?,
        step,
        points,
        resolution,
        metrics: query::parse_metrics(params.metrics.as_deref().unwrap_or(""))?,
    })
}

/// Range of a CSV export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Start, unix seconds, inclusive (default: a day before `to`).
    from: Option<String>,
    /// End, unix seconds, inclusive (default: now).
    to: Option<String>,
}

/// Every metric of every raw sample in a range, as CSV (one row per
/// sample, file systems left out).
#[utoipa::path(get, path = "/api/v1/clients/{name}/export.csv", tag = "query",
    params(("name" = String, Path, description = "Client name"), ExportParams),
    responses(
        (status = 200, description = "CSV with a header row", content_type = "text/csv"),
        (status = 400, description = "A bound is not unix seconds"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "The caller may not read this client"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn export_csv(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let client = state.reads.readable_client(&principal, &name).await?;
    let params: ExportParams = parse_params(raw.as_deref())?;
    let bound = |key: &str, value: &Option<String>| {
        parse_bound(value.as_deref())
            .map_err(|_| Error::BadRequest(format!("`{key}` must be unix seconds")))
    };
    let pages = state
        .reads
        .export(
            client,
            bound("from", &params.from)?,
            bound("to", &params.to)?,
        )
        .await?;
    let header = csv_row(csv_header())?;
    let rows = pages.map(|samples| {
        let mut text = Vec::new();
        for sample in &samples? {
            text.extend(csv_row(sample_fields(sample))?);
        }
        Ok(text)
    });
    let body = futures_util::stream::once(async move { Ok(header) }).chain(rows);
    let filename = format!(
        "attachment; filename=\"{}.csv\"",
        name.replace(
            |c: char| !c.is_ascii_alphanumeric() && c != '-' && c != '_',
            "_"
        )
    );
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (CONTENT_DISPOSITION, filename),
        ],
        Body::from_stream(body.map(|chunk: Result<Vec<u8>>| {
            chunk.map_err(|error| {
                // The status line is long gone: the client sees a cut-off
                // download, and the log says why.
                tracing::error!(%error, "CSV export failed midway");
                std::io::Error::other(error.to_string())
            })
        })),
    )
        .into_response())
}

/// `time`, then every metric by name.
fn csv_header() -> impl Iterator<Item = String> {
    std::iter::once("time".to_owned()).chain(METRICS.iter().map(|metric| metric.name.to_owned()))
}

/// A sample's time and every metric; an absent one is an empty field.
fn sample_fields(sample: &Sample) -> impl Iterator<Item = String> + '_ {
    let values = METRICS.iter().map(|metric| {
        metric
            .get(sample)
            .map(|value| value.to_string())
            .unwrap_or_default()
    });
    std::iter::once(sample.time.to_json().to_string()).chain(values)
}

fn csv_row(fields: impl Iterator<Item = String>) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record(fields)
        .map_err(|e| Error::Internal(format!("CSV: {e}")))?;
    writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("CSV: {e}")))
}

/// The server's own health, for the dashboard's server page.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServerHealth {
    version: &'static str,
    /// sqlite or postgresql
    store: &'static str,
    /// Unix seconds.
    started_at: f64,
    uptime_seconds: f64,
    host: HostHealth,
    ingest: IngestHealth,
    /// Registered clients.
    clients: u64,
    /// With `?history=1`: the server's own readings of the last 15 minutes
    /// (one a second), oldest first, for its charts.
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<ServerHistory>,
}

/// Columns of readings: unix seconds, cpu %, memory used %.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ServerHistory {
    time: Vec<f64>,
    cpu_percent: Vec<f64>,
    memory_percent: Vec<Option<f64>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HostHealth {
    cpu_percent: f64,
    memory_used_bytes: u64,
    memory_total_bytes: u64,
    storage_used_bytes: u64,
    storage_total_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IngestHealth {
    /// Samples stored since the server started.
    samples_acknowledged: u64,
    /// Requests waiting for a writer.
    queue_depth: u64,
    open_websockets: u64,
}

/// The server's version, store, uptime, host load and ingest figures.
#[utoipa::path(get, path = "/api/v1/server", tag = "query",
    params(("history" = Option<bool>, Query, description = "1: include the last 15 minutes of readings")),
    responses(
        (status = 200, body = ServerHealth),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "Only admins"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn server_health(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    RawQuery(raw): RawQuery,
) -> Result<Json<ServerHealth>> {
    principal.check_admin()?;
    let with_history = query_params(raw.as_deref())?
        .get("history")
        .is_some_and(|value| value == "1" || value == "true");
    let history = with_history.then(|| {
        let mut columns = ServerHistory::default();
        for reading in state.monitor.history() {
            columns.time.push(reading.time);
            columns.cpu_percent.push(reading.cpu_percent);
            columns.memory_percent.push(reading.memory_percent);
        }
        columns
    });
    let host = state.monitor.latest();
    let ingest = state.metrics.ingest_snapshot();
    let started = state.started_at.timestamp_micros() as f64 / 1e6;
    Ok(Json(ServerHealth {
        version: env!("CARGO_PKG_VERSION"),
        store: state.reads.store_kind(),
        started_at: started,
        uptime_seconds: (UnixTime::now().as_secs_f64() - started).max(0.0),
        host: HostHealth {
            cpu_percent: host.cpu_load,
            memory_used_bytes: host.memory.used,
            memory_total_bytes: host.memory.total,
            storage_used_bytes: host.storage.used,
            storage_total_bytes: host.storage.total,
        },
        ingest: IngestHealth {
            samples_acknowledged: ingest.samples_stored,
            queue_depth: ingest.queue_depth,
            open_websockets: ingest.open_websockets,
        },
        clients: state.reads.count_clients().await?,
        history,
    }))
}

/// A WebSocket of the client's samples as they are stored:
/// `{"type": "SAMPLE", "client", "time", "values": {metric: value}}`.
#[utoipa::path(get, path = "/api/v1/clients/{name}/live", tag = "query",
    params(("name" = String, Path, description = "Client name")),
    responses(
        (status = 101, description = "WebSocket upgrade"),
        (status = 401, description = "Not logged in"),
        (status = 403, description = "The caller may not read this client"),
        (status = 404, description = "No such client"),
    ),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn live(
    State(state): State<AppState>,
    Authenticated(principal): Authenticated,
    Path(name): Path<String>,
    session_cookie: SessionCookie,
    headers: HeaderMap,
    Upgrade(upgrade): Upgrade,
) -> Result<Response> {
    check_same_origin(&headers, session_cookie.secure)?;
    let client = state.reads.readable_client(&principal, &name).await?;
    let token = request_token(&headers, session_cookie).unwrap_or_default();
    Ok(upgrade
        .max_message_size(4096)
        .on_upgrade(move |socket| stream_live(socket, state, client, name, token)))
}

/// Browsers send their page's origin with a WebSocket upgrade and apply no
/// same-origin rule to it, so a page of another site on the same domain
/// could open one with the user's cookie. Only this server's own pages may
/// (clients without a browser send no Origin).
fn check_same_origin(headers: &HeaderMap, secure: bool) -> Result<()> {
    let Some(origin) = headers.get(ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .ok()
        .and_then(|origin| origin.split_once("://"));
    let host = headers.get(HOST).and_then(|host| host.to_str().ok());
    // Over HTTPS, a page served over plain HTTP is another origin.
    let scheme_ok = |scheme: &str| !secure || scheme.eq_ignore_ascii_case("https");
    match (origin, host) {
        (Some((scheme, origin)), Some(host))
            if scheme_ok(scheme) && origin.eq_ignore_ascii_case(host) =>
        {
            Ok(())
        }
        _ => Err(Error::Forbidden(
            "cross-origin WebSocket refused: open it from this server's dashboard".into(),
        )),
    }
}

/// How often a live socket checks that its session still may read.
const LIVE_RECHECK: Duration = Duration::from_secs(30);
/// A live socket's own samples waiting to be sent; past it, newer samples
/// are dropped for that socket (its chart refetches on reconnect).
const LIVE_SOCKET_QUEUE: usize = 256;

/// Takes one client's samples from every commit as it is published, so the
/// shared channel never waits on a socket.
fn follow_client(
    mut committed: tokio::sync::broadcast::Receiver<crate::services::ingest::Committed>,
    client: ClientId,
) -> (tokio::sync::mpsc::Receiver<Sample>, AbortOnDrop) {
    let (samples, queue) = tokio::sync::mpsc::channel(LIVE_SOCKET_QUEUE);
    let task = tokio::spawn(async move {
        loop {
            match committed.recv().await {
                Ok(rows) => {
                    for row in rows.iter().filter(|row| row.client == client) {
                        match samples.try_send(row.sample.clone()) {
                            Ok(()) | Err(TrySendError::Full(_)) => {}
                            Err(TrySendError::Closed(_)) => return,
                        }
                    }
                }
                // Fell behind: skip ahead; the chart refetches on reconnect.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    });
    (queue, AbortOnDrop(task))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn stream_live(
    socket: WebSocket,
    state: AppState,
    client: ClientId,
    name: String,
    token: String,
) {
    let _open = state.metrics.websocket_opened();
    let (mut samples, _following) = follow_client(state.ingest.subscribe(), client);
    let (mut sink, mut incoming) = socket.split();
    // From here on every sample reaches this socket; the page reads what
    // it may have missed before (see `SeriesResponse::latest`).
    if sink
        .send(Message::Text(r#"{"type":"READY"}"#.into()))
        .await
        .is_err()
    {
        return;
    }
    let mut recheck = tokio::time::interval(LIVE_RECHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            // A logout, a removed user or an expired session ends the feed.
            _ = recheck.tick() => {
                let allowed = state.auth.principal(&token).await.is_ok_and(|p| p.may_read(&name));
                if !allowed {
                    break;
                }
            },
            sample = samples.recv() => match sample {
                Some(sample) => {
                    let message = live_message(&name, &sample);
                    if sink.send(Message::Text(message.into())).await.is_err() {
                        return;
                    }
                }
                None => break,
            },
            frame = incoming.next() => match frame {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
            _ = state.shutdown.cancelled() => break,
        }
    }
    let _ = sink.send(Message::Close(None)).await;
}

fn live_message(client: &str, sample: &Sample) -> String {
    let values: BTreeMap<&str, f64> = CHARTED
        .iter()
        .zip(charted_values(sample))
        .filter_map(|(metric, value)| value.map(|value| (metric.name, value)))
        .collect();
    json!({
        "type": "SAMPLE",
        "client": client,
        "time": sample.time.as_secs_f64(),
        "values": values,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::services::query::RetentionConfig;

    fn origin_headers(origin: &str, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, origin.parse().unwrap());
        headers.insert(HOST, host.parse().unwrap());
        headers
    }

    #[test]
    fn live_sockets_open_only_from_the_same_origin() {
        let same = origin_headers("https://mon.example:5000", "mon.example:5000");
        assert!(check_same_origin(&same, true).is_ok());
        assert!(check_same_origin(&same, false).is_ok());
        let plain = origin_headers("http://mon.example:5000", "mon.example:5000");
        assert!(check_same_origin(&plain, false).is_ok());
        assert!(
            check_same_origin(&plain, true).is_err(),
            "an HTTP page against HTTPS"
        );
        let other = origin_headers("https://evil.example", "mon.example:5000");
        assert!(check_same_origin(&other, true).is_err());
        assert!(
            check_same_origin(&HeaderMap::new(), true).is_ok(),
            "no Origin: not a browser"
        );
    }

    /// Query strings as a browser or a script might send them, and noise.
    fn query_string() -> impl Strategy<Value = String> {
        let value = prop_oneof![
            "-?[0-9]{0,12}(\\.[0-9]{0,8})?",
            Just("1e308".to_owned()),
            Just("NaN".to_owned()),
            Just("inf".to_owned()),
            Just("0.001".to_owned()),
            Just("946684800".to_owned()),
            "[a-z_,0-9]{0,20}",
            any::<String>(),
        ];
        let pair = (
            prop::sample::select(vec![
                "from",
                "to",
                "step",
                "points",
                "metrics",
                "resolution",
                "x",
            ]),
            value,
        );
        prop_oneof![
            prop::collection::vec(pair, 0..7).prop_map(|pairs| {
                pairs
                    .into_iter()
                    .map(|(key, value)| format!("{key}={}", urlencode(&value)))
                    .collect::<Vec<_>>()
                    .join("&")
            }),
            any::<String>(),
        ]
    }

    fn urlencode(text: &str) -> String {
        serde_urlencoded::to_string([("v", text)])
            .map(|encoded| encoded.trim_start_matches("v=").to_owned())
            .unwrap_or_default()
    }

    proptest! {
        /// Whatever the query, a series request is planned or refused with
        /// a 400, and a plan never asks for more buckets than allowed.
        #[test]
        fn series_queries_are_planned_or_refused(query in query_string()) {
            let Ok(params) = parse_params::<SeriesParams>(Some(&query)) else {
                return Ok(());
            };
            let request = match series_request(&params) {
                Ok(request) => request,
                Err(error) => {
                    prop_assert_eq!(error.status().as_u16(), 400);
                    return Ok(());
                }
            };
            let now_us = 1_764_000_000_000_000;
            match query::plan(&request, &RetentionConfig::default(), now_us) {
                Ok(plan) => {
                    prop_assert!(plan.start_us < plan.end_us);
                    prop_assert!(plan.step_us >= 1_000);
                    let buckets = (plan.end_us - plan.start_us) / plan.step_us;
                    prop_assert!(buckets <= query::MAX_BUCKETS, "{} buckets", buckets);
                }
                Err(error) => prop_assert_eq!(error.status().as_u16(), 400),
            }
        }
    }
}
