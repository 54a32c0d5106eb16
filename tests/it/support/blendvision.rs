//! Fake BlendVision One (seeds/blendvision.md, "Request API token", "Create API token" and
//! "Obtain Your Organization's ID").
//!
//! Quirks kept on purpose:
//! - login `POST /bv/account/v1/accounts/login` `{email, password}` answers
//!   `"expires_in": -2147483648`: garbage; the login token really lives 1 h (settable).
//! - mint `POST /bv/account/v1/accounts/api-token` with the login token as Bearer and
//!   `{name, expired_date}` (ISO 8601) returns a long-lived `token` valid until `expired_date`;
//!   an empty or absent `expired_date` means it never expires.
//! - `GET /bv/org/v1/organizations` with an API token returns `organization.id`.
//! - every other `/bv/` call needs a valid API token AND `x-bv-org-id` equal to the org id:
//!   401 without the first, 403 without the second.
//!
//! Interpretations: only API tokens (minted or static) open the API and the organization lookup;
//! the login token only mints. A past `expired_date` is refused with 400. The document mentions
//! refreshing the login token but gives no endpoint, so there is none.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Method;
use http::request::Parts;
use parking_lot::Mutex;
use serde_json::json;

use super::clock::FakeClock;
use super::core::{Endpoints, FakeCore, Served, check_bearer};
use super::fields::Fields;
use super::http::{Reject, Reply, json_reply, method_not_allowed, not_found, require_media_type};
use super::tls::TestCa;
use super::tokens::{Grantee, TokenBook};

pub const EMAIL: &str = "ops@example.com";
pub const PASSWORD: &str = "bv-password";
pub const DEFAULT_ORG_ID: &str = "org-123";
pub const HOST: &str = "api.one.blendvision.com";
/// The `expires_in` the login answers with, verbatim from the document.
pub const GARBAGE_EXPIRES_IN: i64 = -2_147_483_648;

const LOGIN: &str = "/bv/account/v1/accounts/login";
const MINT: &str = "/bv/account/v1/accounts/api-token";
const ORGS: &str = "/bv/org/v1/organizations";

/// What the last mint asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MintRequest {
    pub name: String,
    /// `None`: no expiry asked.
    pub expired_date: Option<jiff::Timestamp>,
}

pub type BlendVisionFake = Served<State>;

pub struct State {
    core: FakeCore,
    login_tokens: TokenBook,
    api_tokens: TokenBook,
    org_id: Mutex<String>,
    login_lifetime: Mutex<Duration>,
    login_calls: AtomicUsize,
    mint_calls: AtomicUsize,
    org_calls: AtomicUsize,
    last_mint: Mutex<Option<MintRequest>>,
}

impl BlendVisionFake {
    pub async fn start(ca: &TestCa) -> Self {
        let clock = FakeClock::new();
        let state = Arc::new(State {
            core: FakeCore::new(clock),
            login_tokens: TokenBook::new("bvlogin", clock),
            api_tokens: TokenBook::new("bvapi", clock),
            org_id: Mutex::new(DEFAULT_ORG_ID.to_owned()),
            login_lifetime: Mutex::new(Duration::from_secs(3600)),
            login_calls: AtomicUsize::new(0),
            mint_calls: AtomicUsize::new(0),
            org_calls: AtomicUsize::new(0),
            last_mint: Mutex::new(None),
        });
        Served::serve(ca, &[HOST], state).await
    }

    /// Accepts `token` as a never-expiring API token, as one handed out by BlendVision support.
    pub fn with_static_token(self, token: &str) -> Self {
        let grantee = Grantee {
            client_id: "static".to_owned(),
            ..Grantee::default()
        };
        self.state.api_tokens.insert_access(token, None, grantee);
        self
    }

    pub fn set_org_id(&self, org_id: &str) {
        *self.state.org_id.lock() = org_id.to_owned();
    }

    pub fn org_id(&self) -> String {
        self.state.org_id.lock().clone()
    }

    /// The real lifetime of login access tokens (default 1 h), whatever `expires_in` says.
    pub fn set_login_lifetime(&self, lifetime: Duration) {
        *self.state.login_lifetime.lock() = lifetime;
    }

    pub fn login_calls(&self) -> usize {
        self.state.login_calls.load(Ordering::SeqCst)
    }

    pub fn mint_calls(&self) -> usize {
        self.state.mint_calls.load(Ordering::SeqCst)
    }

    pub fn org_calls(&self) -> usize {
        self.state.org_calls.load(Ordering::SeqCst)
    }

    pub fn last_mint(&self) -> Option<MintRequest> {
        self.state.last_mint.lock().clone()
    }

    /// Whether `token` is a currently valid login access token.
    pub fn is_valid_login_token(&self, token: &str) -> bool {
        self.state.login_tokens.is_valid(token)
    }
}

