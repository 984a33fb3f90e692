//! The server watching its own host, as the original's `/monitor` routes
//! did, but without making a request wait a second for a cpu reading: a
//! background sampler keeps the latest one-second snapshot.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Local};
use sysmon_core::host::{self, CpuInfo, HostCollector, MemoryInfo, StorageInfo};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Readings kept in memory for the server page's charts: 15 minutes.
pub const HISTORY_READINGS: usize = 900;
/// Longest wait `/monitor/cpu/load?interval=` may ask for.
pub const MAX_CPU_INTERVAL: Duration = Duration::from_secs(10);

/// One reading of the host.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    pub taken_at: DateTime<Local>,
    pub cpu_load: f64,
    pub memory: MemoryInfo,
    pub storage: StorageInfo,
}

/// A reading as the server page charts it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Unix seconds.
    pub time: f64,
    pub cpu_percent: f64,
    pub memory_percent: Option<f64>,
}

impl Reading {
    fn of(snapshot: &HostSnapshot) -> Reading {
        let memory = &snapshot.memory;
        Reading {
            time: snapshot.taken_at.timestamp_micros() as f64 / 1e6,
            cpu_percent: snapshot.cpu_load,
            memory_percent: (memory.total > 0)
                .then(|| 100.0 * memory.used as f64 / memory.total as f64),
        }
    }
}

pub struct SelfMonitor {
    latest: watch::Receiver<HostSnapshot>,
    /// The last [`HISTORY_READINGS`] readings, oldest first.
    history: std::sync::Arc<Mutex<std::collections::VecDeque<Reading>>>,
    collector: Mutex<HostCollector>,
    storage_path: PathBuf,
}

impl SelfMonitor {
    /// Takes a first reading and starts the sampler, which runs until `stop`.
    pub fn start(stop: CancellationToken) -> (SelfMonitor, JoinHandle<()>) {
        let storage_path = PathBuf::from("/");
        let first = HostSnapshot {
            taken_at: Local::now(),
            cpu_load: 0.0,
            memory: host::memory_info(),
            storage: host::storage_info(&storage_path).unwrap_or_default(),
        };
        let (publish, latest) = watch::channel(first);
        let history = std::sync::Arc::new(Mutex::new(std::collections::VecDeque::with_capacity(
            HISTORY_READINGS,
        )));
        let sampler = tokio::spawn(run_sampler(
            publish,
            history.clone(),
            storage_path.clone(),
            stop,
        ));
        let monitor = SelfMonitor {
            latest,
            history,
            collector: Mutex::new(HostCollector::new()),
            storage_path,
        };
        (monitor, sampler)
    }

    pub fn latest(&self) -> HostSnapshot {
        self.latest.borrow().clone()
    }

    /// The readings of the last 15 minutes, oldest first.
    pub fn history(&self) -> Vec<Reading> {
        self.history
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// A receiver that wakes at every new snapshot.
    pub fn watch(&self) -> watch::Receiver<HostSnapshot> {
        self.latest.clone()
    }

    /// Cpu load measured over `interval` (capped at [`MAX_CPU_INTERVAL`]).
    pub async fn cpu_load_over(&self, interval: Duration) -> f64 {
        let mut collector = HostCollector::new();
        collector.cpu_load();
        tokio::time::sleep(interval.clamp(sysinfo_minimum(), MAX_CPU_INTERVAL)).await;
        collector.cpu_load()
    }

    pub fn cpu_info(&self) -> CpuInfo {
        self.collector
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .cpu_info()
    }

    pub fn memory(&self) -> MemoryInfo {
        host::memory_info()
    }

    pub fn storage(&self) -> Result<StorageInfo> {
        host::storage_info(&self.storage_path).map_err(|e| Error::Internal(e.to_string()))
    }
}

fn sysinfo_minimum() -> Duration {
    Duration::from_millis(200)
}

async fn run_sampler(
    publish: watch::Sender<HostSnapshot>,
    history: std::sync::Arc<Mutex<std::collections::VecDeque<Reading>>>,
    storage_path: PathBuf,
    stop: CancellationToken,
) {
    let mut collector = HostCollector::new();
    collector.cpu_load();
    let mut ticks = tokio::time::interval(SAMPLE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    let mut storage_failed = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let storage = match host::storage_info(&storage_path) {
            Ok(storage) => {
                storage_failed = false;
                storage
            }
            Err(error) => {
                if !storage_failed {
                    tracing::warn!(%error, "storage reading failed; reporting the last one");
                    storage_failed = true;
                }
                publish.borrow().storage
            }
        };
        let snapshot = HostSnapshot {
            taken_at: Local::now(),
            cpu_load: collector.cpu_load(),
            memory: host::memory_info(),
            storage,
        };
        {
            let mut history = history
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if history.len() == HISTORY_READINGS {
                history.pop_front();
            }
            history.push_back(Reading::of(&snapshot));
        }
        publish.send_replace(snapshot);
    }
}
