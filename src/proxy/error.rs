//! Every response credproxy makes itself, built in one place.
//!
//! Errors carry a JSON body `{"error": CODE, "message": TEXT, "provider": NAME}` and a
//! `Proxy-Status` header (RFC 9209 §2) naming credproxy and the RFC 9209 §2.3 error type, so a
//! client can tell a proxy error from the upstream's. Each error also knows whose fault it is
//! (pingora's habit): the client's, credproxy's, or the upstream's — for logs and metrics.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde::Serialize;

/// Whose fault a failed request was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Client,
    Proxy,
    Upstream,
}

impl Blame {
    pub fn as_str(self) -> &'static str {
        match self {
            Blame::Client => "client",
            Blame::Proxy => "credproxy",
            Blame::Upstream => "upstream",
        }
    }
}

/// A response credproxy makes instead of forwarding.
#[derive(Debug, Clone)]
pub struct ProxyError {
    pub kind: ErrorKind,
    pub message: String,
    pub provider: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    UnknownHost,
    BrowserRequest,
    ConnectRefused,
    /// Inside a `CONNECT` tunnel, a request for another host (RFC 9110 §15.5.20).
    Misdirected,
    ProxyAuthRequired,
    /// A named caller asked for a provider not in its `providers`.
    CallerDenied,
    HeadersTooLarge,
    CredentialUnavailable,
    LoginRequired,
    UpstreamUnreachable,
    UpstreamTls,
    UpstreamTimeout,
    UpstreamProtocol,
    BadRequest,
    /// Pass-through or `CONNECT` to a private, loopback or other special address.
    DestinationNotAllowed,
    /// The request body sent nothing for `client_body_timeout`.
    ClientTimeout,
    /// hyper's 414: a request target too long to parse (code `bad_request`, status 414).
    UriTooLong,
    /// A provider's `deny` rule matched, or its `allow` rules did not (`policy.rs`).
    PolicyDenied,
    /// On a provider with rules, a path servers may read differently (dot-segments, encoded
    /// separators: `policy/path.rs`). A well-formed request: the connection stays open.
    AmbiguousPath,
}

impl ErrorKind {
    /// (status, CODE from DESIGN.md, RFC 9209 error type, blame)
    fn parts(self) -> (StatusCode, &'static str, &'static str, Blame) {
        use ErrorKind::*;
        match self {
            UnknownHost => (
                StatusCode::FORBIDDEN,
                "unknown_host",
                "destination_not_found",
                Blame::Client,
            ),
            BrowserRequest => (
                StatusCode::FORBIDDEN,
                "browser_request",
                "http_request_denied",
                Blame::Client,
            ),
            ConnectRefused => (
                StatusCode::FORBIDDEN,
                "connect_refused",
                "http_request_denied",
                Blame::Client,
            ),
            Misdirected => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                "http_request_denied",
                Blame::Client,
            ),
            ProxyAuthRequired => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy_auth_required",
                "http_request_denied",
                Blame::Client,
            ),
            CallerDenied => (
                StatusCode::FORBIDDEN,
                "caller_denied",
                "http_request_denied",
                Blame::Client,
            ),
            HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                "http_request_error",
                Blame::Client,
            ),
            CredentialUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "credential_unavailable",
                "proxy_internal_error",
                Blame::Proxy,
            ),
            LoginRequired => (
                StatusCode::SERVICE_UNAVAILABLE,
                "login_required",
                "proxy_configuration_error",
                Blame::Proxy,
            ),
            UpstreamUnreachable => (
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                "destination_unavailable",
                Blame::Upstream,
            ),
            UpstreamTls => (
                StatusCode::BAD_GATEWAY,
                "upstream_tls",
                "tls_protocol_error",
                Blame::Upstream,
            ),
            UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                "http_response_timeout",
                Blame::Upstream,
            ),
            // Not "unreachable": it answered, with something that is not a valid response (a
            // head over 64 KiB, bytes that are not HTTP/1.1).
            UpstreamProtocol => (
                StatusCode::BAD_GATEWAY,
                "upstream_bad_response",
                "http_protocol_error",
                Blame::Upstream,
            ),
            BadRequest => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "http_request_error",
                Blame::Client,
            ),
            DestinationNotAllowed => (
                StatusCode::FORBIDDEN,
                "destination_not_allowed",
                "destination_ip_prohibited",
                Blame::Client,
            ),
            ClientTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "client_timeout",
                "http_request_error",
                Blame::Client,
            ),
            UriTooLong => (
                StatusCode::URI_TOO_LONG,
                "bad_request",
                "http_request_error",
                Blame::Client,
            ),
            PolicyDenied => (
                StatusCode::FORBIDDEN,
                "policy_denied",
                "http_request_denied",
                Blame::Client,
            ),
            AmbiguousPath => (
                StatusCode::BAD_REQUEST,
                "ambiguous_path",
                "http_request_denied",
                Blame::Client,
            ),
        }
    }

    pub fn code(self) -> &'static str {
        self.parts().1
    }

    pub fn status(self) -> StatusCode {
        self.parts().0
    }

    pub fn blame(self) -> Blame {
        self.parts().3
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    provider: Option<&'a str>,
}

