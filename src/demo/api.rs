//! The demo API: `GET /hello`, for callers holding a valid token from the demo token server.
//!
//! A valid token gets 200 `{"message": "hello from the demo API", "authorized": true,
//! "token_expires_in": N}` (N whole seconds). A missing, expired or unknown token gets 401 with a
//! JSON body and an RFC 6750 §3 `WWW-Authenticate: Bearer` challenge, so a direct call shows what
//! credproxy saves the caller from.

use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::HELLO_PATH;
use super::serve::{self, Reply};
use super::tokens::{Check, TokenBook};

/// Answer one request to the demo API.
pub async fn handle(book: Arc<TokenBook>, req: Request<Incoming>) -> Reply {
    if req.uri().path() != HELLO_PATH {
        return serve::error(StatusCode::NOT_FOUND, "not_found", "try GET /hello");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return serve::method_not_allowed("GET, HEAD");
    }
    let Some(token) = bearer(req.headers()) else {
        tracing::debug!("demo API: 401, no token");
        return unauthorized(
            "missing_token",
            "this API needs an access token from the demo token server \
             (Authorization: Bearer ...): call it through credproxy",
            "Bearer realm=\"demo.api\"",
        );
    };
    match book.check(token) {
        Check::Valid { expires_in } => {
            tracing::debug!("demo API: 200");
            serve::json(
                StatusCode::OK,
                &json!({
                    "message": "hello from the demo API",
                    "authorized": true,
                    "token_expires_in": expires_in.as_secs(),
                }),
            )
        }
        Check::Expired => {
            tracing::info!("demo API: 401, the token expired");
            unauthorized(
                "invalid_token",
                "the access token expired",
                "Bearer realm=\"demo.api\", error=\"invalid_token\", \
                 error_description=\"the access token expired\"",
            )
        }
        Check::Unknown => {
            tracing::info!("demo API: 401, an unknown token");
            unauthorized(
                "invalid_token",
                "the access token was not issued by the demo token server",
                "Bearer realm=\"demo.api\", error=\"invalid_token\", \
                 error_description=\"unknown access token\"",
            )
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn unauthorized(code: &str, message: &str, challenge: &'static str) -> Reply {
    let mut reply = serve::error(StatusCode::UNAUTHORIZED, code, message);
    reply
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_takes_the_token_whatever_the_scheme_case() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer abc"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
