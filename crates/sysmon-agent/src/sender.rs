//! The sink side: takes the oldest samples from the outbox in batches,
//! hands them to a transport, and deletes exactly the ones the server
//! acknowledged. Failures are classified: retry with back-off, set the
//! refused samples aside, or stop sending until a new token is stored.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use sysmon_core::v1::BatchAck;
use sysmon_core::UnixTime;

use crate::backoff::Backoff;
use crate::collection::Stats;
use crate::config::RetryPolicy;
use crate::enroll::{enroll, Enrolment};
use crate::error::Error;
use crate::outbox::{Outbox, Pending};
use crate::state::StateDir;
use crate::transport::Transport;
use crate::trust::Endpoint;
use crate::wake::Wake;

/// Request bodies stay below this (the server takes up to 1 MiB).
pub const MAX_BATCH_BYTES: usize = 512 * 1024;
/// A sample the server leaves out of this many acknowledgements in a row
/// is set aside rather than sent forever.
const MAX_UNACKNOWLEDGED: u32 = 3;
/// While the server is unreachable, a reminder this often.
const DOWN_REMINDER: Duration = Duration::from_secs(300);
/// Without a usable token, the token file is checked this often.
const TOKEN_POLL: Duration = Duration::from_secs(5);
/// With nothing to send, the sender looks again at least this often.
const IDLE_POLL: Duration = Duration::from_secs(60);

/// How to get a token.
pub struct Credentials {
    pub state: StateDir,
    pub endpoint: Endpoint,
    pub token: Option<String>,
    /// Name and password, while enrollment is still to be done.
    pub enroll: Option<Enrolment>,
}

enum Link {
    Up,
    Down {
        since: Instant,
        reminded_at: Instant,
    },
}

pub struct Sender<'a> {
    outbox: &'a Outbox,
    wake: &'a Wake,
    stats: &'a Stats,
    transport: Box<dyn Transport>,
    credentials: Credentials,
    /// A token the server refused; sending waits for a different one.
    refused_token: Option<(String, Option<SystemTime>)>,
    backoff: Backoff,
    retry_max: Duration,
    batch_size: usize,
    /// Send one sample at a time up to this time, to find the sample in a
    /// batch the server refused without naming it.
    one_by_one_until: Option<i64>,
    unacknowledged: HashMap<i64, u32>,
    link: Link,
    /// A backlog being delivered: since when, and how large it was.
    catching_up: Option<(Instant, usize)>,
}

