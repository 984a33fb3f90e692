//! Reading the fleet back: the client overview and time series over any
//! range, answered from the tier that keeps the answer small.
//!
//! A series is a list of buckets of `step` covering `[from, to)`, each
//! with min, mean and max of every metric. Buckets are aligned to
//! multiples of the step since the epoch and are whole: the first starts at
//! or before `from`, the last holds `to - 1µs`. Long ranges read a rollup
//! tier, whose buckets then divide the step, so the answer is the same as
//! reading every raw sample, only faster.

use std::time::Duration;

use sysmon_core::{Sample, UnixTime};

use crate::error::{Error, Result};
use sysmon_core::metrics::{charted_index, CHARTED, CHARTED_COUNT};

use crate::store::rollup::bucket_start;
use crate::store::{Bucket, ClientOverview, SeriesQuery, Tier};

/// Points a chart gets when it does not choose a step.
pub const DEFAULT_POINTS: u32 = 1000;
pub const MAX_POINTS: u32 = 10_000;
/// Most buckets one series may span, empty ones included.
pub const MAX_BUCKETS: i64 = 100_000;
/// Range when `from` is not given.
pub const DEFAULT_RANGE: Duration = Duration::from_secs(3600);
/// The earliest time a sample can have (the ingest validation's bound):
/// 2000-01-01.
pub const EARLIEST_US: i64 = 946_684_800_000_000;
/// How far ahead of now a sample's time may be.
const LATEST_AHEAD_US: i64 = 86_400_000_000;
const MAX_STEP_US: i64 = 10 * 366 * 86_400_000_000;
/// A client's interval when it has too few samples to tell.
pub const UNKNOWN_INTERVAL: Duration = Duration::from_secs(60);
/// A client is offline after this many intervals without a sample.
pub const OFFLINE_AFTER_INTERVALS: f64 = 3.0;

/// Steps a chart's auto-chosen step snaps to, in seconds. Each from a
/// minute up is a multiple of a rollup tier, so a snapped step reads a
/// rollup table.
const NICE_STEPS: [i64; 20] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1_200, 1_800, 2_400, 3_600, 7_200, 10_800, 21_600,
    43_200, 86_400, 604_800,
];

/// How long each tier is kept; `None` keeps it forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    pub raw: Option<Duration>,
    pub one_minute: Option<Duration>,
    pub ten_minutes: Option<Duration>,
    pub one_hour: Option<Duration>,
    /// How often the retention job runs.
    pub check_interval: Duration,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for RetentionConfig {
    /// Raw samples are kept forever by default, as the original server
    /// kept them: its report route reads them, and an upgrade must not
    /// delete a user's history. Rollups are small and pruned.
    fn default() -> Self {
        Self {
            raw: None,
            one_minute: Some(DAY * 90),
            ten_minutes: Some(DAY * 731),
            one_hour: None,
            check_interval: Duration::from_secs(3600),
        }
    }
}

impl RetentionConfig {
    /// Every tier kept forever (tests whose samples are days old).
    pub fn forever() -> Self {
        Self {
            one_minute: None,
            ten_minutes: None,
            ..Self::default()
        }
    }

    pub fn keep(&self, tier: Tier) -> Option<Duration> {
        match tier {
            Tier::Raw => self.raw,
            Tier::OneMinute => self.one_minute,
            Tier::TenMinutes => self.ten_minutes,
            Tier::OneHour => self.one_hour,
        }
    }

    /// The oldest time a tier still holds, as of `now_us`.
    pub fn horizon_us(&self, tier: Tier, now_us: i64) -> Option<i64> {
        self.keep(tier)
            .map(|keep| now_us.saturating_sub(micros(keep)))
    }
}

/// What a caller asked for; every part optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SeriesRequest {
    pub from: Option<UnixTime>,
    pub to: Option<UnixTime>,
    pub step: Option<Duration>,
    pub points: Option<u32>,
    pub resolution: Option<Tier>,
    /// Indices into [`CHARTED`]; all when empty.
    pub metrics: Vec<usize>,
}

/// Where and how a series will be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub tier: Tier,
    pub step_us: i64,
    pub start_us: i64,
    pub end_us: i64,
}

