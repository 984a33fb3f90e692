//! A real browser for tests: Debian's headless Chromium, driven over
//! WebDriver by chromedriver, through a fantoccini [`Client`].
//!
//! [`BrowserTools::find`] looks for `chromium` and `chromedriver` (or the
//! programs `SYSMON_CHROMIUM` and `SYSMON_CHROMEDRIVER` name); without them
//! a test is skipped with a printed reason, except under CI, where it fails.
//! [`ChromeDriver`] runs the driver and opens browsers at a [`Viewport`];
//! the waits give a page [`WAIT`] to show what a test looks for.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};

use crate::running_in_ci;

/// How long any one thing may take to show up in the page.
pub const WAIT: Duration = Duration::from_secs(10);

/// How often a wait looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The size of the browser's page.
#[derive(Clone, Copy, Debug)]
pub enum Viewport {
    /// A desktop window.
    Window { width: u32, height: u32 },
    /// A phone, emulated: desktop Chromium keeps windows at least 500 px
    /// wide.
    Phone { width: u32, height: u32 },
}

impl Viewport {
    pub fn width(self) -> u32 {
        match self {
            Viewport::Window { width, .. } | Viewport::Phone { width, .. } => width,
        }
    }
}

/// Where the browser and its driver are.
pub struct BrowserTools {
    pub chromium: PathBuf,
    pub chromedriver: PathBuf,
}

impl BrowserTools {
    /// `None` (after printing why) when either is missing outside CI; under
    /// CI that panics instead.
    pub fn find() -> Option<BrowserTools> {
        let chromium = find_program("SYSMON_CHROMIUM", &["chromium", "chromium-browser"]);
        let chromedriver = find_program("SYSMON_CHROMEDRIVER", &["chromedriver"]);
        match (chromium, chromedriver) {
            (Some(chromium), Some(chromedriver)) => Some(BrowserTools {
                chromium,
                chromedriver,
            }),
            _ => {
                let reason = "the browser test needs chromium and chromedriver \
                     (Debian: apt-get install chromium chromium-driver; or set \
                     SYSMON_CHROMIUM and SYSMON_CHROMEDRIVER to their paths)";
                if running_in_ci() {
                    panic!("{reason}: CI must run it");
                }
                eprintln!("skipped: {reason}");
                None
            }
        }
    }
}

/// The program named by `variable`, or the first of `names` on the PATH.
fn find_program(variable: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable).filter(|path| !path.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|candidate| candidate.is_file())
}

/// A chromedriver process on a free loopback port, told to quit (closing
/// its browsers) when dropped.
pub struct ChromeDriver {
    child: Child,
    url: String,
    chromium: PathBuf,
}

impl ChromeDriver {
    /// Starts chromedriver, logging to `log`.
    pub fn start(tools: &BrowserTools, log: &Path) -> ChromeDriver {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&tools.chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", tools.chromedriver.display()));
        ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            chromium: tools.chromium.clone(),
        }
    }

    /// A new headless browser with its own profile, at the given size.
    pub async fn session(&self, viewport: Viewport) -> Client {
        let capabilities = chrome_capabilities(&self.chromium, viewport);
        // chromedriver may take a moment to listen.
        wait("chromedriver to start a browser", || {
            let capabilities = capabilities.clone();
            async move {
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(capabilities)
                    .connect(&self.url)
                    .await
                    .map_err(|e| e.to_string())
            }
        })
        .await
    }

    /// Asks chromedriver to quit, which closes the browsers it started.
    fn request_shutdown(&self) -> std::io::Result<()> {
        let mut stream = TcpStream::connect(self.url.trim_start_matches("http://"))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream
            .write_all(b"GET /shutdown HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply)?;
        Ok(())
    }

    fn exited_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for ChromeDriver {
    /// Killing chromedriver alone would leave its browsers running when a
    /// test fails before closing its sessions: it is asked to quit first,
    /// and killed only if it does not exit in time.
    fn drop(&mut self) {
        if self.request_shutdown().is_ok() && self.exited_within(Duration::from_secs(5)) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium headless; without its sandbox, which Chromium will not use as
/// root (as CI runs); without GPU or background traffic; in US English,
/// because numbers in the page are formatted for the browser's language.
fn chrome_capabilities(chromium: &Path, viewport: Viewport) -> serde_json::Map<String, Value> {
    let mut args = vec![
        "--headless=new".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--disable-background-networking".to_owned(),
        "--lang=en-US".to_owned(),
    ];
    let mut options = json!({"binary": chromium});
    match viewport {
        Viewport::Window { width, height } => {
            args.push(format!("--window-size={width},{height}"));
        }
        Viewport::Phone { width, height } => {
            args.push("--window-size=800,1000".to_owned());
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2, "touch": true}
            });
        }
    }
    options["args"] = json!(args);
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("browserName".into(), json!("chrome"));
    // Console messages, for `console_errors`.
    capabilities.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    capabilities.insert("goog:chromeOptions".into(), options);
    capabilities
}

