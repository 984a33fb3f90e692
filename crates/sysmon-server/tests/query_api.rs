//! The v1 read API on both stores: series bucket math, range edges, rollups
//! against raw samples, retention, CSV, live updates and who may read what.

mod common;

use std::time::Duration;

use common::CompatApi;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sysmon_server::services::query::RetentionConfig;
use sysmon_testkit::{TestDatabase, TestServer};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

sysmon_testkit::on_both_stores!(
    buckets_hold_exact_min_avg_max,
    range_edges_are_aligned_and_to_is_exclusive,
    rollups_equal_the_raw_samples_they_summarise,
    retention_removes_only_what_expired,
    access_control_in_every_direction,
    live_updates_carry_only_the_watched_client,
    csv_export_has_every_sample_in_range,
    fleet_overview_shows_status_and_latest_values,
    filesystems_of_the_latest_sample,
    labels_group_the_fleet,
);

const ADMIN_PASSWORD: &str = "admin-password-1";
/// A minute, ten-minute and hour boundary.
const BASE: i64 = 1_764_000_000;

/// A server with a known admin that keeps every tier forever (the data
/// here is dated around BASE, which the default retention would skip).
async fn start(database: &TestDatabase) -> TestServer {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.retention = RetentionConfig::forever();
    TestServer::start(config).await
}

/// Logs in through the dashboard route; returns the token.
async fn login(server: &TestServer, name: &str, password: &str) -> String {
    let response = server
        .http
        .post(server.url("/api/v1/session"))
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {name}");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let body: Value = response.json().await.unwrap();
    body["token"].as_str().unwrap().to_owned()
}

