//! `credproxy demo`: credproxy's main job on an embedded default, with no config and no account.
//!
//! [`start`] runs three things in this process, all plain HTTP on 127.0.0.1:
//! 1. a small OAuth 2.0 token server (`token_server.rs`): `POST /oauth/token`, the client
//!    credentials grant, random opaque tokens that live 30 s (`--token-lifetime`);
//! 2. a small API (`api.rs`): `GET /hello` answers 200 to a currently valid token from that
//!    server and 401 to anything else;
//! 3. credproxy in front, from a config written here as TOML text and checked like any other: an
//!    `oauth2` provider named `demo` that claims the host `demo.api`, gets its tokens from (1) and
//!    forwards to (2), plus a `[[routes]]` listener so the API has a base URL of its own.
//!
//! The token server and the API share a [`tokens::TokenBook`] (one process, so no introspection
//! call). The token engine fetches the first token during [`start`], refreshes ahead of expiry and
//! logs each refresh; the token server logs one line per token issued, by number, never by value.
//! The token store lives in a fresh directory under the system temp dir, removed at shutdown.

mod api;
mod serve;
mod servers;
mod token_server;
pub mod tokens;

pub use servers::Servers;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::app::{AppError, BoundAddr, Running};
use crate::config::ConfigErrors;
/// The provider's name in the demo config.
pub const PROVIDER: &str = "demo";
/// The host the demo provider claims on the main listener (`curl -x ... http://demo.api/hello`).
pub const HOST: &str = "demo.api";
/// The demo client's id at the demo token server.
pub const CLIENT_ID: &str = "demo-client";
/// The demo client's secret: a fixed value known to both sides of the demo, guarding nothing.
/// Still never printed, like any secret.
pub const CLIENT_SECRET: &str = "demo-secret";
pub const TOKEN_PATH: &str = "/oauth/token";
pub const HELLO_PATH: &str = "/hello";
/// Short enough to watch a few refreshes in the first minute.
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(30);
/// How long [`start`] waits for credproxy's first token: the token server is in this process,
/// so this only runs out when something is broken.
pub const FIRST_TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The proxy's route listener for the demo API (port 0: a free one).
    pub listen: SocketAddr,
    /// How long each issued token lives; whole seconds (`expires_in` is in seconds), at least 1 s.
    pub token_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            token_lifetime: DEFAULT_TOKEN_LIFETIME,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the token lifetime must be whole seconds, at least 1s (expires_in is in seconds)")]
    Lifetime,
    #[error("can't start the demo {what} on 127.0.0.1")]
    Bind {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("can't create the demo's state directory under {}", .dir.display())]
    StateDir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The embedded config does not check: a bug in credproxy, not something the user did.
    #[error("the demo's embedded config is invalid (a bug in credproxy)")]
    Config(#[source] ConfigErrors),
    #[error("credproxy could not start")]
    App(#[from] AppError),
    #[error(
        "credproxy got no token from the demo token server within {}s ({})",
        .waited.as_secs(),
        .last_error.as_deref().unwrap_or("no error reported; is the token engine running?")
    )]
    NoToken {
        waited: Duration,
        last_error: Option<String>,
    },
}

/// The whole demo: the servers and credproxy in front of them.
pub struct Demo {
    servers: Servers,
    running: Running,
    state_dir: StateDir,
    route_addr: SocketAddr,
    main_addr: SocketAddr,
}

/// Start the demo; returns once credproxy holds its first token, so the curl line works at once.
pub async fn start(opts: Options) -> Result<Demo, DemoError> {
    let servers = Servers::start(opts.token_lifetime).await?;
    let (running, state_dir) = match start_proxy(&servers, opts.listen).await {
        Ok(started) => started,
        Err(e) => {
            servers.shutdown(Duration::ZERO).await;
            return Err(e);
        }
    };
    let (main_addr, route_addr) = match (
        running.main_addr().tcp(),
        running.route_addr(PROVIDER).and_then(|a| a.tcp()),
    ) {
        (Some(m), Some(r)) => (m, r),
        _ => unreachable!("the demo config has a TCP main listener and a TCP route listener"),
    };
    let demo = Demo {
        servers,
        running,
        state_dir,
        route_addr,
        main_addr,
    };
    if let Err(e) = demo.wait_for_token(FIRST_TOKEN_TIMEOUT).await {
        demo.shutdown(Duration::ZERO).await;
        return Err(e);
    }
    Ok(demo)
}

/// credproxy in front of `servers`, its route listener on `listen`.
async fn start_proxy(
    servers: &Servers,
    listen: SocketAddr,
) -> Result<(Running, StateDir), DemoError> {
    let state_dir = StateDir::create()?;
    let text = config_text(
        &servers.token_url(),
        &servers.api_url(),
        listen,
        state_dir.path(),
    );
    let config = crate::config::load_str(&text, "demo", &|_| None).map_err(DemoError::Config)?;
    let running = crate::app::start(config).await?;
    Ok((running, state_dir))
}

impl Demo {
    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// The proxy's route listener: a base URL for the demo API.
    pub fn route_addr(&self) -> SocketAddr {
        self.route_addr
    }

    /// The proxy's main listener: an HTTP proxy that claims the host `demo.api`.
    pub fn main_addr(&self) -> SocketAddr {
        self.main_addr
    }

