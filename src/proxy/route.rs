//! Routing: which provider (if any) a request belongs to, and where it goes upstream.
//!
//! A request reaches a provider in one of three ways (DESIGN.md "How an application reaches
//! credproxy"): a route listener that belongs to one provider (a base URL); a `path_prefix` on the
//! main listener (the prefix is removed); or its host, taken from an absolute-form request target
//! (`HTTP_PROXY` clients) or the `Host` header of an origin-form request.

use std::sync::Arc;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;

use super::error::{ErrorKind, ProxyError};
use super::upstream::UpstreamKey;
use crate::config::host::{normalize, split_host_port};
use crate::config::{ProviderConfig, UnknownHosts, Upstream};
use crate::credential::CredentialReader;

/// A provider as the proxy sees it: its config and its credential.
#[derive(Clone)]
pub struct ProviderRoute {
    pub config: Arc<ProviderConfig>,
    /// The provider's name, shared (audit records carry it without a copy).
    pub name: Arc<str>,
    pub reader: CredentialReader,
    /// The upstream's connection key, built once (not per request).
    pub key: UpstreamKey,
}

impl ProviderRoute {
    pub fn new(config: Arc<ProviderConfig>, reader: CredentialReader) -> Self {
        let up = &config.upstream;
        let key = UpstreamKey {
            tls: up.is_tls(),
            host: up.host.as_str().into(),
            port: up.port,
            addr: None,
        };
        ProviderRoute {
            name: config.name.as_str().into(),
            config,
            reader,
            key,
        }
    }
}

/// What a listener is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The main listener: route by prefix, absolute URI or Host.
    Main,
    /// A base URL for one provider (index into the router's providers).
    Route(usize),
    /// Inside a `CONNECT` tunnel to a claimed host (`tunnel.rs`): every request is that
    /// provider's, and must name the tunnel's host.
    Tunnel(Arc<TunnelTarget>),
}

/// The authority a `CONNECT` tunnel was opened to, and the provider claiming it.
#[derive(Debug, PartialEq, Eq)]
pub struct TunnelTarget {
    pub index: usize,
    /// Normalized (lowercase, no trailing dot).
    pub host: String,
    pub port: u16,
}

impl TunnelTarget {
    /// A request inside the tunnel may name only the tunnel's host: its name must match, and
    /// a port, when it gives one, must be the tunnel's (RFC 9110 §7.4: a request for another
    /// origin on this connection is misdirected).
    pub fn admits(&self, authority: &str) -> bool {
        let (host, port) = split_host_port(authority);
        normalize(host) == self.host.as_str()
            && port.is_none_or(|p| p.parse::<u16>() == Ok(self.port))
    }
}

pub struct Router {
    pub providers: Vec<ProviderRoute>,
    /// `(prefix, provider index)`, longest prefix first.
    prefixes: Vec<(String, usize)>,
    pub unknown_hosts: UnknownHosts,
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'r, 'u> {
    /// A provider's upstream; `path_and_query` is what follows the upstream's base path.
    Provider {
        index: usize,
        path_and_query: &'u str,
        /// The prefix removed from the path (for a `path_prefix` route), for Location rewrites.
        prefix: Option<&'r str>,
    },
    /// An unclaimed host, forwarded untouched (`unknown_hosts = "pass"`).
    Pass { authority: String },
    /// An unclaimed host, refused.
    Unknown { host: String },
    /// Inside a tunnel to `tunnel` (`host:port`) for provider `index`, a request for another
    /// `host` (421).
    Misdirected {
        index: usize,
        tunnel: String,
        host: String,
    },
    /// A `Host` or absolute-form authority that is not `host[:port]` ([`valid_authority`]):
    /// refused (400) before it routes or is reflected into a `Location`.
    BadHost,
}

/// `a` is an RFC 3986 authority without userinfo: a reg-name (unreserved, pct-encoded and
/// sub-delims characters; no `@ ? # / \` or spaces) or a bracketed IPv6 literal, then an
/// optional `:port` of digits (1-65535, or empty). What a router matches by suffix and what a
/// `Location` rewrite writes back must not say one host to credproxy and another to a browser.
pub fn valid_authority(a: &str) -> bool {
    let (host, port) = if let Some(inner) = a.strip_prefix('[') {
        let Some((ip, rest)) = inner.split_once(']') else {
            return false;
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match rest {
            "" => return true,
            r => match r.strip_prefix(':') {
                Some(port) => ("", port),
                None => return false,
            },
        }
    } else {
        match a.split_once(':') {
            Some((host, port)) => (host, port),
            None => (a, ""),
        }
    };
    let port_ok = port.is_empty()
        || (port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p != 0));
    port_ok && reg_name(host)
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and `%` followed by two hex digits.
fn reg_name(host: &str) -> bool {
    let b = host.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                {
                    return false;
                }
                i += 3;
                continue;
            }
            c if c.is_ascii_alphanumeric() => {}
            b'-' | b'.' | b'_' | b'~' => {}
            b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' => {}
            _ => return false,
        }
        i += 1;
    }
    true
}

