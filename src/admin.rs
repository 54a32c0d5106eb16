//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `/status` and a status page at `/`.
//!
//! It listens on `admin_listen` (default [`DEFAULT_LISTEN`], 127.0.0.1:9090), apart from the proxy
//! listeners, and is never proxied. What it shows comes from each provider's credential
//! [`Snapshot`](crate::credential::Snapshot)'s public fields and from [`Metrics`]: it never looks at
//! a credential's headers, so no secret, not even a prefix, can reach an admin response.
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | 200 `ok` while the process serves |
//! | `GET /readyz` | 200 `{"ready":true}` when every provider holds a usable credential, else 503 `{"ready":false,"providers":[{"name","state","reason"}]}` naming those that don't; with the Redis store, also `"store":{"kind","state":"ok"|"store_unavailable","reason"}` (a store away alone does not make it 503) |
//! | `GET /metrics` | the OpenMetrics text exposition ([`crate::metrics`]) |
//! | `GET /status` | [`StatusReport`] as JSON (what `credproxy status` shows) |
//! | `GET /` | the same as an HTML page rendered here (its rows are in the HTML as sent; inline CSS, no script, no external assets) that reloads itself every 5 s |
//!
//! `HEAD` is answered like `GET` (RFC 9110 §9.3.2); other methods get 405, other paths 404 (JSON).
//!
//! Two defences keep it answering: a probe must never wait behind idle connections (at
//! [`MAX_CONNECTIONS`] the oldest connection is closed to make room, so 1,000 idle sockets can't
//! starve `/healthz`), and a web page must not read it through DNS rebinding (on TCP, a `Host`
//! that is not a loopback address, `localhost` or an address of this listener gets 421).
//!
//! (Over 500 lines with its unit tests, the last 90-odd lines: they test this file's
//! internals, so they stay beside them.)

mod client;
pub mod page;
mod status;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use client::{AdminTarget, ClientError, get};
pub use status::{
    Health, ProviderStatus, StatusReport, StoreStatus, assess, expiry, human, lifetime,
    parse_rfc3339, relative, rfc3339,
};

use crate::clock::Clock;
use crate::config::{Listen, ProviderConfig, ProxySettings, RouteConfig, RouteTarget};
use crate::credential::{CredentialReader, Phase, Snapshot};
use crate::metrics::Metrics;
use crate::net::{Accepted, Bound, Listening};

/// Where the admin listener binds when `admin_listen` is not set.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090);

/// The admin listener's address for these settings: `admin_listen`, else [`DEFAULT_LISTEN`].
pub fn listen_of(settings: &ProxySettings) -> Listen {
    settings
        .admin_listen
        .clone()
        .unwrap_or(Listen::Tcp(DEFAULT_LISTEN))
}

/// Prometheus asks for OpenMetrics first in its default `Accept` header (`scrape_protocols`), and
/// OpenMetrics is what prometheus-client writes (`# EOF`, `_total` samples under a `counter`
/// family, `# UNIT`). Labelled `text/plain; version=0.0.4` instead, a Prometheus 0.0.4 parser would
/// not tie `credproxy_requests_total` to its `# TYPE credproxy_requests counter` line.
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// At most this many admin connections at once: probes and scrapes are few, and the admin
/// listener must not become a way to exhaust the process's file descriptors. A connection past
/// this closes the oldest one (see [`Live`]).
pub const MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin endpoints read.
pub struct AdminState {
    /// Every provider, in config order, with a reader of its credential; replaced on reload.
    pub providers: arc_swap::ArcSwap<Vec<(Arc<ProviderConfig>, CredentialReader)>>,
    pub metrics: Arc<Metrics>,
    /// When this credproxy started.
    pub started: jiff::Timestamp,
    /// The wall clock used for "expires in" (follows tokio's paused clock in tests).
    pub clock: Clock,
    /// The configured routes (a listener or a path prefix per provider); replaced on reload.
    pub routes: arc_swap::ArcSwap<Vec<RouteConfig>>,
    /// The token store, for its health (`store_unavailable`); `None`: not reported.
    pub store: Option<Arc<dyn crate::token::TokenStore>>,
    /// `[callers.NAME]` (names and providers only); replaced on reload.
    pub callers: arc_swap::ArcSwap<Vec<status::CallerStatus>>,
    /// The audit log, for its drop count.
    pub audit: Option<Arc<crate::audit::Audit>>,
    /// `[proxy] proxy_auth`, for its renewal's failures; replaced on reload.
    pub proxy_auth: arc_swap::ArcSwapOption<crate::secret::Live>,
}

