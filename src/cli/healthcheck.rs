//! `credproxy healthcheck`: exit 0 when the running proxy's `/healthz` answers 200, else 1.
//!
//! Made for Docker's `HEALTHCHECK` (the image has no curl): it asks the admin listener named by
//! the config's `admin_listen`, or 127.0.0.1:9090 when there is no config (or `--url`).

use std::process::ExitCode;
use std::time::Duration;

use crate::admin::{self, AdminTarget};

use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};

/// The whole check, connect to last byte, must finish within this.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  credproxy healthcheck\n  \
    credproxy healthcheck --url http://127.0.0.1:9090/healthz\n\n\
    Dockerfile:\n  HEALTHCHECK CMD [\"/credproxy\", \"healthcheck\"]")]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// What to check instead of the config's admin listener, e.g. http://127.0.0.1:9090/healthz
    /// (the path defaults to /healthz) or unix:/run/credproxy/admin.sock.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

pub fn main(args: Args) -> ExitCode {
    let (target, path, note) = match args.url.as_deref() {
        Some(url) => match AdminTarget::parse_url(url) {
            Ok((target, path)) => (target, path, None),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
        None => match target_from_config(&args.config) {
            Ok((target, note)) => (target, None, note),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let path = path.unwrap_or_else(|| "/healthz".to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("unhealthy: can't start the runtime: {e}");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let note = note.map(|n| format!(" ({n})")).unwrap_or_default();
    match runtime.block_on(admin::get(&target, &path, TIMEOUT)) {
        Ok((status, _)) if status == http::StatusCode::OK => {
            println!("ok: {target}{path}");
            ExitCode::SUCCESS
        }
        Ok((status, _)) => {
            eprintln!("unhealthy: {target}{path} answered {status}{note}");
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            eprintln!("unhealthy: {}{note}", one_line(&e));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// The config's admin listener; with no config file, the default. An explicit `--config` that
/// can't be loaded is an error; a config found by the default search that can't be loaded (say a
/// variable missing from the healthcheck's environment) falls back to the default, with a note.
fn target_from_config(arg: &ConfigArg) -> Result<(AdminTarget, Option<String>), String> {
    let default = AdminTarget::from_addr(admin::DEFAULT_LISTEN);
    let path = match crate::config::locate(arg.config.as_deref()) {
        Ok(p) => p,
        Err(_) => return Ok((default, None)),
    };
    match crate::config::load_settings(&path) {
        Ok(config) => Ok((
            AdminTarget::from_listen(&admin::listen_of(&config.proxy)),
            None,
        )),
        Err(e) if arg.config.is_some() => Err(format!("{e}")),
        Err(_) => Ok((
            default,
            Some(format!(
                "{} has errors; tried the default address",
                path.display()
            )),
        )),
    }
}

/// An error and its causes on one line.
pub(super) fn one_line(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s.replace('\n', " ")
}
