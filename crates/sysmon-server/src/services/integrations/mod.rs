//! Foreign protocols in: InfluxDB line protocol (what Telegraf sends) is
//! parsed ([`line_protocol`]) and mapped to samples per host
//! ([`telegraf`]); here, who may push for which host is checked, the hosts
//! are found (or created, when a fleet token may), and every sample of
//! the request goes to ingest in one transaction, acknowledged after
//! commit like any other.

pub mod line_protocol;
pub mod telegraf;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use sysmon_core::UnixTime;

use self::line_protocol::{LineError, Precision};
use self::telegraf::Counters;
use super::auth::{validate_new_username, Pusher};
use super::ingest::Ingest;
use super::metrics::{Metrics, Source};
use crate::error::{Error, Result};
use crate::store::{ClientId, ClientSample, Store};

/// The password hash of a host a fleet token created: a valid PHC string
/// with no salt or hash, so no password ever matches it (such a host
/// pushes with the fleet token; it cannot log in at `POST /client`).
const NO_PASSWORD: &str = "$argon2id$v=19$m=19456,t=2,p=1";
/// Hosts one request may name, at most.
pub const MAX_HOSTS_PER_REQUEST: usize = 10_000;

/// What became of a write.
#[derive(Debug, Default, PartialEq)]
pub struct WriteOutcome {
    /// Samples stored (new or already there).
    pub samples: usize,
    /// Lines refused, in order; the others were stored.
    pub refused: Vec<LineError>,
}

pub struct Integrations {
    store: Arc<dyn Store>,
    ingest: Ingest,
    metrics: Arc<Metrics>,
    counters: Mutex<Counters>,
}

impl Integrations {
    pub fn new(store: Arc<dyn Store>, ingest: Ingest, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            ingest,
            metrics,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// A body of InfluxDB line protocol: its good lines are stored (a
    /// partial write, as InfluxDB 1.x does), its bad ones returned. Nothing
    /// is stored when the pusher may not write for one of its hosts.
    pub async fn write_line_protocol(
        &self,
        pusher: &Pusher,
        body: &str,
        precision: Precision,
    ) -> Result<WriteOutcome> {
        let now = UnixTime::now();
        let (points, mut refused) = line_protocol::parse_body(body, precision);
        let mapped = {
            let counters = self.counters.lock();
            telegraf::map_points(points, &counters, now)
        };
        self.metrics.unmapped("influx", mapped.unmapped);
        refused.extend(mapped.refused);
        refused.sort_by_key(|error| error.line);
        let hosts: BTreeSet<&str> = mapped
            .samples
            .iter()
            .map(|(host, _, _)| host.as_str())
            .collect();
        let ids = self.resolve_hosts(pusher, hosts).await?;
        let rows: Vec<ClientSample> = mapped
            .samples
            .into_iter()
            .filter_map(|(host, _, sample)| {
                ids.get(&host)
                    .map(|&client| ClientSample { client, sample })
            })
            .collect();
        let samples = rows.len();
        if samples > 0 {
            self.ingest.store_rows(rows, Source::Influx).await?;
            self.counters.lock().update(mapped.counters);
        }
        Ok(WriteOutcome { samples, refused })
    }

    /// The client of every host named, after checking the pusher may write
    /// for each (all or nothing); unknown hosts are created when the
    /// pusher may, else refused.
    async fn resolve_hosts(
        &self,
        pusher: &Pusher,
        hosts: BTreeSet<&str>,
    ) -> Result<HashMap<String, ClientId>> {
        if hosts.len() > MAX_HOSTS_PER_REQUEST {
            return Err(Error::BadRequest(format!(
                "{} hosts in one request; at most {MAX_HOSTS_PER_REQUEST}",
                hosts.len()
            )));
        }
        if let Some(host) = hosts.iter().find(|host| !pusher.may_write(host)) {
            return Err(Error::Forbidden(format!(
                "may not write for host `{host}`: {}",
                pusher.scope()
            )));
        }
        let mut ids = HashMap::with_capacity(hosts.len());
        for host in hosts {
            let id = match self.store.find_client(host).await? {
                Some(client) => client.id,
                None => self.create_host(pusher, host).await?,
            };
            ids.insert(host.to_owned(), id);
        }
        Ok(ids)
    }

    async fn create_host(&self, pusher: &Pusher, host: &str) -> Result<ClientId> {
        if !pusher.may_create_hosts() {
            return Err(Error::NotFoundNamed(format!(
                "no host named `{host}`: this token may not create hosts (a fleet token created with `create_hosts` may)"
            )));
        }
        validate_new_username(host).map_err(|_| {
            Error::BadRequest(format!(
                "`{host}` cannot be a host's name: it must start with a letter and be at most 64 printable characters"
            ))
        })?;
        match self.store.create_client(host, NO_PASSWORD).await? {
            Some(id) => {
                tracing::info!(host, "host created by a fleet token");
                Ok(id)
            }
            // Created a moment ago by another request.
            None => self
                .store
                .find_client(host)
                .await?
                .map(|client| client.id)
                .ok_or_else(|| {
                    Error::Internal(format!("host `{host}` vanished as it was created"))
                }),
        }
    }
}
