//! `credproxy ca init [--force]`, `ca show`, `ca bundle [--out F]`: the local CA that signs the
//! certificates of intercepted HTTPS (DESIGN.md "HTTPS clients"), and the additive bundle
//! clients are pointed at (`crate::ca::bundle`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::token::Failure;
use super::{ConfigArg, EXIT_RUNTIME};
use crate::ca::LocalCa;
use crate::ca::bundle;
use crate::config::Config;

/// Make, show or bundle the local CA used to intercept HTTPS to claimed hosts.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "The local CA credproxy signs its certificates for intercepted HTTPS with \
(`[proxy] intercept = \"claimed\"`, `credproxy exec`). It lives in state_dir/ca/: ca.pem (the \
certificate clients trust) and ca-key.pem (0600). `run`, `exec` and `ca init` make it on first \
need.\n\n\
The bundle (state_dir/ca/bundle.pem) is the roots a client already trusts (the parent's \
SSL_CERT_FILE if set, else the system's) plus credproxy's CA: point SSL_CERT_FILE and friends at \
it, never at ca.pem alone, which would make every other host untrusted.",
    after_help = "Examples:\n  \
credproxy ca init\n  \
credproxy ca show\n  \
credproxy ca bundle --out ./bundle.pem"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: CaCommand,
    /// Config file. Default: $CREDPROXY_CONFIG, ./credproxy.toml,
    /// $XDG_CONFIG_HOME/credproxy/config.toml, /etc/credproxy/config.toml.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Make the CA (if there is none), and its bundle.
    ///
    /// With --force, make a new one even if there is one: every client must then trust the new
    /// ca.pem (`credproxy trust install` again), and a running credproxy must be restarted.
    Init {
        /// Replace the CA that is there.
        #[arg(long)]
        force: bool,
    },
    /// Show the CA: its path, SHA-256 fingerprint, validity and name constraints.
    Show,
    /// Write the additive bundle: the parent's SSL_CERT_FILE (else the system roots), plus
    /// credproxy's CA.
    Bundle {
        /// Where to write it (default: state_dir/ca/bundle.pem, the file `env` and `exec` use).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn main(args: Args) -> ExitCode {
    super::token::init_logging();
    let (_, config) = match (ConfigArg {
        config: args.config.clone(),
    })
    .load_settings()
    {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let done = match args.command {
        CaCommand::Init { force } => init(&config, force),
        CaCommand::Show => show(&config),
        CaCommand::Bundle { out } => write_bundle(&config, out),
    };
    match done {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

fn ca_failure(e: crate::ca::CaError) -> Failure {
    Failure::runtime(anyhow::Error::new(e))
}

/// The CA for the config, made when missing, with its bundle brought up to date: what `exec`
/// and `env` start with.
pub fn ready(config: &Config) -> Result<(LocalCa, PathBuf), Failure> {
    let ca = crate::app::open_ca(config).map_err(ca_failure)?;
    let bundle = bundle::ensure(&ca).map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    Ok((ca, bundle))
}

fn init(config: &Config, force: bool) -> Result<ExitCode, Failure> {
    let dir = crate::app::ca_dir(config);
    let existed = LocalCa::existing(&dir).map_err(ca_failure)?.is_some();
    let ca = if force {
        let subtrees = crate::app::claimed_subtrees(config);
        let constrain = config.proxy.ca_name_constraints.then_some(&subtrees[..]);
        LocalCa::recreate(&dir, constrain).map_err(ca_failure)?
    } else {
        crate::app::open_ca(config).map_err(ca_failure)?
    };
    let out = bundle::default_path(&dir);
    bundle::write(&ca, &out).map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    match (existed, force) {
        (true, false) => println!(
            "a CA is already there (ca init --force makes a new one, which every client must trust again)"
        ),
        (true, true) => println!(
            "made a new CA: trust it again (credproxy trust install) and restart a running credproxy"
        ),
        (false, _) => println!("made a new CA"),
    }
    print!("{}", describe(&ca));
    println!("bundle:      {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn show(config: &Config) -> Result<ExitCode, Failure> {
    let dir = crate::app::ca_dir(config);
    let Some(ca) = LocalCa::existing(&dir).map_err(ca_failure)? else {
        eprintln!(
            "error: no CA in {} yet\nhint: `credproxy ca init` makes one (so do `credproxy exec` and `run` with intercept = \"claimed\")",
            dir.display()
        );
        return Ok(ExitCode::from(EXIT_RUNTIME));
    };
    print!("{}", describe(&ca));
    let out = bundle::default_path(&dir);
    let state = if !out.exists() {
        "missing (credproxy ca bundle writes it)"
    } else if bundle::is_stale(&ca) {
        "out of date (credproxy ca bundle rewrites it)"
    } else {
        "up to date"
    };
    println!("bundle:      {} ({state})", out.display());
    Ok(ExitCode::SUCCESS)
}

/// The lines `ca init` and `ca show` print about a CA.
fn describe(ca: &LocalCa) -> String {
    let date = |t: time::OffsetDateTime| {
        jiff::Timestamp::from_second(t.unix_timestamp())
            .map_or_else(|_| t.to_string(), |ts| ts.to_string())
    };
    let constraints = match ca.permitted() {
        None => "none (it can sign for any name)".to_owned(),
        Some(p) => {
            let mut names: Vec<String> = p.dns.clone();
            names.extend(p.ips.iter().map(|ip| ip.to_string()));
            if names.is_empty() {
                "permits no name".to_owned()
            } else {
                format!("permits only {}", names.join(", "))
            }
        }
    };
    format!(
        "certificate: {}\nkey:         {}\nsha256:      {}\nvalid:       {} to {}\nconstraints: {constraints}\n",
        ca.cert_path().display(),
        ca.dir().join(crate::ca::files::KEY_FILE).display(),
        ca.fingerprint(),
        ca.not_before().map_or_else(|| "?".to_owned(), date),
        date(ca.not_after()),
    )
}

fn write_bundle(config: &Config, out: Option<PathBuf>) -> Result<ExitCode, Failure> {
    let ca = crate::app::open_ca(config).map_err(ca_failure)?;
    let out = out.unwrap_or_else(|| bundle::default_path(ca.dir()));
    let roots = bundle::write(&ca, &out).map_err(|e| Failure::runtime(anyhow::Error::new(e)))?;
    println!(
        "wrote {}: {roots} plus credproxy's CA ({})",
        out.display(),
        ca.cert_path().display()
    );
    Ok(ExitCode::SUCCESS)
}
