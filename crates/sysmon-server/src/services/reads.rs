//! Every read the routes make of stored data: who may read which client,
//! the fleet, series, reports, read-backs and exports. Routes parse and
//! shape; the deciding (access, ranges, windows, tiers) happens here, and
//! only here is the store read.

use std::sync::Arc;

use futures_util::Stream;
use sysmon_core::{Sample, UnixTime};

use super::auth::Principal;
use super::downloads::{DownloadLimits, DownloadSlots};
use super::query::{self, ClientStatus, RetentionConfig, Series, SeriesRequest};
use super::rollups::Rollups;
use crate::error::{Error, Result};
use crate::store::{ClientId, FilesystemRow, SampleChunks, Store, Tier, TimeRange};

/// Points of a file-system history at most: enough for a chart's width.
pub const FILESYSTEM_HISTORY_POINTS: u32 = 400;

/// A client's file systems over a range, sampled once per step.
#[derive(Debug)]
pub struct FilesystemHistory {
    pub plan: query::Plan,
    /// By time, then mount point.
    pub rows: Vec<FilesystemRow>,
}

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
        self.fleet_where(|name| principal.may_read(name)).await
    }

    /// The clients whose names pass `readable`, by name, with their status.
    pub async fn fleet_where(&self, readable: impl Fn(&str) -> bool) -> Result<Vec<ClientStatus>> {
        let now = UnixTime::now();
        let mut labels: std::collections::HashMap<ClientId, Vec<String>> =
            std::collections::HashMap::new();
        for (client, label) in self.store.all_labels().await? {
            labels.entry(client).or_default().push(label);
        }
        Ok(self
            .store
            .client_overviews()
            .await?
            .into_iter()
            .filter(|overview| readable(&overview.name))
            .map(|overview| {
                let labels = labels.remove(&overview.id).unwrap_or_default();
                ClientStatus {
                    labels,
                    ..ClientStatus::from_overview(overview, now)
                }
            })
            .collect())
    }

    /// A client's series as planned from the request (see [`query::plan`]):
    /// raw samples as stored, or a rollup tier with what is still pending
    /// for it.
    pub async fn series(&self, client: ClientId, request: &SeriesRequest) -> Result<Series> {
        let (plan, query) = query::series_query(client.0, request, &self.retention)?;
        // Read first: a sample stored in between is then in the buckets
        // and after `latest`, counted twice by a live view (until its next
        // reload), never missed.
        let latest = self.store.log_span(client).await?.map(|(_, last)| last);
        let read = || self.store.series(&query);
        let buckets = match query.tier {
            Tier::Raw => read().await?,
            _ => self.rollups.series_with_pending(&query, read).await?,
        };
        Ok(Series {
            latest,
            plan,
            metrics: query.metrics,
            buckets,
        })
    }

    /// Time of a client's first and last sample.
    /// The file systems of a client's latest sample, and its time; `None`
    /// before its first sample.
    pub async fn latest_filesystems(
        &self,
        client: ClientId,
    ) -> Result<Option<(UnixTime, Vec<sysmon_core::v1::FilesystemUsage>)>> {
        let Some((_, last)) = self.store.log_span(client).await? else {
            return Ok(None);
        };
        let range = TimeRange {
            start: Some(last),
            end: Some(last),
        };
        let read = self.store.full_samples(client, range, 1).await?;
        Ok(read.samples.into_iter().next().map(|sample| {
            let filesystems = sample
                .extended
                .map(|extended| extended.filesystems)
                .unwrap_or_default();
            (sample.time, filesystems)
        }))
    }

    /// A client's file systems over a range (its `from` and `to`; the rest
    /// of the request is not used), at most [`FILESYSTEM_HISTORY_POINTS`]
    /// points: the first sample's in each step, as stored.
    pub async fn filesystem_history(
        &self,
        client: ClientId,
        request: &SeriesRequest,
    ) -> Result<FilesystemHistory> {
        let request = SeriesRequest {
            points: Some(FILESYSTEM_HISTORY_POINTS),
            resolution: Some(Tier::Raw),
            step: None,
            ..request.clone()
        };
        let plan = query::plan(&request, &self.retention, UnixTime::now().micros())?;
        let range = TimeRange {
            start: Some(UnixTime::from_micros(plan.start_us)),
            end: Some(UnixTime::from_micros(plan.end_us)),
        };
        let step = std::time::Duration::from_micros(plan.step_us.max(1) as u64);
        let rows = self.store.filesystem_history(client, range, step).await?;
        Ok(FilesystemHistory { plan, rows })
    }

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

    /// The first `limit` (at most [`MAX_PAGE_SAMPLES`]) of a client's
    /// samples in a range, every metric, and where the next page starts.
    pub async fn samples_page(
        &self,
        client: ClientId,
        range: TimeRange,
        limit: u32,
    ) -> Result<SamplesPage> {
        if !(1..=MAX_PAGE_SAMPLES).contains(&limit) {
            return Err(Error::BadRequest(format!(
                "`limit` must be from 1 to {MAX_PAGE_SAMPLES}"
            )));
        }
        // Held while the page is read and built, as a download's.
        let _slot = self.downloads.take(client)?;
        read_page(self.store.as_ref(), client, range, limit).await
    }

    /// Every sample of a client from `from` (default: a day before `to`)
    /// to `to` (default: now), both inclusive, in time order, a page of
    /// [`EXPORT_PAGE_SAMPLES`] at a time, so a year of per-second samples
    /// streams in bounded memory.
    pub async fn export(
        &self,
        client: ClientId,
        from: Option<UnixTime>,
        to: Option<UnixTime>,
    ) -> Result<impl Stream<Item = Result<Vec<Sample>>> + Send + 'static> {
        let end = to.unwrap_or_else(UnixTime::now);
        let start = from.unwrap_or_else(|| {
            UnixTime::from_micros(end.micros().saturating_sub(DEFAULT_EXPORT_RANGE_US))
        });
        if start > end {
            return Err(Error::BadRequest("`from` must not be after `to`".into()));
        }
        let slot = Arc::new(self.downloads.take(client)?);
        let store = self.store.clone();
        Ok(futures_util::stream::try_unfold(Some(start), move |next| {
            let store = store.clone();
            // Held by the stream, so given back when it is dropped.
            let _slot = slot.clone();
            async move {
                let Some(start) = next else {
                    return Ok(None);
                };
                let range = TimeRange {
                    start: Some(start),
                    end: Some(end),
                };
                let page = read_page(store.as_ref(), client, range, EXPORT_PAGE_SAMPLES).await?;
                Ok(Some((page.samples, page.next_from)))
            }
        }))
    }
}

