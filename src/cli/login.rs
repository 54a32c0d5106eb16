//! `credproxy login NAME`: a person authorizes credproxy once; the tokens go to the store.
//!
//! Authorization code (RFC 6749 §4.1) with PKCE S256 (RFC 7636) and a random `state`:
//!
//! ```text
//! [issuer set: read its metadata, check its issuer (issuer.rs)]
//!   ─▶ plan the redirect (callback.rs) ─▶ bind the one-shot listener (redirect.rs), or --paste
//!   ─▶ print the authorize URL (and open the browser) ─▶ wait: redirect | timeout | Ctrl-C
//!   ─▶ state ok, no error? ─▶ iss ok (issuer.rs)? ─▶ exchange the code at once (Apicbase codes live a minute)
//!   ─▶ store (under the lock) ─▶ answer the browser's page ─▶ close the listener
//! ```
//!
//! A password grant whose password is not in the config prompts for it without echo
//! (prompt.rs). A running `credproxy run` re-reads the store every 5 s
//! ([`crate::token::LOGIN_POLL`]) and starts using the new token without a restart.

mod callback;
mod issuer;
mod prompt;
mod redirect;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::anyhow;

use self::callback::{Params, Plan, Refusal};
use self::prompt::PasswordSource;
use self::redirect::{Listener, Page};
use super::ConfigArg;
use super::token::{self, Failure, StoreKind, human_duration};
use crate::config::{AuthConfig, Grant, OAuth2Config, Preset, ProviderConfig};
use crate::token::error::chain;
use crate::token::{EngineContext, Fault, StoredToken, TokenError};

/// Log in to a provider once (authorization code in a browser, or a password prompt).
#[derive(Debug, clap::Args)]
#[command(
    long_about = "Log in to provider NAME once, as a person, so credproxy can obtain and refresh \
its tokens from then on.\n\n\
For an authorization-code provider, credproxy prints the provider's authorize URL (and opens it \
in a browser unless --no-browser). After you approve, the browser is sent back to a one-shot \
listener on 127.0.0.1 (the port of the provider's redirect_uri, else a free one with \
http://127.0.0.1:PORT/callback), which checks the state, exchanges the code at once (PKCE S256) \
and stores the tokens. When the redirect can't reach this machine (a remote shell, or a \
redirect_uri elsewhere), use --paste and paste the URL the browser lands on, or the bare code.\n\n\
For a password-grant provider whose password is not in the config, credproxy asks for it \
without echo; only the tokens it gets are stored.\n\n\
A running `credproxy run` picks the new tokens up within a few seconds, without a restart.\n\n\
Exit codes: 0 logged in; 1 the login failed, was refused, or timed out; 2 a config or usage \
error.",
    after_help = "Examples:\n  \
credproxy login apicbase\n  \
credproxy login baselime --no-browser --timeout 10m\n  \
credproxy login apicbase --paste          # on a remote machine: paste the URL the browser lands on\n  \
credproxy login bace --config ./credproxy.toml   # password grant without a password in the config: prompts"
)]
pub struct Args {
    /// The provider, as named in the config (`[providers.NAME]`).
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Don't open a browser; only print the URL (it is always printed).
    #[arg(long)]
    pub no_browser: bool,
    /// Don't listen for the redirect: paste the URL the browser lands on (or the code) on stdin.
    #[arg(long)]
    pub paste: bool,
    /// How long to wait for the browser (or the paste), e.g. 90s, 5m.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub config: ConfigArg,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = crate::config::validate::parse_duration(s)?;
    if d.is_zero() {
        return Err("the timeout must be more than 0s".into());
    }
    Ok(d)
}

