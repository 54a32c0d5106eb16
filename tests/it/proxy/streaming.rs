//! Streaming responses (DESIGN.md "Protocols"): every chunk is forwarded as it arrives, on both
//! HTTP/1.1 transports and inside interception, and a long stream is not cut by
//! `response_timeout` once its head came.
//!
//! The upstream streams Server-Sent Events, each in a write (and chunk) of its own, 300 ms apart;
//! the client notes when each event arrives. Generous bounds (each gap ≥ 200 ms, the first event
//! < 250 ms after the head) tell "forwarded as it came" from "held for a buffer" (gaps of zero)
//! or "held for the next event" (a late first event) without depending on a quiet machine.
//! An upstream speaking HTTP/2 streams the same way (hyper's path on the shared connection).
//! Which transport served a request is checked, not assumed: hyper adds `Date`, which this
//! upstream does not send, and the fast path adds nothing.

use super::e2e::TOKEN;
use crate::support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use credproxy::app::Running;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use support::proxy::proxy_section;
use support::{Alpn, TestCa};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A TLS upstream that streams events: `/sse?n=N&gap=MS` gets its head, then N events MS
/// apart, each flushed on its own, chunked (or, with `&close=1`, delimited by the connection's
/// end). It reads the request's `Content-Length` body first, and records each request head.
struct SseUpstream {
    port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl SseUpstream {
    async fn start(ca: &TestCa) -> SseUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor =
            tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"], Alpn::Http1Only));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = heads.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = stream_events(tls, &seen).await;
                    }
                });
            }
        });
        SseUpstream {
            port,
            heads,
            accept,
        }
    }
}

async fn stream_events<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: S,
    seen: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    seen.lock().push(head.clone());
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 65536];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = head.split(' ').nth(1).unwrap_or("/");
    let param = |name: &str| {
        target
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (n, gap) = (param("n").unwrap_or(3), param("gap").unwrap_or(300));
    let close = param("close") == Some(1);
    let framing = if close {
        "connection: close\r\n"
    } else {
        "transfer-encoding: chunked\r\n"
    };
    io.write_all(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n{framing}\r\n"
        )
        .as_bytes(),
    )
    .await?;
    io.flush().await?;
    for i in 0..n {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
        let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
        let bytes = if close {
            event
        } else {
            format!("{:x}\r\n{event}\r\n", event.len())
        };
        io.write_all(bytes.as_bytes()).await?;
        io.flush().await?;
    }
    if !close {
        io.write_all(b"0\r\n\r\n").await?;
    }
    io.shutdown().await
}

struct Streaming {
    _ca: TestCa,
    _dir: tempfile::TempDir,
    upstream: SseUpstream,
    proxy: Running,
    ca_pem: PathBuf,
}

/// credproxy with `response_timeout = "1s"` and interception on, in front of the SSE upstream.
async fn streaming() -> Streaming {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let upstream = SseUpstream::start(&ca).await;
    let text = format!(
        r#"{proxy}response_timeout = "1s"
intercept = "claimed"

[providers.llm]
preset = "static"
hosts = ["api.llm.test"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"
"#,
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
        port = upstream.port,
    );
    let config = credproxy::config::load_str(&text, "sse.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    let ca_pem = dir.path().join("state/ca/ca.pem");
    Streaming {
        _ca: ca,
        _dir: dir,
        upstream,
        proxy,
        ca_pem,
    }
}

impl Streaming {
    fn main(&self) -> SocketAddr {
        self.proxy.main_addr().tcp().unwrap()
    }

    /// A TLS connection through an intercepted `CONNECT api.llm.test:443`.
    async fn intercepted(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let (head, tcp) = super::tunnel::connect(self.main(), "api.llm.test:443", "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_file_iter(&self.ca_pem).unwrap() {
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
            .connect(ServerName::try_from("api.llm.test").unwrap(), tcp)
            .await
            .expect("intercepted TLS")
    }
}

/// Which transport to aim at: the fast path serves a bodiless `GET`; a body over 64 KiB is
/// hyper's (the fast path keeps only small bodies).
#[derive(Clone, Copy, Debug)]
enum Via {
    Fast,
    Hyper,
}

fn request(path: &str, via: Via) -> Request<Full<Bytes>> {
    let (method, body) = match via {
        Via::Fast => ("GET", Bytes::new()),
        Via::Hyper => ("POST", Bytes::from(vec![b'{'; 70 * 1024])),
    };
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.llm.test")
        .header("accept", "text/event-stream")
        .body(Full::new(body))
        .unwrap()
}

/// What the client saw: when the head came, when each event came (by its `id:`), the whole
/// stream, and the answer's fields.
struct Seen {
    head_at: Instant,
    events: Vec<Instant>,
    text: String,
    headers: http::HeaderMap,
}

/// Send `req` on `io` and read the event stream to its end, noting arrival times.
async fn read_events<I>(io: I, req: Request<Full<Bytes>>) -> Seen
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("a head within 10 s")
        .unwrap();
    let head_at = Instant::now();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let (mut events, mut text) = (Vec::new(), String::new());
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("the stream goes on within 10 s")
    {
        let frame = frame.expect("the stream is not cut");
        if let Some(data) = frame.data_ref() {
            text.push_str(std::str::from_utf8(data).unwrap());
            // Each event is noted when the frame holding its start arrived.
            while events.len() < text.matches("id: ").count() {
                events.push(Instant::now());
            }
        }
    }
    Seen {
        head_at,
        events,
        text,
        headers,
    }
}

/// Events 300 ms apart arrive 300 ms apart, the first at once.
fn assert_paced(seen: &Seen, n: usize, what: &str) {
    assert_eq!(seen.events.len(), n, "{what}: {}", seen.text);
    for i in 0..n {
        assert!(
            seen.text
                .contains(&format!("id: {i}\ndata: {{\"n\":{i}}}\n\n")),
            "{what}: {}",
            seen.text
        );
    }
    let first = seen.events[0] - seen.head_at;
    assert!(
        first < Duration::from_millis(250),
        "{what}: the first event came {first:?} after the head"
    );
    for pair in seen.events.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(200) && gap < Duration::from_secs(3),
            "{what}: events {gap:?} apart (sent 300 ms apart)"
        );
    }
}

