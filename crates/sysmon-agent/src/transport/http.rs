//! HTTP: `POST {server}/api/v1/samples` with the batch as a JSON array and
//! `Authorization: Bearer TOKEN`; ureq, blocking, keeping the connection
//! alive between batches.

use std::time::Duration;

use sysmon_core::v1::BatchAck;

use sysmon_core::error_reply::ErrorReply;

use super::{classify_coded, json_array, token_rejected, Transport};
use crate::error::{Error, Result};
use crate::outbox::Pending;
use crate::trust::Endpoint;

/// Replies larger than this are not read (an acknowledgement of 10000
/// samples is about 120 KiB).
const MAX_REPLY_BYTES: u64 = 4 * 1024 * 1024;

/// An HTTP client for the agent: every status is an answer, not an error,
/// every request is bounded by the endpoint's timeout, and https:// is
/// checked against the endpoint's trust.
pub fn client(endpoint: &Endpoint) -> ureq::Agent {
    let timeout = endpoint.timeout;
    let builder = ureq::Agent::config_builder();
    #[cfg(feature = "tls")]
    let builder = builder.tls_config(endpoint.trust.http_tls());
    builder
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout.min(Duration::from_secs(10))))
        .user_agent(concat!("sysmon-agent/", env!("CARGO_PKG_VERSION")))
        .max_idle_connections(2)
        .max_idle_connections_per_host(1)
        .build()
        .into()
}

/// A server reply: status, `Retry-After`, body.
pub struct Reply {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The `error` of a `{"error": ...}` body, or the body itself.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| {
                let text = String::from_utf8_lossy(&self.body);
                let text = text.trim();
                if text.is_empty() {
                    format!("HTTP {}", self.status)
                } else {
                    format!(
                        "HTTP {}: {}",
                        self.status,
                        text.chars().take(200).collect::<String>()
                    )
                }
            })
    }
}

/// POSTs a JSON body; transport failures are [`Error::Unavailable`].
pub fn post_json(
    agent: &ureq::Agent,
    url: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> Result<Reply> {
    let mut request = agent.post(url).header("Content-Type", "application/json");
    if let Some(token) = bearer {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request
        .send(body)
        .map_err(|e| Error::unavailable(format!("cannot reach {url}: {e}")))?;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_vec()
        .map_err(|e| Error::unavailable(format!("reply from {url} cut short: {e}")))?;
    Ok(Reply {
        status,
        retry_after,
        body,
    })
}

pub struct HttpTransport {
    agent: ureq::Agent,
    url: String,
}

impl HttpTransport {
    pub fn new(endpoint: &Endpoint) -> HttpTransport {
        HttpTransport {
            agent: client(endpoint),
            url: format!("{}/api/v1/samples", endpoint.server),
        }
    }
}

impl Transport for HttpTransport {
    fn send(&mut self, token: &str, batch: &[Pending]) -> Result<BatchAck> {
        let reply = post_json(&self.agent, &self.url, Some(token), &json_array(batch))?;
        classify(reply)
    }

    fn describe(&self) -> String {
        format!("http {}", self.url)
    }
}

/// What a reply to a batch means: its code when it has one, else its
/// status (an older server, or a proxy's page).
pub fn classify(reply: Reply) -> Result<BatchAck> {
    if !(200..=299).contains(&reply.status) {
        if let Some(error) = serde_json::from_slice::<ErrorReply>(&reply.body)
            .ok()
            .and_then(|body| classify_coded(body, reply.retry_after))
        {
            return Err(error);
        }
    }
    match reply.status {
        200..=299 => serde_json::from_slice::<BatchAck>(&reply.body).map_err(|e| {
            Error::unavailable(format!(
                "unexpected acknowledgement ({e}): {}",
                String::from_utf8_lossy(&reply.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))
        }),
        401 | 403 => Err(token_rejected(&reply.error_message())),
        413 => Err(Error::TooLarge(reply.error_message())),
        404 | 405 => Err(Error::Unsupported(format!(
            "POST /api/v1/samples ({})",
            reply.error_message()
        ))),
        400 | 422 => Err(Error::Rejected {
            index: None,
            message: reply.error_message(),
        }),
        status => Err(Error::Unavailable {
            reason: format!("server answered {status}: {}", reply.error_message()),
            retry_after: reply.retry_after,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, body: &str) -> Reply {
        Reply {
            status,
            retry_after: (status == 503).then_some(Duration::from_secs(1)),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn classifies_replies() {
        let ack = classify(reply(
            200,
            r#"{"stored":[1764000000],"duplicates":[1764000001.5]}"#,
        ))
        .unwrap();
        assert_eq!(ack.stored.len(), 1);
        assert_eq!(ack.duplicates[0].micros(), 1_764_000_001_500_000);
        assert!(matches!(
            classify(reply(
                400,
                r#"{"error":"sample 2: field `mem` must not be negative","code":"invalid_sample","index":2}"#
            )),
            Err(Error::Rejected { index: Some(2), .. })
        ));
        assert!(matches!(
            classify(reply(
                400,
                r#"{"error":"a batch may hold at most 10000 samples","code":"batch_too_large"}"#
            )),
            Err(Error::TooLarge(_))
        ));
        assert!(matches!(
            classify(reply(400, r#"{"error":"the batch is empty"}"#)),
            Err(Error::Rejected { index: None, .. })
        ));
        let unauthorized = classify(reply(401, r#"{"error":"authorization error"}"#)).unwrap_err();
        assert!(unauthorized
            .to_string()
            .contains("re-enroll with --name/--password"));
        assert!(matches!(
            classify(reply(503, r#"{"error":"busy"}"#)),
            Err(Error::Unavailable {
                retry_after: Some(_),
                ..
            })
        ));
        assert!(matches!(
            classify(reply(502, "<html>")),
            Err(Error::Unavailable { .. })
        ));
        assert!(matches!(
            classify(reply(200, "garbage")),
            Err(Error::Unavailable { .. })
        ));
        assert!(matches!(classify(reply(413, "")), Err(Error::TooLarge(_))));
        assert!(matches!(
            classify(reply(404, "")),
            Err(Error::Unsupported(_))
        ));
    }

    #[test]
    fn an_unreachable_server_is_unavailable() {
        // A port nothing listens on: bind, note the port, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut transport = HttpTransport::new(&Endpoint::plain(
            &format!("http://127.0.0.1:{port}"),
            Duration::from_secs(2),
        ));
        let batch = [Pending {
            time: 1,
            json: b"{}".to_vec(),
        }];
        assert!(matches!(
            transport.send("t", &batch),
            Err(Error::Unavailable { .. })
        ));
    }
}
