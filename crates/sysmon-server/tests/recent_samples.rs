//! On SQLite a new sample waits in a hot table until the next rollup fold
//! moves it into `samples` (see `store::sqlite`). Every read must see an
//! acknowledged sample at once wherever it is, exactly once and in order,
//! and a replay must be a duplicate wherever its original is. The same
//! tests run on PostgreSQL, which stores samples in place: both stores
//! answer alike. The fold interval here is an hour, so samples move only at
//! shutdown, which the tests use to move them. A host with many samples
//! in one commit has them stored in `samples` directly, journalled in
//! `rollup_journal`: those must behave the same.

mod common;

use std::time::Duration;

use common::CompatApi;
use serde_json::{json, Value};
use sqlx::Connection;
use sysmon_server::services::query::RetentionConfig;
use sysmon_testkit::{Backend, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    every_read_sees_samples_hot_folded_and_both,
    replays_are_duplicates_whether_the_original_is_hot_or_folded,
    a_long_batch_of_one_host_is_stored_directly,
);

const NAME: &str = "web1";
const PASSWORD: &str = "recent-samples-pw";
const BASE: i64 = 1_764_000_000;

async fn start(database: &TestDatabase) -> TestServer {
    let mut config = database.config();
    config.ingest.rollups.fold_interval = Duration::from_secs(3600);
    config.retention = RetentionConfig::forever();
    TestServer::start(config).await
}

/// (hot, folded) samples on SQLite; `None` on PostgreSQL, which has one
/// table.
async fn where_samples_are(database: &TestDatabase) -> Option<(i64, i64)> {
    sqlite_counts(
        database,
        "SELECT (SELECT COUNT(*) FROM hot_samples), (SELECT COUNT(*) FROM samples)",
    )
    .await
}

/// Two counts from the SQLite file; `None` on PostgreSQL.
async fn sqlite_counts(database: &TestDatabase, sql: &str) -> Option<(i64, i64)> {
    if database.backend != Backend::Sqlite {
        return None;
    }
    let mut connection = sqlx::SqliteConnection::connect(&database.url)
        .await
        .expect("open the SQLite file");
    let counts = sqlx::query_as(sql)
        .fetch_one(&mut connection)
        .await
        .expect("count rows");
    Some(counts)
}

/// An agent's sample: every value follows from `offset` (seconds after
/// BASE), one file system.
fn agent_sample(offset: i64) -> Value {
    json!({
        "time": BASE + offset, "cpu_load": offset as f64, "mem": 1000.0 + offset as f64,
        "memory_used_bytes": 10 * offset, "memory_total_bytes": 1000,
        "filesystems": [{"mount_point": "/", "used_bytes": offset, "total_bytes": 100}]
    })
}

/// Every read of stored samples, as the test compares them.
#[derive(Debug, PartialEq)]
struct Reads {
    /// The original report: (unix_time, cpu) of every row.
    report: Vec<(i64, f64)>,
    /// A report of a part of the range.
    report_part: Vec<i64>,
    /// `/client/<u>/time`: first and last.
    span: Value,
    /// The agent's read-back: (time, cpu, file-system used bytes).
    read_back: Vec<(f64, f64, Option<i64>)>,
    /// CSV export: the data lines.
    csv: Vec<String>,
    /// Raw series: (time, cpu avg).
    series: Vec<(f64, f64)>,
    /// The fleet overview's entry.
    overview: Value,
    /// File-system history of "/": (time, used bytes) at every sample, and
    /// in 10-second steps (the first of each).
    disk_history: Vec<(f64, i64)>,
    disk_history_coarse: Vec<(f64, i64)>,
}

