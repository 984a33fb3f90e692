//! The server faces an open network: a client that opens connections and
//! sends half a request (slowloris), or asks for a report and never reads
//! it, must not hold the server's sockets or database connections, and
//! the clients that behave must not notice.

use std::time::Duration;

use serde_json::{json, Value};
use sysmon_server::services::query::RetentionConfig;
use sysmon_testkit::{poll, TestDatabase, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

sysmon_testkit::on_both_stores!(
    half_open_requests_are_closed_and_one_address_cannot_take_every_slot,
    a_report_nobody_reads_is_dropped,
    a_body_that_never_ends_times_out,
    stalled_reports_do_not_starve_ingest,
    downloads_are_bounded_per_client,
);

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
const SEND_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
const PER_IP: usize = 100;
const HALF_OPEN: usize = 500;

async fn start(database: &TestDatabase) -> TestServer {
    let mut config = database.config();
    config.limits.header_timeout = HEADER_TIMEOUT;
    config.limits.send_timeout = SEND_TIMEOUT;
    config.limits.request_timeout = REQUEST_TIMEOUT;
    config.limits.max_connections_per_ip = PER_IP;
    config.retention = RetentionConfig::forever();
    // Every stalled download here must run, not be refused a slot.
    config.downloads.max_downloads = 64;
    config.downloads.max_downloads_per_client = 64;
    TestServer::start(config).await
}

/// A connection from `source` (another loopback address than the good
/// clients' 127.0.0.1) that sends the start of a request and stops.
async fn half_open(server: &TestServer, source: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind(format!("{source}:0").parse().expect("an address"))
        .expect("bind the source address");
    let mut stream = socket.connect(server.address).await.expect("connect");
    // A refused connection may already be closed: the write may fail.
    let _ = stream
        .write_all(b"POST /client HTTP/1.1\r\nHost: sysmon\r\nContent-Le")
        .await;
    stream
}

/// Whether the server closed `stream` within `deadline` (end of stream,
/// or a reset).
async fn closed_within(stream: &mut TcpStream, deadline: Duration) -> bool {
    let mut buffer = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    };
    tokio::time::timeout(deadline, read).await.is_ok()
}

async fn half_open_requests_are_closed_and_one_address_cannot_take_every_slot(
    database: TestDatabase,
) {
    let server = start(&database).await;
    let token = server.register("steady", "steady-password").await;

    let mut attackers = Vec::new();
    for _ in 0..HALF_OPEN {
        attackers.push(half_open(&server, "127.0.0.2").await);
    }
    // While they hang, a good client pushes and reads as usual.
    for offset in 0..50 {
        let sample = json!({"time": 1_764_000_000 + offset, "cpu_load": 5.0});
        server.post_samples(&token, &[sample]).await;
    }
    assert_eq!(server.stored_samples(&token).await.len(), 50);

    // Past the per-address limit, connections were closed unserved; the
    // rest when the header timeout ran out.
    let metrics = server.metrics_text().await;
    let refused = metric(
        &metrics,
        "sysmon_connections_refused_total{reason=\"max_connections_per_ip\"}",
    );
    assert_eq!(refused, (HALF_OPEN - PER_IP) as f64, "{metrics}");
    let wait = HEADER_TIMEOUT + Duration::from_secs(3);
    for (index, attacker) in attackers.iter_mut().enumerate() {
        assert!(
            closed_within(attacker, wait).await,
            "half-open connection {index} is still open after {wait:?}"
        );
    }
    // The slots were given back: the address may connect again.
    let mut again = half_open(&server, "127.0.0.2").await;
    assert!(
        !closed_within(&mut again, HEADER_TIMEOUT / 4).await,
        "a new connection is admitted once the old ones are gone"
    );
    server.shutdown().await;
}

async fn a_report_nobody_reads_is_dropped(database: TestDatabase) {
    let server = start(&database).await;
    let token = register_history(&server).await;
    let mut stalled = stalled_reports(&server, &token, 20).await;
    // Long enough for the server's writes to stall and time out.
    tokio::time::sleep(SEND_TIMEOUT * 4).await;

    // Ingest and reads work beside them.
    let other = server.register("beside", "beside-password").await;
    let sample = json!({"time": 1_764_000_000, "cpu_load": 1.0});
    server.post_samples(&other, &[sample]).await;
    assert_eq!(server.stored_samples(&other).await.len(), 1);

    // Each stalled download was cut off: reading it now ends before the
    // whole report, at the end of what was buffered.
    let full = server
        .http
        .get(server.url("/client/history/time/report"))
        .header("Authorization", &token)
        .send()
        .await
        .expect("a report")
        .bytes()
        .await
        .expect("the whole report")
        .len();
    for (index, stream) in stalled.iter_mut().enumerate() {
        let mut received = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut received));
        let outcome = read.await.expect("the server closed the stalled download");
        assert!(
            outcome.is_err() || received.len() < full,
            "stalled download {index} got {} of {full} bytes: it was not cut off",
            received.len()
        );
    }
    server.shutdown().await;
}

