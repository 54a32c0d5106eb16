//! `credproxy doctor [--config F]`: everything between a config and a working client, checked
//! in order, each finding with one line of advice (DESIGN.md "Wiring a client in one command").
//!
//! 1. the config loads (else nothing else can be checked: exit 2);
//! 2. the local CA: there, valid for a while yet, covering the claimed hosts, its bundle brought up to
//!    date, and whether the system trusts it (a note, not a problem: `exec` and `env` need no
//!    system trust);
//! 3. each provider's stored state (a provider that needs `credproxy login` first);
//! 4. a `GET` of each provider's upstream base path through an in-process credproxy (loopback
//!    port 0, no admin listener, interception off: nothing is made or taken over). Any upstream
//!    answer but 401/403, with no credproxy error, counts as reachable (DESIGN.md "Round 2
//!    details").
//!
//! Exit codes: 0 when there is no problem (notes are fine), 1 when there is one, 2 when the
//! config can't be loaded.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};

use super::{ConfigArg, EXIT_CONFIG, EXIT_RUNTIME};
use crate::config::{Config, ProviderConfig};

/// The longest doctor waits for one provider's answer, whatever its timeouts.
const REQUEST_CAP: Duration = Duration::from_secs(30);
/// A CA ending sooner than this is worth a warning.
const CA_RENEW_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Check the config, the CA and its trust, each provider, and a request to each upstream.
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Check, in order, each with a line of advice: the config; the local CA (there, \
not about to expire, covering the claimed hosts, its bundle up to date) and whether the system \
trusts it; each provider's stored token (or that it needs `credproxy login`); and a GET of each \
provider's upstream base path through an in-process credproxy (a free loopback port; a running \
credproxy is not touched). An upstream answer other than 401/403, with no credproxy error, \
counts as reachable.\n\n\
Exit codes: 0 all is well (notes are only advice); 1 a problem was found; 2 the config can't be \
loaded.",
    after_help = "Examples:\n  credproxy doctor\n  credproxy doctor --config /etc/credproxy/config.toml"
)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Ok,
    Note,
    Problem,
}

/// The findings, printed as they are made; their levels kept for the exit code.
#[derive(Default)]
struct Report(Vec<Level>);

impl Report {
    fn ok(&mut self, what: impl Into<String>) {
        self.push(Level::Ok, what.into(), None);
    }
    fn note(&mut self, what: impl Into<String>, advice: impl Into<String>) {
        self.push(Level::Note, what.into(), Some(advice.into()));
    }
    fn problem(&mut self, what: impl Into<String>, advice: impl Into<String>) {
        self.push(Level::Problem, what.into(), Some(advice.into()));
    }
    fn push(&mut self, level: Level, what: String, advice: Option<String>) {
        let tag = match level {
            Level::Ok => "ok     ",
            Level::Note => "note   ",
            Level::Problem => "PROBLEM",
        };
        println!("{tag} {what}");
        if let Some(a) = &advice {
            println!("        -> {a}");
        }
        self.0.push(level);
    }
    fn problems(&self) -> usize {
        self.0.iter().filter(|l| **l == Level::Problem).count()
    }
}

