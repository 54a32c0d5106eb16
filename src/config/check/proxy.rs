//! The `[proxy]` section and the `[[routes]]` list: listeners (loopback unless `allow_remote`),
//! state dir, unknown-host policy, CA file, proxy auth, socket mode, timeouts and limits; each
//! route's target (its own listener or a path prefix) and provider.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Ctx;
use crate::config::file::{FileConfig, FileMode, FileProxy, Str};
use crate::config::{
    H2Limits, Intercept, Listen, ProxySettings, RouteConfig, RouteTarget, UnknownHosts,
};

impl Ctx<'_> {
    fn listen(&mut self, s: &Str, key: &str, allow_remote: bool) -> Option<Listen> {
        let v = self.string(s, key)?;
        match resolve_listen(&v) {
            Ok(Listen::Tcp(addr)) if !addr.ip().is_loopback() && !allow_remote => {
                self.err(
                    s.span(),
                    key,
                    format!(
                        "{addr} is reachable from other machines; anyone who can reach it can spend your \
                         credentials. Listen on 127.0.0.1, or set allow_remote = true in [proxy] \
                         (and set proxy_auth too)"
                    ),
                );
                None
            }
            Ok(l) => Some(l),
            Err(message) => {
                self.err(s.span(), key, message);
                None
            }
        }
    }

    /// Check `[proxy]`; `None` when it has an error.
    pub(in crate::config) fn proxy(&mut self, p: &FileProxy) -> Option<ProxySettings> {
        let before = self.errors.len();
        let allow_remote = p.allow_remote.unwrap_or(false);
        let listen = match &p.listen {
            Some(s) => self.listen(s, "proxy.listen", allow_remote),
            None => Some(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 8080)))),
        };
        let admin_listen = match &p.admin_listen {
            Some(s) => self.listen(s, "proxy.admin_listen", allow_remote),
            None => Some(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 9090)))),
        };
        let state_dir = match self.opt_string(&p.state_dir, "proxy.state_dir") {
            Some(s) => PathBuf::from(s),
            None => default_state_dir(),
        };
        let unknown_hosts = match &p.unknown_hosts {
            None => UnknownHosts::Reject,
            Some(s) => match self.string(s, "proxy.unknown_hosts").as_deref() {
                Some("reject") => UnknownHosts::Reject,
                Some("pass") => UnknownHosts::Pass,
                Some(other) => {
                    self.err(
                        s.span(),
                        "proxy.unknown_hosts",
                        format!("must be \"reject\" or \"pass\", not `{other}`"),
                    );
                    UnknownHosts::Reject
                }
                None => UnknownHosts::Reject,
            },
        };
        let mut pass_private = Vec::new();
        for (i, s) in p.pass_private.iter().flatten().enumerate() {
            let key = format!("proxy.pass_private[{i}]");
            match s.get_ref().trim().parse::<crate::net::Cidr>() {
                Ok(c) => pass_private.push(c),
                Err(e) => self.err(s.span(), &key, e),
            }
        }
        let intercept = match &p.intercept {
            None => Intercept::Off,
            Some(s) => match self.string(s, "proxy.intercept").as_deref() {
                Some("off") => Intercept::Off,
                Some("claimed") => Intercept::Claimed,
                Some(other) => {
                    self.err(
                        s.span(),
                        "proxy.intercept",
                        format!(
                            "must be \"off\" or \"claimed\" (\"claimed\" terminates HTTPS to claimed hosts with credproxy's own CA), not `{other}`"
                        ),
                    );
                    Intercept::Off
                }
                None => Intercept::Off,
            },
        };
        let ca_name_constraints = p.ca_name_constraints.unwrap_or(false);
        let ca_file = self
            .opt_string(&p.ca_file, "proxy.ca_file")
            .map(PathBuf::from);
        if let (Some(path), Some(s)) = (&ca_file, &p.ca_file)
            && let Err(e) = std::fs::metadata(path)
        {
            self.err(
                s.span(),
                "proxy.ca_file",
                format!("can't read {}: {e}", path.display()),
            );
        }
        let proxy_auth = self.opt_live(&p.proxy_auth, "proxy.proxy_auth");
        let audit_log = match &p.audit_log {
            None => None,
            Some(s) => match self.string(s, "proxy.audit_log").as_deref() {
                Some("-") => Some(crate::config::AuditTarget::Stdout),
                Some("") => {
                    self.err(
                        s.span(),
                        "proxy.audit_log",
                        "is empty: give a file path such as \"/var/log/credproxy/audit.jsonl\", or \"-\" for standard output",
                    );
                    None
                }
                Some(path) => Some(crate::config::AuditTarget::File(PathBuf::from(path))),
                None => None,
            },
        };
        let socket_mode = match &p.socket_mode {
            None => 0o600,
            Some(m) => {
                let parsed = match m.get_ref() {
                    FileMode::Int(i) => u32::try_from(*i).ok(),
                    FileMode::Str(s) => u32::from_str_radix(s.trim_start_matches("0o"), 8).ok(),
                };
                match parsed.filter(|m| *m <= 0o777) {
                    Some(m) => m,
                    None => {
                        self.err(
                            m.span(),
                            "proxy.socket_mode",
                            "must be an octal file mode such as \"0660\"",
                        );
                        0o600
                    }
                }
            }
        };
        let connect_timeout = self.duration(
            &p.connect_timeout,
            "proxy.connect_timeout",
            Duration::from_secs(10),
        );
        let response_timeout = self.duration(
            &p.response_timeout,
            "proxy.response_timeout",
            Duration::from_secs(60),
        );
        let header_timeout = self.duration(
            &p.header_timeout,
            "proxy.header_timeout",
            Duration::from_secs(30),
        );
        let client_body_timeout = self.duration(
            &p.client_body_timeout,
            "proxy.client_body_timeout",
            Duration::from_secs(30),
        );
        let shutdown_grace = self.duration(
            &p.shutdown_grace,
            "proxy.shutdown_grace",
            Duration::from_secs(10),
        );
        let max_connections = self.count(&p.max_connections, "proxy.max_connections", 10_000);
        let max_connections_per_client = self.count(
            &p.max_connections_per_client,
            "proxy.max_connections_per_client",
            1_000,
        );
        let h2 = self.h2_limits(p);
        if self.errors.len() > before {
            return None;
        }
        Some(ProxySettings {
            listen: listen?,
            admin_listen,
            state_dir,
            unknown_hosts,
            pass_private,
            ca_file,
            intercept,
            ca_name_constraints,
            allow_remote,
            proxy_auth,
            socket_mode,
            connect_timeout,
            response_timeout,
            header_timeout,
            client_body_timeout,
            shutdown_grace,
            max_connections,
            max_connections_per_client,
            via: p.via.unwrap_or(false),
            h2,
            audit_log,
        })
    }

    /// `h2_*`: each within what RFC 9113 allows (a window is at most 2^31-1, §6.9.1) and large
    /// enough to be useful.
    fn h2_limits(&mut self, p: &FileProxy) -> H2Limits {
        const MAX_WINDOW: i64 = (1 << 31) - 1;
        let d = H2Limits::default();
        let mut limit =
            |v: &Option<toml::Spanned<i64>>, key: &str, min: i64, max: i64, default: u32| match v {
                None => default,
                Some(n) if (min..=max).contains(n.get_ref()) => *n.get_ref() as u32,
                Some(n) => {
                    self.err(n.span(), key, format!("must be between {min} and {max}"));
                    default
                }
            };
        H2Limits {
            max_concurrent_streams: limit(
                &p.h2_max_concurrent_streams,
                "proxy.h2_max_concurrent_streams",
                1,
                10_000,
                d.max_concurrent_streams,
            ),
            max_header_list_size: limit(
                &p.h2_max_header_list_size,
                "proxy.h2_max_header_list_size",
                4096,
                1 << 24,
                d.max_header_list_size,
            ),
            initial_stream_window: limit(
                &p.h2_initial_stream_window,
                "proxy.h2_initial_stream_window",
                65_535,
                MAX_WINDOW,
                d.initial_stream_window,
            ),
            initial_connection_window: limit(
                &p.h2_initial_connection_window,
                "proxy.h2_initial_connection_window",
                65_535,
                MAX_WINDOW,
                d.initial_connection_window,
            ),
            max_upstream_connections: limit(
                &p.h2_upstream_connections,
                "proxy.h2_upstream_connections",
                1,
                10_000,
                d.max_upstream_connections,
            ),
        }
    }

    fn count(&mut self, v: &Option<toml::Spanned<i64>>, key: &str, default: usize) -> usize {
        match v {
            None => default,
            Some(n) if *n.get_ref() >= 1 => *n.get_ref() as usize,
            Some(n) => {
                self.err(n.span(), key, "must be at least 1");
                default
            }
        }
    }

    /// Check `[[routes]]`: each names a configured provider and exactly one target.
    pub(in crate::config) fn routes(
        &mut self,
        parsed: &FileConfig,
        proxy: &Option<ProxySettings>,
    ) -> Vec<RouteConfig> {
        let allow_remote = proxy.as_ref().is_some_and(|p| p.allow_remote);
        let mut routes = Vec::new();
        for (i, r) in parsed.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let Some(named) = &r.get_ref().provider else {
                self.err(
                    r.span(),
                    &format!("{key}.provider"),
                    "missing: say which provider this route serves, e.g. provider = \"github\"",
                );
                continue;
            };
            let provider = named.get_ref().clone();
            if !parsed.providers.contains_key(&provider) {
                let known: Vec<&str> = parsed.providers.keys().map(String::as_str).collect();
                self.err(
                    named.span(),
                    &format!("{key}.provider"),
                    format!(
                        "no provider named `{provider}` (configured: {})",
                        known.join(", ")
                    ),
                );
                continue;
            }
            let target = match (&r.get_ref().listen, &r.get_ref().path_prefix) {
                (Some(l), None) => match self.listen(l, &format!("{key}.listen"), allow_remote) {
                    Some(l) => RouteTarget::Listen(l),
                    None => continue,
                },
                (None, Some(p)) => {
                    let Some(v) = self.string(p, &format!("{key}.path_prefix")) else {
                        continue;
                    };
                    let trimmed = v.trim_end_matches('/');
                    if !trimmed.starts_with('/') || trimmed.len() < 2 {
                        self.err(
                            p.span(),
                            &format!("{key}.path_prefix"),
                            "must be a path such as \"/bace\"",
                        );
                        continue;
                    }
                    RouteTarget::PathPrefix(trimmed.to_owned())
                }
                (None, None) => {
                    self.err(
                        r.span(),
                        &format!("{key}.listen"),
                        "missing: a route needs `listen` (its own listener) or `path_prefix`",
                    );
                    continue;
                }
                _ => {
                    self.err(
                        r.span(),
                        &key,
                        "a route needs exactly one of `listen` or `path_prefix`",
                    );
                    continue;
                }
            };
            let require_auth = r.get_ref().require_auth.unwrap_or(true);
            routes.push(RouteConfig {
                target,
                provider,
                require_auth,
            });
        }
        routes
    }
}

