//! The server's one error type, and its one mapping to HTTP and WebSocket
//! replies. Internal causes are logged here and never shown to clients.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sysmon_core::error_reply::{ErrorCode, ErrorReply};
use sysmon_core::v1::BatchError;
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
    InvalidBatch(#[from] BatchError),
    #[error("sample time {time} is older than raw samples are kept ({keep_days} days, retention.raw_days)")]
    RetentionExpired {
        /// The sample's position in its batch.
        index: usize,
        time: String,
        keep_days: f64,
    },
    #[error("{0}")]
    BadRequest(String),
    /// A foreign protocol's body, or lines of it, could not be read.
    #[error("{0}")]
    InvalidPayload(String),
    /// The database refused a request's samples for what they hold.
    #[error("the database refused these samples: {0}")]
    RefusedByStore(String),
    #[error("request body is too large: the limit here is {}", size_text(*.limit))]
    PayloadTooLarge { limit: usize },
    /// More lines, samples or hosts in one request than it may carry.
    #[error("{0}")]
    TooMuchAtOnce(String),
    /// A body in a format (a version of a protocol) not spoken here.
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no such route; docs/api.md lists them")]
    NotFound,
    #[error("not logged in: send the session cookie or `Authorization: Bearer TOKEN` (POST /api/v1/session gives one)")]
    NotLoggedIn,
    #[error("{0}")]
    Forbidden(String),
    #[error("no client is named `{0}` and this server takes no new clients (registration.mode: closed): an admin adds them with `sysmon-server client add`")]
    RegistrationClosed(String),
    #[error("no client is named `{0}`, and a new one needs a valid enrolment token (`enroll_token`; the agent's --enroll-token) from an admin: this one is missing, unknown, expired or used up")]
    EnrollmentTokenRequired(String),
    #[error("{0}")]
    NotFoundNamed(String),

    // --- the server cannot take the request now; the client should retry ---
    #[error("the server is busy storing earlier samples; retry shortly")]
    Overloaded,
    #[error("the server is shutting down; retry shortly")]
    ShuttingDown,
    #[error("the store could not save the data; retry shortly")]
    StoreUnavailable,
    #[error("the request took longer than the server allows; retry shortly")]
    TimedOut,
    #[error("too many downloads: {0}")]
    DownloadsBusy(String),
    #[error("too many failed logins from this address or for this account; retry in {} s", retry_after_seconds(*.retry_after))]
    TooManyAttempts { retry_after: std::time::Duration },

    // --- the server's fault or its setup's ---
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite through rusqlite (its hot paths: ingest, reports, series).
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An alert channel refused or did not answer a test notification.
    #[error("{0}")]
    ChannelFailed(String),
    #[error("{0}")]
    Internal(String),
    /// A fold found fewer of its journal entries than it folds: another
    /// server folded them, so this fold must not count them again.
    #[error("rollup fold conflict: {found} of its {expected} journal entries were left")]
    FoldConflict { expected: usize, found: usize },
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
            | Error::RetentionExpired { .. }
            | Error::RefusedByStore(_)
            | Error::InvalidPayload(_)
            | Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } | Error::TooMuchAtOnce(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::ChannelFailed(_) => StatusCode::BAD_GATEWAY,
            Error::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::NotFound | Error::NotFoundNamed(_) => StatusCode::NOT_FOUND,
            Error::Forbidden(_)
            | Error::RegistrationClosed(_)
            | Error::EnrollmentTokenRequired(_) => StatusCode::FORBIDDEN,
            Error::Overloaded
            | Error::ShuttingDown
            | Error::StoreUnavailable
            | Error::TimedOut
            | Error::DownloadsBusy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Database(error) if is_transient(error) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Config(_)
            | Error::Database(_)
            | Error::Sqlite(_)
            | Error::Migration(_)
            | Error::Io { .. }
            | Error::Internal(_)
            | Error::FoldConflict { .. } => StatusCode::INTERNAL_SERVER_ERROR,
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
            status
                if status.is_server_error()
                    && status != StatusCode::SERVICE_UNAVAILABLE
                    && !matches!(self, Error::ChannelFailed(_)) =>
            {
                tracing::error!(error = %self, "request failed");
                "internal server error".to_owned()
            }
            _ => self.to_string(),
        }
    }
}

