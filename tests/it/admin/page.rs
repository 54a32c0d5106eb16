//! The status page over a real admin listener, read as sent and as a real browser renders it
//! (issue 15 item 10).
//!
//! The providers' snapshots are published by hand, through the same channel a refresher
//! writes, so each state (ready, refresh failing with a valid token, refresh failing with none,
//! a token that never expires) is on the page at once. The browser is Debian's `chromium`,
//! headless, with `--dump-dom`: the rows and their colour classes must be in the DOM it built.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use credproxy::admin::{self, AdminState};
use credproxy::credential::{self, Credential, CredentialWriter, Phase, Snapshot};
use credproxy::metrics::Metrics;
use credproxy::secret::Secret;
use tokio::time::Instant;

use crate::support::{TestCa, TestClient};
use tokio_util::sync::CancellationToken;

const NAMES: [&str; 4] = ["fresh", "wobbly", "broken", "forever"];

struct Page {
    addr: SocketAddr,
    _writers: Vec<CredentialWriter>,
    cancel: CancellationToken,
}

impl Drop for Page {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn provider(name: &str) -> Arc<credproxy::config::ProviderConfig> {
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\n[providers.{name}]\npreset = \"static\"\nhosts = [\"api.{name}.test\"]\nupstream = \"https://{name}.example\"\ntoken = \"t\"\n"
    );
    credproxy::config::load_str(&text, "t.toml", &|_| None)
        .unwrap()
        .providers[0]
        .clone()
}

fn token(lifetime: u64, left: Option<u64>) -> Arc<Credential> {
    let now = Instant::now();
    let expires = left.map(|l| now + Duration::from_secs(l));
    let obtained = expires.map_or(now, |e| e - Duration::from_secs(lifetime));
    let c = Credential::bearer(
        &Secret::from("page-test-token-abcdef"),
        &[],
        1,
        obtained,
        expires,
    )
    .unwrap();
    Arc::new(c)
}

/// An admin listener on 127.0.0.1:0 showing one provider in each state.
async fn serve() -> Page {
    let channels: Vec<_> = NAMES.iter().map(|_| credential::channel()).collect();
    let state = Arc::new(AdminState::new(
        NAMES
            .iter()
            .zip(&channels)
            .map(|(n, (_, r))| (provider(n), r.clone()))
            .collect(),
        Arc::new(Metrics::new(&NAMES)),
    ));
    let now = state.clock.unix_now();
    let snaps = [
        Snapshot {
            credential: Some(token(3600, Some(1800))),
            phase: Phase::Ready,
            expires_at_unix: Some(now + 1800),
            last_refresh_unix: Some(now - 1800),
            next_refresh_unix: Some(now + 900),
            ..Snapshot::starting()
        },
        Snapshot {
            // The page is read a moment later, by a browser: 4½ min reads "4 min" for 30 s.
            credential: Some(token(3600, Some(270))),
            phase: Phase::Failing,
            expires_at_unix: Some(now + 270),
            next_refresh_unix: Some(now + 90),
            last_error: Some("token endpoint answered 503 <Service Unavailable>".into()),
            ..Snapshot::starting()
        },
        Snapshot {
            phase: Phase::Failing,
            next_refresh_unix: Some(now + 150),
            last_error: Some("invalid_client: the client secret was revoked".into()),
            ..Snapshot::starting()
        },
        Snapshot {
            credential: Some(token(0, None)),
            phase: Phase::Ready,
            ..Snapshot::starting()
        },
    ];
    let mut writers = Vec::new();
    for ((w, _), snap) in channels.into_iter().zip(snaps) {
        w.publish(snap);
        writers.push(w);
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let cancel = CancellationToken::new();
    tokio::spawn(admin::serve(
        credproxy::net::Bound::Tcp(listener),
        state,
        cancel.clone(),
    ));
    Page {
        addr,
        _writers: writers,
        cancel,
    }
}

/// The `<tr>` of provider `name` in `html`.
fn row<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html
        .find(&format!("data-provider=\"{name}\""))
        .unwrap_or_else(|| panic!("no row for {name}: {html}"));
    let open = html[..at].rfind("<tr").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    &html[open..end]
}

