//! Fake BACE (seeds/bace.md, "Request token" and "Refresh access token").
//!
//! Quirks kept on purpose:
//! - `POST /oauth2/token` takes `multipart/form-data` only ("Post as form-data").
//! - The refresh request carries the *current* access token as `Authorization: Bearer`; the
//!   answer is `{"refreshed": true, "expires": "YYYY-MM-DD HH:MM:SS"}` (naive, UTC unless set
//!   otherwise) and the same access token lives on until then. A refresh whose bearer has
//!   already expired gets 401, which is how a client learns to fall back to the password grant.
//! - New tokens live 24 h, refreshed ones 14 days.
//! - 401 also means "no permission" ("we will return a HTTP 401"): paths under
//!   `/api/v2/forbidden` answer 401 even to a valid token, so tests can check that a client does
//!   not answer every 401 with a refresh.
//!
//! Interpretation: the bearer on a refresh must be the access token issued together with that
//! refresh token; any other bearer is 401, an unknown refresh token 400 `invalid_grant`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http::request::Parts;
use jiff::tz::TimeZone;
use parking_lot::Mutex;
use serde_json::json;

use super::clock::{FakeClock, to_timestamp};
use super::core::{Endpoints, FakeCore, Served, check_bearer};
use super::fields::Fields;
use super::http::{Reject, Reply, bearer, json_reply, media_type, method_not_allowed, not_found};
use super::tls::TestCa;
use super::tokens::{Grantee, TokenBook};

pub const CLIENT_ID: &str = "bace-client";
pub const CLIENT_SECRET: &str = "bace-secret";
pub const USERNAME: &str = "me@example.com";
pub const PASSWORD: &str = "bace-password";
pub const HOST: &str = "dashboard.bace-iot.com";

pub type BaceFake = Served<State>;

pub struct State {
    core: FakeCore,
    tokens: TokenBook,
    issued_lifetime: Mutex<Duration>,
    refreshed_lifetime: Mutex<Duration>,
    expires_tz: Mutex<TimeZone>,
    password_grants: AtomicUsize,
    refresh_grants: AtomicUsize,
    forbidden_calls: AtomicUsize,
}

