//! The rollup journal: what the stores keep so that rollups can be summed
//! outside the ingest transaction without ever losing or doubling a sample.
//!
//! Each ingest commit appends one journal entry naming the samples it newly
//! stored, tagged with the server process ([`InstanceId`]) that holds their
//! summaries in memory. A [`Fold`] merges summaries into the rollup tables
//! and deletes the entries it accounts for, in one transaction, so every
//! stored sample is in the rollups exactly once: either its entry is still
//! in the journal or its summary is in the tables. Entries left by a
//! process that is gone are folded from the samples themselves.
//!
//! On PostgreSQL an entry is a row of `rollup_journal`. On SQLite the
//! journal of new samples is the hot table they are appended to (see
//! `store::sqlite`): an entry is a run of its rows, named by the negated
//! rowid of its last row, and a fold moves the rows it accounts for into
//! `samples`, so a sample is unfolded exactly while it is hot. Its
//! `rollup_journal` holds only what earlier versions left.

use super::rollup::{Bucket, Tier};
use super::{ClientSample, SampleKey};

/// One server process's claim on its journal entries. Random per start, so
/// a restarted server never mistakes its predecessor's entries for its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InstanceId(pub i64);

impl InstanceId {
    pub fn random() -> InstanceId {
        // Positive, so it reads the same as a PostgreSQL advisory-lock key
        // and in logs.
        InstanceId(rand::random::<i64>() & i64::MAX | 1)
    }
}

/// A journal entry's position; entries are folded and deleted by it. A
/// `rollup_journal` row's seq, positive; on SQLite, the negated rowid of
/// the last hot row of an entry.
pub type JournalSeq = i64;

/// What one ingest commit stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inserted {
    /// The samples that were new (not replays).
    pub keys: Vec<SampleKey>,
    /// The journal entries naming them (none when nothing was new; on
    /// SQLite one for the hot rows and one for the rows stored directly).
    pub journal: Vec<JournalSeq>,
    /// The store would have the pending samples folded now rather than at
    /// the next interval (SQLite: its hot table, which every read scans,
    /// has grown large).
    pub fold_soon: bool,
    /// Values this commit added to samples stored and folded before it (a
    /// later part of one scrape or tick, see
    /// [`sysmon_core::metrics::fill_missing`]), as samples of those values
    /// only; the commit merged their summaries into the rollup tables.
    pub completed: Vec<ClientSample>,
    /// Keys of samples a row of the batch would complete but whose own
    /// summaries are still pending (journalled): completed now, the added
    /// values would be counted twice by a fold from the samples after a
    /// crash. Not stored; the caller stores them again once those samples
    /// are folded.
    pub deferred: Vec<SampleKey>,
}

/// Summaries to merge into the rollup tables, and the journal entries whose
/// samples they account for (deleted in the same transaction).
#[derive(Debug, Clone, Default)]
pub struct Fold {
    /// Per tier of [`Tier::ROLLUPS`], in its order; each sorted by
    /// (client, bucket), so concurrent folds lock rows in one order.
    pub buckets: [Vec<Bucket>; 3],
    pub journal: Vec<JournalSeq>,
}

impl Fold {
    pub fn tier_buckets(&self) -> impl Iterator<Item = (Tier, &[Bucket])> {
        Tier::ROLLUPS
            .into_iter()
            .zip(self.buckets.iter().map(Vec::as_slice))
    }

    /// The summaries of values added to samples already folded, with no
    /// journal entry: what a commit that completed them merges itself.
    pub fn of_added<'a>(added: impl IntoIterator<Item = &'a ClientSample> + Clone) -> Fold {
        Fold {
            buckets: Tier::ROLLUPS.map(|tier| super::rollup::summarise_added(added.clone(), tier)),
            journal: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.journal.is_empty() && self.buckets.iter().all(Vec::is_empty)
    }
}

/// What a store reports while it commits a [`Fold`], which it may do in
/// parts, each a transaction for the clients up to some id, in ascending
/// order (SQLite: so that one fold of a big fleet never holds the single
/// writer for long). Readers use it to stop counting a client's pending
/// buckets once they are in the tables, and never count them twice.
pub trait FoldProgress: Send + Sync {
    /// A part's transaction is about to commit.
    fn committing(&self);
    /// It committed: every client up to `through` is folded.
    fn committed(&self, through: i64);
}

/// For folds no reader sees pending (those of orphaned entries).
pub struct Unobserved;

impl FoldProgress for Unobserved {
    fn committing(&self) {}
    fn committed(&self, _through: i64) {}
}

/// A journal entry to fold from the stored samples.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEntry {
    pub seq: JournalSeq,
    pub keys: Vec<SampleKey>,
}

/// `(client_id, time_us)` pairs as 16 little-endian bytes each: how SQLite
/// keeps an entry's keys in one BLOB.
pub fn pack_keys(keys: &[SampleKey]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(keys.len() * 16);
    for (client, time) in keys {
        bytes.extend_from_slice(&client.to_le_bytes());
        bytes.extend_from_slice(&time.to_le_bytes());
    }
    bytes
}

/// The inverse of [`pack_keys`]; `None` for bytes it did not write.
pub fn unpack_keys(bytes: &[u8]) -> Option<Vec<SampleKey>> {
    if !bytes.len().is_multiple_of(16) {
        return None;
    }
    let word = |chunk: &[u8]| chunk.try_into().ok().map(i64::from_le_bytes);
    bytes
        .chunks_exact(16)
        .map(|pair| Some((word(&pair[..8])?, word(&pair[8..])?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_blob() {
        let keys = vec![(1, 1_764_000_000_000_000), (i64::MAX, -5)];
        assert_eq!(unpack_keys(&pack_keys(&keys)), Some(keys));
        assert_eq!(unpack_keys(&[]), Some(vec![]));
        assert_eq!(unpack_keys(&[0; 15]), None);
    }

    #[test]
    fn instance_ids_are_positive() {
        for _ in 0..100 {
            assert!(InstanceId::random().0 > 0);
        }
    }
}
