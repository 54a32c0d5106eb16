//! Calls to an OAuth 2.0 server: token requests, introspection (RFC 7662), revocation (RFC 7009),
//! and the authorization-code pieces `credproxy login` needs (the authorize URL, PKCE, the code
//! exchange).
//!
//! A token reply with no expiry we can trust goes through the fallback chain of issue 3 point 3
//! ([`resolve_expiry`]): the JWT `exp` claim, else introspection when configured, else the
//! provider's `default_lifetime`, with a warning.

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::Full;
use rand::RngCore as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::error::TokenError;
use super::expiry;
use super::http::{HttpReply, TokenHttp};
use super::reply::{self, Expiry, RefreshReply, TokenSet};
use super::request::{self, GrantRequest};
use crate::clock::Clock;
use crate::config::OAuth2Config;
use crate::secret::Secret;

pub const TOKEN_ENDPOINT: &str = "token endpoint";
pub const INTROSPECTION_ENDPOINT: &str = "introspection endpoint";
pub const REVOCATION_ENDPOINT: &str = "revocation endpoint";

/// Send `req`; a 2xx reply, or the error with any RFC 6749 §5.2 body and `Retry-After`.
pub async fn call(
    http: &TokenHttp,
    endpoint: &'static str,
    req: Request<Full<Bytes>>,
    clock: &Clock,
) -> Result<HttpReply, TokenError> {
    let reply = http
        .send(req)
        .await
        .map_err(|source| TokenError::Http { endpoint, source })?;
    if reply.status.is_success() {
        return Ok(reply);
    }
    Err(TokenError::Status {
        endpoint,
        status: reply.status,
        retry_after: retry_after(&reply.headers, clock.unix_now()),
        oauth: reply::parse_error(&reply.body),
    })
}

/// A first grant (client credentials, password, authorization code) and its parsed reply
/// (expiry not yet resolved). A refresh goes through [`refresh_call`], whose reply may be an
/// extension.
pub async fn grant_call(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    grant: &GrantRequest<'_>,
    clock: &Clock,
) -> Result<TokenSet, TokenError> {
    let reply = token_request(http, cfg, grant, clock).await?;
    reply::parse_grant(
        &reply.body,
        &cfg.reply_fields,
        &cfg.expires_timezone,
        clock.unix_now(),
    )
    .map_err(|source| TokenError::Reply {
        endpoint: TOKEN_ENDPOINT,
        source,
    })
}

/// A refresh (RFC 6749 §6) and its parsed reply (expiry not yet resolved): a new token or an
/// extension of the one sent. `access_token`: sent as `Authorization: Bearer` (BACE);
/// `redirect_uri`: repeated from the code exchange (Baselime).
pub async fn refresh_call(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    refresh_token: &Secret,
    access_token: Option<&Secret>,
    redirect_uri: Option<&str>,
    clock: &Clock,
) -> Result<RefreshReply, TokenError> {
    let grant = GrantRequest::Refresh {
        refresh_token,
        access_token,
        redirect_uri,
    };
    let reply = token_request(http, cfg, &grant, clock).await?;
    reply::parse_refresh(
        &reply.body,
        &cfg.reply_fields,
        &cfg.expires_timezone,
        clock.unix_now(),
    )
    .map_err(|source| TokenError::Reply {
        endpoint: TOKEN_ENDPOINT,
        source,
    })
}

/// Send one token request; its 2xx reply.
async fn token_request(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    grant: &GrantRequest<'_>,
    clock: &Clock,
) -> Result<HttpReply, TokenError> {
    tracing::debug!(grant = grant.grant_type(), url = %cfg.token_url, "token request");
    call(
        http,
        TOKEN_ENDPOINT,
        request::token_request(cfg, grant),
        clock,
    )
    .await
}

/// What an introspection endpoint says about a token (RFC 7662 §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Introspection {
    pub active: bool,
    /// Unix seconds, when given and plausible.
    pub exp: Option<i64>,
}

