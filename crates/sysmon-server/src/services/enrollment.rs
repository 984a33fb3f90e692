//! Enrolment tokens: with `registration.mode: token`, a new client may
//! register only by presenting one (`enroll_token` beside its name and
//! password; the agent's `--enroll-token`). An admin creates them, for one
//! host or many (`uses`), for a while or for good, and may revoke them; the
//! secret is shown once, at creation, and kept only as a SHA-256 hash.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sysmon_core::UnixTime;

use crate::error::{Error, Result};
use crate::store::{EnrollmentToken, NewEnrollmentToken, Store};

/// Marks the secret as an enrolment token where it is pasted, so it is not
/// mistaken for a client's token.
const PREFIX: &str = "enroll_";

/// The longest note an admin may attach.
const MAX_NOTE_CHARS: usize = 200;

/// What an admin asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRequest {
    /// Free text: what the token is for.
    pub note: String,
    /// Days it stays valid; `None`: until revoked.
    pub valid_days: Option<f64>,
    /// Registrations it allows; `None`: any number.
    pub uses: Option<u32>,
}

/// A token just created: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedToken {
    pub id: i64,
    pub secret: String,
}

pub struct Enrollment {
    store: Arc<dyn Store>,
}

impl Enrollment {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn create(&self, request: TokenRequest) -> Result<CreatedToken> {
        if request.note.chars().count() > MAX_NOTE_CHARS
            || request.note.chars().any(char::is_control)
        {
            return Err(Error::BadRequest(format!(
                "`note` must be at most {MAX_NOTE_CHARS} printable characters"
            )));
        }
        if request.uses == Some(0) {
            return Err(Error::BadRequest(
                "`uses` must be at least 1 (or none: any number)".into(),
            ));
        }
        let expires_at_us = match request.valid_days {
            Some(days) => {
                let valid_for = Duration::try_from_secs_f64(days * 86_400.0)
                    .ok()
                    .and_then(|valid_for| i64::try_from(valid_for.as_micros()).ok())
                    .filter(|micros| *micros > 0)
                    .ok_or_else(|| {
                        Error::BadRequest("`valid_days` must be a positive number of days".into())
                    })?;
                Some(UnixTime::now().micros().saturating_add(valid_for))
            }
            None => None,
        };
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let new = NewEnrollmentToken {
            note: request.note,
            expires_at_us,
            uses: request.uses.map(i64::from),
        };
        let id = self
            .store
            .create_enrollment_token(&hash(&secret), &new)
            .await?;
        tracing::warn!(id, note = new.note, uses = ?new.uses, "enrolment token created");
        Ok(CreatedToken { id, secret })
    }

    pub async fn list(&self) -> Result<Vec<EnrollmentToken>> {
        self.store.enrollment_tokens().await
    }

    pub async fn revoke(&self, id: i64) -> Result<()> {
        match self.store.revoke_enrollment_token(id).await? {
            true => {
                tracing::warn!(id, "enrolment token revoked");
                Ok(())
            }
            false => Err(Error::NotFoundNamed(format!("no enrolment token {id}"))),
        }
    }

    /// Takes one use of the token; false when it is unknown, expired, used
    /// up or revoked.
    pub async fn redeem(&self, secret: &str) -> Result<bool> {
        self.store
            .redeem_enrollment_token(&hash(secret.trim()), UnixTime::now().micros())
            .await
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
