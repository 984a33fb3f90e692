//! InfluxDB's write API end to end on both stores: Telegraf's standard
//! output (a fixture of its plugins' line protocol) pushed with a fleet
//! token and read back as sysmon samples; bad lines, precisions, gzip and
//! tokens outside their hosts answered as docs/integrations.md says; and
//! the real clients: Debian's `influx` CLI (1.x `/write`) and the official
//! Python `influxdb-client` (2.x `/api/v2/write`).

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{json, Value};
use sysmon_testkit::{outside_program, unix_now, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    telegraf_output_is_stored_and_read_back,
    bad_input_and_token_scopes,
    real_influx_clients,
    a_split_tick_completes_the_stored_sample,
    a_request_creates_a_thousand_hosts_at_once,
);

const ADMIN_PASSWORD: &str = "influx-admin-password";
const FIXTURE: &str = include_str!("fixtures/telegraf.lp");

async fn start(database: &TestDatabase) -> (TestServer, String) {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    // Raw samples kept a year: an older line is refused.
    config.retention.raw = Some(Duration::from_secs(365 * 86_400));
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    (server, admin)
}

/// A push token made through the API.
async fn fleet_token(server: &TestServer, admin: &str, hosts: &str, create: bool) -> (i64, String) {
    make_token(
        server,
        admin,
        json!({"note": "test", "hosts": hosts, "create_hosts": create}),
    )
    .await
}

