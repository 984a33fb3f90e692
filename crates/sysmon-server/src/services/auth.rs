//! Registration, login and token checks.
//!
//! Passwords are kept as argon2id hashes. A login issues a fresh random
//! token (256 bits) that is stored only as its SHA-256; earlier tokens stay
//! valid until revoked. Token checks are on every sample, so known tokens
//! are cached; a revocation, by this process or another on the same
//! database, bumps an epoch every server reads once a second
//! ([`Auth::watch_revocations`]), and a changed epoch empties the cache.
//! Hashing itself runs in [`super::passwords`].
//!
//! The dashboard adds people: dashboard users log in for a session that
//! expires, and a client's own credentials log in too, seeing only that
//! client. Either way a request's token resolves to a [`Principal`], which
//! says what it may read.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::enrollment::Enrollment;
use super::fleet_tokens::FleetTokens;
use super::login_guard::{LoginGuard, LoginLimits};
use super::passwords::Passwords;
use crate::error::{Error, Result};
use crate::store::{DashboardUser, NewDashboardUser, SessionOwner, Store, TokenOwner};

const MAX_USERNAME_CHARS: usize = 64;
/// Labels one client may carry.
pub const MAX_LABELS: usize = 16;
const MAX_PASSWORD_BYTES: usize = 1024;
/// Dashboard passwords are chosen by people; refuse the guessable ones.
pub const MIN_DASHBOARD_PASSWORD_CHARS: usize = 8;
/// The dashboard user created on first start.
pub const FIRST_ADMIN: &str = "admin";

type TokenHash = [u8; 32];

/// A token checked once: whose, and when it was issued (for its lifetime).
#[derive(Debug, Clone)]
struct KnownToken {
    owner: TokenOwner,
    issued_us: i64,
}

/// Tokens kept in memory at most (~100 bytes each).
const MAX_CACHED_TOKENS: usize = 100_000;
/// How often the revocation epoch is read.
const REVOCATION_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What a successful `POST /client` did.
#[derive(Debug, Clone)]
pub struct Login {
    /// True when this call created the client.
    pub registered: bool,
    pub token: String,
}

/// Who may register new clients, and with what passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationConfig {
    pub mode: RegistrationMode,
    /// The shortest password a new client may have (its existing ones
    /// keep logging in whatever their length).
    pub min_password_chars: usize,
    /// How long a client's token stays valid; `None`: until revoked, as
    /// the original server's tokens (and the clients that keep them).
    pub token_lifetime: Option<std::time::Duration>,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Open,
            min_password_chars: 8,
            token_lifetime: None,
        }
    }
}

/// Who may register a new client with `POST /client`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// Anyone who reaches the server, as the original server did.
    #[default]
    Open,
    /// No one: admins add clients (`sysmon-server client add`); existing
    /// clients log in as before.
    Closed,
    /// Those presenting an enrolment token an admin created
    /// ([`super::enrollment`]); existing clients log in as before.
    Token,
}

pub struct Auth {
    store: Arc<dyn Store>,
    registration: RegistrationConfig,
    passwords: Passwords,
    /// Emptied when a revocation is seen, and when it grows past
    /// [`MAX_CACHED_TOKENS`].
    known_tokens: RwLock<HashMap<TokenHash, KnownToken>>,
    /// A hash of nothing anyone knows, checked against when a login names
    /// no one.
    dummy_hash: tokio::sync::OnceCell<String>,
    guard: LoginGuard,
    enrollment: Enrollment,
    fleet_tokens: FleetTokens,
    /// See [`Auth::generation`].
    generation: std::sync::atomic::AtomicU64,
}

