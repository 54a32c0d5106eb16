//! Leaf certificates for intercepted hosts, each ready as a rustls `ServerConfig`.
//!
//! The exact claimed hosts get theirs when a config generation is built (at start and on each
//! reload), so the first handshake doesn't wait for a signature. A name matched by a wildcard
//! (`x.example.com` under `*.example.com`) gets one on first use, into a cache bounded at
//! [`WILDCARD_LIMIT`] entries (the least recently used goes first); a flood of names can't grow
//! it. Any leaf with less than `mint::RENEW_BEFORE` left is re-minted when next asked for: a
//! long-running credproxy never presents an expired certificate. Every leaf has its own key.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rustls::ServerConfig;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::{CaError, LocalCa, mint};

/// Leaves for names matched by a wildcard, at most this many at once.
pub const WILDCARD_LIMIT: usize = 1024;

/// ALPN for intercepted TLS when the provider's upstream speaks only HTTP/1.1 (or is not known
/// to speak HTTP/2): a client must not start HTTP/2 that would be translated for nothing.
const ALPN_H1: &[&[u8]] = &[b"http/1.1"];
/// ALPN when the upstream speaks HTTP/2 (DESIGN.md "HTTPS clients"): gRPC goes through.
const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];

/// One leaf, as two server configs that differ only in the ALPN they offer.
#[derive(Clone)]
struct Configs {
    h1: Arc<ServerConfig>,
    h2: Arc<ServerConfig>,
}

impl Configs {
    fn pick(&self, h2: bool) -> Arc<ServerConfig> {
        if h2 { self.h2.clone() } else { self.h1.clone() }
    }
}

struct Entry {
    config: Configs,
    not_after: OffsetDateTime,
    /// For the wildcard cache's eviction: the use counter when it was last handed out.
    used: u64,
    /// An exact claimed host's: never evicted.
    pinned: bool,
}

/// The leaves of one config generation.
pub struct Leaves {
    ca: Arc<LocalCa>,
    /// [`WILDCARD_LIMIT`]; smaller in tests.
    limit: usize,
    entries: Mutex<(HashMap<String, Entry>, u64)>,
}

impl Leaves {
    /// Leaves for `exact` (the claimed hosts that are not wildcards), minted now.
    pub fn new<'a>(
        ca: Arc<LocalCa>,
        exact: impl IntoIterator<Item = &'a str>,
    ) -> Result<Leaves, CaError> {
        let now = OffsetDateTime::now_utc();
        let mut map = HashMap::new();
        for name in exact {
            let (config, not_after) = server_config(&ca, name, now)?;
            map.insert(
                name.to_owned(),
                Entry {
                    config,
                    not_after,
                    used: 0,
                    pinned: true,
                },
            );
        }
        Ok(Leaves {
            ca,
            limit: WILDCARD_LIMIT,
            entries: Mutex::new((map, 0)),
        })
    }

    pub fn ca(&self) -> &Arc<LocalCa> {
        &self.ca
    }

    /// The server config presenting a leaf for `name` (normalized: lowercase, no trailing dot),
    /// offering ALPN `http/1.1` only.
    pub fn config_for(&self, name: &str) -> Result<Arc<ServerConfig>, CaError> {
        self.config_for_alpn(name, false)
    }

    /// [`Leaves::config_for`], offering `h2` too when `h2`.
    pub fn config_for_alpn(&self, name: &str, h2: bool) -> Result<Arc<ServerConfig>, CaError> {
        Ok(self.configs_at(name, OffsetDateTime::now_utc())?.pick(h2))
    }

    /// [`Leaves::config_for`] at `now` (wall-clock: certificates are judged by it).
    pub fn config_at(&self, name: &str, now: OffsetDateTime) -> Result<Arc<ServerConfig>, CaError> {
        Ok(self.configs_at(name, now)?.h1)
    }

    fn configs_at(&self, name: &str, now: OffsetDateTime) -> Result<Configs, CaError> {
        let pinned = {
            let mut guard = self.entries.lock();
            let (map, counter) = &mut *guard;
            *counter += 1;
            let stamp = *counter;
            match map.get_mut(name) {
                Some(e) if !mint::needs_renewal(e.not_after, now) => {
                    e.used = stamp;
                    return Ok(e.config.clone());
                }
                Some(e) => e.pinned,
                None => false,
            }
        };
        // Minted outside the lock: other handshakes don't wait for this signature.
        let (config, not_after) = server_config(&self.ca, name, now)?;
        let mut guard = self.entries.lock();
        let (map, counter) = &mut *guard;
        if !pinned && !map.contains_key(name) {
            let unpinned = map.values().filter(|e| !e.pinned).count();
            if unpinned >= self.limit
                && let Some(oldest) = map
                    .iter()
                    .filter(|(_, e)| !e.pinned)
                    .min_by_key(|(_, e)| e.used)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            name.to_owned(),
            Entry {
                config: config.clone(),
                not_after,
                used: *counter,
                pinned,
            },
        );
        Ok(config)
    }

    /// How many leaves are held (pinned and cached).
    pub fn len(&self) -> usize {
        self.entries.lock().0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn server_config(
    ca: &LocalCa,
    name: &str,
    now: OffsetDateTime,
) -> Result<(Configs, OffsetDateTime), CaError> {
    let (cert, key, not_after) = ca.mint(name, now)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    let mut config = ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert], key))
        .map_err(CaError::Tls)?;
    config.alpn_protocols = ALPN_H1.iter().map(|p| p.to_vec()).collect();
    // The same certificate and key (the resolver is shared), another ALPN list.
    let mut h2 = config.clone();
    h2.alpn_protocols = ALPN_H2.iter().map(|p| p.to_vec()).collect();
    Ok((
        Configs {
            h1: Arc::new(config),
            h2: Arc::new(h2),
        },
        not_after,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ca() -> (tempfile::TempDir, Arc<LocalCa>) {
        let dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::open(&dir.path().join("ca"), None).unwrap();
        (dir, Arc::new(ca))
    }

    #[test]
    fn exact_hosts_are_minted_up_front_and_reused() {
        let (_d, ca) = ca();
        let leaves = Leaves::new(ca, ["api.example.com"]).unwrap();
        assert_eq!(leaves.len(), 1);
        let a = leaves.config_for("api.example.com").unwrap();
        let b = leaves.config_for("api.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn a_leaf_near_its_end_is_reminted() {
        let (_d, ca) = ca();
        let leaves = Leaves::new(ca, ["api.example.com"]).unwrap();
        let now = OffsetDateTime::now_utc();
        let a = leaves.config_at("api.example.com", now).unwrap();
        let later = now + Duration::from_secs(25 * 24 * 3600);
        let b = leaves.config_at("api.example.com", later).unwrap();
        assert!(!Arc::ptr_eq(&a, &b), "re-minted");
        let c = leaves.config_at("api.example.com", later).unwrap();
        assert!(Arc::ptr_eq(&b, &c));
    }

    #[test]
    fn the_wildcard_cache_is_bounded_and_keeps_exact_hosts() {
        let (_d, ca) = ca();
        let mut leaves = Leaves::new(ca, ["api.example.com"]).unwrap();
        leaves.limit = 8;
        for i in 0..13 {
            leaves.config_for(&format!("h{i}.example.com")).unwrap();
        }
        leaves.config_for("h12.example.com").unwrap();
        assert_eq!(leaves.len(), 8 + 1);
        assert!(leaves.entries.lock().0.contains_key("api.example.com"));
        assert!(!leaves.entries.lock().0.contains_key("h0.example.com"));
    }
}
