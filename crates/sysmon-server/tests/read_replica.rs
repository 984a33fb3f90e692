//! Reads from a real PostgreSQL streaming replica (`read_replica_url`;
//! `scripts/pg-replica.sh` makes one on 127.0.0.1:5433, `.ci/run` calls it):
//! a caught-up replica serves reports, exports, charts and pages of
//! samples; with its replay paused, a sample just acknowledged is still in
//! every read (the primary serves it), and a replica that does not answer
//! costs nothing but the fallback.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use sysmon_testkit::{unix_now, Backend, TestDatabase, TestServer};

/// `sysmon_replica_reads_total{served_by="..."}` from `/metrics`.
async fn reads_served_by(server: &TestServer, served_by: &str) -> f64 {
    let wanted = format!("sysmon_replica_reads_total{{served_by=\"{served_by}\"}} ");
    server
        .metrics_text()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&wanted))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Reads the token's samples until the replica served one of the reads
/// (it may be behind for a moment on a busy machine, and is then skipped
/// for a few seconds); what the last read gave.
async fn read_until_the_replica_serves(server: &TestServer, token: &str) -> Vec<f64> {
    let before = reads_served_by(server, "replica").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let read = times(&server.stored_samples(token).await);
        if reads_served_by(server, "replica").await > before {
            return read;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the replica served no read within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn times(samples: &[Value]) -> Vec<f64> {
    samples
        .iter()
        .filter_map(|sample| sample["time"].as_f64())
        .collect()
}

/// The replica's superuser connection, to pause and resume its replay.
async fn replica_admin(replica_url: &str) -> sqlx::PgConnection {
    let base = replica_url.split('?').next().expect("a URL");
    let (_, host_and_db) = base.split_once('@').expect("user@host");
    sqlx::PgConnection::connect(&format!("postgres://postgres@{host_and_db}"))
        .await
        .expect("the replica as postgres")
}

/// Resumes the replica's replay however the test ends.
struct ResumeReplay(Option<String>);

impl Drop for ResumeReplay {
    fn drop(&mut self) {
        if let Some(url) = self.0.take() {
            let _ = std::process::Command::new("psql")
                .args([&url, "-qAtc", "SELECT pg_wal_replay_resume()"])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_serves_reads_and_never_hides_an_acknowledged_sample() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let Some(replica_url) = database.replica_url() else {
        return;
    };
    let mut config = database.config();
    config.read_replica_url = Some(replica_url.clone());
    let server = TestServer::start(config).await;
    let token = server.register("replica-host", "replica-pw-1").await;
    let now = unix_now().floor();

    // Caught up: the replica serves, and has what was acknowledged.
    server
        .post_samples(&token, &[json!({"time": now - 3.0, "cpu_load": 1.0})])
        .await;
    assert_eq!(
        read_until_the_replica_serves(&server, &token).await,
        [now - 3.0]
    );

    // Replay paused: the replica lags for as long as the test says.
    let mut admin = replica_admin(&replica_url).await;
    let _resume = ResumeReplay(Some(format!(
        "postgres://postgres@{}",
        replica_url
            .split('?')
            .next()
            .and_then(|base| base.split_once('@'))
            .map(|(_, rest)| rest.to_owned())
            .expect("host")
    )));
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&mut admin)
        .await
        .expect("pause replay");
    server
        .post_samples(&token, &[json!({"time": now - 2.0, "cpu_load": 2.0})])
        .await;
    let lagging = server.stored_samples(&token).await;
    assert_eq!(
        times(&lagging),
        [now - 3.0, now - 2.0],
        "the acknowledged sample is read, from the primary"
    );
    let csv = server.exported_rows("replica-host", &token).await;
    assert_eq!(csv.len(), 2, "the export too: {csv:?}");
    assert!(reads_served_by(&server, "primary").await >= 2.0);
    // The replica itself does not have it: the test did make it lag.
    let schema = replica_url
        .split("search_path]=")
        .nth(1)
        .expect("schema in the URL");
    let on_replica: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".samples"))
        .fetch_one(&mut admin)
        .await
        .expect("count on the replica");
    assert_eq!(on_replica, 1, "replay is paused");

    // Resumed: the replica catches up and serves again.
    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&mut admin)
        .await
        .expect("resume replay");
    server
        .post_samples(&token, &[json!({"time": now - 1.0, "cpu_load": 3.0})])
        .await;
    assert_eq!(
        read_until_the_replica_serves(&server, &token).await,
        [now - 3.0, now - 2.0, now - 1.0]
    );
    let chart = server
        .get_json(
            &format!(
                "/api/v1/clients/replica-host/series?from={}&to={}&resolution=raw",
                now - 60.0,
                now + 1.0
            ),
            &token,
        )
        .await;
    let counted: i64 = chart["count"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(Value::as_i64)
        .sum();
    assert_eq!(counted, 3, "the chart holds every sample: {chart}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_does_not_answer_leaves_reads_to_the_primary() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let mut config = database.config();
    // Nothing listens on port 1.
    config.read_replica_url = Some("postgres://sysmon@127.0.0.1:1/sysmon_test".into());
    let server = TestServer::start(config).await;
    let token = server.register("no-replica", "replica-pw-2").await;
    let now = unix_now().floor();
    server
        .post_samples(&token, &[json!({"time": now, "cpu_load": 1.0})])
        .await;
    let first = std::time::Instant::now();
    assert_eq!(times(&server.stored_samples(&token).await), [now]);
    let first = first.elapsed();
    assert!(first < Duration::from_secs(3), "first read: {first:?}");
    // Skipped for a while now: later reads do not try it again.
    let second = std::time::Instant::now();
    assert_eq!(times(&server.stored_samples(&token).await), [now]);
    let second = second.elapsed();
    assert!(
        second < Duration::from_millis(300),
        "second read: {second:?} (the first took {first:?})"
    );
    assert_eq!(reads_served_by(&server, "primary").await, 2.0);
    assert_eq!(reads_served_by(&server, "replica").await, 0.0);
    server.shutdown().await;
}
