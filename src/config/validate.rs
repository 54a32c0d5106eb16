//! Check the serde picture into the runtime [`Config`], collecting every error.
//!
//! Validation does not stop at the first problem: `credproxy check` reports all of them, each
//! with the file, line, column and key path, the value's problem and what was expected.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Uri};

use super::file::{FileConfig, FileMode, FileProxy, FileSecret, SecretSource, Str};
use super::warnings::security_warnings;
use super::{Config, Listen, ProxySettings, RouteConfig, RouteTarget, UnknownHosts, env, presets};
use crate::secret::Secret;

/// One thing wrong with the config, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the problem has no single place (a missing file).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, e.g. `providers.bace.token_url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn single(file: &str, message: impl Into<String>) -> Self {
        ConfigErrors(vec![ConfigError {
            file: file.to_owned(),
            line: 0,
            column: 0,
            key: String::new(),
            message: message.into(),
        }])
    }
}

/// The config file to use: `--config`, else `$CREDPROXY_CONFIG`, else `./credproxy.toml`, else
/// `$XDG_CONFIG_HOME/credproxy/config.toml`, else `/etc/credproxy/config.toml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("CREDPROXY_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut tried = vec![PathBuf::from("credproxy.toml")];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")));
    if let Some(x) = xdg {
        tried.push(x.join("credproxy/config.toml"));
    }
    tried.push(PathBuf::from("/etc/credproxy/config.toml"));
    if let Some(found) = tried.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(ConfigErrors::single(
        "credproxy",
        format!(
            "no config file found (looked for --config, $CREDPROXY_CONFIG, {}); \
             pass --config PATH, or try `credproxy demo` to see credproxy work without one",
            list.join(", ")
        ),
    ))
}

/// Read and check the file at `path`, expanding `${VAR}` from the process environment.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(&name, format!("can't read the config file: {e}")))?;
    load_str(&text, &name, &env::process_env)
}