/// What every rendering of the page must show, as sent or as a browser built it.
fn assert_states(html: &str) {
    let fresh = row(html, "fresh");
    assert!(
        fresh.contains("health-ok") && fresh.contains(">ready<"),
        "{fresh}"
    );
    assert!(
        fresh.contains("hosts api.fresh.test") && fresh.contains("upstream https://fresh.example")
    );
    let wobbly = row(html, "wobbly");
    assert!(wobbly.contains("health-warn"), "{wobbly}");
    assert!(
        wobbly.contains("valid for 4 min, refresh failing; next attempt in 1 min"),
        "{wobbly}"
    );
    assert!(
        wobbly.contains("503 &lt;Service Unavailable&gt;"),
        "escaped: {wobbly}"
    );
    let broken = row(html, "broken");
    assert!(broken.contains("health-bad"), "{broken}");
    assert!(
        broken.contains("no valid token, refresh failing; next attempt in 2 min"),
        "{broken}"
    );
    assert!(broken.contains("the client secret was revoked"), "{broken}");
    let forever = row(html, "forever");
    assert!(
        forever.contains("health-ok") && forever.contains(">never expires<"),
        "{forever}"
    );
    assert!(!html.contains("page-test-token"), "no token on the page");
}

#[tokio::test]
async fn the_page_as_sent_has_a_row_per_state_with_its_words_and_colour() {
    let page = serve().await;
    let url = format!("http://{}/", page.addr);
    let resp = TestClient::new(&TestCa::new()).get(&url, &[]).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.headers["content-type"], "text/html; charset=utf-8");
    let csp = resp.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = resp.text();
    assert!(
        !html.contains("<script"),
        "no script: the rows are in the HTML"
    );
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
    assert_states(&html);
}

/// `chromium`, installed quietly when missing and apt-get can; `None` where it can't be.
fn chromium() -> Option<&'static str> {
    static FOUND: std::sync::OnceLock<Option<&'static str>> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| {
        let runs = |bin: &str| {
            std::process::Command::new(bin)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let find = || {
            ["chromium", "chromium-browser"]
                .into_iter()
                .find(|b| runs(b))
        };
        find().or_else(|| {
            let _ = std::process::Command::new("apt-get")
                .args(["install", "-y", "-qq", "chromium"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            find()
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_browser_renders_each_states_row_and_colour_class() {
    let Some(bin) = chromium() else {
        eprintln!("chromium is not installed and can't be (apt-get install chromium): skipping");
        return;
    };
    let page = serve().await;
    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            &format!("http://{}/", page.addr),
        ])
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = match tokio::time::timeout(Duration::from_secs(60), run).await {
        Ok(Ok(out)) if out.status.success() => out,
        other => {
            eprintln!("chromium could not run headless here ({other:?}): skipping");
            return;
        }
    };
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<table>"), "a DOM: {dom}");
    assert_states(&dom);
}

/// `credproxy status` asks the same admin listener and prints the same words, one row per state.
#[tokio::test(flavor = "multi_thread")]
async fn credproxy_status_prints_each_state_in_the_pages_words() {
    let page = serve().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"{}\"\nstate_dir = \"{}\"\n",
        page.addr,
        dir.path().join("state").display()
    );
    for name in NAMES {
        config.push_str(&format!(
            "[providers.{name}]\npreset = \"static\"\nhosts = [\"api.{name}.test\"]\ntoken = \"t\"\n"
        ));
    }
    let path = dir.path().join("credproxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(["status", "--config", path.to_str().unwrap()])
        .env_remove("CREDPROXY_CONFIG")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row: {stdout}"))
    };
    assert!(line("fresh").contains(" ready "), "{stdout}");
    assert!(
        line("wobbly").contains("valid for 4 min, refresh failing; next attempt in 1 min"),
        "{stdout}"
    );
    assert!(
        line("wobbly").contains("token endpoint answered 503 <Service Unavailable>"),
        "the terminal shows the text as it is: {stdout}"
    );
    assert!(
        line("broken").contains("no valid token, refresh failing; next attempt in 2 min"),
        "{stdout}"
    );
    assert!(line("forever").contains("never expires"), "{stdout}");
    assert!(!stdout.contains("in never"), "{stdout}");
    assert!(
        stdout.contains("fresh: hosts api.fresh.test · upstream https://fresh.example · token lifetime 1 h · 0 requests, 0 upstream 401s since start"),
        "{stdout}"
    );
    assert!(!stdout.contains("page-test-token"));
}