    /// The admin listener (status page, `/status`), when this build serves one.
    pub fn admin_addr(&self) -> Option<&BoundAddr> {
        self.running.admin.as_ref()
    }

    /// The token store's directory (removed at shutdown).
    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    /// `curl http://127.0.0.1:PORT/hello`: through credproxy's route listener to the demo API.
    pub fn curl_line(&self) -> String {
        format!("curl http://{}{HELLO_PATH}", self.route_addr)
    }

    /// `curl -x http://127.0.0.1:PORT http://demo.api/hello`: credproxy as an HTTP proxy.
    pub fn proxy_curl_line(&self) -> String {
        format!(
            "curl -x http://{} http://{HOST}{HELLO_PATH}",
            self.main_addr
        )
    }

    /// What `credproxy demo` prints: what is running and what to try.
    pub fn banner(&self) -> String {
        let lifetime = human(self.servers.token_lifetime());
        let mut lines = vec![
            "credproxy demo: a token server, an API that accepts only its tokens, and credproxy in front."
                .to_owned(),
            String::new(),
            format!(
                "  token server  {}  (OAuth 2.0 client_credentials; tokens live {lifetime})",
                self.servers.token_url()
            ),
            format!(
                "  demo API      {}{HELLO_PATH}  (401 without a valid token)",
                self.servers.api_url()
            ),
            format!(
                "  credproxy     http://{}  (the demo API's base URL; adds the token)",
                self.route_addr
            ),
            format!(
                "                http://{}  (HTTP proxy for host {HOST})",
                self.main_addr
            ),
        ];
        if let Some(admin) = self.admin_addr() {
            lines.push(format!("  status page   http://{admin}/"));
        }
        lines.extend([
            String::new(),
            "Call the API through credproxy, no token in hand:".to_owned(),
            String::new(),
            format!("  {}", self.curl_line()),
            format!("  {}", self.proxy_curl_line()),
            String::new(),
            format!(
                "credproxy holds token #{}; it refreshes before each one expires (logged below). Ctrl-C stops.",
                self.servers.tokens_issued()
            ),
        ]);
        lines.join("\n")
    }

    /// Wait until credproxy holds a usable token for the demo provider.
    pub async fn wait_for_token(&self, wait: Duration) -> Result<(), DemoError> {
        let shared = self.running.shared();
        let router = &shared.router;
        let index = router.index_of(PROVIDER).expect("the demo provider");
        let reader = &router.providers[index].reader;
        reader
            .wait_usable(wait)
            .await
            .map(drop)
            .map_err(|_| DemoError::NoToken {
                waited: wait,
                last_error: reader.snapshot().last_error,
            })
    }

    /// Stop credproxy (requests in flight get `grace`), then the servers; remove the state dir.
    /// Returns whether credproxy's requests all finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        let drained = self.running.shutdown(grace).await;
        self.servers.shutdown(grace).await;
        drop(self.state_dir);
        drained
    }
}

/// The demo's config, as a user would write it.
fn config_text(token_url: &str, api_url: &str, listen: SocketAddr, state_dir: &Path) -> String {
    let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
state_dir = {state_dir}
shutdown_grace = "2s"

[providers.{PROVIDER}]
preset = "oauth2"
grant = "client_credentials"
token_url = {token_url}
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"
hosts = ["{HOST}"]
upstream = {upstream}

[[routes]]
listen = {listen}
provider = "{PROVIDER}"
"#,
        state_dir = quote(&state_dir.to_string_lossy()),
        token_url = quote(token_url),
        upstream = quote(api_url),
        listen = quote(&listen.to_string()),
    )
}

/// The token store's directory: fresh, private, and removed when dropped.
struct StateDir(PathBuf);

impl StateDir {
    fn create() -> Result<StateDir, DemoError> {
        // Several demos may run in one process (tests): the pid alone does not make a name unique.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir();
        let pid = std::process::id();
        loop {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let name = match n {
                0 => format!("credproxy-demo-{pid}"),
                n => format!("credproxy-demo-{pid}-{n}"),
            };
            let path = base.join(name);
            // `create` (not `create_all`) fails on anything already there, a stale directory or
            // another user's symlink alike: we then try the next name.
            use std::os::unix::fs::DirBuilderExt;
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(StateDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => continue,
                Err(source) => return Err(DemoError::StateDir { dir: base, source }),
            }
        }
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::debug!(dir = %self.0.display(), error = %e, "could not remove the demo's state directory");
        }
    }
}

/// `30s`, `2m`, `1m30s`: a lifetime as the user would write it.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_read_as_written() {
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn the_embedded_config_checks() {
        let text = config_text(
            "http://127.0.0.1:1/oauth/token",
            "http://127.0.0.1:2",
            "127.0.0.1:0".parse().unwrap(),
            Path::new("/tmp/credproxy-demo \"quoted\""),
        );
        let config =
            crate::config::load_str(&text, "demo", &|_| None).expect("the demo config checks");
        let provider = config.provider(PROVIDER).expect("the demo provider");
        assert_eq!(provider.upstream.origin(), "http://127.0.0.1:2");
        assert!(provider.hosts.iter().any(|h| h.to_string() == HOST));
        assert_eq!(
            config.proxy.state_dir,
            Path::new("/tmp/credproxy-demo \"quoted\"")
        );
    }
}
