//! `credproxy logout NAME`: revoke the stored tokens where the provider can (RFC 7009), forget
//! them, and say what was done.
//!
//! The work is [`crate::token::logout`]'s, under the store's lock; this file is the command. A
//! running `credproxy run` re-reads the store every 5 s: it stops serving the forgotten token and,
//! for a provider that needs a person, reports `login_required`.

use std::process::ExitCode;

use super::ConfigArg;
use super::token::{self, Failure, StoreKind};
use crate::config::AuthConfig;
use crate::token::LogoutOutcome;

/// Forget a provider's stored tokens, revoking them where the provider can.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Forget provider NAME's stored tokens, revoking them first (RFC 7009) when the \
provider has a revoke_url.\n\n\
A failed revocation is reported and the tokens are forgotten anyway. Without a revoke_url the \
tokens stay valid at the provider until they expire; credproxy just no longer holds them. \
A running `credproxy run` stops using them within a few seconds: a provider that needs a person \
then reports login_required until `credproxy login NAME`; one that needs none obtains a new token \
with its configured credentials.\n\n\
Exit codes: 0 done (or nothing was stored); 1 the store could not be changed; 2 a config or usage \
error.",
    after_help = "Examples:\n  \
credproxy logout apicbase\n  \
credproxy logout baselime --config ~/.config/credproxy/config.toml"
)]
pub struct Args {
    /// The provider, as named in the config (`[providers.NAME]`).
    #[arg(value_name = "NAME")]
    pub name: String,
    #[command(flatten)]
    pub config: ConfigArg,
}

pub fn main(args: Args) -> ExitCode {
    token::init_logging();
    let run = async {
        let (config, provider) = token::load_provider(&args.config, &args.name)?;
        if let AuthConfig::Static { .. } = provider.auth {
            println!(
                "{} uses a static token from the config: nothing is stored, nothing to log out of",
                provider.name
            );
            return Ok(());
        }
        let ctx = token::engine(&config, StoreKind::State)?;
        let outcome = crate::token::logout(&provider, &ctx).await.map_err(|e| {
            Failure::runtime(anyhow::anyhow!("{}", crate::token::error::chain(&e))).hint(format!(
                "the tokens are in {}; check that you can write there",
                config.proxy.state_dir.display()
            ))
        })?;
        let revoke_url = match &provider.auth {
            AuthConfig::OAuth2(o) => o.revoke_url.as_ref().map(|u| u.to_string()),
            _ => None,
        };
        for line in describe(&provider.name, outcome, revoke_url.as_deref()) {
            println!("{line}");
        }
        Ok(())
    };
    match token::block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

/// What to tell the user about a logout.
fn describe(name: &str, outcome: LogoutOutcome, revoke_url: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    if !outcome.removed {
        out.push(format!("{name}: no stored tokens; nothing to do"));
        return out;
    }
    match (revoke_url, outcome.revoked) {
        (Some(url), true) => out.push(format!(
            "{name}: revoked the tokens at {url} and removed them from the store"
        )),
        (Some(url), false) => out.push(format!(
            "{name}: removed the tokens from the store, but revoking them at {url} failed (see \
             the warning above): they stay valid at the provider until they expire"
        )),
        (None, _) => out.push(format!(
            "{name}: removed the tokens from the store (the provider has no revoke_url: they \
             stay valid at the provider until they expire)"
        )),
    }
    out.push(format!("`credproxy login {name}` logs in again"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn says_what_was_done() {
        let none = LogoutOutcome {
            removed: false,
            revoked: false,
        };
        assert_eq!(
            describe("x", none, None),
            ["x: no stored tokens; nothing to do"]
        );
        let both = LogoutOutcome {
            removed: true,
            revoked: true,
        };
        assert!(describe("x", both, Some("https://a/revoke"))[0].contains("revoked the tokens"));
        let removed = LogoutOutcome {
            removed: true,
            revoked: false,
        };
        assert!(describe("x", removed, Some("https://a/revoke"))[0].contains("failed"));
        assert!(describe("x", removed, None)[0].contains("no revoke_url"));
    }
}
