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
    /// `[callers.NAME]`: each caller's name and providers (never its secret); absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub callers: Vec<CallerStatus>,
    /// The audit log, when on: where it goes and how many records were dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditStatus>,
    /// Why `[proxy] proxy_auth` could not be renewed (a followed file unreadable, a re-run
    /// command failing: the last value is still required); absent when it is current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_auth_error: Option<String>,
}

/// `{"name": "ci", "providers": ["github"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerStatus {
    pub name: String,
    pub providers: Vec<String>,
}

/// `{"log": "/var/log/credproxy/audit.jsonl", "dropped": 0}` (`log` is `-` for standard output).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditStatus {
    pub log: String,
    /// Records dropped because the writer fell behind (`credproxy_audit_dropped_total`).
    pub dropped: u64,
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
    /// Where requests reach it besides its hosts: `listen 127.0.0.1:7001`, `prefix /bace`.
    #[serde(default)]
    pub routes: Vec<String>,
    /// How long the current token lives from when it was obtained; `None`: never expires, or none.
    #[serde(default)]
    pub token_lifetime_secs: Option<i64>,
    /// Requests for this provider since credproxy started (`None` from the token store).
    #[serde(default)]
    pub requests: Option<u64>,
    /// Upstream answers 401 to this provider's requests since start, before any replay.
    #[serde(default)]
    pub upstream_401s: Option<u64>,
    /// `ok` (green), `warn` (amber: works now, needs attention), `bad` (red: requests fail).
    #[serde(default)]
    pub health: String,
    /// The state in words, the same on the page and in `credproxy status`: `ready`,
    /// `valid for 4 min, refresh failing`, `no valid token, refresh failing`.
    #[serde(default)]
    pub summary: String,
    /// Intercepted hosts whose clients broke off the handshake because they don't trust
    /// credproxy's CA, with how often (since start).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tls_rejected: BTreeMap<String, u64>,
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
            routes: Vec::new(),
            token_lifetime_secs: None,
            requests: None,
            upstream_401s: None,
            health: String::new(),
            summary: String::new(),
            tls_rejected: BTreeMap::new(),
        }
    }

    /// Set [`health`](Self::health) and [`summary`](Self::summary) from the other fields.
    pub fn assessed(mut self, now_unix: i64) -> Self {
        let (health, summary) = assess(&self, now_unix);
        self.health = health.as_str().to_owned();
        self.summary = summary;
        self
    }

    /// From the running proxy's snapshot; `now_unix` is the wall clock, `usable` whether the
    /// snapshot's credential is usable now.
    pub fn from_snapshot(
        config: &ProviderConfig,
        snap: &Snapshot,
        usable: bool,
        now_unix: i64,
    ) -> Self {
        let lifetime = snap.credential.as_ref().and_then(|c| {
            c.expires_at
                .map(|e| i64::try_from(e.saturating_duration_since(c.obtained_at).as_secs()))
                .map(|s| s.unwrap_or(i64::MAX))
        });
        ProviderStatus {
            token_lifetime_secs: lifetime,
            state: snap.phase.as_str().to_owned(),
            usable,
            expires_in_secs: snap.expires_at_unix.map(|t| t.saturating_sub(now_unix)),
            expires_at: snap.expires_at_unix.and_then(rfc3339),
            last_refresh: snap.last_refresh_unix.and_then(rfc3339),
            next_refresh: snap.next_refresh_unix.and_then(rfc3339),
            last_error: snap.last_error.clone(),
            details: snap.details.iter().cloned().collect(),
            ..Self::base(config)
        }
        .assessed(now_unix)
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
            }
            .assessed(now_unix);
        };
        let expired = t.expires_at.is_some_and(|e| e <= now_unix);
        ProviderStatus {
            state: if expired { "expired" } else { "stored" }.to_owned(),
            usable: !expired,
            expires_in_secs: t.expires_at.map(|e| e.saturating_sub(now_unix)),
            expires_at: t.expires_at.and_then(rfc3339),
            last_refresh: rfc3339(t.obtained_at),
            token_lifetime_secs: t.expires_at.map(|e| e.saturating_sub(t.obtained_at)),
            details: t.details.clone(),
            ..Self::base(config)
        }
        .assessed(now_unix)
    }

    /// The same provider read back from the store, marked unreadable with `error`.
    pub fn unreadable(config: &ProviderConfig, error: String, now_unix: i64) -> Self {
        ProviderStatus {
            state: "unreadable".to_owned(),
            last_error: Some(error),
            ..Self::base(config)
        }
        .assessed(now_unix)
    }
}

/// How a provider stands at a glance: the page's colour, the terminal's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Green: requests get a valid credential and nothing is failing.
    Ok,
    /// Amber: requests work now, but something needs attention (refreshes fail while the
    /// current token still works; the first token is on its way).
    Warn,
    /// Red: requests get no credential.
    Bad,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warn => "warn",
            Health::Bad => "bad",
        }
    }
}

