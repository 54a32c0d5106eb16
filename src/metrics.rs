//! Prometheus metrics: what the admin listener's `/metrics` serves (issue 6, DESIGN.md).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `credproxy_requests_total` | counter | `provider` (`-` when no provider claimed the request), `code` |
//! | `credproxy_upstream_request_duration_seconds` | histogram | `provider` |
//! | `credproxy_upstream_unauthorized_total` | counter | `provider`: upstream answers 401, before any replay |
//! | `credproxy_token_refresh_total` | counter | `provider`, `result` |
//! | `credproxy_token_uncommitted_total` | counter | `provider`, `event` (`kept`, `recovered`): Redis store only |
//! | `credproxy_token_expiry_timestamp_seconds` | gauge | `provider` |
//! | `credproxy_inflight_requests` | gauge | |
//! | `credproxy_build_info` | gauge (always 1) | `version` |
//!
//! Labels are low-cardinality only: provider names come from the config, codes are HTTP status
//! codes, results are a fixed set. Never a host, a path or anything a client chooses.
//!
//! The request path is measured against nginx, so it does no label hashing and no allocation:
//! every per-provider handle is resolved once when the provider set is built ([`Metrics::new`],
//! [`Metrics::for_providers`]), and a `(provider, code)` counter is resolved the first time that
//! code is seen and kept in a slot indexed by the code. A request then costs an atomic add or two,
//! plus the histogram's short lock.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `provider` label of requests no provider claimed (unknown hosts, pass-through, CONNECT).
pub const UNCLAIMED: &str = "-";

