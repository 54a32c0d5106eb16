//! Phases 6 and 8, the head edits, defined once for both transports: which of the client's
//! fields go upstream (hop-by-hop and framing fields, `Host`, the fields the credential sets and,
//! for `forwarded` providers, `X-Forwarded-Proto` do not: credproxy writes its own), then
//! `Host`, the credential, `Forwarded` and (with `via = true`) `Via`; on the way back, hop-by-hop fields dropped and
//! `Via` added. hyper applies them to a `HeaderMap`; the fast path to the head's bytes, from the
//! same field classification (`headers.rs`: [`classify`](super::headers::classify)).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::headers::{Field, add_forwarded, add_via, strip_hop_by_hop};
use crate::credential::Credential;

/// `Via` as the fast path writes it (RFC 9110 §7.6.3), the same as [`add_via`]'s.
pub const VIA_LINE: &[u8] = b"via: 1.1 credproxy\r\n";

/// Whether the client's field `name` (of kind `kind`) is left out of the upstream request:
/// everything credproxy writes itself or that is hop-by-hop, a field the credential sets
/// (`creds`), `X-Forwarded-Proto` for a `forwarded` provider, and a field named in the
/// request's `Connection` (`in_connection`, asked only for a field that would otherwise go).
#[inline]
pub fn drops_client_field(
    kind: Field,
    name: &str,
    creds: &[(HeaderName, HeaderValue)],
    forwarded: bool,
    in_connection: impl FnOnce() -> bool,
) -> bool {
    match kind {
        Field::Other | Field::Location | Field::ContentLocation | Field::Expect => {
            creds
                .iter()
                .any(|(n, _)| n.as_str().eq_ignore_ascii_case(name))
                || in_connection()
        }
        Field::XForwardedProto => forwarded,
        _ => true,
    }
}

/// Phase 6 on a `HeaderMap`, before the credential: hop-by-hop fields gone, `Host` the
/// upstream's, `Via` added when `via` (`[proxy] via = true`).
///
/// `Via` is off upstream by default, as nginx, HAProxy and Envoy leave it off when proxying:
/// nginx's default `gzip_proxied off` sends an uncompressed body to any request with `Via`.
pub fn request_head(headers: &mut HeaderMap, host: &HeaderValue, via: bool) {
    strip_hop_by_hop(headers);
    headers.insert(header::HOST, host.clone());
    if via {
        add_via(headers);
    }
}

/// The credential's fields *replace* the client's.
pub fn set_credential(headers: &mut HeaderMap, credential: &Credential) {
    for (name, value) in credential.headers() {
        headers.insert(name.clone(), value.clone());
    }
}

/// `Forwarded` and friends, for a provider that asks (`forwarded = true`) and a known client.
pub fn set_forwarded(headers: &mut HeaderMap, forwarded: bool, peer: Option<std::net::IpAddr>) {
    if forwarded && let Some(ip) = peer {
        add_forwarded(headers, ip);
    }
}

/// Phase 8 on a `HeaderMap`: hop-by-hop fields gone, `Via` added.
pub fn response_head(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    add_via(headers);
}