impl AdminState {
    /// State for `providers`, started now.
    pub fn new(
        providers: Vec<(Arc<ProviderConfig>, CredentialReader)>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AdminState {
            providers: arc_swap::ArcSwap::from_pointee(providers),
            metrics,
            started: jiff::Timestamp::now(),
            clock: Clock::new(),
            routes: arc_swap::ArcSwap::from_pointee(Vec::new()),
            store: None,
            callers: arc_swap::ArcSwap::from_pointee(Vec::new()),
            audit: None,
            proxy_auth: arc_swap::ArcSwapOption::empty(),
        }
    }

    /// Show `callers` (names and providers; never their secrets).
    pub fn set_callers(&self, callers: &[crate::config::CallerConfig]) {
        self.callers.store(Arc::new(
            callers
                .iter()
                .map(|c| status::CallerStatus {
                    name: c.name.clone(),
                    providers: c.providers.clone(),
                })
                .collect(),
        ));
    }

    /// Report the audit log's drops too.
    pub fn with_audit(mut self, audit: Option<Arc<crate::audit::Audit>>) -> Self {
        self.audit = audit;
        self
    }

    /// Show `routes` beside their providers.
    pub fn set_routes(&self, routes: &[RouteConfig]) {
        self.routes.store(Arc::new(routes.to_vec()));
    }

    pub fn set_proxy_auth(&self, secret: Option<&crate::secret::Live>) {
        self.proxy_auth.store(secret.cloned().map(Arc::new));
    }

    /// Report `store`'s health too.
    pub fn with_store(mut self, store: Arc<dyn crate::token::TokenStore>) -> Self {
        self.store = Some(store);
        self
    }

    fn store_status(&self) -> Option<StoreStatus> {
        self.store.as_deref().and_then(StoreStatus::of)
    }

    /// The `/status` document.
    pub fn status(&self) -> StatusReport {
        let now = tokio::time::Instant::now();
        let now_unix = self.clock.unix_now();
        let routes = self.routes.load();
        StatusReport {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Some(self.started.to_string()),
            providers: self
                .providers
                .load()
                .iter()
                .map(|(config, reader)| {
                    let snap = reader.snapshot();
                    let (requests, upstream_401s) = self.metrics.provider_counts(&config.name);
                    ProviderStatus {
                        routes: routes
                            .iter()
                            .filter(|r| r.provider == config.name)
                            .map(|r| match &r.target {
                                RouteTarget::Listen(l) => format!("listen {l}"),
                                RouteTarget::PathPrefix(p) => format!("prefix {p}"),
                            })
                            .collect(),
                        requests: Some(requests),
                        upstream_401s: Some(upstream_401s),
                        tls_rejected: self.metrics.tls_rejections(&config.name),
                        ..ProviderStatus::from_snapshot(
                            config,
                            &snap,
                            snap.usable(now).is_some(),
                            now_unix,
                        )
                    }
                })
                .collect(),
            store: self.store_status(),
            callers: self.callers.load().to_vec(),
            audit: self.audit.as_ref().map(|a| status::AuditStatus {
                log: match a.target() {
                    crate::config::AuditTarget::Stdout => "-".to_owned(),
                    crate::config::AuditTarget::File(p) => p.display().to_string(),
                },
                dropped: a.dropped(),
            }),
            proxy_auth_error: self
                .proxy_auth
                .load()
                .as_ref()
                .and_then(|s| s.health().borrow().error.clone()),
        }
    }

    /// The providers without a usable credential, and why; empty when ready.
    pub fn not_ready(&self) -> Vec<NotReady> {
        let now = tokio::time::Instant::now();
        self.providers
            .load()
            .iter()
            .filter_map(|(config, reader)| {
                let snap = reader.snapshot();
                if snap.usable(now).is_some() {
                    return None;
                }
                Some(NotReady {
                    name: config.name.clone(),
                    state: snap.phase.as_str(),
                    reason: not_ready_reason(&config.name, &snap),
                })
            })
            .collect()
    }

