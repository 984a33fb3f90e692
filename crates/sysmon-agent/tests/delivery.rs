//! End-to-end: the real agent binary against a real server in this process,
//! on SQLite and on PostgreSQL. Sample times are whole seconds on the 1 s
//! grid, so "nothing lost, nothing doubled" is checked as "every second
//! between the first and the last sample is stored exactly once".

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{
    assert_contiguous, fast_agent_args, field, run_agent, stored_samples, stored_times,
    wait_for_stored_times, Agent,
};
use sysmon_testkit::{unix_now, TestDatabase};

sysmon_testkit::on_both_stores!(
    end_to_end_http,
    end_to_end_websocket,
    outage_http,
    outage_websocket,
    kill_9_with_a_backlog,
    outbox_limits_drop_the_oldest,
    bad_token_stops_sending_until_reenrolled,
    malformed_sample_is_set_aside,
);

fn args(list: &[String], extra: &[&str]) -> Vec<String> {
    list.iter()
        .cloned()
        .chain(extra.iter().map(|s| (*s).to_owned()))
        .collect()
}

fn refs(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

async fn end_to_end(database: TestDatabase, transport: &str) {
    let server = database.start().await;
    let state = database.path("host1");
    let flags = args(
        &fast_agent_args(&server.base),
        &[
            "--name",
            "host1",
            "--password",
            "secret-password",
            "--transport",
            transport,
        ],
    );
    let mut agent = Agent::start(&state, &refs(&flags));
    // The token exists once enrolled; the password is not stored anywhere.
    let token = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !state.join("token").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no token\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.token()
    };
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(state.join("token"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "token file is private");

    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(20),
        "4 samples",
        &agent,
        |t| t.len() >= 4,
    )
    .await;
    assert_contiguous(&times, "samples at 1 s");

    let samples = stored_samples(&server, &token).await;
    for sample in &samples {
        let cpu = sample.cpu_load.expect("cpu_load");
        assert!((0.0..=100.0).contains(&cpu));
        assert!(sample.mem.expect("mem") > 0.0);
        assert!(sample.storage.is_some(), "storage");
        let extended = &sample.extended;
        let total = extended.memory_total_bytes.expect("memory_total_bytes");
        assert!(extended.memory_used_bytes.expect("memory_used_bytes") <= total);
        assert!(extended.memory_available_bytes.is_some());
        assert!(extended.swap_total_bytes.is_some());
        assert!(extended.load_average_1m.is_some() && extended.load_average_15m.is_some());
        assert!(extended.uptime_seconds.expect("uptime") > 0);
        assert!(extended.disk_read_bytes_per_second.is_some());
        assert!(extended.network_receive_bytes_per_second.is_some());
    }
    // The original API sees the same samples, with the original meanings.
    let report = server.report("host1", &token, "").await;
    assert!(report.len() >= samples.len());
    assert_eq!(report[0]["unix_time"].as_f64(), Some(samples[0].time));
    assert_eq!(report[0]["mem"].as_f64(), samples[0].mem);

    assert!(
        !agent.log_lines("batch acknowledged").is_empty(),
        "debug logging (RUST_LOG=info,sysmon_agent=debug) shows acknowledgements"
    );
    let status = agent.terminate();
    assert!(
        status.success(),
        "SIGTERM is a clean stop: {status:?}\n{}",
        agent.log()
    );
    let stopped = agent.log_lines("stopped;");
    assert_eq!(stopped.len(), 1, "{}", agent.log());
    assert!(
        field(&stopped[0], "sent").unwrap_or(0) >= 4,
        "{}",
        stopped[0]
    );
    server.shutdown().await;
}

async fn end_to_end_http(database: TestDatabase) {
    end_to_end(database, "http").await;
}

async fn end_to_end_websocket(database: TestDatabase) {
    end_to_end(database, "ws").await;
}