impl ProxyError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProxyError {
            kind,
            message: message.into(),
            provider: None,
            retry_after: None,
        }
    }

    pub fn provider(mut self, name: &str) -> Self {
        self.provider = Some(name.to_owned());
        self
    }

    /// The provider the request matched, when the error does not name one yet: every error
    /// after routing says whose request it was (upstream failures are built without it).
    pub fn matched(mut self, name: Option<&str>) -> Self {
        if self.provider.is_none() {
            self.provider = name.map(str::to_owned);
        }
        self
    }

    pub fn retry_after(mut self, d: Duration) -> Self {
        self.retry_after = Some(d);
        self
    }

    /// The response: JSON body, `Proxy-Status`, and the headers the status calls for.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, headers, body) = self.into_parts();
        let mut resp = Response::new(Full::new(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }

    /// The response's status, headers and body (for writers that are not hyper).
    pub fn into_parts(self) -> (StatusCode, http::HeaderMap, Bytes) {
        let (status, code, rfc9209, _) = self.kind.parts();
        let body = serde_json::to_vec(&Body {
            error: code,
            message: &self.message,
            provider: self.provider.as_deref(),
        })
        .unwrap_or_default();
        let mut details = String::with_capacity(self.message.len() + 2);
        for c in self.message.chars() {
            // An RFC 8941 sf-string: printable ASCII, with `"` and `\` escaped.
            match c {
                '"' | '\\' => {
                    details.push('\\');
                    details.push(c);
                }
                ' '..='~' => details.push(c),
                _ => details.push('?'),
            }
        }
        let proxy_status = format!("credproxy; error={rfc9209}; details=\"{details}\"");
        let mut headers = http::HeaderMap::new();
        let h = &mut headers;
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&proxy_status) {
            h.insert("proxy-status", v);
        }
        if let Some(d) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(d.as_secs().max(1)));
        }
        if matches!(
            self.kind,
            ErrorKind::BadRequest
                | ErrorKind::ClientTimeout
                | ErrorKind::HeadersTooLarge
                | ErrorKind::UriTooLong
        ) {
            // A malformed request: where the next one would start can't be trusted; close.
            // (hyper closes after a head too large to read, too.)
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if self.kind == ErrorKind::ProxyAuthRequired {
            h.insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"credproxy\", Bearer realm=\"credproxy\""),
            );
        }
        (status, headers, Bytes::from(body))
    }

    /// The response as HTTP/1.1 bytes, for writers that are not hyper's (the fast path, and
    /// `own_answers.rs` standing in for hyper's own empty errors); no body for a HEAD.
    /// `request_id`: the answer's `credproxy-request-id`.
    pub fn write_http1(
        self,
        out: &mut Vec<u8>,
        head_method: bool,
        request_id: &crate::request_id::RequestId,
    ) {
        let (status, mut headers, body) = self.into_parts();
        headers.insert(crate::request_id::HEADER, request_id.header_value());
        let put = |out: &mut Vec<u8>, parts: &[&[u8]]| {
            for p in parts {
                out.extend_from_slice(p);
            }
        };
        put(
            out,
            &[
                b"HTTP/1.1 ",
                status.as_str().as_bytes(),
                b" ",
                status.canonical_reason().unwrap_or("").as_bytes(),
                b"\r\n",
            ],
        );
        for (name, value) in &headers {
            put(
                out,
                &[name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"],
            );
        }
        put(
            out,
            &[
                b"content-length: ",
                body.len().to_string().as_bytes(),
                b"\r\n\r\n",
            ],
        );
        if !head_method {
            out.extend_from_slice(&body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_has_json_and_proxy_status() {
        let resp: Response<Full<Bytes>> =
            ProxyError::new(ErrorKind::CredentialUnavailable, "no token \"yet\"")
                .provider("bace")
                .retry_after(Duration::from_secs(5))
                .into_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["retry-after"], "5");
        let ps = resp.headers()["proxy-status"].to_str().unwrap();
        assert!(
            ps.starts_with("credproxy; error=proxy_internal_error"),
            "{ps}"
        );
        assert!(ps.contains(r#"details="no token \"yet\"""#), "{ps}");
    }
}
