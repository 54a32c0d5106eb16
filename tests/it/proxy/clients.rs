//! What real clients and servers meet (issue 15): no `Via` upstream by default (nginx then
//! compresses), redirects to the upstream rewritten to the origin the client used on every
//! listener, and `Expect: 100-continue` decided by the upstream, on both transports.
//!
//! The fast path serves a plain GET; hyper serves a chunked request body (a fallback lasts for
//! the connection, so each transport gets its own connection).

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::TestCa;
use support::proxy::{Harness, poll};
use support::server::free_port;
use support::wire::*;

/// A request that hyper serves (the fast path declines chunked bodies): `target`, a one-byte
/// chunked body (an empty one would go upstream without framing), and `fields`.
fn hyper_get(target: &str, fields: &[&str]) -> Vec<u8> {
    let mut fields: Vec<&str> = fields.to_vec();
    fields.extend(["Transfer-Encoding: chunked", "X-Case: Kept"]);
    let mut req = request("GET", target, &fields, b"");
    req.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
    req
}

/// `up` (as the upstream read it) came through hyper: it lowercases field names, the fast path
/// keeps them as they came.
fn assert_by_hyper(up: &Message) {
    assert!(
        up.head.fields.iter().any(|(n, _)| n == "x-case"),
        "not hyper's path: {:?}",
        up.head
    );
}

// ---------------------------------------------------------------------------------------------
// Item 4: Via.

#[tokio::test]
async fn no_via_goes_upstream_by_default_on_either_transport_and_responses_keep_it() {
    let s = Setup::echoing().await;
    let mut fast = s.client().await;
    let r = fast.roundtrip(get("/fast")).await;
    assert_status(&r, 200);
    assert_eq!(r.head.joined("via"), "1.1 credproxy", "responses keep Via");
    let up = s.up.last();
    assert_eq!(up.target(), "/fast");
    assert!(!up.head.has("via"), "Via went upstream: {:?}", up.head);

    let mut slow = s.client().await;
    let r = slow.roundtrip(hyper_get("/hyper", &[])).await;
    assert_status(&r, 200);
    assert_eq!(r.head.joined("via"), "1.1 credproxy", "responses keep Via");
    let up = s.up.last();
    assert_eq!(up.target(), "/hyper");
    assert_by_hyper(&up);
    assert!(!up.head.has("via"), "Via went upstream: {:?}", up.head);
}

#[tokio::test]
async fn via_true_adds_via_upstream_on_either_transport() {
    let s = Setup::start_with(Upstream::answering(echo).await, "via = true").await;
    let mut fast = s.client().await;
    assert_status(&fast.roundtrip(get("/fast")).await, 200);
    assert_eq!(s.up.last().head.joined("via"), "1.1 credproxy");
    let mut slow = s.client().await;
    assert_status(&slow.roundtrip(hyper_get("/hyper", &[])).await, 200);
    assert_by_hyper(&s.up.last());
    assert_eq!(s.up.last().head.joined("via"), "1.1 credproxy");
}

#[test]
fn via_must_be_a_boolean() {
    let err = credproxy::config::load_str("[proxy]\nvia = \"yes\"\n", "c.toml", &|_| None)
        .expect_err("via = \"yes\" is refused");
    // (Item 8's better words for serde's message are another change's.)
    assert!(err.to_string().contains("c.toml:2"), "{err}");
}

