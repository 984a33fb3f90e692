//! The one connection that writes samples: ingest into the hot table, and
//! the rollup fold, which moves what it folded from there into `samples`.
//!
//! Ingest appends to `hot_samples`, a rowid table in commit order, so a
//! commit writes the page it appends to, not one page per host as
//! `samples` (clustered by client and time) would. Those rows are also the
//! rollup journal (see [`super::super::journal`]): a commit's entry is
//! named by its last rowid, negated, and writes nothing more. A fold merges
//! the summaries and moves the rows it accounts for into `samples`, sorted
//! by key (each host's page written once for all the rows it gains), in one
//! transaction. So a sample is in exactly one of the two tables, and in
//! the hot one exactly while its summary is not in the rollup tables.
//!
//! Bytes written per stored row, `scripts/profile-ingest.sh sqlite
//! http-form` (64 hosts, 20 to 30 rows per commit): 7,207 into `samples`;
//! 1,103 into a hot table with a `rollup_journal` row per commit, moved by
//! a compaction of its own; 873 with the hot table as the journal. The
//! journal row was a second page per commit (~220 bytes a row in a
//! simulation of the pattern).
//!
//! The hot table has no index on (client, time), which would cost a page
//! per host per commit again. Duplicates are found without it: the writer
//! keeps the keys of the hot rows in memory ([`HotRows`], read from the
//! table when it opens) and looks the rest up in `samples`, a read.
//!
//! A host with many samples in one commit (an agent's back-fill, a v1
//! batch) fills whole pages of its own in `samples`, so those rows go
//! straight there, journalled by a `rollup_journal` row per host naming
//! their keys, as before the hot table: through the hot table each would be
//! written twice, looked up once and deleted once (v1 batches of 1000:
//! ~300k samples/s directly, ~150k through the hot table,
//! `compare-ingest.sh`).
//!
//! A fold commits in parts of `ingest.fold_part_hosts` hosts, each its own
//! transaction, and hands the writer to waiting ingest between them: a fold
//! for 10,000 hosts rewrites a page of each host in `samples` and in each
//! rollup tier, 0.26 to 0.51 s in one transaction, during which every
//! commit waited (p99 382 ms for 10,000 agents at 1 Hz). A part moves the
//! hot rows of its hosts and deletes their journal rows with their
//! summaries, so the invariant holds per host and a crash between parts
//! loses nothing. Hot rowids are assigned by the writer and never reused
//! ([`HotRows::next_rowid`]), so no row committed between two parts can
//! fall in the range a later part moves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use super::super::journal::{self, JournalSeq};
use super::super::rollup::{self, Bucket, Tier};
use super::super::{
    sample_columns, ClientSample, Column, Durability, Fold, FoldProgress, Inserted, InstanceId,
    JournalEntry, SampleKey, SampleRow, SAMPLE_COLUMN_COUNT,
};
use super::completion;
use crate::error::{Error, Result};

/// The writer's page cache, in KiB (a negative `cache_size` is KiB).
const WRITER_CACHE_KIB: i64 = -64 * 1024;

/// Hot rows past which a commit asks for an early fold. Every read of a
/// client scans the hot table (it has no index), so this bounds that scan
/// (49,000 hot rows of other hosts added 2.8 ms to a 100k-row report); the
/// more rows a fold moves, the fewer times each host's last page is
/// rewritten (moving 20,000 rows at a time instead of 50,000 cost ~75 bytes
/// per row more in a simulation, 64 hosts).
const FOLD_SOON_ROWS: usize = 50_000;

/// A host with at least this many samples in a commit has them stored
/// in `samples` directly: that many rows of one host share its pages, so
/// the hot table would save nothing and cost a second write.
const DIRECT_ROWS: usize = 32;

/// Most hot rows in one orphaned journal entry, so that recovering a large
/// hot table reads its samples a bounded part at a time.
const ORPHAN_ENTRY_ROWS: i64 = 100;

/// The upsert of one bucket into a tier's table, kept prepared by the
/// writer; SQL text is parsed once per connection.
fn upsert_sql(tier: Tier) -> &'static str {
    static SQL: OnceLock<Vec<String>> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        Tier::ROLLUPS
            .iter()
            .map(|tier| {
                format!(
                    "INSERT INTO {} AS t ({}) VALUES ({}){}",
                    tier.table(),
                    rollup::rollup_columns(),
                    numbered_parameters(3 + rollup::ROLLUP_VALUE_COLUMNS),
                    rollup::merge_on_conflict()
                )
            })
            .collect()
    });
    &all[tier.rollup_index()]
}

