//! Alerts end to end on both stores: clients push samples over HTTP, the
//! server evaluates its rules, and a real HTTP receiver started here gets
//! the notifications (signed), once per transition, across a restart, with
//! a failing channel retried and recorded while the others carry on.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sysmon_server::services::alerts::channels::ChannelSpec;
use sysmon_server::services::alerts::rules::RuleSpec;
use sysmon_testkit::receiver::{Received, Receiver, Script};
use sysmon_testkit::smtp::{SmtpOptions, SmtpSink, SmtpTls};
use sysmon_testkit::{poll, unix_now, TestDatabase, TestServer};

sysmon_testkit::on_both_stores!(
    firing_resolved_silent_and_retried,
    rules_through_the_api,
    narrowing_a_rule_resolves_and_old_history_goes,
    a_removed_host_is_not_notified,
    email_reaches_a_real_smtp_server,
);

const ADMIN_PASSWORD: &str = "alerts-admin-password";
const SECRET: &str = "hook-s3cret";

fn rules() -> Vec<RuleSpec> {
    serde_norway::from_str(
        "
- {name: cpu-hot, metric: cpu_load, over_seconds: 1, above: 90, for_seconds: 1,
   hosts: [hot-1], severity: critical, channels: [hook, flaky]}
- {name: down, metric: host_silent, silent_seconds: 2, hosts: 'quiet-*', channels: [hook, slow]}
",
    )
    .expect("rules")
}

fn channels(receiver: &Receiver) -> Vec<ChannelSpec> {
    serde_norway::from_str(&format!(
        "
- {{name: hook, kind: webhook, url: '{}', secret: {SECRET}}}
- {{name: flaky, kind: webhook, url: '{}'}}
- {{name: slow, kind: webhook, url: '{}'}}
",
        receiver.url("/hook"),
        receiver.url("/flaky"),
        receiver.url("/slow")
    ))
    .expect("channels")
}

async fn start(database: &TestDatabase, receiver: &Receiver) -> TestServer {
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.alerts.rules = rules();
    config.alerts.channels = channels(receiver);
    config.alerts.evaluation_interval = Duration::from_millis(200);
    config.alerts.retry_base = Duration::from_millis(300);
    config.alerts.max_attempts = 4;
    config.alerts.send_timeout = Duration::from_secs(1);
    config.alerts.public_url = Some("https://sysmon.example".into());
    TestServer::start(config).await
}

async fn push_cpu(server: &TestServer, token: &str, cpu: f64) {
    server
        .post_samples(token, &[json!({"time": unix_now(), "cpu_load": cpu})])
        .await;
}

