//! HTTP/2 downstream (DESIGN.md "Protocols"): h2c with prior knowledge on every plain listener,
//! `h2` by ALPN on intercepted TLS only when the upstream speaks it, the strict HTTP/2 → HTTP/1.1
//! translation (RFC 9113 §8.2.2, §8.3.1), the reset flood, and gRPC end to end with a real
//! gRPC library on both sides.

use super::e2e::{Setup, TOKEN, header_values, json, setup, setup_with};
use super::intercept::{echoed, run};
use crate::support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use credproxy::app::Running;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use support::external::works;
use support::h2raw::{self, Raw};
use support::proxy::proxy_section;
use support::{Alpn, TestCa, TestServer};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpStream;

/// An HTTP/2 (prior knowledge) client connection to `addr`.
async fn h2c(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 handshake with credproxy");
    tokio::spawn(conn);
    sender
}

async fn send_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (http::response::Parts, Bytes) {
    let mut b = Request::builder().uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    let resp = sender
        .send_request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("an answer over HTTP/2");
    let (parts, body) = resp.into_parts();
    (parts, body.collect().await.unwrap().to_bytes())
}

impl Setup {
    fn route_listener(&self) -> SocketAddr {
        self.proxy.route_addr("echo").unwrap().tcp().unwrap()
    }
}

#[tokio::test]
async fn h2c_with_prior_knowledge_is_served_on_the_main_and_route_listeners() {
    let s = setup().await;
    let mut main = h2c(s.main()).await;
    // Routed by `:authority` (it becomes `Host`), and by path prefix.
    for (uri, path) in [
        ("http://api.echo.test/v1/h2c?x=1", "/v1/h2c?x=1"),
        (
            &*format!("http://{}/echo/v1/prefixed", s.main()),
            "/v1/prefixed",
        ),
    ] {
        let (parts, body) = send_h2(&mut main, uri, &[("authorization", "Bearer mine")]).await;
        assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(parts.version, http::Version::HTTP_2);
        let v = json(&body);
        assert_eq!(v["path"], path);
        assert_eq!(
            v["version"], "HTTP/1.1",
            "an HTTP/1.1 upstream gets HTTP/1.1"
        );
        assert_eq!(
            header_values(&v, "authorization"),
            vec![format!("Bearer {TOKEN}")]
        );
        assert_eq!(
            header_values(&v, "host"),
            vec![format!("localhost:{}", s.upstream.port())]
        );
    }
    // Many streams at once on one connection, each on an HTTP/1.1 upstream connection of its
    // own while in flight, then reused.
    let route = format!("http://{}", s.route_listener());
    let sender = h2c(s.route_listener()).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32 {
        let mut sender = sender.clone();
        let uri = format!("{route}/v1/stream/{i}");
        calls.spawn(async move { (i, send_h2(&mut sender, &uri, &[]).await) });
    }
    while let Some(done) = calls.join_next().await {
        let (i, (parts, body)) = done.unwrap();
        assert_eq!(parts.status, 200);
        let v = json(&body);
        assert_eq!(v["path"], format!("/v1/stream/{i}"));
        assert_eq!(
            header_values(&v, "authorization"),
            vec![format!("Bearer {TOKEN}")]
        );
    }
    let before = s.upstream.connections();
    for i in 0..5 {
        let mut sender = sender.clone();
        let (parts, _) = send_h2(&mut sender, &format!("{route}/v1/again/{i}"), &[]).await;
        assert_eq!(parts.status, 200);
    }
    assert_eq!(
        s.upstream.connections(),
        before,
        "sequential streams reuse the upstream connections"
    );
    // HTTP/1.1 on the same listener is as before.
    let (parts, _) = super::e2e::send(
        s.main(),
        super::e2e::get("/echo/v1/h1", &[("host", "127.0.0.1")]),
    )
    .await;
    assert_eq!(parts.status, 200);
}

