//! A real Prometheus (Debian's) and sysmon, both ways: Prometheus scrapes
//! node_exporter on this machine and sends it to sysmon by remote write
//! (a push token), whose samples must agree with `/proc`; and it scrapes
//! sysmon's own telemetry at `/metrics` and the fleet's newest values at
//! `/metrics/fleet` (an export token), read back through Prometheus's own
//! query API, as a Grafana on that Prometheus would.

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
        let port = free_port();
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

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// What `/proc/meminfo` says of `key`, in bytes.
fn meminfo_bytes(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .unwrap_or_else(|| panic!("{key} in /proc/meminfo"))
}

/// The root file system's size in bytes, as `statvfs` (through `stat -f`)
/// gives it.
fn root_size_bytes() -> u64 {
    let out = std::process::Command::new("stat")
        .args(["-f", "-c", "%b %S", "/"])
        .output()
        .expect("stat -f /");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    parts.next().unwrap() * parts.next().unwrap()
}

/// The series remote write sends sysmon: those it maps (the rest would be
/// counted and dropped; not sending them saves Prometheus the work).
const NODE_SERIES: &str = "node_(cpu_seconds_total|load1|load5|load15|memory_(MemTotal|MemFree|MemAvailable|Buffers|Cached|SReclaimable|SwapTotal|SwapFree)_bytes|filesystem_(size|free|avail)_bytes|disk_(read|written)_bytes_total|network_(receive|transmit)_bytes_total|hwmon_temp_celsius|boot_time_seconds|time_seconds)";

/// node_exporter on a free port, stopped when dropped, and that port.
fn start_node_exporter(binary: &std::path::Path) -> (tokio::process::Child, u16) {
    let port = free_port();
    let child = tokio::process::Command::new(binary)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start node_exporter");
    (child, port)
}

/// Debian's node_exporter running on a free port, if installed.
fn node_exporter() -> Option<(tokio::process::Child, u16)> {
    let binary = outside_program(
        "prometheus-node-exporter",
        "apt-get install prometheus-node-exporter",
    )?;
    Some(start_node_exporter(&binary))
}

/// A server on a fresh SQLite database, and its admin's session.
async fn sysmon_with_admin() -> (TestDatabase, TestServer, String) {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    (database, server, admin)
}

/// A fleet token of the admin's, through the API.
async fn fleet_token(server: &TestServer, admin: &str, request: serde_json::Value) -> String {
    server
        .post_json("/api/v1/fleet-tokens", admin, &request, 201)
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The first sample of host `localhost` with CPU load, memory and the
/// root file system, once remote write has brought one; `log` says what
/// the sender wrote meanwhile.
async fn full_localhost_sample(
    server: &TestServer,
    admin: &str,
    log: impl Fn() -> String,
) -> std::collections::HashMap<String, String> {
    poll(
        "a remote-written sample of localhost with CPU, memory and /",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || async {
            let fleet = server.get_json("/api/v1/clients", admin).await;
            if !fleet.to_string().contains("\"name\":\"localhost\"") {
                return Err(format!("no host `localhost` yet: {}", log()));
            }
            server
                .exported_rows("localhost", admin)
                .await
                .into_iter()
                .find(|row| {
                    ["cpu_load", "memory_total_bytes", "storage"]
                        .iter()
                        .all(|key| row.get(*key).is_some_and(|v| !v.is_empty()))
                })
                .ok_or_else(|| "no full sample yet".to_owned())
        },
    )
    .await
}

#[tokio::test]
async fn prometheus_and_sysmon_both_ways() {
    let Some(binary) = outside_program("prometheus", "apt-get install prometheus") else {
        return;
    };
    let Some((_node, node_port)) = node_exporter() else {
        return;
    };
    let (database, server, admin) = sysmon_with_admin().await;
    let host = server.register("prom-web-1", "prometheus-password").await;
    server
        .post_samples(
            &host,
            &[json!({"time": unix_now(), "cpu_load": 42.5,
            "memory_used_bytes": 2_000_000_000u64, "memory_total_bytes": 8_000_000_000u64,
            "filesystems": [{"mount_point": "/", "used_bytes": 10, "total_bytes": 40}]})],
        )
        .await;
    let token = fleet_token(
        &server,
        &admin,
        json!({"note": "prometheus", "export": true}),
    )
    .await;
    let push = fleet_token(
        &server,
        &admin,
        json!({"note": "prometheus remote write", "hosts": "localhost", "create_hosts": true}),
    )
    .await;
    // The same series again as host `split-host`, in requests of 20
    // samples over 4 shards: every scrape arrives in parts.
    let split = fleet_token(
        &server,
        &admin,
        json!({"note": "split scrapes", "hosts": "split-host", "create_hosts": true}),
    )
    .await;
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
  - job_name: node
    static_configs: [{{targets: ['localhost:{node_port}']}}]
remote_write:
  - url: http://{target}/api/v1/prom/write
    authorization: {{credentials: '{push}'}}
    queue_config: {{max_shards: 1, min_shards: 1, batch_send_deadline: 1s, max_samples_per_send: 5000}}
    write_relabel_configs:
      - {{source_labels: [__name__], regex: '{NODE_SERIES}', action: keep}}
  - url: http://{target}/api/v1/prom/write
    authorization: {{credentials: '{split}'}}
    queue_config: {{max_shards: 4, min_shards: 4, batch_send_deadline: 1s, max_samples_per_send: 20}}
    write_relabel_configs:
      - {{source_labels: [__name__], regex: '{NODE_SERIES}', action: keep}}
      - {{target_label: host, replacement: split-host}}
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
            if jobs.len() == 3 && jobs.iter().all(|(_, value)| value == "1") {
                Ok(jobs)
            } else {
                Err(format!("{jobs:?}"))
            }
        },
    )
    .await;
    assert_eq!(up.len(), 3, "{up:?}");
    for expression in [
        "sysmon_up{host=\"prom-web-1\"} == 1",
        "sysmon_filesystem_size_bytes{host=\"prom-web-1\",mount_point=\"/\"} == 40",
        "sysmon_samples_acknowledged_total{source=\"v1_http\"} >= 1",
    ] {
        let found = prometheus.query(expression).await.unwrap();
        assert_eq!(found.len(), 1, "{expression}: {found:?}");
    }

    // node_exporter's series through remote write: a host `localhost`
    // (the instance without its port) whose samples agree with /proc.
    let sample = full_localhost_sample(&server, &admin, String::new).await;
    let number = |key: &str| sample[key].parse::<f64>().unwrap();
    assert_eq!(
        number("memory_total_bytes") as u64,
        meminfo_bytes("MemTotal")
    );
    // Used as the agent counts it: total - free - buffers - cache.
    let total = meminfo_bytes("MemTotal") as f64;
    let used = total
        - ["MemFree", "Buffers", "Cached", "SReclaimable"]
            .iter()
            .map(|key| meminfo_bytes(key) as f64)
            .sum::<f64>();
    assert!(
        (number("memory_used_bytes") - used).abs() < total * 0.05,
        "used memory {} against /proc's {used}",
        number("memory_used_bytes")
    );
    assert!((0.0..=100.0).contains(&number("cpu_load")), "{sample:?}");
    let filesystems = server
        .get_json("/api/v1/clients/localhost/filesystems", &admin)
        .await;
    let root = filesystems["filesystems"]
        .as_array()
        .and_then(|all| all.iter().find(|fs| fs["mount_point"] == "/"))
        .unwrap_or_else(|| panic!("/ in {filesystems}"))
        .clone();
    assert_eq!(
        root["total_bytes"].as_u64(),
        Some(root_size_bytes()),
        "{root}"
    );
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(
            "sysmon_samples_acknowledged_total{source=\"remote_write\",outcome=\"stored\"}"
        ),
        "{metrics}"
    );

    // Split scrapes put back together: one sample per scrape, carrying
    // what arrived in different requests. Without completion each would
    // hold its first request's series only.
    let whole = ["memory_total_bytes", "load_average_1m", "swap_total_bytes"];
    let complete = poll(
        "split scrapes of split-host completed",
        Duration::from_secs(60),
        Duration::from_millis(1000),
        || async {
            let rows = server.exported_rows("split-host", &admin).await;
            // The newest parts may still be on their way.
            let settled = &rows[..rows.len().saturating_sub(3)];
            let full = settled
                .iter()
                .filter(|row| {
                    whole
                        .iter()
                        .all(|key| row.get(*key).is_some_and(|value| !value.is_empty()))
                })
                .count();
            if settled.len() >= 5 && full * 10 >= settled.len() * 9 {
                Ok((full, settled.len()))
            } else {
                Err(format!("{full} of {} samples whole", settled.len()))
            }
        },
    )
    .await;
    assert!(complete.0 >= 5, "{complete:?}");
    server.shutdown().await;
}

