//! axum's extractors, with their rejections answered like every other
//! error: a JSON body with a code (see [`crate::error`]), not axum's text.

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::Error;

/// `axum::extract::Path`, refusing a malformed path segment (such as one
/// that is not UTF-8) with a coded 400.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(Error::BadRequest(format!(
                "the URL's path: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// The address the request came from (behind a trusted proxy, its
/// client's), where the server recorded it (its accept loop does; a router
/// served otherwise has none).
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Error> {
        Ok(Peer(
            crate::connections::origin_of(parts).map(|origin| origin.client),
        ))
    }
}

/// `WebSocketUpgrade`, refusing a request that is not a WebSocket upgrade
/// with a coded 400 that says so.
pub struct Upgrade(pub WebSocketUpgrade);

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        match WebSocketUpgrade::from_request_parts(parts, state).await {
            Ok(upgrade) => Ok(Upgrade(upgrade)),
            Err(rejection) => Err(Error::BadRequest(format!(
                "this route is a WebSocket; open it with a WebSocket client ({})",
                rejection.body_text()
            ))),
        }
    }
}
