//! Where samples and clients live: one [`Store`] trait, implemented for an
//! embedded SQLite file and for PostgreSQL. All SQL of the server is in this
//! module; each implementation runs its own migrations at startup.

#[macro_use]
pub mod alerts;
#[macro_use]
mod clients;
mod copy_binary;
#[macro_use]
mod dashboard_users;
#[macro_use]
mod enrollment;
#[macro_use]
mod fleet_tokens;
pub mod journal;
mod partitions;
mod postgres;
pub mod rollup;
mod sample_row;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use sysmon_core::{Sample, UnixTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

pub use alerts::{
    AlertEvent, AlertStore, Delivery, DeliveryOutcome, NewAlertEvent, StoredStanding,
};
pub use clients::{ClientListing, ClientStore, FullSamples, SampleReads, PURGE_PAUSE};
pub use dashboard_users::UserStore;
pub use enrollment::{EnrollmentStore, EnrollmentToken, NewEnrollmentToken};
pub use fleet_tokens::{FleetHost, FleetToken, FleetTokenStore, NewFleetToken};
pub use journal::{Fold, FoldProgress, Inserted, InstanceId, JournalEntry, JournalSeq, Unobserved};
pub use postgres::PostgresStore;
pub use rollup::{Bucket, SeriesQuery, Tier};
pub use sample_row::FilesystemRow;
use sample_row::{
    attach_filesystems, filesystem_rows, full_sample_from_columns, full_sample_from_row,
    sample_columns, sample_from_row, Column, SampleRow, SAMPLE_COLUMN_COUNT,
};
pub use sqlite::SqliteStore;

/// The receiving end of [`Store::samples`].
pub type SampleChunks = tokio::sync::mpsc::Receiver<Result<Vec<Sample>>>;

/// Rows per chunk of [`Store::samples`]: large enough that handing a chunk
/// over costs nothing per row, small enough to start answering at once.
const SAMPLE_CHUNK_ROWS: usize = 4096;

/// Chunks in flight between the reader and the response: the reader stays
/// a little ahead of a client that reads at full speed and stops for one
/// that does not.
const SAMPLE_CHUNKS_AHEAD: usize = 2;

fn sample_chunks() -> (tokio::sync::mpsc::Sender<Result<Vec<Sample>>>, SampleChunks) {
    tokio::sync::mpsc::channel(SAMPLE_CHUNKS_AHEAD)
}

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

/// A client as the fleet overview shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientOverview {
    pub id: ClientId,
    pub name: String,
    pub first_seen: Option<UnixTime>,
    /// The latest sample, every metric included.
    pub latest: Option<Sample>,
    /// Times of the two samples before the latest, newest first, to tell
    /// the client's interval.
    pub previous: Vec<UnixTime>,
}

/// The database id of a dashboard user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(pub i64);

/// A person who reads the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardUser {
    pub id: UserId,
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    /// The clients a non-admin may read, by name.
    pub clients: Vec<String>,
}

/// Whose a dashboard session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionOwner {
    User(UserId),
    /// A client logged in with its own credentials.
    Client(ClientId),
}

/// A dashboard user to create.
#[derive(Debug, Clone)]
pub struct NewDashboardUser {
    pub name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub clients: Vec<String>,
}

