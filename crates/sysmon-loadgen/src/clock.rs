//! Sample times: every sample a client sends has a time of its own.
//!
//! A client's times are `base + n × step` for n = 0, 1, 2, ... (1 ms steps by
//! default), so they never repeat within a client, whatever the transport,
//! retries included (a retried sample keeps its time). The base is the
//! wall clock at the start, or just after the last sample the server
//! already holds for the user, so a run with reused users does not collide
//! with the previous one. The server refuses times more than a day ahead of
//! its clock; [`SampleClock::next`] refuses before that.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Error, Result};

pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// How far ahead of the wall clock a time may run: the server's limit is a
/// day; an hour is left for clock differences between the two machines.
pub const MAX_AHEAD_MICROS: i64 = 23 * 3600 * MICROS_PER_SECOND;

/// The wall clock, in unix microseconds.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros() as i64)
        .unwrap_or_default()
}

/// The first time a client uses: now (rounded down to the step), or one
/// step past the last time the server already holds for this user,
/// whichever is later.
pub fn base_time(now_micros: i64, last_stored_micros: Option<i64>, step_micros: i64) -> i64 {
    let step = step_micros.max(1);
    let now = now_micros - now_micros.rem_euclid(step);
    match last_stored_micros {
        Some(last) if last >= now => last + step,
        _ => now,
    }
}

/// Hands out one client's sample times.
#[derive(Debug, Clone)]
pub struct SampleClock {
    base: i64,
    step: i64,
    issued: i64,
}

impl SampleClock {
    pub fn new(base_micros: i64, step_micros: i64) -> Self {
        Self {
            base: base_micros,
            step: step_micros.max(1),
            issued: 0,
        }
    }

    /// The next time, or [`Error::TimeBudget`] when it would run more than
    /// [`MAX_AHEAD_MICROS`] ahead of `now_micros`.
    pub fn next(&mut self, now_micros: i64) -> Result<i64> {
        let time = self.base + self.issued * self.step;
        if time > now_micros + MAX_AHEAD_MICROS {
            return Err(Error::TimeBudget);
        }
        self.issued += 1;
        Ok(time)
    }

    /// How many times have been handed out.
    pub fn issued(&self) -> u64 {
        self.issued as u64
    }
}

/// Unix seconds as an exact decimal (`1764079980.123`, `1764079980`): the
/// server parses it back to exactly the same microsecond.
pub fn seconds_text(micros: i64) -> String {
    let seconds = micros.div_euclid(MICROS_PER_SECOND);
    let fraction = micros.rem_euclid(MICROS_PER_SECOND);
    if fraction == 0 {
        return seconds.to_string();
    }
    let digits = format!("{fraction:06}");
    format!("{seconds}.{}", digits.trim_end_matches('0'))
}

/// Unix seconds as the server writes them back (a JSON number), to
/// microseconds.
pub fn micros_from_seconds(seconds: f64) -> Option<i64> {
    let micros = (seconds * MICROS_PER_SECOND as f64).round();
    (micros.is_finite() && micros.abs() < i64::MAX as f64).then_some(micros as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const NOW: i64 = 1_764_079_980_123_456;

    #[test]
    fn times_are_unique_and_spaced_by_the_step() {
        let mut clock = SampleClock::new(base_time(NOW, None, 1000), 1000);
        let times: Vec<i64> = (0..10_000).map(|_| clock.next(NOW).unwrap()).collect();
        let distinct: HashSet<i64> = times.iter().copied().collect();
        assert_eq!(distinct.len(), times.len());
        assert_eq!(times[0], 1_764_079_980_123_000);
        assert!(times.windows(2).all(|pair| pair[1] - pair[0] == 1000));
        assert_eq!(clock.issued(), 10_000);
    }

    #[test]
    fn base_follows_what_is_already_stored() {
        assert_eq!(base_time(NOW, None, 1000), 1_764_079_980_123_000);
        // Stored samples in the past do not matter.
        assert_eq!(
            base_time(NOW, Some(NOW - 5_000_000), 1000),
            1_764_079_980_123_000
        );
        // A previous run that ran ahead of the clock: continue after it.
        let last = NOW + 60_000_000;
        assert_eq!(base_time(NOW, Some(last), 1000), last + 1000);
        assert_eq!(base_time(NOW, None, 1), NOW);
    }

    #[test]
    fn never_more_than_a_day_ahead() {
        let step = 3600 * MICROS_PER_SECOND;
        let mut clock = SampleClock::new(NOW, step);
        for _ in 0..=23 {
            clock.next(NOW).unwrap();
        }
        assert!(matches!(clock.next(NOW), Err(Error::TimeBudget)));
        // As the wall clock moves on, the budget comes back.
        assert!(clock.next(NOW + step).is_ok());
    }

    #[test]
    fn seconds_text_is_exact() {
        assert_eq!(seconds_text(1_764_079_980_000_000), "1764079980");
        assert_eq!(seconds_text(1_764_079_980_123_000), "1764079980.123");
        assert_eq!(seconds_text(1_764_079_980_000_001), "1764079980.000001");
        for micros in [
            1_764_079_980_123_000,
            1_764_079_980_999_999,
            946_684_800_000_001,
        ] {
            let parsed: f64 = seconds_text(micros).parse().unwrap();
            assert_eq!(micros_from_seconds(parsed), Some(micros));
        }
        assert_eq!(micros_from_seconds(f64::NAN), None);
    }
}
