//! Where notifications go: channels declared in the YAML file, each of one
//! kind, and what each kind is sent (its own JSON shape, or plain text).

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::transport::smtp::client::{Certificate, TlsParameters};
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
    /// Email: the sender, and the recipients.
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Email: how the connection to the SMTP server is protected
    /// (default `starttls`; `tls` for port 465; `none` only to this host).
    #[serde(default)]
    pub security: Option<SmtpSecurity>,
    /// Email: the SMTP login, if the server wants one.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Email: a PEM file of the CA that signed the SMTP server's
    /// certificate, trusted besides the usual roots (a private CA).
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// `ca_file`'s certificate, read when the channel is checked.
    #[serde(skip)]
    pub ca_pem: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    Starttls,
    Tls,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Webhook,
    Slack,
    Discord,
    Ntfy,
    Gotify,
    Email,
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
        if self.kind == ChannelKind::Email {
            return self.check_email(&url);
        }
        let email_only = self.from.is_some()
            || !self.to.is_empty()
            || self.security.is_some()
            || self.username.is_some()
            || self.password.is_some()
            || self.ca_file.is_some();
        if email_only {
            return Err(fail(
                "`from`, `to`, `security`, `username`, `password` and `ca_file` are for email channels",
            ));
        }
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

impl ChannelSpec {
    fn check_email(mut self, url: &reqwest::Url) -> Result<ChannelSpec> {
        let fail =
            |message: &str| Error::Config(format!("alert channel `{}`: {message}", self.name));
        if url.scheme() != "smtp" || url.host_str().is_none() {
            return Err(fail(
                "an email channel's `url` is smtp://HOST[:PORT] of the SMTP server",
            ));
        }
        let from = self
            .from
            .as_deref()
            .ok_or_else(|| fail("email needs `from`"))?;
        from.parse::<lettre::message::Mailbox>()
            .map_err(|e| fail(&format!("`from` is not an address ({e})")))?;
        if self.to.is_empty() {
            return Err(fail("email needs `to`: one address or more"));
        }
        for to in &self.to {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|e| fail(&format!("`to` {to} is not an address ({e})")))?;
        }
        if self.username.is_some() != self.password.is_some() {
            return Err(fail("give both `username` and `password`, or neither"));
        }
        if self.secret.is_some() || self.token.is_some() {
            return Err(fail("email takes no `secret` or `token`"));
        }
        let host = url
            .host_str()
            .unwrap_or_default()
            .trim_matches(|c| c == '[' || c == ']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if self.security == Some(SmtpSecurity::None) && !loopback {
            return Err(fail("`security: none` sends mail (and any password) in the clear: only to an SMTP server on this host"));
        }
        if let Some(path) = &self.ca_file {
            if self.security == Some(SmtpSecurity::None) {
                return Err(fail("`ca_file` is for `security: starttls` or `tls`"));
            }
            let pem = std::fs::read(path)
                .map_err(|e| fail(&format!("`ca_file` {}: {e}", path.display())))?;
            // lettre takes any text; rustls's PEM reader says what is wrong.
            use rustls_pki_types::pem::PemObject;
            let certificates: std::result::Result<Vec<_>, _> =
                rustls_pki_types::CertificateDer::pem_slice_iter(&pem).collect();
            match certificates {
                Ok(found) if !found.is_empty() => {}
                Ok(_) => {
                    return Err(fail(&format!(
                        "`ca_file` {} is not a PEM certificate (no CERTIFICATE block)",
                        path.display()
                    )))
                }
                Err(e) => {
                    return Err(fail(&format!(
                        "`ca_file` {} is not a PEM certificate ({e})",
                        path.display()
                    )))
                }
            }
            self.ca_pem = Some(pem);
        }
        Ok(self)
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
        // Sent by `deliver` as an email, never as a request; shaped as the
        // webhook so the match stays total.
        ChannelKind::Email => (
            channel.url.clone(),
            serde_json::to_vec(notification).unwrap_or_default(),
        ),
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

/// Notifies `channel`: an HTTP request, or an email; an error says why it
/// failed.
pub async fn deliver(
    client: &reqwest::Client,
    channel: &ChannelSpec,
    notification: &Notification,
    timeout: Duration,
) -> std::result::Result<(), String> {
    match channel.kind {
        ChannelKind::Email => send_email(channel, notification, timeout).await,
        _ => send(client, outgoing(channel, notification), timeout).await,
    }
}

/// The email of a notification: the line as its subject, and a plain-text
/// body that says everything the webhook's JSON does.
pub fn email(
    channel: &ChannelSpec,
    notification: &Notification,
) -> std::result::Result<lettre::Message, String> {
    let from = channel.from.as_deref().unwrap_or_default();
    let mut builder = lettre::Message::builder()
        .from(from.parse().map_err(|e| format!("`from`: {e}"))?)
        .subject(format!(
            "[{}] {} on {}",
            notification.state.to_uppercase(),
            notification.rule,
            notification.host
        ));
    for to in &channel.to {
        builder = builder.to(to.parse().map_err(|e| format!("`to` {to}: {e}"))?);
    }
    let number =
        |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |v| round(v).to_string());
    let body = format!(
        "{line}\n\nRule:      {rule} ({severity})\nHost:      {host}\nCondition: {condition}\n\
         Value:     {value} (threshold {threshold})\nSince:     {since} (unix seconds)\n\
         Chart:     {link}\n\n-- \nsysmon\n",
        line = notification.line(),
        rule = notification.rule,
        severity = notification.severity,
        host = notification.host,
        condition = notification.condition,
        value = number(notification.value),
        threshold = number(notification.threshold),
        since = notification.since,
        link = notification.link,
    );
    builder
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the email: {e}"))
}

