//! The fault suite: the server binary under load from 16 good clients
//! while something goes wrong, on both stores, each fault in turn:
//!
//! - `kill -9` of the server, then a restart: every acknowledged sample is
//!   stored, none twice;
//! - SIGTERM: every request that was in flight gets an answer, and every
//!   acknowledged sample is stored;
//! - PostgreSQL stopped for 3 s and started again (PostgreSQL only): while
//!   it is down the server answers `503` with `Retry-After` and nothing
//!   else, it recovers without a restart, and nothing acknowledged is lost;
//! - a hostile client beside the good ones, sending values that once
//!   failed everyone's commits (1e308, a NUL in a mount point), malformed
//!   and oversized bodies: every hostile request gets a 4xx, no good one
//!   fails.
//!
//! Each fault prints one row of the table in docs/security.md (run with
//! `--nocapture` to see them) and writes it under the target directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sysmon_testkit::{Backend, ServerProcess, TestDatabase};
use tokio::task::JoinSet;

sysmon_testkit::on_both_stores!(faults_under_load);

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");
const GOOD_CLIENTS: usize = 16;
const PASSWORD: &str = "fault-password";

/// What happened to one request.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    ended: Instant,
    /// The HTTP status, or `None` when no answer came (refused, reset).
    status: Option<u16>,
    retry_after: bool,
}

/// One good client: its token, the sample times it had acknowledged, and
/// every request's outcome.
#[derive(Default)]
struct Record {
    acked: Vec<i64>,
    outcomes: Vec<Outcome>,
}

