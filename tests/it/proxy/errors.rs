//! credproxy's own answers (issue 15 item 9), on both transports where both can make them: the
//! provider is named whenever the request matched one, an upstream's oversized head is
//! `upstream_bad_response`, TLS failures are said in words, 400 and 431 carry the JSON body.
//!
//! The fast path serves a plain GET; hyper a request with a chunked body (each on its own
//! connection: a fallback lasts for the connection).

use crate::support;

use support::proxy::Harness;
use support::server::{TestServer, handler};
use support::wire::*;
use support::{TestCa, http::bytes_reply};

/// A GET hyper serves (the fast path declines chunked bodies).
fn hyper_get(target: &str) -> Vec<u8> {
    let mut req = request("GET", target, &["Transfer-Encoding: chunked"], b"");
    req.extend_from_slice(b"1\r\na\r\n0\r\n\r\n");
    req
}

/// `target` on each transport, each answer checked to be credproxy's JSON error with `status`:
/// the JSON bodies.
async fn both(main: std::net::SocketAddr, target: &str, status: u16) -> [serde_json::Value; 2] {
    let mut out = [serde_json::Value::Null, serde_json::Value::Null];
    for (i, req) in [get(target), hyper_get(target)].into_iter().enumerate() {
        let mut c = Wire::client(main).await;
        let r = c.roundtrip(req).await;
        assert_json_error(&r, status);
        assert!(
            r.head
                .get("proxy-status")
                .is_some_and(|v| v.starts_with("credproxy")),
            "{r:?}"
        );
        out[i] = r.json();
    }
    out
}

#[tokio::test]
async fn an_upstream_head_over_64_kib_is_502_upstream_bad_response_naming_the_provider() {
    let big = format!("X-Big: {}", "b".repeat(70 * 1024));
    let up = Upstream::answering(move |_| response("200 OK", &[&big], b"never")).await;
    let s = Setup::start(up).await;
    for v in both(s.proxy.main(), "/big", 502).await {
        assert_eq!(v["error"], "upstream_bad_response", "{v}");
        assert_eq!(v["provider"], "wire", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("over 64 KiB"),
            "{v}"
        );
    }
}

#[tokio::test]
async fn a_silent_upstream_is_504_naming_the_provider() {
    // Each connection reads its request and never answers (held until credproxy gives up).
    let up = Upstream::start(|mut conn| async move { while conn.next().await.is_some() {} }).await;
    let s = Setup::start_with(up, "response_timeout = \"1s\"").await;
    for v in both(s.proxy.main(), "/silent", 504).await {
        assert_eq!(v["error"], "upstream_timeout", "{v}");
        assert_eq!(v["provider"], "wire", "{v}");
    }
}

/// credproxy in front of an HTTPS upstream at `localhost` serving `tls`; the JSON bodies of a
/// request on each transport (both 502).
async fn through_tls(
    ca: &TestCa,
    tls: std::sync::Arc<rustls::ServerConfig>,
) -> [serde_json::Value; 2] {
    let upstream = TestServer::start(
        Some(tls),
        handler(|_| async { bytes_reply(200, "text/plain", "unreachable") }),
    )
    .await;
    let harness = Harness::new(ca);
    let proxy = harness
        .start(&format!(
            "[providers.tlsup]\npreset = \"static\"\ntoken = \"{TOKEN}\"\nhosts = [\"{HOST}\"]\nupstream = \"https://localhost:{}\"\n",
            upstream.port()
        ))
        .await;
    both(proxy.main(), "/x", 502).await
}

fn assert_tls_words(v: &serde_json::Value, want: &str) {
    assert_eq!(v["error"], "upstream_tls", "{v}");
    assert_eq!(v["provider"], "tlsup", "{v}");
    let m = v["message"].as_str().unwrap();
    assert!(m.contains(want), "{m}");
    for debug in ["Context", "DnsName", "UnknownIssuer", "{", "Error"] {
        assert!(!m.contains(debug), "Rust Debug text in {m:?}");
    }
}

#[tokio::test]
async fn an_expired_upstream_certificate_says_when_it_expired() {
    let ca = TestCa::new();
    let tls = ca.bad_leaf_config(&["localhost"], Some(((2020, 1, 1), (2020, 11, 1))));
    for v in through_tls(&ca, tls).await {
        assert_tls_words(&v, "the certificate for localhost expired on 2020-11-01");
    }
}

#[tokio::test]
async fn a_certificate_for_another_name_says_which_name() {
    let ca = TestCa::new();
    let tls = ca.bad_leaf_config(&["other.example"], None);
    for v in through_tls(&ca, tls).await {
        assert_tls_words(&v, "the certificate is for other.example, not localhost");
    }
}

#[tokio::test]
async fn a_certificate_from_an_unknown_ca_says_unknown_issuer() {
    let (ours, theirs) = (TestCa::new(), TestCa::named("someone else's CA"));
    let tls = theirs.server_config(&["localhost"], support::Alpn::Http1Only);
    for v in through_tls(&ours, tls).await {
        assert_tls_words(&v, "unknown issuer");
    }
}