async fn send_email(
    channel: &ChannelSpec,
    notification: &Notification,
    timeout: Duration,
) -> std::result::Result<(), String> {
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::Tls;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
    let message = email(channel, notification)?;
    let url = reqwest::Url::parse(&channel.url).map_err(|e| format!("`url`: {e}"))?;
    let host = url.host_str().unwrap_or_default();
    let security = channel.security.unwrap_or(SmtpSecurity::Starttls);
    let builder = match security {
        SmtpSecurity::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpSecurity::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(
            host,
        )),
    }
    .map_err(|e| format!("SMTP server {host}: {e}"))?;
    let builder = match (&channel.ca_pem, security) {
        (Some(pem), SmtpSecurity::Starttls) => builder.tls(Tls::Required(tls_trusting(host, pem)?)),
        (Some(pem), SmtpSecurity::Tls) => builder.tls(Tls::Wrapper(tls_trusting(host, pem)?)),
        _ => builder,
    };
    let port = url.port().unwrap_or(match security {
        SmtpSecurity::Tls => 465,
        SmtpSecurity::Starttls => 587,
        SmtpSecurity::None => 25,
    });
    let mut builder = builder.port(port).timeout(Some(timeout));
    if let (Some(username), Some(password)) = (&channel.username, &channel.password) {
        builder = builder.credentials(Credentials::new(username.clone(), password.clone()));
    }
    let sent = tokio::time::timeout(timeout, builder.build().send(message)).await;
    match sent {
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs_f64())),
        Ok(Err(e)) => Err(format!("SMTP server {host}:{port}: {e}")),
        Ok(Ok(_)) => Ok(()),
    }
}

/// TLS to `host` trusting the usual roots and the CA of `pem`.
fn tls_trusting(host: &str, pem: &[u8]) -> std::result::Result<TlsParameters, String> {
    let ca = Certificate::from_pem(pem).map_err(|e| format!("`ca_file`: {e}"))?;
    TlsParameters::builder(host.to_owned())
        .add_root_certificate(ca)
        .build_rustls()
        .map_err(|e| format!("TLS to {host}: {e}"))
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
            // Without the URL: for Slack, Discord and ntfy it is the secret.
            format!("cannot send: {}", e.without_url())
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
            from: None,
            to: Vec::new(),
            security: None,
            username: None,
            password: None,
            ca_file: None,
            ca_pem: None,
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
    fn a_ca_file_must_be_a_readable_pem_certificate_for_tls() {
        let mail = |ca_file: &str, security: SmtpSecurity| {
            ChannelSpec {
                url: "smtp://127.0.0.1:2525".into(),
                token: None,
                from: Some("sysmon@example.com".into()),
                to: vec!["ops@example.com".into()],
                security: Some(security),
                ca_file: Some(ca_file.into()),
                ..channel(ChannelKind::Email)
            }
            .check()
            .unwrap_err()
            .to_string()
        };
        let missing = mail("/nonexistent/ca.pem", SmtpSecurity::Starttls);
        assert!(
            missing.contains("`ca_file` /nonexistent/ca.pem"),
            "{missing}"
        );
        let text_file = std::env::temp_dir().join(format!("sysmon-not-pem-{}", std::process::id()));
        std::fs::write(&text_file, "not a certificate\n").unwrap();
        let text_file = text_file.to_str().unwrap();
        let not_pem = mail(text_file, SmtpSecurity::Tls);
        assert!(not_pem.contains("not a PEM certificate"), "{not_pem}");
        let plain = mail(text_file, SmtpSecurity::None);
        assert!(plain.contains("`ca_file` is for"), "{plain}");
    }

    #[test]
    fn emails_say_what_the_webhook_says() {
        let mail = ChannelSpec {
            url: "smtp://127.0.0.1:2525".into(),
            token: None,
            from: Some("sysmon <sysmon@example.com>".into()),
            to: vec!["ops@example.com".into()],
            security: Some(SmtpSecurity::None),
            ..channel(ChannelKind::Email)
        }
        .check()
        .unwrap();
        let text =
            String::from_utf8(email(&mail, &notification("firing")).unwrap().formatted()).unwrap();
        assert!(
            text.contains("Subject: [FIRING] cpu-hot on web-1"),
            "{text}"
        );
        assert!(text.contains("Value:     95.12 (threshold 90)"), "{text}");
        assert!(
            text.contains("http://sysmon.example/#/host/web-1"),
            "{text}"
        );
        let remote = ChannelSpec {
            url: "smtp://mail.example.com".into(),
            ..mail.clone()
        };
        assert!(remote
            .check()
            .unwrap_err()
            .to_string()
            .contains("in the clear"));
        let nobody = ChannelSpec {
            to: Vec::new(),
            ..mail
        };
        assert!(nobody.check().unwrap_err().to_string().contains("`to`"));
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
