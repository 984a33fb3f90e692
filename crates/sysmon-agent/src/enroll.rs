//! Enrollment: register the host's name (or log in when it exists) with the
//! server's original route, `POST {server}/client`, and keep the token.

use crate::error::{Error, Result};
use crate::transport::http::{client, post_json};
use crate::trust::Endpoint;

/// Who the agent registers or logs in as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub name: String,
    pub password: String,
    /// An admin's enrolment token, for a server that registers new clients
    /// only with one (`registration.mode: token`); unused when logging in.
    pub token: Option<String>,
}

/// Registers or logs in; returns the token (`client_id`).
pub fn enroll(endpoint: &Endpoint, enrolment: &Enrolment) -> Result<String> {
    let agent = client(endpoint);
    let url = format!("{}/client", endpoint.server);
    let mut body = serde_json::json!({"username": enrolment.name, "pass": enrolment.password});
    if let Some(token) = &enrolment.token {
        body["enroll_token"] = serde_json::Value::from(token.as_str());
    }
    let body = serde_json::to_vec(&body).map_err(|e| Error::Enrollment(e.to_string()))?;
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
        // Its message says why: a wrong password, registration closed, or
        // an enrolment token missing or spent.
        401 | 403 => Err(Error::Unauthorized(format!(
            "the server refused to enroll `{}`: {}",
            enrolment.name,
            reply.error_message()
        ))),
        400 | 404 | 405 | 413 | 422 => Err(Error::Enrollment(reply.error_message())),
        status => Err(Error::Unavailable {
            reason: format!("{url} answered {status}: {}", reply.error_message()),
            retry_after: reply.retry_after,
        }),
    }
}
