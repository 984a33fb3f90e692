//! Where samples and clients live: one [`Store`] trait, implemented for an
//! embedded SQLite file and for PostgreSQL. All SQL of the server is in this
//! module; each implementation runs its own migrations at startup.

mod postgres;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use sysmon_core::{Sample, UnixTime};

use crate::error::{Error, Result};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The database id of a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub i64);

/// A registered client as authentication needs it.
#[derive(Debug, Clone)]
pub struct ClientRecord {
    pub id: ClientId,
    pub name: String,
    pub password_hash: String,
}

/// A client a token was issued to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenOwner {
    pub id: ClientId,
    pub name: String,
}

/// A sample with the client it belongs to: one row of the samples table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientSample {
    pub client: ClientId,
    pub sample: Sample,
}

/// An inclusive time range; `None` on a side means unbounded.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeRange {
    pub start: Option<UnixTime>,
    pub end: Option<UnixTime>,
}

impl TimeRange {
    fn bounds_micros(&self) -> (i64, i64) {
        (
            self.start.map_or(i64::MIN, UnixTime::micros),
            self.end.map_or(i64::MAX, UnixTime::micros),
        )
    }
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// "sqlite" or "postgresql", for logs.
    fn kind(&self) -> &'static str;

    /// Creates a client; `None` when the name is taken.
    async fn create_client(&self, name: &str, password_hash: &str) -> Result<Option<ClientId>>;

    async fn find_client(&self, name: &str) -> Result<Option<ClientRecord>>;

    async fn add_token(&self, client: ClientId, token_hash: &[u8]) -> Result<()>;

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>>;

    /// Stores samples in one transaction. A sample whose (client, time) is
    /// already stored is skipped, so retries never duplicate.
    async fn insert_samples(&self, samples: &[ClientSample]) -> Result<()>;

    /// Time of the first and of the last sample of a client.
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>>;

    /// A client's samples within the range, ordered by time.
    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>>;

    /// Waits for open connections to finish and closes them.
    async fn close(&self);
}

/// Opens the store a URL names (`sqlite://...` or `postgres://...`),
/// creating a missing SQLite file, and brings its schema up to date.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url).await?)),
        _ => Err(Error::Config(format!(
            "unsupported database URL `{}`: use sqlite://FILE or postgres://USER@HOST/DB",
            redact_password(url)
        ))),
    }
}

/// A database URL safe to print: any password replaced by `***`.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((credentials, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn sample_from_row(
    time_us: i64,
    cpu_load: Option<f64>,
    mem: Option<f64>,
    storage: Option<f64>,
) -> Sample {
    Sample {
        time: UnixTime::from_micros(time_us),
        cpu_load,
        mem,
        storage,
    }
}

fn now_micros() -> i64 {
    UnixTime::now().micros()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_password("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact_password("postgres://u@db/x"), "postgres://u@db/x");
        assert_eq!(redact_password("sqlite://sysmon.db"), "sqlite://sysmon.db");
    }
}
