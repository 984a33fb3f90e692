//! Who may become a client and keep being one: registration open or closed,
//! passwords long enough for new clients, and tokens revoked from the
//! command line (another process on the same database) or by an admin
//! through the API, refused by every server within a second although it
//! caches tokens it has seen.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Connection;
use sysmon_testkit::{poll, Backend, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    revoked_tokens_are_refused_within_a_second,
    closed_registration_takes_clients_only_from_an_admin,
    new_clients_need_long_enough_passwords_and_old_ones_still_log_in,
    tokens_expire_after_their_lifetime_when_one_is_set,
    removed_clients_free_their_name_and_leave_no_rows,
    enrolment_tokens_admit_new_clients_in_token_mode,
);

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");
const ADMIN_PASSWORD: &str = "admin-password";
const PASSWORD: &str = "revoked-password";

async fn push(server: &TestServer, token: &str, time: i64) -> u16 {
    server
        .http
        .post(server.url("/api/v1/samples"))
        .bearer_auth(token)
        .json(&[json!({"time": time, "cpu_load": 1.0})])
        .send()
        .await
        .expect("POST /api/v1/samples")
        .status()
        .as_u16()
}

async fn revoke_through_api(server: &TestServer, session: &str, client: &str) -> reqwest::Response {
    server
        .http
        .post(server.url(&format!("/api/v1/clients/{client}/revoke-tokens")))
        .bearer_auth(session)
        .send()
        .await
        .expect("POST revoke-tokens")
}

/// Runs `sysmon-server ARGS` on the test's database; its standard output.
fn cli(database: &TestDatabase, args: &[&str]) -> String {
    cli_with_input(database, args, "")
}

/// As [`cli`], with `input` on standard input.
fn cli_with_input(database: &TestDatabase, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(BINARY)
        .arg("--database-url")
        .arg(&database.url)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sysmon-server");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let output = child.wait_with_output().expect("sysmon-server ends");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn revoked_tokens_are_refused_within_a_second(database: TestDatabase) {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    let token = server.register("revoked", PASSWORD).await;
    assert_eq!(
        push(&server, &token, 1_764_000_000).await,
        200,
        "cached now"
    );

    // From another process: this server learns of it from the database.
    let said = cli(&database, &["client", "revoke-tokens", "revoked"]);
    assert!(said.contains("revoked 1 tokens"), "{said}");
    let revoked_at = std::time::Instant::now();
    let mut time = 1_764_000_001;
    poll(
        "the revoked token refused",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            time += 1;
            let (server, token) = (&server, &token);
            async move {
                match push(server, token, time).await {
                    401 => Ok(()),
                    status => Err(format!("status {status}")),
                }
            }
        },
    )
    .await;
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1_500),
        "refused after {:?}",
        revoked_at.elapsed()
    );
    let listed = cli(&database, &["client", "list"]);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with("revoked\t") && line.ends_with("\t0 tokens")),
        "{listed}"
    );

    // The password still logs in, with a new token.
    let token = server.register("revoked", PASSWORD).await;
    assert_eq!(push(&server, &token, 1_764_001_000).await, 200);

    // Through the API: admins only, and refused at once on this server.
    let client_session = server.login("revoked", PASSWORD).await;
    let refused = revoke_through_api(&server, &client_session, "revoked").await;
    assert_eq!(refused.status().as_u16(), 403, "a client may not revoke");
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let revoked = revoke_through_api(&server, &admin, "revoked").await;
    assert_eq!(revoked.status().as_u16(), 200);
    let body: serde_json::Value = revoked.json().await.expect("JSON");
    assert_eq!(body, json!({"client": "revoked", "tokens": 1}));
    assert_eq!(push(&server, &token, 1_764_001_001).await, 401);
    let missing = revoke_through_api(&server, &admin, "nobody").await;
    assert_eq!(missing.status().as_u16(), 404);
    server.shutdown().await;
}