/// (time, used bytes) of the one mount point of a file-system history.
async fn disk_history(server: &TestServer, session: &str, to: i64) -> Vec<(f64, i64)> {
    let history = server
        .get_json(
            &format!("/api/v1/clients/{NAME}/filesystems/history?from={BASE}&to={to}"),
            session,
        )
        .await;
    let mounts = history["mounts"].as_array().unwrap();
    assert!(mounts.len() <= 1, "{history}");
    let Some(root) = mounts.first() else {
        return Vec::new();
    };
    assert_eq!(root["mount_point"], "/");
    root["time"]
        .as_array()
        .unwrap()
        .iter()
        .zip(root["used_bytes"].as_array().unwrap())
        .map(|(time, used)| (time.as_f64().unwrap(), used.as_i64().unwrap()))
        .collect()
}

async fn read_everything(server: &TestServer, token: &str, session: &str) -> Reads {
    let report = server.report(NAME, token, "").await;
    let report_part = server
        .report(
            NAME,
            token,
            &format!("?start={}&end={}", BASE + 8, BASE + 42),
        )
        .await;
    let span = server.client_span(NAME, token).await;
    let read_back = server.get_json("/api/v1/samples", token).await;
    let range = format!("from={BASE}&to={}", BASE + 100);
    let csv = server
        .http
        .get(server.url(&format!("/api/v1/clients/{NAME}/export.csv?{range}")))
        .bearer_auth(session)
        .send()
        .await
        .expect("GET export")
        .text()
        .await
        .expect("CSV");
    let series = server
        .get_json(
            &format!("/api/v1/clients/{NAME}/series?{range}&step=1&resolution=raw"),
            session,
        )
        .await;
    assert_eq!(series["resolution"], "raw");
    let fleet = server.get_json("/api/v1/clients", session).await;
    let mut overview = fleet["clients"][0].clone();
    overview["online"] = Value::Null; // depends on the clock, not the store
    let disk_history_fine = disk_history(server, session, BASE + 100).await;
    let disk_history_coarse = disk_history(server, session, BASE + 4_000).await;
    Reads {
        disk_history: disk_history_fine,
        disk_history_coarse,
        report: report
            .iter()
            .map(|row| {
                (
                    row["unix_time"].as_i64().unwrap(),
                    row["cpu"].as_f64().unwrap(),
                )
            })
            .collect(),
        report_part: report_part
            .iter()
            .map(|row| row["unix_time"].as_i64().unwrap())
            .collect(),
        span,
        read_back: read_back["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                (
                    sample["time"].as_f64().unwrap(),
                    sample["cpu_load"].as_f64().unwrap(),
                    sample["filesystems"][0]["used_bytes"].as_i64(),
                )
            })
            .collect(),
        csv: csv.lines().skip(1).map(str::to_owned).collect(),
        series: series["time"]
            .as_array()
            .unwrap()
            .iter()
            .zip(series["metrics"]["cpu_load"]["avg"].as_array().unwrap())
            .map(|(time, cpu)| (time.as_f64().unwrap(), cpu.as_f64().unwrap()))
            .collect(),
        overview,
    }
}