/// Upstream duration buckets, 1 ms to 60 s: a local upstream answers in a millisecond or two,
/// a slow API in seconds, and `response_timeout` (default 60 s) ends the rest.
const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Status codes get a pre-sized slot each: 100..=599.
const FIRST_CODE: u16 = 100;
const CODE_SLOTS: usize = 500;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    provider: Arc<str>,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabel {
    provider: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    provider: Arc<str>,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UncommittedLabels {
    provider: Arc<str>,
    event: &'static str,
}

/// Hosts counted by name in `credproxy_intercept_tls_rejected_total` per provider; the rest are
/// [`TLS_REJECTED_OTHER`].
pub const TLS_REJECTED_HOSTS: usize = 64;
/// The `host` label of refusals past [`TLS_REJECTED_HOSTS`].
pub const TLS_REJECTED_OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TlsRejectLabels {
    provider: Arc<str>,
    host: Arc<str>,
}

/// A configured `[callers.NAME]`: a bounded set (never a string a client chose).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallerLabels {
    caller: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// The registry and the metric families. Shared by every [`Metrics`] built from it, so the
/// counters carry on when the provider set is rebuilt (a reload).
struct Families {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    upstream_duration: Family<ProviderLabel, Histogram, fn() -> Histogram>,
    token_refresh: Family<RefreshLabels, Counter>,
    token_uncommitted: Family<UncommittedLabels, Counter>,
    token_expiry: Family<ProviderLabel, Gauge>,
    upstream_401: Family<ProviderLabel, Counter>,
    /// Requests per provider, all codes together, for `/status` (not exposed: it is the sum of
    /// `requests_total{provider}`). Kept here so that it carries on across reloads.
    provider_requests: Family<ProviderLabel, Counter>,
    inflight: Gauge,
    dropped_fields: Counter,
    tls_rejected: Family<TlsRejectLabels, Counter>,
    /// Requests of named callers, by caller and `admitted` / `denied`.
    caller_requests: Family<CallerLabels, Counter>,
    /// Audit records dropped because the writer fell behind.
    audit_dropped: Counter,
    /// The same counts by provider, then host, for `/status`.
    tls_rejected_by_host: parking_lot::Mutex<BTreeMap<String, BTreeMap<String, u64>>>,
    /// Serializes scrapes: the expiry gauges are reset and set from snapshots, then encoded.
    scrape: parking_lot::Mutex<()>,
}

/// One provider's pre-resolved handles.
struct ProviderHandles {
    name: Arc<str>,
    /// `requests_total{provider, code}` for code `FIRST_CODE + i`, created on first use.
    codes: Box<[OnceLock<Counter>]>,
    /// `None` for [`UNCLAIMED`]: only a provider's requests are timed upstream.
    upstream_duration: Option<Histogram>,
    /// `None` for [`UNCLAIMED`], like `upstream_duration`.
    upstream_401: Option<Counter>,
    requests: Option<Counter>,
}

/// Metrics for one provider set: the handles the request path uses, by provider index (the
/// index in `Router::providers`, i.e. config order).
pub struct Metrics {
    families: Arc<Families>,
    /// One per provider, then one for [`UNCLAIMED`] requests.
    providers: Box<[ProviderHandles]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field(
                "providers",
                &self.providers.iter().map(|p| &*p.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

impl Metrics {
    /// A fresh registry with every metric registered, and handles for `providers` (in the order
    /// the router indexes them).
    pub fn new<S: AsRef<str>>(providers: &[S]) -> Self {
        let mut registry = Registry::with_prefix("credproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Proxied requests by provider (\"-\": none claimed the request) and HTTP status code",
            requests.clone(),
        );
        let upstream_duration =
            Family::<ProviderLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> _,
            );
        registry.register_with_unit(
            "upstream_request_duration",
            "Time from sending a request upstream to its response headers",
            Unit::Seconds,
            upstream_duration.clone(),
        );
        let token_refresh = Family::<RefreshLabels, Counter>::default();
        registry.register(
            "token_refresh",
            "Token refresh attempts by provider and result",
            token_refresh.clone(),
        );
        let token_uncommitted = Family::<UncommittedLabels, Counter>::default();
        registry.register(
            "token_uncommitted",
            "Tokens obtained but not committed to the shared store: kept (staged for the next \
             lease holder, or on local disk while Redis is away) and recovered (committed later)",
            token_uncommitted.clone(),
        );
        let token_expiry = Family::<ProviderLabel, Gauge>::default();
        registry.register_with_unit(
            "token_expiry_timestamp",
            "When each provider's current token expires (Unix time); absent when it does not expire",
            Unit::Seconds,
            token_expiry.clone(),
        );
        let upstream_401 = Family::<ProviderLabel, Counter>::default();
        registry.register(
            "upstream_unauthorized",
            "Upstream answers 401 Unauthorized by provider, counted before any replay with a new token",
            upstream_401.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "inflight_requests",
            "Requests being proxied right now (until the response headers go downstream)",
            inflight.clone(),
        );
        let dropped_fields = Counter::default();
        registry.register(
            "dropped_header_fields",
            "Request fields dropped before forwarding because, with `_` read as `-`, their name is a framing, hop-by-hop or credential field's (`Transfer_Encoding`, `Authorization` look-alikes)",
            dropped_fields.clone(),
        );
        let tls_rejected = Family::<TlsRejectLabels, Counter>::default();
        registry.register(
            "intercept_tls_rejected",
            "Intercepted TLS handshakes a client broke off because it does not trust credproxy's CA, by provider and host",
            tls_rejected.clone(),
        );
        let caller_requests = Family::<CallerLabels, Counter>::default();
        registry.register(
            "caller_requests",
            "Requests from named callers ([callers.NAME]) by caller, admitted or denied (caller_denied)",
            caller_requests.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "audit_dropped",
            "Audit records dropped because the audit log's writer fell behind (its queue was full)",
            audit_dropped.clone(),
        );
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "credproxy's version (always 1)", build_info);

        let families = Arc::new(Families {
            registry,
            requests,
            upstream_duration,
            token_refresh,
            token_uncommitted,
            token_expiry,
            upstream_401,
            provider_requests: Family::default(),
            inflight,
            dropped_fields,
            tls_rejected,
            caller_requests,
            audit_dropped,
            tls_rejected_by_host: parking_lot::Mutex::default(),
            scrape: parking_lot::Mutex::new(()),
        });
        Self::with_families(families, providers)
    }

    /// Handles for a new provider set over the same registry: counters carry on (for a reload).
    pub fn for_providers<S: AsRef<str>>(&self, providers: &[S]) -> Self {
        Self::with_families(self.families.clone(), providers)
    }

    fn with_families<S: AsRef<str>>(families: Arc<Families>, providers: &[S]) -> Self {
        let names = providers
            .iter()
            .map(|p| p.as_ref())
            .chain(std::iter::once(UNCLAIMED));
        let claimed = providers.len();
        let providers = names
            .enumerate()
            .map(|(i, name)| {
                let name: Arc<str> = Arc::from(name);
                let label = ProviderLabel {
                    provider: name.clone(),
                };
                let claimed = i < claimed;
                ProviderHandles {
                    upstream_401: claimed
                        .then(|| families.upstream_401.get_or_create_owned(&label)),
                    requests: claimed
                        .then(|| families.provider_requests.get_or_create_owned(&label)),
                    upstream_duration: claimed.then(|| {
                        families
                            .upstream_duration
                            .get_or_create_owned(&ProviderLabel {
                                provider: name.clone(),
                            })
                    }),
                    codes: (0..CODE_SLOTS).map(|_| OnceLock::new()).collect(),
                    name,
                }
            })
            .collect();
        Metrics {
            families,
            providers,
        }
    }

    fn handles(&self, provider: Option<usize>) -> &ProviderHandles {
        let last = self.providers.len() - 1;
        &self.providers[provider.map_or(last, |i| i.min(last))]
    }

    /// Count a finished request. `provider`: the router's index, `None` when none claimed it.
    pub fn request(&self, provider: Option<usize>, status: http::StatusCode) {
        let handles = self.handles(provider);
        if let Some(c) = &handles.requests {
            c.inc();
        }
        let code = status.as_u16();
        match code
            .checked_sub(FIRST_CODE)
            .map(usize::from)
            .and_then(|i| handles.codes.get(i))
        {
            Some(slot) => slot
                .get_or_init(|| {
                    self.families
                        .requests
                        .get_or_create_owned(&request_labels(handles, code))
                })
                .inc(),
            // http::StatusCode allows 600..=999: rare enough to look up each time.
            None => self
                .families
                .requests
                .get_or_create(&request_labels(handles, code))
                .inc(),
        };
    }

    /// How long the upstream took to answer one request (to its response headers), and with
    /// what status (`None`: it did not answer).
    pub fn upstream_answer(&self, provider: usize, elapsed: Duration, status: Option<u16>) {
        let handles = self.handles(Some(provider));
        if let Some(h) = &handles.upstream_duration {
            h.observe(elapsed.as_secs_f64());
        }
        if status == Some(401)
            && let Some(c) = &handles.upstream_401
        {
            c.inc();
        }
    }

    /// Provider `name`'s requests and upstream 401s since start (for `/status`).
    pub fn provider_counts(&self, name: &str) -> (u64, u64) {
        let label = ProviderLabel {
            provider: Arc::from(name),
        };
        let f = &*self.families;
        (
            f.provider_requests.get_or_create(&label).get(),
            f.upstream_401.get_or_create(&label).get(),
        )
    }

    /// A request in flight until the guard drops.
    pub fn inflight(&self) -> Inflight<'_> {
        self.families.inflight.inc();
        Inflight(&self.families.inflight)
    }

    /// Count a named caller's request: `admitted` or `denied` (`caller_denied`). `caller` is a
    /// configured name (`proxy::auth::Gate::name`), so the label set is bounded by the config.
    pub fn caller_request(&self, caller: &Arc<str>, denied: bool) {
        self.families
            .caller_requests
            .get_or_create(&CallerLabels {
                caller: caller.clone(),
                outcome: if denied { "denied" } else { "admitted" },
            })
            .inc();
    }

    /// The counter of dropped audit records (`crate::audit` counts into it).
    pub fn audit_dropped(&self) -> Counter {
        self.families.audit_dropped.clone()
    }

    /// Count a client field dropped as a look-alike (`proxy::inject::look_alike`).
    pub fn dropped_field(&self) {
        self.families.dropped_fields.inc();
    }

    /// Record a token refresh attempt (the token engine's observer). `result` must come from a
    /// small fixed set (`ok`, `error`, ...): it is a label.
    pub fn token_refresh(&self, provider: &str, result: &'static str) {
        self.families
            .token_refresh
            .get_or_create(&RefreshLabels {
                provider: Arc::from(provider),
                result,
            })
            .inc();
    }

    /// Count a token the shared store could not commit (`kept`) or a later holder committed
    /// (`recovered`).
    pub fn token_uncommitted(&self, provider: &str, event: &'static str) {
        self.families
            .token_uncommitted
            .get_or_create(&UncommittedLabels {
                provider: Arc::from(provider),
                event,
            })
            .inc();
    }

    /// Count a client's refusal of credproxy's certificate for `host` (an intercepted handshake
    /// ended by an `unknown_ca` / `bad_certificate` alert). True the first time for this host:
    /// the caller logs what to do once, not on every retry.
    ///
    /// Hosts are counted one by one up to [`TLS_REJECTED_HOSTS`] per provider, then as `other`:
    /// a wildcard claim lets a client name any number of hosts, and labels must stay bounded.
    pub fn tls_rejected(&self, provider: &str, host: &str) -> bool {
        let mut by = self.families.tls_rejected_by_host.lock();
        let hosts = by.entry(provider.to_owned()).or_default();
        let host = if hosts.contains_key(host) || hosts.len() < TLS_REJECTED_HOSTS {
            host
        } else {
            TLS_REJECTED_OTHER
        };
        let n = hosts.entry(host.to_owned()).or_default();
        *n += 1;
        let first = *n == 1;
        drop(by);
        self.families
            .tls_rejected
            .get_or_create(&TlsRejectLabels {
                provider: Arc::from(provider),
                host: Arc::from(host),
            })
            .inc();
        first
    }

    /// Each host's count of [`Metrics::tls_rejected`] for `provider`.
    pub fn tls_rejections(&self, provider: &str) -> BTreeMap<String, u64> {
        self.families
            .tls_rejected_by_host
            .lock()
            .get(provider)
            .cloned()
            .unwrap_or_default()
    }

    /// The OpenMetrics text exposition, after setting each provider's token expiry gauge from
    /// `expiries` (`None`: the token does not expire or there is none; the series is left out).
    pub fn encode<'a>(&self, expiries: impl IntoIterator<Item = (&'a str, Option<i64>)>) -> String {
        let families = &*self.families;
        let _scrape = families.scrape.lock();
        // Cleared first so that a provider removed by a reload, or whose token stopped expiring,
        // disappears instead of showing a stale time.
        families.token_expiry.clear();
        for (provider, expiry) in expiries {
            if let Some(t) = expiry {
                families
                    .token_expiry
                    .get_or_create(&ProviderLabel {
                        provider: Arc::from(provider),
                    })
                    .set(t);
            }
        }
        let mut out = String::with_capacity(4096);
        // Writing to a String can't fail; the encoder only fails on a broken writer.
        let _ = prometheus_client::encoding::text::encode(&mut out, &families.registry);
        out
    }
}

