//! Reading a token endpoint's answer without being fooled by it.
//!
//! The body is parsed as a `serde_json::Value` and picked apart by hand rather than deserialized
//! into a struct: serde's type errors quote the offending value, and that value may be a token.
//! Field names go through the provider's `reply_fields` (Baselime answers `accessToken`, BACE's
//! refresh `expires`). A first grant's reply ([`parse_grant`]) is a new token ([`TokenSet`]); a
//! refresh reply ([`parse_refresh`]) is either a new token ([`RefreshReply::Token`]) or BACE's
//! "same token, new expiry" ([`RefreshReply::Extended`]). Error bodies are RFC 6749 §5.2
//! ([`OAuthError`]).

use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::expiry;
use crate::config::FieldNames;
use crate::secret::Secret;

/// A successful answer to a refresh.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshReply {
    Token(TokenSet),
    /// `{"refreshed": true, "expires": …}`: the token we sent lives on until the new expiry.
    Extended {
        expiry: Expiry,
    },
}

/// What a token endpoint issued.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    pub access_token: Secret,
    /// `None`: the reply carried none (on a refresh, keep the old one).
    pub refresh_token: Option<Secret>,
    pub expiry: Expiry,
}

/// A token's expiry as far as the reply tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Unix seconds.
    At(i64),
    /// Nothing trustworthy in the reply: fall back to the JWT `exp`, introspection, the default.
    Unknown,
}

/// Why a 2xx answer can't be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("the reply is not JSON")]
    NotJson,
    #[error("the reply is not a JSON object")]
    NotObject,
    #[error("the reply has no `{0}`")]
    MissingAccessToken(String),
    #[error("the access token is empty or contains characters other than visible ASCII")]
    InvalidAccessToken,
    #[error("the token type is `{0}`, not bearer")]
    NotBearer(String),
    #[error("the reply says `refreshed` but this was not a refresh")]
    UnexpectedExtension,
}

/// Parse a 2xx reply to a first grant (client credentials, password, authorization code, a
/// login): a new token, never an extension (there is no token to extend).
pub fn parse_grant(
    body: &[u8],
    fields: &FieldNames,
    tz: &TimeZone,
    now_unix: i64,
) -> Result<TokenSet, ReplyError> {
    match parse_reply(body, fields, tz, now_unix)? {
        RefreshReply::Token(set) => Ok(set),
        RefreshReply::Extended { .. } => Err(ReplyError::UnexpectedExtension),
    }
}

/// Parse a 2xx reply to a refresh of the current token: a new token, or an extension
/// (`refreshed: true` without a new token).
pub fn parse_refresh(
    body: &[u8],
    fields: &FieldNames,
    tz: &TimeZone,
    now_unix: i64,
) -> Result<RefreshReply, ReplyError> {
    parse_reply(body, fields, tz, now_unix)
}

/// Both kinds of reply; [`parse_grant`] refuses the extension.
fn parse_reply(
    body: &[u8],
    fields: &FieldNames,
    tz: &TimeZone,
    now_unix: i64,
) -> Result<RefreshReply, ReplyError> {
    let obj = object(body)?;
    let field = |name: &str| obj.get(fields.get(name)).filter(|v| !v.is_null());

    // RFC 6749 §5.1 says `token_type` is required and case-insensitive (§7.1); many servers omit
    // it, so absent is accepted, but anything that is not bearer would be injected wrongly.
    if let Some(tt) = field("token_type") {
        let tt = tt.as_str().unwrap_or("");
        if !tt.eq_ignore_ascii_case("bearer") {
            return Err(ReplyError::NotBearer(printable(tt, 32)));
        }
    }
    let expiry = expiry_of(&obj, fields, tz, now_unix);
    let access = match field("access_token") {
        Some(v) => v.as_str().ok_or(ReplyError::InvalidAccessToken)?,
        None if truthy(field("refreshed")) => return Ok(RefreshReply::Extended { expiry }),
        None => {
            return Err(ReplyError::MissingAccessToken(
                fields.get("access_token").to_owned(),
            ));
        }
    };
    // The token becomes a header value: CR, LF, spaces or controls could split or smuggle one.
    if !visible_ascii(access) {
        return Err(ReplyError::InvalidAccessToken);
    }
    let refresh_token = field("refresh_token")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(Secret::from);
    Ok(RefreshReply::Token(TokenSet {
        access_token: Secret::from(access),
        refresh_token,
        expiry,
    }))
}

/// `expires_in` when believable, else the absolute expiry field (`expires_at`, renamed per
/// provider), else unknown.
fn expiry_of(obj: &Map<String, Value>, fields: &FieldNames, tz: &TimeZone, now: i64) -> Expiry {
    if let Some(secs) = obj
        .get(fields.get("expires_in"))
        .and_then(expiry::lifetime_secs)
    {
        return Expiry::At(now.saturating_add(secs));
    }
    match obj
        .get(fields.get("expires_at"))
        .and_then(|v| expiry::absolute_unix(v, tz, now))
    {
        Some(at) => Expiry::At(at),
        None => Expiry::Unknown,
    }
}

