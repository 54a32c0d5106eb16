//! What every fake shares: call counters, the fault script, records of token requests and of the
//! last API request, and the protected API that answers only to a valid bearer.
//!
//! The [`Fake`] trait gives each provider fake the same test-facing vocabulary, so an e2e test
//! reads the same whichever seed provider it drives. [`Served`] is the one skeleton every provider
//! fake runs on (the HTTPS server with the test CA's certificate, the request body read, the
//! [`FakeCore`]); a fake is its [`Endpoints`]: its state, its routes and its quirks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, Method, Uri, Version};
use parking_lot::Mutex;
use serde_json::json;

use super::authorize::AuthorizeRequest;
use super::clock::FakeClock;
use super::fault::{Fault, FaultScript, Outcome, TokenShape};
use super::fields::Fields;
use super::http::{Reject, Reply, content_type, json_reply, read_body};
use super::server::{TestServer, handler};
use super::tls::{Alpn, TestCa};
use super::tokens::TokenBook;

/// One request as the fake's API saw it.
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One token-endpoint request, for assertions about the dialect the client spoke. Secret values
/// are redacted (see `Fields::redacted`), so printing a record never leaks one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenRequestRecord {
    pub path: String,
    pub content_type: Option<String>,
    /// `None` when the body could not be parsed in the expected format.
    pub fields: Option<BTreeMap<String, String>>,
    pub basic_auth: bool,
    pub bearer_auth: bool,
    /// The `x-`… fields it came with (`token_headers`), by name.
    pub extra: BTreeMap<String, String>,
}

#[derive(Default)]
pub struct FakeCore {
    pub clock: FakeClock,
    pub faults: FaultScript,
    token_calls: AtomicUsize,
    rejected: AtomicUsize,
    last_rejection: Mutex<Option<String>>,
    token_requests: Mutex<Vec<TokenRequestRecord>>,
    authorize_calls: AtomicUsize,
    last_authorize: Mutex<Option<AuthorizeRequest>>,
    api_calls: AtomicUsize,
    api_denied: AtomicUsize,
    last_api: Mutex<Option<RecordedRequest>>,
}

impl FakeCore {
    pub fn new(clock: FakeClock) -> Self {
        FakeCore {
            clock,
            ..FakeCore::default()
        }
    }

    /// Turns a handler result into the reply, counting and remembering refusals.
    pub fn finish(&self, result: Result<Reply, Reject>) -> Reply {
        result.unwrap_or_else(|reject| {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            *self.last_rejection.lock() = Some(format!(
                "{} {}: {}",
                reject.status.as_u16(),
                reject.error,
                reject.description
            ));
            reject.into_reply()
        })
    }

    /// Counts and records a token call, then consults the fault script: `Err` carries an
    /// injected reply to send instead of the normal answer.
    pub async fn begin_token_call(
        &self,
        parts: &Parts,
        fields: Option<&Fields>,
    ) -> Result<TokenShape, Reply> {
        self.token_calls.fetch_add(1, Ordering::SeqCst);
        let auth = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        let record = TokenRequestRecord {
            path: parts.uri.path().to_owned(),
            content_type: content_type(&parts.headers)
                .ok()
                .flatten()
                .map(str::to_owned),
            fields: fields.map(Fields::redacted),
            basic_auth: auth.starts_with("basic "),
            bearer_auth: auth.starts_with("bearer "),
            extra: parts
                .headers
                .iter()
                .filter(|(n, _)| n.as_str().starts_with("x-"))
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect(),
        };
        self.token_requests.lock().push(record);
        match self.faults.next_outcome().await {
            Outcome::Respond(reply) => Err(reply),
            Outcome::Proceed(shape) => Ok(shape),
        }
    }

    pub fn record_authorize(&self, request: AuthorizeRequest) {
        self.authorize_calls.fetch_add(1, Ordering::SeqCst);
        *self.last_authorize.lock() = Some(request);
    }

    /// The protected API: records the request, then answers 200 with an echo if `check` passed.
    pub fn serve_api(&self, parts: &Parts, body: Bytes, check: Result<(), Reject>) -> Reply {
        self.api_calls.fetch_add(1, Ordering::SeqCst);
        let body_text = String::from_utf8_lossy(&body).into_owned();
        *self.last_api.lock() = Some(RecordedRequest {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
        });
        if let Err(reject) = check {
            self.api_denied.fetch_add(1, Ordering::SeqCst);
            return reject.into_reply();
        }
        json_reply(
            200,
            &json!({
                "ok": true,
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "authorization_ok": true,
                "body": body_text,
            }),
        )
    }
}

/// What a provider fake is on top of [`Served`]: its state, with its [`FakeCore`] and the ledger
/// of access tokens its API accepts, and its routes.
pub trait Endpoints: Send + Sync + 'static {
    fn core(&self) -> &FakeCore;
    /// The ledger of access tokens the protected API accepts.
    fn tokens(&self) -> &TokenBook;
    /// Answers one request, its body already read whole.
    fn serve(self: Arc<Self>, parts: Parts, body: Bytes) -> impl Future<Output = Reply> + Send;
}

