//! TLS client configuration for upstreams and token endpoints.
//!
//! Trust: the platform's roots (rustls-native-certs) plus the bundled webpki roots (so a minimal
//! container without a CA bundle still works), plus `ca_file` when configured. ALPN offers h2 and
//! http/1.1 for upstreams; token endpoints get http/1.1 only (one request now and then).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("can't read CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("CA file {path} holds no certificate")]
    EmptyCaFile { path: String },
    #[error("TLS configuration failed")]
    Config(#[source] rustls::Error),
}

/// The crypto provider, chosen explicitly (no reliance on a process-wide default).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Root certificates: platform + webpki + `ca_file`.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Platform roots are best effort: a missing bundle is not an error (webpki roots remain).
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_file {
        let shown = path.display().to_string();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<_, _>>())
            .map_err(|source| TlsError::CaFile {
                path: shown.clone(),
                source,
            })?;
        if certs.is_empty() {
            return Err(TlsError::EmptyCaFile { path: shown });
        }
        for cert in certs {
            let _ = roots.add(cert);
        }
    }
    Ok(roots)
}

/// A client config trusting `roots`, offering the given ALPN protocols.
pub fn client_config(
    roots: RootCertStore,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