/// An upstream over plain HTTP that records every request's path.
async fn recording_upstream() -> (TestServer, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let rec = seen.clone();
    let server = TestServer::start(
        None,
        support::server::handler(move |req: Request<Incoming>| {
            let rec = rec.clone();
            async move {
                rec.lock().push(req.uri().path().to_owned());
                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                let n = body.map(|b| b.len()).unwrap_or(0);
                Response::new(Full::new(Bytes::from(format!("got {n} bytes"))))
            }
        }),
    )
    .await;
    (server, seen)
}

async fn recorded_setup(
    extra_proxy: &str,
) -> (
    tempfile::TempDir,
    TestServer,
    Arc<Mutex<Vec<String>>>,
    Running,
) {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let (upstream, seen) = recording_upstream().await;
    let text = format!(
        r#"
{proxy}{extra_proxy}

[providers.rec]
preset = "static"
hosts = ["api.rec.test"]
upstream = "http://127.0.0.1:{port}"
token = "{TOKEN}"
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
        port = upstream.port(),
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    (dir, upstream, seen, proxy)
}

/// What one raw stream came to: `Ok(status)` for an answer whose status the server sent
/// indexed, `Err(code)` for a reset (of the stream, or GOAWAY of the connection), `Ok(0)` for
/// another answer.
async fn raw_outcome(raw: &mut Raw, stream: u32) -> Result<u16, u32> {
    let frames = tokio::time::timeout(Duration::from_secs(10), raw.outcome(stream))
        .await
        .expect("an outcome within 10 s");
    for f in &frames {
        match f.kind {
            h2raw::HEADERS => return Ok(f.indexed_status().unwrap_or(0)),
            h2raw::RST_STREAM | h2raw::GOAWAY => return Err(f.code()),
            _ => {}
        }
    }
    Err(u32::MAX)
}

#[tokio::test]
async fn http2_requests_that_http1_would_read_otherwise_are_refused() {
    let (_dir, _up, seen, proxy) = recorded_setup("").await;
    let main = proxy.main_addr().tcp().unwrap();
    // Each on a connection of its own: a refusal may end the connection.
    let cases: &[(&str, &[(&str, &str)])] = &[
        ("/te-chunked", &[("transfer-encoding", "chunked")]),
        ("/te-gzip", &[("te", "gzip")]),
        ("/connection", &[("connection", "keep-alive")]),
        ("/keep-alive", &[("keep-alive", "timeout=5")]),
        ("/upgrade", &[("upgrade", "websocket")]),
        ("/proxy-connection", &[("proxy-connection", "keep-alive")]),
        (
            "/two-lengths",
            &[("content-length", "0"), ("content-length", "5")],
        ),
    ];
    for (path, fields) in cases {
        let mut raw = Raw::connect(main).await;
        raw.send(&h2raw::request(
            1,
            "GET",
            "api.rec.test",
            path,
            fields,
            true,
        ))
        .await
        .unwrap();
        let outcome = raw_outcome(&mut raw, 1).await;
        assert!(
            matches!(outcome, Err(_) | Ok(400)),
            "{path}: refused, not {outcome:?}"
        );
    }
    // `:authority` and `host` naming two hosts: credproxy's own 400.
    let mut raw = Raw::connect(main).await;
    let fields = [("host", "other.test")];
    raw.send(&h2raw::request(
        1,
        "GET",
        "api.rec.test",
        "/two-hosts",
        &fields,
        true,
    ))
    .await
    .unwrap();
    assert_eq!(raw_outcome(&mut raw, 1).await, Ok(400));
    // A body longer than its content-length, carrying a second request for an HTTP/1.1
    // upstream to find: the stream is reset, and the rest never reaches the upstream.
    let mut raw = Raw::connect(main).await;
    let smuggled = b"hello\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: api.rec.test\r\n\r\n";
    let mut bytes = h2raw::request(
        1,
        "POST",
        "api.rec.test",
        "/cl",
        &[("content-length", "5")],
        false,
    );
    bytes.extend(h2raw::frame(h2raw::DATA, h2raw::END_STREAM, 1, smuggled));
    raw.send(&bytes).await.unwrap();
    assert!(
        raw_outcome(&mut raw, 1).await.is_err(),
        "the stream is reset"
    );
    // And a shorter one.
    let mut raw = Raw::connect(main).await;
    let mut bytes = h2raw::request(
        1,
        "POST",
        "api.rec.test",
        "/short",
        &[("content-length", "50")],
        false,
    );
    bytes.extend(h2raw::frame(h2raw::DATA, h2raw::END_STREAM, 1, b"tiny"));
    raw.send(&bytes).await.unwrap();
    assert!(
        raw_outcome(&mut raw, 1).await.is_err(),
        "the stream is reset"
    );
    // A well-formed request on a raw connection is served: the refusals were about the fields.
    let mut raw = Raw::connect(main).await;
    raw.send(&h2raw::request(
        1,
        "GET",
        "api.rec.test",
        "/fine",
        &[("te", "trailers")],
        true,
    ))
    .await
    .unwrap();
    assert_eq!(raw_outcome(&mut raw, 1).await, Ok(200));
    let seen = seen.lock().clone();
    assert!(!seen.iter().any(|p| p == "/smuggled"), "{seen:?}");
    for (path, _) in cases {
        assert!(
            !seen.iter().any(|p| p == path),
            "{path} reached the upstream: {seen:?}"
        );
    }
    assert!(!seen.iter().any(|p| p == "/two-hosts"), "{seen:?}");
    assert!(seen.iter().any(|p| p == "/fine"), "{seen:?}");
}

#[tokio::test]
async fn a_flood_of_stream_resets_ends_that_connection_and_others_are_served() {
    let (_dir, _up, seen, proxy) = recorded_setup("h2_max_concurrent_streams = 100\n").await;
    let main = proxy.main_addr().tcp().unwrap();
    const FLOOD: u32 = 5000;
    let mut raw = Raw::connect(main).await;
    let mut bytes = Vec::new();
    for i in 0..FLOOD {
        let id = 2 * i + 1;
        bytes.extend(h2raw::request(
            id,
            "GET",
            "api.rec.test",
            "/flood",
            &[],
            true,
        ));
        bytes.extend(h2raw::rst(id, h2raw::CANCEL));
    }
    // The server may stop reading (and close) before all of it is written.
    let flood = tokio::spawn(async move {
        let _ = raw.send(&bytes).await;
        let mut goaway = None;
        while let Some(f) = raw.next().await {
            if f.kind == h2raw::GOAWAY {
                goaway = Some(f.code());
            }
        }
        goaway
    });
    // Meanwhile, and after, other clients are served.
    let mut other = h2c(main).await;
    let (parts, _) = send_h2(&mut other, "http://api.rec.test/other-h2", &[]).await;
    assert_eq!(parts.status, 200);
    let goaway = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the flooding connection is closed within 30 s")
        .unwrap();
    assert_eq!(
        goaway,
        Some(h2raw::ENHANCE_YOUR_CALM),
        "the flood is told to calm down"
    );
    let (parts, _) = send_h2(&mut other, "http://api.rec.test/other-h2-after", &[]).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = super::e2e::send(
        main,
        super::e2e::get("/other-h1", &[("host", "api.rec.test")]),
    )
    .await;
    assert_eq!(parts.status, 200);
    let flooded = seen.lock().iter().filter(|p| *p == "/flood").count();
    assert!(
        flooded < FLOOD as usize / 10,
        "{flooded} of {FLOOD} reset streams were sent upstream"
    );
}

#[tokio::test]
async fn h2_limits_are_checked_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = TestCa::new().write_ca_file(dir.path());
    let text = format!(
        "{}h2_max_concurrent_streams = 0\nh2_initial_stream_window = 4294967296\nh2_upstream_connections = 0\n\n[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\nupstream = \"https://x.test\"\ntoken = \"t\"\n",
        proxy_section(&dir.path().join("state"), &ca_file)
    );
    let err = credproxy::config::load_str(&text, "test.toml", &|_| None)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("proxy.h2_max_concurrent_streams"), "{err}");
    assert!(err.contains("proxy.h2_initial_stream_window"), "{err}");
    assert!(err.contains("proxy.h2_upstream_connections"), "{err}");
}