/// An RFC 6749 §5.2 error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 6749 §4.1.2.1, also sent by token endpoints under load.
    TemporarilyUnavailable,
    ServerError,
    /// RFC 6750 §3.1, seen from token endpoints that check a Bearer on refresh.
    InvalidToken,
    /// Anything else, reduced to a printable word.
    Other(String),
}

impl ErrorCode {
    fn parse(s: &str) -> Self {
        match s {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            "temporarily_unavailable" => Self::TemporarilyUnavailable,
            "server_error" => Self::ServerError,
            "invalid_token" => Self::InvalidToken,
            other => Self::Other(printable(other, 64)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::ServerError => "server_error",
            Self::InvalidToken => "invalid_token",
            Self::Other(s) => s,
        }
    }
}

/// An RFC 6749 §5.2 error body: `error` and optional `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", code.as_str(), description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
pub struct OAuthError {
    pub code: ErrorCode,
    /// Cut to printable ASCII and 200 characters: it goes into logs and `credproxy status`.
    pub description: Option<String>,
}

/// The §5.2 error in a non-2xx body, if there is one.
pub fn parse_error(body: &[u8]) -> Option<OAuthError> {
    let obj = object(body).ok()?;
    let code = obj.get("error")?.as_str()?;
    let description = obj
        .get("error_description")
        .and_then(Value::as_str)
        .map(|d| printable(d, 200))
        .filter(|d| !d.is_empty());
    Some(OAuthError {
        code: ErrorCode::parse(code),
        description,
    })
}

fn object(body: &[u8]) -> Result<Map<String, Value>, ReplyError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ReplyError::NotObject),
        Err(_) => Err(ReplyError::NotJson),
    }
}

/// `true`, `1`, `"true"`, `"1"`, `"yes"`.
pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n != 0.0),
        Some(Value::String(s)) => matches!(s.to_ascii_lowercase().as_str(), "true" | "1" | "yes"),
        _ => false,
    }
}

