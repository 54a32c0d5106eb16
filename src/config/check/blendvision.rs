//! The BlendVision One credential (`[providers.NAME]` with `preset = "blendvision"`): a static
//! `api_token`, or `email` + `password` to log in and mint one; the org id and URLs. Its default
//! URLs and lifetime are data in `presets/blendvision.rs`.

use std::ops::Range;

use http::Uri;

use super::Ctx;
use crate::config::file::{FileProvider, Str};
use crate::config::presets::blendvision as bv;
use crate::config::{AuthConfig, BlendVisionConfig, BlendVisionMode};

/// The BlendVision credential: a static `api_token`, or `email` + `password` to mint one.
pub(super) fn build(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
) -> Option<AuthConfig> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let url = |ctx: &mut Ctx<'_>, s: &Option<Str>, k: &str, d: &str| -> Option<Uri> {
        match s {
            Some(s) => ctx.url(s, &key(k)),
            None => Some(d.parse().expect("preset URLs parse")),
        }
    };
    let org_url = url(ctx, &fp.org_url, "org_url", bv::ORG_URL);
    let org_id = ctx.header_secret_or_unset(&fp.org_id, &key("org_id"));
    let refresh_before = ctx.opt_duration(&fp.refresh_before, &key("refresh_before"));
    let mode = match (&fp.api_token, &fp.email) {
        (Some(t), None) => BlendVisionMode::ApiToken(ctx.token_secret(t, &key("api_token"))?),
        (None, Some(e)) => {
            // Every key checked before giving up, so that all their errors are reported.
            let email = ctx.string(e, &key("email"));
            let password = match &fp.password {
                Some(p) => ctx.live(p, &key("password")),
                None => {
                    ctx.err(
                        span,
                        &key("password"),
                        "missing: minting an API token needs email and password",
                    );
                    None
                }
            };
            let lifetime = ctx.duration(
                &fp.api_token_lifetime,
                &key("api_token_lifetime"),
                bv::API_TOKEN_LIFETIME,
            );
            let login_url = url(ctx, &fp.login_url, "login_url", bv::LOGIN_URL);
            let mint_url = url(ctx, &fp.mint_url, "mint_url", bv::MINT_URL);
            BlendVisionMode::Mint {
                email: email?,
                password: password?,
                login_url: login_url?,
                mint_url: mint_url?,
                api_token_lifetime: lifetime,
            }
        }
        (Some(_), Some(e)) => {
            ctx.err(
                e.span(),
                &key("email"),
                "give either api_token, or email + password, not both",
            );
            return None;
        }
        (None, None) => {
            ctx.err(
                span,
                &key("api_token"),
                "missing: set api_token = \"${BV_API_TOKEN}\", or email + password to mint one",
            );
            return None;
        }
    };
    Some(AuthConfig::BlendVision(Box::new(BlendVisionConfig {
        mode,
        org_id,
        org_url: org_url?,
        refresh_before,
    })))
}
