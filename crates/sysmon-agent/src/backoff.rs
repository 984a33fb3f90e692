//! Exponential back-off with jitter, for retries after failed sends.
//!
//! The n-th consecutive failure waits about `min * 2^n`, capped at `max`,
//! with "equal jitter" (half fixed, half random) so that a fleet of agents
//! that lost the server at the same moment does not come back in lockstep.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::RetryPolicy;

#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    failures: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(policy: RetryPolicy) -> Backoff {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 32);
        Backoff::with_seed(policy, seed)
    }

    pub fn with_seed(policy: RetryPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            failures: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure and returns how long to wait before the next try.
    /// `at_least` is the server's `Retry-After`, honoured up to `max`.
    pub fn next_delay(&mut self, at_least: Option<Duration>) -> Duration {
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .policy
            .min
            .saturating_mul(1u32 << exponent)
            .min(self.policy.max);
        let half = ceiling / 2;
        let jitter = half.mul_f64(self.random_unit());
        let delay = (ceiling - half + jitter).max(self.policy.min.min(ceiling));
        delay.max(at_least.unwrap_or_default()).min(self.policy.max)
    }

    /// After a success: the next failure starts from `min` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// A number in [0, 1).
    fn random_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(min_ms: u64, max_ms: u64) -> RetryPolicy {
        RetryPolicy {
            min: Duration::from_millis(min_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    #[test]
    fn grows_exponentially_within_jitter_and_is_capped() {
        for seed in [1, 42, 0xdead_beef, u64::MAX] {
            let mut backoff = Backoff::with_seed(policy(1000, 60_000), seed);
            let mut previous_ceiling = Duration::ZERO;
            for n in 0..12 {
                let delay = backoff.next_delay(None);
                let ceiling = Duration::from_millis((1000u64 << n).min(60_000));
                assert!(delay <= ceiling, "try {n}: {delay:?} > {ceiling:?}");
                assert!(delay >= Duration::from_millis(1000), "try {n}: {delay:?}");
                assert!(
                    delay >= ceiling / 2,
                    "try {n}: {delay:?} below half of {ceiling:?}"
                );
                assert!(ceiling >= previous_ceiling);
                previous_ceiling = ceiling;
            }
            assert_eq!(backoff.failures(), 12);
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut backoff = Backoff::with_seed(policy(1000, 60_000), 7);
        let delays: Vec<Duration> = (0..20)
            .map(|_| {
                backoff.reset();
                for _ in 0..6 {
                    backoff.next_delay(None);
                }
                backoff.next_delay(None)
            })
            .collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "{delays:?}");
    }

    #[test]
    fn reset_starts_over_and_retry_after_is_a_floor_up_to_max() {
        let mut backoff = Backoff::with_seed(policy(1000, 8000), 3);
        for _ in 0..10 {
            backoff.next_delay(None);
        }
        backoff.reset();
        assert!(backoff.next_delay(None) <= Duration::from_millis(1000));
        backoff.reset();
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(3600))),
            Duration::from_secs(8)
        );
    }
}
