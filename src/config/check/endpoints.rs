//! Where a provider lives: the hosts it claims, the upstream its requests go to, and the oauth2
//! family's endpoint URLs (token, authorize, introspect, revoke, workspaces), each the user's or
//! the preset's default (with the presets' quirk hooks for the authorize URL).

use std::ops::Range;

use http::Uri;

use super::Ctx;
use crate::config::file::{FileProvider, Str};
use crate::config::presets::{self, Defaults, upstream_from_uri};
use crate::config::{HostPattern, Preset, Upstream};

/// The hosts: the user's, else the preset's; at least one. `before` is the error count when the
/// provider's check began (a missing list is only reported when nothing else went wrong).
pub(super) fn hosts(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    d: &Defaults,
    before: usize,
) -> Vec<HostPattern> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let mut hosts = Vec::new();
    match &fp.hosts {
        Some(list) => {
            for (i, h) in list.iter().enumerate() {
                let k = format!("{}[{i}]", key("hosts"));
                if let Some(v) = ctx.string(h, &k) {
                    match HostPattern::parse(&v) {
                        Ok(p) => hosts.push(p),
                        Err(e) => ctx.err(h.span(), &k, e),
                    }
                }
            }
        }
        None => hosts.extend(
            d.hosts
                .iter()
                .map(|h| HostPattern::parse(h).expect("preset hosts parse")),
        ),
    }
    if hosts.is_empty() && ctx.errors.len() == before {
        ctx.err(
            span.clone(),
            &key("hosts"),
            "missing: list the host names this provider claims, e.g. hosts = [\"api.example.com\"]",
        );
    }

    hosts
}

/// The upstream: the user's, else `https://<first concrete host>`. The outer `None` ends the
/// provider's check without an error (a default URL that doesn't parse), as it always has.
pub(super) fn upstream(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    preset: Preset,
    hosts: &[HostPattern],
) -> Option<Option<Upstream>> {
    let key = |k: &str| format!("providers.{name}.{k}");
    Some(match &fp.upstream {
        Some(u) => ctx
            .url(u, &key("upstream"))
            .and_then(|uri| upstream_of(ctx, &uri, u, &key("upstream"))),
        None => {
            if preset == Preset::ApiV1 {
                ctx.err(span.clone(), &key("upstream"), "missing: api-v1's base URL is per deployment; set upstream = \"https://api.your-deployment.example\"");
                None
            } else {
                match hosts.iter().find_map(|h| h.concrete()) {
                    Some((host, port)) => {
                        let url = match port {
                            Some(p) => format!("https://{host}:{p}"),
                            None => format!("https://{host}"),
                        };
                        let uri: Uri = url.parse().ok()?;
                        upstream_from_uri(&uri)
                    }
                    None => {
                        if !hosts.is_empty() {
                            ctx.err(span.clone(), &key("upstream"), "missing: every host is a wildcard, so set upstream = \"https://...\"");
                        }
                        None
                    }
                }
            }
        }
    })
}

fn upstream_of(ctx: &mut Ctx<'_>, uri: &Uri, s: &Str, key: &str) -> Option<Upstream> {
    if uri.query().is_some() {
        ctx.err(s.span(), key, "an upstream URL can't have a query string");
        return None;
    }
    let up = upstream_from_uri(uri);
    if up.is_none() {
        ctx.err(s.span(), key, "not a usable upstream URL");
    }
    up
}

/// `issuer` (RFC 8414 §2): an `https` URL with no query and no fragment, kept exactly as written
/// (issuers are compared as strings, RFC 9207 §2.4).
pub(super) fn issuer(ctx: &mut Ctx<'_>, name: &str, fp: &FileProvider) -> Option<String> {
    let s = fp.issuer.as_ref()?;
    let key = format!("providers.{name}.issuer");
    let v = ctx.string(s, &key)?;
    let uri = v.parse::<Uri>().ok();
    let ok = uri.as_ref().is_some_and(|u| {
        u.scheme_str() == Some("https") && u.authority().is_some() && u.query().is_none()
    }) && !v.contains('#');
    if !ok {
        ctx.err(
            s.span(),
            &key,
            format!(
                "`{v}` is not an issuer identifier: it must be an https URL without a query or \
                 fragment, such as \"https://auth.example.com\" (the `issuer` of the server's \
                 /.well-known/oauth-authorization-server)"
            ),
        );
        return None;
    }
    Some(v)
}

/// A URL key: the user's value checked, else the preset's default.
fn url_or(
    ctx: &mut Ctx<'_>,
    name: &str,
    s: &Option<Str>,
    k: &str,
    dflt: Option<&str>,
) -> Option<Uri> {
    match s {
        Some(s) => ctx.url(s, &format!("providers.{name}.{k}")),
        None => dflt.map(|d| d.parse().expect("preset URLs parse")),
    }
}

/// `token_url`: the user's, else the preset's.
pub(super) fn token_url(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    d: &Defaults,
) -> Option<Uri> {
    url_or(ctx, name, &fp.token_url, "token_url", d.token_url)
}

/// The oauth2 family's other endpoints.
pub(super) struct OAuthUrls {
    pub authorize_url: Option<Uri>,
    pub introspect_url: Option<Uri>,
    pub revoke_url: Option<Uri>,
    pub workspaces_url: Option<Uri>,
}

/// The authorize, introspect, revoke and workspaces URLs; api-v1 derives its authorize URL from
/// `token_url`, Baselime's names the `client_id`.
pub(super) fn oauth_urls(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    preset: Preset,
    d: &Defaults,
    token_url: Option<&Uri>,
    client_id: Option<&str>,
) -> OAuthUrls {
    let mut authorize_url = url_or(
        ctx,
        name,
        &fp.authorize_url,
        "authorize_url",
        d.authorize_url,
    );
    if authorize_url.is_none() && preset == Preset::ApiV1 {
        authorize_url = token_url.and_then(presets::apiv1::authorize_url_beside);
    }
    if preset == Preset::Baselime {
        authorize_url = presets::baselime::authorize_url(authorize_url, client_id);
    }
    let introspect_url = url_or(
        ctx,
        name,
        &fp.introspect_url,
        "introspect_url",
        d.introspect_url,
    );
    let revoke_url = url_or(ctx, name, &fp.revoke_url, "revoke_url", d.revoke_url);
    let workspaces_url = url_or(
        ctx,
        name,
        &fp.workspaces_url,
        "workspaces_url",
        d.workspaces_url,
    );
    OAuthUrls {
        authorize_url,
        introspect_url,
        revoke_url,
        workspaces_url,
    }
}
