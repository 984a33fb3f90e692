//! Where notifications go: channels declared in the YAML file, each of one
//! kind, and what each kind is sent (its own JSON shape, or plain text).

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::error::{Error, Result};

/// The header that carries a webhook body's HMAC-SHA256, as
/// `sha256=<hex>`, when the channel has a secret.
pub const SIGNATURE_HEADER: &str = "X-Sysmon-Signature";

/// A channel as written in the YAML file's `alerts.channels`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSpec {
    pub name: String,
    pub kind: ChannelKind,
    /// Where to send: the webhook's URL, Slack's or Discord's incoming
    /// webhook, ntfy's topic URL, or the Gotify server.
    pub url: String,
    /// Webhook: signs each body with HMAC-SHA256 (header
    /// `X-Sysmon-Signature: sha256=<hex>`).
    #[serde(default)]
    pub secret: Option<String>,
    /// ntfy: an access token (optional); Gotify: the application token.
    #[serde(default)]
    pub token: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Slack,
    Discord,
    Ntfy,
    Gotify,
}

impl ChannelSpec {
    /// Checks the channel; the error names it and the field.
    pub fn check(self) -> Result<ChannelSpec> {
        let fail =
            |message: &str| Error::Config(format!("alert channel `{}`: {message}", self.name));
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(Error::Config(
                "an alert channel needs a `name` of 1 to 64 characters".into(),
            ));
        }
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| fail(&format!("`url` is not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(fail("`url` must be http:// or https://"));
        }
        match self.kind {
            ChannelKind::Gotify if self.token.is_none() => {
                Err(fail("gotify needs the application's `token`"))
            }
            ChannelKind::Webhook | ChannelKind::Ntfy | ChannelKind::Gotify => Ok(self),
            _ if self.token.is_some() || self.secret.is_some() => Err(fail(
                "slack and discord take only a `url` (the secret is in it)",
            )),
            _ => Ok(self),
        }
    }
}

/// What a notification says: the generic webhook's body, documented in
/// docs/alerts.md.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Notification {
    pub version: u32,
    pub rule: String,
    pub host: String,
    /// `firing` or `resolved`; `test` for a test notification.
    pub state: String,
    pub severity: String,
    /// The rule's condition as people read it.
    pub condition: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// Unix seconds: when the alert entered this state, and when the
    /// transition was stored.
    pub since: f64,
    pub at: f64,
    /// A repeat of a firing alert's notification.
    pub repeat: bool,
    /// The host's page on the dashboard.
    pub link: String,
}

impl Notification {
    /// One line for chat: `[FIRING] cpu-hot on web-1: avg(cpu_load over 5m) > 90 (value 95.2)`.
    pub fn line(&self) -> String {
        let value = self
            .value
            .map(|v| format!(" (value {})", round(v)))
            .unwrap_or_default();
        format!(
            "[{}] {} on {}: {}{value}",
            self.state.to_uppercase(),
            self.rule,
            self.host,
            self.condition
        )
    }

