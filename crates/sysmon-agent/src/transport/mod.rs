//! Sinks: how a batch of samples reaches the server and how its
//! acknowledgement comes back. Both transports answer with the server's
//! [`BatchAck`] (the sample times it stored or already had) or a classified
//! [`Error`](crate::error::Error).

pub mod http;
pub mod ws;

use std::time::Duration;

use sysmon_core::error_reply::{ErrorCode, ErrorReply};
use sysmon_core::v1::BatchAck;

use crate::error::{Error, Result};
use crate::outbox::Pending;

/// Delivers batches; implementations keep their connection between calls.
pub trait Transport: Send {
    /// Sends one batch (oldest first) and waits for the commit.
    fn send(&mut self, token: &str, batch: &[Pending]) -> Result<BatchAck>;

    /// For logs.
    fn describe(&self) -> String;
}

/// `[json,json,...]` from the stored JSON of each sample.
pub fn json_array(batch: &[Pending]) -> Vec<u8> {
    let mut body = Vec::with_capacity(batch.iter().map(|p| p.json.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, pending) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&pending.json);
    }
    body.push(b']');
    body
}

/// What a coded error reply means for the batch; `None` when the reply
/// has no code (a server that predates codes, or a proxy), for the caller
/// to decide from what else it has. Every code is listed, so a new one has
/// to be decided here; a code from a newer server that this agent does not
/// know ([`ErrorCode::Unknown`]) is retried later, like `internal`, as
/// docs/api.md tells clients to.
pub fn classify_coded(reply: ErrorReply, retry_after: Option<Duration>) -> Option<Error> {
    let message = reply.error;
    let error = match reply.code? {
        ErrorCode::Unauthorized
        | ErrorCode::InvalidUsername
        | ErrorCode::NotLoggedIn
        | ErrorCode::Forbidden
        | ErrorCode::RegistrationClosed => token_rejected(&message),
        ErrorCode::InvalidSample | ErrorCode::RetentionExpired => Error::Rejected {
            index: reply.index,
            message,
        },
        ErrorCode::InvalidBatch | ErrorCode::InvalidRequest | ErrorCode::InvalidMessage => {
            Error::Rejected {
                index: None,
                message,
            }
        }
        ErrorCode::BatchTooLarge | ErrorCode::PayloadTooLarge => Error::TooLarge(message),
        ErrorCode::NotFound => Error::Unsupported(format!("sending batches ({message})")),
        ErrorCode::LogEmpty
        | ErrorCode::Overloaded
        | ErrorCode::ShuttingDown
        | ErrorCode::TimedOut
        | ErrorCode::TooManyAttempts
        | ErrorCode::StoreUnavailable
        | ErrorCode::Internal
        // Never an answer to a batch; were it one, a later try may pass.
        | ErrorCode::ChannelFailed
        | ErrorCode::InvalidPayload
        | ErrorCode::Unknown => Error::Unavailable {
            reason: format!("server error: {message}"),
            retry_after,
        },
    };
    Some(error)
}

/// The server refused the token: sending stops until a new one is stored.
pub fn token_rejected(message: &str) -> Error {
    Error::Unauthorized(format!(
        "token rejected ({message}); re-enroll with --name/--password"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_json_array_from_stored_samples() {
        let batch = vec![
            Pending {
                time: 1,
                json: br#"{"time":1.0}"#.to_vec(),
            },
            Pending {
                time: 2,
                json: br#"{"time":2.0}"#.to_vec(),
            },
        ];
        let body = json_array(&batch);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed, serde_json::json!([{"time": 1.0}, {"time": 2.0}]));
        assert_eq!(json_array(&[]), b"[]");
    }

    #[test]
    fn decides_on_codes() {
        let coded = |code, index| ErrorReply {
            error: "whatever the text says".into(),
            code: Some(code),
            index,
        };
        assert!(matches!(
            classify_coded(coded(ErrorCode::InvalidSample, Some(12)), None),
            Some(Error::Rejected {
                index: Some(12),
                ..
            })
        ));
        assert!(matches!(
            classify_coded(coded(ErrorCode::InvalidBatch, None), None),
            Some(Error::Rejected { index: None, .. })
        ));
        assert!(matches!(
            classify_coded(coded(ErrorCode::BatchTooLarge, None), None),
            Some(Error::TooLarge(_))
        ));
        assert!(matches!(
            classify_coded(coded(ErrorCode::Unauthorized, None), None),
            Some(Error::Unauthorized(_))
        ));
        assert!(matches!(
            classify_coded(coded(ErrorCode::LogEmpty, None), None),
            Some(Error::Unavailable { .. })
        ));
        assert!(matches!(
            classify_coded(
                coded(ErrorCode::Unknown, None),
                Some(Duration::from_secs(3))
            ),
            Some(Error::Unavailable {
                retry_after: Some(_),
                ..
            })
        ));
        let uncoded = ErrorReply {
            error: "sample 3: field `mem` must not be negative".into(),
            code: None,
            index: None,
        };
        assert!(
            classify_coded(uncoded, None).is_none(),
            "text is never read"
        );
    }
}
