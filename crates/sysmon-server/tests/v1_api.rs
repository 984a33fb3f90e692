//! The v1 batch API and WebSocket CLIENT_BATCH, on both stores.

mod common;

use common::WsClient;
use serde_json::{json, Value};
use sysmon_testkit::{TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    batches_are_stored_once_and_acknowledged,
    ndjson_batches_work_too,
    bad_batches_are_refused_whole,
    websocket_batches_are_acknowledged_after_commit,
    long_histories_are_read_in_pages,
);

fn full_sample(time: f64) -> Value {
    json!({
        "time": time, "cpu_load": 12.5, "mem": 2048.0, "storage": 10240.0,
        "load_average_1m": 0.5, "load_average_5m": 0.25, "load_average_15m": 0.125,
        "memory_used_bytes": 2_147_483_648u64, "memory_available_bytes": 8_589_934_592u64,
        "memory_total_bytes": 17_179_869_184u64, "swap_used_bytes": 0, "swap_total_bytes": 1024,
        "disk_read_bytes_per_second": 100.0, "disk_write_bytes_per_second": 2000.5,
        "network_receive_bytes_per_second": 5.0, "network_transmit_bytes_per_second": 6.0,
        "uptime_seconds": 3600, "temperature_celsius": 48.5,
        "filesystems": [
            {"mount_point": "/", "used_bytes": 10_000, "total_bytes": 20_000},
            {"mount_point": "/home", "used_bytes": 5, "total_bytes": 50}
        ]
    })
}

