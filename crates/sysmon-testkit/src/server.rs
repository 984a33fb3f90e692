//! A sysmon server running in the test's own process, and the HTTP calls
//! more than one crate's tests make to it.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

/// A sysmon server running in this process, on the address its
/// configuration names (`127.0.0.1:0` picks a free port). Aborted if
/// dropped without [`TestServer::shutdown`].
pub struct TestServer {
    pub address: SocketAddr,
    /// `http://ADDRESS`
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<sysmon_server::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: sysmon_server::Config) -> TestServer {
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

    /// Graceful shutdown, as on SIGTERM; returns when the server has
    /// stopped and its port is closed.
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

    /// `http://ADDRESS` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Registers `username` (or logs it in) through the original API and
    /// returns its token.
    pub async fn register(&self, username: &str, password: &str) -> String {
        let request = self
            .http
            .post(self.url("/client"))
            .json(&serde_json::json!({"username": username, "pass": password}));
        let body = expect_json(request, 200, &format!("registering {username}")).await;
        body["client_id"].as_str().expect("client_id").to_owned()
    }

    /// A client's log through the original API's report, `query` (such as
    /// `?start=…&end=…`, or empty for all of it) as given.
    pub async fn report(&self, username: &str, token: &str, query: &str) -> Vec<Value> {
        let request = self
            .http
            .get(self.url(&format!("/client/{username}/time/report{query}")))
            .header("Authorization", token);
        let body = expect_json(request, 200, &format!("report of {username}")).await;
        body["payload"].as_array().expect("payload array").clone()
    }

    /// Logs `username` in to the dashboard (`POST /api/v1/session`); the
    /// session token of the 200 it must answer.
    pub async fn login(&self, username: &str, password: &str) -> String {
        let request = self
            .http
            .post(self.url("/api/v1/session"))
            .json(&serde_json::json!({"username": username, "password": password}));
        let body = expect_json(request, 200, &format!("logging {username} in")).await;
        body["token"].as_str().expect("session token").to_owned()
    }

    /// A client's first and last sample times through the original API
    /// (`/client/<name>/time`): `{"start": …, "end": …}`.
    pub async fn client_span(&self, username: &str, token: &str) -> Value {
        let request = self
            .http
            .get(self.url(&format!("/client/{username}/time")))
            .header("Authorization", token);
        expect_json(request, 200, &format!("span of {username}")).await
    }

    /// `GET path` with a bearer token (a client's, or a dashboard
    /// session's); the JSON body of the 200 it must answer.
    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let request = self.http.get(self.url(path)).bearer_auth(token);
        expect_json(request, 200, &format!("GET {path}")).await
    }

    /// `POST path` with a JSON body and a bearer token; the JSON body of
    /// the `expected` status it must answer.
    pub async fn post_json(&self, path: &str, token: &str, body: &Value, expected: u16) -> Value {
        let request = self.http.post(self.url(path)).bearer_auth(token).json(body);
        expect_json(request, expected, &format!("POST {path}")).await
    }

    /// Posts an agent's batch to `/api/v1/samples`; the acknowledgement
    /// (`{"stored": [...], "duplicates": [...]}`) of the 200 it must answer.
    pub async fn post_samples(&self, token: &str, samples: &[Value]) -> Value {
        let request = self
            .http
            .post(self.url("/api/v1/samples"))
            .bearer_auth(token)
            .json(samples);
        expect_json(request, 200, "POST /api/v1/samples").await
    }

    /// Removes a client (`DELETE /api/v1/clients/{name}`) as `admin` (a
    /// dashboard admin's session token); panics unless it succeeds.
    pub async fn remove_client(&self, name: &str, admin: &str) {
        let status = self
            .http
            .delete(self.url(&format!("/api/v1/clients/{name}")))
            .bearer_auth(admin)
            .send()
            .await
            .unwrap_or_else(|e| panic!("remove {name}: {e}"))
            .status();
        assert!(status.is_success(), "remove {name}: {status}");
    }

    /// The server's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(response.status(), 200, "GET /metrics");
        response.text().await.expect("/metrics body")
    }

    /// A host's samples of the last hour, as `GET .../export.csv` gives
    /// them to `token` (an admin's, say): one map of column to text per
    /// row, by time; an empty field is an absent metric. Panics unless
    /// the export answers 200.
    pub async fn exported_rows(
        &self,
        host: &str,
        token: &str,
    ) -> Vec<std::collections::HashMap<String, String>> {
        let now = crate::unix_now();
        let response = self
            .http
            .get(self.url(&format!(
                "/api/v1/clients/{host}/export.csv?from={}&to={}",
                now - 3600.0,
                now + 60.0
            )))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("export of {host}: {e}"));
        assert_eq!(response.status(), 200, "export of {host}");
        let text = response.text().await.expect("export body");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
        lines
            .map(|line| {
                header
                    .iter()
                    .zip(line.split(','))
                    .map(|(key, value)| (key.to_string(), value.to_owned()))
                    .collect()
            })
            .collect()
    }

    /// Every sample stored for the token's client, by time, as
    /// `GET /api/v1/samples` gives them (JSON `HostSample`s), page after
    /// page.
    pub async fn stored_samples(&self, token: &str) -> Vec<Value> {
        let mut samples = Vec::new();
        let mut from = String::new();
        loop {
            let path = format!("/api/v1/samples{from}");
            let page = self.get_json(&path, token).await;
            samples.extend(page["samples"].as_array().expect("samples array").clone());
            match page["next_from"].as_f64() {
                Some(next) => from = format!("?from={next}"),
                None => return samples,
            }
        }
    }
}

/// Sends `request` and returns its JSON body; panics, naming `what`, unless
/// the answer has the `expected` status and JSON.
async fn expect_json(request: reqwest::RequestBuilder, expected: u16, what: &str) -> Value {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    assert_eq!(response.status(), expected, "{what}");
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("{what}: body is not JSON: {e}"))
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
