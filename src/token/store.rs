//! Where tokens are kept between runs, and how processes take turns refreshing them.
//!
//! A [`TokenStore`] keeps one [`StoredToken`] per provider and hands out an exclusive, cross-process
//! lock per provider. The trait is small on purpose so a shared store (say Redis, for a fleet of
//! sidecars sharing one token) can come later; today there are two implementations:
//!
//! - [`FileStore`]: one JSON file per provider under `state_dir`, mode 0600 in a 0700 directory
//!   whatever the umask, written atomically (temp file, fsync, rename, fsync of the directory), and
//!   an advisory `flock` on `<provider>.lock`.
//! - [`RedisStore`]: shared by N instances (DESIGN.md, "Many instances"): a lease per provider,
//!   commits conditional on the generation read, values sealed with AES-256-GCM.
//! - [`MemoryStore`]: in-memory, for tests of the modules that use a store.
//!
//! How the token engine uses it (DESIGN.md, "Token store"): `run`, `login`, `token` and `logout` may
//! run at the same time, and a rotating refresh token must never be spent twice. So a refresh is
//!
//! ```text
//! lock(provider) → load → still needs a refresh? → token request → save → unlock
//! ```
//!
//! and the process that waited for the lock finds the other one's fresh token on `load` instead of
//! spending the same refresh token again. The new token set is saved before it is published or used.
//!
//! A stored token carries a [`fingerprint`] of the token URL, client id and grant it was obtained
//! with; the engine discards a stored token whose fingerprint does not match the configuration.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secret::Secret;

mod file;
mod memory;
pub mod redis;
mod time;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// What is kept for a provider between runs.
///
/// `Debug` is derived: every secret is a [`Secret`], whose `Debug` prints `[redacted]` (a test
/// checks). A new secret field must be a `Secret` too, or live in `secrets`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredToken {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Unix seconds; `None`: unknown or never.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub obtained_at: i64,
    /// [`fingerprint`] of what the token was obtained with.
    pub fingerprint: String,
    /// Other secrets a provider needs next time, e.g. Baselime's `apiKey`, BlendVision's login
    /// refresh token or org id.
    #[serde(default)]
    pub secrets: BTreeMap<String, Secret>,
    /// Public facts, e.g. a workspace id.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// `expires_at` is not what the server said: its reply (and JWT `exp`, introspection) gave
    /// no usable expiry, and `default_lifetime` was assumed. The refresher then learns the real
    /// lifetime from the first 401 (issue 14 item 1); a server-given expiry is never overridden.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expiry_assumed: bool,
}

/// Identifies what a token was obtained with: a token from another token URL, client id or grant
/// is not reused. SHA-256 (hex) of the three, each length-prefixed so no two inputs collide by
/// shifting bytes between fields, and `None` differs from `Some("")`.
pub fn fingerprint(token_url: &str, client_id: Option<&str>, grant: &str) -> String {
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, b"credproxy token fingerprint v1");
    field(&mut h, token_url.as_bytes());
    match client_id {
        None => h.update([0u8]),
        Some(id) => {
            h.update([1u8]);
            field(&mut h, id.as_bytes());
        }
    }
    field(&mut h, grant.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps one token per provider, and serializes refreshes across processes.
///
/// Provider names are `[A-Za-z0-9_-]+` (they become file names); anything else is
/// [`StoreError::InvalidProvider`]. Methods block (file I/O, waiting for a lock): async callers use
/// `tokio::task::spawn_blocking`.
pub trait TokenStore: Send + Sync + 'static {
    /// The stored token, or `None` if there is none.
    fn load(&self, provider: &str) -> Result<Option<StoredToken>, StoreError>;

    /// Replaces the stored token. When it returns `Ok`, the token survives a crash.
    fn save(&self, provider: &str, token: &StoredToken) -> Result<(), StoreError>;

    /// Forgets the stored token; `false` if there was none.
    fn remove(&self, provider: &str) -> Result<bool, StoreError>;

    /// Waits for the exclusive lock on this provider, across processes, held until the guard
    /// drops. Not reentrant: locking a provider again while holding its guard waits forever.
    fn lock(&self, provider: &str) -> Result<Box<dyn StoreLock>, StoreError>;

    /// Takes the lock if nobody holds it; `None` if someone does.
    fn try_lock(&self, provider: &str) -> Result<Option<Box<dyn StoreLock>>, StoreError>;

    /// A counter that moves when another process may have changed this provider's token, for
    /// stores that can tell (Redis: pub/sub). `None`: re-reading on a timer is all there is.
    fn changes(&self, _provider: &str) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// How a store that can be away is doing (`/status`, `/readyz`, `credproxy status`); `None`
    /// for stores with nothing to report (file, memory). Answers at once, from what the store
    /// last saw: never waits on the network.
    fn health(&self) -> Option<StoreHealth> {
        None
    }
}

