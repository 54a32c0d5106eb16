//! Header rules shared by both directions: hop-by-hop stripping and credential injection.

use http::header::{self, HeaderMap, HeaderName};

pub use crate::fields::{Field, classify, names_other_fields};

fn is_hop_by_hop(name: &HeaderName) -> bool {
    classify(name.as_str()).is_hop_by_hop()
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
