//! The end check: every client reads back what the server stored over the
//! span of its run and counts the acknowledged samples that are not there.
//! A sample acknowledged but missing is a lost sample; the count must be 0.
//!
//! Reads go through the original report route
//! (`GET /client/USER/time/report?start=S&end=E`, rows with `unix_time`) or
//! the v1 route (`GET /api/v1/samples?from=S&to=E`, `HostSample`s), in
//! windows of at most [`WINDOW_SAMPLES`] sample times each.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use sysmon_core::v1::HostSample;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::ClientReport;
use crate::clock::{micros_from_seconds, seconds_text};
use crate::options::{CheckApi, Plan};

/// Sample times per read-back request: at most one page of
/// `GET /api/v1/samples` (10,000 samples); a page the server cuts shorter
/// (samples with many file systems) is followed by the next.
pub const WINDOW_SAMPLES: i64 = 10_000;
/// Clients being checked at once.
const CONCURRENCY: usize = 16;
const ATTEMPTS: u32 = 3;

/// What the end check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckOutcome {
    pub api: &'static str,
    /// Clients whose samples were read back.
    pub clients: u64,
    /// Acknowledged samples looked for.
    pub samples: u64,
    /// Acknowledged but not stored.
    pub missing: u64,
    /// Stored in the run's span although never acknowledged (a request
    /// that timed out or broke after the commit, say); harmless.
    pub stored_unacknowledged: u64,
    /// Clients whose samples could not be read back.
    pub failed_clients: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
}

#[derive(Deserialize)]
struct ReportBody {
    payload: Vec<ReportRow>,
}

#[derive(Deserialize)]
struct ReportRow {
    unix_time: f64,
}

#[derive(Deserialize)]
struct V1Body {
    samples: Vec<HostSample>,
    /// Where the next page starts, when the server cut this one short.
    #[serde(default)]
    next_from: Option<f64>,
}

/// Counts, in sorted `acked` (deduplicated), the times absent from sorted
/// `stored`; and the stored times that were not acknowledged.
pub fn compare(acked: &[i64], stored: &[i64]) -> (u64, u64) {
    let missing = acked
        .iter()
        .filter(|time| stored.binary_search(time).is_err())
        .count() as u64;
    let unacknowledged = stored
        .iter()
        .filter(|time| acked.binary_search(time).is_err())
        .count() as u64;
    (missing, unacknowledged)
}

/// Checks every client that had samples acknowledged.
pub async fn check(plan: &Plan, api: CheckApi, reports: Vec<ClientReport>) -> CheckOutcome {
    let mut outcome = CheckOutcome {
        api: match api {
            CheckApi::V1 => "v1",
            _ => "report",
        },
        ..CheckOutcome::default()
    };
    let http = match crate::net::http_client(None, plan.timeout.max(Duration::from_secs(120))) {
        Ok(http) => http,
        Err(e) => {
            outcome.failed_clients = reports.len() as u64;
            outcome.first_failure = Some(e.to_string());
            return outcome;
        }
    };
    let reader = Arc::new(Reader {
        http,
        url: plan.url.clone(),
        api,
        step: plan.time_step_us,
    });
    let semaphore = Arc::new(Semaphore::new(CONCURRENCY));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let total = reports.iter().filter(|r| !r.acked.is_empty()).count();
    for mut report in reports.into_iter().filter(|r| !r.acked.is_empty()) {
        let (reader, semaphore, done) = (reader.clone(), semaphore.clone(), done.clone());
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            report.acked.sort_unstable();
            report.acked.dedup();
            let result = reader.stored_times(&report).await.map(|stored| {
                let (missing, unacknowledged) = compare(&report.acked, &stored);
                (report.acked.len() as u64, missing, unacknowledged)
            });
            done.fetch_add(1, Ordering::Relaxed);
            (report.user.username, result)
        });
    }

    let started = Instant::now();
    let mut progress = tokio::time::interval(Duration::from_secs(5));
    progress.tick().await;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok((_, Ok((samples, missing, unacknowledged))))) => {
                    outcome.clients += 1;
                    outcome.samples += samples;
                    outcome.missing += missing;
                    outcome.stored_unacknowledged += unacknowledged;
                }
                Some(Ok((username, Err(reason)))) => {
                    outcome.failed_clients += 1;
                    outcome.first_failure.get_or_insert(format!("{username}: {reason}"));
                }
                Some(Err(e)) => {
                    outcome.failed_clients += 1;
                    outcome.first_failure.get_or_insert(format!("check task failed: {e}"));
                }
            },
            _ = progress.tick() => eprintln!(
                "check: {}/{total} clients read back ({:.0} s)",
                done.load(Ordering::Relaxed),
                started.elapsed().as_secs_f64()
            ),
        }
    }
    outcome
}

