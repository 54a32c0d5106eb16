//! Host patterns: which request hosts a provider claims.
//!
//! Matching is case-insensitive and ignores a trailing dot (RFC 1034 absolute names). A pattern
//! with a port (`api.example.com:8443`) only matches that port; one without matches any port.
//! `*.example.com` matches one or more labels below `example.com`, not `example.com` itself.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct HostPattern {
    /// Lowercase, no trailing dot. For a wildcard, the suffix including the leading dot.
    name: String,
    wildcard: bool,
    port: Option<u16>,
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.wildcard {
            f.write_str("*")?;
        }
        f.write_str(&self.name)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

impl HostPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a host name can't be empty".into());
        }
        if s.contains("://") || s.contains('/') {
            return Err(format!(
                "`{s}` looks like a URL: hosts takes bare host names such as \"api.example.com\" (set `upstream` for the URL)"
            ));
        }
        let (host, port) = split_host_port(s);
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .map_err(|_| format!("`{p}` in `{s}` is not a port number"))?,
            ),
            None => None,
        };
        let host = normalize(host);
        let (name, wildcard) = match host.strip_prefix("*.") {
            Some(rest) => (format!(".{rest}"), true),
            None => (host.to_string(), false),
        };
        if name.contains('*') {
            return Err(format!(
                "`{s}`: a wildcard may only be a whole first label, as in \"*.example.com\""
            ));
        }
        // No empty label: "a..b", ".a" or a second trailing dot could never match a normalized
        // host, and would not survive a round trip through `Display` (found by
        // `fuzz/fuzz_targets/host_match.rs`).
        let labels = if wildcard { &name[1..] } else { &name[..] };
        if labels.split('.').any(str::is_empty)
            || !labels.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':' | '[' | ']')
            })
        {
            return Err(format!("`{s}` is not a valid host name"));
        }
        Ok(HostPattern {
            name,
            wildcard,
            port,
        })
    }

    /// Whether a request for `host` (already lowercased, no trailing dot) on `port` is claimed.
    pub fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if let Some(want) = self.port
            && port != Some(want)
        {
            return false;
        }
        if self.wildcard {
            host.len() > self.name.len() && ends_with_ignore_case(host, &self.name)
        } else {
            host.eq_ignore_ascii_case(&self.name)
        }
    }

    /// Whether both claim the same hosts: the same name (or the same wildcard) on a port both
    /// take (two ports, or a port and "any port", are different claims only when both are set).
    pub fn same_claim(&self, other: &HostPattern) -> bool {
        self.wildcard == other.wildcard
            && self.name == other.name
            && (self.port.is_none() || other.port.is_none() || self.port == other.port)
    }

    /// Whether `wide`, a wildcard, claims some of the hosts `self` claims, `self` being the more
    /// exact claim (an exact name, or a longer wildcard): `api.x.com` under `*.x.com`.
    pub fn covered_by(&self, wide: &HostPattern) -> bool {
        let ports = self.port.is_none() || wide.port.is_none() || self.port == wide.port;
        wide.wildcard
            && ports
            && self.name.len() > wide.name.len()
            && ends_with_ignore_case(&self.name, &wide.name)
    }

    /// How exact a claim is, for the router: an exact name beats a wildcard, a longer wildcard a
    /// shorter one, a claim with a port one without.
    pub fn specificity(&self) -> (bool, usize, bool) {
        (!self.wildcard, self.name.len(), self.port.is_some())
    }

    /// The name without the wildcard's `*.` (`example.com` for `*.example.com`): the DNS subtree
    /// an X.509 name constraint permits for this pattern (RFC 5280 §4.2.1.10).
    pub fn subtree(&self) -> &str {
        self.name.trim_start_matches('.')
    }

    /// A concrete host name (not a wildcard), with its port if any: a default upstream.
    pub fn concrete(&self) -> Option<(&str, Option<u16>)> {
        (!self.wildcard).then_some((self.name.as_str(), self.port))
    }
}

/// Compared as bytes: slicing the `str` could cut a multi-byte character and panic (found by
/// `fuzz/fuzz_targets/host_match.rs`; `by_host` takes any string).
fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    let (s, suffix) = (s.as_bytes(), suffix.as_bytes());
    s.len() >= suffix.len() && s[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
}

/// Split `host[:port]`, minding IPv6 literals (`[::1]:8080`).
pub fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if s.starts_with('[') {
        if let Some(end) = s.find(']') {
            let rest = &s[end + 1..];
            return (&s[..=end], rest.strip_prefix(':'));
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// Lowercase and drop one trailing dot, borrowing when nothing changes (the hot path).
pub fn normalize(host: &str) -> std::borrow::Cow<'_, str> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

/// The address a host names when it is this machine: `localhost` (as 127.0.0.1) or a loopback
/// IP literal, with or without IPv6 brackets. A DNS name other than `localhost` is `None`.
pub fn loopback_ip(host: &str) -> Option<std::net::IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Some(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>()
        .ok()
        .filter(std::net::IpAddr::is_loopback)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern::parse(s).unwrap()
    }

    #[test]
    fn exact_names_ignore_case_and_trailing_dot() {
        assert!(p("API.Baselime.io.").matches("api.baselime.io", None));
        assert!(p("api.baselime.io").matches("api.baselime.io", Some(443)));
        assert!(!p("api.baselime.io").matches("baselime.io", None));
    }

    #[test]
    fn ports_compare_when_named() {
        let pat = p("localhost:8443");
        assert!(pat.matches("localhost", Some(8443)));
        assert!(!pat.matches("localhost", Some(443)));
        assert!(!pat.matches("localhost", None));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let pat = p("*.example.com");
        assert!(pat.matches("a.example.com", None));
        assert!(pat.matches("a.b.example.com", None));
        assert!(!pat.matches("example.com", None));
        assert!(!pat.matches("badexample.com", None));
    }

    #[test]
    fn rejects_urls_and_odd_wildcards() {
        assert!(HostPattern::parse("https://x.com").is_err());
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("x.com:http").is_err());
    }

    #[test]
    fn non_ascii_hosts_do_not_panic_a_wildcard() {
        // ".ab" is 3 bytes, "é.b" 4: the suffix would start inside 'é', where a str slice panics.
        assert!(!p("*.ab").matches("é.b", None));
        assert!(p("*.ab").matches("é.ab", None));
        assert!(!p("*.example.com").matches("xé", None));
    }

    #[test]
    fn empty_labels_are_refused() {
        for bad in [
            "a..b",
            "127.0.0.1..",
            ".example.com",
            "*..example.com",
            "*.",
            "..",
            "*.a..b",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        // One trailing dot is the absolute form of the same name.
        assert_eq!(p("example.com.").to_string(), "example.com");
        assert_eq!(
            p("[::ffff:127.0.0.1]:80").to_string(),
            "[::ffff:127.0.0.1]:80"
        );
    }

    #[test]
    fn ipv6_literals() {
        assert_eq!(split_host_port("[::1]:8080"), ("[::1]", Some("8080")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert!(p("[::1]:8080").matches("[::1]", Some(8080)));
    }
}