/// Ask `cfg.introspect_url` about `token`. `None` when no introspection endpoint is configured.
pub async fn introspect(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    token: &Secret,
    clock: &Clock,
) -> Result<Option<Introspection>, TokenError> {
    let Some(url) = &cfg.introspect_url else {
        return Ok(None);
    };
    let reply = call(
        http,
        INTROSPECTION_ENDPOINT,
        request::token_about(cfg, url, token, None),
        clock,
    )
    .await?;
    let v: Value = serde_json::from_slice(&reply.body).map_err(|_| TokenError::Reply {
        endpoint: INTROSPECTION_ENDPOINT,
        source: reply::ReplyError::NotJson,
    })?;
    let active = reply::truthy(v.get("active"));
    let exp = v
        .get("exp")
        .and_then(|e| expiry::absolute_unix(e, &jiff::tz::TimeZone::UTC, clock.unix_now()));
    Ok(Some(Introspection { active, exp }))
}

/// A token's expiry once resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Unix seconds.
    pub at: i64,
    /// Nothing said when it expires: `at` is `default_lifetime` from now.
    pub assumed: bool,
}

/// The expiry (Unix seconds) of `token` given what its reply said: the reply's own, else the JWT
/// `exp` claim, else introspection, else `default_lifetime` (issue 3 point 3), then `assumed`.
pub async fn resolve_expiry(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    token: &Secret,
    expiry: Expiry,
    clock: &Clock,
) -> Resolved {
    let now = clock.unix_now();
    let known = |at| Resolved { at, assumed: false };
    if let Expiry::At(at) = expiry {
        return known(at);
    }
    if let Some(exp) = expiry::jwt_exp(token.expose()).and_then(|e| expiry::plausible(e, now)) {
        tracing::debug!(
            expires_in = exp - now,
            "no usable expiry in the reply; using the JWT's exp"
        );
        return known(exp);
    }
    match introspect(http, cfg, token, clock).await {
        Ok(Some(Introspection {
            active: true,
            exp: Some(exp),
        })) => {
            tracing::debug!(
                expires_in = exp - now,
                "no usable expiry in the reply; introspection gave one"
            );
            return known(exp);
        }
        Ok(Some(i)) => tracing::warn!(active = i.active, "introspection gave no usable expiry"),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %super::error::chain(&e), "introspection failed"),
    }
    let secs = cfg.default_lifetime.as_secs() as i64;
    tracing::warn!(
        assumed_lifetime_s = secs,
        "the token reply gives no usable expiry; assuming default_lifetime"
    );
    Resolved {
        at: now + secs,
        assumed: true,
    }
}

/// Exchange an authorization code (RFC 6749 §4.1.3) for tokens, with the PKCE verifier
/// (RFC 7636 §4.5) when one was used. `redirect_uri` must be the one the authorize URL carried.
/// The returned expiry is the reply's: [`super::source`] resolves it as it stores the token.
pub async fn exchange_code(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    code: &str,
    redirect_uri: Option<&str>,
    pkce_verifier: Option<&str>,
    clock: &Clock,
) -> Result<TokenSet, TokenError> {
    let grant = GrantRequest::AuthorizationCode {
        code,
        redirect_uri: redirect_uri.or(cfg.redirect_uri.as_deref()),
        code_verifier: pkce_verifier,
    };
    grant_call(http, cfg, &grant, clock).await
}

