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
