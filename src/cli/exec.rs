//! `credproxy exec [--config F] -- CMD ARGS...`: one command wired to an in-process credproxy
//! (DESIGN.md "Wiring a client in one command").
//!
//! ```text
//! credproxy exec -- curl https://api.github.com/user
//! ```
//!
//! 1. The config is loaded and bent for a private proxy: the main listener on `127.0.0.1:0`
//!    (the admin listener too, when one is configured; no default admin, so a `credproxy run`
//!    beside keeps its own), route listeners dropped (CMD is given the proxy, not base URLs),
//!    interception on.
//! 2. Providers that need a person (`credproxy login`) and have nothing stored to refresh from
//!    are named, with the command to run, before CMD starts: a CMD whose first request would get
//!    `503 login_required` is worse than not starting it.
//! 3. The CA is opened (made on first need) and its bundle brought up to date; credproxy starts
//!    on the token store `run` uses (the store's lock keeps two processes from spending one
//!    refresh token).
//! 4. CMD is spawned without a shell, with [`super::env::variables`] replacing the parent's
//!    values of those names. SIGTERM is forwarded; so is SIGINT, unless it came from the
//!    terminal (the terminal sends it to CMD as well: it is in the same foreground process
//!    group, and a second one would interrupt its clean-up).
//! 5. When CMD ends, credproxy stops and `exec` exits with CMD's status (128 + the signal's
//!    number when a signal ended it, as shells report it). A CMD that can't be started exits
//!    127 (not found) or 126 (not executable), also as shells do.
//!
//! The in-process proxy logs to stderr at `warn` (`CREDPROXY_LOG` to change it), so CMD's
//! stdout is CMD's alone.

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::token::Failure;
use super::{ConfigArg, EXIT_RUNTIME};
use crate::config::{Config, Listen, ProviderConfig, RouteTarget};

/// How long requests CMD left in flight get once CMD has ended.
const AFTER_CMD_GRACE: Duration = Duration::from_secs(2);

/// Run a command with an in-process credproxy as its proxy.
#[derive(Debug, clap::Args)]
#[command(
    override_usage = "credproxy exec [--config PATH] -- CMD [ARGS]...",
    long_about = "Run CMD (no shell) with an in-process credproxy as its HTTP and HTTPS proxy: \
credproxy listens on a free loopback port, intercepts HTTPS to the claimed hosts with its local \
CA (state_dir/ca, made on first need), and CMD gets the variables of `credproxy env` (HTTP_PROXY, \
HTTPS_PROXY, NO_PROXY, SSL_CERT_FILE and the other CA bundle variables, pointing at a bundle of \
the roots already trusted plus credproxy's CA), replacing the parent's values of those names.\n\n\
Tokens come from the same store as `credproxy run` (safe to run beside it). A provider that \
needs `credproxy login NAME` first is named before CMD starts. SIGTERM and SIGINT are passed to \
CMD. credproxy's own logs go to stderr at warn level (CREDPROXY_LOG=info for more).\n\n\
Exit codes: CMD's own; 128+N when signal N ended it; 126/127 when CMD can't be run / is not \
found; 1 when credproxy could not start or a provider needs a login; 2 a config or usage error.",
    after_help = "Examples:\n  \
credproxy exec -- curl https://api.github.com/user\n  \
credproxy exec --config ./credproxy.toml -- python3 script.py\n  \
credproxy exec -- sh -c 'git clone https://git.internal.example/repo.git'"
)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// The command and its arguments (after `--`).
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<OsString>,
}

