//! What `GET /status` answers and `credproxy status` shows: each provider's public state.
//!
//! Built only from a [`Snapshot`]'s public fields (or, when the proxy is not running, a
//! [`StoredToken`]'s public fields): the credential itself is never looked at, so no token, not
//! even a prefix, can end up here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ProviderConfig;
use crate::credential::Snapshot;
use crate::token::store::StoredToken;

/// The whole `/status` document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub version: String,
    /// When this credproxy started (RFC 3339); absent when read from the token store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub providers: Vec<ProviderStatus>,
    /// The shared token store's state; absent for the file store (nothing can be away).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreStatus>,
}

/// `{"kind": "redis", "state": "ok" | "store_unavailable", "reason": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub kind: String,
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl StoreStatus {
    pub fn of(store: &dyn crate::token::TokenStore) -> Option<StoreStatus> {
        let health = store.health()?;
        Some(StoreStatus {
            kind: health.kind.to_owned(),
            state: if health.unavailable.is_some() {
                "store_unavailable"
            } else {
                "ok"
            }
            .to_owned(),
            reason: health.unavailable,
        })
    }
}

/// One provider's public state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderStatus {
    pub name: String,
    pub preset: String,
    pub hosts: Vec<String>,
    /// `https://host[:port][/base]`.
    pub upstream: String,
    /// `starting`, `ready`, `refreshing`, `failing`, `login_required`; from the token store:
    /// `stored`, `expired`, `no_token` (or `static`: the token is in the config).
    pub state: String,
    /// A credential usable now is held (what `/readyz` checks).
    pub usable: bool,
    /// Seconds until the token expires (negative: expired); `None`: it does not, or unknown.
    pub expires_in_secs: Option<i64>,
    /// RFC 3339, UTC.
    pub expires_at: Option<String>,
    pub last_refresh: Option<String>,
    pub next_refresh: Option<String>,
    pub last_error: Option<String>,
    pub details: BTreeMap<String, String>,
}

impl ProviderStatus {
    fn base(config: &ProviderConfig) -> Self {
        ProviderStatus {
            name: config.name.clone(),
            preset: config.preset.name().to_owned(),
            hosts: config.hosts.iter().map(|h| h.to_string()).collect(),
            upstream: format!("{}{}", config.upstream.origin(), config.upstream.base_path),
            state: String::new(),
            usable: false,
            expires_in_secs: None,
            expires_at: None,
            last_refresh: None,
            next_refresh: None,
            last_error: None,
            details: BTreeMap::new(),
        }
    }

    /// From the running proxy's snapshot; `now_unix` is the wall clock, `usable` whether the
    /// snapshot's credential is usable now.
    pub fn from_snapshot(
        config: &ProviderConfig,
        snap: &Snapshot,
        usable: bool,
        now_unix: i64,
    ) -> Self {
        ProviderStatus {
            state: snap.phase.as_str().to_owned(),
            usable,
            expires_in_secs: snap.expires_at_unix.map(|t| t - now_unix),
            expires_at: snap.expires_at_unix.and_then(rfc3339),
            last_refresh: snap.last_refresh_unix.and_then(rfc3339),
            next_refresh: snap.next_refresh_unix.and_then(rfc3339),
            last_error: snap.last_error.clone(),
            details: snap.details.iter().cloned().collect(),
            ..Self::base(config)
        }
    }

    /// From the token store, when no proxy is running.
    pub fn from_stored(
        config: &ProviderConfig,
        stored: Option<&StoredToken>,
        now_unix: i64,
    ) -> Self {
        let Some(t) = stored else {
            // A static token lives in the config, not the store.
            let is_static = config.preset == crate::config::Preset::Static;
            return ProviderStatus {
                state: if is_static { "static" } else { "no_token" }.to_owned(),
                usable: is_static,
                ..Self::base(config)
            };
        };
        let expired = t.expires_at.is_some_and(|e| e <= now_unix);
        ProviderStatus {
            state: if expired { "expired" } else { "stored" }.to_owned(),
            usable: !expired,
            expires_in_secs: t.expires_at.map(|e| e - now_unix),
            expires_at: t.expires_at.and_then(rfc3339),
            last_refresh: rfc3339(t.obtained_at),
            details: t.details.clone(),
            ..Self::base(config)
        }
    }
}

/// Unix seconds as RFC 3339 in UTC (`2026-11-23T04:00:00Z`); `None` when out of jiff's range.
pub fn rfc3339(unix: i64) -> Option<String> {
    jiff::Timestamp::from_second(unix)
        .ok()
        .map(|t| t.to_string())
}

/// Parse what [`rfc3339`] wrote back to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_as_utc_rfc3339() {
        assert_eq!(rfc3339(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            rfc3339(1_900_000_000).as_deref(),
            Some("2030-03-17T17:46:40Z")
        );
        assert_eq!(parse_rfc3339("2030-03-17T17:46:40Z"), Some(1_900_000_000));
        assert_eq!(rfc3339(i64::MAX), None);
    }
}
