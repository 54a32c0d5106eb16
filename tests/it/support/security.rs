//! What the adversarial tests (`security::*`, issue 8) share: a credproxy in front of a
//! TLS upstream that counts every request it sees, raw-socket helpers, and a poll with a deadline.
//!
//! The upstream counts requests so a test can assert that a refused request was *never
//! forwarded*, not merely answered with an error. Everything binds `127.0.0.1:0`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use credproxy::app::Running;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::{Alpn, TestCa, TestServer};

/// The static provider's token: must reach the upstream, and nothing else.
pub const TOKEN: &str = "sec-static-token-SECRET-0123";
/// The claimed host of the `echo` provider.
pub const HOST: &str = "api.echo.test";

/// A TLS upstream that answers every request with what it saw, and counts them.
pub struct Upstream {
    pub server: TestServer,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    pub async fn start(ca: &TestCa) -> Self {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let server = TestServer::start(
            Some(ca.server_config(&["localhost"], Alpn::Http1Only)),
            crate::support::server::handler(move |req: Request<Incoming>| {
                counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    let path = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    let h = |n: &str| {
                        req.headers()
                            .get_all(n)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?").to_owned())
                            .collect::<Vec<_>>()
                    };
                    let (authorization, cl, te) = (
                        h("authorization"),
                        h("content-length"),
                        h("transfer-encoding"),
                    );
                    let proxy_authorization = h("proxy-authorization");
                    let status = if path.starts_with("/401") { 401 } else { 200 };
                    let body = req.into_body().collect().await.map(|b| b.to_bytes());
                    let v = json!({
                        "path": path,
                        "authorization": authorization,
                        "proxy_authorization": proxy_authorization,
                        "content_length": cl,
                        "transfer_encoding": te,
                        "body": body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).ok(),
                        "body_error": body.is_err(),
                    });
                    Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Full::new(Bytes::from(v.to_string())))
                        .unwrap()
                }
            }),
        )
        .await;
        Upstream { server, hits }
    }

    /// Requests the upstream has seen (each counted as its head arrived).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }
}

/// credproxy with one `static` provider `echo` in front of an [`Upstream`].
pub struct Setup {
    pub ca: TestCa,
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub proxy: Running,
    pub text: String,
}

impl Setup {
    /// `proxy_extra` goes into `[proxy]`, `extra` after the provider (more providers, routes, or
    /// more keys for `[providers.echo]` when it starts with a key).
    pub async fn start(proxy_extra: &str, extra: &str) -> Self {
        match Self::try_start(proxy_extra, extra).await {
            Ok(s) => s,
            Err(e) => panic!("credproxy did not start: {e}"),
        }
    }

    /// Like [`Setup::start`], with the start error (and its causes) as text.
    pub async fn try_start(proxy_extra: &str, extra: &str) -> Result<Self, String> {
        Self::try_start_with(TestCa::new(), proxy_extra, |_| extra.to_owned()).await
    }

    /// With a CA the test's own fakes also use, and `extra` built from the upstream's port.
    pub async fn try_start_with(
        ca: TestCa,
        proxy_extra: &str,
        extra: impl FnOnce(u16) -> String,
    ) -> Result<Self, String> {
        Self::try_start_with_options(ca, proxy_extra, extra, Default::default()).await
    }

    /// Like [`Setup::try_start_with`], started with `options` (a test's clock).
    pub async fn try_start_with_options(
        ca: TestCa,
        proxy_extra: &str,
        extra: impl FnOnce(u16) -> String,
        options: credproxy::app::Options,
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let upstream = Upstream::start(&ca).await;
        let extra = extra(upstream.port());
        let text = config_text(&ca, dir.path(), upstream.port(), proxy_extra, &extra);
        let config = credproxy::config::load_str(&text, "security.toml", &|_| None)
            .unwrap_or_else(|e| panic!("config rejected: {e}\n{text}"));
        let proxy = credproxy::app::start_with(config, options)
            .await
            .map_err(|e| error_chain(&e))?;
        Ok(Setup {
            ca,
            dir,
            upstream,
            proxy,
            text,
        })
    }

    /// `GET /status` on the admin listener: the whole body, and provider `name`'s entry.
    pub async fn status(&self, name: &str) -> (String, Value) {
        let r = send(self.admin(), get("/status", &[("host", "localhost")])).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let entry = v["providers"]
            .as_array()
            .and_then(|a| a.iter().find(|p| p["name"] == name))
            .unwrap_or_else(|| panic!("no provider {name} in /status: {v}"))
            .clone();
        (r.text(), entry)
    }

