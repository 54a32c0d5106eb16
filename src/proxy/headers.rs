//! Header rules shared by both directions: hop-by-hop stripping and credential injection.

use http::header::{self, HeaderMap, HeaderName};

/// Hop-by-hop fields (RFC 9110 §7.6.1), plus the de-facto `Proxy-Connection` and `Keep-Alive`.
/// `Proxy-Authorization` is here too: it is for credproxy and never goes upstream.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Remove hop-by-hop fields, and any field named in `Connection`.
///
/// `Transfer-Encoding` is left to hyper, which frames each side itself.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        // Fast path: `Connection: keep-alive`/`close` name nothing else worth removing.
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Append `1.1 credproxy` to `Via` (RFC 9110 §7.6.3).
pub fn add_via(headers: &mut HeaderMap) {
    static VIA: http::HeaderValue = http::HeaderValue::from_static("1.1 credproxy");
    headers.append(header::VIA, VIA.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_fields() {
        let mut h = HeaderMap::new();
        h.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authorization", "Basic abc".parse().unwrap());
        h.insert("te", "trailers".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("x-keep", "yes".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-keep"], "yes");
    }
}
