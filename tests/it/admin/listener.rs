//! End to end: the admin listener, metrics, JSON access logs, and the `status` and `healthcheck`
//! commands, over real sockets (issue 6 points 1–3, issue 5 point 3).
//!
//! credproxy runs in-process from a config string with a `static` provider in front of a TLS echo
//! upstream and an `oauth2` provider in front of [`OAuth2Fake`], whose first token call is held
//! so `/readyz` can be seen going 503 → 200 as the first token arrives.

use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use credproxy::app::Running;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::server::free_port;
use support::{Alpn, Fake, Fault, OAuth2Fake, TestCa, TestServer};
use tokio::net::TcpStream;

const TOKEN: &str = "static-admin-token-0123456789";

struct Setup {
    _ca: TestCa,
    dir: tempfile::TempDir,
    _upstream: TestServer,
    fake: OAuth2Fake,
    proxy: Running,
    config_text: String,
}

impl Setup {
    fn admin(&self) -> SocketAddr {
        self.proxy
            .admin
            .as_ref()
            .expect("admin listener")
            .tcp()
            .unwrap()
    }
    fn main(&self) -> SocketAddr {
        self.proxy.main_addr().tcp().unwrap()
    }
}

async fn echo_upstream(ca: &TestCa) -> TestServer {
    TestServer::start(
        Some(ca.server_config(&["localhost"], Alpn::Http1Only)),
        support::server::handler(|req: Request<Incoming>| async move {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            Response::new(Full::new(Bytes::from(format!("{{\"path\":{path:?}}}"))))
        }),
    )
    .await
}

/// credproxy with `admin` as its `admin_listen`, the oauth2 token server holding its first answer
/// for `hold`.
async fn setup(admin: &str, hold: Duration) -> Setup {
    captured_log();
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let upstream = echo_upstream(&ca).await;
    let fake = OAuth2Fake::start(&ca).await;
    fake.push_fault(Fault::Delay(hold));
    let o = fake.options();
    let config_text = format!(
        r#"
[proxy]
listen = "127.0.0.1:0"
admin_listen = "{admin}"
state_dir = "{state}"
ca_file = "{ca}"

[providers.echo]
preset = "static"
hosts = ["api.echo.test"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"

[providers.internal]
preset = "oauth2"
hosts = ["api.internal.test"]
upstream = "{fake}"
token_url = "{fake}/token"
grant = "client_credentials"
client_id = "{id}"
client_secret = "{secret}"
client_auth = "basic"
wait_for_token = "20s"
"#,
        state = dir.path().join("state").display(),
        ca = ca_file.display(),
        port = upstream.port(),
        fake = fake.url(),
        id = o.client_id,
        secret = o.client_secret,
    );
    let config = credproxy::config::load_str(&config_text, "t.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    Setup {
        _ca: ca,
        dir,
        _upstream: upstream,
        fake,
        proxy,
        config_text,
    }
}

/// One request over a fresh HTTP/1.1 connection.
async fn request(
    addr: SocketAddr,
    method: &str,
    uri: &str,
    host: &str,
) -> (http::response::Parts, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts, String::from_utf8(body.to_vec()).unwrap())
}

