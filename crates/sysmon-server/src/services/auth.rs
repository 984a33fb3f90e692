//! Registration, login and token checks.
//!
//! Passwords are kept as argon2id hashes. A login issues a fresh random
//! token (256 bits) that is stored only as its SHA-256; earlier tokens stay
//! valid. Token checks are on every sample, so known tokens are cached.
//! Hashing itself runs in [`super::passwords`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::passwords::Passwords;
use crate::error::{Error, Result};
use crate::store::{Store, TokenOwner};

const MAX_USERNAME_CHARS: usize = 64;
const MAX_PASSWORD_BYTES: usize = 1024;

type TokenHash = [u8; 32];

/// What a successful `POST /client` did.
#[derive(Debug, Clone)]
pub struct Login {
    /// True when this call created the client.
    pub registered: bool,
    pub token: String,
}

pub struct Auth {
    store: Arc<dyn Store>,
    passwords: Passwords,
    // Tokens are never revoked, so a positive entry never goes stale.
    known_tokens: RwLock<HashMap<TokenHash, TokenOwner>>,
}

impl Auth {
    pub fn new(store: Arc<dyn Store>) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            store,
            passwords: Passwords::start(cores)?,
            known_tokens: RwLock::new(HashMap::new()),
        })
    }

    /// Registers `username`, or logs it in when it exists; either way
    /// returns a new token.
    pub async fn register_or_login(&self, username: &str, password: &str) -> Result<Login> {
        validate_username(username)?;
        if let Some(client) = self.store.find_client(username).await? {
            return self.login(client.id, &client.password_hash, password).await;
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::BadRequest(format!(
                "a new user needs a password (`pass`) of 1 to {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        let hash = self.passwords.hash(password.to_owned()).await?;
        match self.store.create_client(username, &hash).await? {
            Some(id) => Ok(Login {
                registered: true,
                token: self.issue_token(id).await?,
            }),
            // Someone registered the same name a moment ago: log in instead.
            None => {
                let client =
                    self.store.find_client(username).await?.ok_or_else(|| {
                        Error::Internal("client vanished after registration".into())
                    })?;
                self.login(client.id, &client.password_hash, password).await
            }
        }
    }

    async fn login(
        &self,
        client: crate::store::ClientId,
        stored_hash: &str,
        password: &str,
    ) -> Result<Login> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::Unauthorized);
        }
        let verified = self
            .passwords
            .verify(stored_hash.to_owned(), password.to_owned())
            .await?;
        if !verified {
            return Err(Error::Unauthorized);
        }
        Ok(Login {
            registered: false,
            token: self.issue_token(client).await?,
        })
    }

    async fn issue_token(&self, client: crate::store::ClientId) -> Result<String> {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let token = URL_SAFE_NO_PAD.encode(secret);
        self.store.add_token(client, &hash_token(&token)).await?;
        Ok(token)
    }

    /// The client a token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<TokenOwner> {
        let hash = hash_token(token);
        if let Some(owner) = self.read_cache().get(&hash) {
            return Ok(owner.clone());
        }
        let owner = self
            .store
            .token_owner(&hash)
            .await?
            .ok_or(Error::Unauthorized)?;
        self.known_tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(hash, owner.clone());
        Ok(owner)
    }

    /// Checks an `Authorization` header (`TOKEN` or `Bearer TOKEN`) against
    /// the user named in the URL.
    pub async fn authorize(&self, header: Option<&str>, username: &str) -> Result<TokenOwner> {
        let owner = self.authenticate_header(header).await?;
        if owner.name == username {
            Ok(owner)
        } else {
            Err(Error::Unauthorized)
        }
    }

    /// The client an `Authorization` header's token belongs to.
    pub async fn authenticate_header(&self, header: Option<&str>) -> Result<TokenOwner> {
        let token = header.map(strip_bearer).ok_or(Error::Unauthorized)?;
        self.authenticate(token).await
    }

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TokenHash, TokenOwner>> {
        self.known_tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Usernames must start with a letter (the original's rule) and be short
/// and printable, since they appear in URLs and logs.
pub fn validate_username(username: &str) -> Result<()> {
    let starts_with_letter = username.chars().next().is_some_and(char::is_alphabetic);
    let printable = !username.chars().any(char::is_control);
    if starts_with_letter && printable && username.chars().count() <= MAX_USERNAME_CHARS {
        Ok(())
    } else {
        Err(Error::UnsupportableUsername)
    }
}

fn strip_bearer(header: &str) -> &str {
    let header = header.trim();
    match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => header,
    }
}

fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_the_original_rule() {
        assert!(validate_username("wood").is_ok());
        assert!(validate_username("Émile;drop").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("1abc").is_err());
        assert!(validate_username("'quoted").is_err());
        assert!(validate_username("bad\nname").is_err());
        assert!(validate_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn bearer_prefix_is_optional() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc "), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
    }
}