pub fn main(args: Args) -> ExitCode {
    token::init_logging();
    match token::block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let (config, provider) = token::load_provider(&args.config, &args.name)?;
    let name = provider.name.as_str();
    let cfg = match &provider.auth {
        AuthConfig::OAuth2(cfg) => cfg,
        AuthConfig::Static { .. } => {
            return Err(Failure::config(anyhow!(
                "{name} uses a static token from the config: there is nothing to log in to"
            ))
            .hint(format!("`credproxy token {name}` prints it")));
        }
        AuthConfig::BlendVision(_) => {
            return Err(Failure::config(anyhow!(
                "{name} signs in with the api_token (or email and password) in the config: there \
                 is nothing to log in to here"
            ))
            .hint("`credproxy check --online` tries it"));
        }
    };
    let ctx = token::engine(&config, StoreKind::State)?;
    let t = match cfg.grant {
        Grant::AuthorizationCode => code_flow(&args, &provider, cfg, &ctx).await?,
        Grant::Password => password_flow(&provider, cfg, &ctx).await?,
        Grant::ClientCredentials => {
            eprintln!(
                "{name} uses client credentials: credproxy obtains its tokens itself and needs no \
                 login. Checking that one can be obtained..."
            );
            crate::token::obtain_once(&provider, &ctx)
                .await
                .map_err(|e| token::token_failure(&provider, e))?
        }
    };
    let lifetime = match t.expires_at {
        Some(at) => format!(
            "token expires in {}",
            human_duration(at - ctx.clock.unix_now())
        ),
        None => "the token does not expire".to_owned(),
    };
    println!("logged in to {name}; {lifetime}");
    Ok(())
}

async fn password_flow(
    provider: &ProviderConfig,
    cfg: &OAuth2Config,
    ctx: &EngineContext,
) -> Result<StoredToken, Failure> {
    let name = &provider.name;
    let password = match prompt::password_source(cfg) {
        PasswordSource::Configured(p) => p,
        PasswordSource::Prompt { username } => {
            // Blocking on purpose: nothing else runs on this runtime while the person types.
            let p = prompt::read_password(&format!("Password for {username} at {name}: "))
                .map_err(|e| {
                    Failure::runtime(anyhow!("can't read the password from a terminal: {e}")).hint(
                        format!(
                            "run this in a terminal, or set providers.{name}.password in the \
                             config (e.g. password = \"${{MY_PASSWORD}}\")"
                        ),
                    )
                })?;
            if p.is_empty() {
                return Err(Failure::runtime(anyhow!("no password was given")));
            }
            p
        }
        PasswordSource::NotNeeded => unreachable!("only called for the password grant"),
    };
    crate::token::login_with_password(provider, ctx, password)
        .await
        .map_err(|e| token::token_failure(provider, e))
}

async fn code_flow(
    args: &Args,
    provider: &ProviderConfig,
    cfg: &OAuth2Config,
    ctx: &EngineContext,
) -> Result<StoredToken, Failure> {
    let name = provider.name.as_str();
    let plan = callback::plan(cfg.redirect_uri.as_deref(), args.paste).map_err(|e| {
        Failure::config(anyhow!(e)).hint(format!("fix providers.{name}.redirect_uri in the config"))
    })?;
    if provider.preset == Preset::Baselime && cfg.redirect_uri.is_none() && !args.paste {
        eprintln!(
            "note: Baselime accepts only the redirect registered for the integration; if this \
             login fails, set providers.{name}.redirect_uri to it"
        );
    }
    let expected = match &cfg.issuer {
        Some(issuer) => Some(issuer::discover(&ctx.client, issuer).await.map_err(|e| {
            Failure::runtime(anyhow!("{}", chain(&e)).context(format!("login to {name} failed")))
                .hint(format!(
                    "check providers.{name}.issuer: it must be the `issuer` the authorization \
                     server's metadata names, exactly (or remove it to skip this check)"
                ))
        })?),
        None => None,
    };
    let state = crate::token::random_state();
    let pkce = cfg.pkce.then(crate::token::pkce_pair);
    let challenge = pkce.as_ref().map(|(_, c)| c.as_str());
    let session = Session {
        provider,
        ctx,
        state: &state,
        verifier: pkce.as_ref().map(|(v, _)| v.expose()),
        expected: expected.as_ref(),
    };
    match plan {
        Plan::Listen(lp) => {
            let mut listener = Listener::bind(lp.bind, &lp.path).await.map_err(|e| {
                let hint = if lp.bind.port() == 0 {
                    "try --paste".to_owned()
                } else {
                    format!(
                        "the port comes from providers.{name}.redirect_uri: is another `credproxy \
                         login` (or another program) using it? --paste needs no listener"
                    )
                };
                Failure::runtime(anyhow!("can't listen for the redirect on {}: {e}", lp.bind))
                    .hint(hint)
            })?;
            let redirect_uri = lp.redirect_uri(listener.local_addr());
            let url = authorize_url(cfg, name, &state, challenge, Some(&redirect_uri))?;
            show(&url, name, args.no_browser);
            eprintln!(
                "Waiting for the browser to come back to {redirect_uri} (up to {}; Ctrl-C stops)...",
                human_duration(args.timeout.as_secs() as i64)
            );
            let result = session
                .await_redirect(&mut listener, &redirect_uri, args.timeout)
                .await;
            listener.close().await;
            result
        }
        Plan::Paste { redirect_uri, why } => {
            if let Some(why) = why {
                eprintln!("note: {why}; you will paste where the browser lands instead.");
            }
            let url = authorize_url(cfg, name, &state, challenge, redirect_uri.as_deref())?;
            show(&url, name, args.no_browser);
            eprintln!(
                "After you approve, paste the full URL the browser lands on (its address bar, even \
                 if the page fails to load), or just the code, and press Enter:"
            );
            let line = read_pasted(name, args.timeout).await?;
            let pasted = callback::pasted(&line, &state).map_err(|r| refused(name, r))?;
            if pasted.bare && session.expected.is_some_and(|e| e.iss_required) {
                return Err(Failure::runtime(anyhow!(
                    "a bare code can't show which server issued it, and {name}'s authorization \
                     server names itself in every response (RFC 9207)"
                ))
                .hint(format!(
                    "run `credproxy login {name} --paste` again and paste the whole URL from the \
                     browser's address bar"
                )));
            }
            issuer::check(pasted.iss.as_deref(), session.expected)
                .map_err(|r| wrong_issuer(name, r))?;
            session
                .exchange(&pasted.code, redirect_uri.as_deref())
                .await
        }
    }
}

