//! Where samples and clients live: one [`Store`] trait, implemented for an
//! embedded SQLite file and for PostgreSQL. All SQL of the server is in this
//! module; each implementation runs its own migrations at startup.

mod copy_binary;
#[macro_use]
mod dashboard_users;
mod postgres;
pub mod rollup;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Decode, Row, Type};
use sysmon_core::v1::{ExtendedMetrics, FilesystemUsage};
use sysmon_core::{Sample, UnixTime};

use crate::error::{Error, Result};

pub use dashboard_users::UserStore;
pub use postgres::PostgresStore;
pub use rollup::{Bucket, SeriesQuery, Tier};
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
/// Everything the server keeps; dashboard users and sessions are in the
/// [`UserStore`] part.
pub trait Store: UserStore + Send + Sync + 'static {
    /// "sqlite" or "postgresql", for logs.
    fn kind(&self) -> &'static str;

    /// How many transactions may usefully write at once: SQLite has a
    /// single writer, so more would only queue on its lock.
    fn max_concurrent_writers(&self) -> usize;

    /// Creates a client; `None` when the name is taken.
    async fn create_client(&self, name: &str, password_hash: &str) -> Result<Option<ClientId>>;

    async fn find_client(&self, name: &str) -> Result<Option<ClientRecord>>;

    async fn add_token(&self, client: ClientId, token_hash: &[u8]) -> Result<()>;

    async fn token_owner(&self, token_hash: &[u8]) -> Result<Option<TokenOwner>>;

    /// Stores samples in one transaction. A sample whose (client, time) is
    /// already stored is skipped, so retries never duplicate. Returns the
    /// keys of the rows that were new.
    async fn insert_samples(&self, samples: Arc<[ClientSample]>) -> Result<Vec<SampleKey>>;

    /// Time of the first and of the last sample of a client.
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>>;

    /// A client's samples within the range, ordered by time: the original's
    /// three metrics only. They arrive in chunks as the database reads them,
    /// so a report of millions of rows never sits in memory whole; a failure
    /// part way is the channel's last item.
    async fn samples(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks>;

    /// The same with every metric, extended ones and file systems included.
    async fn full_samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>>;

    /// A client's buckets over a range, aggregated by the database.
    async fn series(&self, query: &SeriesQuery) -> Result<Vec<Bucket>>;

    /// Every client with its first and latest samples, by name.
    async fn client_overviews(&self) -> Result<Vec<ClientOverview>>;

    async fn count_clients(&self) -> Result<u64>;

    /// Deletes a tier's rows filed before `before_us`; returns how many.
    async fn prune(&self, tier: Tier, before_us: i64) -> Result<u64>;

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

/// Opens the store a URL names (`sqlite://...` or `postgres://...`),
/// creating a missing SQLite file, and brings its schema up to date.
pub async fn connect(url: &str, durability: Durability) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Arc::new(SqliteStore::connect(url, durability).await?)),
        "postgres" | "postgresql" => Ok(Arc::new(PostgresStore::connect(url, durability).await?)),
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

/// A stored sample's identity: (client id, time in microseconds).
pub type SampleKey = (i64, i64);

/// Every column of the samples table, in the order rows are bound and read.
const SAMPLE_COLUMNS: &str = "client_id, time_us, cpu_load, mem, storage, \
    load_average_1m, load_average_5m, load_average_15m, \
    memory_used_bytes, memory_available_bytes, memory_total_bytes, swap_used_bytes, swap_total_bytes, \
    disk_read_bytes_per_second, disk_write_bytes_per_second, \
    network_receive_bytes_per_second, network_transmit_bytes_per_second, \
    uptime_seconds, temperature_celsius";
const SAMPLE_COLUMN_COUNT: usize = 19;

/// One sample as the store's columns: floats and signed 64-bit integers.
#[derive(Debug, Clone, Default)]
struct SampleRow {
    client_id: i64,
    time_us: i64,
    /// cpu_load, mem, storage, load averages (1, 5, 15 min), disk read and
    /// write, network receive and transmit.
    floats: [Option<f64>; 10],
    /// Memory used, available, total; swap used, total; uptime.
    integers: [Option<i64>; 6],
    temperature_celsius: Option<f64>,
}