/// Check config `text` (named `file` in messages), with variables from `lookup`.
pub fn load_str(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let parsed: FileConfig = match toml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            return Err(ConfigErrors(vec![ConfigError {
                file: file.to_owned(),
                line,
                column,
                key: String::new(),
                message: e.message().trim().to_owned(),
            }]));
        }
    };
    let mut ctx = Ctx {
        text,
        file,
        lookup,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let proxy = ctx.proxy(&parsed.proxy);
    let mut providers = Vec::new();
    for (name, fp) in &parsed.providers {
        if !valid_name(name) {
            ctx.err(
                fp.span(),
                &format!("providers.{name}"),
                "a provider name may use letters, digits, '-' and '_' only",
            );
            continue;
        }
        if let Some(p) = presets::build(&mut ctx, name, fp) {
            providers.push(Arc::new(p));
        }
    }
    if parsed.providers.is_empty() {
        ctx.warnings
            .push("no [providers.*] configured: every request will be refused".into());
    }
    let routes = ctx.routes(&parsed, &proxy);
    if !ctx.errors.is_empty() {
        return Err(ConfigErrors(ctx.errors));
    }
    let proxy = proxy.expect("no errors means the proxy section was built");
    if proxy.unknown_hosts == UnknownHosts::Pass && proxy.allow_remote {
        ctx.warnings.push(
            "unknown_hosts = \"pass\" with allow_remote = true makes credproxy an open proxy to anyone who can reach it"
                .into(),
        );
    }
    ctx.warnings
        .extend(security_warnings(&proxy, &providers, &routes));
    Ok(Config {
        proxy,
        providers,
        routes,
        warnings: ctx.warnings,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// 1-based line and column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |i| before.len() - i - 1)
        + 1;
    (line, column)
}

/// Validation state: the text (for positions), the env lookup, what went wrong so far.
pub struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    pub errors: Vec<ConfigError>,
    pub warnings: Vec<String>,
}

impl Ctx<'_> {
    pub fn err(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// A string with `${VAR}` expanded.
    pub fn string(&mut self, s: &Str, key: &str) -> Option<String> {
        self.expand(s.get_ref(), s.span(), key)
    }

    pub fn opt_string(&mut self, s: &Option<Str>, key: &str) -> Option<String> {
        s.as_ref().and_then(|s| self.string(s, key))
    }

    /// `${VAR}` expansion of a value found at `span`.
    pub fn expand(&mut self, value: &str, span: Range<usize>, key: &str) -> Option<String> {
        match env::expand(value, self.lookup) {
            Ok(v) => Some(v),
            Err(e) => {
                self.err(span, key, e.to_string());
                None
            }
        }
    }

    /// A secret: inline (with `${VAR}`) or `{ file = ... }` with the trailing newline trimmed.
    pub fn secret(&mut self, s: &FileSecret, key: &str) -> Option<Secret> {
        let span = s.span.clone();
        match &s.source {
            SecretSource::Value(v) => {
                let value = self.expand(v, span.clone(), key)?;
                if value.is_empty() {
                    self.err(span, key, "is empty: give the secret, or remove the key");
                    return None;
                }
                Some(Secret::from(value))
            }
            SecretSource::File(f) => {
                let path = self.expand(f, span.clone(), key)?;
                match std::fs::read_to_string(&path) {
                    Ok(mut content) => {
                        while content.ends_with('\n') || content.ends_with('\r') {
                            content.pop();
                        }
                        if content.is_empty() {
                            self.err(span, key, format!("secret file {path} is empty"));
                            return None;
                        }
                        Some(Secret::from(content))
                    }
                    Err(e) => {
                        self.err(span, key, format!("can't read secret file {path}: {e}"));
                        None
                    }
                }
            }
        }
    }

    /// Like [`Ctx::opt_secret`], but an empty value (`"${BV_ORG_ID:-}"`) means "not given".
    pub fn secret_or_unset(&mut self, s: &Option<FileSecret>, key: &str) -> Option<Secret> {
        let s = s.as_ref()?;
        if let SecretSource::Value(v) = &s.source {
            let value = self.expand(v, s.span.clone(), key)?;
            return (!value.is_empty()).then(|| Secret::from(value));
        }
        self.secret(s, key)
    }

    pub fn opt_secret(&mut self, s: &Option<FileSecret>, key: &str) -> Option<Secret> {
        s.as_ref().and_then(|s| self.secret(s, key))
    }

    pub fn duration(&mut self, s: &Option<Str>, key: &str, default: Duration) -> Duration {
        self.opt_duration(s, key).unwrap_or(default)
    }

    pub fn opt_duration(&mut self, s: &Option<Str>, key: &str) -> Option<Duration> {
        let s = s.as_ref()?;
        let v = self.string(s, key)?;
        match parse_duration(&v) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(s.span(), key, e);
                None
            }
        }
    }

    /// An absolute http(s) URL.
    pub fn url(&mut self, s: &Str, key: &str) -> Option<Uri> {
        let v = self.string(s, key)?;
        match v.parse::<Uri>() {
            Ok(u)
                if matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some() =>
            {
                Some(u)
            }
            _ => {
                self.err(
                    s.span(),
                    key,
                    format!("`{v}` is not an absolute http(s) URL such as \"https://api.example.com/oauth/token\""),
                );
                None
            }
        }
    }

    pub fn opt_url(&mut self, s: &Option<Str>, key: &str) -> Option<Uri> {
        s.as_ref().and_then(|s| self.url(s, key))
    }

    pub fn header_name(&mut self, name: &str, span: Range<usize>, key: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.err(span, key, format!("`{name}` is not a valid header name"));
                None
            }
        }
    }

    /// A header value built from a secret, marked sensitive (hpack never indexes it, Debug hides it).
    pub fn header_value(
        &mut self,
        v: &Secret,
        span: Range<usize>,
        key: &str,
    ) -> Option<HeaderValue> {
        match HeaderValue::from_str(v.expose()) {
            Ok(mut h) => {
                h.set_sensitive(true);
                Some(h)
            }
            Err(_) => {
                self.err(span, key, "the value has characters a header can't carry (control characters or non-ASCII)");
                None
            }
        }
    }

    fn listen(&mut self, s: &Str, key: &str, allow_remote: bool) -> Option<Listen> {
        let v = self.string(s, key)?;
        if let Some(path) = v.strip_prefix("unix:") {
            if path.is_empty() {
                self.err(
                    s.span(),
                    key,
                    "unix: needs a socket path, as in \"unix:/run/credproxy/api.sock\"",
                );
                return None;
            }
            return Some(Listen::Unix(PathBuf::from(path)));
        }
        match v.parse::<SocketAddr>() {
            Ok(addr) => {
                if !addr.ip().is_loopback() && !allow_remote {
                    self.err(
                        s.span(),
                        key,
                        format!(
                            "{addr} is reachable from other machines; anyone who can reach it can spend your \
                             credentials. Listen on 127.0.0.1, or set allow_remote = true in [proxy] \
                             (and set proxy_auth too)"
                        ),
                    );
                    return None;
                }
                Some(Listen::Tcp(addr))
            }
            Err(_) => {
                self.err(
                    s.span(),
                    key,
                    format!("`{v}` is not an address: expected IP:PORT such as \"127.0.0.1:8080\", or unix:/path"),
                );
                None
            }
        }
    }

    fn proxy(&mut self, p: &FileProxy) -> Option<ProxySettings> {
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
                        format!("`{other}` is not one of \"reject\", \"pass\""),
                    );
                    UnknownHosts::Reject
                }
                None => UnknownHosts::Reject,
            },
        };
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
        let proxy_auth = self.opt_secret(&p.proxy_auth, "proxy.proxy_auth");
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
                            "expected an octal file mode such as \"0660\"",
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
        if self.errors.len() > before {
            return None;
        }
        Some(ProxySettings {
            listen: listen?,
            admin_listen,
            state_dir,
            unknown_hosts,
            ca_file,
            allow_remote,
            proxy_auth,
            socket_mode,
            connect_timeout,
            response_timeout,
            header_timeout,
            shutdown_grace,
            max_connections,
            max_connections_per_client,
        })
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

    fn routes(&mut self, parsed: &FileConfig, proxy: &Option<ProxySettings>) -> Vec<RouteConfig> {
        let allow_remote = proxy.as_ref().is_some_and(|p| p.allow_remote);
        let mut routes = Vec::new();
        for (i, r) in parsed.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            let provider = r.get_ref().provider.get_ref().clone();
            if !parsed.providers.contains_key(&provider) {
                let known: Vec<&str> = parsed.providers.keys().map(String::as_str).collect();
                self.err(
                    r.get_ref().provider.span(),
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
                            "expected a path such as \"/bace\"",
                        );
                        continue;
                    }
                    RouteTarget::PathPrefix(trimmed.to_owned())
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

fn default_state_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("credproxy");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/state/credproxy");
    }
    PathBuf::from("/var/lib/credproxy")
}

