//! Replays, byte for byte where it matters, what the original Tk GUI client
//! sends: JSON registration, form-encoded pushes of only the ticked fields,
//! POSTs to `/time` and `/time/report?start=..&end=..`, and a WebSocket that
//! sends HELLO before every pretty-printed CLIENT_DATA.

mod common;

use common::WsClient;
use serde_json::{json, Value};
use sysmon_testkit::TestDatabase;

sysmon_testkit::on_both_stores!(the_original_gui_client_works_unchanged);

async fn the_original_gui_client_works_unchanged(database: TestDatabase) {
    let server = database.start().await;
    let http = &server.http;

    // Registration: requests.post('/client', json={'username': .., 'pass': ..}).
    let registration: Value = http
        .post(server.url("/client"))
        .header("Content-Type", "application/json")
        .body(r#"{"username": "wood", "pass": "123-secret"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(registration["registration"], "wood");
    let client_id = registration["client_id"].as_str().unwrap().to_owned();

    // HTTP thread: requests.post(url, data=dict, headers={'Authorization': client_id}),
    // with only the ticked metrics, `time` as int(time.time()).
    let bodies = [
        "time=1700000000&cpu_load=12.3&mem=5600&storage=81594",
        "time=1700000001&cpu_load=0.0",
        "time=1700000002&mem=5601",
        "time=1700000003&storage=81595",
    ];
    for body in bodies {
        let response = http
            .post(server.url("/client/wood"))
            .header("Authorization", &client_id)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        // The client stops its thread on anything but 202.
        assert_eq!(response.status(), 202, "{body}");
    }

    // WebSocket thread: HELLO, recv, CLIENT_DATA (json.dumps(indent=4)), recv.
    let mut ws = WsClient::connect(&server).await;
    for (second, cpu) in [(4, "7.5"), (5, "8.0")] {
        assert_eq!(
            ws.request(&json!({"type": "HELLO"})).await["type"],
            "WELCOME"
        );
        let frame = format!(
            "{{\n    \"type\": \"CLIENT_DATA\",\n    \"data\": {{\n        \"time\": 170000000{second},\n        \"cpu_load\": {cpu}\n    }},\n    \"interval\": 1,\n    \"client_id\": \"{client_id}\"\n}}"
        );
        ws.send_text(&frame).await;
        let reply = ws.receive().await;
        assert_eq!(reply["type"], "DATA_RETURN", "{reply}");
    }

    // "Log write work time": POST, no body.
    let span: Value = http
        .post(server.url("/client/wood/time"))
        .header("Authorization", &client_id)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(span, json!({"start": 1700000000, "end": 1700000005}));

    // "Log slice": POST with the range in the query string.
    let report: Value = http
        .post(server.url("/client/wood/time/report?start=1700000001&end=1700000004"))
        .header("Authorization", &client_id)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        report,
        json!({"payload": [
            {"cpu": 0, "mem": null, "storage": null, "unix_time": 1700000001},
            {"cpu": null, "mem": 5601, "storage": null, "unix_time": 1700000002},
            {"cpu": null, "mem": null, "storage": 81595, "unix_time": 1700000003},
            {"cpu": 7.5, "mem": null, "storage": null, "unix_time": 1700000004},
        ]})
    );
}