#[tokio::test]
async fn curl_with_http2_prior_knowledge_gets_the_credential() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    let s = setup().await;
    let url = format!("http://{}/echo/v1/curl-h2c", s.main());
    let (ok, out, err) = run(
        "curl",
        &[
            "-sS",
            "--max-time",
            "20",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            &url,
        ],
        &[],
    )
    .await;
    assert!(ok, "curl failed: {err}");
    let (body, version) = out.rsplit_once('\n').unwrap();
    assert_eq!(version, "2");
    let v = echoed(body);
    assert_eq!(v["path"], "/v1/curl-h2c");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
}

/// `curl --http2` through interception: HTTP/2 when the upstream speaks it, else HTTP/1.1
/// (ALPN `h2` is not offered).
#[tokio::test]
async fn curl_http2_through_interception_gets_h2_only_when_the_upstream_speaks_it() {
    if !works("curl", &["--version"]) {
        eprintln!("curl not installed; skipping");
        return;
    }
    for (alpn, want, upstream_version) in [
        (Alpn::H2AndHttp1, "2", "HTTP/2.0"),
        (Alpn::Http1Only, "1.1", "HTTP/1.1"),
    ] {
        let s = setup_with(alpn, "intercept = \"claimed\"", "").await;
        let proxy = format!("http://{}", s.main());
        let ca = s.ca_pem();
        for round in 0..2 {
            let (ok, out, err) = run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "20",
                    "--http2",
                    "-x",
                    &proxy,
                    "--cacert",
                    ca.to_str().unwrap(),
                    "-w",
                    "\n%{http_version}",
                    "https://api.echo.test/v1/curl-h2",
                ],
                &[],
            )
            .await;
            assert!(ok, "curl failed: {err}");
            let (body, version) = out.rsplit_once('\n').unwrap();
            assert_eq!(version, want, "{alpn:?}, round {round}");
            let v = echoed(body);
            assert_eq!(v["version"], upstream_version);
            assert_eq!(
                header_values(&v, "authorization"),
                vec![format!("Bearer {TOKEN}")]
            );
        }
    }
}