async fn post_batch(
    server: &TestServer,
    token: &str,
    body: String,
    content_type: &str,
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/api/v1/samples"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn read_back(server: &TestServer, token: &str, query: &str) -> Vec<Value> {
    let response = server
        .http
        .get(server.url(&format!("/api/v1/samples{query}")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["samples"]
        .as_array()
        .unwrap()
        .clone()
}

async fn batches_are_stored_once_and_acknowledged(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("agent-host", "pw-secret1").await;
    let batch = json!([full_sample(1_700_000_000.0), full_sample(1_700_000_001.0), {"time": 1_700_000_002, "mem": 7.0}]);

    let (status, ack) = post_batch(&server, &token, batch.to_string(), "application/json").await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(
        ack,
        json!({"stored": [1700000000, 1700000001, 1700000002], "duplicates": []})
    );

    // A replay after a lost acknowledgement: nothing is stored twice.
    let (status, ack) = post_batch(&server, &token, batch.to_string(), "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(
        ack,
        json!({"stored": [], "duplicates": [1700000000, 1700000001, 1700000002]})
    );

    // A batch holding one time twice, and one new time.
    let batch = json!([
        full_sample(1_700_000_003.0),
        full_sample(1_700_000_003.0),
        full_sample(1_700_000_000.0)
    ]);
    let (_, ack) = post_batch(&server, &token, batch.to_string(), "application/json").await;
    assert_eq!(
        ack["stored"],
        json!([1700000003, 1700000003]),
        "both copies of a new time are safe to forget"
    );
    assert_eq!(ack["duplicates"], json!([1700000000]));

    let samples = read_back(&server, &token, "").await;
    assert_eq!(samples.len(), 4);
    assert_eq!(
        samples[0],
        full_sample(1_700_000_000.0),
        "every metric and file system round-trips"
    );
    assert_eq!(samples[2], json!({"time": 1_700_000_002.0, "mem": 7.0}));
    assert_eq!(
        read_back(&server, &token, "?from=1700000001&to=1700000002")
            .await
            .len(),
        2
    );

    // The original's report sees agent hosts too.
    let rows = server
        .report("agent-host", &token, "?start=1700000000&end=1700000000")
        .await;
    assert_eq!(
        rows,
        [json!({"cpu": 12.5, "mem": 2048, "storage": 10240, "unix_time": 1700000000})]
    );
}

async fn ndjson_batches_work_too(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("agent-host", "pw-secret1").await;
    let body = format!(
        "{}\n{}\n",
        full_sample(1_700_000_010.5),
        json!({"time": 1_700_000_011, "cpu_load": 1.0})
    );
    let (status, ack) = post_batch(&server, &token, body, "application/x-ndjson").await;
    assert_eq!(status, 200, "{ack}");
    assert_eq!(ack["stored"], json!([1700000010.5, 1700000011]));
    let samples = read_back(&server, &token, "").await;
    assert_eq!(samples[0]["filesystems"].as_array().unwrap().len(), 2);
}

async fn bad_batches_are_refused_whole(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("agent-host", "pw-secret1").await;
    let mut negative = full_sample(1_700_000_001.0);
    negative["disk_read_bytes_per_second"] = json!(-1.0);
    let mut unknown = full_sample(1_700_000_001.0);
    unknown["gpu_percent"] = json!(3.0);
    // Each refusal: what the message names, its code and the sample's index.
    let cases = [
        (
            json!([full_sample(1_700_000_000.0), negative]).to_string(),
            "sample 1",
            "invalid_sample",
            json!(1),
        ),
        (
            json!([unknown]).to_string(),
            "gpu_percent",
            "invalid_sample",
            json!(0),
        ),
        (
            json!([{"time": 12, "mem": 1.0}]).to_string(),
            "time",
            "invalid_sample",
            json!(0),
        ),
        (
            json!([{"mem": 1.0}]).to_string(),
            "time",
            "invalid_sample",
            json!(0),
        ),
        ("[]".to_owned(), "empty", "invalid_batch", Value::Null),
        (
            "{\"time\": 1700000000}".to_owned(),
            "JSON array",
            "invalid_batch",
            Value::Null,
        ),
        (
            "not json".to_owned(),
            "JSON array",
            "invalid_batch",
            Value::Null,
        ),
    ];
    for (body, named, code, index) in cases {
        let (status, error) = post_batch(&server, &token, body.clone(), "application/json").await;
        assert_eq!(status, 400, "{body}");
        let message = error["error"].as_str().unwrap();
        assert!(message.contains(named), "{body}: {message}");
        assert_eq!(error["code"], code, "{body}: {error}");
        assert_eq!(error["index"], index, "{body}: {error}");
    }
    let too_many: Vec<Value> = (0..10_001)
        .map(|n| json!({"time": 1_700_000_000 + n, "mem": 1}))
        .collect();
    let (status, error) = post_batch(
        &server,
        &token,
        json!(too_many).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(
        (status, &error["code"]),
        (400, &json!("batch_too_large")),
        "{error}"
    );
    assert!(
        read_back(&server, &token, "").await.is_empty(),
        "a refused batch stores nothing, not even its good samples"
    );

    let (status, error) = post_batch(
        &server,
        "wrong",
        json!([full_sample(1_700_000_000.0)]).to_string(),
        "application/json",
    )
    .await;
    assert_eq!(
        (status, error),
        (
            401,
            json!({"error": "authorization error", "code": "unauthorized"})
        )
    );
    let response = server
        .http
        .get(server.url("/api/v1/samples"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let response = server
        .http
        .get(server.url("/api/v1/samples?from=yesterday"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Larger than the 1 MiB of the original routes is fine here.
    let big: Vec<Value> = (0..2_000)
        .map(|n| full_sample(1_700_100_000.0 + f64::from(n)))
        .collect();
    let body = serde_json::to_string(&big).unwrap();
    assert!(body.len() > 1024 * 1024);
    let (status, ack) = post_batch(&server, &token, body, "application/json").await;
    assert_eq!(status, 200);
    assert_eq!(ack["stored"].as_array().unwrap().len(), 2_000);
}

async fn websocket_batches_are_acknowledged_after_commit(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("agent-host", "pw-secret1").await;
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    let batch = json!({"type": "CLIENT_BATCH", "client_id": token, "batch_id": 7,
        "samples": [full_sample(1_700_000_000.0), full_sample(1_700_000_001.0)]});
    let reply = ws.request(&batch).await;
    assert_eq!(
        reply,
        json!({"type": "BATCH_STORED", "payload": {"batch_id": 7, "stored": [1700000000, 1700000001], "duplicates": []}})
    );
    assert_eq!(
        read_back(&server, &token, "").await.len(),
        2,
        "stored before the reply"
    );
    let reply = ws.request(&batch).await;
    assert_eq!(
        reply["payload"]["duplicates"],
        json!([1700000000, 1700000001])
    );

    let reply = ws
        .request(&json!({"type": "CLIENT_BATCH", "client_id": "bad", "batch_id": "b8", "samples": [full_sample(1_700_000_002.0)]}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "ERROR", "reason": "authorization error", "code": "unauthorized", "batch_id": "b8"})
    );
    let reply = ws
        .request(&json!({"type": "CLIENT_BATCH", "client_id": token, "batch_id": 9, "samples": [{"time": 1_700_000_003, "mem": -1.0}]}))
        .await;
    assert_eq!(reply["type"], "ERROR");
    assert_eq!(reply["batch_id"], 9);
    assert_eq!(
        (&reply["code"], &reply["index"]),
        (&json!("invalid_sample"), &json!(0))
    );
    assert!(
        reply["reason"].as_str().unwrap().contains("`mem`"),
        "{reply}"
    );
    let reply = ws
        .request(&json!({"type": "CLIENT_BATCH", "client_id": token, "samples": "nope"}))
        .await;
    assert_eq!(reply["type"], "ERROR");
}

/// `GET /api/v1/samples` and the CSV export read a page at a time: every
/// sample once, in order, each with its own file systems, whatever the
/// page size, and `limit` is checked.
async fn long_histories_are_read_in_pages(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("pager", "pw-secret1").await;
    let base = 1_700_000_000.25;
    // Three batches, so some rows may be folded and some still hot.
    let times: Vec<f64> = (0..2_500).map(|i| base + f64::from(i) * 0.5).collect();
    for chunk in times.chunks(1_000) {
        let batch: Vec<Value> = chunk.iter().map(|&time| full_sample(time)).collect();
        server.post_samples(&token, &batch).await;
    }

    let mut read = Vec::new();
    let mut query = "?limit=7".to_owned();
    let mut pages = 0;
    loop {
        let page = server
            .get_json(&format!("/api/v1/samples{query}"), &token)
            .await;
        let samples = page["samples"].as_array().unwrap();
        assert!(samples.len() <= 7, "a page holds at most `limit`");
        read.extend(samples.iter().cloned());
        pages += 1;
        match page["next_from"].as_f64() {
            Some(next) => query = format!("?limit=7&from={next}"),
            None => break,
        }
    }
    assert_eq!(pages, 2_500_usize.div_ceil(7));
    let read_times: Vec<f64> = read.iter().map(|s| s["time"].as_f64().unwrap()).collect();
    assert_eq!(read_times, times, "every sample once, in order");
    for sample in &read {
        assert_eq!(
            sample["filesystems"].as_array().unwrap().len(),
            2,
            "each sample keeps its file systems across page ends: {sample}"
        );
    }
    // The default page is up to 10,000 samples, and up to 2,048 file
    // systems: 1,024 of these samples, the rest on the next pages.
    let whole = server.get_json("/api/v1/samples", &token).await;
    assert_eq!(whole["samples"].as_array().unwrap().len(), 1_024);
    assert_eq!(whole["next_from"].as_f64(), Some(times[1_024]));
    let no_file_systems = server.register("bare", "pw-secret1").await;
    let bare: Vec<Value> = times
        .iter()
        .map(|&time| json!({"time": time, "cpu_load": 1.0}))
        .collect();
    server.post_samples(&no_file_systems, &bare).await;
    let whole = server.get_json("/api/v1/samples", &no_file_systems).await;
    assert_eq!(
        whole["samples"].as_array().unwrap().len(),
        2_500,
        "one read"
    );
    assert!(whole["next_from"].is_null());
    for bad in ["0", "10001", "many", "-1"] {
        let response = server
            .http
            .get(server.url(&format!("/api/v1/samples?limit={bad}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "limit={bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
    }

    // The export streams pages of 1,000 samples: 2,500 rows, once each.
    let end = times[times.len() - 1];
    let csv = server
        .http
        .get(server.url(&format!(
            "/api/v1/clients/pager/export.csv?from={base}&to={end}"
        )))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2_500, "every sample exported once");

    // Samples with 256 file systems each: a page holds fewer of them (its
    // size is bounded in bytes too), and paging still returns every one.
    let wide = server.register("wide", "pw-secret1").await;
    let mount = "/".to_owned() + &"m".repeat(1_000);
    let batch: Vec<Value> = (0..20)
        .map(|i| {
            let filesystems: Vec<Value> = (0..256)
                .map(|fs| json!({"mount_point": format!("{mount}{fs}"), "used_bytes": 1, "total_bytes": 2}))
                .collect();
            json!({"time": base + f64::from(i), "cpu_load": 1.0, "filesystems": filesystems})
        })
        .collect();
    server.post_samples(&wide, &batch).await;
    let first = server.get_json("/api/v1/samples", &wide).await;
    let on_first = first["samples"].as_array().unwrap().len();
    assert!(
        (1..20).contains(&on_first),
        "cut by file systems: {on_first} samples"
    );
    assert!(first["next_from"].is_number());
    let all = server.stored_samples(&wide).await;
    assert_eq!(all.len(), 20);
    assert!(all
        .iter()
        .all(|sample| sample["filesystems"].as_array().unwrap().len() == 256));
    let exported: Vec<f64> = rows
        .iter()
        .map(|row| row.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(exported, times);
}