/// What [`TokenStore::health`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// `"redis"`.
    pub kind: &'static str,
    /// Why the store can't be used right now (`store_unavailable`); `None` when it works.
    pub unavailable: Option<String>,
}

/// The store the configuration asks for: the file store in `state_dir`, or Redis (`[store]`),
/// whose tokens kept while Redis is away go under `state_dir/redis-pending/`. `events` counts
/// what only the Redis store does ([`redis::StoreEvent`]).
pub fn open(
    proxy: &crate::config::ProxySettings,
    settings: &crate::config::StoreSettings,
    events: redis::StoreEvents,
) -> Result<std::sync::Arc<dyn TokenStore>, StoreError> {
    use crate::config::StoreSettings;
    match settings {
        StoreSettings::File => Ok(std::sync::Arc::new(FileStore::open(&proxy.state_dir)?)),
        StoreSettings::Redis(r) => {
            let endpoint = redis::Endpoint::parse(r.url.expose())
                .map_err(|message| StoreError::Url { message })?;
            let root_cert = match &proxy.ca_file {
                Some(path) => Some(std::fs::read(path).map_err(|source| StoreError::Read {
                    path: path.clone(),
                    source,
                })?),
                None => None,
            };
            Ok(std::sync::Arc::new(RedisStore::open(
                redis::RedisOptions {
                    endpoint,
                    key: r.encryption_key.0,
                    key_prefix: r.key_prefix.clone(),
                    pending_dir: proxy.state_dir.join("redis-pending"),
                    root_cert,
                    lease_ttl: r.lease_ttl,
                    events,
                },
            )?))
        }
    }
}

/// Where the configured store is, for messages: the state directory or the Redis URL (its
/// password hidden).
pub fn describe(
    proxy: &crate::config::ProxySettings,
    settings: &crate::config::StoreSettings,
) -> String {
    match settings {
        crate::config::StoreSettings::File => proxy.state_dir.display().to_string(),
        crate::config::StoreSettings::Redis(r) => redis::Endpoint::parse(r.url.expose())
            .map_or_else(|_| "Redis".to_owned(), |e| e.to_string()),
    }
}

/// Holds a provider's lock; dropping it unlocks.
pub trait StoreLock: Send {
    /// How long the lock is certain to be held still, for locks that expire (a Redis lease);
    /// `None`: until dropped. A token call starts only with enough left, and is cut before none
    /// is left.
    fn remaining(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long a renewal makes it last, for locks that expire; `None`: they don't.
    fn ttl(&self) -> Option<std::time::Duration> {
        None
    }

    /// For locks that can be lost while held (a Redis lease another instance took): turns
    /// `true` when it is, so a token call under it is cut at once.
    fn lost(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        None
    }
}

/// Errors from a [`TokenStore`]. Messages name files, never their contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("{0:?} is not a valid provider name for the token store (letters, digits, `-`, `_`)")]
    InvalidProvider(String),
    #[error("can't create token store directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't restrict permissions of {}", path.display())]
    Permissions {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't read token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {} is corrupt; it will be replaced on the next save", path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
    #[error(
        "token file {} has format version {found}, this credproxy reads version {}; \
         it will be replaced on the next save",
        path.display(),
        file::FORMAT_VERSION
    )]
    Version { path: PathBuf, found: u64 },
    #[error("can't write token file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't remove token file {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("can't lock {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `url` has any password replaced by `***`.
    #[error("the token store at {url} failed to {what}")]
    Redis {
        what: &'static str,
        url: String,
        #[source]
        source: ::redis::RedisError,
    },
    #[error("the stored token of {provider} can't be opened; it will be replaced on the next save")]
    Sealed {
        provider: String,
        #[source]
        source: redis::seal::OpenError,
    },
    #[error("{message}")]
    Url { message: String },
    #[error(
        "the token store lease has {left_ms} ms left, too little for a token call; retrying with a new lease"
    )]
    LeaseShort { left_ms: u64 },
    #[error("the new token of {provider} was not committed: {why}; it is kept for the next holder")]
    NotCommitted { provider: String, why: &'static str },
    #[error(
        "the token of {provider} was removed from the token store (credproxy logout) while it was renewed; the new token is dropped: run `credproxy login {provider}`"
    )]
    Removed { provider: String },
}

