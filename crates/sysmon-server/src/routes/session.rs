//! Dashboard logins: `POST /api/v1/session` (log in), `GET` (who am I),
//! `DELETE` (log out), and the extractor that turns a request's cookie or
//! bearer token into the [`Principal`] the read routes check.

use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::extract::Peer;
use crate::error::{Error, Result};
use crate::services::auth::{strip_bearer, Principal};
use crate::state::AppState;

/// The cookie a browser session lives in, over plain HTTP.
pub const SESSION_COOKIE: &str = "sysmon_session";

/// The cookie a browser session lives in: over plain HTTP
/// [`SESSION_COOKIE`]; over HTTPS (served with TLS, or so a trusted proxy
/// says: [`crate::connections::RequestOrigin`]) `__Host-sysmon_session`,
/// `Secure`, which
/// browsers keep only from a secure origin, for this host alone and its
/// whole path, so neither a plain-HTTP page nor a sibling subdomain can set
/// or overwrite it (and only that name is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionCookie {
    pub secure: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for SessionCookie {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self> {
        Ok(SessionCookie::of(parts))
    }
}

impl SessionCookie {
    /// The cookie of the request's scheme.
    pub fn of(parts: &Parts) -> SessionCookie {
        SessionCookie {
            secure: crate::connections::origin_of(parts).is_some_and(|origin| origin.secure),
        }
    }

    pub fn name(self) -> &'static str {
        match self.secure {
            true => "__Host-sysmon_session",
            false => SESSION_COOKIE,
        }
    }

    fn with_value(self, value: &str, max_age_seconds: u64) -> String {
        let secure = if self.secure { "; Secure" } else { "" };
        format!(
            "{}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age_seconds}{secure}",
            self.name()
        )
    }
}

/// The principal of an authenticated request; 401 without a valid token.
pub struct Authenticated(pub Principal);

impl FromRequestParts<AppState> for Authenticated {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let token =
            request_token(&parts.headers, SessionCookie::of(parts)).ok_or(Error::NotLoggedIn)?;
        match state.auth.principal(&token).await {
            Ok(principal) => Ok(Authenticated(principal)),
            Err(Error::Unauthorized) => Err(Error::NotLoggedIn),
            Err(error) => Err(error),
        }
    }
}

/// The bearer token, else the session cookie.
pub fn request_token(headers: &HeaderMap, cookie: SessionCookie) -> Option<String> {
    if let Some(header) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return Some(strip_bearer(header).to_owned());
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .filter_map(|cookie| cookie.trim().split_once('='))
        .find(|(name, _)| *name == cookie.name())
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    username: String,
    password: String,
}

/// Who is logged in.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    name: String,
    /// `admin` (every client), `viewer` (granted clients) or `client` (itself).
    role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// For `Authorization: Bearer`; browsers get the same in a cookie.
    token: String,
    name: String,
    role: String,
}

/// Log in with a dashboard user's or a client's name and password.
#[utoipa::path(post, path = "/api/v1/session", tag = "session",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in; also sets the HttpOnly session cookie", body = LoginResponse),
        (status = 401, description = "Wrong name or password"),
        (status = 429, description = "Too many wrong passwords from this address or for this name; retry after `Retry-After`"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    Peer(peer): Peer,
    session_cookie: SessionCookie,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<Response> {
    let session = state
        .auth
        .dashboard_login(
            &request.username,
            &request.password,
            state.session_lifetime,
            peer,
        )
        .await?;
    let cookie = session_cookie.with_value(&session.token, state.session_lifetime.as_secs());
    let body = LoginResponse {
        name: session.principal.name().to_owned(),
        role: session.principal.role().to_owned(),
        token: session.token,
    };
    tracing::info!(name = body.name, role = body.role, "dashboard login");
    let mut response = Json(body).into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_str(&cookie).map_err(|e| Error::Internal(e.to_string()))?,
    );
    Ok(response)
}

/// The logged-in principal.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = WhoAmI), (status = 401, description = "Not logged in")),
    security(("bearer" = []), ("cookie" = [])))]
pub async fn whoami(Authenticated(principal): Authenticated) -> Json<WhoAmI> {
    Json(WhoAmI {
        name: principal.name().to_owned(),
        role: principal.role().to_owned(),
    })
}

/// Log out: ends the dashboard session and clears the cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204, description = "Logged out")))]
pub async fn logout(
    State(state): State<AppState>,
    session_cookie: SessionCookie,
    headers: HeaderMap,
) -> Result<Response> {
    if let Some(token) = request_token(&headers, session_cookie) {
        state.auth.logout(&token).await?;
    }
    let clear = session_cookie.with_value("", 0);
    Ok((
        StatusCode::NO_CONTENT,
        [(
            SET_COOKIE,
            HeaderValue::from_str(&clear).map_err(|e| Error::Internal(e.to_string()))?,
        )],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: SessionCookie = SessionCookie { secure: false };
    const SECURE: SessionCookie = SessionCookie { secure: true };

    #[test]
    fn token_from_bearer_or_cookie() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_token(&headers, PLAIN), None);
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; sysmon_session=abc; __Host-sysmon_session=def"),
        );
        assert_eq!(request_token(&headers, PLAIN).as_deref(), Some("abc"));
        assert_eq!(request_token(&headers, SECURE).as_deref(), Some("def"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer xyz"));
        assert_eq!(request_token(&headers, PLAIN).as_deref(), Some("xyz"));
        let mut empty = HeaderMap::new();
        empty.insert(COOKIE, HeaderValue::from_static("sysmon_session="));
        assert_eq!(request_token(&empty, PLAIN), None);
        let mut plain_only = HeaderMap::new();
        plain_only.insert(COOKIE, HeaderValue::from_static("sysmon_session=abc"));
        assert_eq!(
            request_token(&plain_only, SECURE),
            None,
            "over TLS only __Host-"
        );
    }

    #[test]
    fn secure_cookies_are_marked() {
        assert_eq!(
            SECURE.with_value("t", 60),
            "__Host-sysmon_session=t; HttpOnly; SameSite=Strict; Path=/; Max-Age=60; Secure"
        );
        assert!(!PLAIN.with_value("t", 60).contains("Secure"));
    }
}
