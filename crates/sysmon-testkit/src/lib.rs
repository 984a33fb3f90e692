//! Test support shared by the workspace's integration tests: a fresh, empty
//! database for every test, on either store, and a server running on it in
//! the test's own process.
//!
//! SQLite gets a new file in a temporary directory. PostgreSQL gets a new
//! schema in the database named by `SYSMON_TEST_POSTGRES_URL`, dropped again
//! when the test ends; without that variable PostgreSQL tests are skipped
//! with a printed reason, except under CI (`CI=true` or `CI=1`), where a
//! missing or unreachable PostgreSQL fails them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use sqlx::Connection;
use tokio::sync::oneshot;

pub const POSTGRES_URL_VARIABLE: &str = "SYSMON_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database and a temporary directory for the files of the
/// programs under test; both removed when dropped.
pub struct FreshDatabase {
    pub backend: Backend,
    /// What the server's `--database-url` should be.
    pub url: String,
    pub dir: tempfile::TempDir,
    postgres_schema: Option<(String, String)>,
}

impl FreshDatabase {
    /// `None` when PostgreSQL is not configured and this is not CI. The
    /// PostgreSQL schema's name starts with `prefix`.
    pub async fn create(backend: Backend, prefix: &str) -> Option<FreshDatabase> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => Some(FreshDatabase {
                backend,
                url: format!("sqlite://{}", dir.path().join("sysmon.db").display()),
                dir,
                postgres_schema: None,
            }),
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let schema = format!("{prefix}_{}", random_hex());
                let mut connection = sqlx::PgConnection::connect(&admin_url)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("cannot connect to {POSTGRES_URL_VARIABLE}={admin_url}: {e}")
                    });
                sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
                    .execute(&mut connection)
                    .await
                    .expect("create test schema");
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                Some(FreshDatabase {
                    backend,
                    url: format!("{admin_url}{separator}options[search_path]={schema}"),
                    dir,
                    postgres_schema: Some((admin_url, schema)),
                })
            }
        }
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.postgres_schema.take() else {
            return;
        };
        // Drop may run inside the test's runtime, which cannot be blocked
        // on: clean up from a thread of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut connection = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                    .execute(&mut connection)
                    .await?;
                Ok::<_, sqlx::Error>(())
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        });
        let _ = cleanup.join();
    }
}

fn postgres_admin_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if running_in_ci() => {
            panic!("{POSTGRES_URL_VARIABLE} is not set: CI must run the PostgreSQL tests")
        }
        _ => {
            eprintln!(
                "skipped: set {POSTGRES_URL_VARIABLE}=postgres://USER@HOST/DB to run the PostgreSQL tests"
            );
            None
        }
    }
}

fn running_in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// 16 random hex digits, for unique names.
pub fn random_hex() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A sysmon server running in this process, on the address its
/// configuration names (`127.0.0.1:0` picks a free port).
pub struct RunningServer {
    pub address: SocketAddr,
    /// `http://ADDRESS`
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<sysmon_server::Result<()>>>,
}

impl RunningServer {
    pub async fn start(config: sysmon_server::Config) -> RunningServer {
        let app = sysmon_server::Application::build(&config)
            .await
            .expect("server starts");
        let address = app.local_addr().expect("bound address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        RunningServer {
            address,
            base: format!("http://{address}"),
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown, as on SIGTERM; returns when the server has
    /// stopped and its port is closed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("server stops within 20 s")
                .expect("server task")
                .expect("server stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