    fn metrics_text(&self) -> String {
        let providers = self.providers.load();
        let snaps: Vec<(&str, Snapshot)> = providers
            .iter()
            .map(|(c, r)| (c.name.as_str(), r.snapshot()))
            .collect();
        self.metrics
            .encode(snaps.iter().map(|(name, s)| (*name, s.expires_at_unix)))
    }
}

/// A provider `/readyz` names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotReady {
    pub name: String,
    pub state: &'static str,
    pub reason: String,
}

fn not_ready_reason(name: &str, snap: &Snapshot) -> String {
    let with_error = |what: &str| match &snap.last_error {
        Some(e) => format!("{what}: {e}"),
        None => what.to_owned(),
    };
    match snap.phase {
        Phase::LoginRequired => with_error(&format!(
            "needs a person to authorize it: run `credproxy login {name}`"
        )),
        Phase::Starting => with_error("no token yet"),
        Phase::Failing => with_error("token requests are failing"),
        Phase::Ready | Phase::Refreshing => with_error("the token expired"),
    }
}

/// Serve the admin endpoints on `listener` until `cancel`; returns when the connections are done.
pub async fn serve(listener: Bound, state: Arc<AdminState>, cancel: CancellationToken) {
    let listener = match Listening::adopt(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener: can't register with the runtime");
            return;
        }
    };
    let live = Arc::new(Live::default());
    let connections = TaskTracker::new();
    let mut accept_errors = crate::net::AcceptErrors::default();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (state, cancel) = (state.clone(), cancel.clone());
        match accepted {
            Ok(Accepted::Tcp(s)) => {
                // Host check: this connection's own address is a host a client may name.
                let own = s.local_addr().ok().map(|a| a.ip());
                let slot = live.admit();
                connections.spawn(slot.serve(s, state, cancel, Some(own)))
            }
            Ok(Accepted::Unix(s)) => {
                // No web page can reach a unix socket: no Host check.
                let slot = live.admit();
                connections.spawn(slot.serve(s, state, cancel, None))
            }
            Err(e) => {
                accept_errors.failed("admin", &e).await;
                continue;
            }
        };
    }
    connections.close();
    connections.wait().await;
    if let Listening::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// The open admin connections, oldest first. Admitting one past [`MAX_CONNECTIONS`] closes the
/// oldest: a probe is answered at once, however many idle or trickling sockets someone holds open
/// (waiting for a free slot instead would put `/healthz` behind their header timeouts, and a
/// container orchestrator would restart a healthy proxy).
#[derive(Default)]
struct Live {
    conns: parking_lot::Mutex<(u64, VecDeque<(u64, CancellationToken)>)>,
}

/// One admitted connection: its place in [`Live`] and the token that evicts it.
struct Slot {
    live: Arc<Live>,
    id: u64,
    evicted: CancellationToken,
}

impl Live {
    fn admit(self: &Arc<Self>) -> Slot {
        let evicted = CancellationToken::new();
        let mut guard = self.conns.lock();
        let (next, conns) = &mut *guard;
        let id = *next;
        *next += 1;
        while conns.len() >= MAX_CONNECTIONS {
            if let Some((_, oldest)) = conns.pop_front() {
                oldest.cancel();
            }
        }
        conns.push_back((id, evicted.clone()));
        Slot {
            live: self.clone(),
            id,
            evicted,
        }
    }
}

