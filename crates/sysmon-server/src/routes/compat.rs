//! The original server's client API: registration, pushing a sample, and
//! reading a client's log back.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use serde_json::{json, Value};
use sysmon_core::number::MetricNumber;
use sysmon_core::{Sample, UnixTime};

use super::body::Fields;
use super::extract::{Path, Peer};
use super::{parse_bound, query_params};
use crate::error::{Error, OriginalApiError, Result};
use crate::services::metrics::Source;
use crate::state::AppState;
use crate::store::{SampleChunks, TimeRange, TokenOwner};

/// What the original API's handlers return: errors answered in its form
/// (see [`OriginalApiError`]).
type Reply<T> = std::result::Result<T, OriginalApiError>;

/// `POST /client`: register a new user, or log an existing one in.
pub async fn register(
    State(state): State<AppState>,
    Peer(peer): Peer,
    fields: Fields,
) -> Reply<Json<Value>> {
    let username = fields
        .text(&["username"])
        .ok_or(Error::UnsupportableUsername)?;
    let password = fields.text(&["pass", "password"]).unwrap_or_default();
    let enroll_token = fields.text(&["enroll_token"]);
    let login = state
        .auth
        .register_or_login(&username, &password, enroll_token.as_deref(), peer)
        .await?;
    if login.registered {
        tracing::info!(client = %username, "client registered");
        Ok(Json(
            json!({"registration": username, "client_id": login.token}),
        ))
    } else {
        Ok(Json(json!({"client_id": login.token})))
    }
}

/// `POST /client/<U>`: store one sample; 202 once it is committed.
pub async fn push_sample(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: HeaderMap,
    fields: Fields,
) -> Reply<(StatusCode, Json<Value>)> {
    let owner = authorize(&state, &headers, &username).await?;
    let sample = Sample::from_fields(fields.0, UnixTime::now())?;
    let echo = sample.echo_json();
    state
        .ingest
        .store(owner.id, vec![sample], Source::Http)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(echo)))
}

/// `/client/<U>/time`: the first and last time in the client's log.
pub async fn log_span(
    State(state): State<AppState>,
    Path(username): Path<String>,
    headers: HeaderMap,
) -> Reply<Json<Value>> {
    let owner = authorize(&state, &headers, &username).await?;
    let (start, end) = state
        .reads
        .log_span(owner.id)
        .await?
        .ok_or(Error::LogEmpty)?;
    Ok(Json(json!({"start": start, "end": end})))
}

/// `/client/<U>/time/report?start=S&end=E`: the client's samples in
/// `S..=E`, ordered by time. The real client POSTs, so a body may carry
/// `start` and `end` too; the query string wins.
pub async fn report(
    State(state): State<AppState>,
    Path(username): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    fields: Fields,
) -> Reply<Response> {
    let owner = authorize(&state, &headers, &username).await?;
    let query = query_params(query.as_deref()).map_err(|_| Error::ValueError)?;
    let bound = |name: &str| -> Result<Option<UnixTime>> {
        let text = query.get(name).cloned().or_else(|| fields.text(&[name]));
        parse_bound(text.as_deref())
    };
    let range = TimeRange {
        start: bound("start")?,
        end: bound("end")?,
    };
    let mut chunks = state.reads.report(owner.id, range).await?;
    // Awaiting the first chunk before answering gives a query that fails at
    // once a proper error status; later failures can only cut the body short.
    let first = chunks.recv().await.transpose()?.unwrap_or_default();
    let body = Body::from_stream(report_body(first, chunks));
    Ok(([(CONTENT_TYPE, "application/json")], body).into_response())
}

async fn authorize(state: &AppState, headers: &HeaderMap, username: &str) -> Result<TokenOwner> {
    let header = headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    state.auth.authorize(header, username).await
}

