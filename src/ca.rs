//! The local CA that signs the certificates credproxy presents when it intercepts HTTPS to a
//! claimed host (`intercept = "claimed"`; DESIGN.md "HTTPS clients").
//!
//! It lives in `state_dir/ca/` (`files.rs`), is created on first need, and is read back on every
//! later start, so users trust it once. ECDSA P-256, a random 128-bit serial, ten years; with
//! `ca_name_constraints = true` it carries X.509 name constraints that permit only the claimed
//! hosts, so even its key, if stolen, can't sign for any other name a client would accept
//! (`mint.rs`). Leaf certificates are `leaves.rs`'s.
//!
//! The key never leaves this module: it is read into an [`rcgen::Issuer`], and only
//! certificates come out. [`LocalCa`]'s `Debug` names the directory only.

pub mod bundle;
pub mod files;
pub mod leaves;
pub mod mint;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use time::OffsetDateTime;

use files::{CERT_FILE, CaDir, KEY_FILE};

pub use leaves::Leaves;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("can't use the CA directory {}", .path.display())]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't read {}: it is not a CA certificate and key credproxy can use (remove the directory {} to make a new CA, then trust the new ca.pem)", .path.display(), .dir.display())]
    Unreadable {
        path: PathBuf,
        dir: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("can't make a certificate")]
    Mint(#[source] rcgen::Error),
    #[error("can't use a minted certificate")]
    Tls(#[source] rustls::Error),
    #[error("`{0}` can't be a certificate's name")]
    BadName(String),
}

/// What a CA's name constraints permit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permitted {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Permitted {
    /// Whether a certificate for `name` under these constraints is valid (RFC 5280 §4.2.1.10: a
    /// DNS subtree permits the name itself and every name below it).
    pub fn permits(&self, name: &str) -> bool {
        if let Some(ip) = mint::ip_of(name) {
            return self.ips.contains(&ip);
        }
        let name = name.to_ascii_lowercase();
        self.dns.iter().any(|s| {
            name == *s
                || (name.len() > s.len()
                    && name.ends_with(s.as_str())
                    && name.as_bytes()[name.len() - s.len() - 1] == b'.')
        })
    }
}

/// The CA, loaded or made.
pub struct LocalCa {
    dir: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    /// Its name constraints, `None` when it has none.
    permitted: Option<Permitted>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("dir", &self.dir)
            .field("permitted", &self.permitted)
            .finish_non_exhaustive()
    }
}

impl LocalCa {
    /// Open the CA in `dir`, making it when there is none. `constrain_to` (the claimed hosts'
    /// subtrees, with `ca_name_constraints = true`) constrains a CA made now; an existing CA is
    /// used as it is, and [`LocalCa::uncovered`] says which hosts it can't sign for.
    pub fn open(dir: &Path, constrain_to: Option<&[String]>) -> Result<LocalCa, CaError> {
        let io = |source| CaError::Dir {
            path: dir.to_owned(),
            source,
        };
        let ca_dir = CaDir::open(dir).map_err(io)?;
        let cert = ca_dir.read(CERT_FILE).map_err(io)?;
        let key = ca_dir.read(KEY_FILE).map_err(io)?;
        match (cert, key) {
            (Some(cert), Some(key)) => Self::load(dir, &cert, &key),
            (cert, key) => {
                if cert.is_some() || key.is_some() {
                    tracing::warn!(
                        dir = %dir.display(),
                        "the CA directory has only one of ca.pem and ca-key.pem; making a new CA (trust the new ca.pem)"
                    );
                }
                let ca = Self::create(&ca_dir, constrain_to)?;
                tracing::info!(
                    cert = %dir.join(CERT_FILE).display(),
                    constrained = constrain_to.is_some(),
                    "made a new local CA for interception: clients must trust its ca.pem"
                );
                Ok(ca)
            }
        }
    }

    /// Make a new CA in `dir`, replacing the one there (`credproxy ca init --force`): clients
    /// must trust the new `ca.pem`.
    pub fn recreate(dir: &Path, constrain_to: Option<&[String]>) -> Result<LocalCa, CaError> {
        let ca_dir = CaDir::open(dir).map_err(|source| CaError::Dir {
            path: dir.to_owned(),
            source,
        })?;
        Self::create(&ca_dir, constrain_to)
    }

    /// The CA in `dir` when there is one (never makes one).
    pub fn existing(dir: &Path) -> Result<Option<LocalCa>, CaError> {
        if !dir.join(CERT_FILE).exists() || !dir.join(KEY_FILE).exists() {
            return Ok(None);
        }
        Self::open(dir, None).map(Some)
    }

