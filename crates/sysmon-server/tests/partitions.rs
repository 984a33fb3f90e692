//! Samples over many days, and on PostgreSQL the day partitions that hold
//! them (migration 0005, src/store/partitions.rs): created ahead and on
//! demand, dropped whole by raw retention, recreated when another server
//! dropped one, and the rows of an older schema carried over.

mod common;

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::{Connection, PgConnection};
use sysmon_server::services::passwords::Passwords;
use sysmon_server::store::{self, StoreOptions, Tier};
use sysmon_testkit::{poll, unix_now, Backend, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    samples_over_many_days_are_stored_once,
    first_and_newest_samples_are_found_folded_or_not,
);

const DAY: i64 = 86_400;
/// 2001-03-04T12:00:00Z: a back-filled sample, long before the others.
const BACKFILLED: i64 = 983_707_200;
/// 2025-11-20T00:00:00Z, the first of the recent days the tests use.
const NOV_20: i64 = 1_763_596_800;

/// A sample with a file system, so both partitioned tables get a row.
fn sample(time: i64, cpu: f64) -> Value {
    json!({
        "time": time, "cpu_load": cpu,
        "filesystems": [{"mount_point": "/", "used_bytes": time, "total_bytes": 1_u64 << 40}]
    })
}

/// The client's stored sample times, and the file systems' used bytes.
async fn stored(server: &TestServer, token: &str) -> (Vec<i64>, Vec<i64>) {
    let samples = server.stored_samples(token).await;
    let times = samples
        .iter()
        .map(|s| s["time"].as_f64().expect("time") as i64)
        .collect();
    let used = samples
        .iter()
        .flat_map(|s| s["filesystems"].as_array().cloned().unwrap_or_default())
        .map(|fs| fs["used_bytes"].as_i64().expect("used_bytes"))
        .collect();
    (times, used)
}

async fn connect(database: &TestDatabase) -> PgConnection {
    PgConnection::connect(&database.url)
        .await
        .expect("connect to the test schema")
}

/// The partitions of `table`, by name.
async fn partitions(connection: &mut PgConnection, table: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT child.relname::TEXT FROM pg_inherits
         JOIN pg_class child ON child.oid = pg_inherits.inhrelid
         WHERE pg_inherits.inhparent = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(connection)
    .await
    .expect("partitions from the catalog")
}

/// The name of the partition of `table` holding unix second `time`.
fn partition_of(table: &str, time: i64) -> String {
    let date = chrono::DateTime::from_timestamp(time, 0).expect("a date");
    format!("{table}_p{}", date.format("%Y%m%d"))
}

/// Asserts that both tables have exactly the partitions of `days` (unix
/// seconds within each day), besides those created ahead of today.
async fn assert_partitions(connection: &mut PgConnection, days: &[i64]) {
    let today = unix_now() as i64;
    for table in ["samples", "sample_filesystems"] {
        let ahead: Vec<String> = (0..=2)
            .map(|n| partition_of(table, today + n * DAY))
            .collect();
        let mut expected: Vec<String> = days.iter().map(|&t| partition_of(table, t)).collect();
        let mut found = partitions(connection, table).await;
        found.retain(|name| !ahead.contains(name));
        expected.retain(|name| !ahead.contains(name));
        expected.sort();
        expected.dedup();
        assert_eq!(found, expected, "partitions of {table}");
    }
}

async fn samples_over_many_days_are_stored_once(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("many-days", "pw-secret1").await;
    let now = unix_now() as i64;
    // Across a midnight to the second, a long-past day, and now.
    let times = [
        NOV_20 + 6 * 3600,
        NOV_20 + 2 * DAY - 1,
        NOV_20 + 2 * DAY,
        BACKFILLED,
        now,
    ];
    let batch: Vec<Value> = times.iter().map(|&t| sample(t, 10.0)).collect();
    let ack = server.post_samples(&token, &batch).await;
    assert_eq!(ack, json!({"stored": times, "duplicates": []}));

    // A replay after a lost acknowledgement: all duplicates, stored once.
    let ack = server.post_samples(&token, &batch).await;
    assert_eq!(ack, json!({"stored": [], "duplicates": times}));
    let mut sorted = times.to_vec();
    sorted.sort();
    assert_eq!(stored(&server, &token).await, (sorted.clone(), sorted));

    if database.backend == Backend::Postgres {
        assert_partitions(&mut connect(&database).await, &times).await;
    }
    server.shutdown().await;
}