/// A report as `{"payload": [{"cpu", "mem", "storage", "unix_time"}...]}`
/// with unsent metrics as `null`, written chunk by chunk as the store reads
/// them, so reading and writing overlap and memory stays flat however long
/// the report.
///
/// Rows are written by hand rather than through a derived `Serialize`
/// (about twice as fast for a report of 100k rows); the numbers still go
/// through their own `Serialize`, so they print exactly as everywhere else.
fn report_body(first: Vec<Sample>, rest: SampleChunks) -> impl Stream<Item = Result<Vec<u8>>> {
    enum Part {
        Opening(Vec<Sample>, SampleChunks),
        Rows { rest: SampleChunks, wrote_any: bool },
        Finished,
    }
    stream::unfold(Part::Opening(first, rest), |part| async move {
        match part {
            Part::Opening(rows, rest) => {
                let mut out = b"{\"payload\":[".to_vec();
                write_rows(&mut out, &rows, false);
                let wrote_any = !rows.is_empty();
                Some((Ok(out), Part::Rows { rest, wrote_any }))
            }
            Part::Rows {
                mut rest,
                wrote_any,
            } => match rest.recv().await {
                Some(Ok(rows)) => {
                    let mut out = Vec::new();
                    write_rows(&mut out, &rows, wrote_any);
                    let wrote_any = wrote_any || !rows.is_empty();
                    Some((Ok(out), Part::Rows { rest, wrote_any }))
                }
                Some(Err(error)) => {
                    tracing::error!(%error, "report failed part way; its body is cut short");
                    Some((Err(error), Part::Finished))
                }
                None => Some((Ok(b"]}".to_vec()), Part::Finished)),
            },
            Part::Finished => None,
        }
    })
}

/// Appends report rows; `continuing` when rows precede them.
fn write_rows(out: &mut Vec<u8>, rows: &[Sample], continuing: bool) {
    const ROW_BYTES: usize = 72;
    out.reserve(rows.len() * ROW_BYTES);
    for (index, sample) in rows.iter().enumerate() {
        if continuing || index > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"cpu\":");
        write_metric(out, sample.cpu_load);
        out.extend_from_slice(b",\"mem\":");
        write_metric(out, sample.mem);
        out.extend_from_slice(b",\"storage\":");
        write_metric(out, sample.storage);
        out.extend_from_slice(b",\"unix_time\":");
        write_json(out, &sample.time);
        out.push(b'}');
    }
}

fn write_metric(out: &mut Vec<u8>, value: Option<f64>) {
    match value {
        Some(value) => write_json(out, &MetricNumber(value)),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_json(out: &mut Vec<u8>, value: &impl Serialize) {
    // Numbers cannot fail to serialize, and writing to a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use sysmon_core::number::json_number;

    fn sample(time_us: i64, cpu: Option<f64>, mem: Option<f64>, storage: Option<f64>) -> Sample {
        Sample {
            time: UnixTime::from_micros(time_us),
            cpu_load: cpu,
            mem,
            storage,
            extended: None,
        }
    }

    /// The whole body for a first chunk and the chunks after it.
    async fn body(first: Vec<Sample>, rest: Vec<Vec<Sample>>) -> String {
        let (sender, chunks) = tokio::sync::mpsc::channel(rest.len().max(1));
        for chunk in rest {
            sender.send(Ok(chunk)).await.unwrap();
        }
        drop(sender);
        let parts: Vec<Vec<u8>> = report_body(first, chunks)
            .map(|part| part.unwrap())
            .collect()
            .await;
        String::from_utf8(parts.concat()).unwrap()
    }

    fn expected(samples: &[Sample]) -> String {
        json!({"payload": samples.iter().map(|s| json!({
            "cpu": s.cpu_load.map(json_number),
            "mem": s.mem.map(json_number),
            "storage": s.storage.map(json_number),
            "unix_time": s.time,
        })).collect::<Vec<_>>()})
        .to_string()
    }

    #[tokio::test]
    async fn report_body_matches_serde_json_across_chunks() {
        let samples = vec![
            sample(1_700_000_000_000_000, Some(18.0), Some(20.5), Some(0.0)),
            sample(1_700_000_000_250_000, None, Some(1e300), None),
            sample(1_700_000_001_000_001, Some(99.99), None, Some(123456789.0)),
        ];
        let want = expected(&samples);
        let (head, tail) = samples.split_at(1);
        assert_eq!(body(head.to_vec(), vec![tail.to_vec()]).await, want);
        assert_eq!(body(samples.clone(), vec![]).await, want);
        assert_eq!(
            body(vec![], vec![vec![], head.to_vec(), vec![], tail.to_vec()]).await,
            want
        );
    }

    #[tokio::test]
    async fn empty_report_is_an_empty_payload() {
        assert_eq!(body(vec![], vec![]).await, r#"{"payload":[]}"#);
        assert_eq!(body(vec![], vec![vec![]]).await, r#"{"payload":[]}"#);
    }

    #[tokio::test]
    async fn a_failure_part_way_ends_the_body_with_an_error() {
        let (sender, chunks) = tokio::sync::mpsc::channel(1);
        sender
            .send(Err(Error::Internal("disk gone".into())))
            .await
            .unwrap();
        drop(sender);
        let parts: Vec<Result<Vec<u8>>> = report_body(vec![], chunks).collect().await;
        assert_eq!(parts.len(), 2, "the opening, then the error");
        assert!(parts[1].is_err());
    }
}
