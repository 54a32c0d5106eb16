//! Rules per provider (DESIGN.md "What a credential may do"): `deny` first, then `allow`; a
//! refused request gets `403 policy_denied` naming the rule and the upstream receives nothing;
//! on a provider with rules, a path servers may read differently gets `400 ambiguous_path`.
//! The same decision on the byte path (a GET without a body), on hyper (a chunked body, an
//! allowed `Origin`), and inside an intercepted TLS tunnel. Raw bytes where a client library
//! might tidy the path first.

mod ambiguity;
mod reload;

use super::e2e::{TOKEN, get, header_values, json, send};
use super::tunnel::connect;
use crate::support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use credproxy::app::Running;
use credproxy::config::{Config, ProviderConfig};
use http::{Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::proxy::proxy_section;
use support::{Alpn, TestCa, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES: &str = r#"allow = [
  { methods = ["GET", "HEAD"], paths = ["/repos/acme/**", "/users/*"] },
  { methods = ["post"], paths = ["/repos/acme/*/issues"] },
]
deny = [{ methods = ["DELETE"] }, { paths = ["/repos/acme/secret/**"] }]
allow_origins = ["https://app.example"]"#;

/// credproxy with provider `gh` (rules, upstream mounted at `/base`) and provider `open` (no
/// rules) in front of an upstream that records every request it receives.
struct Rig {
    _ca: TestCa,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    upstream: TestServer,
    seen: Arc<Mutex<Vec<String>>>,
    proxy: Running,
}

impl Rig {
    async fn start() -> Rig {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write_ca_file(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let upstream = recording_upstream(&ca, seen.clone()).await;
        let config = config(&dir, &ca_file, upstream.port(), RULES);
        let proxy = credproxy::app::start(config).await.unwrap();
        Rig {
            _ca: ca,
            dir,
            ca_file,
            upstream,
            seen,
            proxy,
        }
    }

    /// This rig's config with `rules` on provider `gh` instead of [`RULES`].
    fn config(&self, rules: &str) -> Config {
        config(&self.dir, &self.ca_file, self.upstream.port(), rules)
    }

    fn main(&self) -> SocketAddr {
        self.proxy.main_addr().tcp().unwrap()
    }

    fn route(&self) -> SocketAddr {
        self.proxy.route_addr("gh").unwrap().tcp().unwrap()
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("state").join("ca").join("ca.pem")
    }

    /// How many requests the upstream has received.
    fn received(&self) -> usize {
        self.seen.lock().len()
    }
}

fn config(dir: &tempfile::TempDir, ca_file: &Path, port: u16, rules: &str) -> Config {
    credproxy::config::load_str(
        &config_text(dir, ca_file, port, rules),
        "test.toml",
        &|_| None,
    )
    .unwrap()
}

fn config_text(dir: &tempfile::TempDir, ca_file: &Path, port: u16, rules: &str) -> String {
    format!(
        r#"{proxy}intercept = "claimed"

[providers.gh]
preset = "static"
hosts = ["api.gh.test"]
upstream = "https://localhost:{port}/base"
token = "{TOKEN}"
{rules}

[providers.open]
preset = "static"
hosts = ["api.open.test"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"

[[routes]]
listen = "127.0.0.1:0"
provider = "gh"

[[routes]]
path_prefix = "/gh"
provider = "gh"
"#,
        proxy = proxy_section(&dir.path().join("state"), ca_file),
    )
}

/// Answers 200 with what it saw (method, path, `Authorization`, body length), and records
/// `METHOD path` for every request.
async fn recording_upstream(ca: &TestCa, seen: Arc<Mutex<Vec<String>>>) -> TestServer {
    let tls = ca.server_config(&["localhost"], Alpn::Http1Only);
    TestServer::start(
        Some(tls),
        support::server::handler(move |req: Request<Incoming>| {
            let seen = seen.clone();
            async move {
                let path = req.uri().path_and_query().map(|p| p.as_str().to_owned());
                let path = path.unwrap_or_default();
                let method = req.method().to_string();
                seen.lock().push(format!("{method} {path}"));
                let auth: Vec<String> = req
                    .headers()
                    .get_all("authorization")
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_owned())
                    .collect();
                let body = req.into_body().collect().await.map(|b| b.to_bytes().len());
                let v = json!({"method": method, "path": path, "headers": {"authorization": auth}, "body_len": body.unwrap_or(0)});
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(v.to_string())))
                    .unwrap()
            }
        }),
    )
    .await
}

