//! The harness itself, on both stores: what every crate's tests rely on it
//! for.

use sysmon_testkit::{Backend, TestDatabase, POSTGRES_URL_VARIABLE};

sysmon_testkit::on_both_stores!(
    a_restart_on_the_same_port_keeps_the_database,
    each_test_gets_an_empty_database,
);

async fn a_restart_on_the_same_port_keeps_the_database(database: TestDatabase) {
    let server = database.start().await;
    let address = server.address;
    assert_ne!(address.port(), 0, "the server reports the port it chose");
    let token = server.register("restarted", "pw-secret1").await;
    server.shutdown().await;

    let server = database.start_on(address).await;
    assert_eq!(server.address, address);
    assert_eq!(server.url("/client"), format!("http://{address}/client"));
    assert!(
        server.report("restarted", &token, "").await.is_empty(),
        "the client and its token outlive the restart; it has no samples"
    );
    server.shutdown().await;
    assert!(
        database.status_log_path().exists(),
        "the status log goes to the test's directory"
    );
}

/// Every run registers the same name, which only a fresh database takes
/// as new.
async fn each_test_gets_an_empty_database(database: TestDatabase) {
    let server = database.start().await;
    let response = server
        .http
        .post(server.url("/client"))
        .json(&serde_json::json!({"username": "first", "pass": "pw-secret1"}))
        .send()
        .await
        .expect("register request");
    let body: serde_json::Value = response.json().await.expect("register body");
    assert_eq!(body["registration"], "first", "a new client: {body}");
    server.shutdown().await;
}

/// The schema a PostgreSQL test ran in is gone once its database is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_postgres_database_leaves_no_schema() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let schema = database
        .url
        .rsplit_once("search_path]=")
        .map(|(_, schema)| schema.to_owned())
        .expect("the URL names its schema");
    drop(database);

    let admin_url = std::env::var(POSTGRES_URL_VARIABLE).expect("PostgreSQL is configured");
    let pool = sqlx::PgPool::connect(&admin_url)
        .await
        .expect("connect to PostgreSQL");
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .expect("look for the schema");
    assert_eq!(left, 0, "schema {schema} was dropped");
}
