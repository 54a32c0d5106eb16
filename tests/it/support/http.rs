//! Response helpers shared by the fakes: JSON bodies, RFC 6749 §5.2 error replies, and strict
//! parsing of the request pieces every seed document relies on (Content-Type, Bearer).

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{Value, json};

pub type Reply = Response<Full<Bytes>>;

/// Request bodies above this are refused: no seed endpoint takes more than a few fields.
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// A refusal: status, JSON body and extra headers. Handlers return `Result<Reply, Reject>` so a
/// strictness check is one `?`, and the fake can count and remember why it refused.
#[derive(Debug, Clone)]
pub struct Reject {
    pub status: StatusCode,
    pub error: String,
    pub description: String,
    pub headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Reject {
    pub fn new(status: u16, error: &str, description: impl Into<String>) -> Self {
        Reject {
            status: StatusCode::from_u16(status).expect("valid status"),
            error: error.to_owned(),
            description: description.into(),
            headers: Vec::new(),
        }
    }

    /// RFC 6749 §5.2 `invalid_request`: a missing, repeated or unexpected parameter.
    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }

    /// RFC 6749 §5.2 `invalid_grant`: an unknown, expired or spent code or refresh token.
    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    /// RFC 6749 §5.2 `invalid_client`, answered with 401 as the brief asks for every fake.
    pub fn invalid_client() -> Self {
        Self::new(401, "invalid_client", "client authentication failed")
    }

    pub fn unsupported_grant_type(grant: &str) -> Self {
        Self::new(
            400,
            "unsupported_grant_type",
            format!("grant type {grant:?} is not supported here"),
        )
    }

    /// RFC 6750 §3.1 `invalid_token` for a protected resource.
    pub fn invalid_token(description: impl Into<String>) -> Self {
        Self::new(401, "invalid_token", description)
            .with_header(WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")
    }

    pub fn with_header(mut self, name: http::HeaderName, value: &str) -> Self {
        self.headers
            .push((name, HeaderValue::from_str(value).expect("valid header")));
        self
    }

    pub fn into_reply(self) -> Reply {
        let body = json!({"error": self.error, "error_description": self.description});
        let mut reply = json_reply(self.status.as_u16(), &body);
        for (name, value) in self.headers {
            reply.headers_mut().append(name, value);
        }
        reply
    }
}

pub fn json_reply(status: u16, body: &Value) -> Reply {
    bytes_reply(status, "application/json", body.to_string())
}

pub fn bytes_reply(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut reply = Response::new(Full::new(body.into()));
    *reply.status_mut() = StatusCode::from_u16(status).expect("valid status");
    reply.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("valid content type"),
    );
    reply
}

pub fn redirect_reply(location: &str) -> Reply {
    let mut reply = bytes_reply(302, "text/plain", "redirecting");
    reply.headers_mut().insert(
        LOCATION,
        HeaderValue::from_str(location).expect("valid location"),
    );
    reply
}

pub fn retry_after_reply(status: u16, secs: u64) -> Reply {
    let mut reply = json_reply(status, &json!({"error": "temporarily_unavailable"}));
    reply
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    reply
}

pub fn not_found() -> Reply {
    json_reply(404, &json!({"error": "not_found"}))
}

pub fn method_not_allowed() -> Reply {
    json_reply(405, &json!({"error": "method_not_allowed"}))
}

/// Reads a whole request body, refusing more than [`MAX_BODY`] with 413.
pub async fn read_body(body: Incoming) -> Result<Bytes, Reject> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) => Err(Reject::new(
            413,
            "invalid_request",
            format!("body unreadable or over {MAX_BODY} bytes: {err}"),
        )),
    }
}

/// The one Content-Type header's value, refusing a repeated header.
pub fn content_type(headers: &HeaderMap) -> Result<Option<&str>, Reject> {
    let mut values = headers.get_all(CONTENT_TYPE).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(Reject::invalid_request("more than one Content-Type header"));
    }
    first
        .map(|v| {
            v.to_str()
                .map_err(|_| Reject::invalid_request("Content-Type is not ASCII"))
        })
        .transpose()
}

/// The media type without parameters, lowercased (RFC 9110 §8.3.1: the type is case-insensitive).
pub fn media_type(headers: &HeaderMap) -> Result<Option<String>, Reject> {
    Ok(content_type(headers)?.map(|v| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
    }))
}

/// Requires the media type `expected` (parameters such as `charset` allowed).
pub fn require_media_type(headers: &HeaderMap, expected: &str) -> Result<(), Reject> {
    match media_type(headers)? {
        Some(found) if found == expected => Ok(()),
        found => Err(Reject::invalid_request(format!(
            "Content-Type must be {expected}, got {found:?}"
        ))),
    }
}

/// The bearer token of the request's only Authorization header (RFC 6750 §2.1).
///
/// More than one Authorization header is `invalid_request` (RFC 6750 §3.1): a proxy that adds
/// its own header beside the caller's must be caught. The scheme is case-insensitive (RFC 9110
/// §11.1); the token must be a `b64token`, so a token with a space or CR LF never matches.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Reject> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        // RFC 6750 §3.1: no credentials at all gets a bare challenge, no error code.
        return Err(Reject::new(401, "unauthorized", "no Authorization header")
            .with_header(WWW_AUTHENTICATE, "Bearer"));
    };
    if values.next().is_some() {
        return Err(Reject::invalid_request(
            "more than one Authorization header",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| Reject::invalid_token("Authorization is not ASCII"))?;
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(Reject::invalid_token("Authorization has no scheme"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Reject::invalid_token(format!(
            "scheme {scheme:?} is not Bearer"
        )));
    }
    if !is_b64token(token) {
        return Err(Reject::invalid_token("the bearer token is not a b64token"));
    }
    Ok(token)
}

fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// Parses a query string into pairs, refusing a repeated parameter (RFC 6749 §3.1).
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, Reject> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if pairs.iter().any(|(seen, _)| *seen == k) {
            return Err(Reject::invalid_request(format!("parameter {k} repeated")));
        }
        pairs.push((k.into_owned(), v.into_owned()));
    }
    Ok(pairs)
}
