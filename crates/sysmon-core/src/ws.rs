//! The `/echo` WebSocket protocol of the original server.
//!
//! Every frame is a JSON object with a `type`. Client messages are parsed
//! into [`ClientMessage`]; server messages are built by [`ServerMessage`],
//! whose JSON shapes are fixed by the clients already in the field.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::error_reply::{ErrorCode, ErrorReply};

/// The original's reply to anything it could not understand.
pub const NOT_PROTOCOL_REASON: &str = "Data type incorrect, please use json";
pub const MIN_SUBSCRIBE_INTERVAL: Duration = Duration::from_millis(100);
pub const MAX_SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(86_400);
const DEFAULT_SUBSCRIBE_INTERVAL: Duration = Duration::from_secs(1);

/// A subscription's id as the client sent it (number or numeric string),
/// compared by value so that `5` and `"5"` are the same subscription.
#[derive(Debug, Clone)]
pub struct RequestId {
    wire: Value,
    key: String,
}

impl RequestId {
    fn parse(value: &Value) -> Result<Self, WsError> {
        let key = match value {
            Value::Number(number) => number.as_f64().map(canonical_number),
            Value::String(text) => Some(
                text.trim()
                    .parse::<f64>()
                    .map(canonical_number)
                    .unwrap_or_else(|_| text.clone()),
            ),
            _ => None,
        }
        .ok_or_else(|| WsError::BadField("request_id must be a number or a string".into()))?;
        Ok(Self {
            wire: value.clone(),
            key,
        })
    }

    /// The id exactly as the client sent it, for echoing back.
    pub fn wire(&self) -> &Value {
        &self.wire
    }
}

fn canonical_number(number: f64) -> String {
    crate::number::json_number(number).to_string()
}

impl PartialEq for RequestId {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for RequestId {}
impl std::hash::Hash for RequestId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// What a SUBSCRIBE asks to receive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MetricKinds {
    pub cpu: bool,
    pub mem: bool,
    pub storage: bool,
}

impl MetricKinds {
    fn parse(value: Option<&Value>) -> Result<Self, WsError> {
        let names = value.and_then(Value::as_array).ok_or_else(|| {
            WsError::BadField(
                "SUBSCRIBE data must be a list such as [\"CPU\", \"MEM\", \"STORAGE\"]".into(),
            )
        })?;
        let mut kinds = MetricKinds::default();
        for name in names {
            match name.as_str().map(str::to_ascii_uppercase).as_deref() {
                Some("CPU") => kinds.cpu = true,
                Some("MEM") => kinds.mem = true,
                Some("STORAGE") => kinds.storage = true,
                _ => {
                    return Err(WsError::BadField(format!(
                        "unknown metric {name} in SUBSCRIBE data: use CPU, MEM or STORAGE"
                    )))
                }
            }
        }
        Ok(kinds)
    }
}

/// A message from a client.
#[derive(Debug, Clone)]
pub enum ClientMessage {
    Hello,
    ClientData {
        data: Map<String, Value>,
        client_id: Option<String>,
    },
    Subscribe {
        request_id: RequestId,
        kinds: MetricKinds,
        interval: Duration,
    },
    Unsubscribe {
        request_id: RequestId,
    },
    WorkTime,
    /// A batch of full samples (the v1 format), for agents.
    ClientBatch {
        client_id: Option<String>,
        /// Echoed in the reply so a client can match it; any JSON value.
        batch_id: Value,
        samples: Vec<Value>,
    },
}

/// Why a client frame was refused; the text becomes the ERROR's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    #[error("{}", NOT_PROTOCOL_REASON)]
    NotProtocol,
    #[error("{0}")]
    BadField(String),
}

impl WsError {
    /// The ERROR reporting it: the original's fixed text for a frame that is
    /// not the protocol, a coded one for a bad field.
    pub fn reply(&self) -> ServerMessage {
        match self {
            WsError::NotProtocol => ServerMessage::error(NOT_PROTOCOL_REASON),
            WsError::BadField(reason) => ServerMessage::Error(ErrorReply {
                error: reason.clone(),
                code: Some(ErrorCode::InvalidMessage),
                index: None,
            }),
        }
    }
}

