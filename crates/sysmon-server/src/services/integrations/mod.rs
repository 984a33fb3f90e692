//! Foreign protocols in: InfluxDB line protocol (what Telegraf sends) is
//! parsed ([`line_protocol`]) and mapped to samples per host
//! ([`telegraf`]); Prometheus remote write is decoded ([`remote_write`])
//! and node_exporter's series mapped ([`node_exporter`]), both through
//! [`readings`] (rates from counters between requests). Here, who may
//! push for which host is checked, the hosts are found (or created, when
//! a push token may), and every sample of the request goes to ingest in
//! one transaction, acknowledged after commit like any other. What cannot
//! be taken (a malformed line, a host the token may not write, a sample
//! older than retention) is refused on its own, as InfluxDB 1.x does (a
//! partial write); the rest is stored.

pub mod line_protocol;
pub mod node_exporter;
pub mod readings;
pub mod remote_write;
pub mod telegraf;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use parking_lot::Mutex;
use sysmon_core::v1::MAX_BATCH_SAMPLES;
use sysmon_core::{Sample, UnixTime};

use self::line_protocol::Precision;
use self::readings::{Counters, HostCounters};
use super::auth::{validate_new_username, Auth, Pusher};
use super::ingest::Ingest;
use super::metrics::{Metrics, Source};
use crate::error::{Error, Result};
use crate::store::{ClientId, ClientSample, Store};

/// The password hash of a host a push token created: a valid PHC string
/// with no salt or hash, so no password ever matches it (such a host
/// pushes with the token; it cannot log in at `POST /client`).
const NO_PASSWORD: &str = "$argon2id$v=19$m=19456,t=2,p=1";
/// A foreign protocol's body as sent, and line protocol's once inflated
/// from gzip: Telegraf's default 1,000 lines are a few hundred KiB.
pub const FOREIGN_LIMIT: usize = 16 * 1024 * 1024;
/// A remote-write body once inflated: Prometheus sends a few hundred KiB
/// (2,000 samples), vmagent up to its 8 MiB `-remoteWrite.maxBlockSize`.
/// Decoded, a body takes some times its size, so less than for text.
pub const REMOTE_WRITE_LIMIT: usize = 8 * 1024 * 1024;
/// Lines one request may carry: Telegraf sends 1,000 by default, and
/// splits a batch that is answered 413.
pub const MAX_LINES: usize = 100_000;
/// Hosts one request may name: each is looked up (and maybe created).
pub const MAX_HOSTS: usize = 1_000;

/// What became of a write.
#[derive(Debug, Default, PartialEq)]
pub struct WriteOutcome {
    /// Samples stored (new or already there).
    pub samples: usize,
    /// Why the first thing refused was (`line 3: ...`, `host `x`: ...`),
    /// and how many were.
    pub first_refused: Option<String>,
    pub refused: usize,
}

/// Something of a request not taken, in request order (`count` of them
/// when one message stands for several).
#[derive(Debug)]
struct Refusal {
    order: usize,
    message: String,
    count: usize,
}

/// A request mapped to samples, before the hosts are checked.
#[derive(Debug, Default)]
struct Batch {
    /// Each sample with its host and where it came from (a line's number).
    samples: Vec<(String, Option<usize>, Sample)>,
    counters: Vec<(String, HostCounters)>,
    unmapped: u64,
    refused: Vec<Refusal>,
}

pub struct Integrations {
    store: Arc<dyn Store>,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
    counters: Arc<Mutex<Counters>>,
    /// Hosts push tokens created, by name: a request names tens of hosts,
    /// each a query otherwise. Remote write of 40 hosts per request went
    /// from 389k to 620k datapoints/s on SQLite, 210k to 513k on
    /// PostgreSQL (scripts/bench-remote-write.sh, docs/benchmarks.md).
    fleet_hosts: Mutex<HostCache>,
}