async fn get(server: &TestServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = server.http.get(server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_batch(server: &TestServer, token: &str, samples: &[Value]) {
    server.post_samples(token, samples).await;
}

async fn series(server: &TestServer, token: &str, client: &str, query: &str) -> Value {
    let (status, body) = get(
        server,
        &format!("/api/v1/clients/{client}/series?{query}"),
        Some(token),
    )
    .await;
    assert_eq!(status, 200, "series {query}: {body}");
    body
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

/// cpu = i % 7 * 10 for the i-th second after BASE, so every minute's
/// min, max and mean are known.
fn cpu_samples(seconds: std::ops::Range<i64>) -> Vec<Value> {
    seconds
        .map(|i| json!({"time": BASE + i, "cpu_load": (i % 7 * 10) as f64}))
        .collect()
}

async fn buckets_hold_exact_min_avg_max(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register("web1", "pw-secret1").await;
    post_batch(&server, &token, &cpu_samples(0..180)).await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    let range = format!("from={BASE}&to={}&metrics=cpu_load", BASE + 180);
    for resolution in ["raw", "1m", "auto"] {
        let body = series(
            &server,
            &admin,
            "web1",
            &format!("{range}&step=60&resolution={resolution}"),
        )
        .await;
        assert_eq!(
            numbers(&body["time"]),
            vec![BASE as f64, (BASE + 60) as f64, (BASE + 120) as f64]
        );
        assert_eq!(body["count"], json!([60, 60, 60]));
        let cpu = &body["metrics"]["cpu_load"];
        for (bucket, start) in [0i64, 60, 120].into_iter().enumerate() {
            let values: Vec<f64> = (start..start + 60).map(|i| (i % 7 * 10) as f64).collect();
            let mean = values.iter().sum::<f64>() / 60.0;
            assert_eq!(cpu["min"][bucket], 0.0, "{resolution}");
            assert_eq!(cpu["max"][bucket], 60.0, "{resolution}");
            let avg = cpu["avg"][bucket].as_f64().unwrap();
            assert!((avg - mean).abs() < 1e-9, "{resolution}: {avg} vs {mean}");
        }
    }
    // A step finer than the data gives the raw points themselves.
    let body = series(&server, &admin, "web1", &format!("{range}&step=0.5")).await;
    assert_eq!(body["resolution"], "raw");
    assert_eq!(body["time"].as_array().unwrap().len(), 180);
    assert_eq!(body["metrics"]["cpu_load"]["avg"][8], 10.0);
    assert_eq!(body["metrics"]["cpu_load"]["min"][8], 10.0);
    // Ten-second buckets: mean of 0,10,...,60,0,10,20 (i = 0..9).
    let body = series(&server, &admin, "web1", &format!("{range}&step=10")).await;
    assert_eq!(body["count"][0], 10);
    let expected = [0, 10, 20, 30, 40, 50, 60, 0, 10, 20].iter().sum::<i32>() as f64 / 10.0;
    assert_eq!(body["metrics"]["cpu_load"]["avg"][0], expected);
}

async fn range_edges_are_aligned_and_to_is_exclusive(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register("web1", "pw-secret1").await;
    post_batch(&server, &token, &cpu_samples(0..180)).await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    // Whole buckets around the range: [BASE, BASE+120).
    let body = series(
        &server,
        &admin,
        "web1",
        &format!("from={}&to={}&step=60", BASE + 30, BASE + 90),
    )
    .await;
    assert_eq!(body["from"], BASE as f64);
    assert_eq!(body["to"], (BASE + 120) as f64);
    assert_eq!(body["count"], json!([60, 60]));
    // Raw seconds: `from` included, `to` excluded.
    let body = series(
        &server,
        &admin,
        "web1",
        &format!("from={}&to={}&step=1&resolution=raw", BASE + 10, BASE + 20),
    )
    .await;
    let times = numbers(&body["time"]);
    assert_eq!(times.first(), Some(&((BASE + 10) as f64)));
    assert_eq!(times.last(), Some(&((BASE + 19) as f64)));
    assert_eq!(times.len(), 10);
    // Nothing there: an empty series, not an error.
    let body = series(
        &server,
        &admin,
        "web1",
        &format!("from={}&to={}", BASE - 7200, BASE - 3600),
    )
    .await;
    assert_eq!(body["time"], json!([]));
    // Bad parameters name themselves.
    for (query, word) in [
        (format!("from={}&to={}", BASE + 10, BASE), "before"),
        ("from=yesterday".to_owned(), "from"),
        ("step=-1".to_owned(), "step"),
        ("metrics=cpu_load,bogus".to_owned(), "bogus"),
        ("resolution=5m".to_owned(), "5m"),
        ("colour=red".to_owned(), "colour"),
        (
            format!("from={}&to={}&step=0.01", BASE, BASE + 86_400 * 30),
            "at most",
        ),
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/v1/clients/web1/series?{query}"),
            Some(&admin),
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert!(
            body["error"].as_str().unwrap().contains(word),
            "{query}: {body}"
        );
    }
}

/// Two hours of per-second samples with every charted metric, some gaps
/// and a sample missing most metrics.
fn varied_samples() -> Vec<Value> {
    (0..7200)
        .filter(|i| i % 97 != 0)
        .map(|i| {
            let wave = ((i * 37) % 101) as f64;
            if i % 50 == 0 {
                return json!({"time": BASE + i, "cpu_load": wave});
            }
            json!({
                "time": BASE + i, "cpu_load": wave / 1.01, "mem": 1000.0 + wave,
                "storage": 5000.0 + (i / 60) as f64, "load_average_1m": wave / 50.0,
                "memory_used_bytes": 1_000_000 + i * 1000, "memory_total_bytes": 8_000_000_000u64,
                "swap_used_bytes": i, "disk_read_bytes_per_second": wave * 1000.0,
                "disk_write_bytes_per_second": wave * 10.0,
                "network_receive_bytes_per_second": wave * 3.0,
                "network_transmit_bytes_per_second": wave * 4.0,
                "temperature_celsius": 40.0 + wave / 10.0 - 5.0
            })
        })
        .collect()
}

async fn rollups_equal_the_raw_samples_they_summarise(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register("web1", "pw-secret1").await;
    let samples = varied_samples();
    // Ten samples are held back, to arrive later with a repeated time.
    let held = &samples[500..510];
    let rest: Vec<Value> = samples[..500]
        .iter()
        .chain(&samples[510..])
        .cloned()
        .collect();
    for chunk in rest.chunks(1000) {
        post_batch(&server, &token, chunk).await;
    }
    // A replay must not count twice...
    post_batch(&server, &token, &samples[..500]).await;
    // ...nor a new time that comes twice in one batch: the first row is
    // the one stored, so it is the one summarised.
    let mut repeated = held.to_vec();
    let mut changed = held[5].clone();
    changed["cpu_load"] = json!(99.5);
    repeated.push(changed);
    post_batch(&server, &token, &repeated).await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    let range = format!("from={BASE}&to={}", BASE + 7200);
    for (step, tier) in [(60, "1m"), (600, "10m"), (3600, "1h"), (1200, "10m")] {
        let raw = series(
            &server,
            &admin,
            "web1",
            &format!("{range}&step={step}&resolution=raw"),
        )
        .await;
        let rolled = series(&server, &admin, "web1", &format!("{range}&step={step}")).await;
        assert_eq!(rolled["resolution"], tier);
        assert_eq!(raw["time"], rolled["time"], "step {step}");
        assert_eq!(raw["count"], rolled["count"], "step {step}");
        let total: i64 = rolled["count"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .sum();
        assert_eq!(total as usize, samples.len());
        let metrics = raw["metrics"].as_object().unwrap();
        assert_eq!(metrics.len(), 12);
        for (metric, raw_series) in metrics {
            for part in ["min", "max", "avg"] {
                let expected = raw_series[part].as_array().unwrap();
                let actual = rolled["metrics"][metric][part].as_array().unwrap();
                assert_eq!(expected.len(), actual.len());
                for (e, a) in expected.iter().zip(actual) {
                    match (e.as_f64(), a.as_f64()) {
                        (Some(e), Some(a)) => assert!(
                            (e - a).abs() <= 1e-9 * e.abs().max(1.0),
                            "{metric} {part} step {step}: raw {e}, rollup {a}"
                        ),
                        _ => assert_eq!(e, a, "{metric} {part} step {step}"),
                    }
                }
            }
        }
    }
}

async fn retention_removes_only_what_expired(database: TestDatabase) {
    // Samples stored while everything was kept...
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.retention.raw = None;
    let server = TestServer::start(config.clone()).await;
    let token = server.register("web1", "pw-secret1").await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let day = 86_400;
    let times = [now - 3 * day, now - day - day / 2, now - 3600];
    let samples: Vec<Value> = times
        .iter()
        .map(|t| json!({"time": t, "cpu_load": 50.0}))
        .collect();
    post_batch(&server, &token, &samples).await;
    server.shutdown().await;

    // ...then a restart with shorter retention. Half a day for raw
    // samples: PostgreSQL drops them a whole day at a time once the day has
    // passed the horizon, so the sample 1.5 days old is gone on both stores
    // wherever midnight falls (with one day it could share a day with the
    // horizon and stay).
    config.retention.raw = Some(Duration::from_secs(day as u64 / 2));
    config.retention.one_minute = Some(Duration::from_secs(2 * day as u64));
    config.retention.ten_minutes = None;
    config.retention.one_hour = None;
    config.retention.check_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    let count = |body: &Value| -> i64 {
        body["count"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_i64().unwrap())
            .sum()
    };
    let range = format!("from={}&to={}", now - 4 * day, now);
    let tier = |resolution: &str| format!("{range}&step=3600&resolution={resolution}");
    // The job runs at start and every 200 ms: wait for both tiers.
    let (mut raw_left, mut minute_left) = (-1, -1);
    for _ in 0..50 {
        raw_left = count(&series(&server, &admin, "web1", &tier("raw")).await);
        minute_left = count(&series(&server, &admin, "web1", &tier("1m")).await);
        if (raw_left, minute_left) == (1, 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(raw_left, 1, "raw keeps only the last half day");
    assert_eq!(minute_left, 2, "1-minute rollups keep two days");
    let ten = series(&server, &admin, "web1", &tier("10m")).await;
    assert_eq!(count(&ten), 3, "10-minute rollups are kept forever here");
    let hour = series(&server, &admin, "web1", &tier("1h")).await;
    assert_eq!(count(&hour), 3);
    // The automatic choice skips the tiers that lost the range's start.
    let auto = series(&server, &admin, "web1", &format!("{range}&step=60")).await;
    assert_eq!(auto["resolution"], "10m");
    assert_eq!(count(&auto), 3);
    // A sample older than raw samples are kept is refused, saying why.
    let response = server
        .http
        .post(server.url("/api/v1/samples"))
        .bearer_auth(&token)
        .json(&json!([{"time": now - 2 * day, "cpu_load": 1.0}]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("retention.raw_days"),
        "{body}"
    );
    assert_eq!(
        (&body["code"], &body["index"]),
        (&json!("retention_expired"), &json!(0))
    );
}

async fn access_control_in_every_direction(database: TestDatabase) {
    let server = start(&database).await;
    let token_a = server.register("alpha", "pw-a-secret").await;
    let token_b = server.register("bravo", "pw-b-secret").await;
    post_batch(&server, &token_a, &cpu_samples(0..5)).await;
    post_batch(&server, &token_b, &cpu_samples(0..5)).await;
    let reads = |client: &str| {
        [
            format!("/api/v1/clients/{client}/series"),
            format!("/api/v1/clients/{client}/export.csv"),
        ]
    };

    // Nobody logged in: 401 everywhere, saying how to log in.
    for path in ["/api/v1/clients", "/api/v1/server", "/api/v1/session"]
        .map(String::from)
        .into_iter()
        .chain(reads("alpha"))
    {
        let (status, body) = get(&server, &path, None).await;
        assert_eq!(status, 401, "{path}");
        assert!(body["error"].as_str().unwrap().contains("log"), "{path}");
        let (status, _) = get(&server, &path, Some("not-a-token")).await;
        assert_eq!(status, 401, "{path} with a bad token");
    }

    // A client's own token, and its own login, read only itself.
    let session_a = login(&server, "alpha", "pw-a-secret").await;
    for token in [&token_a, &session_a] {
        let (_, list) = get(&server, "/api/v1/clients", Some(token)).await;
        let names: Vec<&str> = list["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alpha"]);
        for path in reads("alpha") {
            assert_eq!(get(&server, &path, Some(token)).await.0, 200, "{path}");
        }
        // Another client, or one that does not exist: the same 403.
        for client in ["bravo", "nobody"] {
            for path in reads(client) {
                assert_eq!(get(&server, &path, Some(token)).await.0, 403, "{path}");
            }
        }
        assert_eq!(get(&server, "/api/v1/server", Some(token)).await.0, 403);
    }
    // A dashboard session is not an ingest token, and logging out ends it.
    let pushed = server
        .push_form(
            "alpha",
            &session_a,
            &[("time", "1764000100"), ("cpu_load", "1")],
        )
        .await;
    assert_eq!(pushed.status(), 401);
    let logout = server
        .http
        .delete(server.url("/api/v1/session"))
        .bearer_auth(&session_a)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert_eq!(
        get(&server, "/api/v1/clients", Some(&session_a)).await.0,
        401
    );
    assert_eq!(
        get(&server, "/api/v1/clients", Some(&token_a)).await.0,
        200,
        "ingest tokens stay valid"
    );

    // A login body must be JSON, so a cross-site form cannot post one.
    let form = server
        .http
        .post(server.url("/api/v1/session"))
        .header("Content-Type", "text/plain")
        .body(r#"{"username": "alpha", "password": "pw-a-secret"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);

    let (_, list) = get(&server, "/api/v1/clients", Some(&token_b)).await;
    assert_eq!(list["clients"].as_array().unwrap().len(), 1);
    assert_eq!(list["clients"][0]["name"], "bravo");
    for path in reads("alpha") {
        assert_eq!(
            get(&server, &path, Some(&token_b)).await.0,
            403,
            "B reads A: {path}"
        );
    }

    // A wrong password gets nothing.
    let wrong = server
        .http
        .post(server.url("/api/v1/session"))
        .json(&json!({"username": "admin", "password": "guess-guess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // The admin sees everyone, and a missing client is a 404 to them.
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    let (_, list) = get(&server, "/api/v1/clients", Some(&admin)).await;
    assert_eq!(list["clients"].as_array().unwrap().len(), 2);
    for path in reads("alpha").into_iter().chain(reads("bravo")) {
        assert_eq!(get(&server, &path, Some(&admin)).await.0, 200, "{path}");
    }
    let (status, body) = get(&server, "/api/v1/clients/nobody/series", Some(&admin)).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("nobody"));
    // Bounds far outside any sample time are clamped, not overflowed.
    let (status, body) = get(
        &server,
        "/api/v1/clients/alpha/series?from=-9000000000000&to=9000000000000&step=1&resolution=raw",
        Some(&admin),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, health) = get(&server, "/api/v1/server", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(health["clients"], 2);
    let (_, me) = get(&server, "/api/v1/session", Some(&admin)).await;
    assert_eq!(me, json!({"name": "admin", "role": "admin"}));

    // The cookie works like the bearer token, and logging out ends it.
    let cookie = format!("sysmon_session={admin}");
    let with_cookie = server
        .http
        .get(server.url("/api/v1/clients"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(with_cookie.status(), 200);
    let logout = server
        .http
        .delete(server.url("/api/v1/session"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    assert!(logout.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(get(&server, "/api/v1/clients", Some(&admin)).await.0, 401);
}

async fn live_updates_carry_only_the_watched_client(database: TestDatabase) {
    let server = start(&database).await;
    let token_a = server.register("alpha", "pw-secret1").await;
    let token_b = server.register("bravo", "pw-secret1").await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;

    let url = format!("ws://{}/api/v1/clients/alpha/live", server.address);
    // Without a session, with another client's token, or from another
    // site's page, the upgrade is refused.
    assert!(tokio_tungstenite::connect_async(url.as_str())
        .await
        .is_err());
    let mut as_bravo = url.as_str().into_client_request().unwrap();
    as_bravo.headers_mut().insert(
        "Authorization",
        format!("Bearer {token_b}").parse().unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(as_bravo).await.is_err());
    let mut cross_site = url.as_str().into_client_request().unwrap();
    cross_site
        .headers_mut()
        .insert("Cookie", format!("sysmon_session={admin}").parse().unwrap());
    cross_site
        .headers_mut()
        .insert("Origin", "http://evil.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(cross_site).await.is_err());
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Cookie", format!("sysmon_session={admin}").parse().unwrap());
    let origin = format!("http://{}", server.address);
    request
        .headers_mut()
        .insert("Origin", origin.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    // The server says when it follows the client: no sample after that is
    // missed (a page reads what came before from the series).
    let ready = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("READY within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(ready.to_text().unwrap(), r#"{"type":"READY"}"#);

    post_batch(
        &server,
        &token_b,
        &[json!({"time": BASE, "cpu_load": 99.0})],
    )
    .await;
    post_batch(
        &server,
        &token_a,
        &[json!({"time": BASE + 1, "cpu_load": 42.5, "mem": 7.0})],
    )
    .await;
    let frame = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a live sample within 5 s")
        .unwrap()
        .unwrap();
    let message: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(message["type"], "SAMPLE");
    assert_eq!(message["client"], "alpha");
    assert_eq!(message["time"], (BASE + 1) as f64);
    assert_eq!(message["values"], json!({"cpu_load": 42.5, "mem": 7.0}));
    // A series says which sample was the newest when it was read.
    let (_, series) = get(
        &server,
        &format!("/api/v1/clients/alpha/series?from={BASE}&to={}", BASE + 60),
        Some(&admin),
    )
    .await;
    assert_eq!(series["latest"], json!((BASE + 1) as f64), "{series}");
}

async fn csv_export_has_every_sample_in_range(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register("web1", "pw-secret1").await;
    // More than one export window (6 h) apart.
    let samples = vec![
        json!({"time": BASE, "cpu_load": 1.5, "memory_used_bytes": 1024}),
        json!({"time": BASE + 7 * 3600, "cpu_load": 2.5}),
        json!({"time": BASE + 13 * 3600, "cpu_load": 3.5}),
    ];
    post_batch(&server, &token, &samples).await;
    let response = server
        .http
        .get(server.url(&format!(
            "/api/v1/clients/web1/export.csv?from={BASE}&to={}",
            BASE + 7 * 3600
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "time");
    assert_eq!(&header[1], "cpu_load");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "both ends are inclusive: {text}");
    assert_eq!(&rows[0][0], BASE.to_string());
    assert_eq!(&rows[0][1], "1.5");
    assert_eq!(&rows[0][7], "1024");
    assert_eq!(&rows[1][1], "2.5");
    let (status, body) = get(
        &server,
        "/api/v1/clients/web1/export.csv?from=soon",
        Some(&token),
    )
    .await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("from"));
}

async fn fleet_overview_shows_status_and_latest_values(database: TestDatabase) {
    let server = start(&database).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fresh = server.register("fresh", "pw-secret1").await;
    let gone = server.register("gone", "pw-secret1").await;
    server.register("silent", "pw-secret1").await;
    post_batch(
        &server,
        &fresh,
        &[
            json!({"time": now - 20, "cpu_load": 10.0}),
            json!({"time": now - 10, "cpu_load": 20.0, "memory_used_bytes": 5, "memory_total_bytes": 10,
                   "uptime_seconds": 86_400}),
        ],
    )
    .await;
    post_batch(
        &server,
        &gone,
        &[
            json!({"time": now - 700, "cpu_load": 1.0}),
            json!({"time": now - 600, "cpu_load": 2.0}),
        ],
    )
    .await;
    let admin = login(&server, "admin", ADMIN_PASSWORD).await;
    let (status, body) = get(&server, "/api/v1/clients", Some(&admin)).await;
    assert_eq!(status, 200);
    let clients = body["clients"].as_array().unwrap();
    let names: Vec<&str> = clients
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fresh", "gone", "silent"]);
    let fresh = &clients[0];
    assert_eq!(fresh["online"], true);
    assert_eq!(fresh["interval_seconds"], 10.0);
    assert_eq!(fresh["first_seen"], (now - 20) as f64);
    assert_eq!(fresh["last_seen"], (now - 10) as f64);
    assert_eq!(fresh["uptime_seconds"], 86_400, "{fresh}");
    assert_eq!(
        fresh["latest"],
        json!({"cpu_load": 20.0, "memory_used_bytes": 5.0, "memory_total_bytes": 10.0})
    );
    let gone = &clients[1];
    assert_eq!(gone["online"], false, "600 s silent at a 100 s interval");
    let silent = &clients[2];
    assert_eq!(silent["online"], false);
    assert_eq!(silent["last_seen"], Value::Null);
    assert_eq!(silent["latest"], json!({}));
    assert!(silent.get("uptime_seconds").is_none());
}

#[tokio::test]
async fn openapi_document_lists_every_v1_route() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let (status, document) = get(&server, "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/samples", "post"),
        ("/api/v1/samples", "get"),
        ("/api/v1/session", "post"),
        ("/api/v1/session", "delete"),
        ("/api/v1/clients", "get"),
        ("/api/v1/clients/{name}/series", "get"),
        ("/api/v1/clients/{name}/export.csv", "get"),
        ("/api/v1/clients/{name}/live", "get"),
        ("/api/v1/clients/{name}/filesystems", "get"),
        ("/api/v1/clients/{name}/filesystems/history", "get"),
        ("/api/v1/clients/{name}/labels", "put"),
        ("/api/v1/clients/{name}", "delete"),
        ("/api/v1/enrollment-tokens", "post"),
        ("/api/v1/enrollment-tokens", "get"),
        ("/api/v1/enrollment-tokens/{id}", "delete"),
        ("/api/v1/server", "get"),
        ("/api/v1/alerts", "get"),
        ("/api/v1/alerts/history", "get"),
        ("/api/v1/alerts/rules", "get"),
        ("/api/v1/alerts/rules/{name}", "put"),
        ("/api/v1/alerts/rules/{name}", "delete"),
        ("/api/v1/alerts/channels/{name}/test", "post"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    let series_params: Vec<&str> = paths["/api/v1/clients/{name}/series"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "name",
        "from",
        "to",
        "step",
        "points",
        "metrics",
        "resolution",
    ] {
        assert!(series_params.contains(&name), "series documents `{name}`");
    }
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn first_start_creates_one_admin_and_only_once() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config.clone()).await;
    login(&server, "admin", ADMIN_PASSWORD).await;
    server.shutdown().await;
    // A second start with another password changes nothing.
    config.dashboard.initial_admin_password = Some("another-password".into());
    let server = TestServer::start(config).await;
    login(&server, "admin", ADMIN_PASSWORD).await;
}

#[tokio::test]
async fn user_subcommand_adds_lists_and_removes_dashboard_users() {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let database = TestDatabase::sqlite().await;
    let binary = env!("CARGO_BIN_EXE_sysmon-server");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(binary)
            .args(["--database-url", &database.url])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let added = run(
        &["user", "add", "carol", "--client", "alpha"],
        "carol-password\n",
    );
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let short = run(&["user", "add", "dave"], "short\n");
    assert!(!short.status.success());
    assert!(
        String::from_utf8_lossy(&short.stdout).contains("needs 8 to 1024 characters"),
        "{}",
        String::from_utf8_lossy(&short.stdout)
    );
    let again = run(&["user", "add", "carol"], "carol-password\n");
    assert!(
        !again.status.success(),
        "a second add of the same name fails"
    );
    let listed = run(&["user", "list"], "");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("carol\tviewer (alpha)"));

    let server = database.start().await;
    let alpha = server.register("alpha", "pw-secret1").await;
    let bravo = server.register("bravo", "pw-secret1").await;
    post_batch(&server, &alpha, &cpu_samples(0..2)).await;
    post_batch(&server, &bravo, &cpu_samples(0..2)).await;
    let carol = login(&server, "carol", "carol-password").await;
    let (_, list) = get(&server, "/api/v1/clients", Some(&carol)).await;
    let names: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha"], "a viewer sees only granted clients");
    assert_eq!(
        get(&server, "/api/v1/clients/bravo/series", Some(&carol))
            .await
            .0,
        403
    );
    assert_eq!(get(&server, "/api/v1/server", Some(&carol)).await.0, 403);

    let removed = run(&["user", "remove", "carol"], "");
    assert!(removed.status.success());
    assert_eq!(
        get(&server, "/api/v1/clients", Some(&carol)).await.0,
        401,
        "sessions end with the user"
    );
}

/// `GET /api/v1/clients/{name}/filesystems`: every file system of the
/// latest sample (not an earlier one's), with the share used; none before
/// the first sample; the same access rules as every read.
async fn filesystems_of_the_latest_sample(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register("disks", "pw-secret1").await;
    let (status, body) = get(&server, "/api/v1/clients/disks/filesystems", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"time": null, "filesystems": []}));
    post_batch(
        &server,
        &token,
        &[
            json!({"time": BASE, "filesystems": [{"mount_point": "/old", "used_bytes": 1, "total_bytes": 2}]}),
            json!({"time": BASE + 10, "filesystems": [
                {"mount_point": "/", "used_bytes": 25, "total_bytes": 100},
                {"mount_point": "/data", "used_bytes": 0, "total_bytes": 0}]}),
        ],
    )
    .await;
    let (status, body) = get(&server, "/api/v1/clients/disks/filesystems", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"time": (BASE + 10) as f64, "filesystems": [
            {"mount_point": "/", "used_bytes": 25, "total_bytes": 100, "used_percent": 25.0},
            {"mount_point": "/data", "used_bytes": 0, "total_bytes": 0, "used_percent": null}]})
    );
    let other = server.register("other", "pw-secret1").await;
    let (status, _) = get(&server, "/api/v1/clients/disks/filesystems", Some(&other)).await;
    assert_eq!(status, 403, "another client may not read it");

    // Over time: a line per mount point, the earlier sample's included.
    let history = format!(
        "/api/v1/clients/disks/filesystems/history?from={BASE}&to={}",
        BASE + 60
    );
    let (status, body) = get(&server, &history, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    let mounts: Vec<(&str, &Value)> = body["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|mount| (mount["mount_point"].as_str().unwrap(), &mount["used_bytes"]))
        .collect();
    assert_eq!(
        mounts,
        [
            ("/", &json!([25])),
            ("/data", &json!([0])),
            ("/old", &json!([1]))
        ]
    );
    assert_eq!(get(&server, &history, Some(&other)).await.0, 403);
    for (query, field) in [
        (format!("from={}&to={BASE}", BASE + 60), "from"),
        ("from=yesterday".to_owned(), "from"),
        ("to=1e400".to_owned(), "to"),
        ("step=5".to_owned(), "step"),
    ] {
        let (status, body) = get(
            &server,
            &format!("/api/v1/clients/disks/filesystems/history?{query}"),
            Some(&token),
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(field)),
            "{query}: {body}"
        );
    }
}

async fn put_labels(server: &TestServer, token: &str, host: &str, labels: Value) -> (u16, Value) {
    let response = server
        .http
        .put(server.url(&format!("/api/v1/clients/{host}/labels")))
        .bearer_auth(token)
        .json(&json!({"labels": labels}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Admins label hosts; the fleet carries the labels; bad labels, other
/// callers and unknown hosts are refused.
async fn labels_group_the_fleet(database: TestDatabase) {
    let server = start(&database).await;
    let web = server.register("web1", "pw-secret1").await;
    server.register("web2", "pw-secret1").await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let (status, body) =
        put_labels(&server, &admin, "web1", json!(["prod", "db", "db", " x "])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"client": "web1", "labels": ["db", "prod", "x"]})
    );
    let fleet = server.get_json("/api/v1/clients", &admin).await;
    let labels: Vec<(&str, &Value)> = fleet["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|client| (client["name"].as_str().unwrap(), &client["labels"]))
        .collect();
    assert_eq!(
        labels,
        [("web1", &json!(["db", "prod", "x"])), ("web2", &json!([]))]
    );

    for bad in [
        json!(["has space"]),
        json!([""]),
        json!(["a,b"]),
        json!((0..17).map(|i| format!("l{i}")).collect::<Vec<_>>()),
    ] {
        let (status, body) = put_labels(&server, &admin, "web1", bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = put_labels(&server, &web, "web1", json!(["mine"])).await;
    assert_eq!(status, 403, "a client may not label itself");
    let (status, _) = put_labels(&server, &admin, "nobody", json!(["x"])).await;
    assert_eq!(status, 404);
    let (status, body) = put_labels(&server, &admin, "web1", json!([])).await;
    assert_eq!((status, &body["labels"]), (200, &json!([])));
    let fleet = server.get_json("/api/v1/clients", &admin).await;
    assert_eq!(fleet["clients"][0]["labels"], json!([]), "cleared: {fleet}");
}
