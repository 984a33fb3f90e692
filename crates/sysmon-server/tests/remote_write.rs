//! Prometheus remote write, request by request, on both stores: a request
//! built as Prometheus builds it (protobuf, snappy) is stored; broken
//! bodies and hosts outside the token are refused naming the problem,
//! and nothing of a refused host is stored. (Real Prometheus and
//! node_exporter: tests/prometheus.rs.)

use prost::Message;
use serde_json::{json, Value};
use sysmon_server::services::integrations::remote_write::{
    Label, PromSample, TimeSeries, WriteRequest,
};
use sysmon_testkit::{unix_now, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(remote_write_in_and_bad_input);

const ADMIN_PASSWORD: &str = "remote-write-admin-password";

fn series(name: &str, instance: &str, value: f64, at_ms: i64) -> TimeSeries {
    TimeSeries {
        labels: [("__name__", name), ("instance", instance), ("job", "node")]
            .into_iter()
            .map(|(name, value)| Label {
                name: name.into(),
                value: value.into(),
            })
            .collect(),
        samples: vec![PromSample {
            value,
            timestamp: at_ms,
        }],
    }
}

fn snappy(request: &WriteRequest) -> Vec<u8> {
    snap::raw::Encoder::new()
        .compress_vec(&request.encode_to_vec())
        .unwrap()
}

async fn post(server: &TestServer, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut request = server
        .http
        .post(server.url("/api/v1/prom/write"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn remote_write_in_and_bad_input(database: TestDatabase) {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let token = |request: Value| {
        let server = &server;
        let admin = admin.clone();
        async move {
            server
                .post_json("/api/v1/fleet-tokens", &admin, &request, 201)
                .await["token"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let push = token(json!({"hosts": "rw-*", "create_hosts": true})).await;
    let export = token(json!({"export": true})).await;
    let now_ms = (unix_now() * 1000.0) as i64;

    // One host inside the token, one outside, and a series sysmon does
    // not keep.
    let request = WriteRequest {
        timeseries: vec![
            series("node_load1", "rw-1:9100", 1.5, now_ms),
            series("node_memory_MemTotal_bytes", "rw-1:9100", 8e9, now_ms),
            series("node_memory_MemAvailable_bytes", "rw-1:9100", 6e9, now_ms),
            series("node_load1", "other-1:9100", 9.0, now_ms),
            series("go_goroutines", "rw-1:9100", 12.0, now_ms),
        ],
    };
    let (status, reply) = post(&server, Some(&push), snappy(&request)).await;
    assert_eq!(status, 400, "{reply}");
    let error = reply["error"].as_str().unwrap();
    assert!(
        error.starts_with("partial write: may not write for host `other-1`"),
        "{error}"
    );
    let stored = server
        .get_json("/api/v1/clients/rw-1/filesystems", &admin)
        .await;
    assert!(stored["time"].is_number(), "rw-1 has a sample: {stored}");
    let fleet = server.get_json("/api/v1/clients", &admin).await;
    let rw = fleet["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|client| client["name"] == "rw-1")
        .unwrap_or_else(|| panic!("rw-1 in {fleet}"));
    assert_eq!(rw["latest"]["load_average_1m"], json!(1.5), "{rw}");
    assert_eq!(
        rw["latest"]["memory_used_bytes"].as_f64(),
        Some(2e9),
        "total - available: {rw}"
    );
    assert!(!fleet.to_string().contains("other-1"), "{fleet}");

    // The same request again: acknowledged (the refused host aside),
    // nothing doubled.
    let only_inside = WriteRequest {
        timeseries: request.timeseries[..3].to_vec(),
    };
    let (status, reply) = post(&server, Some(&push), snappy(&only_inside)).await;
    assert_eq!(status, 204, "{reply}");
    assert_eq!(
        server.exported_rows("rw-1", &admin).await.len(),
        1,
        "one sample"
    );

    // Remote write 2.0 is refused, not read as an empty 1.0 request.
    let v2 = server
        .http
        .post(server.url("/api/v1/prom/write"))
        .bearer_auth(&push)
        .header(
            "Content-Type",
            "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        )
        .body(snappy(&only_inside))
        .send()
        .await
        .unwrap();
    assert_eq!(v2.status(), 415);

    for (body, says) in [
        (b"\xff\xff\xff\xff\xff\xff".to_vec(), "snappy"),
        (
            snap::raw::Encoder::new()
                .compress_vec(b"\x0a\xff\x01")
                .unwrap(),
            "protobuf",
        ),
    ] {
        let (status, reply) = post(&server, Some(&push), body).await;
        assert_eq!(
            (status, &reply["code"]),
            (400, &json!("invalid_payload")),
            "{reply}"
        );
        assert!(reply["error"].as_str().unwrap().contains(says), "{reply}");
    }
    assert_eq!(post(&server, None, snappy(&only_inside)).await.0, 401);
    assert_eq!(
        post(&server, Some(&export), snappy(&only_inside)).await.0,
        403
    );

    // A host removed by an admin is not written through a stale id: the
    // next push creates it afresh, holding only what came after.
    let removed = server
        .http
        .delete(server.url("/api/v1/clients/rw-1"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    let later = WriteRequest {
        timeseries: vec![series("node_load1", "rw-1:9100", 0.5, now_ms + 1_000)],
    };
    let (status, reply) = post(&server, Some(&push), snappy(&later)).await;
    assert_eq!(status, 204, "{reply}");
    let rows = server.exported_rows("rw-1", &admin).await;
    assert_eq!(rows.len(), 1, "only the sample after the removal: {rows:?}");
    assert_eq!(rows[0]["load_average_1m"], "0.5");

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("sysmon_ingest_unmapped_points_total{reason=\"remote_write\"}"),
        "{metrics}"
    );
    server.shutdown().await;
}
