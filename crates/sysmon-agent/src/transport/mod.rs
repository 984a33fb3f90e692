//! Sinks: how a batch of samples reaches the server and how its
//! acknowledgement comes back. Both transports answer with the server's
//! [`BatchAck`] (the sample times it stored or already had) or a classified
//! [`Error`](crate::error::Error).

pub mod http;
pub mod ws;

use sysmon_core::v1::BatchAck;

use crate::error::Result;
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

/// The sample index in a refusal such as `sample 3: field ...`.
pub fn refused_index(message: &str) -> Option<usize> {
    let rest = message.trim_start().strip_prefix("sample ")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if rest[digits.len()..].starts_with(':') {
        digits.parse().ok()
    } else {
        None
    }
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
    fn finds_the_refused_sample() {
        assert_eq!(
            refused_index("sample 12: field `mem` must not be negative"),
            Some(12)
        );
        assert_eq!(refused_index("sample 0: unknown field `gpu`"), Some(0));
        assert_eq!(refused_index("the batch is empty"), None);
        assert_eq!(refused_index("sample x: y"), None);
        assert_eq!(refused_index("sample 3 is odd"), None);
    }
}
