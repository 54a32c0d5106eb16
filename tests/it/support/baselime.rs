//! Fake Baselime (seeds/baselime.md, "API Integration" steps 2–4).
//!
//! Quirks kept on purpose: the token request is JSON with camelCase names (`grantType`,
//! `clientId`, `clientSecret`, `redirect`, `code` / `refreshToken`), the reply is camelCase, and a
//! refresh reply carries no `refreshToken` because the refresh token neither expires nor rotates
//! ("does not expire unless access is revoked"). Codes live 3 minutes. `GET /oauth/workspaces`
//! lists workspaces with an `apiKey`. Any other path is the protected API.
//!
//! The document shows no authorize URL; the fake serves `GET /oauth/authorize` with the usual
//! RFC 6749 §4.1.1 parameters. It has no PKCE field either, so a verifier (`code_verifier` or
//! `codeVerifier`) is checked when sent and its absence is accepted.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::json;

use super::authorize::{Consent, authorize, check_pkce, check_redirect};
use super::clock::FakeClock;
use super::core::{Endpoints, FakeCore, Served, check_bearer};
use super::fields::Fields;
use super::http::{Reject, Reply, json_reply, method_not_allowed, require_media_type};
use super::tls::TestCa;
use super::tokens::{CodeBook, CodeGrant, Grantee, TokenBook};

pub const CLIENT_ID: &str = "baselime-client";
pub const CLIENT_SECRET: &str = "baselime-secret";
/// The workspace's upload key returned by `/oauth/workspaces`.
pub const API_KEY: &str = "baselime-apikey-abc123def456";
pub const HOST: &str = "api.baselime.io";

pub type BaselimeFake = Served<State>;

pub struct State {
    core: FakeCore,
    tokens: TokenBook,
    codes: CodeBook,
    lifetime: Mutex<Duration>,
    code_grants: AtomicUsize,
    refresh_grants: AtomicUsize,
    workspaces_calls: AtomicUsize,
}

impl BaselimeFake {
    pub async fn start(ca: &TestCa) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            tokens: TokenBook::new("baselime", clock),
            codes: CodeBook::new("baselime", clock, Duration::from_secs(3 * 60)),
            lifetime: Mutex::new(Duration::from_secs(86400)),
            code_grants: AtomicUsize::new(0),
            refresh_grants: AtomicUsize::new(0),
            workspaces_calls: AtomicUsize::new(0),
        });
        Served::serve(ca, &[HOST], state).await
    }

    /// `expiresIn` of tokens issued from now on (default 86400 s).
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

    /// "Access revoked": the refresh token stops working, so the client must log in again.
    pub fn revoke_refresh_token(&self, token: &str) -> bool {
        self.state.tokens.revoke_refresh(token)
    }

    pub fn authorization_code_grants(&self) -> usize {
        self.state.code_grants.load(Ordering::SeqCst)
    }

    pub fn refresh_grants(&self) -> usize {
        self.state.refresh_grants.load(Ordering::SeqCst)
    }

    pub fn workspaces_calls(&self) -> usize {
        self.state.workspaces_calls.load(Ordering::SeqCst)
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
            (&Method::GET, "/oauth/workspaces") => self.workspaces(&parts),
            (_, "/oauth/token" | "/oauth/authorize" | "/oauth/workspaces") => method_not_allowed(),
            _ => {
                let check = check_bearer(&self.tokens, &parts.headers).map(drop);
                self.core.serve_api(&parts, body, check)
            }
        }
    }

    async fn token(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        let parsed = require_media_type(&parts.headers, "application/json")
            .and_then(|()| Fields::from_json(body, &[]));
        let shape = match self
            .core
            .begin_token_call(parts, parsed.as_ref().ok())
            .await
        {
            Ok(shape) => shape,
            Err(injected) => return Ok(injected),
        };
        let fields = parsed?;
        let lifetime = *self.lifetime.lock();
        let grantee = Grantee {
            client_id: CLIENT_ID.to_owned(),
            ..Grantee::default()
        };
        match fields.require("grantType")? {
            "authorization_code" => {
                self.code_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &["grantType", "clientId", "clientSecret", "redirect", "code"],
                    &["code_verifier", "codeVerifier"],
                )?;
                fields.check_client("clientId", "clientSecret", CLIENT_ID, CLIENT_SECRET)?;
                let grant = self.codes.redeem(fields.require("code")?)?;
                check_redirect(&grant, fields.get("redirect"))?;
                let verifier = fields.get("code_verifier").or(fields.get("codeVerifier"));
                check_pkce(&grant, verifier, true)?;
                let (access, refresh) = self.tokens.issue(shape, Some(lifetime), &grantee, true);
                Ok(json_reply(
                    200,
                    &json!({
                        "accessToken": access,
                        "refreshToken": refresh,
                        "expiresIn": lifetime.as_secs(),
                        "tokenType": "Bearer",
                    }),
                ))
            }
            "refresh_token" => {
                self.refresh_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &[
                        "grantType",
                        "clientId",
                        "clientSecret",
                        "redirect",
                        "refreshToken",
                    ],
                    &[],
                )?;
                fields.check_client("clientId", "clientSecret", CLIENT_ID, CLIENT_SECRET)?;
                // Not rotated: the same refresh token keeps working.
                self.tokens
                    .use_refresh(fields.require("refreshToken")?, false)
                    .map_err(|e| e.reject())?;
                let (access, _) = self.tokens.issue(shape, Some(lifetime), &grantee, false);
                Ok(json_reply(
                    200,
                    &json!({
                        "accessToken": access,
                        "expiresIn": lifetime.as_secs(),
                        "tokenType": "Bearer",
                    }),
                ))
            }
            other => Err(Reject::unsupported_grant_type(other)),
        }
    }

    fn workspaces(&self, parts: &Parts) -> Reply {
        self.workspaces_calls.fetch_add(1, Ordering::SeqCst);
        let result = check_bearer(&self.tokens, &parts.headers).map(|_| {
            json_reply(
                200,
                &json!([{
                    "workspaceId": "my-workspace",
                    "environmentId": "prod",
                    "apiKey": API_KEY,
                }]),
            )
        });
        self.core.finish(result)
    }
}
