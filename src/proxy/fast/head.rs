//! Heads as the fast path reads them: which fields matter, what a request's fields say, the
//! upstream response's framing, and the downstream head written from it.

use super::*;

/// Where a `Location` or `Content-Location` pointing at the upstream is made to point instead:
/// the origin the client used (`route.rs`: [`ClientOrigin`]).
#[derive(Clone, Copy)]
pub(super) struct Rewrite<'a> {
    pub(super) upstream: &'a crate::config::Upstream,
    pub(super) origin: ClientOrigin<'a>,
    pub(super) prefix: Option<&'a str>,
}

/// A parsed response head: its framing and reusability, and the head for downstream (hop-by-hop
/// fields dropped, `Location` rewritten) written to `dhead`.
pub(super) fn response_head(
    parsed: &httparse::Response<'_, '_>,
    len: usize,
    head_method: bool,
    dhead: &mut Vec<u8>,
    rewrite: Option<Rewrite<'_>>,
    query: Option<&crate::credential::QueryParam>,
) -> Result<RespHead, HeadError> {
    let status = parsed.code.unwrap_or(0);
    if status == 101 {
        return Err(HeadError::Protocol("it switched protocols unasked"));
    }
    if status < 100 {
        return Err(HeadError::Protocol("its status code is below 100"));
    }
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut close = parsed.version != Some(1);
    let mut connection_names = false;
    let mut kinds = [Field::Other; MAX_RESPONSE_HEADERS];
    for (h, kind) in parsed.headers.iter().zip(&mut kinds) {
        *kind = classify(h.name);
        match kind {
            Field::ContentLength => {
                let n = parse_length(h.value)
                    .ok_or(HeadError::Protocol("its Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(HeadError::Protocol("it sent differing Content-Lengths"));
                }
                length = Some(n);
            }
            Field::TransferEncoding => {
                if parsed.version != Some(1) {
                    return Err(HeadError::Protocol("it sent Transfer-Encoding in HTTP/1.0"));
                }
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            Field::Connection => {
                connection_names |= names_other_fields(h.value);
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && parsed.version == Some(0)
                    {
                        close = false;
                    }
                }
            }
            _ => {}
        }
    }
    let framing = if head_method || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::Close,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::Close,
        }
    };

    dhead.clear();
    put(
        dhead,
        &[
            b"HTTP/1.1 ",
            &itoa3(status),
            b" ",
            parsed.reason.unwrap_or("").as_bytes(),
            b"\r\n",
        ],
    );
    for (h, kind) in parsed.headers.iter().zip(kinds) {
        let keep = match kind {
            Field::TransferEncoding => matches!(framing, Framing::Chunked | Framing::Empty),
            Field::ContentLength => matches!(framing, Framing::Length(_) | Framing::Empty),
            Field::Location | Field::ContentLocation => {
                let loc = std::str::from_utf8(h.value).ok();
                let local = rewrite
                    .zip(loc)
                    .and_then(|(r, loc)| local_location(loc, r.upstream, r.origin, r.prefix));
                let stripped = local
                    .as_deref()
                    .or(loc)
                    .and_then(|l| location_without_token(l, query));
                if let Some(new) = stripped
                    .or(local)
                    .filter(|new| http::HeaderValue::from_str(new).is_ok())
                {
                    put(dhead, &[h.name.as_bytes(), b": ", new.as_bytes(), b"\r\n"]);
                    continue;
                }
                // Not editable (not UTF-8, not a valid value once edited): it goes only if the
                // token is not in it.
                !query.is_some_and(|q| holds_token(h.value, q))
            }
            Field::Connection | Field::Upgrade | Field::ProxyAuthorization | Field::HopByHop => {
                false
            }
            Field::Other if is_our_request_id(h.name) => false,
            _ if connection_names && named_in_connection(parsed.headers, h.name) => false,
            // `Link` and `Refresh` may echo the request's URL: the token comes out of them.
            _ => match query.zip(Echo::of(h.name)) {
                None => true,
                Some((q, echo)) => match echo_without_token(echo, h.value, q) {
                    EchoEdit::Keep => true,
                    EchoEdit::Replace(new) => {
                        put(dhead, &[h.name.as_bytes(), b": ", new.as_bytes(), b"\r\n"]);
                        continue;
                    }
                    EchoEdit::Drop => false,
                },
            },
        };
        if keep {
            put(dhead, &[h.name.as_bytes(), b": ", h.value, b"\r\n"]);
        }
    }
    if framing == Framing::Close {
        // Re-framed for the client, so its connection lives on and a cut-short body shows.
        dhead.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    // Only a 401's challenge matters (the 401 rule, `exchange::rejection`).
    let invalid_token = status == 401
        && crate::proxy::challenge::invalid_token(
            parsed
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("www-authenticate"))
                .map(|h| h.value),
        );
    Ok(RespHead {
        len,
        status,
        framing,
        reusable: !close && framing != Framing::Close,
        invalid_token,
    })
}

