//! Reload (SIGHUP): unchanged providers keep their token and schedule, changed and new ones start
//! fresh, removed ones stop, listeners open and close, requests in flight are not disturbed, and
//! a bad config leaves the running one in force.

use crate::support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use support::proxy::proxy_section;
use support::server::free_port;
use support::{Alpn, Fake, OAuth2Fake, TestCa, TestServer};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An upstream that answers with the Authorization it received; `/slow` takes a second.
async fn upstream(ca: &TestCa) -> TestServer {
    TestServer::start(
        Some(ca.server_config(&["localhost"], Alpn::Http1Only)),
        support::server::handler(|req: Request<Incoming>| async move {
            if req.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            Response::new(Full::new(Bytes::from(auth)))
        }),
    )
    .await
}

async fn get(addr: SocketAddr, url: &str) -> (StatusCode, String) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let uri: http::Uri = url.parse().unwrap();
    let host = uri
        .authority()
        .map(|a| a.to_string())
        .unwrap_or_else(|| addr.to_string());
    let req = Request::builder()
        .uri(url)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

struct Env {
    ca: TestCa,
    dir: tempfile::TempDir,
    up: TestServer,
    fake: OAuth2Fake,
}

impl Env {
    async fn new() -> Self {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        ca.write_ca_file(dir.path());
        let up = upstream(&ca).await;
        let fake = OAuth2Fake::start(&ca).await;
        Env { ca, dir, up, fake }
    }

    /// A config with an oauth2 provider, a static one with `token`, and `routes` as given.
    fn config_text(&self, static_token: &str, route_listen: &str) -> String {
        let o = self.fake.options();
        format!(
            r#"
{proxy}
[providers.oauth]
preset = "oauth2"
hosts = ["api.oauth.test"]
upstream = "https://localhost:{port}"
token_url = "{fake}/token"
grant = "client_credentials"
client_id = "{id}"
client_secret = "{secret}"

[providers.fixed]
preset = "static"
hosts = ["api.fixed.test"]
upstream = "https://localhost:{port}"
token = "{static_token}"

[[routes]]
listen = "{route_listen}"
provider = "fixed"
"#,
            proxy = proxy_section(
                &self.dir.path().join("state"),
                &self.dir.path().join("test-ca.pem")
            ),
            port = self.up.port(),
            fake = self.fake.url(),
            id = o.client_id,
            secret = o.client_secret,
        )
    }

    fn config(&self, static_token: &str, route_listen: &str) -> credproxy::config::Config {
        let text = self.config_text(static_token, route_listen);
        credproxy::config::load_str(&text, "t.toml", &|_| None).unwrap()
    }
}