fn assert_transport(seen: &Seen, via: Via) {
    let date = seen.headers.contains_key("date");
    match via {
        Via::Fast => assert!(!date, "served by the fast path (no Date added)"),
        Via::Hyper => assert!(date, "served by hyper (Date added)"),
    }
}

#[tokio::test]
async fn sse_events_are_forwarded_as_they_arrive_on_both_transports() {
    let s = streaming().await;
    for via in [Via::Fast, Via::Hyper] {
        for path in ["/sse?n=4&gap=300", "/sse?n=4&gap=300&close=1"] {
            let tcp = TcpStream::connect(s.main()).await.unwrap();
            let seen = read_events(tcp, request(path, via)).await;
            let what = format!("{via:?} {path}");
            assert_transport(&seen, via);
            assert_paced(&seen, 4, &what);
        }
    }
    let heads = s.upstream.heads.lock().clone();
    assert_eq!(heads.len(), 4);
    for head in heads {
        assert!(
            head.contains(&format!("authorization: bearer {}", TOKEN.to_lowercase())),
            "{head}"
        );
    }
}

#[tokio::test]
async fn sse_events_are_forwarded_as_they_arrive_inside_interception() {
    let s = streaming().await;
    for via in [Via::Fast, Via::Hyper] {
        let tls = s.intercepted().await;
        let seen = read_events(tls, request("/sse?n=4&gap=300", via)).await;
        assert_transport(&seen, via);
        assert_paced(&seen, 4, &format!("intercepted {via:?}"));
    }
}

/// `response_timeout = "1s"` bounds the wait for the head only: a stream of 3 s (events
/// 500 ms apart) goes on to its end, on both transports and inside interception.
#[tokio::test]
async fn a_long_stream_is_not_cut_by_response_timeout_once_its_head_came() {
    let s = streaming().await;
    let path = "/sse?n=7&gap=500";
    for via in [Via::Fast, Via::Hyper] {
        let tcp = TcpStream::connect(s.main()).await.unwrap();
        let seen = read_events(tcp, request(path, via)).await;
        assert_transport(&seen, via);
        assert_eq!(seen.events.len(), 7, "{via:?}: {}", seen.text);
        let lasted = seen.events[6] - seen.head_at;
        assert!(lasted >= Duration::from_secs(2), "{via:?}: {lasted:?}");
        let tls = s.intercepted().await;
        let seen = read_events(tls, request(path, via)).await;
        assert_eq!(seen.events.len(), 7, "intercepted {via:?}: {}", seen.text);
    }
}

/// The same four events from an upstream that speaks HTTP/2 (ALPN `h2`, so hyper's path on the
/// shared HTTP/2 connection), served by hyper with a body that yields one event per frame;
/// `x-upstream-h2` says which version the request came in. Its port; the server stops with the
/// returned task.
async fn h2_sse_upstream(ca: &TestCa) -> (u16, tokio::task::JoinHandle<()>) {
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::server::conn::auto;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let acceptor =
        tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"], Alpn::H2AndHttp1));
    let accept = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            conns.spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| {
                    let h2 = req.version() == http::Version::HTTP_2;
                    async move {
                        let events = futures_util::stream::unfold(0u32, |i| async move {
                            if i == 4 {
                                return None;
                            }
                            if i > 0 {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
                            Some((Frame::data(Bytes::from(event)), i + 1))
                        })
                        .map(Ok::<_, std::convert::Infallible>);
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .header("x-upstream-h2", if h2 { "yes" } else { "no" })
                                .body(StreamBody::new(events))
                                .unwrap(),
                        )
                    }
                });
                let _ = auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (port, accept)
}

#[tokio::test]
async fn sse_events_from_an_http2_upstream_are_forwarded_as_they_arrive() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write_ca_file(dir.path());
    let (port, server) = h2_sse_upstream(&ca).await;
    let text = format!(
        "{proxy}\n[providers.llm]\npreset = \"static\"\nhosts = [\"api.llm.test\"]\nupstream = \"https://localhost:{port}\"\ntoken = \"{TOKEN}\"\n",
        proxy = proxy_section(&dir.path().join("state"), &ca_file),
    );
    let config = credproxy::config::load_str(&text, "sse-h2.toml", &|_| None).unwrap();
    let proxy = credproxy::app::start(config).await.unwrap();
    let main = proxy.main_addr().tcp().unwrap();
    for _ in 0..2 {
        // The first request learns the upstream speaks HTTP/2; the second reuses its connection.
        let tcp = TcpStream::connect(main).await.unwrap();
        let seen = read_events(tcp, request("/sse", Via::Fast)).await;
        assert_eq!(seen.headers["x-upstream-h2"], "yes");
        assert_paced(&seen, 4, "from an HTTP/2 upstream");
    }
    server.abort();
}