/// The most samples one read of `GET /api/v1/samples` returns.
pub const MAX_PAGE_SAMPLES: u32 = 10_000;

/// Samples per page of an export: with up to 256 file systems each, a page
/// stays within tens of megabytes.
const EXPORT_PAGE_SAMPLES: u32 = 1_000;

/// An export's range when `from` is not given: the day before `to`.
const DEFAULT_EXPORT_RANGE_US: i64 = 86_400 * 1_000_000;

/// Up to a page of samples, oldest first.
#[derive(Debug)]
pub struct SamplesPage {
    pub samples: Vec<Sample>,
    /// The time of the first sample past this page, where the next read
    /// starts; `None` when the range is done. Samples are unique per client
    /// and time, so an inclusive start there repeats and skips none.
    pub next_from: Option<UnixTime>,
}

/// Reads one sample more than asked for, to know where the next page
/// starts without a second query. A page whose samples carry many file
/// systems holds fewer samples (the store's `PAGE_FILESYSTEM_ROWS`), so a
/// response's size is bounded in bytes, not only in samples.
async fn read_page(
    store: &dyn Store,
    client: ClientId,
    range: TimeRange,
    limit: u32,
) -> Result<SamplesPage> {
    let read = store.full_samples(client, range, limit + 1).await?;
    let mut samples = read.samples;
    // Cut short by its file systems' size, the read ends before `limit`.
    let next_from = match read.cut_at {
        Some(cut_at) => Some(cut_at),
        None if samples.len() > limit as usize => samples.pop().map(|sample| sample.time),
        None => None,
    };
    Ok(SamplesPage { samples, next_from })
}
