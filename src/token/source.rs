//! What a provider does to get a new token: the network half of a refresh.
//!
//! [`Source::renew`] turns "the token we hold" into the next one. For an OAuth 2.0 provider: use
//! the refresh token when there is one (with the current access token as Bearer for BACE); if the
//! server refuses it, fall back to the primary grant when that needs no person (client
//! credentials, password), else report that a login is needed. BlendVision has its own
//! (`blendvision.rs`). The refresher wraps this in the store's lock; this file never touches the
//! store.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};

use super::EngineContext;
use super::blendvision::BvSource;
use super::error::{TokenError, chain};
use super::oauth::{self, Introspection};
use super::reply::{RefreshReply, TokenSet, visible_ascii};
use super::request::GrantRequest;
use super::schedule::Policy;
use super::store::{self, StoredToken};
use crate::config::{AuthConfig, Grant, OAuth2Config, Preset, ProviderConfig};
use crate::secret::{Live, Secret};

/// Where Baselime's login `redirect` is kept: its refresh requests must repeat it.
pub const REDIRECT_KEY: &str = "redirect_uri";

pub enum Source {
    OAuth2(Box<OAuth2Source>),
    BlendVision(Box<BvSource>),
}

/// A new token, or the same one living longer (BACE's `{"refreshed": true}`).
#[derive(Debug)]
pub enum Renewed {
    New(StoredToken),
    Extended(StoredToken),
}

impl Renewed {
    pub fn token(&self) -> &StoredToken {
        match self {
            Renewed::New(t) | Renewed::Extended(t) => t,
        }
    }

    pub fn into_token(self) -> StoredToken {
        match self {
            Renewed::New(t) | Renewed::Extended(t) => t,
        }
    }
}

impl Source {
    /// `None` for a static provider: nothing to obtain.
    pub fn new(provider: &ProviderConfig, password: Option<Secret>) -> Option<Source> {
        match &provider.auth {
            AuthConfig::Static { .. } => None,
            AuthConfig::OAuth2(cfg) => Some(Source::OAuth2(Box::new(OAuth2Source::new(
                provider.preset,
                cfg,
                password,
            )))),
            AuthConfig::BlendVision(cfg) => Some(Source::BlendVision(Box::new(BvSource::new(
                cfg,
                &provider.name,
            )))),
        }
    }

    pub fn fingerprint(&self) -> &str {
        match self {
            Source::OAuth2(s) => &s.fingerprint,
            Source::BlendVision(s) => s.fingerprint(),
        }
    }

    pub fn policy(&self) -> Policy {
        match self {
            Source::OAuth2(s) => Policy {
                refresh_before: s.cfg.refresh_before,
            },
            Source::BlendVision(s) => s.policy(),
        }
    }

    /// Whether a stored token was obtained the way this provider is configured now, and can
    /// become a header.
    pub fn accepts(&self, t: &StoredToken) -> bool {
        t.fingerprint == self.fingerprint()
            && visible_ascii(t.access_token.expose())
            && match self {
                Source::OAuth2(_) => true,
                Source::BlendVision(s) => s.accepts(t),
            }
    }

    /// Whether a 401 from the upstream can be answered with a new token (not for a fixed one).
    pub fn refreshable(&self) -> bool {
        match self {
            Source::OAuth2(_) => true,
            Source::BlendVision(s) => s.refreshable(),
        }
    }

    /// Whether a new token can be had without a person and without spending a refresh token:
    /// the primary grant of client credentials or a password, or BlendVision's login and mint.
    pub fn needs_no_person(&self) -> bool {
        match self {
            Source::OAuth2(s) => s.cfg.grant.is_unattended(),
            Source::BlendVision(_) => true,
        }
    }

    /// At start, for a stored token: ask the introspection endpoint whether it is still active
    /// and until when (Apicbase). On failure, the stored expiry stands.
    pub async fn check_stored(&self, ctx: &EngineContext, mut t: StoredToken) -> StoredToken {
        let Source::OAuth2(s) = self else { return t };
        match oauth::introspect(&ctx.client, &s.cfg, &t.access_token, &ctx.clock).await {
            Ok(Some(Introspection { active: true, exp })) => {
                if let Some(exp) = exp {
                    t.expires_at = Some(exp);
                }
                tracing::info!("introspection: the stored token is active");
            }
            Ok(Some(Introspection { active: false, .. })) => {
                tracing::info!("introspection: the stored token is no longer active");
                t.expires_at = Some(ctx.clock.unix_now());
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %chain(&e), "introspection of the stored token failed; trusting its stored expiry")
            }
        }
        t
    }

    /// Obtain the next token, given the one we hold (if any).
    pub async fn renew(
        &self,
        ctx: &EngineContext,
        current: Option<&StoredToken>,
    ) -> Result<Renewed, TokenError> {
        match self {
            Source::OAuth2(s) => s.renew(ctx, current).await,
            Source::BlendVision(s) => s.renew(ctx, current).await.map(Renewed::New),
        }
    }

    /// Headers to inject beside `Authorization`: the provider's own, plus BlendVision's org id.
    pub fn headers(
        &self,
        provider: &ProviderConfig,
        t: &StoredToken,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, TokenError> {
        let mut h = crate::config::SecretHeader::fields(&provider.headers);
        if let Source::BlendVision(s) = self {
            h.push(s.org_header(t)?);
        }
        Ok(h)
    }
}

