//! The person-facing commands end to end: the `credproxy` binary against the generic OAuth 2.0
//! fake over real TLS (the test CA as `ca_file`).
//!
//! `login` is driven by a test that plays the browser: it reads the authorize URL the binary
//! prints, follows it to the fake's authorize endpoint, and takes the redirect the fake answers to
//! the binary's one-shot listener. Then `token` must print exactly a token the fake issued, and
//! `logout` must revoke and forget it. `check --online` obtains tokens without touching the store.
//!
//! Real time, short timeouts; every wait is a condition with a deadline.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use credproxy::credential::Phase;
use support::client::query_param;
use support::proxy::Harness;
use support::{Consent, Fake, OAuth2Fake, TestCa, TestClient};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a binary gets for anything it should do at once.
const DEADLINE: Duration = Duration::from_secs(20);

/// The fake, a temp dir with the CA file and the token store, and a config file for the binary.
struct Setup {
    ca: TestCa,
    fake: OAuth2Fake,
    harness: Harness,
    config: PathBuf,
    providers: String,
}

impl Setup {
    /// One provider, `fake`, on the fake, with `extra` TOML lines (the grant, mostly).
    async fn new(extra: &str) -> Setup {
        let ca = TestCa::new();
        let fake = OAuth2Fake::start(&ca).await;
        let u = fake.url();
        let providers = format!(
            "[providers.fake]\npreset = \"oauth2\"\nhosts = [\"api.fake.test\"]\n\
             upstream = \"{u}\"\ntoken_url = \"{u}/token\"\nauthorize_url = \"{u}/authorize\"\n\
             client_id = \"oauth2-client\"\nclient_secret = \"oauth2-secret\"\n{extra}\n"
        );
        Self::with_providers(ca, fake, providers)
    }

    fn with_providers(ca: TestCa, fake: OAuth2Fake, providers: String) -> Setup {
        let harness = Harness::new(&ca);
        let config = harness.ca_file.parent().unwrap().join("credproxy.toml");
        let mut s = Setup {
            ca,
            fake,
            harness,
            config,
            providers: String::new(),
        };
        s.set_providers(providers);
        s
    }