impl SampleRow {
    fn from_sample(row: &ClientSample) -> Self {
        let sample = &row.sample;
        let default = ExtendedMetrics::default();
        let extended = sample.extended.as_deref().unwrap_or(&default);
        let integer = |value: Option<u64>| value.map(|value| value.min(i64::MAX as u64) as i64);
        SampleRow {
            client_id: row.client.0,
            time_us: sample.time.micros(),
            floats: [
                sample.cpu_load,
                sample.mem,
                sample.storage,
                extended.load_average_1m,
                extended.load_average_5m,
                extended.load_average_15m,
                extended.disk_read_bytes_per_second,
                extended.disk_write_bytes_per_second,
                extended.network_receive_bytes_per_second,
                extended.network_transmit_bytes_per_second,
            ],
            integers: [
                integer(extended.memory_used_bytes),
                integer(extended.memory_available_bytes),
                integer(extended.memory_total_bytes),
                integer(extended.swap_used_bytes),
                integer(extended.swap_total_bytes),
                integer(extended.uptime_seconds),
            ],
            temperature_celsius: extended.temperature_celsius,
        }
    }

    /// The values in [`SAMPLE_COLUMNS`] order, for binding.
    fn columns(&self) -> [Column; SAMPLE_COLUMN_COUNT] {
        let [cpu, mem, storage, load1, load5, load15, read, write, rx, tx] = self.floats;
        let [used, available, total, swap_used, swap_total, uptime] = self.integers;
        [
            Column::Integer(Some(self.client_id)),
            Column::Integer(Some(self.time_us)),
            Column::Float(cpu),
            Column::Float(mem),
            Column::Float(storage),
            Column::Float(load1),
            Column::Float(load5),
            Column::Float(load15),
            Column::Integer(used),
            Column::Integer(available),
            Column::Integer(total),
            Column::Integer(swap_used),
            Column::Integer(swap_total),
            Column::Float(read),
            Column::Float(write),
            Column::Float(rx),
            Column::Float(tx),
            Column::Integer(uptime),
            Column::Float(self.temperature_celsius),
        ]
    }
}

/// A value to bind: the stores' columns are either of these.
#[derive(Debug, Clone, Copy)]
enum Column {
    Integer(Option<i64>),
    Float(Option<f64>),
}

/// Reads a row selected as [`SAMPLE_COLUMNS`] into a full sample.
fn full_sample_from_row<'r, R>(row: &'r R) -> Result<Sample>
where
    R: Row,
    usize: ColumnIndex<R>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    f64: Decode<'r, R::Database> + Type<R::Database>,
{
    let float = |index: usize| row.try_get::<Option<f64>, _>(index);
    let integer = |index: usize| -> Result<Option<u64>> {
        Ok(row
            .try_get::<Option<i64>, _>(index)?
            .map(|value| value.max(0) as u64))
    };
    let extended = ExtendedMetrics {
        load_average_1m: float(5)?,
        load_average_5m: float(6)?,
        load_average_15m: float(7)?,
        memory_used_bytes: integer(8)?,
        memory_available_bytes: integer(9)?,
        memory_total_bytes: integer(10)?,
        swap_used_bytes: integer(11)?,
        swap_total_bytes: integer(12)?,
        disk_read_bytes_per_second: float(13)?,
        disk_write_bytes_per_second: float(14)?,
        network_receive_bytes_per_second: float(15)?,
        network_transmit_bytes_per_second: float(16)?,
        uptime_seconds: integer(17)?,
        temperature_celsius: float(18)?,
        filesystems: Vec::new(),
    };
    let mut sample = sample_from_row(row.try_get(1)?, float(2)?, float(3)?, float(4)?);
    sample.extended = Some(Box::new(extended));
    Ok(sample)
}

/// A file system's usage at one sample's time.
struct FilesystemRow {
    time_us: i64,
    usage: FilesystemUsage,
}

impl From<(i64, String, i64, i64)> for FilesystemRow {
    fn from((time_us, mount_point, used, total): (i64, String, i64, i64)) -> Self {
        FilesystemRow {
            time_us,
            usage: FilesystemUsage {
                mount_point,
                used_bytes: used.max(0) as u64,
                total_bytes: total.max(0) as u64,
            },
        }
    }
}

/// Attaches file-system rows (ordered by time) to samples (ordered by time).
fn attach_filesystems(samples: &mut [Sample], rows: Vec<FilesystemRow>) {
    let mut rows = rows.into_iter().peekable();
    for sample in samples.iter_mut() {
        while rows
            .next_if(|row| row.time_us < sample.time.micros())
            .is_some()
        {}
        while let Some(row) = rows.next_if(|row| row.time_us == sample.time.micros()) {
            if let Some(extended) = sample.extended.as_deref_mut() {
                extended.filesystems.push(row.usage);
            }
        }
    }
}

/// File systems of the given samples as (client id, time, usage).
fn filesystem_rows(samples: &[ClientSample]) -> Vec<(i64, i64, &FilesystemUsage)> {
    samples
        .iter()
        .flat_map(|row| {
            let (client, time) = (row.client.0, row.sample.time.micros());
            row.sample.extended.iter().flat_map(move |extended| {
                extended
                    .filesystems
                    .iter()
                    .map(move |fs| (client, time, fs))
            })
        })
        .collect()
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
        extended: None,
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
