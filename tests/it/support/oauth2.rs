//! A generic RFC 6749 authorization server, for credproxy's `oauth2` kind (DESIGN.md: "any RFC
//! 6749 server ... the token request's format, field names and client authentication are
//! configurable").
//!
//! - `POST /token`: client_credentials (§4.4), password (§4.3), authorization_code (§4.1.3, with
//!   PKCE S256, RFC 7636) and refresh_token (§6, rotating by default, reuse counted). The body is
//!   form-urlencoded unless [`TokenFormat`] asks for JSON or multipart. The client authenticates
//!   with HTTP Basic (§2.3.1: id and secret form-urlencoded *before* base64) or in the body, as
//!   [`ClientAuth`] allows, and never both at once (§2.3).
//! - `POST /introspect` (RFC 7662) and `POST /revoke` (RFC 7009), form-urlencoded, client
//!   authenticated the same way.
//! - `GET /authorize` redirects with `code` and `state`, or `error=access_denied` under
//!   [`Consent::Deny`].
//! - Any other path is the protected API.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
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
use super::http::{
    Reject, Reply, content_type, json_reply, method_not_allowed, require_media_type,
};
use super::tls::TestCa;
use super::tokens::{CodeBook, CodeGrant, Grantee, RefreshError, TokenBook};

mod client_auth;

use client_auth::authenticate;

const FORM: &str = "application/x-www-form-urlencoded";

/// The token request's body format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenFormat {
    Form,
    Json,
    Multipart,
}

/// Where the client may put its credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` only.
    Basic,
    /// `client_id` + `client_secret` in the body only.
    Body,
    /// Either one (never both).
    Either,
}

/// How `expires_in` is written in token replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpiresIn {
    Number,
    /// `"3600"`: a string, as some servers send.
    String,
    Omitted,
}

#[derive(Clone, Debug)]
pub struct OAuth2Options {
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub format: TokenFormat,
    pub client_auth: ClientAuth,
    pub lifetime: Duration,
    pub expires_in: ExpiresIn,
    pub rotate_refresh: bool,
    /// A spent refresh token presented again revokes the whole grant (reuse detection, RFC 9700
    /// §4.14.2), as Auth0, Okta and others do: everyone sharing it is logged out.
    pub revoke_on_reuse: bool,
    pub consent: Consent,
    /// Served as `GET /.well-known/oauth-authorization-server` (RFC 8414); `None`: 404.
    pub metadata: Option<Value>,
    /// Added as `iss` to the authorization response's redirect (RFC 9207).
    pub redirect_iss: Option<String>,
}

impl Default for OAuth2Options {
    fn default() -> Self {
        OAuth2Options {
            client_id: "oauth2-client".to_owned(),
            client_secret: "oauth2-secret".to_owned(),
            username: "user@example.com".to_owned(),
            password: "oauth2-password".to_owned(),
            format: TokenFormat::Form,
            client_auth: ClientAuth::Either,
            lifetime: Duration::from_secs(3600),
            expires_in: ExpiresIn::Number,
            rotate_refresh: true,
            revoke_on_reuse: false,
            consent: Consent::Allow,
            metadata: None,
            redirect_iss: None,
        }
    }
}

pub type OAuth2Fake = Served<State>;

#[derive(Default)]
struct Counters {
    client_credentials: AtomicUsize,
    password: AtomicUsize,
    authorization_code: AtomicUsize,
    refresh_token: AtomicUsize,
    introspect: AtomicUsize,
    revoke: AtomicUsize,
    metadata: AtomicUsize,
    grants_revoked: AtomicUsize,
}

impl Counters {
    fn grant(&self, grant_type: &str) -> Option<&AtomicUsize> {
        match grant_type {
            "client_credentials" => Some(&self.client_credentials),
            "password" => Some(&self.password),
            "authorization_code" => Some(&self.authorization_code),
            "refresh_token" => Some(&self.refresh_token),
            _ => None,
        }
    }
}