/// A listener address: `IP:PORT`, `localhost:PORT` (127.0.0.1), or `unix:/path`.
pub(super) fn resolve_listen(v: &str) -> Result<Listen, String> {
    if let Some(path) = v.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path, as in \"unix:/run/credproxy/api.sock\"".into());
        }
        return Ok(Listen::Unix(PathBuf::from(path)));
    }
    if let Some(port) = v.strip_prefix("localhost:")
        && let Ok(port) = port.parse::<u16>()
    {
        return Ok(Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], port))));
    }
    v.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
        format!(
            "must be an address such as \"127.0.0.1:8080\" (IP:PORT, localhost:PORT) or \
             \"unix:/path\", not `{v}`"
        )
    })
}

fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("credproxy");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/state/credproxy");
    }
    PathBuf::from("/var/lib/credproxy")
}

#[cfg(test)]
mod tests {
    use crate::config::load_str;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn non_loopback_listen_needs_allow_remote() {
        let err = load_str("[proxy]\nlisten = \"0.0.0.0:8080\"\n", "c.toml", &no_env).unwrap_err();
        assert!(err.to_string().contains("allow_remote"), "{err}");
        let ok = load_str(
            "[proxy]\nlisten = \"0.0.0.0:8080\"\nallow_remote = true\n",
            "c.toml",
            &no_env,
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn route_to_unknown_provider() {
        let text = "[[routes]]\nlisten = \"127.0.0.1:7001\"\nprovider = \"nope\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        assert!(
            err.to_string().contains("no provider named `nope`"),
            "{err}"
        );
    }

    #[test]
    fn intercept_is_off_or_claimed_and_ca_name_constraints_a_boolean() {
        let ok = load_str(
            "[proxy]\nintercept = \"claimed\"\nca_name_constraints = true\n",
            "c.toml",
            &no_env,
        )
        .unwrap();
        assert_eq!(ok.proxy.intercept, crate::config::Intercept::Claimed);
        assert!(ok.proxy.ca_name_constraints);
        let default = load_str("", "c.toml", &no_env).unwrap();
        assert_eq!(default.proxy.intercept, crate::config::Intercept::Off);
        assert!(!default.proxy.ca_name_constraints);
        let err = load_str("[proxy]\nintercept = \"all\"\n", "c.toml", &no_env).unwrap_err();
        let e = &err.0[0];
        assert_eq!((e.line, e.key.as_str()), (2, "proxy.intercept"));
        assert!(
            e.message.contains("\"off\" or \"claimed\""),
            "{}",
            e.message
        );
        let err = load_str(
            "[proxy]\nca_name_constraints = \"yes\"\n",
            "c.toml",
            &no_env,
        )
        .unwrap_err();
        assert!(err.to_string().contains("true or false"), "{err}");
    }
}
