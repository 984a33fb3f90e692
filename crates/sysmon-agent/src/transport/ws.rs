//! WebSocket: the server's `/echo` endpoint. One connection is kept open;
//! after `HELLO`/`WELCOME`, each batch is a `CLIENT_BATCH` message answered
//! by `BATCH_STORED` (or `ERROR`) carrying the same `batch_id`.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use serde_json::Value;
use sysmon_core::error_reply::AUTHORIZATION_ERROR;
use sysmon_core::v1::BatchAck;
use sysmon_core::ws::{error_reply, NOT_PROTOCOL_REASON};
use tungstenite::client::IntoClientRequest;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::{classify_coded, json_array, token_rejected, Transport};
use crate::error::{Error, Result};
use crate::outbox::Pending;
use crate::trust::{Endpoint, Trust};

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

pub struct WsTransport {
    url: String,
    timeout: Duration,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    trust: Trust,
    socket: Option<Socket>,
    next_batch_id: u64,
}

/// `http://host:port/prefix` -> `ws://host:port/prefix/echo` (https -> wss).
pub fn ws_url(server: &str) -> String {
    let url = match server.strip_prefix("https://") {
        Some(rest) => format!("wss://{rest}"),
        None => format!("ws://{}", server.trim_start_matches("http://")),
    };
    format!("{url}/echo")
}

impl WsTransport {
    pub fn new(endpoint: &Endpoint) -> WsTransport {
        WsTransport {
            url: ws_url(&endpoint.server),
            timeout: endpoint.timeout,
            trust: endpoint.trust.clone(),
            socket: None,
            next_batch_id: 1,
        }
    }

    fn connect(&self) -> Result<Socket> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::unavailable(format!("cannot {what} {}: {e}", self.url))
        };
        let request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Config(format!("bad WebSocket URL {}: {e}", self.url)))?;
        let uri = request.uri();
        let host = uri
            .host()
            .ok_or_else(|| Error::Config(format!("no host in {}", self.url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if uri.scheme_str() == Some("wss") {
                443
            } else {
                80
            });
        let addresses = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| unavailable("resolve", &e))?;
        let mut last_error = None;
        let mut stream = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, self.timeout.min(Duration::from_secs(10))) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(e) => last_error = Some(e),
            }
        }
        let stream = stream.ok_or_else(|| match last_error {
            Some(e) => unavailable("connect to", &e),
            None => unavailable("resolve", &"no address"),
        })?;
        let configure = |s: &TcpStream| -> std::io::Result<()> {
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)
        };
        configure(&stream).map_err(|e| unavailable("configure the connection to", &e))?;
        #[cfg(feature = "tls")]
        let handshake = tungstenite::client_tls_with_config(
            request,
            stream,
            None,
            Some(tungstenite::Connector::Rustls(self.trust.websocket_tls()?)),
        );
        #[cfg(not(feature = "tls"))]
        let handshake =
            tungstenite::client::client_with_config(request, MaybeTlsStream::Plain(stream), None);
        let (mut socket, _) = handshake.map_err(|e| unavailable("open a WebSocket to", &e))?;

        socket
            .send(Message::text(r#"{"type":"HELLO"}"#))
            .map_err(|e| unavailable("greet", &e))?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let message = read_json(&mut socket, deadline)?;
            match message.get("type").and_then(Value::as_str) {
                Some("WELCOME") => return Ok(socket),
                Some("ERROR") => {
                    return Err(Error::unavailable(format!(
                        "{} refused HELLO: {}",
                        self.url,
                        error_reply(&message).error
                    )))
                }
                _ => continue,
            }
        }
    }

    fn exchange(&mut self, token: &str, batch: &[Pending]) -> Result<BatchAck> {
        if self.socket.is_none() {
            self.socket = Some(self.connect()?);
        }
        let batch_id = self.next_batch_id;
        self.next_batch_id += 1;
        let samples = String::from_utf8(json_array(batch))
            .map_err(|e| Error::Config(format!("a stored sample is not UTF-8: {e}")))?;
        let token = serde_json::to_string(token).map_err(|e| Error::Config(e.to_string()))?;
        let message = format!(
            r#"{{"type":"CLIENT_BATCH","client_id":{token},"batch_id":{batch_id},"samples":{samples}}}"#
        );
        let deadline = Instant::now() + self.timeout;
        let socket = self
            .socket
            .as_mut()
            .ok_or_else(|| Error::unavailable("not connected"))?;
        socket
            .send(Message::text(message))
            .map_err(|e| Error::unavailable(format!("cannot send to {}: {e}", self.url)))?;
        loop {
            let reply = read_json(socket, deadline)?;
            let reply_id = reply
                .get("batch_id")
                .or_else(|| reply.get("payload").and_then(|p| p.get("batch_id")))
                .and_then(Value::as_u64);
            match reply.get("type").and_then(Value::as_str) {
                Some("BATCH_STORED") if reply_id == Some(batch_id) => {
                    let payload = reply.get("payload").cloned().unwrap_or(Value::Null);
                    return serde_json::from_value::<BatchAck>(payload).map_err(|e| {
                        Error::unavailable(format!("unexpected BATCH_STORED ({e}): {reply}"))
                    });
                }
                Some("ERROR") if reply_id.is_none() || reply_id == Some(batch_id) => {
                    return Err(classify_error(&reply));
                }
                // Replies to an earlier batch that timed out, events: not ours.
                _ => continue,
            }
        }
    }
}