/// What every read must say when the samples at `offsets` are stored
/// (the one at 40 sent through the original route, without file systems).
fn check(reads: &Reads, offsets: &[i64]) {
    let times: Vec<i64> = offsets.iter().map(|offset| BASE + offset).collect();
    let report: Vec<(i64, f64)> = offsets.iter().map(|&o| (BASE + o, o as f64)).collect();
    assert_eq!(reads.report, report, "report");
    let part: Vec<i64> = times
        .iter()
        .copied()
        .filter(|time| (BASE + 8..=BASE + 42).contains(time))
        .collect();
    assert_eq!(reads.report_part, part, "part of the report");
    assert_eq!(
        reads.span,
        json!({"start": times[0], "end": times[times.len() - 1]}),
        "span"
    );
    let read_back: Vec<(f64, f64, Option<i64>)> = offsets
        .iter()
        .map(|&o| ((BASE + o) as f64, o as f64, (o != 40).then_some(o)))
        .collect();
    assert_eq!(reads.read_back, read_back, "read-back");
    assert_eq!(reads.csv.len(), offsets.len(), "CSV rows: {:?}", reads.csv);
    for (line, time) in reads.csv.iter().zip(&times) {
        assert!(line.starts_with(&time.to_string()), "CSV {line}");
    }
    let series: Vec<(f64, f64)> = offsets
        .iter()
        .map(|&o| ((BASE + o) as f64, o as f64))
        .collect();
    assert_eq!(reads.series, series, "raw series");
    // The sample at 40 came without file systems.
    let with_disks: Vec<i64> = offsets.iter().copied().filter(|&o| o != 40).collect();
    let history: Vec<(f64, i64)> = with_disks.iter().map(|&o| ((BASE + o) as f64, o)).collect();
    assert_eq!(reads.disk_history, history, "file-system history");
    let mut coarse = history.clone();
    coarse.dedup_by_key(|(time, _)| (*time as i64 - BASE) / 10);
    assert_eq!(
        reads.disk_history_coarse, coarse,
        "file-system history, first of each 10 s"
    );
    let newest = &offsets[offsets.len() - 3..];
    let overview = &reads.overview;
    let fullest = match newest[2] {
        40 => Value::Null,
        o => {
            json!({"mount_point": "/", "used_bytes": o, "total_bytes": 100, "used_percent": o as f64})
        }
    };
    assert_eq!(
        overview["fullest_filesystem"], fullest,
        "fleet's fullest file system"
    );
    assert_eq!(overview["first_seen"], times[0] as f64, "first seen");
    assert_eq!(
        overview["last_seen"],
        (BASE + newest[2]) as f64,
        "last seen"
    );
    let interval = (newest[2] - newest[1]).min(newest[1] - newest[0]);
    assert_eq!(overview["interval_seconds"], interval as f64, "interval");
    assert_eq!(
        overview["latest"]["cpu_load"], newest[2] as f64,
        "latest values"
    );
}

async fn every_read_sees_samples_hot_folded_and_both(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register(NAME, PASSWORD).await;
    server
        .post_samples(&token, &[10, 20, 30].map(agent_sample))
        .await;
    let pushed = server
        .push_form(
            NAME,
            &token,
            &[("time", &(BASE + 40).to_string()), ("cpu_load", "40")],
        )
        .await;
    assert_eq!(pushed.status(), 202);
    let session = server.login(NAME, PASSWORD).await;

    // Acknowledged, not folded: every read finds them in the hot table.
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (4, 0), "(hot, folded)");
    }
    let hot = read_everything(&server, &token, &session).await;
    check(&hot, &[10, 20, 30, 40]);

    // The fold at shutdown moves them; the reads do not change.
    server.shutdown().await;
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (0, 4), "(hot, folded)");
    }
    let server = start(&database).await;
    let folded = read_everything(&server, &token, &session).await;
    assert_eq!(folded, hot);

    // New samples before, between and after the folded ones: every read
    // merges the two tables in time order, the overview's newest three
    // and first from either.
    server
        .post_samples(&token, &[5, 35, 45].map(agent_sample))
        .await;
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (3, 4), "(hot, folded)");
    }
    let both = read_everything(&server, &token, &session).await;
    check(&both, &[5, 10, 20, 30, 35, 40, 45]);
    server.shutdown().await;
}

