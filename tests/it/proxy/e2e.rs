//! End to end: the core proxy with a `static` provider, over real sockets and real TLS.
//!
//! An in-process TLS upstream (rcgen test CA) echoes what it received as JSON; requests go through
//! credproxy by a real HTTP client, in every way an application can reach it (DESIGN.md "How an
//! application reaches credproxy").

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
use serde_json::{Value, json};
use support::proxy::proxy_section;
use support::{Alpn, TestCa, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(super) const TOKEN: &str = "static-token-0123456789";

/// An upstream that answers with what it saw: method, path, version and every header.
pub(super) async fn echo_upstream(ca: &TestCa, alpn: Alpn) -> TestServer {
    let tls = ca.server_config(&["localhost"], alpn);
    TestServer::start(
        Some(tls),
        support::server::handler(|req: Request<Incoming>| async move {
            let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let version = format!("{:?}", req.version());
            let mut headers = serde_json::Map::new();
            for name in req.headers().keys() {
                let values: Vec<Value> = req
                    .headers()
                    .get_all(name)
                    .iter()
                    .map(|v| Value::from(v.to_str().unwrap_or("?")))
                    .collect();
                headers.insert(name.as_str().to_owned(), Value::Array(values));
            }
            let host = req.uri().authority().map(|a| a.to_string());
            let method = req.method().to_string();
            if path.starts_with("/slow") {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            let mut resp = Response::builder()
                .header("content-type", "application/json")
                .header("connection", "x-upstream-hop")
                .header("x-upstream-hop", "secret-hop")
                .header("keep-alive", "timeout=5");
            if path.starts_with("/redirect") {
                resp = resp.status(302).header("location", "https://localhost:PORT/next?x=1");
            }
            let v = json!({"method": method, "path": path, "version": version, "headers": headers, "authority": host, "body_len": body});
            resp.body(Full::new(Bytes::from(v.to_string()))).unwrap()
        }),
    )
    .await
}

pub(super) struct Setup {
    pub(super) _ca: TestCa,
    pub(super) _dir: tempfile::TempDir,
    pub(super) upstream: TestServer,
    pub(super) proxy: Running,
}

pub(super) async fn setup_with(alpn: Alpn, extra_proxy: &str, extra: &str) -> Setup {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let upstream = echo_upstream(&ca, alpn).await;
    let port = upstream.port();
    let text = format!(
        r#"
{proxy}response_timeout = "1s"
{extra_proxy}

[providers.echo]
preset = "static"
hosts = ["api.echo.test", "*.wild.test", "localhost:{port}"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"
headers = {{ "x-bv-org-id" = "org-42" }}

[[routes]]
listen = "127.0.0.1:0"
provider = "echo"

[[routes]]
path_prefix = "/echo"
provider = "echo"
{extra}
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
        extra = extra.replace("UPSTREAM", &port.to_string()),
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    Setup {
        _ca: ca,
        _dir: dir,
        upstream,
        proxy,
    }
}

pub(super) async fn setup() -> Setup {
    setup_with(Alpn::Http1Only, "", "").await
}

impl Setup {
    pub(super) fn main(&self) -> SocketAddr {
        self.proxy.main_addr().tcp().unwrap()
    }
    fn route(&self) -> SocketAddr {
        self.proxy.route_addr("echo").unwrap().tcp().unwrap()
    }
}

/// Send one request to `addr` (the proxy) over plain HTTP/1.1, with the URI exactly as given.
pub(super) async fn send(
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> (http::response::Parts, Bytes) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

pub(super) fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

pub(super) fn json(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(body)))
}

pub(super) fn header_values(v: &Value, name: &str) -> Vec<String> {
    v["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn absolute_form_request_gets_the_credential_and_clean_headers() {
    let s = setup().await;
    let (parts, body) = send(
        s.main(),
        get(
            "http://api.echo.test/v1/things?q=1",
            &[
                ("host", "api.echo.test"),
                ("authorization", "Bearer client-supplied"),
                ("x-bv-org-id", "client-org"),
                ("connection", "keep-alive, x-client-hop"),
                ("x-client-hop", "hop"),
                ("proxy-authorization", "Basic dXNlcjpwYXNz"),
                ("te", "trailers"),
                ("x-keep", "kept"),
            ],
        ),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["path"], "/v1/things?q=1");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")],
        "exactly one Authorization, ours"
    );
    assert_eq!(header_values(&v, "x-bv-org-id"), vec!["org-42"]);
    assert_eq!(
        header_values(&v, "host"),
        vec![format!("localhost:{}", s.upstream.port())]
    );
    assert_eq!(header_values(&v, "x-keep"), vec!["kept"]);
    for gone in [
        "x-client-hop",
        "proxy-authorization",
        "te",
        "x-forwarded-for",
        "forwarded",
        // Not upstream by default (`[proxy] via = true` adds it): see proxy::clients.
        "via",
    ] {
        assert!(
            v["headers"].get(gone).is_none(),
            "{gone} must not reach the upstream: {v}"
        );
    }
    // And on the way back: the upstream's hop-by-hop fields are gone, Via is added.
    assert!(parts.headers.get("x-upstream-hop").is_none());
    assert!(parts.headers.get("keep-alive").is_none());
    assert_eq!(parts.headers["via"], "1.1 credproxy");
}

#[tokio::test]
async fn origin_form_by_host_header_case_and_trailing_dot_and_wildcards() {
    let s = setup().await;
    for host in ["API.Echo.Test.", "api.echo.test:80", "deep.sub.wild.test"] {
        let (parts, body) = send(s.main(), get("/x", &[("host", host)])).await;
        assert_eq!(
            parts.status,
            200,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            header_values(&json(&body), "authorization"),
            vec![format!("Bearer {TOKEN}")]
        );
    }
    // The claimed `localhost:PORT` names a port: another port is not claimed.
    let (parts, _) = send(s.main(), get("/x", &[("host", "localhost:1")])).await;
    assert_eq!(parts.status, 403);
}

#[tokio::test]
async fn unknown_host_is_refused_with_json_and_proxy_status() {
    let s = setup().await;
    let (parts, body) = send(
        s.main(),
        get("http://evil.example/", &[("host", "evil.example")]),
    )
    .await;
    assert_eq!(parts.status, 403);
    let v = json(&body);
    assert_eq!(v["error"], "unknown_host");
    assert!(v["message"].as_str().unwrap().contains("evil.example"));
    let ps = parts.headers["proxy-status"].to_str().unwrap();
    assert!(ps.starts_with("credproxy; error="), "{ps}");
}

#[tokio::test]
async fn route_listener_is_a_base_url_and_rewrites_location() {
    let s = setup().await;
    let (parts, body) = send(
        s.route(),
        get("/v2/items", &[("host", &s.route().to_string())]),
    )
    .await;
    assert_eq!(parts.status, 200);
    let v = json(&body);
    assert_eq!(v["path"], "/v2/items");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );

    // The upstream redirects to itself; the legacy client is sent back to the route listener.
    let s2 = setup_redirect().await;
    let (parts, _) = send(
        s2.route(),
        get("/redirect", &[("host", &s2.route().to_string())]),
    )
    .await;
    assert_eq!(parts.status, 302);
    assert_eq!(
        parts.headers["location"],
        format!("http://{}/next?x=1", s2.route()).as_str()
    );
}

/// An upstream whose redirect names its own origin (the echo server can't know its port).
async fn setup_redirect() -> Setup {
    let s = setup().await;
    // Re-point: a tiny upstream that redirects to https://localhost:<its port>/next?x=1.
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let port_cell = Arc::new(std::sync::OnceLock::<u16>::new());
    let pc = port_cell.clone();
    let upstream = TestServer::start(
        Some(ca.server_config(&["localhost"], Alpn::Http1Only)),
        support::server::handler(move |_req| {
            let port = *pc.get().unwrap();
            async move {
                Response::builder()
                    .status(302)
                    .header("location", format!("https://localhost:{port}/next?x=1"))
                    .body(Full::new(Bytes::new()))
                    .unwrap()
            }
        }),
    )
    .await;
    port_cell.set(upstream.port()).unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nca_file = \"{}\"\nstate_dir = \"{}\"\n[providers.echo]\npreset = \"static\"\nhosts = [\"r.test\"]\nupstream = \"https://localhost:{}\"\ntoken = \"t\"\n[[routes]]\nlisten = \"127.0.0.1:0\"\nprovider = \"echo\"\n",
        ca_file.display(),
        dir.path().display(),
        upstream.port()
    );
    let config = credproxy::config::load_str(&text, "t.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    drop(s);
    Setup {
        _ca: ca,
        _dir: dir,
        upstream,
        proxy,
    }
}

#[tokio::test]
async fn path_prefix_route_removes_the_prefix() {
    let s = setup().await;
    let (parts, body) = send(
        s.main(),
        get("/echo/inner/path?z=9", &[("host", &s.main().to_string())]),
    )
    .await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["path"], "/inner/path?z=9");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}

#[tokio::test]
async fn http2_upstream_via_alpn() {
    let s = setup_with(Alpn::H2Only, "", "").await;
    let (parts, body) = send(s.main(), get("http://api.echo.test/h2", &[])).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["version"], "HTTP/2.0");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    assert_eq!(v["path"], "/h2");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let s = setup().await;
    let tcp = TcpStream::connect(s.main()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        sender.ready().await.unwrap();
        let resp = sender
            .send_request(get("http://api.echo.test/r", &[]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    // A second downstream connection adopts the parked upstream connection of the first.
    drop(sender);
    tokio::task::yield_now().await;
    for _ in 0..3 {
        let (parts, _) = send(s.main(), get("http://api.echo.test/r", &[])).await;
        assert_eq!(parts.status, 200);
    }
    assert!(
        s.upstream.connections() <= 2,
        "upstream connections: {}",
        s.upstream.connections()
    );
}

#[tokio::test]
async fn upstream_down_is_502_and_slow_upstream_is_504() {
    let s = setup().await;
    let (parts, body) = send(s.main(), get("http://api.echo.test/slow", &[])).await;
    assert_eq!(parts.status, 504);
    assert_eq!(json(&body)["error"], "upstream_timeout");

    // A port nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[providers.dead]\npreset = \"static\"\nhosts = [\"dead.test\"]\nupstream = \"https://127.0.0.1:{dead}\"\ntoken = \"t\"\n",
        dir.path().display()
    );
    let proxy =
        credproxy::app::start(credproxy::config::load_str(&text, "t.toml", &|_| None).unwrap())
            .await
            .unwrap();
    let (parts, body) = send(
        proxy.main_addr().tcp().unwrap(),
        get("http://dead.test/", &[]),
    )
    .await;
    assert_eq!(parts.status, 502);
    assert_eq!(json(&body)["error"], "upstream_unreachable");
    assert!(
        parts.headers["proxy-status"]
            .to_str()
            .unwrap()
            .contains("credproxy")
    );
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_502_upstream_tls() {
    // The upstream's CA is not in ca_file.
    let other = TestCa::new();
    let upstream = echo_upstream(&other, Alpn::Http1Only).await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\nupstream = \"https://localhost:{}\"\ntoken = \"t\"\n",
        dir.path().display(),
        upstream.port()
    );
    let proxy =
        credproxy::app::start(credproxy::config::load_str(&text, "t.toml", &|_| None).unwrap())
            .await
            .unwrap();
    let (parts, body) = send(proxy.main_addr().tcp().unwrap(), get("http://x.test/", &[])).await;
    assert_eq!(parts.status, 502);
    assert_eq!(json(&body)["error"], "upstream_tls");
}

#[tokio::test]
async fn oversized_header_block_is_431() {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.main()).await.unwrap();
    let big = "a".repeat(70 * 1024);
    let req = format!(
        "GET http://api.echo.test/ HTTP/1.1\r\nhost: api.echo.test\r\nx-big: {big}\r\n\r\n"
    );
    let _ = tcp.write_all(req.as_bytes()).await;
    let mut buf = vec![0u8; 256];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
}

#[tokio::test]
async fn connect_to_a_claimed_host_is_refused_with_the_reason() {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.main()).await.unwrap();
    tcp.write_all(b"CONNECT api.echo.test:443 HTTP/1.1\r\nhost: api.echo.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tcp.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("can't be added inside a TLS tunnel"),
        "{text}"
    );
}

