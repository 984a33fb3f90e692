//! What clients have sent, read back from PostgreSQL's day partitions.
//!
//! A lookup of a client's first or newest samples with no bound on time
//! keeps every day partition in its plan, and when it runs once per client
//! (the fleet overview) PostgreSQL rescans each of them for every client:
//! with a year of days, 2,000 clients took ~0.4 s in one statement. The
//! 1-hour rollups say where a client's samples lie (one probe of a small,
//! unpartitioned table), so each lookup here is bounded by them and the
//! bound is a bind parameter, which PostgreSQL prunes partitions by before
//! it runs: the same overview reads 2 or 3 partitions, ~20 ms.
//!
//! The bounds stay exact although rollups lag the samples by the fold
//! interval and may outlive them (retention): a rollup bucket exists only
//! for samples that were stored, so the newest three samples lie at or after
//! the oldest of the newest three hour buckets, and the first sample before
//! the end of the first hour bucket. Samples not folded yet only ever add to
//! the newer side of the first bound and the far side of the second. A
//! client with no rollup yet is looked up without a bound, and so is one
//! whose first hour's samples raw retention has dropped while its rollups
//! stay (the bounded lookup finds nothing then).

use crate::store::FullSamples;
use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use sqlx::{PgPool, Row};
use sysmon_core::{Sample, UnixTime};

use super::super::clients::{
    attach_latest_filesystems, budget_end, cut_to_budget, filesystem_history_sql,
    filesystems_by_sample, filesystems_sql, full_samples_sql, page_end,
};
use super::super::partitions::Day;
use super::super::{
    attach_filesystems, full_sample_from_row, sample_columns, ClientId, ClientOverview,
    FilesystemRow, SampleReads, TimeRange,
};
use super::PostgresStore;
use crate::error::Result;

const HOUR_US: i64 = 3_600_000_000;

/// Where a client's samples lie, from its 1-hour rollups.
#[derive(Debug, Clone, Copy)]
struct HourBounds {
    /// The first sample is before this (the end of the first hour bucket).
    first_before: Option<i64>,
    /// The newest three samples are at or after this (the oldest of the
    /// newest three hour buckets).
    newest_from: Option<i64>,
}

/// `(first hour, oldest of the newest three hours)` of the client whose id
/// is `c.id` in the enclosing query, as two columns.
const HOUR_BOUNDS_COLUMNS: &str = "
    (SELECT MIN(bucket_us) FROM rollup_1h WHERE client_id = c.id),
    (SELECT MIN(bucket_us) FROM (SELECT bucket_us FROM rollup_1h WHERE client_id = c.id
                                 ORDER BY bucket_us DESC LIMIT 3) AS newest)";

impl HourBounds {
    fn from_columns(first_hour: Option<i64>, newest_from: Option<i64>) -> HourBounds {
        HourBounds {
            first_before: first_hour.map(|hour| hour.saturating_add(HOUR_US)),
            newest_from,
        }
    }
}

#[async_trait]
impl SampleReads for PostgresStore {
    async fn log_span(&self, client: ClientId) -> Result<Option<(UnixTime, UnixTime)>> {
        let (first_hour, newest_from) = sqlx::query_as::<_, (Option<i64>, Option<i64>)>(&format!(
            "SELECT {HOUR_BOUNDS_COLUMNS} FROM (SELECT $1::int8 AS id) AS c"
        ))
        .bind(client.0)
        .fetch_one(&self.pool)
        .await?;
        let bounds = HourBounds::from_columns(first_hour, newest_from);
        let span = |first_before: i64| {
            sqlx::query_as::<_, (Option<i64>, Option<i64>)>(
                "SELECT (SELECT MIN(time_us) FROM samples WHERE client_id = $1 AND time_us < $2),
                        (SELECT MAX(time_us) FROM samples WHERE client_id = $1 AND time_us >= $3)",
            )
            .bind(client.0)
            .bind(first_before)
            .bind(bounds.newest_from.unwrap_or(i64::MIN))
            .fetch_one(&self.pool)
        };
        let (mut first, last) = span(bounds.first_before.unwrap_or(i64::MAX)).await?;
        if first.is_none() && last.is_some() {
            // The first hour's samples are gone (raw retention).
            first = span(i64::MAX).await?.0;
        }
        Ok(first
            .zip(last)
            .map(|(first, last)| (UnixTime::from_micros(first), UnixTime::from_micros(last))))
    }