impl Router {
    pub fn new(
        providers: Vec<ProviderRoute>,
        prefixes: Vec<(String, usize)>,
        unknown_hosts: UnknownHosts,
    ) -> Self {
        let mut prefixes = prefixes;
        prefixes.sort_by_key(|(prefix, _)| std::cmp::Reverse(prefix.len()));
        Router {
            providers,
            prefixes,
            unknown_hosts,
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.providers.iter().position(|p| p.config.name == name)
    }

    /// The provider claiming `host` (`name[:port]`, any case, maybe a trailing dot). Where an
    /// exact name and another provider's wildcard both match, the most exact claim wins
    /// ([`HostPattern::specificity`]); `check` refuses two providers with the same claim.
    ///
    /// [`HostPattern::specificity`]: crate::config::HostPattern::specificity
    pub fn by_host(&self, host_port: &str) -> Option<usize> {
        let (host, port) = split_host_port(host_port);
        let port = port.and_then(|p| p.parse::<u16>().ok());
        let host = normalize(host);
        let mut best = None;
        for (i, p) in self.providers.iter().enumerate() {
            for h in p.config.hosts.iter().filter(|h| h.matches(&host, port)) {
                let rank = h.specificity();
                if best.as_ref().is_none_or(|(_, b)| rank > *b) {
                    best = Some((i, rank));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Route a request that arrived on a listener with `role`.
    pub fn route<'r, 'u>(
        &'r self,
        role: &Role,
        uri: &'u Uri,
        host_header: Option<&'u str>,
    ) -> Target<'r, 'u> {
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map(|a| a.as_str());
        self.route_parts(role, authority, path_and_query, host_header)
    }

    /// [`Router::route`] for a request target already split into its authority (absolute form)
    /// and its path and query.
    pub fn route_parts<'r, 'u>(
        &'r self,
        role: &Role,
        authority: Option<&str>,
        path_and_query: &'u str,
        host_header: Option<&'u str>,
    ) -> Target<'r, 'u> {
        if !authority
            .into_iter()
            .chain(host_header)
            .all(valid_authority)
        {
            return Target::BadHost;
        }
        match role {
            Role::Route(index) => {
                return Target::Provider {
                    index: *index,
                    path_and_query,
                    prefix: None,
                };
            }
            Role::Tunnel(tunnel) => {
                return tunnel_target(tunnel, authority.or(host_header), path_and_query);
            }
            Role::Main => {}
        }
        // Absolute form: the client treats us as its HTTP proxy.
        if let Some(authority) = authority {
            return self.by_authority(authority, path_and_query);
        }
        for (prefix, index) in &self.prefixes {
            if let Some(rest) = path_and_query.strip_prefix(prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
            {
                return Target::Provider {
                    index: *index,
                    path_and_query: rest,
                    prefix: Some(prefix),
                };
            }
        }
        match host_header {
            Some(h) => self.by_authority(h, path_and_query),
            None => Target::Unknown {
                host: String::new(),
            },
        }
    }

    fn by_authority<'r, 'u>(&'r self, authority: &str, path_and_query: &'u str) -> Target<'r, 'u> {
        match self.by_host(authority) {
            Some(index) => Target::Provider {
                index,
                path_and_query,
                prefix: None,
            },
            None if self.unknown_hosts == UnknownHosts::Pass => Target::Pass {
                authority: authority.to_owned(),
            },
            None => Target::Unknown {
                host: authority.to_owned(),
            },
        }
    }
}

/// A request inside a tunnel: the tunnel's provider when it names the tunnel's host (by its
/// absolute-form target, else its `Host`). A request that names no host names no other one, and
/// is the tunnel's.
fn tunnel_target<'r, 'u>(
    tunnel: &TunnelTarget,
    named: Option<&str>,
    path_and_query: &'u str,
) -> Target<'r, 'u> {
    match named {
        Some(h) if !tunnel.admits(h) => Target::Misdirected {
            index: tunnel.index,
            tunnel: format!("{}:{}", tunnel.host, tunnel.port),
            host: h.to_owned(),
        },
        _ => Target::Provider {
            index: tunnel.index,
            path_and_query,
            prefix: None,
        },
    }
}

/// The upstream path: its base path, then what the client asked for.
pub fn upstream_path(
    up: &Upstream,
    rest: &str,
    original: Option<&PathAndQuery>,
) -> Result<PathAndQuery, ProxyError> {
    if up.base_path.is_empty()
        && let Some(pq) = original
        && pq.as_str() == rest
    {
        // The common case: nothing to rewrite, no allocation.
        return Ok(pq.clone());
    }
    let joined = path_parts(&up.base_path, rest).concat();
    PathAndQuery::from_maybe_shared(Bytes::from(joined))
        .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "the request path is not valid"))
}

/// The upstream path in three pieces: the upstream's base path, a `/` when the client's part
/// needs one, and the client's part (what follows a route's base URL or prefix).
pub fn path_parts<'a>(base: &'a str, rest: &'a str) -> [&'a str; 3] {
    match rest {
        "" => [base, "/", ""],
        r if r.starts_with('?') => [base, "/", r],
        r => [base, "", r],
    }
}

/// The origin a client used to reach a provider: where a `Location` or `Content-Location`
/// pointing at the provider's upstream is made to point instead, so that following it comes back
/// through credproxy (and gets the credential) rather than going to the upstream without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientOrigin<'a> {
    /// Written before `authority`: `"http://"`, or `""` when `authority` is a whole origin.
    pub scheme: &'a str,
    pub authority: &'a str,
}

impl<'a> ClientOrigin<'a> {
    /// The origin for a request that came on a listener with `role`: a route listener's or a
    /// path prefix's own origin (`local_origin`, `http://127.0.0.1:7001`); on the main listener,
    /// the absolute-form target's scheme and authority (`HTTP_PROXY` clients), else the `Host`
    /// the client sent.
    pub fn of(
        role: &Role,
        prefix: Option<&str>,
        absolute: Option<(&'a str, &'a str)>,
        host_header: Option<&'a str>,
        local_origin: Option<&'a str>,
    ) -> Option<Self> {
        if *role != Role::Main || prefix.is_some() {
            return local_origin.map(|o| ClientOrigin {
                scheme: "",
                authority: o,
            });
        }
        match absolute {
            Some((scheme, authority)) => Some(ClientOrigin {
                scheme: if scheme.eq_ignore_ascii_case("https") {
                    "https://"
                } else {
                    "http://"
                },
                authority,
            }),
            None => host_header.map(|h| ClientOrigin {
                scheme: "http://",
                authority: h,
            }),
        }
    }
}

/// Phase 8's redirect rule, on a `HeaderMap`: `Location` and `Content-Location` pointing at the
/// upstream point at the client's origin instead ([`local_location`]).
pub fn rewrite_location(
    headers: &mut http::HeaderMap,
    up: &Upstream,
    origin: Option<ClientOrigin<'_>>,
    prefix: Option<&str>,
) {
    let Some(origin) = origin else {
        return;
    };
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        let Some(loc) = headers.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(new) = local_location(loc, up, origin, prefix)
            && let Ok(v) = HeaderValue::from_str(&new)
        {
            headers.insert(name, v);
        }
    }
}

/// `loc` pointing at the client's origin, when it points at the upstream's (its base path
/// replaced by the route's prefix, if any). Relative references and other origins: `None`,
/// left as they are.
pub fn local_location(
    loc: &str,
    up: &Upstream,
    origin: ClientOrigin<'_>,
    prefix: Option<&str>,
) -> Option<String> {
    let rest = strip_prefix_ignore_case(loc, up.scheme.as_str())?;
    let rest = rest.strip_prefix("://")?;
    let rest = strip_prefix_ignore_case(rest, up.authority.as_str())?;
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return None;
    }
    let rest = rest.strip_prefix(up.base_path.as_str()).unwrap_or(rest);
    if !(rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
        return None;
    }
    let ClientOrigin { scheme, authority } = origin;
    Some(format!("{scheme}{authority}{}{rest}", prefix.unwrap_or("")))
}