#[tokio::test]
async fn unknown_hosts_pass_forwards_untouched_and_tunnels_connect() {
    let s = setup_with(
        Alpn::Http1Only,
        "unknown_hosts = \"pass\"\npass_private = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    // A plain-HTTP server that is not claimed.
    let plain = TestServer::start(
        None,
        support::server::handler(|req: Request<Incoming>| async move {
            let auth = req
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_owned());
            Response::new(Full::new(Bytes::from(
                json!({"authorization": auth}).to_string(),
            )))
        }),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/open", plain.port());
    let (parts, body) = send(s.main(), get(&url, &[("authorization", "Bearer mine")])).await;
    assert_eq!(parts.status, 200);
    assert_eq!(
        json(&body)["authorization"],
        "Bearer mine",
        "passed through untouched"
    );

    // CONNECT to the unclaimed host is tunnelled: speak HTTP inside the tunnel.
    let mut tcp = TcpStream::connect(s.main()).await.unwrap();
    let target = format!("127.0.0.1:{}", plain.port());
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = sender
        .send_request(get("/inside", &[("host", &target)]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn shutdown_lets_the_request_in_flight_finish() {
    let s = setup_with(Alpn::Http1Only, "", "").await;
    let addr = s.main();
    // A request that takes a while upstream: use a slow path with a longer response timeout.
    let in_flight =
        tokio::spawn(async move { send(addr, get("http://api.echo.test/slow", &[])).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let Setup { proxy, .. } = s;
    let drained = proxy.shutdown(Duration::from_secs(5)).await;
    let (parts, _) = in_flight.await.unwrap();
    // The slow request ends with 504 after response_timeout (1 s): it was answered, not cut.
    assert_eq!(parts.status, 504);
    assert!(drained);
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn curl_through_http_proxy_when_installed() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipping");
        return;
    }
    let s = setup().await;
    let proxy = format!("http://{}", s.main());
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-x",
            &proxy,
            "http://api.echo.test/curl?via=proxy",
        ])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["path"], "/curl?via=proxy");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}

#[tokio::test]
async fn forwarded_headers_only_for_providers_that_ask() {
    let s = setup_with(
        Alpn::Http1Only,
        "",
        "[providers.fwd]\npreset = \"static\"\nhosts = [\"api.fwd.test\"]\nupstream = \"https://localhost:UPSTREAM\"\ntoken = \"t\"\nforwarded = true\n",
    )
    .await;
    // The echo provider did not ask: nothing about the client goes upstream.
    let (_, body) = send(s.main(), get("http://api.echo.test/", &[])).await;
    let v = json(&body);
    assert!(
        v["headers"].get("forwarded").is_none() && v["headers"].get("x-forwarded-for").is_none()
    );
    // The fwd provider asked.
    let (parts, body) = send(s.main(), get("http://api.fwd.test/", &[])).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(
        header_values(&v, "forwarded"),
        vec!["for=127.0.0.1;proto=http"]
    );
    assert_eq!(header_values(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
}

#[tokio::test]
async fn an_exact_host_wins_over_another_providers_wildcard() {
    // `aaa` sorts before `echo`, so a router taking the first match would give it api.echo.test.
    let s = setup_with(
        Alpn::Http1Only,
        "",
        r#"
[providers.aaa]
preset = "static"
hosts = ["*.echo.test"]
upstream = "https://localhost:UPSTREAM"
token = "wildcard-token"
"#,
    )
    .await;
    for (host, token) in [
        ("api.echo.test", TOKEN),
        ("other.echo.test", "wildcard-token"),
    ] {
        let (parts, body) = send(s.main(), get("/x", &[("host", host)])).await;
        assert_eq!(
            parts.status,
            200,
            "{host}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            header_values(&json(&body), "authorization"),
            vec![format!("Bearer {token}")],
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_stalled_body_to_an_http2_upstream_is_the_clients_408_not_a_502() {
    // hyper's HTTP/2 client resets the stream when the body fails and reports its own error:
    // the stall must still be blamed on the client.
    let s = setup_with(Alpn::H2Only, "client_body_timeout = \"300ms\"", "").await;
    let chunked = b"POST /x HTTP/1.1\r\nHost: api.echo.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec();
    let mut large =
        b"POST /x HTTP/1.1\r\nHost: api.echo.test\r\nContent-Length: 100000\r\n\r\n".to_vec();
    large.extend(vec![b'x'; 1000]);
    for (what, req) in [("chunked", chunked), ("large", large)] {
        let mut c = TcpStream::connect(s.main()).await.unwrap();
        c.write_all(&req).await.unwrap();
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await;
        let text = String::from_utf8_lossy(&got);
        assert!(text.starts_with("HTTP/1.1 408 "), "{what}: {text}");
        assert!(text.contains("\"client_timeout\""), "{what}: {text}");
    }
}