/// Names of hosts push tokens created, with their ids, as of one
/// [`Auth::generation`]: a removal anywhere changes it, and the cache is
/// emptied before it is used again.
#[derive(Default)]
struct HostCache {
    generation: u64,
    ids: HashMap<String, ClientId>,
}

/// Hosts kept in the cache at most (emptied when full).
const MAX_CACHED_HOSTS: usize = 100_000;

impl Integrations {
    pub fn new(
        store: Arc<dyn Store>,
        ingest: Ingest,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
    ) -> Self {
        Self {
            store,
            ingest,
            metrics,
            auth,
            counters: Arc::new(Mutex::new(Counters::default())),
            fleet_hosts: Mutex::new(HostCache::default()),
        }
    }

    fn cached_host(&self, host: &str) -> Option<ClientId> {
        let generation = self.auth.generation();
        let mut cache = self.fleet_hosts.lock();
        if cache.generation != generation {
            cache.ids.clear();
            cache.generation = generation;
        }
        cache.ids.get(host).copied()
    }

    /// Remembers a host push tokens created, unless a removal happened
    /// since `generation` was read (the id may be a removed client's).
    fn cache_host(&self, host: &str, id: ClientId, generation: u64) {
        let mut cache = self.fleet_hosts.lock();
        if cache.generation != generation || self.auth.generation() != generation {
            return;
        }
        if cache.ids.len() >= MAX_CACHED_HOSTS {
            cache.ids.clear();
        }
        cache.ids.insert(host.to_owned(), id);
    }

    /// A body of InfluxDB line protocol: its good lines are stored, its
    /// bad ones counted and the first returned.
    pub async fn write_line_protocol(
        &self,
        pusher: &Pusher,
        body: Bytes,
        precision: Precision,
    ) -> Result<WriteOutcome> {
        let now = UnixTime::now();
        let counters = self.counters.clone();
        // Parsing and mapping 16 MiB is tens of milliseconds of CPU: off
        // the async workers, and the shared counters held only to copy
        // this request's hosts'.
        let batch = blocking(move || {
            let text = utf8(&body)?;
            let lines = text.lines().count();
            if lines > MAX_LINES {
                return Err(Error::TooMuchAtOnce(format!(
                    "{lines} lines in one request; at most {MAX_LINES}: send smaller batches"
                )));
            }
            let (points, bad_lines) = line_protocol::parse_body(text, precision);
            let hosts: BTreeSet<&str> = points
                .iter()
                .filter_map(|(_, point)| point.tag("host"))
                .collect();
            let previous = counters.lock().of_hosts(hosts.into_iter());
            let mapped = telegraf::map_points(points, &previous, now);
            let refused = bad_lines
                .into_iter()
                .chain(mapped.refused)
                .map(|error| Refusal {
                    order: error.line,
                    message: error.to_string(),
                    count: 1,
                })
                .collect();
            Ok(Batch {
                samples: mapped
                    .samples
                    .into_iter()
                    .map(|(host, line, sample)| (host, Some(line), sample))
                    .collect(),
                counters: mapped.counters,
                unmapped: mapped.unmapped,
                refused,
            })
        })
        .await?;
        self.metrics.unmapped("influx", batch.unmapped);
        self.store_batch(pusher, batch, Source::Influx).await
    }

    /// A Prometheus remote-write body (snappy protobuf): node_exporter's
    /// series stored as samples, the rest counted.
    pub async fn write_remote(&self, pusher: &Pusher, body: Bytes) -> Result<WriteOutcome> {
        let now = UnixTime::now();
        let counters = self.counters.clone();
        let batch = blocking(move || {
            let request = remote_write::decode(&body, REMOTE_WRITE_LIMIT)?;
            let hosts: BTreeSet<&str> = request
                .timeseries
                .iter()
                .filter_map(node_exporter::host_of)
                .collect();
            let previous = counters.lock().of_hosts(hosts.into_iter());
            let mapped = node_exporter::map_series(&request, &previous, now, MAX_BATCH_SAMPLES)
                .map_err(|count| {
                    Error::TooMuchAtOnce(format!(
                        "more than {MAX_BATCH_SAMPLES} samples (hosts × times) in one request ({count} and counting): send smaller batches"
                    ))
                })?;
            let refused = mapped
                .first_refused
                .map(|message| Refusal {
                    order: 0,
                    message,
                    count: mapped.refused,
                })
                .into_iter()
                .collect();
            Ok(Batch {
                samples: mapped
                    .samples
                    .into_iter()
                    .map(|(host, sample)| (host, None, sample))
                    .collect(),
                counters: mapped.counters,
                unmapped: mapped.unmapped,
                refused,
            })
        })
        .await?;
        self.metrics.unmapped("remote_write", batch.unmapped);
        self.store_batch(pusher, batch, Source::RemoteWrite).await
    }

