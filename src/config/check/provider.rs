//! One `[providers.NAME]` table: which preset, the keys that preset doesn't use, where it lives
//! (`endpoints.rs`), its extra headers and allowed origins, then the credential by kind: a static
//! token here, the oauth2 family in `oauth2.rs`, BlendVision in `blendvision.rs`. The preset's
//! defaults are data from `presets`; this file applies them, then checks.

use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{Ctx, blendvision, endpoints, inject, oauth2, rules};
use crate::config::file::{FileProvider, FileSecret, Str};
use crate::config::{AuthConfig, Preset, ProviderConfig, SecretHeader, presets};

fn preset_of(ctx: &mut Ctx<'_>, name: &str, s: &Option<Str>, span: Range<usize>) -> Option<Preset> {
    let key = format!("providers.{name}.preset");
    let Some(s) = s else {
        ctx.err(
            span,
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
                format!("must be one of {}, not `{v}`", names.join(", ")),
            );
            None
        }
    }
}

/// Check one `[providers.NAME]` table.
pub(in crate::config) fn build(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &Spanned<FileProvider>,
) -> Option<ProviderConfig> {
    let span = fp.span();
    let fp = fp.get_ref();
    let key = |k: &str| format!("providers.{name}.{k}");
    let before = ctx.errors.len();
    let Some(preset) = preset_of(ctx, name, &fp.preset, span.clone()) else {
        // Without a preset the credential can't be checked, but what every provider has can.
        preset_free_keys(ctx, name, fp, span);
        return None;
    };
    let defaults = presets::defaults(preset);
    reject_foreign_keys(ctx, name, preset, fp);

    let hosts = endpoints::hosts(ctx, name, fp, span.clone(), &defaults, before);
    let upstream = endpoints::upstream(ctx, name, fp, span.clone(), preset, &hosts)?;
    let headers = headers(ctx, name, fp);
    let inject = inject::inject(ctx, name, &fp.inject, &headers, defaults.inject.inject());
    let rules = rules::rules(ctx, name, fp);
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
    let response_timeout = ctx.opt_duration(&fp.response_timeout, &key("response_timeout"));

    let auth = match preset {
        Preset::Static => {
            let token = match &fp.token {
                Some(t) => ctx.token_secret(t, &key("token")),
                None => {
                    ctx.err(span.clone(), &key("token"), "missing: a static provider needs token = \"${VAR}\" or token = { file = \"/run/secrets/x\" }");
                    None
                }
            };
            token.map(|token| AuthConfig::Static { token })
        }
        Preset::BlendVision => blendvision::build(ctx, name, fp, span.clone()),
        _ => oauth2::oauth2(ctx, name, fp, span.clone(), preset, &defaults)
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
        response_timeout,
        inject: inject?,
        rules: rules?,
        auth: auth?,
    })
}

/// The keys every provider has, checked when its preset is missing or unknown: the hosts and
/// upstream as written, headers, rules, allowed origins, `wait_for_token`.
fn preset_free_keys(ctx: &mut Ctx<'_>, name: &str, fp: &FileProvider, span: Range<usize>) {
    let key = |k: &str| format!("providers.{name}.{k}");
    let none = presets::defaults(Preset::Static);
    if fp.hosts.is_some() {
        let hosts = endpoints::hosts(ctx, name, fp, span.clone(), &none, usize::MAX);
        if fp.upstream.is_some() {
            endpoints::upstream(ctx, name, fp, span, Preset::Static, &hosts);
        }
    }
    headers(ctx, name, fp);
    rules::rules(ctx, name, fp);
    for (i, o) in fp.allow_origins.iter().flatten().enumerate() {
        ctx.string(o, &format!("{}[{i}]", key("allow_origins")));
    }
    ctx.opt_duration(&fp.wait_for_token, &key("wait_for_token"));
}

/// `headers = { NAME = "value" }`: extra headers to inject, never ones credproxy sets or manages.
fn headers(ctx: &mut Ctx<'_>, name: &str, fp: &FileProvider) -> Vec<SecretHeader> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let mut headers = Vec::new();
    if let Some(map) = &fp.headers {
        for (hn, hv) in map {
            let k = format!("{}.{hn}", key("headers"));
            let span = hv.span.clone();
            let Some(name_) = ctx.header_name(hn, span.clone(), &k) else {
                continue;
            };
            // Judged as servers that map `-` to `_` (CGI, WSGI, PHP) read it too: an injected
            // `Transfer_Encoding` is framing to them, and credproxy drops a client's.
            let dashed = name_.as_str().replace('_', "-");
            if dashed == "authorization" || dashed == "host" {
                ctx.err(
                    span,
                    &k,
                    "credproxy sets this header itself; remove it from headers",
                );
                continue;
            }
            let field = crate::fields::classify(&dashed);
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
            if let Some(value) = ctx.header_secret(hv, span, &k) {
                headers.push(SecretHeader { name: name_, value });
            }
        }
    }
    headers
}

/// Keys that make no sense for this preset are errors, not silently ignored.
fn reject_foreign_keys(ctx: &mut Ctx<'_>, name: &str, preset: Preset, fp: &FileProvider) {
    let key = |k: &str| format!("providers.{name}.{k}");
    let only = |ctx: &mut Ctx<'_>, present: Option<Range<usize>>, k: &str, allowed: &[Preset]| {
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
    let sp = |s: &Option<FileSecret>| s.as_ref().map(|s| s.span.clone());
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
    only(
        ctx,
        fp.issuer.as_ref().map(|s| s.span()),
        "issuer",
        &oauthish,
    );
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn provider_headers_cannot_set_framing_or_connection_fields() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "host",
            "te",
            // What a CGI/WSGI/PHP server reads as those (a client's are dropped: never inject one).
            "Transfer_Encoding",
            "content_length",
            "Proxy_Connection",
            "HOST",
        ] {
            let text = format!(
                "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\nheaders = {{ \"{name}\" = \"1\" }}\n"
            );
            let err = load_str(&text, "c.toml", &no_env).unwrap_err();
            let e = &err.0[0];
            assert_eq!(e.line, 5, "{name}: {err}");
            assert!(
                e.message.contains("remove it from headers"),
                "{name}: {err}"
            );
        }
    }
}