/// `s` without `prefix` (ASCII case ignored). `None` also when `prefix.len()` falls inside one of
/// `s`'s characters: a field value from the upstream may hold any UTF-8 (the fast path reads it
/// as such), and slicing there would panic.
fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnel() -> TunnelTarget {
        TunnelTarget {
            index: 3,
            host: "api.example.com".into(),
            port: 443,
        }
    }

    #[test]
    fn a_tunnel_admits_its_own_host_in_any_case_with_or_without_its_port() {
        let t = tunnel();
        for ok in [
            "api.example.com",
            "API.Example.com",
            "api.example.com.",
            "api.example.com:443",
        ] {
            assert!(t.admits(ok), "{ok}");
        }
        for no in [
            "api.example.com:8443",
            "example.com",
            "x.api.example.com",
            "api.example.com:x",
            "",
        ] {
            assert!(!t.admits(no), "{no}");
        }
    }

    #[test]
    fn inside_a_tunnel_another_host_is_misdirected_and_no_host_is_the_tunnels() {
        let t = tunnel();
        assert_eq!(
            tunnel_target(&t, Some("other.example.com"), "/p"),
            Target::Misdirected {
                index: 3,
                tunnel: "api.example.com:443".into(),
                host: "other.example.com".into()
            }
        );
        for named in [None, Some("api.example.com")] {
            assert_eq!(
                tunnel_target(&t, named, "/p"),
                Target::Provider {
                    index: 3,
                    path_and_query: "/p",
                    prefix: None
                }
            );
        }
    }

    #[test]
    fn an_authority_is_a_host_and_an_optional_numeric_port() {
        for ok in [
            "api.test",
            "API.Test:8080",
            "api.test.",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8080",
            "a.test:65535",
            "a.test:",
            "x%41.test",
            "",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "api.test:@evil.example",
            "user@api.test",
            "evil.example?.wild.test",
            "evil.example#.wild.test",
            "evil.example\\.wild.test",
            "evil.example/.wild.test",
            "api test",
            "api.test:http",
            "api.test:0",
            "api.test:65536",
            "api.test:8080:1",
            "[::1",
            "[not-ip]:80",
            "[::1]x",
            "x%4.test",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }
}
