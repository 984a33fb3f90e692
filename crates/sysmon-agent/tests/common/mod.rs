//! Test harness: a real sysmon server in this process (on a fresh SQLite
//! file or PostgreSQL schema, stoppable and restartable on the same port),
//! and the real `sysmon-agent` binary as a child process.
//!
//! PostgreSQL tests use the database named by `SYSMON_TEST_POSTGRES_URL`;
//! without it they are skipped with a printed reason, except under CI
//! (`CI=true`), where that fails them.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sysmon_core::v1::HostSample;
use sysmon_server::Config;

pub use sysmon_testkit::{random_hex, Backend, FreshDatabase, RunningServer};

/// Runs each named `async fn(TestDatabase)` once per store, as
/// `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let database = $crate::common::TestDatabase::create($crate::common::Backend::Sqlite).await;
                    super::$test(database.expect("sqlite database")).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(database) = $crate::common::TestDatabase::create($crate::common::Backend::Postgres).await else {
                        return;
                    };
                    super::$test(database).await;
                }
            )*
        }
    };
}

/// A fresh database for one test (see `sysmon_testkit`), with what the
/// server and the agent need to run on it.
pub struct TestDatabase(FreshDatabase);

impl std::ops::Deref for TestDatabase {
    type Target = FreshDatabase;

    fn deref(&self) -> &FreshDatabase {
        &self.0
    }
}

impl TestDatabase {
    /// `None` when PostgreSQL is not configured outside CI.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        FreshDatabase::create(backend, "agent_test")
            .await
            .map(TestDatabase)
    }

    pub fn config(&self, bind: &str) -> Config {
        let mut config = Config {
            bind: bind.into(),
            database_url: self.url.clone(),
            ..Config::default()
        };
        config.status_log.path = self.dir.path().join("server_system_load.csv");
        config
    }

    /// Starts a server on a free port.
    pub async fn start(&self) -> TestServer {
        TestServer::start(self.config("127.0.0.1:0")).await
    }

    /// Starts a server on the given address (a restart on the same port).
    pub async fn start_on(&self, address: SocketAddr) -> TestServer {
        TestServer::start(self.config(&address.to_string())).await
    }

    /// A state directory for an agent.
    pub fn state_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// A server running in this process (see `sysmon_testkit::RunningServer`),
/// with this suite's helpers.
pub struct TestServer(RunningServer);

impl std::ops::Deref for TestServer {
    type Target = RunningServer;

    fn deref(&self) -> &RunningServer {
        &self.0
    }
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        TestServer(RunningServer::start(config).await)
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has
    /// stopped and its port is closed.
    pub async fn shutdown(self) {
        self.0.shutdown().await;
    }

    /// Every stored sample of the token's client, by time.
    pub async fn samples(&self, token: &str) -> Vec<HostSample> {
        let response = self
            .http
            .get(self.url("/api/v1/samples"))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/v1/samples");
        assert_eq!(response.status(), 200, "GET /api/v1/samples");
        let mut body: Value = response.json().await.expect("samples body");
        serde_json::from_value(body["samples"].take()).expect("samples are HostSamples")
    }

    /// Sample times, whole seconds, in the order the server gave them.
    pub async fn times(&self, token: &str) -> Vec<i64> {
        self.samples(token)
            .await
            .iter()
            .map(|sample| {
                assert_eq!(sample.time.fract(), 0.0, "sample times are whole seconds");
                sample.time as i64
            })
            .collect()
    }

    /// The original API's report for the client.
    pub async fn report(&self, name: &str, token: &str) -> Vec<Value> {
        let response = self
            .http
            .get(self.url(&format!("/client/{name}/time/report")))
            .header("Authorization", token)
            .send()
            .await
            .expect("report request");
        assert_eq!(response.status(), 200, "report of {name}");
        let body: Value = response.json().await.expect("report body");
        body["payload"].as_array().expect("payload array").clone()
    }

    /// Waits until `condition` holds for the stored times (polling), and
    /// returns them; panics with `what` after `timeout`.
    pub async fn wait_for_times(
        &self,
        token: &str,
        timeout: Duration,
        what: &str,
        agent: &Agent,
        condition: impl Fn(&[i64]) -> bool,
    ) -> Vec<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let times = self.times(token).await;
            if condition(&times) {
                return times;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; stored: {times:?}\nagent log:\n{}",
                    agent.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The agent binary running as a child process, its log in a file.
pub struct Agent {
    child: Child,
    pub log_path: PathBuf,
    pub state_dir: PathBuf,
}

pub fn agent_binary() -> &'static str {
    env!("CARGO_BIN_EXE_sysmon-agent")
}

/// Runs the agent binary to completion (`--enroll`, `--once`).
pub fn run_agent(args: &[&str]) -> std::process::Output {
    Command::new(agent_binary())
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("agent runs")
}

impl Agent {
    /// Starts `sysmon-agent --state-dir STATE ARGS...`, logging at debug.
    pub fn start(state_dir: &Path, args: &[&str]) -> Agent {
        std::fs::create_dir_all(state_dir).expect("state dir");
        let log_path = state_dir.with_extension(format!("{}.log", random_hex()));
        let log = std::fs::File::create(&log_path).expect("agent log file");
        let child = Command::new(agent_binary())
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .env("RUST_LOG", "info,sysmon_agent=debug")
            .env_remove("SYSMON_AGENT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("agent starts");
        Agent {
            child,
            log_path,
            state_dir: state_dir.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Lines of the log containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The stored token.
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("token"))
            .unwrap_or_else(|e| panic!("no token file: {e}\nagent log:\n{}", self.log()))
            .trim()
            .to_owned()
    }

    /// Times of the samples waiting in the outbox.
    pub fn outbox_times(&self) -> BTreeSet<i64> {
        outbox_times(&self.state_dir)
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(15))
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agent did not exit in {timeout:?}\nlog:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log has a line containing `needle`.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines(needle).into_iter().next() {
                return line;
            }
            if Instant::now() > deadline {
                panic!(
                    "no log line with {needle:?} within {timeout:?}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Times of the samples in a state directory's outbox.
pub fn outbox_times(state_dir: &Path) -> BTreeSet<i64> {
    let Ok(listing) = std::fs::read_dir(state_dir.join("outbox")) else {
        return BTreeSet::new();
    };
    listing
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect()
}

/// The number after `key=` in a log line.
pub fn field(line: &str, key: &str) -> Option<u64> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Asserts the times are strictly consecutive seconds: no gap, no repeat.
pub fn assert_contiguous(times: &[i64], context: &str) {
    assert!(!times.is_empty(), "{context}: no samples");
    let gaps: Vec<(i64, i64)> = times
        .windows(2)
        .filter(|pair| pair[1] != pair[0] + 1)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    assert!(
        gaps.is_empty(),
        "{context}: times are not consecutive seconds, breaks at {gaps:?}; times {times:?}"
    );
}

/// Common flags for a fast test agent against `server`.
pub fn fast_agent_args(server: &str) -> Vec<String> {
    [
        "--server",
        server,
        "--interval",
        "1",
        "--retry-min",
        "200ms",
        "--retry-max",
        "1s",
        "--timeout",
        "5s",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}
