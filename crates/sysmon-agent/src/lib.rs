//! `sysmon-agent`: runs on every monitored host, measures it on a fixed
//! interval, and delivers every sample to a sysmon server without losing
//! or doubling one, across server outages, restarts, `kill -9` and reboots.
//!
//! Shaped like a pipeline of source -> buffer -> sink:
//!
//! - [`collection`] (source): one [`HostSample`](sysmon_core::v1::HostSample)
//!   per tick of the interval grid, measured by
//!   [`sysmon_core::collect`], written to the outbox; never touches the
//!   network.
//! - [`outbox`] (buffer): one durable file per sample, bounded by size and
//!   age, oldest dropped first (counted and logged).
//! - [`sender`] (sink): oldest-first batches over a [`transport`] (HTTP
//!   `POST /api/v1/samples` or WebSocket `CLIENT_BATCH`), deleting exactly
//!   what the server acknowledged, with [`backoff`] between failures.
//!
//! Plus [`config`] (flags > environment > YAML > defaults), [`enroll`]
//! (`POST /client` for a token), [`state`] (the state directory, token,
//! lock), [`agent`], which wires the threads together, and [`app`], the
//! program around it.
//!
//! Everything is blocking code on three threads (collector, sender, signal
//! handler): no async runtime, to keep the resident memory and the binary
//! small.

pub mod agent;
pub mod app;
pub mod backoff;
pub mod collection;
pub mod config;
pub mod enroll;
pub mod error;
pub mod outbox;
pub mod sender;
pub mod state;
pub mod transport;
pub mod trust;
pub mod wake;

pub use config::Config;
pub use error::{Error, Result};