    /// Write the config to `config.toml` in the setup's directory (for the `credproxy` binary).
    pub fn config_file(&self) -> std::path::PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, &self.text).unwrap();
        path
    }

    pub fn main(&self) -> SocketAddr {
        self.proxy.main_addr().tcp().expect("TCP main listener")
    }

    pub fn route(&self, provider: &str) -> SocketAddr {
        self.proxy
            .route_addr(provider)
            .and_then(|a| a.tcp())
            .expect("TCP route listener")
    }

    pub fn admin(&self) -> SocketAddr {
        self.proxy
            .admin
            .as_ref()
            .and_then(|a| a.tcp())
            .expect("admin")
    }
}

/// The config text [`Setup::start`] runs; `dir` holds the CA file and the state directory.
pub fn config_text(
    ca: &TestCa,
    dir: &std::path::Path,
    port: u16,
    proxy_extra: &str,
    extra: &str,
) -> String {
    let ca_file = ca.write_ca_file(dir);
    // A `listen` in `proxy_extra` replaces the default.
    let listen = if proxy_extra
        .lines()
        .any(|l| l.trim_start().starts_with("listen"))
    {
        ""
    } else {
        "listen = \"127.0.0.1:0\"\n"
    };
    format!(
        r#"[proxy]
{listen}admin_listen = "127.0.0.1:0"
state_dir = "{state}"
ca_file = "{ca}"
response_timeout = "5s"
{proxy_extra}

[providers.echo]
preset = "static"
hosts = ["{HOST}"]
upstream = "https://localhost:{port}"
token = "{TOKEN}"
{extra}
"#,
        state = dir.join("state").display(),
        ca = ca_file.display(),
    )
}

/// `e` and its causes, `: `-separated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

// The same response type and senders as the preset tests use.
pub use crate::support::proxy::{Resp, send, send_on};

/// `GET uri` with `headers`.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut b = Request::builder().uri(uri);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Full::new(Bytes::new())).unwrap()
}

/// What came back on a raw connection: the bytes read, and whether the server closed it.
#[derive(Debug)]
pub struct Raw {
    pub text: String,
    pub closed: bool,
}

impl Raw {
    /// The status codes of the responses in the bytes, in order (each framed by its
    /// `Content-Length`; a response without one ends the list).
    pub fn statuses(&self) -> Vec<u16> {
        let mut out = Vec::new();
        let mut rest = self.text.as_str();
        while let Some(after) = rest.strip_prefix("HTTP/1.1 ") {
            let Some(status) = after.get(..3).and_then(|s| s.parse().ok()) else {
                break;
            };
            out.push(status);
            let Some((head, tail)) = rest.split_once("\r\n\r\n") else {
                break;
            };
            let length = head.lines().find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            });
            match length {
                Some(n) if tail.len() >= n => rest = &tail[n..],
                _ => break,
            }
        }
        out
    }
}

/// Write `bytes` to `addr` and read until the server closes the connection or `deadline` passes.
pub async fn raw(addr: SocketAddr, bytes: &[u8], deadline: Duration) -> Raw {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // The server may refuse and close before everything is written: that is an answer too.
    let _ = tcp.write_all(bytes).await;
    read_until_closed(&mut tcp, deadline).await
}

/// Read from `tcp` until EOF (or a reset) or until `deadline` passes.
pub async fn read_until_closed(tcp: &mut TcpStream, deadline: Duration) -> Raw {
    let end = Instant::now() + deadline;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let closed = loop {
        match tokio::time::timeout_at(end, tcp.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    };
    Raw {
        text: String::from_utf8_lossy(&out).into_owned(),
        closed,
    }
}

/// Wait until `cond` holds, checking every 50 ms; panic naming `what` after `deadline`.
pub async fn poll(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One request over a fresh connection to the unix socket at `path`.
pub async fn send_unix(path: &std::path::Path, req: Request<Full<Bytes>>) -> Resp {
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", path.display()));
    send_on(stream, req).await
}

/// The `credproxy` binary with `args`: (exit code, stdout, stderr).
pub async fn credproxy(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_credproxy"))
        .args(args)
        .env_remove("CREDPROXY_CONFIG")
        .env_remove("CREDPROXY_LOG")
        .kill_on_drop(true)
        .output()
        .await
        .expect("run credproxy");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `curl` can be run (tests that drive it skip, saying so, when it can't).
pub fn curl_installed() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}
