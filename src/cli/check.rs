//! `credproxy check [--online]`: validate the config and say what is wrong and where, in file
//! order; with `--online`, also obtain a token from every provider that needs no person.
//!
//! The loader collects every problem (file, line, column, key); this file prints them in the
//! order of the file, then their count. `--online` uses a throwaway in-memory token store, so it
//! never touches the tokens `credproxy run` keeps.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::token::{self, StoreKind, human_duration};
use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};
use crate::config::{AuthConfig, Config, Grant, ProviderConfig};
use crate::token::error::chain;
use crate::token::{EngineContext, Fault};

/// Check a config file: every problem with its file, line and key; exit 2 if any.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Check a config file without starting anything: every problem is reported with \
its file, line, column and key, in the order of the file, then their count (an unset ${VAR}, an unreadable secret file, \
a missing or malformed URL, an unknown key).\n\n\
With --online, also try to obtain a token from each provider that needs no person \
(client_credentials, password with the password in the config, static, blendvision) and say which \
work and why the others don't. Tokens obtained this way are thrown away; the token store is not \
touched. Providers that need `credproxy login` are listed as skipped. Note that a blendvision \
provider configured with email + password mints a new API token at each online check.\n\n\
Exit codes: 0 the config is valid (and, with --online, every provider tried works); 1 --online: \
a provider failed; 2 the config has problems.",
    after_help = "Examples:\n  \
credproxy check --config credproxy.toml\n  \
credproxy check --online          # also obtain a token from each provider that needs no login"
)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Also obtain a token from each provider that needs no person, and report which work.
    #[arg(long)]
    pub online: bool,
}

pub fn main(args: Args) -> ExitCode {
    token::init_logging();
    let path = match crate::config::locate(args.config.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match crate::config::load(&path) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{}", errors.report());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &config.warnings {
        eprintln!("warning: {w}");
    }
    for n in &config.notes {
        eprintln!("note: {n}");
    }
    println!("{}: ok", path.display());
    for p in &config.providers {
        println!("  {}", describe(p));
    }
    for c in &config.callers {
        println!("  caller {} may use: {}", c.name, c.providers.join(", "));
    }
    if !args.online {
        return ExitCode::SUCCESS;
    }
    let all_ok = match token::block_on(async { Ok(online(&config).await) }) {
        Ok(ok) => ok,
        Err(f) => return f.report(),
    };
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    }
}

/// One line about a valid provider.
fn describe(p: &ProviderConfig) -> String {
    let hosts: Vec<String> = p.hosts.iter().map(|h| h.to_string()).collect();
    let how = match &p.auth {
        AuthConfig::Static { .. } => "static token".to_owned(),
        AuthConfig::OAuth2(o) => format!("{} grant", o.grant.as_str()),
        AuthConfig::BlendVision(_) => "blendvision API token".to_owned(),
    };
    let login = if p.needs_login() || needs_password(p) {
        format!("  [needs `credproxy login {}` once]", p.name)
    } else {
        String::new()
    };
    let how = match p.inject {
        crate::credential::Inject::Bearer => how,
        ref other => format!("{how}, sent in {}", other.describe()),
    };
    format!(
        "provider {} (preset {}, {how}): hosts {} -> {}{login}",
        p.name,
        p.preset.name(),
        hosts.join(", "),
        p.upstream.origin(),
    )
}

/// A password grant without the password in the config: `login` prompts for it.
pub(super) fn needs_password(p: &ProviderConfig) -> bool {
    matches!(&p.auth, AuthConfig::OAuth2(o) if o.grant == Grant::Password && o.password.is_none())
}

/// What `--online` did with one provider.
enum Probe {
    Ok(String),
    Failed { reason: String, hint: String },
    Skipped(String),
}

/// Try every provider that needs no person; print a line each. Whether all of them worked.
async fn online(config: &Config) -> bool {
    println!("online check (tokens are obtained and thrown away; the token store is not touched):");
    let ctx = match token::engine(config, StoreKind::Memory) {
        Ok(ctx) => ctx,
        Err(f) => {
            eprintln!("error: {}", f.message());
            return false;
        }
    };
    let store_ok = probe_store(config).await;
    let probes =
        futures_util::future::join_all(config.providers.iter().map(|p| probe(p, &ctx))).await;
    let width = config
        .providers
        .iter()
        .map(|p| p.name.len())
        .max()
        .unwrap_or(0);
    let mut all_ok = store_ok;
    for (p, result) in config.providers.iter().zip(probes) {
        let name = &p.name;
        match result {
            Probe::Ok(what) => println!("  {name:width$}  ok: {what}"),
            Probe::Skipped(why) => println!("  {name:width$}  skipped: {why}"),
            Probe::Failed { reason, hint } => {
                all_ok = false;
                println!("  {name:width$}  failed: {reason}");
                println!("  {:width$}  hint: {hint}", "");
            }
        }
    }
    all_ok
}

/// With `[store] kind = "redis"`: connect and see Redis answer (nothing is read or written).
/// Whether it did; prints a line either way.
async fn probe_store(config: &Config) -> bool {
    let crate::config::StoreSettings::Redis(_) = &config.store else {
        return true;
    };
    let at = crate::token::store::describe(&config.proxy, &config.store);
    let store = match crate::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {})) {
        Ok(s) => s,
        Err(e) => {
            println!(
                "  store  failed: can't open the token store at {at}: {}",
                super::healthcheck::one_line(&e)
            );
            return false;
        }
    };
    // The store's pinger reports within about a second; give it three.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let health = store.health();
        match health.as_ref().and_then(|h| h.unavailable.as_deref()) {
            None => {
                println!("  store  ok: Redis answers at {at}");
                return true;
            }
            Some(why) if tokio::time::Instant::now() >= deadline => {
                println!("  store  failed: {why}");
                println!("         hint: check [store] url ({at}) and that Redis answers there");
                return false;
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn probe(p: &ProviderConfig, ctx: &EngineContext) -> Probe {
    let name = &p.name;
    match &p.auth {
        AuthConfig::Static { .. } => {
            return Probe::Ok("static token from the config (nothing to obtain)".into());
        }
        AuthConfig::OAuth2(o) if o.grant == Grant::AuthorizationCode => {
            return Probe::Skipped(format!(
                "needs a person: `credproxy login {name}` (authorization code)"
            ));
        }
        _ if needs_password(p) => {
            return Probe::Skipped(format!(
                "no password in the config: `credproxy login {name}` prompts for it"
            ));
        }
        _ => {}
    }
    match crate::token::obtain_once(p, ctx).await {
        Ok(t) => Probe::Ok(match t.expires_at {
            Some(at) => format!(
                "token obtained, expires in {}",
                human_duration(at - ctx.clock.unix_now())
            ),
            None => "token obtained".into(),
        }),
        Err(e) => {
            let hint = match e.fault() {
                Fault::Transient { .. } => {
                    "the server failed or could not be reached; try again later".to_owned()
                }
                _ => format!(
                    "check providers.{name} (client_id, client_secret, username, password, URLs)"
                ),
            };
            Probe::Failed {
                reason: chain(&e),
                hint,
            }
        }
    }
}