/// nginx, run as this user from a temp prefix on a free loopback port, serving a text file with
/// `gzip on` (and nginx's default `gzip_proxied off`). `None` (printed) where nginx is missing.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start() -> Option<Nginx> {
        let bin = ["nginx", "/usr/sbin/nginx"]
            .into_iter()
            .map(PathBuf::from)
            .find(|b| {
                std::process::Command::new(b)
                    .arg("-v")
                    .output()
                    .is_ok_and(|o| o.status.success())
            });
        let Some(bin) = bin else {
            println!(
                "SKIPPED: nginx is not installed (apt-get install -y nginx-light); .ci/run installs it"
            );
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("www");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(
            root.join("big.txt"),
            "credproxy compresses nicely\n".repeat(400),
        )
        .unwrap();
        let port = free_port();
        let conf = nginx_conf(dir.path(), &root, port);
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = std::process::Command::new(bin)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf_path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nginx");
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = up.clone();
        let probe = tokio::spawn(async move {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        poll("nginx to listen", Duration::from_secs(10), || {
            up.load(std::sync::atomic::Ordering::SeqCst)
        })
        .await;
        probe.abort();
        Some(Nginx {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nginx_conf(prefix: &Path, root: &Path, port: u16) -> String {
    let p = prefix.display();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
error_log {p}/error.log;
pid {p}/nginx.pid;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {p}/body;
    proxy_temp_path {p}/proxy;
    fastcgi_temp_path {p}/fastcgi;
    uwsgi_temp_path {p}/uwsgi;
    scgi_temp_path {p}/scgi;
    default_type text/plain;
    gzip on;
    gzip_types text/plain;
    gzip_min_length 20;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"#,
        root = root.display()
    )
}

/// credproxy (`proxy_keys` in `[proxy]`) with a static provider claiming [`HOST`] in front of
/// nginx; the `Content-Encoding` each transport's answer to `GET /big.txt` came with.
async fn encodings_through_credproxy(nginx: &Nginx, proxy_keys: &str) -> [Option<String>; 2] {
    let ca = TestCa::new();
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "{proxy_keys}\n[providers.nginx]\npreset = \"static\"\ntoken = \"{TOKEN}\"\nhosts = [\"{HOST}\"]\nupstream = \"http://127.0.0.1:{}\"\n",
            nginx.port
        ))
        .await;
    let accept = "Accept-Encoding: gzip";
    let mut out = [None, None];
    for (i, req) in [
        request("GET", "/big.txt", &[accept], b""),
        hyper_get("/big.txt", &[accept]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = Wire::client(proxy.main()).await;
        let r = c.roundtrip(req).await;
        assert_status(&r, 200);
        out[i] = r.head.get("content-encoding").map(str::to_owned);
    }
    out
}

#[tokio::test]
async fn nginx_gzips_through_credproxy_and_would_not_with_via() {
    let Some(nginx) = Nginx::start().await else {
        return;
    };
    let gz = Some("gzip".to_owned());
    assert_eq!(
        encodings_through_credproxy(&nginx, "").await,
        [gz.clone(), gz],
        "fast path, hyper path: nginx compresses when no Via reaches it"
    );
    // The same with `via = true`: nginx's `gzip_proxied off` sends it plain (the test can fail).
    assert_eq!(
        encodings_through_credproxy(&nginx, "via = true").await,
        [None, None],
        "with Via, nginx does not compress"
    );
}

// ---------------------------------------------------------------------------------------------
// Item 3: redirects.

/// An upstream that answers `/go` with a 302 to itself (`Location` absolute), `/made` with a 201
/// whose `Location` and `Content-Location` point at itself, `/rel` with a relative redirect, and
/// `/away` with a redirect to another origin.
async fn redirecting(base: &str) -> Upstream {
    let base = base.to_owned();
    Upstream::start_with(base, |mut conn, base| async move {
        // The upstream's own origin, as it would write it (the Host credproxy sent).
        while let Some(req) = conn.next().await {
            let me = format!("http://{}{base}", req.head.get("host").unwrap_or_default());
            let resp = match req.target().trim_start_matches(base.as_str()) {
                "/go" => response("302 Found", &[&format!("Location: {me}/next?x=1")], b""),
                "/made" => response(
                    "201 Created",
                    &[
                        &format!("location: {me}/things/7"),
                        &format!("Content-Location: {me}/things/7?v=1"),
                    ],
                    b"made",
                ),
                "/rel" => response("302 Found", &["Location: /next"], b""),
                // A multi-byte character across the byte offsets the rewrite compares at (the
                // scheme's length, the origin's): it once sliced a `str` there and panicked.
                "/utf8" => response(
                    "302 Found",
                    &["Location: /ab\u{e9}c/d\u{e9}j\u{e0}-vu"],
                    b"",
                ),
                "/away" => response(
                    "302 Found",
                    &["Location: https://elsewhere.example/next"],
                    b"",
                ),
                _ => response("404 Not Found", &[], b""),
            };
            if !conn.write(&resp).await {
                break;
            }
        }
    })
    .await
}

/// Each request, on each transport (a fresh connection each): the answer's `Location` and
/// `Content-Location`.
async fn locations(s: &Setup, reqs: &[Vec<u8>]) -> Vec<(Option<String>, Option<String>)> {
    let mut out = Vec::new();
    for req in reqs {
        let mut c = s.client().await;
        let r = c.roundtrip(req).await;
        assert!(matches!(r.status(), 201 | 302), "{r:?}");
        out.push((
            r.head.get("location").map(str::to_owned),
            r.head.get("content-location").map(str::to_owned),
        ));
    }
    out
}

#[tokio::test]
async fn redirects_to_the_upstream_come_back_to_the_host_the_client_sent() {
    let s = Setup::start(redirecting("").await).await;
    let next = Some(format!("http://{HOST}/next?x=1"));
    let thing = (
        Some(format!("http://{HOST}/things/7")),
        Some(format!("http://{HOST}/things/7?v=1")),
    );
    let got = locations(
        &s,
        &[
            get("/go"),
            hyper_get("/go", &[]),
            get("/made"),
            hyper_get("/made", &[]),
        ],
    )
    .await;
    assert_eq!(
        got,
        [(next.clone(), None), (next, None), thing.clone(), thing],
        "fast, hyper; 302 then 201"
    );
}

#[tokio::test]
async fn redirects_to_the_upstream_keep_an_absolute_form_clients_origin() {
    // The Host an HTTP_PROXY client sends may differ in case and carry a port; the target's
    // authority is the origin it used.
    let s = Setup::start_at(redirecting("/api/v1").await, "/api/v1", "", "").await;
    let target = "http://Api.Wire.Test/go";
    let fast = format!("GET {target} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let hyper = format!(
        "GET {target} HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
    );
    let got = locations(&s, &[fast.into_bytes(), hyper.into_bytes()]).await;
    let next = Some("http://Api.Wire.Test/next?x=1".to_owned());
    assert_eq!(got, [(next.clone(), None), (next, None)], "fast, hyper");
    assert_eq!(s.up.last().target(), "/api/v1/go");
}

#[tokio::test]
async fn relative_redirects_and_other_origins_are_left_alone() {
    let s = Setup::start(redirecting("").await).await;
    let got = locations(
        &s,
        &[
            get("/rel"),
            hyper_get("/rel", &[]),
            get("/away"),
            hyper_get("/away", &[]),
        ],
    )
    .await;
    let rel = (Some("/next".to_owned()), None);
    let away = (Some("https://elsewhere.example/next".to_owned()), None);
    assert_eq!(got, [rel.clone(), rel, away.clone(), away]);
}

#[tokio::test]
async fn a_location_with_multi_byte_characters_passes_unchanged() {
    let s = Setup::start(redirecting("").await).await;
    let got = locations(&s, &[get("/utf8"), hyper_get("/utf8", &[])]).await;
    let utf8 = Some("/ab\u{e9}c/d\u{e9}j\u{e0}-vu".to_owned());
    // hyper's client reads a non-ASCII field value as opaque bytes: it passes either way.
    assert_eq!(got[0], (utf8, None), "fast path");
    assert_eq!(got.len(), 2, "hyper's path answered too");
}

// ---------------------------------------------------------------------------------------------
// Item 5: Expect: 100-continue.

/// An upload of `len` bytes announced with `Expect: 100-continue` (head only: the body is the
/// test's to send, or not).
fn upload_head(len: usize) -> String {
    format!(
        "POST /upload HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len}\r\nExpect: 100-continue\r\n\r\n"
    )
}

/// What an upstream connection's script saw: the request head, and how many body bytes came
/// after it before credproxy closed the connection.
#[derive(Debug)]
struct Uploaded {
    expect: bool,
    body_bytes: usize,
}

#[tokio::test]
async fn an_upstream_413_to_expect_reaches_the_client_before_any_body_is_sent() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Uploaded>();
    let up = Upstream::start_with(tx, |mut conn, tx| async move {
        let Ok(Some(head)) = conn.wire.head().await else {
            return;
        };
        // Refuse at once, without `100 Continue`, then count whatever still comes.
        conn.write(&response(
            "413 Content Too Large",
            &["Connection: close"],
            b"too big",
        ))
        .await;
        let rest = conn.wire.rest().await;
        let _ = tx.send(Uploaded {
            expect: head.has("expect"),
            body_bytes: rest.len(),
        });
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.send(upload_head(2_750_000)).await;
    // The client waits for `100 Continue` before its body; what comes first is the 413.
    let first = c.response(false).await.expect("a framed response");
    assert_eq!(
        first.status(),
        413,
        "the upstream's answer first: {first:?}"
    );
    assert_eq!(first.text(), "too big");
    let seen = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the upstream connection ends")
        .expect("a report");
    assert!(seen.expect, "Expect reached the upstream: {seen:?}");
    assert_eq!(seen.body_bytes, 0, "no body went upstream: {seen:?}");
}

#[tokio::test]
async fn an_early_413_with_a_large_body_reaches_the_client_whole_and_says_close() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Uploaded>();
    let up = Upstream::start_with(tx, |mut conn, tx| async move {
        let Ok(Some(head)) = conn.wire.head().await else {
            return;
        };
        // A final answer with a body far larger than any socket buffer, without `100`.
        conn.write(&response("413 Content Too Large", &[], &pattern(2_000_000)))
            .await;
        let rest = conn.wire.rest().await;
        let _ = tx.send(Uploaded {
            expect: head.has("expect"),
            body_bytes: rest.len(),
        });
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.send(upload_head(2_750_000)).await;
    let r = c.response(false).await.expect("the whole 413");
    assert_eq!(r.status(), 413, "{:?}", r.head);
    assert_eq!(r.body.len(), 2_000_000, "the 413's body, whole");
    assert!(
        r.body == pattern(2_000_000),
        "the 413's body changed in transit"
    );
    assert!(
        r.closes(),
        "credproxy closes after an early answer and says so: {:?}",
        r.head
    );
    tokio::time::timeout(WAIT, c.assert_closed("after the early answer"))
        .await
        .expect("credproxy closes the connection");
    let seen = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("the upstream connection ends")
        .expect("a report");
    assert!(seen.expect, "{seen:?}");
    assert_eq!(seen.body_bytes, 0, "no body went upstream: {seen:?}");
}

#[tokio::test]
async fn an_early_401_whose_body_comes_after_its_head_arrives_whole() {
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let up = Upstream::start_with(go.clone(), |mut conn, go| async move {
        let Ok(Some(_)) = conn.wire.head().await else {
            return;
        };
        let body = pattern(300);
        let head = format!(
            "HTTP/1.1 401 Unauthorized\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.write(head.as_bytes()).await;
        // The body in a write of its own, once the client has the head.
        go.notified().await;
        conn.write(&body).await;
        let _ = conn.wire.rest().await;
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.send(upload_head(50_000)).await;
    let head = c.head().await.expect("a head").expect("a head");
    assert_eq!(head.status(), Some(401), "{head:?}");
    go.notify_one();
    let r = c.body(head, Framing::Length).await.expect("the 401's body");
    assert!(
        r.body == pattern(300),
        "the 401's body, whole: {} bytes",
        r.body.len()
    );
    assert!(r.closes(), "{:?}", r.head);
}

#[tokio::test]
async fn a_client_leaving_during_an_early_answer_ends_its_upstream_connection() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let up = Upstream::start_with(tx, |mut conn, tx| async move {
        let Ok(Some(_)) = conn.wire.head().await else {
            return;
        };
        // A 413 with a body larger than the socket buffers: credproxy is still writing it
        // downstream when the client leaves (the write may fail once credproxy lets go).
        let _ = conn
            .write(&response("413 Content Too Large", &[], &pattern(8_000_000)))
            .await;
        let rest = conn.wire.rest().await;
        let _ = tx.send(rest.len());
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.send(upload_head(50_000)).await;
    let head = c.head().await.expect("a head").expect("a head");
    assert_eq!(head.status(), Some(413), "{head:?}");
    drop(c);
    // The response body dropped with the client: the unsent request body fails, and hyper's
    // client ends the upstream connection rather than holding it.
    let sent = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("credproxy closes the upstream connection")
        .expect("a report");
    assert_eq!(sent, 0, "no request body went upstream");
}

#[tokio::test]
async fn an_upstream_100_continue_is_relayed_and_the_body_flows() {
    // `UpConn::next` answers `100 Continue` when the request asks for it, then reads the body.
    let up = Upstream::start(|mut conn| async move {
        while let Some(req) = conn.next().await {
            let body = format!("{} {} {}", req.method(), req.target(), req.body.len());
            if !conn.write(&response("200 OK", &[], body.as_bytes())).await {
                break;
            }
        }
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    let body = pattern(300_000);
    c.send(upload_head(body.len())).await;
    let first = c.response(false).await.expect("a framed response");
    assert_eq!(first.status(), 100, "{first:?}");
    c.send(&body).await;
    let (_, r) = c.final_response(false).await.expect("a framed response");
    assert_status(&r, 200);
    assert_eq!(r.text(), "POST /upload 300000");
    assert!(s.up.last().head.has("expect"));
    assert!(s.up.last().body == body, "the body changed in transit");
}

#[tokio::test]
async fn an_upstream_silent_on_expect_gets_the_body_after_credproxy_sends_100_itself() {
    // An HTTP/1.0-style upstream: reads the head, never sends `100`, waits for the body.
    let up = Upstream::start(|mut conn| async move {
        let Ok(Some(head)) = conn.wire.head().await else {
            return;
        };
        let len: usize = head.get("content-length").unwrap().parse().unwrap();
        let Ok(body) = conn.wire.take(len).await else {
            return;
        };
        let text = format!("silent got {} expect={}", body.len(), head.has("expect"));
        conn.write(&response("200 OK", &[], text.as_bytes())).await;
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    let asked = tokio::time::Instant::now();
    c.send(upload_head(5)).await;
    // The `100` can only be credproxy's (the upstream sends none), after its wait.
    let first = c.response(false).await.expect("a framed response");
    assert_eq!(first.status(), 100, "{first:?}");
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "credproxy sent 100 before waiting for the upstream: {waited:?}"
    );
    c.send(b"hello").await;
    let (_, r) = c.final_response(false).await.expect("a framed response");
    assert_status(&r, 200);
    assert_eq!(r.text(), "silent got 5 expect=true");
}

/// curl sends `Expect: 100-continue` for bodies over 1 MiB: against an upstream that refuses at
/// once, it uploads nothing (on the old code it sent the whole 2.75 MB first).
#[tokio::test]
async fn curl_uploading_to_a_refusing_upstream_sends_no_body() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("SKIPPED: curl is not installed (.ci/run installs it)");
        return;
    }
    // Like nginx over `client_max_body_size`: it refuses once it has looked at the request,
    // here when the first body bytes arrive or half a second has passed (well inside the 1 s
    // credproxy waits for it), whichever comes first; so a body released early shows.
    let up = Upstream::start(|mut conn| async move {
        if let Ok(Some(_)) = conn.wire.head().await {
            let _ = tokio::time::timeout(Duration::from_millis(500), conn.wire.fill()).await;
            conn.write(&response(
                "413 Content Too Large",
                &["Connection: close"],
                b"too big",
            ))
            .await;
            let _ = conn.wire.rest().await;
        }
    })
    .await;
    let s = Setup::start(up).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload.bin");
    std::fs::write(&file, pattern(2_750_000)).unwrap();
    let out = tokio::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
        .arg("-x")
        .arg(format!("http://{}", s.proxy.main()))
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://{HOST}/upload"))
        .output()
        .await
        .expect("run curl");
    let got = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = got.split_whitespace();
    assert_eq!(words.next(), Some("413"), "curl said {got:?}");
    let uploaded: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .expect("size_upload");
    assert_eq!(uploaded, 0, "curl uploaded {uploaded} bytes before the 413");
}
