//! One simulated client: its connection, its send loop and what it learned
//! (the times of the samples the server acknowledged).
//!
//! Each client is one lightweight tokio task with its own connection: a
//! reqwest client holding one keep-alive connection, or one WebSocket. It
//! sends one request at a time and waits for its acknowledgement before the
//! next (the original clients work that way too).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use sysmon_core::error_reply::ErrorCode;
use sysmon_core::v1::BatchAck;
use sysmon_core::ws::error_reply;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::Message;

use crate::clock::{base_time, now_micros, SampleClock};
use crate::net::{self, WsStream};
use crate::options::{Length, Mode, Plan};
use crate::payload::{self, Reading};
use crate::stats::{FailureKind, Stats};
use crate::users::User;
use crate::walk::HostWalk;

/// Resending a 503'd sample stops after this many tries.
pub const MAX_RETRIES: u32 = 20;

/// What every client shares.
pub struct Context {
    pub plan: Arc<Plan>,
    pub stats: Arc<Stats>,
    /// For WebSocket clients: the server's address and `host:port`.
    pub ws_server: Option<(SocketAddr, String)>,
    /// Bounds connections being opened at once before the start.
    pub connect_gate: Arc<Semaphore>,
    /// Counts the clients ready to start (connected, or failed to).
    pub ready: AtomicUsize,
    /// Woken by each client that becomes ready.
    pub ready_signal: Notify,
    /// Becomes the start instant when every client is ready.
    pub start: watch::Receiver<Option<Instant>>,
}

/// What a client reports when it is done.
#[derive(Debug, Clone)]
pub struct ClientReport {
    pub index: usize,
    pub user: User,
    /// Times (unix µs) of the samples the server acknowledged, in sending
    /// order (only kept when the run ends with a check).
    pub acked: Vec<i64>,
}

/// The result of one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Acked { duplicates: u64 },
    Overloaded { retry_after: Duration },
    Failed(FailureKind),
}

/// Runs client `index` from connecting to its last acknowledgement.
pub async fn run_client(index: usize, user: User, context: Arc<Context>) -> ClientReport {
    let plan = context.plan.clone();
    let stats = context.stats.clone();
    let local = (!plan.source_addresses.is_empty())
        .then(|| plan.source_addresses[index % plan.source_addresses.len()]);
    let mut report = ClientReport {
        index,
        user,
        acked: Vec::new(),
    };

    // Set up, then report ready whatever happened: the run waits for all.
    let transport = {
        let _permit = context.connect_gate.acquire().await;
        Transport::open(&context, &report.user, local).await
    };
    context.ready.fetch_add(1, Ordering::SeqCst);
    context.ready_signal.notify_one();
    let mut transport = match transport {
        Ok(transport) => transport,
        Err(kind) => {
            stats.failed(0, &kind);
            return report;
        }
    };
    let mut start_signal = context.start.clone();
    let start = match start_signal.wait_for(Option::is_some).await {
        Ok(start) => start.unwrap_or_else(Instant::now),
        Err(_) => return report,
    };

    let deadline = match plan.length {
        Length::Duration(duration) => Some(start + duration),
        Length::Count(_) => None,
    };
    let mut ticker = plan.request_period().map(|period| {
        // Spread the clients over the first period instead of all at once.
        let offset = period.mul_f64(rand::random::<f64>());
        let mut ticker = tokio::time::interval_at(start + offset, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        ticker
    });
    // History starts where it was told to, whatever the user already
    // holds: the server reports any time it has as a duplicate.
    let base = plan.start_micros.unwrap_or_else(|| {
        base_time(
            now_micros(),
            report.user.last_stored_micros,
            plan.time_step_us,
        )
    });
    let mut clock = SampleClock::new(base, plan.time_step_us);
    let mut walk = plan.start_micros.map(|_| HostWalk::new(index));
    let mut quota = plan.quota(index);
    let keep_times = plan.check.is_some();
    let mut batch: Vec<(i64, Reading)> = Vec::with_capacity(plan.batch_size);
    let mut backoff = Duration::ZERO;

    'run: loop {
        if quota == Some(0) {
            break;
        }
        if let Some(ticker) = ticker.as_mut() {
            match deadline {
                Some(deadline) => tokio::select! {
                    _ = ticker.tick() => {}
                    _ = tokio::time::sleep_until(deadline) => break,
                },
                None => {
                    ticker.tick().await;
                }
            }
        }
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break;
        }

        let size = quota.map_or(plan.batch_size as u64, |left| {
            left.min(plan.batch_size as u64)
        });
        let now = now_micros();
        batch.clear();
        for _ in 0..size {
            let sequence = clock.issued();
            match clock.next(now) {
                Ok(time) => {
                    let reading = match walk.as_mut() {
                        Some(walk) => walk.next(time),
                        None => Reading::synthetic(index, sequence),
                    };
                    batch.push((time, reading));
                }
                Err(_) => {
                    stats.failed(size, &FailureKind::TimeBudget);
                    break 'run;
                }
            }
        }
        if let Some(left) = quota.as_mut() {
            *left -= size;
        }

        let mut retries = 0;
        loop {
            let sent = Instant::now();
            match transport.send(&batch).await {
                Outcome::Acked { duplicates } => {
                    stats.acked(size, duplicates, sent.elapsed());
                    if keep_times {
                        report.acked.extend(batch.iter().map(|(time, _)| *time));
                    }
                    backoff = Duration::ZERO;
                }
                Outcome::Overloaded { retry_after } => {
                    stats.overloaded(size);
                    let in_time =
                        deadline.is_none_or(|deadline| Instant::now() + retry_after < deadline);
                    if plan.retry_503 && retries < MAX_RETRIES && in_time {
                        retries += 1;
                        stats.retried();
                        tokio::time::sleep(retry_after).await;
                        continue;
                    }
                }
                Outcome::Failed(kind) => {
                    stats.failed(size, &kind);
                    if matches!(
                        kind,
                        FailureKind::Connect
                            | FailureKind::Closed
                            | FailureKind::Timeout
                            | FailureKind::Request
                    ) {
                        // Do not hammer a server that is not there.
                        backoff =
                            (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(2));
                        let wake = Instant::now() + backoff;
                        match deadline {
                            Some(deadline) if wake >= deadline => break 'run,
                            _ => tokio::time::sleep_until(wake).await,
                        }
                    }
                }
            }
            break;
        }
    }
    transport.close().await;
    report
}

