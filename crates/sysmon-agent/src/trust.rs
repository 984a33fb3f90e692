//! Where the agent sends, and whom it believes there: the server's URL, the
//! network timeout, and the certificate authorities an https:// or wss://
//! server must be signed by — the system's trust store (or, where it has
//! none, Mozilla's roots built in) and `--ca-file` for a private CA.
//! Plain http:// is for loopback only unless `--allow-insecure`: the
//! password and every sample would cross the network readable by anyone.

use std::net::IpAddr;
use std::path::Path;
#[cfg(feature = "tls")]
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// One server, reached one way: what every request of the agent needs.
#[derive(Clone)]
pub struct Endpoint {
    /// Base URL without a trailing slash.
    pub server: String,
    pub timeout: Duration,
    pub trust: Trust,
}

impl Endpoint {
    /// A server reached with no trust store: plain http:// (tests).
    pub fn plain(server: &str, timeout: Duration) -> Endpoint {
        Endpoint {
            server: server.to_owned(),
            timeout,
            trust: Trust::default(),
        }
    }
}

/// The certificate authorities the agent trusts.
#[derive(Clone, Default)]
pub struct Trust {
    #[cfg(feature = "tls")]
    roots: Arc<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

/// Refuses a plain-HTTP URL to another host unless allowed.
pub fn check_transport_security(server: &str, allow_insecure: bool) -> Result<()> {
    let Some(rest) = server.strip_prefix("http://") else {
        return Ok(());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    // With userinfo the real host follows the `@`; never loopback then.
    let local = !authority.contains('@') && is_loopback(host_of(authority));
    if allow_insecure || local {
        return Ok(());
    }
    Err(Error::Config(format!(
        "refusing to send the password and samples unencrypted to {server}: use https:// \
         (with --ca-file for a private CA), or --allow-insecure on a network you trust"
    )))
}

/// The host of `HOST[:PORT]`, without brackets.
fn host_of(authority: &str) -> &str {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed.split(']').next().unwrap_or_default();
    }
    authority.split(':').next().unwrap_or_default()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Trust {
    /// The system's trust store (Mozilla's roots where it has none), and
    /// the PEM certificates of `ca_file`.
    #[cfg(feature = "tls")]
    pub fn load(ca_file: Option<&Path>) -> Result<Trust> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;

        let mut roots = rustls_native_certs::load_native_certs().certs;
        if roots.is_empty() {
            roots = webpki_root_certs::TLS_SERVER_ROOT_CERTS.to_vec();
        }
        if let Some(path) = ca_file {
            let unreadable = |error: &dyn std::fmt::Display| {
                Error::Config(format!("--ca-file {}: {error}", path.display()))
            };
            let extra = CertificateDer::pem_file_iter(path)
                .map_err(|error| unreadable(&error))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|error| unreadable(&error))?;
            if extra.is_empty() {
                return Err(unreadable(&"no PEM certificate in it"));
            }
            roots.extend(extra);
        }
        Ok(Trust {
            roots: Arc::new(roots),
        })
    }

    #[cfg(not(feature = "tls"))]
    pub fn load(ca_file: Option<&Path>) -> Result<Trust> {
        match ca_file {
            Some(_) => Err(Error::Config(
                "--ca-file needs a sysmon-agent built with TLS (cargo feature `tls`)".into(),
            )),
            None => Ok(Trust::default()),
        }
    }

    /// For ureq (HTTP).
    #[cfg(feature = "tls")]
    pub fn http_tls(&self) -> ureq::tls::TlsConfig {
        let certificates: Vec<ureq::tls::Certificate<'static>> = self
            .roots
            .iter()
            .map(|der| ureq::tls::Certificate::from_der(der).to_owned())
            .collect();
        ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&certificates))
            .build()
    }

    /// For tungstenite (WebSocket).
    #[cfg(feature = "tls")]
    pub fn websocket_tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        let mut store = rustls::RootCertStore::empty();
        // A system certificate rustls cannot use is skipped, as browsers do.
        let (_added, _skipped) = store.add_parsable_certificates(self.roots.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| Error::Config(format!("TLS: {error}")))?
            .with_root_certificates(store)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback_unless_allowed() {
        for local in [
            "http://127.0.0.1:5000",
            "http://localhost",
            "http://[::1]:5000/prefix",
            "http://127.8.9.10",
            "https://monitor.example.com",
        ] {
            assert!(check_transport_security(local, false).is_ok(), "{local}");
        }
        for remote in [
            "http://monitor.internal:5000",
            "http://10.0.0.5",
            "http://[2001:db8::1]:80",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "http://127.0.0.1:5000@evil.example",
            "http://localhost:1@evil.example/x",
            "http://[::1]@evil.example",
        ] {
            let error = check_transport_security(remote, false)
                .unwrap_err()
                .to_string();
            assert!(error.contains("--allow-insecure"), "{remote}: {error}");
            assert!(check_transport_security(remote, true).is_ok(), "{remote}");
        }
    }
}
