//! A crashed worker thread must end the real `sysmon-agent` binary with an
//! exit status that the systemd unit restarts: `Restart=on-failure`
//! restarts on any non-zero status except those in
//! `RestartPreventExitStatus`, which is kept for configuration errors.
//!
//! The crash is injected with `SYSMON_AGENT_PANIC_IN`, which only
//! `sysmon-agent-fault-injection` (src/bin/) reads: the same program with a
//! hook at the start of each worker thread, built for `cargo test` only
//! (see Cargo.toml). `sysmon-agent` itself must ignore the variable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-agent-fault-injection");

/// The statuses the unit will not restart after, from the unit file itself,
/// so that this test follows the unit if it changes.
fn restart_prevented_statuses() -> Vec<i32> {
    let unit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/sysmon-agent.service");
    let text = std::fs::read_to_string(&unit).expect("the systemd unit");
    assert!(
        text.lines().any(|line| line.trim() == "Restart=on-failure"),
        "the unit restarts on failure"
    );
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("RestartPreventExitStatus="))
        .flat_map(str::split_whitespace)
        .map(|status| status.parse().expect("a numeric exit status"))
        .collect()
}

/// An agent started with `SYSMON_AGENT_PANIC_IN=thread`, logging to a file.
struct Started {
    child: Child,
    log_path: PathBuf,
    _state: tempfile::TempDir,
}

impl Started {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

fn start(binary: &str, thread: &str) -> Started {
    let state = tempfile::tempdir().expect("state dir");
    let log_path = state.path().join("agent.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = Command::new(binary);
    // Nothing from the developer's environment: only these settings.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SYSMON_AGENT_") {
            command.env_remove(name);
        }
    }
    // A token and a closed port: the agent starts both threads without
    // needing a server.
    let child = command
        .args(["--server", "http://127.0.0.1:9", "--token", "test-token"])
        .args(["--interval", "1", "--retry-min", "1s", "--timeout", "1s"])
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .env("SYSMON_AGENT_PANIC_IN", thread)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the agent starts");
    Started {
        child,
        log_path,
        _state: state,
    }
}

/// Runs the agent with `thread` made to panic; its exit status and log.
fn run_with_panic_in(thread: &str) -> (ExitStatus, String) {
    let mut started = start(BINARY, thread);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = started.child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = started.child.kill();
            panic!(
                "the agent kept running after its {thread} thread panicked:\n{}",
                started.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, started.log())
}

#[test]
fn a_worker_panic_exits_with_a_status_systemd_restarts() {
    let prevented = restart_prevented_statuses();
    assert!(prevented.contains(&2), "configuration errors stay stopped");
    for thread in ["collector", "sender"] {
        let (status, log) = run_with_panic_in(thread);
        let code = status
            .code()
            .unwrap_or_else(|| panic!("ended by a signal, not an exit: {status:?}\n{log}"));
        assert_ne!(code, 0, "a crash is a failure\n{log}");
        assert!(
            !prevented.contains(&code),
            "exit status {code} after a {thread} panic is one systemd does not restart\n{log}"
        );
        assert!(log.contains("fault injected"), "{log}");
        assert!(log.contains("WARNING: a test build"), "{log}");
        assert!(
            log.contains(&format!("the {thread} thread ended unexpectedly")),
            "{log}"
        );
    }
}

/// The binary that is installed has no fault injection: it ignores the
/// variable, runs, and stops cleanly on SIGTERM.
#[test]
fn sysmon_agent_itself_ignores_the_fault_variable() {
    let mut started = start(env!("CARGO_BIN_EXE_sysmon-agent"), "collector");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !started.log().contains("sender started") {
        assert!(Instant::now() < deadline, "{}", started.log());
        assert!(
            started.child.try_wait().expect("try_wait").is_none(),
            "the agent ended:\n{}",
            started.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Collection has run for a while: a panic would have ended the agent.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = Pid::from_raw(started.child.id() as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = started.child.wait().expect("wait");
    let log = started.log();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(!log.contains("fault injected"), "{log}");
    assert!(!log.contains("WARNING: a test build"), "{log}");
}
