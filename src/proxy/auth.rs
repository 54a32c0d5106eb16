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

//!
//! `[callers.NAME]` (DESIGN.md "What a credential may do") adds named callers, each with its own
//! secret and the providers it may use: [`Gate`] holds them beside `proxy_auth`. A caller proves
//! itself with `Basic base64(NAME:SECRET)` (the user name must be its name) or `Bearer SECRET`;
//! every caller's digest is compared, whatever matched first, so the time taken does not say
//! which caller (or whether any) matched. Either proof admits: a named caller, or the
//! `proxy_auth` secret (which may use every provider). With `[callers]` set, anything else is 407.
//!
//! ```
//! use credproxy::proxy::auth::{Caller, Gate, ProxyAuth};
//! use credproxy::secret::Secret;
//! let ci = ProxyAuth::new(&Secret::from("k1"));
//! let gate = Gate::new(None, vec![("ci".into(), ci, vec![0])], 2);
//! let Some(Caller::Named(ci)) = gate.admit(Some(b"Basic Y2k6azE=")) else { panic!() }; // ci:k1
//! assert!(gate.may_use(Caller::Named(ci), 0) && !gate.may_use(Caller::Named(ci), 1));
//! assert_eq!(gate.admit(Some(b"Bearer k1")), Some(Caller::Named(ci)));
//! assert_eq!(gate.admit(Some(b"Bearer k2")), None);
//! assert_eq!(gate.admit(None), None);
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

/// Who a request came from, as phase 2 found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Caller {
    /// No named caller: neither `proxy_auth` nor `[callers]` applies here, or the `proxy_auth`
    /// secret was presented. May use every provider.
    #[default]
    Anyone,
    /// `[callers.NAME]`, by its index in the [`Gate`].
    Named(u16),
}

/// One `[callers.NAME]` as the request path keeps it: its name, its secret (a [`ProxyAuth`]:
/// its digest, rebuilt when a `{ file = }` or `{ command, ttl }` secret changes) and the
/// providers it may use.
struct NamedCaller {
    name: Arc<str>,
    secret: ProxyAuth,
    /// Indexed like the router's providers.
    may_use: Vec<bool>,
}

/// Phase 2's proof of who is calling: `proxy_auth` and the named callers, as digests.
#[derive(Default)]
pub struct Gate {
    proxy_auth: Option<ProxyAuth>,
    callers: Vec<NamedCaller>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("proxy_auth", &self.proxy_auth)
            .field("callers", &self.names().collect::<Vec<_>>())
            .finish()
    }
}

impl Gate {
    /// `callers`: (name, secret, indexes of the providers it may use) each; `providers`: how
    /// many providers the router has.
    pub fn new(
        proxy_auth: Option<ProxyAuth>,
        callers: Vec<(String, ProxyAuth, Vec<usize>)>,
        providers: usize,
    ) -> Self {
        Gate {
            proxy_auth,
            callers: callers
                .into_iter()
                .map(|(name, secret, allowed)| {
                    let mut may_use = vec![false; providers];
                    for i in allowed {
                        if let Some(m) = may_use.get_mut(i) {
                            *m = true;
                        }
                    }
                    NamedCaller {
                        name: name.into(),
                        secret,
                        may_use,
                    }
                })
                .collect(),
        }
    }

    /// Whether anything is asked of a caller at all.
    #[inline]
    pub fn is_open(&self) -> bool {
        self.proxy_auth.is_none() && self.callers.is_empty()
    }