pub fn main(args: Args) -> ExitCode {
    super::token::init_logging();
    let (path, config) = match args.config.load() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    for w in &config.warnings {
        tracing::warn!("{w}");
    }
    let config = private(config);
    if let Err(f) = check_logins(&config, &path) {
        return f.report();
    }
    let bundle = match super::ca::ready(&config) {
        Ok((_, bundle)) => bundle,
        Err(f) => return f.report(),
    };
    let run = async {
        let running = crate::app::start_with(
            config.clone(),
            crate::app::Options {
                no_default_admin: true,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            Failure::runtime(anyhow::Error::new(e).context("credproxy could not start"))
        })?;
        let addr = running.main_addr();
        let secret = config.proxy.proxy_auth.as_ref().map(|s| s.get());
        let url = super::env::with_auth(
            &format!("http://{addr}"),
            secret.as_ref().map(|s| s.expose()),
        )?;
        let vars = super::env::variables(&url, &bundle);
        let status = run_command(&args.command, &vars, &config.secret_vars).await;
        running.shutdown(AFTER_CMD_GRACE).await;
        status
    };
    match super::token::block_on(run) {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

/// The config for an in-process proxy of one command's own: loopback port 0, interception on.
pub fn private(mut config: Config) -> Config {
    let loopback = Listen::Tcp((std::net::Ipv4Addr::LOCALHOST, 0).into());
    config.proxy.listen = loopback.clone();
    if config.proxy.admin_listen.is_some() {
        config.proxy.admin_listen = Some(loopback);
    }
    config
        .routes
        .retain(|r| matches!(r.target, RouteTarget::PathPrefix(_)));
    config.proxy.intercept = crate::config::Intercept::Claimed;
    config
}

/// Whether `provider` can't get a token without a person: it needs `credproxy login`, and the
/// store holds no refresh token nor a still valid access token for it.
pub fn needs_login(
    provider: &ProviderConfig,
    stored: Option<&crate::token::StoredToken>,
    clock: &crate::clock::Clock,
) -> bool {
    if !(provider.needs_login() || super::check::needs_password(provider)) {
        return false;
    }
    match stored {
        None => true,
        Some(t) => t.refresh_token.is_none() && !t.is_valid(clock),
    }
}

/// Every provider that needs a login first, named with its command; `Ok` when there is none.
fn check_logins(config: &Config, path: &std::path::Path) -> Result<(), Failure> {
    let waiting: Vec<&Arc<ProviderConfig>> = config
        .providers
        .iter()
        .filter(|p| p.needs_login() || super::check::needs_password(p))
        .collect();
    if waiting.is_empty() {
        return Ok(());
    }
    let store = crate::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {}))
        .map_err(|e| {
            Failure::runtime(anyhow::Error::new(e).context("can't open the token store"))
        })?;
    let clock = crate::clock::Clock::new();
    let missing: Vec<&str> = waiting
        .iter()
        .filter(|p| {
            let stored = store.load(&p.name).ok().flatten();
            needs_login(p, stored.as_ref(), &clock)
        })
        .map(|p| p.name.as_str())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        names => {
            let config_arg = format!(" --config {}", path.display());
            let lines: Vec<String> = names
                .iter()
                .map(|n| format!("credproxy login {n}{config_arg}"))
                .collect();
            Err(Failure::runtime(anyhow::anyhow!(
                "{} must be logged in before the command runs (no token is stored to refresh from)",
                names.join(", ")
            ))
            .hint(format!("run {}", lines.join(", then "))))
        }
    }
}

/// Spawn CMD with `vars`, forward signals, and give back its status as an exit code.
/// Runs CMD with `vars` set (replacing the parent's values) and without the variables the
/// config's secrets come from (`hidden`): the key stays with credproxy, not with the command.
async fn run_command(
    command: &[OsString],
    vars: &[(&str, String)],
    hidden: &std::collections::BTreeSet<String>,
) -> Result<ExitCode, Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let (program, rest) = command.split_first().expect("clap requires CMD");
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(rest);
    for name in hidden {
        cmd.env_remove(name);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let listen = |kind| {
        signal(kind).map_err(|e| Failure::runtime(anyhow::anyhow!("can't listen for signals: {e}")))
    };
    // Listening before the spawn: a signal that arrives in between is not lost.
    let mut term = listen(SignalKind::terminate())?;
    let mut int = listen(SignalKind::interrupt())?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let shown = program.to_string_lossy();
            let (code, hint) = match e.kind() {
                std::io::ErrorKind::NotFound => (127, "is it installed and on PATH?"),
                std::io::ErrorKind::PermissionDenied => (126, "is it an executable file?"),
                _ => (126, "check the command"),
            };
            eprintln!("error: can't run `{shown}`: {e}\nhint: {hint}");
            return Ok(ExitCode::from(code));
        }
    };
    let pid = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let forward = |sig: rustix::process::Signal| {
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = term.recv() => forward(rustix::process::Signal::TERM),
            _ = int.recv() => {
                if !from_terminal() {
                    forward(rustix::process::Signal::INT);
                }
            }
        }
    };
    let status =
        status.map_err(|e| Failure::runtime(anyhow::anyhow!("can't wait for the command: {e}")))?;
    Ok(ExitCode::from(exit_code(status)))
}

/// Whether a SIGINT most likely came from the terminal (Ctrl-C): our process group is the
/// terminal's foreground group, which the terminal signals whole, CMD included.
fn from_terminal() -> bool {
    rustix::termios::tcgetpgrp(std::io::stdin()).is_ok_and(|fg| fg == rustix::process::getpgrp())
}

/// A child's status as a shell reports it: its exit code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(sig)) => (128 + sig) as u8,
        (None, None) => EXIT_RUNTIME,
    }
}