struct Reader {
    http: reqwest::Client,
    url: String,
    api: CheckApi,
    step: i64,
}

impl Reader {
    /// The stored times in the span of the client's acknowledged samples,
    /// sorted.
    async fn stored_times(&self, report: &ClientReport) -> Result<Vec<i64>, String> {
        let (Some(&first), Some(&last)) = (report.acked.first(), report.acked.last()) else {
            return Ok(Vec::new());
        };
        let window = WINDOW_SAMPLES * self.step;
        let mut stored = Vec::with_capacity(report.acked.len());
        let mut from = first;
        while from <= last {
            let to = (from + window - 1).min(last);
            let (times, next_from) = self.window(report, from, to).await?;
            stored.extend(times);
            // A page cut short (samples with many file systems) goes on
            // where the server says.
            from = next_from.filter(|&next| next > from).unwrap_or(to + 1);
        }
        stored.sort_unstable();
        stored.dedup();
        Ok(stored)
    }

    /// The stored times in `[from, to]`, and where the rest of that window
    /// starts when the server answered only a first page of it.
    async fn window(
        &self,
        report: &ClientReport,
        from: i64,
        to: i64,
    ) -> Result<(Vec<i64>, Option<i64>), String> {
        let (from, to) = (seconds_text(from), seconds_text(to));
        let request = match self.api {
            CheckApi::V1 => self
                .http
                .get(format!("{}/api/v1/samples?from={from}&to={to}", self.url))
                .header("Authorization", format!("Bearer {}", report.user.token)),
            _ => self
                .http
                .get(format!(
                    "{}/client/{}/time/report?start={from}&end={to}",
                    self.url, report.user.username
                ))
                .header("Authorization", report.user.token.as_str()),
        };
        let mut last_error = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let Some(request) = request.try_clone() else {
                return Err("request cannot be repeated".into());
            };
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) => {
                    last_error = format!("read-back request failed: {e}");
                    continue;
                }
            };
            let status = response.status();
            let body = match response.bytes().await {
                Ok(body) => body,
                Err(e) => {
                    last_error = format!("read-back body failed: {e}");
                    continue;
                }
            };
            if status != StatusCode::OK {
                last_error = format!(
                    "read-back answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                );
                if status.is_server_error() {
                    continue;
                }
                return Err(last_error);
            }
            let (times, next_from): (Option<Vec<i64>>, Option<i64>) = match self.api {
                CheckApi::V1 => {
                    let page =
                        serde_json::from_slice::<V1Body>(&body).map_err(|e| e.to_string())?;
                    let times = page
                        .samples
                        .iter()
                        .map(|sample| micros_from_seconds(sample.time))
                        .collect();
                    (times, page.next_from.and_then(micros_from_seconds))
                }
                _ => {
                    let times = serde_json::from_slice::<ReportBody>(&body)
                        .map_err(|e| format!("unexpected report body: {e}"))?
                        .payload
                        .iter()
                        .map(|row| micros_from_seconds(row.unix_time))
                        .collect();
                    (times, None)
                }
            };
            let times = times.ok_or("a stored time is not a number")?;
            return Ok((times, next_from));
        }
        Err(last_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_both_ways() {
        let acked = [1, 2, 3, 5, 8];
        assert_eq!(compare(&acked, &acked), (0, 0));
        assert_eq!(compare(&acked, &[1, 2, 3, 4, 5, 8]), (0, 1));
        assert_eq!(compare(&acked, &[2, 5]), (3, 0));
        assert_eq!(compare(&acked, &[]), (5, 0));
    }
}
