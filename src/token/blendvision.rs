//! BlendVision One (`shared/seeds/blendvision.md`): an API token plus `x-bv-org-id` on every call.
//!
//! Two modes. `api_token`: a fixed token from the console; when `org_id` is not configured it is
//! discovered once with `GET /bv/org/v1/organizations` (`organization.id`) and kept in the store.
//! `email` + `password`: log in (`POST …/accounts/login`), then mint an API token
//! (`POST …/accounts/api-token` with a `name` and an `expired_date`), use it, and mint a new one
//! before that date. The login reply's `expires_in` can be `-2147483648`, so nothing here reads it:
//! the minted token's `expired_date` is what schedules the next mint.

use std::collections::BTreeMap;

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde_json::{Value, json};

use super::EngineContext;
use super::error::TokenError;
use super::expiry;
use super::oauth::call;
use super::reply::{self, ReplyError, visible_ascii};
use super::request::{self, sensitive};
use super::schedule::Policy;
use super::store::{self, StoredToken};
use crate::config::{BlendVisionConfig, BlendVisionMode, BodyFormat, FieldNames};
use crate::secret::Secret;

pub const ORG_HEADER: HeaderName = HeaderName::from_static("x-bv-org-id");
/// Where a discovered org id is kept in the store.
pub const ORG_KEY: &str = "org_id";

const LOGIN_ENDPOINT: &str = "BlendVision login endpoint";
const MINT_ENDPOINT: &str = "BlendVision API-token endpoint";
const ORG_ENDPOINT: &str = "BlendVision organizations endpoint";

pub struct BvSource {
    cfg: BlendVisionConfig,
    fingerprint: String,
    /// For the minted token's name.
    provider: String,
}