/// The fleet overview's entry and `/client/<name>/time` of the client
/// `name` (password "pw-secret1"), as (first seen, last seen, latest cpu,
/// interval, span).
async fn first_and_newest(server: &TestServer, name: &str, token: &str) -> Value {
    let session = server.login(name, "pw-secret1").await;
    let fleet = server.get_json("/api/v1/clients", &session).await;
    let entry = &fleet["clients"][0];
    let span = server.client_span(name, token).await;
    json!([
        entry["first_seen"],
        entry["last_seen"],
        entry["latest"]["cpu_load"],
        entry["interval_seconds"],
        span
    ])
}

/// PostgreSQL bounds its lookups of a client's first and newest samples by
/// the client's 1-hour rollups (src/store/postgres/reads.rs): samples
/// stored but not folded yet, before the first folded hour or after the
/// newest, days apart, must still be found, and so must a client with no
/// rollup at all.
async fn first_and_newest_samples_are_found_folded_or_not(database: TestDatabase) {
    let mut config = database.config();
    config.ingest.rollups.fold_interval = Duration::from_secs(3600);
    let server = TestServer::start(config.clone()).await;
    let token = server.register("spread", "pw-secret1").await;
    let folded = [
        NOV_20 + 6 * 3600,
        NOV_20 + 2 * DAY - 1,
        NOV_20 + 2 * DAY,
        NOV_20 + 5 * DAY,
    ];
    let batch: Vec<Value> = folded.iter().map(|&t| sample(t, 4.0)).collect();
    server.post_samples(&token, &batch).await;
    // Not folded yet, and no rollup at all: looked up without a bound.
    assert_eq!(
        first_and_newest(&server, "spread", &token).await,
        json!([folded[0] as f64, folded[3] as f64, 4.0, 1.0, {"start": folded[0], "end": folded[3]}])
    );
    server.shutdown().await; // folds

    let server = TestServer::start(config.clone()).await;
    assert_eq!(
        first_and_newest(&server, "spread", &token).await,
        json!([folded[0] as f64, folded[3] as f64, 4.0, 1.0, {"start": folded[0], "end": folded[3]}]),
        "every sample folded"
    );
    // Three days before the first folded hour, and a day after the newest:
    // stored, not folded.
    let (before, after) = (NOV_20 - 3 * DAY, NOV_20 + 6 * DAY);
    server
        .post_samples(&token, &[sample(before, 1.0), sample(after, 2.0)])
        .await;
    assert_eq!(
        first_and_newest(&server, "spread", &token).await,
        json!([before as f64, after as f64, 2.0, DAY as f64, {"start": before, "end": after}]),
        "samples outside the folded hours"
    );
    server.shutdown().await; // folds them

    // Raw retention drops the first days while their rollups stay: the
    // lookup bounded by the first hour finds nothing and looks further.
    delete_samples_before(&database, NOV_20 + DAY).await;
    let server = TestServer::start(config).await;
    assert_eq!(
        first_and_newest(&server, "spread", &token).await,
        json!([folded[1] as f64, after as f64, 2.0, DAY as f64, {"start": folded[1], "end": after}]),
        "the first hours' samples gone"
    );
    server.shutdown().await;
}

/// Deletes every sample before `time` (unix seconds) and its file systems,
/// as raw retention would, leaving the rollups.
async fn delete_samples_before(database: &TestDatabase, time: i64) {
    let micros = time * 1_000_000;
    let statements = [
        "DELETE FROM sample_filesystems WHERE time_us < $1",
        "DELETE FROM samples WHERE time_us < $1",
    ];
    if database.backend == Backend::Postgres {
        let mut connection = connect(database).await;
        for sql in statements {
            sqlx::query(sql)
                .bind(micros)
                .execute(&mut connection)
                .await
                .expect(sql);
        }
    } else {
        let mut connection = sqlx::SqliteConnection::connect(&database.url)
            .await
            .expect("open the SQLite file");
        for sql in statements {
            sqlx::query(sql)
                .bind(micros)
                .execute(&mut connection)
                .await
                .expect(sql);
        }
    }
}