/// A sample with the client it belongs to: one row of the samples table.
#[derive(Debug, Clone, PartialEq)]
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
/// Everything the server keeps. Clients and tokens are the shared
/// [`ClientStore`] part, dashboard users and sessions the [`UserStore`]
/// part, the read-backs that are not hot paths [`SampleReads`]; what is
/// here is written per store, because each store has its own fastest way.
pub trait Store:
    ClientStore
    + SampleReads
    + UserStore
    + EnrollmentStore
    + FleetTokenStore
    + AlertStore
    + Send
    + Sync
    + 'static
{
    /// "sqlite" or "postgresql", for logs.
    fn kind(&self) -> &'static str;

    /// How many transactions may usefully write at once: SQLite has a
    /// single writer, so more would only queue on its lock.
    fn max_concurrent_writers(&self) -> usize;

    /// Claims a fresh [`InstanceId`] for this process's journal entries, so
    /// that other servers leave them alone while it lives (PostgreSQL: an
    /// advisory lock held for the life of the claim). A previous claim of
    /// this store is given up: its entries become foldable from the samples.
    async fn claim_instance(&self) -> Result<InstanceId>;

    /// Whether the claim still holds (PostgreSQL: its lock's connection is
    /// alive); when it does not, other servers may fold its entries.
    async fn instance_alive(&self, instance: InstanceId) -> bool;

    /// Stores samples (each key once) in one transaction, with a journal
    /// entry for the new ones under `instance` (see [`journal`]). A sample
    /// whose (client, time) is already stored completes it with what it
    /// lacks (a part of a split scrape), or is [`Inserted::deferred`] when
    /// that sample is not folded yet; adding nothing, it is a replay:
    /// retries never duplicate. PostgreSQL completes in a second
    /// transaction after the new rows' commit; when that one fails, its
    /// parts are deferred too, so the new rows are still returned (and
    /// recorded for the rollups by the caller).
    async fn insert_samples(
        &self,
        samples: Arc<[ClientSample]>,
        instance: InstanceId,
    ) -> Result<Inserted>;

    /// Merges the fold's summaries into the rollup tables and deletes its
    /// journal entries, in one transaction or in parts by client (told to
    /// `progress`). Fails, changing nothing, when any of the entries is
    /// already gone (another server folded it); when a later part fails,
    /// the parts before it stay committed.
    async fn fold(&self, fold: Arc<Fold>, progress: Arc<dyn FoldProgress>) -> Result<()>;

    /// Up to `limit` journal entries of instances other than `live` whose
    /// claims have lapsed: their summaries are nowhere but in the samples.
    async fn orphaned_journal(&self, live: InstanceId, limit: usize) -> Result<Vec<JournalEntry>>;

    /// The stored samples with these keys (the charted metrics at least).
    async fn samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>>;

    /// A client's samples within the range, ordered by time: the original's
    /// three metrics only. They arrive in chunks as the database reads them,
    /// so a report of millions of rows never sits in memory whole; a failure
    /// part way is the channel's last item.
    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks>;

    /// A client's buckets over a range, aggregated by the database.
    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Bucket>>;

    /// Deletes a tier's rows filed before `before_us`; returns how many.
    /// PostgreSQL keeps raw samples in a partition per day and drops whole
    /// partitions instead: those that end by `before_us` (the one holding
    /// it stays until its day has passed too), counted by the planner's
    /// estimate.
    async fn prune(&self, tier: Tier, before_us: i64) -> Result<u64>;

    /// Readies the store for the samples of the coming days, so the ingest
    /// path finds it ready: PostgreSQL creates their partitions. Run by the
    /// retention job; SQLite has nothing to do.
    async fn prepare_ahead(&self, _now_us: i64) -> Result<()> {
        Ok(())
    }

    /// Takes or keeps the leader lock (see [`crate::services::leadership`]);
    /// whether this server holds it. SQLite: always.
    async fn hold_leadership(&self) -> Result<bool> {
        Ok(true)
    }

    /// Counts the sessions that took the leader lock: a server that lost
    /// its lock session and took the lock again on a new one, between two
    /// checks, leads a new term all the same (what it decided on the old
    /// session may or may not be stored).
    fn leader_session(&self) -> u64 {
        0
    }

    /// [`AlertStore::record_alert_events`] only while this server holds the
    /// leader lock, in a way that fences a server that lost it: `None`
    /// (nothing stored) when it does not lead. PostgreSQL stores on the
    /// session that holds the lock, so a server whose session is gone (the
    /// lock with it, perhaps to another server already) cannot store what
    /// it judged in the moment before it learnt of it.
    async fn record_alert_events_as_leader(
        &self,
        events: &[NewAlertEvent],
    ) -> Result<Option<Vec<i64>>> {
        Ok(Some(self.record_alert_events(events).await?))
    }

    /// Tells the other servers on this database which samples this one
    /// committed (PostgreSQL: `NOTIFY`); nothing on SQLite, which one
    /// server owns.
    async fn announce_committed(&self, _announcement: &Announcement) -> Result<()> {
        Ok(())
    }

    /// What the other servers announce, as it arrives, until `stop`
    /// (PostgreSQL: `LISTEN` on a connection of its own); `None` where no
    /// other server can write (SQLite).
    fn hear_committed(&self, _stop: CancellationToken) -> Option<mpsc::Receiver<Announcement>> {
        None
    }

    /// The stored samples with these keys, file systems included (what
    /// another server committed, for live readers and alerts).
    async fn whole_samples_by_keys(&self, keys: Vec<SampleKey>) -> Result<Vec<ClientSample>> {
        self.samples_by_keys(keys).await
    }

    /// Waits for open connections to finish and closes them.
    async fn close(&self);
}

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Flushed to disk: an acknowledged sample survives a power cut.
    #[default]
    Full,
    /// Written to the database's log but not yet flushed (SQLite
    /// `synchronous=NORMAL`, PostgreSQL `synchronous_commit=off`): an
    /// acknowledged sample survives sysmon crashing, not the machine
    /// losing power or the OS (or PostgreSQL) crashing just after.
    Relaxed,
}

