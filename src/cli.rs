//! The command line: one file per command under `cli/`.
//!
//! Exit codes (DESIGN.md): 0 success, 1 runtime failure, 2 usage or config error. `anyhow` lives
//! here, at the binary's edge, and nowhere else.

mod ca;
mod check;
mod demo;
mod doctor;
mod env;
mod exec;
mod healthcheck;
mod logging;
mod login;
mod logout;
mod run;
mod status;
mod token;
mod trust;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// credproxy: a local proxy that holds API credentials so applications don't have to.
///
/// Point an application at credproxy (HTTP_PROXY=http://127.0.0.1:8080, or a [[routes]] base URL);
/// credproxy adds `Authorization: Bearer <fresh token>` for the provider that owns the host and
/// forwards over TLS.
#[derive(Debug, Parser)]
#[command(name = "credproxy", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    ///
    /// Serves until SIGTERM or SIGINT, then lets requests in flight finish (proxy.shutdown_grace).
    /// Exit codes: 0 stopped cleanly; 1 could not start (a port in use, the token store); 2 the
    /// config has problems (`credproxy check` lists them).
    #[command(after_help = "Examples:\n  \
        credproxy run --config /etc/credproxy/config.toml\n  \
        CREDPROXY_LOG=debug credproxy run --log-format json")]
    Run(run::Args),
    /// Run credproxy on an embedded default: a local token server and API, and the proxy in front.
    ///
    /// No config, no account: prints a curl line to try, logs each token refresh; Ctrl-C stops.
    #[command(after_help = "Examples:\n  \
        credproxy demo\n  \
        credproxy demo --listen 127.0.0.1:7001 --token-lifetime 10s")]
    Demo(demo::Args),
    Check(check::Args),
    /// Show each provider's state, token expiry, refreshes and last error (never a secret).
    ///
    /// Asks the running proxy's admin listener; when none answers, reads the token store.
    ///
    /// Example: credproxy status --json
    Status(status::Args),
    /// Exit 0 when the running proxy's /healthz answers 200 within 2 s, else 1 (Docker HEALTHCHECK).
    ///
    /// Example: credproxy healthcheck --url http://127.0.0.1:9090/healthz
    Healthcheck(healthcheck::Args),
    Login(login::Args),
    Token(token::Args),
    Logout(logout::Args),
    Exec(exec::Args),
    Env(env::Args),
    Ca(ca::Args),
    Trust(trust::Args),
    Doctor(doctor::Args),
}

/// Where the config comes from (shared by the commands that read it).
#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// Config file. Default: $CREDPROXY_CONFIG, ./credproxy.toml,
    /// $XDG_CONFIG_HOME/credproxy/config.toml, /etc/credproxy/config.toml.
    #[arg(long, short = 'c', value_name = "PATH")]
    pub config: Option<PathBuf>,
}

impl ConfigArg {
    /// Find and load the config; on failure, say what is wrong on stderr and give the exit code.
    pub fn load(&self) -> Result<(PathBuf, crate::config::Config), ExitCode> {
        self.load_with(crate::config::load)
    }

    /// [`ConfigArg::load`] without running `{ command }` secrets, for commands that only need
    /// to know where things are ([`crate::config::load_settings`]).
    pub fn load_settings(&self) -> Result<(PathBuf, crate::config::Config), ExitCode> {
        self.load_with(crate::config::load_settings)
    }

    fn load_with(
        &self,
        load: fn(&std::path::Path) -> Result<crate::config::Config, crate::config::ConfigErrors>,
    ) -> Result<(PathBuf, crate::config::Config), ExitCode> {
        let path = crate::config::locate(self.config.as_deref()).map_err(|e| {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        })?;
        let config = load(&path).map_err(|errors| {
            eprintln!(
                "error: {}\n(run `credproxy check --config {}` for details)",
                errors.report(),
                path.display()
            );
            ExitCode::from(EXIT_CONFIG)
        })?;
        Ok((path, config))
    }
}

pub fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::main(args),
        Command::Check(args) => check::main(args),
        Command::Status(args) => status::main(args),
        Command::Healthcheck(args) => healthcheck::main(args),
        Command::Demo(args) => demo::main(args),
        Command::Login(args) => login::main(args),
        Command::Token(args) => token::main(args),
        Command::Logout(args) => logout::main(args),
        Command::Exec(args) => exec::main(args),
        Command::Env(args) => env::main(args),
        Command::Ca(args) => ca::main(args),
        Command::Trust(args) => trust::main(args),
        Command::Doctor(args) => doctor::main(args),
    }
}

/// `credproxy status | head -1`: when the reader of standard output goes away, `println!` panics
/// with "failed printing to stdout: Broken pipe" (Rust ignores SIGPIPE). Such a command has
/// nothing left to say: exit quietly with 141 (128 + SIGPIPE, what a shell tool would), not with
/// a panic and a backtrace. Every other panic is reported as before.
fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

/// Exit code 2: usage or config error.
pub const EXIT_CONFIG: u8 = 2;
/// Exit code 1: runtime failure.
pub const EXIT_RUNTIME: u8 = 1;

/// Print an error chain to stderr (`error: top: cause: cause`).
pub fn report(err: &anyhow::Error) {
    eprintln!("error: {err:#}");
}
