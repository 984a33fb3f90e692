//! The `/echo` WebSocket protocol of compat.md, on both stores.

mod common;

use std::time::Duration;

use common::{CompatApi, WsClient};
use futures_util::SinkExt;
use serde_json::{json, Value};
use sysmon_testkit::TestDatabase;
use tokio_tungstenite::tungstenite::Message;

const NOT_PROTOCOL: &str = "Data type incorrect, please use json";

sysmon_testkit::on_both_stores!(
    hello_comes_first_and_junk_is_refused,
    client_data_is_stored_before_data_return,
    client_data_errors_name_the_problem,
    dropped_connections_leave_the_server_well,
);

fn not_protocol() -> Value {
    json!({"type": "ERROR", "reason": NOT_PROTOCOL})
}

async fn hello_comes_first_and_junk_is_refused(database: TestDatabase) {
    let server = database.start().await;
    let mut ws = WsClient::connect(&server).await;
    // Before HELLO, even a valid message is refused.
    assert_eq!(
        ws.request(&json!({"type": "WORK_TIME"})).await,
        not_protocol()
    );
    assert_eq!(
        ws.request(&json!({"type": "HELLO"})).await,
        json!({"type": "WELCOME", "payload": {"welcome": "WELCOME"}})
    );
    for junk in [
        "not json",
        "[1, 2]",
        "{}",
        r#"{"type": 7}"#,
        r#"{"type": "DANCE"}"#,
        "{\"type\": \"HELLO\"",
    ] {
        ws.send_text(junk).await;
        assert_eq!(ws.receive().await, not_protocol(), "{junk}");
    }
    ws.stream
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .unwrap();
    assert_eq!(ws.receive().await, not_protocol());
    // A plain GET of the WebSocket route is told what it is, as JSON.
    let response = server.http.get(server.url("/echo")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request", "{body}");
    // The connection is still usable.
    let work_time = ws.request(&json!({"type": "WORK_TIME"})).await;
    assert_eq!(work_time["type"], "WORK_TIME");
    chrono::NaiveDateTime::parse_from_str(
        work_time["payload"]["start_work"].as_str().unwrap(),
        "%a, %d %b %Y %H:%M:%S",
    )
    .unwrap();
    chrono::NaiveDateTime::parse_from_str(
        work_time["payload"]["actual_time"].as_str().unwrap(),
        "%d %b %Y %H:%M:%S",
    )
    .unwrap();
}

async fn client_data_is_stored_before_data_return(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let mut ws = WsClient::connect(&server).await;
    // The README's keys.
    ws.request(&json!({"type": "HELLO"})).await;
    let data = json!({"cpu": 18, "mem": 8513, "storage": 81720, "unix_time": 1651155333});
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": data, "interval": 1, "client_id": token}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "DATA_RETURN", "payload": {"data": data}})
    );
    // The client's keys, with HELLO again first, as the real client does.
    assert_eq!(
        ws.request(&json!({"type": "HELLO"})).await["type"],
        "WELCOME"
    );
    let data = json!({"time": 1651155387.5, "cpu_load": 20.5, "mem": 8490});
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": data, "interval": "1", "client_id": token}))
        .await;
    assert_eq!(reply["payload"]["data"], data);

    // DATA_RETURN means stored: the report has both right away.
    let rows = server.report("wood", &token, "").await;
    assert_eq!(
        rows,
        [
            json!({"cpu": 18, "mem": 8513, "storage": 81720, "unix_time": 1651155333}),
            json!({"cpu": 20.5, "mem": 8490, "storage": null, "unix_time": 1651155387.5}),
        ]
    );
}

async fn client_data_errors_name_the_problem(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    let error = |reason: &str| json!({"type": "ERROR", "reason": reason});

    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {}, "interval": 1, "client_id": token}))
        .await;
    assert_eq!(reply, error("incorrect data size"));
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"mem": 1}, "client_id": "bad"}))
        .await;
    assert_eq!(reply, error("authorization error"));
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"mem": 1}}))
        .await;
    assert_eq!(reply, error("authorization error"));
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"mem": "lots"}, "client_id": "bad"}))
        .await;
    assert_eq!(
        reply,
        error("authorization error"),
        "the token is checked before the values"
    );
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"mem": "lots"}, "client_id": token}))
        .await;
    assert_eq!(reply["type"], "ERROR");
    assert!(
        reply["reason"].as_str().unwrap().contains("`mem`"),
        "{reply}"
    );
    let reply = ws
        .request(&json!({"type": "CLIENT_DATA", "data": {"cpu_load": 250}, "client_id": token}))
        .await;
    assert!(
        reply["reason"].as_str().unwrap().contains("cpu_load"),
        "{reply}"
    );

    // Nothing of that was stored; a good sample still is.
    let reply = ws.request(&json!({"type": "CLIENT_DATA", "data": {"mem": 3, "time": 1700000000}, "client_id": token})).await;
    assert_eq!(reply["type"], "DATA_RETURN");
    assert_eq!(server.report("wood", &token, "").await.len(), 1);
}