impl Endpoints for State {
    fn core(&self) -> &FakeCore {
        &self.core
    }
    /// The API tokens (minted and static): what the API accepts.
    fn tokens(&self) -> &TokenBook {
        &self.api_tokens
    }
    fn serve(self: Arc<Self>, parts: Parts, body: Bytes) -> impl Future<Output = Reply> + Send {
        self.route(parts, body)
    }
}

impl State {
    async fn route(self: Arc<Self>, parts: Parts, body: Bytes) -> Reply {
        let path = parts.uri.path();
        match (&parts.method, path) {
            (&Method::POST, LOGIN) => {
                let result = self.login(&parts, &body).await;
                self.core.finish(result)
            }
            (&Method::POST, MINT) => {
                let result = self.mint(&parts, &body).await;
                self.core.finish(result)
            }
            (&Method::GET, ORGS) => self.organizations(&parts),
            (_, LOGIN | MINT | ORGS) => method_not_allowed(),
            _ if path.starts_with("/bv/") => {
                let check = self.api_check(&parts);
                self.core.serve_api(&parts, body, check)
            }
            _ => not_found(),
        }
    }

    async fn login(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        self.login_calls.fetch_add(1, Ordering::SeqCst);
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
        fields.expect(&["email", "password"], &[])?;
        if fields.get("email") != Some(EMAIL) || fields.get("password") != Some(PASSWORD) {
            return Err(Reject::new(
                401,
                "unauthenticated",
                "wrong email or password",
            ));
        }
        let grantee = Grantee {
            client_id: "login".to_owned(),
            username: Some(EMAIL.to_owned()),
            scope: None,
        };
        let lifetime = *self.login_lifetime.lock();
        let (access, refresh) = self
            .login_tokens
            .issue(shape, Some(lifetime), &grantee, true);
        Ok(json_reply(
            200,
            &json!({
                "access_token": access,
                "refresh_token": refresh,
                "expires_in": GARBAGE_EXPIRES_IN,
                "token_type": "Bearer",
            }),
        ))
    }

    async fn mint(&self, parts: &Parts, body: &Bytes) -> Result<Reply, Reject> {
        self.mint_calls.fetch_add(1, Ordering::SeqCst);
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
        // "you will need to possess the access token that is currently being used"
        check_bearer(&self.login_tokens, &parts.headers)?;
        let fields = parsed?;
        fields.expect(&["name"], &["expired_date"])?;
        let expired_date = match fields.get("expired_date") {
            None | Some("") => None,
            Some(raw) => {
                let ts: jiff::Timestamp = raw.parse().map_err(|e| {
                    Reject::invalid_request(format!("expired_date {raw:?} is not ISO 8601: {e}"))
                })?;
                if ts <= self.core.clock.now_timestamp() {
                    return Err(Reject::invalid_request("expired_date is in the past"));
                }
                Some(ts)
            }
        };
        *self.last_mint.lock() = Some(MintRequest {
            name: fields.require("name")?.to_owned(),
            expired_date,
        });
        let grantee = Grantee {
            client_id: "minted".to_owned(),
            username: Some(EMAIL.to_owned()),
            scope: None,
        };
        let (token, _) = self.api_tokens.issue(shape, None, &grantee, false);
        self.api_tokens
            .set_expiry(&token, expired_date.map(SystemTime::from));
        Ok(json_reply(
            200,
            &json!({
                "token": token,
                "expired_date": expired_date.map(|t| t.to_string()).unwrap_or_default(),
                "token_type": "Bearer",
            }),
        ))
    }

    fn organizations(&self, parts: &Parts) -> Reply {
        self.org_calls.fetch_add(1, Ordering::SeqCst);
        let org_id = self.org_id.lock().clone();
        let result = check_bearer(&self.api_tokens, &parts.headers).map(|_| {
            json_reply(
                200,
                &json!({"organization": {
                    "id": org_id,
                    "name": "Test Org",
                    "type": "ORGANIZATION_TYPE_BUSINESS",
                    "status": "ORGANIZATION_STATUS_ACTIVATED",
                    "owner_email": EMAIL,
                }}),
            )
        });
        self.core.finish(result)
    }

    fn api_check(&self, parts: &Parts) -> Result<(), Reject> {
        check_bearer(&self.api_tokens, &parts.headers)?;
        let mut values = parts.headers.get_all("x-bv-org-id").iter();
        match (values.next(), values.next()) {
            (Some(v), None) if v.as_bytes() == self.org_id.lock().as_bytes() => Ok(()),
            (None, _) => Err(Reject::new(
                403,
                "permission_denied",
                "x-bv-org-id is missing",
            )),
            _ => Err(Reject::new(
                403,
                "permission_denied",
                "x-bv-org-id is wrong or repeated",
            )),
        }
    }
}
