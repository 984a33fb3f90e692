//! A fold may commit in parts, a transaction per few hosts (SQLite does, so
//! that one fold of a big fleet never holds the single writer long). While
//! hosts push and folds commit part by part every few milliseconds, a
//! reader charts one host from the rollups again and again: every chart
//! must count each acknowledged sample exactly once, never a bucket both
//! as pending and as folded, never one in neither place. Afterwards the
//! rollups must equal a recomputation, which `rollup_crash.rs` also checks
//! with kills landing between parts.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sysmon_server::services::query::RetentionConfig;
use sysmon_testkit::{TestDatabase, TestServer};
use tokio::task::JoinSet;

sysmon_testkit::on_both_stores!(charts_count_every_sample_once_while_folds_commit_in_parts);

const HOSTS: usize = 5;
/// The host charted: parts commit before and after it.
const CHARTED: usize = 2;
const SAMPLES_PER_HOST: i64 = 240;
const BASE: i64 = 1_764_000_000;

async fn charts_count_every_sample_once_while_folds_commit_in_parts(database: TestDatabase) {
    let mut config = database.config();
    config.ingest.rollups.fold_interval = Duration::from_millis(10);
    config.ingest.rollups.fold_part_hosts = 1;
    config.retention = RetentionConfig::forever();
    let server = Arc::new(TestServer::start(config).await);
    let mut tokens = Vec::new();
    for host in 0..HOSTS {
        tokens.push(
            server
                .register(&format!("part-host{host}"), "fold-parts-pw")
                .await,
        );
    }
    let session = server.login("part-host2", "fold-parts-pw").await;

    // The charted host's samples sent and acknowledged: a chart may count
    // one that is committed but not yet acknowledged, never one unsent.
    let sent = Arc::new(AtomicI64::new(0));
    let acknowledged = Arc::new(AtomicI64::new(0));
    let mut pushers = JoinSet::new();
    for (host, token) in tokens.into_iter().enumerate() {
        let (server, sent, acknowledged) = (server.clone(), sent.clone(), acknowledged.clone());
        pushers.spawn(async move {
            for offset in 0..SAMPLES_PER_HOST {
                // A minute apart: every sample is a new bucket of the 1m
                // tier and adds to a 10m and a 1h bucket others share.
                let sample = json!({"time": BASE + offset * 60, "cpu_load": 1.0, "mem": 2.0});
                if host == CHARTED {
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                let ack = server.post_samples(&token, &[sample]).await;
                let stored = ack["stored"].as_array().map(Vec::len);
                assert_eq!(stored, Some(1), "host {host}, sample {offset}: {ack}");
                if host == CHARTED {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }

    let mut charts = 0;
    let mut charted_while_pushing = 0;
    loop {
        let done = pushers.is_empty();
        let before = acknowledged.load(Ordering::SeqCst);
        let counted = chart_count(&server, &session).await;
        let after = sent.load(Ordering::SeqCst);
        assert!(
            (before..=after).contains(&counted),
            "chart {charts} counts {counted} samples; {before} were acknowledged before it, {after} sent after"
        );
        charts += 1;
        if done {
            assert_eq!(
                counted, SAMPLES_PER_HOST,
                "the last chart counts every sample"
            );
            break;
        }
        if before > 0 && before < SAMPLES_PER_HOST {
            charted_while_pushing += 1;
        }
        while let Some(joined) = pushers.try_join_next() {
            joined.expect("a pusher");
        }
    }
    assert!(
        charted_while_pushing >= 10,
        "only {charted_while_pushing} charts were read while samples came in"
    );
    let metrics = server.metrics_text().await;
    let folds = metric(&metrics, "sysmon_rollup_fold_duration_seconds_count");
    assert!(folds >= 10.0, "only {folds} folds ran:\n{metrics}");
    Arc::into_inner(server)
        .expect("the pushers are done")
        .shutdown()
        .await;
}

/// The samples the charted host's 10-minute chart over the whole push
/// counts, pending or folded.
async fn chart_count(server: &TestServer, session: &str) -> i64 {
    let from = BASE - 600;
    let to = BASE + SAMPLES_PER_HOST * 60 + 600;
    let series = server
        .get_json(
            &format!(
                "/api/v1/clients/part-host{CHARTED}/series?from={from}&to={to}&step=600&metrics=cpu_load"
            ),
            session,
        )
        .await;
    assert_eq!(series["resolution"], "10m", "{series}");
    series["count"]
        .as_array()
        .unwrap_or_else(|| panic!("a series with counts: {series}"))
        .iter()
        .map(|count| count.as_i64().expect("a count"))
        .sum()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}
