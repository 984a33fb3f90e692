//! One host's window of one signal for the rules that read it over the same
//! span: the points of the last `span`, kept as buckets of `span /`
//! [`BUCKETS`] (count, sum, min, max), so its memory is bounded whatever the
//! span and the host's rate (a day at 1 s is ~130 buckets, not 86,400
//! points) and an aggregate reads at most that many.
//!
//! Exactness: a bucket is in the window when it ends after `newest - span`,
//! so the window can reach back up to one bucket (1/[`BUCKETS`] of the
//! span) further than the span. Points sparser than a bucket, the usual
//! case (10 s samples under a 5-minute span whose buckets are 2.3 s), each
//! have a bucket of their own, and the window is exactly the old one.

use std::collections::VecDeque;
use std::time::Duration;

use super::rules::Aggregate;

/// Buckets a window is cut into.
pub const BUCKETS: i64 = 128;
/// Times of the newest points a window remembers, so one taken again is
/// not counted twice.
const REMEMBERED: usize = 8;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start_us: i64,
    count: u32,
    sum: f64,
    min: f64,
    max: f64,
}

#[derive(Debug)]
pub struct Window {
    span_us: i64,
    width_us: i64,
    buckets: VecDeque<Bucket>,
    /// The newest point: its time and value (what `last` reads).
    newest: (i64, f64),
    /// Times of the newest points taken, in no order ([`REMEMBERED`]).
    taken: [i64; REMEMBERED],
}

impl Window {
    pub fn new(span: Duration, time_us: i64, value: f64) -> Window {
        let span_us = i64::try_from(span.as_micros()).unwrap_or(i64::MAX);
        let mut window = Window {
            span_us,
            width_us: (span_us / BUCKETS).max(1),
            buckets: VecDeque::new(),
            newest: (time_us, value),
            taken: [i64::MIN; REMEMBERED],
        };
        window.insert(time_us, value);
        window
    }

    /// Takes a point; one at the time of one of the newest points taken is
    /// the same point again (a sample is stored once per host and time, and
    /// completing it never replaces a value: another server's completed
    /// sample is read back whole, values already taken included), so it is
    /// not counted twice.
    pub fn add(&mut self, time_us: i64, value: f64) {
        if !self.taken.contains(&time_us) {
            self.insert(time_us, value);
        }
    }

    fn insert(&mut self, time_us: i64, value: f64) {
        // The oldest remembered time makes room.
        if let Some(oldest) = self.taken.iter_mut().min() {
            *oldest = time_us;
        }
        let start_us = time_us.div_euclid(self.width_us) * self.width_us;
        // Points come in time order but for back-fills: the newest bucket
        // or one after it, without a search.
        let at = match self.buckets.back() {
            Some(newest) if newest.start_us <= start_us => {
                self.buckets.len() - usize::from(newest.start_us == start_us)
            }
            _ => self
                .buckets
                .partition_point(|bucket| bucket.start_us < start_us),
        };
        match self.buckets.get_mut(at) {
            Some(bucket) if bucket.start_us == start_us => {
                bucket.count += 1;
                bucket.sum += value;
                bucket.min = bucket.min.min(value);
                bucket.max = bucket.max.max(value);
            }
            _ => self.buckets.insert(
                at,
                Bucket {
                    start_us,
                    count: 1,
                    sum: value,
                    min: value,
                    max: value,
                },
            ),
        }
        if time_us >= self.newest.0 {
            self.newest = (time_us, value);
        }
        let from = self.newest.0.saturating_sub(self.span_us);
        while self.buckets.len() > 1
            && self
                .buckets
                .front()
                .is_some_and(|bucket| bucket.start_us.saturating_add(self.width_us) <= from)
        {
            self.buckets.pop_front();
        }
    }

    /// Time of the newest point.
    pub fn newest_us(&self) -> i64 {
        self.newest.0
    }

    /// Whether the points it holds reach back over its whole span, give or
    /// take one `interval` of the host's (points are that far apart): a
    /// rule judged on less (its first minute after a restart, the first
    /// sample after a host was down) could fire or resolve on one sample.
    pub fn is_full(&self, interval: Duration) -> bool {
        let slack = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
        let reaches_back_to = self
            .newest
            .0
            .saturating_sub(self.span_us)
            .saturating_add(slack);
        self.buckets
            .front()
            .is_some_and(|oldest| oldest.start_us <= reaches_back_to)
    }

