//! The authorization-code front door shared by the fakes that have one (Baselime, Apicbase,
//! api-v1, generic OAuth 2): RFC 6749 §4.1.1–4.1.2 plus PKCE (RFC 7636).
//!
//! No browser and no login page: a valid request is answered at once with `302` to the
//! `redirect_uri` carrying `code` and `state`, as if the user had clicked "allow". Without a
//! `redirect_uri` the code is shown in a plain page instead, like Apicbase's "copy the code"
//! page (apicbase.md, "Generating Tokens"), which is what a `--paste` login reads.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::core::FakeCore;
use super::http::{Reject, Reply, bytes_reply, query_pairs, redirect_reply};
use super::tokens::{CodeBook, CodeGrant};

/// A parsed authorization request, kept so tests can assert what the client asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The query string as sent, before decoding.
    pub raw_query: String,
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub state: Option<String>,
    /// Decoded: `scope=A+B` and `scope=A%20B` both give `"A B"`.
    pub scope: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// How a fake answers a valid authorization request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    Allow,
    /// RFC 6749 §4.1.2.1 `access_denied`: the user said no.
    Deny,
}

/// Handles `GET <authorize>?...` for `client_id`.
pub fn authorize(
    core: &FakeCore,
    codes: &CodeBook,
    query: Option<&str>,
    client_id: &str,
    consent: Consent,
) -> Result<Reply, Reject> {
    let request = parse(query)?;
    core.record_authorize(request.clone());
    // RFC 6749 §4.1.2.1: a bad client_id or redirect is shown to the user, never redirected.
    if request.client_id != client_id {
        return Err(Reject::new(400, "invalid_client", "unknown client_id"));
    }
    if let Some(method) = &request.code_challenge_method
        && method != "S256"
    {
        return Err(Reject::invalid_request(format!(
            "code_challenge_method {method:?}: only S256 is accepted"
        )));
    }
    if let Some(challenge) = &request.code_challenge {
        if request.code_challenge_method.is_none() {
            // RFC 7636 §4.3 would default to "plain"; a client that means S256 must say so.
            return Err(Reject::invalid_request(
                "code_challenge without code_challenge_method",
            ));
        }
        if challenge.len() != 43 || !is_unreserved(challenge) {
            return Err(Reject::invalid_request(
                "code_challenge is not a base64url SHA-256",
            ));
        }
    }
    let Some(redirect_uri) = &request.redirect_uri else {
        return match consent {
            Consent::Deny => Ok(bytes_reply(403, "text/plain", "access denied")),
            Consent::Allow => {
                let code = codes.issue(grant_of(&request));
                Ok(bytes_reply(
                    200,
                    "text/plain",
                    format!("Your authorization code: {code}\n"),
                ))
            }
        };
    };
    let mut params = match consent {
        Consent::Deny => vec![("error", "access_denied".to_owned())],
        Consent::Allow => vec![("code", codes.issue(grant_of(&request)))],
    };
    if let Some(state) = &request.state {
        params.push(("state", state.clone()));
    }
    Ok(redirect_reply(&append_query(redirect_uri, &params)))
}

fn parse(query: Option<&str>) -> Result<AuthorizeRequest, Reject> {
    let pairs = query_pairs(query)?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    match get("response_type").as_deref() {
        Some("code") => {}
        other => {
            return Err(Reject::new(
                400,
                "unsupported_response_type",
                format!("response_type must be code, got {other:?}"),
            ));
        }
    }
    let redirect_uri = get("redirect_uri");
    if let Some(uri) = &redirect_uri
        && !(uri.starts_with("https://") || uri.starts_with("http://"))
    {
        return Err(Reject::invalid_request(
            "redirect_uri is not an absolute http(s) URL",
        ));
    }
    Ok(AuthorizeRequest {
        raw_query: query.unwrap_or_default().to_owned(),
        client_id: get("client_id").ok_or_else(|| Reject::invalid_request("no client_id"))?,
        redirect_uri,
        state: get("state"),
        scope: get("scope"),
        code_challenge: get("code_challenge"),
        code_challenge_method: get("code_challenge_method"),
    })
}

fn grant_of(request: &AuthorizeRequest) -> CodeGrant {
    CodeGrant {
        client_id: request.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scope: request.scope.clone(),
        code_challenge: request.code_challenge.clone(),
    }
}

fn append_query(uri: &str, params: &[(&str, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{}", serializer.finish())
}

/// RFC 6749 §4.1.3: the token request's `redirect_uri` must equal the authorization request's.
pub fn check_redirect(grant: &CodeGrant, redirect_uri: Option<&str>) -> Result<(), Reject> {
    match (&grant.redirect_uri, redirect_uri) {
        (Some(expected), Some(got)) if expected == got => Ok(()),
        (Some(_), _) => Err(Reject::invalid_grant(
            "redirect_uri does not match the code's",
        )),
        (None, _) => Ok(()),
    }
}

/// `BASE64URL(SHA256(verifier))`, RFC 7636 §4.2.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.6. `verifier_optional`: accept a missing verifier (Baselime's document has no
/// field for it). A verifier for a code issued without a challenge is refused: it means the
/// client's authorization request lost its challenge.
pub fn check_pkce(
    grant: &CodeGrant,
    verifier: Option<&str>,
    verifier_optional: bool,
) -> Result<(), Reject> {
    match (&grant.code_challenge, verifier) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(Reject::invalid_grant(
            "code_verifier for a code without challenge",
        )),
        (Some(_), None) if verifier_optional => Ok(()),
        (Some(_), None) => Err(Reject::invalid_request("code_verifier is missing")),
        (Some(challenge), Some(verifier)) => {
            // RFC 7636 §4.1: 43 to 128 unreserved characters.
            if !(43..=128).contains(&verifier.len()) || !is_unreserved(verifier) {
                return Err(Reject::invalid_request("code_verifier is malformed"));
            }
            if s256(verifier) == *challenge {
                Ok(())
            } else {
                Err(Reject::invalid_grant(
                    "code_verifier does not match the challenge",
                ))
            }
        }
    }
}

fn is_unreserved(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}
