//! Start credproxy against the fakes, send requests through it, and wait for conditions.
//!
//! The preset end-to-end tests (`tests/preset_*.rs`) share this: a [`Harness`] owns a temp
//! directory with the test CA's `ca_file` and the token store (`state_dir`), builds a config from
//! a `[providers.*]` snippet, starts credproxy in-process ([`credproxy::app::start`]) and can start
//! it again on the same store (a restart). [`Harness::engine`] is what `credproxy login` would
//! use beside a running proxy: the same store and roots, in a context of its own.
//!
//! Time is real (short token lifetimes, seconds): tokio's paused clock and real sockets mix badly.
//! Nothing here sleeps hoping for timing; [`poll`] waits for a condition with a deadline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use credproxy::app::Running;
use credproxy::clock::Clock;
use credproxy::config::{AuthConfig, Config, OAuth2Config, ProviderConfig};
use credproxy::credential::Snapshot;
use credproxy::token::{EngineContext, FileStore, StoredToken, TokenHttp, TokenStore};
use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{TestClient, query_param};
use super::core::Fake;
use super::tls::TestCa;

/// What a client of credproxy sends as its own `Authorization`: credproxy must replace it.
pub const CLIENT_AUTHORIZATION: &str = "Bearer client-supplied-must-be-replaced";

/// A temp directory with the CA file and the token store, shared by successive proxies.
pub struct Harness {
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub state_dir: PathBuf,
}

impl Harness {
    pub fn new(ca: &TestCa) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca_file = ca.write_ca_file(dir.path());
        let state_dir = dir.path().join("state");
        Harness {
            _dir: dir,
            ca_file,
            state_dir,
        }
    }

    /// The `[proxy]` section plus `providers` (TOML), checked like `credproxy check` does.
    pub fn config(&self, providers: &str) -> Config {
        let text = format!(
            "{}\n{providers}",
            proxy_section(&self.state_dir, &self.ca_file)
        );
        credproxy::config::load_str(&text, "t.toml", &|_| None)
            .unwrap_or_else(|e| panic!("test config rejected: {e}\n{text}"))
    }

    /// Start credproxy with `providers`.
    pub async fn start(&self, providers: &str) -> Proxy {
        let config = self.config(providers);
        let running = credproxy::app::start(config.clone())
            .await
            .expect("credproxy starts");
        Proxy { running, config }
    }

    /// What `credproxy login` works with: the proxy's token store and roots, its own context.
    pub fn engine(&self) -> EngineContext {
        let roots = credproxy::tls::roots(Some(&self.ca_file)).expect("CA roots");
        let client = TokenHttp::new(roots).expect("token client");
        let store: Arc<dyn TokenStore> =
            Arc::new(FileStore::open(&self.state_dir).expect("token store"));
        EngineContext::new(client, store, Clock::new(), CancellationToken::new())
    }

    /// Stand-in for `credproxy login`: exchange `code` for `provider` in [`Harness::engine`]'s
    /// context; panics with the fake's latest refusal.
    pub async fn login(
        &self,
        provider: &ProviderConfig,
        code: &str,
        fake: &impl Fake,
    ) -> StoredToken {
        credproxy::token::login_with_code(provider, &self.engine(), code, None, None)
            .await
            .unwrap_or_else(|e| panic!("code exchange: {e:?}; fake: {:?}", fake.last_rejection()))
    }

    /// The token stored for `provider`, as the next process would read it.
    pub fn stored(&self, provider: &str) -> Option<StoredToken> {
        FileStore::open(&self.state_dir)
            .expect("token store")
            .load(provider)
            .expect("readable token store")
    }
}

/// A running credproxy and the config it runs.
pub struct Proxy {
    pub running: Running,
    pub config: Config,
}

impl Proxy {
    pub fn main(&self) -> SocketAddr {
        self.running.main_addr().tcp().expect("TCP main listener")
    }

    pub fn provider(&self, name: &str) -> Arc<ProviderConfig> {
        self.config
            .provider(name)
            .unwrap_or_else(|| panic!("no provider {name}"))
            .clone()
    }

