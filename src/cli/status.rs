//! `credproxy status`: each provider's state, token expiry, refreshes and last error.
//!
//! Asked of the running proxy's admin endpoint (`GET /status` on `admin_listen`); when no proxy
//! answers, read from the token store instead and say so. Never a secret: the admin endpoint has
//! none to give, and from the store only expiry times and public details are read.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use std::sync::Arc;

use crate::admin::{self, AdminTarget, ProviderStatus, StatusReport, StoreStatus, parse_rfc3339};
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
    let (_, config) = match args.config.load() {
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
            Some(Err(e)) => ProviderStatus {
                state: "unreadable".to_owned(),
                last_error: Some(super::healthcheck::one_line(&e)),
                ..ProviderStatus::from_stored(p, None, now)
            },
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
    })
}

/// `3h12m`, `5m`, `40s`, `2d4h`: the two largest units, for a glance.
fn human(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{s}s")
    }
}

fn expires_in(p: &ProviderStatus) -> String {
    match p.expires_in_secs {
        None if p.usable => "never".to_owned(),
        None => "-".to_owned(),
        Some(s) if s >= 0 => human(s),
        Some(s) => format!("expired {} ago", human(s)),
    }
}

fn relative(at: Option<&str>, now: i64) -> String {
    match at.and_then(parse_rfc3339) {
        None => "-".to_owned(),
        Some(t) if t <= now => format!("{} ago", human(now - t)),
        Some(t) => format!("in {}", human(t - now)),
    }
}

/// The table `credproxy status` prints, then each provider's public details.
fn table(report: &StatusReport, now: i64) -> String {
    let header = [
        "PROVIDER",
        "STATE",
        "EXPIRES IN",
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
                p.state.clone(),
                expires_in(p),
                relative(p.last_refresh.as_deref(), now),
                relative(p.next_refresh.as_deref(), now),
                p.last_error
                    .as_deref()
                    .unwrap_or("-")
                    .replace(['\n', '\r'], " "),
            ]
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
    for p in report.providers.iter().filter(|p| !p.details.is_empty()) {
        let details: Vec<String> = p.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out.push_str(&format!("{}: {}\n", p.name, details.join(", ")));
    }
    if let Some(store) = &report.store {
        out.push_str(&format!("store: {} {}", store.kind, store.state));
        if let Some(reason) = &store.reason {
            out.push_str(&format!(" ({})", reason.replace(['\n', '\r'], " ")));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(name: &str, state: &str) -> ProviderStatus {
        ProviderStatus {
            name: name.to_owned(),
            preset: "oauth2".to_owned(),
            hosts: vec![format!("{name}.test")],
            upstream: format!("https://{name}.test"),
            state: state.to_owned(),
            usable: state == "ready",
            expires_in_secs: None,
            expires_at: None,
            last_refresh: None,
            next_refresh: None,
            last_error: None,
            details: Default::default(),
        }
    }

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(human(11_520), "3h12m");
        assert_eq!(human(300), "5m");
        assert_eq!(human(-40), "40s");
        assert_eq!(human(2 * 86_400 + 4 * 3600 + 59), "2d4h");
    }

    #[test]
    fn the_table_lines_up_and_says_when_things_happen() {
        let now = 1_900_000_000;
        let mut a = provider("bace", "ready");
        a.expires_in_secs = Some(11_520);
        a.last_refresh = admin::rfc3339(now - 300);
        a.next_refresh = admin::rfc3339(now + 1200);
        a.details.insert("workspace".into(), "w-1".into());
        let mut b = provider("baselime", "login_required");
        b.last_error = Some("invalid_grant:\nrefresh token revoked".into());
        let report = StatusReport {
            store: None,
            version: "0".into(),
            started_at: None,
            providers: vec![a, b],
        };
        let text = table(&report, now);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PROVIDER  STATE           EXPIRES IN  LAST REFRESH  NEXT REFRESH  LAST ERROR"
        );
        assert_eq!(
            lines[1],
            "bace      ready           3h12m       5m ago        in 20m        -"
        );
        assert_eq!(
            lines[2],
            "baselime  login_required  -           -             -             invalid_grant: refresh token revoked"
        );
        assert_eq!(lines[3], "bace: workspace=w-1");
    }
}
