//! Downstream checks shared by both transports: the same predicate decides hyper's refusal and
//! the fast path's "decline to hyper". Each takes the few values it needs (a field's bytes, the
//! listener, the provider), not a request, so either transport can ask. (The fast path declines
//! any `Transfer-Encoding`, `Origin` or `Sec-Fetch-Site` outright: hyper's turn, which asks
//! [`framing_ok`] and [`check_browser`].)

use super::auth::{Caller, Gate};
use super::error::{ErrorKind, ProxyError};
use super::route::ProviderRoute;
use super::state::ListenerInfo;
use crate::config::ProviderConfig;

/// On a loopback route listener, `Host` must be the listener's own address or a claimed host:
/// a web page that rebinds a DNS name to 127.0.0.1 sends its own name and is refused.
pub(super) fn check_own_host(
    info: &ListenerInfo,
    route: &ProviderRoute,
    host: Option<&str>,
) -> Result<(), ProxyError> {
    let Some(host) = host else { return Ok(()) };
    let (name, _) = crate::config::host::split_host_port(host);
    let name = crate::config::host::normalize(name);
    // A loopback *address* (127.0.0.0/8, [::1]) or `localhost`; not a name that merely starts
    // with `127.` (`127.attacker.example` resolves wherever its owner wants).
    let own = name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if own || route.config.hosts.iter().any(|h| h.matches(&name, None)) || !info.loopback {
        return Ok(());
    }
    Err(ProxyError::new(
        ErrorKind::UnknownHost,
        format!(
            "Host {host} is neither this listener's address nor a host of provider {}",
            route.config.name
        ),
    )
    .provider(&route.config.name))
}

/// Phase 2: who is calling (`auth.rs`). Where `require_auth` is off (a route with
/// `require_auth = false`, a unix socket, a tunnel admitted on its `CONNECT`), the listener's own
/// caller; else what `Proxy-Authorization` (`presented`) proves: a named caller, anyone (no proof
/// asked, or `proxy_auth`'s secret), or `None` for a 407.
#[inline]
pub fn admit(info: &ListenerInfo, gate: &Gate, presented: Option<&[u8]>) -> Option<Caller> {
    if !info.require_auth || gate.is_open() {
        return Some(info.caller);
    }
    gate.admit(presented)
}

/// After routing: a named caller may use only its `providers` (403 `caller_denied`).
#[inline]
pub fn check_caller(
    gate: &Gate,
    caller: Caller,
    index: usize,
    provider: &str,
) -> Result<(), ProxyError> {
    if gate.may_use(caller, index) {
        return Ok(());
    }
    Err(caller_denied(gate, caller, provider))
}

#[cold]
fn caller_denied(gate: &Gate, caller: Caller, provider: &str) -> ProxyError {
    let name = gate.name(caller).map_or("this caller", |n| n);
    ProxyError::new(
        ErrorKind::CallerDenied,
        format!(
            "caller {name} may not use provider {provider}: add \"{provider}\" to [callers.{name}] providers, or use a caller that may"
        ),
    )
    .provider(provider)
}

/// Phase 3 for a `CONNECT` on a route listener: the listener is its provider's (`Role::Route`),
/// so a tunnel from it may go only to a host that provider claims. Without this, a route with
/// `require_auth = false` (no proof asked) would open a tunnel to any provider, or to an
/// unclaimed host, and the tunnel's requests would carry that provider's credential. Refused
/// 403 `caller_denied`: whoever calls on this listener may use only its provider.
pub(super) fn check_route_connect(
    router: &super::route::Router,
    index: usize,
    authority: Option<&str>,
) -> Result<(), ProxyError> {
    let authority = authority.unwrap_or("");
    if router.by_host(authority) == Some(index) {
        return Ok(());
    }
    Err(route_connect_denied(router, index, authority))
}

