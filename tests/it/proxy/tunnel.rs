//! `CONNECT` to a claimed host (DESIGN.md "Round 2 details": `CONNECT` with `intercept = "off"`):
//! port 443 is refused with what to set; any other port opens a tunnel whose plain HTTP requests
//! are served by the request core (credential injected, inner `Host` checked: 421). Raw sockets,
//! and Node's undici `ProxyAgent`, which tunnels even `http://` URLs.

use super::e2e::{TOKEN, get, header_values, json, setup, setup_with};
use crate::support;

use std::net::SocketAddr;

use http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::Alpn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `CONNECT target` on a new connection to `proxy` with `extra` header lines; the answer's head
/// and the connection (positioned after the head).
pub(crate) async fn connect(proxy: SocketAddr, target: &str, extra: &str) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n{extra}\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte, so nothing after the head is consumed.
    while !head.ends_with(b"\r\n\r\n") {
        if tcp.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).into_owned(), tcp)
}

/// HTTP/1.1 requests on an opened tunnel.
async fn client(
    tcp: TcpStream,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

#[tokio::test]
async fn connect_to_a_claimed_host_on_port_80_serves_plain_http_with_the_credential() {
    let s = setup().await;
    let (head, tcp) = connect(s.main(), "api.echo.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut sender = client(tcp).await;
    let resp = sender
        .send_request(get(
            "/inside?x=1",
            &[("host", "api.echo.test"), ("authorization", "Bearer mine")],
        ))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["path"], "/inside?x=1");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")],
        "the credential replaced the client's"
    );
    assert_eq!(header_values(&v, "x-bv-org-id"), vec!["org-42"]);

    // The same tunnel, keep-alive: a second request, then one for another host (421).
    let resp = sender
        .send_request(get("/again", &[("host", "API.echo.test.:80")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "same host, any case, default port");
    resp.into_body().collect().await.unwrap();
    let resp = sender
        .send_request(get("/other", &[("host", "x.wild.test")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["error"], "misdirected");
    assert_eq!(v["provider"], "echo");
    assert!(
        v["message"].as_str().unwrap().contains("api.echo.test:80"),
        "{v}"
    );
}

#[tokio::test]
async fn inner_host_with_another_port_or_absolute_form_for_another_host_is_421() {
    let s = setup().await;
    for (target, host) in [
        ("/p", "api.echo.test:8080"),
        ("http://x.wild.test/p", "api.echo.test"),
    ] {
        let (head, tcp) = connect(s.main(), "api.echo.test:80", "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut sender = client(tcp).await;
        let resp = sender
            .send_request(get(target, &[("host", host)]))
            .await
            .unwrap();
        assert_eq!(resp.status(), 421, "{target} with Host {host}");
    }
}

#[tokio::test]
async fn connect_to_a_claimed_host_on_443_with_interception_off_is_refused_saying_what_to_set() {
    let s = setup().await;
    let (head, mut tcp) = connect(s.main(), "api.echo.test:443", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let mut body = vec![0u8; 4096];
    let n = tcp.read(&mut body).await.unwrap();
    let v: Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(v["error"], "connect_refused");
    assert_eq!(v["provider"], "echo");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("intercept = \"claimed\""),
        "{v}"
    );
}

#[tokio::test]
async fn a_tunnel_that_begins_with_tls_or_garbage_while_interception_is_off_is_closed() {
    let s = setup().await;
    for first in [&[0x16u8, 0x03, 0x01, 0x00, 0x05][..], b"\x00\x01garbage"] {
        let (head, mut tcp) = connect(s.main(), "api.echo.test:8443", "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        tcp.write_all(first).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("closed, not left hanging")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
    }
}

#[tokio::test]
async fn proxy_auth_is_checked_on_the_connect_and_not_again_inside() {
    let s = setup_with(Alpn::Http1Only, "proxy_auth = \"hunter2-proxy\"", "").await;
    let (head, _) = connect(s.main(), "api.echo.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    // `Bearer hunter2-proxy`
    let (head, tcp) = connect(
        s.main(),
        "api.echo.test:80",
        "proxy-authorization: Bearer hunter2-proxy\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut sender = client(tcp).await;
    let resp = sender
        .send_request(get("/in", &[("host", "api.echo.test")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    assert!(v["headers"].get("proxy-authorization").is_none());
}

#[tokio::test]
async fn a_browser_request_inside_a_tunnel_is_refused() {
    let s = setup().await;
    let (_, tcp) = connect(s.main(), "api.echo.test:80", "").await;
    let mut sender = client(tcp).await;
    let req = Request::builder()
        .uri("/in")
        .header("host", "api.echo.test")
        .header("origin", "https://evil.example")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 403);
    let v = json(&resp.into_body().collect().await.unwrap().to_bytes());
    assert_eq!(v["error"], "browser_request");
}

/// undici's `ProxyAgent` (what `NODE_USE_ENV_PROXY` uses) reaches `http://` URLs by `CONNECT
/// host:80`; the upstream sees the injected credential.
#[tokio::test]
async fn undici_proxy_agent_fetches_an_http_url_of_a_claimed_host() {
    let Some(dir) = support::external::undici() else {
        return;
    };
    let s = setup().await;
    let script = r#"
const { ProxyAgent, fetch } = require(process.env.UNDICI_DIR + '/node_modules/undici');
const dispatcher = new ProxyAgent(process.env.PROXY_URL);
fetch('http://api.echo.test/from-undici?n=1', { dispatcher })
  .then(async (r) => { console.log(JSON.stringify({ status: r.status, body: await r.text() })); process.exit(0); })
  .catch((e) => { console.error(e); process.exit(1); });
"#;
    let out = tokio::process::Command::new("node")
        .args(["-e", script])
        .env("UNDICI_DIR", &dir)
        .env("PROXY_URL", format!("http://{}", s.main()))
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NODE_USE_ENV_PROXY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], 200, "{r}");
    let v: Value = serde_json::from_str(r["body"].as_str().unwrap()).unwrap();
    assert_eq!(v["path"], "/from-undici?n=1");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}

/// A tunnel is its connection: it keeps the client's connection slot while it lives, and gives it
/// back when it closes.
#[tokio::test]
async fn an_open_tunnel_holds_its_connection_slot() {
    let s = setup_with(Alpn::Http1Only, "max_connections_per_client = 1", "").await;
    let (head, tcp) = connect(s.main(), "api.echo.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut sender = client(tcp).await;
    let resp = sender
        .send_request(get("/in", &[("host", "api.echo.test")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();

    let mut second = TcpStream::connect(s.main()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = second.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("too_many_connections"), "{text}");

    drop(sender);
    // Closed: the slot comes back (checked until it does, within 5 s).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (head, _) = connect(s.main(), "api.echo.test:80", "").await;
        if head.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never came back: {head}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A TCP echo server on 127.0.0.1 (no provider claims it): its port.
async fn tcp_echo() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// `bytes` through an opened tunnel to [`tcp_echo`] come back.
async fn echoes(tcp: &mut TcpStream, bytes: &[u8]) {
    tcp.write_all(bytes).await.unwrap();
    let mut back = vec![0u8; bytes.len()];
    tcp.read_exact(&mut back).await.unwrap();
    assert_eq!(back, bytes);
}

/// A `CONNECT` to an unclaimed host (`unknown_hosts = "pass"`) is its connection's tunnel too: it
/// keeps the client's connection slot while the bytes flow, and shutdown closes it.
#[tokio::test]
async fn a_passed_connect_tunnel_holds_its_connection_slot_and_shutdown_closes_it() {
    let s = setup_with(
        Alpn::Http1Only,
        "max_connections_per_client = 2\nunknown_hosts = \"pass\"\npass_private = [\"127.0.0.1/32\"]",
        "",
    )
    .await;
    let target = format!("127.0.0.1:{}", tcp_echo().await);
    let mut tunnels = Vec::new();
    for i in 0..2 {
        let (head, mut tcp) = connect(s.main(), &target, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        echoes(&mut tcp, format!("tunnel {i}").as_bytes()).await;
        tunnels.push(tcp);
    }

    let mut third = TcpStream::connect(s.main()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = third.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("too_many_connections"),
        "two open tunnels hold both of the client's slots: {text}"
    );
    echoes(&mut tunnels[0], b"still open").await;

    let drained = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        s.proxy.shutdown(std::time::Duration::from_secs(15)),
    )
    .await
    .expect("shutdown returns");
    assert!(
        drained,
        "the open tunnels held shutdown for the grace period"
    );
    for mut tcp in tunnels {
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_to_end(&mut rest),
        )
        .await
        .expect("shutdown closed the tunnel")
        .unwrap();
        assert!(rest.is_empty());
    }
}

/// A passed `CONNECT` to a host that refuses the connection is answered 502 with credproxy's
/// own error, not `200` and a tunnel that closes at once: the client learns why.
#[tokio::test]
async fn a_passed_connect_to_a_closed_port_is_a_502_not_a_tunnel() {
    let s = setup_with(
        Alpn::Http1Only,
        "unknown_hosts = \"pass\"\npass_private = [\"127.0.0.1/32\"]",
        "",
    )
    .await;
    // A port that was just free: nothing listens there.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (head, mut tcp) = connect(s.main(), &format!("127.0.0.1:{closed}"), "").await;
    assert!(head.starts_with("HTTP/1.1 502"), "{head}");
    let mut body = vec![0u8; 4096];
    let n = tcp.read(&mut body).await.unwrap();
    let v: Value = serde_json::from_slice(&body[..n]).unwrap();
    assert_eq!(v["error"], "upstream_unreachable", "{v}");
}

/// Read one HTTP/1.1 answer with a `content-length` from `tcp`: its head.
async fn answer(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no content-length: {head}"));
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body).await.unwrap();
    head
}

/// The upstream connection a client connection's last request left idle goes to the pool when
/// that connection turns into a tunnel, not when the tunnel ends: a request inside the tunnel
/// (a connection of its own) reuses it.
#[tokio::test]
async fn the_idle_upstream_connection_is_pooled_when_its_client_connection_becomes_a_tunnel() {
    let s = setup().await;
    let mut tcp = TcpStream::connect(s.main()).await.unwrap();
    tcp.write_all(b"GET http://api.echo.test/before HTTP/1.1\r\nhost: api.echo.test\r\n\r\n")
        .await
        .unwrap();
    let head = answer(&mut tcp).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(s.upstream.connections(), 1);

    tcp.write_all(b"CONNECT api.echo.test:80 HTTP/1.1\r\nhost: api.echo.test:80\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));
    let mut sender = client(tcp).await;
    let resp = sender
        .send_request(get("/inside", &[("host", "api.echo.test")]))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(
        s.upstream.connections(),
        1,
        "the tunnel's request opened an upstream connection while one sat idle"
    );
}
