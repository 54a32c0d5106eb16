//! Presets as data: what each kind of provider knows before the user says anything.
//!
//! A preset supplies defaults (hosts, URLs, body format, field names, lifetimes) from its
//! provider's document, plus a few named quirk hooks (plain functions) for what can't be a table.
//! Every URL can be overridden in the file, which is how tests point them at fakes. `oauth2` is
//! the generic RFC 6749 kind with no defaults; `static` is a fixed token. Nothing here knows the
//! checker: `check/provider.rs` applies these defaults, then checks.

mod apicbase;
pub(super) mod apiv1;
mod bace;
pub(super) mod baselime;
pub(super) mod blendvision;

use http::Uri;

use super::{BodyFormat, ClientAuth, Grant, Preset, Upstream};

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

/// The defaults of `preset`.
pub fn defaults(preset: Preset) -> Defaults {
    match preset {
        Preset::Static | Preset::OAuth2 => Defaults::GENERIC,
        Preset::Baselime => baselime::DEFAULTS,
        Preset::Bace => bace::DEFAULTS,
        Preset::Apicbase => apicbase::DEFAULTS,
        Preset::ApiV1 => apiv1::DEFAULTS,
        Preset::BlendVision => blendvision::DEFAULTS,
    }
}

/// The [`Upstream`] a URL names (scheme, authority, host, port, base path, `Host` value); also
/// used for the default upstream `https://<first concrete host>`.
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