/// The first non-empty line on stdin (a stray Enter is not an answer), within `timeout`.
async fn read_pasted(name: &str, timeout: Duration) -> Result<String, Failure> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match prompt::read_line(left).await {
            Err(_) => return Err(timed_out(name, timeout, true)),
            Ok(Some(line)) if line.trim().is_empty() => continue,
            Ok(Some(line)) => return Ok(line),
            Ok(None) => {
                return Err(Failure::runtime(anyhow!(
                    "stdin ended before a URL or a code was pasted"
                ))
                .hint(format!(
                    "run `credproxy login {name} --paste` in a terminal"
                )));
            }
        }
    }
}

/// One login attempt: what the redirect must match and what the exchange needs.
struct Session<'a> {
    provider: &'a ProviderConfig,
    ctx: &'a EngineContext,
    state: &'a str,
    verifier: Option<&'a str>,
    /// The configured `issuer`, checked against the server's metadata.
    expected: Option<&'a issuer::Expected>,
}

impl Session<'_> {
    /// Wait for the browser; check the redirect; exchange the code; answer the browser.
    async fn await_redirect(
        &self,
        listener: &mut Listener,
        redirect_uri: &str,
        timeout: Duration,
    ) -> Result<StoredToken, Failure> {
        let name = &self.provider.name;
        let deadline = tokio::time::Instant::now() + timeout;
        let failed = |detail: String| Page {
            ok: false,
            title: format!("Login to {name} failed"),
            detail,
        };
        // A redirect without this login's `state` is anyone's (any local process can reach the
        // listener): it gets 400 and the wait goes on, so it can neither end the login nor slip
        // a code of its own in.
        // One Ctrl-C listener for the whole wait: a new one per redirect could miss a Ctrl-C
        // pressed while a refused redirect was being answered.
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        let (cb, code) = loop {
            let cb = tokio::select! {
                cb = listener.next() => cb,
                _ = tokio::time::sleep_until(deadline) => return Err(timed_out(name, timeout, false)),
                _ = ctrl_c.as_mut() => {
                    return Err(Failure::runtime(anyhow!("login to {name} cancelled")));
                }
            };
            let params = Params::from_query(&cb.query);
            match callback::check(&params, self.state) {
                // This login's response (its state), from another server? Then the code is
                // not exchanged, and the login ends: RFC 9207's mix-up defence.
                Ok(code) => match issuer::check(params.iss.as_deref(), self.expected) {
                    Ok(()) => break (cb, code),
                    Err(r) => {
                        cb.respond(failed(format!("{r}.")));
                        return Err(wrong_issuer(name, r));
                    }
                },
                Err(r) if r.unproven() => {
                    eprintln!("credproxy: ignored a redirect to the login listener: {r}");
                    cb.respond(Page {
                        ok: false,
                        title: format!("This is not the login to {name} credproxy is waiting for"),
                        detail: format!(
                            "{r}. If you refused the access yourself, press Ctrl-C where `credproxy login` runs; otherwise finish the login in the browser tab credproxy opened."
                        ),
                    });
                }
                Err(r) => {
                    cb.respond(failed(format!("{r}.")));
                    return Err(refused(name, r));
                }
            }
        };
        match self.exchange(&code, Some(redirect_uri)).await {
            Ok(t) => {
                cb.respond(Page {
                    ok: true,
                    title: format!("Logged in to {name}"),
                    detail: "credproxy has stored the token; a running `credproxy run` starts \
                             using it within seconds."
                        .into(),
                });
                Ok(t)
            }
            Err(f) => {
                cb.respond(failed(format!("{}.", f.message())));
                Err(f)
            }
        }
    }

    /// Exchange `code` at once and store the tokens.
    async fn exchange(
        &self,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<StoredToken, Failure> {
        let name = &self.provider.name;
        crate::token::login_with_code(self.provider, self.ctx, code, redirect_uri, self.verifier)
            .await
            .map_err(|e| exchange_failed(name, e))
    }
}