const GRPC_SERVER: &str = r#"
import sys, grpc
from concurrent import futures
cert, key, token = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read(), sys.argv[3]

def authorized(ctx):
    md = dict(ctx.invocation_metadata())
    if md.get("authorization") != "Bearer " + token:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, "no credential: " + repr(md.get("authorization")))

def unary(req, ctx):
    authorized(ctx)
    ctx.set_trailing_metadata((("x-trailer", "unary-done"),))
    return b"pong:" + req

def stream(req, ctx):
    authorized(ctx)
    for i in range(3):
        yield b"part%d:" % i + req

def fail(req, ctx):
    authorized(ctx)
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing here")

handlers = {
    "Unary": grpc.unary_unary_rpc_method_handler(unary),
    "Stream": grpc.unary_stream_rpc_method_handler(stream),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
}
server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(((key, cert),)))
server.start()
print(port, flush=True)
sys.stdin.read()
"#;

const GRPC_CLIENT: &str = r#"
import json, sys, grpc
out = {}
ca = open(sys.argv[3], "rb").read()
for name, target, options in (
    ("route", sys.argv[1], ()),
    ("main", sys.argv[2], (("grpc.default_authority", "grpc.test"),)),
    # HTTPS_PROXY-style: CONNECT grpc.test:443, TLS with credproxy's CA, ALPN h2.
    ("intercept", "grpc.test:443", (("grpc.http_proxy", "http://" + sys.argv[2]),)),
):
    if name == "intercept":
        ch = grpc.secure_channel(target, grpc.ssl_channel_credentials(ca), options=options)
    else:
        ch = grpc.insecure_channel(target, options=options)
    with ch:
        unary = ch.unary_unary("/test.Echo/Unary")
        resp, call = unary.with_call(b"ping", timeout=20)
        trailers = dict(call.trailing_metadata())
        parts = list(ch.unary_stream("/test.Echo/Stream")(b"s", timeout=20))
        try:
            ch.unary_unary("/test.Echo/Fail")(b"x", timeout=20)
            fail = None
        except grpc.RpcError as e:
            fail = [e.code().name, e.details()]
        out[name] = {"unary": resp.decode(), "trailer": trailers.get("x-trailer"),
                     "stream": [p.decode() for p in parts], "fail": fail}