/// Pushes `cpu` every 100 ms for `seconds`.
async fn keep_pushing(server: &TestServer, token: &str, cpu: f64, seconds: f64) {
    let until = unix_now() + seconds;
    while unix_now() < until {
        push_cpu(server, token, cpu).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The hook's notifications of `rule` in state `state`.
fn notified(receiver: &Receiver, path: &str, rule: &str, state: &str) -> Vec<Received> {
    receiver
        .received(path)
        .into_iter()
        .filter(|request| {
            let body = request.json();
            body["rule"] == rule && body["state"] == state
        })
        .collect()
}

async fn wait_for_notification(
    receiver: &Receiver,
    path: &str,
    rule: &str,
    state: &str,
) -> Received {
    poll(
        &format!("a {state} notification of {rule} at {path}"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            notified(receiver, path, rule, state)
                .into_iter()
                .next()
                .ok_or_else(|| {
                    format!(
                        "{:?}",
                        receiver
                            .received(path)
                            .iter()
                            .map(Received::json)
                            .collect::<Vec<_>>()
                    )
                })
        },
    )
    .await
}

fn assert_signed(request: &Received) {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        request.header("x-sysmon-signature"),
        Some(format!("sha256={expected}").as_str()),
        "signature of {:?}",
        request.json()
    );
}

async fn firing_resolved_silent_and_retried(database: TestDatabase) {
    let receiver = Receiver::start().await;
    // The flaky channel fails twice, then takes it.
    receiver.script(
        "/flaky",
        Script {
            statuses: vec![500, 503, 200],
            delay: Duration::ZERO,
        },
    );
    // The slow one never answers in time.
    receiver.script(
        "/slow",
        Script {
            statuses: vec![200],
            delay: Duration::from_secs(5),
        },
    );
    let server = start(&database, &receiver).await;
    let hot = server.register("hot-1", "alerts-password").await;
    let quiet = server.register("quiet-1", "alerts-password").await;
    push_cpu(&server, &quiet, 5.0).await;

    // Hot for longer than the rule's second: one firing notification,
    // signed, with what happened and a link to the host.
    keep_pushing(&server, &hot, 95.0, 2.5).await;
    let firing = wait_for_notification(&receiver, "/hook", "cpu-hot", "firing").await;
    assert_signed(&firing);
    let body = firing.json();
    assert_eq!(body["host"], "hot-1", "{body}");
    assert_eq!(body["severity"], "critical", "{body}");
    assert_eq!(body["condition"], "avg(cpu_load over 1s) > 90", "{body}");
    assert_eq!(body["threshold"], json!(90.0), "{body}");
    assert_eq!(body["value"], json!(95.0), "{body}");
    assert_eq!(
        body["link"], "https://sysmon.example/#/host/hot-1",
        "{body}"
    );
    assert_eq!(body["repeat"], false, "{body}");
    assert!(
        body["since"].as_f64().unwrap() <= body["at"].as_f64().unwrap(),
        "{body}"
    );

    // The silent host fires meanwhile, while the flaky channel is retried.
    let silent = wait_for_notification(&receiver, "/hook", "down", "firing").await;
    assert_eq!(silent.json()["host"], "quiet-1");
    assert_signed(&silent);

    // The flaky channel: two failures recorded, then sent, in the history.
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let delivery = poll(
        "the flaky delivery sent on its third attempt",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let history = server.get_json("/api/v1/alerts/history", &admin).await;
            let flaky = history["transitions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|t| t["rule"] == "cpu-hot" && t["state"] == "firing")
                .flat_map(|t| t["deliveries"].as_array().cloned().unwrap_or_default())
                .find(|d| d["channel"] == "flaky")
                .ok_or_else(|| history.to_string())?;
            if flaky["status"] == "sent" {
                Ok(flaky)
            } else {
                Err(flaky.to_string())
            }
        },
    )
    .await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(receiver.received("/flaky").len(), 3);
    // The slow channel's attempts time out, and say so.
    let slow = poll(
        "a timed-out attempt on the slow channel",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let history = server.get_json("/api/v1/alerts/history", &admin).await;
            history["transitions"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| t["deliveries"].as_array().cloned().unwrap_or_default())
                .find(|d| d["channel"] == "slow" && d["attempts"].as_i64() >= Some(1))
                .ok_or_else(|| history.to_string())
        },
    )
    .await;
    assert!(
        slow["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within 1 s")),
        "{slow}"
    );

    // A restart while firing: the state is read back, nothing is sent again.
    server.shutdown().await;
    let server = start(&database, &receiver).await;
    keep_pushing(&server, &hot, 96.0, 1.5).await;
    assert_eq!(
        notified(&receiver, "/hook", "cpu-hot", "firing").len(),
        1,
        "no second firing notification after the restart"
    );
    // Cool again: one resolved notification.
    keep_pushing(&server, &hot, 10.0, 1.5).await;
    let resolved = wait_for_notification(&receiver, "/hook", "cpu-hot", "resolved").await;
    assert_signed(&resolved);
    // The second's average when it fell under the threshold.
    let value = resolved.json()["value"].as_f64().expect("a value");
    assert!((10.0..=90.0).contains(&value), "{value}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(notified(&receiver, "/hook", "cpu-hot", "resolved").len(), 1);
    assert_eq!(notified(&receiver, "/hook", "cpu-hot", "firing").len(), 1);

    // The history: pending, firing, resolved for hot-1, newest first; the
    // active list shows the silent host still firing.
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let history = server.get_json("/api/v1/alerts/history", &admin).await;
    let hot_states: Vec<&str> = history["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["host"] == "hot-1")
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(hot_states, ["resolved", "firing", "pending"], "{history}");
    let active = server.get_json("/api/v1/alerts", &admin).await;
    let firing: Vec<(&Value, &Value)> = active["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .map(|a| (&a["rule"], &a["host"]))
        .collect();
    assert_eq!(firing, [(&json!("down"), &json!("quiet-1"))], "{active}");

    // A client may not read alerts of another host... nor any: the API is
    // for the dashboard's users; a client's token sees only its own host.
    let own = server.get_json("/api/v1/alerts/history", &quiet).await;
    assert!(
        own["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["host"] == "quiet-1"),
        "{own}"
    );
    server.shutdown().await;
}

async fn rules_through_the_api(database: TestDatabase) {
    let receiver = Receiver::start().await;
    receiver.script(
        "/hook",
        Script {
            statuses: vec![502],
            delay: Duration::ZERO,
        },
    );
    let server = start(&database, &receiver).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let put = |name: &str, body: Value| {
        let request = server
            .http
            .put(server.url(&format!("/api/v1/alerts/rules/{name}")))
            .bearer_auth(&admin)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, rule) = put(
        "mem-full",
        json!({"name": "mem-full", "metric": "memory_used_percent", "above": 95, "channels": ["hook"]}),
    )
    .await;
    assert_eq!(status, 200, "{rule}");
    assert_eq!(rule["source"], "api");
    assert_eq!(rule["condition"], "memory_used_percent > 95");
    for (name, body, expected, field) in [
        (
            "x",
            json!({"name": "x", "metric": "cpu_load"}),
            400,
            "`above` or `below`",
        ),
        (
            "x",
            json!({"name": "x", "metric": "nope", "above": 1}),
            400,
            "unknown metric `nope`",
        ),
        (
            "x",
            json!({"name": "y", "metric": "cpu_load", "above": 1}),
            400,
            "differs",
        ),
        (
            "x",
            json!({"name": "x", "metric": "cpu_load", "above": 1, "channels": ["nowhere"]}),
            400,
            "no channel named `nowhere`",
        ),
        (
            "cpu-hot",
            json!({"name": "cpu-hot", "metric": "cpu_load", "above": 1}),
            403,
            "config file",
        ),
        (
            "x",
            json!({"name": "x", "metric": "cpu_load", "above": 1, "colour": "red"}),
            400,
            "colour",
        ),
    ] {
        let (status, reply) = put(name, body.clone()).await;
        assert_eq!(status, expected, "{body}: {reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body}: {reply}"
        );
    }
    let listed = server.get_json("/api/v1/alerts/rules", &admin).await;
    let names: Vec<(&str, &str)> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        [
            ("cpu-hot", "config"),
            ("down", "config"),
            ("mem-full", "api")
        ]
    );
    assert_eq!(
        listed["channels"][0],
        json!({"name": "hook", "kind": "webhook"})
    );
    assert!(listed["channels"][0].get("secret").is_none());

    // API rules survive a restart.
    server.shutdown().await;
    let server = start(&database, &receiver).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let listed = server.get_json("/api/v1/alerts/rules", &admin).await;
    assert_eq!(listed["rules"].as_array().unwrap().len(), 3, "{listed}");

    // A test notification: the channel's refusal comes back as 502.
    let test = server
        .http
        .post(server.url("/api/v1/alerts/channels/hook/test"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(test.status(), 502);
    let reply: Value = test.json().await.unwrap();
    assert_eq!(reply["code"], "channel_failed", "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("502"), "{reply}");
    let sent = receiver.received("/hook");
    assert_eq!(sent.last().unwrap().json()["state"], "test");

    let delete = |name: &str| {
        let request = server
            .http
            .delete(server.url(&format!("/api/v1/alerts/rules/{name}")))
            .bearer_auth(&admin);
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(delete("mem-full").await, 204);
    assert_eq!(delete("mem-full").await, 404);
    assert_eq!(delete("cpu-hot").await, 403);
    let viewer_token = server.register("someone", "alerts-password").await;
    let (status, _) = {
        let response = server
            .http
            .put(server.url("/api/v1/alerts/rules/z"))
            .bearer_auth(&viewer_token)
            .json(&json!({"name": "z", "metric": "cpu_load", "above": 1}))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), ())
    };
    assert_eq!(status, 403, "a client may not make rules");
    let seen = server.get_json("/api/v1/alerts/rules", &viewer_token).await;
    assert_eq!(seen["rules"][0]["name"], "cpu-hot", "{seen}");
    assert_eq!(
        seen["rules"][0]["hosts"],
        json!([]),
        "hot-1 is not theirs to read: {seen}"
    );
    assert_eq!(seen["rules"][1]["hosts"], "quiet-*", "{seen}");
    server.shutdown().await;
}

/// A rule narrowed through the API to other hosts resolves (notified)
/// the alerts of hosts it no longer watches; history older than
/// `alerts.history` is deleted with its deliveries.
async fn narrowing_a_rule_resolves_and_old_history_goes(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.alerts.channels = channels(&receiver);
    config.alerts.evaluation_interval = Duration::from_millis(200);
    config.alerts.history = Some(Duration::from_secs(3));
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let put_rule = |hosts: Value| {
        let request = server
            .http
            .put(server.url("/api/v1/alerts/rules/busy"))
            .bearer_auth(&admin)
            .json(&json!({"name": "busy", "metric": "cpu_load", "above": 50,
                          "hosts": hosts, "channels": ["hook"]}));
        async move { request.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(put_rule(json!(["api-1"])).await, 200);
    let host = server.register("api-1", "alerts-password").await;
    push_cpu(&server, &host, 99.0).await;
    wait_for_notification(&receiver, "/hook", "busy", "firing").await;

    assert_eq!(put_rule(json!(["someone-else"])).await, 200);
    push_cpu(&server, &host, 99.0).await;
    let resolved = wait_for_notification(&receiver, "/hook", "busy", "resolved").await;
    assert_eq!(resolved.json()["host"], "api-1");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        notified(&receiver, "/hook", "busy", "firing").len(),
        1,
        "still 99 %, but no longer watched"
    );
    let active = server.get_json("/api/v1/alerts", &admin).await;
    assert_eq!(active["alerts"], json!([]), "{active}");

    // Both transitions are history until they are 3 s old, then gone.
    let history = server.get_json("/api/v1/alerts/history", &admin).await;
    assert_eq!(
        history["transitions"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    poll(
        "history older than 3 s deleted",
        Duration::from_secs(15),
        Duration::from_millis(200),
        || async {
            let history = server.get_json("/api/v1/alerts/history", &admin).await;
            match history["transitions"].as_array() {
                Some(left) if left.is_empty() => Ok(()),
                _ => Err(history.to_string()),
            }
        },
    )
    .await;
    server.shutdown().await;
}

/// A host removed while its alert is pending: the evaluator still holds
/// its samples (it reads the hosts again only every minute), but its
/// firing is neither stored nor sent; another host of the rule fires.
async fn a_removed_host_is_not_notified(database: TestDatabase) {
    let receiver = Receiver::start().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.alerts.channels = channels(&receiver);
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let status = server
        .http
        .put(server.url("/api/v1/alerts/rules/held"))
        .bearer_auth(&admin)
        .json(
            &json!({"name": "held", "metric": "cpu_load", "above": 50, "for_seconds": 4,
                      "hosts": ["stays-1", "gone-1"], "channels": ["hook"]}),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    let stays = server.register("stays-1", "alerts-password").await;
    let gone = server.register("gone-1", "alerts-password").await;
    push_cpu(&server, &stays, 99.0).await;
    push_cpu(&server, &gone, 99.0).await;
    // Both known and judged (pending for a second) before the removal.
    poll(
        "gone-1 pending",
        Duration::from_secs(15),
        Duration::from_millis(50),
        || async {
            let active = server.get_json("/api/v1/alerts", &admin).await;
            let pending = active["alerts"].as_array().is_some_and(|alerts| {
                alerts
                    .iter()
                    .any(|alert| alert["host"] == "gone-1" && alert["state"] == "pending")
            });
            pending.then_some(()).ok_or_else(|| active.to_string())
        },
    )
    .await;
    server.remove_client("gone-1", &admin).await;
    keep_pushing(&server, &stays, 99.0, 1.5).await;
    let firing = wait_for_notification(&receiver, "/hook", "held", "firing").await;
    assert_eq!(firing.json()["host"], "stays-1");
    // Ticks every 200 ms: gone-1, pending since the same tick, would have
    // fired by now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hosts: Vec<Value> = receiver
        .received("/hook")
        .iter()
        .map(|request| request.json()["host"].clone())
        .collect();
    assert_eq!(hosts, [json!("stays-1")]);
    let history = server.get_json("/api/v1/alerts/history", &admin).await;
    let transitions = history["transitions"].as_array().unwrap();
    assert!(
        transitions
            .iter()
            .all(|event| event["host"] == "stays-1" || event["state"] == "pending"),
        "{history}"
    );
    server.shutdown().await;
}

/// An email channel delivers to a real SMTP server (here, plain SMTP to
/// this host): a firing alert and a test notification arrive as messages
/// with the subject and body docs/alerts.md gives.
async fn email_reaches_a_real_smtp_server(database: TestDatabase) {
    let sink = SmtpSink::start().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.alerts.channels = serde_norway::from_str(&format!(
        "[{{name: mail, kind: email, url: 'smtp://127.0.0.1:{}', security: none,
           from: 'sysmon <sysmon@example.com>', to: [ops@example.com, oncall@example.com]}}]",
        sink.address.port()
    ))
    .expect("channels");
    config.alerts.rules = serde_norway::from_str(
        "[{name: cpu-hot, metric: cpu_load, above: 90, hosts: [hot-1], channels: [mail]}]",
    )
    .expect("rules");
    config.alerts.evaluation_interval = Duration::from_millis(200);
    let server = TestServer::start(config).await;
    let hot = server.register("hot-1", "alerts-password").await;
    push_cpu(&server, &hot, 97.5).await;
    let message = poll(
        "the firing email",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || async {
            sink.messages()
                .into_iter()
                .find(|m| m.contains("Subject: [FIRING] cpu-hot on hot-1"))
                .ok_or_else(|| format!("{:?}", sink.messages()))
        },
    )
    .await;
    for expected in [
        "From: sysmon <sysmon@example.com>",
        "ops@example.com",
        "oncall@example.com",
        "Value:     97.5 (threshold 90)",
        "/#/host/hot-1",
    ] {
        assert!(message.contains(expected), "{expected} in {message}");
    }
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let test = server
        .http
        .post(server.url("/api/v1/alerts/channels/mail/test"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(test.status(), 204);
    assert!(sink
        .messages()
        .iter()
        .any(|m| m.contains("Subject: [TEST] test on sysmon")));
    server.shutdown().await;
}

/// Email over a protected connection with a login, to real SMTP servers
/// with certificates of their own (trusted through `ca_file`): STARTTLS
/// and TLS from the first byte take the message; a wrong password and an
/// untrusted certificate are refused with the reason. The channel test
/// goes through the same sending code as an alert.
#[tokio::test]
async fn email_over_starttls_and_tls_with_a_login() {
    let login = Some(("alerts".to_owned(), "smtp-password".to_owned()));
    let starttls = SmtpSink::start_with(SmtpOptions {
        tls: SmtpTls::StartTls,
        login: login.clone(),
    })
    .await;
    let implicit = SmtpSink::start_with(SmtpOptions {
        tls: SmtpTls::Implicit,
        login,
    })
    .await;
    let database = TestDatabase::sqlite().await;
    let ca_of = |sink: &SmtpSink, file: &str| {
        let path = database.path(file);
        std::fs::write(&path, sink.certificate_pem.as_deref().unwrap()).unwrap();
        path.display().to_string()
    };
    let (starttls_ca, implicit_ca) = (
        ca_of(&starttls, "starttls.pem"),
        ca_of(&implicit, "tls.pem"),
    );
    let mail = |name: &str, sink: &SmtpSink, security: &str, password: &str, ca: &str| {
        format!(
            "{{name: {name}, kind: email, url: 'smtp://127.0.0.1:{}', security: {security},
              username: alerts, password: '{password}', {ca}
              from: sysmon@example.com, to: [ops@example.com]}}",
            sink.address.port()
        )
    };
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    config.alerts.channels = serde_norway::from_str(&format!(
        "[{}, {}, {}, {}]",
        mail(
            "starttls",
            &starttls,
            "starttls",
            "smtp-password",
            &format!("ca_file: '{starttls_ca}',")
        ),
        mail(
            "tls",
            &implicit,
            "tls",
            "smtp-password",
            &format!("ca_file: '{implicit_ca}',")
        ),
        mail(
            "wrong-password",
            &starttls,
            "starttls",
            "nope",
            &format!("ca_file: '{starttls_ca}',")
        ),
        mail("untrusted", &starttls, "starttls", "smtp-password", ""),
    ))
    .expect("channels");
    let server = TestServer::start(config).await;
    let admin = server.login("admin", ADMIN_PASSWORD).await;
    let test = |channel: &str| {
        let request = server
            .http
            .post(server.url(&format!("/api/v1/alerts/channels/{channel}/test")))
            .bearer_auth(&admin);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    assert_eq!(test("starttls").await.0, 204);
    assert_eq!(test("tls").await.0, 204);
    for sink in [&starttls, &implicit] {
        assert_eq!(sink.logins(), ["alerts"]);
        assert!(
            sink.messages()
                .iter()
                .any(|m| m.contains("Subject: [TEST] test on sysmon")),
            "{:?}",
            sink.messages()
        );
    }
    let (status, refused) = test("wrong-password").await;
    assert_eq!(
        (status, &refused["code"]),
        (502, &json!("channel_failed")),
        "{refused}"
    );
    assert!(
        refused["error"].as_str().unwrap().contains("535"),
        "{refused}"
    );
    let (status, refused) = test("untrusted").await;
    assert_eq!(status, 502, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{refused}"
    );
    assert_eq!(
        starttls.messages().len(),
        1,
        "only the trusted, logged-in one"
    );
    server.shutdown().await;
}