async fn closed_registration_takes_clients_only_from_an_admin(database: TestDatabase) {
    let mut config = database.config();
    config.registration.mode = sysmon_server::services::auth::RegistrationMode::Closed;
    let server = TestServer::start(config).await;
    let register = |name: &'static str| {
        let server = &server;
        async move {
            server
                .http
                .post(server.url("/client"))
                .json(&json!({"username": name, "pass": PASSWORD}))
                .send()
                .await
                .expect("POST /client")
        }
    };
    let refused = register("newcomer").await;
    assert_eq!(refused.status().as_u16(), 403);
    let body: serde_json::Value = refused.json().await.expect("JSON");
    assert_eq!(body["code"], "registration_closed", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("client add"),
        "says what to do: {body}"
    );

    let said = cli_with_input(
        &database,
        &["client", "add", "newcomer"],
        &format!("{PASSWORD}\n"),
    );
    assert!(said.contains("added client newcomer"), "{said}");
    let logged_in = register("newcomer").await;
    assert_eq!(logged_in.status().as_u16(), 200, "an added client logs in");
    let body: serde_json::Value = logged_in.json().await.expect("JSON");
    let token = body["client_id"].as_str().expect("a token").to_owned();
    assert_eq!(push(&server, &token, 1_764_000_000).await, 200);
    server.shutdown().await;
}

async fn new_clients_need_long_enough_passwords_and_old_ones_still_log_in(database: TestDatabase) {
    // An earlier version took any password: this client has a short one.
    let mut lenient = database.config();
    lenient.registration.min_password_chars = 1;
    let server = TestServer::start(lenient).await;
    server.register("old-timer", "123").await;
    server.shutdown().await;

    let server = TestServer::start(database.config()).await;
    let short = server
        .http
        .post(server.url("/client"))
        .json(&json!({"username": "newcomer", "pass": "1234567"}))
        .send()
        .await
        .expect("POST /client");
    assert_eq!(short.status().as_u16(), 400);
    let body: serde_json::Value = short.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("(`pass`) of 8 to"),
        "names the field and the length: {body}"
    );
    server.register("newcomer", "12345678").await;
    server.register("old-timer", "123").await;
    server.shutdown().await;
}

async fn tokens_expire_after_their_lifetime_when_one_is_set(database: TestDatabase) {
    let mut config = database.config();
    config.registration.token_lifetime = Some(Duration::from_secs(2));
    let server = TestServer::start(config).await;
    let token = server.register("short-lived", PASSWORD).await;
    assert_eq!(
        push(&server, &token, 1_764_000_000).await,
        200,
        "fresh, and cached now"
    );
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert_eq!(
        push(&server, &token, 1_764_000_001).await,
        401,
        "expired, though cached"
    );
    // Logging in again gives a token that works.
    let token = server.register("short-lived", PASSWORD).await;
    assert_eq!(push(&server, &token, 1_764_000_002).await, 200);
    server.shutdown().await;
}

async fn remove_through_api(server: &TestServer, session: &str, client: &str) -> u16 {
    server
        .http
        .delete(server.url(&format!("/api/v1/clients/{client}")))
        .bearer_auth(session)
        .send()
        .await
        .expect("DELETE /api/v1/clients/NAME")
        .status()
        .as_u16()
}

