//! Completing stored samples with a later part of them: the rows of a
//! batch that were not new, each either a replay (it adds nothing) or the
//! rest of a sample split across requests (a Prometheus scrape over several
//! remote-write requests, a Telegraf tick over two flushes). See
//! [`sysmon_core::metrics::fill_missing`] for what a part may add.
//!
//! Only a folded sample (in `samples`, no journal row naming it) is
//! completed, and this transaction merges what it gains into the rollup
//! tables. A pending one (hot, or stored directly with its
//! `rollup_journal` row still there) is deferred: its summary waits in
//! memory, or is read back whole from the row after a crash, so values
//! added to the row now would be counted twice then.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use sysmon_core::metrics::fill_missing;
use sysmon_core::v1::FilesystemUsage;
use sysmon_core::Sample;

use super::super::journal::{self, JournalSeq};
use super::super::{
    full_sample_from_columns, sample_columns, ClientId, ClientSample, Column, Fold, InstanceId,
    SampleKey, SampleRow, SAMPLE_COLUMN_COUNT,
};

/// Where a stored sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// In the hot table, at this rowid.
    Hot(i64),
    /// In `samples`.
    Folded,
}

impl Place {
    fn filesystem_table(self) -> &'static str {
        match self {
            Place::Hot(_) => "hot_sample_filesystems",
            Place::Folded => "sample_filesystems",
        }
    }
}

/// What a batch's completions need to know of the writer's state.
pub(super) struct Known<'a> {
    /// Every hot row's key.
    pub hot: &'a HashMap<SampleKey, i64>,
    /// The host each of this process's `rollup_journal` rows names.
    pub journal_hosts: &'a HashMap<JournalSeq, i64>,
    pub instance: InstanceId,
}

/// What completing a batch's stored samples did.
#[derive(Debug, Default)]
pub(super) struct Completion {
    /// The values added, as samples of those only.
    pub added: Vec<ClientSample>,
    /// Keys of pending samples, left alone.
    pub deferred: Vec<SampleKey>,
}

/// Completes the folded samples that the batch's rows not in `new` are
/// parts of, in the caller's transaction, and merges what they gained into
/// the rollup tables with `upsert`.
pub(super) fn complete_stored(
    connection: &rusqlite::Connection,
    known: &Known<'_>,
    samples: &[ClientSample],
    new: &HashSet<SampleKey>,
    upsert: impl Fn(&Fold) -> rusqlite::Result<()>,
) -> rusqlite::Result<Completion> {
    let mut completion = Completion::default();
    if new.len() == samples.len() {
        return Ok(completion); // every row new: the usual batch
    }
    let mut journalled: HashMap<i64, HashSet<SampleKey>> = HashMap::new();
    for item in samples {
        let key = (item.client.0, item.sample.time.micros());
        if new.contains(&key) {
            continue;
        }
        let place = known
            .hot
            .get(&key)
            .map_or(Place::Folded, |&rowid| Place::Hot(rowid));
        let pending = place != Place::Folded || {
            let keys = match journalled.entry(item.client.0) {
                Entry::Occupied(keys) => keys.into_mut(),
                Entry::Vacant(host) => host.insert(journalled_keys(connection, known, key.0)?),
            };
            keys.contains(&key)
        };
        let Some(mut stored) = read_stored(connection, place, key)? else {
            continue; // a key twice in the batch, stored from its first row
        };
        if pending {
            if fill_missing(&mut stored, &item.sample).is_some() {
                completion.deferred.push(key);
            }
            continue;
        }
        let Some(added) = fill_missing(&mut stored, &item.sample) else {
            continue; // a replay
        };
        update_stored(connection, item.client.0, &stored)?;
        insert_filesystems(connection, key, &added)?;
        completion.added.push(ClientSample {
            client: item.client,
            sample: added,
        });
    }
    upsert(&Fold::of_added(&completion.added))?;
    Ok(completion)
}