/// `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"30d"`, or several (`"1h30m"`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = || {
        format!(
            "`{s}` is not a duration: expected a number and a unit, such as \"30s\", \"5m\", \"2h\", \"30d\""
        )
    };
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(expected());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(expected)?;
        if digits == 0 {
            return Err(expected());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| expected())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        let one = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(expected()),
        };
        // Checked: `+=` panics once the terms ("4294967295d4294967295d…") pass u64::MAX seconds.
        let term = one
            .checked_mul(u32::try_from(n).map_err(|_| expected())?)
            .ok_or_else(expected)?;
        total = total.checked_add(term).ok_or_else(expected)?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("five minutes").is_err());
    }

    #[test]
    fn a_duration_too_long_for_duration_is_an_error_not_a_panic() {
        // Each term fits (u32::MAX days); 50,000 of them pass u64::MAX seconds.
        let long = "4294967295d".repeat(50_000);
        assert!(parse_duration(&long).is_err());
        assert!(parse_duration(&"4294967295d".repeat(2)).is_ok());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = load_str(
            "[proxy]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            "c.toml",
            &no_env,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("c.toml:3:1"), "{msg}");
        assert!(msg.contains("lisen"), "{msg}");
    }

    #[test]
    fn unset_variable_names_key_and_line() {
        let text = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"${GH_TOKEN}\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        let e = &err.0[0];
        assert_eq!((e.line, e.key.as_str()), (4, "providers.gh.token"));
        assert!(e.message.contains("GH_TOKEN is not set"), "{}", e.message);
    }

    #[test]
    fn provider_headers_cannot_set_framing_or_connection_fields() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "host",
            "te",
        ] {
            let text = format!(
                "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\nheaders = {{ \"{name}\" = \"1\" }}\n"
            );
            let err = load_str(&text, "c.toml", &no_env).unwrap_err();
            let e = &err.0[0];
            assert_eq!(e.line, 5, "{name}: {err}");
            assert!(
                e.message.contains("remove it from headers"),
                "{name}: {err}"
            );
        }
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
    fn collects_every_error() {
        let text = "[proxy]\nconnect_timeout = \"soon\"\nunknown_hosts = \"maybe\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        assert_eq!(err.0.len(), 2, "{err}");
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
            "proxy.proxy_auth is not set",
        );
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
            "applies to TCP listeners only",
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
    fn route_to_unknown_provider() {
        let text = "[[routes]]\nlisten = \"127.0.0.1:7001\"\nprovider = \"nope\"\n";
        let err = load_str(text, "c.toml", &no_env).unwrap_err();
        assert!(
            err.to_string().contains("no provider named `nope`"),
            "{err}"
        );
    }
}