impl BaceFake {
    pub async fn start(ca: &TestCa) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            tokens: TokenBook::new("bace", clock),
            issued_lifetime: Mutex::new(Duration::from_secs(24 * 3600)),
            refreshed_lifetime: Mutex::new(Duration::from_secs(14 * 24 * 3600)),
            expires_tz: Mutex::new(TimeZone::UTC),
            password_grants: AtomicUsize::new(0),
            refresh_grants: AtomicUsize::new(0),
            forbidden_calls: AtomicUsize::new(0),
        });
        Served::serve(ca, &[HOST], state).await
    }

    /// Lifetime of tokens from the password grant (default 24 h, sent as `expires_in`).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        *self.state.issued_lifetime.lock() = lifetime;
    }

    /// How far a refresh pushes the token's expiry (default 14 days).
    pub fn set_refresh_extension(&self, lifetime: Duration) {
        *self.state.refreshed_lifetime.lock() = lifetime;
    }

    /// The zone the naive `expires` is written in (default UTC): DESIGN.md's
    /// `expires_timezone` must be able to undo it.
    pub fn set_expires_timezone(&self, tz: TimeZone) {
        *self.state.expires_tz.lock() = tz;
    }

    pub fn password_grants(&self) -> usize {
        self.state.password_grants.load(Ordering::SeqCst)
    }

    pub fn refresh_grants(&self) -> usize {
        self.state.refresh_grants.load(Ordering::SeqCst)
    }

    /// API calls answered 401 for lack of permission (under `/api/v2/forbidden`).
    pub fn forbidden_calls(&self) -> usize {
        self.state.forbidden_calls.load(Ordering::SeqCst)
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
            (&Method::POST, "/oauth2/token") => {
                let result = self.token(&parts, body).await;
                self.core.finish(result)
            }
            (_, "/oauth2/token") => method_not_allowed(),
            _ if path.starts_with("/api/v2/") => {
                let check = self.api_check(&parts);
                self.core.serve_api(&parts, body, check)
            }
            _ => not_found(),
        }
    }

    fn api_check(&self, parts: &Parts) -> Result<(), Reject> {
        check_bearer(&self.tokens, &parts.headers)?;
        if parts.uri.path().starts_with("/api/v2/forbidden") {
            self.forbidden_calls.fetch_add(1, Ordering::SeqCst);
            // Same status as a bad token, different words: a client cannot tell them apart by
            // status alone, which is exactly the trap.
            return Err(Reject::new(
                401,
                "unauthorized",
                "You are not allowed to perform this action.",
            ));
        }
        Ok(())
    }

    async fn token(&self, parts: &Parts, body: Bytes) -> Result<Reply, Reject> {
        let parsed = match media_type(&parts.headers)?.as_deref() {
            Some("multipart/form-data") => {
                let content_type = super::http::content_type(&parts.headers)?.unwrap_or_default();
                Fields::from_multipart(content_type, body).await
            }
            other => Err(Reject::invalid_request(format!(
                "Content-Type must be multipart/form-data, got {other:?}"
            ))),
        };
        let shape = match self
            .core
            .begin_token_call(parts, parsed.as_ref().ok())
            .await
        {
            Ok(shape) => shape,
            Err(injected) => return Ok(injected),
        };
        let fields = parsed?;
        match fields.require("grant_type")? {
            "password" => {
                self.password_grants.fetch_add(1, Ordering::SeqCst);
                fields.expect(
                    &[
                        "client_id",
                        "client_secret",
                        "grant_type",
                        "username",
                        "password",
                    ],
                    &[],
                )?;
                fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
                if fields.get("username") != Some(USERNAME)
                    || fields.get("password") != Some(PASSWORD)
                {
                    return Err(Reject::invalid_grant("wrong username or password"));
                }
                let lifetime = *self.issued_lifetime.lock();
                let grantee = Grantee {
                    client_id: CLIENT_ID.to_owned(),
                    username: Some(USERNAME.to_owned()),
                    scope: None,
                };
                let (access, refresh) = self.tokens.issue(shape, Some(lifetime), &grantee, true);
                Ok(json_reply(
                    200,
                    &json!({
                        "access_token": access,
                        "expires_in": lifetime.as_secs(),
                        "token_type": "Bearer",
                        "scope": null,
                        "refresh_token": refresh,
                    }),
                ))
            }
            "refresh_token" => {
                self.refresh_grants.fetch_add(1, Ordering::SeqCst);
                self.refresh(parts, &fields)
            }
            other => Err(Reject::unsupported_grant_type(other)),
        }
    }

    fn refresh(&self, parts: &Parts, fields: &Fields) -> Result<Reply, Reject> {
        // The bearer is checked first, as BACE's auth layer would, before the body is read.
        let access = bearer(&parts.headers)
            .map_err(|_| Reject::new(401, "unauthorized", "refresh needs the access token"))?;
        let Some(entry) = self.tokens.access(access) else {
            return Err(Reject::new(401, "unauthorized", "unknown access token"));
        };
        if !self.tokens.is_live(&entry) {
            return Err(Reject::new(401, "unauthorized", "access token expired"));
        }
        fields.expect(
            &["refresh_token", "client_secret", "client_id", "grant_type"],
            &[],
        )?;
        fields.check_client("client_id", "client_secret", CLIENT_ID, CLIENT_SECRET)?;
        let refresh = fields.require("refresh_token")?;
        self.tokens
            .use_refresh(refresh, false)
            .map_err(|e| e.reject())?;
        if entry.refresh.as_deref() != Some(refresh) {
            return Err(Reject::new(
                401,
                "unauthorized",
                "the bearer was not issued with this refresh token",
            ));
        }
        // Whole seconds, so the naive string the client reads is the exact expiry.
        let secs = self.core.clock.now_unix() + self.refreshed_lifetime.lock().as_secs();
        let expires_at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        self.tokens.set_expiry(access, Some(expires_at));
        let naive = to_timestamp(expires_at)
            .to_zoned(self.expires_tz.lock().clone())
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        Ok(json_reply(
            200,
            &json!({"refreshed": true, "expires": naive}),
        ))
    }
}