    pub fn snapshot(&self, name: &str) -> Snapshot {
        let shared = self.running.shared();
        let router = &shared.router;
        let i = router.index_of(name).expect("provider in the router");
        router.providers[i].reader.snapshot()
    }

    /// `GET url` (absolute form, as an `HTTP_PROXY` client sends it) through the main listener,
    /// with the client's own `Authorization`, which credproxy must replace.
    pub async fn get(&self, url: &str) -> Resp {
        self.get_with(url, &[("authorization", CLIENT_AUTHORIZATION)])
            .await
    }

    pub async fn get_with(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        let uri: Uri = url.parse().expect("absolute URL");
        let mut b = Request::builder().uri(url).header(
            "host",
            uri.authority().expect("absolute URL").as_str().to_owned(),
        );
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        send(self.main(), b.body(Full::new(Bytes::new())).unwrap()).await
    }

    /// Keep sending `GET url` until `cond` holds (deadline `deadline`), asserting that every
    /// response is the upstream's 200 and that the upstream saw exactly one injected bearer
    /// (read with `upstream_headers`, which may assert more). Returns the distinct bearers seen,
    /// in order.
    pub async fn request_until(
        &self,
        url: &str,
        what: &str,
        deadline: Duration,
        upstream_headers: impl Fn() -> HeaderMap,
        cond: impl Fn() -> bool,
    ) -> Vec<String> {
        let end = Instant::now() + deadline;
        let mut seen: Vec<String> = Vec::new();
        let mut sent = 0;
        loop {
            let r = self.get(url).await;
            sent += 1;
            assert_eq!(
                r.status,
                StatusCode::OK,
                "request {sent} while waiting for {what}: {}",
                r.text()
            );
            let token = injected_bearer(&upstream_headers());
            if seen.last() != Some(&token) {
                seen.push(token);
            }
            if cond() {
                return seen;
            }
            assert!(
                Instant::now() < end,
                "timed out after {deadline:?} waiting for {what} ({sent} requests, all 200)"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET url` through credproxy: the upstream's 200, and the one bearer the fake's API saw
    /// (checked by [`injected_bearer`]).
    pub async fn get_ok(&self, url: &str, fake: &impl Fake) -> String {
        let r = self.get(url).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        injected_bearer(&api_headers(fake))
    }

    /// [`Proxy::request_until`] `refresh_grants()` reaches `n` (every response a 200 with one
    /// injected bearer at the fake's API). Returns the distinct bearers seen.
    pub async fn until_refreshes(
        &self,
        url: &str,
        fake: &impl Fake,
        n: usize,
        deadline: Duration,
        refresh_grants: impl Fn() -> usize,
    ) -> Vec<String> {
        self.request_until(
            url,
            &format!("{n} refreshes"),
            deadline,
            || api_headers(fake),
            || refresh_grants() >= n,
        )
        .await
    }

    /// After the fake was told to issue long-lived tokens: request until a refresh has happened
    /// and `provider`'s published expiry is more than `min_left` seconds away, then serve one
    /// more request ([`Proxy::get_ok`]). Returns the long-lived bearer.
    pub async fn until_long_lived(
        &self,
        url: &str,
        provider: &str,
        fake: &impl Fake,
        min_left: i64,
        refresh_grants: impl Fn() -> usize,
    ) -> String {
        let refreshes = refresh_grants();
        self.request_until(
            url,
            "a long-lived token",
            Duration::from_secs(10),
            || api_headers(fake),
            || {
                refresh_grants() > refreshes
                    && self
                        .snapshot(provider)
                        .expires_at_unix
                        .is_some_and(|e| e > jiff::Timestamp::now().as_second() + min_left)
            },
        )
        .await;
        self.get_ok(url, fake).await
    }

    /// `GET path` on the admin listener (`/status`, `/readyz`).
    pub async fn admin(&self, path: &str) -> Resp {
        let addr = self
            .running
            .admin
            .as_ref()
            .and_then(|a| a.tcp())
            .expect("admin listener");
        let req = Request::builder()
            .uri(path)
            .header("host", addr.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        send(addr, req).await
    }

    pub async fn stop(self) {
        assert!(
            self.running.shutdown(Duration::from_secs(2)).await,
            "credproxy drained in time"
        );
    }
}

/// A response as the client saw it.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text()))
    }
}

/// One HTTP/1.1 request to `addr` on a fresh connection, the URI exactly as given.
pub async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Resp {
    let tcp = TcpStream::connect(addr)
        .await
        .expect("connect to credproxy");
    send_on(tcp, req).await
}

/// One HTTP/1.1 request over `io` (TCP or a unix socket).
pub async fn send_on<I>(io: I, req: Request<Full<Bytes>>) -> Resp
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("HTTP/1.1 exchange");
    let (parts, body) = resp.into_parts();
    Resp {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("response body").to_bytes(),
    }
}

/// Wait until `cond` holds, checking every 100 ms; panic naming `what` after `deadline`.
pub async fn poll(what: &str, deadline: Duration, cond: impl Fn() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The one `Authorization` header the upstream saw, checked: a single value, `Bearer ` (capital B,
/// whatever the token server called the type), and not the client's. Returns the token.
pub fn injected_bearer(headers: &HeaderMap) -> String {
    let values: Vec<&str> = headers
        .get_all(AUTHORIZATION)
        .iter()
        .map(|v| v.to_str().expect("ASCII Authorization"))
        .collect();
    assert_eq!(
        values.len(),
        1,
        "exactly one Authorization upstream: {values:?}"
    );
    assert_ne!(
        values[0], CLIENT_AUTHORIZATION,
        "the client's Authorization must be replaced"
    );
    values[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("Authorization is `Bearer <token>`: {:?}", values[0]))
        .to_owned()
}

/// The provider's OAuth 2.0 settings (preset defaults applied).
pub fn oauth(cfg: &Config, name: &str) -> OAuth2Config {
    match &cfg.provider(name).expect("provider").auth {
        AuthConfig::OAuth2(o) => (**o).clone(),
        other => panic!("{name} is not an OAuth 2.0 provider: {other:?}"),
    }
}

/// The preset default `url` moved onto the fake: same path, the fake's origin. A preset path
/// that differs from the document's (a missing trailing slash) then fails against the fake.
pub fn on_fake(fake_origin: &str, url: &Uri) -> String {
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    format!("{fake_origin}{path}")
}

/// Load `providers` with no `[proxy]` section: the preset's defaults, for [`on_fake`].
pub fn defaults(providers: &str) -> Config {
    credproxy::config::load_str(providers, "defaults.toml", &|_| None)
        .unwrap_or_else(|e| panic!("defaults config rejected: {e}"))
}

/// The `[proxy]` section of a test config: both listeners on ephemeral ports, the token store in
/// `state_dir`, upstreams trusted through `ca_file`. More `[proxy]` keys may follow it.
pub fn proxy_section(state_dir: &std::path::Path, ca_file: &std::path::Path) -> String {
    format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nca_file = \"{}\"\n",
        state_dir.display(),
        ca_file.display(),
    )
}

/// The headers of the latest request the fake's API answered.
pub fn api_headers(fake: &impl Fake) -> HeaderMap {
    fake.last_api_headers().expect("the API was called")
}

/// A token request's field names, sorted.
pub fn keys(f: &std::collections::BTreeMap<String, String>) -> Vec<&str> {
    f.keys().map(String::as_str).collect()
}

/// Stand-in for the browser in `credproxy login`: GET the authorize URL (state `st4te`) at the
/// fake, which consents with a 302; returns its `Location`.
pub async fn consent(ca: &TestCa, cfg: &OAuth2Config) -> String {
    let url = credproxy::token::authorize_url(cfg, "st4te", None, None).expect("authorize URL");
    let consent = TestClient::new(ca).get(&url, &[]).await;
    assert_eq!(consent.status, 302, "{}", consent.text());
    consent.header("location").expect("redirect").to_owned()
}

/// The `code` a consent redirect carries.
pub fn code_of(location: &str) -> String {
    query_param(location, "code").expect("a code")
}