/// `?1, ?2, ..., ?count`.
fn numbered_parameters(count: usize) -> String {
    (1..=count)
        .map(|index| format!("?{index}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rows of the hot table with consecutive rowids, written under one
/// instance: the unit the journal entries of the hot table refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HotRun {
    /// `None` for rows an earlier process left: orphans, folded from the
    /// table.
    owner: Option<InstanceId>,
    first: i64,
    last: i64,
}

/// What the writer knows of the hot table. Changed only once the
/// transaction that changed the table has committed; after a failure it is
/// read again from the table ([`HotRows::read`]).
#[derive(Debug, Default)]
struct HotRows {
    /// The key of every hot row, with its rowid: what makes a sample
    /// there a duplicate, and where to complete it.
    keys: HashMap<SampleKey, i64>,
    /// Every hot row, by rowid.
    runs: Vec<HotRun>,
    /// The rowid the next hot row gets. Never lower than one the table
    /// held in this process, so a row committed while a fold is in parts
    /// lands past every range it moves.
    next_rowid: i64,
}

impl HotRows {
    /// The hot table's rows, each owned as in `previous` (`None` if no
    /// run there holds its rowid).
    fn read(connection: &rusqlite::Connection, previous: &HotRows) -> rusqlite::Result<HotRows> {
        let mut hot = HotRows {
            next_rowid: previous.next_rowid.max(1),
            ..HotRows::default()
        };
        let mut statement = connection
            .prepare("SELECT rowid, client_id, time_us FROM hot_samples ORDER BY rowid")?;
        let mut rows = statement.query([])?;
        while let Some(row) = rows.next()? {
            let rowid: i64 = row.get(0)?;
            hot.keys.insert((row.get(1)?, row.get(2)?), rowid);
            let owner = previous
                .runs
                .iter()
                .find(|run| (run.first..=run.last).contains(&rowid))
                .and_then(|run| run.owner);
            hot.append(owner, rowid, rowid);
            hot.next_rowid = hot.next_rowid.max(rowid + 1);
        }
        Ok(hot)
    }

    /// Rows `first..=last` were appended under `owner`.
    fn append(&mut self, owner: Option<InstanceId>, first: i64, last: i64) {
        match self.runs.last_mut() {
            Some(run) if run.owner == owner && run.last + 1 == first => run.last = last,
            _ => self.runs.push(HotRun { owner, first, last }),
        }
    }

    /// The rows a fold's hot entries account for: per run, from its first
    /// row to its last entry's. `None` when an entry names a row that is no
    /// longer hot (folded already).
    fn fold_ranges(&self, journal: &[JournalSeq]) -> Option<Vec<(i64, i64)>> {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &seq in journal.iter().filter(|&&seq| seq < 0) {
            let rowid = -seq;
            let run = self
                .runs
                .iter()
                .find(|run| (run.first..=run.last).contains(&rowid))?;
            match ranges.iter_mut().find(|(first, _)| *first == run.first) {
                Some((_, upto)) => *upto = (*upto).max(rowid),
                None => ranges.push((run.first, rowid)),
            }
        }
        Some(ranges)
    }

    /// Rows `first..=upto` (the start of a run) were moved to `samples`.
    fn moved(&mut self, first: i64, upto: i64) {
        for run in &mut self.runs {
            if (first..=upto).contains(&run.first) {
                run.first = upto + 1;
            }
        }
        self.runs.retain(|run| run.first <= run.last);
    }

    /// Rowid ranges of at most [`ORPHAN_ENTRY_ROWS`] covering the runs not
    /// owned by `live`, from each run's start, at most `limit` of them.
    fn orphan_ranges(&self, live: InstanceId, limit: usize) -> Vec<(i64, i64)> {
        let mut ranges = Vec::new();
        for run in self.runs.iter().filter(|run| run.owner != Some(live)) {
            let mut first = run.first;
            while first <= run.last && ranges.len() < limit {
                let last = run.last.min(first.saturating_add(ORPHAN_ENTRY_ROWS - 1));
                ranges.push((first, last));
                first = last + 1;
            }
        }
        ranges
    }
}

pub(super) struct BlockingWriter {
    state: parking_lot::Mutex<WriterState>,
    /// Hosts per part of a fold: a part rewrites about four pages per host
    /// (its last page of `samples` and its row in each rollup tier), so
    /// this bounds how long an ingest commit waits for a fold.
    fold_part_hosts: usize,
}

struct WriterState {
    connection: rusqlite::Connection,
    hot: HotRows,
    /// The host each `rollup_journal` row names, for the rows that name
    /// one host's samples only (all this version writes): a fold in parts
    /// deletes such a row with its host's part. A fold with any other row
    /// commits in one part.
    journal_hosts: HashMap<JournalSeq, i64>,
}

impl WriterState {
    /// After a failed transaction: what the table holds is the truth (a
    /// commit that reported failure may have happened all the same).
    fn reread_hot(&mut self) {
        match HotRows::read(&self.connection, &self.hot) {
            Ok(hot) => self.hot = hot,
            Err(error) => tracing::error!(%error, "cannot read the hot table back"),
        }
    }
}

impl BlockingWriter {
    pub(super) fn open(
        path: &Path,
        durability: Durability,
        fold_part_hosts: usize,
    ) -> Result<Self> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        connection.busy_timeout(Duration::from_secs(10))?;
        // The file is already in WAL mode (set by the pool, and persistent).
        // FULL: an acknowledged sample survives a power cut, not only a
        // crash; group commit pays the fsync once per batch. NORMAL: WAL
        // writes reach the OS at commit and disk at checkpoints.
        let synchronous = match durability {
            Durability::Full => "FULL",
            Durability::Relaxed => "NORMAL",
        };
        connection.pragma_update(None, "synchronous", synchronous)?;
        // Each sample of a big fleet touches its host's rollup rows; with
        // SQLite's 2 MB default cache 10,000 hosts' rows no longer fit and
        // every commit reads pages back from the OS.
        connection.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        connection.pragma_update(None, "foreign_keys", "ON")?;
        let hot = HotRows::read(&connection, &HotRows::default())?;
        if !hot.keys.is_empty() {
            tracing::info!(
                samples = hot.keys.len(),
                "the hot table holds samples an earlier run had not folded"
            );
        }
        Ok(Self {
            state: parking_lot::Mutex::new(WriterState {
                connection,
                hot,
                journal_hosts: HashMap::new(),
            }),
            fold_part_hosts: fold_part_hosts.max(1),
        })
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, WriterState> {
        self.state.lock()
    }

    /// Appends a batch's new samples to the hot table in one transaction;
    /// their rows are the commit's journal entry.
    pub(super) fn insert(
        &self,
        samples: &[ClientSample],
        instance: InstanceId,
    ) -> rusqlite::Result<Inserted> {
        let mut state = self.lock();
        let outcome = insert_batch(&mut state, samples, instance);
        if outcome.is_err() {
            state.reread_hot();
        }
        outcome
    }

    /// Merges a fold into the rollup tables, deletes its `rollup_journal`
    /// entries and moves the hot rows of its hot entries into `samples`,
    /// in parts of `fold_part_hosts` hosts, handing the writer to
    /// waiting ingest between parts. Fails with [`Error::FoldConflict`],
    /// changing nothing, when any of them is gone; a part that fails
    /// leaves the parts before it committed.
    pub(super) fn fold(&self, fold: &Fold, progress: &dyn FoldProgress) -> Result<()> {
        let plan = {
            let state = self.lock();
            FoldPlan::new(&state, fold, self.fold_part_hosts)?
        };
        let mut moved = 0;
        for (index, part) in plan.parts.iter().enumerate() {
            let mut state = self.lock();
            let outcome = fold_part(&mut state, fold, &plan, part, progress);
            match outcome {
                Ok(count) => moved += count,
                Err(error) => {
                    state.reread_hot();
                    return Err(error);
                }
            }
            if index + 1 == plan.parts.len() {
                if moved != plan.hot_rows {
                    state.reread_hot();
                    return Err(Error::Internal(format!(
                        "a rollup fold moved {moved} hot rows where its entries name {}",
                        plan.hot_rows
                    )));
                }
                for &(first, upto) in &plan.ranges {
                    state.hot.moved(first, upto);
                }
            }
            // Fair: a commit waiting for the writer goes before the next
            // part, so ingest waits for one part at most.
            parking_lot::MutexGuard::unlock_fair(state);
        }
        Ok(())
    }

    /// Up to `limit` journal entries no live instance accounts for: what
    /// earlier versions left in `rollup_journal`, then the hot rows of
    /// earlier runs (and of instances given up), a bounded run at a time.
    pub(super) fn orphans(&self, live: InstanceId, limit: usize) -> Result<Vec<JournalEntry>> {
        let mut state = self.lock();
        let mut entries = read_journal_orphans(&state.connection, live, limit)?;
        for entry in &entries {
            if let Some(host) = one_host(&entry.keys) {
                state.journal_hosts.insert(entry.seq, host);
            }
        }
        let remaining = limit.saturating_sub(entries.len());
        let mut keys = state.connection.prepare_cached(
            "SELECT client_id, time_us FROM hot_samples WHERE rowid BETWEEN ?1 AND ?2",
        )?;
        for (first, last) in state.hot.orphan_ranges(live, remaining) {
            entries.push(JournalEntry {
                seq: -last,
                keys: keys
                    .query_map((first, last), |row| Ok((row.get(0)?, row.get(1)?)))?
                    .collect::<rusqlite::Result<_>>()?,
            });
        }
        Ok(entries)
    }
}

fn key_of(item: &ClientSample) -> SampleKey {
    (item.client.0, item.sample.time.micros())
}

fn insert_batch(
    state: &mut WriterState,
    samples: &[ClientSample],
    instance: InstanceId,
) -> rusqlite::Result<Inserted> {
    let WriterState {
        connection,
        hot,
        journal_hosts,
    } = state;
    let direct = hosts_with_runs(samples);
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut in_batch = HashSet::with_capacity(samples.len());
    let stored = insert_rows(
        &transaction,
        Destination::Samples,
        hot,
        &mut in_batch,
        samples,
        &direct,
    )?;
    insert_filesystems(&transaction, "sample_filesystems", samples, &stored)?;
    let mut host_entries = Vec::new();
    for (host, keys) in keys_by_host(&stored) {
        host_entries.push((insert_journal_row(&transaction, instance, &keys)?, host));
    }
    let new = insert_rows(
        &transaction,
        Destination::Hot,
        hot,
        &mut in_batch,
        samples,
        &direct,
    )?;
    insert_filesystems(&transaction, "hot_sample_filesystems", samples, &new)?;
    let known = completion::Known {
        hot: &hot.keys,
        journal_hosts,
        instance,
    };
    let completion =
        completion::complete_stored(&transaction, &known, samples, &in_batch, |fold| {
            fold.tier_buckets()
                .try_for_each(|(tier, buckets)| upsert_buckets(&transaction, tier, buckets))
        })?;
    transaction.commit()?;
    journal_hosts.extend(host_entries.iter().copied());
    let hot_keys: Vec<SampleKey> = new.iter().map(|row| row.key).collect();
    let rowids = new.first().zip(new.last()).map(|(a, b)| (a.rowid, b.rowid));
    if let Some((first, last)) = rowids {
        hot.keys.extend(new.iter().map(|row| (row.key, row.rowid)));
        hot.append(Some(instance), first, last);
        hot.next_rowid = last + 1;
    }
    let keys = stored.iter().map(|row| row.key).chain(hot_keys).collect();
    Ok(Inserted {
        keys,
        journal: host_entries
            .into_iter()
            .map(|(seq, _)| seq)
            .chain(rowids.map(|(_, last)| -last))
            .collect(),
        fold_soon: hot.keys.len() >= FOLD_SOON_ROWS,
        completed: completion.added,
        deferred: completion.deferred,
    })
}

/// The keys of rows stored directly, per host in ascending order.
fn keys_by_host(rows: &[NewRow]) -> BTreeMap<i64, Vec<SampleKey>> {
    let mut hosts: BTreeMap<i64, Vec<SampleKey>> = BTreeMap::new();
    for row in rows {
        hosts.entry(row.key.0).or_default().push(row.key);
    }
    hosts
}

/// The one host whose samples `keys` are, if they are one host's.
fn one_host(keys: &[SampleKey]) -> Option<i64> {
    let (host, _) = *keys.first()?;
    keys.iter().all(|&(other, _)| other == host).then_some(host)
}

/// The clients with at least [`DIRECT_ROWS`] samples in the batch.
fn hosts_with_runs(samples: &[ClientSample]) -> HashSet<i64> {
    let mut counts: std::collections::HashMap<i64, usize> = std::collections::HashMap::new();
    for item in samples {
        *counts.entry(item.client.0).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|&(_, count)| count >= DIRECT_ROWS)
        .map(|(client, _)| client)
        .collect()
}

/// A `rollup_journal` row naming samples stored in `samples` directly;
/// its seq is their journal entry.
fn insert_journal_row(
    connection: &rusqlite::Connection,
    instance: InstanceId,
    keys: &[SampleKey],
) -> rusqlite::Result<JournalSeq> {
    connection
        .prepare_cached("INSERT INTO rollup_journal (instance_id, keys) VALUES (?1, ?2)")?
        .execute((instance.0, journal::pack_keys(keys)))?;
    Ok(connection.last_insert_rowid())
}

/// How a fold is committed: the hot rows it moves and its parts.
struct FoldPlan {
    /// Rowid ranges of the hot rows its entries account for.
    ranges: Vec<(i64, i64)>,
    /// How many rows those ranges hold.
    hot_rows: usize,
    parts: Vec<FoldPart>,
}

/// The hosts `first..=through` of a fold, committed in one transaction.
struct FoldPart {
    first: i64,
    through: i64,
    /// The `rollup_journal` rows naming these hosts' samples.
    journal: Vec<JournalSeq>,
}

impl FoldPlan {
    /// Fails with [`Error::FoldConflict`] when an entry is no longer hot.
    fn new(state: &WriterState, fold: &Fold, part_hosts: usize) -> Result<FoldPlan> {
        let ranges = state
            .hot
            .fold_ranges(&fold.journal)
            .ok_or(Error::FoldConflict {
                expected: fold.journal.len(),
                found: 0,
            })?;
        // The runs hold every rowid from their first to their last.
        let hot_rows = ranges
            .iter()
            .map(|&(first, upto)| (upto - first + 1) as usize)
            .sum();
        let rows: Vec<JournalSeq> = fold
            .journal
            .iter()
            .copied()
            .filter(|&seq| seq > 0)
            .collect();
        let hosts: Option<Vec<(JournalSeq, i64)>> = rows
            .iter()
            .map(|&seq| Some((seq, *state.journal_hosts.get(&seq)?)))
            .collect();
        let parts = match hosts {
            Some(hosts) => split_by_host(fold, hosts, part_hosts),
            // A row naming several hosts (left by an earlier version)
            // must go with all their summaries at once.
            None => vec![FoldPart {
                first: i64::MIN,
                through: i64::MAX,
                journal: rows,
            }],
        };
        Ok(FoldPlan {
            ranges,
            hot_rows,
            parts,
        })
    }
}

/// Parts of `part_hosts` of the fold's hosts, covering every host id
/// between them (a hot row in its ranges belongs to one of them).
fn split_by_host(
    fold: &Fold,
    journal_hosts: Vec<(JournalSeq, i64)>,
    part_hosts: usize,
) -> Vec<FoldPart> {
    let mut hosts: Vec<i64> = fold
        .buckets
        .iter()
        .flatten()
        .map(|bucket| bucket.client_id)
        .chain(journal_hosts.iter().map(|&(_, host)| host))
        .collect();
    hosts.sort_unstable();
    hosts.dedup();
    let mut parts = Vec::new();
    let mut first = i64::MIN;
    for chunk in hosts.chunks(part_hosts) {
        let last = chunk[chunk.len() - 1];
        let through = if last == hosts[hosts.len() - 1] {
            i64::MAX
        } else {
            last
        };
        parts.push(FoldPart {
            first,
            through,
            journal: journal_hosts
                .iter()
                .filter(|&&(_, host)| (first..=through).contains(&host))
                .map(|&(seq, _)| seq)
                .collect(),
        });
        first = through.saturating_add(1);
    }
    if parts.is_empty() {
        parts.push(FoldPart {
            first: i64::MIN,
            through: i64::MAX,
            journal: Vec::new(),
        });
    }
    parts
}

/// Commits one part: merges its hosts' buckets, deletes their journal
/// rows, moves their hot rows; returns how many rows it moved.
fn fold_part(
    state: &mut WriterState,
    fold: &Fold,
    plan: &FoldPlan,
    part: &FoldPart,
    progress: &dyn FoldProgress,
) -> Result<usize> {
    let WriterState {
        connection,
        hot,
        journal_hosts,
    } = state;
    let transaction =
        connection.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for (tier, buckets) in fold.tier_buckets() {
        let from = buckets.partition_point(|bucket| bucket.client_id < part.first);
        let to = buckets.partition_point(|bucket| bucket.client_id <= part.through);
        upsert_buckets(&transaction, tier, &buckets[from..to])?;
    }
    delete_journal_rows(&transaction, &part.journal)?;
    let mut moved = Vec::new();
    for &(first, upto) in &plan.ranges {
        moved.extend(move_hot_rows(
            &transaction,
            (first, upto),
            (part.first, part.through),
        )?);
    }
    progress.committing();
    transaction.commit()?;
    progress.committed(part.through);
    for key in &moved {
        hot.keys.remove(key);
    }
    for seq in &part.journal {
        journal_hosts.remove(seq);
    }
    Ok(moved.len())
}

/// Deletes the fold's `rollup_journal` entries (positive seqs).
fn delete_journal_rows(connection: &rusqlite::Connection, journal: &[JournalSeq]) -> Result<()> {
    let rows: Vec<JournalSeq> = journal.iter().copied().filter(|&seq| seq > 0).collect();
    let mut delete = connection.prepare_cached("DELETE FROM rollup_journal WHERE seq = ?1")?;
    let mut deleted = 0;
    for seq in &rows {
        deleted += delete.execute([seq])?;
    }
    if deleted != rows.len() {
        return Err(Error::FoldConflict {
            expected: rows.len(),
            found: deleted,
        });
    }
    Ok(())
}

/// Moves the hot rows with rowids in `rowids` and hosts in `hosts` (and
/// their file systems) into `samples`, sorted by key; returns the keys of
/// the rows it took from the hot table.
fn move_hot_rows(
    connection: &rusqlite::Connection,
    rowids: (i64, i64),
    hosts: (i64, i64),
) -> rusqlite::Result<Vec<SampleKey>> {
    let bounds = (rowids.0, rowids.1, hosts.0, hosts.1);
    static SAMPLES: OnceLock<String> = OnceLock::new();
    let samples = SAMPLES.get_or_init(|| {
        format!(
            "INSERT INTO samples ({columns}) SELECT {columns} FROM hot_samples
             WHERE rowid BETWEEN ?1 AND ?2 AND client_id BETWEEN ?3 AND ?4
             ORDER BY client_id, time_us ON CONFLICT (client_id, time_us) DO NOTHING",
            columns = sample_columns()
        )
    });
    let inserted = connection.prepare_cached(samples)?.execute(bounds)?;
    // The file systems of the moved samples; before they leave the hot
    // table, which names them. Parents first: sample_filesystems has a
    // foreign key to samples.
    connection
        .prepare_cached(
            "INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
             SELECT client_id, time_us, mount_point, used_bytes, total_bytes
             FROM hot_sample_filesystems
             WHERE (client_id, time_us) IN
                   (SELECT client_id, time_us FROM hot_samples
                    WHERE rowid BETWEEN ?1 AND ?2 AND client_id BETWEEN ?3 AND ?4)
             ORDER BY client_id, time_us, mount_point ON CONFLICT DO NOTHING",
        )?
        .execute(bounds)?;
    connection
        .prepare_cached(
            "DELETE FROM hot_sample_filesystems WHERE (client_id, time_us) IN
             (SELECT client_id, time_us FROM hot_samples
              WHERE rowid BETWEEN ?1 AND ?2 AND client_id BETWEEN ?3 AND ?4)",
        )?
        .execute(bounds)?;
    let keys: Vec<SampleKey> = connection
        .prepare_cached(
            "DELETE FROM hot_samples WHERE rowid BETWEEN ?1 AND ?2 AND client_id BETWEEN ?3 AND ?4
             RETURNING client_id, time_us",
        )?
        .query_map(bounds, |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    if inserted != keys.len() {
        // Cannot happen while ingest checks both tables; should it, the
        // sample stored first is kept, as for any duplicate.
        tracing::warn!(
            hot = keys.len(),
            inserted,
            "hot samples were already in `samples`; kept the stored ones"
        );
    }
    Ok(keys)
}

/// `rollup_journal` entries of instances other than `live`: on SQLite
/// only what earlier versions, which journalled there, left.
fn read_journal_orphans(
    connection: &rusqlite::Connection,
    live: InstanceId,
    limit: usize,
) -> Result<Vec<JournalEntry>> {
    let mut statement = connection.prepare_cached(
        "SELECT seq, keys FROM rollup_journal WHERE instance_id <> ?1 ORDER BY seq LIMIT ?2",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = statement.query_map((live.0, limit), |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
    })?;
    let mut entries = Vec::new();
    for row in rows {
        let (seq, keys) = row?;
        let keys = journal::unpack_keys(&keys).ok_or_else(|| {
            Error::Internal(format!(
                "rollup journal entry {seq} is not a list of sample keys"
            ))
        })?;
        entries.push(JournalEntry { seq, keys });
    }
    Ok(entries)
}

/// A sample newly stored, in the hot table or in `samples`.
struct NewRow {
    /// Its position in the batch.
    index: usize,
    key: SampleKey,
    /// Its rowid (meaningful in the hot table).
    rowid: i64,
}

/// `INSERT INTO samples (every sample column) VALUES (?1, ...)`, skipping
/// stored keys; into the hot table, with the rowid as the last parameter.
fn insert_sample_sql(into: Destination) -> String {
    match into {
        Destination::Samples => format!(
            "INSERT INTO samples ({}) VALUES ({}) ON CONFLICT (client_id, time_us) DO NOTHING",
            sample_columns(),
            numbered_parameters(SAMPLE_COLUMN_COUNT)
        ),
        Destination::Hot => format!(
            "INSERT INTO hot_samples ({}, rowid) VALUES ({})",
            sample_columns(),
            numbered_parameters(SAMPLE_COLUMN_COUNT + 1)
        ),
    }
}

/// Binds a sample's columns to `insert` and runs it; the rows it changed.
fn execute_insert(
    insert: &mut rusqlite::CachedStatement<'_>,
    item: &ClientSample,
    rowid: Option<i64>,
) -> rusqlite::Result<usize> {
    for (position, column) in SampleRow::from_sample(item).columns().enumerate() {
        match column {
            Column::Integer(value) => insert.raw_bind_parameter(position + 1, value)?,
            Column::Float(value) => insert.raw_bind_parameter(position + 1, value)?,
        }
    }
    if let Some(rowid) = rowid {
        insert.raw_bind_parameter(SAMPLE_COLUMN_COUNT + 1, rowid)?;
    }
    insert.raw_execute()
}

/// Where [`insert_rows`] stores a batch's samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Destination {
    /// `samples` itself: the samples of the clients with a run.
    Samples,
    /// The hot table: the samples of every other client.
    Hot,
}

/// Stores the samples bound for `into` that are not stored yet. A sample
/// is stored already when its key is hot, in `samples` (a point read for
/// the hot table; the insert does nothing for `samples`), or earlier in
/// this batch (the first row is kept).
fn insert_rows(
    connection: &rusqlite::Connection,
    into: Destination,
    hot: &HotRows,
    in_batch: &mut HashSet<SampleKey>,
    samples: &[ClientSample],
    direct: &HashSet<i64>,
) -> rusqlite::Result<Vec<NewRow>> {
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let [to_samples, to_hot] = SQL.get_or_init(|| {
        [
            insert_sample_sql(Destination::Samples),
            insert_sample_sql(Destination::Hot),
        ]
    });
    let mut insert = connection.prepare_cached(match into {
        Destination::Samples => to_samples,
        Destination::Hot => to_hot,
    })?;
    let mut stored =
        connection.prepare_cached("SELECT 1 FROM samples WHERE client_id = ?1 AND time_us = ?2")?;
    let mut new = Vec::new();
    for (index, item) in samples.iter().enumerate() {
        let key = key_of(item);
        let bound_here = direct.contains(&key.0) == (into == Destination::Samples);
        if !bound_here || hot.keys.contains_key(&key) || in_batch.contains(&key) {
            continue;
        }
        if into == Destination::Hot && stored.exists(key)? {
            continue;
        }
        let rowid = (into == Destination::Hot).then(|| hot.next_rowid + new.len() as i64);
        if execute_insert(&mut insert, item, rowid)? == 0 {
            continue; // in `samples` already
        }
        in_batch.insert(key);
        new.push(NewRow {
            index,
            key,
            rowid: connection.last_insert_rowid(),
        });
    }
    Ok(new)
}

/// The file systems of the newly stored samples into `table` (the one
/// beside theirs), a mount point once per sample (its first row).
fn insert_filesystems(
    connection: &rusqlite::Connection,
    table: &str,
    samples: &[ClientSample],
    new: &[NewRow],
) -> rusqlite::Result<()> {
    let mut insert = connection.prepare_cached(&format!(
        "INSERT INTO {table} (client_id, time_us, mount_point, used_bytes, total_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5)"
    ))?;
    for row in new {
        let Some(extended) = samples[row.index].sample.extended.as_deref() else {
            continue;
        };
        let mut mounts = HashSet::new();
        for fs in &extended.filesystems {
            if mounts.insert(fs.mount_point.as_str()) {
                insert_filesystem(&mut insert, row.key, fs)?;
            }
        }
    }
    Ok(())
}

/// Runs a prepared `INSERT ... (client_id, time_us, mount_point,
/// used_bytes, total_bytes) VALUES (?1, ..., ?5)` for one file system.
pub(super) fn insert_filesystem(
    insert: &mut rusqlite::CachedStatement<'_>,
    (client, time): SampleKey,
    fs: &sysmon_core::v1::FilesystemUsage,
) -> rusqlite::Result<()> {
    insert.execute((
        client,
        time,
        &fs.mount_point,
        fs.used_bytes as i64,
        fs.total_bytes as i64,
    ))?;
    Ok(())
}

fn upsert_buckets(
    connection: &rusqlite::Connection,
    tier: Tier,
    buckets: &[Bucket],
) -> rusqlite::Result<()> {
    let mut upsert = connection.prepare_cached(upsert_sql(tier))?;
    for bucket in buckets {
        upsert.raw_bind_parameter(1, bucket.client_id)?;
        upsert.raw_bind_parameter(2, bucket.start_us)?;
        upsert.raw_bind_parameter(3, bucket.sample_count)?;
        let mut index = 4;
        for summary in &bucket.metrics {
            upsert.raw_bind_parameter(index, summary.min)?;
            upsert.raw_bind_parameter(index + 1, summary.max)?;
            upsert.raw_bind_parameter(index + 2, summary.sum)?;
            upsert.raw_bind_parameter(index + 3, summary.count)?;
            index += 4;
        }
        upsert.raw_execute()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: InstanceId = InstanceId(1);
    const B: InstanceId = InstanceId(3);

    fn runs(hot: &HotRows) -> Vec<(Option<InstanceId>, i64, i64)> {
        hot.runs
            .iter()
            .map(|run| (run.owner, run.first, run.last))
            .collect()
    }

    #[test]
    fn commits_of_one_instance_extend_its_run() {
        let mut hot = HotRows::default();
        hot.append(Some(A), 1, 3);
        hot.append(Some(A), 4, 4);
        hot.append(Some(B), 5, 9);
        // Not adjacent (the rows before were moved): a run of its own.
        hot.append(Some(B), 12, 12);
        assert_eq!(
            runs(&hot),
            [(Some(A), 1, 4), (Some(B), 5, 9), (Some(B), 12, 12)]
        );
    }

    #[test]
    fn a_fold_moves_each_run_up_to_its_last_entry() {
        let mut hot = HotRows::default();
        hot.append(None, 1, 10);
        hot.append(Some(A), 11, 20);
        // Entries are negated last rowids; positive seqs are journal rows.
        assert_eq!(
            hot.fold_ranges(&[-13, -15, 7, -10]),
            Some(vec![(11, 15), (1, 10)])
        );
        assert_eq!(hot.fold_ranges(&[-21]), None, "no longer hot");
        hot.moved(11, 15);
        hot.moved(1, 10);
        assert_eq!(runs(&hot), [(Some(A), 16, 20)]);
        assert_eq!(hot.fold_ranges(&[-13]), None, "folded already");
    }

    #[test]
    fn orphans_are_the_runs_of_other_instances_in_bounded_entries() {
        let mut hot = HotRows::default();
        hot.append(None, 1, 150);
        hot.append(Some(A), 151, 160);
        hot.append(Some(B), 161, 170);
        assert_eq!(hot.orphan_ranges(B, 10), [(1, 100), (101, 150), (151, 160)]);
        assert_eq!(hot.orphan_ranges(B, 2), [(1, 100), (101, 150)]);
        assert!(hot.orphan_ranges(A, 0).is_empty());
    }

    #[test]
    fn a_fold_splits_into_parts_covering_every_host_with_its_journal_rows() {
        let mut fold = Fold::default();
        for host in [3, 5, 9, 12, 20] {
            fold.buckets[0].push(Bucket::empty(host, 0));
            fold.buckets[2].push(Bucket::empty(host, 0));
        }
        // Host 30 only has samples stored directly in the fold.
        let parts = split_by_host(&fold, vec![(7, 5), (8, 30), (11, 12)], 2);
        let bounds: Vec<_> = parts
            .iter()
            .map(|part| (part.first, part.through))
            .collect();
        assert_eq!(
            bounds,
            [(i64::MIN, 5), (6, 12), (13, i64::MAX)],
            "contiguous, from the lowest host id to the highest"
        );
        let journal: Vec<_> = parts.iter().map(|part| part.journal.clone()).collect();
        assert_eq!(journal, [vec![7], vec![11], vec![8]]);

        let whole = split_by_host(&Fold::default(), vec![], 2);
        assert_eq!(whole.len(), 1);
        assert_eq!((whole[0].first, whole[0].through), (i64::MIN, i64::MAX));
    }

    #[test]
    fn moved_rows_leave_every_run_that_started_among_them() {
        let mut hot = HotRows::default();
        // A run split by rows moved before a failure and read back.
        hot.append(Some(A), 1, 3);
        hot.append(Some(A), 6, 8);
        hot.append(Some(A), 10, 14);
        hot.moved(1, 12);
        assert_eq!(runs(&hot), [(Some(A), 13, 14)]);
    }
}
