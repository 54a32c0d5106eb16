//! Presets: how each kind of provider turns its config keys into a [`ProviderConfig`].
//!
//! A preset supplies defaults (hosts, URLs, body format, field names, quirks) from its provider's
//! document; every URL can be overridden in the file, which is how tests point them at fakes.
//! `oauth2` is the generic RFC 6749 kind with no defaults; `static` is a fixed token.

mod apicbase;
mod apiv1;
mod bace;
mod baselime;
mod blendvision;

use std::time::Duration;

use http::Uri;
use toml::Spanned;

use super::check::Ctx;
use super::file::{FileProvider, Str};
use super::{
    AuthConfig, BodyFormat, ClientAuth, FieldNames, Grant, HostPattern, OAuth2Config, Preset,
    ProviderConfig, Upstream,
};

/// What a preset knows before the user says anything.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub hosts: &'static [&'static str],
    pub token_url: Option<&'static str>,
    pub authorize_url: Option<&'static str>,
    pub introspect_url: Option<&'static str>,
    pub revoke_url: Option<&'static str>,
    pub workspaces_url: Option<&'static str>,
    pub grant: Option<Grant>,
    pub grants: &'static [Grant],
    pub format: BodyFormat,
    pub client_auth: ClientAuth,
    pub request_fields: &'static [(&'static str, &'static str)],
    pub reply_fields: &'static [(&'static str, &'static str)],
    pub refresh_with_bearer: bool,
    /// Keys the user must set (api-v1's deployment decides its URLs).
    pub required: &'static [&'static str],
}

impl Defaults {
    const GENERIC: Defaults = Defaults {
        hosts: &[],
        token_url: None,
        authorize_url: None,
        introspect_url: None,
        revoke_url: None,
        workspaces_url: None,
        grant: None,
        grants: &[
            Grant::ClientCredentials,
            Grant::Password,
            Grant::AuthorizationCode,
        ],
        format: BodyFormat::Form,
        client_auth: ClientAuth::Basic,
        request_fields: &[],
        reply_fields: &[],
        refresh_with_bearer: false,
        required: &["hosts", "token_url"],
    };
}

fn preset_of(ctx: &mut Ctx<'_>, name: &str, s: &Option<Str>) -> Option<Preset> {
    let key = format!("providers.{name}.preset");
    let Some(s) = s else {
        ctx.err(
            0..0,
            &key,
            "missing: say which kind of provider this is, e.g. preset = \"oauth2\"",
        );
        return None;
    };
    let v = ctx.string(s, &key)?;
    match Preset::ALL.iter().find(|p| p.name() == v) {
        Some(p) => Some(*p),
        None => {
            let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
            ctx.err(
                s.span(),
                &key,
                format!("unknown preset `{v}`; expected one of {}", names.join(", ")),
            );
            None
        }
    }
}

