//! `credproxy env [--shell sh|fish|powershell] [--proxy URL]`: the environment a shell needs to
//! use a running credproxy, printed as commands that shell's `eval` runs (DESIGN.md "Wiring a
//! client in one command"). `credproxy exec` gives its command the same variables
//! ([`variables`]).
//!
//! Every value is single-quoted in the shell's own way, so a path or a `proxy_auth` secret with
//! a quote, a `$` or a space in it comes out as it is; the secret is also percent-encoded into
//! the proxy URL's userinfo (RFC 3986 §3.2.1), which is where curl, Python, Node and Go look.

use std::path::Path;
use std::process::ExitCode;

use super::ConfigArg;
use super::token::Failure;
use crate::config::{Config, Listen};

/// Print the environment variables that point programs at a running credproxy.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print the environment a shell needs to use a running credproxy: HTTP_PROXY, \
HTTPS_PROXY (and their lowercase names, which curl reads), NO_PROXY for loopback, and the CA \
bundle variables (SSL_CERT_FILE, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE, NODE_EXTRA_CA_CERTS, \
GIT_SSL_CAINFO, CARGO_HTTP_CAINFO, AWS_CA_BUNDLE, DENO_CERT, GRPC_DEFAULT_SSL_ROOTS_FILE_PATH) \
pointing at the additive bundle (the roots already trusted plus credproxy's CA), and \
NODE_USE_ENV_PROXY=1.\n\n\
The proxy URL is the config's [proxy] listen (a wildcard address becomes loopback), or --proxy; \
with proxy_auth set, its secret is in the URL as userinfo, so treat the output as a secret. HTTPS \
through the proxy needs `[proxy] intercept = \"claimed\"` in the running credproxy's config.\n\n\
To run one command this way without a running credproxy, use `credproxy exec -- CMD`.",
    after_help = "Examples:\n  \
eval \"$(credproxy env)\"                          # sh, bash, zsh\n  \
credproxy env --shell fish | source\n  \
credproxy env --shell powershell | Invoke-Expression\n  \
eval \"$(credproxy env --proxy http://127.0.0.1:18080)\""
)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The shell whose syntax to print.
    #[arg(long, value_enum, default_value = "sh")]
    pub shell: Shell,
    /// The running credproxy's URL, when it is not the config's `[proxy] listen`.
    #[arg(long, value_name = "URL")]
    pub proxy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// POSIX sh, bash, zsh, dash: `export NAME='value';`
    Sh,
    /// fish: `set -gx NAME 'value';`
    Fish,
    /// PowerShell: `$env:NAME = 'value'`
    Powershell,
}

/// The names of the variables pointing at the CA bundle.
pub const BUNDLE_VARS: &[&str] = &[
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "CARGO_HTTP_CAINFO",
    "AWS_CA_BUNDLE",
    "DENO_CERT",
    "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH",
];

/// What loopback callers skip the proxy for.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// The variables, in the order printed: proxies, `NO_PROXY`, the bundle, `NODE_USE_ENV_PROXY`.
pub fn variables(proxy_url: &str, bundle: &Path) -> Vec<(&'static str, String)> {
    let mut vars = Vec::new();
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
        vars.push((name, proxy_url.to_owned()));
    }
    vars.push(("NO_PROXY", NO_PROXY.to_owned()));
    vars.push(("no_proxy", NO_PROXY.to_owned()));
    let bundle = bundle.display().to_string();
    for name in BUNDLE_VARS {
        vars.push((*name, bundle.clone()));
    }
    vars.push(("NODE_USE_ENV_PROXY", "1".to_owned()));
    vars
}

pub fn main(args: Args) -> ExitCode {
    super::token::init_logging();
    let (_, config) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match run(&config, &args) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(f) => f.report(),
    }
}

fn run(config: &Config, args: &Args) -> Result<String, Failure> {
    let base = match &args.proxy {
        Some(url) => url.clone(),
        None => listen_url(&config.proxy.listen)?,
    };
    let secret = config.proxy.proxy_auth.as_ref().map(|s| s.get());
    let url = with_auth(&base, secret.as_ref().map(|s| s.expose()))?;
    let (_, bundle) = super::ca::ready(config)?;
    if config.proxy.intercept != crate::config::Intercept::Claimed {
        eprintln!(
            "note: the config has [proxy] intercept = \"off\": a running credproxy refuses HTTPS \
             to claimed hosts; set intercept = \"claimed\" and restart it (or use `credproxy exec -- CMD`)"
        );
    }
    Ok(variables(&url, &bundle)
        .iter()
        .map(|(k, v)| line(args.shell, k, v))
        .collect())
}