    fn title(&self) -> String {
        format!("sysmon: {} on {} {}", self.rule, self.host, self.state)
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// A request ready to send, as each kind wants it.
pub struct Outgoing {
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The request that notifies `channel` of `notification`.
pub fn outgoing(channel: &ChannelSpec, notification: &Notification) -> Outgoing {
    let json = |value: serde_json::Value| serde_json::to_vec(&value).unwrap_or_default();
    let text = format!("{}\n{}", notification.line(), notification.link);
    let firing = notification.state == "firing";
    let mut headers = vec![("Content-Type", "application/json".to_owned())];
    let (url, body) = match channel.kind {
        ChannelKind::Webhook => {
            let body = serde_json::to_vec(notification).unwrap_or_default();
            if let Some(secret) = &channel.secret {
                headers.push((SIGNATURE_HEADER, signature(secret, &body)));
            }
            (channel.url.clone(), body)
        }
        ChannelKind::Slack => (channel.url.clone(), json(serde_json::json!({"text": text}))),
        ChannelKind::Discord => (
            channel.url.clone(),
            json(serde_json::json!({"content": text})),
        ),
        ChannelKind::Ntfy => {
            let priority = match (firing, notification.severity.as_str()) {
                (true, "critical") => "5",
                (true, "warning") => "4",
                _ => "3",
            };
            headers = vec![
                ("Content-Type", "text/plain; charset=utf-8".to_owned()),
                ("Title", notification.title()),
                ("Priority", priority.to_owned()),
                (
                    "Tags",
                    if firing {
                        "rotating_light"
                    } else {
                        "white_check_mark"
                    }
                    .to_owned(),
                ),
                ("Click", notification.link.clone()),
            ];
            if let Some(token) = &channel.token {
                headers.push(("Authorization", format!("Bearer {token}")));
            }
            (channel.url.clone(), notification.line().into_bytes())
        }
        ChannelKind::Gotify => {
            let priority = match (firing, notification.severity.as_str()) {
                (true, "critical") => 8,
                (true, "warning") => 5,
                _ => 2,
            };
            headers.push(("X-Gotify-Key", channel.token.clone().unwrap_or_default()));
            let url = format!("{}/message", channel.url.trim_end_matches('/'));
            let body = json(serde_json::json!({
                "title": notification.title(), "message": text, "priority": priority}));
            (url, body)
        }
    };
    Outgoing { url, headers, body }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256={hex}")
}

/// Sends one request; an error says why it failed (status and the start
/// of the answer, or the transport's error).
pub async fn send(
    client: &reqwest::Client,
    request: Outgoing,
    timeout: Duration,
) -> std::result::Result<(), String> {
    let mut builder = client
        .post(&request.url)
        .timeout(timeout)
        .body(request.body);
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let response = builder.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("no answer within {} s", timeout.as_secs_f64())
        } else {
            format!("cannot send: {e}")
        }
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!("answered {status}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(state: &str) -> Notification {
        Notification {
            version: 1,
            rule: "cpu-hot".into(),
            host: "web-1".into(),
            state: state.into(),
            severity: "critical".into(),
            condition: "avg(cpu_load over 5m) > 90".into(),
            value: Some(95.123),
            threshold: Some(90.0),
            since: 1.0,
            at: 2.0,
            repeat: false,
            link: "http://sysmon.example/#/host/web-1".into(),
        }
    }

    fn channel(kind: ChannelKind) -> ChannelSpec {
        ChannelSpec {
            name: "c".into(),
            kind,
            url: "https://hooks.example/x".into(),
            secret: None,
            token: Some("tok".into()),
        }
    }

    #[test]
    fn each_kind_gets_its_own_shape() {
        let firing = notification("firing");
        assert_eq!(
            firing.line(),
            "[FIRING] cpu-hot on web-1: avg(cpu_load over 5m) > 90 (value 95.12)"
        );
        let slack = outgoing(
            &ChannelSpec {
                token: None,
                ..channel(ChannelKind::Slack)
            },
            &firing,
        );
        let body: serde_json::Value = serde_json::from_slice(&slack.body).unwrap();
        assert!(body["text"].as_str().unwrap().starts_with("[FIRING]"));
        let gotify = outgoing(&channel(ChannelKind::Gotify), &firing);
        assert_eq!(gotify.url, "https://hooks.example/x/message");
        assert!(gotify.headers.contains(&("X-Gotify-Key", "tok".into())));
        let ntfy = outgoing(&channel(ChannelKind::Ntfy), &notification("resolved"));
        assert!(ntfy.headers.contains(&("Priority", "3".into())));
        assert!(ntfy
            .headers
            .contains(&("Authorization", "Bearer tok".into())));
    }

    #[test]
    fn webhook_bodies_are_signed_when_a_secret_is_set() {
        let hook = ChannelSpec {
            secret: Some("s3cret".into()),
            ..channel(ChannelKind::Webhook)
        };
        let sent = outgoing(&hook, &notification("firing"));
        let header = sent
            .headers
            .iter()
            .find(|(name, _)| *name == SIGNATURE_HEADER)
            .unwrap();
        assert_eq!(header.1, signature("s3cret", &sent.body));
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn bad_channels_are_refused_by_name() {
        let bad = ChannelSpec {
            url: "ftp://x".into(),
            ..channel(ChannelKind::Webhook)
        };
        assert!(bad.check().unwrap_err().to_string().contains("http://"));
        let gotify = ChannelSpec {
            token: None,
            ..channel(ChannelKind::Gotify)
        };
        assert!(gotify.check().unwrap_err().to_string().contains("token"));
    }
}
