//! Non-fatal findings: the security warnings `credproxy check` (and `run`, at start) prints
//! for a config that checked clean.

use std::sync::Arc;

use super::{AuthConfig, Listen, ProviderConfig, ProxySettings, RouteConfig, RouteTarget, host};

/// What `credproxy check` (and `run`, at start) warns about: settings that let more callers
/// spend the credentials than the user may think (docs/SECURITY.md explains each).
pub(super) fn security_warnings(
    proxy: &ProxySettings,
    providers: &[Arc<ProviderConfig>],
    routes: &[RouteConfig],
) -> Vec<String> {
    let remote = |l: &Listen| matches!(l, Listen::Tcp(a) if !a.ip().is_loopback());
    let mut listeners: Vec<(String, &Listen)> = vec![("proxy.listen".into(), &proxy.listen)];
    for (i, r) in routes.iter().enumerate() {
        if let RouteTarget::Listen(l) = &r.target {
            listeners.push((format!("routes[{i}].listen"), l));
        }
    }
    let mut out = Vec::new();
    if proxy.proxy_auth.is_none() {
        for (key, l) in listeners.iter().filter(|(_, l)| remote(l)) {
            out.push(format!(
                "{key} = {l} is reachable from other machines (allow_remote = true) and proxy.proxy_auth is not set: \
                 anyone who can connect to it can spend the credentials credproxy holds. Set proxy.proxy_auth = \"${{CREDPROXY_SECRET}}\" \
                 (clients then use http://any-user:SECRET@host:port as their proxy URL), or listen on 127.0.0.1 or a unix socket"
            ));
        }
    } else if !listeners.iter().any(|(_, l)| matches!(l, Listen::Tcp(_))) {
        out.push(
            "proxy.proxy_auth is set but every listener is a unix socket: proxy_auth applies to TCP listeners only; \
             a unix socket is guarded by its file mode (proxy.socket_mode)"
                .to_owned(),
        );
    }
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| !r.require_auth) {
        let provider = &r.provider;
        match &r.target {
            RouteTarget::PathPrefix(_) => out.push(format!(
                "routes[{i}] (provider {provider}) has require_auth = false, which does nothing on a path_prefix route: \
                 it shares the main listener, where proxy_auth applies. Give the route its own listen to opt out"
            )),
            RouteTarget::Listen(l) if proxy.proxy_auth.is_some() => out.push(if remote(l) {
                format!(
                    "routes[{i}] (provider {provider}) has require_auth = false on {l}, reachable from other machines: \
                     anyone who can connect to it can spend {provider}'s credentials without proxy_auth"
                )
            } else {
                format!(
                    "routes[{i}] (provider {provider}) has require_auth = false: any local process can spend {provider}'s \
                     credentials through {l} without proxy_auth (browsers are still refused)"
                )
            }),
            RouteTarget::Listen(_) => {}
        }
    }
    if let Some(admin) = &proxy.admin_listen
        && remote(admin)
    {
        out.push(format!(
            "proxy.admin_listen = {admin} is reachable from other machines: /status, /metrics and the status page need no \
             authentication (they show provider names, hosts and token states, never a secret)"
        ));
    }
    // Plain http off this machine: the credential (or the client's secrets) cross the network
    // in the clear. Loopback is fine (a sidecar, a test).
    let local = |host: &str| host::loopback_ip(host).is_some();
    for p in providers {
        let name = &p.name;
        if !p.upstream.is_tls() && !local(&p.upstream.host) {
            out.push(format!(
                "providers.{name}.upstream is plain http://{}: every request carries {name}'s credential unencrypted; use https",
                p.upstream.authority
            ));
        }
        if let AuthConfig::OAuth2(o) = &p.auth
            && o.token_url.scheme_str() == Some("http")
            && !o.token_url.host().is_some_and(local)
        {
            out.push(format!(
                "providers.{name}.token_url is plain http: client secrets, passwords and refresh tokens cross the network unencrypted; use https"
            ));
        }
    }
    let unix = listeners.iter().any(|(_, l)| matches!(l, Listen::Unix(_)));
    if unix && proxy.socket_mode & 0o002 != 0 {
        out.push(format!(
            "proxy.socket_mode = {:04o} lets every local user connect to the unix sockets and spend the credentials",
            proxy.socket_mode
        ));
    }
    out
}