fn request_labels(handles: &ProviderHandles, code: u16) -> RequestLabels {
    RequestLabels {
        provider: handles.name.clone(),
        code,
    }
}

/// Counts a request in `credproxy_inflight_requests` while it lives.
#[must_use = "the request counts as in flight only while the guard lives"]
pub struct Inflight<'a>(&'a Gauge);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap())
    }

    #[test]
    fn refused_certificates_are_counted_for_a_bounded_number_of_hosts() {
        let m = Metrics::new(&["wild"]);
        assert!(m.tls_rejected("wild", "a.wild.test"), "first for the host");
        assert!(!m.tls_rejected("wild", "a.wild.test"));
        for i in 0..200 {
            m.tls_rejected("wild", &format!("h{i}.wild.test"));
        }
        let by = m.tls_rejections("wild");
        assert_eq!(
            by.len(),
            TLS_REJECTED_HOSTS + 1,
            "the first hosts and `other`"
        );
        assert_eq!(by["a.wild.test"], 2);
        assert_eq!(
            by[TLS_REJECTED_OTHER],
            200 - (TLS_REJECTED_HOSTS as u64 - 1)
        );
        let text = m.encode([]);
        let series = text
            .lines()
            .filter(|l| l.starts_with("credproxy_intercept_tls_rejected_total{"))
            .count();
        assert_eq!(series, TLS_REJECTED_HOSTS + 1, "{text}");
    }

    #[test]
    fn every_metric_is_named_as_documented() {
        let m = Arc::new(Metrics::new(&["bace", "github"]));
        m.request(Some(0), http::StatusCode::OK);
        m.request(Some(0), http::StatusCode::OK);
        m.request(None, http::StatusCode::FORBIDDEN);
        m.request(Some(1), http::StatusCode::from_u16(799).unwrap());
        m.upstream_answer(0, Duration::from_millis(3), Some(401));
        m.upstream_answer(1, Duration::from_millis(3), Some(200));
        m.upstream_answer(1, Duration::from_millis(3), None);
        m.token_refresh("bace", "ok");
        let guard = m.inflight();
        let text = m.encode([("bace", Some(1_900_000_000)), ("github", None)]);
        assert_eq!(
            sample(
                &text,
                "credproxy_requests_total{provider=\"bace\",code=\"200\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_requests_total{provider=\"-\",code=\"403\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_requests_total{provider=\"github\",code=\"799\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_upstream_request_duration_seconds_bucket{le=\"0.005\",provider=\"bace\"}"
            ),
            Some("1"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_upstream_request_duration_seconds_count{provider=\"github\"}"
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_upstream_unauthorized_total{provider=\"bace\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_upstream_unauthorized_total{provider=\"github\"}"
            ),
            Some("0")
        );
        assert_eq!(m.provider_counts("bace"), (2, 1));
        assert_eq!(m.provider_counts("github"), (1, 0));
        assert_eq!(
            sample(
                &text,
                "credproxy_token_refresh_total{provider=\"bace\",result=\"ok\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                "credproxy_token_expiry_timestamp_seconds{provider=\"bace\"}"
            ),
            Some("1900000000")
        );
        assert!(!text.contains("credproxy_token_expiry_timestamp_seconds{provider=\"github\"}"));
        assert_eq!(sample(&text, "credproxy_inflight_requests "), Some("1"));
        let version = format!(
            "credproxy_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(sample(&text, &version), Some("1"));
        assert!(text.contains("# TYPE credproxy_upstream_request_duration_seconds histogram"));
        assert!(
            !text.contains("credproxy_upstream_request_duration_seconds_count{provider=\"-\"}")
        );
        assert!(text.ends_with("# EOF\n"));
        drop(guard);
        assert_eq!(
            sample(&m.encode([]), "credproxy_inflight_requests "),
            Some("0")
        );
    }

    #[test]
    fn a_reloaded_provider_set_keeps_counting_in_the_same_registry() {
        let first = Metrics::new(&["a"]);
        first.request(Some(0), http::StatusCode::OK);
        first.upstream_answer(0, Duration::ZERO, Some(401));
        let second = first.for_providers(&["b", "a"]);
        second.request(Some(1), http::StatusCode::OK);
        second.upstream_answer(1, Duration::ZERO, Some(401));
        assert_eq!(
            first.provider_counts("a"),
            (2, 2),
            "/status counts carry on too"
        );
        let text = second.encode([]);
        assert_eq!(
            sample(
                &text,
                "credproxy_requests_total{provider=\"a\",code=\"200\"}"
            ),
            Some("2")
        );
    }
}