pub fn main(args: Args) -> ExitCode {
    super::token::init_logging();
    let path = match crate::config::locate(args.config.config.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            println!("PROBLEM no config: {e}");
            println!("        -> pass --config PATH, or write ./credproxy.toml (see the README)");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match crate::config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            println!("PROBLEM config {}: {}", path.display(), errors.report());
            println!(
                "        -> fix it: `credproxy check --config {}` lists every problem with its line",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut report = Report::default();
    report.ok(format!(
        "config {}: {} provider{}",
        path.display(),
        config.providers.len(),
        if config.providers.len() == 1 { "" } else { "s" }
    ));
    for w in &config.warnings {
        report.note(
            format!("config: {w}"),
            "allowed, but check it is what you meant",
        );
    }
    check_ca(&config, &mut report);
    let runnable = check_providers(&config, &path, &mut report);
    let requested = super::token::block_on(async {
        request_all(&config, &runnable, &mut report).await;
        Ok(())
    });
    if let Err(f) = requested {
        return f.report();
    }
    let n = report.problems();
    if n == 0 {
        println!("all is well");
        ExitCode::SUCCESS
    } else {
        println!("{n} problem{} found", if n == 1 { "" } else { "s" });
        ExitCode::from(EXIT_RUNTIME)
    }
}

fn check_ca(config: &Config, report: &mut Report) {
    let dir = crate::app::ca_dir(config);
    if config.proxy.intercept != crate::config::Intercept::Claimed {
        report.note(
            "[proxy] intercept = \"off\": `credproxy run` refuses HTTPS (CONNECT) to claimed hosts",
            "set intercept = \"claimed\" for HTTPS_PROXY clients (`credproxy exec` always intercepts)",
        );
    }
    let ca = match crate::ca::LocalCa::existing(&dir) {
        Ok(Some(ca)) => ca,
        Ok(None) => {
            report.note(
                format!("no local CA in {} yet", dir.display()),
                "`credproxy ca init` makes it (so do `credproxy exec` and `run` with intercept = \"claimed\")",
            );
            return;
        }
        Err(e) => {
            report.problem(
                format!("local CA: {}", crate::token::error::chain(&e)),
                "`credproxy ca init --force` makes a new one (then trust it again)",
            );
            return;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    if ca.not_after() < now {
        report.problem(
            format!("the local CA {} has expired", ca.cert_path().display()),
            "`credproxy ca init --force`, then `credproxy trust install` again",
        );
    } else if ca.not_after() < now + CA_RENEW_WARNING {
        report.note(
            format!("the local CA expires on {}", ca.not_after().date()),
            "`credproxy ca init --force` soon, then `credproxy trust install` again",
        );
    } else {
        report.ok(format!(
            "local CA {} (sha256 {})",
            ca.cert_path().display(),
            ca.fingerprint()
        ));
    }
    let subtrees = crate::app::claimed_subtrees(config);
    let uncovered = ca.uncovered(subtrees.iter().map(String::as_str));
    if !uncovered.is_empty() {
        report.problem(
            format!(
                "the CA's name constraints don't cover {}: clients refuse intercepted TLS to them",
                uncovered.join(", ")
            ),
            "`credproxy ca init --force` makes a CA for the hosts claimed now; trust it again",
        );
    }
    // Brought up to date as `run`, `exec` and `env` would (a system store that changed, a new
    // CA): a stale bundle is only a problem when it can't be rewritten.
    let bundle = crate::ca::bundle::default_path(&dir);
    let stale = crate::ca::bundle::is_stale(&ca);
    match crate::ca::bundle::ensure(&ca) {
        Ok(_) if stale => report.ok(format!(
            "CA bundle {} (rewritten: it was missing or older than the CA or its roots)",
            bundle.display()
        )),
        Ok(_) => report.ok(format!("CA bundle {}", bundle.display())),
        Err(e) => report.problem(
            format!("the CA bundle: {}", crate::token::error::chain(&e)),
            "`credproxy ca bundle` says more; unset SSL_CERT_FILE if it names a missing file",
        ),
    }
    match super::trust::findings(&ca.cert_path()) {
        Ok((true, lines)) => report.ok(lines.join("; ")),
        Ok((false, _)) => report.note(
            "the system does not trust the local CA",
            "fine for `credproxy exec` and `eval \"$(credproxy env)\"`; for other programs: sudo credproxy trust install",
        ),
        Err(f) => report.problem(
            format!("can't tell whether the CA is trusted: {}", f.message()),
            "check the CA's files (`credproxy ca show`)",
        ),
    }
}

/// Each provider's stored state; the providers a request can be tried for.
fn check_providers(
    config: &Config,
    path: &std::path::Path,
    report: &mut Report,
) -> Vec<Arc<ProviderConfig>> {
    let store = match crate::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {})) {
        Ok(s) => s,
        Err(e) => {
            report.problem(
                format!("the token store: {}", crate::token::error::chain(&e)),
                format!(
                    "make {} writable, or check [store]",
                    config.proxy.state_dir.display()
                ),
            );
            return Vec::new();
        }
    };
    let clock = crate::clock::Clock::new();
    let mut runnable = Vec::new();
    for p in &config.providers {
        let stored = match store.load(&p.name) {
            Ok(t) => t,
            Err(e) => {
                report.problem(
                    format!(
                        "provider {}: its stored token: {}",
                        p.name,
                        crate::token::error::chain(&e)
                    ),
                    format!(
                        "`credproxy logout {}` forgets it; then log in again if needed",
                        p.name
                    ),
                );
                continue;
            }
        };
        if super::exec::needs_login(p, stored.as_ref(), &clock) {
            report.problem(
                format!(
                    "provider {}: needs a login (no token stored to refresh from)",
                    p.name
                ),
                format!(
                    "run `credproxy login {} --config {}`",
                    p.name,
                    path.display()
                ),
            );
            continue;
        }
        let state = match &stored {
            _ if matches!(p.auth, crate::config::AuthConfig::Static { .. }) => {
                "a static token from the config".to_owned()
            }
            None => "no stored token (one is obtained at start)".to_owned(),
            Some(t) if t.is_valid(&clock) => "a valid token is stored".to_owned(),
            Some(t) if t.refresh_token.is_some() => {
                "the stored token expired (it is refreshed at start)".to_owned()
            }
            Some(_) => "the stored token expired (a new one is obtained at start)".to_owned(),
        };
        report.ok(format!("provider {}: {state}", p.name));
        runnable.push(p.clone());
    }
    runnable
}

async fn request_all(config: &Config, providers: &[Arc<ProviderConfig>], report: &mut Report) {
    if providers.is_empty() {
        return;
    }
    let mut private = super::exec::private(config.clone());
    // Nothing is intercepted: the request is plain HTTP to the proxy, and no CA gets made.
    private.proxy.intercept = crate::config::Intercept::Off;
    let running = match crate::app::start_with(
        private,
        crate::app::Options {
            no_default_admin: true,
            ..Default::default()
        },
    )
    .await
    {
        Ok(r) => r,
        Err(e) => {
            report.problem(
                format!(
                    "an in-process credproxy could not start: {}",
                    crate::token::error::chain(&e)
                ),
                "run `credproxy run` in a terminal to see why (CREDPROXY_LOG=debug)",
            );
            return;
        }
    };
    let addr = running.main_addr().tcp().expect("a TCP main listener");
    let auth = config
        .proxy
        .proxy_auth
        .as_ref()
        .map(|s| format!("Bearer {}", s.get().expose()));
    for p in providers {
        let Some((host, port)) = p.hosts.iter().find_map(|h| h.concrete()) else {
            report.note(
                format!(
                    "provider {}: only wildcard hosts, so no request was tried",
                    p.name
                ),
                "try one yourself: credproxy exec -- curl https://NAME.UNDER.THE.WILDCARD/",
            );
            continue;
        };
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let base = if p.upstream.base_path.is_empty() {
            "/"
        } else {
            p.upstream.base_path.as_str()
        };
        let url = format!("http://{authority}{base}");
        let limit = (p.wait_for_token
            + p.response_timeout.unwrap_or(config.proxy.response_timeout)
            + config.proxy.connect_timeout)
            .min(REQUEST_CAP);
        let answer =
            tokio::time::timeout(limit, get(addr, &url, &authority, auth.as_deref())).await;
        let origin = p.upstream.origin();
        match answer {
            Err(_) => report.problem(
                format!(
                    "provider {}: GET {origin}{base}: no answer within {limit:?}",
                    p.name
                ),
                "check that the upstream is up and reachable from here",
            ),
            Ok(Err(e)) => report.problem(
                format!(
                    "provider {}: GET {origin}{base} through credproxy: {e}",
                    p.name
                ),
                "run `credproxy run` and try it with curl to see more (CREDPROXY_LOG=debug)",
            ),
            Ok(Ok(a)) => judge(report, p, &format!("{origin}{base}"), a),
        }
    }
    running.shutdown(Duration::from_secs(1)).await;
}

/// What came back to a request through credproxy.
struct Answer {
    status: u16,
    /// `Some((code, message))` when credproxy made the answer itself.
    ours: Option<(String, String)>,
}

fn judge(report: &mut Report, p: &ProviderConfig, url: &str, a: Answer) {
    let name = &p.name;
    match a.ours {
        Some((code, message)) => {
            let advice = match code.as_str() {
                "login_required" => format!("run `credproxy login {name}`"),
                "credential_unavailable" => format!(
                    "no token came in time: `credproxy token {name}` shows why; `credproxy check --online` tries every provider"
                ),
                "upstream_unreachable" | "upstream_timeout" => format!(
                    "check providers.{name}.upstream and that this machine can reach it"
                ),
                "upstream_tls" => format!(
                    "the upstream's certificate is not trusted: add its CA with [proxy] ca_file, or fix providers.{name}.upstream"
                ),
                _ => "see the message; `credproxy check` validates the config".to_owned(),
            };
            report.problem(
                format!("provider {name}: GET {url}: credproxy answered {} {code}: {message}", a.status),
                advice,
            );
        }
        None if a.status == 401 || a.status == 403 => report.problem(
            format!("provider {name}: GET {url}: the upstream answered {} to credproxy's credential", a.status),
            format!(
                "the upstream refused the token: check providers.{name} (scopes, account, headers); `credproxy token {name}` prints it"
            ),
        ),
        None => report.ok(format!(
            "provider {name}: GET {url} through credproxy: reachable (answered {})",
            a.status
        )),
    }
}

/// `GET url` (absolute form) through the proxy at `addr`.
async fn get(
    addr: std::net::SocketAddr,
    url: &str,
    host: &str,
    auth: Option<&str>,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("can't connect to the in-process proxy: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(url).header(http::header::HOST, host);
    if let Some(a) = auth {
        req = req.header(http::header::PROXY_AUTHORIZATION, a);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("can't make the request: {e}"))?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let marked = resp.headers().get_all("proxy-status").iter().any(|v| {
        v.to_str().is_ok_and(|s| s.contains("credproxy"))
            && v.to_str().is_ok_and(|s| s.contains("error="))
    });
    let body = Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ours = marked
        .then(|| serde_json::from_slice::<serde_json::Value>(&body).ok())
        .flatten()
        .and_then(|v| {
            let code = v.get("error")?.as_str()?.to_owned();
            let message = v
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("")
                .to_owned();
            Some((code, message))
        });
    Ok(Answer { status, ours })
}
