//! Rollups are folded outside the ingest transaction, from memory. This
//! kills the server binary with SIGKILL while agents push, several times,
//! then restarts it and checks that every rollup row of every tier equals a
//! recomputation from the raw samples in SQL: nothing folded twice, nothing
//! lost, whatever the kill interrupted.
//!
//! On SQLite the raw samples are in two tables (new ones in `hot_samples`,
//! which is also the journal there, until a fold moves them to `samples`):
//! the recomputation reads both, through the `stored_samples` view.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use sqlx::{ColumnIndex, Connection, Decode, Row, Type};
use sysmon_core::metrics::{ValueKind, CHARTED};
use sysmon_testkit::process::config_file;
use sysmon_testkit::{Backend, ServerProcess, TestDatabase};
use tokio::task::JoinSet;

sysmon_testkit::on_both_stores!(rollups_equal_the_samples_after_kills_during_load);

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");
const HOSTS: usize = 6;
const KILLS: usize = 3;
/// Samples land in a three-hour window, so every tier has buckets that
/// many commits and many folds add to.
const WINDOW_SECONDS: i64 = 3 * 3600;

async fn rollups_equal_the_samples_after_kills_during_load(database: TestDatabase) {
    // Folds every 50 ms, so kills land before, during and after folds.
    let config = config_file(
        &database,
        "sysmon.yaml",
        "ingest:\n  fold_interval_seconds: 0.05\n  fold_part_hosts: 2\n",
    );
    let args = ["--config", config.as_str()];
    let base_time = now_seconds() - 2 * 86_400;
    let http = reqwest::Client::new();
    let mut tokens = Vec::new();
    let mut unfolded_at_kills = 0;
    for kill in 0..KILLS {
        let server = ServerProcess::start(BINARY, &database, &args).await;
        if tokens.is_empty() {
            for host in 0..HOSTS {
                tokens.push(register(&http, &server.base(), &format!("host{host}")).await);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(kill as u64);
        let pushers = push_from_every_host(&server, &tokens, base_time, kill);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(400..1200))).await;
        assert_folds_never_gave_up(&server);
        server.kill().await;
        assert!(
            pushers.join_all().await.iter().sum::<usize>() > 0,
            "the load ran before kill {kill}"
        );
        unfolded_at_kills += count_unfolded(&database).await;
    }
    assert!(
        unfolded_at_kills > 0,
        "some kill must land with commits not yet folded, or this tests nothing"
    );

    // Starting folds what the journal names; kill again at once, so only
    // that can have made the rollups whole.
    let server = ServerProcess::start(BINARY, &database, &args).await;
    server.kill().await;
    assert_eq!(
        count_unfolded(&database).await,
        0,
        "the start folded the journal"
    );
    let after_kills = compare_rollups(&database).await;
    assert!(after_kills > 100, "only {after_kills} rollup rows compared");

    // And without a crash: folds while the load runs, the last at SIGTERM.
    let mut server = ServerProcess::start(BINARY, &database, &args).await;
    let pushers = push_from_every_host(&server, &tokens, base_time, KILLS);
    tokio::time::sleep(Duration::from_millis(800)).await;
    server.signal("-TERM").await;
    assert!(server.wait().await.success(), "clean exit on SIGTERM");
    pushers.join_all().await;
    assert_folds_never_gave_up(&server);
    assert_eq!(
        count_unfolded(&database).await,
        0,
        "the shutdown folded everything"
    );
    assert!(compare_rollups(&database).await >= after_kills);
}

/// A fold that gives up its summaries leaves them to the journal, which
/// hides its mistakes from the comparison: in a healthy run none does.
fn assert_folds_never_gave_up(server: &ServerProcess) {
    let log = server.log_text();
    assert!(
        !log.contains("giving up the in-memory rollup summaries"),
        "{log}"
    );
}

fn push_from_every_host(
    server: &ServerProcess,
    tokens: &[String],
    base_time: i64,
    round: usize,
) -> JoinSet<usize> {
    let mut pushers = JoinSet::new();
    for (host, token) in tokens.iter().enumerate() {
        let seed = (round * HOSTS + host) as u64;
        let (base, token) = (server.base(), token.clone());
        pushers.spawn(push_until_refused(
            reqwest::Client::new(),
            base,
            token,
            base_time,
            seed,
        ));
    }
    pushers
}

/// Pushes batches of random samples (some repeated) until the server stops
/// answering; returns how many batches it acknowledged.
async fn push_until_refused(
    http: reqwest::Client,
    base: String,
    token: String,
    base_time: i64,
    seed: u64,
) -> usize {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut acknowledged = 0;
    let mut previous = Value::Null;
    loop {
        let batch = if rng.gen_bool(0.1) && !previous.is_null() {
            previous.clone()
        } else {
            let size = rng.gen_range(1..40);
            Value::Array(
                (0..size)
                    .map(|_| random_sample(&mut rng, base_time))
                    .collect(),
            )
        };
        let sent = http
            .post(format!("{base}/api/v1/samples"))
            .bearer_auth(&token)
            .json(&batch)
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 200 => acknowledged += 1,
            Ok(response) if response.status() == 503 => continue,
            Ok(response) => panic!(
                "unexpected {}: {:?}",
                response.status(),
                response.text().await
            ),
            Err(_) => return acknowledged,
        }
        previous = batch;
    }
}