async fn dropped_connections_leave_the_server_well(database: TestDatabase) {
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    // Dropped right after connecting, after HELLO, while subscribed, and
    // half-way through a frame.
    for step in 0..3 {
        let mut ws = WsClient::connect(&server).await;
        if step >= 1 {
            ws.request(&json!({"type": "HELLO"})).await;
        }
        if step >= 2 {
            ws.request(
                &json!({"type": "SUBSCRIBE", "request_id": 1, "data": ["CPU"], "interval": 0.1}),
            )
            .await;
        }
        drop(ws);
    }
    let mut raw = tokio::net::TcpStream::connect(server.address)
        .await
        .unwrap();
    use tokio::io::AsyncWriteExt;
    raw.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    raw.write_all(&[0x81, 0xFE, 0x01]).await.unwrap();
    drop(raw);

    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    let reply = ws.request(&json!({"type": "CLIENT_DATA", "data": {"mem": 3, "time": 1700000000}, "client_id": token})).await;
    assert_eq!(reply["type"], "DATA_RETURN");
    server.assert_round_trip().await;
}

/// Subscriptions read the server's own host, not the store: one store is enough.
#[tokio::test]
async fn subscriptions_stream_events_until_unsubscribed() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;

    let reply = ws
        .request(&json!({"type": "SUBSCRIBE", "request_id": 1, "data": ["CPU"], "interval": 0.1}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "SUBSCRIBED", "payload": {"request_id": 1}})
    );
    let reply = ws
        .request(&json!({"type": "SUBSCRIBE", "request_id": "1", "data": ["MEM"], "interval": 1}))
        .await;
    assert_eq!(
        reply,
        json!({"type": "ERROR", "reason": "request id collision"}),
        "1 and \"1\" are the same id"
    );
    let reply = ws.request(&json!({"type": "SUBSCRIBE", "request_id": "2", "data": ["MEM", "STORAGE"], "interval": "0.2"})).await;
    assert_eq!(
        reply,
        json!({"type": "SUBSCRIBED", "payload": {"request_id": "2"}})
    );

    let (mut seen_1, mut seen_2) = (0, 0);
    while seen_1 < 3 || seen_2 < 2 {
        let event = ws.receive().await;
        assert_eq!(event["type"], "EVENT", "{event}");
        let payload = &event["payload"];
        if payload["request"] == 1 {
            seen_1 += 1;
            assert!(payload["cpu"].is_number(), "{event}");
            assert!(
                payload["mem"].is_null() && payload["storage"].is_null(),
                "{event}"
            );
        } else {
            assert_eq!(payload["request"], "2");
            seen_2 += 1;
            assert!(payload["cpu"].is_null(), "{event}");
            assert_eq!(payload["mem"].as_object().unwrap().len(), 11, "{event}");
            let storage = payload["storage"].as_object().unwrap();
            assert_eq!(storage.len(), 4, "{event}");
            assert!(
                storage["total"].as_u64().unwrap() >= 1,
                "GB, rounded down: {event}"
            );
        }
    }

    ws.send(&json!({"type": "UNSUBSCRIBE", "request_id": "1"}))
        .await;
    loop {
        let message = ws.receive().await;
        if message["type"] == "UNSUBSCRIBED" {
            assert_eq!(message["payload"]["request_id"], "1");
            break;
        }
    }
    // Only request 2's EVENTs from now on.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while tokio::time::Instant::now() < deadline {
        let event = ws.receive().await;
        assert_eq!(event["payload"]["request"], "2", "{event}");
    }
    let reply = ws
        .request(&json!({"type": "UNSUBSCRIBE", "request_id": 2}))
        .await;
    assert_eq!(reply["type"], "UNSUBSCRIBED");
    let reply = ws
        .request(&json!({"type": "UNSUBSCRIBE", "request_id": 9}))
        .await;
    assert_eq!(reply["type"], "ERROR");

    for bad in [
        json!({"type": "SUBSCRIBE", "request_id": 3, "data": ["GPU"], "interval": 1}),
        json!({"type": "SUBSCRIBE", "request_id": 3, "data": ["CPU"], "interval": 0.01}),
        json!({"type": "SUBSCRIBE", "data": ["CPU"], "interval": 1}),
    ] {
        let reply = ws.request(&bad).await;
        assert_eq!(reply["type"], "ERROR", "{bad}");
        assert_ne!(
            reply["reason"], NOT_PROTOCOL,
            "the reason says what is wrong: {reply}"
        );
    }
}