/// Check one `[providers.NAME]` table.
pub fn build(ctx: &mut Ctx<'_>, name: &str, fp: &Spanned<FileProvider>) -> Option<ProviderConfig> {
    let span = fp.span();
    let fp = fp.get_ref();
    let key = |k: &str| format!("providers.{name}.{k}");
    let before = ctx.errors.len();
    let preset = preset_of(ctx, name, &fp.preset)?;
    let defaults = match preset {
        Preset::Static | Preset::OAuth2 => Defaults::GENERIC,
        Preset::Baselime => baselime::DEFAULTS,
        Preset::Bace => bace::DEFAULTS,
        Preset::Apicbase => apicbase::DEFAULTS,
        Preset::ApiV1 => apiv1::DEFAULTS,
        Preset::BlendVision => blendvision::DEFAULTS,
    };
    reject_foreign_keys(ctx, name, preset, fp);

    // Hosts: the user's, else the preset's; at least one.
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
            defaults
                .hosts
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

    // Upstream: the user's, else https://<first concrete host>.
    let upstream = match &fp.upstream {
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
    };

    let mut headers = Vec::new();
    if let Some(map) = &fp.headers {
        for (hn, hv) in map {
            let k = format!("{}.{hn}", key("headers"));
            let span = hv.span.clone();
            let Some(name_) = ctx.header_name(hn, span.clone(), &k) else {
                continue;
            };
            if name_ == http::header::AUTHORIZATION || name_ == http::header::HOST {
                ctx.err(
                    span,
                    &k,
                    "credproxy sets this header itself; remove it from headers",
                );
                continue;
            }
            let field = crate::fields::classify(name_.as_str());
            if field.is_hop_by_hop()
                || matches!(
                    field,
                    crate::fields::Field::ContentLength | crate::fields::Field::Expect
                )
            {
                ctx.err(
                    span,
                    &k,
                    "this header frames the message or belongs to one connection, and credproxy \
                     manages it; remove it from headers",
                );
                continue;
            }
            if let Some(secret) = ctx.secret(hv, &k)
                && let Some(v) = ctx.header_value(&secret, span, &k)
            {
                headers.push((name_, v));
            }
        }
    }
    let mut allow_origins = Vec::new();
    for (i, o) in fp.allow_origins.iter().flatten().enumerate() {
        if let Some(v) = ctx.string(o, &format!("{}[{i}]", key("allow_origins"))) {
            allow_origins.push(v.trim_end_matches('/').to_ascii_lowercase());
        }
    }
    let wait_for_token = ctx.duration(
        &fp.wait_for_token,
        &key("wait_for_token"),
        Duration::from_secs(10),
    );

    let auth = match preset {
        Preset::Static => {
            let token = match &fp.token {
                Some(t) => ctx.secret(t, &key("token")),
                None => {
                    ctx.err(span.clone(), &key("token"), "missing: a static provider needs token = \"${VAR}\" or token = { file = \"/run/secrets/x\" }");
                    None
                }
            };
            token.map(|token| AuthConfig::Static { token })
        }
        Preset::BlendVision => blendvision::build(ctx, name, fp, span.clone()),
        _ => oauth2(ctx, name, fp, span.clone(), preset, &defaults)
            .map(|o| AuthConfig::OAuth2(Box::new(o))),
    };
    if ctx.errors.len() > before {
        return None;
    }
    Some(ProviderConfig {
        name: name.to_owned(),
        preset,
        hosts,
        upstream: upstream?,
        headers,
        allow_origins,
        forwarded: fp.forwarded.unwrap_or(false),
        wait_for_token,
        auth: auth?,
    })
}

/// Keys that make no sense for this preset are errors, not silently ignored.
fn reject_foreign_keys(ctx: &mut Ctx<'_>, name: &str, preset: Preset, fp: &FileProvider) {
    let key = |k: &str| format!("providers.{name}.{k}");
    let only = |ctx: &mut Ctx<'_>,
                present: Option<std::ops::Range<usize>>,
                k: &str,
                allowed: &[Preset]| {
        if let Some(span) = present
            && !allowed.contains(&preset)
        {
            let names: Vec<&str> = allowed.iter().map(|p| p.name()).collect();
            ctx.err(
                span,
                &key(k),
                format!(
                    "is only used by preset {}, not {}",
                    names.join(" or "),
                    preset.name()
                ),
            );
        }
    };
    let sp = |s: &Option<super::file::FileSecret>| s.as_ref().map(|s| s.span.clone());
    only(ctx, sp(&fp.token), "token", &[Preset::Static]);
    only(ctx, sp(&fp.api_token), "api_token", &[Preset::BlendVision]);
    only(ctx, sp(&fp.org_id), "org_id", &[Preset::BlendVision]);
    only(
        ctx,
        fp.email.as_ref().map(|s| s.span()),
        "email",
        &[Preset::BlendVision],
    );
    only(
        ctx,
        fp.api_token_lifetime.as_ref().map(|s| s.span()),
        "api_token_lifetime",
        &[Preset::BlendVision],
    );
    only(
        ctx,
        fp.workspaces_url.as_ref().map(|s| s.span()),
        "workspaces_url",
        &[Preset::Baselime],
    );
    let oauthish = [
        Preset::OAuth2,
        Preset::Baselime,
        Preset::Bace,
        Preset::Apicbase,
        Preset::ApiV1,
    ];
    only(
        ctx,
        fp.client_id.as_ref().map(|s| s.span()),
        "client_id",
        &oauthish,
    );
    only(ctx, sp(&fp.client_secret), "client_secret", &oauthish);
    only(
        ctx,
        fp.username.as_ref().map(|s| s.span()),
        "username",
        &oauthish,
    );
    only(ctx, fp.grant.as_ref().map(|s| s.span()), "grant", &oauthish);
    only(
        ctx,
        fp.token_url.as_ref().map(|s| s.span()),
        "token_url",
        &oauthish,
    );
}

