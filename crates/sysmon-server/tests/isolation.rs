//! One client's bad sample must never fail another client's write. Values
//! the rollups could not sum are refused at the edge; a value the database
//! itself refuses (here, through a constraint the test adds) fails only the
//! request that sent it, even when the group commit it was in held others.

use serde_json::{json, Value};
use sqlx::Connection;
use sysmon_testkit::{Backend, TestDatabase, TestServer};
use tokio::task::JoinSet;

sysmon_testkit::on_both_stores!(
    a_sample_the_database_refuses_fails_only_its_own_request,
    values_that_would_poison_a_commit_are_refused_at_the_edge,
);

/// The value the test's constraint makes the database refuse, as `mem`.
const POISON: f64 = 666.0;
const GOOD_CLIENTS: usize = 12;
const PUSHES: usize = 25;

/// Makes the table ingest writes refuse the poison: on SQLite the hot
/// table new samples are appended to, on PostgreSQL `samples`.
async fn poison_the_samples_table(database: &TestDatabase) {
    match database.backend {
        Backend::Sqlite => {
            let mut connection = sqlx::SqliteConnection::connect(&database.url)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TRIGGER poison BEFORE INSERT ON hot_samples WHEN NEW.mem = 666
                 BEGIN SELECT RAISE(ABORT, 'poisoned sample'); END",
            )
            .execute(&mut connection)
            .await
            .unwrap();
        }
        Backend::Postgres => {
            let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
            sqlx::query(
                "ALTER TABLE samples ADD CONSTRAINT poison CHECK (mem IS DISTINCT FROM 666)",
            )
            .execute(&mut connection)
            .await
            .unwrap();
        }
    }
}

async fn push(server: &TestServer, name: &str, token: &str, time: usize, mem: f64) -> (u16, Value) {
    let response = server
        .http
        .post(server.url(&format!("/client/{name}")))
        .header("Authorization", token)
        .json(&json!({"time": 1_764_000_000 + time, "mem": mem}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn commit_failures(server: &TestServer) -> u64 {
    let text = server.metrics_text().await;
    text.lines()
        .find_map(|line| line.strip_prefix("sysmon_ingest_commit_failures_total "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the commit failure counter")
}

async fn a_sample_the_database_refuses_fails_only_its_own_request(database: TestDatabase) {
    let server = database.start().await;
    poison_the_samples_table(&database).await;
    let mut tokens = Vec::new();
    for client in 0..=GOOD_CLIENTS {
        tokens.push(server.register(&format!("c{client}"), "pw-secret1").await);
    }
    let server = std::sync::Arc::new(server);
    let mut pushers = JoinSet::new();
    for (client, token) in tokens.iter().enumerate() {
        let (server, token) = (server.clone(), token.clone());
        // Client 0 sends the poison every time; the others never do.
        pushers.spawn(async move {
            let name = format!("c{client}");
            let mut outcomes = Vec::new();
            for time in 0..PUSHES {
                let mem = if client == 0 {
                    POISON
                } else {
                    1.0 + time as f64
                };
                outcomes.push(push(&server, &name, &token, time, mem).await);
            }
            (client, outcomes)
        });
    }
    let mut refused = 0;
    while let Some(finished) = pushers.join_next().await {
        let (client, outcomes) = finished.unwrap();
        for (status, body) in outcomes {
            if client == 0 {
                assert_eq!(status, 400, "{body}");
                assert_eq!(body["code"], "invalid_sample", "{body}");
                refused += 1;
            } else {
                assert_eq!(status, 202, "client c{client}, never at fault: {body}");
            }
        }
    }
    assert_eq!(refused, PUSHES);
    for (client, token) in tokens.iter().enumerate().skip(1) {
        let stored = server.report(&format!("c{client}"), token, "").await;
        assert_eq!(stored.len(), PUSHES, "c{client}");
    }
    // Each poisoned request failed alone at least once; more failures than
    // that mean it shared a group commit with others, which then had to be
    // (and were) stored without it.
    assert!(
        commit_failures(&server).await > PUSHES as u64,
        "the poison never shared a commit with other requests, so this tested nothing"
    );
}

async fn values_that_would_poison_a_commit_are_refused_at_the_edge(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("edge", "pw-secret1").await;
    let (status, body) = push(&server, "edge", &token, 0, 1e308).await;
    assert_eq!(
        (status, &body["code"]),
        (400, &json!("invalid_sample")),
        "{body}"
    );
    assert!(body["error"].as_str().unwrap().contains("`mem`"), "{body}");

    let nul = json!([{"time": 1_764_000_000, "filesystems": [
        {"mount_point": "/data\u{0}", "used_bytes": 1, "total_bytes": 2}]}]);
    let response = server
        .http
        .post(server.url("/api/v1/samples"))
        .bearer_auth(&token)
        .json(&nul)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (&body["code"], &body["index"]),
        (&json!("invalid_sample"), &json!(0))
    );
    assert!(
        body["error"].as_str().unwrap().contains("mount_point"),
        "{body}"
    );
    assert_eq!(
        commit_failures(&server).await,
        0,
        "nothing reached the database"
    );
}