    fn create(dir: &CaDir, constrain_to: Option<&[String]>) -> Result<LocalCa, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Mint)?;
        let params = mint::root(OffsetDateTime::now_utc(), constrain_to);
        let cert = params.self_signed(&key).map_err(CaError::Mint)?;
        let io = |source| CaError::Dir {
            path: dir.path.clone(),
            source,
        };
        // The key first: a crash between the two leaves a key without a certificate, which the
        // next start replaces; never a trusted certificate whose key is lost.
        dir.write(KEY_FILE, 0o600, key.serialize_pem().as_bytes())
            .map_err(io)?;
        dir.write(CERT_FILE, 0o644, cert.pem().as_bytes())
            .map_err(io)?;
        Self::load(&dir.path, &cert.pem(), &key.serialize_pem())
    }

    fn load(dir: &Path, cert_pem: &str, key_pem: &str) -> Result<LocalCa, CaError> {
        let unreadable = |name: &str| {
            let path = dir.join(name);
            move |source| CaError::Unreadable {
                path,
                dir: dir.to_owned(),
                source,
            }
        };
        let key = KeyPair::from_pem(key_pem).map_err(unreadable(KEY_FILE))?;
        let cert_der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| rcgen::Error::CouldNotParseCertificate)
            .map_err(unreadable(CERT_FILE))?;
        let (permitted, not_after) = read_back(&cert_der)
            .ok_or_else(|| unreadable(CERT_FILE)(rcgen::Error::CouldNotParseCertificate))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(unreadable(CERT_FILE))?;
        Ok(LocalCa {
            dir: dir.to_owned(),
            cert_der,
            issuer,
            permitted,
            not_after,
        })
    }

    /// The CA's directory (`state_dir/ca`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SHA-256 fingerprint of the certificate, as `AB:CD:...` (what `openssl x509
    /// -fingerprint -sha256` and browsers show).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(self.cert_der.as_ref());
        digest
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The start of the certificate's validity.
    pub fn not_before(&self) -> Option<OffsetDateTime> {
        let (_, cert) = x509_parser::parse_x509_certificate(&self.cert_der).ok()?;
        Some(cert.validity().not_before.to_datetime())
    }

    /// `ca.pem`: the file clients trust.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join(CERT_FILE)
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn permitted(&self) -> Option<&Permitted> {
        self.permitted.as_ref()
    }

    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Of `hosts` (names a leaf may be asked for), those this CA's constraints don't permit.
    pub fn uncovered<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        match &self.permitted {
            None => Vec::new(),
            Some(p) => hosts.into_iter().filter(|h| !p.permits(h)).collect(),
        }
    }

    /// A leaf for `name`, with its key: (certificate DER, PKCS#8 key DER, not after).
    pub fn mint(
        &self,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<(CertificateDer<'static>, Vec<u8>, OffsetDateTime), CaError> {
        let params = mint::leaf(name, now).ok_or_else(|| CaError::BadName(name.to_owned()))?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaError::Mint)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Mint)?;
        Ok((cert.der().clone(), key.serialize_der(), params.not_after))
    }
}

/// The name constraints and the end of validity of a CA certificate.
fn read_back(der: &CertificateDer<'_>) -> Option<(Option<Permitted>, OffsetDateTime)> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let not_after = cert.validity().not_after.to_datetime();
    let Some(nc) = cert.name_constraints().ok()? else {
        return Some((None, not_after));
    };
    let mut p = Permitted::default();
    for subtree in nc.value.permitted_subtrees.iter().flatten() {
        match &subtree.base {
            GeneralName::DNSName(s) => p.dns.push(s.to_ascii_lowercase()),
            GeneralName::IPAddress(b) if b.len() == 8 => {
                p.ips.push(IpAddr::from(<[u8; 4]>::try_from(&b[..4]).ok()?));
            }
            GeneralName::IPAddress(b) if b.len() == 32 => {
                p.ips
                    .push(IpAddr::from(<[u8; 16]>::try_from(&b[..16]).ok()?));
            }
            _ => {}
        }
    }
    Some((Some(p), not_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subtree_permits_itself_and_names_below_it_only() {
        let p = Permitted {
            dns: vec!["example.com".into()],
            ips: vec!["127.0.0.1".parse().unwrap()],
        };
        assert!(p.permits("example.com"));
        assert!(p.permits("API.example.com"));
        assert!(!p.permits("badexample.com"));
        assert!(!p.permits("example.com.evil.test"));
        assert!(p.permits("127.0.0.1"));
        assert!(!p.permits("10.0.0.1"));
        assert!(!p.permits("[::1]"));
    }
}