async fn replays_are_duplicates_whether_the_original_is_hot_or_folded(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register(NAME, PASSWORD).await;
    let mut repeated = agent_sample(2);
    repeated["cpu_load"] = json!(99.0);
    let ack = server
        .post_samples(&token, &[agent_sample(1), agent_sample(2), repeated])
        .await;
    let (t1, t2, t3) = (BASE + 1, BASE + 2, BASE + 3);
    assert_eq!(ack, json!({"stored": [t1, t2, t2], "duplicates": []}));

    // The originals are hot.
    let mut replay = agent_sample(1);
    replay["cpu_load"] = json!(50.0);
    let ack = server
        .post_samples(&token, &[replay.clone(), agent_sample(3)])
        .await;
    assert_eq!(ack, json!({"stored": [t3], "duplicates": [t1]}));
    let response = server
        .push_form(
            NAME,
            &token,
            &[("time", &t2.to_string()), ("cpu_load", "7")],
        )
        .await;
    assert_eq!(
        response.status(),
        202,
        "the original route acknowledges a replay"
    );
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (3, 0), "(hot, folded)");
    }

    // The originals are folded.
    server.shutdown().await;
    let server = start(&database).await;
    let ack = server
        .post_samples(&token, &[replay, agent_sample(2), agent_sample(4)])
        .await;
    assert_eq!(ack, json!({"stored": [BASE + 4], "duplicates": [t1, t2]}));
    // One folded original and one hot.
    let ack = server
        .post_samples(&token, &[agent_sample(4), agent_sample(3)])
        .await;
    assert_eq!(ack, json!({"stored": [], "duplicates": [BASE + 4, t3]}));
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (1, 3), "(hot, folded)");
    }

    // Each stored once, with its first row's values.
    let read_back = server.get_json("/api/v1/samples", &token).await;
    let cpu: Vec<f64> = read_back["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sample| sample["cpu_load"].as_f64().unwrap())
        .collect();
    assert_eq!(cpu, [1.0, 2.0, 3.0, 4.0]);
    let text = server.metrics_text().await;
    let duplicates: f64 = text
        .lines()
        .filter(|line| line.starts_with("sysmon_samples_acknowledged_total"))
        .filter(|line| line.contains("outcome=\"duplicate\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(duplicates, 4.0, "this run's duplicates: {text}");
    server.shutdown().await;
}

/// 40 samples of one host in one batch go to `samples` directly (a host's
/// run fills pages of its own there), overlapping two hot ones: each is
/// stored once wherever its original is, replays are duplicates both ways,
/// and the fold accounts for the direct rows through their journal row.
async fn a_long_batch_of_one_host_is_stored_directly(database: TestDatabase) {
    let server = start(&database).await;
    let token = server.register(NAME, PASSWORD).await;
    server
        .post_samples(&token, &[1, 2, 3].map(agent_sample))
        .await;
    let long: Vec<Value> = (2..42).map(agent_sample).collect();
    let ack = server.post_samples(&token, &long).await;
    let times = |offsets: std::ops::Range<i64>| -> Vec<i64> {
        offsets.map(|offset| BASE + offset).collect()
    };
    assert_eq!(
        ack,
        json!({"stored": times(4..42), "duplicates": times(2..4)})
    );
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (3, 38), "(hot, folded)");
    }
    let journal = "SELECT (SELECT COUNT(*) FROM rollup_journal), \
                   (SELECT COALESCE(SUM(sample_count), 0) FROM rollup_1m)";
    if let Some(counts) = sqlite_counts(&database, journal).await {
        assert_eq!(counts, (1, 0), "(journal rows, folded samples)");
    }
    // Replays: of the direct rows as a long batch, and one at a time
    // through the hot path.
    let ack = server.post_samples(&token, &long).await;
    assert_eq!(ack, json!({"stored": [], "duplicates": times(2..42)}));
    let ack = server.post_samples(&token, &[agent_sample(20)]).await;
    assert_eq!(ack, json!({"stored": [], "duplicates": [BASE + 20]}));

    let cpu_of_every_sample = |read_back: Value| -> Vec<f64> {
        read_back["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| sample["cpu_load"].as_f64().unwrap())
            .collect()
    };
    let expected: Vec<f64> = (1..42).map(|offset| offset as f64).collect();
    let read_back = server.get_json("/api/v1/samples", &token).await;
    assert_eq!(cpu_of_every_sample(read_back), expected);
    server.shutdown().await;

    if let Some(counts) = sqlite_counts(&database, journal).await {
        assert_eq!(counts, (0, 41), "folded at shutdown");
    }
    if let Some(counts) = where_samples_are(&database).await {
        assert_eq!(counts, (0, 41), "(hot, folded)");
    }
    let server = start(&database).await;
    let read_back = server.get_json("/api/v1/samples", &token).await;
    assert_eq!(cpu_of_every_sample(read_back), expected);
    server.shutdown().await;
}
