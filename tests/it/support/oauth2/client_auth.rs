//! Client authentication for the generic OAuth 2 fake: RFC 6749 §2.3.1, either HTTP Basic
//! (id and secret form-urlencoded *before* base64, which clients often get wrong) or
//! `client_id` + `client_secret` in the body, never both in one request (§2.3).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::request::Parts;

use super::{ClientAuth, OAuth2Options};
use crate::support::fields::Fields;
use crate::support::http::Reject;

/// Checks client authentication and returns the body field names it used (so the grant's field
/// check allows them).
pub(super) fn authenticate(
    parts: &Parts,
    fields: &Fields,
    options: &OAuth2Options,
) -> Result<Vec<&'static str>, Reject> {
    let basic = basic_credentials(parts)?;
    let body_secret = fields.get("client_secret").is_some();
    let basic_reject = || Reject::invalid_client().with_header(WWW_AUTHENTICATE, "Basic");
    match (basic, body_secret, options.client_auth) {
        (Some(_), true, _) => Err(Reject::invalid_request(
            "client authenticated both by Basic and in the body (RFC 6749 §2.3)",
        )),
        (Some((id, secret)), false, ClientAuth::Basic | ClientAuth::Either) => {
            if id != options.client_id || secret != options.client_secret {
                return Err(basic_reject());
            }
            // §4.1.3 lets a client repeat its id in the body; it must be the same one.
            if fields.get("client_id").is_some_and(|body_id| body_id != id) {
                return Err(Reject::invalid_request("client_id differs from Basic's"));
            }
            Ok(vec!["client_id"])
        }
        (None, true, ClientAuth::Body | ClientAuth::Either) => {
            fields.check_client(
                "client_id",
                "client_secret",
                &options.client_id,
                &options.client_secret,
            )?;
            Ok(vec!["client_id", "client_secret"])
        }
        (Some(_), false, ClientAuth::Body) => Err(Reject::invalid_client()),
        (None, true, ClientAuth::Basic) => Err(basic_reject()),
        (None, false, _) => Err(basic_reject()),
    }
}

/// RFC 6749 §2.3.1: `Basic base64(urlencode(id) ":" urlencode(secret))`.
fn basic_credentials(parts: &Parts) -> Result<Option<(String, String)>, Reject> {
    let Some(value) = parts.headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| Reject::invalid_client())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err(Reject::invalid_client());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Reject::invalid_request(format!(
            "unexpected {scheme} authorization"
        )));
    }
    let decoded = STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(Reject::invalid_client)?;
    let (id, secret) = decoded.split_once(':').ok_or_else(Reject::invalid_client)?;
    Ok(Some((form_decode(id), form_decode(secret))))
}

/// `application/x-www-form-urlencoded` decoding of one value: `+` is a space, `%XX` a byte.
fn form_decode(s: &str) -> String {
    form_urlencoded::parse(format!("v={}", s.replace('&', "%26").replace('=', "%3D")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}
