//! A fresh, empty database for one test, and the server configuration that
//! runs on it.

use std::net::SocketAddr;
use std::path::PathBuf;

use sqlx::Connection;
use sysmon_server::Config;

use crate::{random_hex, running_in_ci, TestServer};

/// Names the PostgreSQL database the PostgreSQL tests make their schemas in.
pub const POSTGRES_URL_VARIABLE: &str = "SYSMON_TEST_POSTGRES_URL";
/// Names the same database on a streaming replica of that PostgreSQL
/// (`scripts/pg-replica.sh` makes one), for the read replica's tests.
pub const REPLICA_URL_VARIABLE: &str = "SYSMON_TEST_REPLICA_URL";

/// The store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database and a temporary directory for the files of the
/// programs under test (status logs, agents' state, screenshots); both
/// removed when dropped.
pub struct TestDatabase {
    pub backend: Backend,
    /// What the server's `--database-url` should be.
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database the schema lives in, and the schema's name.
    postgres_schema: Option<(String, String)>,
}

impl TestDatabase {
    /// `None`, after printing why, when PostgreSQL is asked for but not
    /// configured outside CI; under CI that panics instead.
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        let dir = tempfile::tempdir().expect("temporary directory");
        match backend {
            Backend::Sqlite => Some(TestDatabase {
                backend,
                url: format!("sqlite://{}", dir.path().join("sysmon.db").display()),
                dir,
                postgres_schema: None,
            }),
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let schema = format!("test_{}", random_hex());
                create_schema(&admin_url, &schema).await;
                let separator = if admin_url.contains('?') { '&' } else { '?' };
                Some(TestDatabase {
                    backend,
                    url: format!("{admin_url}{separator}options[search_path]={schema}"),
                    dir,
                    postgres_schema: Some((admin_url, schema)),
                })
            }
        }
    }

    /// This (PostgreSQL) test database on the streaming replica, schema
    /// included; `None`, after printing why, when no replica is configured
    /// outside CI; under CI that panics instead.
    pub fn replica_url(&self) -> Option<String> {
        let (_, schema) = self.postgres_schema.as_ref()?;
        let replica = match std::env::var(REPLICA_URL_VARIABLE) {
            Ok(url) if !url.is_empty() => url,
            _ if running_in_ci() => {
                panic!("{REPLICA_URL_VARIABLE} is not set: CI must run the read replica tests")
            }
            _ => {
                eprintln!(
                    "skipped: run scripts/pg-replica.sh and set {REPLICA_URL_VARIABLE}=postgres://USER@127.0.0.1:5433/DB"
                );
                return None;
            }
        };
        let separator = if replica.contains('?') { '&' } else { '?' };
        Some(format!("{replica}{separator}options[search_path]={schema}"))
    }

    /// A fresh SQLite database, which needs no setup and so is always there.
    pub async fn sqlite() -> TestDatabase {
        TestDatabase::create(Backend::Sqlite)
            .await
            .expect("SQLite needs no setup")
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the server's status log (its own load, CSV) goes.
    pub fn status_log_path(&self) -> PathBuf {
        self.path("server_system_load.csv")
    }

    /// The default configuration on this database, on a free loopback port,
    /// its status log in the temporary directory.
    pub fn config(&self) -> Config {
        self.config_on("127.0.0.1:0")
    }

    fn config_on(&self, bind: &str) -> Config {
        let mut config = Config {
            bind: bind.into(),
            database_url: self.url.clone(),
            ..Config::default()
        };
        config.status_log.path = self.status_log_path();
        config
    }

    /// Starts a server on this database with the default configuration.
    pub async fn start(&self) -> TestServer {
        TestServer::start(self.config()).await
    }

    /// Starts a server on the given address: a restart on the port an
    /// earlier server had, so clients configured with it find it again.
    pub async fn start_on(&self, address: SocketAddr) -> TestServer {
        TestServer::start(self.config_on(&address.to_string())).await
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some((admin_url, schema)) = self.postgres_schema.take() {
            drop_schema(admin_url, schema);
        }
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

async fn create_schema(admin_url: &str, schema: &str) {
    let mut connection = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VARIABLE}={admin_url}: {e}"));
    sqlx::query(&format!("CREATE SCHEMA \"{schema}\""))
        .execute(&mut connection)
        .await
        .expect("create test schema");
}

/// Best effort: a schema left behind only costs space in a test database.
fn drop_schema(admin_url: String, schema: String) {
    // Drop may run inside the test's runtime, which cannot be blocked on:
    // clean up from a thread of our own.
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