impl Auth {
    pub fn new(
        store: Arc<dyn Store>,
        login_limits: LoginLimits,
        registration: RegistrationConfig,
    ) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Ok(Self {
            registration,
            passwords: Passwords::start(cores)?,
            known_tokens: RwLock::new(HashMap::new()),
            dummy_hash: tokio::sync::OnceCell::new(),
            guard: LoginGuard::new(login_limits),
            enrollment: Enrollment::new(store.clone()),
            fleet_tokens: FleetTokens::new(store.clone()),
            generation: std::sync::atomic::AtomicU64::new(0),
            store,
        })
    }

    /// Registers `username`, or logs it in when it exists; either way
    /// returns a new token. `peer` is where the request came from: wrong
    /// passwords are counted against it and the name.
    pub async fn register_or_login(
        &self,
        username: &str,
        password: &str,
        enroll_token: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Login> {
        validate_username(username)?;
        if let Some(client) = self.store.find_client(username).await? {
            self.guard.check(peer, username)?;
            let login = self.login(client.id, &client.password_hash, password).await;
            if let Err(Error::Unauthorized) = login {
                self.guard.failed(peer, username, "/client");
            }
            return login;
        }
        // A refusal is counted like a wrong password, so names and tokens
        // cannot be probed faster than passwords can be guessed.
        match self.registration.mode {
            RegistrationMode::Open => {}
            RegistrationMode::Closed => {
                self.guard.check(peer, username)?;
                self.guard.failed(peer, username, "/client");
                return Err(Error::RegistrationClosed(username.to_owned()));
            }
            RegistrationMode::Token => {
                self.guard.check(peer, username)?;
                // A registration that would fail anyway spends no use.
                self.check_new_client(username, password)?;
                let redeemed = match enroll_token {
                    Some(token) => self.enrollment.redeem(token).await?,
                    None => false,
                };
                if !redeemed {
                    self.guard.failed(peer, username, "/client");
                    return Err(Error::EnrollmentTokenRequired(username.to_owned()));
                }
            }
        }
        self.add_client(username, password).await
    }

    /// Creates a client with its password (registration, or an admin's
    /// `sysmon-server client add`), or logs in when the name was taken a
    /// moment ago with the same password; returns a new token.
    pub async fn add_client(&self, username: &str, password: &str) -> Result<Login> {
        self.check_new_client(username, password)?;
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

    /// A new client's name and password, checked before anything is spent
    /// on them.
    fn check_new_client(&self, username: &str, password: &str) -> Result<()> {
        validate_new_username(username)?;
        let shortest = self.registration.min_password_chars.max(1);
        if password.chars().count() < shortest || password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::BadRequest(format!(
                "a new client needs a password (`pass`) of {shortest} to {MAX_PASSWORD_BYTES} characters"
            )));
        }
        Ok(())
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
        self.verify_password(stored_hash, password).await?;
        Ok(Login {
            registered: false,
            token: self.issue_token(client).await?,
        })
    }

    async fn issue_token(&self, client: crate::store::ClientId) -> Result<String> {
        let token = new_token();
        self.store.add_token(client, &hash_token(&token)).await?;
        Ok(token)
    }

    /// The client a token belongs to.
    pub async fn authenticate(&self, token: &str) -> Result<TokenOwner> {
        let hash = hash_token(token);
        let cached = self.read_cache().get(&hash).cloned();
        let known = match cached {
            Some(known) => known,
            None => {
                let (owner, issued_us) = self
                    .store
                    .token_owner(&hash)
                    .await?
                    .ok_or(Error::Unauthorized)?;
                let known = KnownToken { owner, issued_us };
                let mut cache = self
                    .known_tokens
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if cache.len() >= MAX_CACHED_TOKENS {
                    cache.clear();
                }
                cache.insert(hash, known.clone());
                known
            }
        };
        if self.expired(known.issued_us) {
            return Err(Error::Unauthorized);
        }
        Ok(known.owner)
    }

    /// Whether a token issued then is past `registration.token_lifetime_days`.
    fn expired(&self, issued_us: i64) -> bool {
        self.registration.token_lifetime.is_some_and(|lifetime| {
            let lifetime_us = i64::try_from(lifetime.as_micros()).unwrap_or(i64::MAX);
            sysmon_core::UnixTime::now().micros() - issued_us > lifetime_us
        })
    }

    /// Every client, by name (`sysmon-server client list`).
    pub async fn list_clients(&self) -> Result<Vec<crate::store::ClientListing>> {
        self.store.list_clients().await
    }

    /// Revokes every token and dashboard session of a client; the tokens
    /// revoked. Refused at once here, and by every server on the database
    /// within a second.
    pub async fn revoke_tokens(&self, client: &str) -> Result<u64> {
        let record = self
            .store
            .find_client(client)
            .await?
            .ok_or_else(|| Error::NotFoundNamed(format!("no client named `{client}`")))?;
        let revoked = self.store.revoke_tokens(record.id).await?;
        self.forget_tokens();
        tracing::warn!(
            client,
            tokens = revoked,
            "revoked a client's tokens and sessions"
        );
        Ok(revoked)
    }

    /// Removes a client: its name is free at once, its tokens, sessions
    /// and viewers' grants are gone (on every server within a second).
    /// Its samples stay until [`crate::store::ClientStore::purge_removed_clients`].
    pub async fn remove_client(&self, client: &str) -> Result<()> {
        let record = self
            .store
            .find_client(client)
            .await?
            .ok_or_else(|| Error::NotFoundNamed(format!("no client named `{client}`")))?;
        self.store.remove_client(record.id, &record.name).await?;
        self.forget_tokens();
        tracing::warn!(client, id = record.id.0, "removed a client");
        Ok(())
    }

    /// Sets a client's labels (admins): at most [`MAX_LABELS`], each 1 to
    /// 40 printable characters without spaces or commas, kept sorted and
    /// without duplicates.
    pub async fn set_labels(&self, client: &str, labels: Vec<String>) -> Result<Vec<String>> {
        let record = self
            .store
            .find_client(client)
            .await?
            .ok_or_else(|| Error::NotFoundNamed(format!("no client named `{client}`")))?;
        let mut labels: Vec<String> = labels
            .into_iter()
            .map(|label| label.trim().to_owned())
            .collect();
        labels.sort();
        labels.dedup();
        if labels.len() > MAX_LABELS {
            return Err(Error::BadRequest(format!(
                "a host may have at most {MAX_LABELS} labels"
            )));
        }
        if let Some(bad) = labels.iter().find(|label| {
            label.is_empty()
                || label.chars().count() > 40
                || label
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace() || c == ',')
        }) {
            return Err(Error::BadRequest(format!(
                "label `{}` must be 1 to 40 printable characters without spaces or commas",
                bad.escape_debug()
            )));
        }
        self.store.set_labels(record.id, &labels).await?;
        Ok(labels)
    }

    /// Deletes removed clients' samples now, on a task of its own (a long
    /// history takes a while), as the retention job does each round.
    pub fn purge_removed_clients_in_background(&self) {
        let store = self.store.clone();
        tokio::spawn(async move {
            super::retention::purge_removed_clients(store.as_ref()).await;
        });
    }

    /// Enrolment tokens, for admins.
    pub fn enrollment(&self) -> &Enrollment {
        &self.enrollment
    }

    pub fn fleet_tokens(&self) -> &FleetTokens {
        &self.fleet_tokens
    }

    /// Who pushes with this token: a fleet token, or a client's own.
    pub async fn pusher(&self, token: &str) -> Result<Pusher> {
        if let Some(fleet) = self.fleet_tokens.find(token).await? {
            if fleet.export {
                return Err(Error::Forbidden(format!(
                    "fleet token {} is an export token: it reads /metrics/fleet and never pushes (push with a push token)",
                    fleet.id
                )));
            }
            return Ok(Pusher::Fleet(fleet));
        }
        self.authenticate(token).await.map(Pusher::Client)
    }

    fn forget_tokens(&self) {
        self.known_tokens
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Changes whenever the cached tokens are forgotten (a revocation or a
    /// removal, here or on another server): what others cache about
    /// clients is stale then.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Reads the revocation epoch every second until `stop`, emptying the
    /// token cache when it changes.
    pub fn watch_revocations(
        self: Arc<Self>,
        stop: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut seen = self.store.auth_epoch().await.ok();
            let mut ticks = tokio::time::interval(REVOCATION_CHECK);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                match self.store.auth_epoch().await {
                    Ok(epoch) if Some(epoch) != seen => {
                        if seen.is_some() {
                            tracing::info!("tokens were revoked: forgetting the cached ones");
                        }
                        self.forget_tokens();
                        seen = Some(epoch);
                    }
                    Ok(_) => {}
                    // Unreadable: forget all, so no revoked token outlives it.
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the revocation epoch");
                        self.forget_tokens();
                    }
                }
            }
        })
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

    fn read_cache(&self) -> std::sync::RwLockReadGuard<'_, HashMap<TokenHash, KnownToken>> {
        self.known_tokens
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Who pushes samples of many hosts, and for which hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pusher {
    /// A client's own token: its own host only.
    Client(TokenOwner),
    /// A fleet token: the hosts its pattern matches.
    Fleet(crate::store::FleetToken),
}

