//! Built-in TLS, through the binary as an operator runs it: HTTPS with the
//! configured certificate, the original API and the dashboard login over
//! it (a `Secure`, `__Host-` cookie), no plain HTTP on that port, a new
//! certificate taken on SIGHUP, a broken one refused while the old one
//! keeps serving, and a key that does not match refused at startup.

use std::time::Duration;

use sysmon_testkit::{poll, ServerProcess, TestDatabase};

const BINARY: &str = env!("CARGO_BIN_EXE_sysmon-server");

/// A self-signed certificate for `localhost`: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("generate a certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// An HTTPS client that trusts only `certificate`.
fn client_trusting(certificate: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certificate.as_bytes()).expect("PEM certificate"),
        )
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("HTTPS client")
}

#[tokio::test]
async fn serves_https_and_reloads_its_certificate_on_sighup() {
    let database = TestDatabase::sqlite().await;
    let (first_cert, first_key) = self_signed();
    let (cert_path, key_path) = (database.path("cert.pem"), database.path("key.pem"));
    std::fs::write(&cert_path, &first_cert).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let config = sysmon_testkit::process::config_file(
        &database,
        "tls.yaml",
        &format!(
            "tls:\n  cert: {}\n  key: {}\ndashboard:\n  initial_admin_password: admin-password\n",
            cert_path.display(),
            key_path.display()
        ),
    );
    let server = ServerProcess::start(BINARY, &database, &["--config", &config]).await;
    assert!(server.log_text().contains("https"), "{}", server.log_text());
    let base = format!("https://localhost:{}", server.address.port());
    let https = client_trusting(&first_cert);

    // The original API, over TLS.
    let registered = https
        .post(format!("{base}/client"))
        .form(&[("username", "secure-host"), ("pass", "long-password")])
        .send()
        .await
        .expect("HTTPS registration");
    assert_eq!(registered.status(), 200);
    // The dashboard login sets a cookie only a secure origin may hold.
    let login = https
        .post(format!("{base}/api/v1/session"))
        .json(&serde_json::json!({"username": "admin", "password": "admin-password"}))
        .send()
        .await
        .expect("HTTPS login");
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("__Host-sysmon_session=") && cookie.ends_with("; Secure"),
        "{cookie}"
    );

    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("http://{}/api", server.address))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // A renewed certificate is served after SIGHUP, without a restart.
    let (second_cert, second_key) = self_signed();
    std::fs::write(&cert_path, &second_cert).unwrap();
    std::fs::write(&key_path, &second_key).unwrap();
    server.signal("-HUP").await;
    let renewed = client_trusting(&second_cert);
    let url = format!("{base}/api");
    poll(
        "the renewed certificate served",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let (renewed, url) = (&renewed, &url);
            async move {
                match renewed.get(url).send().await {
                    Ok(response) if response.status() == 200 => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            }
        },
    )
    .await;
    assert!(
        client_trusting(&first_cert).get(&url).send().await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file on reload: refused, logged, the current one kept.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    server.signal("-HUP").await;
    poll(
        "the failed reload logged",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let log = server.log_text();
            async move {
                match log.contains("TLS certificate not reloaded") {
                    true => Ok(()),
                    false => Err("not yet".to_owned()),
                }
            }
        },
    )
    .await;
    let still = renewed.get(&url).send().await.expect("still served");
    assert_eq!(still.status(), 200);
    server.kill().await;
}

#[tokio::test]
async fn a_key_that_does_not_match_the_certificate_stops_startup() {
    let database = TestDatabase::sqlite().await;
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    std::fs::write(database.path("cert.pem"), cert).unwrap();
    std::fs::write(database.path("key.pem"), other_key).unwrap();
    let mut config = database.config();
    config.tls = Some(sysmon_server::tls::TlsFiles {
        cert: database.path("cert.pem"),
        key: database.path("key.pem"),
    });
    let error = match sysmon_server::startup::Application::build(&config).await {
        Ok(_) => panic!("started with a key that does not match"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("do not make a certificate and its key"),
        "{error}"
    );

    config.tls = Some(sysmon_server::tls::TlsFiles {
        cert: database.path("missing.pem"),
        key: database.path("key.pem"),
    });
    let error = match sysmon_server::startup::Application::build(&config).await {
        Ok(_) => panic!("started without a certificate file"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("missing.pem"), "{error}");
}
