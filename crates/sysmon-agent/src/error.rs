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

    /// A worker thread (collector or sender) ended while the agent was
    /// running, by a panic: a bug, or a state a fresh start may not hit.
    #[error("the {0} thread ended unexpectedly; see the log")]
    WorkerDied(&'static str),
}

/// Exit status for what a restart cannot fix: a bad setting, a refused
/// password or token. The systemd unit lists it in
/// `RestartPreventExitStatus`, so the agent does not restart in a loop.
pub const EXIT_NEEDS_OPERATOR: u8 = 2;

/// Exit status for every other failure; the unit's `Restart=on-failure`
/// restarts the agent after it.
pub const EXIT_FAILURE: u8 = 1;

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

    /// The process's exit status when this error ends the agent: the one
    /// place that decides whether systemd restarts it. Only an operator
    /// can fix a bad setting or a refused credential, so those exit
    /// [`EXIT_NEEDS_OPERATOR`]; anything else, a crashed worker thread
    /// above all, may pass on a fresh start and exits [`EXIT_FAILURE`].
    /// Every variant is listed, so a new one has to be decided here.
    pub fn exit_status(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Unauthorized(_) | Error::Enrollment(_) => EXIT_NEEDS_OPERATOR,
            Error::Io { .. }
            | Error::Rejected { .. }
            | Error::TooLarge(_)
            | Error::Unavailable { .. }
            | Error::Unsupported(_)
            | Error::WorkerDied(_) => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_an_operator_must_fix_prevents_a_restart() {
        assert_eq!(Error::WorkerDied("sender").exit_status(), EXIT_FAILURE);
        assert_eq!(
            Error::io("cannot write", std::io::Error::other("disk full")).exit_status(),
            EXIT_FAILURE
        );
        assert_eq!(
            Error::Config("bad".into()).exit_status(),
            EXIT_NEEDS_OPERATOR
        );
        assert_eq!(
            Error::Unauthorized("wrong password".into()).exit_status(),
            EXIT_NEEDS_OPERATOR
        );
    }
}
