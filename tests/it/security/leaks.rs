//! Issue 8, point 7: no secret leaks, in one full session at TRACE level.
//!
//! The only test in this binary, so it can install the process-wide subscriber (plus the `log`
//! bridge, for rustls and friends) that writes every event and span, at every level, into a
//! buffer. The session: credproxy starts with `proxy_auth`, a static provider, an OAuth 2.0
//! provider that needs a login, a password-grant provider with 4-second tokens (scheduled
//! refreshes), one whose client secret is wrong (503 `credential_unavailable`), BlendVision with
//! email + password (login, mint, org discovery, `x-bv-org-id`) and a dead upstream (502). Calls
//! go through it, refused and accepted; a person logs in (the engine's `login_with_code`, what
//! `credproxy login` runs); the upstream's 401 forces a refresh that is replayed; the config is
//! reloaded; `/status`, `/metrics`, `/readyz`, `/healthz` and the status page are read; the login
//! is revoked (`logout`). Then the buffer, the admin bodies, and every response credproxy made
//! itself (bodies and headers) are searched for every secret: each configured secret contains
//! `S3CR3T`, and the fakes' tokens and codes have known prefixes. (Not `SECRET`: credproxy's
//! 407 message says `http://user:SECRET@host:port` as a placeholder.)

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::security::*;
use base64::Engine as _;
use credproxy::clock::Clock;
use credproxy::token::{EngineContext, FileStore, TokenHttp, TokenStore};
use support::alone::own_process;
use support::blendvision::{EMAIL, PASSWORD as BV_PASSWORD};
use support::logs::capture_trace;
use support::{BlendVisionFake, Fake, OAuth2Fake, OAuth2Options, TestCa};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const PROXY_SECRET: &str = "pa-S3CR3T-4";
const CODED_SECRET: &str = "cs-a-S3CR3T-1";
const PW_CLIENT_SECRET: &str = "cs-b-S3CR3T-2";
const PW_PASSWORD: &str = "pw-b-S3CR3T-3";
const WRONG_SECRET: &str = "wrong-S3CR3T-5";
const DEAD_TOKEN: &str = "dead-S3CR3T-6";
const ORG_ID: &str = "org-S3CR3T-77";
const DEADLINE: Duration = Duration::from_secs(30);

/// What was logged, the admin bodies, and credproxy's own responses, to search at the end.
#[derive(Default)]
struct Seen {
    /// (what, text)
    items: Vec<(String, String)>,
}

