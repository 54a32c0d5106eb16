//! `credproxy trust install | uninstall | status`: the local CA in the system trust store, so
//! programs that read the system roots accept intercepted HTTPS without any variable.
//!
//! | system | install | uninstall |
//! |---|---|---|
//! | Debian, Ubuntu | `/usr/local/share/ca-certificates/credproxy.crt` + `update-ca-certificates` | remove it + `update-ca-certificates` |
//! | Fedora, RHEL | `/etc/pki/ca-trust/source/anchors/credproxy.pem` + `update-ca-trust extract` | remove it + `update-ca-trust extract` |
//! | Arch and other p11-kit systems | `trust anchor --store ca.pem` | `trust anchor --remove ca.pem` |
//! | macOS | `security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain` | `security remove-trusted-cert -d` |
//!
//! Stores credproxy can't reach for every user (Java's cacerts, NSS databases of Firefox and
//! Chrome, Go on macOS, which reads the keychain, not `SSL_CERT_FILE`) get the exact command
//! printed. The system stores need root: without it, the `sudo` line is printed, naming the CA
//! file itself (`--ca`), since under sudo `$HOME` and with it the default `state_dir` differ.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use super::token::Failure;
use super::{ConfigArg, EXIT_RUNTIME};
use crate::ca::bundle::{SYSTEM_BUNDLES, pem};

const DEBIAN_ANCHOR: &str = "/usr/local/share/ca-certificates/credproxy.crt";
const FEDORA_ANCHORS: &str = "/etc/pki/ca-trust/source/anchors";
const MAC_KEYCHAIN: &str = "/Library/Keychains/System.keychain";

/// Put credproxy's CA in the system trust store, take it out, or say where it is trusted.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Put credproxy's local CA (state_dir/ca/ca.pem) in the system trust store, take \
it out again, or say where it is trusted. Programs that read the system roots (curl, Python's \
ssl, Go on Linux, git, most CLIs) then accept credproxy's intercepted HTTPS with only HTTPS_PROXY \
set. Debian/Ubuntu (update-ca-certificates), Fedora/RHEL (update-ca-trust), Arch and other \
p11-kit systems (trust anchor), macOS (security add-trusted-cert).\n\n\
install and uninstall need root: run as a user, they print the sudo line to use. Java, \
Firefox/Chrome (NSS) and Go on macOS keep their own stores: the commands for those are printed.\n\n\
Exit codes: 0 done (status: the system trusts the CA); 1 it could not be done, root is needed \
(status: the system does not trust the CA); 2 a config or usage error.\n\n\
Without `credproxy exec` or the CA bundle, only do this on a machine you control: any process \
that can read ca-key.pem can then make certificates your programs accept (see ca_name_constraints).",
    after_help = "Examples:\n  \
sudo credproxy trust install\n  \
credproxy trust status\n  \
sudo credproxy trust uninstall --ca ~/.local/state/credproxy/ca/ca.pem"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: TrustCommand,
    /// The CA certificate (default: state_dir/ca/ca.pem of the config).
    #[arg(long, value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// Config file. Default: $CREDPROXY_CONFIG, ./credproxy.toml,
    /// $XDG_CONFIG_HOME/credproxy/config.toml, /etc/credproxy/config.toml.
    #[arg(long, short = 'c', value_name = "PATH", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum TrustCommand {
    /// Add the CA to the system trust store (needs root).
    Install,
    /// Take the CA out of the system trust store (needs root).
    Uninstall,
    /// Say where the CA is trusted.
    Status,
}

/// The system's trust store, as found on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemStore {
    Debian,
    Fedora,
    P11Kit,
    MacOs,
}

impl SystemStore {
    pub fn detect() -> Option<SystemStore> {
        if cfg!(target_os = "macos") {
            return Some(SystemStore::MacOs);
        }
        if on_path("update-ca-certificates") && Path::new(DEBIAN_ANCHOR).parent()?.is_dir() {
            return Some(SystemStore::Debian);
        }
        if on_path("update-ca-trust") && Path::new(FEDORA_ANCHORS).is_dir() {
            return Some(SystemStore::Fedora);
        }
        if on_path("trust") {
            return Some(SystemStore::P11Kit);
        }
        None
    }

    fn name(self) -> &'static str {
        match self {
            SystemStore::Debian => "the Debian/Ubuntu store (update-ca-certificates)",
            SystemStore::Fedora => "the Fedora/RHEL store (update-ca-trust)",
            SystemStore::P11Kit => "the p11-kit store (trust anchor)",
            SystemStore::MacOs => "the macOS System keychain",
        }
    }
}

pub fn main(args: Args) -> ExitCode {
    super::token::init_logging();
    let ca = match ca_file(&args) {
        Ok(p) => p,
        Err(f) => return f.report(),
    };
    let done = match args.command {
        TrustCommand::Install | TrustCommand::Uninstall => change(args.command, &ca),
        TrustCommand::Status => status(&ca),
    };
    match done {
        Ok(code) => code,
        Err(f) => f.report(),
    }
}

