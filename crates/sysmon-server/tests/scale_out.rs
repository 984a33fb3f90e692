//! Several sysmon servers behind a load balancer on one PostgreSQL
//! database, as docs/scaling.md deploys them: Debian's HAProxy in front of
//! three servers on 127.0.0.2-4, checking `/readyz`. Clients push through
//! HAProxy over the original HTTP route, v1 batches and the original
//! WebSocket while one server is killed with SIGKILL and restarted, and
//! then while all three restart in turn (SIGTERM, drain, start). Every
//! sample a client saw acknowledged is stored, once; during the rolling
//! restart no request is answered with anything but success or 503.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sysmon_testkit::process::{config_file, register_client};
use sysmon_testkit::receiver::Receiver;
use sysmon_testkit::{
    outside_program, poll, unix_now, Backend, ServerProcess, TestDatabase, TestServer,
};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");
const PASSWORD: &str = "scale-out-password";

/// The configuration of one of several in-process servers on the
/// database: its own status log, `NAME.csv`.
fn config_of(database: &TestDatabase, name: &str) -> sysmon_server::Config {
    let mut config = database.config();
    config.status_log.path = database.path(&format!("{name}.csv"));
    config
}

/// `rules` (YAML), notifying the test's receiver at `/hook` (channel
/// `hook`), checked every 200 ms.
fn with_alerts(
    mut config: sysmon_server::Config,
    rules: &str,
    receiver: &Receiver,
) -> sysmon_server::Config {
    config.alerts.rules = serde_norway::from_str(rules).expect("rules");
    config.alerts.channels = serde_norway::from_str(&format!(
        "- {{name: hook, kind: webhook, url: '{}'}}",
        receiver.url("/hook")
    ))
    .expect("channel");
    config.alerts.evaluation_interval = Duration::from_millis(200);
    config
}

/// Notifications the receiver got at `/hook` in `state`.
fn notified(receiver: &Receiver, state: &str) -> usize {
    receiver
        .received("/hook")
        .iter()
        .filter(|request| request.json()["state"] == state)
        .count()
}

/// A free port on `ip`, as `ip:port`.
fn free_address(ip: &str) -> String {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("a free port");
    listener.local_addr().expect("bound address").to_string()
}

/// One of the servers: where HAProxy expects it, and its process.
struct Backend3 {
    bind: String,
    status_log: std::path::PathBuf,
    process: Option<ServerProcess>,
}

impl Backend3 {
    async fn start(&mut self, database: &TestDatabase, config: &str) {
        let process = ServerProcess::start_at(
            BINARY,
            database,
            &self.bind,
            &self.status_log,
            &["--config", config],
        )
        .await;
        self.process = Some(process);
    }
}

/// What the pushers saw, shared with the test.
#[derive(Default)]
struct Outcomes {
    /// (user, time) of every acknowledged sample.
    acknowledged: Mutex<Vec<(String, i64)>>,
    /// Answers other than success or 503 while `strict` was set.
    strict_failures: Mutex<Vec<String>>,
    /// Answers and transport errors of any kind, for the log.
    failures: Mutex<Vec<String>>,
}

