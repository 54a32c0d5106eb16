//! HTTP/2 → HTTP/1.1 for one request, strictly (RFC 9113 §8.2.2, §8.3.1): what `h2.rs` hands
//! the request core is the request an HTTP/1.1 client would have sent, or a refusal. The h2
//! crate resets the worst cases first (connection-specific fields, `te` other than `trailers`,
//! a body that disagrees with `content-length`); these checks do not rely on it, and add what it
//! lets through (`host` against `:authority`, disagreeing `content-length` values, `CONNECT`).

use http::header::{self, HeaderValue};
use http::{Method, Request, Uri};

use crate::proxy::error::{ErrorKind, ProxyError};

/// Marks a request whose client sent `te: trailers`: an HTTP/2 upstream gets it too (gRPC
/// servers require it; RFC 9113 §8.2.2 lets it through), an HTTP/1.1 one does not.
#[derive(Debug, Clone, Copy)]
pub struct TeTrailers;

/// A refusal, with the method and path for its access line.
pub type Refusal = (ProxyError, Method, String);

/// An HTTP/2 request as the HTTP/1.1 request it stands for: `Host` from `:authority`, the
/// target in origin form. Refused (400): `CONNECT` (tunnels are HTTP/1.1's here), a
/// connection-specific field or `te` other than `trailers` (RFC 9113 §8.2.2; the h2 crate resets
/// these first), `content-length` values that disagree or are not a number, and a `host` that
/// names another authority than `:authority` (§8.3.1: they must not differ).
pub fn to_origin_form<B>(req: Request<B>) -> Result<Request<B>, Refusal> {
    let (mut parts, body) = req.into_parts();
    let refuse = |parts: &http::request::Parts, message: &str| -> Refusal {
        (
            ProxyError::new(ErrorKind::BadRequest, message),
            parts.method.clone(),
            parts.uri.path().to_owned(),
        )
    };
    if parts.method == Method::CONNECT {
        return Err(refuse(
            &parts,
            "CONNECT over HTTP/2 is not supported: open tunnels with HTTP/1.1 (as HTTPS_PROXY clients do)",
        ));
    }
    let h = &parts.headers;
    if [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
        header::HeaderName::from_static("proxy-connection"),
    ]
    .iter()
    .any(|n| h.contains_key(n))
    {
        return Err(refuse(
            &parts,
            "an HTTP/2 request must not carry connection-specific fields (RFC 9113 §8.2.2)",
        ));
    }
    let mut te_trailers = false;
    for te in h.get_all(header::TE) {
        if te.as_bytes() != b"trailers" {
            return Err(refuse(
                &parts,
                "an HTTP/2 request's te field may only be \"trailers\" (RFC 9113 §8.2.2)",
            ));
        }
        te_trailers = true;
    }
    let mut lengths = h.get_all(header::CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        let number = !first.is_empty() && first.as_bytes().iter().all(u8::is_ascii_digit);
        if !number || lengths.any(|v| v != first) {
            return Err(refuse(
                &parts,
                "the request's content-length is not one number",
            ));
        }
    }
    let mut hosts = h.get_all(header::HOST).iter();
    let host = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err(refuse(&parts, "the request has two host fields"));
    }
    match (parts.uri.authority(), host) {
        (Some(authority), Some(host))
            if !host
                .as_bytes()
                .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
        {
            return Err(refuse(
                &parts,
                "the request's :authority and host name different hosts (RFC 9113 §8.3.1)",
            ));
        }
        (Some(authority), None) => {
            let value = HeaderValue::from_str(authority.as_str())
                .map_err(|_| refuse(&parts, "the request's :authority is not valid"))?;
            parts.headers.insert(header::HOST, value);
        }
        _ => {}
    }
    join_cookies(&mut parts.headers);
    parts.uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    if te_trailers {
        parts.extensions.insert(TeTrailers);
    }
    Ok(Request::from_parts(parts, body))
}

/// HTTP/2 clients may split `cookie` into one field per cookie (RFC 9113 §8.2.3), which an
/// HTTP/1.1 origin would not read as one header: they become one field, joined with "; ".
fn join_cookies(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let Some(first) = values.next() else { return };
    let Some(second) = values.next() else { return };
    let mut joined = first.as_bytes().to_vec();
    for v in std::iter::once(second).chain(values) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    // Each part was a valid field value, and "; " is too.
    let joined = HeaderValue::from_bytes(&joined).expect("joined cookie values are valid");
    headers.insert(header::COOKIE, joined);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri).version(http::Version::HTTP_2);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn refused(uri: &str, headers: &[(&str, &str)]) -> String {
        match to_origin_form(req(uri, headers)) {
            Ok(r) => panic!("accepted: {r:?}"),
            Err((e, _, _)) => {
                assert_eq!(e.kind, ErrorKind::BadRequest);
                e.message
            }
        }
    }

    #[test]
    fn authority_becomes_host_and_the_target_origin_form() {
        let r = to_origin_form(req("https://api.example.com/v1/x?q=1", &[])).unwrap();
        assert_eq!(r.uri(), "/v1/x?q=1");
        assert_eq!(r.headers()["host"], "api.example.com");
        let r = to_origin_form(req(
            "http://API.example.com:81/",
            &[("host", "api.example.com:81")],
        ))
        .unwrap();
        assert_eq!(r.headers()["host"], "api.example.com:81");
    }

    #[test]
    fn connection_specific_fields_and_te_other_than_trailers_are_refused() {
        for (n, v) in [
            ("connection", "close"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
        ] {
            let m = refused("https://a.example/", &[(n, v)]);
            assert!(m.contains("8.2.2"), "{n}: {m}");
        }
        let r = to_origin_form(req("https://a.example/", &[("te", "trailers")])).unwrap();
        assert!(r.extensions().get::<TeTrailers>().is_some());
    }

    #[test]
    fn cookie_fields_are_joined_into_one() {
        let r = to_origin_form(req(
            "https://a.example/",
            &[
                ("cookie", "a=1"),
                ("x-other", "y"),
                ("cookie", "b=2"),
                ("cookie", "c=3"),
            ],
        ))
        .unwrap();
        let cookies: Vec<_> = r.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
        let r = to_origin_form(req("https://a.example/", &[("cookie", "only=1")])).unwrap();
        let cookies: Vec<_> = r.headers().get_all("cookie").iter().collect();
        assert_eq!(cookies, ["only=1"]);
    }

    #[test]
    fn host_and_authority_must_agree_and_lengths_be_one_number() {
        let m = refused("https://a.example/", &[("host", "b.example")]);
        assert!(m.contains("8.3.1"), "{m}");
        refused(
            "https://a.example/",
            &[("content-length", "5"), ("content-length", "6")],
        );
        refused("https://a.example/", &[("content-length", "+5")]);
        refused("https://a.example/", &[("host", "a"), ("host", "a")]);
        let mut connect = req("https://a.example/", &[]);
        *connect.method_mut() = Method::CONNECT;
        assert!(to_origin_form(connect).is_err());
    }
}
