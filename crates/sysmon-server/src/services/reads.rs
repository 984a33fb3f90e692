//! Every read the routes make of stored data: who may read which client,
//! the fleet, series, reports, read-backs and exports. Routes parse and
//! shape; the deciding (access, ranges, windows, tiers) happens here, and
//! only here is the store read.

use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use sysmon_core::{Sample, UnixTime};

use super::auth::Principal;
use super::downloads::{DownloadLimits, DownloadSlots};
use super::query::{self, ClientStatus, RetentionConfig, Series, SeriesRequest};
use super::rollups::Rollups;
use crate::error::{Error, Result};
use crate::store::{ClientId, SampleChunks, Store, Tier, TimeRange};

/// Raw samples are exported in windows of this length, so a month of
/// per-second samples streams instead of sitting in memory.
const EXPORT_WINDOW: Duration = Duration::from_secs(6 * 3600);

/// An export's range when `from` is not given: the day before `to`.
const DEFAULT_EXPORT_RANGE: Duration = Duration::from_secs(86_400);

#[derive(Clone)]
pub struct Reads {
    store: Arc<dyn Store>,
    /// Summaries not yet in the rollup tables, which series must include.
    rollups: Arc<Rollups>,
    /// How long each tier is kept: series avoid tiers that lost a range.
    retention: RetentionConfig,
    /// Reports and exports running at once.
    downloads: Arc<DownloadSlots>,
}

impl Reads {
    pub fn new(
        store: Arc<dyn Store>,
        rollups: Arc<Rollups>,
        retention: RetentionConfig,
        downloads: DownloadLimits,
    ) -> Self {
        Self {
            store,
            rollups,
            retention,
            downloads: DownloadSlots::new(downloads),
        }
    }

    /// "sqlite" or "postgresql".
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    pub async fn count_clients(&self) -> Result<u64> {
        self.store.count_clients().await
    }

    /// The named client, once the principal may read it: 403 first (so a
    /// refusal does not reveal whether the name exists), then 404.
    pub async fn readable_client(&self, principal: &Principal, name: &str) -> Result<ClientId> {
        principal.check_read(name)?;
        self.store
            .find_client(name)
            .await?
            .map(|client| client.id)
            .ok_or_else(|| Error::NotFoundNamed(format!("no client named `{name}`")))
    }

    /// The clients the principal may read, by name, with their status.
    pub async fn fleet(&self, principal: &Principal) -> Result<Vec<ClientStatus>> {
        let now = UnixTime::now();
        Ok(self
            .store
            .client_overviews()
            .await?
            .into_iter()
            .filter(|overview| principal.may_read(&overview.name))
            .map(|overview| ClientStatus::from_overview(overview, now))
            .collect())
    }

    /// A client's series as planned from the request (see [`query::plan`]):
    /// raw samples as stored, or a rollup tier with what is still pending
    /// for it.
    pub async fn series(&self, client: ClientId, request: &SeriesRequest) -> Result<Series> {
        let (plan, query) = query::series_query(client.0, request, &self.retention)?;
        let read = || self.store.series(&query);
        let buckets = match query.tier {
            Tier::Raw => read().await?,
            _ => self.rollups.series_with_pending(&query, read).await?,
        };
        Ok(Series {
            plan,
            metrics: query.metrics,
            buckets,
        })
    }

    /// Time of a client's first and last sample.
    pub async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>> {
        self.store.log_span(client).await
    }

    /// The original's report: the three original metrics, streamed, in
    /// one of the client's download slots until the stream ends or its
    /// reader goes away.
    pub async fn report(&self, client: ClientId, range: TimeRange) -> Result<SampleChunks> {
        let slot = self.downloads.take(client)?;
        let mut chunks = self.store.samples(client, range).await?;
        let (relay, relayed) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            let _slot = slot;
            while let Some(chunk) = chunks.recv().await {
                if relay.send(chunk).await.is_err() {
                    return;
                }
            }
        });
        Ok(relayed)
    }

    /// Every metric of a client's samples in a range.
    pub async fn full_samples(&self, client: ClientId, range: TimeRange) -> Result<Vec<Sample>> {
        self.store.full_samples(client, range).await
    }

    /// Every sample of a client from `from` (default: a day before `to`)
    /// to `to` (default: now), both inclusive, in time order, a window at a
    /// time. Only the span the client has samples in is read, so a far-off
    /// bound cannot turn into millions of empty windows.
    pub async fn export(
        &self,
        client: ClientId,
        from: Option<UnixTime>,
        to: Option<UnixTime>,
    ) -> Result<impl Stream<Item = Result<Vec<Sample>>> + Send + 'static> {
        let end = to.unwrap_or_else(UnixTime::now).micros();
        let start = from.map_or(
            end.saturating_sub(micros(DEFAULT_EXPORT_RANGE)),
            UnixTime::micros,
        );
        if start > end {
            return Err(Error::BadRequest("`from` must not be after `to`".into()));
        }
        let slot = Arc::new(self.downloads.take(client)?);
        let windows = match self.store.log_span(client).await? {
            Some((first, last)) => {
                export_windows(start.max(first.micros()), end.min(last.micros()))
            }
            None => export_windows(1, 0),
        };
        let store = self.store.clone();
        Ok(futures_util::stream::try_unfold(
            windows,
            move |mut windows| {
                let store = store.clone();
                // Held by the stream, so given back when it is dropped.
                let _slot = slot.clone();
                async move {
                    let Some(range) = windows.next() else {
                        return Ok(None);
                    };
                    let samples = store.full_samples(client, range).await?;
                    Ok(Some((samples, windows)))
                }
            },
        ))
    }
}

/// `[start, end]` cut into [`EXPORT_WINDOW`]s; none when `start > end`.
fn export_windows(start: i64, end: i64) -> impl Iterator<Item = TimeRange> + Send {
    let width = micros(EXPORT_WINDOW);
    let first = (start <= end).then_some(start);
    std::iter::successors(first, move |&from| {
        let to = window_end(from, width, end);
        (to < end).then(|| to + 1)
    })
    .map(move |from| TimeRange {
        start: Some(UnixTime::from_micros(from)),
        end: Some(UnixTime::from_micros(window_end(from, width, end))),
    })
}

fn window_end(from: i64, width: i64, end: i64) -> i64 {
    from.saturating_add(width - 1).min(end)
}

fn micros(duration: Duration) -> i64 {
    duration.as_micros() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(windows: impl Iterator<Item = TimeRange>) -> Vec<(i64, i64)> {
        windows
            .map(|range| {
                let (start, end) = (range.start.unwrap(), range.end.unwrap());
                (start.micros(), end.micros())
            })
            .collect()
    }

    #[test]
    fn export_windows_cover_the_range_once() {
        let width = micros(EXPORT_WINDOW);
        assert_eq!(bounds(export_windows(5, 10)), [(5, 10)]);
        assert_eq!(
            bounds(export_windows(0, 2 * width)),
            [
                (0, width - 1),
                (width, 2 * width - 1),
                (2 * width, 2 * width)
            ]
        );
        assert_eq!(bounds(export_windows(1, 0)), []);
        assert_eq!(
            bounds(export_windows(i64::MAX - 1, i64::MAX)),
            [(i64::MAX - 1, i64::MAX)]
        );
    }
}
