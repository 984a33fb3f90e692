//! Fault injection, for the crate's own tests only: compiled with the
//! `fault-injection` feature, which `cargo test` turns on through the
//! crate's dev-dependency on itself and a build of the binary for use
//! (`cargo build`, `cargo install`) never has.
//!
//! A crashed worker thread cannot be provoked from outside without a bug
//! to exploit, yet what the process then does (exit with a status systemd
//! restarts) is what matters most in production; this makes the crash on
//! request, at the start of the named worker thread.

/// `SYSMON_AGENT_PANIC_IN=collector` (or `sender`) panics that thread.
pub const PANIC_IN: &str = "SYSMON_AGENT_PANIC_IN";

/// Panics when [`PANIC_IN`] names `thread`.
pub fn panic_if_asked(thread: &str) {
    if std::env::var(PANIC_IN).is_ok_and(|asked| asked == thread) {
        panic!("fault injected: {PANIC_IN}={thread}");
    }
}