impl Pusher {
    pub fn may_write(&self, host: &str) -> bool {
        match self {
            Pusher::Client(owner) => owner.name == host,
            Pusher::Fleet(token) => token.covers(host),
        }
    }

    /// Whether a push for a host not seen before creates it.
    pub fn may_create_hosts(&self) -> bool {
        matches!(self, Pusher::Fleet(token) if token.create_hosts)
    }

    /// For errors: what the token may write.
    pub fn scope(&self) -> String {
        match self {
            Pusher::Client(owner) => format!("a client token writes for `{}` only", owner.name),
            Pusher::Fleet(token) => format!(
                "fleet token {} writes for hosts matching `{}`",
                token.id, token.hosts
            ),
        }
    }
}

/// Who is asking, once a token checked out, and what they may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A dashboard user who sees every client.
    Admin { name: String },
    /// A dashboard user who sees the clients granted to them.
    Viewer { name: String, clients: Vec<String> },
    /// A client logged in with its own credentials: sees only itself.
    Client(TokenOwner),
}

impl Principal {
    fn from_user(user: DashboardUser) -> Self {
        if user.is_admin {
            Principal::Admin { name: user.name }
        } else {
            Principal::Viewer {
                name: user.name,
                clients: user.clients,
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Principal::Admin { name } | Principal::Viewer { name, .. } => name,
            Principal::Client(owner) => &owner.name,
        }
    }

    /// "admin", "viewer" or "client", as the API reports it.
    pub fn role(&self) -> &'static str {
        match self {
            Principal::Admin { .. } => "admin",
            Principal::Viewer { .. } => "viewer",
            Principal::Client(_) => "client",
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin { .. })
    }