impl<'a> Sender<'a> {
    pub fn new(
        outbox: &'a Outbox,
        wake: &'a Wake,
        stats: &'a Stats,
        transport: Box<dyn Transport>,
        credentials: Credentials,
        retry: RetryPolicy,
        batch_size: usize,
    ) -> Sender<'a> {
        Sender {
            outbox,
            wake,
            stats,
            transport,
            credentials,
            refused_token: None,
            backoff: Backoff::new(retry),
            retry_max: retry.max,
            batch_size: batch_size.max(1),
            one_by_one_until: None,
            unacknowledged: HashMap::new(),
            link: Link::Up,
            catching_up: None,
        }
    }

    /// Sends until stopped.
    pub fn run(mut self) {
        tracing::info!(via = %self.transport.describe(), backlog = self.outbox.len(), "sender started");
        while !self.wake.is_stopped() {
            let Some(token) = self.token() else {
                continue;
            };
            let one_by_one = match (self.one_by_one_until, self.outbox.oldest_time()) {
                (Some(until), Some(oldest)) if oldest <= until => true,
                _ => {
                    self.one_by_one_until = None;
                    false
                }
            };
            let limit = if one_by_one { 1 } else { self.batch_size };
            let batch = self.outbox.oldest(limit, MAX_BATCH_BYTES);
            if batch.is_empty() {
                if self.wake.wait_for_work(IDLE_POLL) {
                    return;
                }
                continue;
            }
            let outcome = self.transport.send(&token, &batch);
            let stopped = match outcome {
                Ok(ack) => self.acknowledged(&batch, ack),
                Err(error) => self.failed(&batch, &token, error),
            };
            if stopped {
                return;
            }
        }
    }

    /// The token to send with, enrolling first if need be. `None` after
    /// waiting (for a new token, or a back-off): the caller loops.
    fn token(&mut self) -> Option<String> {
        if let Some((refused, modified)) = &self.refused_token {
            // Wait for a re-enrollment to store a different token.
            if self.credentials.state.token_modified() != *modified {
                if let Ok(Some(stored)) = self.credentials.state.read_token() {
                    if stored != *refused {
                        tracing::info!("a new token was stored; sending again");
                        self.refused_token = None;
                        self.credentials.token = Some(stored);
                    }
                }
            }
            if self.refused_token.is_some() {
                self.wake.sleep(TOKEN_POLL);
                return None;
            }
        }
        if let Some(token) = &self.credentials.token {
            return Some(token.clone());
        }
        let Some(enrolment) = self.credentials.enroll.clone() else {
            self.refuse(String::new());
            return None;
        };
        let name = &enrolment.name;
        match enroll(&self.credentials.endpoint, &enrolment) {
            Ok(token) => {
                if let Err(error) = self.credentials.state.write_token(&token) {
                    tracing::error!(%error, "enrolled, but cannot store the token: enrollment will be needed again after a restart");
                }
                tracing::info!(name, "enrolled; token stored");
                self.credentials.enroll = None;
                self.credentials.token = Some(token.clone());
                Some(token)
            }
            Err(Error::Unauthorized(message)) | Err(Error::Enrollment(message)) => {
                tracing::error!("{message}; not sending until a token is stored (run sysmon-agent --enroll); collection continues");
                self.credentials.enroll = None;
                self.refuse(String::new());
                None
            }
            Err(error) => {
                self.unavailable(&error.to_string(), None);
                None
            }
        }
    }

    /// Stops sending with `token` until the token file holds another.
    fn refuse(&mut self, token: String) {
        self.credentials.token = None;
        self.refused_token = Some((token, self.credentials.state.token_modified()));
    }

    /// Handles a `BatchAck`; returns true when stopped.
    fn acknowledged(&mut self, batch: &[Pending], ack: BatchAck) -> bool {
        let acknowledged: HashSet<i64> = ack
            .stored
            .iter()
            .chain(&ack.duplicates)
            .filter_map(|time| whole_seconds(*time))
            .collect();
        let (done, missing): (Vec<i64>, Vec<i64>) = batch
            .iter()
            .map(|pending| pending.time)
            .partition(|time| acknowledged.contains(time));
        self.outbox.remove(&done);
        self.stats
            .sent
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        for time in &done {
            self.unacknowledged.remove(time);
        }
        tracing::debug!(
            sent = done.len(),
            duplicates = ack.duplicates.len(),
            "batch acknowledged"
        );
        self.back_up();
        if missing.is_empty() {
            return false;
        }
        tracing::warn!(
            missing = missing.len(),
            first = missing[0],
            "the server acknowledged the batch without some of its samples; they will be sent again"
        );
        for time in missing {
            let count = self.unacknowledged.entry(time).or_insert(0);
            *count += 1;
            if *count >= MAX_UNACKNOWLEDGED {
                self.unacknowledged.remove(&time);
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.outbox.set_aside(
                    time,
                    "the server left it out of three acknowledgements in a row",
                );
            }
        }
        if done.is_empty() {
            // Nothing moved: do not spin.
            let delay = self.backoff.next_delay(None);
            return self.wake.sleep(delay);
        }
        false
    }

    /// The link works (again).
    fn back_up(&mut self) {
        self.backoff.reset();
        let backlog = self.outbox.len();
        if let Link::Down { since, .. } = self.link {
            tracing::info!(
                down_for_s = since.elapsed().as_secs(),
                backlog,
                "server reachable again; delivering the backlog"
            );
            self.link = Link::Up;
            if backlog > 0 {
                self.catching_up = Some((Instant::now(), backlog));
            }
        }
        if let Some((since, size)) = self.catching_up {
            if backlog == 0 {
                tracing::info!(
                    samples = size,
                    took_s = since.elapsed().as_secs_f64(),
                    "backlog delivered"
                );
                self.catching_up = None;
            }
        }
    }

    /// Handles a failed send; returns true when stopped.
    fn failed(&mut self, batch: &[Pending], token: &str, error: Error) -> bool {
        match error {
            Error::Unavailable {
                reason,
                retry_after,
            } => self.unavailable(&reason, retry_after),
            Error::Unauthorized(message) => {
                tracing::error!(
                    "{message}; not sending until a new token is stored (collection continues into the outbox)"
                );
                self.refuse(token.to_owned());
                false
            }
            Error::Rejected {
                index: Some(index),
                message,
            } if index < batch.len() => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.outbox.set_aside(batch[index].time, &message);
                false
            }
            Error::Rejected { message, .. } if batch.len() > 1 => {
                tracing::warn!(
                    message,
                    samples = batch.len(),
                    "the server refused a batch without naming a sample; sending those one at a time"
                );
                self.one_by_one_until = batch.last().map(|pending| pending.time);
                false
            }
            Error::Rejected { message, .. } => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.outbox.set_aside(batch[0].time, &message);
                false
            }
            Error::TooLarge(message) if batch.len() > 1 => {
                self.batch_size = (batch.len() / 2).max(1);
                tracing::warn!(
                    message,
                    batch_size = self.batch_size,
                    "the server found the batch too large; sending smaller ones"
                );
                false
            }
            Error::TooLarge(message) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                self.outbox
                    .set_aside(batch[0].time, &format!("too large: {message}"));
                false
            }
            Error::Unsupported(what) => {
                if matches!(self.link, Link::Up) {
                    tracing::error!(
                        "the server does not offer {what}; upgrade the server or choose the other transport. Retrying every {}s",
                        self.retry_max.as_secs()
                    );
                }
                self.unavailable(&format!("no {what}"), Some(self.retry_max))
            }
            other => self.unavailable(&other.to_string(), None),
        }
    }

    /// Waits out a back-off, logging only changes of state (and a reminder
    /// every few minutes). Returns true when stopped.
    fn unavailable(&mut self, reason: &str, retry_after: Option<Duration>) -> bool {
        let delay = self.backoff.next_delay(retry_after);
        let backlog = self.outbox.len();
        match &mut self.link {
            Link::Up => {
                tracing::warn!(
                    reason,
                    backlog,
                    retry_in_s = delay.as_secs_f64(),
                    "server unreachable; samples stay in the outbox, retrying with back-off"
                );
                let now = Instant::now();
                self.link = Link::Down {
                    since: now,
                    reminded_at: now,
                };
            }
            Link::Down { since, reminded_at } => {
                if reminded_at.elapsed() >= DOWN_REMINDER {
                    tracing::info!(
                        reason,
                        backlog,
                        down_for_s = since.elapsed().as_secs(),
                        "server still unreachable"
                    );
                    *reminded_at = Instant::now();
                } else {
                    tracing::debug!(reason, retry_in_s = delay.as_secs_f64(), "send failed");
                }
            }
        }
        self.wake.sleep(delay)
    }
}

