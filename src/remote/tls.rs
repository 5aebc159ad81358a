//! TLS for https URLs: rustls with the ring provider, trusting `--cafile` or the system's CA
//! bundle, and TLS failures in words.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};

/// A TLS failure in words.
pub(super) fn tls_error(hp: &str, e: std::io::Error) -> anyhow::Error {
    let untrusted = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|r| matches!(r, rustls::Error::InvalidCertificate(_)));
    if untrusted {
        anyhow!(
            "the TLS certificate of {hp} is not trusted ({e}); give --cafile FILE with the \
             certificate (or the CA that signed it) in PEM"
        )
    } else {
        anyhow!(
            "TLS handshake with {hp} failed: {e} (is it serving plain http? then use an http:// URL)"
        )
    }
}

/// A TLS client trusting `cafile`'s certificates, else the system's CA bundle.
pub(super) fn tls_connector(cafile: Option<&Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let bundle = match cafile {
        Some(f) => f.to_owned(),
        None => system_ca_bundle().context(
            "no system CA bundle found for https (SSL_CERT_FILE, /etc/ssl/certs/...); give --cafile FILE",
        )?,
    };
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(&bundle)
        .with_context(|| format!("reading certificates from {}", bundle.display()))?;
    for cert in certs {
        let cert =
            cert.with_context(|| format!("reading certificates from {}", bundle.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("a certificate in {}", bundle.display()))?;
    }
    if roots.is_empty() {
        bail!("no PEM certificate in {}", bundle.display());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The CA bundle OpenSSL would use: `SSL_CERT_FILE`, else the usual distribution paths.
fn system_ca_bundle() -> Option<PathBuf> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let usual = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ]
    .map(PathBuf::from);
    from_env.into_iter().chain(usual).find(|p| p.is_file())
}
