//! A scripted OAuth 2.0 token server and an engine harness for the token engine's tests.
//!
//! The server speaks plain HTTP on `127.0.0.1:0` (the engine's client allows http for tests) and
//! behaves like a strict RFC 6749 server: it checks the client, the password, and the refresh
//! token, rotates refresh tokens (configurable), and counts a refresh token presented twice as a
//! *reuse*. A test queues [`Step`]s to make the next token calls fail, stall, or answer oddly.
//! It keeps time with the same [`Clock`] as the engine, so under tokio's paused clock both agree.
//!
//! Paused time and real sockets: when every task waits, tokio jumps the clock to the next timer,
//! even while a loopback reply is on its way; if that timer were the HTTP timeout, the call would
//! fail spuriously. [`ticker`] keeps a 100 ms timer always pending, so an idle runtime advances in
//! 100 ms steps and a round trip costs well under a virtual second.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use credproxy::clock::Clock;
use credproxy::config::ProviderConfig;
use credproxy::credential::{self, CredentialReader};
use credproxy::token::{EngineContext, TokenHttp, TokenStore};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CLIENT_ID: &str = "cid";
pub const CLIENT_SECRET: &str = "client-SECRET-c1";
pub const USERNAME: &str = "me@example.com";
pub const PASSWORD: &str = "pass-SECRET-p1";

