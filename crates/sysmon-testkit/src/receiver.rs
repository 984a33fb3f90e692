//! A real HTTP server a test starts to receive what sysmon sends out
//! (alert webhooks): it keeps every request, and answers each path as the
//! test scripts it (a status, after an optional delay), so a test can
//! play a healthy, a failing or a hanging endpoint.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// How a path answers: `statuses` in turn (the last one from then on),
/// each after `delay`.
#[derive(Debug, Clone)]
pub struct Script {
    pub statuses: Vec<u16>,
    pub delay: Duration,
}

#[derive(Default)]
struct Shared {
    received: Vec<Received>,
    scripts: HashMap<String, (Script, usize)>,
}

pub struct Receiver {
    pub address: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1; every path answers 200 unless
    /// scripted.
    pub async fn start() -> Receiver {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let app = Router::new().fallback(receive).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let address = listener.local_addr().expect("receiver address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            address,
            shared,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub fn script(&self, path: &str, script: Script) {
        let mut shared = self.shared.lock().expect("receiver state");
        shared.scripts.insert(path.to_owned(), (script, 0));
    }

    /// Every request so far to `path`, in order.
    pub fn received(&self, path: &str) -> Vec<Received> {
        let shared = self.shared.lock().expect("receiver state");
        shared
            .received
            .iter()
            .filter(|request| request.path == path)
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    State(shared): State<Arc<Mutex<Shared>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let path = uri.path().to_owned();
    let (status, delay) = {
        let mut shared = shared.lock().expect("receiver state");
        shared.received.push(Received {
            path: path.clone(),
            headers,
            body,
        });
        match shared.scripts.get_mut(&path) {
            Some((script, answered)) => {
                let index = (*answered).min(script.statuses.len().saturating_sub(1));
                *answered += 1;
                (
                    script.statuses.get(index).copied().unwrap_or(200),
                    script.delay,
                )
            }
            None => (200, Duration::ZERO),
        }
    };
    tokio::time::sleep(delay).await;
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A real SMTP server, plain text, that accepts every message (alert
/// emails' endpoint): EHLO/HELO, MAIL, RCPT, DATA, QUIT, as RFC 5321 has
/// them, and keeps each message's text.
pub struct SmtpSink {
    pub address: SocketAddr,
    messages: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the SMTP sink");
        let address = listener.local_addr().expect("SMTP sink address");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let kept = messages.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(smtp_session(stream, kept.clone()));
            }
        });
        SmtpSink {
            address,
            messages,
            task,
        }
    }

    /// Every message accepted so far, headers and body, in order.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().expect("SMTP sink state").clone()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn smtp_session(stream: tokio::net::TcpStream, messages: Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (reader, mut writer) = stream.into_split();
    let mut lines = BufReader::new(reader).lines();
    if writer
        .write_all(b"220 sysmon-testkit ESMTP\r\n")
        .await
        .is_err()
    {
        return;
    }
    while let Ok(Some(line)) = lines.next_line().await {
        let command = line.to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            b"250-sysmon-testkit\r\n250 8BITMIME\r\n"
        } else if command.starts_with("DATA") {
            if writer
                .write_all(b"354 end with <CRLF>.<CRLF>\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut message = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line == "." {
                    break;
                }
                // Dot-stuffing (RFC 5321 4.5.2) undone.
                message.push(line.strip_prefix('.').map(str::to_owned).unwrap_or(line));
            }
            messages
                .lock()
                .expect("SMTP sink state")
                .push(message.join("\n"));
            b"250 queued\r\n"
        } else if command.starts_with("QUIT") {
            let _ = writer.write_all(b"221 bye\r\n").await;
            return;
        } else if ["HELO", "MAIL", "RCPT", "RSET", "NOOP"]
            .iter()
            .any(|known| command.starts_with(known))
        {
            b"250 OK\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        if writer.write_all(reply).await.is_err() {
            return;
        }
    }
}
