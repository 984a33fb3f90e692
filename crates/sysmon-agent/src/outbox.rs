//! The outbox: every sample is on disk before anything tries to send it,
//! and leaves only when the server has acknowledged its commit.
//!
//! One file per sample, `OUTBOX/<unix seconds>.json`, holding the sample's
//! JSON exactly as it is sent. A file is written durably (temporary file,
//! fsync, rename, fsync of the directory), so after `kill -9` or a power
//! cut a sample is either wholly there or was never acknowledged as
//! collected. Sample times are unique (one per interval tick), so the name
//! orders the outbox oldest first and names the sample in the server's
//! acknowledgement.
//!
//! The outbox is bounded by size (each sample is charged its size rounded
//! up to a 4 KiB block, what it really takes on common file systems) and by
//! age. Past either bound the oldest samples are deleted, counted and
//! logged; the newest sample is always kept.
//!
//! An in-memory index (time and charge per file) is built by listing the
//! directory at startup; after that the directory is never listed again.
//! The collector thread pushes and the sender thread reads and removes;
//! the index lock is never held across network I/O.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sysmon_core::v1::HostSample;

use crate::config::OutboxLimits;
use crate::error::{Error, Result};
use crate::state::{is_temporary, sync_dir, write_durably};

/// Every sample is charged at least one block of this size.
pub const BLOCK_BYTES: u64 = 4096;
/// How many set-aside samples are kept for inspection; older ones go.
pub const MAX_REJECTED_FILES: usize = 1000;
/// Drops are logged at once, then summed up at most this often.
const DROP_LOG_EVERY: Duration = Duration::from_secs(60);

/// What a sample costs against the size limit.
pub fn charge(len: u64) -> u64 {
    len.div_ceil(BLOCK_BYTES).max(1) * BLOCK_BYTES
}

/// A sample waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Unix seconds: the sample's time and its file name.
    pub time: i64,
    /// The sample's JSON, as stored and as sent.
    pub json: Vec<u8>,
}

/// Why samples were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Size,
    Age,
}

impl DropReason {
    fn as_str(self) -> &'static str {
        match self {
            DropReason::Size => "size",
            DropReason::Age => "age",
        }
    }
}

/// The index: sample time -> charged bytes.
#[derive(Debug, Default)]
struct Index {
    entries: BTreeMap<i64, u64>,
    bytes: u64,
    dropped_total: u64,
    /// Drops not logged yet, and when the last drop warning went out.
    unlogged_drops: u64,
    last_drop_log: Option<Instant>,
}

impl Index {
    fn insert(&mut self, time: i64, charged: u64) {
        if let Some(old) = self.entries.insert(time, charged) {
            self.bytes -= old;
        }
        self.bytes += charged;
    }

    fn remove(&mut self, time: i64) -> bool {
        match self.entries.remove(&time) {
            Some(charged) => {
                self.bytes -= charged;
                true
            }
            None => false,
        }
    }
}

/// Which samples must go so the outbox is within `limits` at unix time
/// `now`: first everything older than the age limit, then the oldest until
/// the size fits. The newest sample is never chosen.
pub fn evictions(
    entries: &BTreeMap<i64, u64>,
    total_bytes: u64,
    limits: &OutboxLimits,
    now: i64,
) -> Vec<(i64, DropReason)> {
    let newest = entries.keys().next_back().copied();
    let oldest_allowed =
        now.saturating_sub(i64::try_from(limits.max_age.as_secs()).unwrap_or(i64::MAX));
    let mut bytes = total_bytes;
    let mut out = Vec::new();
    for (&time, &charged) in entries {
        if Some(time) == newest {
            break;
        }
        let reason = if time < oldest_allowed {
            DropReason::Age
        } else if bytes > limits.max_bytes {
            DropReason::Size
        } else {
            break;
        };
        bytes -= charged;
        out.push((time, reason));
    }
    out
}

/// The on-disk queue of samples not yet acknowledged.
pub struct Outbox {
    dir: PathBuf,
    rejected_dir: PathBuf,
    limits: OutboxLimits,
    index: Mutex<Index>,
}

