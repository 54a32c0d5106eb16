//! Grant and secrets for the oauth2 family: which grant (the user's, else the preset's, else
//! password when a username is given), that the preset supports it, and the client and user
//! credentials that grant needs.

use std::ops::Range;

use super::Ctx;
use crate::config::file::FileProvider;
use crate::config::presets::Defaults;
use crate::config::{Grant, Preset};
use crate::secret::Live;

/// `grant`: the user's (one the preset supports), else the preset's, else chosen by `username`.
pub(super) fn grant(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    preset: Preset,
    d: &Defaults,
) -> Option<Grant> {
    let key = |k: &str| format!("providers.{name}.{k}");
    let grant = match &fp.grant {
        Some(g) => match ctx.string(g, &key("grant")).as_deref() {
            Some("client_credentials") => Some(Grant::ClientCredentials),
            Some("password") => Some(Grant::Password),
            Some("authorization_code") => Some(Grant::AuthorizationCode),
            Some(other) => {
                ctx.err(g.span(), &key("grant"), format!("must be one of \"client_credentials\", \"password\", \"authorization_code\", not `{other}`"));
                None
            }
            None => None,
        },
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
    grant
}

/// The secrets and names the token requests carry (the `client_id` is read with the endpoints).
pub(super) struct Credentials {
    pub client_secret: Option<Live>,
    pub username: Option<String>,
    pub password: Option<Live>,
}

/// `client_secret`, `username`, `password`, and the keys `grant` can't go without (`authorize_url_known`:
/// there is one, or the key it is built from failed and was reported).
pub(super) fn credentials(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    preset: Preset,
    grant: Option<Grant>,
    authorize_url_known: bool,
) -> Credentials {
    let key = |k: &str| format!("providers.{name}.{k}");
    let client_secret = ctx.opt_live(&fp.client_secret, &key("client_secret"));
    let username = ctx.opt_string(&fp.username, &key("username"));
    let password = ctx.opt_live(&fp.password, &key("password"));
    // A missing password is allowed for the password grant: `credproxy login` prompts for it.
    let missing = match grant {
        Some(Grant::Password) if username.is_none() && fp.username.is_none() => {
            Some(("username", "missing: the password grant needs username"))
        }
        Some(Grant::ClientCredentials) if fp.client_id.is_none() => Some((
            "client_id",
            "missing: the client_credentials grant needs client_id",
        )),
        Some(Grant::AuthorizationCode) if !authorize_url_known && fp.authorize_url.is_none() => {
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
    Credentials {
        client_secret,
        username,
        password,
    }
}
