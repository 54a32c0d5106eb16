//! Non-fatal findings: what `credproxy check` (and `run`, at start) prints for a config that
//! checked clean: no providers, an open proxy, the security warnings, and rules that can never
//! match or that leave a provider open to every caller.

use std::sync::Arc;

use super::{
    AuthConfig, CallerConfig, Listen, ProviderConfig, ProxySettings, RouteConfig, RouteTarget,
    UnknownHosts, host,
};
use crate::proxy::policy::Rule;

/// Every warning for a config that checked clean, in the order `credproxy check` prints them.
/// `no_providers`: the file has no `[providers.*]` table at all; `callers`: its `[callers]`.
pub(super) fn warnings(
    no_providers: bool,
    proxy: &ProxySettings,
    providers: &[Arc<ProviderConfig>],
    routes: &[RouteConfig],
    callers: &[CallerConfig],
) -> Vec<String> {
    let mut out = Vec::new();
    if no_providers {
        out.push("no [providers.*] configured: every request will be refused".into());
    }
    if proxy.unknown_hosts == UnknownHosts::Pass && proxy.allow_remote {
        out.push(
            "unknown_hosts = \"pass\" with allow_remote = true makes credproxy an open proxy to anyone who can reach it"
                .into(),
        );
    }
    out.extend(security_warnings(
        proxy,
        providers,
        routes,
        !callers.is_empty(),
    ));
    out.extend(caller_warnings(callers));
    out.extend(rule_warnings(providers));
    out.extend(allows_everything_warnings(providers, !callers.is_empty()));
    out
}

/// Shortest caller secret not warned about: 16 characters (a guessable secret lets any local
/// process pass for the caller).
const CALLER_SECRET_MIN: usize = 16;

/// A caller secret shorter than [`CALLER_SECRET_MIN`] (its length only, never the secret).
fn caller_warnings(callers: &[CallerConfig]) -> Vec<String> {
    callers
        .iter()
        .filter(|c| c.secret.get().expose().chars().count() < CALLER_SECRET_MIN)
        .map(|c| {
            format!(
                "callers.{}.secret is shorter than {CALLER_SECRET_MIN} characters: a short secret can be guessed; \
                 use a long random one (e.g. openssl rand -hex 24)",
                c.name
            )
        })
        .collect()
}

/// The methods RFC 9110 §9 and RFC 5789 define: a rule naming another one is probably a typo
/// (an API with its own method can ignore the warning).
const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Rules that can never match: a path glob not starting with `/`, a method no client sends,
/// an allow rule that a deny rule covers (deny is checked first). Conservative: a rule named
/// here can't match; one not named may still be narrower than meant.
fn rule_warnings(providers: &[Arc<ProviderConfig>]) -> Vec<String> {
    let mut out = Vec::new();
    for p in providers {
        let Some(rules) = &p.rules else { continue };
        let name = &p.name;
        let lists = [("deny", Some(&rules.deny)), ("allow", rules.allow.as_ref())];
        for (which, list) in lists {
            for (i, r) in list.into_iter().flatten().enumerate() {
                let key = format!("providers.{name}.{which}[{i}]");
                for g in r.paths.iter().flatten().filter(|g| !g.is_absolute()) {
                    out.push(format!(
                        "{key}: the path {:?} does not start with `/`, so it never matches a request; write \"/{}\"",
                        g.text(),
                        g.text()
                    ));
                }
                for m in r.methods.iter().flatten() {
                    if !KNOWN_METHODS.contains(&m.as_str()) {
                        out.push(format!(
                            "{key}: {m} is not a standard HTTP method ({}), so the rule likely never matches; check the spelling",
                            KNOWN_METHODS.join(", ")
                        ));
                    }
                }
            }
        }
        for (i, a) in rules.allow.iter().flatten().enumerate() {
            if let Some(d) = rules.deny.iter().position(|d| covers(d, a)) {
                out.push(format!(
                    "providers.{name}.allow[{i}] never matches: every request it allows is refused first by providers.{name}.deny[{d}]"
                ));
            }
        }
    }
    out
}

/// Every request `narrow` matches is also matched by `wide` (as far as can be told).
fn covers(wide: &Rule, narrow: &Rule) -> bool {
    let methods = match (&wide.methods, &narrow.methods) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(n)) => n.iter().all(|m| w.contains(m)),
    };
    let paths = match (&wide.paths, &narrow.paths) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(w), Some(n)) => n.iter().all(|g| w.iter().any(|wg| g.covered_by(wg))),
    };
    methods && paths
}

