//! The server's one error type, and its one mapping to HTTP and WebSocket
//! replies. Internal causes are logged here and never shown to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sysmon_core::SampleError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- the client's fault; the texts are part of the wire contract ---
    #[error("authorization error")]
    Unauthorized,
    #[error("unsupportable username")]
    UnsupportableUsername,
    #[error("log is empty")]
    LogEmpty,
    #[error("value error")]
    ValueError,
    #[error(transparent)]
    InvalidSample(#[from] SampleError),
    #[error(transparent)]
    InvalidBatch(#[from] sysmon_core::v1::BatchError),
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is too large: the limit is 1 MiB (16 MiB for /api/v1/samples)")]
    PayloadTooLarge,
    #[error("no such route; docs/api.md lists them")]
    NotFound,
    #[error("not logged in: send the session cookie or `Authorization: Bearer TOKEN` (POST /api/v1/session gives one)")]
    NotLoggedIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFoundNamed(String),

    // --- the server cannot take the request now; the client should retry ---
    #[error("the server is busy storing earlier samples; retry shortly")]
    Overloaded,
    #[error("the server is shutting down; retry shortly")]
    ShuttingDown,
    #[error("the store could not save the data; retry shortly")]
    StoreUnavailable,

    // --- the server's fault or its setup's ---
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database (chart reader): {0}")]
    ChartReader(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthorized | Error::UnsupportableUsername | Error::NotLoggedIn => {
                StatusCode::UNAUTHORIZED
            }
            Error::LogEmpty => StatusCode::NOT_ACCEPTABLE,
            Error::ValueError
            | Error::InvalidSample(_)
            | Error::InvalidBatch(_)
            | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound | Error::NotFoundNamed(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Overloaded | Error::ShuttingDown | Error::StoreUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Database(error) if is_transient(error) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_)
            | Error::Database(_)
            | Error::ChartReader(_)
            | Error::Migration(_)
            | Error::Io { .. }
            | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text a client sees, over HTTP (`{"error": ...}`) or in a
    /// WebSocket ERROR's `reason`.
    pub fn client_message(&self) -> String {
        match self.status() {
            StatusCode::SERVICE_UNAVAILABLE if matches!(self, Error::Database(_)) => {
                tracing::warn!(error = %self, "database unavailable");
                Error::StoreUnavailable.to_string()
            }
            status if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE => {
                tracing::error!(error = %self, "request failed");
                "internal server error".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

/// Errors that say the database is out of reach for now, not that the
/// request or the server is wrong: the client should retry.
fn is_transient(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::WorkerCrashed
    )
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, Json(json!({"error": self.client_message()}))).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