/// Send `bytes` on `c`'s connection while reading (credproxy may answer before it read them
/// all), then read to the close: the one response, which must be credproxy's JSON `status`.
async fn refused(c: Wire, bytes: Vec<u8>, status: u16) -> serde_json::Value {
    refused_closing(c, bytes, status).await.0
}

/// [`refused`], and whether the answer said `Connection: close`.
async fn refused_closing(c: Wire, bytes: Vec<u8>, status: u16) -> (serde_json::Value, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Wire { stream, buf, .. } = c;
    assert!(buf.is_empty());
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&bytes).await;
        std::future::pending::<()>().await;
    });
    let read = async {
        let mut got = Vec::new();
        let _ = rd.read_to_end(&mut got).await;
        got
    };
    let got = tokio::time::timeout(WAIT, read)
        .await
        .expect("credproxy closes");
    writer.abort();
    let r = parse_response(got).await.expect("a well-framed response");
    assert_json_error(&r, status);
    assert!(
        r.head
            .get("proxy-status")
            .is_some_and(|v| v.starts_with("credproxy")),
        "{r:?}"
    );
    let close = r
        .head
        .get("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    (r.json(), close)
}

/// A connection hyper serves from now on (a request the fast path declines, answered).
async fn hyper_connection(s: &Setup) -> Wire {
    let mut c = s.client().await;
    let r = c.roundtrip(hyper_get("/first")).await;
    assert_status(&r, 200);
    c
}

#[tokio::test]
async fn a_header_block_over_64_kib_is_431_with_the_json_body_on_either_transport() {
    let s = Setup::echoing().await;
    let big = request(
        "GET",
        "/big",
        &[&format!("X-Big: {}", "b".repeat(100 * 1024))],
        b"",
    );
    // The first request on a connection (the fast path reads it, hyper answers), and one on
    // a connection hyper already serves. hyper closes after it, and the answer says so.
    for c in [s.client().await, hyper_connection(&s).await] {
        let (v, close) = refused_closing(c, big.clone(), 431).await;
        assert!(close, "431 says connection: close: {v}");
        assert_eq!(v["error"], "headers_too_large", "{v}");
        assert!(v["message"].as_str().unwrap().contains("64 KiB"), "{v}");
    }
    assert_eq!(s.up.targets(), ["/first"], "nothing refused went upstream");
}

#[tokio::test]
async fn a_malformed_head_is_400_with_the_json_body_on_either_transport() {
    let s = Setup::echoing().await;
    let bad = format!("GET /bad HTTP/1.1\r\nHost: {HOST}\r\nno colon here\r\n\r\n").into_bytes();
    for c in [s.client().await, hyper_connection(&s).await] {
        let v = refused(c, bad.clone(), 400).await;
        assert_eq!(v["error"], "bad_request", "{v}");
    }
    // And the framing guard's refusal (Content-Length with Transfer-Encoding).
    let smuggle = format!(
        "POST /s HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    .into_bytes();
    let v = refused(s.client().await, smuggle, 400).await;
    assert_eq!(v["error"], "bad_request", "{v}");
    assert_eq!(s.up.targets(), ["/first"], "nothing refused went upstream");
}

/// A reply lost mid-response is logged with the side that ended it and the bytes that went
/// through, on both transports: the upstream closing after 10 of 1000 promised bytes, and a
/// client that leaves after the head of a 32 MB body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_cut_short_says_which_side_closed_and_after_how_many_bytes() {
    use support::alone::own_process;
    // The subscriber is global: this test has a process of its own.
    if !own_process(
        module_path!(),
        "a_response_cut_short_says_which_side_closed_and_after_how_many_bytes",
    ) {
        return;
    }
    let logs = support::logs::capture_trace();
    let up = Upstream::start(|mut conn| async move {
        let Some(req) = conn.next().await else { return };
        if req.target() == "/short" {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                .await;
            return;
        }
        let mut out = b"HTTP/1.1 200 OK\r\nContent-Length: 33554432\r\n\r\n".to_vec();
        out.extend(vec![b'z'; 64 * 1024]);
        if !conn.write(&out).await {
            return;
        }
        let chunk = vec![b'z'; 64 * 1024];
        for _ in 1..512 {
            if !conn.write(&chunk).await {
                return;
            }
        }
    })
    .await;
    let s = Setup::start(up).await;
    let upstream_cut =
        "response cut short: the upstream closed the connection after 10 bytes of the body";
    let client_cut = "response cut short: the client closed the connection after";
    for (i, req) in [get("/short"), hyper_get("/short")].into_iter().enumerate() {
        let mut c = s.client().await;
        c.send(req).await;
        let head = c.head().await.expect("a head").expect("a head");
        assert_eq!(head.status(), Some(200));
        support::proxy::poll("the upstream's cut logged", WAIT, || {
            logs.text().matches(upstream_cut).count() > i
        })
        .await;
    }
    for (i, req) in [get("/long"), hyper_get("/long")].into_iter().enumerate() {
        let mut c = s.client().await;
        c.send(req).await;
        let head = c.head().await.expect("a head").expect("a head");
        assert_eq!(head.status(), Some(200));
        drop(c);
        support::proxy::poll("the client's cut logged", WAIT, || {
            logs.text().matches(client_cut).count() > i
        })
        .await;
    }
    let text = logs.text();
    let line = text.lines().find(|l| l.contains(client_cut)).unwrap();
    assert!(
        line.contains("provider=\"wire\"") || line.contains("provider=wire"),
        "{line}"
    );
}

