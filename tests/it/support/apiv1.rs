//! Fake "API v1" (seeds/api-v1.md, "Documentation" and "Authentication").
//!
//! Quirks kept on purpose: `POST /oauth/token` demands `Content-Type: application/json` with no
//! media type parameters ("without any media type parameters"): anything else, including
//! `application/json; charset=utf-8`, is 415. The reply's `token_type` is lowercase `bearer`
//! and `expires_in` is 7200.
//!
//! Interpretations: the document names the password and authorization-code grants and points to
//! a refresh section it does not include; the fake takes the RFC 6749 §6 refresh request
//! (`grant_type, refresh_token, client_id, client_secret`) and rotates refresh tokens, counting
//! any reuse. `client_id` may be a JSON number (the sample shows it unquoted); `scope` is
//! optional (the authorize URL carries `scope=`). Codes live 10 minutes (RFC 6749 §4.1.2's
//! recommended maximum), since the document gives no figure.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::header::CONTENT_TYPE;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::json;

use super::authorize::{Consent, authorize, check_pkce, check_redirect};
use super::clock::FakeClock;
use super::core::{Endpoints, FakeCore, Served, check_bearer};
use super::fields::Fields;
use super::http::{Reject, Reply, json_reply, method_not_allowed};
use super::tls::TestCa;
use super::tokens::{CodeBook, CodeGrant, Grantee, TokenBook};

pub const CLIENT_ID: &str = "apiv1-client";
pub const CLIENT_SECRET: &str = "apiv1-secret";
pub const USERNAME: &str = "user@example.com";
pub const PASSWORD: &str = "apiv1-password";

pub type ApiV1Fake = Served<State>;

pub struct State {
    core: FakeCore,
    tokens: TokenBook,
    codes: CodeBook,
    lifetime: Mutex<Duration>,
    password_grants: AtomicUsize,
    code_grants: AtomicUsize,
    refresh_grants: AtomicUsize,
}

impl ApiV1Fake {
    pub async fn start(ca: &TestCa) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            tokens: TokenBook::new("apiv1", clock),
            codes: CodeBook::new("apiv1", clock, Duration::from_secs(600)),
            lifetime: Mutex::new(Duration::from_secs(7200)),
            password_grants: AtomicUsize::new(0),
            code_grants: AtomicUsize::new(0),
            refresh_grants: AtomicUsize::new(0),
        });
        Served::serve(ca, &[], state).await
    }

    /// `expires_in` of tokens issued from now on (default 7200 s).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.state.lifetime.lock() = lifetime;
    }

    pub fn set_code_lifetime(&self, lifetime: Duration) {
        self.state.codes.set_lifetime(lifetime);
    }

    /// A code as if the user had authorized in a browser; bound to no redirect.
    pub fn issue_code(&self) -> String {
        self.issue_code_with(CodeGrant::default())
    }

    /// A code for `grant` (an empty `client_id` means this fake's client): for a test that needs
    /// a scope, a PKCE challenge or a bound redirect without going through the authorize page.
    pub fn issue_code_with(&self, mut grant: CodeGrant) -> String {
        if grant.client_id.is_empty() {
            grant.client_id = CLIENT_ID.to_owned();
        }
        self.state.codes.issue(grant)
    }

    pub fn password_grants(&self) -> usize {
        self.state.password_grants.load(Ordering::SeqCst)
    }

    pub fn authorization_code_grants(&self) -> usize {
        self.state.code_grants.load(Ordering::SeqCst)
    }

    pub fn refresh_grants(&self) -> usize {
        self.state.refresh_grants.load(Ordering::SeqCst)
    }
}

impl Endpoints for State {
    fn core(&self) -> &FakeCore {
        &self.core
    }
    fn tokens(&self) -> &TokenBook {
        &self.tokens
    }
    fn serve(self: Arc<Self>, parts: Parts, body: Bytes) -> impl Future<Output = Reply> + Send {
        self.route(parts, body)
    }
}

impl State {
    async fn route(self: Arc<Self>, parts: Parts, body: Bytes) -> Reply {
        match (&parts.method, parts.uri.path()) {
            (&Method::POST, "/oauth/token") => {
                let result = self.token(&parts, &body).await;
                self.core.finish(result)
            }
            (&Method::GET, "/oauth/authorize") => self.core.finish(authorize(
                &self.core,
                &self.codes,
                parts.uri.query(),
                CLIENT_ID,
                Consent::Allow,
            )),
            (_, "/oauth/token" | "/oauth/authorize") => method_not_allowed(),
            _ => {
                let check = check_bearer(&self.tokens, &parts.headers).map(drop);
                self.core.serve_api(&parts, body, check)
            }
        }
    }

    async fn token(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        let parsed = exact_json(parts).and_then(|()| Fields::from_json(body, &["client_id"]));
        let shape = match self
            .core
            .begin_token_call(parts, parsed.as_ref().ok())
            .await
        {
            Ok(shape) => shape,
            Err(injected) => return Ok(injected),
        };
        let fields = parsed?;
        let mut grantee = Grantee {
            client_id: CLIENT_ID.to_owned(),
            ..Grantee::default()
        };
        match fields.require("grant_type")? {
            "password" => {
                self.password_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &[
                        "grant_type",
                        "username",
                        "password",
                        "client_id",
                        "client_secret",
                    ],
                    &["scope"],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                if fields.get("username") != Some(USERNAME)
                    || fields.get("password") != Some(PASSWORD)
                {
                    return Err(Reject::invalid_grant("wrong username or password"));
                }
                grantee.username = Some(USERNAME.to_owned());
                grantee.scope = fields.get("scope").map(str::to_owned);
            }
            "authorization_code" => {
                self.code_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &[
                        "client_id",
                        "client_secret",
                        "code",
                        "grant_type",
                        "redirect_uri",
                    ],
                    &["code_verifier"],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                let grant = self.codes.redeem(fields.require("code")?)?;
                check_redirect(&grant, fields.get("redirect_uri"))?;
                check_pkce(&grant, fields.get("code_verifier"), false)?;
                grantee.scope = grant.scope;
            }
            "refresh_token" => {
                self.refresh_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &["grant_type", "refresh_token", "client_id", "client_secret"],
                    &["scope"],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                grantee = self
                    .tokens
                    .use_refresh(fields.require("refresh_token")?, true)
                    .map_err(|e| e.reject())?;
            }
            other => return Err(Reject::unsupported_grant_type(other)),
        }
        let lifetime = *self.lifetime.lock();
        let (access, refresh) = self.tokens.issue(shape, Some(lifetime), &grantee, true);
        Ok(json_reply(
            200,
            &json!({
                "access_token": access,
                "token_type": "bearer",
                "expires_in": lifetime.as_secs(),
                "refresh_token": refresh,
            }),
        ))
    }
}

/// "without any media type parameters": byte for byte `application/json` (the type itself is
/// case-insensitive, RFC 9110 §8.3.1), one header, nothing after it.
fn exact_json(parts: &Parts) -> Result<(), Reject> {
    let mut values = parts.headers.get_all(CONTENT_TYPE).iter();
    match (values.next(), values.next()) {
        (Some(v), None) if v.as_bytes().eq_ignore_ascii_case(b"application/json") => Ok(()),
        (v, _) => Err(Reject::new(
            415,
            "unsupported_media_type",
            format!("Content-Type must be exactly application/json, got {v:?}"),
        )),
    }
}