/// Why an upstream's answer could not be read.
pub(super) enum HeadError {
    /// Writing the request failed: the upstream did not get all of it.
    Unsent(std::io::Error),
    /// The request went out and the connection ended before a byte of an answer came back.
    Unanswered(std::io::Error),
    /// The connection failed during the answer's head, after this many bytes of it.
    Io(std::io::Error, usize),
    Protocol(&'static str),
}

impl HeadError {
    pub(super) fn into_proxy_error(self, origin: &str) -> ProxyError {
        match self {
            HeadError::Io(e, n) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                ProxyError::new(
                    ErrorKind::UpstreamUnreachable,
                    format!("{origin} closed the connection after {n} bytes of its response head"),
                )
            }
            HeadError::Io(e, n) => ProxyError::new(
                ErrorKind::UpstreamUnreachable,
                format!("{origin} failed after {n} bytes of its response head: {e}"),
            ),
            HeadError::Unsent(e) | HeadError::Unanswered(e) => ProxyError::new(
                ErrorKind::UpstreamUnreachable,
                format!("{origin} failed: {e}"),
            ),
            HeadError::Protocol(why) => ProxyError::new(
                ErrorKind::UpstreamProtocol,
                format!("{origin} failed: {why}"),
            ),
        }
    }
}

/// What the fast path needs to know about a request's fields.
#[derive(Default)]
pub(super) struct Fields<'b> {
    pub(super) content_length: Option<u64>,
    pub(super) host: Option<&'b str>,
    pub(super) proxy_authorization: Option<&'b [u8]>,
    /// The client's `X-Request-Id` (it goes upstream as any other field).
    pub(super) request_id: Option<&'b [u8]>,
    pub(super) close: bool,
    /// `Connection` names fields other than `close` / `keep-alive` (they are dropped too).
    pub(super) connection_names: bool,
}

impl<'b> Fields<'b> {
    /// Note one field; `None` when the request is hyper's to serve.
    pub(super) fn note(&mut self, kind: Field, h: &httparse::Header<'b>) -> Option<()> {
        match kind {
            Field::ContentLength => {
                if self.content_length.is_some() {
                    return None;
                }
                self.content_length = Some(parse_length(h.value)?);
            }
            Field::TransferEncoding
            | Field::Expect
            | Field::Upgrade
            | Field::Origin
            | Field::SecFetchSite => return None,
            Field::Host => {
                if self.host.is_some() {
                    return None;
                }
                self.host = Some(std::str::from_utf8(h.value).ok()?);
            }
            Field::Connection => {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        self.connection_names = true;
                    }
                }
            }
            // A second one is hyper's: it refuses two Proxy-Authorization fields (400) and takes
            // the first X-Request-Id, so both transports decide alike.
            Field::ProxyAuthorization => {
                if self.proxy_authorization.is_some() {
                    return None;
                }
                self.proxy_authorization = Some(h.value);
            }
            Field::Other if is_request_id(h.name) => {
                if self.request_id.is_some() {
                    return None;
                }
                self.request_id = Some(h.value);
            }
            _ => {}
        }
        Some(())
    }
}