/// A stored sample with its file systems; `None` when it is not there.
fn read_stored(
    connection: &rusqlite::Connection,
    place: Place,
    (client, time): SampleKey,
) -> rusqlite::Result<Option<Sample>> {
    static SQL: OnceLock<[String; 2]> = OnceLock::new();
    let [hot, folded] = SQL.get_or_init(|| {
        [
            format!(
                "SELECT {} FROM hot_samples WHERE rowid = ?3 AND client_id = ?1 AND time_us = ?2",
                sample_columns()
            ),
            format!(
                "SELECT {} FROM samples WHERE client_id = ?1 AND time_us = ?2",
                sample_columns()
            ),
        ]
    });
    let mut statement;
    let mut rows = match place {
        Place::Hot(rowid) => {
            statement = connection.prepare_cached(hot)?;
            statement.query((client, time, rowid))?
        }
        Place::Folded => {
            statement = connection.prepare_cached(folded)?;
            statement.query((client, time))?
        }
    };
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let mut sample =
        full_sample_from_columns(time, 2, |index| row.get(index), |index| row.get(index))?;
    let mut filesystems = connection.prepare_cached(&format!(
        "SELECT mount_point, used_bytes, total_bytes FROM {}
         WHERE time_us = ?2 AND client_id = ?1",
        place.filesystem_table()
    ))?;
    let stored = filesystems.query_map((client, time), |row| {
        Ok(FilesystemUsage {
            mount_point: row.get(0)?,
            used_bytes: row.get::<_, i64>(1)?.max(0) as u64,
            total_bytes: row.get::<_, i64>(2)?.max(0) as u64,
        })
    })?;
    let extended = sample.extended.get_or_insert_with(Default::default);
    for filesystem in stored {
        extended.filesystems.push(filesystem?);
    }
    Ok(Some(sample))
}

/// Writes a completed sample's metric columns over its row in `samples`.
fn update_stored(
    connection: &rusqlite::Connection,
    client: i64,
    sample: &Sample,
) -> rusqlite::Result<()> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let metrics: Vec<&str> = sample_columns().split(", ").skip(2).collect();
        let values: Vec<String> = (3..=SAMPLE_COLUMN_COUNT)
            .map(|index| format!("?{index}"))
            .collect();
        format!(
            "UPDATE samples SET ({}) = ({}) WHERE client_id = ?1 AND time_us = ?2",
            metrics.join(", "),
            values.join(", ")
        )
    });
    let mut update = connection.prepare_cached(sql)?;
    let row = SampleRow::from_sample(&ClientSample {
        client: ClientId(client),
        sample: sample.clone(),
    });
    for (position, column) in row.columns().enumerate() {
        match column {
            Column::Integer(value) => update.raw_bind_parameter(position + 1, value)?,
            Column::Float(value) => update.raw_bind_parameter(position + 1, value)?,
        }
    }
    update.raw_execute()?;
    Ok(())
}

/// The file systems a part added, beside its sample's row in `samples`.
fn insert_filesystems(
    connection: &rusqlite::Connection,
    key: SampleKey,
    added: &Sample,
) -> rusqlite::Result<()> {
    let Some(extended) = added.extended.as_deref() else {
        return Ok(());
    };
    let mut insert = connection.prepare_cached(
        "INSERT INTO sample_filesystems (client_id, time_us, mount_point, used_bytes, total_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for fs in &extended.filesystems {
        super::writer::insert_filesystem(&mut insert, key, fs)?;
    }
    Ok(())
}

/// The keys of `client` that `rollup_journal` rows still name: rows of
/// this process for that host, and every row of another (left by an
/// earlier version, not yet folded).
fn journalled_keys(
    connection: &rusqlite::Connection,
    known: &Known<'_>,
    client: i64,
) -> rusqlite::Result<HashSet<SampleKey>> {
    let mut keys = HashSet::new();
    let mut mine = connection.prepare_cached("SELECT keys FROM rollup_journal WHERE seq = ?1")?;
    let mut unpack = |bytes: Vec<u8>| {
        keys.extend(journal::unpack_keys(&bytes).unwrap_or_default());
    };
    for (&seq, _) in known
        .journal_hosts
        .iter()
        .filter(|&(_, &host)| host == client)
    {
        if let Some(bytes) = mine
            .query_map([seq], |row| row.get::<_, Vec<u8>>(0))?
            .next()
        {
            unpack(bytes?);
        }
    }
    let mut others =
        connection.prepare_cached("SELECT keys FROM rollup_journal WHERE instance_id <> ?1")?;
    for bytes in others.query_map([known.instance.0], |row| row.get::<_, Vec<u8>>(0))? {
        unpack(bytes?);
    }
    Ok(keys)
}
