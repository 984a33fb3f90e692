//! The dashboard in a real browser: Debian's headless Chromium, driven over
//! WebDriver by chromedriver, against a server running in this process on
//! SQLite and filled through the HTTP API with a day of three hosts' samples.
//! The browser plumbing is `sysmon_testkit::browser`; this file holds the
//! dashboard's steps and data.
//!
//! Without `chromium` and `chromedriver` the test is skipped with a printed
//! reason, except under CI (`CI=true` or `CI=1`), where it fails.
//! `SYSMON_UPDATE_SCREENSHOTS=1` writes its screenshots to
//! `docs/screenshots/`; otherwise they go to a temporary directory, so a
//! normal run leaves the tree as it was.

use std::path::Path;
use std::time::Duration;

use fantoccini::actions::{PointerAction, MOUSE_BUTTON_LEFT};
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use sysmon_testkit::browser::{
    click, console_errors, mouse, settle, type_into, wait_for, BrowserTools, ChromeDriver,
    Screenshots, Viewport, WaitForElement,
};
use sysmon_testkit::{unix_now, TestDatabase, TestServer};

const ADMIN_PASSWORD: &str = "browser-test-admin";

const DESKTOP: Viewport = Viewport::Window {
    width: 1280,
    height: 900,
};
/// A phone, emulated: desktop Chromium keeps windows at least 500 px wide.
const PHONE: Viewport = Viewport::Phone {
    width: 390,
    height: 844,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let Some(tools) = BrowserTools::find() else {
        return;
    };
    // Every browser step waits at most WAIT; this bounds the whole test
    // should chromedriver itself stop answering.
    tokio::time::timeout(Duration::from_secs(240), run(tools))
        .await
        .expect("the browser test finishes within 4 minutes");
}

/// A fleet of 10,000 hosts (seeded straight into the database: registering
/// them would hash 10,000 passwords): the fleet page renders a few dozen
/// rows whatever the fleet's size, searches, filters and sorts all of it,
/// and says how long it took to be ready (the figure in
/// docs/benchmarks.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_of_ten_thousand_hosts() {
    let Some(tools) = BrowserTools::find() else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(240), big_fleet(tools))
        .await
        .expect("the big-fleet test finishes within 4 minutes");
}

const BIG_FLEET: usize = 10_000;

async fn big_fleet(tools: BrowserTools) {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    let server = TestServer::start(config).await;
    seed_big_fleet(&database).await;
    let driver = ChromeDriver::start(&tools, &database.path("chromedriver.log"));
    let browser = driver.session(DESKTOP).await;
    browser.goto(&server.url("/#/server")).await.expect("open");
    log_in_as(&browser, "admin", ADMIN_PASSWORD).await;
    browser.wait_for_element("#server-view").await;
    let ready_ms = wait_for(
        &browser,
        "the fleet of 10,000 hosts",
        &format!(
            "if (window.fleetStart === undefined) {{
               window.fleetStart = performance.now();
               location.hash = '#/';
             }}
             const table = document.querySelector('#fleet-table');
             return table && table.dataset.shown === '{BIG_FLEET}'
               && table.querySelector('tr[data-client]')
               ? performance.now() - window.fleetStart : null;"
        ),
    )
    .await;
    let rendered = browser
        .execute(
            "return document.querySelectorAll('#fleet-table tr[data-client]').length;",
            vec![],
        )
        .await
        .expect("count rows");
    assert!(
        rendered
            .as_u64()
            .is_some_and(|rows| rows > 10 && rows < 100),
        "only the rows in view are in the page: {rendered}"
    );
    let summary = browser
        .execute(
            "return document.querySelector('#fleet-summary').textContent;",
            vec![],
        )
        .await
        .expect("summary");
    assert_eq!(summary, format!("10,000 hosts · 9,000 online"));

    let search_started = std::time::Instant::now();
    type_into(&browser, "#fleet-search", "host-0999").await;
    wait_for(
        &browser,
        "the search's matches",
        "return document.querySelector('#fleet-table').dataset.shown === '10' || null;",
    )
    .await;
    let search_ms = search_started.elapsed().as_secs_f64() * 1000.0;
    browser
        .execute(
            "const search = document.querySelector('#fleet-search');
             search.value = ''; search.dispatchEvent(new Event('input'));
             const filter = document.querySelector('#fleet-filter');
             filter.value = 'offline'; filter.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("filter offline");
    wait_for(
        &browser,
        "the offline hosts, greyed",
        "const table = document.querySelector('#fleet-table');
         const row = table.querySelector('tr[data-client]');
         return table.dataset.shown === '1000' && row.classList.contains('offline') || null;",
    )
    .await;
    browser
        .execute(
            "const filter = document.querySelector('#fleet-filter');
             filter.value = 'all'; filter.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("all hosts");
    let sort_started = std::time::Instant::now();
    click(&browser, "button[data-sort=cpu_load]").await;
    let top = wait_for(
        &browser,
        "the busiest host first",
        "const th = document.querySelector('button[data-sort=cpu_load]').parentElement;
         const row = document.querySelector('#fleet-table tr[data-client]');
         return th.getAttribute('aria-sort') === 'descending'
           ? +row.querySelector('[data-field=cpu_load]').dataset.value : null;",
    )
    .await;
    let sort_ms = sort_started.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(top.as_f64(), Some(99.5), "highest cpu first");
    // The end of the table, by scrolling: rows there are drawn on demand.
    let last = wait_for(
        &browser,
        "the end of the table",
        "window.scrollTo(0, document.body.scrollHeight);
         const rows = document.querySelectorAll('#fleet-table tr[data-client]');
         const last = rows[rows.length - 1];
         return rows.length < 100 && last && +last.querySelector('[data-field=cpu_load]').dataset.value === 0.5
           ? last.dataset.client : null;",
    )
    .await;
    assert!(
        last.as_str().is_some_and(|name| name.starts_with("host-")),
        "{last}"
    );
    let errors = console_errors(&browser).await;
    assert!(
        errors.is_empty(),
        "errors in the browser's console: {errors:#?}"
    );
    println!(
        "fleet of {BIG_FLEET} hosts: ready in {:.0} ms; search {search_ms:.0} ms, sort {sort_ms:.0} ms (these two with WebDriver's round trips)",
        ready_ms.as_f64().unwrap_or(f64::NAN),
    );
    browser.close().await.expect("close");
    server.shutdown().await;
}

/// 10,000 clients with two samples each, ten minutes apart; every tenth
/// host last reported three hours ago. Host i's cpu is (37 i mod 100) + 0.5.
async fn seed_big_fleet(database: &TestDatabase) {
    use sqlx::Connection;
    let mut connection = sqlx::SqliteConnection::connect(&database.url)
        .await
        .expect("the test database");
    let now_us = (unix_now() * 1e6) as i64;
    let mut transaction = connection.begin().await.expect("begin");
    for i in 0..BIG_FLEET {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO clients (name, password_hash, created_at_us) VALUES ($1, 'none', $2) RETURNING id",
        )
        .bind(format!("host-{i:05}"))
        .bind(now_us)
        .fetch_one(&mut *transaction)
        .await
        .expect("a client");
        // Ten minutes apart: online for half an hour, however slow the run.
        let last = if i % 10 == 9 {
            now_us - 3 * 3_600_000_000
        } else {
            now_us - 2_000_000
        };
        let cpu = (37 * i % 100) as f64 + 0.5;
        for time in [last - 600_000_000, last] {
            sqlx::query(
                "INSERT INTO samples (client_id, time_us, cpu_load, mem) VALUES ($1, $2, $3, 2048)",
            )
            .bind(id)
            .bind(time)
            .bind(cpu)
            .execute(&mut *transaction)
            .await
            .expect("a sample");
        }
    }
    transaction.commit().await.expect("commit");
}

