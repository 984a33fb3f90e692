//! Fleet tokens: protocols that carry many hosts in one request
//! (Prometheus remote write, InfluxDB line protocol) push with one. An
//! admin creates it (CLI or API) for any host or for hosts whose names
//! match a pattern, and says whether a push for a host not seen before
//! creates it. The secret is shown once, at creation, and kept only as a
//! SHA-256 hash; revoking one is refused by every server within a second
//! (it bumps the auth epoch).

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::host_pattern;
use crate::error::{Error, Result};
use crate::store::{FleetToken, Store};

/// Marks the secret as a fleet token where it is pasted.
const PREFIX: &str = "fleet_";

/// The longest note an admin may attach.
const MAX_NOTE_CHARS: usize = 200;

/// What an admin asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetTokenRequest {
    /// Free text: what the token is for.
    pub note: String,
    /// `*` (any host) or a pattern with `*` and `?`.
    pub hosts: String,
    /// Whether a push for a host not seen before creates it.
    pub create_hosts: bool,
}

/// A token just created: the only time its secret is seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedFleetToken {
    pub id: i64,
    pub secret: String,
}

pub struct FleetTokens {
    store: Arc<dyn Store>,
}

impl FleetTokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    pub async fn create(&self, request: FleetTokenRequest) -> Result<CreatedFleetToken> {
        if request.note.chars().count() > MAX_NOTE_CHARS
            || request.note.chars().any(char::is_control)
        {
            return Err(Error::BadRequest(format!(
                "`note` must be at most {MAX_NOTE_CHARS} printable characters"
            )));
        }
        host_pattern::check(&request.hosts)
            .map_err(|message| Error::BadRequest(format!("`hosts`: {message}")))?;
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let id = self
            .store
            .create_fleet_token(
                &hash(&secret),
                &request.note,
                &request.hosts,
                request.create_hosts,
            )
            .await?;
        tracing::warn!(
            id,
            note = request.note,
            hosts = request.hosts,
            create_hosts = request.create_hosts,
            "fleet token created"
        );
        Ok(CreatedFleetToken { id, secret })
    }

    pub async fn list(&self) -> Result<Vec<FleetToken>> {
        self.store.fleet_tokens().await
    }

    pub async fn revoke(&self, id: i64) -> Result<()> {
        match self.store.revoke_fleet_token(id).await? {
            true => {
                tracing::warn!(id, "fleet token revoked");
                Ok(())
            }
            false => Err(Error::NotFoundNamed(format!("no fleet token {id}"))),
        }
    }

    /// The fleet token of this secret; read from the store each time, so
    /// a revocation holds at once (pushes of many hosts come seconds apart,
    /// not thousands a second).
    pub async fn find(&self, secret: &str) -> Result<Option<FleetToken>> {
        if !secret.starts_with(PREFIX) {
            return Ok(None);
        }
        self.store.fleet_token(&hash(secret)).await
    }
}

impl FleetToken {
    /// Whether the host of that name is one of its hosts: it may push
    /// for it, and read its newest values from `/metrics/fleet`.
    pub fn covers(&self, host: &str) -> bool {
        host_pattern::matches(&self.hosts, host)
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
