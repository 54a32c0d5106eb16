//! A throwaway certificate authority for end-to-end tests.
//!
//! Every fake in `support` serves real TLS so that credproxy's upstream and token clients are
//! exercised exactly as in production (DESIGN.md, "How an application reaches credproxy": the proxy
//! forwards over TLS, and `ca_file` adds extra roots). The CA lives only in memory, or in a temp file
//! written with [`TestCa::write_ca_file`] for configs that take a `ca_file` path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// Which protocols a server offers through ALPN (RFC 7301).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alpn {
    Http1Only,
    H2AndHttp1,
    H2Only,
}

impl Alpn {
    fn protocols(self) -> Vec<Vec<u8>> {
        match self {
            Alpn::Http1Only => vec![b"http/1.1".to_vec()],
            Alpn::H2AndHttp1 => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            Alpn::H2Only => vec![b"h2".to_vec()],
        }
    }
}

/// A leaf's validity: from the first `(year, month, day)` to the second, UTC midnight.
pub type Validity = ((i32, u8, u8), (i32, u8, u8));

/// An in-memory CA that signs leaf certificates for the fakes.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> Self {
        TestCa::named("credproxy test CA")
    }

    /// A CA with its own common name: one whose leaves a client trusting [`TestCa::new`]'s
    /// finds no issuer for at all (a CA of the same name looks like a bad signature).
    pub fn named(common_name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no SANs is valid");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        TestCa { issuer }
    }

    /// The CA certificate in PEM, as a `ca_file` would hold it.
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes `test-ca.pem` into `dir` and returns its path.
    pub fn write_ca_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, self.ca_pem()).expect("write CA file");
        path
    }

    /// A server config whose leaf covers `names` plus `localhost` and `127.0.0.1`, so a fake is
    /// reachable both by name and by address.
    pub fn server_config(&self, names: &[&str], alpn: Alpn) -> Arc<ServerConfig> {
        let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
        for name in names {
            if !sans.iter().any(|s| s == name) {
                sans.push((*name).to_owned());
            }
        }
        self.leaf_config(sans, None, alpn)
    }

    /// A server config (HTTP/1.1) whose leaf covers exactly `names` and, when `validity` is
    /// given, is valid only from its first `(year, month, day)` to its second (UTC midnight):
    /// the wrong-name and expired certificates of the TLS error tests.
    pub fn bad_leaf_config(&self, names: &[&str], validity: Option<Validity>) -> Arc<ServerConfig> {
        let sans = names.iter().map(|n| (*n).to_owned()).collect();
        self.leaf_config(sans, validity, Alpn::Http1Only)
    }

    fn leaf_config(
        &self,
        sans: Vec<String>,
        validity: Option<Validity>,
        alpn: Alpn,
    ) -> Arc<ServerConfig> {
        let mut params = CertificateParams::new(sans).expect("valid SANs");
        if let Some(((y0, m0, d0), (y1, m1, d1))) = validity {
            params.not_before = rcgen::date_time_ymd(y0, m0, d0);
            params.not_after = rcgen::date_time_ymd(y1, m1, d1);
        }
        params
            .distinguished_name
            .push(DnType::CommonName, "credproxy test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate leaf key");
        let leaf = params.signed_by(&key, &*self.issuer).expect("sign leaf");

        let chain = vec![leaf.der().clone(), self.ca_der()];
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .expect("leaf matches key");
        config.alpn_protocols = alpn.protocols();
        Arc::new(config)
    }

    /// A leaf for `localhost` and `127.0.0.1` as PEM `(certificate chain, PKCS#8 key)`, for a
    /// server that is not rustls (a Python gRPC server).
    pub fn leaf_pem(&self) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("valid SANs");
        params
            .distinguished_name
            .push(DnType::CommonName, "credproxy test server");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().expect("generate leaf key");
        let leaf = params.signed_by(&key, &*self.issuer).expect("sign leaf");
        (leaf.pem() + &self.ca_pem(), key.serialize_pem())
    }

    /// [`TestCa::leaf_pem`] written into `dir` as `leaf.pem` (the leaf, then the CA) and
    /// `leaf-key.pem`: for a server in another process (a Python fake).
    pub fn write_leaf_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (chain, key) = self.leaf_pem();
        let (cert, key_path) = (dir.join("leaf.pem"), dir.join("leaf-key.pem"));
        std::fs::write(&cert, chain).expect("write leaf");
        std::fs::write(&key_path, key).expect("write leaf key");
        (cert, key_path)
    }

    /// A client config that trusts this CA and nothing else (no ALPN set: callers choose).
    pub fn client_config(&self) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der()).expect("CA cert parses");
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default versions")
            .with_root_certificates(roots)
            .with_no_client_auth()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// The ring provider, named explicitly: the process may have no default installed, or another
/// test may have installed a different one.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
