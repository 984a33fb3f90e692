//! `sysmon-agent` that panics a worker thread on request, for
//! tests/exit_status.rs only: `SYSMON_AGENT_PANIC_IN=collector` (or
//! `sender`) panics that thread as it starts.
//!
//! A crashed worker thread cannot be provoked from outside without a bug
//! to exploit, yet what the process then does (exit with a status systemd
//! restarts) is what matters most in production. This binary is built only
//! with the feature `fault-injection`, which `cargo test` turns on (see
//! Cargo.toml); the `sysmon-agent` binary has no such hook in any build.

use std::process::ExitCode;

/// `SYSMON_AGENT_PANIC_IN=collector` (or `sender`) panics that thread.
const PANIC_IN: &str = "SYSMON_AGENT_PANIC_IN";

fn main() -> ExitCode {
    eprintln!(
        "sysmon-agent-fault-injection: WARNING: a test build of sysmon-agent; {PANIC_IN} crashes it on request. Never install it: install sysmon-agent."
    );
    sysmon_agent::app::main(panic_if_asked)
}

/// Panics when [`PANIC_IN`] names `thread`.
fn panic_if_asked(thread: &'static str) {
    if std::env::var(PANIC_IN).is_ok_and(|asked| asked == thread) {
        panic!("fault injected: {PANIC_IN}={thread}");
    }
}