pub struct State {
    core: FakeCore,
    tokens: TokenBook,
    codes: CodeBook,
    options: Mutex<OAuth2Options>,
    counters: Counters,
}

impl OAuth2Fake {
    pub async fn start(ca: &TestCa) -> Self {
        Self::start_with(ca, OAuth2Options::default()).await
    }

    pub async fn start_with(ca: &TestCa, options: OAuth2Options) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            tokens: TokenBook::new("oauth2", clock),
            codes: CodeBook::new("oauth2", clock, Duration::from_secs(600)),
            options: Mutex::new(options),
            counters: Counters::default(),
        });
        Served::serve(ca, &[], state).await
    }

    pub fn options(&self) -> OAuth2Options {
        self.state.options.lock().clone()
    }

    /// Changes options for the calls that follow.
    pub fn update_options(&self, change: impl FnOnce(&mut OAuth2Options)) {
        change(&mut self.state.options.lock());
    }

    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.update_options(|o| o.lifetime = lifetime);
    }

    /// [`Consent::Deny`]: `/authorize` redirects with `error=access_denied`.
    pub fn set_consent(&self, consent: Consent) {
        self.update_options(|o| o.consent = consent);
    }

    /// A code as if the user had authorized in a browser; bound to no redirect.
    pub fn issue_code(&self) -> String {
        self.issue_code_with(CodeGrant::default())
    }

    /// A code for `grant` (an empty `client_id` means this fake's client): for a test that needs
    /// a scope, a PKCE challenge or a bound redirect without going through the authorize page.
    pub fn issue_code_with(&self, mut grant: CodeGrant) -> String {
        if grant.client_id.is_empty() {
            grant.client_id = self.state.options.lock().client_id.clone();
        }
        self.state.codes.issue(grant)
    }

    pub fn client_credentials_grants(&self) -> usize {
        self.state
            .counters
            .client_credentials
            .load(Ordering::SeqCst)
    }
    pub fn password_grants(&self) -> usize {
        self.state.counters.password.load(Ordering::SeqCst)
    }
    pub fn authorization_code_grants(&self) -> usize {
        self.state
            .counters
            .authorization_code
            .load(Ordering::SeqCst)
    }
    pub fn refresh_grants(&self) -> usize {
        self.state.counters.refresh_token.load(Ordering::SeqCst)
    }
    pub fn introspect_calls(&self) -> usize {
        self.state.counters.introspect.load(Ordering::SeqCst)
    }
    /// Grants revoked because a refresh token was reused (`revoke_on_reuse`).
    pub fn grants_revoked(&self) -> usize {
        self.state.counters.grants_revoked.load(Ordering::SeqCst)
    }

    pub fn revoke_calls(&self) -> usize {
        self.state.counters.revoke.load(Ordering::SeqCst)
    }
    /// How many times the RFC 8414 metadata was asked for.
    pub fn metadata_calls(&self) -> usize {
        self.state.counters.metadata.load(Ordering::SeqCst)
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
        let result = match (&parts.method, parts.uri.path()) {
            (&Method::POST, "/token") => self.token(&parts, body).await,
            (&Method::POST, "/introspect") => self.introspect(&parts, &body),
            (&Method::POST, "/revoke") => self.revoke(&parts, &body),
            (&Method::GET, "/authorize") => {
                let options = self.options.lock().clone();
                authorize(
                    &self.core,
                    &self.codes,
                    parts.uri.query(),
                    &options.client_id,
                    options.consent,
                )
                .map(|reply| match &options.redirect_iss {
                    Some(iss) => with_iss(reply, iss),
                    None => reply,
                })
            }
            (&Method::GET, "/.well-known/oauth-authorization-server") => {
                self.counters.metadata.fetch_add(1, Ordering::SeqCst);
                return match self.options.lock().metadata.clone() {
                    Some(doc) => json_reply(200, &doc),
                    None => json_reply(404, &json!({"error": "not_found"})),
                };
            }
            (_, "/token" | "/introspect" | "/revoke" | "/authorize") => {
                return method_not_allowed();
            }
            _ => {
                let check = check_bearer(&self.tokens, &parts.headers).map(drop);
                return self.core.serve_api(&parts, body, check);
            }
        };
        self.core.finish(result)
    }

    async fn token(&self, parts: &Parts, body: Bytes) -> Result<Reply, Reject> {
        let options = self.options.lock().clone();
        let parsed = parse_body(parts, body, options.format).await;
        let shape = match self
            .core
            .begin_token_call(parts, parsed.as_ref().ok())
            .await
        {
            Ok(shape) => shape,
            Err(injected) => return Ok(injected),
        };
        let fields = parsed?;
        let grant_type = fields.require("grant_type")?;
        // Counted before authentication, like the other fakes: a counter says how often the
        // client tried a grant, not how often it succeeded.
        if let Some(counter) = self.counters.grant(grant_type) {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        let auth_fields = authenticate(parts, &fields, &options)?;
        let with = |names: &[&'static str]| -> Vec<&'static str> {
            names
                .iter()
                .copied()
                .chain(auth_fields.iter().copied())
                .collect()
        };
        let mut grantee = Grantee {
            client_id: options.client_id.clone(),
            ..Grantee::default()
        };
        let with_refresh = match grant_type {
            "client_credentials" => {
                fields.expect(&["grant_type"], &with(&["scope"]))?;
                grantee.scope = fields.get("scope").map(str::to_owned);
                // RFC 6749 §4.4.3: a refresh token SHOULD NOT be included.
                false
            }
            "password" => {
                fields.expect(&["grant_type", "username", "password"], &with(&["scope"]))?;
                if fields.get("username") != Some(options.username.as_str())
                    || fields.get("password") != Some(options.password.as_str())
                {
                    return Err(Reject::invalid_grant("wrong username or password"));
                }
                grantee.username = Some(options.username.clone());
                grantee.scope = fields.get("scope").map(str::to_owned);
                true
            }
            "authorization_code" => {
                fields.expect(
                    &["grant_type", "code"],
                    &with(&["redirect_uri", "code_verifier"]),
                )?;
                let grant = self.codes.redeem(fields.require("code")?)?;
                if grant.client_id != options.client_id {
                    return Err(Reject::invalid_grant("code issued to another client"));
                }
                check_redirect(&grant, fields.get("redirect_uri"))?;
                check_pkce(&grant, fields.get("code_verifier"), false)?;
                grantee.scope = grant.scope;
                true
            }
            "refresh_token" => {
                fields.expect(&["grant_type", "refresh_token"], &with(&["scope"]))?;
                let presented = fields.require("refresh_token")?;
                let original = self
                    .tokens
                    .use_refresh(presented, options.rotate_refresh)
                    .map_err(|e| {
                        if e == RefreshError::Spent && options.revoke_on_reuse {
                            self.tokens.revoke_grant_of(presented);
                            self.counters.grants_revoked.fetch_add(1, Ordering::SeqCst);
                        }
                        e.reject()
                    })?;
                grantee = narrow_scope(original, fields.get("scope"))?;
                options.rotate_refresh
            }
            other => return Err(Reject::unsupported_grant_type(other)),
        };
        let (access, refresh) =
            self.tokens
                .issue(shape, Some(options.lifetime), &grantee, with_refresh);
        let mut reply = Map::new();
        reply.insert("access_token".into(), access.into());
        reply.insert("token_type".into(), "Bearer".into());
        let secs = options.lifetime.as_secs();
        match options.expires_in {
            ExpiresIn::Number => drop(reply.insert("expires_in".into(), secs.into())),
            ExpiresIn::String => drop(reply.insert("expires_in".into(), secs.to_string().into())),
            ExpiresIn::Omitted => {}
        }
        if let Some(refresh) = refresh {
            reply.insert("refresh_token".into(), refresh.into());
        }
        if let Some(scope) = grantee.scope {
            reply.insert("scope".into(), scope.into());
        }
        Ok(json_reply(200, &Value::Object(reply)))
    }

    /// RFC 7662 §2: `{"active": false}` for anything not live, details otherwise.
    fn introspect(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        self.counters.introspect.fetch_add(1, Ordering::SeqCst);
        let options = self.options.lock().clone();
        require_media_type(&parts.headers, FORM)?;
        let fields = Fields::from_form(body)?;
        let auth_fields = authenticate(parts, &fields, &options)?;
        let mut optional = vec!["token_type_hint"];
        optional.extend(auth_fields);
        fields.expect(&["token"], &optional)?;
        let token = fields.require("token")?;
        if let Some(access) = self.tokens.access(token).filter(|t| self.tokens.is_live(t)) {
            return Ok(json_reply(
                200,
                &json!({
                    "active": true,
                    "scope": access.grantee.scope,
                    "client_id": access.grantee.client_id,
                    "username": access.grantee.username,
                    "token_type": "Bearer",
                    "exp": access.expires_at.map(unix_secs),
                }),
            ));
        }
        let active = self.tokens.is_refresh_live(token);
        Ok(json_reply(200, &json!({"active": active})))
    }

    /// RFC 7009 §2.2: 200 whether or not the token was known.
    fn revoke(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        self.counters.revoke.fetch_add(1, Ordering::SeqCst);
        let options = self.options.lock().clone();
        require_media_type(&parts.headers, FORM)?;
        let fields = Fields::from_form(body)?;
        let auth_fields = authenticate(parts, &fields, &options)?;
        let mut optional = vec!["token_type_hint"];
        optional.extend(auth_fields);
        fields.expect(&["token"], &optional)?;
        let token = fields.require("token")?;
        if !self.tokens.revoke_access(token) {
            self.tokens.revoke_refresh(token);
        }
        Ok(json_reply(200, &json!({})))
    }
}

async fn parse_body(parts: &Parts, body: Bytes, format: TokenFormat) -> Result<Fields, Reject> {
    match format {
        TokenFormat::Form => {
            require_media_type(&parts.headers, FORM)?;
            Fields::from_form(&body)
        }
        TokenFormat::Json => {
            require_media_type(&parts.headers, "application/json")?;
            Fields::from_json(&body, &[])
        }
        TokenFormat::Multipart => {
            require_media_type(&parts.headers, "multipart/form-data")?;
            let ct = content_type(&parts.headers)?.unwrap_or_default();
            Fields::from_multipart(ct, body).await
        }
    }
}

/// RFC 6749 §6: a refresh may ask for a subset of the original scope, never more.
fn narrow_scope(mut grantee: Grantee, requested: Option<&str>) -> Result<Grantee, Reject> {
    let Some(requested) = requested else {
        return Ok(grantee);
    };
    let original = grantee.scope.clone().unwrap_or_default();
    let allowed: Vec<&str> = original.split(' ').collect();
    if requested.split(' ').all(|s| allowed.contains(&s)) {
        grantee.scope = Some(requested.to_owned());
        Ok(grantee)
    } else {
        Err(Reject::new(
            400,
            "invalid_scope",
            "scope exceeds the original grant",
        ))
    }
}

/// The authorization response `reply` (a redirect) with `iss` added to its `Location`.
fn with_iss(mut reply: Reply, iss: &str) -> Reply {
    let Some(location) = reply
        .headers()
        .get(http::header::LOCATION)
        .and_then(|l| l.to_str().ok())
    else {
        return reply;
    };
    let iss: String = form_urlencoded::byte_serialize(iss.as_bytes()).collect();
    let location = format!("{location}&iss={iss}");
    reply.headers_mut().insert(
        http::header::LOCATION,
        http::HeaderValue::from_str(&location).expect("a valid Location"),
    );
    reply
}
