//! Online password guessing: wrong passwords are counted per address and
//! per account; the eleventh within a minute is refused with 429 (even
//! the right password is, until the count decays), and every failure is
//! logged with the address and the name, for fail2ban. Behind a trusted
//! proxy the address counted is the client's, from `X-Forwarded-For`.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::{json, Value};
use sysmon_testkit::process::config_file;
use sysmon_testkit::{poll, ServerProcess, TestDatabase};

sysmon_testkit::on_both_stores!(
    the_eleventh_wrong_password_in_a_minute_is_refused_and_logged,
    a_trusted_proxy_names_the_client_and_its_scheme,
);

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

/// A dashboard login attempt from `http` with forwarding headers; the
/// status and the Set-Cookie header.
async fn login_forwarded(
    http: &reqwest::Client,
    base: &str,
    (user, password): (&str, &str),
    (forwarded_for, forwarded_proto): (&str, &str),
) -> (u16, String) {
    let response = http
        .post(format!("{base}/api/v1/session"))
        .header("X-Forwarded-For", forwarded_for)
        .header("X-Forwarded-Proto", forwarded_proto)
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .expect("POST /api/v1/session");
    let cookie = response
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (response.status().as_u16(), cookie)
}

/// With `proxy.trusted: [127.0.0.1]`, wrong passwords count against the
/// address the proxy names, so one client behind it cannot lock the others
/// out; the same headers from anyone else are ignored. The proxy's
/// `X-Forwarded-Proto: https` makes the session cookie `__Host-`/`Secure`,
/// and its connections are not held to the per-address limit.
async fn a_trusted_proxy_names_the_client_and_its_scheme(database: TestDatabase) {
    let config = config_file(
        &database,
        "sysmon.yaml",
        "limits:\n  login_failures_per_minute: 3\n  max_connections_per_ip: 2\n\
         proxy:\n  trusted: [127.0.0.1, \"10.0.0.0/8\"]\n\
         dashboard:\n  initial_admin_password: admin-password\n",
    );
    let server = ServerProcess::start(BINARY, &database, &["--config", config.as_str()]).await;
    let base = server.base();
    let proxy = client_from("127.0.0.1");
    for attempt in 0..3 {
        let user = format!("nobody{attempt}");
        let (status, _) = login_forwarded(
            &proxy,
            &base,
            (&user, "wrong"),
            ("6.6.6.6, 203.0.113.1", "http"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) =
        login_forwarded(&proxy, &base, ("nobody9", "wrong"), ("203.0.113.1", "http")).await;
    assert_eq!(status, 429, "the client behind the proxy is limited");
    let (status, cookie) = login_forwarded(
        &proxy,
        &base,
        ("admin", "admin-password"),
        ("203.0.113.2", "https"),
    )
    .await;
    assert_eq!(status, 200, "another client behind the same proxy is not");
    assert!(
        cookie.starts_with("__Host-sysmon_session=") && cookie.contains("; Secure"),
        "{cookie}"
    );
    assert!(
        server.log_text().contains("203.0.113.1"),
        "failures are logged with the client's address"
    );

    // The same headers from an address that is not a proxy count for it.
    let stranger = client_from("127.0.0.7");
    for attempt in 0..3 {
        let user = format!("stranger{attempt}");
        let (status, _) = login_forwarded(
            &stranger,
            &base,
            (&user, "wrong"),
            ("198.51.100.1", "https"),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, _) = login_forwarded(
        &stranger,
        &base,
        ("admin", "admin-password"),
        ("198.51.100.2", "https"),
    )
    .await;
    assert_eq!(status, 429, "limited as 127.0.0.7, whatever it claims");
    let (status, cookie) = login_forwarded(
        &client_from("127.0.0.8"),
        &base,
        ("admin", "admin-password"),
        ("198.51.100.3", "https"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        cookie.starts_with("sysmon_session=") && !cookie.contains("Secure"),
        "{cookie}"
    );

    // More connections from the proxy than one address may hold.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = tokio::net::TcpStream::connect(server.address)
            .await
            .expect("connect");
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut answer = [0u8; 12];
        stream
            .read_exact(&mut answer)
            .await
            .expect("an answer on every proxy connection");
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(stream);
    }
    drop(held);
    server.kill().await;
}