impl Slot {
    async fn serve<I>(
        self,
        io: I,
        state: Arc<AdminState>,
        cancel: CancellationToken,
        own: Option<Option<IpAddr>>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::select! {
            () = serve_connection(io, state, cancel, own) => {}
            () = self.evicted.cancelled() => {
                tracing::debug!("admin connection closed to make room for a new one");
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.live.conns.lock().1.retain(|(id, _)| *id != self.id);
    }
}

async fn serve_connection<I>(
    io: I,
    state: Arc<AdminState>,
    cancel: CancellationToken,
    own: Option<Option<IpAddr>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move {
            if let Some(own) = own
                && let Some(resp) = misdirected(&req, own)
            {
                return Ok::<_, Infallible>(resp);
            }
            Ok::<_, Infallible>(handle(&state, &req))
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(io), svc);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        }
        _ = cancel.cancelled() => {
            // Answer the request in flight, if any, then close.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// 421 for a `Host` a web page could have sent through DNS rebinding: anything but a loopback
/// address, `localhost`, or `own` (the address this TCP connection reached, which covers the
/// configured `admin_listen` host and, for `0.0.0.0`, the interface a scraper dialled). An IP
/// literal can't be rebound; a name could, so no name but `localhost` is taken. No `Host` at all
/// (HTTP/1.0) is no browser's request and is answered.
fn misdirected<B>(req: &Request<B>, own: Option<IpAddr>) -> Option<Response<Full<Bytes>>> {
    let host = req.headers().get(header::HOST)?;
    let ok = host.to_str().is_ok_and(|h| {
        let (name, _) = crate::config::host::split_host_port(h);
        let name = crate::config::host::normalize(name);
        name == "localhost"
            || name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .map(|ip| ip.to_canonical())
                .is_ok_and(|ip| ip.is_loopback() || Some(ip) == own.map(|o| o.to_canonical()))
    });
    (!ok).then(|| {
        json(
            StatusCode::MISDIRECTED_REQUEST,
            &serde_json::json!({
                "error": "misdirected",
                "message": "the admin listener answers only Host values that are a loopback address, localhost or its own address (a web page can't read it through DNS rebinding); use http://127.0.0.1:PORT/",
            }),
        )
    })
}

/// Answer one admin request.
pub fn handle<B>(state: &AdminState, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut resp = json(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method_not_allowed", "message": "the admin endpoints answer GET only"}),
        );
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return resp;
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "text/plain; charset=utf-8", "ok\n".into()),
        "/readyz" => {
            // A shared store that is away does not make the instance unready: it serves the
            // tokens it holds (taking every replica out of service at once would be worse); the
            // detail says so.
            let not_ready = state.not_ready();
            let mut body = if not_ready.is_empty() {
                serde_json::json!({"ready": true})
            } else {
                serde_json::json!({"ready": false, "providers": not_ready})
            };
            if let Some(store) = state.store_status() {
                body["store"] = serde_json::json!(store);
            }
            let status = if not_ready.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            json(status, &body)
        }
        "/metrics" => text(StatusCode::OK, METRICS_CONTENT_TYPE, state.metrics_text()),
        "/status" => json(StatusCode::OK, &state.status()),
        "/" => page(&state.status(), state.clock.unix_now()),
        other => json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({
                "error": "not_found",
                "message": format!("no admin endpoint at {other}; try /healthz, /readyz, /metrics, /status or /"),
            }),
        ),
    }
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    // Serializing plain structs and maps of strings can't fail.
    let mut body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned());
    body.push('\n');
    text(status, "application/json", body)
}