/// A time in an acknowledgement as whole unix seconds (the agent's sample
/// times always are).
fn whole_seconds(time: UnixTime) -> Option<i64> {
    let micros = time.micros();
    (micros % 1_000_000 == 0).then_some(micros / 1_000_000)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use serde_json::json;
    use sysmon_core::v1::HostSample;

    use super::*;
    use crate::config::OutboxLimits;
    use crate::transport::ws::classify_error;

    /// A sysmon server older than error codes, over WebSocket: it answers
    /// a batch holding a sample it refuses with a code-less
    /// `sample N: ...`, or every batch with `refusal` when one is given,
    /// and stores every other batch. Records the size of each batch.
    struct OlderServer {
        bad: i64,
        refusal: Option<&'static str>,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Transport for OlderServer {
        fn send(&mut self, _token: &str, batch: &[Pending]) -> crate::error::Result<BatchAck> {
            self.batches.lock().unwrap().push(batch.len());
            let reason = match (self.refusal, batch.iter().position(|p| p.time == self.bad)) {
                (Some(refusal), _) => refusal.to_owned(),
                (None, Some(index)) => format!("sample {index}: field `mem` must not be negative"),
                (None, None) => {
                    let stored = batch
                        .iter()
                        .map(|p| UnixTime::from_micros(p.time * 1_000_000))
                        .collect();
                    return Ok(BatchAck {
                        stored,
                        duplicates: Vec::new(),
                    });
                }
            };
            Err(classify_error(
                &json!({"type": "ERROR", "reason": reason, "batch_id": 1}),
            ))
        }

        fn describe(&self) -> String {
            "an older server".to_owned()
        }
    }

    /// Runs a sender over `server` with six samples queued, one of them
    /// `server.bad`, until `done` holds (or 10 s pass); returns the outbox.
    fn deliver(server: OlderServer, done: impl Fn(&Outbox) -> bool) -> (Outbox, Stats) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let outbox = Outbox::open(
            &state.outbox_dir(),
            &state.rejected_dir(),
            OutboxLimits::default(),
        )
        .unwrap();
        let first = server.bad - 3;
        for time in first..first + 6 {
            outbox
                .push(&HostSample {
                    time: time as f64,
                    cpu_load: Some(1.0),
                    mem: Some(1.0),
                    storage: None,
                    extended: Default::default(),
                })
                .unwrap();
        }
        let (wake, stats) = (Wake::new(), Stats::default());
        let credentials = Credentials {
            state,
            endpoint: Endpoint::plain("http://unused", Duration::from_secs(1)),
            token: Some("t".to_owned()),
            enroll: None,
        };
        let retry = RetryPolicy {
            min: Duration::from_millis(1),
            max: Duration::from_millis(10),
        };
        std::thread::scope(|scope| {
            let sender = Sender::new(
                &outbox,
                &wake,
                &stats,
                Box::new(server),
                credentials,
                retry,
                500,
            );
            scope.spawn(|| sender.run());
            let deadline = Instant::now() + Duration::from_secs(10);
            while !done(&outbox) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            wake.stop();
        });
        (outbox, stats)
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    #[test]
    fn an_older_servers_refused_sample_is_found_one_by_one_and_set_aside() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let bad = now() - 10;
        let server = OlderServer {
            bad,
            refusal: None,
            batches: batches.clone(),
        };
        let (outbox, stats) = deliver(server, Outbox::is_empty);
        assert!(
            outbox.is_empty(),
            "left in the outbox: {:?}",
            outbox.times()
        );
        assert_eq!(stats.sent.load(Ordering::Relaxed), 5);
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 1);
        assert_eq!(*batches.lock().unwrap(), [6, 1, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn an_older_servers_authorization_error_stops_sending() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let server = OlderServer {
            bad: now() - 10,
            refusal: Some("authorization error"),
            batches: batches.clone(),
        };
        let sent_once = || !batches.lock().unwrap().is_empty();
        let (outbox, stats) = deliver(server, |_| {
            // Long enough for a retry, were there one.
            sent_once() && {
                std::thread::sleep(Duration::from_millis(300));
                true
            }
        });
        assert_eq!(
            *batches.lock().unwrap(),
            [6],
            "no retry with a refused token"
        );
        assert_eq!(outbox.len(), 6);
        assert_eq!(stats.rejected.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn acknowledged_times_must_be_whole_seconds() {
        assert_eq!(
            whole_seconds(UnixTime::from_micros(1_764_000_000_000_000)),
            Some(1_764_000_000)
        );
        assert_eq!(
            whole_seconds(UnixTime::from_micros(1_764_000_000_500_000)),
            None
        );
    }
}