#[cold]
fn route_connect_denied(
    router: &super::route::Router,
    index: usize,
    authority: &str,
) -> ProxyError {
    let name = router.providers[index].config.name.as_str();
    ProxyError::new(
        ErrorKind::CallerDenied,
        format!(
            "this listener is provider {name}'s route: a CONNECT through it may name only {name}'s hosts, not {authority}; \
             send it to the main listener (with Proxy-Authorization) instead"
        ),
    )
    .provider(name)
}

/// 407 (with `Proxy-Authenticate`, `error.rs`).
#[cold]
pub fn proxy_auth_required() -> ProxyError {
    ProxyError::new(
        ErrorKind::ProxyAuthRequired,
        "this proxy needs Proxy-Authorization: use http://NAME:SECRET@host:port as the proxy URL (a caller's name and secret, or any name and proxy_auth's secret), or send Proxy-Authorization: Bearer SECRET",
    )
}

/// Phase 2, transfer codings (each `Transfer-Encoding` field's value): hyper refuses a request
/// whose last coding is not `chunked`, but accepts `gzip, chunked` (credproxy would forward the
/// compressed bytes as if they were the content) and `chunked` twice (RFC 9112 §6.1: a sender
/// MUST NOT apply chunked more than once). Only a single, plain `chunked` is accepted.
/// (`Content-Length` together with `Transfer-Encoding` never gets here: `framing.rs` makes hyper
/// refuse it.)
#[inline]
pub fn framing_ok<'a>(mut codings: impl Iterator<Item = &'a [u8]>) -> bool {
    let Some(first) = codings.next() else {
        return true;
    };
    codings.next().is_none() && first.trim_ascii().eq_ignore_ascii_case(b"chunked")
}

/// 400 for a transfer coding [`framing_ok`] refuses.
#[cold]
pub fn unsupported_framing() -> ProxyError {
    ProxyError::new(
        ErrorKind::BadRequest,
        "unsupported Transfer-Encoding: credproxy accepts only a plain `chunked` body (or Content-Length)",
    )
}

/// Phase 3 for a passed-through request or a `CONNECT` tunnel to an unclaimed host: its
/// resolved address `ip` must be a public one, or inside `pass_private`. Refused (SSRF):
/// loopback, unspecified, private (10/8, 172.16/12, 192.168/16, fc00::/7), shared/CGNAT
/// (100.64/10), link-local (169.254/16 with the cloud metadata address 169.254.169.254,
/// fe80::/10), multicast, broadcast, and the other ranges the IANA special-purpose registries
/// mark not globally reachable; an IPv6 form that carries an IPv4 address (mapped `::ffff:0:0/96`,
/// compatible `::/96`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) is judged by that address.
/// Claimed providers' upstreams are configured, and not judged.
pub fn destination_allowed(ip: std::net::IpAddr, pass_private: &[crate::net::Cidr]) -> bool {
    !special_address(ip) || pass_private.iter().any(|c| c.contains(ip))
}

fn special_address(ip: std::net::IpAddr) -> bool {
    use std::net::{IpAddr, Ipv4Addr};
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            let [b0, b1, b2, _] = a.octets();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_private()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || b0 == 0 // "this network"
                || (b0 == 100 && (b1 & 0xc0) == 64) // 100.64/10, shared (CGNAT)
                || (b0 == 192 && b1 == 0 && b2 == 0) // 192.0.0/24, IETF protocol assignments
                || (b0 == 198 && (b1 & 0xfe) == 18) // 198.18/15, benchmarking
                || b0 >= 240 // 240/4, reserved
        }
        IpAddr::V6(a) => {
            let seg = a.segments();
            let embedded = |hi: u16, lo: u16| {
                special_address(IpAddr::V4(Ipv4Addr::new(
                    (hi >> 8) as u8,
                    hi as u8,
                    (lo >> 8) as u8,
                    lo as u8,
                )))
            };
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7, unique local
                || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10, link-local
                || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10, site-local (deprecated)
                || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
                || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // 100::/64, discard
                || (seg[..6] == [0; 6] && embedded(seg[6], seg[7])) // ::/96, IPv4-compatible
                || (seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(seg[6], seg[7])) // NAT64
                || (seg[0] == 0x2002 && embedded(seg[1], seg[2])) // 6to4
        }
    }
}

