//! WebSocket through credproxy (DESIGN.md "Protocols", `src/proxy/upgrade.rs`), with a real
//! WebSocket library on both sides: Python `websockets` as the upstream server (TLS with the test
//! CA, checking the injected `Authorization` on the handshake) and as the client, on every
//! listener (a route listener, the main one by path prefix), through a plain `CONNECT` tunnel and
//! through interception (`wss://` with `proxy=`). Text and binary frames go both ways; each side
//! closes in turn and the other sees its close code.

use super::e2e::TOKEN;
use crate::support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use credproxy::app::Running;
use parking_lot::Mutex;
use serde_json::{Value, json};
use support::TestCa;
use support::external::{python, works};
use support::proxy::{poll, proxy_section};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The upstream: a `websockets` server on TLS. Its handshake check answers 403 for `/deny` and
/// 401 without the injected credential; a connection first sends what the handshake carried,
/// then echoes every frame, and closes with 4001 when asked; each close is printed with the code
/// the client sent.
const SERVER: &str = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.server import serve

cert, key, token = sys.argv[1], sys.argv[2], sys.argv[3]

def check(conn, request):
    auth = request.headers.get("Authorization")
    print("handshake", request.path, auth, flush=True)
    if request.path.startswith("/pass"):
        return None
    if request.path.startswith("/deny"):
        return conn.respond(403, "denied by the upstream\n")
    if auth != "Bearer " + token:
        return conn.respond(401, "no credential\n")
    return None

async def handler(ws):
    h = ws.request.headers
    await ws.send(json.dumps({
        "path": ws.request.path,
        "authorization": h.get_all("Authorization"),
        "proxy-authorization": h.get_all("Proxy-Authorization"),
        "x-bv-org-id": h.get_all("X-Bv-Org-Id"),
        "host": h.get_all("Host"),
        "expect": h.get_all("Expect"),
    }))
    try:
        async for msg in ws:
            if msg == "close, please":
                await ws.close(4001, "as asked")
                break
            await ws.send(msg)
    except Exception:
        pass
    finally:
        print("closed", ws.request.path, ws.close_code, flush=True)

async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    async with serve(handler, "127.0.0.1", 0, ssl=ctx, process_request=check) as server:
        print("port", server.sockets[0].getsockname()[1], flush=True)
        await asyncio.Future()

asyncio.run(main())
"#;

/// The client: each case of `argv[1]` (url, proxy, CA file, who closes) connects, sends a text
/// and a binary frame (and a 100 KiB one), checks the echoes and closes or asks the server to;
/// one JSON result per case: what the upstream saw, whether the echoes matched, the close code
/// this side got, or the status of a refused handshake.
const CLIENT: &str = r#"
import asyncio, json, ssl, sys
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

async def one(case):
    kw = {"proxy": case.get("proxy"), "open_timeout": 20,
          "additional_headers": {"Authorization": "Bearer the-apps-own"}}
    kw.update(case.get("extra", {}))
    if case.get("ca"):
        kw["ssl"] = ssl.create_default_context(cafile=case["ca"])
    try:
        async with connect(case["url"], **kw) as ws:
            first = json.loads(await ws.recv())
            ok = True
            for msg in ["hello", b"\x00\x01binary\xff", "x" * 100000]:
                await ws.send(msg)
                ok = ok and await ws.recv() == msg
            if case["close"] == "server":
                await ws.send("close, please")
                try:
                    await ws.recv()
                    ok = False
                except ConnectionClosed:
                    pass
            else:
                await ws.close(1000, "client done")
            return {"first": first, "echoed": ok, "code": ws.close_code}
    except InvalidStatus as e:
        return {"status": e.response.status_code}

async def main():
    out = [await one(c) for c in json.loads(sys.argv[1])]
    print(json.dumps(out))

asyncio.run(main())
"#;

/// The Python upstream, killed when dropped; its printed lines are collected.
struct Upstream {
    _child: tokio::process::Child,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Upstream {
    async fn start(dir: &Path, ca: &TestCa) -> Upstream {
        let (cert, key) = ca.write_leaf_files(dir);
        let mut child = tokio::process::Command::new("python3")
            .args(["-c", SERVER])
            .arg(&cert)
            .arg(&key)
            .arg(TOKEN)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 starts");
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), out.next_line())
            .await
            .expect("the WebSocket server starts within 30 s")
            .unwrap()
            .expect("the WebSocket server prints its port");
        let port = first
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not a port: {first}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                sink.lock().push(line);
            }
        });
        Upstream {
            _child: child,
            port,
            lines,
        }
    }

    /// Wait for the server to print `line`.
    async fn printed(&self, line: &str) {
        let lines = self.lines.clone();
        poll(
            &format!("the upstream to print {line:?}"),
            Duration::from_secs(10),
            || lines.lock().iter().any(|l| l == line),
        )
        .await;
    }
}

