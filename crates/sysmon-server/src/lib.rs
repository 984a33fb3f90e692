//! The sysmon server: machines push samples over HTTP or WebSocket; it
//! stores every one (SQLite or PostgreSQL), answers time-range reports,
//! serves the original Flask server's API unchanged, and reports on its own
//! host.
//!
//! Data flows one way: `routes` parse a request into a typed sample,
//! `services::ingest` batches samples from many requests into one
//! transaction, and the `store` writes it; a request is acknowledged only
//! after the commit.

pub mod config;
pub mod connections;
pub mod error;
pub mod proxy;
pub mod routes;
pub mod services;
pub mod slots;
pub mod startup;
pub mod state;
pub mod store;
pub mod tls;

pub use config::Config;
pub use error::{Error, Result};
pub use startup::Application;
