//! A real Prometheus (Debian's) scrapes sysmon: its own telemetry at
//! `/metrics`, and the fleet's newest values at `/metrics/fleet` with a
//! fleet token; the test reads them back through Prometheus's own query
//! API, as a Grafana on that Prometheus would.

use std::time::Duration;

use serde_json::{json, Value};
use sysmon_testkit::{outside_program, poll, unix_now, TestDatabase, TestServer};

const ADMIN_PASSWORD: &str = "prometheus-admin-password";

/// Prometheus as a child process, stopped when dropped.
struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Prometheus {
    async fn start(binary: &std::path::Path, dir: &std::path::Path, config: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        std::fs::create_dir_all(dir).expect("Prometheus's directory");
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).expect("write prometheus.yml");
        let child = tokio::process::Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).expect("log file"))
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        Prometheus {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        }
    }

    /// The result of `expression` once it matches something.
    async fn wait_for(&self, expression: &str) -> Vec<Value> {
        poll(
            &format!("`{expression}` in Prometheus"),
            Duration::from_secs(30),
            Duration::from_millis(500),
            || async {
                match self.query(expression).await? {
                    found if found.is_empty() => Err("no series yet".into()),
                    found => Ok(found),
                }
            },
        )
        .await
    }

    /// An instant query's result vector (empty while nothing matches).
    async fn query(&self, expression: &str) -> Result<Vec<Value>, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expression)])
            .send()
            .await
            .map_err(|e| format!("Prometheus not up yet: {e}"))?;
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        body["data"]["result"]
            .as_array()
            .cloned()
            .ok_or_else(|| body.to_string())
    }
}

#[tokio::test]
async fn prometheus_scrapes_the_server_and_the_fleet() {
    let Some(binary) = outside_program("prometheus", "apt-get install prometheus") else {
        return;
    };
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let host = server.register("prom-web-1", "prometheus-password").await;
    server
        .post_samples(
            &host,
            &[json!({"time": unix_now(), "cpu_load": 42.5,
            "memory_used_bytes": 2_000_000_000u64, "memory_total_bytes": 8_000_000_000u64,
            "filesystems": [{"mount_point": "/", "used_bytes": 10, "total_bytes": 40}]})],
        )
        .await;
    let token = server
        .post_json(
            "/api/v1/fleet-tokens",
            &admin,
            &json!({"note": "prometheus", "export": true}),
            201,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = format!("127.0.0.1:{}", server.address.port());
    let prometheus = Prometheus::start(
        &binary,
        &database.path("prometheus"),
        &format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: sysmon
    static_configs: [{{targets: ['{target}']}}]
  - job_name: sysmon-fleet
    metrics_path: /metrics/fleet
    authorization: {{credentials: '{token}'}}
    static_configs: [{{targets: ['{target}']}}]
"
        ),
    )
    .await;

    let series = prometheus
        .wait_for("sysmon_cpu_load{host=\"prom-web-1\"}")
        .await;
    assert_eq!(series[0]["value"][1], "42.5", "{series:?}");
    assert_eq!(series[0]["metric"]["job"], "sysmon-fleet", "{series:?}");
    let up = poll(
        "both scrape targets up",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let up = prometheus.query("up").await?;
            let jobs: Vec<(String, String)> = up
                .iter()
                .map(|s| {
                    (
                        s["metric"]["job"].as_str().unwrap_or("").to_owned(),
                        s["value"][1].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect();
            if jobs.len() == 2 && jobs.iter().all(|(_, value)| value == "1") {
                Ok(jobs)
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    )
    .await;
    assert_eq!(up.len(), 2);
    for expression in [
        "sysmon_up{host=\"prom-web-1\"} == 1",
        "sysmon_filesystem_size_bytes{host=\"prom-web-1\",mount_point=\"/\"} == 40",
        "sysmon_samples_acknowledged_total{source=\"v1_http\"} >= 1",
    ] {
        let found = prometheus.query(expression).await.unwrap();
        assert_eq!(found.len(), 1, "{expression}: {found:?}");
    }
    server.shutdown().await;
}
