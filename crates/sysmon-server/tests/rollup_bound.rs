//! The rollup accumulator is bounded (services/rollups.rs): past its limit
//! of pending buckets a writer waits for a fold before it commits more.
//! Samples an hour apart make a bucket each in every tier, the worst case
//! (a server seeded that way once grew to 23 GB); with a limit of 1,000
//! buckets and folds only when asked, every batch must still be stored and
//! every sample summarised once.

use std::time::Duration;

use serde_json::{json, Value};
use sysmon_testkit::{TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(writers_wait_for_the_fold_when_too_much_is_pending);

const HOUR: i64 = 3600;
const BATCHES: i64 = 20;
const PER_BATCH: i64 = 100;

async fn writers_wait_for_the_fold_when_too_much_is_pending(database: TestDatabase) {
    let mut config = database.config();
    config.ingest.rollups.fold_interval = Duration::from_secs(3600);
    config.ingest.rollups.max_pending_buckets = 1000;
    let server = TestServer::start(config).await;
    let token = server.register("sparse", "sparse-pw").await;
    // 2,000 hours (6,000 buckets over the three tiers), ending an hour ago.
    let now = sysmon_testkit::unix_now() as i64 / HOUR * HOUR;
    let first = now - BATCHES * PER_BATCH * HOUR;
    for batch in 0..BATCHES {
        let samples: Vec<Value> = (0..PER_BATCH)
            .map(|i| json!({"time": first + (batch * PER_BATCH + i) * HOUR, "cpu_load": 50.0}))
            .collect();
        let ack = server.post_samples(&token, &samples).await;
        assert_eq!(
            ack["stored"].as_array().map(Vec::len),
            Some(PER_BATCH as usize)
        );
    }
    let metrics = server.metrics_text().await;
    let waits: f64 = metrics
        .lines()
        .find(|line| line.starts_with("sysmon_ingest_fold_waits_total"))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .expect("sysmon_ingest_fold_waits_total");
    assert!(waits >= 1.0, "no commit waited for a fold:\n{metrics}");
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert!(value("sysmon_rollup_fold_duration_seconds_count") >= 1.0);
    assert!(value("sysmon_rollup_pending_buckets") <= 1000.0 + 300.0);

    // Every sample in the hourly rollups once, folded or still pending.
    let session = server.login("sparse", "sparse-pw").await;
    let series = server
        .get_json(
            &format!("/api/v1/clients/sparse/series?from={first}&to={now}&step=3600&resolution=1h"),
            &session,
        )
        .await;
    let counts: Vec<i64> = series["count"]
        .as_array()
        .expect("count")
        .iter()
        .map(|count| count.as_i64().expect("a count"))
        .collect();
    assert_eq!(counts.len() as i64, BATCHES * PER_BATCH);
    assert!(counts.iter().all(|&count| count == 1), "{counts:?}");
    server.shutdown().await;
}
