//! Header rules shared by both directions: hop-by-hop stripping and credential injection.

use http::header::{self, HeaderMap, HeaderName};

fn is_hop_by_hop(name: &HeaderName) -> bool {
    classify(name.as_str()).is_hop_by_hop()
}

/// The fields credproxy treats specially, by name, in any case: one vocabulary for the hop-by-hop
/// rules here and for the fast path's reading of heads (`fast/head.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ContentLength,
    TransferEncoding,
    Connection,
    Host,
    ProxyAuthorization,
    Expect,
    Upgrade,
    Origin,
    SecFetchSite,
    XForwardedProto,
    Location,
    /// `keep-alive`, `proxy-connection`, `proxy-authenticate`, `te`, `trailer`.
    HopByHop,
    Other,
}

impl Field {
    /// Hop-by-hop (RFC 9110 §7.6.1), with the de-facto `Proxy-Connection` and `Keep-Alive`, and
    /// `Proxy-Authorization` (it is for credproxy and never goes upstream). `Transfer-Encoding`
    /// too: each side's framing is its own.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Field::Connection
                | Field::HopByHop
                | Field::ProxyAuthorization
                | Field::Upgrade
                | Field::TransferEncoding
        )
    }
}

pub fn classify(name: &str) -> Field {
    let is = |s: &str| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is("te") => Field::HopByHop,
        4 if is("host") => Field::Host,
        6 if is("expect") => Field::Expect,
        6 if is("origin") => Field::Origin,
        7 if is("upgrade") => Field::Upgrade,
        7 if is("trailer") => Field::HopByHop,
        8 if is("location") => Field::Location,
        10 if is("connection") => Field::Connection,
        10 if is("keep-alive") => Field::HopByHop,
        14 if is("content-length") => Field::ContentLength,
        14 if is("sec-fetch-site") => Field::SecFetchSite,
        16 if is("proxy-connection") => Field::HopByHop,
        17 if is("transfer-encoding") => Field::TransferEncoding,
        17 if is("x-forwarded-proto") => Field::XForwardedProto,
        18 if is("proxy-authenticate") => Field::HopByHop,
        19 if is("proxy-authorization") => Field::ProxyAuthorization,
        _ => Field::Other,
    }
}

/// A `Connection` value naming a field to drop (anything but `close` / `keep-alive`).
pub fn names_other_fields(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .any(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
        })
}

/// Remove hop-by-hop fields, and any field named in `Connection`.
///
/// This runs twice per request, so the common cases are cheap: one pass over the names finds
/// what to remove (usually nothing, or a bare `Connection: keep-alive`), and only those are
/// removed; nothing is allocated unless `Connection` names other fields.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = false;
    let mut named_in_connection = false;
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found = true;
            // `Connection: keep-alive` (every nginx response) names nothing else to remove.
            named_in_connection |= name == header::CONNECTION
                && headers
                    .get_all(name)
                    .iter()
                    .any(|v| names_other_fields(v.as_bytes()));
        }
    }
    if !found {
        return;
    }
    if named_in_connection {
        let extra: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in extra {
            headers.remove(name);
        }
    }
    // A few names at most: scan again for each rather than collect them into a Vec.
    while let Some(name) = headers.keys().find(|n| is_hop_by_hop(n)).cloned() {
        headers.remove(name);
    }
}

/// Append `1.1 credproxy` to `Via` (RFC 9110 §7.6.3).
pub fn add_via(headers: &mut HeaderMap) {
    static VIA: http::HeaderValue = http::HeaderValue::from_static("1.1 credproxy");
    headers.append(header::VIA, VIA.clone());
}

/// `Forwarded: for=...;proto=http` (RFC 7239) and the de-facto `X-Forwarded-For` /
/// `X-Forwarded-Proto`, appended to what earlier hops sent. Only for providers that ask
/// (`forwarded = true`): by default the upstream learns nothing about the local client.
pub fn add_forwarded(headers: &mut HeaderMap, client: std::net::IpAddr) {
    let node = match client {
        std::net::IpAddr::V4(ip) => ip.to_string(),
        // RFC 7239 §6: an IPv6 node is bracketed and, with its colons, quoted.
        std::net::IpAddr::V6(ip) => format!("\"[{ip}]\""),
    };
    if let Ok(v) = http::HeaderValue::from_str(&format!("for={node};proto=http")) {
        headers.append(header::FORWARDED, v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&client.to_string()) {
        headers.append("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", http::HeaderValue::from_static("http"));
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

    #[test]
    fn field_names() {
        for (name, field) in [
            ("Content-Length", Field::ContentLength),
            ("TRANSFER-ENCODING", Field::TransferEncoding),
            ("te", Field::HopByHop),
            ("Proxy-Authorization", Field::ProxyAuthorization),
            ("x-forwarded-proto", Field::XForwardedProto),
            ("Sec-Fetch-Site", Field::SecFetchSite),
            ("proxy-connection", Field::HopByHop),
            ("authorization", Field::Other),
        ] {
            assert_eq!(classify(name), field, "{name}");
        }
        assert!(Field::Upgrade.is_hop_by_hop() && !Field::Host.is_hop_by_hop());
    }

    #[test]
    fn forwarded_names_the_client() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap());
        add_forwarded(&mut h, "::1".parse().unwrap());
        let fwd: Vec<_> = h.get_all("forwarded").iter().collect();
        assert_eq!(
            fwd,
            ["for=127.0.0.1;proto=http", "for=\"[::1]\";proto=http"]
        );
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        assert_eq!(xff, ["10.0.0.1", "127.0.0.1", "::1"]);
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
