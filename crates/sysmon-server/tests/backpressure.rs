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
    let token = server.register("wood", "123").await;

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
