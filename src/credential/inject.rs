//! Where a token goes in a request (a provider's `inject`): `Authorization: Bearer` (the
//! default), a header of the provider's choosing with an optional format around the token, a
//! query parameter, or `Authorization: Basic` of a username and the token (RFC 7617).
//!
//! The field or parameter is built here once per token, and every request shares it: a header
//! value marked sensitive, or the query pair already percent-encoded. The rule that the client's
//! own field or parameter of that name is *replaced* lives in `proxy/inject.rs`.

use base64::Engine as _;
use http::{HeaderName, HeaderValue, header};

use super::InvalidToken;
use crate::secret::Secret;

/// How a provider's token is attached to each request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Inject {
    /// `Authorization: Bearer <token>` (RFC 6750 §2.1), whatever the token server called it.
    #[default]
    Bearer,
    /// `<name>: <prefix><token><suffix>` (`format = "token {token}"` is prefix `"token "`).
    Header {
        name: HeaderName,
        prefix: String,
        suffix: String,
    },
    /// `?<name>=<token>` added to the request's query (Google's `?key=`).
    Query { name: String },
    /// `Authorization: Basic base64(<username>:<token>)` (RFC 7617 §2).
    Basic { username: String },
}

/// The query parameter a credential adds: its name, to drop the client's own, and the pair as it
/// goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct QueryParam {
    pub name: Box<str>,
    /// `name=value`, percent-encoded (`application/x-www-form-urlencoded`).
    pub pair: Box<str>,
}

impl std::fmt::Debug for QueryParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QueryParam({}=[redacted])", self.name)
    }
}

/// What a token becomes: the header to set, or the query parameter to add.
pub(super) enum Attached {
    Header(HeaderName, HeaderValue),
    Query(QueryParam),
}

impl Inject {
    /// The name a user reads in messages and `/status`: `bearer`, `header`, `query`, `basic`.
    pub fn kind(&self) -> &'static str {
        match self {
            Inject::Bearer => "bearer",
            Inject::Header { .. } => "header",
            Inject::Query { .. } => "query",
            Inject::Basic { .. } => "basic",
        }
    }

    /// Where the token goes, for a person (`credproxy check`): `the x-api-key header`.
    pub fn describe(&self) -> String {
        match self {
            Inject::Bearer => "Authorization: Bearer".to_owned(),
            Inject::Header { name, .. } => format!("the {name} header"),
            Inject::Query { name } => format!("the query parameter {name}"),
            Inject::Basic { username } => format!("Authorization: Basic (user {username})"),
        }
    }

    /// `token`, attached this way. The token must be visible ASCII (no CR/LF, spaces or
    /// controls) whatever the form: a token is a word, and one that isn't is a mistake.
    pub(super) fn attach(&self, token: &Secret) -> Result<Attached, InvalidToken> {
        let t = token.expose();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken);
        }
        let header = |name: HeaderName, value: String| {
            let mut v = HeaderValue::from_str(&value).map_err(|_| InvalidToken)?;
            v.set_sensitive(true);
            Ok(Attached::Header(name, v))
        };
        match self {
            Inject::Bearer => header(header::AUTHORIZATION, format!("Bearer {t}")),
            Inject::Header {
                name,
                prefix,
                suffix,
            } => header(name.clone(), format!("{prefix}{t}{suffix}")),
            Inject::Basic { username } => {
                let pair =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{t}"));
                header(header::AUTHORIZATION, format!("Basic {pair}"))
            }
            Inject::Query { name } => {
                let pair = form_urlencoded::Serializer::new(String::new())
                    .append_pair(name, t)
                    .finish();
                Ok(Attached::Query(QueryParam {
                    name: name.as_str().into(),
                    pair: pair.into(),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_of(inject: Inject, token: &str) -> (HeaderName, HeaderValue) {
        match inject.attach(&Secret::from(token)).unwrap() {
            Attached::Header(n, v) => (n, v),
            Attached::Query(_) => panic!("a header form gave a query"),
        }
    }

    #[test]
    fn each_header_form_is_built_and_sensitive() {
        let (n, v) = header_of(Inject::Bearer, "t0k");
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer t0k")
        );
        assert!(v.is_sensitive());
        let (n, v) = header_of(
            Inject::Header {
                name: HeaderName::from_static("x-api-key"),
                prefix: String::new(),
                suffix: String::new(),
            },
            "sk-1",
        );
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "sk-1"));
        assert!(v.is_sensitive());
        let (_, v) = header_of(
            Inject::Header {
                name: header::AUTHORIZATION,
                prefix: "token ".into(),
                suffix: ";v=1".into(),
            },
            "gh",
        );
        assert_eq!(v, "token gh;v=1");
        // RFC 7617 §2's example pair, Aladdin:open sesame, minus the space a token can't hold.
        let (n, v) = header_of(
            Inject::Basic {
                username: "Aladdin".into(),
            },
            "opensesame",
        );
        assert_eq!(n, header::AUTHORIZATION);
        assert_eq!(v, "Basic QWxhZGRpbjpvcGVuc2VzYW1l");
        assert!(v.is_sensitive());
    }

    #[test]
    fn describe_says_where_the_token_goes() {
        let said: Vec<String> = [
            Inject::Bearer,
            Inject::Header {
                name: HeaderName::from_static("x-api-key"),
                prefix: String::new(),
                suffix: String::new(),
            },
            Inject::Query { name: "key".into() },
            Inject::Basic {
                username: "api".into(),
            },
        ]
        .iter()
        .map(Inject::describe)
        .collect();
        assert_eq!(
            said,
            [
                "Authorization: Bearer",
                "the x-api-key header",
                "the query parameter key",
                "Authorization: Basic (user api)"
            ]
        );
    }

    #[test]
    fn the_query_pair_is_encoded_and_its_debug_hides_the_value() {
        let Ok(Attached::Query(q)) =
            (Inject::Query { name: "key".into() }).attach(&Secret::from("a+b/c=d&e"))
        else {
            panic!("the query form gives a query parameter");
        };
        assert_eq!(&*q.pair, "key=a%2Bb%2Fc%3Dd%26e");
        assert_eq!(format!("{q:?}"), "QueryParam(key=[redacted])");
    }

    #[test]
    fn a_token_that_is_not_a_word_is_refused_in_every_form() {
        for inject in [
            Inject::Bearer,
            Inject::Query { name: "key".into() },
            Inject::Basic {
                username: "u".into(),
            },
        ] {
            for bad in ["", "a b", "a\r\nx: 1", "ünï"] {
                assert!(inject.attach(&Secret::from(bad)).is_err(), "{bad:?}");
            }
        }
    }
}
