//! The `sysmon-server` binary as an operator runs it, in a child process:
//! for what only a real process shows (signals, `kill -9`, exit statuses).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::TestDatabase;

/// The server binary running on a test database, its log collected.
pub struct ServerProcess {
    pub child: Child,
    pub address: SocketAddr,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServerProcess {
    /// Starts `binary` (the test's `env!("CARGO_BIN_EXE_sysmon-server")`) on
    /// the database, on a free port, with `args` added; returns once it
    /// listens.
    pub async fn start(binary: &str, database: &TestDatabase, args: &[&str]) -> ServerProcess {
        ServerProcess::start_at(
            binary,
            database,
            "127.0.0.1:0",
            &database.status_log_path(),
            args,
        )
        .await
    }

    /// [`ServerProcess::start`] on a given address and status log: one of
    /// several servers on one database, restarted where a load balancer
    /// expects it.
    pub async fn start_at(
        binary: &str,
        database: &TestDatabase,
        bind: &str,
        status_log: &Path,
        args: &[&str],
    ) -> ServerProcess {
        let mut child = Command::new(binary)
            .args(["--bind", bind, "--database-url", &database.url])
            .arg("--status-log")
            .arg(status_log)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("server binary starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let address = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.expect("server log") {
                log.lock().expect("log lock").push(line.clone());
                if let Some(address) = listening_address(&line) {
                    return address;
                }
            }
            panic!(
                "server exited before listening: {:?}",
                log.lock().expect("log lock")
            );
        })
        .await
        .expect("server listens within 60 s");
        // Keep draining the log so the server never blocks on a full pipe.
        let collected = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                collected.lock().expect("log lock").push(line);
            }
        });
        ServerProcess {
            child,
            address,
            log,
        }
    }

    /// `http://ADDRESS`
    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Sends a signal (`-TERM`, `-KILL`, ...) with `kill`.
    pub async fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// `kill -9`, and waits until the process is gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        self.wait().await;
    }

    pub async fn wait(&mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("server exits within 60 s")
            .expect("server exit status")
    }

    /// The log so far, one line per line.
    pub fn log_text(&self) -> String {
        self.log.lock().expect("log lock").join("\n")
    }
}

/// A YAML configuration file in the database's directory.
pub fn config_file(database: &TestDatabase, name: &str, yaml: &str) -> String {
    let path = database.path(name);
    std::fs::write(&path, yaml).expect("write the configuration file");
    path_text(&path)
}

fn path_text(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temporary path").to_owned()
}

fn listening_address(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let start = line.find("address=")? + "address=".len();
    line[start..].split_whitespace().next()?.parse().ok()
}

/// Registers a client over the original route (`POST /client`) at `base`;
/// its token.
pub async fn register_client(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> String {
    let body: serde_json::Value = http
        .post(format!("{base}/client"))
        .json(&serde_json::json!({"username": name, "pass": password}))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("register body");
    body["client_id"]
        .as_str()
        .unwrap_or_else(|| panic!("a token for {name}: {body}"))
        .to_owned()
}
