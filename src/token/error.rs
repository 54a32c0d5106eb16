//! What can go wrong obtaining a token, and what the refresher does about each kind.
//!
//! [`TokenError`] says what failed (its `Display` names only its own level, causes are chained
//! through `source()`); [`TokenError::fault`] sorts it into the three ways the refresher reacts
//! (issue 3, point 6): retry soon with backoff, wait for a configuration fix, or wait for a person
//! to log in. A refused refresh token ([`TokenError::rejects_refresh`]) is handled before that, by
//! falling back to the primary grant. No variant carries a secret.

use std::time::Duration;

use http::StatusCode;

use super::http::HttpError;
use super::reply::{ErrorCode, OAuthError, ReplyError};
use super::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the {endpoint} call failed")]
    Http {
        endpoint: &'static str,
        #[source]
        source: HttpError,
    },
    /// A non-2xx answer; `oauth` is its RFC 6749 §5.2 error body, when it has one.
    #[error("the {endpoint} answered {status}")]
    Status {
        endpoint: &'static str,
        status: StatusCode,
        retry_after: Option<Duration>,
        #[source]
        oauth: Option<OAuthError>,
    },
    #[error("the {endpoint}'s reply can't be used")]
    Reply {
        endpoint: &'static str,
        #[source]
        source: ReplyError,
    },
    /// A person must run `credproxy login NAME`.
    #[error("{0}; run `credproxy login`")]
    LoginRequired(&'static str),
    /// Something the configuration must fix (beyond what `credproxy check` can see).
    #[error("{0}")]
    Config(String),
    #[error("the token store failed")]
    Store(#[source] StoreError),
    #[error("the token store task failed")]
    StoreTask(#[source] tokio::task::JoinError),
    #[error("stopped")]
    Cancelled,
}

/// How the refresher reacts to an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Worth retrying soon: connect errors, timeouts, 5xx, 429, `temporarily_unavailable`, replies
    /// we can't use, store I/O. The current token is served while valid.
    Transient { retry_after: Option<Duration> },
    /// Wrong configuration or credentials (`invalid_client`, a redirect, other 4xx): logged once,
    /// retried only slowly.
    Config,
    /// Nothing works until a person logs in (also what a refused refresh token comes to when no
    /// grant without a person is left: the engine handles the refusal itself first, see
    /// [`TokenError::rejects_refresh`]).
    LoginRequired,
}

impl TokenError {
    pub fn fault(&self) -> Fault {
        match self {
            TokenError::Http { source, .. } => match source {
                HttpError::Redirect(_) | HttpError::Tls(_) => Fault::Config,
                _ => Fault::Transient { retry_after: None },
            },
            TokenError::Status {
                status,
                retry_after,
                oauth,
                ..
            } => {
                let code = oauth.as_ref().map(|o| &o.code);
                let transient = status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
                    || matches!(
                        code,
                        Some(ErrorCode::TemporarilyUnavailable | ErrorCode::ServerError)
                    );
                if transient {
                    Fault::Transient {
                        retry_after: *retry_after,
                    }
                } else {
                    Fault::Config
                }
            }
            // A logout landed during the renewal: the token is not served, a login is needed.
            TokenError::Store(StoreError::Removed { .. }) => Fault::LoginRequired,
            TokenError::Reply { .. }
            | TokenError::Store(_)
            | TokenError::StoreTask(_)
            | TokenError::Cancelled => Fault::Transient { retry_after: None },
            TokenError::LoginRequired(_) => Fault::LoginRequired,
            TokenError::Config(_) => Fault::Config,
        }
    }

    /// Whether this answer to a refresh means "that refresh token is no good": `invalid_grant`
    /// (RFC 6749 §5.2), `invalid_token` (RFC 6750 §3.1, from servers that check the Bearer sent
    /// with a refresh), or a 401/403 without a client error (BACE answers 401 when the access
    /// token sent along has already expired). `invalid_client` stays a configuration error.
    pub fn rejects_refresh(&self) -> bool {
        let TokenError::Status { status, oauth, .. } = self else {
            return false;
        };
        match oauth.as_ref().map(|o| &o.code) {
            Some(ErrorCode::InvalidGrant | ErrorCode::InvalidToken) => true,
            Some(ErrorCode::InvalidClient | ErrorCode::UnauthorizedClient) => false,
            _ => matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        }
    }

    /// The RFC 6749 §5.2 error code, if the server sent one.
    pub fn oauth_code(&self) -> Option<&ErrorCode> {
        match self {
            TokenError::Status { oauth: Some(o), .. } => Some(&o.code),
            _ => None,
        }
    }
}

/// `err` and its causes, `: `-separated: what `last_error` and the logs show. A cause that its
/// error already shows at the end of its own message (the `redis` crate's errors do) is not
/// repeated.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let text = e.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, oauth: Option<&str>) -> TokenError {
        TokenError::Status {
            endpoint: "token endpoint",
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: Some(Duration::from_secs(7)),
            oauth: oauth.and_then(|c| {
                super::super::reply::parse_error(format!(r#"{{"error":"{c}"}}"#).as_bytes())
            }),
        }
    }

    #[test]
    fn a_cause_already_shown_is_not_repeated() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "can't connect: {}", self.0)
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("UnknownIssuer"));
        assert_eq!(chain(&e), "can't connect: UnknownIssuer");
        let wrapped = TokenError::Store(crate::token::store::StoreError::LeaseShort { left_ms: 1 });
        assert!(chain(&wrapped).contains("1 ms left"), "{}", chain(&wrapped));
    }

    #[test]
    fn faults_by_status_and_code() {
        let t = Fault::Transient {
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(status(503, None).fault(), t);
        assert_eq!(status(429, None).fault(), t);
        assert_eq!(status(400, Some("temporarily_unavailable")).fault(), t);
        assert_eq!(status(401, Some("invalid_client")).fault(), Fault::Config);
        assert_eq!(status(400, Some("invalid_scope")).fault(), Fault::Config);
        assert_eq!(status(404, None).fault(), Fault::Config);
        let redirect = TokenError::Http {
            endpoint: "token endpoint",
            source: HttpError::Redirect(StatusCode::FOUND),
        };
        assert_eq!(redirect.fault(), Fault::Config);
        let timeout = TokenError::Http {
            endpoint: "token endpoint",
            source: HttpError::Timeout(Duration::from_secs(30)),
        };
        assert_eq!(timeout.fault(), Fault::Transient { retry_after: None });
    }

    #[test]
    fn which_answers_reject_a_refresh_token() {
        assert!(status(400, Some("invalid_grant")).rejects_refresh());
        assert!(status(401, Some("invalid_token")).rejects_refresh());
        assert!(status(401, None).rejects_refresh());
        assert!(!status(401, Some("invalid_client")).rejects_refresh());
        assert!(!status(503, None).rejects_refresh());
        assert!(!status(400, Some("invalid_request")).rejects_refresh());
    }

    #[test]
    fn chain_shows_every_level() {
        let e = status(400, Some("invalid_grant"));
        assert_eq!(
            chain(&e),
            "the token endpoint answered 400 Bad Request: invalid_grant"
        );
    }
}
