//! Built-in TLS (rustls): the certificate chain and key from PEM files,
//! read at startup and again on SIGHUP, so a renewed certificate (certbot,
//! an ACME client) is taken without a restart. A reload that fails keeps
//! the certificate in use and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Where the certificate chain and its private key are (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: PathBuf,
}

/// The certificate every handshake gets: swapped whole on reload.
#[derive(Debug)]
struct CurrentCertificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().clone())
    }
}

/// Accepts TLS with the files' certificate, reloaded on SIGHUP until
/// `stop`.
pub fn acceptor(files: &TlsFiles, stop: CancellationToken) -> Result<TlsAcceptor> {
    let current = Arc::new(CurrentCertificate(RwLock::new(load(files)?)));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| Error::Config(format!("TLS: {error}")))?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reload_on_hangup(current, files.clone(), stop)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn reload_on_hangup(
    current: Arc<CurrentCertificate>,
    files: TlsFiles,
    stop: CancellationToken,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())
        .map_err(|error| Error::Config(format!("cannot listen for SIGHUP: {error}")))?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = hangups.recv() => if received.is_none() { return },
            }
            match load(&files) {
                Ok(certificate) => {
                    *current.0.write() = certificate;
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => tracing::error!(
                    %error,
                    "TLS certificate not reloaded; still serving the previous one"
                ),
            }
        }
    });
    Ok(())
}

/// Reads and checks the chain and key: they must parse, and the key must
/// belong to the first certificate.
fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>> {
    let unreadable = |path: &Path, error: &dyn std::fmt::Display| {
        Error::Config(format!("TLS: cannot read {}: {error}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|error| unreadable(&files.cert, &error))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|error| unreadable(&files.cert, &error))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "TLS: {} holds no PEM certificate",
            files.cert.display()
        )));
    }
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|error| unreadable(&files.key, &error))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|error| {
        Error::Config(format!(
            "TLS: {} and {} do not make a certificate and its key: {error}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    Ok(Arc::new(certified))
}