struct Ws {
    _ca: TestCa,
    dir: tempfile::TempDir,
    upstream: Upstream,
    proxy: Running,
}

impl Ws {
    async fn start(extra_proxy: &str) -> Option<Ws> {
        let v15 =
            "import sys, websockets; sys.exit(int(websockets.__version__.split('.')[0]) < 15)";
        if !python(&["websockets"]) || !works("python3", &["-c", v15]) {
            eprintln!("python3 with websockets 15 or later is not available; skipping");
            return None;
        }
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let ca_file = ca.write_ca_file(dir.path());
        let upstream = Upstream::start(dir.path(), &ca).await;
        let text = format!(
            r#"{proxy}intercept = "claimed"
{extra_proxy}

[providers.ws]
preset = "static"
hosts = ["api.ws.test"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"
headers = {{ "x-bv-org-id" = "org-42" }}

[[routes]]
listen = "127.0.0.1:0"
provider = "ws"

[[routes]]
path_prefix = "/wsp"
provider = "ws"
"#,
            proxy = proxy_section(&dir.path().join("state"), &ca_file),
            port = upstream.port,
        );
        let config = credproxy::config::load_str(&text, "ws.toml", &|_| None).unwrap();
        let proxy = credproxy::app::start(config).await.unwrap();
        Some(Ws {
            _ca: ca,
            dir,
            upstream,
            proxy,
        })
    }

    fn main(&self) -> std::net::SocketAddr {
        self.proxy.main_addr().tcp().unwrap()
    }

    fn route(&self) -> std::net::SocketAddr {
        self.proxy.route_addr("ws").unwrap().tcp().unwrap()
    }

    fn ca_pem(&self) -> PathBuf {
        self.dir.path().join("state/ca/ca.pem")
    }

    /// Run the Python client over `cases`; its results, in order.
    async fn client(&self, cases: Value) -> Vec<Value> {
        let mut cmd = tokio::process::Command::new("python3");
        cmd.args(["-c", CLIENT, &cases.to_string()]);
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            cmd.env_remove(v);
        }
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("the client finished within 60 s")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "client failed: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("not JSON: {stdout}"))
    }
}

/// A connection that went through: the upstream saw the injected credential (the client's own
/// replaced) and the provider's field, no `Proxy-Authorization`; every echo matched.
fn assert_served(r: &Value, path: &str) {
    let first = &r["first"];
    assert_eq!(first["path"], path, "{r}");
    assert_eq!(
        first["authorization"],
        json!([format!("Bearer {TOKEN}")]),
        "{r}"
    );
    assert_eq!(first["x-bv-org-id"], json!(["org-42"]), "{r}");
    assert_eq!(first["proxy-authorization"], json!([]), "{r}");
    assert_eq!(r["echoed"], true, "{r}");
}

#[tokio::test]
async fn websocket_on_a_route_listener_and_by_path_prefix_gets_the_credential_frames_and_closes() {
    let Some(s) = Ws::start("").await else {
        return;
    };
    let results = s
        .client(json!([
            {"url": format!("ws://{}/chat?room=1", s.route()), "close": "client"},
            {"url": format!("ws://{}/wsp/prefixed", s.main()), "close": "server"},
        ]))
        .await;
    assert_served(&results[0], "/chat?room=1");
    // The client closed: the server got its 1000 through credproxy.
    assert_eq!(results[0]["code"], 1000);
    s.upstream.printed("closed /chat?room=1 1000").await;
    assert_served(&results[1], "/prefixed");
    // The server closed: the client got its 4001 through credproxy.
    assert_eq!(results[1]["code"], 4001, "{}", results[1]);
    s.upstream.printed("closed /prefixed 4001").await;
}

#[tokio::test]
async fn websocket_through_connect_plain_and_intercepted_tls_gets_the_credential() {
    let Some(s) = Ws::start("").await else {
        return;
    };
    let proxy = format!("http://{}", s.main());
    let ca = s.ca_pem();
    let results = s
        .client(json!([
            // `ws://` through an HTTP proxy: websockets opens `CONNECT api.ws.test:80`.
            {"url": "ws://api.ws.test/plain", "proxy": proxy, "close": "server"},
            // `wss://`: `CONNECT api.ws.test:443`, TLS terminated with credproxy's leaf.
            {"url": "wss://api.ws.test/tls", "proxy": proxy, "ca": ca, "close": "client"},
            {"url": "wss://api.ws.test/tls2", "proxy": proxy, "ca": ca, "close": "server"},
        ]))
        .await;
    assert_served(&results[0], "/plain");
    assert_eq!(results[0]["code"], 4001, "{}", results[0]);
    assert_served(&results[1], "/tls");
    assert_eq!(results[1]["code"], 1000);
    s.upstream.printed("closed /tls 1000").await;
    assert_served(&results[2], "/tls2");
    assert_eq!(results[2]["code"], 4001, "{}", results[2]);
    // The upstream saw `Host` as its own, once.
    assert_eq!(
        results[1]["first"]["host"],
        json!([format!("localhost:{}", s.upstream.port)])
    );
}