enum Transport {
    Http(HttpSender),
    Ws(Box<WsSender>),
}

impl Transport {
    async fn open(
        context: &Context,
        user: &User,
        local: Option<IpAddr>,
    ) -> Result<Transport, FailureKind> {
        let plan = &context.plan;
        match (plan.mode, &context.ws_server) {
            (Mode::Ws, Some((server, authority))) => {
                let mut sender = WsSender {
                    stream: None,
                    server: *server,
                    authority: authority.clone(),
                    local,
                    timeout: plan.timeout,
                    token: user.token.clone(),
                    stats: context.stats.clone(),
                };
                // A failed first connection is counted; the loop retries.
                if let Err(kind) = sender.connect().await {
                    context.stats.failed(0, &kind);
                }
                Ok(Transport::Ws(Box::new(sender)))
            }
            (Mode::Ws, None) => Err(FailureKind::Connect),
            (mode, _) => {
                let sender = HttpSender::new(plan, user, local, mode)?;
                sender.warm_up(plan).await;
                Ok(Transport::Http(sender))
            }
        }
    }

    async fn send(&mut self, batch: &[(i64, Reading)]) -> Outcome {
        match self {
            Transport::Http(sender) => sender.send(batch).await,
            Transport::Ws(sender) => sender.send(batch).await,
        }
    }