impl Seen {
    /// A response credproxy made itself: its body and every header value.
    fn proxy_answer(&mut self, what: &str, r: &Resp) {
        let mut text = r.text();
        for (name, value) in &r.headers {
            text.push_str(&format!(
                "\n{name}: {}",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        self.items.push((what.to_owned(), text));
    }
}

fn basic(password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("app:{password}"))
    )
}

/// `GET url` through the main listener with the proxy secret.
async fn call(s: &Setup, url: &str, extra: &[(&str, &str)]) -> Resp {
    let uri: http::Uri = url.parse().unwrap();
    let host = uri.authority().unwrap().as_str().to_owned();
    let auth = basic(PROXY_SECRET);
    let mut headers = vec![
        ("host", host.as_str()),
        ("proxy-authorization", auth.as_str()),
    ];
    headers.extend_from_slice(extra);
    send(s.main(), get(url, &headers)).await
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn providers(a: &str, b: &str, bv: &str, dead: u16) -> String {
    format!(
        r#"
[providers.coded]
preset = "oauth2"
hosts = ["api.coded.test"]
upstream = "{a}"
token_url = "{a}/token"
authorize_url = "{a}/authorize"
revoke_url = "{a}/revoke"
grant = "authorization_code"
client_id = "oauth2-client"
client_secret = "{CODED_SECRET}"
wait_for_token = "3s"

[providers.pw]
preset = "oauth2"
hosts = ["api.pw.test"]
upstream = "{b}"
token_url = "{b}/token"
grant = "password"
client_id = "oauth2-client"
client_secret = "{PW_CLIENT_SECRET}"
username = "user@example.com"
password = "{PW_PASSWORD}"
wait_for_token = "5s"

[providers.broken]
preset = "oauth2"
hosts = ["api.broken.test"]
upstream = "{b}"
token_url = "{b}/token"
grant = "client_credentials"
client_id = "oauth2-client"
client_secret = "{WRONG_SECRET}"
wait_for_token = "1s"

[providers.bv]
preset = "blendvision"
upstream = "{bv}"
login_url = "{bv}/bv/account/v1/accounts/login"
mint_url = "{bv}/bv/account/v1/accounts/api-token"
org_url = "{bv}/bv/org/v1/organizations"
email = "{EMAIL}"
password = "{BV_PASSWORD}"
wait_for_token = "5s"

[providers.dead]
preset = "static"
hosts = ["api.dead.test"]
upstream = "https://127.0.0.1:{dead}"
token = "{DEAD_TOKEN}"

[[routes]]
listen = "127.0.0.1:0"
provider = "coded"
require_auth = false
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_leaks_anywhere_in_a_full_session() {
    // The subscriber is global: this test has a process of its own, so it sees only its logs.
    if !own_process(module_path!(), "no_secret_leaks_anywhere_in_a_full_session") {
        return;
    }
    let logs = capture_trace();
    let mut seen = Seen::default();

    let ca = TestCa::new();
    let a = OAuth2Fake::start_with(
        &ca,
        OAuth2Options {
            client_secret: CODED_SECRET.to_owned(),
            ..OAuth2Options::default()
        },
    )
    .await;
    let b = OAuth2Fake::start_with(
        &ca,
        OAuth2Options {
            client_secret: PW_CLIENT_SECRET.to_owned(),
            password: PW_PASSWORD.to_owned(),
            lifetime: Duration::from_secs(4),
            ..OAuth2Options::default()
        },
    )
    .await;
    let bv = BlendVisionFake::start(&ca).await;
    bv.set_org_id(ORG_ID);
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = providers(&a.url(), &b.url(), &bv.url(), dead);
    let s = Setup::try_start_with(ca, &format!("proxy_auth = \"{PROXY_SECRET}\""), |_| text)
        .await
        .unwrap_or_else(|e| panic!("credproxy did not start: {e}"));

    // Proxied calls that work.
    until("echo, pw and bv to be served", async || {
        call(&s, &format!("http://{HOST}/ok"), &[]).await.status == 200
            && call(&s, "http://api.pw.test/v1/pw", &[]).await.status == 200
            && call(&s, "http://api.one.blendvision.com/bv/cms/v1/videos", &[])
                .await
                .status
                == 200
    })
    .await;
    let h = bv.last_api_headers().unwrap();
    assert_eq!(
        h["x-bv-org-id"], ORG_ID,
        "the org id was discovered and sent"
    );

    // Errors credproxy makes.
    let r = call(&s, "http://api.coded.test/v1/x", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "login_required");
    seen.proxy_answer("503 login_required", &r);
    until("broken to fail", async || {
        s.status("broken").await.1["state"] == "failing"
    })
    .await;
    let r = call(&s, "http://api.broken.test/v1/x", &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "credential_unavailable");
    assert!(r.text().contains("last error"), "{}", r.text());
    seen.proxy_answer("503 credential_unavailable", &r);
    let r = call(&s, "http://api.dead.test/v1/x", &[]).await;
    assert_eq!(r.status, 502);
    seen.proxy_answer("502", &r);
    let guess = format!("Bearer guess-S3CR3T-{}", &PROXY_SECRET[..4]);
    let r = send(
        s.main(),
        get(
            &format!("http://{HOST}/x"),
            &[("host", HOST), ("proxy-authorization", &guess)],
        ),
    )
    .await;
    assert_eq!(r.status, 407);
    seen.proxy_answer("407", &r);
    let r = call(
        &s,
        "http://api.pw.test/v1/x",
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(r.status, 403);
    seen.proxy_answer("403 browser_request", &r);
    let r = call(&s, "http://nobody.test/x", &[]).await;
    assert_eq!(r.status, 403);
    seen.proxy_answer("403 unknown_host", &r);
    let r = raw(
        s.main(),
        format!(
            "POST http://api.pw.test/v1/x HTTP/1.1\r\nhost: api.pw.test\r\nproxy-authorization: {}\r\n\
             transfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
            basic(PROXY_SECRET)
        )
        .as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(r.statuses(), [400], "{}", r.text);
    seen.items.push(("400".to_owned(), r.text));

    // A person logs in (what `credproxy login coded` runs), and the proxy adopts the token.
    let state_dir = s.dir.path().join("state");
    let roots = credproxy::tls::roots(Some(&s.dir.path().join("test-ca.pem"))).unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::open(&state_dir).unwrap());
    let engine = EngineContext::new(
        TokenHttp::new(roots).unwrap(),
        store,
        Clock::new(),
        CancellationToken::new(),
    );
    let config = credproxy::config::load_str(&s.text, "security.toml", &|_| None).unwrap();
    let coded = config.provider("coded").unwrap().clone();
    credproxy::token::login_with_code(&coded, &engine, &a.issue_code(), None, None)
        .await
        .unwrap_or_else(|e| panic!("login: {e:?} ({:?})", a.last_rejection()));
    let route = s.route("coded");
    until("the login to be adopted", async || {
        send(
            route,
            get("/v1/after-login", &[("host", &route.to_string())]),
        )
        .await
        .status
            == 200
    })
    .await;

    // Scheduled refreshes (4 s tokens, rotating refresh tokens).
    until("two refreshes of pw", async || {
        call(&s, "http://api.pw.test/v1/pw", &[]).await.status == 200 && b.refresh_grants() >= 2
    })
    .await;

    // The upstream's 401 to a token at least 10 s old forces a refresh, and the call is replayed.
    until("a 401 nudge to be replayed", async || {
        a.revoke_all_access();
        let r = send(route, get("/v1/nudge", &[("host", &route.to_string())])).await;
        r.status == 200 && a.refresh_grants() >= 1
    })
    .await;

    // A reload: pw changes (restarted), dead goes away.
    let new_text = s
        .text
        .replace(
            "wait_for_token = \"5s\"\n\n[providers.broken]",
            "wait_for_token = \"5s\"\nheaders = { \"x-extra\" = \"1\" }\n\n[providers.broken]",
        )
        .replace(
            &format!(
                "[providers.dead]\npreset = \"static\"\nhosts = [\"api.dead.test\"]\nupstream = \"https://127.0.0.1:{dead}\"\ntoken = \"{DEAD_TOKEN}\"\n"
            ),
            "",
        );
    assert_ne!(new_text, s.text);
    let new_config = credproxy::config::load_str(&new_text, "security.toml", &|_| None).unwrap();
    let summary = s.proxy.reload(new_config).await.expect("reload");
    tracing::info!(?summary, "reloaded");
    assert_eq!(summary.removed, ["dead"]);
    assert!(summary.restarted.contains(&"pw".to_owned()), "{summary:?}");
    until("pw after the reload", async || {
        call(&s, "http://api.pw.test/v1/reloaded", &[]).await.status == 200
    })
    .await;
    assert_eq!(b.last_api_headers().unwrap()["x-extra"], "1");

    // The admin endpoints.
    for path in ["/status", "/metrics", "/readyz", "/healthz", "/"] {
        let r = send(s.admin(), get(path, &[("host", "localhost")])).await;
        assert!(r.status == 200 || path == "/readyz", "{path}: {}", r.status);
        seen.items.push((format!("admin {path}"), r.text()));
    }
    let (status, _) = s.status("coded").await;
    assert!(status.contains("\"coded\""), "{status}");

    // Logout revokes and forgets.
    let out = credproxy::token::logout(&coded, &engine).await.unwrap();
    assert!(out.removed && out.revoked, "{out:?}");
    assert!(s.proxy.shutdown(Duration::from_secs(3)).await);

    // The session really ran, at trace level.
    let logs = logs.text();
    for must in [
        "TRACE",
        "credproxy::access",
        "login stored",
        "upstream answered 401",
        "token request refused",
        "reloaded",
        "status=407",
        "status=502",
    ] {
        assert!(logs.contains(must), "the logs should mention {must:?}");
    }
    seen.items.push(("logs".to_owned(), logs));

    let basic_secret = basic(PROXY_SECRET);
    let basic_b64 = basic_secret.trim_start_matches("Basic ");
    let needles = [
        "S3CR3T",
        basic_b64,
        "oauth2_at_",
        "oauth2_rt_",
        "oauth2_code_",
        "bvapi_",
        "bvlogin_",
        BV_PASSWORD,
        TOKEN,
    ];
    let mut leaks = Vec::new();
    for (what, text) in &seen.items {
        for needle in needles {
            for line in text.lines().filter(|l| l.contains(needle)) {
                leaks.push(format!(
                    "{what}: {needle:?} in: {}",
                    &line[..line.len().min(400)]
                ));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
}