/// The URL a person opens to authorize credproxy (RFC 6749 §4.1.1): `response_type=code`,
/// `client_id`, `redirect_uri`, `scope` (joined with the separator, spaces sent as `+` as Apicbase
/// documents), `state`, the PKCE S256 challenge (RFC 7636 §4.3), then `authorize_params`.
/// `redirect_uri` defaults to the configured one. `None` when no authorize URL is configured.
pub fn authorize_url(
    cfg: &OAuth2Config,
    state: &str,
    pkce_challenge: Option<&str>,
    redirect_uri: Option<&str>,
) -> Option<String> {
    let base = cfg.authorize_url.as_ref()?.to_string();
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("response_type", "code");
    if let Some(id) = &cfg.client_id {
        q.append_pair("client_id", id);
    }
    if let Some(r) = redirect_uri.or(cfg.redirect_uri.as_deref()) {
        q.append_pair("redirect_uri", r);
    }
    if !cfg.scopes.is_empty() {
        q.append_pair("scope", &cfg.scopes.join(&cfg.scope_separator));
    }
    q.append_pair("state", state);
    if let Some(c) = pkce_challenge {
        q.append_pair("code_challenge", c);
        q.append_pair("code_challenge_method", "S256");
    }
    for (k, v) in &cfg.authorize_params {
        q.append_pair(k, v);
    }
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}{}", q.finish()))
}

/// A PKCE pair (RFC 7636 §4.1, §4.2): a 43-character verifier from 32 random bytes, and its S256
/// challenge.
pub fn pkce_pair() -> (Secret, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let verifier = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let challenge = pkce_challenge(&verifier);
    (Secret::from(verifier), challenge)
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A random `state` for the authorize request (RFC 6749 §10.12).
pub fn random_state() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Revoke `token` at `cfg.revoke_url` (RFC 7009 §2.1). `Ok(false)` when none is configured.
pub async fn revoke(
    http: &TokenHttp,
    cfg: &OAuth2Config,
    token: &Secret,
    hint: &str,
    clock: &Clock,
) -> Result<bool, TokenError> {
    let Some(url) = &cfg.revoke_url else {
        return Ok(false);
    };
    call(
        http,
        REVOCATION_ENDPOINT,
        request::token_about(cfg, url, token, Some(hint)),
        clock,
    )
    .await?;
    Ok(true)
}

/// `Retry-After` (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.
pub fn retry_after(headers: &HeaderMap, now_unix: i64) -> Option<std::time::Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(std::time::Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp().as_second();
    Some(std::time::Duration::from_secs(
        at.saturating_sub(now_unix).max(0) as u64,
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Grant;

    fn cfg() -> OAuth2Config {
        OAuth2Config {
            token_url: "https://api.apicbase.com/oauth/token/".parse().unwrap(),
            grant: Grant::AuthorizationCode,
            scopes: vec!["library".into(), "sales".into()],
            authorize_url: Some("https://app.apicbase.com/oauth/authorize/".parse().unwrap()),
            authorize_params: vec![("prompt".into(), "consent".into())],
            ..OAuth2Config::example()
        }
    }

    #[test]
    fn authorize_url_like_apicbase_documents() {
        let url =
            authorize_url(&cfg(), "st4te", Some("chal"), Some("http://127.0.0.1:9/cb")).unwrap();
        assert_eq!(
            url,
            "https://app.apicbase.com/oauth/authorize/?response_type=code&client_id=cid\
             &redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope=library+sales&state=st4te\
             &code_challenge=chal&code_challenge_method=S256&prompt=consent"
        );
        let mut c = cfg();
        c.authorize_url = Some("https://x.example/auth?tenant=1".parse().unwrap());
        c.scopes.clear();
        let url = authorize_url(&c, "s", None, None).unwrap();
        assert_eq!(
            url,
            "https://x.example/auth?tenant=1&response_type=code&client_id=cid&state=s&prompt=consent"
        );
        c.authorize_url = None;
        assert_eq!(authorize_url(&c, "s", None, None), None);
    }

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let (v, c) = pkce_pair();
        assert_eq!(v.expose().len(), 43);
        assert_eq!(pkce_challenge(v.expose()), c);
        assert_ne!(random_state(), random_state());
    }

    #[test]
    fn retry_after_seconds_or_date() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "120".parse().unwrap());
        assert_eq!(retry_after(&h, 0), Some(Duration::from_secs(120)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        let at = 1_445_412_480;
        assert_eq!(retry_after(&h, at - 30), Some(Duration::from_secs(30)));
        assert_eq!(retry_after(&h, at + 30), Some(Duration::ZERO));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h, 0), None);
    }
}
