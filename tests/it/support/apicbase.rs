//! Fake Apicbase (seeds/apicbase.md, "Generating Tokens", "Refreshing Tokens" and the
//! introspection paragraph).
//!
//! Quirks kept on purpose: every path ends in `/` (the slash-less path is 404); the token request
//! is form-urlencoded; codes live one minute and are single use; access tokens last a week and a
//! refresh still works after the access token expired; `POST /oauth/introspect/` answers
//! `{"active": true, "scope", "exp", "client_id", "username"}` or `{"active": false}`.
//! `expires_in` can be left out of token replies, so a client must fall back to introspection.
//!
//! Interpretations: refresh tokens rotate by default (the reply carries a new `refresh_token`;
//! Apicbase's paths are Django OAuth Toolkit's, which rotates), switchable with
//! `set_rotate_refresh`. An optional PKCE `code_verifier` is accepted and, when the code had a
//! challenge, required. Any path outside `/oauth/` is the protected API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::authorize::{Consent, authorize, check_pkce, check_redirect};
use super::clock::{FakeClock, unix_secs};
use super::core::{Endpoints, FakeCore, Served, check_bearer};
use super::fields::Fields;
use super::http::{Reject, Reply, json_reply, method_not_allowed, not_found, require_media_type};
use super::tls::TestCa;
use super::tokens::{CodeBook, CodeGrant, Grantee, TokenBook};

pub const CLIENT_ID: &str = "apicbase-client";
pub const CLIENT_SECRET: &str = "apicbase-secret";
/// The user the tokens belong to, as introspection reports it.
pub const USERNAME: &str = "chef@example.com";
pub const HOSTS: &[&str] = &["api.apicbase.com", "app.apicbase.com"];
const FORM: &str = "application/x-www-form-urlencoded";

pub type ApicbaseFake = Served<State>;

pub struct State {
    core: FakeCore,
    tokens: TokenBook,
    codes: CodeBook,
    lifetime: Mutex<Duration>,
    send_expires_in: AtomicBool,
    rotate_refresh: AtomicBool,
    code_grants: AtomicUsize,
    refresh_grants: AtomicUsize,
    introspect_calls: AtomicUsize,
}

