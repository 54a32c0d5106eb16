//! Which authorization server a login talks to: the provider's `issuer` (RFC 8414), its
//! metadata, and the authorization response's `iss` (RFC 9207).
//!
//! With `issuer` configured, `login` first reads the server's metadata
//! (`/.well-known/oauth-authorization-server`, RFC 8414 §3, inserted before the issuer's path;
//! then OpenID Connect Discovery's `{issuer}/.well-known/openid-configuration`) and requires its
//! `issuer` to be the configured one, character for character (§3.3). The redirect's `iss`, when
//! present, must then equal it too, and metadata saying
//! `authorization_response_iss_parameter_supported: true` makes `iss` required (RFC 9207 §2.4):
//! that is what stops a mix-up attack, where another server's response (and code) is passed off
//! as this one's. Without `issuer` configured, an `iss` can't be checked against anything: it is
//! logged at debug and the login goes on.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::token::TokenHttp;
use crate::token::http::HttpError;

/// The issuer this login expects, from the config and the server's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub issuer: String,
    /// The metadata says the server always sends `iss` (RFC 9207 §3).
    pub iss_required: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("can't read the authorization server's metadata at {url}")]
    Fetch {
        url: String,
        #[source]
        source: HttpError,
    },
    #[error(
        "the authorization server has no metadata for issuer {issuer}: {tried} (RFC 8414 and \
         OpenID Connect Discovery)"
    )]
    Missing { issuer: String, tried: String },
    #[error("the metadata at {url} is not a JSON object with a string `issuer`")]
    Malformed { url: String },
    #[error(
        "the metadata at {url} names issuer {found:?}, not the configured {configured:?}: \
         this is another authorization server's metadata (RFC 8414 §3.3)"
    )]
    Mismatch {
        url: String,
        found: String,
        configured: String,
    },
}

/// Where the metadata of `issuer` is, in the order they are tried: RFC 8414 §3's (the
/// well-known path inserted between the host and the issuer's path, a trailing `/` removed),
/// then OpenID Connect Discovery §4's (appended).
pub fn metadata_urls(issuer: &str) -> [String; 2] {
    let trimmed = issuer.trim_end_matches('/');
    let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
    let (origin, path) = match trimmed[after_scheme..].find('/') {
        Some(i) => trimmed.split_at(after_scheme + i),
        None => (trimmed, ""),
    };
    [
        format!("{origin}/.well-known/oauth-authorization-server{path}"),
        format!("{trimmed}/.well-known/openid-configuration"),
    ]
}

/// Read `issuer`'s metadata and check it names `issuer`.
pub async fn discover(client: &TokenHttp, issuer: &str) -> Result<Expected, MetadataError> {
    let mut tried = Vec::new();
    for url in metadata_urls(issuer) {
        let req = Request::get(url.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| MetadataError::Malformed { url: url.clone() })?;
        let reply = client
            .send(req)
            .await
            .map_err(|source| MetadataError::Fetch {
                url: url.clone(),
                source,
            })?;
        if reply.status != StatusCode::OK {
            tried.push(format!("{url} answered {}", reply.status));
            continue;
        }
        let doc: serde_json::Value = serde_json::from_slice(&reply.body)
            .map_err(|_| MetadataError::Malformed { url: url.clone() })?;
        let Some(found) = doc.get("issuer").and_then(|v| v.as_str()) else {
            return Err(MetadataError::Malformed { url });
        };
        if found != issuer {
            return Err(MetadataError::Mismatch {
                url,
                found: found.to_owned(),
                configured: issuer.to_owned(),
            });
        }
        let iss_required = doc
            .get("authorization_response_iss_parameter_supported")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        return Ok(Expected {
            issuer: issuer.to_owned(),
            iss_required,
        });
    }
    Err(MetadataError::Missing {
        issuer: issuer.to_owned(),
        tried: tried.join("; "),
    })
}

/// Why the authorization response's `iss` does not let the code be exchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssRefusal {
    #[error(
        "the authorization response came from issuer {got:?}, not {expected:?} (RFC 9207): it \
         may be another server's response passed off as this one's; the code was not used"
    )]
    Wrong { got: String, expected: String },
    #[error(
        "the authorization response carries no `iss`, but {expected}'s metadata says it always \
         sends one (RFC 9207); the code was not used"
    )]
    Missing { expected: String },
}

/// Check the response's `iss` against what this login expects (`None`: no `issuer` configured).
pub fn check(iss: Option<&str>, expected: Option<&Expected>) -> Result<(), IssRefusal> {
    match (iss, expected) {
        (Some(got), None) => {
            tracing::debug!(
                iss = %super::callback::printable(got),
                "the authorization response names its issuer; set the provider's `issuer` to check it"
            );
            Ok(())
        }
        (None, None) => Ok(()),
        (Some(got), Some(e)) if got == e.issuer => Ok(()),
        (Some(got), Some(e)) => Err(IssRefusal::Wrong {
            got: super::callback::printable(got),
            expected: e.issuer.clone(),
        }),
        (None, Some(e)) if e.iss_required => Err(IssRefusal::Missing {
            expected: e.issuer.clone(),
        }),
        (None, Some(_)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls_insert_the_well_known_path_before_the_issuers_path() {
        assert_eq!(
            metadata_urls("https://auth.example.com"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server",
                "https://auth.example.com/.well-known/openid-configuration",
            ]
        );
        assert_eq!(
            metadata_urls("https://auth.example.com/tenant/1/"),
            [
                "https://auth.example.com/.well-known/oauth-authorization-server/tenant/1",
                "https://auth.example.com/tenant/1/.well-known/openid-configuration",
            ]
        );
    }

    #[test]
    fn iss_must_be_the_issuer_and_is_required_when_the_metadata_says_so() {
        let e = Expected {
            issuer: "https://a.example".into(),
            iss_required: false,
        };
        assert_eq!(check(Some("https://a.example"), Some(&e)), Ok(()));
        assert_eq!(check(None, Some(&e)), Ok(()));
        let wrong = check(Some("https://evil.example"), Some(&e)).unwrap_err();
        assert!(matches!(wrong, IssRefusal::Wrong { .. }), "{wrong}");
        assert!(
            wrong.to_string().contains("https://evil.example"),
            "{wrong}"
        );
        // Issuers are compared as strings: a trailing slash is another issuer.
        assert!(check(Some("https://a.example/"), Some(&e)).is_err());
        let required = Expected {
            iss_required: true,
            ..e
        };
        assert_eq!(
            check(None, Some(&required)),
            Err(IssRefusal::Missing {
                expected: "https://a.example".into()
            })
        );
        // Nothing configured: nothing to check against.
        assert_eq!(check(Some("https://anything.example"), None), Ok(()));
    }
}
