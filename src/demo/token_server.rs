//! The demo's OAuth 2.0 token server: `POST /oauth/token`, the client credentials grant
//! (RFC 6749 §4.4), and nothing else.
//!
//! The request body is `application/x-www-form-urlencoded` (§4.4.2). The client authenticates
//! with HTTP Basic, id and secret form-urlencoded before base64 (§2.3.1), or with `client_id` and
//! `client_secret` in the body, never both (§2.3). Errors are §5.2's: `invalid_request` (400),
//! `invalid_client` (401, with `WWW-Authenticate`), `unsupported_grant_type` (400). A success is
//! §5.1's: a random opaque `access_token`, `token_type` `Bearer`, `expires_in` in seconds, and
//! `Cache-Control: no-store`. Each token issued is logged by number, never by value.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, PRAGMA, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::json;

use super::serve::{self, Reply};
use super::tokens::TokenBook;
use super::{CLIENT_ID, CLIENT_SECRET, TOKEN_PATH};

/// A token request is a few short fields; anything bigger is refused.
const MAX_BODY: usize = 16 * 1024;

/// Answer one request to the token server.
pub async fn handle(book: Arc<TokenBook>, req: Request<Incoming>) -> Reply {
    if req.uri().path() != TOKEN_PATH {
        return serve::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "the token endpoint is POST /oauth/token",
        );
    }
    if req.method() != Method::POST {
        return serve::method_not_allowed("POST");
    }
    token(&book, req).await.unwrap_or_else(Refusal::reply)
}

async fn token(book: &TokenBook, req: Request<Incoming>) -> Result<Reply, Refusal> {
    let (parts, body) = req.into_parts();
    if !is_form(&parts.headers) {
        return Err(Refusal::bad_request(
            "invalid_request",
            "the body must be application/x-www-form-urlencoded",
        ));
    }
    let body: Bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Err(Refusal::bad_request(
                "invalid_request",
                "the body could not be read or is too large",
            ));
        }
    };
    let mut fields: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(&body) {
        // §3.2: parameters must not be repeated.
        if fields.iter().any(|(seen, _)| *seen == k) {
            return Err(Refusal::bad_request(
                "invalid_request",
                format!("the parameter {k} is repeated"),
            ));
        }
        fields.push((k.into_owned(), v.into_owned()));
    }
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    authenticate(&parts.headers, field("client_id"), field("client_secret"))?;

    match field("grant_type") {
        None => {
            return Err(Refusal::bad_request(
                "invalid_request",
                "grant_type is missing",
            ));
        }
        Some("client_credentials") => {}
        Some(other) => {
            return Err(Refusal::bad_request(
                "unsupported_grant_type",
                format!("this server only grants client_credentials, not {other:?}"),
            ));
        }
    }

    let issued = book.issue();
    tracing::info!(
        "token server: issued token #{} (expires in {})",
        issued.number,
        super::human(issued.lifetime)
    );
    let mut reply = serve::json(
        StatusCode::OK,
        &json!({
            "access_token": issued.token.expose(),
            "token_type": "Bearer",
            "expires_in": issued.lifetime.as_secs(),
        }),
    );
    reply
        .headers_mut()
        .insert(PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(reply)
}

/// Check the client's credentials: Basic or body, not both, not neither (§2.3).
fn authenticate(
    headers: &HeaderMap,
    body_id: Option<&str>,
    body_secret: Option<&str>,
) -> Result<(), Refusal> {
    let basic = match headers.get(AUTHORIZATION) {
        None => None,
        Some(value) => match basic_credentials(value) {
            Some(pair) => Some(pair),
            None => {
                return Err(Refusal::invalid_client(
                    "the Authorization header is not valid Basic",
                ));
            }
        },
    };
    let (id, secret) = match (basic, body_secret) {
        (Some(_), Some(_)) => {
            return Err(Refusal::bad_request(
                "invalid_request",
                "use one client authentication method: Basic or the body, not both",
            ));
        }
        (Some((id, secret)), None) => {
            if body_id.is_some_and(|b| b != id) {
                return Err(Refusal::bad_request(
                    "invalid_request",
                    "client_id in the body differs from the Basic one",
                ));
            }
            (id, secret)
        }
        (None, Some(secret)) => match body_id {
            Some(id) => (id.to_owned(), secret.to_owned()),
            None => return Err(Refusal::invalid_client("client_id is missing")),
        },
        (None, None) => return Err(Refusal::invalid_client("no client credentials")),
    };
    if id == CLIENT_ID && constant_time_eq(secret.as_bytes(), CLIENT_SECRET.as_bytes()) {
        Ok(())
    } else {
        Err(Refusal::invalid_client(
            "unknown client or wrong client secret",
        ))
    }
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` → `(id, secret)` (§2.3.1).
fn basic_credentials(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// Undo `application/x-www-form-urlencoded` encoding of one value: `+` and `%XX`.
fn form_decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                let hex = std::str::from_utf8(&hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
            }
            _ => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// Compare without an early exit, so response time says nothing about the secret's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| {
            t.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
}

/// A refused token request: §5.2's error code and description.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    description: String,
}

impl Refusal {
    fn bad_request(code: &'static str, description: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code,
            description: description.into(),
        }
    }

    fn invalid_client(description: &str) -> Self {
        Refusal {
            status: StatusCode::UNAUTHORIZED,
            code: "invalid_client",
            description: description.to_owned(),
        }
    }

    /// `{"error", "error_description"}`; a 401 names the scheme to use in `WWW-Authenticate`,
    /// as §5.2 asks.
    fn reply(self) -> Reply {
        tracing::info!(
            "token server: refused a token request ({}: {})",
            self.code,
            self.description
        );
        let mut reply = serve::json(
            self.status,
            &json!({ "error": self.code, "error_description": self.description }),
        );
        let h = reply.headers_mut();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"credproxy demo\""),
            );
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        let value = HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode("demo%2Bclient:s%3Acret+x")
        ))
        .unwrap();
        assert_eq!(
            basic_credentials(&value),
            Some(("demo+client".to_owned(), "s:cret x".to_owned()))
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer abc")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