print(json.dumps(out))
"#;

/// gRPC through credproxy's h2c listeners and through interception (a proxied TLS channel,
/// which needs ALPN `h2`), with grpcio on both sides: a TLS gRPC server as the upstream (ALPN
/// `h2`), checking the credential in the metadata; unary and server-streaming calls, trailers
/// (`grpc-status`, `grpc-message`, custom trailing metadata) forwarded.
#[tokio::test]
async fn grpc_unary_and_streaming_calls_go_through_with_the_credential_and_trailers() {
    // Not `support::external::python`: the pip package is `grpcio`, not the module's name
    // (`.ci/run` installs it).
    if !works("python3", &["-c", "import grpc"]) {
        eprintln!("python3 with grpcio is not available; skipping");
        return;
    }
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let (cert, key) = ca.leaf_pem();
    let (cert_path, key_path) = (dir.path().join("leaf.pem"), dir.path().join("leaf-key.pem"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let mut server = tokio::process::Command::new("python3")
        .args(["-c", GRPC_SERVER])
        .arg(&cert_path)
        .arg(&key_path)
        .arg(TOKEN)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut stdout = tokio::io::BufReader::new(server.stdout.take().unwrap());
    tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
        .await
        .expect("the gRPC server started within 30 s")
        .unwrap();
    let port: u16 = line.trim().parse().expect("the gRPC server's port");
    let text = format!(
        r#"
{proxy}intercept = "claimed"

[providers.grpc]
preset = "static"
hosts = ["grpc.test"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"

[[routes]]
listen = "127.0.0.1:0"
provider = "grpc"
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    let route = proxy.route_addr("grpc").unwrap().tcp().unwrap().to_string();
    let main = proxy.main_addr().tcp().unwrap().to_string();
    let ca_pem = dir.path().join("state").join("ca").join("ca.pem");
    let ca_pem = ca_pem.to_str().unwrap();
    let (ok, out, err) = run("python3", &["-c", GRPC_CLIENT, &route, &main, ca_pem], &[]).await;
    assert!(ok, "the gRPC client failed: {err}");
    let v = echoed(&out);
    for listener in ["route", "main", "intercept"] {
        let r = &v[listener];
        assert_eq!(r["unary"], "pong:ping", "{listener}: {v}");
        assert_eq!(r["trailer"], "unary-done", "{listener}: {v}");
        assert_eq!(
            r["stream"],
            serde_json::json!(["part0:s", "part1:s", "part2:s"]),
            "{listener}: {v}"
        );
        assert_eq!(
            r["fail"],
            serde_json::json!(["NOT_FOUND", "no such thing here"]),
            "{listener}: {v}"
        );
    }
    drop(server);
}

/// An HTTP/2 connection with no stream open is closed after `header_timeout`, as an idle
/// HTTP/1.1 one is: one that never finishes its preface, and one whose streams are done.
#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_header_timeout() {
    let (_dir, _up, _seen, proxy) = recorded_setup("header_timeout = \"300ms\"\n").await;
    let main = proxy.main_addr().tcp().unwrap();
    let mut half = TcpStream::connect(main).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut half, b"PRI * HTTP/2.0\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tokio::io::AsyncReadExt::read(&mut half, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half preface is not kept open");
    let mut raw = Raw::connect(main).await;
    raw.send(&h2raw::request(
        1,
        "GET",
        "api.rec.test",
        "/then-idle",
        &[],
        true,
    ))
    .await
    .unwrap();
    assert_eq!(raw_outcome(&mut raw, 1).await, Ok(200));
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        let mut goaway = None;
        while let Some(f) = raw.next().await {
            if f.kind == h2raw::GOAWAY {
                goaway = Some(f.code());
            }
        }
        goaway
    })
    .await
    .expect("the idle connection is closed");
    assert_eq!(end, Some(0), "GOAWAY NO_ERROR, then closed");
}