/// The status page, rendered here: it reads without scripts, and runs none.
fn page(status: &StatusReport, now_unix: i64) -> Response<Full<Bytes>> {
    let body = page::render(status, now_unix);
    let mut resp = text(StatusCode::OK, "text/html; charset=utf-8", body);
    // The page needs nothing but its own inline style: no script, no fetch, no frame.
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; \
             frame-ancestors 'none'",
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{self, Credential};
    use crate::secret::Secret;

    fn provider(name: &str) -> Arc<ProviderConfig> {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\n[providers.{name}]\npreset = \"static\"\nhosts = [\"{name}.test\"]\ntoken = \"t\"\n"
        );
        crate::config::load_str(&text, "t.toml", &|_| None)
            .unwrap()
            .providers[0]
            .clone()
    }

    fn get(path: &str) -> Request<()> {
        Request::get(path).body(()).unwrap()
    }

    fn body(resp: &Response<Full<Bytes>>) -> String {
        use http_body_util::BodyExt;
        let b = futures_util::FutureExt::now_or_never(resp.body().clone().collect())
            .unwrap()
            .unwrap();
        String::from_utf8(b.to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn readyz_names_each_provider_without_a_credential_and_why() {
        let (wa, ra) = credential::channel();
        let (wb, rb) = credential::channel();
        let state = AdminState::new(
            vec![(provider("a"), ra), (provider("b"), rb)],
            Arc::new(Metrics::new(&["a", "b"])),
        );
        wb.update(|s| {
            s.phase = Phase::LoginRequired;
            s.last_error = Some("invalid_grant".into());
        });
        let resp = handle(&state, &get("/readyz"));
        assert_eq!(resp.status(), 503);
        let v: serde_json::Value = serde_json::from_str(&body(&resp)).unwrap();
        assert_eq!(v["ready"], false);
        assert_eq!(v["providers"][0]["name"], "a");
        assert_eq!(v["providers"][0]["state"], "starting");
        assert_eq!(v["providers"][0]["reason"], "no token yet");
        assert_eq!(v["providers"][1]["state"], "login_required");
        assert_eq!(
            v["providers"][1]["reason"],
            "needs a person to authorize it: run `credproxy login b`: invalid_grant"
        );

        for w in [&wa, &wb] {
            let c = Credential::bearer(
                &Secret::from("tok"),
                &[],
                1,
                tokio::time::Instant::now(),
                None,
            )
            .unwrap();
            w.publish(Snapshot {
                credential: Some(Arc::new(c)),
                phase: Phase::Ready,
                ..Snapshot::starting()
            });
        }
        let resp = handle(&state, &get("/readyz"));
        assert_eq!(resp.status(), 200);
        assert_eq!(body(&resp), "{\"ready\":true}\n");
    }

    /// Issue 18 item 6: a Redis store that does not answer is `store_unavailable` in `/readyz`
    /// (which stays 200 while the tokens held are usable) and in `/status`.
    #[tokio::test]
    async fn a_shared_store_away_is_store_unavailable_but_not_unready() {
        use crate::token::store::redis::{Endpoint, LEASE_TTL, RedisOptions};
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens on a port just closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = crate::token::store::RedisStore::open(RedisOptions {
            endpoint: Endpoint::parse(&format!("redis://127.0.0.1:{port}/0")).unwrap(),
            key: [1; 32],
            key_prefix: "t".into(),
            pending_dir: dir.path().join("pending"),
            root_cert: None,
            lease_ttl: LEASE_TTL,
            events: Arc::new(|_, _| {}),
        })
        .unwrap();
        let (w, r) = credential::channel();
        let state = AdminState::new(vec![(provider("a"), r)], Arc::new(Metrics::new(&["a"])))
            .with_store(Arc::new(store));
        let c = Credential::bearer(
            &Secret::from("tok"),
            &[],
            1,
            tokio::time::Instant::now(),
            None,
        )
        .unwrap();
        w.publish(Snapshot {
            credential: Some(Arc::new(c)),
            phase: Phase::Ready,
            ..Snapshot::starting()
        });
        let resp = handle(&state, &get("/readyz"));
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = serde_json::from_str(&body(&resp)).unwrap();
        assert_eq!(v["ready"], true);
        assert_eq!(v["store"]["kind"], "redis");
        assert_eq!(v["store"]["state"], "store_unavailable");
        let v: serde_json::Value =
            serde_json::from_str(&body(&handle(&state, &get("/status")))).unwrap();
        assert_eq!(v["store"]["state"], "store_unavailable");
        // The file store reports nothing: the document is as before.
        let (_w, r) = credential::channel();
        let plain = AdminState::new(vec![(provider("a"), r)], Arc::new(Metrics::new(&["a"])));
        let v: serde_json::Value =
            serde_json::from_str(&body(&handle(&plain, &get("/status")))).unwrap();
        assert!(v.get("store").is_none(), "{v}");
    }

    #[tokio::test]
    async fn methods_paths_and_a_page_that_cannot_be_broken_out_of() {
        let (w, r) = credential::channel();
        let state = AdminState::new(vec![(provider("a"), r)], Arc::new(Metrics::new(&["a"])));
        w.update(|s| s.last_error = Some("</script><script>alert(1)</script>".into()));
        let post = Request::post("/healthz").body(()).unwrap();
        let resp = handle(&state, &post);
        assert_eq!(resp.status(), 405);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
        assert_eq!(handle(&state, &get("/nope")).status(), 404);
        assert_eq!(body(&handle(&state, &get("/healthz?x=1"))), "ok\n");
        let resp = handle(&state, &get("/"));
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.starts_with("default-src 'none'") && !csp.contains("script-src"));
        let page = body(&resp);
        assert!(!page.contains("<script"), "the page runs no script");
        assert!(
            page.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"),
            "the last error is HTML-escaped: {page}"
        );
        assert!(!page.contains("{{ROWS}}") && !page.contains("{{SUB}}"));
    }

    /// A credential from `obtained` to `expires` seconds from now (paused clock).
    fn token(generation: u64, lifetime: u64, left: u64) -> Arc<Credential> {
        let now = tokio::time::Instant::now();
        let expires = now + std::time::Duration::from_secs(left);
        let obtained = expires - std::time::Duration::from_secs(lifetime);
        Arc::new(
            Credential::bearer(
                &Secret::from("tok"),
                &[],
                generation,
                obtained,
                Some(expires),
            )
            .unwrap(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_page_as_sent_has_each_states_row_in_words_and_colour() {
        let names = ["ok", "amber", "red", "never"];
        let channels: Vec<_> = names.iter().map(|_| credential::channel()).collect();
        let state = AdminState::new(
            names
                .iter()
                .zip(&channels)
                .map(|(n, (_, r))| (provider(n), r.clone()))
                .collect(),
            Arc::new(Metrics::new(&names)),
        );
        state.set_routes(&[RouteConfig {
            target: RouteTarget::PathPrefix("/okay".into()),
            provider: "ok".into(),
            require_auth: false,
        }]);
        state.metrics.request(Some(0), StatusCode::OK);
        state.metrics.upstream_answer(0, Duration::ZERO, Some(401));
        let now_unix = state.clock.unix_now();
        let [ok, amber, red, never] = &channels[..] else {
            unreachable!()
        };
        ok.0.publish(Snapshot {
            credential: Some(token(1, 3600, 1800)),
            phase: Phase::Ready,
            expires_at_unix: Some(now_unix + 1800),
            ..Snapshot::starting()
        });
        amber.0.publish(Snapshot {
            credential: Some(token(1, 3600, 240)),
            phase: Phase::Failing,
            expires_at_unix: Some(now_unix + 240),
            next_refresh_unix: Some(now_unix + 30),
            last_error: Some("token endpoint answered 503 <Service Unavailable>".into()),
            ..Snapshot::starting()
        });
        red.0.publish(Snapshot {
            phase: Phase::Failing,
            next_refresh_unix: Some(now_unix + 60),
            last_error: Some("invalid_client".into()),
            ..Snapshot::starting()
        });
        let c = Credential::bearer(
            &Secret::from("tok"),
            &[],
            1,
            tokio::time::Instant::now(),
            None,
        )
        .unwrap();
        never.0.publish(Snapshot {
            credential: Some(Arc::new(c)),
            phase: Phase::Ready,
            ..Snapshot::starting()
        });

        let page = body(&handle(&state, &get("/")));
        let row = |name: &str| {
            let start = page
                .find(&format!("data-provider=\"{name}\""))
                .unwrap_or_else(|| panic!("no row for {name}: {page}"));
            let open = page[..start].rfind("<tr").unwrap();
            let end = start + page[start..].find("</tr>").unwrap();
            page[open..end].to_owned()
        };
        let ok_row = row("ok");
        assert!(ok_row.contains("class=\"provider health-ok\""), "{ok_row}");
        assert!(
            ok_row.contains(">ready<") && ok_row.contains(">in 30 min<"),
            "{ok_row}"
        );
        assert!(ok_row.contains(">1 h<"), "token lifetime: {ok_row}");
        assert!(ok_row.contains("routes prefix /okay"), "{ok_row}");
        assert!(ok_row.contains("hosts ok.test") && ok_row.contains("upstream https://"));
        assert!(
            ok_row.contains("<td class=\"num\">1</td><td class=\"num\">1</td>"),
            "one request, one upstream 401: {ok_row}"
        );
        let amber_row = row("amber");
        assert!(amber_row.contains("health-warn"), "{amber_row}");
        assert!(
            amber_row.contains("valid for 4 min, refresh failing; next attempt in 30 s"),
            "{amber_row}"
        );
        assert!(
            amber_row.contains("503 &lt;Service Unavailable&gt;"),
            "{amber_row}"
        );
        let red_row = row("red");
        assert!(red_row.contains("health-bad"), "{red_row}");
        assert!(
            red_row.contains("no valid token, refresh failing; next attempt in 1 min"),
            "{red_row}"
        );
        let never_row = row("never");
        assert!(never_row.contains("health-ok") && never_row.contains(">never expires<"));
        assert!(!page.contains("expires in never") && !page.contains(">in never<"));
        assert!(page.contains("<meta http-equiv=\"refresh\""));
        assert!(!page.contains("tok\"") && !page.contains("Bearer"));
    }
}