impl Outbox {
    /// Opens (creating) the outbox, removes temporaries left by a crash,
    /// indexes what is there, and applies the limits.
    pub fn open(dir: &Path, rejected_dir: &Path, limits: OutboxLimits) -> Result<Outbox> {
        for path in [dir, rejected_dir] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
        }
        let mut index = Index::default();
        let listing = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("cannot list the outbox {}", dir.display()), e))?;
        for entry in listing {
            let entry = entry
                .map_err(|e| Error::io(format!("cannot list the outbox {}", dir.display()), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temporary(&name) {
                // A write interrupted by a crash: that sample was never
                // acknowledged as collected.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(time) = time_of(&name) else {
                tracing::warn!(file = %entry.path().display(), "ignoring a file that is not a sample in the outbox");
                continue;
            };
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            index.insert(time, charge(len));
        }
        let outbox = Outbox {
            dir: dir.to_path_buf(),
            rejected_dir: rejected_dir.to_path_buf(),
            limits,
            index: Mutex::new(index),
        };
        outbox.enforce_limits(&mut outbox.lock(), unix_now());
        Ok(outbox)
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn path_of(&self, time: i64) -> PathBuf {
        self.dir.join(file_name(time))
    }

    /// Stores a sample durably. Its time must be whole seconds; a sample
    /// with the same time replaces the one stored (a time is one sample).
    pub fn push(&self, sample: &HostSample) -> Result<()> {
        if sample.time.fract() != 0.0 || !sample.time.is_finite() {
            return Err(Error::Config(format!(
                "sample time {} is not whole seconds",
                sample.time
            )));
        }
        let time = sample.time as i64;
        let json = serde_json::to_vec(sample)
            .map_err(|e| Error::io("cannot encode a sample", std::io::Error::other(e)))?;
        // Make room first, so the directory never holds more than the
        // limit, not even for a moment. The lock is held across the write:
        // the sender must not see an index entry whose file is not there yet.
        let mut index = self.lock();
        let previous = index.entries.get(&time).copied();
        index.insert(time, charge(json.len() as u64));
        self.enforce_limits(&mut index, unix_now().max(time));
        let written = write_durably(&self.dir, &file_name(time), &json, 0o600);
        if let Err(e) = written {
            index.remove(time);
            if let Some(charged) = previous {
                // The sample stored before under this time is still there.
                index.insert(time, charged);
            }
            return Err(Error::io(
                format!(
                    "cannot write sample {time} to the outbox {}",
                    self.dir.display()
                ),
                e,
            ));
        }
        Ok(())
    }

    fn enforce_limits(&self, index: &mut Index, now: i64) {
        let evicted = evictions(&index.entries, index.bytes, &self.limits, now);
        if evicted.is_empty() {
            return;
        }
        let mut by_reason = [0u64; 2];
        for &(time, reason) in &evicted {
            match std::fs::remove_file(self.path_of(time)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(%error, time, "cannot delete a sample from the outbox");
                    continue;
                }
            }
            index.remove(time);
            by_reason[(reason == DropReason::Age) as usize] += 1;
        }
        let dropped = by_reason[0] + by_reason[1];
        index.dropped_total += dropped;
        index.unlogged_drops += dropped;
        let due = index
            .last_drop_log
            .is_none_or(|last| last.elapsed() >= DROP_LOG_EVERY);
        if due {
            let reason = match (by_reason[0], by_reason[1]) {
                (0, _) => DropReason::Age,
                _ => DropReason::Size,
            };
            tracing::warn!(
                dropped = index.unlogged_drops,
                dropped_total = index.dropped_total,
                limit = reason.as_str(),
                max_bytes = self.limits.max_bytes,
                max_age_s = self.limits.max_age.as_secs(),
                kept = index.entries.len(),
                oldest_kept = index.entries.keys().next().copied(),
                "outbox over its limit: dropped the oldest samples"
            );
            index.unlogged_drops = 0;
            index.last_drop_log = Some(Instant::now());
        }
    }

    /// Up to `max_count` of the oldest samples, their JSON adding up to at
    /// most `max_bytes` (but at least one sample). A file that cannot be
    /// read as a sample is set aside and skipped.
    pub fn oldest(&self, max_count: usize, max_bytes: usize) -> Vec<Pending> {
        let times: Vec<i64> = self
            .lock()
            .entries
            .keys()
            .take(max_count.max(1))
            .copied()
            .collect();
        let mut batch = Vec::with_capacity(times.len());
        let mut bytes = 0;
        for time in times {
            let json = match std::fs::read(self.path_of(time)) {
                Ok(json) => json,
                // Dropped by the limits meanwhile.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.lock().remove(time);
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, time, "cannot read a sample from the outbox; will retry");
                    break;
                }
            };
            if let Err(error) = serde_json::from_slice::<HostSample>(&json) {
                self.set_aside(time, &format!("unreadable in the outbox: {error}"));
                continue;
            }
            if !batch.is_empty() && bytes + json.len() > max_bytes {
                break;
            }
            bytes += json.len() + 1;
            batch.push(Pending { time, json });
        }
        batch
    }

    /// Forgets acknowledged samples. Returns how many were still there.
    pub fn remove(&self, times: &[i64]) -> usize {
        let mut removed = 0;
        for &time in times {
            match std::fs::remove_file(self.path_of(time)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    // Left in place, it is sent again and acknowledged as a
                    // duplicate: harmless.
                    tracing::warn!(%error, time, "cannot delete an acknowledged sample");
                    continue;
                }
            }
            if self.lock().remove(time) {
                removed += 1;
            }
        }
        removed
    }

    /// Moves a sample the server refused (or that cannot be read) to the
    /// rejected directory, so it neither blocks the queue nor is lost
    /// without a trace. Keeps the newest [`MAX_REJECTED_FILES`] there.
    pub fn set_aside(&self, time: i64, reason: &str) {
        let target = self.rejected_dir.join(file_name(time));
        let moved = std::fs::rename(self.path_of(time), &target);
        self.lock().remove(time);
        match moved {
            Ok(()) => {
                let _ = sync_dir(&self.rejected_dir);
                tracing::error!(time, reason, file = %target.display(), "sample set aside");
            }
            Err(error) => {
                tracing::error!(time, reason, %error, "sample dropped: it could not be moved aside");
                let _ = std::fs::remove_file(self.path_of(time));
            }
        }
        self.trim_rejected();
    }

    fn trim_rejected(&self) {
        let Ok(listing) = std::fs::read_dir(&self.rejected_dir) else {
            return;
        };
        let mut times: Vec<i64> = listing
            .filter_map(|entry| time_of(&entry.ok()?.file_name().to_string_lossy()))
            .collect();
        if times.len() <= MAX_REJECTED_FILES {
            return;
        }
        times.sort_unstable();
        for time in &times[..times.len() - MAX_REJECTED_FILES] {
            let _ = std::fs::remove_file(self.rejected_dir.join(file_name(*time)));
        }
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Charged bytes of the samples waiting.
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Samples dropped by the limits since this process started.
    pub fn dropped_total(&self) -> u64 {
        self.lock().dropped_total
    }

    /// The oldest sample's time, if any.
    pub fn oldest_time(&self) -> Option<i64> {
        self.lock().entries.keys().next().copied()
    }

    /// The newest sample's time, if any.
    pub fn newest(&self) -> Option<i64> {
        self.lock().entries.keys().next_back().copied()
    }

    /// The times waiting, oldest first.
    pub fn times(&self) -> Vec<i64> {
        self.lock().entries.keys().copied().collect()
    }
}

