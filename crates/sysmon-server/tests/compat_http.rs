//! Every HTTP row of the wire contract (compat.md), on both stores.

mod common;

use common::CompatApi;
use serde_json::{json, Value};
use sysmon_testkit::{TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    registration_issues_working_tokens,
    usernames_follow_the_original_rule,
    push_accepts_form_and_json_and_echoes,
    push_refuses_bad_requests_with_clear_errors,
    oversized_body_is_413,
    log_span_reports_first_and_last_time,
    report_returns_the_range_in_order,
    same_client_and_time_is_stored_once,
    concurrent_pushes_are_all_stored,
    long_report_streams_every_row_in_order,
    client_hanging_up_mid_report_frees_the_reader,
    relaxed_durability_stores_every_acknowledged_sample,
);

async fn registration_issues_working_tokens(database: TestDatabase) {
    let server = database.start().await;
    let response = server
        .http
        .post(server.url("/client"))
        .json(&json!({"username": "wood", "pass": "123-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first: Value = response.json().await.unwrap();
    assert_eq!(first["registration"], "wood");
    let first_token = first["client_id"].as_str().unwrap().to_owned();
    assert!(first_token.len() >= 22, "at least 128 bits: {first_token}");
    assert_ne!(
        first_token, "d29vZDoxMjM=",
        "not the original's base64(user:pass)"
    );

    // Known user, right password (the README's `password` key, to `/client/`).
    let response = server
        .http
        .post(server.url("/client/"))
        .json(&json!({"username": "wood", "password": "123-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let second: Value = response.json().await.unwrap();
    assert!(second.get("registration").is_none(), "{second}");
    let second_token = second["client_id"].as_str().unwrap();
    assert_ne!(second_token, first_token, "each login issues a new token");

    // Both tokens work.
    for (time, token) in [
        ("1700000000", first_token.as_str()),
        ("1700000001", second_token),
    ] {
        let response = server
            .push_form("wood", token, &[("time", time), ("mem", "1")])
            .await;
        assert_eq!(response.status(), 202);
    }

    // Wrong password.
    let response = server
        .http
        .post(server.url("/client"))
        .json(&json!({"username": "wood", "pass": "1234-secret"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "authorization error"})
    );

    // Form-encoded registration works too.
    let response = server
        .http
        .post(server.url("/client"))
        .form(&[("username", "formuser"), ("pass", "x-secret-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

async fn usernames_follow_the_original_rule(database: TestDatabase) {
    let server = database.start().await;
    let refused = [
        json!({"pass": "1"}),
        json!({"username": "", "pass": "1"}),
        json!({"username": "1abc", "pass": "1"}),
        json!({"username": "'; DROP TABLE samples; --", "pass": "1"}),
        json!({"username": "_x", "pass": "1"}),
    ];
    for body in refused {
        let response = server
            .http
            .post(server.url("/client"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{body}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "unsupportable username"})
        );
    }
    // Quotes, semicolons and unicode after a leading letter are fine, and
    // stored and matched exactly.
    for username in ["a'; DROP TABLE samples; --", "Ünïcødé-名前", "o\"brien;"] {
        let token = server.register(username, "pw-secret1").await;
        let path = format!("/client/{}", urlencode(username));
        let response = server
            .http
            .post(server.url(&path))
            .header("Authorization", &token)
            .form(&[("time", "1700000000"), ("cpu_load", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "{username}");
        let report: Value = server
            .http
            .get(server.url(&format!("{path}/time/report")))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["payload"].as_array().unwrap().len(), 1, "{username}");
    }
    server.assert_round_trip().await;
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn push_accepts_form_and_json_and_echoes(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;

    let response = server
        .push_form(
            "wood",
            &token,
            &[
                ("cpu_load", "25.9"),
                ("mem", "6172"),
                ("storage", "95888"),
                ("time", "1646650624"),
            ],
        )
        .await;
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"cpu_load": 25.9, "mem": 6172, "storage": 95888, "time": 1646650624})
    );

    // JSON as in the README, with a Bearer token and a fractional time.
    let response = server
        .http
        .post(server.url("/client/wood"))
        .header("Authorization", format!("Bearer {token}"))
        .json(&json!({"cpu_load": 30, "time": 1646650625.25}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"cpu_load": 30, "time": 1646650625.25})
    );

    // No time: stored at the server's now.
    let before = now_seconds();
    let response = server.push_form("wood", &token, &[("storage", "7")]).await;
    assert_eq!(response.status(), 202);
    let echoed = response.json::<Value>().await.unwrap();
    let time = echoed["time"].as_f64().unwrap();
    assert!(
        time >= before - 1.0 && time <= now_seconds() + 1.0,
        "{echoed}"
    );

    let rows = server.report("wood", &token, "").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        json!({"cpu": 25.9, "mem": 6172, "storage": 95888, "unix_time": 1646650624})
    );
    assert_eq!(
        rows[1],
        json!({"cpu": 30, "mem": null, "storage": null, "unix_time": 1646650625.25})
    );
    assert_eq!(rows[2]["storage"], 7);
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn push_refuses_bad_requests_with_clear_errors(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let other_token = server.register("other", "456-secret").await;

    // The status and message; the bodies the original fixes carry nothing
    // else, the others a code.
    let error_of = |response: reqwest::Response| async move {
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.unwrap();
        let message = body["error"].as_str().unwrap().to_owned();
        let fixed = ["incorrect data size", "authorization error", "log is empty"]
            .contains(&message.as_str());
        if fixed {
            assert_eq!(body, json!({"error": message}), "a fixed body");
        } else {
            let code = body["code"].as_str();
            assert!(
                matches!(code, Some("invalid_sample" | "invalid_request")),
                "{body}"
            );
        }
        (status, message)
    };

    // No fields at all.
    let response = server
        .http
        .post(server.url("/client/wood"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(response).await,
        (400, "incorrect data size".to_owned())
    );
    let response = server.push_json("wood", &token, &json!({})).await;
    assert_eq!(
        error_of(response).await,
        (400, "incorrect data size".to_owned())
    );

    // Missing, wrong, and another user's token.
    let unauthorized = (401, "authorization error".to_owned());
    let response = server
        .http
        .post(server.url("/client/wood"))
        .form(&[("mem", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, unauthorized);
    let response = server
        .push_form("wood", "not-a-token", &[("mem", "1")])
        .await;
    assert_eq!(error_of(response).await, unauthorized);
    let response = server
        .push_form("wood", &other_token, &[("mem", "1")])
        .await;
    assert_eq!(error_of(response).await, unauthorized);
    let response = server.push_form("nobody", &token, &[("mem", "1")]).await;
    assert_eq!(error_of(response).await, unauthorized);

    // Values that are not finite, non-negative numbers; unknown fields.
    let cases: [(&[(&str, &str)], &str); 9] = [
        (&[("mem", "abc")], "`mem`"),
        (&[("cpu_load", "NaN")], "`cpu_load`"),
        (&[("storage", "Infinity")], "`storage`"),
        (&[("storage", "-inf")], "`storage`"),
        (&[("mem", "-5")], "`mem`"),
        (&[("cpu_load", "101")], "`cpu_load`"),
        (&[("time", "12"), ("mem", "1")], "`time`"),
        (&[("time", "soon"), ("mem", "1")], "`time`"),
        (&[("mem", "1"), ("disk", "2")], "`disk`"),
    ];
    for (fields, named) in cases {
        let (status, error) = error_of(server.push_form("wood", &token, fields).await).await;
        assert_eq!(status, 400, "{fields:?}");
        assert!(error.contains(named), "{fields:?}: {error}");
    }
    let response = server
        .push_json("wood", &token, &json!({"mem": "NaN"}))
        .await;
    assert_eq!(error_of(response).await.0, 400);
    let response = server.push_json("wood", &token, &json!({"mem": [1]})).await;
    assert_eq!(error_of(response).await.0, 400);
    let response = server
        .http
        .post(server.url("/client/wood"))
        .header("Authorization", &token)
        .header("Content-Type", "application/json")
        .body("{\"mem\": NaN}")
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await.0, 400);

    // Other methods on the ingest route.
    for method in [
        reqwest::Method::GET,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let response = server
            .http
            .request(method.clone(), server.url("/client/wood"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405, "{method}");
    }
    // A user name that is not UTF-8 in the URL: a coded error, as JSON.
    let response = server.push_form("%FF", &token, &[("mem", "1")]).await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request", "{body}");

    // None of that stored anything, and the server is still well.
    let response = server
        .http
        .get(server.url("/client/wood/time"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(error_of(response).await, (406, "log is empty".to_owned()));
    server.assert_round_trip().await;
}

async fn oversized_body_is_413(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let body = format!("mem={}", "1".repeat(10 * 1024 * 1024));
    let response = server
        .http
        .post(server.url("/client/wood"))
        .header("Authorization", &token)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await;
    // The server may answer 413 before reading it all, or close the
    // connection while the client is still sending.
    if let Ok(response) = response {
        assert_eq!(response.status(), 413);
        assert!(response.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("1 MiB"));
    }
    server.assert_round_trip().await;
}

async fn log_span_reports_first_and_last_time(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = server
            .http
            .request(method, server.url("/client/wood/time"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 406);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "log is empty"})
        );
    }
    for time in ["1651155387", "1651155333", "1651155431.5"] {
        assert_eq!(
            server
                .push_form("wood", &token, &[("time", time), ("mem", "1")])
                .await
                .status(),
            202
        );
    }
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let response = server
            .http
            .request(method, server.url("/client/wood/time"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"start": 1651155333, "end": 1651155431.5})
        );
    }
    let response = server
        .http
        .get(server.url("/client/wood/time"))
        .header("Authorization", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"error": "authorization error"})
    );
}

async fn report_returns_the_range_in_order(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let other = server.register("other", "other-secret").await;
    for (time, cpu) in [
        ("1651155431", "20.5"),
        ("1651155333", "18"),
        ("1651155387", "20"),
        ("1651155500", "1"),
    ] {
        let response = server
            .push_form(
                "wood",
                &token,
                &[
                    ("time", time),
                    ("cpu_load", cpu),
                    ("mem", "8513"),
                    ("storage", "81720"),
                ],
            )
            .await;
        assert_eq!(response.status(), 202);
    }
    server
        .push_form(
            "other",
            &other,
            &[("time", "1651155400"), ("cpu_load", "99")],
        )
        .await;

    let times = |rows: &[Value]| {
        rows.iter()
            .map(|row| row["unix_time"].as_f64().unwrap())
            .collect::<Vec<_>>()
    };
    let rows = server
        .report("wood", &token, "?start=1651155333&end=1651155431")
        .await;
    assert_eq!(
        times(&rows),
        [1651155333.0, 1651155387.0, 1651155431.0],
        "inclusive on both ends, ordered"
    );
    assert_eq!(
        rows[0],
        json!({"cpu": 18, "mem": 8513, "storage": 81720, "unix_time": 1651155333})
    );
    assert_eq!(rows[2]["cpu"], 20.5);
    assert_eq!(
        times(&server.report("wood", &token, "?start=&end=").await).len(),
        4,
        "empty bounds: whole log"
    );
    assert_eq!(
        times(&server.report("wood", &token, "").await).len(),
        4,
        "absent bounds: whole log"
    );
    assert_eq!(
        times(&server.report("wood", &token, "?start=1651155400").await),
        [1651155431.0, 1651155500.0]
    );
    assert_eq!(
        times(&server.report("wood", &token, "?end=1651155332.9").await),
        Vec::<f64>::new()
    );

    // POST with the bounds in the query (the real client) or in the body.
    let response = server
        .http
        .post(server.url("/client/wood/time/report?start=1651155387&end=1651155387"))
        .header("Authorization", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["payload"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let response = server
        .http
        .post(server.url("/client/wood/time/report"))
        .header("Authorization", &token)
        .form(&[("start", "1651155431"), ("end", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.json::<Value>().await.unwrap()["payload"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    for query in ["?start=abc", "?end=tomorrow", "?start=1&end=NaN"] {
        let response = server
            .http
            .get(server.url(&format!("/client/wood/time/report{query}")))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{query}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "value error"})
        );
    }
    let response = server
        .http
        .get(server.url("/client/wood/time/report"))
        .header("Authorization", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "another user's token reads nothing");
}

async fn same_client_and_time_is_stored_once(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    for _ in 0..3 {
        let response = server
            .push_form(
                "wood",
                &token,
                &[("time", "1700000000.123"), ("cpu_load", "5")],
            )
            .await;
        assert_eq!(response.status(), 202, "a retry is acknowledged");
    }
    let rows = server.report("wood", &token, "").await;
    assert_eq!(
        rows,
        [json!({"cpu": 5, "mem": null, "storage": null, "unix_time": 1700000000.123})]
    );
}

async fn concurrent_pushes_are_all_stored(database: TestDatabase) {
    let server = std::sync::Arc::new(database.start().await);
    let mut clients = Vec::new();
    for client in 0..8 {
        let name = format!("host{client}");
        let token = server.register(&name, "pw-secret1").await;
        clients.push((name, token));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (name, token) in clients.clone() {
        let server = server.clone();
        tasks.spawn(async move {
            for second in 0..50 {
                let time = (1_700_000_000 + second).to_string();
                let response = server
                    .push_form(&name, &token, &[("time", &time), ("cpu_load", "1")])
                    .await;
                assert_eq!(response.status(), 202);
            }
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome.unwrap();
    }
    for (name, token) in clients {
        assert_eq!(server.report(&name, &token, "").await.len(), 50, "{name}");
    }
}

#[tokio::test]
async fn server_health_routes_with_and_without_api_prefix() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let get = |path: &str| {
        let request = server.http.get(server.url(path));
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    for prefix in ["", "/api"] {
        let (status, load) = get(&format!("{prefix}/monitor/cpu/load")).await;
        assert_eq!(status, 200);
        let load = load["load"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&load));

        let (status, info) = get(&format!("{prefix}/monitor/cpu/info")).await;
        assert_eq!(status, 200);
        assert!(info["logical cores count"].as_u64().unwrap() >= 1);
        assert!(info["physical cores count"].as_u64().unwrap() >= 1);
        assert_eq!(info["cores frequency"].as_array().unwrap().len(), 3);

        let (status, memory) = get(&format!("{prefix}/monitor/memory/info?units=MB")).await;
        assert_eq!(status, 200);
        let keys: Vec<&str> = memory
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for key in [
            "total",
            "available",
            "percent",
            "used",
            "free",
            "active",
            "inactive",
            "buffers",
            "cached",
            "shared",
            "slab",
        ] {
            assert!(keys.contains(&key), "memory/info lacks {key}: {memory}");
        }
        assert_eq!(keys.len(), 11);
        let total_mb = memory["total"].as_u64().unwrap();

        let (status, total) = get(&format!("{prefix}/monitor/memory/total?units=KB")).await;
        assert_eq!(status, 200);
        assert_eq!(total["units"], "KB");
        let total_kb = total["total"].as_u64().unwrap();
        assert_eq!(total_kb / 1024, total_mb, "KB and MB agree, rounded down");

        let (status, storage) = get(&format!("{prefix}/monitor/storage/info")).await;
        assert_eq!(status, 200, "GB by default");
        assert_eq!(storage["units"], "GB");
        for key in ["total", "used", "free", "percent"] {
            assert!(storage.get(key).is_some(), "{storage}");
        }
        let (status, storage) = get(&format!("{prefix}/monitor/storage/total?units=B")).await;
        assert_eq!(status, 200);
        assert!(storage["total"].as_u64().unwrap() >= storage["used"].as_u64().unwrap());
        assert_eq!(storage["units"], "B");

        let (status, error) = get(&format!("{prefix}/monitor/storage/info?units=PB")).await;
        assert_eq!(status, 400);
        assert!(error["error"].as_str().unwrap().contains("PB"));
        let response = server
            .http
            .post(server.url(&format!("{prefix}/monitor/cpu/load")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 405);
    }
    let started = std::time::Instant::now();
    let (status, load) = get("/monitor/cpu/load?interval=0.3").await;
    assert_eq!(status, 200);
    assert!(load["load"].is_number());
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "interval waits"
    );
    assert_eq!(get("/monitor/cpu/load?interval=abc").await.0, 400);

    for path in ["/api", "/api/"] {
        let (status, banner) = get(path).await;
        assert_eq!(status, 200);
        assert_eq!(banner["name"], "system monitor");
        assert!(banner["version"].is_string());
    }
    let (status, work_time) = get("/api/start_time").await;
    assert_eq!(status, 200);
    assert_eq!(work_time["type"], "WORK_TIME");
    let start = work_time["payload"]["start_work"].as_str().unwrap();
    let actual = work_time["payload"]["actual_time"].as_str().unwrap();
    chrono::NaiveDateTime::parse_from_str(start, "%a, %d %b %Y %H:%M:%S").expect(start);
    chrono::NaiveDateTime::parse_from_str(actual, "%d %b %Y %H:%M:%S").expect(actual);

    let welcome = server.http.get(server.url("/")).send().await.unwrap();
    assert_eq!(welcome.status(), 200);
    assert!(welcome.text().await.unwrap().contains("sysmon"));
    assert_eq!(get("/no/such/route").await.0, 404);
}

#[tokio::test]
async fn start_time_is_when_the_server_started() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let body: Value = server
        .http
        .get(server.url("/api/start_time"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let start = chrono::NaiveDateTime::parse_from_str(
        body["payload"]["start_work"].as_str().unwrap(),
        "%a, %d %b %Y %H:%M:%S",
    )
    .unwrap();
    let actual = chrono::NaiveDateTime::parse_from_str(
        body["payload"]["actual_time"].as_str().unwrap(),
        "%d %b %Y %H:%M:%S",
    )
    .unwrap();
    assert!(
        actual > start,
        "start_work is the server's start, not the request time: {body}"
    );
}

/// Stores `count` samples one second apart from `first_second`, through the
/// v1 batch route (quicker than one request each).
async fn store_seconds(server: &TestServer, token: &str, first_second: i64, count: i64) {
    for start in (0..count).step_by(5_000) {
        let batch: Vec<Value> = (start..(start + 5_000).min(count))
            .map(|i| json!({"time": first_second + i, "cpu_load": (i % 1000) as f64 / 10.0, "mem": i}))
            .collect();
        let response = server
            .http
            .post(server.url("/api/v1/samples"))
            .header("Authorization", format!("Bearer {token}"))
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}

async fn long_report_streams_every_row_in_order(database: TestDatabase) {
    // Several of the store's read chunks (4096 rows each), and a range whose
    // edges fall inside chunks.
    let server = database.start().await;
    let token = server.register("wood", "pw-secret1").await;
    let first: i64 = 1_700_000_000;
    store_seconds(&server, &token, first, 12_345).await;

    let rows = server.report("wood", &token, "").await;
    assert_eq!(rows.len(), 12_345);
    for (i, row) in rows.iter().enumerate() {
        let i = i as i64;
        assert_eq!(
            *row,
            json!({"cpu": sysmon_core::number::json_number((i % 1000) as f64 / 10.0),
                   "mem": i, "storage": null, "unix_time": first + i}),
        );
    }
    let middle = server
        .report(
            "wood",
            &token,
            &format!("?start={}&end={}", first + 4_000, first + 8_200),
        )
        .await;
    assert_eq!(middle.len(), 4_201);
    assert_eq!(middle[0]["unix_time"], first + 4_000);
    assert_eq!(middle[4_200]["unix_time"], first + 8_200);
}

async fn client_hanging_up_mid_report_frees_the_reader(database: TestDatabase) {
    // More abandoned reports than the store has connections: each must give
    // its connection back, or the last reports and pushes would hang.
    let server = database.start().await;
    let token = server.register("wood", "pw-secret1").await;
    store_seconds(&server, &token, 1_700_000_000, 20_000).await;
    for _ in 0..24 {
        let mut response = server
            .http
            .get(server.url("/client/wood/time/report"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let opening = response.chunk().await.unwrap().unwrap();
        assert!(opening.starts_with(b"{\"payload\":["));
        drop(response);
    }
    let answer = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        server.report("wood", &token, ""),
    )
    .await
    .expect("a report after abandoned ones answers");
    assert_eq!(answer.len(), 20_000);
    server.assert_round_trip().await;
}

async fn relaxed_durability_stores_every_acknowledged_sample(database: TestDatabase) {
    // Relaxed only skips the flush to disk: everything acknowledged is
    // committed, and still there after a restart on the default setting.
    let mut config = database.config();
    config.ingest.durability = sysmon_server::store::Durability::Relaxed;
    let server = TestServer::start(config).await;
    let token = server.register("wood", "pw-secret1").await;
    for second in 0..20 {
        let time = (1_700_000_000 + second).to_string();
        let response = server
            .push_form("wood", &token, &[("time", &time), ("cpu_load", "3")])
            .await;
        assert_eq!(response.status(), 202);
    }
    store_seconds(&server, &token, 1_700_001_000, 500).await;
    server.shutdown().await;

    let server = database.start().await;
    assert_eq!(server.report("wood", &token, "").await.len(), 520);
}