/// Rows removed clients still have, per table, read from the database
/// itself (the API can no longer name them).
async fn rows_of_removed_clients(database: &TestDatabase) -> Vec<(&'static str, i64)> {
    let mut tables = vec![
        "samples",
        "sample_filesystems",
        "rollup_1m",
        "rollup_10m",
        "rollup_1h",
        "tokens",
    ];
    if database.backend == Backend::Sqlite {
        tables.extend(["hot_samples", "hot_sample_filesystems"]);
    }
    let mut counts = Vec::new();
    for table in tables {
        let sql = format!(
            "SELECT COUNT(*) FROM {table} WHERE client_id IN
                (SELECT id FROM clients WHERE removed_at_us IS NOT NULL)"
        );
        let count: i64 = match database.backend {
            Backend::Sqlite => {
                let mut connection = sqlx::SqliteConnection::connect(&database.url)
                    .await
                    .unwrap();
                sqlx::query_scalar(&sql)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
            Backend::Postgres => {
                let mut connection = sqlx::PgConnection::connect(&database.url).await.unwrap();
                sqlx::query_scalar(&sql)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
            }
        };
        counts.push((table, count));
    }
    counts
}

/// An admin removes a client with a long history: its token is refused,
/// the fleet no longer lists it, its name can be registered afresh with
/// none of the old samples, and every row it had is deleted (in chunks,
/// the hot rows after the fold moved them) while other clients keep theirs.
async fn removed_clients_free_their_name_and_leave_no_rows(database: TestDatabase) {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.retention.check_interval = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    let doomed = server.register("doomed", PASSWORD).await;
    let keeper = server.register("keeper", PASSWORD).await;
    let base = 1_764_000_000;
    for chunk in 0..12 {
        let batch: Vec<Value> = (0..1_000)
            .map(|i| {
                json!({"time": base + chunk * 1_000 + i, "cpu_load": 5.0,
                       "filesystems": [{"mount_point": "/", "used_bytes": 1, "total_bytes": 2}]})
            })
            .collect();
        server.post_samples(&doomed, &batch).await;
    }
    assert_eq!(push(&server, &keeper, base).await, 200);

    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let client_session = server.login("keeper", PASSWORD).await;
    assert_eq!(
        remove_through_api(&server, &client_session, "doomed").await,
        403
    );
    assert_eq!(remove_through_api(&server, &admin, "nobody").await, 404);
    assert_eq!(remove_through_api(&server, &admin, "doomed").await, 204);
    assert_eq!(
        remove_through_api(&server, &admin, "doomed").await,
        404,
        "gone"
    );
    assert_eq!(push(&server, &doomed, base + 20_000).await, 401);

    let fleet = server.get_json("/api/v1/clients", &admin).await;
    let names: Vec<&str> = fleet["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .filter_map(|client| client["name"].as_str())
        .collect();
    assert_eq!(names, ["keeper"], "{fleet}");
    let listed = cli(&database, &["client", "list"]);
    assert!(
        !listed.contains("doomed") && !listed.contains("removed"),
        "{listed}"
    );

    let database = &database;
    poll(
        "every row of the removed client deleted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async move {
            let left = rows_of_removed_clients(database).await;
            match left.iter().all(|(_, rows)| *rows == 0) {
                true => Ok(()),
                false => Err(format!("{left:?}")),
            }
        },
    )
    .await;
    assert_eq!(
        server.stored_samples(&keeper).await.len(),
        1,
        "others keep theirs"
    );

    // The name is free: a new client gets it, with none of the old samples.
    let reborn = server.register("doomed", "another-password").await;
    assert!(server.stored_samples(&reborn).await.is_empty());
    assert_eq!(
        push(&server, &reborn, base).await,
        200,
        "even at an old time"
    );

    // From the command line, as from another process.
    let said = cli(database, &["client", "remove", "doomed"]);
    assert!(said.contains("removed client doomed"), "{said}");
    poll(
        "the CLI's removal honoured",
        Duration::from_secs(3),
        Duration::from_millis(50),
        || {
            let (server, reborn) = (&server, &reborn);
            async move {
                match push(server, reborn, base + 1).await {
                    401 => Ok(()),
                    status => Err(format!("status {status}")),
                }
            }
        },
    )
    .await;
    server.shutdown().await;
}

/// `POST /client` for a new name, with an enrolment token when given; the
/// status and JSON body.
async fn register_with(server: &TestServer, name: &str, token: Option<&str>) -> (u16, Value) {
    let mut body = json!({"username": name, "pass": PASSWORD});
    if let Some(token) = token {
        body["enroll_token"] = json!(token);
    }
    let response = server
        .http
        .post(server.url("/client"))
        .json(&body)
        .send()
        .await
        .expect("POST /client");
    (
        response.status().as_u16(),
        response.json().await.expect("JSON"),
    )
}

async fn create_token_through_api(
    server: &TestServer,
    session: &str,
    request: Value,
) -> (u16, Value) {
    let response = server
        .http
        .post(server.url("/api/v1/enrollment-tokens"))
        .bearer_auth(session)
        .json(&request)
        .send()
        .await
        .expect("POST /api/v1/enrollment-tokens");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// In `registration.mode: token` a new name registers only with a valid
/// enrolment token (from the API or the command line), each use counted,
/// and not once it is used up, expired or revoked; existing clients log in
/// without one.
async fn enrolment_tokens_admit_new_clients_in_token_mode(database: TestDatabase) {
    let mut config = database.config();
    config.registration.mode = sysmon_server::services::auth::RegistrationMode::Token;
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    let (status, body) = register_with(&server, "newcomer", None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "registration_closed");
    assert!(
        body["error"].as_str().unwrap().contains("enrolment token"),
        "{body}"
    );
    let (status, _) = register_with(&server, "newcomer", Some("enroll_made-up")).await;
    assert_eq!(status, 403);

    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let (status, _) = create_token_through_api(&server, "not-a-session", json!({"uses": 2})).await;
    assert_eq!(status, 401);
    let (status, body) = create_token_through_api(&server, &admin, json!({"uses": 0})).await;
    assert_eq!(status, 400, "{body}");
    let (status, created) =
        create_token_through_api(&server, &admin, json!({"uses": 2, "note": "rack 4"})).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["token"].as_str().expect("the secret").to_owned();
    assert!(secret.starts_with("enroll_"), "{secret}");
    // A registration refused for its password spends no use.
    let short = server
        .http
        .post(server.url("/client"))
        .json(&json!({"username": "shorty", "pass": "x", "enroll_token": secret}))
        .send()
        .await
        .expect("POST /client");
    assert_eq!(short.status().as_u16(), 400);
    for name in ["first", "second"] {
        let (status, body) = register_with(&server, name, Some(&secret)).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["registration"], name);
    }
    let (status, _) = register_with(&server, "third", Some(&secret)).await;
    assert_eq!(status, 403, "used up after two");
    let (status, body) = register_with(&server, "first", None).await;
    assert_eq!(
        status, 200,
        "an enrolled client logs in without a token: {body}"
    );
    let listed = server.get_json("/api/v1/enrollment-tokens", &admin).await;
    let token = &listed["tokens"][0];
    assert_eq!(
        (token["used"].as_i64(), token["uses_left"].as_i64()),
        (Some(2), Some(0)),
        "{listed}"
    );
    assert_eq!(token["note"], "rack 4");
    assert!(
        listed.to_string().find(&secret).is_none(),
        "never the secret"
    );

    // From the command line: reusable until revoked.
    let said = cli(&database, &["enroll-token", "create", "--note", "fleet"]);
    let cli_secret = said
        .lines()
        .find_map(|line| line.strip_prefix("token: "))
        .unwrap_or_else(|| panic!("{said}"))
        .to_owned();
    let id: i64 = said
        .lines()
        .find_map(|line| line.strip_prefix("created enrolment token "))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    for name in ["cli-one", "cli-two"] {
        assert_eq!(register_with(&server, name, Some(&cli_secret)).await.0, 200);
    }
    let revoke = |id: i64| {
        let (server, admin) = (&server, &admin);
        async move {
            server
                .http
                .delete(server.url(&format!("/api/v1/enrollment-tokens/{id}")))
                .bearer_auth(admin)
                .send()
                .await
                .expect("DELETE")
                .status()
                .as_u16()
        }
    };
    assert_eq!(revoke(id).await, 204);
    assert_eq!(revoke(id).await, 404);
    assert_eq!(
        register_with(&server, "cli-three", Some(&cli_secret))
            .await
            .0,
        403
    );
    let listed = cli(&database, &["enroll-token", "list"]);
    assert!(
        listed.contains("rack 4") && !listed.contains("fleet"),
        "{listed}"
    );

    // One that expires: valid for 0.3 s.
    let (_, short) =
        create_token_through_api(&server, &admin, json!({"valid_days": 0.3 / 86_400.0})).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let short = short["token"].as_str().unwrap();
    assert_eq!(
        register_with(&server, "late", Some(short)).await.0,
        403,
        "expired"
    );
    server.shutdown().await;
}
