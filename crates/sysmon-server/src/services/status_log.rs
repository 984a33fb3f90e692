//! The original's `server_system_load.csv`: one row of the server's own load
//! about every second, semicolon separated, with the header written once per
//! file. Files are rotated at a size limit so the log never fills the disk.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use sysmon_core::Units;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::self_monitor::HostSnapshot;
use crate::error::{Error, Result};

const HEADER: [&str; 4] = ["time", "cpu load", "memory load", "storage"];

#[derive(Debug, Clone, PartialEq)]
pub struct StatusLogConfig {
    pub path: PathBuf,
    /// A file reaching this size is rotated to `PATH.1`.
    pub max_bytes: u64,
    /// Rotated files kept (`PATH.1` .. `PATH.N`); 0 keeps none.
    pub keep: usize,
}

impl Default for StatusLogConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("server_system_load.csv"),
            max_bytes: 10 * 1024 * 1024,
            keep: 3,
        }
    }
}

pub struct StatusLog {
    config: StatusLogConfig,
    file: File,
}

impl StatusLog {
    /// Opens (or creates) the log, so that a path the server cannot write is
    /// reported at startup rather than every second afterwards.
    pub fn open(config: StatusLogConfig) -> Result<Self> {
        let file = open_with_header(&config.path)?;
        Ok(Self { config, file })
    }

    /// Appends a row at every new snapshot until `stop`.
    pub fn spawn(
        mut self,
        mut snapshots: watch::Receiver<HostSnapshot>,
        stop: CancellationToken,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = snapshots.changed() => if changed.is_err() { return },
                }
                let snapshot = snapshots.borrow_and_update().clone();
                match self.append(&snapshot) {
                    Ok(()) if failing => {
                        tracing::info!(path = %self.config.path.display(), "status log writable again");
                        failing = false;
                    }
                    Ok(()) => {}
                    Err(error) if !failing => {
                        tracing::warn!(%error, "status log row not written; will keep trying");
                        failing = true;
                    }
                    Err(_) => {}
                }
            }
        })
    }

    pub fn append(&mut self, snapshot: &HostSnapshot) -> Result<()> {
        if self.needs_rotation()? {
            self.rotate()?;
        }
        let row = [
            snapshot.taken_at.format("%d %b %H:%M:%S").to_string(),
            snapshot.cpu_load.to_string(),
            Units::MB.from_bytes(snapshot.memory.used).to_string(),
            Units::MB.from_bytes(snapshot.storage.used).to_string(),
        ];
        write_row(&mut self.file, &row)
            .map_err(|e| Error::io(format!("cannot write {}", self.config.path.display()), e))
    }

    fn needs_rotation(&self) -> Result<bool> {
        let length = self
            .file
            .metadata()
            .map_err(|e| Error::io(format!("cannot stat {}", self.config.path.display()), e))?
            .len();
        Ok(length >= self.config.max_bytes)
    }

    /// `PATH` becomes `PATH.1`, `PATH.1` becomes `PATH.2`, ... and the
    /// oldest beyond `keep` is removed.
    fn rotate(&mut self) -> Result<()> {
        let path = &self.config.path;
        let numbered = |n: usize| PathBuf::from(format!("{}.{n}", path.display()));
        if self.config.keep == 0 {
            let _ = fs::remove_file(path);
        } else {
            let _ = fs::remove_file(numbered(self.config.keep));
            for n in (1..self.config.keep).rev() {
                let _ = fs::rename(numbered(n), numbered(n + 1));
            }
            fs::rename(path, numbered(1))
                .map_err(|e| Error::io(format!("cannot rotate {}", path.display()), e))?;
        }
        self.file = open_with_header(path)?;
        tracing::info!(path = %path.display(), "status log rotated");
        Ok(())
    }
}

fn open_with_header(path: &Path) -> Result<File> {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("cannot open status log {}", path.display()), e))?;
    let empty = file
        .metadata()
        .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
        .len()
        == 0;
    if empty {
        write_row(&mut file, &HEADER)
            .map_err(|e| Error::io(format!("cannot write {}", path.display()), e))?;
    }
    Ok(file)
}

fn write_row<S: AsRef<[u8]>>(file: &mut File, fields: &[S]) -> std::io::Result<()> {
    let mut writer = csv::WriterBuilder::new()
        .delimiter(b';')
        .has_headers(false)
        .from_writer(Vec::with_capacity(64));
    writer.write_record(fields)?;
    let bytes = writer
        .into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    file.write_all(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Local;
    use sysmon_core::host::{MemoryInfo, StorageInfo};

    fn snapshot() -> HostSnapshot {
        HostSnapshot {
            taken_at: Local::now(),
            cpu_load: 3.5,
            memory: MemoryInfo {
                used: 5 * 1024 * 1024,
                ..Default::default()
            },
            storage: StorageInfo {
                used: 7 * 1024 * 1024,
                ..Default::default()
            },
        }
    }

    #[test]
    fn header_once_per_file_and_rows_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("load.csv");
        let config = StatusLogConfig {
            path: path.clone(),
            ..Default::default()
        };
        StatusLog::open(config.clone())
            .unwrap()
            .append(&snapshot())
            .unwrap();
        StatusLog::open(config)
            .unwrap()
            .append(&snapshot())
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "time;cpu load;memory load;storage");
        assert!(lines[1].ends_with(";3.5;5;7"), "{}", lines[1]);
    }

    #[test]
    fn rotates_at_the_size_limit_keeping_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("load.csv");
        let config = StatusLogConfig {
            path: path.clone(),
            max_bytes: 100,
            keep: 2,
        };
        let mut log = StatusLog::open(config).unwrap();
        for _ in 0..40 {
            log.append(&snapshot()).unwrap();
        }
        assert!(fs::metadata(&path).unwrap().len() <= 100 + 40);
        assert!(dir.path().join("load.csv.1").exists());
        assert!(dir.path().join("load.csv.2").exists());
        assert!(!dir.path().join("load.csv.3").exists());
        let rotated = fs::read_to_string(dir.path().join("load.csv.1")).unwrap();
        assert!(
            rotated.starts_with("time;cpu load"),
            "every file has its header"
        );
    }
}