/// Chooses tier, step and bucket-aligned bounds for a request.
pub fn plan(request: &SeriesRequest, retention: &RetentionConfig, now_us: i64) -> Result<Plan> {
    // Bounds outside the times a sample can have are clamped to them, which
    // also keeps the arithmetic below far from overflow.
    let latest_us = now_us + LATEST_AHEAD_US;
    let to_us = request
        .to
        .map_or(now_us, UnixTime::micros)
        .clamp(EARLIEST_US, latest_us);
    let from_us = request
        .from
        .map_or(to_us - micros(DEFAULT_RANGE), UnixTime::micros)
        .clamp(EARLIEST_US, latest_us);
    if from_us >= to_us {
        return Err(Error::BadRequest("`from` must be before `to`".into()));
    }
    let step_us = match request.step {
        Some(step) => {
            let step_us = micros(step);
            if !(1_000..=MAX_STEP_US).contains(&step_us) {
                return Err(Error::BadRequest(
                    "`step` must be 0.001 seconds to 10 years".into(),
                ));
            }
            step_us
        }
        None => {
            let points = request.points.unwrap_or(DEFAULT_POINTS);
            if !(1..=MAX_POINTS).contains(&points) {
                return Err(Error::BadRequest(format!(
                    "`points` must be 1 to {MAX_POINTS}"
                )));
            }
            nice_step_us((to_us - from_us) / i64::from(points))
        }
    };
    let tier = match request.resolution {
        Some(tier) => tier,
        None => choose_tier(step_us, from_us, retention, now_us),
    };
    let width = tier.bucket_micros();
    let step_us = if width == 0 {
        step_us
    } else {
        (step_us / width).max(1) * width
    };
    let start_us = bucket_start(from_us, step_us);
    let end_us = bucket_start(to_us - 1, step_us) + step_us;
    let buckets = (end_us - start_us) / step_us;
    if buckets > MAX_BUCKETS {
        return Err(Error::BadRequest(format!(
            "the range holds {buckets} steps; at most {MAX_BUCKETS}: raise `step` or narrow the range"
        )));
    }
    Ok(Plan {
        tier,
        step_us,
        start_us,
        end_us,
    })
}

/// The coarsest tier whose buckets fit in a step and which still holds
/// data as old as `from_us`; raw samples when no rollup fits.
fn choose_tier(step_us: i64, from_us: i64, retention: &RetentionConfig, now_us: i64) -> Tier {
    let fitting = Tier::ALL
        .into_iter()
        .rev()
        .find(|tier| tier.bucket_micros() <= step_us)
        .unwrap_or(Tier::Raw);
    // A finer tier that has already dropped the start of the range would
    // answer with a hole; a coarser one still has it.
    Tier::ALL
        .into_iter()
        .filter(|tier| *tier >= fitting)
        .find(|tier| {
            retention
                .horizon_us(*tier, now_us)
                .is_none_or(|horizon| horizon <= from_us)
        })
        .unwrap_or(Tier::OneHour)
}

/// The nice step nearest (by ratio) to `raw_us`.
fn nice_step_us(raw_us: i64) -> i64 {
    let raw = (raw_us as f64 / 1e6).max(1.0);
    let nearest = NICE_STEPS
        .iter()
        .copied()
        .min_by(|a, b| {
            let distance = |step: i64| (step as f64 / raw).ln().abs();
            distance(*a).total_cmp(&distance(*b))
        })
        .unwrap_or(1);
    // Past a week, whole days.
    let seconds = if raw > 604_800.0 {
        (raw / 86_400.0).round() as i64 * 86_400
    } else {
        nearest
    };
    seconds * 1_000_000
}

/// A planned and answered series.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub plan: Plan,
    pub metrics: Vec<usize>,
    pub buckets: Vec<Bucket>,
    /// The client's newest sample, as of just before the buckets were
    /// read: a live view applies only samples after it (see the route).
    pub latest: Option<UnixTime>,
}

/// What to read for a request: its plan, and the query that reads it.
pub fn series_query(
    client_id: i64,
    request: &SeriesRequest,
    retention: &RetentionConfig,
) -> Result<(Plan, SeriesQuery)> {
    let plan = plan(request, retention, UnixTime::now().micros())?;
    let metrics = if request.metrics.is_empty() {
        (0..CHARTED_COUNT).collect()
    } else {
        request.metrics.clone()
    };
    let query = SeriesQuery {
        client_id,
        tier: plan.tier,
        step_us: plan.step_us,
        start_us: plan.start_us,
        end_us: plan.end_us,
        metrics,
    };
    Ok((plan, query))
}

