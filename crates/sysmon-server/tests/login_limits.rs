//! Online password guessing: wrong passwords are counted per address and
//! per account; the eleventh within a minute is refused with 429 (even
//! the right password is, until the count decays), and every failure is
//! logged with the address and the name, for fail2ban.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sysmon_testkit::process::config_file;
use sysmon_testkit::{poll, ServerProcess, TestDatabase};

sysmon_testkit::on_both_stores!(the_eleventh_wrong_password_in_a_minute_is_refused_and_logged);

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");
const PASSWORD: &str = "the-right-password";

/// A client whose requests come from `source`, a loopback address.
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().expect("an address"))
        .build()
        .expect("an HTTP client")
}

async fn post_client(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    password: &str,
) -> (u16, Option<String>, Value) {
    let response = http
        .post(format!("{base}/client"))
        .json(&json!({"username": name, "pass": password}))
        .send()
        .await
        .expect("POST /client");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    (
        status,
        retry_after,
        response.json().await.expect("a JSON body"),
    )
}

async fn the_eleventh_wrong_password_in_a_minute_is_refused_and_logged(database: TestDatabase) {
    let config = config_file(
        &database,
        "sysmon.yaml",
        "limits:\n  login_failures_per_minute: 10\n",
    );
    let server = ServerProcess::start(BINARY, &database, &["--config", config.as_str()]).await;
    let base = server.base();
    let guesser = client_from("127.0.0.5");
    let (status, _, _) = post_client(&guesser, &base, "guarded", PASSWORD).await;
    assert_eq!(status, 200, "registered");

    for attempt in 1..=10 {
        let (status, _, body) =
            post_client(&guesser, &base, "guarded", &format!("guess{attempt}")).await;
        assert_eq!(status, 401, "wrong password {attempt}: {body}");
    }
    let (status, retry_after, body) = post_client(&guesser, &base, "guarded", "guess11").await;
    assert_eq!(status, 429, "the eleventh wrong password: {body}");
    assert_eq!(body["code"], "too_many_attempts", "{body}");
    let wait: u64 = retry_after.expect("Retry-After").parse().expect("seconds");
    assert!((1..=60).contains(&wait), "Retry-After {wait}");

    // Refused before the password is checked: the right one too, from
    // this address and for this account anywhere.
    let (status, _, _) = post_client(&guesser, &base, "guarded", PASSWORD).await;
    assert_eq!(status, 429, "the right password while refused");
    let elsewhere = client_from("127.0.0.6");
    let session = elsewhere
        .post(format!("{base}/api/v1/session"))
        .json(&json!({"username": "guarded", "password": PASSWORD}))
        .send()
        .await
        .expect("POST /api/v1/session");
    assert_eq!(
        session.status().as_u16(),
        429,
        "the dashboard login of the same account"
    );
    // Another account from another address is not held up.
    let (status, _, _) = post_client(&elsewhere, &base, "bystander", "bystander-pw").await;
    assert_eq!(status, 200, "another client registers");

    // The log is read from the process's output as it comes.
    let log = poll(
        "the failed logins in the log",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let log = server.log_text();
            match log.contains("too many failed logins") {
                true => Ok(log),
                false => Err(log),
            }
        },
    )
    .await;
    let failures: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("failed login:"))
        .collect();
    assert_eq!(failures.len(), 10, "one line per wrong password:\n{log}");
    assert!(
        failures
            .iter()
            .all(|line| line.contains("peer=127.0.0.5") && line.contains("user=guarded")),
        "each names the address and the account:\n{log}"
    );
    server.kill().await;
}