/// The CA file: `--ca`, else the config's (made when installing and there is none).
fn ca_file(args: &Args) -> Result<PathBuf, Failure> {
    if let Some(p) = &args.ca {
        return std::path::absolute(p)
            .map_err(|e| Failure::config(anyhow::anyhow!("--ca {}: {e}", p.display())));
    }
    let (_, config) = (ConfigArg {
        config: args.config.clone(),
    })
    .load_settings()
    .map_err(|_| {
        Failure::config(anyhow::anyhow!("no config to find the CA in"))
            .hint("pass the CA file: --ca PATH/ca.pem")
    })?;
    let ca = match args.command {
        TrustCommand::Install => crate::app::open_ca(&config)
            .map_err(|e| Failure::runtime(anyhow::Error::new(e)))?
            .cert_path(),
        _ => crate::app::ca_dir(&config).join(crate::ca::files::CERT_FILE),
    };
    std::path::absolute(&ca).map_err(|e| Failure::runtime(anyhow::anyhow!("{e}")))
}

/// The CA certificate's PEM text and its base64 body (for looking it up in bundles).
fn read_ca(ca: &Path) -> Result<(String, String), Failure> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let der = CertificateDer::from_pem_file(ca).map_err(|e| {
        Failure::runtime(anyhow::anyhow!(
            "can't read the CA certificate {}: {e}",
            ca.display()
        ))
        .hint("`credproxy ca init` makes the CA; `credproxy ca show` says where it is")
    })?;
    let text = pem(&der);
    let body = text.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok((text, body))
}

fn change(what: TrustCommand, ca: &Path) -> Result<ExitCode, Failure> {
    let (text, _) = read_ca(ca)?;
    let Some(store) = SystemStore::detect() else {
        return Err(Failure::runtime(anyhow::anyhow!(
            "no system trust store credproxy knows here (update-ca-certificates, update-ca-trust, \
             trust, or macOS security)"
        ))
        .hint(format!(
            "add {} to your system's trust store by hand, or use `credproxy exec -- CMD`",
            ca.display()
        )));
    };
    let verb = if what == TrustCommand::Install {
        "install"
    } else {
        "uninstall"
    };
    if !rustix::process::geteuid().is_root() {
        let exe = std::env::current_exe()
            .map_or_else(|_| "credproxy".to_owned(), |p| p.display().to_string());
        eprintln!(
            "error: changing {} needs root\nhint: sudo {} trust {verb} --ca {}",
            store.name(),
            sh_quote(&exe),
            sh_quote(&ca.display().to_string())
        );
        return Ok(ExitCode::from(EXIT_RUNTIME));
    }
    let shown = ca.display().to_string();
    let steps: Vec<Step> = match (store, what) {
        (SystemStore::Debian, TrustCommand::Install) => vec![
            Step::Write(DEBIAN_ANCHOR.into(), text),
            Step::run(&["update-ca-certificates"]),
        ],
        (SystemStore::Debian, _) => vec![
            Step::Remove(DEBIAN_ANCHOR.into()),
            Step::run(&["update-ca-certificates"]),
        ],
        (SystemStore::Fedora, TrustCommand::Install) => vec![
            Step::Write(Path::new(FEDORA_ANCHORS).join("credproxy.pem"), text),
            Step::run(&["update-ca-trust", "extract"]),
        ],
        (SystemStore::Fedora, _) => vec![
            Step::Remove(Path::new(FEDORA_ANCHORS).join("credproxy.pem")),
            Step::run(&["update-ca-trust", "extract"]),
        ],
        (SystemStore::P11Kit, TrustCommand::Install) => {
            vec![Step::run(&["trust", "anchor", "--store", &shown])]
        }
        (SystemStore::P11Kit, _) => vec![Step::run(&["trust", "anchor", "--remove", &shown])],
        (SystemStore::MacOs, TrustCommand::Install) => vec![Step::run(&[
            "security",
            "add-trusted-cert",
            "-d",
            "-r",
            "trustRoot",
            "-k",
            MAC_KEYCHAIN,
            &shown,
        ])],
        (SystemStore::MacOs, _) => {
            vec![Step::run(&[
                "security",
                "remove-trusted-cert",
                "-d",
                &shown,
            ])]
        }
    };
    for step in steps {
        step.perform()?;
    }
    if what == TrustCommand::Install {
        println!("credproxy's CA is now trusted by {}", store.name());
    } else {
        println!("credproxy's CA is no longer in {}", store.name());
    }
    println!("{}", manual_commands(what, &shown));
    Ok(ExitCode::SUCCESS)
}

/// One step of an install or uninstall.
enum Step {
    Write(PathBuf, String),
    Remove(PathBuf),
    Run(Vec<String>),
}