struct Push {
    front: String,
    http: reqwest::Client,
    outcomes: Arc<Outcomes>,
    strict: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Push {
    fn failed(&self, what: String) {
        if self.strict.load(Ordering::SeqCst) {
            self.outcomes
                .strict_failures
                .lock()
                .unwrap()
                .push(what.clone());
        }
        self.outcomes.failures.lock().unwrap().push(what);
    }

    /// Records the samples `times` of `user` if the answer acknowledged
    /// them (`expected`); a 503 or a failure waits a little before the
    /// caller sends them again.
    async fn acknowledged(
        &self,
        sent: reqwest::Result<reqwest::Response>,
        expected: u16,
        user: &str,
        times: std::ops::Range<i64>,
    ) -> bool {
        match sent {
            Ok(response) if response.status() == expected => {
                let mut acknowledged = self.outcomes.acknowledged.lock().unwrap();
                acknowledged.extend(times.map(|time| (user.to_owned(), time)));
                return true;
            }
            Ok(response) if response.status() == 503 => {}
            Ok(response) => self.failed(format!("{user}: {}", response.status())),
            Err(error) => self.failed(format!("{user}: {error}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        false
    }

    /// One sample a request on the original route; a sample not
    /// acknowledged is sent again (same time) until it is.
    async fn form(self: Arc<Self>, user: String, token: String, first: i64) {
        let mut time = first;
        while !self.stop.load(Ordering::SeqCst) {
            let sent = self
                .http
                .post(format!("{}/client/{user}", self.front))
                .header("Authorization", &token)
                .form(&[("time", time.to_string()), ("cpu_load", "7".into())])
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if self.acknowledged(sent, 202, &user, time..time + 1).await {
                time += 1;
            }
        }
    }

    /// Batches of 20 through the v1 API.
    async fn batches(self: Arc<Self>, user: String, token: String, first: i64) {
        let mut time = first;
        while !self.stop.load(Ordering::SeqCst) {
            let batch: Vec<Value> = (0..20)
                .map(|offset| json!({"time": time + offset, "cpu_load": 9}))
                .collect();
            let sent = self
                .http
                .post(format!("{}/api/v1/samples", self.front))
                .bearer_auth(&token)
                .json(&batch)
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            if self.acknowledged(sent, 200, &user, time..time + 20).await {
                time += 20;
            }
        }
    }

    /// The original WebSocket: one sample per message, each awaited; a
    /// broken socket is reopened and the unacknowledged sample sent again.
    async fn websocket(self: Arc<Self>, user: String, token: String, first: i64) {
        let url = format!("{}/echo", self.front.replacen("http://", "ws://", 1));
        let mut time = first;
        while !self.stop.load(Ordering::SeqCst) {
            let Ok(Ok((mut socket, _))) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_tungstenite::connect_async(url.as_str()),
            )
            .await
            else {
                self.failed(format!("ws {user}: no connection"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let mut hello = true;
            while !self.stop.load(Ordering::SeqCst) {
                let message = match hello {
                    true => json!({"type": "HELLO"}),
                    false => json!({"type": "CLIENT_DATA", "client_id": token, "interval": 1,
                                    "data": {"time": time, "cpu_load": 11}}),
                };
                if socket
                    .send(Message::text(message.to_string()))
                    .await
                    .is_err()
                {
                    break;
                }
                let reply = tokio::time::timeout(Duration::from_secs(10), socket.next()).await;
                let reply: Value = match reply {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        serde_json::from_str(text.as_str()).unwrap_or(Value::Null)
                    }
                    _ => break, // closed (a shutdown says 1001) or broken: reconnect
                };
                match reply["type"].as_str() {
                    Some("WELCOME") => hello = false,
                    Some("DATA_RETURN") => {
                        self.outcomes
                            .acknowledged
                            .lock()
                            .unwrap()
                            .push((user.clone(), time));
                        time += 1;
                    }
                    _ if reply.to_string().contains("overloaded")
                        || reply.to_string().contains("shutting_down") =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    _ => {
                        self.failed(format!("ws {user}: {reply}"));
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
}

/// The deployment's own HAProxy configuration (deploy/haproxy.cfg, which
/// docker-compose.scale.yml mounts), with this test's front address and
/// servers in place of its `bind` and `server` lines.
fn haproxy_config(front: &str, backends: &[Backend3]) -> String {
    const DEPLOYED: &str = include_str!("../../../deploy/haproxy.cfg");
    let mut config = String::new();
    let mut servers_written = false;
    for line in DEPLOYED.lines() {
        let setting = line.trim_start();
        if setting.starts_with("bind ") {
            config.push_str(&format!("  bind {front}\n"));
        } else if setting.starts_with("server ") {
            if !std::mem::replace(&mut servers_written, true) {
                for (index, backend) in backends.iter().enumerate() {
                    config.push_str(&format!("  server s{} {} check\n", index + 1, backend.bind));
                }
            }
        } else {
            config.push_str(line);
            config.push('\n');
        }
    }
    assert!(servers_written, "deploy/haproxy.cfg names no server");
    config
}

/// Waits until a server answers `/readyz` with 200 itself.
async fn until_ready(http: &reqwest::Client, bind: &str) {
    poll(
        "a restarted server ready",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            match http.get(format!("http://{bind}/readyz")).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                Ok(response) => Err(response.status().to_string()),
                Err(error) => Err(error.to_string()),
            }
        },
    )
    .await
}

/// Every time a user has stored, through any server.
async fn stored_times(http: &reqwest::Client, front: &str, user: &str, token: &str) -> Vec<i64> {
    let body: Value = http
        .get(format!("{front}/client/{user}/time/report"))
        .header("Authorization", token)
        .send()
        .await
        .expect("report")
        .json()
        .await
        .expect("report body");
    let text = body.to_string();
    body["payload"]
        .as_array()
        .unwrap_or_else(|| panic!("report of {user}: {}", &text[..text.len().min(300)]))
        .iter()
        .map(|row| row["unix_time"].as_f64().expect("a time") as i64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_servers_behind_haproxy_lose_nothing() {
    let Some(haproxy) = outside_program("haproxy", "apt-get install haproxy") else {
        return;
    };
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let config = config_file(
        &database,
        "scale.yaml",
        "shutdown_drain_seconds: 1.5\nshutdown_grace_seconds: 10\n",
    );
    let mut backends: Vec<Backend3> = (2..=4)
        .map(|host| Backend3 {
            bind: free_address(&format!("127.0.0.{host}")),
            status_log: database.path(&format!("status-{host}.csv")),
            process: None,
        })
        .collect();
    // Started one after another: the first migrates, the others find the
    // schema current (several starting together:
    // `three_servers_starting_together_migrate_once`).
    for backend in &mut backends {
        backend.start(&database, &config).await;
    }
    let front = free_address("127.0.0.1");
    let haproxy_file = database.path("haproxy.cfg");
    std::fs::write(&haproxy_file, haproxy_config(&front, &backends)).expect("haproxy.cfg");
    let _haproxy = tokio::process::Command::new(&haproxy)
        .arg("-db")
        .arg("-f")
        .arg(&haproxy_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(database.path("haproxy.log")).expect("log"))
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let front = format!("http://{front}");
    let http = reqwest::Client::new();
    poll(
        "HAProxy forwarding to ready servers",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || async {
            match http.get(format!("{front}/readyz")).send().await {
                Ok(response) if response.status() == 200 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;

    let mut users = Vec::new();
    for index in 0..9 {
        let user = format!("scale-{index}");
        let token = register_client(&http, &front, &user, PASSWORD).await;
        users.push((user, token));
    }
    let outcomes = Arc::new(Outcomes::default());
    let strict = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let push = Arc::new(Push {
        front: front.clone(),
        http: reqwest::Client::new(),
        outcomes: outcomes.clone(),
        strict: strict.clone(),
        stop: stop.clone(),
    });
    let first = 1_700_000_000;
    let mut pushers = JoinSet::new();
    for (index, (user, token)) in users.iter().cloned().enumerate() {
        let push = push.clone();
        match index % 3 {
            0 => pushers.spawn(push.form(user, token, first)),
            1 => pushers.spawn(push.batches(user, token, first)),
            _ => pushers.spawn(push.websocket(user, token, first)),
        };
    }

    // SIGKILL one server under load, restart it where HAProxy expects it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let killed = backends[1].process.take().expect("running");
    killed.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    backends[1].start(&database, &config).await;
    until_ready(&http, &backends[1].bind).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kill = outcomes.acknowledged.lock().unwrap().len();

    // Rolling restart: each server drains (its /readyz fails, HAProxy
    // moves away), stops, starts again; clients see success or 503 only.
    strict.store(true, Ordering::SeqCst);
    for backend in &mut backends {
        let mut process = backend.process.take().expect("running");
        process.signal("-TERM").await;
        assert!(process.wait().await.success(), "clean exit on SIGTERM");
        backend.start(&database, &config).await;
        until_ready(&http, &backend.bind).await;
        // HAProxy needs `rise` checks before it sends traffic again.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    strict.store(false, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    pushers.join_all().await;

    let acknowledged = outcomes.acknowledged.lock().unwrap().clone();
    assert!(
        after_kill > 100 && acknowledged.len() > after_kill + 100,
        "the load ran through both phases: {after_kill} then {}",
        acknowledged.len()
    );
    let strict_failures = outcomes.strict_failures.lock().unwrap().clone();
    assert!(
        strict_failures.is_empty(),
        "during the rolling restart: {strict_failures:?}"
    );
    for (user, token) in &users {
        let stored = stored_times(&http, &front, user, token).await;
        let unique: BTreeSet<i64> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "{user}: a time stored twice");
        let missing: Vec<i64> = acknowledged
            .iter()
            .filter(|(owner, time)| owner == user && !unique.contains(time))
            .map(|(_, time)| *time)
            .collect();
        assert!(
            missing.is_empty(),
            "{user}: acknowledged, not stored: {missing:?}"
        );
    }
    eprintln!(
        "{} samples acknowledged; transport failures seen (not during the rolling restart): {}",
        acknowledged.len(),
        outcomes.failures.lock().unwrap().len()
    );
}

/// A live chart open on one server gets a sample pushed through another
/// within a second (the commit is announced with NOTIFY and read back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_chart_on_one_server_sees_samples_pushed_through_another() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let watched = TestServer::start(database.config()).await;
    let pushed_through = TestServer::start(config_of(&database, "second-server")).await;
    let token = watched.register("live-host", "pw-secret1").await;

    let mut request = format!("ws://{}/api/v1/clients/live-host/live", watched.address)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let ready = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("READY within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(ready.to_text().unwrap(), r#"{"type":"READY"}"#);

    let time = unix_now() as i64;
    let pushed = std::time::Instant::now();
    pushed_through
        .post_samples(&token, &[json!({"time": time, "cpu_load": 33.5})])
        .await;
    let frame = tokio::time::timeout(Duration::from_secs(1), socket.next())
        .await
        .expect("the sample within a second of its acknowledgement")
        .unwrap()
        .unwrap();
    let sample: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(sample["type"], "SAMPLE", "{sample}");
    assert_eq!(sample["time"], time as f64, "{sample}");
    assert_eq!(sample["values"]["cpu_load"], 33.5, "{sample}");
    assert!(pushed.elapsed() < Duration::from_secs(1));
    watched.shutdown().await;
    pushed_through.shutdown().await;
}

/// Alert rules on two servers of one database: only the leader judges and
/// notifies; when it stops, the other takes over within seconds, from the
/// stored states, and notifies the recovery once (not the firing again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_notifies_and_another_takes_over() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let alerting = |name: &str| {
        with_alerts(
            config_of(&database, name),
            "- {name: cpu-hot, metric: cpu_load, over_seconds: 1, above: 90, for_seconds: 0, channels: [hook]}",
            &receiver,
        )
    };
    let first = TestServer::start(alerting("first")).await;
    let second = TestServer::start(alerting("second")).await;
    let token = first.register("hot-host", "pw-secret1").await;
    let notified = |state: &'static str| {
        let receiver = &receiver;
        move || notified(receiver, state)
    };
    // Hot, pushed through the server that does not lead: the leader hears
    // of it and notifies, once.
    for _ in 0..4 {
        push_cpu(&second, &token, 97.0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let firing = notified("firing");
    poll(
        "one firing notification",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match firing() {
                0 => Err("none yet".to_owned()),
                count => Ok(count),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(firing(), 1, "the second server did not notify too");
    // The follower shows what the leader decided (the transitions it
    // stored), judging nothing itself.
    poll(
        "the follower shows the alert firing",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || async {
            let active = second.get_json("/api/v1/alerts", &token).await;
            let firing = active["alerts"][0]["state"] == "firing"
                && active["alerts"][0]["host"] == "hot-host";
            firing.then_some(()).ok_or_else(|| active.to_string())
        },
    )
    .await;

    // The leader goes; the second takes over and notifies the recovery.
    first.shutdown().await;
    for _ in 0..12 {
        push_cpu(&second, &token, 10.0).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let resolved = notified("resolved");
    poll(
        "the recovery notified by the new leader",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match resolved() {
                0 => Err(format!("{} firing, no resolved yet", firing())),
                count => Ok(count),
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (firing(), resolved()),
        (1, 1),
        "each transition notified once"
    );
    second.shutdown().await;
}

async fn push_cpu(server: &TestServer, token: &str, cpu: f64) {
    let time = unix_now();
    server
        .post_samples(token, &[json!({"time": time, "cpu_load": cpu})])
        .await;
}

/// A push's status, whatever it is (a server may be gone: 0).
async fn push_status(http: &reqwest::Client, base: &str, token: &str, cpu: f64) -> u16 {
    http.post(format!("{base}/api/v1/samples"))
        .bearer_auth(token)
        .json(&json!([{"time": unix_now(), "cpu_load": cpu}]))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_or(0, |response| response.status().as_u16())
}

/// A token revoked through one server is refused by the two others within
/// a second: each reads the revocation epoch from the database every
/// second, and keeps no cached token past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_server_is_refused_by_the_others() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let server = |name: &str| {
        let mut config = config_of(&database, name);
        config.dashboard.initial_admin_password = Some(PASSWORD.into());
        TestServer::start(config)
    };
    let a = server("a").await;
    let (b, c) = (server("b").await, server("c").await);
    let token = a.register("revoked-everywhere", PASSWORD).await;
    for other in [&b, &c] {
        assert_eq!(
            push_status(&other.http, &other.base, &token, 1.0).await,
            200
        );
    }
    let admin = a.login("admin", PASSWORD).await;
    let revoked = a
        .http
        .post(a.url("/api/v1/clients/revoked-everywhere/revoke-tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("revoke")
        .status();
    assert_eq!(revoked, 200);
    let revoked_at = std::time::Instant::now();
    let refused_by = |other: &TestServer| {
        let (http, base, token) = (other.http.clone(), other.base.clone(), token.clone());
        async move {
            poll(
                "the revoked token refused by another server",
                Duration::from_secs(3),
                Duration::from_millis(50),
                || async {
                    match push_status(&http, &base, &token, 1.0).await {
                        401 => Ok(()),
                        status => Err(format!("status {status}")),
                    }
                },
            )
            .await
        }
    };
    tokio::join!(refused_by(&b), refused_by(&c));
    // Polled every 50 ms: a second and the polling's slack.
    assert!(
        revoked_at.elapsed() < Duration::from_millis(1_500),
        "refused by both after {:?}",
        revoked_at.elapsed()
    );
    for server in [a, b, c] {
        server.shutdown().await;
    }
}

/// Waits, at most `seconds`, until `holds` is true.
async fn until(what: &str, seconds: u64, holds: impl Fn() -> bool) {
    poll(
        what,
        Duration::from_secs(seconds),
        Duration::from_millis(100),
        || async { holds().then_some(()).ok_or_else(|| "not yet".to_owned()) },
    )
    .await;
}

/// Where a pusher sends, and what: switched by the test as servers die.
struct HotPusher {
    base: Mutex<String>,
    cpu: Mutex<f64>,
    stop: AtomicBool,
}

/// The leader killed with SIGKILL while an alert is pending, then the new
/// leader killed while it fires: the alert is notified firing once (by
/// whichever server judged it), never again by a server that took over,
/// and its recovery once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_while_an_alert_fires_notifies_it_once() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let config = config_file(
        &database,
        "alerts.yaml",
        &format!(
            "alerts:
  evaluation_interval_seconds: 0.2
  rules:
    - {{name: cpu-hot, metric: cpu_load, over_seconds: 1, above: 90, for_seconds: 4, channels: [hook]}}
  channels:
    - {{name: hook, kind: webhook, url: '{}'}}
",
            receiver.url("/hook")
        ),
    );
    let start = |name: &'static str| {
        let status_log = database.path(&format!("{name}.csv"));
        let config = config.clone();
        let database = &database;
        async move {
            ServerProcess::start_at(
                BINARY,
                database,
                "127.0.0.1:0",
                &status_log,
                &["--config", &config],
            )
            .await
        }
    };
    let leads = |server: &ServerProcess| server.log_text().contains("this server leads");
    let first = start("first").await;
    until("the first server leads", 10, || leads(&first)).await;
    let second = start("second").await;
    let http = reqwest::Client::new();
    let token = register_client(&http, &second.base(), "hot-host", PASSWORD).await;
    let notified = |state: &'static str| notified(&receiver, state);

    // Hot through the follower, every 200 ms, to whichever server lives.
    let pusher = Arc::new(HotPusher {
        base: Mutex::new(second.base()),
        cpu: Mutex::new(97.0),
        stop: AtomicBool::new(false),
    });
    let pushing = {
        let (pusher, http, token) = (pusher.clone(), http.clone(), token.clone());
        tokio::spawn(async move {
            while !pusher.stop.load(Ordering::SeqCst) {
                let base = pusher.base.lock().unwrap().clone();
                let cpu = *pusher.cpu.lock().unwrap();
                push_status(&http, &base, &token, cpu).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let alert_state = || async {
        let alerts = http
            .get(format!(
                "{}/api/v1/alerts",
                pusher.base.lock().unwrap().clone()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json::<Value>()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<String, String>(
            alerts["alerts"][0]["state"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    poll(
        "the leader put the alert pending",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match alert_state().await?.as_str() {
                "pending" => Ok(()),
                other => Err(format!("state {other:?}")),
            }
        },
    )
    .await;
    assert_eq!(notified("firing"), 0, "pending: for_seconds is 4");

    // The leader dies mid-pending: the second takes over and fires, once.
    first.kill().await;
    until("the second server leads", 10, || leads(&second)).await;
    until("the firing notified by the new leader", 15, || {
        notified("firing") > 0
    })
    .await;

    // The first comes back (following); the second dies while firing.
    let first = start("first-again").await;
    *pusher.base.lock().unwrap() = first.base();
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.kill().await;
    until("the first server leads again", 10, || leads(&first)).await;
    // Still hot: judged again on a full window, still firing, not notified.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        notified("firing"),
        1,
        "firing notified once, across two takeovers"
    );

    *pusher.cpu.lock().unwrap() = 10.0;
    until("the recovery notified", 15, || notified("resolved") > 0).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!((notified("firing"), notified("resolved")), (1, 1));
    pusher.stop.store(true, Ordering::SeqCst);
    pushing.await.expect("pusher");
    first.kill().await;
}

/// What another server took reaches the leader's alert rules whole: a
/// sample's file systems, and the values a later part of a sample added
/// (a split scrape) on that server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_judges_file_systems_and_completed_samples_taken_by_another() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let receiver = Receiver::start().await;
    let server = |name: &str| {
        let mut config = with_alerts(
            config_of(&database, name),
            "
- {name: disk-full, metric: filesystem_used_percent, above: 90, hosts: [disk-host], channels: [hook]}
- {name: memory-full, metric: memory_used_percent, above: 90, hosts: [split-host], channels: [hook]}
",
            &receiver,
        );
        config.ingest.rollups.fold_interval = Duration::from_millis(100);
        TestServer::start(config)
    };
    let leader = server("leader").await;
    let other = server("other").await;
    let firing = |rule: &'static str| {
        let receiver = &receiver;
        move || {
            receiver.received("/hook").iter().any(|request| {
                request.json()["rule"] == rule && request.json()["state"] == "firing"
            })
        }
    };

    // A full disk, pushed through the server that does not judge.
    let disk = other.register("disk-host", PASSWORD).await;
    let sample = json!({"time": unix_now(), "cpu_load": 1.0,
        "filesystems": [{"mount_point": "/", "total_bytes": 100, "used_bytes": 95}]});
    other
        .post_json("/api/v1/samples", &disk, &json!([sample]), 200)
        .await;
    until("the leader notified the full disk", 10, firing("disk-full")).await;

    // A sample in two parts through the other server: the second (memory)
    // completes the first (cpu) there, once it is folded.
    let split = other.register("split-host", PASSWORD).await;
    let time = unix_now().floor();
    other
        .post_json(
            "/api/v1/samples",
            &split,
            &json!([{"time": time, "cpu_load": 1.0}]),
            200,
        )
        .await;
    // The leader has read the first part back (cpu only) by then, and the
    // other server has folded it: only the completion carries memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = json!([{"time": time, "memory_used_bytes": 95, "memory_total_bytes": 100}]);
    other
        .post_json("/api/v1/samples", &split, &memory, 200)
        .await;
    until(
        "the leader notified the full memory",
        10,
        firing("memory-full"),
    )
    .await;
    leader.shutdown().await;
    other.shutdown().await;
}

/// Fencing: a server stores alert transitions on the very session that
/// holds the leader lock, so once that session is gone (the lock freed,
/// perhaps taken by another server already) the transitions it judged in
/// the moment before its next check are not stored, and cannot be
/// notified a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lock_session_is_gone_stores_no_transition() {
    use sqlx::Connection;
    use sysmon_server::store::{self, NewAlertEvent, StoreOptions, StoredStanding};

    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let store = store::connect(&database.url, StoreOptions::default(), None)
        .await
        .expect("store");
    assert!(store.hold_leadership().await.expect("lock"), "leads alone");
    let first_session = store.leader_session();
    let client = store
        .create_client("fenced-host", "not-a-real-hash")
        .await
        .expect("client")
        .expect("new client");
    let event = |state: &str| NewAlertEvent {
        standing: StoredStanding {
            rule: "hot".into(),
            client_id: client.0,
            state: state.into(),
            since_us: 1,
            value: Some(99.0),
            notified_at_us: None,
        },
        host: "fenced-host".into(),
        threshold: Some(90.0),
        severity: "warning".into(),
        summary: "cpu_load > 90".into(),
        repeat: false,
        channels: Vec::new(),
    };
    let stored = store
        .record_alert_events_as_leader(&[event("pending")])
        .await
        .expect("stored while leading");
    assert_eq!(stored, Some(Vec::new()));

    // The lock's session ends (a network cut, a restarted proxy): the
    // database frees the lock.
    let admin_url = database.url.split('?').next().expect("url").to_owned();
    let schema = database
        .url
        .split("search_path]=")
        .nth(1)
        .expect("schema")
        .to_owned();
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("admin connection");
    let terminated: bool = sqlx::query_scalar(
        "WITH key AS (SELECT hashtextextended('sysmon leader ' || current_database() || '.' || $1, 0)
                             | (1::BIGINT << 63) AS k)
         SELECT bool_or(pg_terminate_backend(l.pid)) FROM pg_locks l, key
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
           AND l.classid::BIGINT = (key.k >> 32) & 4294967295
           AND l.objid::BIGINT = key.k & 4294967295",
    )
    .bind(&schema)
    .fetch_one(&mut admin)
    .await
    .expect("terminate the lock's session");
    assert!(terminated, "the leader lock's session was found");
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Judged before this server's next check: not stored.
    let fenced = store
        .record_alert_events_as_leader(&[event("firing")])
        .await;
    assert!(
        matches!(fenced, Err(_) | Ok(None)),
        "stored without the lock: {fenced:?}"
    );
    let events: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{schema}\".alert_events"))
            .fetch_one(&mut admin)
            .await
            .expect("count");
    assert_eq!(events, 1, "only the transition stored under the lock");
    // The next check finds the lock free and takes it again (nobody else
    // here wants it), and storing works again.
    assert!(store.hold_leadership().await.expect("lock again"));
    assert!(
        store.leader_session() > first_session,
        "a new lock session: the server leads a new term"
    );
    let again = store
        .record_alert_events_as_leader(&[event("firing")])
        .await
        .expect("stored");
    assert_eq!(again, Some(Vec::new()));
    store.close().await;
}

/// Three servers started at the same moment on a fresh database: one
/// migrates (sqlx holds an advisory lock while it does), the others wait
/// and find the schema current; all three serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_starting_together_migrate_once() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let server = |name: &str| TestServer::start(config_of(&database, name));
    let (a, b, c) = tokio::join!(server("a"), server("b"), server("c"));
    for server in [&a, &b, &c] {
        let ready = server
            .http
            .get(server.url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status();
        assert_eq!(ready, 200);
    }
    let token = a.register("together", PASSWORD).await;
    b.post_samples(&token, &[json!({"time": unix_now(), "cpu_load": 1.0})])
        .await;
    assert_eq!(c.stored_samples(&token).await.len(), 1);
    let schema = database
        .url
        .split("search_path]=")
        .nth(1)
        .expect("schema")
        .to_owned();
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(
        database.url.split('?').next().expect("url"),
    )
    .await
    .expect("admin connection");
    let applied: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM \"{schema}\"._sqlx_migrations WHERE success"
    ))
    .fetch_one(&mut admin)
    .await
    .expect("migrations");
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations directory")
        .filter(|entry| {
            entry
                .as_ref()
                .is_ok_and(|entry| entry.path().extension().is_some_and(|ext| ext == "sql"))
        })
        .count();
    assert_eq!(applied, shipped as i64, "every migration applied, once");
    for server in [a, b, c] {
        server.shutdown().await;
    }
}