/// Non-empty and visible ASCII only (RFC 6750 §2.1's b64token is a subset of this).
pub fn visible_ascii(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Server-chosen text made safe for a log line: printable ASCII, cut to `max` characters.
pub fn printable(s: &str, max: usize) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;

    /// A first grant's reply, or (`refreshing`) a refresh's.
    fn parse(v: Value, refreshing: bool) -> Result<RefreshReply, ReplyError> {
        parse_as(
            v.to_string().as_bytes(),
            &FieldNames::default(),
            &TimeZone::UTC,
            refreshing,
        )
    }

    fn parse_as(
        body: &[u8],
        fields: &FieldNames,
        tz: &TimeZone,
        refreshing: bool,
    ) -> Result<RefreshReply, ReplyError> {
        if refreshing {
            parse_refresh(body, fields, tz, NOW)
        } else {
            parse_grant(body, fields, tz, NOW).map(RefreshReply::Token)
        }
    }

    fn token(r: Result<RefreshReply, ReplyError>) -> TokenSet {
        match r.unwrap() {
            RefreshReply::Token(t) => t,
            other => panic!("not a token: {other:?}"),
        }
    }

    #[test]
    fn a_plain_rfc6749_reply() {
        let t = token(parse(
            json!({"access_token": "at-1", "token_type": "Bearer", "expires_in": 3600, "refresh_token": "rt-1"}),
            false,
        ));
        assert_eq!(t.access_token.expose(), "at-1");
        assert_eq!(t.refresh_token.unwrap().expose(), "rt-1");
        assert_eq!(t.expiry, Expiry::At(NOW + 3600));
    }

    #[test]
    fn token_type_is_case_insensitive_and_must_be_bearer() {
        for ok in ["bearer", "BEARER", "Bearer"] {
            token(parse(json!({"access_token": "a", "token_type": ok}), false));
        }
        token(parse(json!({"access_token": "a"}), false));
        assert_eq!(
            parse(json!({"access_token": "a", "token_type": "mac"}), false),
            Err(ReplyError::NotBearer("mac".into()))
        );
        assert!(matches!(
            parse(json!({"access_token": "a", "token_type": "DPoP\r\n"}), false),
            Err(ReplyError::NotBearer(s)) if s == "DPoP??"
        ));
    }

    #[test]
    fn tokens_that_could_split_a_header_are_refused() {
        for bad in [
            "",
            " ",
            "a b",
            "a\r\nX-Injected: 1",
            "a\n",
            "tab\t",
            "ünï",
            "a\u{0}",
        ] {
            assert_eq!(
                parse(json!({"access_token": bad, "token_type": "bearer"}), false),
                Err(ReplyError::InvalidAccessToken),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse(json!({"access_token": 12345}), false),
            Err(ReplyError::InvalidAccessToken)
        );
    }

    #[test]
    fn odd_lifetimes_become_unknown_or_numbers() {
        let exp =
            |v: Value| token(parse(json!({"access_token": "a", "expires_in": v}), false)).expiry;
        assert_eq!(exp(json!("7200")), Expiry::At(NOW + 7200));
        assert_eq!(exp(json!(-2147483648i64)), Expiry::Unknown);
        assert_eq!(exp(json!(0)), Expiry::Unknown);
        assert_eq!(exp(json!(20 * 365 * 86_400)), Expiry::Unknown);
        assert_eq!(exp(json!(null)), Expiry::Unknown);
        assert_eq!(
            token(parse(json!({"access_token": "a"}), false)).expiry,
            Expiry::Unknown
        );
    }

    #[test]
    fn absolute_expiry_when_there_is_no_lifetime() {
        let t = token(parse(
            json!({"access_token": "a", "expires_at": NOW + 60}),
            false,
        ));
        assert_eq!(t.expiry, Expiry::At(NOW + 60));
        // A believable expires_in wins; a garbage one defers to the absolute field.
        let t = token(parse(
            json!({"access_token": "a", "expires_in": 10, "expires_at": NOW + 60}),
            false,
        ));
        assert_eq!(t.expiry, Expiry::At(NOW + 10));
        let t = token(parse(
            json!({"access_token": "a", "expires_in": -5, "expires_at": NOW + 60}),
            false,
        ));
        assert_eq!(t.expiry, Expiry::At(NOW + 60));
    }

    #[test]
    fn bace_refresh_extends_the_same_token() {
        let fields = FieldNames(vec![("expires_at".into(), "expires".into())]);
        let body = json!({"refreshed": true, "expires": "2023-11-28 22:13:20"}).to_string();
        let ams = TimeZone::get("Europe/Amsterdam").unwrap();
        let r = parse_as(body.as_bytes(), &fields, &TimeZone::UTC, true).unwrap();
        assert_eq!(
            r,
            RefreshReply::Extended {
                expiry: Expiry::At(NOW + 14 * 86_400)
            }
        );
        let r = parse_as(body.as_bytes(), &fields, &ams, true).unwrap();
        assert_eq!(
            r,
            RefreshReply::Extended {
                expiry: Expiry::At(NOW + 14 * 86_400 - 3600)
            }
        );
        // Not on a first grant: there is no token to extend.
        let r = parse_as(body.as_bytes(), &fields, &TimeZone::UTC, false);
        assert_eq!(r, Err(ReplyError::UnexpectedExtension));
        // refreshed: false is not an extension.
        let r = parse(json!({"refreshed": false}), true);
        assert_eq!(
            r,
            Err(ReplyError::MissingAccessToken("access_token".into()))
        );
    }

    #[test]
    fn renamed_reply_fields() {
        let fields = FieldNames(vec![
            ("access_token".into(), "accessToken".into()),
            ("refresh_token".into(), "refreshToken".into()),
            ("expires_in".into(), "expiresIn".into()),
            ("token_type".into(), "tokenType".into()),
        ]);
        let body =
            json!({"accessToken": "x.y.z", "expiresIn": 86400, "tokenType": "Bearer"}).to_string();
        let r = parse_as(body.as_bytes(), &fields, &TimeZone::UTC, true).unwrap();
        let RefreshReply::Token(t) = r else { panic!() };
        assert_eq!(t.access_token.expose(), "x.y.z");
        assert_eq!(
            t.refresh_token, None,
            "a refresh reply without one keeps the old one"
        );
        assert_eq!(t.expiry, Expiry::At(NOW + 86400));
        let wrong = json!({"access_token": "x"}).to_string();
        let r = parse_as(wrong.as_bytes(), &fields, &TimeZone::UTC, false);
        assert_eq!(r, Err(ReplyError::MissingAccessToken("accessToken".into())));
    }

    #[test]
    fn malformed_bodies() {
        let p = |b: &[u8]| parse_as(b, &FieldNames::default(), &TimeZone::UTC, false);
        assert_eq!(p(b"{\"access_token\": \"a\""), Err(ReplyError::NotJson));
        assert_eq!(p(b"<html>"), Err(ReplyError::NotJson));
        assert_eq!(p(b"[\"a\"]"), Err(ReplyError::NotObject));
        assert_eq!(p(b""), Err(ReplyError::NotJson));
    }

    #[test]
    fn rfc6749_error_bodies() {
        let e = parse_error(br#"{"error":"invalid_grant","error_description":"expired\r\ncode"}"#)
            .unwrap();
        assert_eq!(e.code, ErrorCode::InvalidGrant);
        assert_eq!(e.to_string(), "invalid_grant (expired??code)");
        let e = parse_error(br#"{"error":"temporarily_unavailable"}"#).unwrap();
        assert_eq!(e.code, ErrorCode::TemporarilyUnavailable);
        assert_eq!(e.to_string(), "temporarily_unavailable");
        assert_eq!(
            parse_error(br#"{"error":"weird\u0007"}"#).unwrap().code,
            ErrorCode::Other("weird?".into())
        );
        assert_eq!(parse_error(b"Service Unavailable"), None);
        assert_eq!(parse_error(br#"{"message":"nope"}"#), None);
    }

    #[test]
    fn truthiness() {
        assert!(truthy(Some(&json!(true))));
        assert!(truthy(Some(&json!("true"))));
        assert!(truthy(Some(&json!(1))));
        assert!(!truthy(Some(&json!(false))));
        assert!(!truthy(Some(&json!("no"))));
        assert!(!truthy(None));
    }
}
