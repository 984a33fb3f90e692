//! A database that is restarting or has dropped the connection is a
//! passing condition: the client is told to retry (503 + Retry-After,
//! `store_unavailable`), not that the server failed (500).

use sqlx::{Connection, PgConnection};
use sysmon_core::error_reply::ErrorCode;
use sysmon_server::Error;
use sysmon_testkit::{Backend, TestDatabase};

/// What PostgreSQL tells a session an administrator (or a restart) ends.
#[tokio::test]
async fn a_terminated_postgresql_session_is_retried_not_failed() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let mut victim = PgConnection::connect(&database.url).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .expect("its pid");
    let mut admin = PgConnection::connect(&database.url).await.expect("connect");
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&mut admin)
        .await
        .expect("terminate it");
    assert!(terminated);
    let error = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .expect_err("the session is gone");
    let described = format!("{error:?}");
    let error = Error::Database(error);
    assert_eq!(error.status().as_u16(), 503, "{described}");
    assert_eq!(error.code(), ErrorCode::StoreUnavailable, "{described}");
    assert_eq!(error.retry_after(), Some(1));
}
