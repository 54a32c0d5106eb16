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
use crate::credential::Inject;

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
    /// Where the token goes unless `inject` says: the form the provider's document gives.
    pub inject: DefaultInject,
}

/// A preset's `inject` default. Every seed document asks for `Authorization: Bearer` (each
/// preset file quotes its document), so there is one form today; a preset for an API that
/// documents another (`x-api-key`, `?key=`) adds its variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultInject {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1).
    Bearer,
}

impl DefaultInject {
    pub fn inject(self) -> Inject {
        match self {
            DefaultInject::Bearer => Inject::Bearer,
        }
    }
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
        // `static` and `oauth2` name no API: RFC 6750's bearer, what most APIs take.
        inject: DefaultInject::Bearer,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_str;

    /// Issue 20 item 4: each preset's `inject` default is the form its document
    /// (`shared/seeds/`) gives, and a provider's own `inject` still wins over it.
    #[test]
    fn each_preset_injects_as_its_document_says() {
        // (preset, the keys it needs, the document's words on where the token goes)
        let cases = [
            (
                Preset::Bace,
                "client_id = \"c\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n",
                "Set access token in the Authorization header with \"Bearer\" prefix.",
            ),
            (
                Preset::Baselime,
                "client_id = \"c\"\nclient_secret = \"s\"\n",
                "Authorization: `Bearer <YOUR_ACCESS_TOKEN_GOES_HERE>`",
            ),
            (
                Preset::Apicbase,
                "client_id = \"c\"\nclient_secret = \"s\"\n",
                "We only implement the Authorization Code flow of the OAuth specification.",
            ),
            (
                Preset::ApiV1,
                "hosts = [\"api.v1.test\"]\nupstream = \"https://api.v1.test\"\n\
                 token_url = \"https://api.v1.test/oauth/token\"\ngrant = \"password\"\n\
                 client_id = \"c\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n",
                "\"token_type\": \"bearer\"",
            ),
            (
                Preset::BlendVision,
                "api_token = \"t\"\norg_id = \"o\"\n",
                "The Platform APIs for BlendVision One use Bearer authentication.",
            ),
        ];
        let load = |preset: Preset, keys: &str, extra: &str| {
            let text = format!(
                "[providers.p]\npreset = \"{}\"\n{keys}{extra}",
                preset.name()
            );
            load_str(&text, "c.toml", &|_| None)
                .unwrap_or_else(|e| panic!("{}: {e}", preset.name()))
                .providers[0]
                .inject
                .clone()
        };
        for (preset, keys, says) in cases {
            assert_eq!(
                defaults(preset).inject,
                DefaultInject::Bearer,
                "{}: {says}",
                preset.name()
            );
            assert_eq!(load(preset, keys, ""), Inject::Bearer, "{}", preset.name());
            assert_eq!(
                load(preset, keys, "inject = { header = \"x-api-key\" }\n"),
                Inject::Header {
                    name: http::HeaderName::from_static("x-api-key"),
                    prefix: String::new(),
                    suffix: String::new(),
                },
                "{}: the provider's own inject wins",
                preset.name()
            );
        }
        // Every preset with a document is in the table.
        let named: Vec<Preset> = cases.iter().map(|c| c.0).collect();
        for p in Preset::ALL {
            assert!(
                matches!(p, Preset::Static | Preset::OAuth2) || named.contains(&p),
                "{} has no case",
                p.name()
            );
        }
    }
}
