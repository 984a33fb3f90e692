//! Online password guessing. Wrong passwords are counted per peer address
//! (an IPv6 address by its /64, which one host usually holds whole) and per
//! account name, each allowed [`LoginLimits::failures_per_minute`] (a
//! burst, refilled evenly over the minute). After that many, attempts are
//! refused with `429 too_many_attempts` and `Retry-After`, before the
//! password is checked, until the count has decayed: a guesser gets a few
//! tries a minute, and the server spends no argon2 time on it. Every wrong
//! password is logged with the address and the name, in one line
//! fail2ban can match (docs/security.md).
//!
//! The per-account count can lock an account's owner out while someone
//! guesses at it (for as long as the guessing goes on); the per-address
//! count alone would let a botnet guess at one account freely.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Wrong passwords a minute from one address, and for one account,
    /// before attempts are refused.
    pub failures_per_minute: NonZeroU32,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            failures_per_minute: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
        }
    }
}

/// Keys tracked past which the limiters forget the ones at rest.
const TRACKED_KEYS: usize = 10_000;

/// Who a failure is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Address(IpAddr),
    Account(String),
}

pub struct LoginGuard {
    failures: DefaultKeyedRateLimiter<Key>,
    /// Keys over their limit, and until when they are refused.
    refused: Mutex<HashMap<Key, Instant>>,
    clock: DefaultClock,
}

impl LoginGuard {
    pub fn new(limits: LoginLimits) -> Self {
        // The failure that finds no cell left starts the refusal, so a
        // burst of one fewer refuses the attempt after the allowed ones.
        let allowed = limits.failures_per_minute;
        let burst = NonZeroU32::new(allowed.get() - 1).unwrap_or(NonZeroU32::MIN);
        Self {
            failures: DefaultKeyedRateLimiter::keyed(Quota::per_minute(allowed).allow_burst(burst)),
            refused: Mutex::new(HashMap::new()),
            clock: DefaultClock::default(),
        }
    }

    /// Refuses an attempt from `peer` for `account` while either is over
    /// its limit.
    pub fn check(&self, peer: Option<IpAddr>, account: &str) -> Result<()> {
        let now = Instant::now();
        let refused = self.lock();
        let until = keys(peer, account)
            .filter_map(|key| refused.get(&key).copied())
            .filter(|&until| until > now)
            .max();
        match until {
            Some(until) => Err(Error::TooManyAttempts {
                retry_after: until - now,
            }),
            None => Ok(()),
        }
    }

    /// Counts a wrong password from `peer` for `account`, and logs it.
    pub fn failed(&self, peer: Option<IpAddr>, account: &str, route: &'static str) {
        let peer_text = peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        tracing::warn!(
            peer = %peer_text,
            user = %account.escape_debug(),
            route,
            "failed login: wrong user name or password"
        );
        let mut over = Vec::new();
        for key in keys(peer, account) {
            if let Err(not_until) = self.failures.check_key(&key) {
                over.push((key, not_until.wait_time_from(self.clock.now())));
            }
        }
        if self.failures.len() > TRACKED_KEYS {
            self.failures.retain_recent();
        }
        if over.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut refused = self.lock();
        refused.retain(|_, until| *until > now);
        for (key, wait) in over {
            tracing::warn!(
                peer = %peer_text,
                user = %account.escape_debug(),
                refused_for_s = wait.as_secs_f64(),
                "too many failed logins: refusing further attempts for a while"
            );
            refused.insert(key, now + wait.max(Duration::from_secs(1)));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Instant>> {
        self.refused
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The keys an attempt counts against: its address (IPv6 by /64) and its
/// account.
fn keys(peer: Option<IpAddr>, account: &str) -> impl Iterator<Item = Key> {
    let address = peer.map(|ip| match ip {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            Key::Address(IpAddr::V6(prefix.into()))
        }
        IpAddr::V6(v6) => Key::Address(v6.to_ipv4_mapped().map_or(ip, IpAddr::V4)),
        IpAddr::V4(_) => Key::Address(ip),
    });
    address
        .into_iter()
        .chain(std::iter::once(Key::Account(account.to_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(per_minute: u32) -> LoginGuard {
        LoginGuard::new(LoginLimits {
            failures_per_minute: NonZeroU32::new(per_minute).unwrap(),
        })
    }

    #[test]
    fn the_eleventh_failure_in_a_minute_is_refused() {
        let guard = guard(10);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        for attempt in 1..=10 {
            guard
                .check(Some(peer), "admin")
                .unwrap_or_else(|_| panic!("attempt {attempt} is checked"));
            guard.failed(Some(peer), "admin", "test");
        }
        let refused = guard.check(Some(peer), "admin").unwrap_err();
        assert!(
            matches!(refused, Error::TooManyAttempts { .. }),
            "{refused:?}"
        );
        // Another account from the same address: refused too.
        assert!(guard.check(Some(peer), "other").is_err());
        // The same account from elsewhere: refused too.
        let elsewhere: IpAddr = "198.51.100.1".parse().unwrap();
        assert!(guard.check(Some(elsewhere), "ADMIN").is_err());
        // Neither: allowed.
        assert!(guard.check(Some(elsewhere), "other").is_ok());
    }

    #[test]
    fn an_ipv6_host_counts_as_its_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let key = |ip| keys(Some(ip), "x").next();
        assert_eq!(key(a), key(b));
        assert_ne!(key(a), key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(
            key(mapped),
            Some(Key::Address("192.0.2.7".parse().unwrap()))
        );
    }
}