/// Metric names to indices, each once, in the order first named; unknown
/// ones are the caller's error.
pub fn parse_metrics(list: &str) -> Result<Vec<usize>> {
    let mut indices = Vec::new();
    for name in list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let index = charted_index(name).ok_or_else(|| {
            let known: Vec<&str> = CHARTED.iter().map(|metric| metric.name).collect();
            Error::BadRequest(format!(
                "unknown metric `{name}`; known: {}",
                known.join(", ")
            ))
        })?;
        if !indices.contains(&index) {
            indices.push(index);
        }
    }
    Ok(indices)
}

/// A client's status as the fleet overview shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientStatus {
    pub name: String,
    pub first_seen: Option<UnixTime>,
    pub last_seen: Option<UnixTime>,
    pub interval: Option<Duration>,
    pub online: bool,
    pub latest: Option<Sample>,
    /// An admin's labels for the host, sorted.
    pub labels: Vec<String>,
}

impl ClientStatus {
    pub fn from_overview(overview: ClientOverview, now: UnixTime) -> Self {
        let last_seen = overview.latest.as_ref().map(|sample| sample.time);
        let mut times: Vec<i64> = last_seen.iter().map(|time| time.micros()).collect();
        times.extend(overview.previous.iter().map(|time| time.micros()));
        // The smallest recent gap: an outage in between must not stretch
        // the interval and hide that the client is gone again.
        let interval = times
            .windows(2)
            .map(|pair| pair[0] - pair[1])
            .filter(|gap| *gap > 0)
            .min()
            .map(|gap| Duration::from_micros(gap as u64));
        let online = last_seen.is_some_and(|last| {
            let allowed =
                interval.unwrap_or(UNKNOWN_INTERVAL).as_secs_f64() * OFFLINE_AFTER_INTERVALS;
            (now.micros() - last.micros()) as f64 / 1e6 <= allowed
        });
        ClientStatus {
            name: overview.name,
            first_seen: overview.first_seen,
            last_seen,
            interval,
            online,
            latest: overview.latest,
            labels: Vec::new(),
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClientId;

    const NOW: i64 = 1_764_000_000_000_000;
    const HOUR: i64 = 3_600_000_000;
    /// A time aligned to the hour, a day before NOW.
    const T: i64 = 1_763_913_600;

    fn request(from_s: i64, to_s: i64, step_s: Option<u64>) -> SeriesRequest {
        SeriesRequest {
            from: Some(UnixTime::from_micros(from_s * 1_000_000)),
            to: Some(UnixTime::from_micros(to_s * 1_000_000)),
            step: step_s.map(Duration::from_secs),
            ..SeriesRequest::default()
        }
    }

    fn forever() -> RetentionConfig {
        RetentionConfig {
            raw: None,
            one_minute: None,
            ten_minutes: None,
            one_hour: None,
            check_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn buckets_are_whole_and_aligned() {
        let plan = plan(&request(T + 30, T + 150, Some(60)), &forever(), NOW).unwrap();
        assert_eq!(plan.tier, Tier::OneMinute);
        assert_eq!(plan.step_us, 60_000_000);
        assert_eq!(plan.start_us, T * 1_000_000);
        // `to` is exclusive: T + 150 lies in the bucket from T + 120.
        assert_eq!(plan.end_us, (T + 180) * 1_000_000);
        let exact = plan_for(T, T + 120, 60);
        assert_eq!(exact.end_us, (T + 120) * 1_000_000);
    }

    fn plan_for(from: i64, to: i64, step: u64) -> Plan {
        plan(&request(from, to, Some(step)), &forever(), NOW).unwrap()
    }

    #[test]
    fn tier_is_the_coarsest_that_divides_the_step() {
        assert_eq!(plan_for(T, T + 3600, 10).tier, Tier::Raw);
        assert_eq!(plan_for(T, T + 3600, 60).tier, Tier::OneMinute);
        assert_eq!(plan_for(T, T + 86_400, 2_592).tier, Tier::TenMinutes);
        assert_eq!(plan_for(T, T + 86_400, 2_592).step_us, 2_400_000_000);
        assert_eq!(plan_for(T, T + 86_400, 7_200).tier, Tier::OneHour);
    }

    #[test]
    fn a_thirty_day_chart_gets_about_a_thousand_points_from_a_rollup() {
        let thirty_days = 30 * 86_400;
        let plan = plan(&request(T - thirty_days, T, None), &forever(), NOW).unwrap();
        assert_eq!(plan.tier, Tier::TenMinutes);
        let points = (plan.end_us - plan.start_us) / plan.step_us;
        assert_eq!(points, 1_080);
    }

    #[test]
    fn expired_tiers_are_skipped() {
        let retention = RetentionConfig {
            raw: Some(Duration::from_secs(86_400)),
            ..forever()
        };
        let now_s = NOW / 1_000_000;
        let old = plan(
            &request(now_s - 2 * 86_400, now_s, Some(10)),
            &retention,
            NOW,
        )
        .unwrap();
        assert_eq!(old.tier, Tier::OneMinute);
        assert_eq!(old.step_us, 60_000_000);
        let recent = plan(&request(now_s - 3600, now_s, Some(10)), &retention, NOW).unwrap();
        assert_eq!(recent.tier, Tier::Raw);
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let reversed = plan(&request(T + 10, T + 5, None), &forever(), NOW);
        assert!(matches!(reversed, Err(Error::BadRequest(m)) if m.contains("before")));
        let too_fine = plan(&request(T - 86_400 * 30, T, Some(1)), &forever(), NOW);
        assert!(matches!(too_fine, Err(Error::BadRequest(m)) if m.contains("at most")));
        let huge_step = plan(
            &request(T, T + 10, Some(400 * 86_400 * 366)),
            &forever(),
            NOW,
        );
        assert!(matches!(huge_step, Err(Error::BadRequest(m)) if m.contains("step")));
        let points = SeriesRequest {
            points: Some(0),
            ..request(T, T + 10, None)
        };
        assert!(plan(&points, &forever(), NOW).is_err());
        assert!(parse_metrics("cpu_load,bogus").is_err());
        assert_eq!(parse_metrics("cpu_load, mem").unwrap(), vec![0, 1]);
        assert_eq!(
            parse_metrics("mem,cpu_load,mem,mem").unwrap(),
            vec![1, 0],
            "each metric once, in the order first named"
        );
    }

    #[test]
    fn far_bounds_are_clamped_not_overflowed() {
        // From the epoch's far past to the far future: clamped to 2000 and
        // a day after now, so the bucket count is honest and refused.
        let wild = plan(
            &request(-9_000_000_000_000, 9_000_000_000_000, Some(1)),
            &forever(),
            NOW,
        );
        assert!(matches!(wild, Err(Error::BadRequest(m)) if m.contains("at most")));
        let everything = plan(
            &request(0, 9_000_000_000_000, Some(86_400 * 365)),
            &forever(),
            NOW,
        )
        .unwrap();
        assert!(everything.start_us <= EARLIEST_US);
        assert!(everything.end_us <= NOW + 2 * 86_400_000_000 + everything.step_us);
    }

    #[test]
    fn nice_steps_snap_by_ratio() {
        assert_eq!(nice_step_us(2_592_000_000), 2_400_000_000);
        assert_eq!(nice_step_us(3_600_000_000), HOUR);
        assert_eq!(nice_step_us(500_000), 1_000_000);
        assert_eq!(nice_step_us(31_536_000_000), 43_200_000_000);
    }

    fn overview(times_s: &[i64]) -> ClientOverview {
        let sample = |seconds: i64| Sample {
            time: UnixTime::from_micros(seconds * 1_000_000),
            cpu_load: Some(1.0),
            mem: None,
            storage: None,
            extended: None,
        };
        ClientOverview {
            id: ClientId(1),
            name: "web1".into(),
            first_seen: times_s.last().map(|s| UnixTime::from_micros(s * 1_000_000)),
            latest: times_s.first().map(|s| sample(*s)),
            previous: times_s[1.min(times_s.len())..]
                .iter()
                .map(|s| UnixTime::from_micros(s * 1_000_000))
                .collect(),
        }
    }

    #[test]
    fn offline_after_three_missed_intervals() {
        let at = |seconds: i64| UnixTime::from_micros(seconds * 1_000_000);
        let status = ClientStatus::from_overview(overview(&[1000, 990, 900]), at(1030));
        assert_eq!(status.interval, Some(Duration::from_secs(10)));
        assert!(status.online);
        let status = ClientStatus::from_overview(overview(&[1000, 990, 900]), at(1031));
        assert!(!status.online);
        let single = ClientStatus::from_overview(overview(&[1000]), at(1100));
        assert_eq!(single.interval, None);
        assert!(single.online, "unknown interval counts as a minute");
        let never = ClientStatus::from_overview(overview(&[]), at(1100));
        assert!(!never.online && never.last_seen.is_none());
    }
}