    /// Checks the hosts, stores what may be stored in one transaction, and
    /// says what was refused.
    async fn store_batch(
        &self,
        pusher: &Pusher,
        batch: Batch,
        source: Source,
    ) -> Result<WriteOutcome> {
        let Batch {
            samples,
            counters,
            mut refused,
            ..
        } = batch;
        if samples.len() > MAX_BATCH_SAMPLES {
            return Err(Error::TooMuchAtOnce(format!(
                "{} samples (hosts × times) in one request; at most {MAX_BATCH_SAMPLES}: send smaller batches",
                samples.len()
            )));
        }
        let mut by_host: BTreeMap<String, Vec<(Option<usize>, Sample)>> = BTreeMap::new();
        for (host, line, sample) in samples {
            by_host.entry(host).or_default().push((line, sample));
        }
        if by_host.len() > MAX_HOSTS {
            return Err(Error::TooMuchAtOnce(format!(
                "{} hosts in one request; at most {MAX_HOSTS}: send smaller batches",
                by_host.len()
            )));
        }
        let refuse = |line: Option<usize>, why: &str| Refusal {
            order: line.unwrap_or(0),
            message: match line {
                Some(line) => format!("line {line}: {why}"),
                None => why.to_owned(),
            },
            count: 1,
        };
        let mut clients = self
            .clients_of(pusher, by_host.keys().cloned().collect())
            .await?;
        let mut rows = Vec::new();
        let mut stored_hosts = BTreeSet::new();
        for (host, samples) in by_host {
            let answer = clients.remove(&host);
            let client = match answer.unwrap_or_else(|| Err(format!("host `{host}` not resolved")))
            {
                Ok(client) => client,
                Err(why) => {
                    refused.extend(samples.iter().map(|(line, _)| refuse(*line, &why)));
                    continue;
                }
            };
            for (line, sample) in samples {
                if self.ingest.expired(&sample) {
                    let why = format!(
                        "host `{host}`: time {} is older than raw samples are kept (retention.raw_days)",
                        sample.time.to_json()
                    );
                    refused.push(refuse(line, &why));
                } else {
                    rows.push(ClientSample { client, sample });
                    stored_hosts.insert(host.clone());
                }
            }
        }
        let stored = rows.len();
        if stored > 0 {
            self.ingest.store_rows(rows, source).await?;
            // Counters of the hosts stored only: a host refused here must
            // not set what another request's rates are made against.
            let kept: Vec<(String, HostCounters)> = counters
                .into_iter()
                .filter(|(host, _)| stored_hosts.contains(host))
                .collect();
            self.counters.lock().update(kept);
        }
        refused.sort_by_key(|refusal| refusal.order);
        Ok(WriteOutcome {
            samples: stored,
            refused: refused.iter().map(|refusal| refusal.count).sum(),
            first_refused: refused.into_iter().next().map(|refusal| refusal.message),
        })
    }

