//! Downstream checks shared by both transports: the same predicate decides hyper's refusal and
//! the fast path's "decline to hyper". Each takes the few values it needs (a field's bytes, the
//! listener, the provider), not a request, so either transport can ask. (The fast path declines
//! any `Transfer-Encoding`, `Origin` or `Sec-Fetch-Site` outright: hyper's turn, which asks
//! [`framing_ok`] and [`check_browser`].)

use super::auth::ProxyAuth;
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

/// Phase 2: `proxy_auth` unset, opted out of by this listener (`require_auth = false`), or
/// `presented` (`Proxy-Authorization: Basic base64(any-user:SECRET)` or `Bearer SECRET`) verifies,
/// compared in constant time (see `auth.rs`).
#[inline]
pub fn proxy_auth_ok(
    info: &ListenerInfo,
    auth: Option<&ProxyAuth>,
    presented: Option<&[u8]>,
) -> bool {
    !info.require_auth || auth.is_none_or(|a| a.verify(presented))
}

/// 407 (with `Proxy-Authenticate`, `error.rs`).
#[cold]
pub fn proxy_auth_required() -> ProxyError {
    ProxyError::new(
        ErrorKind::ProxyAuthRequired,
        "this proxy needs Proxy-Authorization: use http://user:SECRET@host:port as the proxy URL, or send Proxy-Authorization: Bearer SECRET",
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

/// 400 for a request with more than one `Host` field (RFC 9112 §3.2: a server MUST answer
/// 400): which one routes and which one the upstream reads could differ. (The fast path
/// declines such a request; hyper's turn refuses it.)
#[cold]
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