/// What the next token call does instead of (or before) answering normally.
pub enum Step {
    /// Answer this status, body and headers; issue nothing.
    Reply(u16, String, Vec<(&'static str, String)>),
    /// Wait this long on tokio's clock, then answer normally.
    Delay(Duration),
    /// Signal [`ServerState::held`], wait for the notify, then answer normally.
    Hold(Arc<Notify>),
    /// Answer normally, with these fields replaced in the reply (`null` removes one).
    Merge(Value),
    /// 302 to this URL.
    Redirect(String),
}

impl Step {
    pub fn status(code: u16) -> Step {
        Step::Reply(code, json!({"error": "server_error"}).to_string(), vec![])
    }
    pub fn error(status: u16, code: &str) -> Step {
        Step::Reply(
            status,
            json!({"error": code, "error_description": "scripted"}).to_string(),
            vec![],
        )
    }
}

/// One token request as the server saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub grant_type: String,
    pub fields: BTreeMap<String, String>,
    pub content_type: String,
    pub authorization: Option<String>,
}

pub struct ServerState {
    clock: Clock,
    script: Mutex<VecDeque<Step>>,
    /// `expires_in` of issued tokens (any JSON: tests send strings and garbage).
    pub lifetime: Mutex<Value>,
    /// Issue refresh tokens and rotate them on refresh.
    pub rotate: AtomicBool,
    /// Issue JWTs (with `exp`) instead of opaque tokens.
    pub jwt: AtomicBool,
    next_id: AtomicU64,
    live_refresh: Mutex<HashSet<String>>,
    spent_refresh: Mutex<HashSet<String>>,
    /// Access token → expiry (Unix s), for introspection.
    issued: Mutex<HashMap<String, i64>>,
    pub codes: Mutex<HashSet<String>>,
    calls: Mutex<Vec<Call>>,
    reuse: AtomicUsize,
    pub held: Notify,
    introspections: AtomicUsize,
    /// Signalled after every token call.
    pub called: Notify,
}

pub struct TokenServer {
    pub addr: SocketAddr,
    pub state: Arc<ServerState>,
    task: JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub async fn start(clock: Clock) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState {
            clock,
            script: Mutex::new(VecDeque::new()),
            lifetime: Mutex::new(json!(100)),
            rotate: AtomicBool::new(true),
            jwt: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            live_refresh: Mutex::new(HashSet::new()),
            spent_refresh: Mutex::new(HashSet::new()),
            issued: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashSet::new()),
            calls: Mutex::new(Vec::new()),
            reuse: AtomicUsize::new(0),
            held: Notify::new(),
            introspections: AtomicUsize::new(0),
            called: Notify::new(),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(st.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        TokenServer { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn push(&self, step: Step) {
        self.state.script.lock().push_back(step);
    }

    pub fn set_lifetime(&self, v: Value) {
        *self.state.lifetime.lock() = v;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.calls.lock().clone()
    }

    pub fn token_calls(&self) -> usize {
        self.state
            .calls
            .lock()
            .iter()
            .filter(|c| c.path == "/token")
            .count()
    }

    pub fn grants(&self, grant: &str) -> usize {
        self.state
            .calls
            .lock()
            .iter()
            .filter(|c| c.grant_type == grant)
            .count()
    }

    /// Refresh tokens presented after they were spent.
    pub fn reuse(&self) -> usize {
        self.state.reuse.load(Ordering::SeqCst)
    }

    pub fn introspections(&self) -> usize {
        self.state.introspections.load(Ordering::SeqCst)
    }

    /// A code as if a person had authorized.
    pub fn issue_code(&self) -> String {
        let code = format!("code-{}", self.state.next_id.fetch_add(1, Ordering::SeqCst));
        self.state.codes.lock().insert(code.clone());
        code
    }

    /// Make every refresh token stop working (access revoked; not counted as reuse).
    pub fn revoke_all_refresh_tokens(&self) {
        self.state.live_refresh.lock().clear();
    }
}

fn json_reply(status: u16, v: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

impl ServerState {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let fields = parse_fields(&content_type, body).await;
        let authorization = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match parts.uri.path() {
            "/token" => {
                let call = Call {
                    path: "/token".into(),
                    grant_type: fields.get("grant_type").cloned().unwrap_or_default(),
                    fields: fields.clone(),
                    content_type,
                    authorization: authorization.clone(),
                };
                self.calls.lock().push(call);
                let r = self.token(&fields, authorization.as_deref()).await;
                self.called.notify_waiters();
                r
            }
            "/introspect" => self.introspect(&fields, authorization.as_deref()),
            _ => json_reply(404, &json!({"error": "not_found"})),
        }
    }

    fn client_ok(&self, fields: &BTreeMap<String, String>, authorization: Option<&str>) -> bool {
        let body = fields.get("client_id").map(String::as_str) == Some(CLIENT_ID)
            && fields.get("client_secret").map(String::as_str) == Some(CLIENT_SECRET);
        let basic = authorization.is_some_and(|a| {
            use base64::Engine as _;
            let want = base64::engine::general_purpose::STANDARD
                .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
            a == format!("Basic {want}")
        });
        body || basic
    }

    async fn token(
        &self,
        fields: &BTreeMap<String, String>,
        authorization: Option<&str>,
    ) -> Response<Full<Bytes>> {
        let step = self.script.lock().pop_front();
        let mut merge = None;
        match step {
            Some(Step::Reply(status, body, headers)) => {
                let mut b = Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                for (k, v) in headers {
                    b = b.header(k, v);
                }
                return b.body(Full::new(Bytes::from(body))).unwrap();
            }
            Some(Step::Redirect(url)) => {
                return Response::builder()
                    .status(StatusCode::FOUND)
                    .header("location", url)
                    .body(Full::new(Bytes::new()))
                    .unwrap();
            }
            Some(Step::Delay(d)) => tokio::time::sleep(d).await,
            Some(Step::Hold(n)) => {
                self.held.notify_one();
                n.notified().await;
            }
            Some(Step::Merge(v)) => merge = Some(v),
            None => {}
        }
        if !self.client_ok(fields, authorization) {
            return json_reply(401, &json!({"error": "invalid_client"}));
        }
        let grant = fields.get("grant_type").map(String::as_str).unwrap_or("");
        let mut issue_refresh = self.rotate.load(Ordering::SeqCst);
        match grant {
            "client_credentials" => issue_refresh = false,
            "password" => {
                if fields.get("username").map(String::as_str) != Some(USERNAME)
                    || fields.get("password").map(String::as_str) != Some(PASSWORD)
                {
                    return json_reply(
                        400,
                        &json!({"error": "invalid_grant", "error_description": "bad credentials"}),
                    );
                }
                issue_refresh = true;
            }
            "authorization_code" => {
                let code = fields.get("code").cloned().unwrap_or_default();
                if !self.codes.lock().remove(&code) {
                    return json_reply(400, &json!({"error": "invalid_grant"}));
                }
                issue_refresh = true;
            }
            "refresh_token" => {
                let rt = fields.get("refresh_token").cloned().unwrap_or_default();
                let live = if self.rotate.load(Ordering::SeqCst) {
                    self.live_refresh.lock().remove(&rt)
                } else {
                    self.live_refresh.lock().contains(&rt)
                };
                if !live {
                    if self.spent_refresh.lock().contains(&rt) {
                        self.reuse.fetch_add(1, Ordering::SeqCst);
                    }
                    return json_reply(
                        400,
                        &json!({"error": "invalid_grant", "error_description": "refresh token not valid"}),
                    );
                }
                if self.rotate.load(Ordering::SeqCst) {
                    self.spent_refresh.lock().insert(rt);
                }
            }
            _ => return json_reply(400, &json!({"error": "unsupported_grant_type"})),
        }
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        let lifetime = self.lifetime.lock().clone();
        let now = self.clock.unix_now();
        let exp = now + lifetime.as_i64().filter(|l| *l > 0).unwrap_or(100);
        let access = if self.jwt.load(Ordering::SeqCst) {
            jwt(&json!({"sub": "x", "exp": exp}))
        } else {
            format!("at-SECRET-{id}")
        };
        self.issued.lock().insert(access.clone(), exp);
        let mut reply =
            json!({"access_token": access, "token_type": "Bearer", "expires_in": lifetime});
        if issue_refresh {
            let rt = format!("rt-SECRET-{id}");
            self.live_refresh.lock().insert(rt.clone());
            reply["refresh_token"] = json!(rt);
        }
        if let Some(Value::Object(m)) = merge {
            for (k, v) in m {
                if v.is_null() {
                    reply.as_object_mut().unwrap().remove(&k);
                } else {
                    reply[k] = v;
                }
            }
        }
        json_reply(200, &reply)
    }

    fn introspect(
        &self,
        fields: &BTreeMap<String, String>,
        authorization: Option<&str>,
    ) -> Response<Full<Bytes>> {
        self.introspections.fetch_add(1, Ordering::SeqCst);
        if !self.client_ok(fields, authorization) {
            return json_reply(401, &json!({"error": "invalid_client"}));
        }
        let token = fields.get("token").cloned().unwrap_or_default();
        match self.issued.lock().get(&token) {
            Some(exp) if *exp > self.clock.unix_now() => {
                json_reply(200, &json!({"active": true, "exp": exp}))
            }
            _ => json_reply(200, &json!({"active": false})),
        }
    }
}

pub fn jwt(claims: &Value) -> String {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    format!(
        "{}.{}.c2ln",
        b64(r#"{"alg":"HS256"}"#),
        b64(&claims.to_string())
    )
}

async fn parse_fields(content_type: &str, body: Bytes) -> BTreeMap<String, String> {
    if content_type.starts_with("application/json") {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return v
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                    .collect()
            })
            .unwrap_or_default();
    }
    if content_type.starts_with("multipart/form-data") {
        let Ok(boundary) = multer::parse_boundary(content_type) else {
            return BTreeMap::new();
        };
        let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        let mut out = BTreeMap::new();
        while let Ok(Some(field)) = mp.next_field().await {
            let name = field.name().unwrap_or("").to_owned();
            out.insert(name, field.text().await.unwrap_or_default());
        }
        return out;
    }
    form_urlencoded::parse(&body).into_owned().collect()
}

/// Keeps a 100 ms timer pending so paused time advances in small steps (see the module doc).
pub fn ticker() -> JoinHandle<()> {
    tokio::spawn(async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// A provider from a config snippet: `preset = "oauth2"` against `url`, plus `extra` TOML lines.
pub fn provider(name: &str, url: &str, extra: &str) -> Arc<ProviderConfig> {
    let toml = format!(
        r#"
[providers.{name}]
preset = "oauth2"
hosts = ["api.example"]
token_url = "{url}/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
{extra}
"#
    );
    let cfg = credproxy::config::load_str(&toml, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("config: {e:?}"));
    cfg.providers[0].clone()
}

/// A running engine for one provider, and what a test watches it with.
pub struct Engine {
    pub reader: CredentialReader,
    /// Every refresh attempt's result (`ok`, `transient_error`, …), in order.
    pub events: mpsc::UnboundedReceiver<&'static str>,
    pub cancel: CancellationToken,
    pub task: JoinHandle<()>,
}

pub fn context(
    store: Arc<dyn TokenStore>,
    clock: Clock,
) -> (EngineContext, mpsc::UnboundedReceiver<&'static str>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let http = TokenHttp::new(rustls::RootCertStore::empty()).unwrap();
    let ctx = EngineContext::new(http, store, clock, CancellationToken::new())
        .with_jitter(Arc::new(|| 0.0))
        .with_observer(Arc::new(move |_provider: &str, result: &'static str| {
            let _ = tx.send(result);
        }));
    (ctx, rx)
}

impl Engine {
    pub fn start(
        provider: Arc<ProviderConfig>,
        store: Arc<dyn TokenStore>,
        clock: Clock,
    ) -> Engine {
        let (ctx, events) = context(store, clock);
        Engine::start_with(provider, ctx, events)
    }

    pub fn start_with(
        provider: Arc<ProviderConfig>,
        ctx: EngineContext,
        events: mpsc::UnboundedReceiver<&'static str>,
    ) -> Engine {
        let (writer, reader) = credential::channel();
        let cancel = ctx.cancel.clone();
        let task = credproxy::token::spawn(provider, writer, ctx);
        Engine {
            reader,
            events,
            cancel,
            task,
        }
    }

    /// The next refresh result; panics if none comes within a (virtual) day.
    pub async fn next_event(&mut self) -> &'static str {
        tokio::time::timeout(Duration::from_secs(86_400), self.events.recv())
            .await
            .expect("an engine event within a day")
            .expect("the engine is running")
    }

    /// Whether an event comes within `d`.
    pub async fn event_within(&mut self, d: Duration) -> Option<&'static str> {
        tokio::time::timeout(d, self.events.recv())
            .await
            .ok()
            .flatten()
    }

    /// The access token currently published.
    pub fn token(&self) -> Option<String> {
        let snap = self.reader.snapshot();
        let c = snap.credential?;
        let v = c.headers()[0].1.to_str().ok()?.to_owned();
        Some(v.trim_start_matches("Bearer ").to_owned())
    }

    pub async fn stop(self) {
        self.cancel.cancel();
        self.task.await.unwrap();
    }
}