    /// Who presented `header` (the raw `Proxy-Authorization`, `None` when absent): a named
    /// caller, anyone (no proof asked, or `proxy_auth`'s secret), or `None` (407).
    pub fn admit(&self, header: Option<&[u8]>) -> Option<Caller> {
        if self.is_open() {
            return Some(Caller::Anyone);
        }
        let (user, presented) = header.and_then(presented_credentials)?;
        let presented = digest(&presented);
        let mut found = None;
        let mut secret_of_a_caller = false;
        // Every caller is compared (no early exit): the time does not tell which one matched.
        for (i, c) in self.callers.iter().enumerate() {
            let secret_ok = digests_equal(&presented, &c.secret.digest());
            let name_ok = user.as_deref().is_none_or(|u| u == c.name.as_bytes());
            secret_of_a_caller |= secret_ok;
            if secret_ok && name_ok && found.is_none() {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            return Some(Caller::Named(i as u16));
        }
        // A caller's secret under another name is not proxy_auth's, even when the two are the
        // same secret (which `check` refuses, but a secret file can change at run time): it must
        // not pass for anyone, who may use every provider.
        if secret_of_a_caller {
            return None;
        }
        match &self.proxy_auth {
            Some(a) if digests_equal(&presented, &a.digest()) => Some(Caller::Anyone),
            _ => None,
        }
    }

    /// Whether `caller` may use provider `index` (every provider for [`Caller::Anyone`]).
    #[inline]
    pub fn may_use(&self, caller: Caller, index: usize) -> bool {
        match caller {
            Caller::Anyone => true,
            Caller::Named(i) => self
                .callers
                .get(usize::from(i))
                .is_some_and(|c| c.may_use.get(index).copied().unwrap_or(false)),
        }
    }

    /// A named caller's name (configured, so a bounded set: fit for a metrics label).
    pub fn name(&self, caller: Caller) -> Option<&Arc<str>> {
        match caller {
            Caller::Anyone => None,
            Caller::Named(i) => self.callers.get(usize::from(i)).map(|c| &c.name),
        }
    }

    /// The callers' names, in config order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.callers.iter().map(|c| &*c.name)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// `Basic`'s user name and password, or `Bearer`'s token (no user name).
#[allow(clippy::type_complexity)]
fn presented_credentials(value: &[u8]) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some((None, rest.as_bytes().to_vec()))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let mut decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|b| *b == b':')?;
        let password = decoded.split_off(colon + 1);
        decoded.truncate(colon);
        Some((Some(decoded), password))
    } else {
        None
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

    fn gate() -> Gate {
        Gate::new(
            Some(ProxyAuth::new(&Secret::from("shared"))),
            vec![
                (
                    "ci".into(),
                    ProxyAuth::new(&Secret::from("ci-key")),
                    vec![0],
                ),
                (
                    "agent".into(),
                    ProxyAuth::new(&Secret::from("agent:key")),
                    vec![1, 7],
                ),
            ],
            2,
        )
    }

    #[test]
    fn callers_by_basic_name_or_bearer_and_proxy_auth_beside_them() {
        let g = gate();
        assert_eq!(g.admit(Some(&basic("ci:ci-key"))), Some(Caller::Named(0)));
        assert_eq!(g.admit(Some(b"Bearer ci-key")), Some(Caller::Named(0)));
        assert_eq!(
            g.admit(Some(&basic("agent:agent:key"))),
            Some(Caller::Named(1))
        );
        // Basic's user name must be the caller's own.
        assert_eq!(g.admit(Some(&basic("agent:ci-key"))), None);
        assert_eq!(g.admit(Some(&basic("ci:agent:key"))), None);
        // proxy_auth's secret, with any user name, admits too.
        assert_eq!(g.admit(Some(&basic("who:shared"))), Some(Caller::Anyone));
        assert_eq!(g.admit(Some(b"Bearer shared")), Some(Caller::Anyone));
        for bad in [basic("ci:ci-keY"), b"Bearer ci-ke".to_vec(), Vec::new()] {
            assert_eq!(g.admit(Some(&bad)), None);
        }
        assert_eq!(g.admit(None), None);
        assert!(Gate::default().is_open());
        assert_eq!(Gate::default().admit(None), Some(Caller::Anyone));
    }

    /// A caller's secret that is also proxy_auth's (a secret file changed at run time; `check`
    /// refuses it in the config): under another user name it fails the caller and must not then
    /// pass for anyone, who may use every provider.
    #[test]
    fn a_callers_secret_under_another_name_is_not_proxy_auths() {
        let g = Gate::new(
            Some(ProxyAuth::new(&Secret::from("same"))),
            vec![("ci".into(), ProxyAuth::new(&Secret::from("same")), vec![0])],
            2,
        );
        assert_eq!(g.admit(Some(&basic("ci:same"))), Some(Caller::Named(0)));
        assert_eq!(g.admit(Some(&basic("other:same"))), None);
        assert_eq!(g.admit(Some(b"Bearer same")), Some(Caller::Named(0)));
    }

    #[test]
    fn a_caller_may_use_its_providers_only() {
        let g = gate();
        assert!(g.may_use(Caller::Named(0), 0));
        assert!(!g.may_use(Caller::Named(0), 1));
        assert!(g.may_use(Caller::Named(1), 1));
        // An index past the router's providers is no provider.
        assert!(!g.may_use(Caller::Named(1), 7));
        assert!(g.may_use(Caller::Anyone, 1));
        assert_eq!(g.name(Caller::Named(1)).map(|n| &**n), Some("agent"));
    }

    #[test]
    fn the_gate_debug_shows_names_only() {
        let g = gate();
        let shown = format!("{g:?}");
        assert!(shown.contains("ci") && !shown.contains("ci-key"), "{shown}");
    }

    #[test]
    fn debug_does_not_show_the_digest() {
        let auth = ProxyAuth::new(&Secret::from("secret"));
        assert_eq!(format!("{auth:?}"), "ProxyAuth([redacted])");
    }
}
