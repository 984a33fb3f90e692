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