pub fn upstream_from_uri(uri: &Uri) -> Option<Upstream> {
    let scheme = uri.scheme()?.clone();
    let authority = uri.authority()?.clone();
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == http::uri::Scheme::HTTPS {
            443
        } else {
            80
        });
    let base_path = uri.path().trim_end_matches('/').to_owned();
    let host_header = http::HeaderValue::from_str(authority.as_str()).ok()?;
    Some(Upstream {
        scheme,
        authority,
        host,
        port,
        base_path,
        host_header,
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

/// The token-endpoint kinds: `oauth2` and the seed presets built on it.
fn oauth2(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: std::ops::Range<usize>,
    preset: Preset,
    d: &Defaults,
) -> Option<OAuth2Config> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let before = ctx.errors.len();
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
    let url_or = |ctx: &mut Ctx<'_>, s: &Option<Str>, k: &str, dflt: Option<&str>| -> Option<Uri> {
        match s {
            Some(s) => ctx.url(s, &key(k)),
            None => dflt.map(|d| d.parse().expect("preset URLs parse")),
        }
    };
    let token_url = url_or(ctx, &fp.token_url, "token_url", d.token_url);
    let client_id = ctx.opt_string(&fp.client_id, &key("client_id"));
    let mut authorize_url = url_or(ctx, &fp.authorize_url, "authorize_url", d.authorize_url);
    if authorize_url.is_none() && preset == Preset::ApiV1 {
        // API v1 documents `https://API_URI/oauth/authorize` beside `https://API_URI/oauth/token`.
        authorize_url = token_url.as_ref().and_then(|t| {
            t.to_string()
                .strip_suffix("/oauth/token")
                .and_then(|b| format!("{b}/oauth/authorize").parse().ok())
        });
    }
    if preset == Preset::Baselime {
        authorize_url = baselime::authorize_url(authorize_url, client_id.as_deref());
    }
    let introspect_url = url_or(ctx, &fp.introspect_url, "introspect_url", d.introspect_url);
    let revoke_url = url_or(ctx, &fp.revoke_url, "revoke_url", d.revoke_url);
    let workspaces_url = url_or(ctx, &fp.workspaces_url, "workspaces_url", d.workspaces_url);

    let grant = match &fp.grant {
        Some(g) => {
            match ctx.string(g, &key("grant")).as_deref() {
                Some("client_credentials") => Some(Grant::ClientCredentials),
                Some("password") => Some(Grant::Password),
                Some("authorization_code") => Some(Grant::AuthorizationCode),
                Some(other) => {
                    ctx.err(g.span(), &key("grant"), format!("`{other}` is not one of client_credentials, password, authorization_code"));
                    None
                }
                None => None,
            }
        }
        None => d.grant.or_else(|| {
            // Generic oauth2: a username means the password grant, else client credentials.
            Some(if fp.username.is_some() {
                Grant::Password
            } else {
                Grant::ClientCredentials
            })
        }),
    };
    if let (Some(g), Some(s)) = (grant, &fp.grant)
        && !d.grants.contains(&g)
    {
        ctx.err(
            s.span(),
            &key("grant"),
            format!(
                "preset {} does not support the {} grant",
                preset.name(),
                g.as_str()
            ),
        );
    }
    let client_secret = ctx.opt_secret(&fp.client_secret, &key("client_secret"));
    let username = ctx.opt_string(&fp.username, &key("username"));
    let password = ctx.opt_secret(&fp.password, &key("password"));
    // A missing password is allowed for the password grant: `credproxy login` prompts for it.
    let missing = match grant {
        Some(Grant::Password) if username.is_none() && fp.username.is_none() => {
            Some(("username", "missing: the password grant needs username"))
        }
        Some(Grant::ClientCredentials) if fp.client_id.is_none() => Some((
            "client_id",
            "missing: the client_credentials grant needs client_id",
        )),
        Some(Grant::AuthorizationCode) if authorize_url.is_none() && fp.authorize_url.is_none() => {
            Some((
                "authorize_url",
                "missing: the authorization_code grant needs authorize_url",
            ))
        }
        _ => None,
    };
    if let Some((k, message)) = missing {
        ctx.err(span.clone(), &key(k), message);
    }
    if preset != Preset::OAuth2 && fp.client_id.is_none() {
        ctx.err(
            span.clone(),
            &key("client_id"),
            format!(
                "missing: preset {} needs the client_id you got from the provider",
                preset.name()
            ),
        );
    }
    let mut scopes = Vec::new();
    for (i, s) in fp.scopes.iter().flatten().enumerate() {
        if let Some(v) = ctx.string(s, &format!("{}[{i}]", key("scopes"))) {
            scopes.push(v);
        }
    }
    let scope_separator = ctx
        .opt_string(&fp.scope_separator, &key("scope_separator"))
        .unwrap_or_else(|| " ".into());
    let format = match &fp.token_format {
        None => d.format,
        Some(s) => match ctx.string(s, &key("token_format")).as_deref() {
            Some("form") => BodyFormat::Form,
            Some("json") => BodyFormat::Json,
            Some("multipart") => BodyFormat::Multipart,
            Some(other) => {
                ctx.err(
                    s.span(),
                    &key("token_format"),
                    format!("`{other}` is not one of form, json, multipart"),
                );
                d.format
            }
            None => d.format,
        },
    };
    let client_auth = match &fp.client_auth {
        None => d.client_auth,
        Some(s) => match ctx.string(s, &key("client_auth")).as_deref() {
            Some("basic") => ClientAuth::Basic,
            Some("body") => ClientAuth::Body,
            Some(other) => {
                ctx.err(
                    s.span(),
                    &key("client_auth"),
                    format!("`{other}` is not one of basic, body"),
                );
                d.client_auth
            }
            None => d.client_auth,
        },
    };
    let redirect_uri = ctx.opt_string(&fp.redirect_uri, &key("redirect_uri"));
    let pairs = |ctx: &mut Ctx<'_>,
                 m: &Option<std::collections::BTreeMap<String, Str>>,
                 k: &str|
     -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (n, v) in m.iter().flatten() {
            if let Some(v) = ctx.string(v, &format!("{}.{n}", key(k))) {
                out.push((n.clone(), v));
            }
        }
        out
    };
    let authorize_params = pairs(ctx, &fp.authorize_params, "authorize_params");
    let token_params = pairs(ctx, &fp.token_params, "token_params");
    let mut request_fields: Vec<(String, String)> = d
        .request_fields
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    request_fields.extend(pairs(ctx, &fp.request_fields, "request_fields"));
    let mut reply_fields: Vec<(String, String)> = d
        .reply_fields
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    reply_fields.extend(pairs(ctx, &fp.reply_fields, "reply_fields"));
    // Later entries (the user's) win over the preset's.
    request_fields.reverse();
    reply_fields.reverse();
    let mut token_headers = Vec::new();
    for (hn, hv) in fp.token_headers.iter().flatten() {
        let k = format!("{}.{hn}", key("token_headers"));
        let Some(n) = ctx.header_name(hn, span.clone(), &k) else {
            continue;
        };
        if let Some(s) = ctx.secret(hv, &k)
            && let Some(v) = ctx.header_value(&s, span.clone(), &k)
        {
            token_headers.push((n, v));
        }
    }
    let default_lifetime = ctx.duration(
        &fp.default_lifetime,
        &key("default_lifetime"),
        Duration::from_secs(3600),
    );
    let refresh_before = ctx.opt_duration(&fp.refresh_before, &key("refresh_before"));
    let expires_timezone = match &fp.expires_timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(s) => {
            let v = ctx.string(s, &key("expires_timezone"))?;
            match jiff::tz::TimeZone::get(&v) {
                Ok(tz) => tz,
                Err(_) => {
                    ctx.err(s.span(), &key("expires_timezone"), format!("`{v}` is not a known time zone (IANA names such as \"Europe/Amsterdam\", or \"UTC\")"));
                    return None;
                }
            }
        }
    };
    if ctx.errors.len() > before {
        return None;
    }
    Some(OAuth2Config {
        token_url: token_url?,
        grant: grant?,
        client_id,
        client_secret,
        username,
        password,
        scopes,
        scope_separator,
        format,
        client_auth,
        redirect_uri,
        authorize_url,
        authorize_params,
        token_params,
        token_headers,
        request_fields: FieldNames(request_fields),
        reply_fields: FieldNames(reply_fields),
        refresh_with_bearer: fp.refresh_with_bearer.unwrap_or(d.refresh_with_bearer),
        pkce: fp.pkce.unwrap_or(true),
        introspect_url,
        revoke_url,
        workspaces_url,
        default_lifetime,
        refresh_before,
        expires_timezone,
    })
}
