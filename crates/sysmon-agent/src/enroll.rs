//! Enrollment: register the host's name (or log in when it exists) with the
//! server's original route, `POST {server}/client`, and keep the token.

use crate::error::{Error, Result};
use crate::transport::http::{client, post_json};
use crate::trust::Endpoint;

/// Registers or logs in; returns the token (`client_id`).
pub fn enroll(endpoint: &Endpoint, name: &str, password: &str) -> Result<String> {
    let agent = client(endpoint);
    let url = format!("{}/client", endpoint.server);
    let body = serde_json::to_vec(&serde_json::json!({"username": name, "pass": password}))
        .map_err(|e| Error::Enrollment(e.to_string()))?;
    let reply = post_json(&agent, &url, None, &body)?;
    match reply.status {
        200..=299 => serde_json::from_slice::<serde_json::Value>(&reply.body)
            .ok()
            .and_then(|v| v.get("client_id")?.as_str().map(str::to_owned))
            .filter(|token| !token.is_empty())
            .ok_or_else(|| {
                Error::unavailable(format!(
                    "{url} answered without a client_id: {}",
                    String::from_utf8_lossy(&reply.body)
                        .chars()
                        .take(200)
                        .collect::<String>()
                ))
            }),
        401 | 403 => Err(Error::Unauthorized(format!(
            "the server refused the password for `{name}` ({})",
            reply.error_message()
        ))),
        400 | 404 | 405 | 413 | 422 => Err(Error::Enrollment(reply.error_message())),
        status => Err(Error::Unavailable {
            reason: format!("{url} answered {status}: {}", reply.error_message()),
            retry_after: reply.retry_after,
        }),
    }
}