    pub fn may_read(&self, client: &str) -> bool {
        match self {
            Principal::Admin { .. } => true,
            Principal::Viewer { clients, .. } => clients.iter().any(|name| name == client),
            Principal::Client(owner) => owner.name == client,
        }
    }

    /// Fails with 403 unless this principal may read `client`. Checked
    /// before the client is looked up, so a refusal never tells whether a
    /// name exists.
    pub fn check_read(&self, client: &str) -> Result<()> {
        if self.may_read(client) {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "`{}` may not read client `{client}`",
                self.name()
            )))
        }
    }

    pub fn check_admin(&self) -> Result<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::Forbidden(
                "only dashboard admins may read this".into(),
            ))
        }
    }
}

/// A dashboard login's outcome: the token for the cookie or the
/// `Authorization` header, and who it stands for.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: String,
    pub principal: Principal,
}

impl Auth {
    /// Logs in a dashboard user or, when no such user exists, a client
    /// with its own credentials.
    pub async fn dashboard_login(
        &self,
        username: &str,
        password: &str,
        session_lifetime: std::time::Duration,
        peer: Option<IpAddr>,
    ) -> Result<Session> {
        self.guard.check(peer, username)?;
        let session = self.session_for(username, password, session_lifetime).await;
        if let Err(Error::Unauthorized) = session {
            self.guard.failed(peer, username, "/api/v1/session");
        }
        session
    }