/// `proxy_auth` and the browser check hold over HTTP/2 as over HTTP/1.1.
#[tokio::test]
async fn proxy_auth_and_the_browser_check_apply_to_http2_requests() {
    let (_dir, _up, seen, proxy) = recorded_setup("proxy_auth = \"s3cret\"\n").await;
    let main = proxy.main_addr().tcp().unwrap();
    let mut h2 = h2c(main).await;
    let (parts, _) = send_h2(&mut h2, "http://api.rec.test/no-auth", &[]).await;
    assert_eq!(parts.status, 407);
    // Basic x:s3cret
    let auth = [("proxy-authorization", "Basic eDpzM2NyZXQ=")];
    let (parts, body) = send_h2(&mut h2, "http://api.rec.test/with-auth", &auth).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let browser = [auth[0], ("origin", "https://evil.example")];
    let (parts, _) = send_h2(&mut h2, "http://api.rec.test/from-a-page", &browser).await;
    assert_eq!(parts.status, 403);
    assert_eq!(*seen.lock(), vec!["/with-auth".to_owned()]);
}

/// The other flood classes: a header block that never ends (CONTINUATION after CONTINUATION,
/// bounded by `h2_max_header_list_size`) is cut off, and a SETTINGS flood whose ACKs are never
/// read stalls only its own connection (the server stops reading it); others are served.
#[tokio::test]
async fn continuation_and_settings_floods_hurt_only_their_own_connection() {
    let (_dir, _up, seen, proxy) = recorded_setup("").await;
    let main = proxy.main_addr().tcp().unwrap();
    // CONTINUATION: 16 MiB of header block for one request that never ends its headers.
    let mut raw = Raw::connect(main).await;
    let first = h2raw::request(1, "GET", "api.rec.test", "/continued", &[], false);
    // The same frame without END_HEADERS.
    let mut first = first;
    first[4] &= !h2raw::END_HEADERS;
    raw.send(&first).await.unwrap();
    let value = "a".repeat(16_000);
    let fragment = h2raw::block(&[("x-flood", &value)]);
    let continuation = h2raw::frame(0x9, 0, 1, &fragment);
    let flood = tokio::spawn(async move {
        for _ in 0..1024 {
            if raw.send(&continuation).await.is_err() {
                break;
            }
        }
        let mut end = None;
        while let Some(f) = raw.next().await {
            if f.kind == h2raw::GOAWAY || f.kind == h2raw::RST_STREAM {
                end = Some((f.kind, f.code()));
            }
        }
        end
    });
    let end = tokio::time::timeout(Duration::from_secs(30), flood)
        .await
        .expect("the endless header block is cut off within 30 s")
        .unwrap();
    // (With no limit of credproxy's own, the block runs into the h2 crate's HPACK limits and
    // ends as a PROTOCOL_ERROR much later.)
    assert_eq!(
        end,
        Some((h2raw::GOAWAY, h2raw::ENHANCE_YOUR_CALM)),
        "the endless header block is cut off by h2_max_header_list_size"
    );
    // SETTINGS: 200 000 frames, no ACK ever read.
    let mut raw = Raw::connect(main).await;
    let settings = h2raw::frame(h2raw::SETTINGS, 0, 0, &[]).repeat(200_000);
    let settings_flood = tokio::spawn(async move {
        let _ = raw.tcp.writable().await;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut raw.tcp, &settings).await;
        raw
    });
    let mut other = h2c(main).await;
    let (parts, _) = send_h2(&mut other, "http://api.rec.test/despite-floods", &[]).await;
    assert_eq!(parts.status, 200);
    let (parts, _) = super::e2e::send(
        main,
        super::e2e::get("/despite-floods-h1", &[("host", "api.rec.test")]),
    )
    .await;
    assert_eq!(parts.status, 200);
    settings_flood.abort();
    assert!(!seen.lock().iter().any(|p| p == "/continued"));
}