impl Error {
    /// The stable code clients act on.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Unauthorized => ErrorCode::Unauthorized,
            Error::UnsupportableUsername => ErrorCode::InvalidUsername,
            Error::NotLoggedIn => ErrorCode::NotLoggedIn,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::RegistrationClosed(_) | Error::EnrollmentTokenRequired(_) => {
                ErrorCode::RegistrationClosed
            }
            Error::NotFound | Error::NotFoundNamed(_) => ErrorCode::NotFound,
            Error::LogEmpty => ErrorCode::LogEmpty,
            Error::InvalidSample(_) | Error::RefusedByStore(_) => ErrorCode::InvalidSample,
            Error::InvalidBatch(error) => match error {
                BatchError::Malformed { .. } | BatchError::Invalid { .. } => {
                    ErrorCode::InvalidSample
                }
                BatchError::TooLarge => ErrorCode::BatchTooLarge,
                BatchError::NotABatch | BatchError::Empty => ErrorCode::InvalidBatch,
            },
            Error::RetentionExpired { .. } => ErrorCode::RetentionExpired,
            Error::ValueError | Error::BadRequest(_) => ErrorCode::InvalidRequest,
            Error::InvalidPayload(_) | Error::UnsupportedMediaType(_) => ErrorCode::InvalidPayload,
            Error::PayloadTooLarge { .. } | Error::TooMuchAtOnce(_) => ErrorCode::PayloadTooLarge,
            Error::ChannelFailed(_) => ErrorCode::ChannelFailed,
            Error::Overloaded | Error::DownloadsBusy(_) => ErrorCode::Overloaded,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
            Error::StoreUnavailable => ErrorCode::StoreUnavailable,
            Error::TimedOut => ErrorCode::TimedOut,
            Error::TooManyAttempts { .. } => ErrorCode::TooManyAttempts,
            Error::Database(error) if is_transient(error) => ErrorCode::StoreUnavailable,
            Error::Config(_)
            | Error::Database(_)
            | Error::Sqlite(_)
            | Error::Migration(_)
            | Error::Io { .. }
            | Error::Internal(_)
            | Error::FoldConflict { .. } => ErrorCode::Internal,
        }
    }

    /// Seconds the client should wait before it retries, for the errors
    /// that say so.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Error::TooManyAttempts { retry_after } => {
                Some(retry_after_seconds(*retry_after).max(1))
            }
            _ if self.status() == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        }
    }

    /// The sample at fault, for an error about one sample of a batch.
    pub fn index(&self) -> Option<usize> {
        match self {
            Error::InvalidBatch(BatchError::Malformed { index, .. })
            | Error::InvalidBatch(BatchError::Invalid { index, .. })
            | Error::RetentionExpired { index, .. } => Some(*index),
            _ => None,
        }
    }

    /// What a client of the v1 API (or of anything new) is told.
    pub fn reply(&self) -> ErrorReply {
        ErrorReply {
            error: self.client_message(),
            code: Some(self.code()),
            index: self.index(),
        }
    }

    /// What a client of the original API is told: the bodies its contract
    /// fixes (docs/api.md marks them *fixed*) exactly as the original
    /// sent them, without a code; the rest as [`Error::reply`].
    pub fn original_reply(&self) -> ErrorReply {
        let fixed = matches!(
            self,
            Error::Unauthorized
                | Error::UnsupportableUsername
                | Error::LogEmpty
                | Error::ValueError
                | Error::InvalidSample(SampleError::Empty)
        );
        ErrorReply {
            code: (!fixed).then(|| self.code()),
            // The original routes take one sample, so there is no index.
            index: None,
            ..self.reply()
        }
    }
}

impl Error {
    /// The database refused the data itself (a value, a constraint), not
    /// the moment: sending the same rows again can never succeed.
    pub fn is_refused_data(&self) -> bool {
        match self {
            Error::Database(sqlx::Error::Database(error)) => {
                let sqlstate_class = error
                    .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                    .and_then(|error| error.code().get(..2));
                matches!(sqlstate_class, Some("22" | "23"))
                    || matches!(
                        error.kind(),
                        sqlx::error::ErrorKind::UniqueViolation
                            | sqlx::error::ErrorKind::ForeignKeyViolation
                            | sqlx::error::ErrorKind::NotNullViolation
                            | sqlx::error::ErrorKind::CheckViolation
                    )
            }
            Error::Sqlite(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
                failure.code,
                rusqlite::ErrorCode::ConstraintViolation
                    | rusqlite::ErrorCode::TypeMismatch
                    | rusqlite::ErrorCode::TooBig
            ),
            _ => false,
        }
    }
}

/// Errors that say the database is out of reach for now, not that the
/// request or the server is wrong: the client should retry.
/// The database is out of reach or restarting, not refusing the request:
/// the client should retry. PostgreSQL says so with SQLSTATE class 08
/// (connection exception), 57P01-57P03 (shutting down, crashed, starting)
/// and 53300 (too many connections); a connection dropped mid-message
/// shows as a protocol error.
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        respond(self.status(), self.reply(), self.retry_after())
    }
}

/// An error on a route of the original API: answered as
/// [`Error::original_reply`]. Its handlers return `Result<_, OriginalApiError>`
/// and `?` converts.
#[derive(Debug)]
pub struct OriginalApiError(pub Error);

impl From<Error> for OriginalApiError {
    fn from(error: Error) -> Self {
        OriginalApiError(error)
    }
}

impl From<SampleError> for OriginalApiError {
    fn from(error: SampleError) -> Self {
        OriginalApiError(error.into())
    }
}

impl IntoResponse for OriginalApiError {
    fn into_response(self) -> Response {
        respond(
            self.0.status(),
            self.0.original_reply(),
            self.0.retry_after(),
        )
    }
}

fn respond(status: StatusCode, reply: ErrorReply, retry_after: Option<u64>) -> Response {
    let mut response = (status, Json(reply)).into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// `1 MiB`, `64 KiB`: a body limit as people write it.
fn size_text(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}

/// Whole seconds to wait, at least one.
fn retry_after_seconds(wait: std::time::Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}