/// With `[callers]` set, a provider without an `allow` list (or with one that allows
/// everything) hands its whole credential to every caller that may use it.
/// `callers`: whether the config has `[callers]`.
pub(super) fn allows_everything_warnings(
    providers: &[Arc<ProviderConfig>],
    callers: bool,
) -> Vec<String> {
    if !callers {
        return Vec::new();
    }
    providers
        .iter()
        .filter(|p| {
            p.rules
                .as_ref()
                .and_then(|r| r.allow.as_ref())
                .is_none_or(|allow| allow.iter().any(Rule::is_everything))
        })
        .map(|p| {
            let name = &p.name;
            format!(
                "providers.{name} allows every request while [callers] are set: each caller that may use {name} can do \
                 anything its credential can; add allow = [{{ methods = [\"GET\"], paths = [\"/...\"] }}] for what they need"
            )
        })
        .collect()
}

/// What `credproxy check` (and `run`, at start) warns about: settings that let more callers
/// spend the credentials than the user may think (docs/SECURITY.md explains each).
/// `callers`: whether `[callers]` are set (they guard the TCP listeners as `proxy_auth` does).
fn security_warnings(
    proxy: &ProxySettings,
    providers: &[Arc<ProviderConfig>],
    routes: &[RouteConfig],
    callers: bool,
) -> Vec<String> {
    let remote = |l: &Listen| matches!(l, Listen::Tcp(a) if !a.ip().is_loopback());
    let mut listeners: Vec<(String, &Listen)> = vec![("proxy.listen".into(), &proxy.listen)];
    for (i, r) in routes.iter().enumerate() {
        if let RouteTarget::Listen(l) = &r.target {
            listeners.push((format!("routes[{i}].listen"), l));
        }
    }
    let mut out = Vec::new();
    let guarded = proxy.proxy_auth.is_some() || callers;
    if !guarded {
        for (key, l) in listeners.iter().filter(|(_, l)| remote(l)) {
            out.push(format!(
                "{key} = {l} is reachable from other machines (allow_remote = true) and neither proxy.proxy_auth nor [callers] is set: \
                 anyone who can connect to it can spend the credentials credproxy holds. Set proxy.proxy_auth = \"${{CREDPROXY_SECRET}}\" \
                 (clients then use http://any-user:SECRET@host:port as their proxy URL) or give each client a [callers.NAME] secret, \
                 or listen on 127.0.0.1 or a unix socket"
            ));
        }
    } else if !listeners.iter().any(|(_, l)| matches!(l, Listen::Tcp(_))) {
        let what = match (proxy.proxy_auth.is_some(), callers) {
            (true, true) => "proxy.proxy_auth and [callers] are",
            (true, false) => "proxy.proxy_auth is",
            _ => "[callers] are",
        };
        out.push(format!(
            "{what} set but every listener is a unix socket: proxy_auth and [callers] apply to TCP listeners only \
             (a caller's Proxy-Authorization is not asked there, and every client is anyone); \
             a unix socket is guarded by its file mode (proxy.socket_mode)"
        ));
    }
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| !r.require_auth) {
        let provider = &r.provider;
        match &r.target {
            RouteTarget::PathPrefix(_) => out.push(format!(
                "routes[{i}] (provider {provider}) has require_auth = false, which does nothing on a path_prefix route: \
                 it shares the main listener, where proxy_auth applies. Give the route its own listen to opt out"
            )),
            RouteTarget::Listen(l) if guarded => out.push(if remote(l) {
                format!(
                    "routes[{i}] (provider {provider}) has require_auth = false on {l}, reachable from other machines: \
                     anyone who can connect to it can spend {provider}'s credentials without proxy_auth or a caller's secret"
                )
            } else {
                format!(
                    "routes[{i}] (provider {provider}) has require_auth = false: any local process can spend {provider}'s \
                     credentials through {l} without proxy_auth or a caller's secret (browsers are still refused)"
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

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn security_warnings_name_the_setting_and_the_risk() {
        let warnings = |text: &str| load_str(text, "c.toml", &no_env).unwrap().warnings;
        let has = |text: &str, needle: &str| {
            let w = warnings(text);
            assert!(
                w.iter().any(|x| x.contains(needle)),
                "{needle:?} not in {w:?}"
            );
        };
        let gh =
            "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n";
        has(
            &format!("[proxy]\nlisten = \"0.0.0.0:1\"\nallow_remote = true\n{gh}"),
            "neither proxy.proxy_auth nor [callers] is set",
        );
        // [callers] alone guard the listeners as proxy_auth does.
        let callers = "[callers.ci]\nsecret = \"a-long-S3CR3T-0123456\"\nproviders = [\"gh\"]\n";
        has(
            &format!(
                "{gh}{callers}[[routes]]\nlisten = \"127.0.0.1:7001\"\nprovider = \"gh\"\nrequire_auth = false\n"
            ),
            "without proxy_auth or a caller's secret",
        );
        has(
            &format!("[proxy]\nlisten = \"unix:/run/c.sock\"\n{gh}{callers}"),
            "[callers] are set but every listener is a unix socket",
        );
        let w = warnings(&format!(
            "[proxy]\nlisten = \"0.0.0.0:1\"\nallow_remote = true\n{gh}{callers}"
        ));
        assert!(!w.iter().any(|x| x.contains("nor [callers]")), "{w:?}");
        let auth = "[proxy]\nproxy_auth = \"s\"\n";
        has(
            &format!(
                "{auth}{gh}[[routes]]\nlisten = \"127.0.0.1:7001\"\nprovider = \"gh\"\nrequire_auth = false\n"
            ),
            "any local process can spend gh's credentials",
        );
        has(
            &format!(
                "{auth}{gh}[[routes]]\npath_prefix = \"/gh\"\nprovider = \"gh\"\nrequire_auth = false\n"
            ),
            "does nothing on a path_prefix route",
        );
        has(
            &format!("[proxy]\nlisten = \"unix:/run/c.sock\"\nproxy_auth = \"s\"\n{gh}"),
            "apply to TCP listeners only",
        );
        has(
            &format!("[proxy]\nlisten = \"unix:/run/c.sock\"\nsocket_mode = \"0666\"\n{gh}"),
            "every local user",
        );
        has(
            &format!("{gh}upstream = \"http://api.github.com\"\n"),
            "providers.gh.upstream is plain http",
        );
        // Loopback over plain http (a sidecar), and the defaults: nothing to say.
        let quiet = format!("{gh}upstream = \"http://127.0.0.1:8000\"\n");
        assert_eq!(warnings(&quiet), Vec::<String>::new());
    }

    #[test]
    fn rules_that_can_never_match_are_warned_about() {
        let warnings = |rules: &str| {
            let gh = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n";
            load_str(&format!("{gh}{rules}\n"), "c.toml", &no_env)
                .unwrap()
                .warnings
        };
        let has = |rules: &str, needle: &str| {
            let w = warnings(rules);
            assert!(
                w.iter().any(|x| x.contains(needle)),
                "{needle:?} not in {w:?}"
            );
        };
        has(
            "allow = [{ paths = [\"repos/**\"] }]",
            "providers.gh.allow[0]: the path \"repos/**\" does not start with `/`",
        );
        has(
            "deny = [{ methods = [\"DELTE\"] }]",
            "providers.gh.deny[0]: DELTE is not a standard HTTP method",
        );
        has(
            "allow = [{ methods = [\"GET\"], paths = [\"/admin/users\"] }]\ndeny = [{ paths = [\"/admin/**\"] }]",
            "providers.gh.allow[0] never matches: every request it allows is refused first by providers.gh.deny[0]",
        );
        has(
            "allow = [{ methods = [\"DELETE\"], paths = [\"/x\"] }, { methods = [\"GET\"] }]\ndeny = [{ methods = [\"delete\", \"PUT\"] }]",
            "providers.gh.allow[0] never matches",
        );
        // Rules that can match: nothing to say.
        for quiet in [
            "allow = [{ methods = [\"GET\", \"DELETE\"], paths = [\"/admin/**\"] }]\ndeny = [{ methods = [\"DELETE\"] }]",
            "allow = [{ paths = [\"/admin/**\"] }]\ndeny = [{ paths = [\"/admin/*\"] }]",
            "allow = [{ methods = [\"GET\"], paths = [\"/repos/*/issues\"] }]\ndeny = [{ paths = [\"/repos/secret/**\"] }]",
        ] {
            assert_eq!(warnings(quiet), Vec::<String>::new(), "{quiet}");
        }
    }

    #[test]
    fn with_callers_a_provider_allowing_everything_is_warned_about() {
        let providers = |rules: &str| {
            let gh = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n";
            load_str(&format!("{gh}{rules}\n"), "c.toml", &no_env)
                .unwrap()
                .providers
        };
        let open = super::allows_everything_warnings(&providers(""), true);
        assert!(
            open.iter()
                .any(|w| w.contains("providers.gh allows every request")),
            "{open:?}"
        );
        let deny_only = providers("deny = [{ methods = [\"DELETE\"] }]");
        assert_eq!(super::allows_everything_warnings(&deny_only, true).len(), 1);
        let all = providers("allow = [{ paths = [\"/**\"] }]");
        assert_eq!(super::allows_everything_warnings(&all, true).len(), 1);
        let narrow = providers("allow = [{ methods = [\"GET\"], paths = [\"/repos/**\"] }]");
        assert!(super::allows_everything_warnings(&narrow, true).is_empty());
        assert!(super::allows_everything_warnings(&providers(""), false).is_empty());
    }
}