/// 403 for a destination [`destination_allowed`] refuses (`what`: the host as asked).
#[cold]
pub fn destination_not_allowed(what: &str, ip: std::net::IpAddr) -> ProxyError {
    ProxyError::new(
        ErrorKind::DestinationNotAllowed,
        format!(
            "{what} resolves to {ip}, a private, loopback or link-local address, which pass-through \
             does not reach; to allow it, add its range to [proxy] pass_private (e.g. \"{ip}/32\")"
        ),
    )
}

/// 400 for a request with more than one `Host` field (RFC 9112 §3.2: a server MUST answer
/// 400): which one routes and which one the upstream reads could differ. (The fast path
/// declines such a request; hyper's turn refuses it.)
#[cold]
/// A `Host` or absolute-form authority that is not `host[:port]` ([`valid_authority`]).
///
/// [`valid_authority`]: super::route::valid_authority
pub fn bad_host() -> ProxyError {
    ProxyError::new(
        ErrorKind::BadRequest,
        "the Host header or the URL's authority is not a valid host[:port] (a name, an IPv4 address or a bracketed IPv6 address, then an optional numeric port): fix the client or what builds the URL",
    )
}

/// Two `Proxy-Authorization` fields: which one proves the caller would be a guess (an
/// intermediary may have added one), so neither does.
#[cold]
pub fn two_proxy_authorizations() -> ProxyError {
    ProxyError::new(
        ErrorKind::BadRequest,
        "the request has more than one Proxy-Authorization field: send exactly one",
    )
}

pub fn two_hosts() -> ProxyError {
    ProxyError::new(
        ErrorKind::BadRequest,
        "the request has more than one Host field: send exactly one",
    )
}

/// Phase 4: a browser page must not spend credentials through a local port (CSRF, DNS
/// rebinding): any `Origin` (whatever its value, even one that is not text) or a cross-site
/// `Sec-Fetch-Site` is refused unless the provider lists the origin in `allow_origins`.
/// `provider` is `None` for a passed-through unclaimed host, where no origin is allowed.
pub fn check_browser(
    origin: Option<&[u8]>,
    sec_fetch_site: Option<&[u8]>,
    provider: Option<&ProviderConfig>,
) -> Result<(), ProxyError> {
    let cross_site = sec_fetch_site.is_some_and(|v| {
        v.eq_ignore_ascii_case(b"cross-site") || v.eq_ignore_ascii_case(b"same-site")
    });
    if origin.is_none() && !cross_site {
        return Ok(());
    }
    // As `HeaderValue::to_str`: visible ASCII and tabs only.
    let text = origin.filter(|o| o.iter().all(|&b| b == b'\t' || (32..127).contains(&b)));
    if let (Some(o), Some(p)) = (text.and_then(|o| std::str::from_utf8(o).ok()), provider) {
        let o = o.trim_end_matches('/').to_ascii_lowercase();
        if p.allow_origins.contains(&o) {
            return Ok(());
        }
    }
    let refused = "requests from web pages are refused (Origin or Sec-Fetch-Site present)";
    Err(match provider {
        Some(p) => ProxyError::new(
            ErrorKind::BrowserRequest,
            format!(
                "{refused}; to allow one, add its origin to providers.{}.allow_origins",
                p.name
            ),
        )
        .provider(&p.name),
        None => ProxyError::new(ErrorKind::BrowserRequest, refused),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_unless_listed() {
        for ip in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.254",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert!(!destination_allowed(ip, &[]), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            assert!(destination_allowed(ip, &[]), "{ip}");
        }
        let listed = [
            "127.0.0.0/8".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ];
        for ip in ["127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3"] {
            assert!(destination_allowed(ip.parse().unwrap(), &listed), "{ip}");
        }
        for ip in ["10.2.0.1", "169.254.169.254", "::1"] {
            assert!(!destination_allowed(ip.parse().unwrap(), &listed), "{ip}");
        }
    }
}
