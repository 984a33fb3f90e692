//! Fleet tokens, for many hosts at once. An admin creates one (CLI or API)
//! for any host or for hosts whose names match a pattern, of one of two
//! kinds:
//!
//! - a **push** token: protocols that carry many hosts in one request
//!   (InfluxDB line protocol) write with it, to hosts push tokens created
//!   only (never to a host that registered itself or an admin added, so a
//!   pattern cannot reach an agent's host, nor a name squatted by a
//!   stranger become a fleet's); it may create hosts not seen before;
//! - an **export** token: Prometheus scrapes `/metrics/fleet` with it, for
//!   every host it covers; it never pushes (it lives in a Prometheus
//!   config, not on every host).
//!
//! The secret is shown once, at creation, and kept only as a SHA-256 hash;
//! revoking one is refused by every server at once (each use reads the
//! store) and bumps the auth epoch.

use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::host_pattern;
use crate::error::{Error, Result};
use crate::store::{FleetToken, NewFleetToken, Store};

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
    /// An export token (reads `/metrics/fleet`) rather than a push token.
    pub export: bool,
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
        if request.export && request.create_hosts {
            return Err(Error::BadRequest(
                "an export token only reads: `create_hosts` is for push tokens".into(),
            ));
        }
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let secret = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let id = self
            .store
            .create_fleet_token(
                &hash(&secret),
                &NewFleetToken {
                    note: request.note.clone(),
                    hosts: request.hosts.clone(),
                    create_hosts: request.create_hosts,
                    export: request.export,
                },
            )
            .await?;
        tracing::warn!(
            id,
            note = request.note,
            hosts = request.hosts,
            create_hosts = request.create_hosts,
            export = request.export,
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
    /// Whether the host of that name is one of its hosts (by name; a push
    /// token writes only hosts push tokens created, see the module).
    pub fn covers(&self, host: &str) -> bool {
        host_pattern::matches(&self.hosts, host)
    }
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}