/// h2c inside a plain `CONNECT` tunnel (undici's `CONNECT host:80`) is one more plain listener.
#[tokio::test]
async fn h2c_inside_a_plain_connect_tunnel_is_served() {
    let s = setup().await;
    let (head, tcp) = super::tunnel::connect(s.main(), "api.echo.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .expect("HTTP/2 in the tunnel");
    tokio::spawn(conn);
    let (parts, body) = send_h2(&mut sender, "http://api.echo.test/v1/in-tunnel", &[]).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["path"], "/v1/in-tunnel");
    assert_eq!(
        header_values(&v, "authorization"),
        vec![format!("Bearer {TOKEN}")]
    );
    // The tunnel's rule holds over HTTP/2 too: another host is misdirected.
    let (parts, _) = send_h2(&mut sender, "http://other.wild.test/v1/x", &[]).await;
    assert_eq!(parts.status, 421);
}

/// Named callers and `credproxy-request-id` (issue 19) over HTTP/2 as over HTTP/1.1: a caller
/// admitted for its provider, refused (403 `caller_denied`) for another's, a missing proof 407;
/// every answer carries an id, the client's own when it sent one.
#[tokio::test]
async fn callers_and_request_ids_apply_to_http2_requests() {
    let callers = "[callers.ci]\nsecret = \"ci-key\"\nproviders = [\"rec\"]\n\n\
                   [callers.other]\nsecret = \"other-key\"\nproviders = []\n";
    let (_dir, _up, seen, proxy) = recorded_setup(&format!("\n{callers}")).await;
    let main = proxy.main_addr().tcp().unwrap();
    let mut h2 = h2c(main).await;
    let (parts, _) = send_h2(&mut h2, "http://api.rec.test/none", &[]).await;
    assert_eq!(parts.status, 407);
    assert!(parts.headers.contains_key("credproxy-request-id"));
    let ci = [
        ("proxy-authorization", "Bearer ci-key"),
        ("x-request-id", "h2-id-1"),
    ];
    let (parts, body) = send_h2(&mut h2, "http://api.rec.test/ci", &ci).await;
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(parts.headers["credproxy-request-id"], "h2-id-1");
    let other = [("proxy-authorization", "Bearer other-key")];
    let (parts, body) = send_h2(&mut h2, "http://api.rec.test/other", &other).await;
    assert_eq!(parts.status, 403);
    assert!(String::from_utf8_lossy(&body).contains("caller_denied"));
    assert_eq!(*seen.lock(), vec!["/ci".to_owned()]);
}

/// A stream refused before the request core saw it (here a `CONNECT`, which credproxy does not
/// take over HTTP/2) is an audit record too, as an HTTP/1.1 refusal is.
#[tokio::test]
async fn an_http2_refusal_is_an_audit_record() {
    let logs = tempfile::tempdir().unwrap();
    let path = logs.path().join("audit.jsonl");
    let (_dir, _up, seen, proxy) =
        recorded_setup(&format!("audit_log = \"{}\"\n", path.display())).await;
    let main = proxy.main_addr().tcp().unwrap();
    let mut c = h2c(main).await;
    let connect = Request::builder()
        .method("CONNECT")
        .uri("api.rec.test:443")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let parts = c
        .send_request(connect)
        .await
        .expect("an answer")
        .into_parts()
        .0;
    assert_eq!(parts.status, 400);
    assert!(seen.lock().is_empty());
    proxy.audit().expect("audit on").flush().await;
    let text = std::fs::read_to_string(&path).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("event").is_none())
        .collect();
    assert_eq!(records.len(), 1, "{text}");
    let r = &records[0];
    assert_eq!(r["method"], "CONNECT", "{r}");
    assert_eq!(r["status"], 400, "{r}");
    assert_eq!(r["code"], "bad_request", "{r}");
    assert_eq!(r["host"], "-", "{r}");
    assert_eq!(
        Some(r["request_id"].as_str().unwrap()),
        parts
            .headers
            .get("credproxy-request-id")
            .and_then(|v| v.to_str().ok())
    );
}