#[tokio::test]
async fn reload_keeps_unchanged_providers_and_swaps_the_rest() {
    let env = Env::new().await;
    let _ = &env.ca;
    let running = credproxy::app::start(env.config("static-one", "127.0.0.1:0"))
        .await
        .unwrap();
    let main = running.main_addr().tcp().unwrap();
    let old_route = running.route_addr("fixed").unwrap().tcp().unwrap();

    let (status, auth) = get(main, "http://api.oauth.test/a").await;
    assert_eq!(status, 200, "{auth}");
    let oauth_token = auth.clone();
    assert_eq!(env.fake.client_credentials_grants(), 1);
    assert_eq!(
        get(main, "http://api.fixed.test/").await.1,
        "Bearer static-one"
    );

    // A request in flight across the reload.
    let slow = tokio::spawn(async move { get(main, "http://api.fixed.test/slow").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let new_port = free_port();
    let summary = running
        .reload(env.config("static-two", &format!("127.0.0.1:{new_port}")))
        .await
        .unwrap();
    assert_eq!(summary.kept, vec!["oauth"]);
    assert_eq!(summary.restarted, vec!["fixed"]);
    assert_eq!(
        summary.listeners_opened,
        vec![format!("127.0.0.1:{new_port}")]
    );
    assert_eq!(summary.listeners_closed, vec![old_route.to_string()]);

    // The request in flight finished on the old generation, undisturbed.
    let (status, auth) = slow.await.unwrap();
    assert_eq!((status.as_u16(), auth.as_str()), (200, "Bearer static-one"));

    // Unchanged provider: same token, no new token call.
    let (status, auth) = get(main, "http://api.oauth.test/b").await;
    assert_eq!((status.as_u16(), &auth), (200, &oauth_token));
    assert_eq!(
        env.fake.client_credentials_grants(),
        1,
        "an unchanged provider keeps its token"
    );

    // Changed provider: the new token, on the main listener and on the new route listener.
    assert_eq!(
        get(main, "http://api.fixed.test/").await.1,
        "Bearer static-two"
    );
    let new_route: SocketAddr = format!("127.0.0.1:{new_port}").parse().unwrap();
    assert_eq!(running.route_addr("fixed").unwrap().tcp(), Some(new_route));
    assert_eq!(get(new_route, "/").await.1, "Bearer static-two");

    // The removed listener no longer accepts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(old_route).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "old route listener still accepting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(running.shutdown(Duration::from_secs(3)).await);
}

#[tokio::test]
async fn a_provider_removed_by_reload_is_no_longer_claimed() {
    let env = Env::new().await;
    let running = credproxy::app::start(env.config("s", "127.0.0.1:0"))
        .await
        .unwrap();
    let main = running.main_addr().tcp().unwrap();
    let (status, seen) = get(main, "http://api.oauth.test/").await;
    assert_eq!(status, 200);
    assert!(
        seen.starts_with("Bearer "),
        "the upstream got the oauth token: {seen:?}"
    );
    let text = env.config_text("s", "127.0.0.1:0");
    let without_oauth = text
        .replace("[providers.oauth]", "[providers.oauth_gone]")
        .replace(
            "hosts = [\"api.oauth.test\"]",
            "hosts = [\"api.other.test\"]",
        );
    let config = credproxy::config::load_str(&without_oauth, "t.toml", &|_| None).unwrap();
    let summary = running.reload(config).await.unwrap();
    assert_eq!(summary.removed, vec!["oauth"]);
    assert_eq!(summary.added, vec!["oauth_gone"]);
    assert_eq!(get(main, "http://api.oauth.test/").await.0, 403);
    assert!(running.snapshot("oauth").is_none());
    running.shutdown(Duration::from_secs(3)).await;
}

/// The binary: SIGHUP with a broken file keeps serving; with a good one it applies it.
#[tokio::test]
async fn sighup_with_a_bad_config_keeps_serving_and_a_good_one_applies() {
    let env = Env::new().await;
    let route_port = free_port();
    let path = env.dir.path().join("credproxy.toml");
    std::fs::write(
        &path,
        env.config_text("bin-one", &format!("127.0.0.1:{route_port}")),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(["run", "--workers", "2", "--config"])
        .arg(&path)
        .env("CREDPROXY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let route: SocketAddr = format!("127.0.0.1:{route_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(route).await.is_err() {
        assert!(Instant::now() < deadline, "credproxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(route, "/").await.1, "Bearer bin-one");

    std::fs::write(&path, "[proxy]\nlisten = 42\nconnect_timeout = 5\n").unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_line(&mut rx, "reload refused").await;
    // Every error, in file order, then the count: what `check` prints.
    wait_line(&mut rx, ":2:10: proxy.listen: must be an address").await;
    wait_line(&mut rx, ":3:19: proxy.connect_timeout: must be a duration").await;
    wait_line(&mut rx, "2 errors").await;
    assert_eq!(
        get(route, "/").await.1,
        "Bearer bin-one",
        "the old config stays in force"
    );

    std::fs::write(
        &path,
        env.config_text("bin-two", &format!("127.0.0.1:{route_port}")),
    )
    .unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_line(&mut rx, "config reloaded").await;
    assert_eq!(get(route, "/").await.1, "Bearer bin-two");

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}

async fn wait_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"))
            .expect("credproxy's stderr closed");
        if line.contains(needle) {
            return line;
        }
    }
}

/// Issue 19: SIGHUP reopens the audit log (log rotation), even when the new config is refused.
#[tokio::test]
async fn sighup_reopens_the_audit_log_after_a_rename_even_with_a_bad_config() {
    let env = Env::new().await;
    let route_port = free_port();
    let path = env.dir.path().join("credproxy.toml");
    let log = env.dir.path().join("audit.jsonl");
    let text = env
        .config_text("bin-audit", &format!("127.0.0.1:{route_port}"))
        .replacen(
            "[providers.oauth]",
            &format!("audit_log = \"{}\"\n[providers.oauth]", log.display()),
            1,
        );
    std::fs::write(&path, &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(["run", "--workers", "1", "--config"])
        .arg(&path)
        .env("CREDPROXY_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let route: SocketAddr = format!("127.0.0.1:{route_port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(route).await.is_err() {
        assert!(Instant::now() < deadline, "credproxy did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lines = |p: &std::path::Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"/before\"") || l.contains("\"/after\""))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // The writer appends just after the answer: wait for the line, with a deadline.
    let until = |p: std::path::PathBuf, n: usize| async move {
        let deadline = Instant::now() + Duration::from_secs(10);
        while lines(&p).len() < n {
            assert!(
                Instant::now() < deadline,
                "no audit line in {}",
                p.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(get(route, "/before").await.0, 200);
    until(log.clone(), 1).await;
    let rotated = env.dir.path().join("audit.jsonl.1");
    std::fs::rename(&log, &rotated).unwrap();
    std::fs::write(&path, "[proxy]\nlisten = 42\n").unwrap();
    Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    wait_line(&mut rx, "reload refused").await;
    assert_eq!(get(route, "/after").await.0, 200);
    until(log.clone(), 1).await;
    assert!(lines(&log)[0].contains("\"/after\""), "{:?}", lines(&log));
    assert_eq!(lines(&rotated).len(), 1, "the old file keeps what it had");

    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
