//! The `/echo` WebSocket: the original's protocol, one task per connection.
//!
//! Frames are handled in order. Replies go through a bounded outbox drained
//! by a writer task; subscription EVENTs are dropped rather than queued when
//! the peer reads too slowly, so a slow or vanished peer only ever holds up
//! itself.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Local};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use sysmon_core::error_reply::{ErrorCode, ErrorReply};
use sysmon_core::ws::{ClientMessage, MetricKinds, RequestId, ServerMessage, NOT_PROTOCOL_REASON};
use sysmon_core::{Sample, Units, UnixTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::extract::Upgrade;
use super::{work_time, MAX_BODY_BYTES};
use crate::error::Error;
use crate::services::metrics::Source;
use crate::services::self_monitor::SelfMonitor;
use crate::state::AppState;

const OUTBOX_CAPACITY: usize = 64;
/// Where tungstenite reads frames into, kept for the connection's life:
/// 10,000 agents hold 10 MB at 1 KiB, 80 MB at 8 KiB. A larger frame grows
/// that connection's buffer to fit it (up to `MAX_BODY_BYTES`).
const WS_READ_BUFFER_BYTES: usize = 1024;
/// A peer that cannot take a reply for this long is gone.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Live clients answer pings, so silence for `limits.websocket_idle_timeout`
/// means a dead peer.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Subscriptions one connection may hold: each is a task sending EVENTs.
const MAX_SUBSCRIPTIONS: usize = 16;
const WRITER_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn upgrade(Upgrade(upgrade): Upgrade, State(state): State<AppState>) -> Response {
    // Small buffers: tungstenite's defaults (128 KiB each way) cost ~150 KB
    // per connection, 1.5 GB for a fleet of 10,000 agents; our frames are
    // small and every reply is flushed on its own anyway.
    upgrade
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_frame_size(MAX_BODY_BYTES)
        .max_message_size(MAX_BODY_BYTES)
        .on_upgrade(move |socket| run_session(socket, state))
}

async fn run_session(socket: WebSocket, state: AppState) {
    let (sink, mut frames) = socket.split();
    let (outbox, outbox_frames) = mpsc::channel(OUTBOX_CAPACITY);
    let mut writer = tokio::spawn(write_frames(sink, outbox_frames));
    let shutdown = state.shutdown.clone();
    let _open = state.metrics.websocket_opened();
    let mut session = Session::new(state, outbox);
    loop {
        // A connection that has not said HELLO in time is not a client of
        // ours: closed, so sockets opened and left silent cannot pile up.
        let wait = match session.greeted {
            true => session.state.limits.websocket_idle_timeout,
            false => session.state.limits.websocket_hello_timeout,
        };
        let frame = tokio::select! {
            frame = tokio::time::timeout(wait, frames.next()) => frame,
            _ = shutdown.cancelled() => {
                session.close("server shutting down").await;
                break;
            }
        };
        let keep_going = match frame {
            Err(_idle) if !session.greeted => {
                session.close("no HELLO").await;
                false
            }
            Err(_idle) => {
                session.close("idle timeout").await;
                false
            }
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => false,
            Ok(Some(Ok(Message::Text(text)))) => session.handle_text(text.as_str()).await,
            Ok(Some(Ok(Message::Binary(_)))) => {
                session
                    .send(ServerMessage::error(NOT_PROTOCOL_REASON))
                    .await
            }
            // Pings are answered by the library; pongs only prove liveness.
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => true,
        };
        if !keep_going {
            break;
        }
    }
    drop(session);
    if tokio::time::timeout(WRITER_DRAIN_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Sends the outbox to the peer, pinging now and then; ends when the outbox
/// closes (the session ended) or the peer is gone.
async fn write_frames(
    mut sink: futures_util::stream::SplitSink<WebSocket, Message>,
    mut outbox: mpsc::Receiver<Message>,
) {
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    loop {
        let message = tokio::select! {
            message = outbox.recv() => match message {
                Some(message) => message,
                None => break,
            },
            _ = pings.tick() => Message::Ping(Default::default()),
        };
        let closing = matches!(message, Message::Close(_));
        if sink.send(message).await.is_err() || closing {
            return;
        }
    }
    let _ = sink.close().await;
}

/// Aborts a subscription's task when its entry is removed or the session ends.
struct Subscription(JoinHandle<()>);

impl Drop for Subscription {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Session {
    state: AppState,
    outbox: mpsc::Sender<Message>,
    started: DateTime<Local>,
    greeted: bool,
    subscriptions: HashMap<RequestId, Subscription>,
}

impl Session {
    fn new(state: AppState, outbox: mpsc::Sender<Message>) -> Self {
        Self {
            state,
            outbox,
            started: Local::now(),
            greeted: false,
            subscriptions: HashMap::new(),
        }
    }

    /// Handles one text frame; false when the connection should end.
    async fn handle_text(&mut self, text: &str) -> bool {
        let message = match ClientMessage::parse(text) {
            Ok(ClientMessage::Hello) => {
                self.greeted = true;
                return self.send(ServerMessage::Welcome).await;
            }
            _ if !self.greeted => {
                return self.send(ServerMessage::error(NOT_PROTOCOL_REASON)).await
            }
            Ok(message) => message,
            Err(error) => return self.send(error.reply()).await,
        };
        let reply = match message {
            ClientMessage::Hello => ServerMessage::Welcome,
            ClientMessage::ClientData { data, client_id } => {
                self.client_data(data, client_id.as_deref()).await
            }
            ClientMessage::Subscribe {
                request_id,
                kinds,
                interval,
            } => self.subscribe(request_id, kinds, interval),
            ClientMessage::Unsubscribe { request_id } => {
                match self.subscriptions.remove(&request_id) {
                    Some(_) => ServerMessage::Unsubscribed {
                        request_id: request_id.wire().clone(),
                    },
                    None => ServerMessage::Error(ErrorReply {
                        error: "unknown request id".into(),
                        code: Some(ErrorCode::InvalidMessage),
                        index: None,
                    }),
                }
            }
            ClientMessage::WorkTime => work_time(self.started),
            ClientMessage::ClientBatch {
                client_id,
                batch_id,
                samples,
            } => {
                self.client_batch(client_id.as_deref(), batch_id, samples)
                    .await
            }
        };
        self.send(reply).await
    }

    /// Stores the sample through the same pipeline as HTTP; DATA_RETURN only
    /// after it is committed.
    async fn client_data(&self, data: Map<String, Value>, token: Option<&str>) -> ServerMessage {
        // The original's order: an empty sample first, then the token, so a
        // stranger learns nothing about what a good sample looks like.
        let stored = async {
            if data.values().all(Value::is_null) {
                return Err(Error::InvalidSample(sysmon_core::SampleError::Empty));
            }
            let owner = self
                .state
                .auth
                .authenticate(token.ok_or(Error::Unauthorized)?)
                .await?;
            let sample = Sample::from_json_object(&data, UnixTime::now())?;
            self.state
                .ingest
                .store(owner.id, vec![sample], Source::WebSocket)
                .await
        };
        match stored.await {
            Ok(_) => ServerMessage::DataReturn {
                data: Value::Object(data),
            },
            Err(error) => ServerMessage::Error(error.original_reply()),
        }
    }

    /// Stores a v1 batch through the pipeline; BATCH_STORED after commit.
    async fn client_batch(
        &self,
        token: Option<&str>,
        batch_id: Value,
        samples: Vec<Value>,
    ) -> ServerMessage {
        let stored = async {
            let owner = self
                .state
                .auth
                .authenticate(token.ok_or(Error::Unauthorized)?)
                .await?;
            let samples = sysmon_core::v1::parse_batch_items(samples, UnixTime::now())?;
            self.state
                .ingest
                .store(owner.id, samples, Source::V1WebSocket)
                .await
        };
        match stored.await {
            Ok(ack) => ServerMessage::BatchStored { batch_id, ack },
            Err(error) => ServerMessage::BatchError {
                batch_id,
                error: error.reply(),
            },
        }
    }

    fn subscribe(
        &mut self,
        request_id: RequestId,
        kinds: MetricKinds,
        interval: Duration,
    ) -> ServerMessage {
        if self.subscriptions.contains_key(&request_id) {
            return ServerMessage::error("request id collision");
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return ServerMessage::Error(ErrorReply {
                error: format!(
                    "at most {MAX_SUBSCRIPTIONS} subscriptions per connection: UNSUBSCRIBE one first"
                ),
                code: Some(ErrorCode::InvalidMessage),
                index: None,
            });
        }
        let reply = ServerMessage::Subscribed {
            request_id: request_id.wire().clone(),
        };
        // The first EVENT is an interval away, so SUBSCRIBED goes out first.
        let task = tokio::spawn(stream_events(
            self.state.monitor.clone(),
            request_id.wire().clone(),
            kinds,
            interval,
            self.outbox.clone(),
        ));
        self.subscriptions.insert(request_id, Subscription(task));
        reply
    }

    /// Queues a reply; false when the peer is gone or not reading.
    async fn send(&self, message: ServerMessage) -> bool {
        let frame = Message::Text(message.to_string().into());
        self.outbox.send_timeout(frame, REPLY_TIMEOUT).await.is_ok()
    }

    async fn close(&self, reason: &'static str) {
        let frame = Message::Close(Some(CloseFrame {
            code: axum::extract::ws::close_code::AWAY,
            reason: reason.into(),
        }));
        let _ = self
            .outbox
            .send_timeout(frame, Duration::from_secs(1))
            .await;
    }
}

async fn stream_events(
    monitor: std::sync::Arc<SelfMonitor>,
    request_id: Value,
    kinds: MetricKinds,
    interval: Duration,
    outbox: mpsc::Sender<Message>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticks.tick().await;
        let snapshot = monitor.latest();
        let event = ServerMessage::Event {
            request_id: request_id.clone(),
            cpu: kinds.cpu.then_some(snapshot.cpu_load),
            mem: kinds.mem.then(|| {
                serde_json::to_value(snapshot.memory.in_units(Units::MB)).unwrap_or_default()
            }),
            storage: kinds.storage.then(|| {
                serde_json::to_value(snapshot.storage.in_units(Units::GB)).unwrap_or_default()
            }),
        };
        match outbox.try_send(Message::Text(event.to_string().into())) {
            Ok(()) => {}
            // The peer is behind: skip this EVENT rather than queue it.
            Err(mpsc::error::TrySendError::Full(_)) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => return,
        }
    }
}