impl BvSource {
    pub fn new(cfg: &BlendVisionConfig, provider: &str) -> Self {
        let fingerprint = match &cfg.mode {
            BlendVisionMode::ApiToken(_) => {
                store::fingerprint(&cfg.org_url.to_string(), None, "api_token")
            }
            BlendVisionMode::Mint {
                mint_url, email, ..
            } => store::fingerprint(&mint_url.to_string(), Some(email), "mint"),
        };
        BvSource {
            cfg: cfg.clone(),
            fingerprint,
            provider: provider.to_owned(),
        }
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn policy(&self) -> Policy {
        Policy {
            refresh_before: self.cfg.refresh_before,
        }
    }

    /// A stored token is usable if we know the org id for it and, for a console token, it is
    /// the one configured now.
    pub fn accepts(&self, t: &StoredToken) -> bool {
        let same_token = match &self.cfg.mode {
            BlendVisionMode::ApiToken(token) => t.access_token == token.get(),
            BlendVisionMode::Mint { .. } => true,
        };
        same_token && self.org_id(t).is_some()
    }

    /// A console token can't be replaced by us; a minted one can.
    pub fn refreshable(&self) -> bool {
        matches!(self.cfg.mode, BlendVisionMode::Mint { .. })
    }

    /// The configured org id as it is now (a file credproxy follows may change it), else the
    /// one discovered for `t`.
    fn org_id(&self, t: &StoredToken) -> Option<Secret> {
        match &self.cfg.org_id {
            Some(live) => Some(live.get()),
            None => t.secrets.get(ORG_KEY).cloned(),
        }
    }

    /// `x-bv-org-id`, marked sensitive like every injected value.
    pub fn org_header(&self, t: &StoredToken) -> Result<(HeaderName, HeaderValue), TokenError> {
        let org = self
            .org_id(t)
            .ok_or_else(|| TokenError::Config("the BlendVision org id is unknown".into()))?;
        let mut v = HeaderValue::from_str(org.expose()).map_err(|_| {
            TokenError::Config("the BlendVision org id can't be a header value".into())
        })?;
        v.set_sensitive(true);
        Ok((ORG_HEADER, v))
    }

    pub async fn renew(
        &self,
        ctx: &EngineContext,
        current: Option<&StoredToken>,
    ) -> Result<StoredToken, TokenError> {
        let now = ctx.clock.unix_now();
        let known_org = current
            .filter(|t| t.fingerprint == self.fingerprint)
            .and_then(|t| t.secrets.get(ORG_KEY))
            .cloned();
        let (token, expires_at) = match &self.cfg.mode {
            BlendVisionMode::ApiToken(token) => (token.get(), None),
            BlendVisionMode::Mint {
                email,
                password,
                login_url,
                mint_url,
                api_token_lifetime,
            } => {
                let login = self.login(ctx, login_url, email, &password.get()).await?;
                let lifetime = api_token_lifetime.as_secs() as i64;
                let (token, expires) = self.mint(ctx, mint_url, &login, now + lifetime).await?;
                (token, Some(expires))
            }
        };
        let mut secrets = BTreeMap::new();
        if self.cfg.org_id.is_none() {
            let org = match known_org {
                Some(org) => org,
                None => self.discover_org(ctx, &token).await?,
            };
            secrets.insert(ORG_KEY.to_owned(), org);
        }
        Ok(StoredToken {
            access_token: token,
            refresh_token: None,
            expires_at,
            obtained_at: now,
            fingerprint: self.fingerprint.clone(),
            secrets,
            details: BTreeMap::new(),
            expiry_assumed: false,
        })
    }

    /// `POST login_url {email, password}` → the account's `access_token` (its `expires_in` is
    /// ignored on purpose).
    async fn login(
        &self,
        ctx: &EngineContext,
        url: &http::Uri,
        email: &str,
        password: &Secret,
    ) -> Result<Secret, TokenError> {
        let body = request::encode(
            BodyFormat::Json,
            &[("email", email), ("password", password.expose())],
        );
        let req = request::build(Method::POST, url, HeaderMap::new(), Some(body));
        let reply = call(&ctx.client, LOGIN_ENDPOINT, req, &ctx.clock).await?;
        reply::parse_grant(
            &reply.body,
            &FieldNames::default(),
            &jiff::tz::TimeZone::UTC,
            ctx.clock.unix_now(),
        )
        .map(|set| set.access_token)
        .map_err(|source| TokenError::Reply {
            endpoint: LOGIN_ENDPOINT,
            source,
        })
    }

    /// `POST mint_url {name, expired_date}` with the login token → `(token, expired_date)`.
    async fn mint(
        &self,
        ctx: &EngineContext,
        url: &http::Uri,
        login: &Secret,
        want_expiry: i64,
    ) -> Result<(Secret, i64), TokenError> {
        let expired_date = jiff::Timestamp::from_second(want_expiry)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .map_err(|_| TokenError::Config("api_token_lifetime is out of range".into()))?;
        let name = format!(
            "credproxy-{}-{}",
            host_name().unwrap_or_else(|| self.provider.clone()),
            ctx.clock.unix_now()
        );
        let body = json!({"name": name, "expired_date": expired_date}).to_string();
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            sensitive(&format!("Bearer {}", login.expose())),
        );
        let req = request::build(
            Method::POST,
            url,
            headers,
            Some((HeaderValue::from_static("application/json"), body.into())),
        );
        let reply = call(&ctx.client, MINT_ENDPOINT, req, &ctx.clock).await?;
        let bad = |source| TokenError::Reply {
            endpoint: MINT_ENDPOINT,
            source,
        };
        let v: Value = serde_json::from_slice(&reply.body).map_err(|_| bad(ReplyError::NotJson))?;
        let token = v
            .get("token")
            .ok_or_else(|| bad(ReplyError::MissingAccessToken("token".into())))?
            .as_str()
            .filter(|t| visible_ascii(t))
            .ok_or_else(|| bad(ReplyError::InvalidAccessToken))?;
        if let Some(tt) = v.get("token_type").and_then(Value::as_str)
            && !tt.eq_ignore_ascii_case("bearer")
        {
            return Err(bad(ReplyError::NotBearer(reply::printable(tt, 32))));
        }
        let now = ctx.clock.unix_now();
        let expires = match v
            .get("expired_date")
            .and_then(|d| expiry::absolute_unix(d, &jiff::tz::TimeZone::UTC, now))
        {
            Some(at) => at,
            None => {
                tracing::warn!(
                    "the minted API token has no usable expired_date; assuming the one requested"
                );
                want_expiry
            }
        };
        tracing::info!(
            expires_in_s = expires - now,
            "minted a BlendVision API token"
        );
        Ok((Secret::from(token), expires))
    }

    /// `GET org_url` with the API token → `organization.id`.
    async fn discover_org(
        &self,
        ctx: &EngineContext,
        token: &Secret,
    ) -> Result<Secret, TokenError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            sensitive(&format!("Bearer {}", token.expose())),
        );
        let req = request::build(Method::GET, &self.cfg.org_url, headers, None);
        let reply = call(&ctx.client, ORG_ENDPOINT, req, &ctx.clock).await?;
        let v: Value = serde_json::from_slice(&reply.body).map_err(|_| TokenError::Reply {
            endpoint: ORG_ENDPOINT,
            source: ReplyError::NotJson,
        })?;
        let id = v
            .pointer("/organization/id")
            .and_then(Value::as_str)
            .filter(|id| visible_ascii(id))
            .ok_or_else(|| TokenError::Reply {
                endpoint: ORG_ENDPOINT,
                source: ReplyError::MissingAccessToken("organization.id".into()),
            })?;
        tracing::info!("discovered the BlendVision org id");
        Ok(Secret::from(id))
    }
}

/// This machine's name, for telling minted tokens apart in the BlendVision console.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .take(63)
        .collect();
    (!name.is_empty()).then_some(name)
}
