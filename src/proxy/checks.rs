//! Downstream checks shared by both transports: the same predicate decides hyper's refusal and
//! the fast path's "decline to hyper".

use super::error::{ErrorKind, ProxyError};
use super::route::ProviderRoute;
use super::state::ListenerInfo;

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