impl Transport for WsTransport {
    fn send(&mut self, token: &str, batch: &[Pending]) -> Result<BatchAck> {
        let outcome = self.exchange(token, batch);
        if matches!(
            outcome,
            Err(Error::Unavailable { .. } | Error::Unsupported(_))
        ) {
            // Start from a fresh connection next time.
            if let Some(mut socket) = self.socket.take() {
                let _ = socket.close(None);
                let _ = socket.flush();
            }
        }
        outcome
    }

    fn describe(&self) -> String {
        format!("websocket {}", self.url)
    }
}

/// Reads the next JSON text message, answering pings on the way.
fn read_json(socket: &mut Socket, deadline: Instant) -> Result<Value> {
    loop {
        if Instant::now() >= deadline {
            return Err(Error::unavailable("no answer from the server in time"));
        }
        let message = socket
            .read()
            .map_err(|e| Error::unavailable(format!("WebSocket connection lost: {e}")))?;
        match message {
            Message::Text(text) => {
                if let Ok(value) = serde_json::from_str::<Value>(text.as_str()) {
                    return Ok(value);
                }
            }
            Message::Close(frame) => {
                return Err(Error::unavailable(format!(
                    "the server closed the WebSocket{}",
                    frame
                        .map(|f| format!(": {} {}", u16::from(f.code), f.reason))
                        .unwrap_or_default()
                )))
            }
            _ => continue,
        }
    }
}

/// What an `ERROR` in answer to a batch means.
///
/// The agent decides on codes, never on text. An `ERROR` without a code
/// comes from a sysmon server older than codes (agents are upgraded
/// first), or from the original server. For those, the original protocol
/// fixes exactly two texts, and only they are read, each compared whole:
///
/// - [`NOT_PROTOCOL_REASON`], the answer to a message the server does not
///   know: it does not speak `CLIENT_BATCH` ([`Error::Unsupported`]);
/// - [`AUTHORIZATION_ERROR`]: the token was refused
///   ([`Error::Unauthorized`]), so sending stops until a new one is stored.
///
/// Any other `ERROR` without a code is the whole batch refused, no sample
/// named ([`Error::Rejected`] without an index): the sender then sends that
/// batch's samples one at a time, so that the one refused is found and set
/// aside alone (a refused batch of one sample is that sample). An older
/// server's `sample N: ...` is found that way, without reading `N`.
pub fn classify_error(message: &Value) -> Error {
    let reply = error_reply(message);
    let text = reply.error.clone();
    classify_coded(reply, None).unwrap_or_else(|| match text.as_str() {
        NOT_PROTOCOL_REASON => {
            Error::Unsupported(format!("the WebSocket message CLIENT_BATCH ({text})"))
        }
        AUTHORIZATION_ERROR => token_rejected(&text),
        _ => Error::Rejected {
            index: None,
            message: text,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_the_websocket_url() {
        assert_eq!(ws_url("http://127.0.0.1:5000"), "ws://127.0.0.1:5000/echo");
        assert_eq!(
            ws_url("https://m.example.com/sysmon"),
            "wss://m.example.com/sysmon/echo"
        );
    }

    #[test]
    fn classifies_error_messages_by_code() {
        let error = |message: serde_json::Value| classify_error(&message);
        assert!(matches!(
            error(
                serde_json::json!({"type": "ERROR", "reason": "authorization error", "code": "unauthorized", "batch_id": 1})
            ),
            Error::Unauthorized(_)
        ));
        assert!(matches!(
            error(
                serde_json::json!({"type": "ERROR", "reason": "sample 4: bad", "code": "invalid_sample", "index": 4})
            ),
            Error::Rejected { index: Some(4), .. }
        ));
        assert!(matches!(
            error(
                serde_json::json!({"type": "ERROR", "reason": "too many", "code": "batch_too_large"})
            ),
            Error::TooLarge(_)
        ));
        assert!(matches!(
            error(serde_json::json!({"type": "ERROR", "reason": "busy", "code": "overloaded"})),
            Error::Unavailable { .. }
        ));
    }

    /// A server older than codes: the two texts the original protocol
    /// fixes, and any other ERROR as the whole batch refused.
    #[test]
    fn classifies_error_messages_without_a_code() {
        let error = |reason: &str| {
            classify_error(&serde_json::json!({"type": "ERROR", "reason": reason, "batch_id": 1}))
        };
        // The original server's answer to a message it does not know.
        assert!(matches!(
            error("Data type incorrect, please use json"),
            Error::Unsupported(_)
        ));
        let refused = error("authorization error");
        assert!(matches!(refused, Error::Unauthorized(_)), "{refused:?}");
        assert!(refused
            .to_string()
            .contains("re-enroll with --name/--password"));
        for other in [
            "sample 3: field `mem` must not be negative",
            "CLIENT_BATCH samples must be a JSON array",
            "the batch is empty",
            "a batch may hold at most 10000 samples",
            "the server is busy storing earlier samples; retry shortly",
            // The fixed texts count only whole and exact.
            "Authorization error",
            "authorization error: token expired",
        ] {
            assert!(
                matches!(error(other), Error::Rejected { index: None, ref message } if message == other),
                "{other}"
            );
        }
    }

    #[test]
    fn an_unreachable_server_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut transport = WsTransport::new(&Endpoint::plain(
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
