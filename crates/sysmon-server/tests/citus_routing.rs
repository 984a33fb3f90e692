//! Issue 16's check that the PostgreSQL schema distributes by `client_id`
//! (docs/scaling.md, "Beyond one PostgreSQL"): every statement the server
//! sends on a samples or rollup table names the client, as a filter, a
//! join key, a grouping or an inserted column, so Citus can route it to
//! the shard holding that client (or run it per shard and combine).
//!
//! The statements are the ones really sent: sqlx reports each one it runs
//! as a `sqlx::query` event, which this test's tracing layer records while
//! a server on a fresh PostgreSQL schema ingests (every route), folds,
//! completes, answers reports, charts, exports and pages, announces, lets
//! retention run and purges a removed client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sysmon_testkit::{poll, unix_now, Backend, TestDatabase, TestServer};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// Tables distributed by client in a Citus deployment. (`rollup_journal`
/// is not: a few rows per second that live for one fold, kept on the
/// coordinator; docs/scaling.md.)
const DISTRIBUTED: [&str; 5] = [
    "samples",
    "sample_filesystems",
    "rollup_1m",
    "rollup_10m",
    "rollup_1h",
];

/// Statements that change or inspect the schema rather than read or write
/// rows: migrations, day partitions made and dropped, the catalog read.
/// Citus runs DDL on distributed tables on every shard itself.
const SCHEMA_WORK: [&str; 7] = [
    "create ",
    "alter ",
    "drop ",
    "comment ",
    "lock table ",
    "do ",
    "select parent.relname",
];

#[derive(Clone, Default)]
struct Statements(Arc<Mutex<Vec<String>>>);

#[derive(Default)]
struct StatementText {
    summary: String,
    statement: String,
}

impl Visit for StatementText {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "db.statement" => self.statement = value.to_owned(),
            "summary" => self.summary = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        let text = text.trim_matches('"').replace("\\n", "\n");
        match field.name() {
            "db.statement" => self.statement = text,
            "summary" => self.summary = text,
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let mut text = StatementText::default();
        event.record(&mut text);
        // sqlx leaves the statement out when the summary is all of it.
        let sql = if text.statement.is_empty() {
            text.summary
        } else {
            text.statement
        };
        self.0.lock().unwrap().push(sql);
    }
}

/// The statement without `--` comments, in lower case, its whitespace
/// collapsed.
fn normalized(sql: &str) -> String {
    sql.lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .flat_map(str::split_whitespace)
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The distributed tables a statement reads or writes.
fn tables_touched(sql: &str) -> Vec<&'static str> {
    let words: Vec<&str> = sql
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .collect();
    DISTRIBUTED
        .into_iter()
        .filter(|table| words.contains(table))
        .collect()
}

/// Whether the statement names the client so that it routes by it: an
/// inserted `client_id`, or `client_id` equal to something (a value, a
/// list, a join key), grouped or partitioned by.
fn routes_by_client(sql: &str) -> bool {
    let inserts_client = sql.starts_with("insert into")
        && sql
            .split_once('(')
            .and_then(|(_, columns)| columns.split_once(')'))
            .is_some_and(|(columns, _)| columns.contains("client_id"));
    if inserts_client {
        return true;
    }
    sql.match_indices("client_id").any(|(at, _)| {
        let before =
            sql[..at].trim_end_matches(|c: char| c.is_alphanumeric() || c == '_' || c == '.');
        let after = sql[at + "client_id".len()..].trim_start();
        let compared = ["=", "in ", "in("]
            .iter()
            .any(|operator| after.starts_with(operator));
        let grouped = ["group by", "partition by", "using ("]
            .iter()
            .any(|clause| before.trim_end().ends_with(clause));
        // (client_id, time_us) IN / = ANY: a tuple of keys.
        let tuple = before.trim_end().ends_with('(')
            && after.split_once(')').is_some_and(|(_, rest)| {
                let rest = rest.trim_start();
                rest.starts_with("in") || rest.starts_with('=')
            });
        compared || grouped || tuple
    })
}

