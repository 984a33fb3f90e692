//! `/metrics`: Prometheus text about the server's own work.

mod common;

use common::{CompatApi, WsClient};
use serde_json::json;
use sysmon_testkit::TestDatabase;

fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_count_what_the_server_did() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    for time in ["1700000000", "1700000001", "1700000001"] {
        let response = server
            .push_form("wood", &token, &[("time", time), ("mem", "1")])
            .await;
        assert_eq!(response.status(), 202);
    }
    assert_eq!(
        server
            .push_form("wood", &token, &[("mem", "x")])
            .await
            .status(),
        400
    );
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"time": 1700000002, "mem": 1}, "client_id": token}))
        .await;
    assert_eq!(reply["type"], "DATA_RETURN");

    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .contains("openmetrics-text"));
    let text = response.text().await.unwrap();
    assert_eq!(
        value_of(
            &text,
            r#"sysmon_samples_acknowledged_total{source="http",outcome="stored"}"#
        ),
        2.0
    );
    assert_eq!(
        value_of(
            &text,
            r#"sysmon_samples_acknowledged_total{source="http",outcome="duplicate"}"#
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            r#"sysmon_samples_acknowledged_total{source="websocket",outcome="stored"}"#
        ),
        1.0
    );
    assert_eq!(
        value_of(
            &text,
            r#"sysmon_http_requests_total{route="/client/{username}",method="POST",status="202"}"#
        ),
        3.0
    );
    assert_eq!(
        value_of(
            &text,
            r#"sysmon_http_requests_total{route="/client/{username}",method="POST",status="400"}"#
        ),
        1.0
    );
    assert!(
        !text.contains("route=\"/client/wood\""),
        "label values are route patterns, not user names"
    );
    assert_eq!(value_of(&text, "sysmon_websocket_connections"), 1.0);
    assert!(value_of(&text, "sysmon_ingest_commit_duration_seconds_count") >= 1.0);
    assert!(value_of(&text, "sysmon_ingest_batch_rows_sum") >= 4.0);
    assert!(
        text.contains("# TYPE sysmon_ingest_queue_depth gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    drop(ws);
    // The server notices the closed socket shortly after.
    let mut open = 1.0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let text = server.metrics_text().await;
        open = value_of(&text, "sysmon_websocket_connections");
        if open == 0.0 {
            break;
        }
    }
    assert_eq!(open, 0.0);
}
