//! The one test harness of the workspace's integration tests: the server's,
//! the agent's and the load generator's tests all build on it.
//!
//! - [`TestDatabase`]: a fresh, empty database for every test, on either
//!   store, with a temporary directory for the files of the programs under
//!   test. SQLite gets a new file in that directory. PostgreSQL gets a new
//!   schema in the database named by `SYSMON_TEST_POSTGRES_URL`, dropped
//!   again when the test ends; without that variable PostgreSQL tests are
//!   skipped with a printed reason, except under CI (`CI=true` or `CI=1`),
//!   where a missing or unreachable PostgreSQL fails them.
//! - [`TestServer`]: a sysmon server running in the test's own process on
//!   such a database ([`TestDatabase::start`]), restartable on the same port
//!   ([`TestDatabase::start_on`]) and stopped gracefully
//!   ([`TestServer::shutdown`]), with an HTTP client, the original API's
//!   registration and report and the v1 read-back, which several crates'
//!   tests call.
//! - [`on_both_stores!`]: runs each test once per store, as `sqlite::NAME`
//!   and `postgres::NAME`.
//! - [`ServerProcess`]: the server binary in a child process, for signals,
//!   `kill -9` and exit statuses.
//! - [`poll`]: waits for something that happens in another task or process.
//! - `browser` (with the `browser` feature): headless Chromium driven over
//!   WebDriver by chromedriver, for the dashboard's test; without them that
//!   test is skipped outside CI and fails under CI. A feature because its
//!   WebDriver client is a sizeable build that no other test needs.
//!
//! What only one crate's tests need stays in that crate's `tests/common`,
//! built on these: the server's original-API pushes and WebSocket client;
//! the agent's child process, its outbox and the samples stored from it.
//!
//! A crate uses it as a dev-dependency, `sysmon-testkit.workspace = true`
//! (with `features = ["browser"]` for a browser test), beside `tokio`.

#[cfg(feature = "browser")]
pub mod browser;
mod database;
pub mod process;
pub mod receiver;
mod server;
pub mod smtp;

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use database::{Backend, TestDatabase, POSTGRES_URL_VARIABLE, REPLICA_URL_VARIABLE};
pub use process::ServerProcess;
pub use server::TestServer;

/// Runs each named `async fn(TestDatabase)` once per store, as
/// `sqlite::NAME` and `postgres::NAME`, each on a fresh database and a
/// multi-threaded Tokio runtime. The PostgreSQL ones return at once when
/// [`TestDatabase::create`] skips PostgreSQL.
///
/// The calling crate needs `tokio` among its dev-dependencies: the tests are
/// `#[tokio::test]`s.
///
/// ```no_run
/// use sysmon_testkit::TestDatabase;
///
/// sysmon_testkit::on_both_stores!(starts_and_stops);
///
/// async fn starts_and_stops(database: TestDatabase) {
///     database.start().await.shutdown().await;
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::TestDatabase::sqlite().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let Some(database) =
                        $crate::TestDatabase::create($crate::Backend::Postgres).await
                    else {
                        return;
                    };
                    super::$test(database).await;
                }
            )*
        }
    };
}

/// Whether this runs under CI, where a test must not skip for want of a
/// PostgreSQL server or a browser.
pub fn running_in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// An outside program a test talks to (the `influx` CLI, Prometheus):
/// its path, or `None` (the test skips, saying why) when it is not
/// installed; under CI a missing one fails the test, since `.ci/run`
/// installs it.
pub fn outside_program(name: &str, package: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    match found {
        Some(path) => Some(path),
        None if running_in_ci() => {
            panic!("`{name}` is not installed: .ci/run installs it (`{package}`)")
        }
        None => {
            eprintln!("skipped: `{name}` is not installed ({package})");
            None
        }
    }
}

/// 16 random hex digits, for unique names.
pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since 1970, with the fraction.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Calls `attempt` every `interval` until it gives a value, and returns
/// that; after `timeout` panics naming `what` and the last attempt's error,
/// which should say what was seen instead.
pub async fn poll<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("waited {timeout:?} for {what}; last: {last}")
            }
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}
