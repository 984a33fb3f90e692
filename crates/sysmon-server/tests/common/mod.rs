//! What only the server's tests need, on top of `sysmon_testkit` (which
//! gives them a fresh database, a running server and `on_both_stores!`):
//! the original API's pushes, a v1 batch push, and a WebSocket client for
//! `/echo`.
#![allow(dead_code)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use sysmon_testkit::{random_hex, TestServer};
use tokio_tungstenite::tungstenite::Message;

/// The original API's pushes, as methods of the running server (the
/// registration and the report are `TestServer`'s own).
pub trait CompatApi {
    /// Pushes a form-encoded sample, as the original GUI client does.
    async fn push_form(
        &self,
        username: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> reqwest::Response;

    async fn push_json(&self, username: &str, token: &str, body: &Value) -> reqwest::Response;

    /// Registers, pushes one sample, and reads it back: the server is well.
    async fn assert_round_trip(&self);
}

impl CompatApi for TestServer {
    async fn push_form(
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

    async fn push_json(&self, username: &str, token: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/client/{username}")))
            .header("Authorization", token)
            .json(body)
            .send()
            .await
            .expect("push request")
    }

    async fn assert_round_trip(&self) {
        let username = format!("healthy{}", random_hex());
        let token = self.register(&username, "pw-secret1").await;
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
        let url = format!("ws://{}/echo", server.address);
        let (stream, _) = tokio_tungstenite::connect_async(url)
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