/// A PostgreSQL test database, or `None` when PostgreSQL tests are skipped.
async fn postgres() -> Option<TestDatabase> {
    TestDatabase::create(Backend::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead() {
    let Some(database) = postgres().await else {
        return;
    };
    let server = database.start().await;
    let mut connection = connect(&database).await;
    let now = unix_now() as i64;
    for table in ["samples", "sample_filesystems"] {
        let ahead: Vec<String> = (0..=2)
            .map(|n| partition_of(table, now + n * DAY))
            .collect();
        poll(
            "partitions of today and the next two days",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || async {
                let found = partitions(&mut connect(&database).await, table).await;
                match ahead.iter().all(|name| found.contains(name)) {
                    true => Ok(()),
                    false => Err(format!("{found:?}")),
                }
            },
        )
        .await;
    }
    // Nothing but the tables the migration made: no foreign keys.
    let foreign_keys: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_constraint
         WHERE contype = 'f' AND conrelid IN ('samples'::regclass, 'sample_filesystems'::regclass)",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap();
    assert_eq!(foreign_keys, 0);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_retention_drops_whole_days_and_ingest_recreates_them() {
    let Some(database) = postgres().await else {
        return;
    };
    // Raw samples kept forever, so the server stores these old days.
    let mut config = database.config();
    config.retention.raw = None;
    let server = TestServer::start(config).await;
    let token = server.register("old-days", "pw-secret1").await;
    // Two samples on each of five days, 06:00 and 18:00.
    let times: Vec<i64> = (0..5)
        .flat_map(|day| [6, 18].map(|hour| NOV_20 + day * DAY + hour * 3600))
        .collect();
    let batch: Vec<Value> = times.iter().map(|&t| sample(t, 1.0)).collect();
    server.post_samples(&token, &batch).await;

    // Retention from a second store on the same database, as another
    // server would run it, with the horizon at noon of the fourth day.
    let other = store::connect(&database.url, StoreOptions::default(), None)
        .await
        .expect("a second store");
    let horizon_us = (NOV_20 + 3 * DAY + 12 * 3600) * 1_000_000;
    other.prune(Tier::Raw, horizon_us).await.expect("prune");
    other.close().await;

    // The first three days are gone whole; the fourth, which the horizon
    // cuts, stays whole (06:00 too) until it has passed entirely.
    let kept: Vec<i64> = times[6..].to_vec();
    assert_eq!(stored(&server, &token).await, (kept.clone(), kept.clone()));
    let mut connection = connect(&database).await;
    assert_partitions(&mut connection, &kept).await;

    // This server still believes the first day's partition exists: the
    // insert fails, the day is created again and the batch stored.
    let ack = server.post_samples(&token, &[sample(times[0], 2.0)]).await;
    assert_eq!(ack, json!({"stored": [times[0]], "duplicates": []}));
    let mut expected = vec![times[0]];
    expected.extend(&kept);
    assert_eq!(stored(&server, &token).await, (expected.clone(), expected));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_keeps_rows_stored_before_it() {
    let Some(database) = postgres().await else {
        return;
    };
    // The schema as releases before partitioning left it...
    let mut connection = connect(&database).await;
    let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/postgres");
    let migrator = Migrator::new(directory.as_path())
        .await
        .expect("read migrations");
    connection
        .ensure_migrations_table()
        .await
        .expect("migrations table");
    for migration in migrator.iter().filter(|m| m.version <= 3) {
        connection.apply(migration).await.expect("apply migration");
    }
    // ...with a client and samples on three days, one back-filled.
    let password_hash = Passwords::start(1)
        .expect("hashing thread")
        .hash("old-pw-secret".into())
        .await
        .expect("hash");
    let client: i64 = sqlx::query_scalar(
        "INSERT INTO clients (name, password_hash, created_at_us) VALUES ('old-host', $1, 0)
         RETURNING id",
    )
    .bind(password_hash)
    .fetch_one(&mut connection)
    .await
    .unwrap();
    let times = [BACKFILLED, NOV_20 + 3600, NOV_20 + DAY + 3600];
    for time in times {
        sqlx::query(
            "INSERT INTO samples (client_id, time_us, cpu_load, uptime_seconds)
             VALUES ($1, $2, 12.5, 7)",
        )
        .bind(client)
        .bind(time * 1_000_000)
        .execute(&mut connection)
        .await
        .unwrap();
        sqlx::query("INSERT INTO sample_filesystems VALUES ($1, $2, '/', $3, 1099511627776)")
            .bind(client)
            .bind(time * 1_000_000)
            .bind(time)
            .execute(&mut connection)
            .await
            .unwrap();
    }
    connection.close().await.unwrap();

    // The server migrates the schema at start; every row is still there.
    let server = database.start().await;
    let token = server.register("old-host", "old-pw-secret").await;
    assert_eq!(
        stored(&server, &token).await,
        (times.to_vec(), times.to_vec())
    );
    let ack = server.post_samples(&token, &[sample(times[1], 99.0)]).await;
    assert_eq!(ack, json!({"stored": [], "duplicates": [times[1]]}));
    let mut connection = connect(&database).await;
    assert_partitions(&mut connection, &times).await;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT relkind::TEXT FROM pg_class
         WHERE oid IN ('samples'::regclass, 'sample_filesystems'::regclass)",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    assert_eq!(kinds, ["p", "p"], "both tables partitioned");
    server.shutdown().await;
}