async fn run(tools: BrowserTools) {
    let database = TestDatabase::sqlite().await;
    let mut config = database.config();
    config.dashboard.initial_admin_password = Some(ADMIN_PASSWORD.into());
    // web-1's seeded load (42.5 at the end) is over it; db-1's is not.
    config.alerts.rules = serde_norway::from_str(
        "[{name: cpu-high, metric: cpu_load, above: 40, hosts: 'web-*', severity: critical}]",
    )
    .expect("a rule");
    config.alerts.evaluation_interval = Duration::from_millis(300);
    let server = TestServer::start(config).await;
    let fleet = seed(&server).await;
    let shots = Screenshots::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots"),
        database.path("screenshots"),
    );
    let driver = ChromeDriver::start(&tools, &database.path("chromedriver.log"));

    let browser = driver.session(DESKTOP).await;
    login_form(&browser, &server, &shots).await;
    fleet_table(&browser, &fleet, &shots).await;
    alerts(&browser, &shots).await;
    let web = &fleet[0];
    host_page(&browser, &server, web).await;
    zoom(&browser, web).await;
    host_day(&browser, web, &shots).await;
    view_in_the_url(&browser).await;
    labels(&browser).await;
    caught_up_before_the_socket(&browser, &server, web).await;
    server_page(&browser, &shots).await;
    silent_host(&browser, &fleet[2]).await;
    theme_toggle(&browser).await;
    // Logging out shows the form again.
    click(&browser, "#logout").await;
    browser.wait_for_element("#login-form").await;
    viewer_without_hosts(&browser, &database).await;
    let errors = console_errors(&browser).await;
    assert!(
        errors.is_empty(),
        "errors in the browser's console: {errors:#?}"
    );
    browser.close().await.expect("close the desktop browser");

    let phone = driver.session(PHONE).await;
    phone_layout(&phone, &server, web, &shots).await;
    let errors = console_errors(&phone).await;
    assert!(
        errors.is_empty(),
        "errors in the phone's console: {errors:#?}"
    );
    phone.close().await.expect("close the phone browser");

    server.shutdown().await;
}

/// The form refuses a wrong password and lets the admin in.
async fn login_form(browser: &Client, server: &TestServer, shots: &Screenshots) {
    browser.goto(&server.url("/")).await.expect("open /");
    browser.wait_for_element("#login-username").await;
    shots.take(browser, "login").await;
    type_into(browser, "#login-username", "admin").await;
    type_into(browser, "#login-password", "not-the-password").await;
    click(browser, "#login-submit").await;
    wait_for(
        browser,
        "the login error",
        "return document.querySelector('#login-error')?.textContent || null",
    )
    .await;
    log_in(browser).await;
}

/// Every seeded host, its state and its latest cpu load.
async fn fleet_table(browser: &Client, fleet: &[Host], shots: &Screenshots) {
    let rows = wait_for(
        browser,
        "the fleet table with the seeded hosts",
        "const rows = [...document.querySelectorAll('#fleet-table tr[data-client]')];
         return rows.length === 3 ? rows.map(row => ({
           name: row.dataset.client,
           online: row.dataset.online,
           cpu: row.querySelector('[data-field=cpu_load]').dataset.value,
           storage: row.querySelector('[data-field=storage]').textContent,
           uptime: row.querySelector('[data-field=uptime_seconds]').textContent,
         })) : null;",
    )
    .await;
    let rows = rows.as_array().expect("rows");
    for host in fleet {
        let row = rows
            .iter()
            .find(|row| row["name"] == host.name)
            .unwrap_or_else(|| panic!("a row for {} in {rows:?}", host.name));
        assert_eq!(row["online"], host.online.to_string(), "{row}");
        assert_eq!(number(&row["cpu"]), Some(host.last_cpu), "{row}");
        // Agents send their uptime; the original's clients do not.
        let uptime = row["uptime"].as_str().unwrap_or_default();
        assert_eq!(uptime == "–", host.name == "legacy-box", "{row}");
        // Storage as the fullest file system's share where the host sends
        // its file systems (agents: /data, 3 of 4 TiB, or db-1's fuller
        // root); else in the same units as memory: the original's MB (MiB)
        // shown as GiB, not "95,888 MB".
        let storage = row["storage"].as_str().unwrap_or_default();
        let expected = match host.name {
            "web-1" => "75 %",
            "db-1" => "80 %",
            _ => " GiB",
        };
        assert!(storage.ends_with(expected), "{row}");
    }
    wait_for(
        browser,
        "the fleet's sparklines",
        "return document.querySelectorAll('#fleet-table canvas').length === 3 || null",
    )
    .await;
    // The sparklines' data comes a moment after the rows.
    settle(browser).await;
    shots.take(browser, "fleet").await;
}