/// `X-Request-Id` (length first: most fields are ruled out by it).
#[inline]
fn is_request_id(name: &str) -> bool {
    name.len() == crate::request_id::CLIENT_HEADER.len()
        && name.eq_ignore_ascii_case(crate::request_id::CLIENT_HEADER)
}

/// An upstream's own `credproxy-request-id`: dropped, credproxy's own goes down instead.
#[inline]
fn is_our_request_id(name: &str) -> bool {
    name.len() == crate::request_id::HEADER.len()
        && name.eq_ignore_ascii_case(crate::request_id::HEADER)
}

/// `name` is listed in one of the `Connection` fields.
pub(super) fn named_in_connection(headers: &[httparse::Header<'_>], name: &str) -> bool {
    headers
        .iter()
        .filter(|h| classify(h.name) == Field::Connection)
        .flat_map(|h| h.value.split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
}

/// A `Content-Length` value: digits only, no sign, no list.
fn parse_length(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// A request target byte the fast path passes on: visible ASCII, and no fragment (hyper drops
/// it; a fragment never goes on the wire).
pub(super) fn is_target_byte(b: u8) -> bool {
    b.is_ascii_graphic() && b != b'#'
}

/// `(authority, path-and-query)` of an origin-form or `http://` absolute-form target.
pub(super) fn split_target(target: &str) -> Option<(Option<&str>, &str)> {
    if target.starts_with('/') {
        return Some((None, target));
    }
    let scheme = target.get(..7)?;
    if !scheme.eq_ignore_ascii_case("http://") {
        return None;
    }
    let rest = &target[7..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, pq) = rest.split_at(end);
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']');
    if authority.is_empty() || !authority.bytes().all(plain) {
        return None;
    }
    match pq {
        "" => Some((Some(authority), "/")),
        pq if pq.starts_with('/') => Some((Some(authority), pq)),
        _ => None,
    }
}

/// Where a request head ends: just past its first empty line (CRLF CRLF, or the bare LFs
/// httparse also accepts). A buffer starting with empty lines is `plan`'s to refuse.
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = buf[from..].iter().position(|&b| b == b'\n') {
        let nl = from + p;
        match buf.get(nl + 1..nl + 3) {
            Some([b'\n', _]) => return Some(nl + 2),
            Some(b"\r\n") => return Some(nl + 3),
            Some(_) => {}
            None if buf.get(nl + 1) == Some(&b'\n') => return Some(nl + 2),
            None => return None,
        }
        from = nl + 1;
    }
    None
}

/// A three-digit status code as ASCII.
pub(super) fn itoa3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_ends_at_the_first_empty_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nNEXT"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nNEXT"), Some(24));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n"), None);
        assert_eq!(head_end(b""), None);
    }

    #[test]
    fn targets() {
        assert_eq!(split_target("/a?b"), Some((None, "/a?b")));
        assert_eq!(
            split_target("http://api.example:8080/x"),
            Some((Some("api.example:8080"), "/x"))
        );
        assert_eq!(
            split_target("HTTP://api.example"),
            Some((Some("api.example"), "/"))
        );
        assert_eq!(split_target("http://user@api.example/"), None);
        assert_eq!(split_target("https://api.example/"), None);
        assert_eq!(split_target("*"), None);
        assert_eq!(split_target("http://h?x"), None);
    }

    #[test]
    fn lengths_and_codes() {
        assert_eq!(parse_length(b" 12 "), Some(12));
        assert_eq!(parse_length(b"+1"), None);
        assert_eq!(parse_length(b"1,1"), None);
        assert_eq!(itoa3(204), *b"204");
    }
}
