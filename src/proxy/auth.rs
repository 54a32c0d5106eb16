//! Phase 2's `Proxy-Authorization` check: local callers prove they may spend the credentials.
//!
//! `[proxy] proxy_auth = "SECRET"` makes every TCP listener (except a route with
//! `require_auth = false`) demand `Proxy-Authorization`, either `Basic base64(any-user:SECRET)`
//! (RFC 7617, what curl sends for a proxy URL `http://user:SECRET@127.0.0.1:8080`) or
//! `Bearer SECRET` (RFC 6750 §2.1's syntax, for clients that can set a header but not a proxy URL).
//!
//! The comparison must not tell a guesser anything: not how many leading bytes were right, and
//! not how long the secret is. Both sides are hashed to SHA-256 first (the secret's digest once,
//! when the config is loaded, so no per-request work depends on the secret's length), then the
//! two 32-byte digests are compared by XOR-folding every byte, with no early exit.
//!
//! The secret may change while credproxy runs (`proxy_auth = { file = ... }` followed, or a
//! `{ command, ttl }` re-run: `app.rs` starts its keeper). The digest is rebuilt once per change,
//! by the first request that sees the secret's version move; from then on the old secret is
//! refused.
//!
//! ```
//! use credproxy::proxy::auth::ProxyAuth;
//! use credproxy::secret::Secret;
//! let auth = ProxyAuth::new(&Secret::from("s3cret"));
//! assert!(auth.verify(Some(b"Basic dXNlcjpzM2NyZXQ=")));   // user:s3cret
//! assert!(auth.verify(Some(b"Bearer s3cret")));
//! assert!(!auth.verify(Some(b"Bearer s3cre")));
//! assert!(!auth.verify(None));
//! ```

use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::secret::{Live, Secret};

/// The `proxy_auth` secret as the request path uses it: its SHA-256 digest, made once per
/// version of the secret.
#[derive(Clone)]
pub struct ProxyAuth {
    secret: Live,
    /// The digest and the secret's [`Live::version`] it was made from.
    digest: Arc<ArcSwap<(u64, [u8; 32])>>,
}

impl PartialEq for ProxyAuth {
    fn eq(&self, other: &Self) -> bool {
        self.digest() == other.digest()
    }
}

impl std::fmt::Debug for ProxyAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyAuth([redacted])")
    }
}

impl ProxyAuth {
    /// A fixed secret.
    pub fn new(secret: &Secret) -> Self {
        ProxyAuth::live(&Live::from(secret.clone()))
    }

    /// The secret `live`, as it is at each request.
    pub fn live(live: &Live) -> Self {
        let version = live.version();
        ProxyAuth {
            digest: Arc::new(ArcSwap::from_pointee((version, digest_of(&live.get())))),
            secret: live.clone(),
        }
    }

    /// The digest of the secret now: the kept one, unless the secret changed since.
    fn digest(&self) -> [u8; 32] {
        // The version is read before the value: a digest is never filed under a newer version
        // than the value it was made from.
        let version = self.secret.version();
        let kept = self.digest.load();
        if kept.0 == version {
            return kept.1;
        }
        let digest = digest_of(&self.secret.get());
        self.digest.store(Arc::new((version, digest)));
        digest
    }

    /// Whether a `Proxy-Authorization` value (raw bytes, `None` when absent) presents the secret.
    pub fn verify(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(presented_secret) else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(&presented).into();
        digests_equal(&digest, &self.digest())
    }
}

fn digest_of(secret: &Secret) -> [u8; 32] {
    Sha256::digest(secret.expose().as_bytes()).into()
}

/// The secret a `Proxy-Authorization` value carries: Basic's password (after the first `:`, so
/// a password may itself contain `:`), or Bearer's token. Schemes are case-insensitive
/// (RFC 9110 §11.1).
fn presented_secret(value: &[u8]) -> Option<Vec<u8>> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(rest.as_bytes().to_vec())
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        Some(decoded[colon + 1..].to_vec())
    } else {
        None
    }
}

/// Equal without an early exit: every byte is looked at whatever the first difference.
/// `black_box` keeps the optimizer from turning the fold back into a short-circuit compare.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= std::hint::black_box(a[i] ^ b[i]);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn basic_with_any_user_and_bearer() {
        let auth = ProxyAuth::new(&Secret::from("pa:ss word"));
        assert!(auth.verify(Some(&basic("anyone:pa:ss word"))));
        assert!(auth.verify(Some(&basic(":pa:ss word"))));
        assert!(auth.verify(Some(b"bearer pa:ss word")));
        assert!(auth.verify(Some(b"BASIC dXNlcjpwYTpzcyB3b3Jk")));
    }

    #[test]
    fn everything_else_is_refused() {
        let auth = ProxyAuth::new(&Secret::from("secret"));
        for bad in [
            basic("user:secreT"),
            basic("user:secret1"),
            basic("user:"),
            basic("secret"),
            b"Basic not-base64!".to_vec(),
            b"Bearer secre".to_vec(),
            b"Bearer".to_vec(),
            b"Digest secret".to_vec(),
            b"secret".to_vec(),
            b"Bearer secret\xff".to_vec(),
            Vec::new(),
        ] {
            assert!(
                !auth.verify(Some(&bad)),
                "{:?}",
                String::from_utf8_lossy(&bad)
            );
        }
        assert!(!auth.verify(None));
    }

    #[test]
    fn digests_compare_every_byte() {
        let a = [7u8; 32];
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!digests_equal(&a, &b), "byte {i}");
        }
        assert!(digests_equal(&a, &a));
    }

    #[test]
    fn debug_does_not_show_the_digest() {
        let auth = ProxyAuth::new(&Secret::from("secret"));
        assert_eq!(format!("{auth:?}"), "ProxyAuth([redacted])");
    }
}
