//! Request bodies as the original's clients send them: form fields (the GUI
//! client) or a JSON object (the README), told apart by content type; v1
//! batches; small JSON requests. Each kind is read up to its own limit, so
//! a login cannot make the server hold a batch's worth of memory.

/// An original-API body: one sample or a registration.
pub const FIELDS_LIMIT: usize = 1024 * 1024;
/// A v1 batch: up to 10,000 samples with their file systems.
pub const BATCH_LIMIT: usize = 16 * 1024 * 1024;
/// A JSON request of the dashboard's (a login).
pub const JSON_LIMIT: usize = 64 * 1024;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use axum::http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;
use sysmon_core::FieldValue;

use crate::error::{Error, Result};
use crate::services::integrations::FOREIGN_LIMIT;

/// The fields of a body, in order, as they arrived.
#[derive(Debug, Default)]
pub struct Fields(pub Vec<(String, FieldValue)>);

impl Fields {
    /// A field as text, for names and passwords (numbers are accepted).
    pub fn text(&self, names: &[&str]) -> Option<String> {
        self.0
            .iter()
            .find(|(key, _)| names.contains(&key.as_str()))
            .and_then(|(_, value)| match value {
                FieldValue::Text(text) => Some(text.clone()),
                FieldValue::Number(number) => {
                    Some(sysmon_core::number::json_number(*number).to_string())
                }
                FieldValue::Null | FieldValue::Other(_) => None,
            })
    }
}

impl<S: Send + Sync> FromRequest<S> for Fields {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self> {
        let is_json = content_type(&request).contains("json");
        let body = read_body(request, FIELDS_LIMIT).await?;
        parse(&body, is_json).map(Fields)
    }
}

/// A v1 batch body, unparsed: a JSON array, or NDJSON when the content type
/// says so.
pub struct BatchBody {
    pub bytes: Bytes,
    pub ndjson: bool,
}

impl<S: Send + Sync> FromRequest<S> for BatchBody {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self> {
        let ndjson = ["ndjson", "jsonl"]
            .iter()
            .any(|kind| content_type(&request).contains(kind));
        let bytes = read_body(request, BATCH_LIMIT).await?;
        Ok(BatchBody { bytes, ndjson })
    }
}

/// A foreign protocol's body, inflated when its `Content-Encoding` is gzip
/// (at most [`FOREIGN_LIMIT`] either way, so a small bomb cannot make the
/// server hold gigabytes). Read by the handler once the token checked out,
/// so a stranger's body is never read.
pub async fn read_foreign(headers: &HeaderMap, body: Body) -> Result<Bytes> {
    let encoding = headers
        .get(CONTENT_ENCODING)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    if !matches!(encoding.as_str(), "" | "identity" | "gzip" | "x-gzip") {
        return Err(Error::BadRequest(format!(
            "Content-Encoding `{encoding}` is not supported: send the body as is or gzip"
        )));
    }
    let bytes = read_limited(body, FOREIGN_LIMIT).await?;
    if matches!(encoding.as_str(), "" | "identity") {
        return Ok(bytes);
    }
    // Inflating 16 MiB takes tens of milliseconds: off the async workers.
    tokio::task::spawn_blocking(move || gunzip(&bytes, FOREIGN_LIMIT))
        .await
        .map_err(|_| Error::Internal("inflating a body failed".into()))?
}

fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes> {
    use std::io::Read;
    let mut inflated = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| Error::InvalidPayload(format!("the gzip body cannot be inflated: {e}")))?;
    if inflated.len() > limit {
        return Err(Error::PayloadTooLarge { limit });
    }
    Ok(Bytes::from(inflated))
}

/// A JSON body of a known shape; a malformed one is a 400 saying why.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self> {
        // A form on another site can post any text, but not with a JSON
        // content type: requiring it keeps cross-site posts out.
        if !content_type(&request).starts_with("application/json") {
            return Err(Error::BadRequest(
                "send the body as JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = read_body(request, JSON_LIMIT).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
    }
}

fn content_type(request: &Request) -> &str {
    request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
}

async fn read_body(request: Request, limit: usize) -> Result<Bytes> {
    read_limited(request.into_body(), limit).await
}

/// A foreign protocol's body exactly as sent (remote write's snappy is
/// its own framing, not a `Content-Encoding` to undo here).
pub async fn read_foreign_raw(body: Body) -> Result<Bytes> {
    read_limited(body, FOREIGN_LIMIT).await
}

async fn read_limited(body: Body, limit: usize) -> Result<Bytes> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<LengthLimitError>() => Err(Error::PayloadTooLarge { limit }),
        Err(error) => Err(Error::BadRequest(format!(
            "cannot read the request body: {error}"
        ))),
    }
}

fn parse(body: &[u8], is_json: bool) -> Result<Vec<(String, FieldValue)>> {
    let looks_like_json = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if is_json || looks_like_json {
        parse_json(body)
    } else {
        parse_form(body)
    }
}

fn parse_json(body: &[u8]) -> Result<Vec<(String, FieldValue)>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object
            .iter()
            .map(|(key, value)| (key.clone(), FieldValue::from(value)))
            .collect()),
        Ok(_) => Err(Error::BadRequest(
            "request body must be a JSON object".into(),
        )),
        Err(error) => Err(Error::BadRequest(format!(
            "request body is not valid JSON: {error}"
        ))),
    }
}

fn parse_form(body: &[u8]) -> Result<Vec<(String, FieldValue)>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|_| {
        Error::BadRequest("request body must be form fields (a=1&b=2) or a JSON object".into())
    })?;
    Ok(pairs
        .into_iter()
        .map(|(key, value)| (key, FieldValue::Text(value)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_and_json_give_the_same_fields() {
        let form = parse(b"cpu_load=25.9&mem=6172", false).unwrap();
        assert_eq!(
            form[0],
            ("cpu_load".into(), FieldValue::Text("25.9".into()))
        );
        let json = parse(br#" {"cpu_load": 25.9}"#, false).unwrap();
        assert_eq!(json[0], ("cpu_load".into(), FieldValue::Number(25.9)));
        assert!(parse(b"", false).unwrap().is_empty());
        assert!(parse(b"", true).unwrap().is_empty());
    }

    #[test]
    fn rejects_json_that_is_not_an_object() {
        assert!(matches!(parse(b"[1,2]", true), Err(Error::BadRequest(_))));
        assert!(matches!(
            parse(b"{not json", false),
            Err(Error::BadRequest(_))
        ));
    }
}
