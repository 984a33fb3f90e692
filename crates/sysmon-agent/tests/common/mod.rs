//! What only the agent's tests need, on top of `sysmon_testkit` (which gives
//! them a fresh database, a server running in this process that can be
//! stopped and restarted on the same port, and `on_both_stores!`): the real
//! `sysmon-agent` binary as a child process, its outbox, and what the
//! server stored from it.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use sysmon_core::v1::HostSample;
use sysmon_testkit::{poll, random_hex, TestServer};

/// Every sample the server stored for the token's client, by time, read
/// through `/api/v1/samples`.
pub async fn stored_samples(server: &TestServer, token: &str) -> Vec<HostSample> {
    server
        .stored_samples(token)
        .await
        .into_iter()
        .map(|sample| serde_json::from_value(sample).expect("samples are HostSamples"))
        .collect()
}

/// Stored sample times, whole seconds, in the order the server gave them.
pub async fn stored_times(server: &TestServer, token: &str) -> Vec<i64> {
    stored_samples(server, token)
        .await
        .iter()
        .map(|sample| {
            assert_eq!(sample.time.fract(), 0.0, "sample times are whole seconds");
            sample.time as i64
        })
        .collect()
}

/// Waits until `condition` holds for the stored times (polling), and
/// returns them; panics with `what`, the times and the agent's log after
/// `timeout`.
pub async fn wait_for_stored_times(
    server: &TestServer,
    token: &str,
    timeout: Duration,
    what: &str,
    agent: &Agent,
    condition: impl Fn(&[i64]) -> bool,
) -> Vec<i64> {
    poll(what, timeout, Duration::from_millis(200), || async {
        let times = stored_times(server, token).await;
        if condition(&times) {
            Ok(times)
        } else {
            Err(format!("stored: {times:?}\nagent log:\n{}", agent.log()))
        }
    })
    .await
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

    /// Waits until the log has a line containing `needle`, and returns it.
    pub async fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let what = format!("a log line with {needle:?}");
        poll(&what, timeout, Duration::from_millis(100), || async {
            let line = self.log_lines(needle).into_iter().next();
            line.ok_or_else(|| format!("log:\n{}", self.log()))
        })
        .await
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