/// A host page, opened from its row: the cpu chart holds the seeded hour,
/// and a sample posted now appears without a reload, over the live socket.
async fn host_page(browser: &Client, server: &TestServer, web: &Host) {
    click(browser, &format!("tr[data-client=\"{}\"] a", web.name)).await;
    let chart = wait_for(
        browser,
        "the cpu chart with the seeded hour",
        &chart_script("cpu", web.samples_last_hour),
    )
    .await;
    assert_eq!(chart["metric"], "cpu_load");
    assert_eq!(chart["canvas"], true, "uPlot drew the chart");
    assert_eq!(number(&chart["last"]), Some(web.last_cpu), "{chart}");
    wait_for(
        browser,
        "the live connection",
        "return document.querySelector('#live.on') ? true : null",
    )
    .await;

    // A sample in a bucket of its own (the view's step is 5 s; the newest
    // seeded sample may share the current one) appears as a new point.
    let step = wait_for(
        browser,
        "the cpu chart's step",
        "return +document.querySelector('[data-chart=cpu]').dataset.step || null;",
    )
    .await
    .as_f64()
    .expect("a step");
    let newest_seeded = web.last_time;
    while (unix_now() / step).floor() <= (newest_seeded / step).floor() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_live = unix_now().floor();
    let kept = wait_for(
        browser,
        "the charts drawn",
        "window.keptCanvases = [...document.querySelectorAll('.chart canvas')];
         return window.keptCanvases.length || null;",
    )
    .await;
    let new_cpu = 77.25;
    push_now(server, web, &[(first_live, new_cpu)]).await;
    let chart = wait_for(
        browser,
        "the new sample in the cpu chart",
        &chart_script("cpu", web.samples_last_hour + 1),
    )
    .await;
    assert_eq!(number(&chart["last"]), Some(new_cpu), "{chart}");

    live_samples_merge_in_place(browser, server, web, first_live, new_cpu, &kept).await;

    // Every file system of the latest sample, with its share used.
    let disks = wait_for(
        browser,
        "the host's file systems",
        "const rows = [...document.querySelectorAll('#filesystems tr[data-mount]')];
         return rows.length === 2 ? rows.map((row) => [row.dataset.mount,
           row.querySelector('[data-field=used_percent]').textContent]) : null;",
    )
    .await;
    assert_eq!(disks[1], json!(["/data", "75 %"]), "{disks}");
    assert_eq!(disks[0][0], "/", "{disks}");
    // And their usage over the range shown: a line per mount point, with a
    // legend naming each.
    let history = wait_for(
        browser,
        "the disk-usage chart",
        "const el = document.querySelector('#disk-history');
         const legend = [...el.querySelectorAll('.u-legend .u-series th')].map(th => th.textContent.trim());
         return el.querySelector('canvas') && Number(el.dataset.points) > 100
           ? {legend, last: JSON.parse(el.dataset.last)} : null;",
    )
    .await;
    assert_eq!(history["last"]["/data"].as_f64(), Some(75.0), "{history}");
    let root = history["last"]["/"].as_f64().expect("a share for /");
    assert!((10.0..30.0).contains(&root), "{history}");
    for mount in ["/", "/data"] {
        assert!(
            history["legend"].as_array().is_some_and(|legend| legend
                .iter()
                .any(|label| label.as_str().is_some_and(|l| l.ends_with(mount)))),
            "{history}"
        );
    }
    // The export link downloads the range shown, with the session cookie.
    let export = wait_for(
        browser,
        "the CSV export",
        "return fetch(document.querySelector('#export').href)
           .then(async r => ({status: r.status, type: r.headers.get('content-type'),
                              lines: (await r.text()).trim().split('\\n').length}));",
    )
    .await;
    assert_eq!(export["status"], 200, "{export}");
    assert!(
        export["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("text/csv")),
        "{export}"
    );
    // A header line, then one line per sample: the seeded hour's and the
    // 21 live ones.
    assert_eq!(
        export["lines"].as_u64(),
        Some(web.samples_last_hour as u64 + 22),
        "{export}"
    );
}

/// Pushes agent samples with these (time, cpu) pairs in one batch.
async fn push_now(server: &TestServer, web: &Host, samples: &[(f64, f64)]) {
    let batch: Vec<Value> = samples
        .iter()
        .map(|&(time, cpu)| agent_sample(web, time, Some(cpu)))
        .collect();
    let stored = server
        .http
        .post(server.url("/api/v1/samples"))
        .bearer_auth(&web.token)
        .json(&batch)
        .send()
        .await
        .expect("push samples");
    assert_eq!(stored.status(), 200, "{:?}", stored.text().await);
}

/// A sample stored after the page read the series but before its live
/// socket followed the host is not lost: the page holds the socket back
/// (a wrapper around `WebSocket`), the sample is stored, and once the
/// socket is let through the chart shows it, without a reload.
async fn caught_up_before_the_socket(browser: &Client, server: &TestServer, web: &Host) {
    go_to(browser, "#/").await;
    browser.wait_for_element("#fleet-view").await;
    browser
        .execute(
            "const Real = window.WebSocket;
             window.RealWebSocket = Real;
             window.WebSocket = function (url) {
               const held = { close() { if (held.real) held.real.close(); } };
               window.releaseSocket = () => {
                 const real = new Real(url);
                 held.real = real;
                 for (const event of ['onopen', 'onmessage', 'onclose']) {
                   real[event] = (e) => held[event] && held[event](e);
                 }
                 window.WebSocket = Real;
               };
               return held;
             };",
            vec![],
        )
        .await
        .expect("hold the page's socket");
    go_to(browser, &format!("#/host/{}?range=1h", web.name)).await;
    let points = wait_for(
        browser,
        "the hour's cpu chart, its socket held",
        "const el = document.querySelector('[data-chart=cpu]');
         return el && window.releaseSocket && el.querySelector('canvas') ? {
           points: +el.dataset.points, step: +el.dataset.step } : null;",
    )
    .await;
    let (shown, step) = (
        points["points"].as_u64().expect("points") as usize,
        points["step"].as_f64().expect("step"),
    );
    // In a bucket of its own, after every point shown.
    let start = unix_now();
    while (unix_now() / step).floor() <= (start / step).floor() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cpu = 66.5;
    push_now(server, web, &[(unix_now(), cpu)]).await;
    browser
        .execute("window.releaseSocket();", vec![])
        .await
        .expect("let the socket through");
    let chart = wait_for(
        browser,
        "the sample stored before the socket followed",
        &chart_script("cpu", shown + 1),
    )
    .await;
    assert_eq!(number(&chart["last"]), Some(cpu), "{chart}");
}

/// 20 live samples in the newest point's bucket, one request each, while
/// the cpu chart is hovered: they merge into that point (its average is
/// theirs and the first one's), the charts are the same DOM nodes after
/// as before, the hover read-out stays, and a reload of the range shows
/// the same point the live merge made.
async fn live_samples_merge_in_place(
    browser: &Client,
    server: &TestServer,
    web: &Host,
    first_live: f64,
    first_cpu: f64,
    kept: &Value,
) {
    let plot = browser.wait_for_element("[data-chart=cpu] .u-over").await;
    let hover = mouse([PointerAction::MoveToElement {
        element: plot,
        duration: None,
        x: 60.0,
        y: 0.0,
    }]);
    browser.perform_actions(hover).await.expect("hover");
    let readout_script = r"const r = document.querySelector('[data-chart=cpu] .readout span:not(.key)');
         return r && /\d{2}:\d{2}:\d{2}/.test(r.textContent) ? r.textContent : null;";
    let hovered = wait_for(browser, "the hover read-out", readout_script).await;
    // Every other one without a temperature: that metric's average is over
    // the samples that carried it, as the server computes it.
    let first_temperature = agent_sample(web, first_live, Some(first_cpu))["temperature_celsius"]
        .as_f64()
        .expect("a temperature");
    let (mut cpus, mut temperatures) = (vec![first_cpu], vec![first_temperature]);
    for k in 1..=20 {
        let cpu = 10.0 + f64::from(k);
        cpus.push(cpu);
        let mut sample = json!({"time": first_live + 0.04 * f64::from(k), "cpu_load": cpu});
        if k % 2 == 0 {
            let temperature = 30.0 + f64::from(k);
            temperatures.push(temperature);
            sample["temperature_celsius"] = json!(temperature);
        }
        let stored = server
            .http
            .post(server.url("/api/v1/samples"))
            .bearer_auth(&web.token)
            .json(&[sample])
            .send()
            .await
            .expect("push a sample");
        assert_eq!(stored.status(), 200);
    }
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len() as f64;
    let (expected, expected_temperature) = (mean(&cpus), mean(&temperatures));
    let points = web.samples_last_hour + 1;
    let merged = wait_for(
        browser,
        "the 20 live samples merged into the newest point",
        &format!(
            "const el = document.querySelector('[data-chart=cpu]');
             const temperature = +document.querySelector('[data-chart=temperature]').dataset.lastValue;
             return Math.abs(+el.dataset.lastValue - {expected}) < 1e-9
               && Math.abs(temperature - {expected_temperature}) < 1e-9
               ? {{points: +el.dataset.points,
                   kept: window.keptCanvases.every((c) => c.isConnected)
                     && document.querySelectorAll('.chart canvas').length === window.keptCanvases.length}}
               : null;"
        ),
    )
    .await;
    assert_eq!(merged["points"].as_u64(), Some(points as u64), "{merged}");
    assert_eq!(merged["kept"], true, "no chart rebuilt ({kept} canvases)");
    // Still a hovered point's read-out (its time, not the latest values);
    // the window slides with the clock, so the point under the cursor may
    // be a later one.
    wait_for(browser, "the hover read-out", readout_script).await;
    assert!(hovered.is_string(), "{hovered}");

    // The server's own bucket for that stretch says the same.
    click(browser, "[data-preset=\"1h\"]").await;
    wait_for(
        browser,
        "the reloaded hour with the merged point",
        &format!(
            "const el = document.querySelector('[data-chart=cpu]');
             return !window.keptCanvases[0].isConnected && el.dataset.points === '{points}'
               && Math.abs(+el.dataset.lastValue - {expected}) < 1e-6
               && Math.abs(+document.querySelector('[data-chart=temperature]').dataset.lastValue - {expected_temperature}) < 1e-6
               || null;"
        ),
    )
    .await;
}

/// Dragging across a chart zooms in: the server is asked for that stretch
/// alone. A double-click goes back to the preset.
async fn zoom(browser: &Client, web: &Host) {
    let shown = web.samples_last_hour + 1;
    drag_across_cpu_chart(browser, -120.0, 160.0).await;
    wait_for(
        browser,
        "the zoomed cpu chart",
        &format!(
            "const el = document.querySelector('[data-chart=cpu]');
             const label = document.querySelector('#range-label').textContent;
             return label !== 'Last hour' && el && +el.dataset.points > 0
               && +el.dataset.points < {shown} ? +el.dataset.points : null;"
        ),
    )
    .await;

    // The zoomed chart is a new element.
    let plot = browser.wait_for_element("[data-chart=cpu] .u-over").await;
    let press = || {
        [
            PointerAction::Down {
                button: MOUSE_BUTTON_LEFT,
            },
            PointerAction::Up {
                button: MOUSE_BUTTON_LEFT,
            },
        ]
    };
    let mut double_click = vec![PointerAction::MoveToElement {
        element: plot,
        duration: None,
        x: 0.0,
        y: 0.0,
    }];
    double_click.extend(press());
    double_click.extend(press());
    browser
        .perform_actions(mouse(double_click))
        .await
        .expect("double-click");
    wait_for(
        browser,
        "the preset after a double-click",
        &format!(
            "return document.querySelector('#range-label').textContent === 'Last hour'
               && document.querySelector('[data-chart=cpu]').dataset.points === '{shown}' || null;"
        ),
    )
    .await;
}

/// The day: every chart drawn, for the screenshot with min/max bands where
/// the server answers with rollups.
async fn host_day(browser: &Client, web: &Host, shots: &Screenshots) {
    click(browser, "[data-preset=\"24h\"]").await;
    let day = wait_for(
        browser,
        "the 24 h range",
        &format!(
            "const el = document.querySelector('[data-chart=cpu]');
             return el && +el.dataset.points > {} ? +el.dataset.points : null;",
            web.samples_last_hour + 1
        ),
    )
    .await;
    assert!(day.as_u64().is_some_and(|points| points > 100), "{day}");
    for chart in ["cpu", "memory", "storage", "network", "disk"] {
        let last = wait_for(
            browser,
            &format!("the {chart} chart"),
            &format!(
                "const el = document.querySelector('[data-chart={chart}]');
                 return el && el.querySelector('canvas') && el.dataset.lastValue || null;"
            ),
        )
        .await;
        assert!(number(&last).is_some(), "{chart}: {last}");
    }
    browser
        .set_window_size(1280, 1460)
        .await
        .expect("resize for the host screenshot");
    settle(browser).await;
    shots.take(browser, "host").await;
    browser.set_window_size(1280, 900).await.expect("resize");
    // The day's disk usage, a point per step of the day.
    wait_for(
        browser,
        "the day's disk-usage chart",
        "const el = document.querySelector('#disk-history');
         if (!el || Number(el.dataset.points) < 200) return null;
         document.querySelector('#filesystems').scrollIntoView({block: 'center'});
         return true;",
    )
    .await;
    settle(browser).await;
    shots.take(browser, "host-disks").await;
}

/// The range, a zoom and the time zone live in the URL: a reload (or a
/// shared link) shows the same view; times read in one format, in the
/// zone the toolbar names.
async fn view_in_the_url(browser: &Client) {
    let hash = "return location.hash;";
    let url = wait_for(browser, "the range in the URL", hash).await;
    assert!(
        url.as_str().is_some_and(|url| url.ends_with("?range=24h")),
        "{url}"
    );
    drag_across_cpu_chart(browser, 100.0, 120.0).await;
    // One format: 14:05:09 – 16:40:00, or with dates 2026-12-03 14:05:09 – ...
    let zoomed = wait_for(
        browser,
        "the zoom in the URL",
        r"const label = document.querySelector('#range-label').textContent;
          const format = /^(\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}:\d{2} – (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2}:\d{2}$/;
          return /[?&]from=[0-9.]+&to=[0-9.]+/.test(location.hash) && format.test(label) ? label : null;",
    )
    .await;
    click(browser, "#time-zone").await;
    let zone = wait_for(
        browser,
        "UTC",
        "const b = document.querySelector('#time-zone');
         return b.dataset.zone === 'utc' && /tz=utc/.test(location.hash) ? b.textContent : null;",
    )
    .await;
    assert_eq!(zone, "Time: UTC");
    browser.refresh().await.expect("reload");
    let restored = wait_for(
        browser,
        "the same view after a reload",
        "const b = document.querySelector('#time-zone');
         const el = document.querySelector('[data-chart=cpu]');
         return b && el && el.querySelector('canvas')
           ? {zone: b.dataset.zone, label: document.querySelector('#range-label').textContent,
              hash: location.hash}
           : null;",
    )
    .await;
    assert_eq!(restored["zone"], "utc", "{restored}");
    assert_eq!(restored["label"], zoomed, "{restored}");
    assert!(
        restored["hash"]
            .as_str()
            .is_some_and(|hash| hash.contains("range=24h")),
        "the preset to go back to is kept: {restored}"
    );
    click(browser, "#time-zone").await;
    click(browser, "[data-preset=\"1h\"]").await;
    wait_for(
        browser,
        "local time and the hour again",
        "return document.querySelector('#time-zone').dataset.zone === 'local'
           && location.hash.endsWith('?range=1h') || null;",
    )
    .await;
}

/// An admin labels a host on its page; the fleet shows the labels and
/// filters by them.
async fn labels(browser: &Client) {
    go_to(browser, "#/host/web-1").await;
    type_into(browser, "#labels-input", "prod, web").await;
    click(browser, "#labels-save").await;
    wait_for(
        browser,
        "the labels saved",
        "return document.querySelector('#labels-note').textContent === 'Saved'
           && document.querySelector('#labels-input').value === 'prod web' || null;",
    )
    .await;
    go_to(browser, "#/").await;
    let filtered = wait_for(
        browser,
        "the fleet filtered by a label",
        "const select = document.querySelector('#fleet-label');
         if (!select || select.hidden || ![...select.options].some((o) => o.value === 'prod')) return null;
         if (select.value !== 'prod') {
           select.value = 'prod';
           select.dispatchEvent(new Event('change'));
         }
         const rows = [...document.querySelectorAll('#fleet-table tr[data-client]')];
         return rows.length === 1 ? {name: rows[0].dataset.client,
           labels: [...rows[0].querySelectorAll('.label')].map((l) => l.textContent)} : null;",
    )
    .await;
    assert_eq!(
        filtered,
        json!({"name": "web-1", "labels": ["prod", "web"]}),
        "{filtered}"
    );
    browser
        .execute(
            "const select = document.querySelector('#fleet-label');
             select.value = ''; select.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("any label");
}

/// Drags across the cpu chart from `x` (pixels from its middle) for
/// `width` pixels, as a user zooms in.
async fn drag_across_cpu_chart(browser: &Client, x: f64, width: f64) {
    let plot = browser.wait_for_element("[data-chart=cpu] .u-over").await;
    let drag = mouse([
        PointerAction::MoveToElement {
            element: plot,
            duration: None,
            x,
            y: 0.0,
        },
        PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        },
        PointerAction::MoveBy {
            duration: Some(Duration::from_millis(300)),
            x: width,
            y: 0.0,
        },
        PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        },
    ]);
    browser.perform_actions(drag).await.expect("drag");
}