    async fn full_samples(
        &self,
        client: ClientId,
        range: TimeRange,
        limit: u32,
    ) -> Result<FullSamples> {
        let (start, end) = range.bounds_micros();
        let pool = self.read_pools().await.queries;
        let rows = sqlx::query(&full_samples_sql("samples"))
            .bind(client.0)
            .bind(start)
            .bind(end)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
        let mut samples = rows
            .iter()
            .map(|row| full_sample_from_row(row, 0))
            .collect::<Result<Vec<_>>>()?;
        let end = page_end(&samples, limit, end);
        let mut filesystems: Vec<FilesystemRow> =
            sqlx::query_as::<_, (i64, String, i64, i64)>(&filesystems_sql("sample_filesystems"))
                .bind(client.0)
                .bind(start)
                .bind(end)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(FilesystemRow::from)
                .collect();
        let table_end = budget_end(&filesystems);
        let cut_at = cut_to_budget(&mut samples, &mut filesystems, table_end);
        attach_filesystems(&mut samples, filesystems);
        Ok(FullSamples { samples, cut_at })
    }

    async fn client_overviews(&self) -> Result<Vec<ClientOverview>> {
        let clients = sqlx::query_as::<_, (i64, String, Option<i64>, Option<i64>)>(&format!(
            "SELECT c.id, c.name, {HOUR_BOUNDS_COLUMNS} FROM clients c
             WHERE c.removed_at_us IS NULL ORDER BY c.name"
        ))
        .fetch_all(&self.pool)
        .await?;
        let bounds: Vec<(ClientId, HourBounds)> = clients
            .iter()
            .map(|&(id, _, first_hour, newest_from)| {
                (
                    ClientId(id),
                    HourBounds::from_columns(first_hour, newest_from),
                )
            })
            .collect();
        let mut firsts = first_sample_times(&self.pool, &bounds).await?;
        let mut newest = newest_samples(&self.pool, &bounds).await?;
        let mut overviews: Vec<ClientOverview> = clients
            .into_iter()
            .map(|(id, name, _, _)| {
                let mut samples = newest.remove(&id).unwrap_or_default().into_iter();
                ClientOverview {
                    id: ClientId(id),
                    name,
                    first_seen: firsts.remove(&id).map(UnixTime::from_micros),
                    latest: samples.next(),
                    previous: samples.map(|sample| sample.time).collect(),
                }
            })
            .collect();
        let usages = latest_filesystems(&self.pool, &overviews).await?;
        attach_latest_filesystems(&mut overviews, usages);
        Ok(overviews)
    }

    async fn filesystem_history(
        &self,
        client: ClientId,
        range: TimeRange,
        step: std::time::Duration,
    ) -> Result<Vec<FilesystemRow>> {
        let (start_us, end_us) = range.bounds_micros();
        let step_us = i64::try_from(step.as_micros()).unwrap_or(i64::MAX);
        let rows = sqlx::query_as::<_, (i64, String, i64, i64)>(&filesystem_history_sql(
            "sample_filesystems",
        ))
        .bind(client.0)
        .bind(start_us)
        .bind(end_us)
        .bind(step_us)
        .fetch_all(self.read_pools().await.queries)
        .await?;
        Ok(rows.into_iter().map(FilesystemRow::from).collect())
    }
}

/// Groups clients by a bound rounded to a day boundary on its loose side
/// (`round`), so that one statement with the group's bound as a parameter
/// serves every client of the group; `None` (no rollup yet) is its own
/// group, looked up without a bound (`unbounded`).
fn group_by_day(
    bounds: impl Iterator<Item = (ClientId, Option<i64>)>,
    round: impl Fn(i64) -> i64,
    unbounded: i64,
) -> BTreeMap<i64, Vec<i64>> {
    let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for (client, bound) in bounds {
        groups
            .entry(bound.map_or(unbounded, &round))
            .or_default()
            .push(client.0);
    }
    groups
}

/// Each client's first sample time.
async fn first_sample_times(
    pool: &PgPool,
    bounds: &[(ClientId, HourBounds)],
) -> Result<HashMap<i64, i64>> {
    let groups = group_by_day(
        bounds.iter().map(|(id, b)| (*id, b.first_before)),
        |before| Day::of(before.saturating_sub(1)).end_us(),
        i64::MAX,
    );
    let mut firsts = HashMap::with_capacity(bounds.len());
    let mut not_found = Vec::new();
    for (before, clients) in groups {
        for (id, first) in first_samples_before(pool, &clients, before).await? {
            match first {
                Some(first) => {
                    firsts.insert(id, first);
                }
                // The first hour's samples are gone (raw retention), or the
                // client has none at all.
                None if before != i64::MAX => not_found.push(id),
                None => {}
            }
        }
    }
    if !not_found.is_empty() {
        for (id, first) in first_samples_before(pool, &not_found, i64::MAX).await? {
            firsts.extend(first.map(|first| (id, first)));
        }
    }
    Ok(firsts)
}