impl ApicbaseFake {
    pub async fn start(ca: &TestCa) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            tokens: TokenBook::new("apicbase", clock),
            codes: CodeBook::new("apicbase", clock, Duration::from_secs(60)),
            lifetime: Mutex::new(Duration::from_secs(7 * 24 * 3600)),
            send_expires_in: AtomicBool::new(true),
            rotate_refresh: AtomicBool::new(true),
            code_grants: AtomicUsize::new(0),
            refresh_grants: AtomicUsize::new(0),
            introspect_calls: AtomicUsize::new(0),
        });
        Served::serve(ca, HOSTS, state).await
    }

    /// Access-token lifetime (default one week).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.state.lifetime.lock() = lifetime;
    }

    /// `false`: token replies carry no `expires_in` (the client must introspect).
    pub fn set_send_expires_in(&self, send: bool) {
        self.state.send_expires_in.store(send, Ordering::SeqCst);
    }

    pub fn set_rotate_refresh(&self, rotate: bool) {
        self.state.rotate_refresh.store(rotate, Ordering::SeqCst);
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

    pub fn authorization_code_grants(&self) -> usize {
        self.state.code_grants.load(Ordering::SeqCst)
    }

    pub fn refresh_grants(&self) -> usize {
        self.state.refresh_grants.load(Ordering::SeqCst)
    }

    pub fn introspect_calls(&self) -> usize {
        self.state.introspect_calls.load(Ordering::SeqCst)
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
        let path = parts.uri.path();
        match (&parts.method, path) {
            (&Method::POST, "/oauth/token/") => {
                let result = self.token(&parts, &body).await;
                self.core.finish(result)
            }
            (&Method::GET, "/oauth/authorize/") => self.core.finish(authorize(
                &self.core,
                &self.codes,
                parts.uri.query(),
                CLIENT_ID,
                Consent::Allow,
            )),
            (&Method::POST, "/oauth/introspect/") => {
                let result = self.introspect(&parts, &body);
                self.core.finish(result)
            }
            (_, "/oauth/token/" | "/oauth/authorize/" | "/oauth/introspect/") => {
                method_not_allowed()
            }
            _ if path.starts_with("/oauth/") => not_found(),
            _ => {
                let check = check_bearer(&self.tokens, &parts.headers).map(drop);
                self.core.serve_api(&parts, body, check)
            }
        }
    }

    async fn token(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        let parsed =
            require_media_type(&parts.headers, FORM).and_then(|()| Fields::from_form(body));
        let shape = match self
            .core
            .begin_token_call(parts, parsed.as_ref().ok())
            .await
        {
            Ok(shape) => shape,
            Err(injected) => return Ok(injected),
        };
        let fields = parsed?;
        let rotate = self.rotate_refresh.load(Ordering::SeqCst);
        let (grantee, old_refresh) = match fields.require("grant_type")? {
            "authorization_code" => {
                self.code_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &[
                        "grant_type",
                        "code",
                        "redirect_uri",
                        "client_id",
                        "client_secret",
                    ],
                    &["code_verifier"],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                let grant = self.codes.redeem(fields.require("code")?)?;
                check_redirect(&grant, fields.get("redirect_uri"))?;
                check_pkce(&grant, fields.get("code_verifier"), false)?;
                let grantee = Grantee {
                    client_id: CLIENT_ID.to_owned(),
                    username: Some(USERNAME.to_owned()),
                    scope: grant.scope,
                };
                (grantee, None)
            }
            "refresh_token" => {
                self.refresh_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &["grant_type", "refresh_token", "client_id", "client_secret"],
                    &[],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                let refresh = fields.require("refresh_token")?;
                // The access token's own expiry does not matter here: "You can still refresh an
                // access token after it has expired".
                let grantee = self
                    .tokens
                    .use_refresh(refresh, rotate)
                    .map_err(|e| e.reject())?;
                (grantee, Some(refresh.to_owned()))
            }
            other => return Err(Reject::unsupported_grant_type(other)),
        };
        let lifetime = *self.lifetime.lock();
        let new_refresh = old_refresh.is_none() || rotate;
        let (access, refresh) = self
            .tokens
            .issue(shape, Some(lifetime), &grantee, new_refresh);
        let mut reply = Map::new();
        reply.insert("access_token".into(), access.into());
        reply.insert("token_type".into(), "Bearer".into());
        if self.send_expires_in.load(Ordering::SeqCst) {
            reply.insert("expires_in".into(), lifetime.as_secs().into());
        }
        reply.insert("refresh_token".into(), refresh.or(old_refresh).into());
        reply.insert("scope".into(), grantee.scope.unwrap_or_default().into());
        Ok(json_reply(200, &Value::Object(reply)))
    }

    fn introspect(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        self.introspect_calls.fetch_add(1, Ordering::SeqCst);
        require_media_type(&parts.headers, FORM)?;
        let fields = Fields::from_form(body)?;
        // The document's curl also sends `refresh_token`; it is accepted and ignored.
        fields.expect(&["token", "client_id", "client_secret"], &["refresh_token"])?;
        fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
        let token = self.tokens.access(fields.require("token")?);
        let active = token.filter(|t| self.tokens.is_live(t) && t.grantee.client_id == CLIENT_ID);
        let Some(token) = active else {
            return Ok(json_reply(200, &json!({"active": false})));
        };
        Ok(json_reply(
            200,
            &json!({
                "active": true,
                "scope": token.grantee.scope.unwrap_or_default(),
                "exp": token.expires_at.map(unix_secs),
                "client_id": token.grantee.client_id,
                "username": token.grantee.username,
            }),
        ))
    }
}
