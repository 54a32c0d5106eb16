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
