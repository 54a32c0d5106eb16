//! HTTP field names credproxy treats specially, by name in any case.

/// The fields credproxy treats specially: one vocabulary for the proxy's hop-by-hop rules
/// (`proxy/headers.rs`), the fast path's reading of heads (`proxy/fast/head.rs`) and the config's
/// check of provider `headers`.
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
    ContentLocation,
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
        16 if is("content-location") => Field::ContentLocation,
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