/// One HTTP/2 connection's streams to an HTTP/1.1 upstream share at most
/// `h2_upstream_connections` (8) upstream connections: 50 concurrent streams all get their
/// answer, and the upstream accepts no more than 8 connections. The upstream holds every
/// answer until 8 requests are in flight at once, so the streams really are concurrent (without
/// the cap, each would open a connection of its own).
#[tokio::test]
async fn concurrent_http2_streams_share_a_capped_set_of_upstream_connections() {
    const CAP: usize = 8;
    const STREAMS: usize = 50;
    let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let open = Arc::new(tokio::sync::Semaphore::new(0));
    let upstream = {
        let (in_flight, open) = (in_flight.clone(), open.clone());
        TestServer::start(
            None,
            support::server::handler(move |_req: Request<Incoming>| {
                let (in_flight, open) = (in_flight.clone(), open.clone());
                async move {
                    let n = in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                    if n == CAP {
                        // The latch opens for good.
                        open.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
                    }
                    drop(open.acquire().await.unwrap());
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            }),
        )
        .await
    };
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let text = format!(
        r#"
{proxy}
[providers.rec]
preset = "static"
hosts = ["api.rec.test"]
upstream = "http://127.0.0.1:{port}"
token = "{TOKEN}"
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
        port = upstream.port(),
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    let sender = h2c(proxy.main_addr().tcp().unwrap()).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..STREAMS {
        let mut sender = sender.clone();
        calls.spawn(async move {
            send_h2(&mut sender, &format!("http://api.rec.test/s{i}"), &[])
                .await
                .0
                .status
        });
    }
    let statuses = tokio::time::timeout(Duration::from_secs(30), calls.join_all())
        .await
        .expect("every stream answered within 30 s");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses.len(), STREAMS);
    let accepted = upstream.connections();
    assert!(
        (1..=CAP).contains(&accepted),
        "{accepted} upstream connections for one HTTP/2 connection's {STREAMS} streams"
    );
}

/// A stream the client resets before its answer gives its place under the cap back: with
/// `h2_upstream_connections = 1`, the next stream on the connection is answered (on a new
/// upstream connection, since the reset one was mid-request).
#[tokio::test]
async fn a_stream_reset_before_its_answer_gives_its_upstream_connection_back() {
    let seen = Arc::new(tokio::sync::Notify::new());
    let upstream = {
        let seen = seen.clone();
        TestServer::start(
            None,
            support::server::handler(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    if req.uri().path() == "/hold" {
                        seen.notify_one();
                        std::future::pending::<()>().await;
                    }
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }
            }),
        )
        .await
    };
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let text = format!(
        r#"
{proxy}h2_upstream_connections = 1

[providers.rec]
preset = "static"
hosts = ["api.rec.test"]
upstream = "http://127.0.0.1:{port}"
token = "{TOKEN}"
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
        port = upstream.port(),
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    let mut sender = h2c(proxy.main_addr().tcp().unwrap()).await;
    let held = sender.send_request(
        Request::builder()
            .uri("http://api.rec.test/hold")
            .body(Full::new(Bytes::new()))
            .unwrap(),
    );
    let held = tokio::spawn(held);
    tokio::time::timeout(Duration::from_secs(10), seen.notified())
        .await
        .expect("the held request reached the upstream");
    // Dropping the response future resets the stream (RST_STREAM CANCEL).
    held.abort();
    let (parts, body) = tokio::time::timeout(
        Duration::from_secs(10),
        send_h2(&mut sender, "http://api.rec.test/next", &[]),
    )
    .await
    .expect("the next stream is answered: the reset one gave its place back");
    assert_eq!(parts.status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(upstream.connections(), 2);
}
