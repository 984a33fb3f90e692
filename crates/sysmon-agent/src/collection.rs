//! The source: one sample per tick of the interval grid, into the outbox.
//!
//! Ticks are the multiples of the interval in unix time (whole seconds for
//! a 1 s interval, :00/:10/:20... for 10 s), and a sample's `time` is its
//! tick, not the instant it was measured: every interval has exactly one
//! sample time, so a gap or a duplicate on the server is a real one. The
//! collector writes only to the local disk, never waits for the network.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sysmon_core::collect::SampleCollector;

use crate::outbox::Outbox;
use crate::wake::Wake;

/// Counters for the log line at shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    pub collected: AtomicU64,
    pub sent: AtomicU64,
    pub rejected: AtomicU64,
    /// Samples measured but not stored (the outbox could not be written).
    pub lost: AtomicU64,
}

/// The tick to wait for: the first grid point that is not before `now` and
/// comes after the last sample's tick.
pub fn next_tick(last: Option<i64>, now: f64, interval: i64) -> i64 {
    let first_not_before_now = (now / interval as f64).ceil() as i64 * interval;
    match last {
        Some(last) if first_not_before_now <= last => (last.div_euclid(interval) + 1) * interval,
        _ => first_not_before_now,
    }
}

/// After waking for `planned`: `None` while it is still in the future;
/// otherwise the tick to label the sample with (the latest grid point that
/// has passed, so a sample is never labelled long before it was measured)
/// and how many ticks were skipped on the way.
pub fn due_tick(planned: i64, now: f64, interval: i64) -> Option<(i64, u64)> {
    if now < planned as f64 {
        return None;
    }
    let latest = (now / interval as f64).floor() as i64 * interval;
    let tick = latest.max(planned);
    Some((tick, ((tick - planned) / interval) as u64))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Collects until stopped.
pub fn run_collector(outbox: &Outbox, wake: &Wake, interval: Duration, stats: &Stats) {
    let interval_s = interval.as_secs().max(1) as i64;
    let mut collector = SampleCollector::new();
    // After a restart, never reuse a time already in the outbox.
    let mut last = outbox.newest();
    let mut failures_logged_at: Option<Instant> = None;
    loop {
        let now = unix_now();
        if let Some(previous) = last {
            if now + (interval_s as f64) < previous as f64 {
                tracing::warn!(
                    back_by_s = previous as f64 - now,
                    "the clock went back; sample times may repeat ones already taken"
                );
                last = None;
            }
        }
        let planned = next_tick(last, now, interval_s);
        let (tick, skipped) = loop {
            let now = unix_now();
            if let Some(due) = due_tick(planned, now, interval_s) {
                break due;
            }
            // Re-check at least every interval, in case the clock is stepped.
            let wait = Duration::try_from_secs_f64(planned as f64 - now)
                .unwrap_or(interval)
                .min(interval);
            if wake.sleep(wait) {
                return;
            }
        };
        if wake.is_stopped() {
            return;
        }
        if skipped > 0 {
            tracing::warn!(
                skipped,
                "collection fell behind (suspended host, stalled process or clock step): ticks skipped"
            );
        }
        let sample = collector.collect(tick as f64);
        match outbox.push(&sample) {
            Ok(()) => {
                stats.collected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(time = tick, "sample stored in the outbox");
                wake.notify_work();
            }
            Err(error) => {
                let lost = stats.lost.fetch_add(1, Ordering::Relaxed) + 1;
                if failures_logged_at.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::error!(%error, time = tick, lost_total = lost, "sample lost: cannot store it in the outbox");
                    failures_logged_at = Some(Instant::now());
                }
            }
        }
        last = Some(tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_sit_on_the_interval_grid() {
        assert_eq!(next_tick(None, 1000.2, 1), 1001);
        assert_eq!(next_tick(None, 1000.0, 1), 1000);
        assert_eq!(next_tick(None, 1003.5, 10), 1010);
        assert_eq!(next_tick(Some(1010), 1010.0, 10), 1020);
        // After a restart within the same second, the next second.
        assert_eq!(next_tick(Some(1001), 1000.9, 1), 1002);
        // An interval changed between runs: back onto the new grid.
        assert_eq!(next_tick(Some(1005), 1004.0, 10), 1010);
    }

    #[test]
    fn a_late_wake_labels_the_latest_tick_and_counts_the_skipped() {
        assert_eq!(due_tick(1010, 1009.99, 10), None);
        assert_eq!(due_tick(1010, 1010.0, 10), Some((1010, 0)));
        assert_eq!(due_tick(1010, 1019.9, 10), Some((1010, 0)));
        assert_eq!(due_tick(1010, 1020.1, 10), Some((1020, 1)));
        assert_eq!(due_tick(5, 3605.5, 1), Some((3605, 3600)));
    }

    #[test]
    fn every_interval_gets_exactly_one_time() {
        // Simulated wake-ups with jitter: consecutive ticks, no repeats.
        let mut last = None;
        let mut times = Vec::new();
        let mut now = 1_700_000_000.37;
        for step in 0..50 {
            let planned = next_tick(last, now, 1);
            now = planned as f64 + 0.001 + (step % 7) as f64 * 0.1;
            let (tick, skipped) = due_tick(planned, now, 1).unwrap();
            assert_eq!(skipped, 0);
            times.push(tick);
            last = Some(tick);
        }
        assert!(times.windows(2).all(|w| w[1] == w[0] + 1), "{times:?}");
    }
}
