//! How the server tells a client what went wrong, in a form programs can
//! act on: a stable [`ErrorCode`] beside the human message, and for a batch
//! the index of the sample at fault. HTTP error bodies are an
//! [`ErrorReply`]; WebSocket `ERROR` messages carry the same fields (the
//! message as `reason`).
//!
//! The original API fixes a few bodies exactly (`{"error": "authorization
//! error"}` and the like, see docs/api.md); on its routes and messages those
//! replies carry no code, so its clients see what they always saw.

use serde::{Deserialize, Serialize};

/// The original API's fixed text for a refused token or password (HTTP
/// `{"error": "authorization error"}`, a WebSocket ERROR's `reason`), sent
/// without a code on its routes and messages.
pub const AUTHORIZATION_ERROR: &str = "authorization error";

/// What kind of error a reply reports. The names are part of the API:
/// never rename one; add new ones instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// A token or password was refused (401).
    Unauthorized,
    /// A user name is missing, empty or not allowed (401).
    InvalidUsername,
    /// No session: log in first (401).
    NotLoggedIn,
    /// Logged in, but not allowed to do this (403).
    Forbidden,
    /// The name is not registered and the server takes no new clients
    /// (`registration.mode: closed`): an admin adds clients (403).
    RegistrationClosed,
    /// No such route or named thing (404).
    NotFound,
    /// The client has no samples yet (406).
    LogEmpty,
    /// A sample is malformed or out of range; the message names the field,
    /// and in a batch `index` names the sample (400).
    InvalidSample,
    /// A batch is not a JSON array or NDJSON, or is empty (400).
    InvalidBatch,
    /// A batch holds more samples than one request may (400).
    BatchTooLarge,
    /// A sample is older than raw samples are kept (400).
    RetentionExpired,
    /// A parameter or body is malformed; the message names it (400).
    InvalidRequest,
    /// A WebSocket message was not understood.
    InvalidMessage,
    /// A foreign protocol's body (InfluxDB line protocol, Prometheus
    /// remote write) could not be read, or some of its lines were not
    /// (a partial write); the message names the first line or part at
    /// fault (400).
    InvalidPayload,
    /// The request body is over the limit (413).
    PayloadTooLarge,
    /// The server is busy; retry shortly (503).
    Overloaded,
    /// The server is stopping; retry shortly (503).
    ShuttingDown,
    /// The request took longer than the server allows; retry (503).
    TimedOut,
    /// An alert channel did not take a notification; the message says
    /// why (502).
    ChannelFailed,
    /// Too many attempts (wrong passwords) from this address or for this
    /// account; wait `Retry-After` seconds (429).
    TooManyAttempts,
    /// The database cannot be reached or refused the write; retry (503).
    StoreUnavailable,
    /// The server failed; its log says why (500).
    Internal,
    /// A code this program does not know yet (from a newer server).
    #[serde(other)]
    Unknown,
}

/// An HTTP error body: `{"error": message, "code": code, "index": i}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<ErrorCode>,
    /// The position of the sample at fault in a batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_are_snake_case_and_unknown_ones_are_tolerated() {
        let reply = ErrorReply {
            error: "sample 3: field `mem` must not be negative".into(),
            code: Some(ErrorCode::InvalidSample),
            index: Some(3),
        };
        assert_eq!(
            serde_json::to_value(&reply).unwrap(),
            json!({"error": "sample 3: field `mem` must not be negative", "code": "invalid_sample", "index": 3})
        );
        let newer: ErrorReply =
            serde_json::from_value(json!({"error": "x", "code": "quota_exceeded"})).unwrap();
        assert_eq!(newer.code, Some(ErrorCode::Unknown));
        let original: ErrorReply =
            serde_json::from_value(json!({"error": "authorization error"})).unwrap();
        assert_eq!((original.code, original.index), (None, None));
        assert_eq!(
            serde_json::to_value(ErrorReply {
                error: "log is empty".into(),
                code: None,
                index: None
            })
            .unwrap(),
            json!({"error": "log is empty"})
        );
    }
}
