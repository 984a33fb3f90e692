//! Wire types and host-metrics collection shared by the sysmon server and agent.
//!
//! Everything that crosses the network (a pushed sample, a WebSocket message,
//! a unit of measure) is defined here once, so that the server and the agent
//! cannot disagree about it. Parsing is lenient about *form* (the original
//! clients spell things several ways) and strict about *content* (a value that
//! is not a finite, non-negative number is rejected with the field's name).
//!
//! With the `settings` feature, [`settings`] holds what the two binaries
//! share in resolving their configuration from flags, environment and YAML.

pub mod collect;
pub mod error_reply;
pub mod host;
pub mod metrics;
pub mod number;
pub mod prom;
pub mod sample;
#[cfg(feature = "settings")]
pub mod settings;
pub mod units;
pub mod v1;
pub mod ws;

pub use sample::{FieldValue, Sample, SampleError, UnixTime};
pub use units::Units;