async fn a_body_that_never_ends_times_out(database: TestDatabase) {
    let server = start(&database).await;
    let mut stream = TcpStream::connect(server.address).await.expect("connect");
    stream
        .write_all(
            b"POST /client HTTP/1.1\r\nHost: sysmon\r\n\
              Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n\
              username=slow&pass",
        )
        .await
        .expect("send");
    let started = std::time::Instant::now();
    let mut reply = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT * 5, stream.read_to_end(&mut reply))
        .await
        .expect("answered and closed")
        .expect("read the reply");
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 503"),
        "a request whose body stalls is refused: {reply}"
    );
    assert!(reply.contains("\"code\":\"timed_out\""), "{reply}");
    assert!(
        started.elapsed() >= REQUEST_TIMEOUT,
        "{:?}",
        started.elapsed()
    );
    server.shutdown().await;
}

/// Reports whose clients stop reading hold their database connections
/// until the send timeout; ingest has connections of its own meanwhile.
async fn stalled_reports_do_not_starve_ingest(database: TestDatabase) {
    let mut config = database.config();
    config.limits.send_timeout = Duration::from_secs(60);
    config.retention = RetentionConfig::forever();
    config.downloads.max_downloads = 64;
    config.downloads.max_downloads_per_client = 64;
    let server = TestServer::start(config).await;
    let history = register_history(&server).await;
    let pusher = server.register("pusher", "pusher-password").await;
    // More stalled downloads than the readers' pool has connections.
    let stalled = stalled_reports(&server, &history, 24).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for offset in 0..20 {
        let started = std::time::Instant::now();
        let sample = json!({"time": 1_764_000_000 + offset, "cpu_load": 1.0});
        server.post_samples(&pusher, &[sample]).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "push {offset} took {:?} beside stalled reports",
            started.elapsed()
        );
    }
    drop(stalled);
    server.shutdown().await;
}

/// A client cannot hold more than its share of downloads: past it, its next
/// one is refused at once, while other clients' downloads go on.
async fn downloads_are_bounded_per_client(database: TestDatabase) {
    let mut config = database.config();
    config.retention = RetentionConfig::forever();
    config.downloads.max_downloads_per_client = 2;
    let server = TestServer::start(config).await;
    let history = register_history(&server).await;
    let other = server.register("other", "other-password").await;
    server
        .post_samples(&other, &[json!({"time": 1_764_000_000, "cpu_load": 1.0})])
        .await;
    let stalled = stalled_reports(&server, &history, 2).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let report = |name: &'static str, token: String| {
        let server = &server;
        async move {
            server
                .http
                .get(server.url(&format!("/client/{name}/time/report")))
                .header("Authorization", token)
                .send()
                .await
                .expect("a report")
        }
    };
    let refused = report("history", history.clone()).await;
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .map(|v| v.as_bytes().to_vec()),
        Some(b"1".to_vec())
    );
    let body: Value = refused.json().await.expect("JSON");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("downloads of this client"),
        "{body}"
    );
    assert_eq!(report("other", other.clone()).await.status().as_u16(), 200);

    // Their readers gone, the slots come back.
    drop(stalled);
    let history = &history;
    poll(
        "a slot for history again",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || async {
            match report("history", history.clone()).await.status().as_u16() {
                200 => Ok(()),
                status => Err(format!("status {status}")),
            }
        },
    )
    .await;
    server.shutdown().await;
}

/// A client `history` with 150,000 samples: its report is ~15 MB, more
/// than loopback buffers hold. Its token.
async fn register_history(server: &TestServer) -> String {
    let token = server.register("history", "history-password").await;
    for batch in 0..15 {
        let samples: Vec<Value> = (0..10_000)
            .map(|i| json!({"time": 1_700_000_000 + batch * 10_000 + i, "cpu_load": 12.5, "mem": 2048.0}))
            .collect();
        server.post_samples(&token, &samples).await;
    }
    token
}

/// `count` requests for `history`'s report whose answers nobody reads.
async fn stalled_reports(server: &TestServer, token: &str, count: usize) -> Vec<TcpStream> {
    let mut stalled = Vec::new();
    for _ in 0..count {
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        let request = format!(
            "GET /client/history/time/report HTTP/1.1\r\nHost: sysmon\r\nAuthorization: {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("send");
        stalled.push(stream);
    }
    stalled
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A WebSocket keeps its connection's slot for as long as it is open, not
/// only while its upgrade request is served.
#[tokio::test]
async fn open_websockets_count_against_the_limits() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;

    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.limits.max_connections_per_ip = 3;
    let server = TestServer::start(config).await;
    let url = format!("ws://{}/echo", server.address);
    let mut sockets = Vec::new();
    for _ in 0..3 {
        let (mut socket, _) = tokio_tungstenite::connect_async(&url)
            .await
            .expect("within the limit");
        socket
            .send(Message::text(json!({"type": "HELLO"}).to_string()))
            .await
            .expect("HELLO");
        sockets.push(socket);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(server.address).await.expect("connect");
    let _ = fourth
        .write_all(b"GET /api HTTP/1.1\r\nHost: sysmon\r\n\r\n")
        .await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "a fourth connection beside three open WebSockets is refused"
    );
    let metrics_refused = {
        drop(sockets.pop());
        tokio::time::sleep(Duration::from_millis(200)).await;
        server.metrics_text().await
    };
    assert_eq!(
        metric(
            &metrics_refused,
            "sysmon_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        1.0,
        "{metrics_refused}"
    );
    drop(sockets);
    server.shutdown().await;
}