    async fn close(&mut self) {
        if let Transport::Ws(sender) = self {
            sender.close().await;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpKind {
    Form,
    Json,
    V1,
    Influx,
    RemoteWrite,
}

struct HttpSender {
    client: reqwest::Client,
    url: String,
    authorization: Option<HeaderValue>,
    kind: HttpKind,
    /// The escaped host tag, for line protocol.
    host_tag: String,
}

impl HttpSender {
    fn new(
        plan: &Plan,
        user: &User,
        local: Option<IpAddr>,
        mode: Mode,
    ) -> Result<HttpSender, FailureKind> {
        let client = net::http_client(local, plan.timeout).map_err(|_| FailureKind::Request)?;
        let (kind, url, authorization) = match mode {
            Mode::HttpForm | Mode::HttpJson => (
                if mode == Mode::HttpForm {
                    HttpKind::Form
                } else {
                    HttpKind::Json
                },
                format!("{}/client/{}", plan.url, user.username),
                Some(user.token.clone()),
            ),
            Mode::V1Batch => (
                HttpKind::V1,
                format!("{}/api/v1/samples", plan.url),
                Some(format!("Bearer {}", user.token)),
            ),
            Mode::Influx | Mode::Ws => (
                HttpKind::Influx,
                format!("{}/write?db={}", plan.url, plan.influx_db),
                plan.token.as_ref().map(|token| format!("Bearer {token}")),
            ),
            Mode::RemoteWrite => (
                HttpKind::RemoteWrite,
                format!("{}{}", plan.url, plan.remote_write_path),
                plan.token.as_ref().map(|token| format!("Bearer {token}")),
            ),
        };
        let authorization = authorization
            .map(|value| HeaderValue::from_str(&value).map_err(|_| FailureKind::BadReply))
            .transpose()?;
        Ok(HttpSender {
            client,
            url,
            authorization,
            kind,
            host_tag: payload::escape_tag(&user.username),
        })
    }

    /// Opens the keep-alive connection before the start, so that the run
    /// measures samples, not connection setup. Failures show in the run.
    async fn warm_up(&self, plan: &Plan) {
        let path = if self.kind == HttpKind::Influx {
            "/ping"
        } else {
            "/api"
        };
        if let Ok(response) = self.client.get(format!("{}{path}", plan.url)).send().await {
            let _ = response.bytes().await;
        }
    }

    async fn send(&self, batch: &[(i64, Reading)]) -> Outcome {
        let Some((time, reading)) = batch.first() else {
            return Outcome::Acked { duplicates: 0 };
        };
        let (body, content_type): (Vec<u8>, &str) = match self.kind {
            HttpKind::Form => (
                payload::form_body(*time, reading).into_bytes(),
                "application/x-www-form-urlencoded",
            ),
            HttpKind::Json => (
                payload::json_object(*time, reading).into_bytes(),
                "application/json",
            ),
            HttpKind::V1 => match payload::v1_batch(batch) {
                Ok(body) => (body, "application/json"),
                Err(_) => return Outcome::Failed(FailureKind::BadReply),
            },
            HttpKind::Influx => {
                let mut lines = String::with_capacity(batch.len() * 96);
                for (time, reading) in batch {
                    payload::influx_line(&mut lines, &self.host_tag, *time, reading);
                }
                (lines.into_bytes(), "text/plain; charset=utf-8")
            }
            HttpKind::RemoteWrite => (
                payload::remote_write(&self.host_tag, batch),
                "application/x-protobuf",
            ),
        };
        let mut request = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        if self.kind == HttpKind::RemoteWrite {
            request = request
                .header("Content-Encoding", "snappy")
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Outcome::Failed(classify(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .filter(|seconds| seconds.is_finite() && *seconds >= 0.0 && *seconds < 3600.0)
            .map_or(Duration::from_secs(1), Duration::from_secs_f64);
        // Read the whole body, so that the connection can be used again.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Outcome::Failed(classify(&e)),
        };
        match (self.kind, status) {
            (_, StatusCode::SERVICE_UNAVAILABLE) => Outcome::Overloaded { retry_after },
            (HttpKind::Form | HttpKind::Json, StatusCode::ACCEPTED) => {
                Outcome::Acked { duplicates: 0 }
            }
            (HttpKind::V1, StatusCode::OK) => match serde_json::from_slice::<BatchAck>(&body) {
                Ok(ack) if ack.stored.len() + ack.duplicates.len() == batch.len() => {
                    Outcome::Acked {
                        duplicates: ack.duplicates.len() as u64,
                    }
                }
                _ => Outcome::Failed(FailureKind::BadReply),
            },
            (HttpKind::Influx | HttpKind::RemoteWrite, status) if status.is_success() => {
                Outcome::Acked { duplicates: 0 }
            }
            (_, status) => Outcome::Failed(FailureKind::Status(status.as_u16())),
        }
    }
}

/// Sorts a transport error into a counted kind.
fn classify(error: &reqwest::Error) -> FailureKind {
    if error.is_timeout() {
        FailureKind::Timeout
    } else if error.is_connect() {
        FailureKind::Connect
    } else if error.is_request() || error.is_body() {
        FailureKind::Closed
    } else {
        FailureKind::Request
    }
}

struct WsSender {
    stream: Option<WsStream>,
    server: SocketAddr,
    authority: String,
    local: Option<IpAddr>,
    timeout: Duration,
    token: String,
    stats: Arc<Stats>,
}

/// The `type` of a server message.
#[derive(Deserialize)]
struct WsReply {
    #[serde(rename = "type")]
    kind: String,
}

/// What the server's reply to a CLIENT_DATA means, decided on the ERROR's
/// `code`, never on its text. The codes a `503` carries over HTTP (busy,
/// stopping, store out of reach) are the ones resent, as over HTTP; any
/// other ERROR is a failure.
fn ws_outcome(reply: &str) -> Outcome {
    let Ok(reply) = serde_json::from_str::<Value>(reply) else {
        return Outcome::Failed(FailureKind::BadReply);
    };
    match reply.get("type").and_then(Value::as_str) {
        Some("DATA_RETURN") => Outcome::Acked { duplicates: 0 },
        Some("ERROR") => {
            let error = error_reply(&reply);
            match error.code {
                Some(
                    ErrorCode::Overloaded
                    | ErrorCode::ShuttingDown
                    | ErrorCode::StoreUnavailable
                    | ErrorCode::TimedOut,
                ) => Outcome::Overloaded {
                    retry_after: Duration::from_secs(1),
                },
                _ => Outcome::Failed(FailureKind::WsError(error.error)),
            }
        }
        _ => Outcome::Failed(FailureKind::BadReply),
    }
}

impl WsSender {
    /// Opens the WebSocket and greets the server (HELLO → WELCOME).
    async fn connect(&mut self) -> Result<(), FailureKind> {
        let mut stream = net::ws_connect(self.server, &self.authority, self.local, self.timeout)
            .await
            .map_err(|e| match e {
                net::ConnectError::Timeout => FailureKind::Timeout,
                _ => FailureKind::Connect,
            })?;
        let reply = tokio::time::timeout(self.timeout, exchange(&mut stream, payload::WS_HELLO))
            .await
            .map_err(|_| FailureKind::Timeout)??;
        match serde_json::from_str::<WsReply>(&reply) {
            Ok(reply) if reply.kind == "WELCOME" => {
                self.stream = Some(stream);
                self.stats.connection_opened();
                Ok(())
            }
            _ => Err(FailureKind::BadReply),
        }
    }

    fn drop_connection(&mut self) {
        if self.stream.take().is_some() {
            self.stats.connection_closed();
        }
    }

    async fn send(&mut self, batch: &[(i64, Reading)]) -> Outcome {
        let Some((time, reading)) = batch.first() else {
            return Outcome::Acked { duplicates: 0 };
        };
        if self.stream.is_none() {
            if let Err(kind) = self.connect().await {
                return Outcome::Failed(kind);
            }
        }
        let Some(stream) = self.stream.as_mut() else {
            return Outcome::Failed(FailureKind::Connect);
        };
        let message = payload::ws_client_data(*time, reading, &self.token);
        let reply = match tokio::time::timeout(self.timeout, exchange(stream, &message)).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(kind)) => {
                self.drop_connection();
                return Outcome::Failed(kind);
            }
            Err(_) => {
                // The reply may still come and would answer the next message.
                self.drop_connection();
                return Outcome::Failed(FailureKind::Timeout);
            }
        };
        ws_outcome(&reply)
    }

    async fn close(&mut self) {
        if let Some(mut stream) = self.stream.take() {
            self.stats.connection_closed();
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.close(None)).await;
        }
    }
}

/// Sends one text frame and returns the next text frame received.
async fn exchange(stream: &mut WsStream, text: &str) -> Result<String, FailureKind> {
    stream
        .send(Message::text(text))
        .await
        .map_err(|_| FailureKind::Closed)?;
    loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Err(FailureKind::Closed),
            // Pings are answered by the library; nothing else is expected.
            Some(Ok(_)) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn websocket_replies_are_decided_on_codes() {
        for code in ["overloaded", "shutting_down", "store_unavailable"] {
            let reply = json!({"type": "ERROR", "reason": "whatever", "code": code});
            assert_eq!(
                ws_outcome(&reply.to_string()),
                Outcome::Overloaded {
                    retry_after: Duration::from_secs(1)
                },
                "{code}"
            );
        }
        for reply in [
            json!({"type": "ERROR", "reason": "internal server error", "code": "internal"}),
            json!({"type": "ERROR", "reason": "sample 0: bad", "code": "invalid_sample", "index": 0}),
            // The text is not read: without a code this is no overload.
            json!({"type": "ERROR", "reason": "the server is busy storing earlier samples; retry shortly"}),
            json!({"type": "ERROR", "reason": "authorization error"}),
        ] {
            let reason = reply["reason"].as_str().unwrap().to_owned();
            assert_eq!(
                ws_outcome(&reply.to_string()),
                Outcome::Failed(FailureKind::WsError(reason))
            );
        }
        assert_eq!(
            ws_outcome(r#"{"type": "DATA_RETURN", "data": {"cpu_load": 1}}"#),
            Outcome::Acked { duplicates: 0 }
        );
        assert_eq!(
            ws_outcome(r#"{"type": "WELCOME"}"#),
            Outcome::Failed(FailureKind::BadReply)
        );
        assert_eq!(
            ws_outcome("not json"),
            Outcome::Failed(FailureKind::BadReply)
        );
    }
}
