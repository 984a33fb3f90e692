//! The metric list (`sysmon_core::metrics::METRICS`) is the one place a
//! metric is declared. These tests walk the list, so they cover a metric as
//! soon as it is added: the schema must have its columns (the migration is
//! the only other change a new metric needs), and a value sent for it must
//! come back through every read of the API.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sqlx::Connection;
use sysmon_core::metrics::{Metric, ValueKind, CHARTED, METRICS};
use sysmon_testkit::{Backend, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    the_schema_has_the_columns_of_every_metric,
    every_metric_comes_back_through_every_read,
);

const TIME: i64 = 1_764_000_000;
const PASSWORD: &str = "metric-list-pw";

/// The column type a metric's kind has in each store's migrations.
fn column_type(backend: Backend, kind: ValueKind) -> &'static str {
    match (backend, kind) {
        (Backend::Sqlite, ValueKind::Float) => "REAL",
        (Backend::Sqlite, ValueKind::Count) => "INTEGER",
        (Backend::Postgres, ValueKind::Float) => "double precision",
        (Backend::Postgres, ValueKind::Count) => "bigint",
    }
}

/// Column name to declared type, for one table of the test's database.
async fn table_columns(database: &TestDatabase, table: &str) -> BTreeMap<String, String> {
    let rows: Vec<(String, String)> = match database.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .expect("open the SQLite file");
            sqlx::query_as("SELECT name, type FROM pragma_table_info($1)")
                .bind(table)
                .fetch_all(&mut connection)
                .await
                .expect("SQLite table info")
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&database.url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query_as(
                "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1",
            )
            .bind(table)
            .fetch_all(&mut connection)
            .await
            .expect("PostgreSQL columns")
        }
    };
    rows.into_iter().collect()
}

fn expect_column(
    columns: &BTreeMap<String, String>,
    table: &str,
    column: &str,
    expected_type: &str,
    metric: &Metric,
) {
    let found = columns.get(column).map(String::as_str);
    assert_eq!(
        found,
        Some(expected_type),
        "`{table}.{column}` of metric `{}` must be {expected_type}: add it in a migration \
         (crates/sysmon-server/migrations/{{sqlite,postgres}})",
        metric.name
    );
}

async fn the_schema_has_the_columns_of_every_metric(database: TestDatabase) {
    // Starting the server runs the migrations.
    database.start().await.shutdown().await;
    let backend = database.backend;
    let samples = table_columns(&database, "samples").await;
    for metric in &METRICS {
        let expected = column_type(backend, metric.kind);
        expect_column(&samples, "samples", metric.name, expected, metric);
    }
    assert_eq!(
        samples.len(),
        2 + METRICS.len(),
        "samples has a column no metric declares: {samples:?}"
    );
    if backend == Backend::Sqlite {
        the_hot_table_has_the_columns_of_samples(&database).await;
    }

    let float = column_type(backend, ValueKind::Float);
    let count = column_type(backend, ValueKind::Count);
    for table in ["rollup_1m", "rollup_10m", "rollup_1h"] {
        let columns = table_columns(&database, table).await;
        for metric in CHARTED {
            for (suffix, expected) in [
                ("min", float),
                ("max", float),
                ("sum", float),
                ("count", count),
            ] {
                let column = format!("{}_{suffix}", metric.name);
                expect_column(&columns, table, &column, expected, metric);
            }
        }
        assert_eq!(
            columns.len(),
            3 + 4 * CHARTED.len(),
            "{table} has a column no charted metric declares: {columns:?}"
        );
    }
}