/// Screenshots of the pages a test visits: into `kept_dir` with
/// `SYSMON_UPDATE_SCREENSHOTS=1`, else into a scratch directory, so a normal
/// run leaves the tree as it was.
pub struct Screenshots {
    dir: PathBuf,
    kept: bool,
}

impl Screenshots {
    pub fn new(kept_dir: PathBuf, scratch_dir: PathBuf) -> Screenshots {
        let kept = std::env::var("SYSMON_UPDATE_SCREENSHOTS").as_deref() == Ok("1");
        let dir = if kept { kept_dir } else { scratch_dir };
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        Screenshots { dir, kept }
    }

    /// Whether these screenshots are kept, so worth a longer wait for a
    /// fuller page.
    pub fn kept(&self) -> bool {
        self.kept
    }

    /// Writes what the browser shows to `NAME.png`.
    pub async fn take(&self, browser: &Client, name: &str) {
        let png = browser.screenshot().await.expect("screenshot");
        let path = self.dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// Polls `script` (a function body) until it returns something other than
/// null, and returns that; panics after [`WAIT`], naming `what`.
pub async fn wait_for(browser: &Client, what: &str, script: &str) -> Value {
    wait(what, || async {
        match browser.execute(script, vec![]).await {
            Ok(Value::Null) => Err("not yet".to_owned()),
            Ok(value) => Ok(value),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// [`crate::poll`] for up to [`WAIT`].
async fn wait<T, F, Fut>(what: &str, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    crate::poll(what, WAIT, POLL_INTERVAL, attempt).await
}

/// Finding an element that may not be in the page yet.
pub trait WaitForElement {
    /// The first element matching `css`, once there is one; panics after
    /// [`WAIT`].
    fn wait_for_element(&self, css: &str) -> impl std::future::Future<Output = Element> + Send;
}

impl WaitForElement for Client {
    async fn wait_for_element(&self, css: &str) -> Element {
        wait(css, || async {
            self.find(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }
}

pub async fn click(browser: &Client, css: &str) {
    browser
        .wait_for_element(css)
        .await
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Replaces the text of the field `css` with `text`.
pub async fn type_into(browser: &Client, css: &str, text: &str) {
    let field = browser.wait_for_element(css).await;
    field.clear().await.expect("clear");
    field.send_keys(text).await.expect("type");
}

/// Lets charts finish drawing after a resize or a load.
pub async fn settle(browser: &Client) {
    tokio::time::sleep(Duration::from_millis(700)).await;
    let _ = browser.execute("return true", vec![]).await;
}

/// One mouse's steps as a single action, for `Client::perform_actions`.
pub fn mouse(steps: impl IntoIterator<Item = PointerAction>) -> MouseActions {
    steps
        .into_iter()
        .fold(MouseActions::new("mouse".into()), |actions, step| {
            actions.then(step)
        })
}

/// chromedriver's own command for the browser's console log (messages
/// since the last read): not in WebDriver itself, so not in fantoccini.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(r#"{"type": "browser"}"#.to_owned()),
        )
    }
}

/// Errors in the browser's console since the last call: exceptions,
/// `console.error`, failed scripts and server errors. A 4xx from the API
/// (a wrong password, a host not granted: the page asked on purpose) is
/// the page working, and left out; a missing asset is not.
pub async fn console_errors(browser: &Client) -> Vec<String> {
    let entries = browser
        .issue_cmd(BrowserLog)
        .await
        .expect("the browser's console log");
    entries
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["level"] == "SEVERE")
        .filter_map(|entry| entry["message"].as_str())
        .filter(|message| {
            !(message.contains("/api/")
                && message.contains("the server responded with a status of 4"))
        })
        .map(str::to_owned)
        .collect()
}