/// The handshake is a request like any other: a refusal by the upstream is relayed as it came,
/// `proxy_auth` is asked for (and the secret never reaches the upstream), a browser's handshake
/// is refused before the upstream hears of it.
#[tokio::test]
async fn a_websocket_handshake_is_refused_like_any_request() {
    let Some(s) = Ws::start("proxy_auth = \"s3cret\"").await else {
        return;
    };
    let with_auth = format!("http://user:s3cret@{}", s.main());
    let results = s
        .client(json!([
            {"url": "wss://api.ws.test/deny", "proxy": with_auth, "ca": s.ca_pem(), "close": "client"},
            // No proxy credentials: the CONNECT gets 407 (websockets reports it as a failed
            // proxy, so this case is sent on the main listener, path prefix, without a proxy).
            {"url": format!("ws://{}/wsp/noauth", s.main()), "close": "client"},
            {"url": format!("ws://{}/wsp/auth", s.main()), "close": "client",
             "extra": {"additional_headers": {"Proxy-Authorization": "Basic dXNlcjpzM2NyZXQ="}}},
            {"url": format!("ws://{}/wsp/browser", s.main()), "close": "client",
             "extra": {"origin": "https://evil.example",
                       "additional_headers": {"Proxy-Authorization": "Basic dXNlcjpzM2NyZXQ="}}},
        ]))
        .await;
    assert_eq!(
        results[0]["status"], 403,
        "the upstream's refusal: {}",
        results[0]
    );
    assert_eq!(results[1]["status"], 407, "{}", results[1]);
    assert_served(&results[2], "/auth");
    assert_eq!(results[3]["status"], 403, "{}", results[3]);
    let lines = s.upstream.lines.lock().clone();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("/noauth") || l.contains("/browser")),
        "refused handshakes never reached the upstream: {lines:?}"
    );
}

/// An `Upgrade` to anything but `websocket` (`curl --http2` offers `h2c` on `http://`) is
/// declined the way a server declines it: served as plain HTTP/1.1, the offer not passed on.
#[tokio::test]
async fn an_upgrade_to_another_protocol_is_served_as_plain_http() {
    let s = super::e2e::setup().await;
    let mut tcp = TcpStream::connect(s.main()).await.unwrap();
    tcp.write_all(
        b"GET /h2c HTTP/1.1\r\nhost: api.echo.test\r\nconnection: Upgrade, HTTP2-Settings\r\n\
          upgrade: h2c\r\nhttp2-settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while !String::from_utf8_lossy(&got).contains("\"body_len\"") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let v: Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["path"], "/h2c");
    for hop in ["upgrade", "http2-settings", "connection"] {
        assert!(v["headers"][hop].is_null(), "{hop} went upstream: {v}");
    }
}

/// A WebSocket frame as a client sends it (RFC 6455 §5.2: FIN, masked, short payload).
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// One unmasked frame from the server: (opcode, payload).
async fn server_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).await.unwrap();
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            tcp.read_exact(&mut l).await.unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => panic!("a frame this test never asks for"),
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (h[0] & 0x0f, payload)
}

/// A WebSocket handshake for `target` (with `Host: host` and `extra` header lines) on a new
/// connection to `addr`: the answer's head, lowercased, and the connection after it.
async fn raw_handshake(
    addr: std::net::SocketAddr,
    target: &str,
    host: &str,
    extra: &str,
) -> (String, TcpStream) {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!(
            "GET {target} HTTP/1.1\r\nhost: {host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
             sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{extra}\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: the frames after the head stay unread.
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            tcp.read(&mut byte).await.unwrap(),
            1,
            "closed before the head"
        );
        head.push(byte[0]);
    }
    (String::from_utf8_lossy(&head).to_lowercase(), tcp)
}