/// One request written as raw bytes on a new connection (`Connection: close`); the status and
/// the body.
async fn raw(addr: SocketAddr, request_line: &str, host: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("{request_line}\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A refusal's JSON: its code, and its message.
fn refusal(body: &str) -> (String, String) {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("not a JSON error: {body:?}"));
    assert_eq!(v["provider"], "gh", "{v}");
    (
        v["error"].as_str().unwrap().to_owned(),
        v["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn on_the_byte_path_deny_comes_first_and_only_allowed_requests_reach_the_upstream() {
    let r = Rig::start().await;
    let main = r.main();
    let url = |p: &str| format!("http://api.gh.test{p}");

    // Allowed: the rule sees the client's path; the upstream gets it under its base path.
    let (parts, body) = send(main, get(&url("/repos/acme/x?q=/admin/../"), &[])).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(
        v["path"], "/base/repos/acme/x?q=/admin/../",
        "the query is not checked"
    );
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    assert_eq!(r.received(), 1);

    for (method, path, rule) in [
        ("DELETE", "/repos/acme/x", "providers.gh.deny[0]"),
        ("delete", "/repos/acme/x", "providers.gh.deny[0]"),
        ("GET", "/repos/acme/secret/key", "providers.gh.deny[1]"),
        ("GET", "/repos/acme/SECRET/key", "providers.gh.deny[1]"),
        ("GET", "/repos/acme/%73ecret/key", "providers.gh.deny[1]"),
        (
            "GET",
            "/repos/other/x",
            "no allow rule matched GET /repos/other/x",
        ),
        (
            "PUT",
            "/repos/acme/x",
            "no allow rule matched PUT /repos/acme/x",
        ),
        ("GET", "/Repos/acme/x", "no allow rule matched"),
        (
            "GET",
            "/orgs/acme?x=/repos/acme/",
            "no allow rule matched GET /orgs/acme:",
        ),
    ] {
        let (status, body) = raw(
            main,
            &format!("{method} {} HTTP/1.1", url(path)),
            "api.gh.test",
        )
        .await;
        assert_eq!(status, 403, "{method} {path}: {body}");
        let (code, message) = refusal(&body);
        assert_eq!(code, "policy_denied", "{method} {path}");
        assert!(message.contains(rule), "{method} {path}: {message}");
        assert!(
            !message.contains("?x="),
            "the query is never echoed: {message}"
        );
    }
    assert_eq!(
        r.received(),
        1,
        "nothing refused went upstream: {:?}",
        r.seen.lock()
    );
}

#[tokio::test]
async fn a_star_is_one_segment_and_a_double_star_any_number_zero_included() {
    let r = Rig::start().await;
    let route = r.route();
    let host = route.to_string();
    for (line, want) in [
        ("GET /repos/acme HTTP/1.1", 200),
        ("GET /repos/acme/ HTTP/1.1", 200),
        ("GET /repos/acme/a/b/c/d HTTP/1.1", 200),
        ("GET /repos/acmex HTTP/1.1", 403),
        ("GET /users/octo HTTP/1.1", 200),
        ("GET /users HTTP/1.1", 403),
        ("GET /users/octo/repos HTTP/1.1", 403),
        ("POST /repos/acme/widgets/issues HTTP/1.1", 200),
        ("POST /repos/acme/a/b/issues HTTP/1.1", 403),
        ("POST /repos/acme/issues HTTP/1.1", 403),
    ] {
        let (status, body) = raw(route, line, &host).await;
        assert_eq!(status, want, "{line}: {body}");
    }
    assert_eq!(r.received(), 5, "{:?}", r.seen.lock());
    // A refusal is not a malformed request: the connection lives on (the byte path handed it
    // to hyper for the answer).
    let tcp = TcpStream::connect(route).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for (path, want) in [
        ("/users", 403),
        ("/users/octo", 200),
        ("/users", 403),
        ("/users/x", 200),
    ] {
        let resp = sender
            .send_request(get(path, &[("host", &host)]))
            .await
            .unwrap();
        assert_eq!(resp.status(), want, "{path}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(r.received(), 7);
}

#[tokio::test]
async fn dot_segments_and_encoded_separators_are_400_on_a_provider_with_rules_only() {
    let r = Rig::start().await;
    let main = r.main();
    for path in [
        "/repos/acme/../other",
        "/repos/acme/./x",
        "/repos/acme/%2e%2e/other",
        "/repos/acme/.%2E/other",
        "/repos/acme%2fx",
        "/repos/acme%2Fx",
        "/repos/acme/x%5cy",
        "/repos/acme/x\\y",
        "/repos//acme/x",
        "/repos/acme/%00",
    ] {
        let (status, body) = raw(
            main,
            &format!("GET http://api.gh.test{path} HTTP/1.1"),
            "api.gh.test",
        )
        .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(refusal(&body).0, "ambiguous_path", "{path}");
    }
    assert_eq!(r.received(), 0, "{:?}", r.seen.lock());
    // Through a path prefix (the rules see the path after it), and the same paths on the
    // provider without rules, which forwards them as they are.
    let (status, body) = raw(main, "GET /gh/repos/acme/../x HTTP/1.1", &main.to_string()).await;
    assert_eq!((status, refusal(&body).0.as_str()), (400, "ambiguous_path"));
    let (status, _) = raw(main, "GET /gh/repos/acme/x HTTP/1.1", &main.to_string()).await;
    assert_eq!(status, 200);
    let (status, body) = raw(main, "GET /gh/other HTTP/1.1", &main.to_string()).await;
    assert_eq!((status, refusal(&body).0.as_str()), (403, "policy_denied"));
    let (status, _) = raw(
        main,
        "GET http://api.open.test/a/%2e%2e/b HTTP/1.1",
        "api.open.test",
    )
    .await;
    assert_eq!(status, 200, "no rules: no judgement of the path");
    assert_eq!(
        *r.seen.lock(),
        vec![
            "GET /base/repos/acme/x".to_owned(),
            "GET /a/%2e%2e/b".to_owned()
        ]
    );
}

#[tokio::test]
async fn on_hyper_a_chunked_body_and_an_allowed_origin_get_the_same_decision() {
    let r = Rig::start().await;
    // A request on a connection of its own: hyper closes a connection whose request body it
    // did not read (a refused one).
    let route = r.route();
    let on_new_connection = |req: Request<StreamBody<_>>| async move {
        let tcp = TcpStream::connect(route).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    // A body of unknown length goes chunked: the byte path declines it, hyper serves it.
    let chunked = |path: &str| {
        let frames = futures_util::stream::iter(
            [
                Bytes::from_static(b"{\"title\":"),
                Bytes::from_static(b"\"x\"}"),
            ]
            .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b))),
        );
        Request::post(path)
            .header("host", "127.0.0.1")
            .body(StreamBody::new(frames))
            .unwrap()
    };
    let resp = on_new_connection(chunked("/repos/acme/w/issues")).await;
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["body_len"], 13);
    assert_eq!(v["path"], "/base/repos/acme/w/issues");

    let resp = on_new_connection(chunked("/repos/other/issues")).await;
    assert_eq!(resp.status(), 403);
    assert!(
        resp.headers()["proxy-status"]
            .to_str()
            .unwrap()
            .starts_with("credproxy; error=http_request_denied")
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let (code, message) = refusal(&String::from_utf8_lossy(&body));
    assert_eq!(code, "policy_denied");
    assert!(
        message.contains("no allow rule matched POST /repos/other/issues"),
        "{message}"
    );
    let resp = on_new_connection(chunked("/repos/acme/a/..%2f/issues")).await;
    assert_eq!(resp.status(), 400);
    resp.into_body().collect().await.unwrap();

    // A browser origin the provider allows: hyper's turn too, and the rules still apply.
    let with_origin = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(format!("http://api.gh.test{path}"))
            .header("host", "api.gh.test")
            .header("origin", "https://app.example")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (parts, _) = send(r.main(), with_origin("GET", "/users/octo")).await;
    assert_eq!(parts.status, 200);
    let (parts, body) = send(r.main(), with_origin("DELETE", "/users/octo")).await;
    assert_eq!(parts.status, 403);
    assert!(
        refusal(&String::from_utf8_lossy(&body))
            .1
            .contains("deny[0]")
    );
    assert_eq!(
        *r.seen.lock(),
        vec![
            "POST /base/repos/acme/w/issues".to_owned(),
            "GET /base/users/octo".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_websocket_handshake_is_judged_like_any_request() {
    let r = Rig::start().await;
    let upgrade = "upgrade: websocket\r\nconnection: upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==";
    for (path, want) in [("/repos/other/events", 403), ("/repos/acme/%2e%2e/x", 400)] {
        let line = format!("GET http://api.gh.test{path} HTTP/1.1\r\n{upgrade}");
        let (status, body) = raw(r.main(), &line, "api.gh.test").await;
        assert_eq!(status, want, "{path}: {body}");
    }
    assert_eq!(r.received(), 0);
}

/// A rustls client trusting only `ca`, over an opened tunnel.
async fn tls_in_tunnel(
    tcp: TcpStream,
    ca: &Path,
    sni: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::pem::PemObject::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap(),
            tcp,
        )
        .await
        .expect("handshake with credproxy's leaf")
}

#[tokio::test]
async fn inside_an_intercepted_tunnel_the_rules_hold_too() {
    let r = Rig::start().await;
    let (head, tcp) = connect(r.main(), "api.gh.test:443", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tls_in_tunnel(tcp, &r.ca_pem(), "api.gh.test").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = |method: &str, path: &str| {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "api.gh.test")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    for (method, path, want) in [
        ("GET", "/repos/acme/x", 200),
        ("DELETE", "/repos/acme/x", 403),
        ("GET", "/repos/other", 403),
        ("GET", "/repos/acme/%2e%2e/other", 400),
        ("HEAD", "/users/octo", 200),
    ] {
        let resp = sender.send_request(req(method, path)).await.unwrap();
        assert_eq!(resp.status(), want, "{method} {path}");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(
        *r.seen.lock(),
        vec![
            "GET /base/repos/acme/x".to_owned(),
            "HEAD /base/users/octo".to_owned()
        ]
    );
}

/// `credproxy check` names a bad rule's key and line (exit 2), and warns about a rule that can
/// never match (exit 0).
#[test]
fn check_names_a_bad_rules_key_and_warns_about_one_that_can_never_match() {
    let run = |rules: &str| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let text = format!(
            "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n{rules}\n"
        );
        std::fs::write(&path, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .args(["check", "--config"])
            .arg(&path)
            .env_remove("CREDPROXY_LOG")
            .env_remove("CREDPROXY_CONFIG")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = run("deny = [{ methods = [\"DELETE\"] },\n  { }]");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("c.toml:6:3: providers.gh.deny[1]: has neither methods nor paths"),
        "{text}"
    );
    let (code, text) = run("allow = [{ paths = [\"/repos/a**\"] }]");
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(":5:") && text.contains("providers.gh.allow[0].paths[0]"),
        "{text}"
    );
    let (code, text) =
        run("allow = [{ paths = [\"/admin/x\"] }]\ndeny = [{ paths = [\"/admin/**\"] }]");
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("providers.gh.allow[0] never matches"),
        "{text}"
    );
}

/// The least-privilege example of docs/SECURITY.md "Rules" loads, and refuses what the text
/// says it refuses.
#[test]
fn the_security_docs_agent_example_does_what_it_says() {
    const DOC: &str = include_str!("../../../docs/SECURITY.md");
    let rules = &DOC[DOC.find("## Rules").expect("a Rules section")..];
    let rules = &rules[..rules[3..].find("\n## ").expect("a section after it")];
    let block = rules
        .split("```toml\n")
        .filter_map(|b| b.split_once("```").map(|(toml, _)| toml))
        .find(|b| b.contains("[providers.anthropic]"))
        .expect("the agent example");
    let text = block
        .replace(
            r#"{ command = ["gh", "auth", "token"], ttl = "1h" }"#,
            "\"t\"",
        )
        .replace(r#"{ file = "/run/secrets/anthropic" }"#, "\"t\"");
    let config = credproxy::config::load_str(&text, "SECURITY.md", &|_| None).unwrap();
    let gh: &ProviderConfig = config.provider("github").unwrap();
    let anthropic: &ProviderConfig = config.provider("anthropic").unwrap();
    let check = |p: &ProviderConfig, m: &str, path: &str| {
        credproxy::proxy::policy::check(p, m, path, [])
            .map_err(|e| e.kind.code())
            .err()
    };
    assert_eq!(check(gh, "GET", "/repos/acme/widgets/issues/7"), None);
    assert_eq!(
        check(gh, "POST", "/repos/acme/widgets/issues/7/comments"),
        None
    );
    assert_eq!(
        check(gh, "POST", "/repos/acme/widgets/issues/7/labels"),
        None
    );
    assert_eq!(
        check(gh, "DELETE", "/repos/acme/widgets/issues/7/labels/bug"),
        None
    );
    assert_eq!(check(anthropic, "POST", "/v1/messages"), None);
    for (method, path, code) in [
        ("PUT", "/repos/acme/widgets/contents/x", "policy_denied"),
        ("GET", "/user/repos", "policy_denied"),
        ("GET", "/repos/acme/other/issues", "policy_denied"),
        ("PUT", "/repos/acme/widgets/issues/7/lock", "policy_denied"),
        (
            "GET",
            "/repos/acme/widgets/issues/../../contents/x",
            "ambiguous_path",
        ),
    ] {
        assert_eq!(check(gh, method, path), Some(code), "{method} {path}");
    }
    assert_eq!(check(anthropic, "GET", "/v1/models"), Some("policy_denied"));
}
