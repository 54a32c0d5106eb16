//! BlendVision One (`shared/seeds/blendvision.md`): every call carries `Authorization: Bearer` AND
//! `x-bv-org-id`.
//!
//! Either a static `api_token`, or `email` + `password`: log in, mint an API token with an
//! `expired_date`, and mint again before it. The login reply's `expires_in` can be garbage
//! (-2147483648), so it never schedules anything. `org_id` is discovered when not given.

use std::ops::Range;
use std::time::Duration;

use http::Uri;

use super::Defaults;
use crate::config::check::Ctx;
use crate::config::file::FileProvider;
use crate::config::{AuthConfig, BlendVisionConfig, BlendVisionMode, BodyFormat, ClientAuth};

pub const DEFAULTS: Defaults = Defaults {
    hosts: &["api.one.blendvision.com"],
    token_url: None,
    authorize_url: None,
    introspect_url: None,
    revoke_url: None,
    workspaces_url: None,
    grant: None,
    grants: &[],
    format: BodyFormat::Json,
    client_auth: ClientAuth::Body,
    request_fields: &[],
    reply_fields: &[],
    refresh_with_bearer: false,
    required: &[],
};

const LOGIN_URL: &str = "https://api.one.blendvision.com/bv/account/v1/accounts/login";
const MINT_URL: &str = "https://api.one.blendvision.com/bv/account/v1/accounts/api-token";
const ORG_URL: &str = "https://api.one.blendvision.com/bv/org/v1/organizations";

pub fn build(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
) -> Option<AuthConfig> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let url = |ctx: &mut Ctx<'_>,
               s: &Option<crate::config::file::Str>,
               k: &str,
               d: &str|
     -> Option<Uri> {
        match s {
            Some(s) => ctx.url(s, &key(k)),
            None => Some(d.parse().expect("preset URLs parse")),
        }
    };
    let org_url = url(ctx, &fp.org_url, "org_url", ORG_URL);
    let org_id = ctx.secret_or_unset(&fp.org_id, &key("org_id"));
    let refresh_before = ctx.opt_duration(&fp.refresh_before, &key("refresh_before"));
    let mode = match (&fp.api_token, &fp.email) {
        (Some(t), None) => BlendVisionMode::ApiToken(ctx.secret(t, &key("api_token"))?),
        (None, Some(e)) => {
            let email = ctx.string(e, &key("email"))?;
            let password = match &fp.password {
                Some(p) => ctx.secret(p, &key("password"))?,
                None => {
                    ctx.err(
                        span,
                        &key("password"),
                        "missing: minting an API token needs email and password",
                    );
                    return None;
                }
            };
            let lifetime = ctx.duration(
                &fp.api_token_lifetime,
                &key("api_token_lifetime"),
                Duration::from_secs(30 * 86_400),
            );
            BlendVisionMode::Mint {
                email,
                password,
                login_url: url(ctx, &fp.login_url, "login_url", LOGIN_URL)?,
                mint_url: url(ctx, &fp.mint_url, "mint_url", MINT_URL)?,
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
