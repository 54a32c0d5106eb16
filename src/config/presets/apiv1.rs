//! API v1 (`shared/seeds/api-v1.md`): password grant or authorization code, JSON bodies sent with
//! `Content-Type: application/json` exactly, `token_type` answered as lowercase `bearer`.
//!
//! Its base URL is per deployment, so `hosts`, `upstream` and `token_url` have no defaults.

use http::Uri;

use super::{DefaultInject, Defaults};
use crate::config::{BodyFormat, ClientAuth, Grant};

pub const DEFAULTS: Defaults = Defaults {
    hosts: &[],
    token_url: None,
    authorize_url: None,
    introspect_url: None,
    revoke_url: None,
    workspaces_url: None,
    grant: Some(Grant::Password),
    grants: &[Grant::Password, Grant::AuthorizationCode],
    format: BodyFormat::Json,
    client_auth: ClientAuth::Body,
    request_fields: &[],
    reply_fields: &[],
    refresh_with_bearer: false,
    required: &["hosts", "token_url", "upstream"],
    // api-v1.md: OAuth 2.0 with `"token_type": "bearer"` in the token reply.
    inject: DefaultInject::Bearer,
};

/// API v1 documents `https://API_URI/oauth/authorize` beside `https://API_URI/oauth/token`: the
/// authorize URL when none is configured.
pub fn authorize_url_beside(token_url: &Uri) -> Option<Uri> {
    token_url
        .to_string()
        .strip_suffix("/oauth/token")
        .and_then(|b| format!("{b}/oauth/authorize").parse().ok())
}