/// A sample at a random second of the window, every charted metric set
/// (some left out, as hosts without swap or sensors do).
fn random_sample(rng: &mut impl Rng, base_time: i64) -> Value {
    let mut sample = Map::new();
    sample.insert(
        "time".into(),
        json!(base_time + rng.gen_range(0..WINDOW_SECONDS)),
    );
    for metric in CHARTED {
        if rng.gen_bool(0.1) {
            continue;
        }
        let value = match metric.kind {
            ValueKind::Float if metric.name == "cpu_load" => json!(rng.gen_range(0.0..100.0)),
            ValueKind::Float => json!(rng.gen_range(0.0..1e6)),
            ValueKind::Count => json!(rng.gen_range(0u64..1 << 40)),
        };
        sample.insert(metric.name.into(), value);
    }
    Value::Object(sample)
}

async fn register(http: &reqwest::Client, base: &str, name: &str) -> String {
    sysmon_testkit::process::register_client(http, base, name, "pw-secret1").await
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Commits (PostgreSQL) or samples (SQLite, whose journal of new samples
/// is its hot table) not yet folded into the rollups.
async fn count_unfolded(database: &TestDatabase) -> i64 {
    match database.backend {
        Backend::Sqlite => {
            let sql = "SELECT (SELECT COUNT(*) FROM rollup_journal)
                            + (SELECT COUNT(*) FROM hot_samples)";
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let sql = "SELECT COUNT(*) FROM rollup_journal";
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query_scalar(sql)
                .fetch_one(&mut connection)
                .await
                .unwrap()
        }
    }
}

/// Where the server keeps every stored sample.
fn stored_samples(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "stored_samples",
        Backend::Postgres => "samples",
    }
}

/// One row of a tier: the key, the sample count, and per charted metric
/// min, max, sum and count.
#[derive(Debug, Clone, PartialEq)]
struct Row4 {
    client_id: i64,
    bucket_us: i64,
    samples: i64,
    metrics: Vec<(Option<f64>, Option<f64>, f64, i64)>,
}

fn decode<'r, R>(row: &'r R) -> Row4
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let metrics = (0..CHARTED.len())
        .map(|index| {
            let column = 3 + 4 * index;
            (
                row.try_get(column).unwrap(),
                row.try_get(column + 1).unwrap(),
                row.try_get::<Option<f64>, _>(column + 2)
                    .unwrap()
                    .unwrap_or(0.0),
                row.try_get(column + 3).unwrap(),
            )
        })
        .collect();
    Row4 {
        client_id: row.try_get(0).unwrap(),
        bucket_us: row.try_get(1).unwrap(),
        samples: row.try_get(2).unwrap(),
        metrics,
    }
}

/// The stored rows of a tier and the same recomputed from the samples in
/// `samples`.
fn tier_sql(table: &str, width_us: i64, samples: &str) -> (String, String) {
    let mut stored = String::from("SELECT client_id, bucket_us, sample_count");
    let mut recomputed =
        format!("SELECT client_id, time_us / {width_us} * {width_us} AS bucket, COUNT(*)");
    for metric in CHARTED {
        let m = metric.name;
        stored.push_str(&format!(", {m}_min, {m}_max, {m}_sum, {m}_count"));
        let value = format!("CAST({m} AS DOUBLE PRECISION)");
        recomputed.push_str(&format!(
            ", MIN({value}), MAX({value}), SUM({value}), COUNT({m})"
        ));
    }
    stored.push_str(&format!(" FROM {table} ORDER BY 1, 2"));
    recomputed.push_str(&format!(" FROM {samples} GROUP BY 1, 2 ORDER BY 1, 2"));
    (stored, recomputed)
}

async fn fetch(database: &TestDatabase, sql: &str) -> Vec<Row4> {
    match database.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut connection).await.unwrap();
            rows.iter().map(decode).collect()
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            let rows = sqlx::query(sql).fetch_all(&mut connection).await.unwrap();
            rows.iter().map(decode).collect()
        }
    }
}

/// Compares every tier with its recomputation; returns the rows compared.
async fn compare_rollups(database: &TestDatabase) -> usize {
    let mut compared = 0;
    for (table, width_us) in [
        ("rollup_1m", 60_000_000i64),
        ("rollup_10m", 600_000_000),
        ("rollup_1h", 3_600_000_000),
    ] {
        let samples = stored_samples(database.backend);
        let (stored_sql, recomputed_sql) = tier_sql(table, width_us, samples);
        let stored = fetch(database, &stored_sql).await;
        let recomputed = fetch(database, &recomputed_sql).await;
        assert_eq!(
            stored.len(),
            recomputed.len(),
            "{table}: as many buckets as the samples fill"
        );
        for (stored, expected) in stored.iter().zip(&recomputed) {
            let key = (stored.client_id, stored.bucket_us);
            assert_eq!(key, (expected.client_id, expected.bucket_us), "{table}");
            assert_eq!(stored.samples, expected.samples, "{table} {key:?}: samples");
            for (metric, (got, want)) in CHARTED
                .iter()
                .zip(stored.metrics.iter().zip(&expected.metrics))
            {
                let what = format!("{table} {key:?} {}", metric.name);
                assert_eq!(
                    (got.0, got.1, got.3),
                    (want.0, want.1, want.3),
                    "{what}: min, max, count"
                );
                let tolerance = 1e-9 * got.2.abs().max(want.2.abs()).max(1.0);
                assert!(
                    (got.2 - want.2).abs() <= tolerance,
                    "{what}: sum {} vs {}",
                    got.2,
                    want.2
                );
            }
        }
        compared += stored.len();
    }
    compared
}