pub struct OAuth2Source {
    pub cfg: OAuth2Config,
    fingerprint: String,
    /// Baselime repeats the login's `redirect` in every refresh (its document shows it).
    redirect_on_refresh: bool,
    /// A password given at runtime (`credproxy login` for a password grant without one in config).
    password: Option<Secret>,
}

impl OAuth2Source {
    pub fn new(preset: Preset, cfg: &OAuth2Config, password: Option<Secret>) -> Self {
        OAuth2Source {
            fingerprint: store::fingerprint(
                &cfg.token_url.to_string(),
                cfg.client_id.as_deref(),
                cfg.grant.as_str(),
            ),
            cfg: cfg.clone(),
            redirect_on_refresh: preset == Preset::Baselime,
            password,
        }
    }

    async fn renew(
        &self,
        ctx: &EngineContext,
        current: Option<&StoredToken>,
    ) -> Result<Renewed, TokenError> {
        if let Some(cur) = current
            && let Some(rt) = &cur.refresh_token
        {
            match self.refresh(ctx, cur, rt).await {
                Ok(r) => return Ok(r),
                Err(e) if e.rejects_refresh() => {
                    if !self.cfg.grant.is_unattended() {
                        tracing::warn!(reason = %chain(&e), "the refresh token was refused; a login is needed");
                        return Err(TokenError::LoginRequired("the refresh token was refused"));
                    }
                    tracing::warn!(
                        reason = %chain(&e),
                        grant = self.cfg.grant.as_str(),
                        "the refresh was refused; obtaining a new token with the primary grant"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        self.primary(ctx, current).await.map(Renewed::New)
    }

    async fn refresh(
        &self,
        ctx: &EngineContext,
        cur: &StoredToken,
        rt: &Secret,
    ) -> Result<Renewed, TokenError> {
        let redirect_uri = if self.redirect_on_refresh {
            self.cfg
                .redirect_uri
                .as_deref()
                .or(cur.secrets.get(REDIRECT_KEY).map(Secret::expose))
        } else {
            None
        };
        let access_token = self.cfg.refresh_with_bearer.then_some(&cur.access_token);
        let now = ctx.clock.unix_now();
        let reply = oauth::refresh_call(
            &ctx.client,
            &self.cfg,
            rt,
            access_token,
            redirect_uri,
            &ctx.clock,
        )
        .await?;
        match reply {
            RefreshReply::Token(set) => {
                let mut t = self.stored(ctx, set, now).await;
                // RFC 6749 §6: a refresh reply may omit the refresh token; the old one stays valid.
                if t.refresh_token.is_none() {
                    t.refresh_token = Some(rt.clone());
                }
                t.secrets = merge(&cur.secrets, t.secrets);
                t.details = cur.details.clone();
                Ok(Renewed::New(t))
            }
            RefreshReply::Extended { expiry } => {
                let resolved = oauth::resolve_expiry(
                    &ctx.client,
                    &self.cfg,
                    &cur.access_token,
                    expiry,
                    &ctx.clock,
                )
                .await;
                let mut t = cur.clone();
                t.expires_at = Some(resolved.at);
                t.expiry_assumed = resolved.assumed;
                t.obtained_at = now;
                Ok(Renewed::Extended(t))
            }
        }
    }

    async fn primary(
        &self,
        ctx: &EngineContext,
        current: Option<&StoredToken>,
    ) -> Result<StoredToken, TokenError> {
        // The configured password of the moment (a file or command credproxy follows).
        let configured = self.cfg.password.as_ref().map(Live::get);
        let password = self.password.as_ref().or(configured.as_ref());
        let grant = match self.cfg.grant {
            Grant::ClientCredentials => GrantRequest::ClientCredentials,
            Grant::Password => match (self.cfg.username.as_deref(), password) {
                (Some(username), Some(password)) => GrantRequest::Password { username, password },
                _ => return Err(TokenError::LoginRequired("no password is configured")),
            },
            Grant::AuthorizationCode => {
                return Err(TokenError::LoginRequired("no usable token is stored"));
            }
        };
        let now = ctx.clock.unix_now();
        let set = oauth::grant_call(&ctx.client, &self.cfg, &grant, &ctx.clock).await?;
        let mut t = self.stored(ctx, set, now).await;
        if let Some(cur) = current {
            t.details = cur.details.clone();
        }
        Ok(t)
    }

    /// A token set as it will be stored, its expiry resolved.
    pub async fn stored(
        &self,
        ctx: &EngineContext,
        set: TokenSet,
        obtained_at: i64,
    ) -> StoredToken {
        let resolved = oauth::resolve_expiry(
            &ctx.client,
            &self.cfg,
            &set.access_token,
            set.expiry,
            &ctx.clock,
        )
        .await;
        StoredToken {
            access_token: set.access_token,
            refresh_token: set.refresh_token,
            expires_at: Some(resolved.at),
            obtained_at,
            fingerprint: self.fingerprint.clone(),
            secrets: BTreeMap::new(),
            details: BTreeMap::new(),
            expiry_assumed: resolved.assumed,
        }
    }
}

fn merge(
    old: &BTreeMap<String, Secret>,
    new: BTreeMap<String, Secret>,
) -> BTreeMap<String, Secret> {
    let mut m = old.clone();
    m.extend(new);
    m
}
