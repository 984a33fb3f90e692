//! Smoke test: the loadgen binary against a real server started in this
//! process (testkit's, on a fresh SQLite database), about a second per
//! transport, asserting from its `RESULT` line that samples were
//! acknowledged, none failed and none went missing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sysmon_testkit::{unix_now, TestDatabase};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

struct Run {
    code: Option<i32>,
    stderr: String,
    result: Value,
}

/// Runs the binary; returns its exit code, stderr and parsed RESULT line.
async fn loadgen(args: &[&str]) -> Run {
    let output = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_sysmon-loadgen"))
            .args(args)
            .args(["--progress", "0", "--timeout", "20"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("loadgen finishes within 120 s")
    .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let line = stdout
        .lines()
        .last()
        .and_then(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    let result = serde_json::from_str(line).expect("RESULT is JSON");
    Run {
        code: output.status.code(),
        stderr,
        result,
    }
}

fn assert_clean(run: &Run) {
    let result = &run.result;
    assert_eq!(run.code, Some(0), "{result:#}\n{}", run.stderr);
    assert!(
        result["acked_samples"].as_u64().unwrap_or(0) > 0,
        "{result:#}"
    );
    assert_eq!(result["errors"]["requests"], 0, "{result:#}");
    assert_eq!(result["overloaded"]["requests"], 0, "{result:#}");
    assert_eq!(result["missing"], 0, "{result:#}");
    assert_eq!(result["check"]["failed_clients"], 0, "{result:#}");
    assert_eq!(
        result["check"]["samples"], result["acked_samples"],
        "every acknowledged sample was looked for: {result:#}"
    );
    assert!(
        result["latency_ms"]["p50"].as_f64().unwrap_or(0.0) > 0.0,
        "{result:#}"
    );
}

async fn smoke(mode: &str, extra: &[&str]) -> Value {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let url = server.base.clone();
    let mut args = vec!["--url", &url, "--mode", mode, "--clients", "3"];
    args.extend_from_slice(extra);
    let run = loadgen(&args).await;
    assert_clean(&run);
    server.shutdown().await;
    run.result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_form() {
    let result = smoke("http-form", &["--duration", "1"]).await;
    assert_eq!(result["requests"], result["acked_samples"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json() {
    smoke("http-json", &["--duration", "1", "--source-ips", "2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws() {
    smoke("ws", &["--duration", "1"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_batch() {
    let result = smoke("v1-batch", &["--duration", "1", "--batch-size", "200"]).await;
    assert_eq!(result["duplicates"], 0);
    let samples = result["acked_samples"].as_u64().unwrap_or(0);
    assert_eq!(samples % 200, 0, "{result:#}");
}

/// `--count` sends exactly that many samples (the last batch partial), and
/// a second run with the same users file reuses the users and continues
/// after their stored samples instead of sending the same times again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_and_users_file() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let url = server.base.clone();
    let users = database.path("users.json");
    let users = users.to_str().expect("UTF-8 path");
    let args = [
        "--url",
        &url,
        "--mode",
        "v1-batch",
        "--clients",
        "2",
        "--count",
        "2500",
        "--batch-size",
        "1000",
        "--users-file",
        users,
    ];
    let first = loadgen(&args).await;
    assert_clean(&first);
    assert_eq!(first.result["acked_samples"], 2500);
    assert_eq!(first.result["requests"], 4, "1000 + 250 per client");
    assert!(
        first.stderr.contains("registering 2 new users"),
        "{}",
        first.stderr
    );

    let second = loadgen(&args).await;
    assert_clean(&second);
    assert!(!second.stderr.contains("registering"), "{}", second.stderr);
    assert_eq!(second.result["acked_samples"], 2500);
    assert_eq!(second.result["duplicates"], 0, "{:#}", second.result);

    // The form route at a fixed rate, same users: ~5 samples per client.
    let mut rated = args.to_vec();
    rated.splice(2..4, ["--mode", "http-form"]);
    rated.splice(6..8, ["--count", "10"]);
    rated.extend(["--rate", "20"]);
    let third = loadgen(&rated).await;
    assert_clean(&third);
    assert_eq!(third.result["acked_samples"], 10);
    server.shutdown().await;
}

/// `--start-time` sends history: one sample a second from the given time,
/// with every charted metric, which the server files into its rollups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_from_a_start_time() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let url = server.base.clone();
    let users = database.path("history-users.json");
    let users = users.to_str().expect("UTF-8 path");
    let now = unix_now() as i64;
    // Two days back, on a whole hour, so every minute bucket is full.
    let start = (now - 2 * 86_400) / 3600 * 3600;
    let start_text = start.to_string();
    let run = loadgen(&[
        "--url",
        &url,
        "--mode",
        "v1-batch",
        "--clients",
        "1",
        "--count",
        "3000",
        "--batch-size",
        "1000",
        "--time-step-us",
        "1000000",
        "--start-time",
        &start_text,
        "--users-file",
        users,
    ])
    .await;
    assert_clean(&run);
    assert_eq!(run.result["acked_samples"], 3000);
    assert_eq!(run.result["duplicates"], 0);

    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(users).expect("users file")).expect("JSON");
    let user = &file["users"][0];
    let (name, token) = (
        user["username"].as_str().expect("username"),
        user["token"].as_str().expect("token"),
    );
    let series: Value = reqwest::Client::new()
        .get(format!(
            "{url}/api/v1/clients/{name}/series?from={start}&to={}&step=60",
            start + 3000
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("series request")
        .json()
        .await
        .expect("series JSON");
    assert_eq!(series["resolution"], "1m", "{series:#}");
    let counts: Vec<i64> = serde_json::from_value(series["count"].clone()).expect("counts");
    assert_eq!(counts, vec![60; 50], "a sample every second: {series:#}");
    for metric in [
        "cpu_load",
        "mem",
        "storage",
        "load_average_1m",
        "memory_used_bytes",
        "memory_total_bytes",
        "swap_used_bytes",
        "disk_read_bytes_per_second",
        "disk_write_bytes_per_second",
        "network_receive_bytes_per_second",
        "network_transmit_bytes_per_second",
        "temperature_celsius",
    ] {
        let avg = &series["metrics"][metric]["avg"];
        assert!(
            avg.as_array()
                .is_some_and(|values| values.len() == 50 && values.iter().all(Value::is_number)),
            "{metric}: {avg}"
        );
    }
    let cpu_min = &series["metrics"]["cpu_load"]["min"];
    let cpu_max = &series["metrics"]["cpu_load"]["max"];
    assert_ne!(cpu_min, cpu_max, "values vary within a minute");
    server.shutdown().await;
}

/// A stand-in for InfluxDB's `/write`: answers the first `busy` writes
/// 503 with `Retry-After: 0`, the others 204, and hands on each body it
/// accepted.
async fn fake_influx(busy: usize) -> (SocketAddr, mpsc::UnboundedReceiver<(String, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (bodies, received) = mpsc::unbounded_channel();
    let busy = Arc::new(AtomicUsize::new(busy));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let bodies = bodies.clone();
            let busy = busy.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut read = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if read.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if read.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if read.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let target = request_line
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let refuse = target.starts_with("/write")
                        && busy
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                    let reply: &[u8] = if refuse {
                        b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 0\r\ncontent-length: 0\r\n\r\n"
                    } else {
                        let _ = bodies.send((target, String::from_utf8_lossy(&body).into_owned()));
                        b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_line_protocol() {
    let (address, mut received) = fake_influx(0).await;
    let url = format!("http://{address}");
    let run = loadgen(&[
        "--url",
        &url,
        "--mode",
        "influx",
        "--clients",
        "2",
        "--count",
        "30",
        "--batch-size",
        "10",
        "--prefix",
        "host_",
    ])
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.result["acked_samples"], 30);
    assert_eq!(run.result["requests"], 4, "15 per client: 10 + 5");
    assert_eq!(run.result["missing"], Value::Null);

    let mut lines = Vec::new();
    while let Ok((target, body)) = received.try_recv() {
        if target.starts_with("/write") {
            assert_eq!(target, "/write?db=sysmon");
            lines.extend(body.lines().map(str::to_owned));
        }
    }
    assert_eq!(lines.len(), 30, "{lines:?}");
    for line in &lines {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts.len(), 3, "{line}");
        assert!(parts[0] == "system,host=host_0" || parts[0] == "system,host=host_1");
        assert!(parts[1].starts_with("cpu_load=") && parts[1].contains(",mem="));
        assert_eq!(parts[2].len(), 19, "nanoseconds: {line}");
    }
    let mut times: Vec<(&str, &str)> = lines
        .iter()
        .map(|line| {
            let parts: Vec<&str> = line.split(' ').collect();
            (parts[0], parts[2])
        })
        .collect();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), 30, "every sample of a host has its own time");
}

/// A 503 is not an acknowledgement: counted apart, not as an error, and
/// with `--retry-503` the same samples are sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_answers_are_retried() {
    let (address, mut received) = fake_influx(2).await;
    let url = format!("http://{address}");
    let args = [
        "--url",
        &url,
        "--mode",
        "influx",
        "--clients",
        "1",
        "--count",
        "20",
        "--batch-size",
        "10",
    ];
    let mut with_retry = args.to_vec();
    with_retry.push("--retry-503");
    let run = loadgen(&with_retry).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(run.result["acked_samples"], 20, "{:#}", run.result);
    assert_eq!(run.result["overloaded"]["requests"], 2);
    assert_eq!(run.result["overloaded"]["retries"], 2);
    assert_eq!(run.result["errors"]["requests"], 0);
    let mut lines = 0;
    while let Ok((_, body)) = received.try_recv() {
        lines += body.lines().count();
    }
    assert_eq!(lines, 20, "the refused batch was sent again");

    let (address, _received) = fake_influx(1).await;
    let url = format!("http://{address}");
    let mut without_retry = args.to_vec();
    without_retry[1] = &url;
    let run = loadgen(&without_retry).await;
    assert_eq!(run.result["acked_samples"], 10, "{:#}", run.result);
    assert_eq!(run.result["overloaded"]["samples"], 10);
    assert_eq!(run.result["overloaded"]["retries"], 0);
    assert_eq!(run.result["errors"]["requests"], 0);
}