impl StoreError {
    /// The stored token exists but can't be used ([`Corrupt`](Self::Corrupt) or
    /// [`Version`](Self::Version)): carry on as if there were none, and the next save replaces it.
    pub fn is_unusable_token(&self) -> bool {
        matches!(
            self,
            StoreError::Corrupt { .. } | StoreError::Version { .. } | StoreError::Sealed { .. }
        )
    }
}

/// Why a token file could not be parsed: what kind of problem and where.
///
/// Not `serde_json::Error` itself: its messages quote values from the file ("invalid type: string
/// \"…\""), and a value in a token file may be a token.
#[derive(Debug, thiserror::Error)]
#[error("{what} at line {line}, column {column}")]
pub struct ParseError {
    what: &'static str,
    line: usize,
    column: usize,
}

impl From<serde_json::Error> for ParseError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        let what = match e.classify() {
            Category::Syntax => "not valid JSON",
            Category::Eof => "JSON cut short",
            Category::Data => "JSON not in the token file format",
            Category::Io => "read error",
        };
        ParseError {
            what,
            line: e.line(),
            column: e.column(),
        }
    }
}

/// Checks a provider name before it becomes part of a file name.
fn check_provider(provider: &str) -> Result<(), StoreError> {
    let ok = !provider.is_empty()
        && provider
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidProvider(provider.to_owned()))
    }
}

impl fmt::Debug for dyn StoreLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreLock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample() -> StoredToken {
        StoredToken {
            access_token: Secret::from("at-SECRET-1"),
            refresh_token: Some(Secret::from("rt-SECRET-2")),
            expires_at: Some(1_900_000_000),
            obtained_at: 1_800_000_000,
            fingerprint: fingerprint("https://auth.example/token", Some("cid"), "refresh_token"),
            secrets: BTreeMap::from([("apiKey".to_owned(), Secret::from("key-SECRET-3"))]),
            details: BTreeMap::from([("workspace".to_owned(), "ws-1".to_owned())]),
            expiry_assumed: false,
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        let shown = format!("{:?} {:#?}", sample(), sample());
        assert!(!shown.contains("SECRET"), "{shown}");
        assert!(
            shown.contains("[redacted]") && shown.contains("ws-1"),
            "{shown}"
        );
    }

    #[test]
    fn fingerprint_tells_apart_url_client_and_grant() {
        let base = fingerprint("https://a/token", Some("id"), "client_credentials");
        assert_eq!(base.len(), 64);
        assert!(base.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            base,
            fingerprint("https://a/token", Some("id"), "client_credentials")
        );
        for other in [
            fingerprint("https://b/token", Some("id"), "client_credentials"),
            fingerprint("https://a/token", Some("id2"), "client_credentials"),
            fingerprint("https://a/token", None, "client_credentials"),
            fingerprint("https://a/token", Some(""), "client_credentials"),
            fingerprint("https://a/token", Some("id"), "password"),
            // Bytes moved from one field to the next must not collide.
            fingerprint("https://a/toke", Some("nid"), "client_credentials"),
        ] {
            assert_ne!(base, other);
        }
        assert_ne!(fingerprint("u", None, "g"), fingerprint("u", Some(""), "g"));
    }

    #[test]
    fn provider_names_are_checked() {
        for ok in ["a", "my-api_2", "ABC"] {
            assert!(check_provider(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a.b", "a b", "ä", "../x", "a\nb"] {
            let err = check_provider(bad).unwrap_err();
            assert!(matches!(err, StoreError::InvalidProvider(_)), "{bad}");
        }
    }

    #[test]
    fn parse_error_quotes_nothing_from_the_file() {
        let e = serde_json::from_str::<StoredToken>(r#"{"access_token": 123456789}"#).unwrap_err();
        assert!(
            e.to_string().contains("123456789"),
            "serde_json does quote: {e}"
        );
        let ours = ParseError::from(e).to_string();
        assert!(!ours.contains("123456789"), "{ours}");
    }
}