    pub fn aggregate(&self, aggregate: Aggregate) -> f64 {
        let buckets = self.buckets.iter();
        match aggregate {
            _ if self.span_us == 0 => self.newest.1,
            Aggregate::Last => self.newest.1,
            Aggregate::Avg => {
                let (sum, count) = buckets.fold((0.0, 0u64), |(sum, count), bucket| {
                    (sum + bucket.sum, count + u64::from(bucket.count))
                });
                sum / count.max(1) as f64
            }
            Aggregate::Min => buckets
                .map(|bucket| bucket.min)
                .fold(f64::INFINITY, f64::min),
            Aggregate::Max => buckets
                .map(|bucket| bucket.max)
                .fold(f64::NEG_INFINITY, f64::max),
        }
    }

    #[cfg(test)]
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: i64 = 1_000_000;

    #[test]
    fn a_day_at_one_second_keeps_every_point_in_bounded_buckets() {
        let day = Duration::from_secs(86_400);
        let mut window = Window::new(day, 0, 0.0);
        // Two days of 1 s points: the first day's are 0, the second's 100
        // but for one 500 spike and one -7 dip.
        for s in 1..2 * 86_400 {
            let value = match s {
                _ if s < 86_400 => 0.0,
                100_000 => 500.0,
                150_000 => -7.0,
                _ => 100.0,
            };
            window.add(s * SECOND, value);
        }
        assert!(window.bucket_count() <= BUCKETS as usize + 1);
        assert_eq!(window.aggregate(Aggregate::Max), 500.0);
        assert_eq!(window.aggregate(Aggregate::Min), -7.0);
        assert_eq!(window.aggregate(Aggregate::Last), 100.0);
        // The average of the last day, to within one bucket of old points.
        let average = window.aggregate(Aggregate::Avg);
        assert!((99.0..=100.01).contains(&average), "{average}");
        assert!(window.is_full(Duration::from_secs(1)));
    }

    #[test]
    fn sparse_points_are_exactly_those_of_the_span() {
        // 10 s points under a 5-minute span: 31 points from 0 to 300 s.
        let mut window = Window::new(Duration::from_secs(300), 0, 1.0);
        for s in (10..=600).step_by(10) {
            window.add(s * SECOND, s as f64);
        }
        // Points from 300 to 600 s: their average is 450.
        assert_eq!(window.aggregate(Aggregate::Avg), 450.0);
        assert_eq!(window.aggregate(Aggregate::Min), 300.0);
    }

    #[test]
    fn a_window_is_full_once_it_has_seen_its_span() {
        let mut window = Window::new(Duration::from_secs(60), 100 * SECOND, 1.0);
        let interval = Duration::from_secs(10);
        for s in [110, 120, 130, 140] {
            window.add(s * SECOND, 1.0);
            assert!(!window.is_full(interval), "{s}");
        }
        window.add(150 * SECOND, 1.0);
        assert!(window.is_full(interval), "50 s seen, one interval short");
        // A late point from before the first fills it back.
        let mut late = Window::new(Duration::from_secs(60), 100 * SECOND, 1.0);
        late.add(40 * SECOND, 1.0);
        assert!(late.is_full(Duration::ZERO));
        assert_eq!(late.newest_us(), 100 * SECOND);
        // One older than the span does not: it is not in the window.
        let mut older = Window::new(Duration::from_secs(60), 100 * SECOND, 1.0);
        older.add(10 * SECOND, 1.0);
        assert!(!older.is_full(Duration::ZERO));
    }

    #[test]
    fn a_window_is_not_full_after_a_gap() {
        // Five minutes of 10 s points, an hour of silence, one point.
        let mut window = Window::new(Duration::from_secs(300), 0, 90.0);
        for s in (10..=300).step_by(10) {
            window.add(s * SECOND, 90.0);
        }
        assert!(window.is_full(Duration::from_secs(10)));
        window.add(3_900 * SECOND, 10.0);
        assert!(
            !window.is_full(Duration::from_secs(10)),
            "one sample, not five minutes"
        );
        assert_eq!(window.aggregate(Aggregate::Avg), 10.0);
    }

    #[test]
    fn a_recent_point_again_is_not_counted_twice() {
        let mut window = Window::new(Duration::from_secs(60), 10 * SECOND, 50.0);
        window.add(20 * SECOND, 100.0);
        window.add(20 * SECOND, 100.0);
        assert_eq!(window.aggregate(Aggregate::Avg), 75.0);
        // A newer point came between: the older one again still counts once.
        window.add(30 * SECOND, 0.0);
        window.add(20 * SECOND, 100.0);
        window.add(10 * SECOND, 50.0);
        assert_eq!(window.aggregate(Aggregate::Avg), 50.0);
    }

    #[test]
    fn a_zero_span_reads_the_newest_point() {
        let mut window = Window::new(Duration::ZERO, 5, 1.0);
        window.add(7, 3.0);
        window.add(6, 2.0);
        assert_eq!(window.aggregate(Aggregate::Avg), 3.0);
        assert!(window.is_full(Duration::ZERO));
        assert_eq!(window.bucket_count(), 1);
    }
}