/// A peer that subscribes and never reads must not hold up anyone else.
#[tokio::test]
async fn a_peer_that_never_reads_does_not_stall_others() {
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let token = server.register("wood", "123-secret").await;
    let mut silent = WsClient::connect(&server).await;
    silent.request(&json!({"type": "HELLO"})).await;
    for id in 0..50 {
        silent
            .send(&json!({"type": "SUBSCRIBE", "request_id": id, "data": ["CPU", "MEM", "STORAGE"], "interval": 0.1}))
            .await;
    }
    let mut busy = WsClient::connect(&server).await;
    busy.request(&json!({"type": "HELLO"})).await;
    let started = std::time::Instant::now();
    for second in 0..100 {
        let reply = busy
            .request(&json!({"type": "CLIENT_DATA", "data": {"mem": 1, "time": 1700000000 + second}, "client_id": token}))
            .await;
        assert_eq!(reply["type"], "DATA_RETURN");
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(server.report("wood", &token, "").await.len(), 100);
    drop(silent);
    server.assert_round_trip().await;
}

/// On shutdown, open WebSockets get a close frame.
#[tokio::test]
async fn shutdown_closes_websockets_with_a_close_frame() {
    use futures_util::StreamExt;
    let database = TestDatabase::sqlite().await;
    let server = database.start().await;
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    let shutdown = tokio::spawn(server.shutdown());
    let frame = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("close frame within 5 s");
    assert!(frame.is_some(), "close frame carries a code");
    shutdown.await.unwrap();
}

/// A socket that never says HELLO is closed after the HELLO timeout, and
/// one connection cannot start subscriptions without end.
#[tokio::test]
async fn silent_sockets_are_closed_and_subscriptions_are_capped() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.limits.websocket_hello_timeout = Duration::from_millis(500);
    let server = sysmon_testkit::TestServer::start(config).await;

    let mut silent = WsClient::connect(&server).await;
    let started = std::time::Instant::now();
    assert_eq!(close_reason(&mut silent).await, "no HELLO");
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );

    // A greeted socket is not held to the HELLO timeout.
    let mut ws = WsClient::connect(&server).await;
    ws.request(&json!({"type": "HELLO"})).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in 0..16 {
        let reply = ws
            .request(
                &json!({"type": "SUBSCRIBE", "request_id": id, "data": ["CPU"], "interval": 60}),
            )
            .await;
        assert_eq!(reply["type"], "SUBSCRIBED", "subscription {id}: {reply}");
    }
    let reply = ws
        .request(&json!({"type": "SUBSCRIBE", "request_id": 16, "data": ["CPU"], "interval": 60}))
        .await;
    assert_eq!(reply["type"], "ERROR", "{reply}");
    assert_eq!(reply["code"], "invalid_message", "{reply}");
    // Freeing one makes room again.
    let reply = ws
        .request(&json!({"type": "UNSUBSCRIBE", "request_id": 3}))
        .await;
    assert_eq!(reply["type"], "UNSUBSCRIBED", "{reply}");
    let reply = ws
        .request(&json!({"type": "SUBSCRIBE", "request_id": 16, "data": ["CPU"], "interval": 60}))
        .await;
    assert_eq!(reply["type"], "SUBSCRIBED", "{reply}");
    server.shutdown().await;
}

/// A greeted socket that goes silent (a peer gone without a FIN) is
/// closed after `limits.websocket_idle_timeout`, freeing its slot; one
/// that keeps talking stays.
#[tokio::test]
async fn silent_greeted_sockets_are_closed_after_the_idle_timeout() {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.limits.websocket_idle_timeout = Duration::from_millis(1_500);
    let server = sysmon_testkit::TestServer::start(config).await;
    let mut silent = WsClient::connect(&server).await;
    silent.request(&json!({"type": "HELLO"})).await;
    let mut talker = WsClient::connect(&server).await;
    talker.request(&json!({"type": "HELLO"})).await;
    let greeted = std::time::Instant::now();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = talker.request(&json!({"type": "HELLO"})).await;
        assert_eq!(reply["type"], "WELCOME", "{reply}");
    }
    assert_eq!(close_reason(&mut silent).await, "idle timeout");
    assert!(
        greeted.elapsed() >= Duration::from_millis(1_400),
        "{:?}",
        greeted.elapsed()
    );
    server.shutdown().await;
}

/// The reason of the close frame the server sends next (pings skipped).
async fn close_reason(socket: &mut WsClient) -> String {
    use futures_util::StreamExt;

    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), socket.stream.next())
            .await
            .expect("closed within 5 s");
        match frame {
            Some(Ok(Message::Close(frame))) => {
                return frame.expect("a reason").reason.as_str().to_owned()
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}