/// A viewer granted no host: the fleet says so (not "run an agent"), and
/// a host page it may not read is a plain message with no controls.
async fn viewer_without_hosts(browser: &Client, database: &TestDatabase) {
    use std::io::Write;
    let mut add = std::process::Command::new(env!("CARGO_BIN_EXE_sysmon-server"))
        .args(["--database-url", &database.url, "user", "add", "watcher"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("sysmon-server user add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"watcher-password\n")
        .expect("the password");
    assert!(add.wait().expect("user add ends").success());
    go_to(browser, "#/").await;
    log_in_as(browser, "watcher", "watcher-password").await;
    let empty = wait_for(
        browser,
        "the empty fleet for a viewer",
        "const el = document.querySelector('#fleet-empty');
         return el && !el.hidden ? el.textContent : null;",
    )
    .await;
    assert!(
        empty
            .as_str()
            .is_some_and(|text| text.contains("No host is shared with you")
                && !text.contains("sysmon-agent")),
        "{empty}"
    );
    go_to(browser, "#/host/web-1").await;
    let page = wait_for(
        browser,
        "the refusal",
        "const el = document.querySelector('#host-unavailable');
         return el ? {text: el.textContent, controls: document.querySelectorAll('#host-view button, #host-view canvas').length} : null;",
    )
    .await;
    assert!(
        page["text"].as_str().is_some_and(
            |text| text.starts_with("You may not see this host") && !text.contains('`')
        ),
        "{page}"
    );
    assert_eq!(page["controls"], 0, "no controls that cannot work: {page}");
    click(browser, "#logout").await;
    browser.wait_for_element("#login-form").await;
}

/// A firing alert everywhere it shows: a badge in the fleet (and the
/// "Alerting" filter), the Alerts page (now, rules, history), the host's
/// header and a threshold line on its chart; and a rule made and deleted
/// in the page.
async fn alerts(browser: &Client, shots: &Screenshots) {
    let badge = wait_for(
        browser,
        "web-1's firing badge in the fleet",
        "const b = document.querySelector('tr[data-client=\"web-1\"] [data-alerts]');
         return b ? {count: b.dataset.alerts, text: b.textContent,
                     nav: document.querySelector('#nav-alerts-count').textContent} : null;",
    )
    .await;
    assert_eq!(badge, json!({"count": "1", "text": "1 firing", "nav": "1"}));
    browser
        .execute(
            "const f = document.querySelector('#fleet-filter');
             f.value = 'alerting'; f.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("filter the alerting hosts");
    let shown = wait_for(
        browser,
        "only the alerting host",
        "const rows = [...document.querySelectorAll('#fleet-table tr[data-client]')];
         return rows.length === 1 ? rows[0].dataset.client : null;",
    )
    .await;
    assert_eq!(shown, "web-1");
    browser
        .execute(
            "const f = document.querySelector('#fleet-filter');
             f.value = 'all'; f.dispatchEvent(new Event('change'));",
            vec![],
        )
        .await
        .expect("show every host again");

    click(browser, "#nav-alerts").await;
    wait_for(
        browser,
        "cpu-high firing on web-1, its rule and its history",
        "return document.querySelector('#alerts-active tr[data-rule=\"cpu-high\"][data-host=\"web-1\"][data-state=firing]')
           && document.querySelector('#alerts-rules tr[data-rule=\"cpu-high\"][data-source=config]')
           && document.querySelector('#alerts-history tr[data-rule=\"cpu-high\"][data-state=firing]') ? true : null;",
    )
    .await;
    // An admin adds a rule in the page: db-1's root (80 %) and web-1's
    // /data (75 %) are over 70 %.
    type_into(browser, "#rule-name", "disk-full").await;
    browser
        .execute(
            "document.querySelector('#rule-metric').value = 'filesystem_used_percent';",
            vec![],
        )
        .await
        .expect("choose the metric");
    type_into(browser, "#rule-threshold", "70").await;
    click(browser, "#rule-save").await;
    wait_for(
        browser,
        "disk-full firing on both agents",
        "return document.querySelectorAll('#alerts-active tr[data-rule=\"disk-full\"][data-state=firing]').length === 2
           && document.querySelector('#alerts-rules tr[data-rule=\"disk-full\"][data-source=api]') ? true : null;",
    )
    .await;
    settle(browser).await;
    shots.take(browser, "alerts").await;
    click(browser, "[data-delete=\"disk-full\"]").await;
    wait_for(
        browser,
        "disk-full deleted",
        "return document.querySelector('#alerts-rules tr[data-rule=\"disk-full\"]') ? null : true;",
    )
    .await;

    // The host: a badge, and the threshold on the cpu chart.
    go_to(browser, "#/host/web-1?range=1h").await;
    let host = wait_for(
        browser,
        "the alert on web-1's page",
        "const badge = document.querySelector('#host-alerts [data-rule=\"cpu-high\"]');
         const chart = document.querySelector('[data-chart=cpu]');
         return badge && chart && chart.dataset.thresholds ? {badge: badge.textContent, thresholds: chart.dataset.thresholds} : null;",
    )
    .await;
    assert_eq!(
        host,
        json!({"badge": "cpu-high firing", "thresholds": "40"})
    );
    go_to(browser, "#/").await;
    browser.wait_for_element("#fleet-view").await;
}

/// The server page (the admin sees its link), after a few readings.
async fn server_page(browser: &Client, shots: &Screenshots) {
    click(browser, "#nav-server").await;
    // Hosts counted as the fleet counts them.
    let hosts = wait_for(
        browser,
        "the server's cards",
        "const el = document.querySelector('[data-field=clients] .value');
         if (!el || !/ of /.test(el.textContent)) return null;
         return fetch('/api/v1/clients').then((r) => r.json()).then((fleet) => {
           const online = fleet.clients.filter((c) => c.online).length;
           // A host may just have gone offline between the two reads: ask again.
           return el.textContent === `${online} of ${fleet.clients.length}`
             ? {shown: el.textContent, total: fleet.clients.length, online} : null;
         });",
    )
    .await;
    assert_eq!(hosts["total"], 3, "{hosts}");
    assert_eq!(
        hosts["shown"].as_str(),
        Some(format!("{} of 3", hosts["online"]).as_str()),
        "{hosts}"
    );
    // The charts open with the server's own readings (one a second since
    // it started), not empty.
    let points = wait_for(
        browser,
        "the server's stored readings",
        "const el = document.querySelector('[data-chart=server-cpu]');
         return el && +el.dataset.points >= 5 ? +el.dataset.points : null;",
    )
    .await;
    assert!(
        points.as_u64().is_some_and(|points| points >= 5),
        "{points}"
    );
    // Its charts gain a point every 2 s: a few more for the screenshot.
    let readings = if shots.kept() { 15 } else { 3 };
    tokio::time::sleep(Duration::from_secs(readings)).await;
    shots.take(browser, "server").await;
}

/// A host silent for hours: its page connects for live samples, but says
/// offline and does not light "Live", whose title says why.
async fn silent_host(browser: &Client, legacy: &Host) {
    assert!(!legacy.online);
    go_to(browser, &format!("#/host/{}", legacy.name)).await;
    let header = wait_for(
        browser,
        "the silent host's header",
        "const live = document.querySelector('#live');
         const seen = document.querySelector('#host-view .view-head');
         return live && /Connected/.test(live.title)
           ? {lit: live.classList.contains('on'), seen: seen.textContent} : null;",
    )
    .await;
    assert_eq!(header["lit"], false, "{header}");
    // The original API's client sends no network or disk figures: no
    // panels for them, while the cpu chart is there.
    let panels = wait_for(
        browser,
        "the silent host's panels",
        "const charts = [...document.querySelectorAll('[data-chart]')].map((el) => el.dataset.chart);
         return charts.includes('cpu') ? charts : null;",
    )
    .await;
    let disks = browser
        .execute(
            "return document.querySelector('#filesystems').hidden;",
            vec![],
        )
        .await
        .expect("the file systems card");
    assert_eq!(disks, json!(true), "no file systems reported, no card");
    for missing in ["network", "disk", "swap", "load"] {
        assert!(
            !panels.as_array().unwrap().contains(&json!(missing)),
            "{missing}: {panels}"
        );
    }
    assert!(
        header["seen"]
            .as_str()
            .is_some_and(|text| text.contains("offline · last seen 3 h ago")),
        "{header}"
    );
}

/// The theme button cycles system → light → dark → system; dark repaints
/// the page and its charts, and a reload keeps the choice.
async fn theme_toggle(browser: &Client) {
    let theme = "const b = document.querySelector('#theme');
         return b ? {chosen: b.dataset.theme, applied: document.documentElement.dataset.theme,
                     background: getComputedStyle(document.body).backgroundColor,
                     charts: document.querySelectorAll('.chart canvas').length} : null;";
    let start = wait_for(browser, "the theme button", theme).await;
    assert_eq!(start["chosen"], "system", "{start}");
    assert_eq!(
        start["applied"], "light",
        "headless Chromium's system theme: {start}"
    );
    click(browser, "#theme").await;
    click(browser, "#theme").await;
    let dark = wait_for(
        browser,
        "the dark theme",
        &format!(
            "const t = (() => {{ {theme} }})();
             return t && t.applied === 'dark' && t.charts > 0 ? t : null;"
        ),
    )
    .await;
    assert_eq!(dark["chosen"], "dark", "{dark}");
    assert_eq!(dark["background"], "rgb(13, 17, 23)", "{dark}");
    browser.refresh().await.expect("reload");
    let reloaded = wait_for(
        browser,
        "the dark theme after a reload",
        &format!("const t = (() => {{ {theme} }})(); return t && t.charts > 0 ? t : null;"),
    )
    .await;
    assert_eq!(
        (&reloaded["chosen"], &reloaded["applied"]),
        (&json!("dark"), &json!("dark")),
        "{reloaded}"
    );
    click(browser, "#theme").await;
    let system = wait_for(browser, "the system theme again", theme).await;
    assert_eq!(
        (&system["chosen"], &system["applied"]),
        (&json!("system"), &json!("light")),
        "{system}"
    );
}

/// On a phone the fleet table and a host page fit the screen's width.
async fn phone_layout(phone: &Client, server: &TestServer, web: &Host, shots: &Screenshots) {
    phone
        .goto(&server.url("/"))
        .await
        .expect("open / on a phone");
    log_in(phone).await;
    let layout = wait_for(
        phone,
        "the fleet table on a phone",
        "const table = document.querySelector('#fleet-table');
         if (!table || table.querySelectorAll('tr[data-client]').length !== 3) return null;
         return {width: window.innerWidth, table: table.getBoundingClientRect().width,
                 page: document.documentElement.scrollWidth};",
    )
    .await;
    let width = f64::from(PHONE.width());
    assert_eq!(layout["width"].as_f64(), Some(width), "{layout}");
    let fits = |key: &str| layout[key].as_f64().is_some_and(|w| w <= width);
    assert!(
        fits("table") && fits("page"),
        "no sideways scrolling: {layout}"
    );
    let table = phone
        .find(Locator::Css("#fleet-table"))
        .await
        .expect("table");
    assert!(table.is_displayed().await.expect("displayed"));
    shots.take(phone, "fleet-phone").await;

    click(phone, &format!("tr[data-client=\"{}\"] a", web.name)).await;
    wait_for(
        phone,
        "the cpu chart on a phone",
        "const el = document.querySelector('[data-chart=cpu] canvas');
         return el && document.documentElement.scrollWidth <= window.innerWidth ? true : null;",
    )
    .await;
    settle(phone).await;
    shots.take(phone, "host-phone").await;
}

// ---------------------------------------------------------------- data

/// A seeded host and what the page must show for it.
struct Host {
    name: &'static str,
    token: String,
    online: bool,
    last_cpu: f64,
    samples_last_hour: usize,
    /// The newest seeded sample's time, unix seconds.
    last_time: f64,
    /// Where the seeded day begins, unix seconds.
    day_start: f64,
    profile: Profile,
}

#[derive(Clone, Copy)]
struct Profile {
    seed: u64,
    /// An agent sends every metric; the original client only cpu, mem and
    /// storage.
    agent: bool,
    cpu_base: f64,
    cpu_swing: f64,
    memory_total_bytes: u64,
    memory_base: f64,
    storage_mb: f64,
    network_mib: f64,
}

/// Three hosts: two agents reporting every 20 s for a day and up to now,
/// and an original client that stopped three hours ago.
async fn seed(server: &TestServer) -> Vec<Host> {
    let now = unix_now();
    let profiles = [
        (
            "web-1",
            true,
            42.5,
            Profile {
                seed: 1,
                agent: true,
                cpu_base: 22.0,
                cpu_swing: 30.0,
                memory_total_bytes: 16 << 30,
                memory_base: 0.45,
                storage_mb: 95_000.0,
                network_mib: 6.0,
            },
        ),
        (
            "db-1",
            true,
            17.25,
            Profile {
                seed: 2,
                agent: true,
                cpu_base: 12.0,
                cpu_swing: 14.0,
                memory_total_bytes: 64 << 30,
                memory_base: 0.7,
                storage_mb: 410_000.0,
                network_mib: 2.0,
            },
        ),
        (
            "legacy-box",
            false,
            8.5,
            Profile {
                seed: 3,
                agent: false,
                cpu_base: 6.0,
                cpu_swing: 8.0,
                memory_total_bytes: 0,
                memory_base: 0.0,
                storage_mb: 21_000.0,
                network_mib: 0.0,
            },
        ),
    ];
    let mut hosts = Vec::new();
    for (name, online, last_cpu, profile) in profiles {
        let token = server.register(name, "seed-password").await;
        let mut host = Host {
            name,
            token,
            online,
            last_cpu,
            samples_last_hour: 0,
            last_time: 0.0,
            day_start: now - 86400.0,
            profile,
        };
        // Newest first, so the first carries the known last cpu load. No
        // samples lie within 100 s either side of "an hour ago", so the
        // page's last hour holds the same ones however long the test takes
        // to get there (up to 100 s).
        let last = if online {
            now - 2.0
        } else {
            now - 3.0 * 3600.0
        };
        let times: Vec<f64> = (0..)
            .map(|k| last - 20.0 * f64::from(k))
            .take_while(|&t| t > host.day_start)
            .filter(|&t| (t - (now - 3600.0)).abs() > 100.0)
            .collect();
        host.samples_last_hour = times.iter().filter(|&&t| t > now - 3600.0).count();
        host.last_time = times[0].floor();
        let samples: Vec<Value> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| agent_sample(&host, t.floor(), (i == 0).then_some(last_cpu)))
            .collect();
        let response = server
            .http
            .post(server.url("/api/v1/samples"))
            .bearer_auth(&host.token)
            .json(&samples)
            .send()
            .await
            .expect("seed request");
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        hosts.push(host);
    }
    hosts
}

/// A plausible sample: a daily rhythm, slower and faster swings, a little
/// noise and the rare spike; the same on every run.
fn agent_sample(host: &Host, t: f64, cpu: Option<f64>) -> Value {
    let p = host.profile;
    let seed = p.seed as f64;
    let day = (t / 86400.0 * std::f64::consts::TAU + seed).sin();
    let slow = (t / 5400.0 + seed * 1.7).sin();
    let swing = 0.6 * (t / 1300.0 + seed * 2.3).sin() + 0.4 * (t / 370.0 + seed).sin();
    let jitter = noise(p.seed, t as u64) - 0.5;
    let spike = if noise(p.seed + 100, t as u64) > 0.985 {
        40.0
    } else {
        0.0
    };
    let cpu = cpu.unwrap_or_else(|| {
        (p.cpu_base
            + p.cpu_swing * (0.5 + 0.5 * day)
            + 5.0 * slow
            + 4.0 * swing
            + 6.0 * jitter
            + spike)
            .clamp(0.5, 99.0)
    });
    let cpu = (cpu * 100.0).round() / 100.0;
    // Disks fill up over the day, a few hundred MB.
    let storage = (p.storage_mb + 600.0 * (t - host.day_start) / 86400.0 + 20.0 * slow).round();
    if !p.agent {
        return json!({"time": t, "cpu_load": cpu, "mem": (3000.0 + 900.0 * day).round(), "storage": storage});
    }
    let total = p.memory_total_bytes as f64;
    let used = total * (p.memory_base + 0.12 * day + 0.04 * slow + 0.01 * swing).clamp(0.05, 0.95);
    let mib = 1024.0 * 1024.0;
    let rx = p.network_mib * mib * (0.55 + 0.35 * day + 0.1 * swing + 0.2 * jitter).max(0.02);
    let tx = 0.35 * rx * (1.0 + 0.3 * slow);
    json!({
        "time": t,
        "cpu_load": cpu,
        "mem": (used / mib).round(),
        "storage": storage,
        "load_average_1m": ((cpu / 25.0) * 100.0).round() / 100.0,
        "memory_used_bytes": used as u64,
        "memory_total_bytes": p.memory_total_bytes,
        "swap_used_bytes": (total * (0.01 + 0.002 * slow)) as u64,
        "disk_read_bytes_per_second": (mib * (0.4 + 0.2 * slow + 0.15 * swing + 0.3 * jitter)).max(0.0).round(),
        "disk_write_bytes_per_second": (mib * (1.2 + 0.8 * day + 0.3 * swing + 0.4 * jitter)).max(0.0).round(),
        "network_receive_bytes_per_second": rx.round(),
        "network_transmit_bytes_per_second": tx.round(),
        "temperature_celsius": (45.0 + cpu / 5.0 + 2.0 * slow).round(),
        // Booted a day before the seeded day began.
        "uptime_seconds": (t - host.day_start + 86_400.0) as u64,
        "filesystems": [
            {"mount_point": "/", "used_bytes": (storage * mib) as u64, "total_bytes": 500u64 << 30},
            {"mount_point": "/data", "used_bytes": 3u64 << 40, "total_bytes": 4u64 << 40},
        ],
    })
}

/// Deterministic noise in 0..1 (splitmix64 of seed and time).
fn noise(seed: u64, t: u64) -> f64 {
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ t;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

// ------------------------------------------------------------- browser

/// Reads a chart's attributes once it has `points` points.
fn chart_script(chart: &str, points: usize) -> String {
    format!(
        "const el = document.querySelector('[data-chart={chart}]');
         if (!el || el.dataset.points !== '{points}') return null;
         return {{metric: el.dataset.metric, points: el.dataset.points,
                 last: el.dataset.lastValue, canvas: !!el.querySelector('canvas')}};"
    )
}

/// A number the page wrote as text into an attribute.
fn number(value: &Value) -> Option<f64> {
    value.as_str().and_then(|text| text.parse().ok())
}

/// Opens a dashboard route in the page, as a link would.
async fn go_to(browser: &Client, hash: &str) {
    browser
        .execute("location.hash = arguments[0]", vec![json!(hash)])
        .await
        .expect("change the page's address");
}

async fn log_in(browser: &Client) {
    log_in_as(browser, "admin", ADMIN_PASSWORD).await;
    browser.wait_for_element("#fleet-view").await;
}

/// Logs in through the form; returns once the page shows its first view.
async fn log_in_as(browser: &Client, user: &str, password: &str) {
    type_into(browser, "#login-username", user).await;
    type_into(browser, "#login-password", password).await;
    click(browser, "#login-submit").await;
    browser.wait_for_element("#topbar:not([hidden])").await;
}