#[tokio::test]
async fn a_body_shaped_like_a_canned_answer_passes_untouched_on_a_connection_and_in_a_tunnel() {
    // hyper's canned refusals are replaced only between responses: an upstream body that looks
    // like one, arriving on its own after the head, is the upstream's and passes as it is.
    let canned = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_vec();
    let go = std::sync::Arc::new(tokio::sync::Notify::new());
    let up = {
        let (go, canned) = (go.clone(), canned.clone());
        Upstream::start(move |mut conn| {
            let (go, canned) = (go.clone(), canned.clone());
            async move {
                while conn.next().await.is_some() {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                        canned.len()
                    );
                    if !conn.write(head.as_bytes()).await {
                        return;
                    }
                    // The body only once the client holds the head: its own write.
                    go.notified().await;
                    if !conn.write(&canned).await {
                        return;
                    }
                }
            }
        })
        .await
    };
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    // Twice on one connection (hyper's, as the chunked body makes it), so the second response's
    // body comes after a first response and its flush.
    for round in 0..2 {
        c.send(hyper_get("/shaped")).await;
        let head = c.head().await.unwrap().expect("a head");
        assert_eq!(head.status(), Some(200), "round {round}: {head:?}");
        go.notify_one();
        let m = c.body(head, Framing::Length).await.unwrap();
        assert_eq!(m.body, canned, "round {round}");
    }
}

#[tokio::test]
async fn a_host_that_is_not_host_and_port_is_400_and_never_reflected_on_either_transport() {
    // The upstream redirects to itself: credproxy points the Location at the client's Host.
    let up = Upstream::answering(|req| {
        let loc = format!(
            "Location: http://{}/next",
            req.head.get("host").unwrap_or("")
        );
        response("302 Found", &[&loc], b"")
    })
    .await;
    let port = up.port();
    let wild = format!(
        r#"
[providers.wild]
preset = "static"
token = "{TOKEN}"
hosts = ["*.wild.test"]
upstream = "http://127.0.0.1:{port}"
"#
    );
    let s = Setup::start_at(up, "", "", &wild).await;
    let send = |host: &str, hyper: bool| {
        let mut req = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        if hyper {
            req.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n");
        } else {
            req.extend_from_slice(b"\r\n");
        }
        req
    };
    for hyper in [false, true] {
        for bad in [
            "api.wire.test:@evil.example",
            "evil.example?.wild.test",
            "evil.example#.wild.test",
            "evil.example\\.wild.test",
            "api.wire.test:http",
        ] {
            let r = Wire::client(s.proxy.main())
                .await
                .roundtrip(send(bad, hyper))
                .await;
            assert_json_error(&r, 400);
            assert_eq!(r.json()["error"], "bad_request", "{bad}: {r:?}");
            assert!(r.head.get("location").is_none(), "{bad}: {r:?}");
        }
        // An absolute-form authority with userinfo, too.
        let abs =
            b"GET http://api.wire.test:@evil.example/x HTTP/1.1\r\nHost: api.wire.test\r\n\r\n";
        let r = Wire::client(s.proxy.main())
            .await
            .roundtrip(abs.to_vec())
            .await;
        assert_json_error(&r, 400);
        for (good, want) in [
            ("API.WIRE.TEST:8080", "http://API.WIRE.TEST:8080/next"),
            ("a.wild.test", "http://a.wild.test/next"),
        ] {
            let r = Wire::client(s.proxy.main())
                .await
                .roundtrip(send(good, hyper))
                .await;
            assert_status(&r, 302);
            assert_eq!(r.head.get("location"), Some(want), "{good}: {r:?}");
        }
        // An IPv6 literal is a host: unclaimed here, so 403, not 400.
        let r = Wire::client(s.proxy.main())
            .await
            .roundtrip(send("[::1]:8080", hyper))
            .await;
        assert_json_error(&r, 403);
        assert_eq!(r.json()["error"], "unknown_host", "{r:?}");
    }
    assert_eq!(
        s.up.targets(),
        ["/x", "/x", "/x", "/x"],
        "only the good hosts went upstream"
    );
}
