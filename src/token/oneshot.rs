//! What the CLI asks of the engine without a running refresher: `credproxy token` (a valid token
//! now), `credproxy login` (store the tokens a person's login produced), `credproxy logout`
//! (revoke and forget). Each goes through the store's lock like a refresher does, so these
//! commands may run beside `credproxy run` (DESIGN.md, "Token store").

use std::collections::BTreeMap;

use super::EngineContext;
use super::baselime;
use super::error::{TokenError, chain};
use super::oauth;
use super::persist;
use super::source::{OAuth2Source, REDIRECT_KEY, Source};
use super::store::StoredToken;
use crate::config::{AuthConfig, Preset, ProviderConfig};
use crate::secret::Secret;

/// A token that is valid now and not yet due for a refresh: the stored one, else a refreshed one
/// (through the lock: if another process refreshed meanwhile, its token is returned). For a
/// static provider, its token. Fails with [`TokenError::LoginRequired`] when a person must log in.
pub async fn obtain_once(
    provider: &ProviderConfig,
    ctx: &EngineContext,
) -> Result<StoredToken, TokenError> {
    let Some(source) = Source::new(provider, None) else {
        return Ok(static_token(provider, ctx));
    };
    let (clock, policy) = (ctx.clock, source.policy());
    if let Some(t) = persist::load(&ctx.store, &provider.name).await?
        && source.accepts(&t)
        && t.is_fresh(&clock, &policy)
    {
        return Ok(t);
    }
    let outcome = persist::renew_locked(ctx, &source, &provider.name, None, false, |t| {
        t.is_fresh(&clock, &policy)
    })
    .await
    .map_err(|f| f.error)?;
    if let Some(e) = &outcome.save_error {
        tracing::warn!(error = %chain(e), "the new token could not be saved");
    }
    Ok(outcome.token)
}

fn static_token(provider: &ProviderConfig, ctx: &EngineContext) -> StoredToken {
    let token = match &provider.auth {
        AuthConfig::Static { token } => token.get(),
        _ => unreachable!("only static providers have no source"),
    };
    StoredToken {
        access_token: token,
        refresh_token: None,
        expires_at: None,
        obtained_at: ctx.clock.unix_now(),
        fingerprint: String::new(),
        secrets: BTreeMap::new(),
        details: BTreeMap::new(),
        expiry_assumed: false,
    }
}

fn oauth2_config(provider: &ProviderConfig) -> Result<&crate::config::OAuth2Config, TokenError> {
    match &provider.auth {
        AuthConfig::OAuth2(cfg) => Ok(cfg),
        _ => Err(TokenError::Config(format!(
            "provider {} does not use an OAuth 2.0 token endpoint",
            provider.name
        ))),
    }
}

/// After a person authorized credproxy: exchange `code` at once (Apicbase codes live a minute),
/// fetch Baselime's workspaces when configured, and store the result under the lock. A running
/// refresher picks it up within a few seconds. `redirect_uri` and `pkce_verifier` must be the ones
/// the authorize URL was built with.
pub async fn login_with_code(
    provider: &ProviderConfig,
    ctx: &EngineContext,
    code: &str,
    redirect_uri: Option<&str>,
    pkce_verifier: Option<&str>,
) -> Result<StoredToken, TokenError> {
    let cfg = oauth2_config(provider)?;
    let source = OAuth2Source::new(provider.preset, cfg, None);
    let now = ctx.clock.unix_now();
    let set = oauth::exchange_code(
        &ctx.client,
        cfg,
        code,
        redirect_uri,
        pkce_verifier,
        &ctx.clock,
    )
    .await?;
    let mut t = source.stored(ctx, set, now).await;
    let redirect = redirect_uri.or(cfg.redirect_uri.as_deref());
    if let (Preset::Baselime, Some(r)) = (provider.preset, redirect) {
        t.secrets.insert(REDIRECT_KEY.to_owned(), Secret::from(r));
    }
    if let Some(url) = &cfg.workspaces_url {
        baselime::add_workspace(ctx, url, &mut t).await;
    }
    let _guard = persist::lock(ctx, &provider.name).await?;
    persist::save(&ctx.store, &provider.name, &t).await?;
    tracing::info!(provider = %provider.name, "login stored");
    Ok(t)
}

/// For a password grant whose password is not in the configuration: run the grant with
/// `password` (prompted by `credproxy login`) and store the result; only the tokens are kept.
pub async fn login_with_password(
    provider: &ProviderConfig,
    ctx: &EngineContext,
    password: Secret,
) -> Result<StoredToken, TokenError> {
    oauth2_config(provider)?;
    let source = Source::new(provider, Some(password)).expect("an OAuth 2.0 provider has a source");
    let _guard = persist::lock(ctx, &provider.name).await?;
    let t = source.renew(ctx, None).await?.into_token();
    persist::save(&ctx.store, &provider.name, &t).await?;
    tracing::info!(provider = %provider.name, "login stored");
    Ok(t)
}

/// What `logout` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogoutOutcome {
    /// A stored token was forgotten.
    pub removed: bool,
    /// The server was told to revoke it (RFC 7009), and agreed.
    pub revoked: bool,
}

/// Revoke the stored tokens where the provider can (`revoke_url`, RFC 7009: the refresh token
/// first, which revokes its access tokens on most servers, then the access token), and forget
/// them. A failed revocation is logged and the tokens are forgotten anyway.
pub async fn logout(
    provider: &ProviderConfig,
    ctx: &EngineContext,
) -> Result<LogoutOutcome, TokenError> {
    let _guard = persist::lock(ctx, &provider.name).await?;
    let stored = persist::load(&ctx.store, &provider.name).await?;
    let mut revoked = false;
    if let (Some(t), AuthConfig::OAuth2(cfg)) = (&stored, &provider.auth) {
        let mut tokens = vec![];
        if let Some(rt) = &t.refresh_token {
            tokens.push((rt, "refresh_token"));
        }
        tokens.push((&t.access_token, "access_token"));
        for (token, hint) in tokens {
            match oauth::revoke(&ctx.client, cfg, token, hint, &ctx.clock).await {
                Ok(did) => revoked |= did,
                Err(e) => {
                    tracing::warn!(error = %chain(&e), hint, "revocation failed; forgetting the token anyway")
                }
            }
        }
    }
    let removed = persist::remove(&ctx.store, &provider.name).await?;
    Ok(LogoutOutcome { removed, revoked })
}
