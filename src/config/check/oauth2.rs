//! The token-endpoint kinds (`oauth2` and the seed presets built on it), checked in the order
//! errors are reported: the preset's required keys, endpoints, grant and secrets, wire format,
//! timing. Each concern lives in its own file; this one puts the pieces together.

use std::ops::Range;

use super::{Ctx, endpoints, grant, timing, wire};
use crate::config::file::FileProvider;
use crate::config::presets::Defaults;
use crate::config::{OAuth2Config, Preset};

/// Check an oauth2-family `[providers.NAME]` table into its [`OAuth2Config`].
pub(super) fn oauth2(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    preset: Preset,
    d: &Defaults,
) -> Option<OAuth2Config> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let before = ctx.errors.len();
    required_keys(ctx, name, fp, span.clone(), preset, d);
    let token_url = endpoints::token_url(ctx, name, fp, d);
    let client_id = ctx.opt_string(&fp.client_id, &key("client_id"));
    let urls = endpoints::oauth_urls(
        ctx,
        name,
        fp,
        preset,
        d,
        token_url.as_ref(),
        client_id.as_deref(),
    );
    let grant = grant::grant(ctx, name, fp, preset, d);
    // A preset's authorize URL built from a key that already failed (Baselime's from client_id,
    // api-v1's from token_url, say with an unset ${VAR}) is not "missing" as well.
    let authorize_source_failed = match preset {
        Preset::Baselime => fp.client_id.is_some() && client_id.is_none(),
        Preset::ApiV1 => fp.token_url.is_some() && token_url.is_none(),
        _ => false,
    };
    let creds = grant::credentials(
        ctx,
        name,
        fp,
        span.clone(),
        preset,
        grant,
        urls.authorize_url.is_some() || authorize_source_failed,
    );
    let wire = wire::wire(ctx, name, fp, span, d);
    let timing = timing::timing(ctx, name, fp)?;
    let issuer = endpoints::issuer(ctx, name, fp);
    if ctx.errors.len() > before {
        return None;
    }
    Some(OAuth2Config {
        token_url: token_url?,
        grant: grant?,
        client_id,
        client_secret: creds.client_secret,
        username: creds.username,
        password: creds.password,
        scopes: wire.scopes,
        scope_separator: wire.scope_separator,
        format: wire.format,
        client_auth: wire.client_auth,
        redirect_uri: wire.redirect_uri,
        authorize_url: urls.authorize_url,
        authorize_params: wire.authorize_params,
        token_params: wire.token_params,
        token_headers: wire.token_headers,
        request_fields: wire.request_fields,
        reply_fields: wire.reply_fields,
        refresh_with_bearer: fp.refresh_with_bearer.unwrap_or(d.refresh_with_bearer),
        pkce: fp.pkce.unwrap_or(true),
        introspect_url: urls.introspect_url,
        revoke_url: urls.revoke_url,
        workspaces_url: urls.workspaces_url,
        issuer,
        default_lifetime: timing.default_lifetime,
        refresh_before: timing.refresh_before,
        expires_timezone: timing.expires_timezone,
    })
}

/// The keys the preset can't do without (`hosts`, `token_url`, api-v1's `upstream`).
fn required_keys(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    preset: Preset,
    d: &Defaults,
) {
    let key = |k: &str| format!("providers.{name}.{k}");
    for req in d.required {
        let present = match *req {
            "hosts" => fp.hosts.is_some(),
            "token_url" => fp.token_url.is_some(),
            "upstream" => fp.upstream.is_some(),
            _ => true,
        };
        // api-v1 reports a missing upstream with its own, more specific message.
        if !(present || preset == Preset::ApiV1 && *req == "upstream") {
            ctx.err(
                span.clone(),
                &key(req),
                format!("missing: preset {} needs {req}", preset.name()),
            );
        }
    }
}