    /// The client the pusher writes each host as, or why it may not (its
    /// lines are refused, the request's others stored). Hosts not cached
    /// are looked up in one query and those to create created in one
    /// statement: a first request from a Prometheus of 1,000 hosts is two
    /// round trips, not 2,000.
    async fn clients_of(
        &self,
        pusher: &Pusher,
        hosts: Vec<String>,
    ) -> Result<HashMap<String, Result<ClientId, String>>> {
        let mut answers = HashMap::with_capacity(hosts.len());
        let token = match pusher {
            Pusher::Client(owner) => {
                for host in hosts {
                    let answer = match pusher.may_write(&host) {
                        true => Ok(owner.id),
                        false => Err(refused_scope(pusher, &host)),
                    };
                    answers.insert(host, answer);
                }
                return Ok(answers);
            }
            Pusher::Fleet(token) => token,
        };
        let mut unknown = Vec::new();
        for host in hosts {
            if !pusher.may_write(&host) {
                let why = refused_scope(pusher, &host);
                answers.insert(host, Err(why));
            } else if let Some(id) = self.cached_host(&host) {
                answers.insert(host, Ok(id));
            } else {
                unknown.push(host);
            }
        }
        let generation = self.auth.generation();
        let found = self.store.fleet_hosts(&unknown).await?;
        let mut to_create = Vec::new();
        for host in unknown {
            let answer = match found.get(&host) {
                Some(found) if found.created_by_fleet => {
                    self.cache_host(&host, found.id, generation);
                    Ok(found.id)
                }
                Some(_) => Err(format!(
                    "host `{host}` registered itself or was added by an admin: push tokens write only hosts push tokens created (push for it with its own token)"
                )),
                None if !token.create_hosts => Err(format!(
                    "no host named `{host}`: fleet token {} may not create hosts (a push token created with `create_hosts` may)",
                    token.id
                )),
                None if validate_new_username(&host).is_err() => Err(format!(
                    "`{host}` cannot be a host's name: it must start with a letter and be at most 64 printable characters"
                )),
                None => {
                    to_create.push(host);
                    continue;
                }
            };
            answers.insert(host, answer);
        }
        answers.extend(self.create_hosts(to_create).await?);
        Ok(answers)
    }

    /// Creates hosts for a push token; a name taken meanwhile is the
    /// push's if another push created it, refused if a client registered.
    async fn create_hosts(
        &self,
        hosts: Vec<String>,
    ) -> Result<Vec<(String, Result<ClientId, String>)>> {
        if hosts.is_empty() {
            return Ok(Vec::new());
        }
        let generation = self.auth.generation();
        let created = self.store.create_fleet_hosts(&hosts, NO_PASSWORD).await?;
        for (host, &id) in &created {
            self.cache_host(host, id, generation);
        }
        if !created.is_empty() {
            tracing::info!(
                hosts = created.len(),
                first = created.keys().min().map(String::as_str),
                "hosts created by a push token"
            );
        }
        let taken: Vec<String> = hosts
            .iter()
            .filter(|host| !created.contains_key(*host))
            .cloned()
            .collect();
        let found = self.store.fleet_hosts(&taken).await?;
        Ok(hosts
            .into_iter()
            .map(|host| {
                let answer = match (created.get(&host), found.get(&host)) {
                    (Some(&id), _) => Ok(id),
                    (None, Some(found)) if found.created_by_fleet => Ok(found.id),
                    _ => Err(format!(
                        "host `{host}` was registered a moment ago by a client: push tokens write only hosts push tokens created"
                    )),
                };
                (host, answer)
            })
            .collect())
    }
}

/// Why a pusher may not write a host its scope leaves out.
fn refused_scope(pusher: &Pusher, host: &str) -> String {
    format!("may not write for host `{host}`: {}", pusher.scope())
}

/// Runs CPU-heavy work (decoding, parsing, mapping) on a blocking thread.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| Error::Internal("decoding a request failed".into()))?
}

/// The body as text; the error names the line where it stops being UTF-8.
fn utf8(body: &[u8]) -> Result<&str> {
    std::str::from_utf8(body).map_err(|error| {
        let line = 1 + body[..error.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        Error::InvalidPayload(format!("line {line}: the body is not UTF-8"))
    })
}