/// The server stops for 10 s while the agent runs at 1 s, then starts again
/// on the same database and port: every second is stored exactly once.
async fn outage(database: TestDatabase, transport: &str) {
    let server = database.start().await;
    let address = server.address;
    let state = database.path("outage");
    let flags = args(
        &fast_agent_args(&server.base),
        &[
            "--name",
            "outage",
            "--password",
            "pw-secret1",
            "--transport",
            transport,
        ],
    );
    let mut agent = Agent::start(&state, &refs(&flags));
    let token = {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !state.join("token").exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "no token\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        agent.token()
    };
    wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(15),
        "2 samples",
        &agent,
        |t| t.len() >= 2,
    )
    .await;

    server.shutdown().await;
    let stopped_at = unix_now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let backlog = agent.outbox_times();
    assert!(
        backlog.len() >= 8,
        "samples pile up in the outbox while the server is down: {backlog:?}\n{}",
        agent.log()
    );
    assert!(
        agent.is_running(),
        "the agent keeps running\n{}",
        agent.log()
    );

    let server = database.start_on(address).await;
    let restarted_at = unix_now();
    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(20),
        "the backlog and 2 newer samples",
        &agent,
        |t| {
            t.last()
                .is_some_and(|&last| last as f64 >= restarted_at + 2.0)
        },
    )
    .await;
    assert!(
        backlog.iter().all(|time| times.binary_search(time).is_ok()),
        "every queued sample stored"
    );
    assert!((times[0] as f64) < stopped_at && (*times.last().unwrap() as f64) > restarted_at);
    assert_contiguous(&times, "across the outage");

    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    // Whatever was still queued at the stop is newer than everything stored.
    let leftover = agent.outbox_times();
    let times = stored_times(&server, &token).await;
    assert_contiguous(&times, "after the stop");
    assert!(
        leftover.iter().all(|t| t > times.last().unwrap()),
        "{leftover:?}"
    );

    // State changes are logged once, not once per retry.
    let log = agent.log();
    assert_eq!(agent.log_lines("server unreachable").len(), 1, "{log}");
    assert_eq!(agent.log_lines("server reachable again").len(), 1, "{log}");
    server.shutdown().await;
}

async fn outage_http(database: TestDatabase) {
    outage(database, "http").await;
}

async fn outage_websocket(database: TestDatabase) {
    outage(database, "ws").await;
}

/// SIGKILL while samples wait in the outbox (server down); after restarting
/// both, every sample is stored once, and the agent needs no password.
async fn kill_9_with_a_backlog(database: TestDatabase) {
    let server = database.start().await;
    let address = server.address;
    let state = database.path("killed");
    let flags = args(
        &fast_agent_args(&server.base),
        &["--name", "killed", "--password", "pw-secret1"],
    );
    let mut agent = Agent::start(&state, &refs(&flags));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !state.join("token").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no token\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token = agent.token();
    let before = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(15),
        "2 samples",
        &agent,
        |t| t.len() >= 2,
    )
    .await;

    server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    agent.kill9();
    let backlog = agent.outbox_times();
    assert!(
        backlog.len() >= 3,
        "a backlog at the kill: {backlog:?}\n{}",
        agent.log()
    );
    let first_log = agent.log();

    let server = database.start_on(address).await;
    // Restarted with neither password nor token: the stored token is used.
    let restarted_at = unix_now();
    let mut agent = Agent::start(&state, &refs(&fast_agent_args(&server.base)));
    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(20),
        "the backlog and new samples",
        &agent,
        |t| {
            backlog.iter().all(|time| t.binary_search(time).is_ok())
                && t.last()
                    .is_some_and(|&last| last as f64 >= restarted_at + 2.0)
        },
    )
    .await;
    let status = agent.terminate();
    assert!(status.success(), "{status:?}\n{}", agent.log());

    let distinct: BTreeSet<i64> = times.iter().copied().collect();
    assert_eq!(distinct.len(), times.len(), "nothing doubled: {times:?}");
    // Before the kill: every second from the first sample to the last queued.
    let last_queued = *backlog.last().unwrap();
    let first_run: Vec<i64> = times
        .iter()
        .copied()
        .filter(|&t| t <= last_queued)
        .collect();
    assert_eq!(first_run[0], before[0]);
    assert_contiguous(
        &first_run,
        &format!("first run, up to the kill\n{first_log}"),
    );
    let second_run: Vec<i64> = times.iter().copied().filter(|&t| t > last_queued).collect();
    assert!(second_run.len() >= 2);
    assert_contiguous(&second_run, "after the restart");
    assert!(
        agent.log_lines("enrolled").is_empty(),
        "no enrollment needed"
    );
    server.shutdown().await;
}

