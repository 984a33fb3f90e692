//! Test harness: a real server on a free port, over a fresh database
//! (a new SQLite file or PostgreSQL schema, from `sysmon_testkit`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sysmon_server::Config;
use tokio_tungstenite::tungstenite::Message;

pub use sysmon_testkit::{random_hex, Backend, FreshDatabase, RunningServer};

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

/// A fresh database for one test (see `sysmon_testkit`), with what the
/// server needs to run on it.
pub struct TestDatabase(FreshDatabase);

impl std::ops::Deref for TestDatabase {
    type Target = FreshDatabase;

    fn deref(&self) -> &FreshDatabase {
        &self.0
    }
}

impl TestDatabase {
    /// `None` when PostgreSQL is not configured outside CI.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        FreshDatabase::create(backend, "test")
            .await
            .map(TestDatabase)
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
        self.path("server_system_load.csv")
    }

    /// Starts a server on this database.
    pub async fn start(&self) -> TestServer {
        TestServer::start(self.config()).await
    }
}

/// A server running in this process (see `sysmon_testkit::RunningServer`),
/// with this suite's helpers.
pub struct TestServer(RunningServer);

impl std::ops::Deref for TestServer {
    type Target = RunningServer;

    fn deref(&self) -> &RunningServer {
        &self.0
    }
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer(RunningServer::start(config).await)
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has
    /// stopped and its port is closed.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
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
