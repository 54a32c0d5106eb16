//! Issue 14, items 10–12: what a request may reach and what it may carry. Look-alike field
//! names (`Transfer_Encoding`, `X_Provider` for a credential's `x-provider`) never go upstream,
//! on either transport, and two `Host` fields are refused; pass-through and `CONNECT` never
//! reach a private address unless `pass_private` lists it; the upload is the client's time,
//! not `response_timeout`'s.

use crate::support::wire::*;

/// The look-alikes a client sends, and a field with `_` that is nobody's (it goes on).
const LOOK_ALIKES: &[&str] = &[
    "Transfer_Encoding: chunked",
    "Content_Length: 99",
    "X_Provider: from-client",
    "Proxy_Authorization: Basic c2VjcmV0",
    "Keep_Alive: timeout=1",
];

fn dropped_fields(s: &Setup) -> u64 {
    let text = s.proxy.running.shared().metrics.encode([]);
    text.lines()
        .find_map(|l| l.strip_prefix("credproxy_dropped_header_fields_total "))
        .unwrap_or_else(|| panic!("no dropped-fields counter in\n{text}"))
        .parse()
        .unwrap()
}

fn assert_no_look_alikes(m: &Message, what: &str) {
    for f in LOOK_ALIKES {
        let name = f.split(':').next().unwrap();
        assert!(!m.head.has(name), "{what}: {name} went upstream: {m:?}");
    }
    assert_eq!(m.head.get("x_custom"), Some("kept"), "{what}: {m:?}");
    assert_eq!(m.head.all("x-provider"), ["from-config"], "{what}: {m:?}");
}

#[tokio::test]
async fn look_alike_fields_are_dropped_and_counted_on_the_fast_path() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    let mut fields = LOOK_ALIKES.to_vec();
    fields.push("X_Custom: kept");
    let r = c
        .roundtrip(request("POST", "/fast", &fields, b"hello"))
        .await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "POST /fast 5");
    assert_no_look_alikes(&s.up.last(), "fast path");
    assert_eq!(dropped_fields(&s), LOOK_ALIKES.len() as u64);
}

#[tokio::test]
async fn look_alike_fields_are_dropped_and_counted_on_hyper() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    // A chunked body is hyper's turn.
    let mut fields = LOOK_ALIKES.to_vec();
    fields.extend(["X_Custom: kept", "Transfer-Encoding: chunked"]);
    let mut req = request("POST", "/hyper", &fields, b"");
    req.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
    let r = c.roundtrip(req).await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "POST /hyper 5");
    assert_no_look_alikes(&s.up.last(), "hyper");
    assert_eq!(dropped_fields(&s), LOOK_ALIKES.len() as u64);
}

#[tokio::test]
async fn two_host_fields_are_refused_on_both_transports() {
    let s = Setup::echoing().await;
    let two = [format!("Host: {HOST}"), "Host: other.example".to_owned()];
    // No body (the fast path's kind of request), then a chunked one (hyper's).
    let plain = format!("GET /two HTTP/1.1\r\n{}\r\n{}\r\n\r\n", two[0], two[1]);
    let chunked = format!(
        "POST /two HTTP/1.1\r\n{}\r\n{}\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        two[0], two[1]
    );
    for (what, req) in [("no body", plain), ("chunked", chunked)] {
        let mut c = s.client().await;
        let r = c.roundtrip(req).await;
        assert_json_error(&r, 400);
        assert_eq!(r.json()["error"], "bad_request", "{what}");
        assert!(
            r.text().contains("more than one Host"),
            "{what}: {}",
            r.text()
        );
    }
    assert!(s.up.seen().is_empty(), "forwarded: {:?}", s.up.targets());
}

// ---------------------------------------------------------------------------------------------
// Item 10: pass-through and CONNECT to private addresses.

mod private {
    use std::time::Duration;