/// SQLite appends new samples to `hot_samples` and moves them into
/// `samples` later, through a statement and a view (`stored_samples`) that
/// pair the two tables' columns by position: a metric's migration must add
/// its column to both, in the same order.
async fn the_hot_table_has_the_columns_of_samples(database: &TestDatabase) {
    let mut connection = sqlx::SqliteConnection::connect(&database.url)
        .await
        .expect("open the SQLite file");
    let mut columns = Vec::new();
    for table in ["samples", "hot_samples", "stored_samples"] {
        let table_columns: Vec<(String, String)> =
            sqlx::query_as("SELECT name, type FROM pragma_table_info($1) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut connection)
                .await
                .expect("SQLite table info");
        columns.push(table_columns);
    }
    let [samples, hot, view] = <[_; 3]>::try_from(columns).expect("three tables");
    assert_eq!(
        hot, samples,
        "hot_samples must have the columns of samples, in the same order: add a metric's \
         column to both in its migration (crates/sysmon-server/migrations/sqlite)"
    );
    let names = |columns: &[(String, String)]| -> Vec<String> {
        columns.iter().map(|(name, _)| name.clone()).collect()
    };
    assert_eq!(names(&view), names(&samples), "the stored_samples view");
}

/// A GET with a bearer token that must succeed; the body as text.
async fn get(server: &TestServer, path: &str, token: &str) -> String {
    let response = server
        .http
        .get(server.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET request");
    assert_eq!(response.status(), 200, "GET {path}");
    response.text().await.expect("response body")
}

/// A distinct value for the metric at `index`, within every range.
fn value_for(index: usize, metric: &Metric) -> Value {
    match metric.kind {
        ValueKind::Float => json!(index as f64 + 0.25),
        ValueKind::Count => json!((1u64 << 40) + index as u64),
    }
}

async fn every_metric_comes_back_through_every_read(database: TestDatabase) {
    let mut config = database.config();
    config.retention.raw = None;
    config.retention.one_minute = None;
    let server = TestServer::start(config).await;
    let token = server.register("every-metric", PASSWORD).await;
    let mut sample = Map::new();
    sample.insert("time".into(), json!(TIME));
    for (index, metric) in METRICS.iter().enumerate() {
        sample.insert(metric.name.into(), value_for(index, metric));
    }
    let response = server
        .http
        .post(server.url("/api/v1/samples"))
        .bearer_auth(&token)
        .json(&json!([sample]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    // The agent's read-back: every metric, exactly.
    let read: Value = serde_json::from_str(&get(&server, "/api/v1/samples", &token).await).unwrap();
    let stored = &read["samples"][0];
    for (index, metric) in METRICS.iter().enumerate() {
        assert_eq!(
            stored[metric.name],
            value_for(index, metric),
            "{}",
            metric.name
        );
    }

    // The dashboard's reads, as the client logged in to the dashboard.
    let session: Value = server
        .http
        .post(server.url("/api/v1/session"))
        .json(&json!({"username": "every-metric", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session = session["token"].as_str().expect("session token");
    let export = format!("/api/v1/clients/every-metric/export.csv?from={TIME}&to={TIME}");
    let csv = get(&server, &export, session).await;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("CSV header").split(',').collect();
    let row: Vec<&str> = lines.next().expect("CSV row").split(',').collect();
    assert_eq!(header.len(), 1 + METRICS.len());
    for (index, metric) in METRICS.iter().enumerate() {
        let column = header
            .iter()
            .position(|name| *name == metric.name)
            .unwrap_or_else(|| panic!("no CSV column for {}", metric.name));
        assert_eq!(
            row[column],
            value_for(index, metric).to_string(),
            "{}",
            metric.name
        );
    }

    let range = format!("from={TIME}&to={}&step=60", TIME + 60);
    let series = format!("/api/v1/clients/every-metric/series?{range}");
    let series: Value = serde_json::from_str(&get(&server, &series, session).await).unwrap();
    let fleet: Value =
        serde_json::from_str(&get(&server, "/api/v1/clients", session).await).unwrap();
    let latest = &fleet["clients"][0]["latest"];
    for (index, metric) in METRICS.iter().enumerate() {
        let expected = value_for(index, metric).as_f64();
        if metric.charted {
            let mean = &series["metrics"][metric.name]["avg"][0];
            assert_eq!(mean.as_f64(), expected, "series of {}", metric.name);
            assert_eq!(
                latest[metric.name].as_f64(),
                expected,
                "latest {}",
                metric.name
            );
        } else {
            assert!(
                series["metrics"].get(metric.name).is_none(),
                "{}",
                metric.name
            );
        }
    }
    server.shutdown().await;
}
