//! BACE (`shared/seeds/bace.md`): password grant posted as `multipart/form-data`.
//!
//! Refresh is posted WITH the current access token as Bearer and answers
//! `{"refreshed": true, "expires": "2022-04-04 14:19:49"}`: the same token lives on until that naive
//! timestamp (UTC unless `expires_timezone` says otherwise). BACE also answers 401 for "no
//! permission", which the engine's 401 rules keep from becoming a refresh storm.

use super::{DefaultInject, Defaults};
use crate::config::{BodyFormat, ClientAuth, Grant};

pub const DEFAULTS: Defaults = Defaults {
    hosts: &["dashboard.bace-iot.com"],
    token_url: Some("https://dashboard.bace-iot.com/oauth2/token"),
    authorize_url: None,
    introspect_url: None,
    revoke_url: None,
    workspaces_url: None,
    grant: Some(Grant::Password),
    grants: &[Grant::Password],
    format: BodyFormat::Multipart,
    client_auth: ClientAuth::Body,
    request_fields: &[],
    reply_fields: &[("expires_at", "expires")],
    refresh_with_bearer: true,
    required: &[],
    // bace.md: "Set access token in the Authorization header with \"Bearer\" prefix."
    inject: DefaultInject::Bearer,
};