/// Server down, tiny outbox: the oldest samples are dropped and counted,
/// the agent keeps running, and the newest ones are delivered later.
async fn outbox_limits_drop_the_oldest(database: TestDatabase) {
    let server = database.start().await;
    let state = database.path("limited");
    let state_arg = state.display().to_string();
    let output = run_agent(&[
        "--server",
        &server.base,
        "--name",
        "limited",
        "--password",
        "pw-secret1",
        "--state-dir",
        &state_arg,
        "--enroll",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = std::fs::read_to_string(state.join("token"))
        .expect("token stored")
        .trim()
        .to_owned();
    let address = server.address;
    server.shutdown().await;

    // 16 KiB holds four samples.
    let flags = args(
        &fast_agent_args(&format!("http://{address}")),
        &["--outbox-max-size", "16KiB"],
    );
    let mut agent = Agent::start(&state, &refs(&flags));
    agent
        .wait_for_log("outbox over its limit", Duration::from_secs(15))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        agent.is_running(),
        "the agent keeps running\n{}",
        agent.log()
    );
    let kept = agent.outbox_times();
    assert!(kept.len() <= 4 && !kept.is_empty(), "{kept:?}");
    assert!(agent.terminate().success());

    let summary = agent
        .log_lines("stopped;")
        .pop()
        .expect("a summary at the stop");
    let collected = field(&summary, "collected").expect("collected");
    let dropped = field(&summary, "dropped_total").expect("dropped_total");
    let waiting = field(&summary, "waiting").expect("waiting");
    let kept = agent.outbox_times();
    assert!(dropped >= 3, "{summary}");
    assert_eq!(
        collected,
        dropped + waiting,
        "every sample is sent, waiting or counted as dropped: {summary}"
    );
    assert_eq!(waiting, kept.len() as u64);
    let warnings = agent.log_lines("outbox over its limit");
    assert!(
        field(&warnings[0], "dropped_total").unwrap_or(0) >= 1,
        "{}",
        warnings[0]
    );

    // Back up: exactly the kept (newest) samples arrive; the dropped never do.
    let server = database.start_on(address).await;
    let mut agent = Agent::start(&state, &refs(&fast_agent_args(&server.base)));
    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(20),
        "the kept samples",
        &agent,
        |t| kept.iter().all(|time| t.binary_search(time).is_ok()),
    )
    .await;
    assert_eq!(
        times[0],
        *kept.first().unwrap(),
        "nothing older than the kept samples"
    );
    assert!(agent.terminate().success());
    server.shutdown().await;
}