/// Each client with its first sample time before `before`.
async fn first_samples_before(
    pool: &PgPool,
    clients: &[i64],
    before: i64,
) -> Result<Vec<(i64, Option<i64>)>> {
    Ok(sqlx::query_as::<_, (i64, Option<i64>)>(
        "SELECT c.id, (SELECT MIN(time_us) FROM samples WHERE client_id = c.id AND time_us < $2)
         FROM unnest($1::int8[]) AS c(id)",
    )
    .bind(clients)
    .bind(before)
    .fetch_all(pool)
    .await?)
}

/// Each client's newest three samples, newest first.
async fn newest_samples(
    pool: &PgPool,
    bounds: &[(ClientId, HourBounds)],
) -> Result<HashMap<i64, Vec<Sample>>> {
    let groups = group_by_day(
        bounds.iter().map(|(id, b)| (*id, b.newest_from)),
        |from| Day::of(from).start_us(),
        i64::MIN,
    );
    let columns = sample_columns();
    let sql = format!(
        "SELECT newest.* FROM unnest($1::int8[]) AS c(id)
         CROSS JOIN LATERAL (SELECT {columns} FROM samples
                             WHERE client_id = c.id AND time_us >= $2
                             ORDER BY time_us DESC LIMIT 3) AS newest
         ORDER BY newest.client_id, newest.time_us DESC"
    );
    let mut newest: HashMap<i64, Vec<Sample>> = HashMap::with_capacity(bounds.len());
    for (from, clients) in groups {
        let rows = sqlx::query(&sql)
            .bind(&clients)
            .bind(from)
            .fetch_all(pool)
            .await?;
        for row in &rows {
            let client: i64 = row.try_get(0)?;
            newest
                .entry(client)
                .or_default()
                .push(full_sample_from_row(row, 0)?);
        }
    }
    Ok(newest)
}

/// The file systems of each overview's latest sample: a probe of the
/// primary key per client, one statement per day those samples fall on
/// (so each touches one day partition; most fleets need one or two).
async fn latest_filesystems(
    pool: &PgPool,
    overviews: &[ClientOverview],
) -> Result<HashMap<(i64, i64), Vec<sysmon_core::v1::FilesystemUsage>>> {
    let mut days: BTreeMap<i64, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for overview in overviews {
        if let Some(latest) = &overview.latest {
            let time_us = latest.time.micros();
            let (clients, times) = days.entry(Day::of(time_us).start_us()).or_default();
            clients.push(overview.id.0);
            times.push(time_us);
        }
    }
    let mut rows = Vec::new();
    for (day_start, (clients, times)) in days {
        let day = sqlx::query_as::<_, (i64, i64, String, i64, i64)>(
            "SELECT f.client_id, f.time_us, f.mount_point, f.used_bytes, f.total_bytes
             FROM unnest($1::int8[], $2::int8[]) AS latest (client_id, time_us)
             JOIN sample_filesystems f
               ON f.client_id = latest.client_id AND f.time_us = latest.time_us
             WHERE f.time_us >= $3 AND f.time_us < $4",
        )
        .bind(&clients)
        .bind(&times)
        .bind(day_start)
        .bind(Day::of(day_start).end_us())
        .fetch_all(pool)
        .await?;
        rows.extend(day);
    }
    Ok(filesystems_by_sample(rows.into_iter().map(
        |(client, time_us, mount_point, used, total)| {
            (
                client,
                FilesystemRow::from((time_us, mount_point, used, total)),
            )
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_US: i64 = 86_400_000_000;

    #[test]
    fn groups_share_a_day_and_never_tighten_a_bound() {
        let at = |hours: i64| 20_000 * DAY_US + hours * HOUR_US;
        let bounds = [
            (ClientId(1), Some(at(1))),
            (ClientId(2), Some(at(23))),
            (ClientId(3), Some(at(25))),
            (ClientId(4), None),
        ];
        let from = group_by_day(bounds.into_iter(), |t| Day::of(t).start_us(), i64::MIN);
        assert_eq!(
            from.into_iter().collect::<Vec<_>>(),
            [
                (i64::MIN, vec![4]),
                (20_000 * DAY_US, vec![1, 2]),
                (20_001 * DAY_US, vec![3]),
            ]
        );
        // An exclusive upper bound on a day boundary stays that day's end.
        let before = group_by_day(
            [
                (ClientId(1), Some(20_001 * DAY_US)),
                (ClientId(2), Some(at(1))),
            ]
            .into_iter(),
            |t| Day::of(t.saturating_sub(1)).end_us(),
            i64::MAX,
        );
        assert_eq!(
            before.into_iter().collect::<Vec<_>>(),
            [(20_001 * DAY_US, vec![1, 2])]
        );
    }
}