impl ClientMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, WsError> {
        let value: Value = serde_json::from_str(text).map_err(|_| WsError::NotProtocol)?;
        let object = value.as_object().ok_or(WsError::NotProtocol)?;
        let kind = object
            .get("type")
            .and_then(Value::as_str)
            .ok_or(WsError::NotProtocol)?;
        match kind {
            "HELLO" => Ok(ClientMessage::Hello),
            "WORK_TIME" => Ok(ClientMessage::WorkTime),
            "CLIENT_DATA" => Ok(ClientMessage::ClientData {
                data: match object.get("data") {
                    Some(Value::Object(data)) => data.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => {
                        return Err(WsError::BadField(
                            "CLIENT_DATA data must be a JSON object".into(),
                        ))
                    }
                },
                client_id: object
                    .get("client_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            }),
            "SUBSCRIBE" => Ok(ClientMessage::Subscribe {
                request_id: RequestId::parse(object.get("request_id").unwrap_or(&Value::Null))?,
                kinds: MetricKinds::parse(object.get("data"))?,
                interval: parse_interval(object.get("interval"))?,
            }),
            "CLIENT_BATCH" => Ok(ClientMessage::ClientBatch {
                client_id: object
                    .get("client_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                batch_id: object.get("batch_id").cloned().unwrap_or(Value::Null),
                samples: match object.get("samples") {
                    Some(Value::Array(samples)) => samples.clone(),
                    _ => {
                        return Err(WsError::BadField(
                            "CLIENT_BATCH samples must be a JSON array".into(),
                        ))
                    }
                },
            }),
            "UNSUBSCRIBE" => Ok(ClientMessage::Unsubscribe {
                request_id: RequestId::parse(object.get("request_id").unwrap_or(&Value::Null))?,
            }),
            _ => Err(WsError::NotProtocol),
        }
    }
}

fn parse_interval(value: Option<&Value>) -> Result<Duration, WsError> {
    let seconds = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_SUBSCRIBE_INTERVAL),
        Some(Value::Number(number)) => number.as_f64(),
        Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    let in_range = |s: f64| {
        s.is_finite()
            && s >= MIN_SUBSCRIBE_INTERVAL.as_secs_f64()
            && s <= MAX_SUBSCRIBE_INTERVAL.as_secs_f64()
    };
    match seconds {
        Some(seconds) if in_range(seconds) => Ok(Duration::from_secs_f64(seconds)),
        _ => Err(WsError::BadField(
            "interval must be a number of seconds from 0.1 to 86400".into(),
        )),
    }
}

/// A message from the server.
#[derive(Debug, Clone)]
pub enum ServerMessage {
    Welcome,
    /// An ERROR: the message as `reason`, with `code` (and `index`) except
    /// where the original protocol fixes the message (see [`Self::error`]).
    Error(ErrorReply),
    DataReturn {
        data: Value,
    },
    Subscribed {
        request_id: Value,
    },
    Unsubscribed {
        request_id: Value,
    },
    Event {
        request_id: Value,
        cpu: Option<f64>,
        mem: Option<Value>,
        storage: Option<Value>,
    },
    WorkTime {
        start_work: String,
        actual_time: String,
    },
    BatchStored {
        batch_id: Value,
        ack: crate::v1::BatchAck,
    },
    /// An ERROR about one batch: an ERROR plus the batch's id.
    BatchError {
        batch_id: Value,
        error: ErrorReply,
    },
}

impl ServerMessage {
    /// An ERROR whose text the original protocol fixes: no code, as the
    /// original sent it.
    pub fn error(reason: impl Into<String>) -> Self {
        ServerMessage::Error(ErrorReply {
            error: reason.into(),
            code: None,
            index: None,
        })
    }

    pub fn to_json(&self) -> Value {
        match self {
            ServerMessage::Welcome => {
                json!({"type": "WELCOME", "payload": {"welcome": "WELCOME"}})
            }
            ServerMessage::Error(error) => error_json(error, None),
            ServerMessage::DataReturn { data } => {
                json!({"type": "DATA_RETURN", "payload": {"data": data}})
            }
            ServerMessage::Subscribed { request_id } => {
                json!({"type": "SUBSCRIBED", "payload": {"request_id": request_id}})
            }
            ServerMessage::Unsubscribed { request_id } => {
                json!({"type": "UNSUBSCRIBED", "payload": {"request_id": request_id}})
            }
            ServerMessage::Event {
                request_id,
                cpu,
                mem,
                storage,
            } => json!({"type": "EVENT", "payload": {
                "request": request_id, "cpu": cpu, "mem": mem, "storage": storage,
            }}),
            ServerMessage::WorkTime {
                start_work,
                actual_time,
            } => json!({"type": "WORK_TIME", "payload": {
                "start_work": start_work, "actual_time": actual_time,
            }}),
            ServerMessage::BatchStored { batch_id, ack } => {
                json!({"type": "BATCH_STORED", "payload": {
                    "batch_id": batch_id, "stored": ack.stored, "duplicates": ack.duplicates,
                }})
            }
            ServerMessage::BatchError { batch_id, error } => error_json(error, Some(batch_id)),
        }
    }
}

/// `{"type": "ERROR", "reason", "code", "index", "batch_id"}`, the optional
/// ones only when known.
fn error_json(error: &ErrorReply, batch_id: Option<&Value>) -> Value {
    let mut message = Map::new();
    message.insert("type".into(), json!("ERROR"));
    message.insert("reason".into(), json!(error.error));
    if let Some(code) = error.code {
        message.insert("code".into(), json!(code));
    }
    if let Some(index) = error.index {
        message.insert("index".into(), json!(index));
    }
    if let Some(batch_id) = batch_id {
        message.insert("batch_id".into(), batch_id.clone());
    }
    Value::Object(message)
}

/// The error an ERROR message reports, as a client reads it.
pub fn error_reply(message: &Value) -> ErrorReply {
    ErrorReply {
        error: message
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("no reason given")
            .to_owned(),
        code: message
            .get("code")
            .and_then(|code| serde_json::from_value(code.clone()).ok()),
        index: message
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|index| usize::try_from(index).ok()),
    }
}

impl std::fmt::Display for ServerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_json_and_unknown_types_are_not_protocol() {
        for frame in [
            "hello",
            "[1,2]",
            "{}",
            r#"{"type": 5}"#,
            r#"{"type": "DANCE"}"#,
        ] {
            assert_eq!(
                ClientMessage::parse(frame).unwrap_err(),
                WsError::NotProtocol,
                "{frame}"
            );
        }
    }