/// A token the server refuses: one clear error, no retry storm, collection
/// goes on; a re-enrollment (`--enroll`) while it runs resumes delivery.
async fn bad_token_stops_sending_until_reenrolled(database: TestDatabase) {
    let server = database.start().await;
    let state = database.path("badtoken");
    let flags = args(
        &fast_agent_args(&server.base),
        &["--token", "not-a-valid-token"],
    );
    let mut agent = Agent::start(&state, &refs(&flags));
    agent
        .wait_for_log("token rejected", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(agent.is_running());
    let log = agent.log();
    assert_eq!(
        agent.log_lines("token rejected").len(),
        1,
        "one error, no retries:\n{log}"
    );
    assert!(log.contains("re-enroll with --name/--password"), "{log}");
    assert_eq!(agent.log_lines("batch acknowledged").len(), 0);
    let queued = agent.outbox_times();
    assert!(queued.len() >= 3, "collection continues: {queued:?}");

    let state_arg = state.display().to_string();
    let output = run_agent(&[
        "--server",
        &server.base,
        "--name",
        "badtoken",
        "--password",
        "pw-secret1",
        "--state-dir",
        &state_arg,
        "--enroll",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = agent.token();
    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(20),
        "the queued samples",
        &agent,
        |t| queued.iter().all(|time| t.binary_search(time).is_ok()),
    )
    .await;
    assert_contiguous(&times, "after re-enrollment");
    assert_eq!(agent.log_lines("a new token was stored").len(), 1);
    assert!(agent.terminate().success());

    // A wrong password is refused at once, with exit status 2.
    let output = run_agent(&[
        "--server",
        &server.base,
        "--name",
        "badtoken",
        "--password",
        "wrong",
        "--state-dir",
        &state_arg,
        "--enroll",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("refused to enroll"));
    server.shutdown().await;
}

/// A sample the server refuses (`400`, "sample N: ...") is moved aside and
/// the rest of the queue is delivered.
async fn malformed_sample_is_set_aside(database: TestDatabase) {
    let server = database.start().await;
    let state = database.path("malformed");
    let state_arg = state.display().to_string();
    let output = run_agent(&[
        "--server",
        &server.base,
        "--name",
        "malformed",
        "--password",
        "pw-secret1",
        "--state-dir",
        &state_arg,
        "--enroll",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    // Three queued samples from a minute ago, the middle one impossible.
    let base = unix_now() as i64 - 60;
    std::fs::create_dir_all(state.join("outbox")).unwrap();
    for (time, cpu) in [(base, 10.0), (base + 1, 150.0), (base + 2, 12.0)] {
        let sample = serde_json::json!({"time": time as f64, "cpu_load": cpu, "mem": 100.0});
        std::fs::write(
            state.join(format!("outbox/{time}.json")),
            sample.to_string(),
        )
        .unwrap();
    }
    let mut agent = Agent::start(&state, &refs(&fast_agent_args(&server.base)));
    let times = wait_for_stored_times(
        &server,
        &token,
        Duration::from_secs(15),
        "the good samples and live ones",
        &agent,
        |t| t.contains(&base) && t.contains(&(base + 2)) && t.len() >= 4,
    )
    .await;
    assert!(!times.contains(&(base + 1)));
    assert!(state.join(format!("rejected/{}.json", base + 1)).exists());
    let set_aside = agent.log_lines("sample set aside");
    assert_eq!(set_aside.len(), 1, "{}", agent.log());
    assert!(set_aside[0].contains("cpu_load"), "{}", set_aside[0]);
    assert!(agent.terminate().success());
    server.shutdown().await;
}

/// A server that registers new clients only with an enrolment token: the
/// agent without `--enroll-token` is refused (exit 2, the server's reason
/// shown), with it it enrolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolls_with_an_enrolment_token() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.registration.mode = sysmon_server::services::auth::RegistrationMode::Token;
    config.dashboard.initial_admin_password = Some("admin-password".into());
    let server = sysmon_testkit::TestServer::start(config).await;
    let admin = server.login("admin", "admin-password").await;
    let created = server
        .post_json(
            "/api/v1/enrollment-tokens",
            &admin,
            &serde_json::json!({"uses": 1}),
            201,
        )
        .await;
    let secret = created["token"].as_str().expect("a token");
    let state = database.path("enrolled");
    let state = state.to_str().unwrap();
    let enroll = |extra: &[&str]| {
        let mut args = vec![
            "--server",
            &server.base,
            "--name",
            "tokened",
            "--password",
            "pw-secret1",
            "--state-dir",
            state,
            "--enroll",
        ];
        args.extend_from_slice(extra);
        run_agent(&args)
    };
    let refused = enroll(&[]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{said}");
    assert!(said.contains("enrolment token"), "{said}");
    let enrolled = enroll(&["--enroll-token", secret]);
    assert!(
        enrolled.status.success(),
        "{}",
        String::from_utf8_lossy(&enrolled.stderr)
    );
    assert!(std::path::Path::new(state).join("token").exists());
    server.shutdown().await;
}