    async fn session_for(
        &self,
        username: &str,
        password: &str,
        session_lifetime: std::time::Duration,
    ) -> Result<Session> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::Unauthorized);
        }
        let expires = sysmon_core::UnixTime::now().micros()
            + i64::try_from(session_lifetime.as_micros()).unwrap_or(i64::MAX / 2);
        if let Some(user) = self.store.find_dashboard_user(username).await? {
            self.verify_password(&user.password_hash, password).await?;
            let token = new_token();
            self.store
                .add_session(SessionOwner::User(user.id), &hash_token(&token), expires)
                .await?;
            return Ok(Session {
                token,
                principal: Principal::from_user(user),
            });
        }
        let Some(client) = self.store.find_client(username).await? else {
            // As slow as a wrong password, so timing does not tell which
            // names exist.
            let dummy = self
                .dummy_hash
                .get_or_try_init(|| self.passwords.hash(new_token()))
                .await?;
            let _ = self.verify_password(dummy, password).await;
            return Err(Error::Unauthorized);
        };
        // A session of its own, not one of the client's ingest tokens: it
        // expires, logging out ends it, and it cannot push samples.
        self.verify_password(&client.password_hash, password)
            .await?;
        let token = new_token();
        self.store
            .add_session(
                SessionOwner::Client(client.id),
                &hash_token(&token),
                expires,
            )
            .await?;
        Ok(Session {
            token,
            principal: Principal::Client(TokenOwner {
                id: client.id,
                name: client.name,
            }),
        })
    }

    /// Ends a dashboard session (a client's ingest tokens are not sessions
    /// and stay valid: the original API's clients rely on that).
    pub async fn logout(&self, token: &str) -> Result<()> {
        self.store.delete_session(&hash_token(token)).await
    }

    /// Who a token stands for: a live dashboard session, else a client.
    pub async fn principal(&self, token: &str) -> Result<Principal> {
        let hash = hash_token(token);
        let now = sysmon_core::UnixTime::now().micros();
        if let Some(user) = self.store.session_user(&hash, now).await? {
            return Ok(Principal::from_user(user));
        }
        if let Some(client) = self.store.session_client(&hash, now).await? {
            return Ok(Principal::Client(client));
        }
        self.authenticate(token).await.map(Principal::Client)
    }

    /// Creates a dashboard user (the `user add` subcommand).
    pub async fn add_dashboard_user(
        &self,
        name: &str,
        password: &str,
        is_admin: bool,
        clients: Vec<String>,
    ) -> Result<()> {
        validate_new_username(name)?;
        let chars = password.chars().count();
        if chars < MIN_DASHBOARD_PASSWORD_CHARS || password.len() > MAX_PASSWORD_BYTES {
            return Err(Error::BadRequest(format!(
                "a dashboard password needs {MIN_DASHBOARD_PASSWORD_CHARS} to {MAX_PASSWORD_BYTES} characters"
            )));
        }
        let user = NewDashboardUser {
            name: name.to_owned(),
            password_hash: self.passwords.hash(password.to_owned()).await?,
            is_admin,
            clients,
        };
        match self.store.create_dashboard_user(&user).await? {
            Some(_) => Ok(()),
            None => Err(Error::BadRequest(format!(
                "dashboard user `{name}` exists; remove it first to change it"
            ))),
        }
    }

    /// On a store without dashboard users, creates `admin` with the given
    /// password, or a random one that is returned so it can be shown once.
    pub async fn ensure_first_admin(&self, password: Option<&str>) -> Result<Option<String>> {
        if !self.store.dashboard_users().await?.is_empty() {
            return Ok(None);
        }
        let generated = password.is_none().then(|| new_token()[..20].to_owned());
        let chosen = password.or(generated.as_deref()).unwrap_or_default();
        match self
            .add_dashboard_user(FIRST_ADMIN, chosen, true, Vec::new())
            .await
        {
            Ok(()) => Ok(generated),
            // Another server on the same database got there first.
            Err(_) if self.store.find_dashboard_user(FIRST_ADMIN).await?.is_some() => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn verify_password(&self, stored_hash: &str, password: &str) -> Result<()> {
        let verified = self
            .passwords
            .verify(stored_hash.to_owned(), password.to_owned())
            .await?;
        if verified {
            Ok(())
        } else {
            Err(Error::Unauthorized)
        }
    }
}

/// 256 random bits, URL-safe.
fn new_token() -> String {
    let mut secret = [0u8; 32];
    OsRng.fill_bytes(&mut secret);
    URL_SAFE_NO_PAD.encode(secret)
}

/// Usernames must start with a letter (the original's rule) and be short
/// and printable, since they appear in URLs and logs.
/// A name for a new client or user: also free of the invisible characters
/// that make one name look like another or reorder text around it (bidi
/// overrides, zero-width spaces and joiners, tags). Names registered
/// before this check keep working.
pub fn validate_new_username(username: &str) -> Result<()> {
    validate_username(username)?;
    if username.chars().any(is_invisible_format_char) {
        return Err(Error::UnsupportableUsername);
    }
    Ok(())
}

/// Unicode's format characters (category Cf) that occur in spoofing.
fn is_invisible_format_char(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

pub fn validate_username(username: &str) -> Result<()> {
    let starts_with_letter = username.chars().next().is_some_and(char::is_alphabetic);
    let printable = !username.chars().any(char::is_control);
    if starts_with_letter && printable && username.chars().count() <= MAX_USERNAME_CHARS {
        Ok(())
    } else {
        Err(Error::UnsupportableUsername)
    }
}

pub fn strip_bearer(header: &str) -> &str {
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
        for spoof in [
            "admin\u{202E}nimda",
            "ad\u{200B}min",
            "web\u{2066}1",
            "x\u{E0041}",
        ] {
            assert!(validate_new_username(spoof).is_err(), "{spoof:?}");
            assert!(
                validate_username(spoof).is_ok(),
                "an existing {spoof:?} still logs in"
            );
        }
        assert!(validate_new_username("Émile").is_ok());
        assert!(validate_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn principals_read_what_they_are_granted() {
        let admin = Principal::Admin {
            name: "root".into(),
        };
        let viewer = Principal::Viewer {
            name: "ops".into(),
            clients: vec!["web1".into()],
        };
        let client = Principal::Client(TokenOwner {
            id: crate::store::ClientId(1),
            name: "web2".into(),
        });
        assert!(admin.may_read("anything"));
        assert!(viewer.may_read("web1") && !viewer.may_read("web2"));
        assert!(client.may_read("web2") && !client.may_read("web1"));
        assert!(matches!(
            client.check_read("web1"),
            Err(Error::Forbidden(_))
        ));
        assert!(admin.check_admin().is_ok() && viewer.check_admin().is_err());
        assert_eq!(
            (admin.role(), viewer.role(), client.role()),
            ("admin", "viewer", "client")
        );
    }

    #[test]
    fn bearer_prefix_is_optional() {
        assert_eq!(strip_bearer("Bearer abc"), "abc");
        assert_eq!(strip_bearer("bearer  abc "), "abc");
        assert_eq!(strip_bearer("abc"), "abc");
    }
}