impl Step {
    fn run(argv: &[&str]) -> Step {
        Step::Run(argv.iter().map(|s| (*s).to_owned()).collect())
    }

    fn perform(self) -> Result<(), Failure> {
        match self {
            Step::Write(path, text) => {
                let dir = path.parent().expect("an absolute path");
                let temp = crate::fsutil::temp_name(".credproxy-ca.tmp-");
                crate::fsutil::write_atomically(dir, &temp, &path, 0o644, text.as_bytes()).map_err(
                    |e| Failure::runtime(anyhow::anyhow!("can't write {}: {e}", path.display())),
                )
            }
            Step::Remove(path) => match std::fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("{} was not there", path.display());
                    Ok(())
                }
                Err(e) => Err(Failure::runtime(anyhow::anyhow!(
                    "can't remove {}: {e}",
                    path.display()
                ))),
            },
            Step::Run(argv) => {
                let shown = argv.join(" ");
                let out = Command::new(&argv[0])
                    .args(&argv[1..])
                    .output()
                    .map_err(|e| Failure::runtime(anyhow::anyhow!("can't run `{shown}`: {e}")))?;
                if out.status.success() {
                    return Ok(());
                }
                Err(Failure::runtime(anyhow::anyhow!(
                    "`{shown}` failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
    }
}

/// The commands for the stores credproxy does not change itself.
fn manual_commands(what: TrustCommand, ca: &str) -> String {
    let ca = sh_quote(ca);
    let lines = if what == TrustCommand::Install {
        [
            format!(
                "  Java:        keytool -importcert -noprompt -trustcacerts -alias credproxy -file {ca} -cacerts -storepass changeit"
            ),
            format!(
                "  Firefox/Chrome (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n credproxy -i {ca}   (Firefox: -d sql:PROFILE_DIR)"
            ),
            format!(
                "  Go on macOS (reads the login keychain, not SSL_CERT_FILE): security add-trusted-cert -r trustRoot -k ~/Library/Keychains/login.keychain-db {ca}"
            ),
        ]
    } else {
        [
            "  Java:        keytool -delete -alias credproxy -cacerts -storepass changeit".to_owned(),
            "  Firefox/Chrome (NSS): certutil -d sql:$HOME/.pki/nssdb -D -n credproxy   (Firefox: -d sql:PROFILE_DIR)".to_owned(),
            format!("  Go on macOS: security remove-trusted-cert {ca}"),
        ]
    };
    format!(
        "Stores with their own list (not checked or changed here), if you use them:\n{}",
        lines.join("\n")
    )
}

/// Where the CA is trusted, as lines; whether the system trusts it.
pub fn findings(ca: &Path) -> Result<(bool, Vec<String>), Failure> {
    let (_, body) = read_ca(ca)?;
    let mut lines = Vec::new();
    let mut trusted = false;
    for bundle in SYSTEM_BUNDLES {
        let Ok(text) = std::fs::read_to_string(bundle) else {
            continue;
        };
        let compact: String = text.split_whitespace().collect();
        if compact.contains(&body) {
            trusted = true;
            lines.push(format!("trusted by the system roots: {bundle}"));
        }
    }
    if cfg!(target_os = "macos") {
        let ok = Command::new("security")
            .args(["verify-cert", "-c"])
            .arg(ca)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            trusted = true;
            lines.push("trusted by the macOS keychain (security verify-cert)".to_owned());
        }
    }
    for anchor in [
        PathBuf::from(DEBIAN_ANCHOR),
        Path::new(FEDORA_ANCHORS).join("credproxy.pem"),
    ] {
        let Ok(installed) = std::fs::read_to_string(&anchor) else {
            continue;
        };
        let compact: String = installed.split_whitespace().collect();
        if !compact.contains(&body) {
            lines.push(format!(
                "{} holds another certificate (an older credproxy CA?): `credproxy trust install` replaces it",
                anchor.display()
            ));
        } else if !trusted {
            lines.push(format!(
                "{} is installed but the system roots were not rebuilt: run `credproxy trust install` again",
                anchor.display()
            ));
        }
    }
    if !trusted {
        lines.push("not trusted by the system roots".to_owned());
    }
    Ok((trusted, lines))
}

fn status(ca: &Path) -> Result<ExitCode, Failure> {
    let (trusted, lines) = findings(ca)?;
    println!("CA: {}", ca.display());
    for l in &lines {
        println!("{l}");
    }
    if !trusted {
        println!(
            "to trust it: sudo credproxy trust install (or run programs with `credproxy exec -- CMD`, which needs no trust)"
        );
    }
    println!(
        "{}",
        manual_commands(TrustCommand::Install, &ca.display().to_string())
    );
    Ok(if trusted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_RUNTIME)
    })
}

fn on_path(program: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

/// `s` single-quoted for sh when it needs quoting.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@%,".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}
