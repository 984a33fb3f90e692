//! The agent over TLS against the real server serving HTTPS: a private CA
//! given with --ca-file works over both transports (https:// and wss://),
//! a certificate no trusted CA signed is refused, and plain http:// to
//! another host is refused unless --allow-insecure.

mod common;

use std::time::Duration;

use common::{fast_agent_args, run_agent, wait_for_stored_times, Agent};
use sysmon_testkit::{TestDatabase, TestServer};

/// A self-signed certificate for `localhost`, written beside the
/// database: (certificate PEM, its path).
fn certificate(database: &TestDatabase) -> (String, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    let (cert_path, key_path) = (database.path("cert.pem"), database.path("key.pem"));
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    (certified.cert.pem(), cert_path)
}

/// The server on `database` serving HTTPS, with the test's own client
/// pointed at it and trusting `certificate`.
async fn https_server(database: &TestDatabase, certificate: &str) -> TestServer {
    let mut config = database.config();
    config.tls = Some(sysmon_server::tls::TlsFiles {
        cert: database.path("cert.pem"),
        key: database.path("key.pem"),
    });
    let mut server = TestServer::start(config).await;
    server.base = format!("https://localhost:{}", server.address.port());
    server.http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certificate.as_bytes()).unwrap())
        .build()
        .unwrap();
    server
}

#[tokio::test]
async fn delivers_over_https_and_wss_with_a_private_ca() {
    let database = TestDatabase::sqlite().await;
    let (pem, cert_path) = certificate(&database);
    let server = https_server(&database, &pem).await;
    let ca_file = cert_path.to_str().unwrap();
    for transport in ["http", "ws"] {
        let name = format!("tls-{transport}");
        let mut args = fast_agent_args(&server.base);
        args.extend(
            [
                "--transport",
                transport,
                "--ca-file",
                ca_file,
                "--name",
                &name,
                "--password",
                "long-password",
            ]
            .map(str::to_owned),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let state = database.path(&format!("agent-{transport}"));
        let mut agent = Agent::start(&state, &args);
        agent
            .wait_for_log("enrolled; token stored", Duration::from_secs(20))
            .await;
        let token = agent.token();
        wait_for_stored_times(
            &server,
            &token,
            Duration::from_secs(20),
            &format!("samples over {transport} with TLS"),
            &agent,
            |times| times.len() >= 2,
        )
        .await;
        agent.terminate();
    }
    server.shutdown().await;
}

// The agent runs to completion while this thread waits for it: the server
// needs a thread of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_an_untrusted_certificate_and_plain_http_to_other_hosts() {
    let database = TestDatabase::sqlite().await;
    let (pem, _) = certificate(&database);
    let server = https_server(&database, &pem).await;
    let state = database.path("agent-untrusted");
    let state = state.to_str().unwrap();
    let enroll = |server: &str, extra: &[&str]| {
        let mut args = vec![
            "--server",
            server,
            "--state-dir",
            state,
            "--timeout",
            "2s",
            "--enroll",
            "--name",
            "untrusted",
            "--password",
            "long-password",
        ];
        args.extend_from_slice(extra);
        run_agent(&args)
    };

    // Self-signed and no --ca-file: the handshake fails, nothing is sent.
    let refused = enroll(&server.base, &[]);
    let said = String::from_utf8_lossy(&refused.stderr).to_lowercase();
    assert!(!refused.status.success(), "{said}");
    assert!(
        said.contains("certificate") || said.contains("issuer"),
        "{said}"
    );

    // http:// to a host that is not this one: refused before connecting.
    let remote = enroll("http://192.0.2.10:5000", &[]);
    let said = String::from_utf8_lossy(&remote.stderr);
    assert_eq!(remote.status.code(), Some(2), "{said}");
    assert!(said.contains("--allow-insecure"), "{said}");
    // Allowed: it tries (and cannot reach the documentation address).
    let allowed = enroll("http://192.0.2.10:5000", &["--allow-insecure"]);
    let said = String::from_utf8_lossy(&allowed.stderr);
    assert!(!said.contains("--allow-insecure"), "{said}");
    server.shutdown().await;
}
