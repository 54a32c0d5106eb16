//! `credproxy status`: each provider's state, token expiry, refreshes and last error.
//!
//! Asked of the running proxy's admin endpoint (`GET /status` on `admin_listen`); when no proxy
//! answers, read from the token store instead and say so. Never a secret: the admin endpoint has
//! none to give, and from the store only expiry times and public details are read.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use std::sync::Arc;

use crate::admin::{
    self, AdminTarget, ProviderStatus, StatusReport, StoreStatus, expiry, lifetime, relative,
};
use crate::config::{Config, StoreSettings};
use crate::token::store::{FileStore, StoreError, TokenStore};

use super::{ConfigArg, EXIT_RUNTIME};

/// How long to wait for the running proxy before reading the store instead.
const TIMEOUT: Duration = Duration::from_secs(2);

const FROM_STORE: &str = "(proxy not running; from the token store)";

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  credproxy status\n  credproxy status --json | jq '.providers[] | {name, state}'"
)]
pub struct Args {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Print the JSON document the admin endpoint `/status` answers, for scripts.
    #[arg(long)]
    pub json: bool,
}

pub fn main(args: Args) -> ExitCode {
    // Where the proxy listens and keeps its store: no `{ command }` secret needs to run.
    let (_, config) = match args.config.load_settings() {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    match run(&config, args.json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            super::report(&e);
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn run(config: &Config, json: bool) -> anyhow::Result<()> {
    let target = AdminTarget::from_listen(&admin::listen_of(&config.proxy));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("can't start the runtime")?;
    let live = match runtime.block_on(admin::get(&target, "/status", TIMEOUT)) {
        Ok((status, body)) if status == http::StatusCode::OK => Some(body),
        Ok((status, _)) => {
            eprintln!(
                "note: {target}/status answered {status}; is another program on credproxy's admin address?"
            );
            None
        }
        Err(_) => None,
    };
    if let Some(body) = live {
        if json {
            // As the proxy wrote it.
            print!("{}", String::from_utf8_lossy(&body));
            return Ok(());
        }
        let report: StatusReport = serde_json::from_slice(&body)
            .with_context(|| format!("{target}/status did not answer credproxy's status JSON"))?;
        print!("{}", table(&report, now_unix()));
        return Ok(());
    }
    let report = from_store(config)?;
    if json {
        eprintln!("{FROM_STORE}");
        println!(
            "{}",
            serde_json::to_string_pretty(&report).context("can't write JSON")?
        );
    } else {
        print!("{}", table(&report, now_unix()));
        println!("{FROM_STORE}");
    }
    Ok(())
}

fn now_unix() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// Each provider's stored token, without creating the state directory when there is none; with
/// the Redis store, read from Redis (and `store_unavailable` when it can't be reached).
fn from_store(config: &Config) -> anyhow::Result<StatusReport> {
    let dir = &config.proxy.state_dir;
    let store: Option<Arc<dyn TokenStore>> = match &config.store {
        StoreSettings::File if !dir.is_dir() => None,
        StoreSettings::File => {
            Some(Arc::new(FileStore::open(dir).with_context(|| {
                format!("can't open the token store in {}", dir.display())
            })?))
        }
        StoreSettings::Redis(_) => Some(
            crate::token::store::open(&config.proxy, &config.store, Arc::new(|_, _| {}))
                .with_context(|| {
                    format!(
                        "can't open the token store at {}",
                        crate::token::store::describe(&config.proxy, &config.store)
                    )
                })?,
        ),
    };
    let now = now_unix();
    let mut unavailable = None;
    let providers = config
        .providers
        .iter()
        .map(|p| match store.as_ref().map(|s| s.load(&p.name)) {
            None | Some(Ok(None)) => ProviderStatus::from_stored(p, None, now),
            Some(Ok(Some(t))) => ProviderStatus::from_stored(p, Some(&t), now),
            Some(Err(e @ StoreError::Redis { .. })) => {
                let reason = super::healthcheck::one_line(&e);
                unavailable.get_or_insert(reason.clone());
                ProviderStatus {
                    state: "store_unavailable".to_owned(),
                    last_error: Some(reason),
                    ..ProviderStatus::from_stored(p, None, now)
                }
            }
            Some(Err(e)) => ProviderStatus::unreadable(p, super::healthcheck::one_line(&e), now),
        })
        .collect();
    let store = match &config.store {
        StoreSettings::File => None,
        StoreSettings::Redis(_) => Some(StoreStatus {
            kind: "redis".to_owned(),
            state: if unavailable.is_some() {
                "store_unavailable"
            } else {
                "ok"
            }
            .to_owned(),
            reason: unavailable,
        }),
    };
    Ok(StatusReport {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: None,
        providers,
        store,
        callers: Vec::new(),
        audit: None,
        proxy_auth_error: None,
    })
}

/// The table `credproxy status` prints, then each provider's hosts, routes, upstream, token
/// lifetime, counts and public details. The words are the status page's
/// ([`admin::assess`], [`admin::expiry`], [`admin::relative`]).
fn table(report: &StatusReport, now: i64) -> String {
    let header = [
        "PROVIDER",
        "STATE",
        "EXPIRES",
        "LAST REFRESH",
        "NEXT REFRESH",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 6]> = report
        .providers
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                // A proxy older than `summary` sends none: its state word, then.
                if p.summary.is_empty() {
                    p.state.clone()
                } else {
                    p.summary.clone()
                },
                expiry(p),
                relative(p.last_refresh.as_deref(), now),
                relative(p.next_refresh.as_deref(), now),
                p.last_error.as_deref().unwrap_or("-").to_owned(),
            ]
            .map(|cell| printable(&cell))
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &rows {
        line(&row.each_ref().map(String::as_str));
    }
    if report.providers.is_empty() {
        out.push_str("(no providers configured)\n");
    }
    for p in &report.providers {
        let mut facts = vec![format!("hosts {}", p.hosts.join(", "))];
        if !p.routes.is_empty() {
            facts.push(format!("routes {}", p.routes.join(", ")));
        }
        facts.push(format!("upstream {}", p.upstream));
        if p.token_lifetime_secs.is_some() {
            facts.push(format!("token lifetime {}", lifetime(p)));
        }
        if let (Some(requests), Some(rejected)) = (p.requests, p.upstream_401s) {
            facts.push(format!(
                "{requests} requests, {rejected} upstream 401s since start"
            ));
        }
        facts.extend(p.details.iter().map(|(k, v)| format!("{k}={v}")));
        let line = format!("{}: {}", p.name, facts.join(" · "));
        out.push_str(&printable(&line));
        out.push('\n');
    }
    if let Some(error) = &report.proxy_auth_error {
        out.push_str(&printable(&format!("proxy_auth: {error}")));
        out.push('\n');
    }
    if let Some(store) = &report.store {
        let mut line = format!("store: {} {}", store.kind, store.state);
        if let Some(reason) = &store.reason {
            line.push_str(&format!(" ({reason})"));
        }
        out.push_str(&printable(&line));
        out.push('\n');
    }
    out
}

/// Text from the proxy, the store or a token server made safe for a terminal: a line break or
/// tab becomes a space, any other control character (C0, DEL, C1: an escape sequence that would
/// retitle the window, clear the screen or worse) a `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\n' | '\r' | '\t' => ' ',
            c if c.is_control() => '?',
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_900_000_000;

    /// A provider as the running proxy reports it, with `set` applied before it is assessed.
    fn provider(name: &str, state: &str, set: impl FnOnce(&mut ProviderStatus)) -> ProviderStatus {
        let mut p = ProviderStatus {
            name: name.to_owned(),
            preset: "oauth2".to_owned(),
            hosts: vec![format!("{name}.test")],
            upstream: format!("https://{name}.test"),
            state: state.to_owned(),
            usable: true,
            expires_in_secs: None,
            expires_at: None,
            last_refresh: None,
            next_refresh: None,
            last_error: None,
            details: Default::default(),
            routes: Vec::new(),
            token_lifetime_secs: None,
            requests: Some(0),
            upstream_401s: Some(0),
            health: String::new(),
            summary: String::new(),
            tls_rejected: Default::default(),
        };
        set(&mut p);
        p.assessed(NOW)
    }

    fn four_states() -> StatusReport {
        let ready = provider("bace", "ready", |p| {
            p.expires_in_secs = Some(11_520);
            p.token_lifetime_secs = Some(14_400);
            p.last_refresh = admin::rfc3339(NOW - 300);
            p.next_refresh = admin::rfc3339(NOW + 1200);
            p.requests = Some(12);
            p.upstream_401s = Some(1);
            p.routes = vec!["listen 127.0.0.1:7001".into()];
            p.details.insert("workspace".into(), "w-1".into());
        });
        let amber = provider("github", "failing", |p| {
            p.expires_in_secs = Some(240);
            p.token_lifetime_secs = Some(3600);
            p.last_refresh = admin::rfc3339(NOW - 3360);
            p.next_refresh = admin::rfc3339(NOW + 30);
            p.last_error = Some("token endpoint answered 503".into());
        });
        let red = provider("baselime", "failing", |p| {
            p.usable = false;
            p.next_refresh = admin::rfc3339(NOW + 60);
            p.last_error = Some("invalid_client:\nclient secret revoked".into());
        });
        let never = provider("static", "ready", |p| p.preset = "static".into());
        StatusReport {
            store: None,
            callers: Vec::new(),
            audit: None,
            proxy_auth_error: None,
            version: "0".into(),
            started_at: None,
            providers: vec![ready, amber, red, never],
        }
    }

    /// Review finding: text from the server (an error, a Baselime workspace id, a name) printed
    /// raw could carry terminal escapes. None reaches the terminal.
    #[test]
    fn no_control_character_reaches_the_terminal() {
        let evil = "a\u{1b}]0;x\u{7}b\u{1b}[2Jc\u{9b}31md\u{7f}";
        let p = provider(evil, evil, |p| {
            p.summary = evil.into();
            p.last_error = Some(evil.into());
            p.details.insert(evil.into(), evil.into());
            p.hosts = vec![evil.into()];
            p.routes = vec![evil.into()];
            p.upstream = evil.into();
        });
        let report = StatusReport {
            store: Some(StoreStatus {
                kind: evil.into(),
                state: evil.into(),
                reason: Some(evil.into()),
            }),
            proxy_auth_error: Some(evil.into()),
            version: "0".into(),
            started_at: None,
            providers: vec![p],
            callers: Vec::new(),
            audit: None,
        };
        let text = table(&report, NOW);
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{text:?}"
        );
        assert!(text.contains("a?]0;x?b?[2Jc?31md?"), "{text:?}");
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(admin::human(11_520), "3 h 12 min");
        assert_eq!(admin::human(3600), "1 h");
        assert_eq!(admin::human(300), "5 min");
        assert_eq!(admin::human(-40), "40 s");
        assert_eq!(admin::human(2 * 86_400 + 4 * 3600 + 59), "2 d 4 h");
    }

    #[test]
    fn each_state_reads_in_the_words_of_the_status_page() {
        let report = four_states();
        let health: Vec<&str> = report.providers.iter().map(|p| p.health.as_str()).collect();
        assert_eq!(health, ["ok", "warn", "bad", "ok"]);
        let text = table(&report, NOW);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PROVIDER  STATE                                                   EXPIRES        LAST REFRESH  NEXT REFRESH  LAST ERROR"
        );
        assert_eq!(
            lines[1],
            "bace      ready                                                   in 3 h 12 min  5 min ago     in 20 min     -"
        );
        assert_eq!(
            lines[2],
            "github    valid for 4 min, refresh failing; next attempt in 30 s  in 4 min       56 min ago    in 30 s       token endpoint answered 503"
        );
        assert_eq!(
            lines[3],
            "baselime  no valid token, refresh failing; next attempt in 1 min  -              -             in 1 min      invalid_client: client secret revoked"
        );
        assert_eq!(
            lines[4],
            "static    ready                                                   never expires  -             -             -"
        );
        assert_eq!(
            lines[5],
            "bace: hosts bace.test · routes listen 127.0.0.1:7001 · upstream https://bace.test · token lifetime 4 h · 12 requests, 1 upstream 401s since start · workspace=w-1"
        );
        assert_eq!(
            lines[6],
            "github: hosts github.test · upstream https://github.test · token lifetime 1 h · 0 requests, 0 upstream 401s since start"
        );
        assert!(!text.contains("expires in never") && !text.contains("in never"));
    }
}