/// The skeleton of every provider fake: an HTTPS server (HTTP/2 and HTTP/1.1) with a certificate
/// from the test CA, reading each request's body (a body it refuses is answered through the
/// [`FakeCore`], fault script included) before the fake's [`Endpoints`] see it. Stopped when
/// dropped.
pub struct Served<S> {
    pub(super) server: TestServer,
    pub(super) state: Arc<S>,
}

impl<S: Endpoints> Served<S> {
    /// Serves `state` on `127.0.0.1:0`, with a certificate for `hosts` (and `localhost`,
    /// `127.0.0.1`).
    pub async fn serve(ca: &TestCa, hosts: &[&str], state: Arc<S>) -> Self {
        let routed = Arc::clone(&state);
        let server = TestServer::start(
            Some(ca.server_config(hosts, Alpn::H2AndHttp1)),
            handler(move |req| {
                let state = Arc::clone(&routed);
                async move {
                    let (parts, body) = req.into_parts();
                    match read_body(body).await {
                        Ok(body) => state.serve(parts, body).await,
                        Err(reject) => state.core().finish(Err(reject)),
                    }
                }
            }),
        )
        .await;
        Served { server, state }
    }
}

impl<S: Endpoints> Fake for Served<S> {
    fn core(&self) -> &FakeCore {
        self.state.core()
    }
    fn server(&self) -> &TestServer {
        &self.server
    }
    fn tokens(&self) -> &TokenBook {
        self.state.tokens()
    }
}

/// The test-facing surface every provider fake shares.
pub trait Fake {
    fn core(&self) -> &FakeCore;
    fn server(&self) -> &TestServer;
    /// The ledger of access tokens the protected API accepts.
    fn tokens(&self) -> &TokenBook;

    /// `https://localhost:PORT`.
    fn url(&self) -> String {
        self.server().url()
    }
    /// `https://127.0.0.1:PORT`.
    fn ip_url(&self) -> String {
        self.server().ip_url()
    }
    fn addr(&self) -> SocketAddr {
        self.server().addr()
    }
    fn clock(&self) -> FakeClock {
        self.core().clock
    }

    /// Queues a fault for the next token call (calls take faults in order).
    fn push_fault(&self, fault: Fault) {
        self.core().faults.push(fault);
    }
    fn pending_faults(&self) -> usize {
        self.core().faults.pending()
    }

    /// Every request to a token-issuing endpoint, faulted and refused ones included.
    fn token_calls(&self) -> usize {
        self.core().token_calls.load(Ordering::SeqCst)
    }
    fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.core().token_requests.lock().clone()
    }
    /// Requests the fake itself refused (not injected faults, not API denials).
    fn rejected_calls(&self) -> usize {
        self.core().rejected.load(Ordering::SeqCst)
    }
    /// `"<status> <error>: <why>"` of the latest refusal: the first thing to print when an e2e
    /// test fails.
    fn last_rejection(&self) -> Option<String> {
        self.core().last_rejection.lock().clone()
    }

    fn authorize_calls(&self) -> usize {
        self.core().authorize_calls.load(Ordering::SeqCst)
    }
    fn last_authorize(&self) -> Option<AuthorizeRequest> {
        self.core().last_authorize.lock().clone()
    }

    fn api_calls(&self) -> usize {
        self.core().api_calls.load(Ordering::SeqCst)
    }
    /// API requests answered 401/403/400.
    fn api_denied(&self) -> usize {
        self.core().api_denied.load(Ordering::SeqCst)
    }
    fn last_api_request(&self) -> Option<RecordedRequest> {
        self.core().last_api.lock().clone()
    }
    fn last_api_headers(&self) -> Option<HeaderMap> {
        self.last_api_request().map(|r| r.headers)
    }

    /// Whether the API would accept this bearer now.
    fn is_valid_token(&self, token: &str) -> bool {
        self.tokens().is_valid(token)
    }
    /// Access tokens issued so far.
    fn tokens_issued(&self) -> usize {
        self.tokens().issued()
    }
    /// When the API stops accepting `token` (`Some(None)`: never; `None`: not issued here).
    fn token_expiry(&self, token: &str) -> Option<Option<SystemTime>> {
        self.tokens().access(token).map(|t| t.expires_at)
    }
    /// Server-side revocation of every access token: the next API call answers 401.
    fn revoke_all_access(&self) {
        self.tokens().revoke_all_access();
    }
    /// Uses of an already-rotated refresh token (should stay 0 for a correct client).
    fn refresh_reuse(&self) -> usize {
        self.tokens().refresh_reuse()
    }
}

/// Checks the request's bearer against `book`.
pub fn check_bearer(book: &TokenBook, headers: &HeaderMap) -> Result<String, Reject> {
    let token = super::http::bearer(headers)?;
    if book.is_valid(token) {
        Ok(token.to_owned())
    } else {
        Err(Reject::invalid_token("unknown or expired access token"))
    }
}