    /// Rewrite the config file with other providers.
    fn set_providers(&mut self, providers: String) {
        let text = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
             ca_file = \"{}\"\n\n{providers}",
            self.harness.state_dir.display(),
            self.harness.ca_file.display(),
        );
        std::fs::write(&self.config, text).unwrap();
        self.providers = providers;
    }

    /// `credproxy ARGS --config <ours>`, with piped output and no browser.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_credproxy"));
        c.args(args)
            .arg("--config")
            .arg(&self.config)
            .env_remove("CREDPROXY_LOG")
            .env_remove("CREDPROXY_CONFIG")
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .env_remove("BROWSER")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Run to completion.
    async fn run(&self, args: &[&str]) -> Output {
        let child = self.command(args).spawn().expect("credproxy runs");
        let out = tokio::time::timeout(DEADLINE, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`credproxy {}` took over {DEADLINE:?}", args.join(" ")))
            .unwrap();
        Output {
            status: out.status,
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Start `credproxy login fake --no-browser ARGS` and read the authorize URL it prints.
    async fn login(&self, args: &[&str]) -> (Login, String) {
        let mut all = vec!["login", "fake", "--no-browser"];
        all.extend_from_slice(args);
        let mut cmd = self.command(&all);
        if args.contains(&"--paste") {
            cmd.stdin(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("credproxy login runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(DEADLINE, async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if line.starts_with("https://") {
                    return Some(line);
                }
            }
            None
        })
        .await
        .expect("the authorize URL within the deadline");
        let login = Login { child, stdout };
        let Some(url) = url else {
            let out = login.finish().await;
            panic!("no authorize URL printed: {out:?}");
        };
        (login, url)
    }

    fn store_file(&self) -> PathBuf {
        self.harness.state_dir.join("fake.json")
    }
}

#[derive(Debug)]
struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// A `credproxy login` in progress, its URL line already read.
struct Login {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Login {
    async fn paste(&mut self, text: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(text.as_bytes()).await.unwrap();
        stdin.write_all(b"\n").await.unwrap();
        stdin.flush().await.unwrap();
    }

    /// Wait for the exit; the rest of stdout, and stderr.
    async fn finish(mut self) -> Output {
        let mut stderr = self.child.stderr.take().unwrap();
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("credproxy login ends within the deadline")
            .unwrap();
        let mut stdout = String::new();
        while let Some(line) = self.stdout.next_line().await.unwrap() {
            stdout.push_str(&line);
            stdout.push('\n');
        }
        let mut err = String::new();
        stderr.read_to_string(&mut err).await.unwrap();
        Output {
            status,
            stdout,
            stderr: err,
        }
    }
}

/// Play the browser at the authorize endpoint: the redirect it answers with.
async fn authorize(client: &TestClient, url: &str) -> String {
    let r = client.get(url, &[]).await;
    assert_eq!(r.status.as_u16(), 302, "authorize answered {}", r.text());
    r.header("location")
        .expect("a Location to the redirect")
        .to_owned()
}

/// The token `credproxy token fake` prints, checked to be alone on stdout.
async fn token_alone(s: &Setup) -> String {
    let out = s.run(&["token", "fake"]).await;
    assert!(out.status.success(), "credproxy token failed: {out:?}");
    let token = out
        .stdout
        .strip_suffix('\n')
        .unwrap_or_else(|| panic!("newline-terminated: {:?}", out.stdout));
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "one token, nothing else: {:?}",
        out.stdout
    );
    token.to_owned()
}

/// Wait until `cond` holds, checking every 50 ms; panic naming `what` after [`DEADLINE`].
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out after {DEADLINE:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn assert_no_secret(out: &Output, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !out.stdout.contains(s) && !out.stderr.contains(s),
            "a secret was printed: {out:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_through_the_browser_then_token_prints_the_issued_token() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;

    let location = authorize(&client, &url).await;
    let seen = s
        .fake
        .last_authorize()
        .expect("the fake saw the authorize request");
    assert_eq!(seen.code_challenge_method.as_deref(), Some("S256"));
    assert_eq!(seen.redirect_uri.as_deref(), location.split('?').next());
    assert!(location.starts_with("http://127.0.0.1:"), "{location}");
    // A browser asks for a favicon too: 404, and the login goes on.
    let origin = &location[..location.find("/callback").unwrap()];
    let favicon = client.get(&format!("{origin}/favicon.ico"), &[]).await;
    assert_eq!(favicon.status.as_u16(), 404);

    let page = client.get(&location, &[]).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.text());
    assert!(page.text().contains("Logged in to fake"), "{}", page.text());
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout == "logged in to fake; token expires in 1h\n"
            || out
                .stdout
                .starts_with("logged in to fake; token expires in 59m"),
        "{out:?}"
    );
    assert!(s.store_file().exists(), "the token is in the store");
    assert_eq!(s.fake.authorization_code_grants(), 1);
    let code = query_param(&location, "code").unwrap();

    let token = token_alone(&s).await;
    assert!(s.fake.is_valid_token(&token), "the fake issued {token}");
    assert_eq!(s.fake.tokens_issued(), 1, "token reused the login's token");
    assert_no_secret(&out, &[&token, &code, "oauth2-secret"]);
    // The listener is gone once the login ended.
    assert!(
        tokio::net::TcpStream::connect(origin.trim_start_matches("http://"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_proxy_waiting_for_a_login_picks_it_up() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    let proxy = s.harness.start(&s.providers).await;
    wait_until("the proxy to report login_required", || {
        proxy.snapshot("fake").phase == Phase::LoginRequired
    })
    .await;

    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    assert_eq!(client.get(&location, &[]).await.status.as_u16(), 200);
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");

    // The refresher re-reads the store every 5 s while a login is awaited.
    wait_until("the proxy to use the new login", || {
        proxy.snapshot("fake").phase == Phase::Ready
    })
    .await;
    assert_eq!(
        s.fake.tokens_issued(),
        1,
        "the proxy adopted the login's token"
    );
    proxy.stop().await;
}

/// Issue 14 item 13: any local process can reach the login's listener. A redirect without this
/// login's `state` (another one, or none, even one saying `error=access_denied`) gets 400 and the
/// login keeps waiting; the real redirect still completes it.
#[tokio::test(flavor = "multi_thread")]
async fn login_refuses_a_redirect_with_another_state_and_keeps_waiting() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    let state = query_param(&location, "state").unwrap();
    let tampered = location.replace(&format!("state={state}"), "state=forged");
    assert_ne!(tampered, location);

    let page = client.get(&tampered, &[]).await;
    assert_eq!(page.status.as_u16(), 400);
    assert!(
        page.text().contains("state does not match"),
        "{}",
        page.text()
    );
    let origin = &location[..location.find("/callback").unwrap()];
    for forged in [
        format!("{origin}/callback?error=access_denied"),
        format!("{origin}/callback?code=planted"),
    ] {
        let page = client.get(&forged, &[]).await;
        assert_eq!(page.status.as_u16(), 400, "{forged}: {}", page.text());
    }
    assert_eq!(s.fake.token_calls(), 0, "no exchange of a forged code");

    let page = client.get(&location, &[]).await;
    assert_eq!(page.status.as_u16(), 200, "{}", page.text());
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.contains("ignored a redirect"), "{out:?}");
    assert!(!out.stderr.contains("planted"), "{out:?}");
    assert_eq!(s.fake.authorization_code_grants(), 1);
    assert!(s.store_file().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_reports_access_denied_without_an_exchange() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    s.fake.set_consent(Consent::Deny);
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    assert!(location.contains("error=access_denied"), "{location}");

    let page = client.get(&location, &[]).await;
    assert!(page.text().contains("access_denied"), "{}", page.text());
    let out = login.finish().await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("refused the authorization: access_denied"),
        "{out:?}"
    );
    assert_eq!(s.fake.token_calls(), 0, "no exchange");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_gives_up_after_the_timeout() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    let (login, _url) = s.login(&["--timeout", "1s"]).await;
    let out = login.finish().await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("no answer within 1s"), "{out:?}");
    assert!(
        out.stderr.contains("--timeout"),
        "the hint names --timeout: {out:?}"
    );
    assert_eq!(s.fake.token_calls(), 0, "no exchange");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_paste_takes_the_redirected_url_and_checks_its_state() {
    // Nothing listens on this redirect: the user copies the URL from the address bar.
    let s = Setup::new(
        "grant = \"authorization_code\"\nredirect_uri = \"http://127.0.0.1:9/callback\"",
    )
    .await;
    let client = TestClient::new(&s.ca);

    let (mut login, url) = s.login(&["--paste"]).await;
    let location = authorize(&client, &url).await;
    let state = query_param(&location, "state").unwrap();
    login
        .paste(&location.replace(&format!("state={state}"), "state=forged"))
        .await;
    let out = login.finish().await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("state does not match"), "{out:?}");
    assert_eq!(s.fake.token_calls(), 0);

    let (mut login, url) = s.login(&["--paste"]).await;
    let location = authorize(&client, &url).await;
    assert!(
        location.starts_with("http://127.0.0.1:9/callback?"),
        "{location}"
    );
    login.paste(&location).await;
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("logged in to fake"), "{out:?}");
    let token = token_alone(&s).await;
    assert!(s.fake.is_valid_token(&token));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_paste_takes_a_bare_code() {
    // No redirect_uri: the fake shows the code on a page, as some providers do.
    let s = Setup::new("grant = \"authorization_code\"").await;
    let client = TestClient::new(&s.ca);
    let (mut login, url) = s.login(&["--paste"]).await;
    assert!(query_param(&url, "redirect_uri").is_none(), "{url}");
    let page = client.get(&url, &[]).await;
    let code = page
        .text()
        .trim()
        .strip_prefix("Your authorization code: ")
        .expect("the fake shows the code")
        .to_owned();
    login.paste(&code).await;
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert!(s.store_file().exists());
    assert_no_secret(&out, &[&code]);
    assert_eq!(
        s.fake.authorization_code_grants(),
        1,
        "the pasted code was exchanged"
    );
    assert!(s.fake.is_valid_token(&token_alone(&s).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn login_password_grant_with_the_password_in_the_config_needs_no_prompt() {
    let s = Setup::new(
        "grant = \"password\"\nusername = \"user@example.com\"\npassword = \"oauth2-password\"",
    )
    .await;
    // stdin is /dev/null and there is no terminal: a prompt would fail.
    let out = s.run(&["login", "fake"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("logged in to fake; token expires in"),
        "{out:?}"
    );
    assert_eq!(s.fake.password_grants(), 1);
    assert!(s.store_file().exists());
    assert_no_secret(&out, &["oauth2-password"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn login_for_a_static_provider_is_a_usage_error() {
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let s = Setup::with_providers(
        ca,
        fake,
        "[providers.fake]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t0k3n\"\n"
            .into(),
    );
    let out = s.run(&["login", "fake"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("nothing to log in to"), "{out:?}");
    assert!(
        out.stderr.contains("hint: `credproxy token fake`"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn token_prints_the_token_alone_and_reuses_it() {
    let s = Setup::new("grant = \"client_credentials\"").await;
    let first = token_alone(&s).await;
    assert!(s.fake.is_valid_token(&first));
    let second = token_alone(&s).await;
    assert_eq!(first, second, "the stored token is fresh: reused");
    assert_eq!(s.fake.client_credentials_grants(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn token_says_what_to_do_when_it_cannot() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    let out = s.run(&["token", "fake"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, "", "nothing on stdout");
    assert!(
        out.stderr
            .contains("hint: run `credproxy login fake` first"),
        "{out:?}"
    );

    let out = s.run(&["token", "nope"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.contains("no provider named `nope`"), "{out:?}");
    assert!(out.stderr.contains("configured providers: fake"), "{out:?}");

    let out = s.run(&["token"]).await;
    assert_eq!(out.status.code(), Some(2), "usage error: {out:?}");
}

/// An authorization-code provider with a `revoke_url`, logged in as `credproxy login` would (a
/// code the fake issued, exchanged into the proxy's token store).
async fn logged_in_with_revoke_url() -> (Setup, String) {
    let mut s = Setup::new("grant = \"authorization_code\"").await;
    let u = s.fake.url();
    let providers = format!("{}revoke_url = \"{u}/revoke\"\n", s.providers);
    s.set_providers(providers.clone());
    let config = s.harness.config(&providers);
    let code = s.fake.issue_code();
    credproxy::token::login_with_code(
        config.provider("fake").unwrap(),
        &s.harness.engine(),
        &code,
        None,
        None,
    )
    .await
    .expect("login");
    (s, providers)
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_and_forgets() {
    let (s, _) = logged_in_with_revoke_url().await;
    let token = s.harness.stored("fake").expect("stored").access_token;
    assert!(s.fake.is_valid_token(token.expose()));

    let out = s.run(&["logout", "fake"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("revoked the tokens"), "{out:?}");
    assert!(!s.store_file().exists(), "the store file is gone");
    assert!(s.fake.revoke_calls() >= 1, "the fake was asked to revoke");
    assert!(
        !s.fake.is_valid_token(token.expose()),
        "revoked at the fake"
    );
    assert_no_secret(&out, &[token.expose()]);

    let out = s.run(&["logout", "fake"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("no stored tokens"), "{out:?}");

    let out = s.run(&["token", "fake"]).await;
    assert_eq!(out.status.code(), Some(1), "logged out: {out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_logout_a_running_proxy_reports_login_required() {
    let (s, providers) = logged_in_with_revoke_url().await;
    let proxy = s.harness.start(&providers).await;
    wait_until("the proxy to use the stored login", || {
        proxy.snapshot("fake").phase == Phase::Ready
    })
    .await;

    let out = s.run(&["logout", "fake"]).await;
    assert!(out.status.success(), "{out:?}");
    wait_until("the proxy to report login_required", || {
        proxy.snapshot("fake").phase == Phase::LoginRequired
    })
    .await;
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_without_revoke_url_says_the_tokens_stay_valid() {
    let s = Setup::new(
        "grant = \"password\"\nusername = \"user@example.com\"\npassword = \"oauth2-password\"",
    )
    .await;
    assert!(s.run(&["login", "fake"]).await.status.success());
    let out = s.run(&["logout", "fake"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stdout.contains("no revoke_url"), "{out:?}");
    assert!(!s.store_file().exists());
    assert_eq!(s.fake.revoke_calls(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_online_says_which_providers_work() {
    let mut s = Setup::new("grant = \"client_credentials\"").await;
    let u = s.fake.url();
    let login = format!(
        "[providers.interactive]\npreset = \"oauth2\"\nhosts = [\"b.fake.test\"]\n\
         token_url = \"{u}/token\"\nauthorize_url = \"{u}/authorize\"\n\
         grant = \"authorization_code\"\nclient_id = \"oauth2-client\"\n"
    );
    s.set_providers(format!("{}\n{login}", s.providers));
    let out = s.run(&["check", "--online"]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.contains("fake         ok: token obtained"),
        "{out:?}"
    );
    assert!(
        out.stdout.contains("interactive  skipped: needs a person"),
        "{out:?}"
    );
    assert!(
        !s.harness.state_dir.exists(),
        "the token store was not touched"
    );
    assert_eq!(s.fake.client_credentials_grants(), 1);

    let wrong = s.providers.replace("\"oauth2-secret\"", "\"wrong-secret\"");
    s.set_providers(wrong);
    let out = s.run(&["check", "--online"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.contains("fake         failed: "), "{out:?}");
    assert!(out.stdout.contains("invalid_client"), "the reason: {out:?}");
    assert!(out.stdout.contains("hint: check providers.fake"), "{out:?}");
    assert_no_secret(&out, &["wrong-secret"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_lists_every_problem_in_file_order_then_the_count() {
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let providers = "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\n\
                     token = \"${CREDPROXY_TEST_UNSET_TOKEN}\"\n\n\
                     [providers.svc]\npreset = \"oauth2\"\nhosts = [\"api.svc.test\"]\n\
                     client_id = \"x\"\nclient_secret = { file = \"/nonexistent/credproxy-secret\" }\n";
    let s = Setup::with_providers(ca, fake, providers.into());
    let out = s.run(&["check"]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = &out.stderr;
    let at = |needle: &str| {
        err.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in {err}"))
    };
    let gh = at("providers.gh.token: environment variable CREDPROXY_TEST_UNSET_TOKEN is not set");
    let missing = at("providers.svc.token_url: missing");
    let secret = at("providers.svc.client_secret: can't read secret file");
    // The svc table's header line (the missing token_url) comes before its client_secret line.
    assert!(gh < missing && missing < secret, "{err}");
    assert!(err.trim_end().ends_with("3 errors"), "{err}");
    assert!(Path::new(&s.config).exists());
}

/// Issue 14 item 13, RFC 8414 + RFC 9207: `login` with `issuer` set for the fake (its RFC 8414
/// metadata on, saying it always sends `iss`), the fake's redirect carrying `iss = iss`.
async fn issuer_setup(iss: Option<&str>, metadata_issuer: Option<&str>) -> Setup {
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let u = fake.url();
    let meta = metadata_issuer.unwrap_or(&u).to_owned();
    fake.update_options(|o| {
        o.metadata = Some(serde_json::json!({
            "issuer": meta,
            "authorization_endpoint": format!("{u}/authorize"),
            "token_endpoint": format!("{u}/token"),
            "authorization_response_iss_parameter_supported": true,
        }));
        o.redirect_iss = iss.map(str::to_owned);
    });
    let providers = format!(
        "[providers.fake]\npreset = \"oauth2\"\nhosts = [\"api.fake.test\"]\n\
         upstream = \"{u}\"\ntoken_url = \"{u}/token\"\nauthorize_url = \"{u}/authorize\"\n\
         client_id = \"oauth2-client\"\nclient_secret = \"oauth2-secret\"\n\
         grant = \"authorization_code\"\nissuer = \"{u}\"\n"
    );
    Setup::with_providers(ca, fake, providers)
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_issuer_completes_when_iss_is_the_issuer() {
    let s = issuer_setup(None, None).await;
    let iss = s.fake.url();
    s.fake
        .update_options(|o| o.redirect_iss = Some(iss.clone()));
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    assert_eq!(s.fake.metadata_calls(), 1, "the metadata is read first");
    let location = authorize(&client, &url).await;
    assert_eq!(query_param(&location, "iss").as_deref(), Some(iss.as_str()));
    assert_eq!(client.get(&location, &[]).await.status.as_u16(), 200);
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.fake.authorization_code_grants(), 1);
    assert!(s.store_file().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_issuer_fails_on_another_iss_without_exchanging_the_code() {
    let s = issuer_setup(Some("https://mix-up.example"), None).await;
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    let page = client.get(&location, &[]).await;
    assert!(
        page.text().contains("https://mix-up.example"),
        "{}",
        page.text()
    );
    let out = login.finish().await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("came from issuer \"https://mix-up.example\", not"),
        "{out:?}"
    );
    assert!(out.stderr.contains("the code was not used"), "{out:?}");
    assert_eq!(s.fake.token_calls(), 0, "the code is not exchanged");
    assert!(!s.store_file().exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_issuer_fails_when_a_required_iss_is_missing() {
    let s = issuer_setup(None, None).await;
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    assert_eq!(query_param(&location, "iss"), None);
    client.get(&location, &[]).await;
    let out = login.finish().await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stderr.contains("carries no `iss`, but"), "{out:?}");
    assert_eq!(s.fake.token_calls(), 0, "the code is not exchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn login_with_issuer_stops_at_metadata_naming_another_issuer() {
    let s = issuer_setup(None, Some("https://someone-else.example")).await;
    let out = s.run(&["login", "fake", "--no-browser"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("names issuer \"https://someone-else.example\", not the configured"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("providers.fake.issuer"),
        "the hint names the key: {out:?}"
    );
    assert!(
        !out.stdout.contains("/authorize"),
        "no authorize URL: {out:?}"
    );
    assert_eq!(s.fake.metadata_calls(), 1);
    assert_eq!(s.fake.token_calls(), 0);
}

/// Without `issuer` configured, an `iss` in the response can't be checked: the login goes on.
#[tokio::test(flavor = "multi_thread")]
async fn login_without_issuer_goes_on_past_an_iss() {
    let s = Setup::new("grant = \"authorization_code\"").await;
    s.fake
        .update_options(|o| o.redirect_iss = Some("https://whoever.example".into()));
    let client = TestClient::new(&s.ca);
    let (login, url) = s.login(&[]).await;
    let location = authorize(&client, &url).await;
    assert!(query_param(&location, "iss").is_some());
    assert_eq!(client.get(&location, &[]).await.status.as_u16(), 200);
    let out = login.finish().await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(s.fake.metadata_calls(), 0, "no issuer: no metadata read");
}