    #[test]
    fn subscribe_accepts_numeric_strings() {
        let message = ClientMessage::parse(
            r#"{"type":"SUBSCRIBE","request_id":"7","data":["CPU","storage"],"interval":"0.5"}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe {
            request_id,
            kinds,
            interval,
        } = message
        else {
            panic!("not a subscribe");
        };
        assert_eq!(request_id, RequestId::parse(&json!(7)).unwrap());
        assert_eq!(request_id.wire(), &json!("7"));
        assert!(kinds.cpu && kinds.storage && !kinds.mem);
        assert_eq!(interval, Duration::from_millis(500));
    }

    #[test]
    fn subscribe_rejects_tiny_interval_and_unknown_kinds() {
        let tiny = r#"{"type":"SUBSCRIBE","request_id":1,"data":["CPU"],"interval":0.01}"#;
        assert!(matches!(
            ClientMessage::parse(tiny),
            Err(WsError::BadField(_))
        ));
        let unknown = r#"{"type":"SUBSCRIBE","request_id":1,"data":["GPU"],"interval":1}"#;
        assert!(matches!(
            ClientMessage::parse(unknown),
            Err(WsError::BadField(_))
        ));
    }

    #[test]
    fn server_messages_have_the_original_shapes() {
        assert_eq!(
            ServerMessage::Welcome.to_string(),
            r#"{"payload":{"welcome":"WELCOME"},"type":"WELCOME"}"#
        );
        assert_eq!(
            ServerMessage::error("incorrect data size").to_json(),
            json!({"type": "ERROR", "reason": "incorrect data size"})
        );
    }

    #[test]
    fn coded_errors_round_trip() {
        let error = ErrorReply {
            error: "sample 2: field `mem` must not be negative".into(),
            code: Some(ErrorCode::InvalidSample),
            index: Some(2),
        };
        let message = ServerMessage::BatchError {
            batch_id: json!(9),
            error: error.clone(),
        }
        .to_json();
        assert_eq!(
            message,
            json!({"type": "ERROR", "reason": error.error, "code": "invalid_sample", "index": 2, "batch_id": 9})
        );
        assert_eq!(error_reply(&message), error);
        assert_eq!(
            WsError::BadField("interval".into()).reply().to_json()["code"],
            "invalid_message"
        );
        assert_eq!(
            WsError::NotProtocol.reply().to_json(),
            json!({"type": "ERROR", "reason": NOT_PROTOCOL_REASON})
        );
    }
}
