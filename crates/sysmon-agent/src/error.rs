//! The one error type of the agent's library part.
//!
//! Sending errors are classified by what the sender must do next: drop the
//! samples named ([`Error::Rejected`]), wait and retry
//! ([`Error::Unavailable`]), stop until re-enrolled
//! ([`Error::Unauthorized`]), and so on.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is missing or invalid; the message names it.
    #[error("{0}")]
    Config(String),

    /// A file or directory could not be used.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    /// The server refused the token or the password.
    #[error("{0}")]
    Unauthorized(String),

    /// The server refused part of a batch as malformed (`400`). `index` is
    /// the refused sample's position in the batch, when the server named it.
    #[error("the server refused {}: {message}", match index { Some(i) => format!("sample {i} of the batch"), None => "the batch".to_owned() })]
    Rejected {
        index: Option<usize>,
        message: String,
    },

    /// The batch is larger than the server takes in one request (`413`).
    #[error("the batch is too large for the server: {0}")]
    TooLarge(String),

    /// Not stored this time; send again later (connection failed, `5xx`,
    /// `503` overload). `retry_after` is the server's `Retry-After`.
    #[error("{reason}")]
    Unavailable {
        reason: String,
        retry_after: Option<Duration>,
    },

    /// The server answers but does not offer the route or message (an
    /// older server); retried slowly.
    #[error("the server does not offer {0}; upgrade the server or choose the other transport")]
    Unsupported(String),

    /// Enrollment was refused for a reason other than the password (for
    /// example a password of unsupported length).
    #[error("the server refused the enrollment: {0}")]
    Enrollment(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn unavailable(reason: impl Into<String>) -> Error {
        Error::Unavailable {
            reason: reason.into(),
            retry_after: None,
        }
    }
}