/// vmagent (Debian's victoria-metrics package) scrapes node_exporter and
/// remote-writes to sysmon with a bearer token, one queue and the
/// relabeling docs/integrations.md gives: a host `localhost` with CPU,
/// memory and its root file system arrives.
#[tokio::test]
async fn vmagent_remote_writes_node_exporter() {
    let Some(vmagent) = outside_program("vmagent", "apt-get install victoria-metrics") else {
        return;
    };
    let Some((_node, node_port)) = node_exporter() else {
        return;
    };
    let (database, server, admin) = sysmon_with_admin().await;
    let push = fleet_token(
        &server,
        &admin,
        json!({"note": "vmagent", "hosts": "localhost", "create_hosts": true}),
    )
    .await;
    let dir = database.path("vmagent");
    std::fs::create_dir_all(&dir).unwrap();
    let scrape = dir.join("scrape.yml");
    std::fs::write(
        &scrape,
        format!(
            "scrape_configs:\n  - job_name: node\n    scrape_interval: 1s\n    static_configs: [{{targets: ['localhost:{node_port}']}}]\n"
        ),
    )
    .unwrap();
    let relabel = dir.join("relabel.yml");
    std::fs::write(
        &relabel,
        format!("- {{source_labels: [__name__], regex: '{NODE_SERIES}', action: keep}}\n"),
    )
    .unwrap();
    let _vmagent = tokio::process::Command::new(&vmagent)
        .arg(format!("-promscrape.config={}", scrape.display()))
        .arg(format!(
            "-remoteWrite.url=http://127.0.0.1:{}/api/v1/prom/write",
            server.address.port()
        ))
        .arg(format!("-remoteWrite.bearerToken={push}"))
        .arg("-remoteWrite.queues=1")
        .arg("-remoteWrite.flushInterval=1s")
        .arg(format!(
            "-remoteWrite.urlRelabelConfig={}",
            relabel.display()
        ))
        .arg(format!(
            "-remoteWrite.tmpDataPath={}",
            dir.join("buffer").display()
        ))
        .arg(format!("-httpListenAddr=127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("vmagent.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start vmagent");
    let log = dir.join("vmagent.log");
    let row = full_localhost_sample(&server, &admin, || {
        std::fs::read_to_string(&log).unwrap_or_default()
    })
    .await;
    assert_eq!(
        row["memory_total_bytes"].parse::<f64>().unwrap() as u64,
        meminfo_bytes("MemTotal")
    );
    server.shutdown().await;
}
