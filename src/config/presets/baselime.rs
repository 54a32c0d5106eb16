//! Baselime (`shared/seeds/baselime.md`): authorization code, camelCase JSON both ways.
//!
//! The refresh reply carries no new refresh token (the old one never expires, so keep it), and
//! after the code exchange `GET /oauth/workspaces` names the workspace, environment and an `apiKey`.

use http::Uri;

use super::{DefaultInject, Defaults};
use crate::config::{BodyFormat, ClientAuth, Grant};

pub const DEFAULTS: Defaults = Defaults {
    hosts: &["api.baselime.io"],
    token_url: Some("https://api.baselime.io/oauth/token"),
    authorize_url: None,
    introspect_url: None,
    revoke_url: None,
    workspaces_url: Some("https://api.baselime.io/oauth/workspaces"),
    grant: Some(Grant::AuthorizationCode),
    grants: &[Grant::AuthorizationCode],
    format: BodyFormat::Json,
    client_auth: ClientAuth::Body,
    request_fields: &[
        ("grant_type", "grantType"),
        ("client_id", "clientId"),
        ("client_secret", "clientSecret"),
        ("redirect_uri", "redirect"),
        ("refresh_token", "refreshToken"),
    ],
    reply_fields: &[
        ("access_token", "accessToken"),
        ("refresh_token", "refreshToken"),
        ("expires_in", "expiresIn"),
        ("token_type", "tokenType"),
    ],
    refresh_with_bearer: false,
    required: &[],
    // baselime.md (the workspaces call): "Authorization: `Bearer <YOUR_ACCESS_TOKEN_GOES_HERE>`".
    inject: DefaultInject::Bearer,
};

/// Users authorize an integration at `https://console.baselime.io/integrations/<client-id>`.
pub fn authorize_url(configured: Option<Uri>, client_id: Option<&str>) -> Option<Uri> {
    configured.or_else(|| {
        client_id.and_then(|id| {
            format!("https://console.baselime.io/integrations/{id}")
                .parse()
                .ok()
        })
    })
}
