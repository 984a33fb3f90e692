//! Test harness: a real server on a free port, over a fresh database.
//!
//! SQLite tests get a new file in a temporary directory. PostgreSQL tests
//! get a new schema in the database named by `SYSMON_TEST_POSTGRES_URL`;
//! without that variable they are skipped with a printed reason, except
//! under CI, where a missing or unreachable PostgreSQL fails the test.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sqlx::Connection;
use sysmon_server::Config;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;

pub const POSTGRES_URL_VARIABLE: &str = "SYSMON_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn(TestServer)` once per store, as
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let database = $crate::common::TestDatabase::create($crate::common::Backend::Sqlite).await;
                    super::$test(database.unwrap()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(database) = $crate::common::TestDatabase::create($crate::common::Backend::Postgres).await else {
                        return;
                    };
                    super::$test(database).await;
                }
            )*
        }
    };
}

/// A fresh, empty database (and a directory for the server's files),
/// removed when dropped.
pub struct TestDatabase {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres_schema: Option<(String, String)>,
}

impl TestDatabase {
    /// `None` when PostgreSQL is not configured outside CI.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => Some(TestDatabase {
                backend,
                url: format!("sqlite://{}", dir.path().join("sysmon.db").display()),
                dir,
                postgres_schema: None,
            }),
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let schema = format!("test_{}", random_hex());
                let mut connection = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot connect to {POSTGRES_URL_VARIABLE}={admin_url}: {e}")
                    });
                sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
                    .execute(&mut connection)
                    .await
                    .expect("create test schema");
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                Some(TestDatabase {
                    backend,
                    url: format!("{admin_url}{separator}options[search_path]={schema}"),
                    dir,
                    postgres_schema: Some((admin_url, schema)),
                })
            }
        }
    }

    pub fn config(&self) -> Config {
        let mut config = Config {
            bind: "127.0.0.1:0".into(),
            database_url: self.url.clone(),
            ..Config::default()
        };
        config.status_log.path = self.status_log_path();
        config
    }

    pub fn status_log_path(&self) -> PathBuf {
        self.dir.path().join("server_system_load.csv")
    }

    /// Starts a server on this database.
    pub async fn start(&self) -> TestServer {
        TestServer::start(self.config()).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.postgres_schema.take() else {
            return;
        };
        // Drop may run inside the test's runtime, which cannot be blocked on:
        // clean up from a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut connection)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let _ = cleanup.join();
    }
}

fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if running_in_ci() => {
            panic!("{POSTGRES_URL_VARIABLE} is not set: CI must run the PostgreSQL tests")
        }
        _ => {
            eprintln!("skipped: set {POSTGRES_URL_VARIABLE}=postgres://USER@HOST/DB to run the PostgreSQL tests");
            None
        }
    }
}

fn running_in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A server running in this process on a free port.
pub struct TestServer {
    pub address: SocketAddr,
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<sysmon_server::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let app = sysmon_server::Application::build(&config)
            .await
            .expect("server starts");
        let address = app.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has stopped.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops within 20 s")
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/echo", self.address)
    }

    /// Registers (or logs in) and returns the token.
    pub async fn register(&self, username: &str, password: &str) -> String {
        let response = self
            .http
            .post(self.url("/client"))
            .json(&serde_json::json!({"username": username, "pass": password}))
            .send()
            .await
            .expect("register request");
        assert_eq!(response.status(), 200, "registering {username}");
        let body: Value = response.json().await.expect("register body");
        body["client_id"].as_str().expect("client_id").to_owned()
    }

    /// Pushes a form-encoded sample, as the original GUI client does.
    pub async fn push_form(
        &self,
        username: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/client/{username}")))
            .header("Authorization", token)
            .form(fields)
            .send()
            .await
            .expect("push request")
    }

    pub async fn push_json(&self, username: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/client/{username}")))
            .header("Authorization", token)
            .json(body)
            .send()
            .await
            .expect("push request")
    }

    /// The whole report of a client's log (`?start=&end=` as given).
    pub async fn report(&self, username: &str, token: &str, query: &str) -> Vec<Value> {
        let response = self
            .http
            .get(self.url(&format!("/client/{username}/time/report{query}")))
            .header("Authorization", token)
            .send()
            .await
            .expect("report request");
        assert_eq!(response.status(), 200, "report of {username}");
        let body: Value = response.json().await.expect("report body");
        body["payload"].as_array().expect("payload array").clone()
    }

    /// Registers, pushes one sample, and reads it back: the server is well.
    pub async fn assert_round_trip(&self) {
        let username = format!("healthy{}", random_hex());
        let token = self.register(&username, "pw").await;
        let response = self
            .push_form(
                &username,
                &token,
                &[("time", "1700000000"), ("cpu_load", "12.5")],
            )
            .await;
        assert_eq!(response.status(), 202);
        let rows = self.report(&username, &token, "").await;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["cpu"], 12.5);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking JSON frames.
pub struct WsClient {
    pub stream: WsStream,
}

impl WsClient {
    pub async fn connect(server: &TestServer) -> WsClient {
        let (stream, _) = tokio_tungstenite::connect_async(server.ws_url())
            .await
            .expect("websocket connects");
        WsClient { stream }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.stream
            .send(Message::text(text.to_owned()))
            .await
            .expect("websocket send");
    }

    pub async fn send(&mut self, message: &Value) {
        self.send_text(&message.to_string()).await;
    }

    /// The next JSON text frame (pings and pongs skipped), within 5 s.
    pub async fn receive(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .expect("a frame within 5 s")
                .expect("stream open")
                .expect("frame readable");
            match frame {
                Message::Text(text) => {
                    return serde_json::from_str(text.as_str()).expect("JSON frame")
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    pub async fn request(&mut self, message: &Value) -> Value {
        self.send(message).await;
        self.receive().await
    }
}
