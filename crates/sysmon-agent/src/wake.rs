//! Sleeping that a stop request (SIGTERM) or new work can cut short.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    stop: bool,
    work: bool,
}

/// Shared by the collector, the sender and the signal handler.
#[derive(Debug, Default)]
pub struct Wake {
    state: Mutex<State>,
    changed: Condvar,
}

impl Wake {
    pub fn new() -> Wake {
        Wake::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks every thread to finish.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.lock().stop
    }

    /// Tells the sender there is something new in the outbox.
    pub fn notify_work(&self) {
        self.lock().work = true;
        self.changed.notify_all();
    }

    /// Sleeps for `duration` unless stopped first; new work does not wake
    /// it (a back-off stays a back-off). Returns true when stopped.
    pub fn sleep(&self, duration: Duration) -> bool {
        self.wait(duration, false)
    }

    /// Waits up to `timeout` for new work; returns true when stopped.
    pub fn wait_for_work(&self, timeout: Duration) -> bool {
        self.wait(timeout, true)
    }

    fn wait(&self, duration: Duration, for_work: bool) -> bool {
        let deadline = Instant::now() + duration;
        let mut state = self.lock();
        loop {
            if state.stop {
                return true;
            }
            if for_work && state.work {
                state.work = false;
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn work_wakes_the_waiter_but_not_the_sleeper_and_stop_wakes_both() {
        let wake = Arc::new(Wake::new());
        wake.notify_work();
        let started = Instant::now();
        assert!(!wake.wait_for_work(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(1));

        wake.notify_work();
        let started = Instant::now();
        assert!(!wake.sleep(Duration::from_millis(200)));
        assert!(started.elapsed() >= Duration::from_millis(200));

        let stopper = {
            let wake = wake.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                wake.stop();
            })
        };
        let started = Instant::now();
        assert!(wake.sleep(Duration::from_secs(10)));
        assert!(started.elapsed() < Duration::from_secs(5));
        stopper.join().unwrap();
        assert!(wake.wait_for_work(Duration::from_secs(10)));
        assert!(wake.is_stopped());
    }
}