/// The access line is written at the `101`, while the WebSocket is still open; the token is in
/// no log line, through the handshake, the frames and the close.
#[tokio::test]
async fn the_access_line_is_written_at_the_101_and_the_token_is_never_logged() {
    if !support::alone::own_process(
        module_path!(),
        "the_access_line_is_written_at_the_101_and_the_token_is_never_logged",
    ) {
        return;
    }
    let logs = support::logs::capture_trace();
    let Some(s) = Ws::start("").await else {
        return;
    };
    let route = s.route().to_string();
    let (head, mut tcp) = raw_handshake(s.route(), "/raw", &route, "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    // The upstream's answer to the key (RFC 6455 §1.3's example), relayed.
    assert!(
        head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    assert!(head.contains("upgrade: websocket") && head.contains("connection: upgrade"));
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("credproxy::access") && l.contains("path=/raw"))
        .unwrap_or_else(|| panic!("no access line at the 101: {text}"));
    assert!(
        line.contains("status=101") && line.contains("provider=\"ws\""),
        "{line}"
    );

    let (op, first) = server_frame(&mut tcp).await;
    assert_eq!(op, 1, "a text frame");
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first["authorization"], json!([format!("Bearer {TOKEN}")]));
    tcp.write_all(&client_frame(1, b"ping?")).await.unwrap();
    assert_eq!(server_frame(&mut tcp).await, (1, b"ping?".to_vec()));
    tcp.write_all(&client_frame(8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    let (op, code) = server_frame(&mut tcp).await;
    assert_eq!((op, &code[..2]), (8, &1000u16.to_be_bytes()[..]));
    s.upstream.printed("closed /raw 1000").await;
    // Both connections end: the server's close reaches the client as the end of the stream.
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest))
        .await
        .expect("credproxy closes the client's connection after the upstream's")
        .unwrap();
    assert!(rest.is_empty());
    assert!(!logs.text().contains(TOKEN), "the token is in the logs");
}

/// Shutdown does not wait for a WebSocket to end by itself: it is closed, and the connections
/// drain at once (without that, the grace period would run out).
#[tokio::test]
async fn shutdown_closes_an_open_websocket() {
    let Some(Ws {
        proxy, upstream, ..
    }) = Ws::start("").await
    else {
        return;
    };
    let route = proxy.route_addr("ws").unwrap().tcp().unwrap();
    let (head, mut tcp) = raw_handshake(route, "/held", &route.to_string(), "").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert_eq!(server_frame(&mut tcp).await.0, 1);
    let drained = tokio::time::timeout(
        Duration::from_secs(20),
        proxy.shutdown(Duration::from_secs(15)),
    )
    .await
    .expect("shutdown returns");
    assert!(
        drained,
        "the open WebSocket held shutdown for the whole grace period"
    );
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("the client's connection is closed")
        .unwrap();
    upstream.printed("closed /held 1006").await;
}

/// `unknown_hosts = "pass"`: a WebSocket to an unclaimed host goes through untouched (no
/// credential), on the one address judged, and frames flow.
#[tokio::test]
async fn a_websocket_to_a_passed_host_goes_through_without_a_credential() {
    let Some(s) = Ws::start("unknown_hosts = \"pass\"\npass_private = [\"127.0.0.1/32\"]").await
    else {
        return;
    };
    let authority = format!("localhost:{}", s.upstream.port);
    let (head, mut tcp) = raw_handshake(
        s.main(),
        &format!("https://{authority}/pass"),
        &authority,
        "",
    )
    .await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let (_, first) = server_frame(&mut tcp).await;
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(
        first["authorization"],
        json!([]),
        "no credential for a passed host"
    );
    tcp.write_all(&client_frame(2, b"\x00bytes")).await.unwrap();
    assert_eq!(server_frame(&mut tcp).await, (2, b"\x00bytes".to_vec()));
}

/// `Expect: 100-continue` on a handshake: a handshake has no body to hold back, so it is not
/// forwarded, the `101` comes back, and frames flow (the `Expect` gate does not stay closed on a
/// connection that goes on as a WebSocket).
#[tokio::test]
async fn a_handshake_with_expect_100_continue_opens_a_websocket() {
    let Some(s) = Ws::start("").await else {
        return;
    };
    let route = s.route().to_string();
    let (head, mut tcp) =
        raw_handshake(s.route(), "/expect", &route, "expect: 100-continue\r\n").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    let (op, first) = server_frame(&mut tcp).await;
    assert_eq!(op, 1, "a text frame");
    let first: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(first["expect"], json!([]), "Expect went upstream: {first}");
    assert_eq!(first["authorization"], json!([format!("Bearer {TOKEN}")]));
    tcp.write_all(&client_frame(1, b"after expect"))
        .await
        .unwrap();
    assert_eq!(server_frame(&mut tcp).await, (1, b"after expect".to_vec()));
    tcp.write_all(&client_frame(8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    assert_eq!(server_frame(&mut tcp).await.0, 8, "the close, relayed");
    s.upstream.printed("closed /expect 1000").await;
}