async fn make_token(server: &TestServer, admin: &str, request: Value) -> (i64, String) {
    let created = server
        .post_json("/api/v1/fleet-tokens", admin, &request, 201)
        .await;
    (
        created["id"].as_i64().unwrap(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

/// POSTs line protocol; the status and JSON body (null when empty).
async fn write(
    server: &TestServer,
    path: &str,
    authorization: Option<String>,
    body: impl Into<reqwest::Body>,
    gzip: bool,
) -> (u16, Value) {
    let mut request = server.http.post(server.url(path)).body(body);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    if gzip {
        request = request.header("Content-Encoding", "gzip");
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// POSTs line protocol and asserts the answer's status and that its
/// error says `says`.
async fn expect(
    server: &TestServer,
    path: &str,
    authorization: Option<String>,
    body: impl Into<reqwest::Body>,
    status: u16,
    says: &str,
) {
    let (got, reply) = write(server, path, authorization, body, false).await;
    assert_eq!(got, status, "{path}: {reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(error.contains(says), "{path}: `{says}` in {reply}");
}

/// The fixture with its two collection times moved to 20 and 10 seconds
/// ago (whole seconds), and those two times.
fn fixture_now() -> (String, [i64; 2]) {
    let t1 = unix_now() as i64 - 10;
    let t0 = t1 - 10;
    let text = FIXTURE
        .replace("1700000000000000000", &format!("{t0}000000000"))
        .replace("1700000010000000000", &format!("{t1}000000000"));
    (text, [t0, t1])
}

/// A host's samples as the admin exports them: one map per row.
async fn exported(server: &TestServer, admin: &str, host: &str) -> Vec<HashMap<String, String>> {
    server.exported_rows(host, admin).await
}

fn number(row: &HashMap<String, String>, key: &str) -> f64 {
    row.get(key)
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("`{key}` in {row:?}"))
}

async fn telegraf_output_is_stored_and_read_back(database: TestDatabase) {
    let (server, admin) = start(&database).await;
    let (_, token) = fleet_token(&server, &admin, "tg-*", true).await;
    let (body, [t0, t1]) = fixture_now();
    let (status, reply) = write(
        &server,
        "/write?db=telegraf&precision=ns",
        Some(format!("Token {token}")),
        body.clone(),
        false,
    )
    .await;
    assert_eq!(status, 204, "{reply}");

    let web = exported(&server, &admin, "tg-web-1").await;
    assert_eq!(web.len(), 2, "one sample per host and interval: {web:?}");
    let (first, second) = (&web[0], &web[1]);
    assert_eq!(number(first, "time") as i64, t0);
    assert_eq!(number(second, "time") as i64, t1);
    assert_eq!(
        number(first, "cpu_load"),
        9.5,
        "100 - cpu-total's usage_idle"
    );
    assert_eq!(number(second, "cpu_load"), 20.0);
    assert_eq!(number(first, "memory_total_bytes"), 8349196288.0);
    assert_eq!(number(first, "memory_available_bytes"), 6117457920.0);
    assert_eq!(number(first, "memory_used_bytes"), 1963266048.0);
    assert_eq!(number(first, "swap_used_bytes"), 100663296.0);
    assert_eq!(number(first, "load_average_1m"), 0.52);
    assert_eq!(number(first, "load_average_15m"), 0.33);
    assert_eq!(number(second, "uptime_seconds"), 123466.0);
    assert_eq!(
        number(first, "temperature_celsius"),
        51.5,
        "the hottest sensor"
    );
    assert!((number(first, "storage") - 16218054656.0 / 1048576.0).abs() < 0.01);
    // Rates from the second interval: sda only (not its partition, not
    // loop0), eth0 only (not lo, not `all`).
    assert!(
        first
            .get("disk_read_bytes_per_second")
            .is_none_or(String::is_empty),
        "{first:?}"
    );
    assert_eq!(number(second, "disk_read_bytes_per_second"), 1_000_000.0);
    assert_eq!(number(second, "disk_write_bytes_per_second"), 2_000_000.0);
    assert_eq!(
        number(second, "network_receive_bytes_per_second"),
        5_000_000.0
    );
    assert_eq!(
        number(second, "network_transmit_bytes_per_second"),
        1_000_000.0
    );

    let filesystems = server
        .get_json("/api/v1/clients/tg-web-1/filesystems", &admin)
        .await;
    let mounts: Vec<(&str, u64, u64)> = filesystems["filesystems"]
        .as_array()
        .unwrap_or_else(|| panic!("{filesystems}"))
        .iter()
        .map(|fs| {
            (
                fs["mount_point"].as_str().unwrap(),
                fs["used_bytes"].as_u64().unwrap(),
                fs["total_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        mounts.contains(&("/", 16218054656, 62671097856)),
        "{filesystems}"
    );
    assert!(
        mounts.contains(&("/var/lib/data", 500000000000, 1000000000000)),
        "{filesystems}"
    );

    let db = exported(&server, &admin, "tg-db-1").await;
    assert_eq!(db.len(), 2, "{db:?}");
    assert_eq!(number(&db[1], "cpu_load"), 40.0);
    assert_eq!(number(&db[0], "memory_used_bytes"), 12e9);

    // The same request again: idempotent, nothing doubled.
    let (status, _) = write(
        &server,
        "/write",
        Some(format!("Token {token}")),
        body,
        false,
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!(exported(&server, &admin, "tg-web-1").await.len(), 2);
    // `processes` and per-core `cpu` lines are counted, not stored.
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("sysmon_ingest_unmapped_points_total{reason=\"influx\"}"),
        "{metrics}"
    );
    server.shutdown().await;
}

async fn bad_input_and_token_scopes(database: TestDatabase) {
    let (server, admin) = start(&database).await;
    let (fleet_id, fleet) = fleet_token(&server, &admin, "edge-*", true).await;
    let (_, known_only) = fleet_token(&server, &admin, "*", false).await;
    let token = |t: &str| Some(format!("Token {t}"));
    let now = unix_now() as i64;
    let line = |host: &str, idle: f64, second: i64| {
        format!("cpu,cpu=cpu-total,host={host} usage_idle={idle} {second}\n")
    };

    // A malformed line among good ones: a partial write naming the line.
    let body = format!(
        "{}cpu,host=edge-1 usage_idle=1.2.3 {now}\n{}",
        line("edge-1", 50.0, now - 2),
        line("edge-1", 40.0, now - 1)
    );
    let (status, reply) = write(&server, "/write?precision=s", token(&fleet), body, false).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["code"], "invalid_payload", "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(error.starts_with("partial write: line 2:"), "{error}");
    assert!(error.contains("usage_idle"), "{error}");
    assert_eq!(
        exported(&server, &admin, "edge-1").await.len(),
        2,
        "the good lines"
    );

    for (path, body, expected, says) in [
        (
            "/write?precision=fortnights",
            line("edge-1", 1.0, now),
            400,
            "unknown precision `fortnights`",
        ),
        (
            "/write?precision=s",
            "cpu,host=edge-1 usage_idle=\"x\n".to_owned(),
            400,
            "line 1:",
        ),
        (
            "/write?precision=s",
            format!("cpu,cpu=cpu-total usage_idle=5 {now}\n"),
            400,
            "no `host` tag",
        ),
        (
            "/write?precision=s",
            line("other-1", 1.0, now),
            400,
            "nothing stored: line 1: may not write for host `other-1`: fleet token",
        ),
        (
            "/write?precision=s",
            line("edge-2", 50.0, 1_000_000_000),
            400,
            "older than raw samples are kept",
        ),
        (
            "/write?precision=s",
            line("edge-2", 101.0 + 1e9, now),
            400,
            "cpu_load",
        ),
    ] {
        let (status, reply) = write(&server, path, token(&fleet), body.clone(), false).await;
        assert_eq!(status, expected, "{path} {body}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(says),
            "{body}: {reply}"
        );
    }
    // A host outside the token beside one inside: the outside one's lines
    // refused, the others stored; lines of nothing sysmon keeps make no
    // sample (and no host).
    let body = format!(
        "{}{}processes,host=edge-7 total=3i {now}\n",
        line("edge-5", 45.0, now),
        line("other-2", 1.0, now)
    );
    let (status, reply) = write(&server, "/write?precision=s", token(&fleet), body, false).await;
    assert_eq!(status, 400, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.starts_with("partial write: line 2: may not write for host `other-2`"),
        "{error}"
    );
    assert_eq!(
        number(&exported(&server, &admin, "edge-5").await[0], "cpu_load"),
        55.0
    );
    let fleet_now = server.get_json("/api/v1/clients", &admin).await.to_string();
    for absent in ["other-1", "other-2", "edge-7"] {
        assert!(!fleet_now.contains(absent), "{absent} in {fleet_now}");
    }

    // Too much at once: 413, which Telegraf answers by splitting the batch.
    let many: String = (0..10_001)
        .map(|i| line("edge-1", 5.0, now - 20_000 + i))
        .collect();
    let (status, reply) = write(&server, "/write?precision=s", token(&fleet), many, false).await;
    assert_eq!(
        (status, &reply["code"]),
        (413, &json!("payload_too_large")),
        "{reply}"
    );
    let mut bomb = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    bomb.write_all(&vec![b'\n'; 17 * 1024 * 1024]).unwrap();
    let (status, reply) = write(
        &server,
        "/write",
        token(&fleet),
        bomb.finish().unwrap(),
        true,
    )
    .await;
    assert_eq!(
        (status, &reply["code"]),
        (413, &json!("payload_too_large")),
        "{reply}"
    );

    // A host that registered itself is not a push token's, even when the
    // token's pattern matches its name.
    server.register("edge-squat", "influx-password").await;
    expect(
        &server,
        "/write?precision=s",
        token(&fleet),
        line("edge-squat", 1.0, now),
        400,
        "registered itself",
    )
    .await;

    // gzip bodies; a broken one is refused.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(line("edge-3", 30.0, now).as_bytes()).unwrap();
    let (status, reply) = write(
        &server,
        "/api/v2/write?org=o&bucket=b&precision=s",
        token(&fleet),
        gz.finish().unwrap(),
        true,
    )
    .await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(
        number(&exported(&server, &admin, "edge-3").await[0], "cpu_load"),
        70.0
    );
    let (status, reply) = write(
        &server,
        "/write",
        token(&fleet),
        b"\x1f\x8bnot gzip".to_vec(),
        true,
    )
    .await;
    assert_eq!(
        (status, &reply["code"]),
        (400, &json!("invalid_payload")),
        "{reply}"
    );

    // A token that may not create hosts; a client's own token, for itself
    // only; no token; a revoked token.
    expect(
        &server,
        "/write?precision=s",
        token(&known_only),
        line("edge-9", 1.0, now),
        400,
        "may not create hosts",
    )
    .await;
    let own = server.register("solo-1", "influx-password").await;
    let (status, reply) = write(
        &server,
        "/api/v2/write?precision=s",
        token(&own),
        line("solo-1", 75.0, now),
        false,
    )
    .await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(
        server.stored_samples(&own).await[0]["cpu_load"],
        json!(25.0)
    );
    expect(
        &server,
        "/write?precision=s",
        token(&own),
        line("edge-1", 1.0, now),
        400,
        "a client token writes for `solo-1` only",
    )
    .await;
    let (status, _) = write(
        &server,
        "/write?precision=s",
        None,
        line("edge-1", 1.0, now),
        false,
    )
    .await;
    assert_eq!(status, 401);
    // The fleet exporter shows a fleet token the hosts it covers, only.
    let exported_fleet = |token: Option<String>| {
        let mut request = server.http.get(server.url("/metrics/fleet"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let (_, export) = make_token(&server, &admin, json!({"hosts": "edge-*", "export": true})).await;
    let (status, text) = exported_fleet(Some(export.clone())).await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("sysmon_cpu_load{host=\"edge-3\"} 70"),
        "{text}"
    );
    assert!(!text.contains("solo-1"), "not a host of the token: {text}");
    let (status, text) = exported_fleet(Some(admin.clone())).await;
    assert!(
        status == 200 && text.contains("sysmon_up{host=\"solo-1\"} 1"),
        "{text}"
    );
    assert_eq!(
        exported_fleet(Some(fleet.clone())).await.0,
        403,
        "a push token does not read"
    );
    let (status, reply) = write(
        &server,
        "/write?precision=s",
        token(&export),
        line("edge-1", 1.0, now),
        false,
    )
    .await;
    assert_eq!(status, 403, "an export token does not push: {reply}");
    assert_eq!(exported_fleet(None).await.0, 401);
    assert_eq!(exported_fleet(Some("fleet_nonsense".into())).await.0, 401);

    let revoked = server
        .http
        .delete(server.url(&format!("/api/v1/fleet-tokens/{fleet_id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204);
    let (status, _) = write(
        &server,
        "/write?precision=s",
        token(&fleet),
        line("edge-1", 1.0, now),
        false,
    )
    .await;
    assert_eq!(status, 401, "revoked");
    let listed = server.get_json("/api/v1/fleet-tokens", &admin).await;
    assert_eq!(listed["tokens"].as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed["tokens"][0].get("token").is_none(),
        "never the secret"
    );
    server.shutdown().await;
}

/// Debian's `influx` CLI (InfluxDB 1.x's shell) INSERTs through `/write`
/// after its `/ping`, with the token as its password; the official Python
/// client writes through `/api/v2/write` with `Authorization: Token`.
async fn real_influx_clients(database: TestDatabase) {
    let Some(influx) = outside_program("influx", "apt-get install influxdb-client") else {
        return;
    };
    let (server, admin) = start(&database).await;
    let (_, token) = fleet_token(&server, &admin, "*", true).await;
    let port = server.address.port().to_string();
    let now = unix_now() as i64;
    let output = tokio::process::Command::new(&influx)
        .args([
            "-host",
            "127.0.0.1",
            "-port",
            &port,
            "-username",
            "telegraf",
        ])
        .args([
            "-password",
            &token,
            "-database",
            "telegraf",
            "-precision",
            "s",
        ])
        .args([
            "-execute",
            &format!("INSERT cpu,cpu=cpu-total,host=cli-1 usage_idle=66 {now}"),
        ])
        .output()
        .await
        .expect("run influx");
    assert!(
        output.status.success(),
        "influx: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let cli = exported(&server, &admin, "cli-1").await;
    assert_eq!(cli.len(), 1, "{cli:?}");
    assert_eq!(number(&cli[0], "cpu_load"), 34.0);
    assert_eq!(number(&cli[0], "time") as i64, now);

    let python = std::env::var("SYSMON_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_client = std::process::Command::new(&python)
        .args(["-c", "import influxdb_client"])
        .status()
        .is_ok_and(|status| status.success());
    if !has_client {
        assert!(
            !sysmon_testkit::running_in_ci(),
            "the Python influxdb-client is not installed: .ci/run installs it (pip install influxdb-client)"
        );
        eprintln!("skipped: the Python influxdb-client is not installed");
        server.shutdown().await;
        return;
    }
    let script = format!(
        r#"
from influxdb_client import InfluxDBClient, Point, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
with InfluxDBClient(url="http://127.0.0.1:{port}", token="{token}", org="sysmon") as client:
    write = client.write_api(write_options=SYNCHRONOUS)
    write.write(bucket="fleet", record=Point("mem").tag("host", "py-1")
                .field("total", 8000000000).field("used", 2000000000).field("available", 6000000000)
                .time({now}, WritePrecision.S))
    write.write(bucket="fleet", record="cpu,cpu=cpu-total,host=py-1 usage_idle=12.5 {now}", write_precision=WritePrecision.S)
"#
    );
    let output = tokio::process::Command::new(&python)
        .args(["-c", &script])
        .output()
        .await
        .expect("run python");
    assert!(
        output.status.success(),
        "python: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let py = exported(&server, &admin, "py-1").await;
    assert_eq!(py.len(), 1, "two requests, one host and second: {py:?}");
    // Two requests for one second: the second is a duplicate of the first
    // (documented), so the sample holds the first request's memory.
    assert_eq!(number(&py[0], "memory_used_bytes"), 2e9);
    server.shutdown().await;
}

/// Telegraf's flush can split a tick over two requests; Prometheus's
/// remote write a scrape. The later part completes the stored sample, in
/// the raw samples and in the rollups, whether the sample is still pending
/// a fold (the part waits for one) or folded already; a replay changes
/// nothing.
async fn a_split_tick_completes_the_stored_sample(database: TestDatabase) {
    let (server, admin) = start(&database).await;
    let (_, token) = fleet_token(&server, &admin, "sp-*", true).await;
    let minute = (unix_now() as i64 / 60 - 2) * 60;
    let t = minute + 30;
    let send = |body: String| {
        let (server, token) = (&server, &token);
        async move {
            let (status, reply) = write(
                server,
                "/write?precision=s",
                Some(format!("Token {token}")),
                body,
                false,
            )
            .await;
            assert_eq!(status, 204, "{reply}");
        }
    };
    send(format!("cpu,cpu=cpu-total,host=sp-1 usage_idle=75 {t}")).await;
    // At once: the sample is not folded yet, so this part waits for a fold.
    let memory =
        format!("mem,host=sp-1 total=8000000000i,available=6000000000i,used=2000000000i {t}");
    send(memory.clone()).await;
    // Folded by now: completed in place, its summaries merged at once.
    send(format!(
        "system,host=sp-1 load1=0.5,load5=0.25,load15=0.125 {t}"
    ))
    .await;
    send(memory).await; // a replay

    let rows = exported(&server, &admin, "sp-1").await;
    assert_eq!(rows.len(), 1, "one sample: {rows:?}");
    let row = &rows[0];
    assert_eq!(number(row, "time") as i64, t);
    assert_eq!(number(row, "cpu_load"), 25.0);
    assert_eq!(number(row, "memory_total_bytes"), 8e9);
    assert_eq!(number(row, "memory_used_bytes"), 2e9);
    assert_eq!(number(row, "load_average_1m"), 0.5);

    let series = server
        .get_json(
            &format!(
                "/api/v1/clients/sp-1/series?from={minute}&to={}&step=60&resolution=1m",
                minute + 60
            ),
            &admin,
        )
        .await;
    assert_eq!(series["count"], json!([1]), "{series}");
    let metrics = &series["metrics"];
    assert_eq!(metrics["cpu_load"]["avg"], json!([25.0]), "{series}");
    assert_eq!(metrics["load_average_1m"]["avg"], json!([0.5]), "{series}");
    let mem = metrics["mem"]["avg"][0]
        .as_f64()
        .expect("mem in the rollup");
    assert!((mem - 2e9 / 1_048_576.0).abs() < 1e-6, "{series}");
    server.shutdown().await;
}

/// The most hosts one request may carry, all new: created together (one
/// statement), each with its sample; a second request finds them all.
async fn a_request_creates_a_thousand_hosts_at_once(database: TestDatabase) {
    let (server, admin) = start(&database).await;
    let (_, token) = fleet_token(&server, &admin, "bulk-*", true).await;
    // A name a client registered first stays the client's.
    server.register("bulk-0007", "squatter-pw").await;
    let t = unix_now() as i64 - 5;
    let body = |t: i64| {
        (0..1000)
            .map(|host| format!("cpu,cpu=cpu-total,host=bulk-{host:04} usage_idle=60 {t}\n"))
            .collect::<String>()
    };
    let (status, reply) = write(
        &server,
        "/write?precision=s",
        Some(format!("Token {token}")),
        body(t),
        false,
    )
    .await;
    assert_eq!(status, 400, "{reply}");
    let error = reply["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("line 8: host `bulk-0007` registered itself"),
        "{reply}"
    );

    let fleet = server.get_json("/api/v1/clients", &admin).await;
    let created = fleet["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter(|client| {
            let name = client["name"].as_str().unwrap_or_default();
            name.starts_with("bulk-") && name != "bulk-0007"
        })
        .count();
    assert_eq!(created, 999, "{fleet}");
    let rows = exported(&server, &admin, "bulk-0999").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(number(&rows[0], "cpu_load"), 40.0);

    let (status, reply) = write(
        &server,
        "/write?precision=s",
        Some(format!("Token {token}")),
        body(t + 1),
        false,
    )
    .await;
    assert_eq!(status, 400, "still only the squatted host refused: {reply}");
    assert_eq!(exported(&server, &admin, "bulk-0000").await.len(), 2);
    server.shutdown().await;
}
