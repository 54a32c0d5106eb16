//! `credproxy token NAME`: print a valid access token for a script, and nothing else.
//!
//! ```text
//! curl -H "Authorization: Bearer $(credproxy token github)" https://api.github.com/user
//! ```
//!
//! The token comes from the store, refreshed through the store's lock when it is due
//! ([`crate::token::obtain_once`]), so this may run beside `credproxy run`. Stdout carries the
//! token and a newline; every message goes to stderr.
//!
//! This file also holds what the one-shot commands (`token`, `login`, `logout`, `check --online`)
//! share: loading the config, picking the provider, building an engine context, and turning a
//! failure into a message, a hint and an exit code.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};
use crate::clock::Clock;
use crate::config::{AuthConfig, Config, ProviderConfig};
use crate::token::error::chain;
use crate::token::{EngineContext, Fault, MemoryStore, TokenError, TokenHttp, TokenStore};

/// Print a valid access token for a provider, and nothing else (for scripts).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Print a valid access token for provider NAME on stdout, and nothing else (one \
line), for scripts and one-off calls.\n\n\
The stored token is used while it is fresh; when it is due, it is refreshed through the token \
store's lock (safe beside a running `credproxy run`, which then adopts the new token). A provider \
that needs a person (authorization code, or a password that is not in the config) must have been \
logged in once with `credproxy login NAME`.\n\n\
Exit codes: 0 the token was printed; 1 no token could be obtained (the reason and a hint are on \
stderr); 2 a config or usage error (unknown NAME, invalid config).",
    after_help = "Examples:\n  \
curl -H \"Authorization: Bearer $(credproxy token github)\" https://api.github.com/user\n  \
credproxy token internal --config /etc/credproxy/config.toml"
)]
pub struct Args {
    /// The provider, as named in the config (`[providers.NAME]`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn main(args: Args) -> ExitCode {
    init_logging();
    let run = async {
        let (config, provider) = load_provider(&args.config, &args.name)?;
        let ctx = engine(&config, StoreKind::for_provider(&provider))?;
        let token = crate::token::obtain_once(&provider, &ctx)
            .await
            .map_err(|e| token_failure(&provider, e))?;
        let mut out = std::io::stdout().lock();
        // The one place credproxy prints a secret: asked for, on stdout, for a pipe.
        writeln!(out, "{}", token.access_token.expose())
            .and_then(|()| out.flush())
            .map_err(|e| Failure::runtime(anyhow::anyhow!("can't write the token: {e}")))
    };
    match block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// A failed command: the error, what to do about it, and the exit code (DESIGN.md: 1 runtime,
/// 2 usage or config).
#[derive(Debug)]
pub struct Failure {
    code: u8,
    error: anyhow::Error,
    hint: Option<String>,
}

impl Failure {
    pub fn config(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: EXIT_CONFIG,
            error: error.into(),
            hint: None,
        }
    }

    pub fn runtime(error: impl Into<anyhow::Error>) -> Self {
        Failure {
            code: EXIT_RUNTIME,
            error: error.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The error and its causes on one line.
    pub fn message(&self) -> String {
        format!("{:#}", self.error)
    }

    /// Print `error: ...` and `hint: ...` to stderr; the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("error: {:#}", self.error);
        if let Some(h) = &self.hint {
            eprintln!("hint: {h}");
        }
        ExitCode::from(self.code)
    }
}

/// Logs of the one-shot commands go to stderr, warnings and up unless `CREDPROXY_LOG` says
/// otherwise: the command's own output is the message that matters.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CREDPROXY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// Run `fut` on a small runtime of its own.
pub fn block_on<T>(fut: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(anyhow::anyhow!("can't start the runtime: {e}")))?;
    runtime.block_on(fut)
}

/// Load the config and pick the provider called `name` from it: what every one-shot command on one
/// provider starts with.
pub fn load_provider(
    arg: &ConfigArg,
    name: &str,
) -> Result<(Config, Arc<ProviderConfig>), Failure> {
    let config = load_config(arg)?;
    let provider = find_provider(&config, name)?;
    Ok((config, provider))
}

/// Find and load the config; every problem is printed, with the `check` hint.
fn load_config(arg: &ConfigArg) -> Result<Config, Failure> {
    let path = crate::config::locate(arg.config.as_deref()).map_err(Failure::config)?;
    let config = crate::config::load(&path).map_err(|errors| {
        let n = errors.0.len();
        Failure::config(anyhow::anyhow!(
            "{} problem{} in the config:\n{errors}",
            n,
            if n == 1 { "" } else { "s" }
        ))
        .hint(format!(
            "`credproxy check --config {}` shows them by provider",
            path.display()
        ))
    })?;
    Ok(config)
}