async fn admin_get(s: &Setup, path: &str) -> (http::response::Parts, String) {
    request(s.admin(), "GET", path, "127.0.0.1").await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// The value of the sample line starting with `series` (name and labels exactly).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// The access token the oauth2 provider's API last saw (from the fake's record).
fn oauth_token(s: &Setup) -> String {
    let headers = s.fake.last_api_headers().expect("a proxied API call");
    let auth = headers["authorization"].to_str().unwrap();
    auth.strip_prefix("Bearer ").unwrap().to_owned()
}

fn assert_no_secret(what: &str, body: &str, secrets: &[&str]) {
    for secret in secrets {
        // Not the secret, nor a telling prefix of it.
        let prefix = &secret[..secret.len().min(12)];
        assert!(
            !body.contains(prefix),
            "{what} shows (a prefix of) a secret {prefix:?}: {body}"
        );
    }
}

#[tokio::test]
async fn readyz_goes_from_503_to_200_as_the_first_token_arrives() {
    let s = setup("127.0.0.1:0", Duration::from_secs(3)).await;
    let (parts, body) = admin_get(&s, "/healthz").await;
    assert_eq!((parts.status.as_u16(), body.as_str()), (200, "ok\n"));

    let (parts, body) = admin_get(&s, "/readyz").await;
    assert_eq!(parts.status, 503, "{body}");
    assert_eq!(parts.headers["content-type"], "application/json");
    let v = json(&body);
    assert_eq!(v["ready"], false);
    let missing = v["providers"].as_array().unwrap();
    assert_eq!(missing.len(), 1, "only the oauth2 provider waits: {v}");
    assert_eq!(missing[0]["name"], "internal");
    assert_eq!(missing[0]["state"], "starting");
    assert!(
        missing[0]["reason"]
            .as_str()
            .unwrap()
            .contains("no token yet"),
        "{v}"
    );

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (parts, body) = admin_get(&s, "/readyz").await;
        if parts.status == 200 {
            assert_eq!(json(&body), serde_json::json!({"ready": true}));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn metrics_status_and_page_after_proxied_requests_show_no_secret() {
    let s = setup("127.0.0.1:0", Duration::ZERO).await;
    let (parts, body) = request(
        s.main(),
        "GET",
        "http://api.echo.test/v1/x?q=1",
        "api.echo.test",
    )
    .await;
    assert_eq!(parts.status, 200, "{body}");
    let (parts, body) = request(
        s.main(),
        "GET",
        "http://api.internal.test/things",
        "api.internal.test",
    )
    .await;
    assert_eq!(parts.status, 200, "{body} / {:?}", s.fake.last_rejection());
    let (parts, _) = request(s.main(), "GET", "http://evil.example/", "evil.example").await;
    assert_eq!(parts.status, 403);
    let oauth = oauth_token(&s);
    let o = s.fake.options();
    let secrets = [TOKEN, oauth.as_str(), o.client_secret.as_str()];

    // /metrics: every metric, with its labels.
    let (parts, m) = admin_get(&s, "/metrics").await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        parts.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        sample(
            &m,
            r#"credproxy_requests_total{provider="echo",code="200"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"credproxy_requests_total{provider="internal",code="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, r#"credproxy_requests_total{provider="-",code="403"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"credproxy_upstream_request_duration_seconds_count{provider="echo"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            r#"credproxy_upstream_request_duration_seconds_bucket{le="60.0",provider="internal"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        sample(
            &m,
            r#"credproxy_token_refresh_total{provider="internal",result="ok"}"#
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
    let expiry = sample(
        &m,
        r#"credproxy_token_expiry_timestamp_seconds{provider="internal"}"#,
    )
    .expect("expiry");
    let now = jiff::Timestamp::now().as_second() as f64;
    assert!(
        (now + 3000.0..now + 3700.0).contains(&expiry),
        "an hour from now: {expiry} vs {now}"
    );
    assert_eq!(
        sample(
            &m,
            r#"credproxy_token_expiry_timestamp_seconds{provider="echo"}"#
        ),
        None,
        "static: never"
    );
    assert_eq!(sample(&m, "credproxy_inflight_requests"), Some(0.0));
    let build = format!(
        "credproxy_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&m, &build), Some(1.0));
    assert!(
        !m.contains("evil.example") && !m.contains("/v1/x"),
        "no hosts or paths in labels"
    );
    assert_no_secret("/metrics", &m, &secrets);

    // /status: the shape `credproxy status --json` prints.
    let (parts, body) = admin_get(&s, "/status").await;
    assert_eq!(parts.status, 200);
    assert_no_secret("/status", &body, &secrets);
    let v = json(&body);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert!(
        v["started_at"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    let providers = v["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    let keys = [
        "name",
        "preset",
        "hosts",
        "upstream",
        "state",
        "usable",
        "expires_in_secs",
        "expires_at",
        "last_refresh",
        "next_refresh",
        "last_error",
        "details",
    ];
    for p in providers {
        for k in keys {
            assert!(p.get(k).is_some(), "{k} missing from {p}");
        }
    }
    let (echo, internal) = (&providers[0], &providers[1]);
    assert_eq!(echo["name"], "echo");
    assert_eq!(echo["preset"], "static");
    assert_eq!(echo["hosts"], serde_json::json!(["api.echo.test"]));
    assert_eq!(echo["state"], "ready");
    assert_eq!(echo["expires_in_secs"], Value::Null);
    assert_eq!(internal["preset"], "oauth2");
    assert_eq!(internal["upstream"], s.fake.url());
    assert_eq!(internal["state"], "ready");
    assert_eq!(internal["usable"], true);
    // Added fields (issue 15 item 10): counts since start, health and its words.
    assert_eq!(internal["requests"], 1);
    assert_eq!(internal["upstream_401s"], 0);
    assert_eq!(internal["health"], "ok");
    assert_eq!(internal["summary"], "ready");
    assert_eq!(internal["token_lifetime_secs"], 3600);
    assert_eq!(echo["requests"], 1);
    assert_eq!(echo["summary"], "ready");
    assert_eq!(echo["token_lifetime_secs"], Value::Null);
    let expires_in = internal["expires_in_secs"].as_i64().unwrap();
    assert!((3000..=3600).contains(&expires_in), "{expires_in}");
    let expires_at: jiff::Timestamp = internal["expires_at"].as_str().unwrap().parse().unwrap();
    assert!((expires_at.as_second() as f64 - expiry).abs() <= 1.0);
    assert!(
        internal["last_refresh"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );
    assert!(
        internal["next_refresh"]
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .is_ok()
    );

    // `/`: a self-contained page.
    let (parts, page) = admin_get(&s, "/").await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers["content-type"], "text/html; charset=utf-8");
    assert!(page.starts_with("<!doctype html>") && page.contains("internal"));
    assert!(
        page.contains("data-provider=\"echo\"") && page.contains(">never expires<"),
        "{page}"
    );
    assert_self_contained(&page);
    assert_no_secret("/", &page, &secrets);

    // Anything else.
    let (parts, body) = admin_get(&s, "/nope").await;
    assert_eq!(parts.status, 404);
    assert_eq!(json(&body)["error"], "not_found");
    let (parts, _) = request(s.admin(), "POST", "/readyz", "127.0.0.1").await;
    assert_eq!(parts.status, 405);
    let (parts, body) = admin_get(&s, "/readyz").await;
    assert_eq!(parts.status, 200);
    assert_no_secret("/readyz", &body, &secrets);
}

/// Issue 15 item 10: `/status` counts each provider's requests and its upstream's 401s since
/// start, the same figures the page and `credproxy status` show.
#[tokio::test]
async fn status_counts_requests_and_upstream_401s_per_provider() {
    let s = setup("127.0.0.1:0", Duration::ZERO).await;
    let get = || {
        request(
            s.main(),
            "GET",
            "http://api.internal.test/t",
            "api.internal.test",
        )
    };
    assert_eq!(get().await.0.status, 200);
    // The token server forgets every token: the next call's first answer is a 401.
    s.fake.revoke_all_access();
    let _ = get().await;
    let (_, body) = admin_get(&s, "/status").await;
    let v = json(&body);
    let internal = &v["providers"][1];
    assert_eq!(internal["name"], "internal");
    let denied = s.fake.api_denied();
    assert!(denied >= 1, "the fake answered 401");
    assert_eq!(internal["requests"], 2, "{internal}");
    assert_eq!(
        internal["upstream_401s"].as_u64(),
        Some(denied as u64),
        "{internal}"
    );
    assert_eq!(v["providers"][0]["requests"], 0);
    let (_, m) = admin_get(&s, "/metrics").await;
    assert_eq!(
        sample(
            &m,
            r#"credproxy_upstream_unauthorized_total{provider="internal"}"#
        ),
        Some(denied as f64),
        "{m}"
    );
    let (_, page) = admin_get(&s, "/").await;
    let row = &page[page.find("data-provider=\"internal\"").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains(&format!(
            "<td class=\"num\">2</td><td class=\"num\">{denied}</td>"
        )),
        "{row}"
    );
}

/// No `src`/`href` to anywhere else, no CSS `url(...)` or `@import`.
fn assert_self_contained(page: &str) {
    let lower = page.to_ascii_lowercase();
    for attr in ["src=", "href="] {
        for (i, _) in lower.match_indices(attr) {
            let value = lower[i + attr.len()..].trim_start_matches(['"', '\'']);
            assert!(
                !(value.starts_with("http:")
                    || value.starts_with("https:")
                    || value.starts_with("//")),
                "external asset at {}",
                &page[i..(i + 60).min(page.len())]
            );
        }
    }
    assert!(
        !lower.contains("url(") && !lower.contains("@import"),
        "CSS fetches nothing"
    );
}

/// The log of this whole test binary, as `--log-format json` writes it (see `cli::logging`).
///
/// A global subscriber, installed before any test runs credproxy code: with a per-test
/// `set_default`, a callsite that another test's thread registers at the same moment can cache
/// "never" and drop this test's access lines (tracing-core registers callsites globally).
fn captured_log() -> Arc<parking_lot::Mutex<Vec<u8>>> {
    static LOG: std::sync::OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let buf = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let writer = {
            let buf = buf.clone();
            move || BufWriter(buf.clone())
        };
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::INFO)
            .with_writer(writer)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        buf
    })
    .clone()
}

/// `--log-format json`: every line parses, and the access line has what issue 6 point 3 asks.
#[tokio::test]
async fn json_access_log_lines_parse_and_carry_no_query_string() {
    let buf = captured_log();
    let s = setup("127.0.0.1:0", Duration::ZERO).await;
    // Paths and a host no other test uses, to find this test's lines in the shared log.
    let (parts, _) = request(
        s.main(),
        "GET",
        "http://api.echo.test/log-test/items?secret=hunter2&q=1",
        "api.echo.test",
    )
    .await;
    assert_eq!(parts.status, 200);
    let (parts, _) = request(
        s.main(),
        "POST",
        "http://api.internal.test/log-test/things?x=1",
        "api.internal.test",
    )
    .await;
    assert_eq!(parts.status, 200);
    let (parts, _) = request(
        s.main(),
        "GET",
        "http://log-test.example/?a=b",
        "log-test.example",
    )
    .await;
    assert_eq!(parts.status, 403);
    let oauth = oauth_token(&s);
    s.proxy.shutdown(Duration::from_secs(2)).await;

    let text = String::from_utf8(buf.lock().clone()).unwrap();
    assert_no_secret("the log", &text, &[TOKEN, oauth.as_str()]);
    let lines: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .collect();
    let access: Vec<&Value> = lines
        .iter()
        .filter(|v| v["target"] == "credproxy::access")
        .filter(|v| {
            v["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/log-test"))
                || v["host"] == "log-test.example"
        })
        .collect();
    assert_eq!(access.len(), 3, "one access line per request: {text}");
    for v in &access {
        for field in [
            "method",
            "host",
            "path",
            "status",
            "duration_ms",
            "provider",
            "fault",
        ] {
            assert!(v.get(field).is_some(), "{field} missing: {v}");
        }
        assert!(
            !v["path"].as_str().unwrap().contains('?'),
            "query string logged: {v}"
        );
        assert_eq!(v["level"], "INFO");
    }
    let echo = access.iter().find(|v| v["provider"] == "echo").unwrap();
    assert_eq!(
        (
            &echo["method"],
            &echo["host"],
            &echo["path"],
            &echo["status"],
            &echo["fault"]
        ),
        (
            &Value::from("GET"),
            &Value::from("api.echo.test"),
            &Value::from("/log-test/items"),
            &Value::from(200),
            &Value::from("-")
        )
    );
    let internal = access.iter().find(|v| v["provider"] == "internal").unwrap();
    assert_eq!(
        (&internal["method"], &internal["path"]),
        (&Value::from("POST"), &Value::from("/log-test/things"))
    );
    let refused = access.iter().find(|v| v["status"] == 403).unwrap();
    assert_eq!(
        (&refused["provider"], &refused["fault"]),
        (&Value::from("-"), &Value::from("client"))
    );
    assert!(!text.contains("hunter2"));
    // Token refreshes are logged with their provider (the refresher's span).
    assert!(
        lines.iter().any(|v| v["message"] == "obtained a new token"
            && v["span"]["provider"] == "internal"
            && v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("credproxy::token"))),
        "{text}"
    );
}

struct BufWriter(Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn credproxy(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args)
        .current_dir(cwd)
        .env_remove("CREDPROXY_CONFIG")
        .env("XDG_CONFIG_HOME", cwd)
        .env("HOME", cwd)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn status_and_healthcheck_commands_ask_the_running_proxy() {
    let admin = format!("127.0.0.1:{}", free_port());
    let s = setup(&admin, Duration::ZERO).await;
    let (parts, _) = request(
        s.main(),
        "GET",
        "http://api.internal.test/t",
        "api.internal.test",
    )
    .await;
    assert_eq!(parts.status, 200);
    let secrets = [TOKEN, &oauth_token(&s)];
    let config = s.dir.path().join("credproxy.toml");
    std::fs::write(&config, &s.config_text).unwrap();
    let config = config.to_str().unwrap();

    let out = credproxy(&["status", "--json", "--config", config], s.dir.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_no_secret("status --json", &stdout, &secrets);
    let v = json(&stdout);
    assert_eq!(v["providers"][1]["name"], "internal");
    assert_eq!(v["providers"][1]["state"], "ready");
    assert!(v["started_at"].is_string(), "from the running proxy");

    let out = credproxy(&["status", "--config", config], s.dir.path()).await;
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("PROVIDER"), "{table}");
    let row = table.lines().find(|l| l.starts_with("internal")).unwrap();
    assert!(row.contains("ready") && row.contains("s ago"), "{row}");
    assert!(!table.contains("token store"));
    assert_no_secret("status", &table, &secrets);

    // healthcheck: from the config, from --url, and a dead address.
    let out = credproxy(&["healthcheck", "--config", config], s.dir.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = format!("http://{admin}/healthz");
    let out = credproxy(&["healthcheck", "--url", &url], s.dir.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = format!("http://127.0.0.1:{}/healthz", free_port());
    let out = credproxy(&["healthcheck", "--url", &dead], s.dir.path()).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with("unhealthy: can't connect to http://127.0.0.1:"),
        "{stderr}"
    );

    // Once the proxy is gone, status reads the token store.
    let Setup { proxy, dir, .. } = s;
    proxy.shutdown(Duration::from_secs(2)).await;
    let out = credproxy(&["status", "--config", config], dir.path()).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("(proxy not running; from the token store)"),
        "{table}"
    );
    let row = table.lines().find(|l| l.starts_with("internal")).unwrap();
    assert!(row.contains("stored"), "the engine saved its token: {row}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("echo") && l.contains("static")),
        "{table}"
    );
    assert_no_secret("status from the store", &table, &secrets);
    let out = credproxy(&["status", "--json", "--config", config], dir.path()).await;
    let v = json(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(v["providers"][1]["state"], "stored");
    assert!(v["providers"][1]["expires_in_secs"].as_i64().unwrap() > 3000);
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("from the token store")
    );
}

/// With no config anywhere, healthcheck asks 127.0.0.1:9090 (the Docker image's case).
#[tokio::test]
async fn healthcheck_needs_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = credproxy(&["healthcheck"], dir.path()).await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Something else in this test run may hold 9090 (credproxy's default admin address): either
    // answer is fine as long as that address was asked, not a config demanded.
    match out.status.code() {
        Some(0) => assert_eq!(stdout.trim(), "ok: http://127.0.0.1:9090/healthz"),
        Some(1) => assert!(
            stderr.contains("127.0.0.1:9090") && stderr.lines().count() == 1,
            "{stderr}"
        ),
        other => panic!("exit {other:?}: {stderr}"),
    }
}
