//! What the routes call: each service owns one concern and talks to the
//! store (or the host) on the routes' behalf. Routes never see the store:
//! writes go through `ingest` and `auth`, reads through `reads`.

pub mod alerts;
pub mod auth;
pub mod downloads;
pub mod enrollment;
pub mod exporter;
pub mod fleet_tokens;
pub mod host_pattern;
pub mod ingest;
pub mod integrations;
pub mod leadership;
pub mod login_guard;
pub mod metrics;
pub mod passwords;
pub mod peers;
pub mod query;
pub mod readiness;
pub mod reads;
pub mod retention;
pub mod rollups;
pub mod self_monitor;
pub mod status_log;