/// The provider called `name`; an unknown name lists the configured ones.
fn find_provider(config: &Config, name: &str) -> Result<Arc<ProviderConfig>, Failure> {
    if let Some(p) = config.provider(name) {
        return Ok(p.clone());
    }
    let names: Vec<&str> = config.providers.iter().map(|p| p.name.as_str()).collect();
    let err = anyhow::anyhow!("no provider named `{name}` in the config");
    Err(Failure::config(err).hint(if names.is_empty() {
        "the config has no [providers.*] yet".to_owned()
    } else {
        format!("configured providers: {}", names.join(", "))
    }))
}

/// Which token store a command works on.
pub enum StoreKind {
    /// The real one under `state_dir`, shared with `credproxy run`.
    State,
    /// A throwaway one: for static providers (nothing to store) and `check --online` (which
    /// must not touch the real store).
    Memory,
}

impl StoreKind {
    pub fn for_provider(provider: &ProviderConfig) -> StoreKind {
        match provider.auth {
            AuthConfig::Static { .. } => StoreKind::Memory,
            _ => StoreKind::State,
        }
    }
}

/// An engine context with the config's roots (plus `ca_file`) and the chosen store.
pub fn engine(config: &Config, store: StoreKind) -> Result<EngineContext, Failure> {
    let roots = crate::tls::roots(config.proxy.ca_file.as_deref()).map_err(|e| {
        Failure::config(anyhow::Error::new(e).context("can't load the trusted certificates"))
    })?;
    let client = TokenHttp::new(roots).map_err(|e| {
        Failure::runtime(anyhow::Error::new(e).context("can't build the HTTP client"))
    })?;
    let store: Arc<dyn TokenStore> = match store {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::State => {
            crate::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {})).map_err(
                |e| {
                    let hint = match &config.store {
                        crate::config::StoreSettings::File => format!(
                            "set proxy.state_dir to a directory you can write (now {})",
                            config.proxy.state_dir.display()
                        ),
                        crate::config::StoreSettings::Redis(_) => format!(
                            "check [store] url ({}) and that Redis answers there",
                            crate::token::store::describe(&config.proxy, &config.store)
                        ),
                    };
                    Failure::runtime(anyhow::Error::new(e).context("can't open the token store"))
                        .hint(hint)
                },
            )?
        }
    };
    Ok(EngineContext::new(
        client,
        store,
        Clock::new(),
        CancellationToken::new(),
    ))
}

/// A token error as a failure with a hint of what to do about it.
pub fn token_failure(provider: &ProviderConfig, e: TokenError) -> Failure {
    let name = &provider.name;
    let hint = match e.fault() {
        Fault::LoginRequired => {
            format!("run `credproxy login {name}` first")
        }
        Fault::Config => format!(
            "the server refused credproxy's request: check providers.{name} in the config \
             (client_id, client_secret, username, password, URLs); `credproxy check --online` \
             tries every provider"
        ),
        Fault::Transient { .. } => "the token server failed or could not be reached; try again \
             (CREDPROXY_LOG=debug shows each request)"
            .to_owned(),
    };
    let what = anyhow::anyhow!("{}", chain(&e)).context(format!("no token for {name}"));
    Failure::runtime(what).hint(hint)
}

/// `7h59m`, `59m59s`, `3d4h`, `5m`, `45s`: a lifetime, to the two largest units.
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    let two = |big: i64, b: &str, small: i64, s: &str| match small {
        0 => format!("{big}{b}"),
        _ => format!("{big}{b}{small}{s}"),
    };
    if d > 0 {
        two(d, "d", h, "h")
    } else if h > 0 {
        two(h, "h", m, "m")
    } else if m > 0 {
        two(m, "m", sec, "s")
    } else {
        format!("{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_would_say_them() {
        assert_eq!(human_duration(7 * 3600 + 59 * 60 + 59), "7h59m");
        assert_eq!(human_duration(3599), "59m59s");
        assert_eq!(human_duration(3 * 86_400 + 4 * 3600 + 5), "3d4h");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(-3), "0s");
        assert_eq!(human_duration(300), "5m");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(86_400 + 60), "1d");
    }
}
