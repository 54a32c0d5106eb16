//! The additive bundle: the roots a client already trusts, plus credproxy's CA, in one PEM file
//! (`state_dir/ca/bundle.pem`, 0644), the file `credproxy env` and `credproxy exec` point
//! `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` and the rest at.
//!
//! Why additive: most of those variables *replace* a client's roots, so a file holding only the
//! local CA breaks every host credproxy does not intercept (tokscale#1344). The roots come from
//! the parent's own `SSL_CERT_FILE` when it is set (the user already chose them), else the
//! system's bundle file (the first of [`SYSTEM_BUNDLES`] that exists), else the platform's roots
//! as `rustls-native-certs` finds them.
//!
//! The default bundle is rewritten ([`ensure`]) when it is missing or older than `ca.pem` or
//! than the file its roots came from, by `run` (with interception), `exec`, `env` and `ca init`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use rustls::pki_types::CertificateDer;

use super::LocalCa;
use super::files::CERT_FILE;

pub const BUNDLE_FILE: &str = "bundle.pem";

/// System CA bundles, in the order they are looked for: Debian/Ubuntu/Gentoo/Arch, Fedora/RHEL
/// (old and new), openSUSE, OpenELEC, Alpine/macOS/Arch (the same list Go's crypto/x509 reads).
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Where a bundle's other roots came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roots {
    /// The parent's `SSL_CERT_FILE`.
    Parent(PathBuf),
    /// A system bundle file.
    System(PathBuf),
    /// The platform's roots, `n` of them (no bundle file was found).
    Platform(usize),
}

impl std::fmt::Display for Roots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Roots::Parent(p) => write!(f, "SSL_CERT_FILE ({})", p.display()),
            Roots::System(p) => write!(f, "the system roots ({})", p.display()),
            Roots::Platform(n) => write!(f, "the platform's {n} roots"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(
        "can't read SSL_CERT_FILE ({}), whose roots the bundle adds credproxy's CA to (unset it to use the system roots)",
        .0.display()
    )]
    Parent(PathBuf, #[source] io::Error),
    #[error("can't write the bundle {}", .0.display())]
    Write(PathBuf, #[source] io::Error),
}

/// The default bundle's path in a CA directory.
pub fn default_path(ca_dir: &Path) -> PathBuf {
    ca_dir.join(BUNDLE_FILE)
}

/// A certificate as PEM.
pub fn pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The roots to add to, as PEM text. `SSL_CERT_FILE` pointing at `out` itself (a shell that
/// already ran `eval "$(credproxy env)"`) is ignored: the bundle is made from the system's.
fn roots_text(out: &Path) -> Result<(Roots, String), BundleError> {
    if let Some(parent) = std::env::var_os("SSL_CERT_FILE").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(parent);
        if !same_file(&path, out) {
            let text =
                std::fs::read_to_string(&path).map_err(|e| BundleError::Parent(path.clone(), e))?;
            return Ok((Roots::Parent(path), text));
        }
    }
    for p in SYSTEM_BUNDLES {
        if let Ok(text) = std::fs::read_to_string(p) {
            return Ok((Roots::System(PathBuf::from(p)), text));
        }
    }
    let native = rustls_native_certs::load_native_certs();
    let text: String = native.certs.iter().map(pem).collect();
    Ok((Roots::Platform(native.certs.len()), text))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Write the bundle for `ca` to `out` (atomically, 0644). Our CA is not added twice when the
/// roots already hold it (a system store that trusts it).
pub fn write(ca: &LocalCa, out: &Path) -> Result<Roots, BundleError> {
    let (roots, mut text) = roots_text(out)?;
    let ours = pem(ca.cert_der());
    let body: String = ours.lines().filter(|l| !l.starts_with("-----")).collect();
    let compact: String = text.split_whitespace().collect();
    if !compact.contains(&body) {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&format!("# {}\n", super::mint::CA_NAME));
        text.push_str(&ours);
    }
    let err = |e| BundleError::Write(out.to_owned(), e);
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| err(io::Error::other("not a file name")))?
        .to_string_lossy()
        .into_owned();
    let temp = crate::fsutil::temp_name(&format!(".{name}.tmp-"));
    crate::fsutil::write_atomically(&dir, &temp, out, 0o644, text.as_bytes()).map_err(err)?;
    Ok(roots)
}

/// Whether the default bundle needs writing: missing, or older than `ca.pem` or than the file
/// its roots would come from.
pub fn is_stale(ca: &LocalCa) -> bool {
    let bundle = default_path(ca.dir());
    let Some(made) = modified(&bundle) else {
        return true;
    };
    let mut sources = vec![ca.dir().join(CERT_FILE)];
    match roots_text(&bundle) {
        Ok((Roots::Parent(p) | Roots::System(p), _)) => sources.push(p),
        Ok((Roots::Platform(_), _)) => {}
        Err(_) => return true,
    }
    sources.iter().filter_map(|s| modified(s)).any(|t| t > made)
}

/// Rewrite the default bundle when [`is_stale`]; its path.
pub fn ensure(ca: &LocalCa) -> Result<PathBuf, BundleError> {
    let path = default_path(ca.dir());
    if is_stale(ca) {
        let roots = write(ca, &path)?;
        tracing::debug!(bundle = %path.display(), %roots, "wrote the CA bundle");
    }
    Ok(path)
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_lines_are_64_columns_and_round_trip() {
        use rustls::pki_types::pem::PemObject;
        let der = CertificateDer::from(vec![7u8; 100]);
        let text = pem(&der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let back = CertificateDer::from_pem_slice(text.as_bytes()).unwrap();
        assert_eq!(back.as_ref(), der.as_ref());
    }
}
