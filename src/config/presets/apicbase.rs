//! Apicbase (`shared/seeds/apicbase.md`): authorization code, form-urlencoded, paths end in `/`.
//!
//! Codes live one minute (exchange at once), access tokens a week, a refresh works after expiry,
//! and `POST /oauth/introspect/` says whether a stored token is `active` and its `exp`.

use super::{DefaultInject, Defaults};
use crate::config::{BodyFormat, ClientAuth, Grant};

pub const DEFAULTS: Defaults = Defaults {
    hosts: &["api.apicbase.com"],
    token_url: Some("https://api.apicbase.com/oauth/token/"),
    authorize_url: Some("https://app.apicbase.com/oauth/authorize/"),
    introspect_url: Some("https://api.apicbase.com/oauth/introspect/"),
    revoke_url: None,
    workspaces_url: None,
    grant: Some(Grant::AuthorizationCode),
    grants: &[Grant::AuthorizationCode],
    format: BodyFormat::Form,
    client_auth: ClientAuth::Body,
    request_fields: &[],
    reply_fields: &[],
    refresh_with_bearer: false,
    required: &[],
    // apicbase.md: standard OAuth 2.0 ("the OAuth specification"), no other form named.
    inject: DefaultInject::Bearer,
};
