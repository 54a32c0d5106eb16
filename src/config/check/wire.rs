//! Wire format for the oauth2 family: scopes, the token request body's encoding and client
//! authentication, extra parameters and headers, and the field names on the wire both ways (the
//! preset's, then the user's, which win).

use std::collections::BTreeMap;
use std::ops::Range;

use super::Ctx;
use crate::config::file::{FileProvider, Str};
use crate::config::presets::Defaults;
use crate::config::{BodyFormat, ClientAuth, FieldNames, SecretHeader};

/// How the token requests and replies look.
pub(super) struct Wire {
    pub scopes: Vec<String>,
    pub scope_separator: String,
    pub format: BodyFormat,
    pub client_auth: ClientAuth,
    pub redirect_uri: Option<String>,
    pub authorize_params: Vec<(String, String)>,
    pub token_params: Vec<(String, String)>,
    pub token_headers: Vec<SecretHeader>,
    pub request_fields: FieldNames,
    pub reply_fields: FieldNames,
}

/// Check the wire-format keys, falling back to the preset's `d`.
pub(super) fn wire(
    ctx: &mut Ctx<'_>,
    name: &str,
    fp: &FileProvider,
    span: Range<usize>,
    d: &Defaults,
) -> Wire {
    let key = |k: &str| format!("providers.{name}.{k}");
    let mut scopes = Vec::new();
    for (i, s) in fp.scopes.iter().flatten().enumerate() {
        if let Some(v) = ctx.string(s, &format!("{}[{i}]", key("scopes"))) {
            scopes.push(v);
        }
    }
    let scope_separator = ctx
        .opt_string(&fp.scope_separator, &key("scope_separator"))
        .unwrap_or_else(|| " ".into());
    let format = match &fp.token_format {
        None => d.format,
        Some(s) => match ctx.string(s, &key("token_format")).as_deref() {
            Some("form") => BodyFormat::Form,
            Some("json") => BodyFormat::Json,
            Some("multipart") => BodyFormat::Multipart,
            Some(other) => {
                ctx.err(
                    s.span(),
                    &key("token_format"),
                    format!("must be one of \"form\", \"json\", \"multipart\", not `{other}`"),
                );
                d.format
            }
            None => d.format,
        },
    };
    let client_auth = match &fp.client_auth {
        None => d.client_auth,
        Some(s) => match ctx.string(s, &key("client_auth")).as_deref() {
            Some("basic") => ClientAuth::Basic,
            Some("body") => ClientAuth::Body,
            Some(other) => {
                ctx.err(
                    s.span(),
                    &key("client_auth"),
                    format!("must be \"basic\" or \"body\", not `{other}`"),
                );
                d.client_auth
            }
            None => d.client_auth,
        },
    };
    let redirect_uri = ctx.opt_string(&fp.redirect_uri, &key("redirect_uri"));
    let pairs =
        |ctx: &mut Ctx<'_>, m: &Option<BTreeMap<String, Str>>, k: &str| -> Vec<(String, String)> {
            let mut out = Vec::new();
            for (n, v) in m.iter().flatten() {
                if let Some(v) = ctx.string(v, &format!("{}.{n}", key(k))) {
                    out.push((n.clone(), v));
                }
            }
            out
        };
    let authorize_params = pairs(ctx, &fp.authorize_params, "authorize_params");
    let token_params = pairs(ctx, &fp.token_params, "token_params");
    let mut request_fields: Vec<(String, String)> = d
        .request_fields
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    request_fields.extend(pairs(ctx, &fp.request_fields, "request_fields"));
    let mut reply_fields: Vec<(String, String)> = d
        .reply_fields
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    reply_fields.extend(pairs(ctx, &fp.reply_fields, "reply_fields"));
    // Later entries (the user's) win over the preset's.
    request_fields.reverse();
    reply_fields.reverse();
    let mut token_headers = Vec::new();
    for (hn, hv) in fp.token_headers.iter().flatten() {
        let k = format!("{}.{hn}", key("token_headers"));
        let Some(n) = ctx.header_name(hn, span.clone(), &k) else {
            continue;
        };
        if let Some(value) = ctx.header_secret(hv, span.clone(), &k) {
            token_headers.push(SecretHeader { name: n, value });
        }
    }
    Wire {
        scopes,
        scope_separator,
        format,
        client_auth,
        redirect_uri,
        authorize_params,
        token_params,
        token_headers,
        request_fields: FieldNames(request_fields),
        reply_fields: FieldNames(reply_fields),
    }
}
