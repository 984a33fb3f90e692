//! When the store cannot keep up, requests wait a bounded time and then get
//! 503 with Retry-After; nothing answered 202 is missing afterwards.

mod common;

use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use common::CompatApi;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, Executor};
use sysmon_testkit::{TestDatabase, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_store_gets_503_not_lost_samples() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.ingest.queue_capacity = 2;
    config.ingest.enqueue_timeout = Duration::from_millis(200);
    let server = Arc::new(TestServer::start(config).await);
    let token = server.register("wood", "123-secret").await;

    // Another writer holds SQLite's write lock: the server's writer stalls.
    let mut blocker = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&database.url).unwrap(),
    )
    .await
    .unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();

    let mut pushes = tokio::task::JoinSet::new();
    for n in 0..12 {
        let (server, token) = (server.clone(), token.clone());
        pushes.spawn(async move {
            let time = (1_700_000_000 + n).to_string();
            let response = server
                .push_form("wood", &token, &[("time", &time), ("mem", "1")])
                .await;
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (n, response.status().as_u16(), retry_after)
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    blocker.execute("ROLLBACK").await.unwrap();

    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    while let Some(outcome) = pushes.join_next().await {
        let (n, status, retry_after) = outcome.unwrap();
        match status {
            202 => {
                acknowledged.insert(1_700_000_000 + n);
            }
            503 => {
                refused += 1;
                assert_eq!(retry_after.as_deref(), Some("1"), "503 says when to retry");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(refused >= 1, "a full queue refuses instead of growing");
    assert!(
        !acknowledged.is_empty(),
        "queued requests complete once the store is free"
    );

    let stored: BTreeSet<i64> = server
        .report("wood", &token, "")
        .await
        .iter()
        .map(|row| row["unix_time"].as_i64().unwrap())
        .collect();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged samples are stored"
    );

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(r#"sysmon_ingest_rejected_total{reason="overloaded"}"#),
        "{metrics}"
    );
    server.assert_round_trip().await;
}

/// The queue is bounded in samples, not requests: batches that do not fit
/// wait at most the enqueue timeout for room, then get 503, instead of
/// queueing behind everything else; what was acknowledged is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_past_the_queue_rows_get_503_early() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.ingest.queue_rows = 2_500;
    config.ingest.enqueue_timeout = Duration::from_millis(200);
    let server = Arc::new(TestServer::start(config).await);
    let token = server.register("bulk", "bulk-password").await;

    let mut blocker = sqlx::SqliteConnection::connect_with(
        &SqliteConnectOptions::from_str(&database.url).unwrap(),
    )
    .await
    .unwrap();
    blocker.execute("BEGIN IMMEDIATE").await.unwrap();

    let started = std::time::Instant::now();
    let mut batches = tokio::task::JoinSet::new();
    for batch in 0..10i64 {
        let (server, token) = (server.clone(), token.clone());
        batches.spawn(async move {
            let samples: Vec<serde_json::Value> = (0..1000)
                .map(|i| serde_json::json!({"time": 1_700_000_000 + batch * 1000 + i, "cpu_load": 1.0}))
                .collect();
            let response = server
                .http
                .post(server.url("/api/v1/samples"))
                .bearer_auth(&token)
                .json(&samples)
                .send()
                .await
                .unwrap();
            (response.status().as_u16(), started.elapsed())
        });
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    blocker.execute("ROLLBACK").await.unwrap();

    let (mut stored, mut refused) = (0, 0);
    while let Some(outcome) = batches.join_next().await {
        let (status, elapsed) = outcome.unwrap();
        match status {
            200 => stored += 1,
            503 => {
                refused += 1;
                assert!(
                    elapsed < Duration::from_millis(1500),
                    "a batch without room waited {elapsed:?}, past the stall"
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    // Two batches of 1,000 fit in 2,500 rows; the other eight do not.
    assert_eq!((stored, refused), (2, 8));
    assert_eq!(server.stored_samples(&token).await.len(), 2_000);
}

/// A v1 request with a wrong token is refused from its headers: the
/// server does not wait for (or hold) a body it would throw away.
#[tokio::test]
async fn a_wrong_token_is_refused_before_the_body_is_read() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let database = TestDatabase::sqlite().await;
    let server = TestServer::start(database.config()).await;
    let mut stream = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /api/v1/samples HTTP/1.1\r\nHost: sysmon\r\nAuthorization: Bearer wrong\r\n\
              Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n[{\"time\": 1",
        )
        .await
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
        .await
        .expect("answered without the rest of the body")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..read]);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    server.shutdown().await;
}