/// A provider's health and the words for it, from its public fields. A failed last refresh is
/// never green: amber while the token it holds still works ("valid for 4 min, refresh failing"),
/// red when it holds none; either way with the next attempt's time when one is planned.
pub fn assess(p: &ProviderStatus, now_unix: i64) -> (Health, String) {
    let failing = p.state == "failing" || (p.state == "refreshing" && p.last_error.is_some());
    let next = p
        .next_refresh
        .as_deref()
        .and_then(parse_rfc3339)
        .map(|t| format!("; next attempt {}", relative_secs(t, now_unix)))
        .unwrap_or_default();
    let valid_for = || match p.expires_in_secs {
        Some(s) => format!("valid for {}", human(s)),
        None => "valid".to_owned(),
    };
    match p.state.as_str() {
        "login_required" => (
            Health::Bad,
            format!("login required: run `credproxy login {}`", p.name),
        ),
        "starting" if p.last_error.is_none() => (Health::Warn, "starting: no token yet".to_owned()),
        "expired" => (Health::Bad, "stored token expired".to_owned()),
        "no_token" => (Health::Bad, "no token stored".to_owned()),
        "unreadable" => (Health::Bad, "token store unreadable".to_owned()),
        "stored" => (Health::Ok, format!("stored, {}", valid_for())),
        "static" => (Health::Ok, "static token".to_owned()),
        _ if !p.usable && (failing || p.last_error.is_some()) => (
            Health::Bad,
            format!("no valid token, refresh failing{next}"),
        ),
        _ if !p.usable => (Health::Bad, "no valid token".to_owned()),
        _ if failing => (
            Health::Warn,
            format!("{}, refresh failing{next}", valid_for()),
        ),
        "refreshing" => (Health::Ok, "ready, refreshing".to_owned()),
        // Ready, and the last attempt failed after all (its token could not be saved).
        _ if p.last_error.is_some() => (Health::Warn, "ready, with an error".to_owned()),
        _ => (Health::Ok, "ready".to_owned()),
    }
}

/// `3 h 12 min`, `4 min`, `40 s`, `2 d 4 h`: the two largest units, for a glance.
pub fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 && h == 0 {
        format!("{d} d")
    } else if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 && m == 0 {
        format!("{h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{s} s")
    }
}

/// `in 4 min` or `4 min ago`.
fn relative_secs(t: i64, now: i64) -> String {
    if t <= now {
        format!("{} ago", human(now.saturating_sub(t)))
    } else {
        format!("in {}", human(t.saturating_sub(now)))
    }
}

/// An RFC 3339 time relative to `now`: `in 4 min`, `4 min ago`, or `-` when there is none.
pub fn relative(at: Option<&str>, now: i64) -> String {
    match at.and_then(parse_rfc3339) {
        None => "-".to_owned(),
        Some(t) => relative_secs(t, now),
    }
}

/// When the token expires, in words: `in 3 h 12 min`, `expired 40 s ago`, `never expires`, `-`.
pub fn expiry(p: &ProviderStatus) -> String {
    match p.expires_in_secs {
        None if p.usable => "never expires".to_owned(),
        None => "-".to_owned(),
        Some(s) if s >= 0 => format!("in {}", human(s)),
        Some(s) => format!("expired {} ago", human(s)),
    }
}

/// The token's lifetime in words: `1 h`, or `-` when it never expires or is unknown.
pub fn lifetime(p: &ProviderStatus) -> String {
    p.token_lifetime_secs.map_or_else(|| "-".to_owned(), human)
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

    /// Review finding: a stored token's times come from a file anyone may have edited; the
    /// differences overflowed (a panic in debug builds, nonsense in release).
    #[test]
    fn extreme_stored_times_do_not_overflow() {
        let cfg = crate::config::load_str(
            "[providers.o]\npreset = \"oauth2\"\nhosts = [\"api.example\"]\n\
             token_url = \"https://auth.example/token\"\nclient_id = \"c\"\n\
             client_secret = \"s\"\n",
            "t.toml",
            &|_| None,
        )
        .unwrap();
        let t = StoredToken {
            access_token: crate::secret::Secret::from("at"),
            refresh_token: None,
            expires_at: Some(i64::MAX),
            obtained_at: -1,
            fingerprint: String::new(),
            secrets: Default::default(),
            details: Default::default(),
            expiry_assumed: false,
        };
        let p = ProviderStatus::from_stored(&cfg.providers[0], Some(&t), -1);
        assert_eq!(p.token_lifetime_secs, Some(i64::MAX));
        assert_eq!(p.expires_in_secs, Some(i64::MAX));
        assert!(expiry(&p).starts_with("in "), "{}", expiry(&p));
        assert_eq!(
            relative_secs(i64::MIN, i64::MAX),
            format!("{} ago", human(i64::MAX))
        );
    }
}