/// The proxy URL of a `listen` address: a wildcard address is reached on loopback.
pub fn listen_url(listen: &Listen) -> Result<String, Failure> {
    match listen {
        Listen::Tcp(addr) if addr.port() == 0 => Err(Failure::config(anyhow::anyhow!(
            "[proxy] listen has port 0, so the running credproxy's port is not known here"
        ))
        .hint("pass the running credproxy's URL: --proxy http://127.0.0.1:PORT")),
        Listen::Tcp(addr) => {
            let ip = match addr.ip() {
                std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
                    std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
                }
                std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
                    std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
                }
                ip => ip,
            };
            Ok(format!(
                "http://{}",
                std::net::SocketAddr::new(ip, addr.port())
            ))
        }
        Listen::Unix(path) => Err(Failure::config(anyhow::anyhow!(
            "[proxy] listen is a unix socket ({}), which HTTP_PROXY can't name",
            path.display()
        ))
        .hint("pass a TCP address credproxy listens on: --proxy http://127.0.0.1:PORT")),
    }
}

/// `url` with the `proxy_auth` secret as its userinfo (`http://credproxy:SECRET@host:port`),
/// unless it has userinfo already or there is no secret.
pub fn with_auth(url: &str, secret: Option<&str>) -> Result<String, Failure> {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Only what follows a userinfo `@` is shown: `credproxy:SECRET@host:port` without a
        // scheme must not put the secret on stderr.
        let shown = url.rsplit_once('@').map_or(url, |(_, host)| host);
        return Err(Failure::config(anyhow::anyhow!(
            "`{shown}` is not a proxy URL (expected http://HOST:PORT)"
        )));
    };
    let Some(secret) = secret else {
        return Ok(url.to_owned());
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Ok(url.to_owned());
    }
    Ok(format!(
        "{scheme}://credproxy:{}@{rest}",
        percent_encode(secret)
    ))
}

/// Every byte but RFC 3986's unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One assignment in `shell`'s syntax, the value single-quoted (no expansion inside).
pub fn line(shell: Shell, name: &str, value: &str) -> String {
    match shell {
        // '...' takes everything literally; a ' ends it, so: '\''.
        Shell::Sh => format!("export {name}='{}';\n", value.replace('\'', r"'\''")),
        // fish's '...' knows two escapes, \\ and \'.
        Shell::Fish => format!(
            "set -gx {name} '{}';\n",
            value.replace('\\', r"\\").replace('\'', r"\'")
        ),
        // PowerShell's '...' takes '' for a quote; it also ends on the typographic quotes.
        Shell::Powershell => {
            let mut v = String::new();
            for c in value.chars() {
                if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}') {
                    v.push(c);
                }
                v.push(c);
            }
            format!("$env:{name} = '{v}'\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_url_without_a_scheme_is_refused_without_its_userinfo() {
        let err = with_auth("credproxy:s3cret@127.0.0.1:8080", Some("x")).unwrap_err();
        let shown = format!("{:?}", err.message());
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("127.0.0.1:8080"), "{shown}");
    }

    #[test]
    fn a_secret_becomes_percent_encoded_userinfo() {
        let url = with_auth("http://127.0.0.1:8080", Some("p@ss:w/rd ü")).unwrap();
        assert_eq!(
            url,
            "http://credproxy:p%40ss%3Aw%2Frd%20%C3%BC@127.0.0.1:8080"
        );
        assert_eq!(
            with_auth("http://u:x@127.0.0.1:1", Some("s")).unwrap(),
            "http://u:x@127.0.0.1:1"
        );
        assert_eq!(
            with_auth("http://127.0.0.1:1", None).unwrap(),
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn values_are_quoted_for_each_shell() {
        assert_eq!(line(Shell::Sh, "A", "it's $x"), "export A='it'\\''s $x';\n");
        assert_eq!(line(Shell::Fish, "A", "a\\'b"), "set -gx A 'a\\\\\\'b';\n");
        assert_eq!(line(Shell::Powershell, "A", "it's"), "$env:A = 'it''s'\n");
    }

    #[test]
    fn a_wildcard_listen_is_reached_on_loopback() {
        let url = |s: &str| listen_url(&Listen::Tcp(s.parse().unwrap())).unwrap();
        assert_eq!(url("0.0.0.0:8080"), "http://127.0.0.1:8080");
        assert_eq!(url("[::]:8080"), "http://[::1]:8080");
        assert_eq!(url("127.0.0.1:9"), "http://127.0.0.1:9");
        assert!(listen_url(&Listen::Tcp("127.0.0.1:0".parse().unwrap())).is_err());
    }
}
