//! The `sysmon-server` binary as an operator runs it: restarts, signals,
//! bad configuration, `--help`, and the status log across restarts.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Connection;
use sysmon_testkit::{Backend, ServerProcess, TestDatabase, TestServer};
use tokio::process::Command;

sysmon_testkit::on_both_stores!(
    acknowledged_samples_survive_sigkill,
    sigterm_stores_every_acknowledged_sample,
    sigterm_turns_not_ready_while_it_still_serves
);

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");

async fn start(database: &TestDatabase) -> ServerProcess {
    ServerProcess::start(BINARY, database, &[]).await
}

fn client_of(server: &ServerProcess) -> Client {
    Client {
        base: server.base(),
        http: reqwest::Client::new(),
    }
}

#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    async fn register(&self, username: &str) -> String {
        let body: serde_json::Value = self
            .http
            .post(format!("{}/client", self.base))
            .json(&serde_json::json!({"username": username, "pass": "pw-secret1"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["client_id"].as_str().unwrap().to_owned()
    }

    /// True when the server acknowledged (202) the sample.
    async fn push(&self, username: &str, token: &str, time: i64) -> bool {
        let response = self
            .http
            .post(format!("{}/client/{username}", self.base))
            .header("Authorization", token)
            .form(&[("time", time.to_string()), ("cpu_load", "1".to_owned())])
            .send()
            .await;
        matches!(response, Ok(response) if response.status() == 202)
    }

    async fn stored_times(&self, username: &str, token: &str) -> Vec<i64> {
        let body: serde_json::Value = self
            .http
            .get(format!("{}/client/{username}/time/report", self.base))
            .header("Authorization", token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row["unix_time"].as_i64().unwrap())
            .collect()
    }
}

async fn acknowledged_samples_survive_sigkill(database: TestDatabase) {
    let server = start(&database).await;
    let client = client_of(&server);
    let token = client.register("wood").await;
    let mut pushes = tokio::task::JoinSet::new();
    for time in 1_700_000_000..1_700_000_200 {
        let (client, token) = (client.clone(), token.clone());
        pushes.spawn(async move { assert!(client.push("wood", &token, time).await) });
    }
    while let Some(outcome) = pushes.join_next().await {
        outcome.unwrap();
    }
    server.kill().await;
    if database.backend == Backend::Sqlite {
        // Within the fold interval: the kill found them still in the hot
        // table, where they must survive too.
        assert!(hot_samples(&database).await > 0, "samples were hot");
    }

    let server = start(&database).await;
    let times = client_of(&server).stored_times("wood", &token).await;
    assert_eq!(times, (1_700_000_000..1_700_000_200).collect::<Vec<_>>());
}

/// Samples in SQLite's hot table, not yet moved into `samples`.
async fn hot_samples(database: &TestDatabase) -> i64 {
    let mut connection = sqlx::SqliteConnection::connect(&database.url)
        .await
        .expect("open the SQLite file");
    sqlx::query_scalar("SELECT COUNT(*) FROM hot_samples")
        .fetch_one(&mut connection)
        .await
        .expect("count hot samples")
}

async fn sigterm_stores_every_acknowledged_sample(database: TestDatabase) {
    let mut server = start(&database).await;
    let client = client_of(&server);
    let token = client.register("wood").await;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let mut pushers = tokio::task::JoinSet::new();
    for worker in 0..16i64 {
        let (client, token, acknowledged) = (client.clone(), token.clone(), acknowledged.clone());
        pushers.spawn(async move {
            for n in 0..100_000i64 {
                let time = 1_700_000_000 + worker * 100_000 + n;
                if client.push("wood", &token, time).await {
                    acknowledged.lock().unwrap().push(time);
                } else {
                    return;
                }
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    server.signal("-TERM").await;
    let status = server.wait().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    while let Some(outcome) = pushers.join_next().await {
        outcome.unwrap();
    }
    let log = server.log_text();
    assert!(log.contains("shutting down"), "{log}");
    if database.backend == Backend::Sqlite {
        assert_eq!(hot_samples(&database).await, 0, "the last fold moved them");
    }

    let mut acknowledged = acknowledged.lock().unwrap().clone();
    acknowledged.sort_unstable();
    assert!(
        acknowledged.len() > 16,
        "the load ran: {}",
        acknowledged.len()
    );
    let server = start(&database).await;
    let stored = client_of(&server).stored_times("wood", &token).await;
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|time| stored.binary_search(time).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged samples lost: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

/// Runs the binary with `args`, expecting it to refuse to start.
async fn refused_start(args: &[&str]) -> String {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(BINARY)
            .args(args)
            .env("RUST_LOG", "info")
            .output(),
    )
    .await
    .expect("exits within 30 s")
    .unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = text.lines().filter(|line| line.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one clear line: {text}");
    errors[0].to_owned()
}

#[tokio::test]
async fn bad_configuration_exits_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let status_log = dir.path().join("load.csv");
    let status_log = status_log.to_str().unwrap();
    let line = refused_start(&[
        "--database-url",
        "mysql://localhost/x",
        "--status-log",
        status_log,
    ])
    .await;
    assert!(line.contains("database URL"), "{line}");

    let config = dir.path().join("sysmon.yaml");
    std::fs::write(&config, "bind: 127.0.0.1:0\ndatabse_url: sqlite://x.db\n").unwrap();
    let line = refused_start(&["--config", config.to_str().unwrap()]).await;
    assert!(line.contains("databse_url"), "{line}");

    let line = refused_start(&["--config", "/no/such/sysmon.yaml"]).await;
    assert!(line.contains("/no/such/sysmon.yaml"), "{line}");

    let line = refused_start(&[
        "--bind",
        "127.0.0.1:0",
        "--status-log",
        status_log,
        "--database-url",
        "postgres://nobody@127.0.0.1:1/none",
    ])
    .await;
    assert!(line.contains("cannot connect to PostgreSQL"), "{line}");

    let sqlite = format!("sqlite://{}/sysmon.db", dir.path().display());
    let line = refused_start(&[
        "--bind",
        "127.0.0.1:0",
        "--database-url",
        &sqlite,
        "--status-log",
        "/no/such/dir/load.csv",
    ])
    .await;
    assert!(line.contains("status log"), "{line}");

    let line = refused_start(&["--bind", "nonsense", "--database-url", &sqlite]).await;
    assert!(line.contains("HOST:PORT"), "{line}");
}

#[tokio::test]
async fn help_documents_every_option() {
    let output = Command::new(BINARY).arg("--help").output().await.unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "--config",
        "--bind",
        "--database-url",
        "--status-log",
        "--log-format",
        "SYSMON_BIND",
        "DATABASE_URL",
        "APP_PORT",
        "DB_HOST",
        "sqlite://sysmon.db",
        "127.0.0.1:5000",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
}

#[tokio::test]
async fn status_log_appends_rows_with_one_header_across_restarts() {
    let database = TestDatabase::sqlite().await;
    for _ in 0..2 {
        let server = TestServer::start(database.config()).await;
        tokio::time::sleep(Duration::from_millis(2300)).await;
        server.shutdown().await;
    }
    let text = std::fs::read_to_string(database.status_log_path()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "time;cpu load;memory load;storage");
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.starts_with("time;"))
            .count(),
        1,
        "{text}"
    );
    assert!(lines.len() > 3, "a header and about a row a second: {text}");
    for row in &lines[1..] {
        let fields: Vec<&str> = row.split(';').collect();
        assert_eq!(fields.len(), 4, "{row}");
        chrono::NaiveTime::parse_from_str(fields[0].split(' ').next_back().unwrap(), "%H:%M:%S")
            .expect(row);
        let cpu: f64 = fields[1].parse().expect(row);
        assert!((0.0..=100.0).contains(&cpu), "{row}");
        assert!(
            fields[2].parse::<u64>().expect(row) > 0,
            "memory used in MB: {row}"
        );
        fields[3].parse::<u64>().expect(row);
    }
}

/// The generated password of the first dashboard user goes to a file only
/// the server's user can read, never to the log.
#[tokio::test]
async fn the_first_admin_password_is_in_a_private_file_not_the_log() {
    use std::os::unix::fs::PermissionsExt;

    let database = TestDatabase::sqlite().await;
    let server = start(&database).await;
    let file = database
        .status_log_path()
        .parent()
        .expect("the status log's directory")
        .join(sysmon_server::startup::FIRST_PASSWORD_FILE);
    let password = std::fs::read_to_string(&file).expect("the password file");
    let password = password.trim();
    assert!(password.len() >= 8, "{password:?}");
    let mode = std::fs::metadata(&file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let log = server.log_text();
    assert!(
        !log.contains(password),
        "the password is in the log:\n{log}"
    );
    assert!(
        log.contains(sysmon_server::startup::FIRST_PASSWORD_FILE),
        "the log names the file:\n{log}"
    );
    let login = reqwest::Client::new()
        .post(format!("{}/api/v1/session", server.base()))
        .json(&serde_json::json!({"username": "admin", "password": password}))
        .send()
        .await
        .expect("POST /api/v1/session");
    assert_eq!(login.status().as_u16(), 200);
    server.kill().await;
}

/// What a load balancer sees of a rolling restart: ready, then on SIGTERM
/// `/readyz` fails at once while samples are still taken for
/// `shutdown_drain_seconds`, then the server stops.
async fn sigterm_turns_not_ready_while_it_still_serves(database: TestDatabase) {
    let config = sysmon_testkit::process::config_file(
        &database,
        "drain.yaml",
        "shutdown_drain_seconds: 2\n",
    );
    let mut server = ServerProcess::start(BINARY, &database, &["--config", config.as_str()]).await;
    let client = client_of(&server);
    let token = client.register("drainer").await;
    let get = |path: &'static str| {
        let client = client.clone();
        async move {
            let response = client
                .http
                .get(format!("{}{path}", client.base))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, body) = get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ready"], true);
    assert_eq!(body["database"], true);
    assert_eq!(body["writers"], true);
    assert_eq!(
        get("/healthz").await,
        (200, serde_json::json!({"status": "up"}))
    );

    let signalled = std::time::Instant::now();
    server.signal("-TERM").await;
    // The signal is handled a moment later (on a loaded machine, some
    // milliseconds): asked until it answers 503, well within the drain.
    let (status, body) = loop {
        let (status, body) = get("/readyz").await;
        if status == 503 || signalled.elapsed() > Duration::from_millis(1_000) {
            break (status, body);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["draining"], true);
    assert_eq!(body["reason"], "shutting down");
    assert!(
        client.push("drainer", &token, 1_700_000_000).await,
        "samples are still taken while draining"
    );
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "checked within the drain"
    );
    assert!(server.wait().await.success(), "clean exit after the drain");
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "connections stayed open for the drain"
    );
    let restarted = start(&database).await;
    let client = client_of(&restarted);
    assert_eq!(
        client.stored_times("drainer", &token).await,
        [1_700_000_000]
    );
    restarted.kill().await;
}