#[test]
fn the_routing_check_tells_routed_statements_from_others() {
    for routed in [
        "insert into samples (client_id, time_us) select * from unnest($1, $2)",
        "select * from rollup_1m where client_id = $1 and bucket_us >= $2",
        "select s.time_us from samples s join keys k on s.client_id = k.client_id",
        "select client_id, max(time_us) from samples group by client_id",
        "delete from samples where (client_id, time_us) in (select * from unnest($1, $2))",
        "select * from samples where client_id = any($1)",
    ] {
        assert!(routes_by_client(routed), "{routed}");
    }
    for unrouted in [
        "delete from samples where time_us < $1",
        "select client_id, time_us from samples where time_us > $1",
        "select * from samples where client_id > $1",
        "select * from samples where time_us > $1 order by client_id",
        "insert into rollup_1m select * from rollup_journal",
    ] {
        assert!(!routes_by_client(unrouted), "{unrouted}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_on_samples_and_rollups_routes_by_client() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let statements = Statements::default();
    let subscriber = tracing_subscriber::registry().with(
        statements.clone().with_filter(
            tracing_subscriber::filter::Targets::new()
                .with_target("sqlx::query", tracing::Level::TRACE),
        ),
    );
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");

    let mut config = database.config();
    config.dashboard.initial_admin_password = Some("routing-admin-pw".into());
    config.ingest.rollups.fold_interval = Duration::from_millis(100);
    config.retention.raw = Some(Duration::from_secs(86_400));
    config.retention.check_interval = Duration::from_millis(500);
    config.alerts.rules =
        serde_norway::from_str("- {name: hot, metric: cpu_load, over_seconds: 1, above: 90}")
            .expect("rule");
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let mut second = config.clone();
    second.status_log.path = database.path("second.csv");
    let server = TestServer::start(config).await;
    // A second server on the database: what it commits, the first (which
    // leads, and has a rule) reads back by key.
    let other = TestServer::start(second).await;
    let admin = server.login("admin", "routing-admin-pw").await;
    let web = server.register("web-1", "routing-pw-1").await;
    let gone = server.register("gone-1", "routing-pw-2").await;
    let now = unix_now().floor();

    // Ingest: the original route, v1 batches (with file systems), and a
    // later part completing a stored one.
    for (offset, cpu) in [(-30.0, 95.0), (-20.0, 10.0)] {
        server
            .post_samples(&web, &[json!({"time": now + offset, "cpu_load": cpu})])
            .await;
    }
    let batch = json!([
        {"time": now - 10.0, "cpu_load": 5.0, "memory_used_bytes": 1024, "memory_total_bytes": 4096,
         "filesystems": [{"mount_point": "/", "total_bytes": 100, "used_bytes": 40}]},
    ]);
    server.post_json("/api/v1/samples", &web, &batch, 200).await;
    server
        .post_samples(&gone, &[json!({"time": now - 5.0, "cpu_load": 50.0})])
        .await;
    other
        .post_samples(&web, &[json!({"time": now - 4.0, "cpu_load": 60.0})])
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // folded
    let part = json!([{"time": now - 10.0, "swap_used_bytes": 1, "swap_total_bytes": 2}]);
    server.post_json("/api/v1/samples", &web, &part, 200).await;

    // Reads: the original report, charts at each resolution, the CSV
    // export, a page of samples, file systems, the fleet.
    let range = format!("from={}&to={}", now - 3_600.0, now + 60.0);
    server.report("web-1", &web, "").await;
    for resolution in ["raw", "1m", "10m", "1h"] {
        let path = format!("/api/v1/clients/web-1/series?{range}&resolution={resolution}");
        server.get_json(&path, &admin).await;
    }
    for (path, token) in [
        (format!("/api/v1/clients/web-1/export.csv?{range}"), &admin),
        (format!("/api/v1/samples?limit=100&{range}"), &web),
        ("/api/v1/clients/web-1/filesystems".to_owned(), &admin),
        (
            format!("/api/v1/clients/web-1/filesystems/history?{range}"),
            &admin,
        ),
        ("/api/v1/clients".to_owned(), &admin),
        ("/metrics/fleet".to_owned(), &admin),
    ] {
        let answer = server
            .http
            .get(server.url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{path}: {}", answer.status());
    }

    // A removed client's rows purged; retention past its raw days.
    server.remove_client("gone-1", &admin).await;
    poll(
        "retention and the purge ran",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let statements = statements.clone();
            async move {
                let seen = statements.0.lock().unwrap();
                let deleted = |table: &str| {
                    seen.iter().any(|sql| {
                        let sql = normalized(sql);
                        sql.starts_with("delete") && tables_touched(&sql).contains(&table)
                    })
                };
                (deleted("samples") && deleted("rollup_1m"))
                    .then_some(())
                    .ok_or_else(|| "no delete from samples and rollup_1m yet".to_owned())
            }
        },
    )
    .await;
    server.shutdown().await;
    other.shutdown().await;

    let seen = statements.0.lock().unwrap().clone();
    assert!(
        seen.iter().any(|sql| {
            let sql = normalized(sql);
            sql.starts_with("select")
                && sql.contains("from samples s join unnest")
                && !sql.contains("for update")
        }),
        "the first server read back what the second committed"
    );
    let on_distributed: Vec<String> = seen
        .iter()
        .map(|sql| normalized(sql))
        .filter(|sql| !tables_touched(sql).is_empty())
        .filter(|sql| !SCHEMA_WORK.iter().any(|work| sql.starts_with(work)))
        .collect();
    for table in DISTRIBUTED {
        assert!(
            on_distributed
                .iter()
                .any(|sql| tables_touched(sql).contains(&table)),
            "no statement on {table} seen: the workload does not cover it"
        );
    }
    let mut unrouted: Vec<&String> = on_distributed
        .iter()
        .filter(|sql| !routes_by_client(sql))
        .collect();
    unrouted.sort();
    unrouted.dedup();
    assert!(
        unrouted.is_empty(),
        "{} of {} statements on samples or rollups do not name the client:\n{}",
        unrouted.len(),
        on_distributed.len(),
        unrouted
            .iter()
            .map(|sql| format!("- {sql}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