fn exchange_failed(name: &str, e: TokenError) -> Failure {
    let hint = match e.fault() {
        Fault::Transient { .. } => format!(
            "the token server failed or could not be reached; run `credproxy login {name}` again"
        ),
        _ => format!(
            "the provider refused the code: it may have expired (Apicbase codes live a minute) or \
             providers.{name}'s client_id, client_secret or redirect_uri may not match what is \
             registered; run `credproxy login {name}` again"
        ),
    };
    Failure::runtime(
        anyhow!("{}", chain(&e)).context("the code could not be exchanged for a token"),
    )
    .hint(hint)
}

fn authorize_url(
    cfg: &OAuth2Config,
    name: &str,
    state: &str,
    challenge: Option<&str>,
    redirect_uri: Option<&str>,
) -> Result<String, Failure> {
    crate::token::authorize_url(cfg, state, challenge, redirect_uri).ok_or_else(|| {
        Failure::config(anyhow!("{name} has no authorize_url"))
            .hint(format!("set providers.{name}.authorize_url in the config"))
    })
}

/// No redirect (or paste) in time. `pasting`: the user was asked to paste.
fn timed_out(name: &str, timeout: Duration, pasting: bool) -> Failure {
    let also = if pasting {
        ""
    } else {
        "; --paste if the browser can't reach this machine"
    };
    Failure::runtime(anyhow!(
        "no answer within {}: the login to {name} was not completed",
        human_duration(timeout.as_secs() as i64)
    ))
    .hint(format!(
        "run `credproxy login {name}` again (--timeout gives more time{also})"
    ))
}

fn wrong_issuer(name: &str, r: issuer::IssRefusal) -> Failure {
    Failure::runtime(anyhow!("{r}").context(format!("login to {name} failed"))).hint(format!(
        "check that providers.{name}.authorize_url belongs to the server providers.{name}.issuer \
         names, then run `credproxy login {name}` again"
    ))
}

fn refused(name: &str, r: Refusal) -> Failure {
    let hint = match &r {
        Refusal::Denied { .. } => format!(
            "approve the access in the browser, or check the client's settings at the provider; \
             then run `credproxy login {name}` again"
        ),
        Refusal::WrongState | Refusal::DeniedWithoutState { .. } | Refusal::NoCode => {
            format!("run `credproxy login {name}` again and finish it in the browser tab it opens")
        }
        Refusal::Empty | Refusal::NotACode => {
            "paste the whole URL from the browser's address bar, or the code alone".to_owned()
        }
    };
    Failure::runtime(anyhow!("{r}").context(format!("login to {name} failed"))).hint(hint)
}

/// Print the URL (always: the browser may be on another machine) and open a browser.
fn show(url: &str, name: &str, no_browser: bool) {
    eprintln!("Open this URL in a browser to log in to {name}:");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{url}").and_then(|()| out.flush());
    drop(out);
    if no_browser {
        return;
    }
    if !display_likely() {
        eprintln!("(no display here: open the URL on a machine with a browser)");
        return;
    }
    let url = url.to_owned();
    // A thread of its own: a text-mode browser blocks until it quits, and must not hold up the
    // listener or the exit.
    std::thread::spawn(move || {
        if let Err(e) = webbrowser::open(&url) {
            eprintln!("(couldn't open a browser: {e}; open the URL yourself)");
        }
    });
}

/// Whether opening a browser can work: always on macOS and Windows; elsewhere only with a
/// graphical session or `$BROWSER`, so a remote shell doesn't get a text browser in its face.
fn display_likely() -> bool {
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY", "BROWSER"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty()))
}