/// 16 clients pushing single samples as fast as they are answered, to
/// whichever address the server has now (it changes on a restart).
struct Fleet {
    base: Arc<RwLock<String>>,
    tokens: Vec<String>,
    records: Vec<Arc<Mutex<Record>>>,
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Fleet {
    async fn register(base: &str, prefix: &str, count: usize) -> Vec<String> {
        let http = reqwest::Client::new();
        let mut tokens = Vec::new();
        for client in 0..count {
            let body: Value = http
                .post(format!("{base}/client"))
                .json(&json!({"username": format!("{prefix}{client}"), "pass": PASSWORD}))
                .send()
                .await
                .expect("register")
                .json()
                .await
                .expect("registration JSON");
            tokens.push(body["client_id"].as_str().expect("a token").to_owned());
        }
        tokens
    }

    /// Starts pushing; sample times start at `first_time` (unix µs) and
    /// step 1 ms, so each run of a fault has times of its own.
    fn start(base: &str, tokens: Vec<String>, first_time_us: i64) -> Fleet {
        let base = Arc::new(RwLock::new(base.to_owned()));
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("HTTP client");
        let mut tasks = JoinSet::new();
        let mut records = Vec::new();
        for (client, token) in tokens.iter().enumerate() {
            let record = Arc::new(Mutex::new(Record::default()));
            records.push(record.clone());
            let (base, stop, http, token) =
                (base.clone(), stop.clone(), http.clone(), token.clone());
            tasks.spawn(async move {
                let mut time_us = first_time_us;
                while !stop.load(Ordering::Relaxed) {
                    time_us += 1_000;
                    let url = format!("{}/api/v1/samples", base.read().unwrap());
                    let sample = json!([{"time": time_us as f64 / 1e6, "cpu_load": client as f64,
                        "filesystems": [{"mount_point": "/", "used_bytes": 1, "total_bytes": 2}]}]);
                    let started = Instant::now();
                    let answer = http
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&sample)
                        .send()
                        .await;
                    let outcome = match answer {
                        Ok(response) => Outcome {
                            started,
                            ended: Instant::now(),
                            status: Some(response.status().as_u16()),
                            retry_after: response.headers().contains_key("retry-after"),
                        },
                        Err(_) => Outcome {
                            started,
                            ended: Instant::now(),
                            status: None,
                            retry_after: false,
                        },
                    };
                    let failed = outcome.status != Some(200);
                    {
                        let mut record = record.lock().unwrap();
                        if !failed {
                            record.acked.push(time_us);
                        }
                        record.outcomes.push(outcome);
                    }
                    if failed {
                        // A server that is down or busy is not hammered.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        }
        Fleet {
            base,
            tokens,
            records,
            stop,
            tasks,
        }
    }

    fn point_at(&self, base: &str) {
        *self.base.write().unwrap() = base.to_owned();
    }

    async fn stop(mut self) -> (Vec<String>, Vec<Record>) {
        self.stop.store(true, Ordering::Relaxed);
        while self.tasks.join_next().await.is_some() {}
        let records = self
            .records
            .into_iter()
            .map(|record| std::mem::take(&mut *record.lock().unwrap()))
            .collect();
        (self.tokens, records)
    }
}

/// Every sample time stored for a token's client, page after page.
async fn stored_times(base: &str, token: &str) -> Vec<i64> {
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    let mut from = String::new();
    loop {
        let page: Value = http
            .get(format!("{base}/api/v1/samples?limit=10000{from}"))
            .bearer_auth(token)
            .send()
            .await
            .expect("read back")
            .json()
            .await
            .expect("read-back JSON");
        for sample in page["samples"].as_array().expect("samples") {
            times.push((sample["time"].as_f64().expect("time") * 1e6).round() as i64);
        }
        match page["next_from"].as_f64() {
            Some(next) => from = format!("&from={next}"),
            None => return times,
        }
    }
}

/// Acknowledged samples missing, and samples read back twice.
async fn lost_and_doubled(base: &str, tokens: &[String], records: &[Record]) -> (usize, usize) {
    let (mut missing, mut doubled) = (0, 0);
    for (token, record) in tokens.iter().zip(records) {
        let mut stored = stored_times(base, token).await;
        let read = stored.len();
        stored.sort_unstable();
        stored.dedup();
        doubled += read - stored.len();
        missing += record
            .acked
            .iter()
            .filter(|time| stored.binary_search(time).is_err())
            .count();
    }
    (missing, doubled)
}

/// Requests and acknowledgements over all clients.
fn totals(records: &[Record]) -> (usize, usize) {
    let requests = records.iter().map(|record| record.outcomes.len()).sum();
    let acked = records.iter().map(|record| record.acked.len()).sum();
    (requests, acked)
}

/// A row of the results table, printed and kept under the target
/// directory.
fn report(
    store: &str,
    fault: &str,
    records: &[Record],
    missing: usize,
    doubled: usize,
    notes: &str,
) {
    let (requests, acked) = totals(records);
    let row =
        format!("| {store} | {fault} | {requests} | {acked} | {missing} | {doubled} | {notes} |");
    println!("{row}");
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fault-suite-{store}.md"));
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    text.push_str(&row);
    text.push('\n');
    let _ = std::fs::write(path, text);
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

async fn faults_under_load(database: TestDatabase) {
    let store = match database.backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    };
    let path =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fault-suite-{store}.md"));
    let _ = std::fs::remove_file(path);
    let mut server = ServerProcess::start(BINARY, &database, &[]).await;
    let tokens = Fleet::register(&server.base(), "good", GOOD_CLIENTS).await;

    // kill -9 under load, then a restart.
    let fleet = Fleet::start(&server.base(), tokens, now_us() - 3_600_000_000);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill().await;
    server = ServerProcess::start(BINARY, &database, &[]).await;
    fleet.point_at(&server.base());
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let (tokens, records) = fleet.stop().await;
    let (missing, doubled) = lost_and_doubled(&server.base(), &tokens, &records).await;
    report(
        store,
        "kill -9 under load, restart",
        &records,
        missing,
        doubled,
        "",
    );
    assert_eq!((missing, doubled), (0, 0), "kill -9");
    assert!(totals(&records).1 > 100, "the load ran");

    // SIGTERM under load: requests in flight are answered.
    let fleet = Fleet::start(&server.base(), tokens, now_us() - 3_000_000_000);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let signalled = Instant::now();
    server.signal("-TERM").await;
    let status = server.wait().await;
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
    let (tokens, records) = fleet.stop().await;
    // A request sent just as the listener closed may be refused unsent;
    // one started 50 ms before the signal was in flight and must be
    // answered.
    let unanswered = records
        .iter()
        .flat_map(|record| &record.outcomes)
        .filter(|outcome| {
            outcome.status.is_none() && outcome.started + Duration::from_millis(50) < signalled
        })
        .count();
    server = ServerProcess::start(BINARY, &database, &[]).await;
    let (missing, doubled) = lost_and_doubled(&server.base(), &tokens, &records).await;
    report(
        store,
        "SIGTERM under load",
        &records,
        missing,
        doubled,
        &format!("{unanswered} requests in flight unanswered"),
    );
    assert_eq!((missing, doubled, unanswered), (0, 0, 0), "SIGTERM");

    let tokens = match database.backend {
        // A restart shorter than the writers' wait for a connection (10 s)
        // costs clients only time; a longer outage, 503s.
        Backend::Postgres => {
            let tokens = postgres_outage(&server, tokens, store, Duration::from_secs(3)).await;
            postgres_outage(&server, tokens, store, Duration::from_secs(12)).await
        }
        Backend::Sqlite => tokens,
    };

    // A hostile client beside the good ones.
    let hostile_token = Fleet::register(&server.base(), "hostile", 1)
        .await
        .remove(0);
    let fleet = Fleet::start(&server.base(), tokens, now_us() - 2_000_000_000);
    let hostile = hostile_requests(&server.base(), &hostile_token).await;
    let (tokens, records) = fleet.stop().await;
    let (missing, doubled) = lost_and_doubled(&server.base(), &tokens, &records).await;
    let good_failures = records
        .iter()
        .flat_map(|record| &record.outcomes)
        .filter(|outcome| outcome.status != Some(200))
        .count();
    let not_4xx: Vec<&(String, u16)> = hostile
        .iter()
        .filter(|(_, status)| !(400..500).contains(status))
        .collect();
    report(
        store,
        "hostile client beside 16 good ones",
        &records,
        missing,
        doubled,
        &format!(
            "{good_failures} good requests failed; {} hostile requests, {} not answered 4xx",
            hostile.len(),
            not_4xx.len()
        ),
    );
    assert_eq!(good_failures, 0, "good clients unaffected");
    assert!(
        not_4xx.is_empty(),
        "every hostile request gets a 4xx: {not_4xx:?}"
    );
    assert_eq!((missing, doubled), (0, 0), "hostile");
    server.kill().await;
}

/// PostgreSQL stopped under load for `outage` and started again: the
/// server answers a request it cannot store with 503 and Retry-After and
/// nothing else, and recovers by itself.
async fn postgres_outage(
    server: &ServerProcess,
    tokens: Vec<String>,
    store: &str,
    outage: Duration,
) -> Vec<String> {
    let fleet = Fleet::start(&server.base(), tokens, now_us() - 2_500_000_000);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    postgres_cluster("stop");
    let down = StartedAgainOnDrop(true);
    let stopped = Instant::now();
    tokio::time::sleep(outage).await;
    let restarting = Instant::now();
    down.start_now();
    let started = Instant::now();
    // Load until the server has acknowledged samples again for a while.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (tokens, records) = fleet.stop().await;
    let outcomes: Vec<&Outcome> = records.iter().flat_map(|record| &record.outcomes).collect();
    // Requests in flight at any time while it was down.
    let during: Vec<&&Outcome> = outcomes
        .iter()
        .filter(|outcome| outcome.started < restarting && outcome.ended > stopped)
        .collect();
    let unavailable = during
        .iter()
        .filter(|outcome| outcome.status == Some(503))
        .count();
    let wrong: Vec<&&&Outcome> = during
        .iter()
        .filter(|outcome| {
            !matches!(outcome.status, Some(200 | 503))
                || (outcome.status == Some(503) && !outcome.retry_after)
        })
        .collect();
    let recovered_after = outcomes
        .iter()
        .filter(|outcome| outcome.started > started && outcome.status == Some(200))
        .map(|outcome| outcome.started - started)
        .min();
    let mut by_status: HashMap<Option<u16>, usize> = HashMap::new();
    for outcome in &during {
        *by_status.entry(outcome.status).or_default() += 1;
    }
    let (missing, doubled) = lost_and_doubled(&server.base(), &tokens, &records).await;
    report(
        store,
        &format!("PostgreSQL stopped {} s under load", outage.as_secs()),
        &records,
        missing,
        doubled,
        &format!(
            "{} requests in flight during the outage: {} held and acknowledged once it was back, {unavailable} answered 503 + Retry-After, {} anything else; first ack {:.1} s after PostgreSQL was back",
            during.len(),
            during.iter().filter(|outcome| outcome.status == Some(200)).count(),
            wrong.len(),
            recovered_after.map_or(f64::NAN, |after| after.as_secs_f64())
        ),
    );
    assert!(!during.is_empty(), "the outage was seen: {by_status:?}");
    if outage > Duration::from_secs(10) {
        assert!(
            unavailable > 0,
            "past the writers' wait, 503s: {by_status:?}"
        );
    }
    assert!(
        wrong.is_empty(),
        "only 503 with Retry-After during the outage: {by_status:?}"
    );
    assert!(recovered_after.is_some(), "recovered without a restart");
    assert_eq!((missing, doubled), (0, 0), "PostgreSQL restart");
    tokens
}

/// Starts PostgreSQL again if the test fails while it is stopped, so the
/// test binaries after this one find it running.
struct StartedAgainOnDrop(bool);

impl StartedAgainOnDrop {
    fn start_now(mut self) {
        self.0 = false;
        postgres_cluster("start");
    }
}

impl Drop for StartedAgainOnDrop {
    fn drop(&mut self) {
        if self.0 {
            postgres_cluster("start");
        }
    }
}

/// `pg_ctlcluster VERSION main stop|start` for the machine's cluster, as
/// `.ci/run` starts it.
fn postgres_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster (/etc/postgresql) to stop and start")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .max()
        .expect("a PostgreSQL version");
    let mut command = std::process::Command::new("pg_ctlcluster");
    command.args(["--skip-systemctl-redirect", &version, "main", action]);
    if action == "stop" {
        command.args(["-m", "fast"]);
    }
    let status = command.status().expect("pg_ctlcluster runs");
    assert!(status.success(), "pg_ctlcluster {action}: {status:?}");
    if action == "start" {
        for _ in 0..100 {
            let ready = std::process::Command::new("pg_isready")
                .args(["-h", "127.0.0.1", "-p", "5432", "-q"])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("PostgreSQL did not come back");
    }
}

/// How many requests to `POST /api/v1/samples` the server has answered
/// 413, by its `/metrics`.
async fn answered_413(http: &reqwest::Client, base: &str) -> u64 {
    let text = match http.get(format!("{base}/metrics")).send().await {
        Ok(response) => response.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .find(|line| {
            line.starts_with(
                r#"sysmon_http_requests_total{route="/api/v1/samples",method="POST",status="413"}"#,
            )
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|count| count.parse::<f64>().ok())
        .map_or(0, |count| count as u64)
}

/// Requests a hostile client sends while the good ones push: each with
/// its status.
async fn hostile_requests(base: &str, token: &str) -> Vec<(String, u16)> {
    // A connection of its own per request: the server closes one after
    // refusing an oversized body, and a reused one would race that close.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("HTTP client");
    let time = now_us() as f64 / 1e6 - 1_000.0;
    let batches: Vec<(&str, String)> = vec![
        ("mem 1e308", json!([{"time": time, "mem": 1e308}]).to_string()),
        ("cpu_load 1e300", json!([{"time": time, "cpu_load": 1e300}]).to_string()),
        ("NUL in a mount point", json!([{"time": time, "filesystems": [{"mount_point": "/x\u{0}", "used_bytes": 1, "total_bytes": 2}]}]).to_string()),
        ("NaN as text", r#"[{"time": 1764000000, "cpu_load": "NaN"}]"#.to_owned()),
        ("negative size", json!([{"time": time, "memory_total_bytes": -5}]).to_string()),
        ("time 1e20", json!([{"time": 1e20, "cpu_load": 1.0}]).to_string()),
        ("not JSON", "[{\"time\": ".to_owned()),
        ("an object, not an array", json!({"time": time}).to_string()),
        ("10,001 samples", serde_json::to_string(&vec![json!({"time": time}); 10_001]).unwrap()),
        ("300 file systems", json!([{"time": time, "filesystems": (0..300).map(|i| json!({"mount_point": format!("/m{i}"), "used_bytes": 1, "total_bytes": 2})).collect::<Vec<_>>()}]).to_string()),
        ("17 MiB body", format!("[{}]", " ".repeat(17 * 1024 * 1024))),
    ];
    let mut statuses = Vec::new();
    for round in 0..3 {
        for (what, body) in &batches {
            let too_large_before = answered_413(&http, base).await;
            let mut status = http
                .post(format!("{base}/api/v1/samples"))
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(body.clone())
                .send()
                .await
                .map_or(0, |response| response.status().as_u16());
            // The server answers 413 once it has read 16 MiB and closes the
            // connection; the client, still writing the last MiB, may see
            // that close before the answer. The server's own count says
            // whether it answered 413.
            if status == 0 && answered_413(&http, base).await > too_large_before {
                status = 413;
            }
            statuses.push((format!("{what} (round {round})"), status));
        }
        // The original route too, with the value that overflowed sums.
        let status = http
            .post(format!("{base}/client/hostile0"))
            .header("Authorization", token)
            .form(&[("mem", "1e308"), ("cpu_load", "5")])
            .send()
            .await
            .map_or(0, |response| response.status().as_u16());
        statuses.push((format!("form mem=1e308 (round {round})"), status));
    }
    statuses
}