/// What the configuration says of how a store writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Hosts per transaction of a rollup fold (SQLite; PostgreSQL folds in
    /// one, its writers not waiting on it).
    pub fold_part_hosts: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            fold_part_hosts: 250,
        }
    }
}

/// What one server tells the others on its database it committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Keys of samples new to the store.
    pub new: Vec<SampleKey>,
    /// Keys of stored samples that a later part completed (values added).
    pub completed: Vec<SampleKey>,
}

impl Announcement {
    pub fn is_empty(&self) -> bool {
        self.new.is_empty() && self.completed.is_empty()
    }

    pub fn extend(&mut self, more: Announcement) {
        self.new.extend(more.new);
        self.completed.extend(more.completed);
    }
}

/// Reads a streaming replica served, and reads the primary served while
/// the replica had not caught up (see `postgres/replica.rs`).
#[derive(Clone, Default)]
pub struct ReplicaReads {
    pub replica: prometheus_client::metrics::counter::Counter,
    pub primary: prometheus_client::metrics::counter::Counter,
}

/// A PostgreSQL streaming replica for reports, exports, charts and pages of
/// samples (`read_replica_url`).
#[derive(Clone)]
pub struct ReadReplica {
    pub url: String,
    pub reads: ReplicaReads,
}

/// Opens the store a URL names (`sqlite://...` or `postgres://...`),
/// creating a missing SQLite file, and brings its schema up to date; reads
/// go to `replica` where it has caught up (PostgreSQL only).
pub async fn connect(
    url: &str,
    options: StoreOptions,
    replica: Option<ReadReplica>,
) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "sqlite" if replica.is_some() => Err(Error::Config(
            "read_replica_url needs a PostgreSQL database_url: SQLite has no replicas".into(),
        )),
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url, options).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(
            PostgresStore::connect(url, options.durability, replica).await?,
        )),
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
    // The last `@` before the query: a password may hold an unescaped `@`.
    let authority_end = rest.find('?').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let (credentials, host) = (&rest[..at], &rest[at + 1..]);
    match credentials.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

/// A stored sample's identity: (client id, time in microseconds).
pub type SampleKey = (i64, i64);

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
        assert_eq!(
            redact_password("postgres://u:p@ss@word@db/x?application_name=a@b"),
            "postgres://u:***@db/x?application_name=a@b",
            "no part of a password with `@` in it is shown"
        );
    }
}
