//! Completing stored samples with a later part of them (a Prometheus
//! scrape split across remote-write requests, a Telegraf tick across two
//! flushes): the rows of a batch its insert did not store, each a replay
//! or such a part ([`sysmon_core::metrics::fill_missing`]).
//!
//! One transaction, after the insert: the stored rows are read `FOR
//! UPDATE` (so two servers or writers completing one sample take turns and
//! each sees what the other added), written back whole, and given the file
//! systems they lacked; this transaction merges what they gained into the
//! rollup tables. Only folded samples are completed: one a
//! `rollup_journal` row still names (of any server) has its summary in a
//! server's memory, or read back whole from the row after a crash, so it
//! is deferred until folded.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use sqlx::{PgPool, Row};
use sysmon_core::metrics::fill_missing;
use sysmon_core::Sample;

use super::super::{sample_columns, ClientId, ClientSample, Fold, SampleKey, SampleRow};
use super::{
    bind_filesystems, bind_sample_arrays, read_samples_by_keys, sample_arrays, upsert_buckets,
};
use crate::error::Result;

/// What completing a batch's stored samples did.
#[derive(Debug, Default)]
pub(super) struct Completion {
    /// The values added, as samples of those only.
    pub added: Vec<ClientSample>,
    /// Keys of pending samples, left alone.
    pub deferred: Vec<SampleKey>,
}

/// Completes the folded samples `parts` are parts of (rows the insert did
/// not store new, each key once, sorted by key so that concurrent
/// completions lock rows in one order).
pub(super) async fn complete_stored(pool: &PgPool, parts: &[&ClientSample]) -> Result<Completion> {
    let keys: Vec<SampleKey> = parts.iter().map(|part| key_of(part)).collect();
    let mut transaction = pool.begin().await?;
    let mut stored = read_stored(&mut transaction, &keys).await?;
    let mut completion = Completion::default();
    let mut changed = BTreeSet::new();
    for part in parts {
        let key = key_of(part);
        let Some(sample) = stored.get_mut(&key) else {
            continue;
        };
        if let Some(values) = fill_missing(sample, &part.sample) {
            changed.insert(key);
            completion.added.push(ClientSample {
                client: part.client,
                sample: values,
            });
        }
    }
    if completion.added.is_empty() {
        // Replays only.
        transaction.commit().await?;
        return Ok(completion);
    }
    let journalled = journalled_keys(&mut transaction, &changed).await?;
    if !journalled.is_empty() {
        changed.retain(|key| !journalled.contains(key));
        completion
            .added
            .retain(|added| !journalled.contains(&key_of(added)));
        completion.deferred = journalled.into_iter().collect();
    }
    // Each row once, however many parts completed it.
    let completed_rows: Vec<SampleRow> = changed
        .iter()
        .filter_map(|key| {
            Some(SampleRow::from_sample(&ClientSample {
                client: ClientId(key.0),
                sample: stored.get(key)?.clone(),
            }))
        })
        .collect();
    if !completed_rows.is_empty() {
        update_rows(&mut transaction, &completed_rows).await?;
        insert_filesystems(&mut transaction, &completion.added).await?;
        for (tier, buckets) in Fold::of_added(&completion.added).tier_buckets() {
            if !buckets.is_empty() {
                upsert_buckets(tier, buckets)
                    .execute(&mut *transaction)
                    .await?;
            }
        }
    }
    transaction.commit().await?;
    Ok(completion)
}

fn key_of(row: &ClientSample) -> SampleKey {
    (row.client.0, row.sample.time.micros())
}

/// The stored samples with these keys, locked, with their file systems.
async fn read_stored(
    transaction: &mut sqlx::PgConnection,
    keys: &[SampleKey],
) -> Result<HashMap<SampleKey, Sample>> {
    read_samples_by_keys(
        transaction,
        keys,
        "ORDER BY s.client_id, s.time_us FOR UPDATE OF s",
    )
    .await
}

/// Writes completed samples' metric columns over their rows.
async fn update_rows(transaction: &mut sqlx::PgConnection, rows: &[SampleRow]) -> Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let columns: Vec<&str> = sample_columns().split(", ").collect();
        let metrics = &columns[2..];
        let values: Vec<String> = metrics.iter().map(|name| format!("u.{name}")).collect();
        format!(
            "UPDATE samples s SET ({}) = ({})
             FROM UNNEST({}) AS u ({})
             WHERE s.client_id = u.client_id AND s.time_us = u.time_us",
            metrics.join(", "),
            values.join(", "),
            sample_arrays(),
            columns.join(", ")
        )
    });
    bind_sample_arrays(sqlx::query(sql.as_str()), rows)
        .execute(&mut *transaction)
        .await?;
    Ok(())
}

/// The file systems parts added, beside their samples.
async fn insert_filesystems(
    transaction: &mut sqlx::PgConnection,
    added: &[ClientSample],
) -> Result<()> {
    let filesystems = super::super::filesystem_rows(added);
    if filesystems.is_empty() {
        return Ok(());
    }
    bind_filesystems(
        sqlx::query(
            "INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
             ON CONFLICT DO NOTHING",
        ),
        &filesystems,
    )
    .execute(&mut *transaction)
    .await?;
    Ok(())
}

/// Which of these samples a `rollup_journal` row still names (of any
/// server): their summaries are not in the rollup tables yet.
async fn journalled_keys(
    transaction: &mut sqlx::PgConnection,
    wanted: &BTreeSet<SampleKey>,
) -> Result<HashSet<SampleKey>> {
    let mut clients: Vec<i64> = wanted.iter().map(|key| key.0).collect();
    clients.dedup();
    let rows = sqlx::query(
        "SELECT client_ids, times_us FROM rollup_journal WHERE client_ids && $1::BIGINT[]",
    )
    .bind(&clients)
    .fetch_all(&mut *transaction)
    .await?;
    let mut journalled = HashSet::new();
    for row in &rows {
        let clients: Vec<i64> = row.try_get(0)?;
        let times: Vec<i64> = row.try_get(1)?;
        journalled.extend(
            clients
                .into_iter()
                .zip(times)
                .filter(|key| wanted.contains(key)),
        );
    }
    Ok(journalled)
}