fn file_name(time: i64) -> String {
    format!("{time}.json")
}

fn time_of(name: &str) -> Option<i64> {
    name.strip_suffix(".json")?.parse().ok()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: i64) -> HostSample {
        HostSample {
            time: time as f64,
            cpu_load: Some(1.5),
            mem: Some(100.0),
            storage: None,
            extended: Default::default(),
        }
    }

    fn limits(max_bytes: u64, max_age_s: u64) -> OutboxLimits {
        OutboxLimits {
            max_bytes,
            max_age: Duration::from_secs(max_age_s),
        }
    }

    fn open(dir: &Path, limits: OutboxLimits) -> Outbox {
        Outbox::open(&dir.join("outbox"), &dir.join("rejected"), limits).unwrap()
    }

    fn now() -> i64 {
        unix_now()
    }

    #[test]
    fn charges_whole_blocks() {
        assert_eq!(charge(0), 4096);
        assert_eq!(charge(700), 4096);
        assert_eq!(charge(4096), 4096);
        assert_eq!(charge(4097), 8192);
    }

    #[test]
    fn eviction_takes_the_oldest_and_spares_the_newest() {
        let entries: BTreeMap<i64, u64> = (100..110).map(|t| (t, 4096)).collect();
        let total = 10 * 4096;
        let evicted = evictions(&entries, total, &limits(4 * 4096, 3600), 110);
        assert_eq!(
            evicted,
            (100..106)
                .map(|t| (t, DropReason::Size))
                .collect::<Vec<_>>()
        );
        // Age goes first, then size.
        let evicted = evictions(&entries, total, &limits(3 * 4096, 5), 108);
        assert_eq!(evicted.len(), 7);
        assert_eq!(evicted[0], (100, DropReason::Age));
        assert_eq!(evicted[2], (102, DropReason::Age));
        assert_eq!(evicted[3], (103, DropReason::Size));
        assert_eq!(evicted[6], (106, DropReason::Size));
        // Even limits below one sample keep the newest.
        let evicted = evictions(&entries, total, &limits(1, 1), 1_000);
        assert_eq!(evicted.len(), 9);
        assert!(evicted.iter().all(|(t, _)| *t != 109));
        assert!(evictions(&entries, total, &limits(u64::MAX, 3600), 109).is_empty());
    }

    #[test]
    fn keeps_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let base = now() - 100;
        {
            let outbox = open(dir.path(), OutboxLimits::default());
            for time in [base + 3, base + 1, base + 2] {
                outbox.push(&sample(time)).unwrap();
            }
            // Same time twice is one sample.
            outbox.push(&sample(base + 2)).unwrap();
            assert_eq!(outbox.len(), 3);
            assert_eq!(outbox.bytes(), 3 * 4096);
        }
        // A temporary left by a crash mid-write is discarded.
        std::fs::write(dir.path().join("outbox/.999.json.tmp"), b"{\"ti").unwrap();
        let outbox = open(dir.path(), OutboxLimits::default());
        assert!(!dir.path().join("outbox/.999.json.tmp").exists());
        let batch = outbox.oldest(2, usize::MAX);
        let times: Vec<i64> = batch.iter().map(|p| p.time).collect();
        assert_eq!(times, [base + 1, base + 2]);
        let parsed: HostSample = serde_json::from_slice(&batch[0].json).unwrap();
        assert_eq!(parsed, sample(base + 1));
        assert_eq!(outbox.remove(&[base + 1, base + 2, base + 50]), 2);
        assert_eq!(outbox.times(), [base + 3]);
        assert_eq!(outbox.newest(), Some(base + 3));
        drop(outbox);
        assert_eq!(
            open(dir.path(), OutboxLimits::default()).times(),
            [base + 3]
        );
    }

    #[test]
    fn batches_respect_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits::default());
        let base = now() - 10;
        for time in base..base + 5 {
            outbox.push(&sample(time)).unwrap();
        }
        let one = outbox.oldest(1, usize::MAX)[0].json.len();
        assert_eq!(outbox.oldest(10, one * 2 + 2).len(), 2);
        // One sample even when it alone is over the budget.
        assert_eq!(outbox.oldest(10, 1).len(), 1);
        assert_eq!(outbox.oldest(3, usize::MAX).len(), 3);
    }

    #[test]
    fn over_the_size_limit_the_oldest_go_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), limits(3 * 4096, 86_400));
        let base = now() - 20;
        for time in base..base + 10 {
            outbox.push(&sample(time)).unwrap();
        }
        assert_eq!(outbox.times(), [base + 7, base + 8, base + 9]);
        assert_eq!(outbox.dropped_total(), 7);
        let files = std::fs::read_dir(dir.path().join("outbox"))
            .unwrap()
            .count();
        assert_eq!(files, 3);
        // Lower limits apply at the next start too.
        drop(outbox);
        let outbox = open(dir.path(), limits(4096, 86_400));
        assert_eq!(outbox.times(), [base + 9]);
        assert_eq!(outbox.dropped_total(), 2);
    }

    #[test]
    fn old_samples_expire() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), limits(u64::MAX, 60));
        let now = now();
        outbox.push(&sample(now - 600)).unwrap();
        outbox.push(&sample(now - 30)).unwrap();
        outbox.push(&sample(now)).unwrap();
        assert_eq!(outbox.times(), [now - 30, now]);
        assert_eq!(outbox.dropped_total(), 1);
    }

    #[test]
    fn refused_and_unreadable_samples_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits::default());
        let base = now() - 10;
        for time in base..base + 3 {
            outbox.push(&sample(time)).unwrap();
        }
        std::fs::write(dir.path().join(format!("outbox/{base}.json")), b"not json").unwrap();
        let batch = outbox.oldest(10, usize::MAX);
        assert_eq!(
            batch.iter().map(|p| p.time).collect::<Vec<_>>(),
            [base + 1, base + 2]
        );
        assert!(dir.path().join(format!("rejected/{base}.json")).exists());
        outbox.set_aside(base + 1, "refused by the server");
        assert_eq!(outbox.times(), [base + 2]);
        assert!(dir
            .path()
            .join(format!("rejected/{}.json", base + 1))
            .exists());
        assert!(outbox
            .push(&HostSample {
                time: 1.5,
                ..sample(0)
            })
            .is_err());
    }
}
