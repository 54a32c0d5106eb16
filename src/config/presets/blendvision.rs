//! BlendVision One (`shared/seeds/blendvision.md`): every call carries `Authorization: Bearer` AND
//! `x-bv-org-id`.
//!
//! Either a static `api_token`, or `email` + `password`: log in, mint an API token with an
//! `expired_date`, and mint again before it. The login reply's `expires_in` can be garbage
//! (-2147483648), so it never schedules anything. `org_id` is discovered when not given.

use std::time::Duration;

use super::{DefaultInject, Defaults};
use crate::config::{BodyFormat, ClientAuth};

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
    // blendvision.md: "The Platform APIs for BlendVision One use Bearer authentication."
    inject: DefaultInject::Bearer,
};

pub const LOGIN_URL: &str = "https://api.one.blendvision.com/bv/account/v1/accounts/login";
pub const MINT_URL: &str = "https://api.one.blendvision.com/bv/account/v1/accounts/api-token";
pub const ORG_URL: &str = "https://api.one.blendvision.com/bv/org/v1/organizations";
/// The lifetime asked for a minted API token when `api_token_lifetime` is not set.
pub const API_TOKEN_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