    use crate::support::security::{Setup, get, send};
    use crate::support::{self, TestServer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A plain-HTTP server on loopback that no provider claims.
    async fn intranet() -> TestServer {
        TestServer::start(
            None,
            support::server::handler(|_req| async {
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"intranet",
                )))
            }),
        )
        .await
    }

    /// `CONNECT target` on a fresh connection: the response head credproxy answers.
    async fn connect(s: &Setup, target: &str) -> String {
        let mut tcp = TcpStream::connect(s.main()).await.unwrap();
        tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nhost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("an answer to CONNECT")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn pass_through_and_connect_to_loopback_are_refused() {
        let s = Setup::start("unknown_hosts = \"pass\"", "").await;
        let plain = intranet().await;
        let port = plain.port();
        // An address, a name that resolves to loopback, and an IPv4-mapped IPv6 form.
        for host in [
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::ffff:127.0.0.1]:{port}"),
        ] {
            let r = send(
                s.main(),
                get(&format!("http://{host}/page"), &[("host", &host)]),
            )
            .await;
            assert_eq!(r.status, 403, "{host}: {}", r.text());
            assert_eq!(r.json()["error"], "destination_not_allowed", "{host}");
            assert!(
                r.json()["message"]
                    .as_str()
                    .unwrap()
                    .contains("pass_private")
            );
            let ps = r.headers["proxy-status"].to_str().unwrap();
            assert!(ps.contains("error=destination_ip_prohibited"), "{ps}");
            let text = connect(&s, &host).await;
            assert!(text.starts_with("HTTP/1.1 403"), "CONNECT {host}: {text}");
            assert!(text.contains("destination_not_allowed"), "{text}");
        }
        // The cloud metadata address, by CONNECT (refused before any connection is tried).
        let text = connect(&s, "169.254.169.254:80").await;
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert_eq!(plain.connections(), 0, "a refused destination was reached");
    }

    #[tokio::test]
    async fn pass_private_lets_pass_through_and_connect_reach_a_listed_range() {
        let s = Setup::start(
            "unknown_hosts = \"pass\"\npass_private = [\"10.1.0.0/16\", \"127.0.0.0/8\"]",
            "",
        )
        .await;
        let plain = intranet().await;
        let port = plain.port();
        // `localhost` may resolve to ::1 first: the listed 127.0.0.1 is the one connected to.
        for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
            let r = send(
                s.main(),
                get(&format!("http://{host}/page"), &[("host", &host)]),
            )
            .await;
            assert_eq!(r.status, 200, "{host}: {}", r.text());
            assert_eq!(r.text(), "intranet");
            let text = connect(&s, &host).await;
            assert!(text.starts_with("HTTP/1.1 200"), "CONNECT {host}: {text}");
        }
        // Other special ranges stay refused.
        let text = connect(&s, "169.254.169.254:80").await;
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        let text = connect(&s, &format!("[::1]:{port}")).await;
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    }

    #[tokio::test]
    async fn a_bad_pass_private_range_is_a_config_error_with_key_and_line() {
        for (range, says) in [
            ("10.1.0.0/33", "prefix length"),
            ("10.1.2.0/16", "did you mean \"10.1.0.0/16\""),
            ("intranet", "CIDR"),
        ] {
            let text = format!(
                "[proxy]\nunknown_hosts = \"pass\"\npass_private = [\"127.0.0.0/8\", \"{range}\"]\n"
            );
            let e = credproxy::config::load_str(&text, "t.toml", &|_| None)
                .err()
                .unwrap_or_else(|| panic!("{range} accepted"))
                .to_string();
            assert!(e.contains("t.toml:3:"), "{e}");
            assert!(e.contains("proxy.pass_private[1]"), "{e}");
            assert!(e.contains(says), "{range}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Item 12: the upload is the client's time, the answer the upstream's.

mod upload {
    use std::time::Duration;

    use crate::support::wire::*;

    /// An upstream that reads each request whole and never answers.
    async fn silent() -> Upstream {
        Upstream::start(|mut conn| async move {
            if conn.next().await.is_some() {
                std::future::pending::<()>().await;
            }
        })
        .await
    }

    fn chunked_head(target: &str) -> Vec<u8> {
        request("POST", target, &["Transfer-Encoding: chunked"], b"")
    }

    #[tokio::test]
    async fn a_slow_but_steady_upload_longer_than_response_timeout_goes_through() {
        let up = Upstream::answering(echo).await;
        let s = Setup::start_with(
            up,
            "response_timeout = \"200ms\"\nclient_body_timeout = \"5s\"",
        )
        .await;
        let mut c = s.client().await;
        c.send(chunked_head("/upload")).await;
        // Five pauses of 150 ms: the upload takes over 700 ms, three times response_timeout,
        // and every pause is the client's.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            c.send(b"5\r\nhello\r\n").await;
        }
        c.send(b"0\r\n\r\n").await;
        let r = c.response(false).await.unwrap();
        assert_status(&r, 200);
        assert_eq!(r.text(), "POST /upload 25");
    }

    fn assert_client_timeout(r: &Message, what: &str) {
        assert_json_error(r, 408);
        assert_eq!(r.json()["error"], "client_timeout", "{what}");
        let ps = r.head.get("proxy-status").unwrap_or_default();
        assert!(
            ps.contains("error=http_request_error") && ps.contains("client_body_timeout"),
            "{what}: {ps}"
        );
    }

    #[tokio::test]
    async fn a_stalled_body_gets_408_on_both_transports_never_504() {
        let up = silent().await;
        let s = Setup::start_with(
            up,
            "response_timeout = \"30s\"\nclient_body_timeout = \"300ms\"\nheader_timeout = \"30s\"",
        )
        .await;
        // hyper: a chunked body that stops after its first chunk.
        let mut c = s.client().await;
        c.send(chunked_head("/stall-chunked")).await;
        c.send(b"5\r\nhello\r\n").await;
        let r = c.response(false).await.expect("an answer, not a close");
        assert_client_timeout(&r, "chunked");
        c.assert_closed("after 408").await;
        // The fast path: half of a Content-Length body.
        let mut c = s.client().await;
        let mut req = request("POST", "/stall-length", &[], b"0123456789");
        req.truncate(req.len() - 5);
        c.send(req).await;
        let r = c.response(false).await.expect("an answer, not a close");
        assert_client_timeout(&r, "content-length");
        c.assert_closed("after 408").await;
        // hyper: a body over 64 KiB (not the fast path's), streamed, stopping 1 KiB short.
        let mut c = s.client().await;
        let body = vec![b'x'; 70 * 1024];
        let mut req = request("POST", "/stall-big", &[], &body);
        req.truncate(req.len() - 1024);
        c.send(req).await;
        let r = c.response(false).await.expect("an answer, not a close");
        assert_client_timeout(&r, "large body");
    }

    #[tokio::test]
    async fn a_stalled_body_kept_for_a_replay_gets_408() {
        // A refreshable provider's small body is read whole on hyper's path (to replay it after
        // a 401). More fields than the fast path takes make it hyper's turn (not `Expect`: that
        // body is gated, never kept).
        let (s, _fake) = Setup::oauth2(
            silent().await,
            "response_timeout = \"30s\"\nclient_body_timeout = \"300ms\"",
        )
        .await;
        let mut c = s.client().await;
        let pad: Vec<String> = (0..70).map(|i| format!("X-Pad-{i}: 1")).collect();
        let pad: Vec<&str> = pad.iter().map(String::as_str).collect();
        let mut req = request("POST", "/stall-kept", &pad, b"0123456789");
        req.truncate(req.len() - 5);
        c.send(req).await;
        let r = c.response(false).await.expect("an answer, not a close");
        assert_client_timeout(&r, "kept body");
        assert!(s.up.seen().is_empty(), "a partial body went upstream");
    }

    #[tokio::test]
    async fn a_slow_upstream_after_the_body_still_gets_504() {
        let s = Setup::start_with(silent().await, "response_timeout = \"300ms\"").await;
        let mut c = s.client().await;
        let mut req = chunked_head("/slow-chunked");
        req.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        let r = c.roundtrip(req).await;
        assert_json_error(&r, 504);
        assert_eq!(r.json()["error"], "upstream_timeout");
        let mut c = s.client().await;
        let r = c
            .roundtrip(request("POST", "/slow-length", &[], b"hello"))
            .await;
        assert_json_error(&r, 504);
        assert_eq!(r.json()["error"], "upstream_timeout");
    }

    #[tokio::test]
    async fn a_providers_response_timeout_overrides_the_proxys() {
        let s = Setup::start_at(
            silent().await,
            "",
            "response_timeout = \"30s\"",
            "response_timeout = \"200ms\"",
        )
        .await;
        let mut chunked = chunked_head("/own-chunked");
        chunked.extend_from_slice(b"5\r\nhello\r\n0\r\n\r\n");
        for (what, req) in [("fast path", get("/own-get")), ("hyper", chunked)] {
            let mut c = s.client().await;
            let r = c.roundtrip(req).await;
            assert_json_error(&r, 504);
            let message = r.json()["message"].as_str().unwrap().to_owned();
            assert!(message.contains("200ms"), "{what}: {message}");
        }
        // Validated like any duration, under the provider's key.
        let text = "[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\ntoken = \"t\"\nresponse_timeout = \"soon\"\n";
        let e = credproxy::config::load_str(text, "t.toml", &|_| None)
            .expect_err("a bad duration is refused")
            .to_string();
        assert!(
            e.contains("t.toml:5:") && e.contains("providers.x.response_timeout"),
            "{e}"
        );
    }
}
