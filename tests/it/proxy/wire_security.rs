//! The HTTP/1.1 proxy path on the wire under attack or at its limits: a request smuggled in a
//! body by `Connection: content-length`, oversized request heads (431, even on a warm
//! connection), a refused browser request, a fragment in the request-target, the 401 replay
//! (once, with a fresh token and the same body), and a client hanging up mid-response, which
//! must not leave the rest of its response to be read as someone else's.
//!
//! Each refusal is checked on the upstream's side too: what it never saw. Machinery:
//! `support::wire`.

use crate::support;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use support::wire::*;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_refused_browser_request_leaves_the_connection_usable() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    let from_page = request("GET", "/from-page", &["Origin: https://evil.example"], b"");
    let r = c.roundtrip(from_page).await;
    assert_status(&r, 403);
    assert_eq!(r.json()["error"], "browser_request");
    assert!(!r.closes(), "{r:?}");
    c.get_echoed("/from-tool").await;
    assert_eq!(
        s.up.targets(),
        ["/from-tool"],
        "the refused request never went upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_401_is_replayed_once_with_a_fresh_token_and_the_same_body() {
    // 401 to a POST carrying the first token credproxy used; 200 to anything else.
    let first = OnceLock::<String>::new();
    let up = Upstream::answering(move |req| {
        let bearer = req.bearer();
        let first = first.get_or_init(|| bearer.clone());
        if req.method() == "POST" && bearer == *first {
            response(
                "401 Unauthorized",
                &["WWW-Authenticate: Bearer error=\"invalid_token\""],
                b"expired",
            )
        } else {
            echo(req)
        }
    })
    .await;
    let (s, _fake) = Setup::oauth2(up, "").await;
    let mut c = s.client().await;
    let r = c.roundtrip(get("/warm-up")).await;
    assert_status(&r, 200);
    let token_a = s.up.last().bearer();
    // credproxy takes a 401 for an expired token only once the token is old enough (a young
    // token's 401 means something else): wait for that age, a fixed threshold, not a race.
    tokio::time::sleep(
        credproxy::credential::MIN_TOKEN_AGE_FOR_401_REFRESH + Duration::from_millis(500),
    )
    .await;

    let r = c
        .roundtrip(request(
            "POST",
            "/replay",
            &["Content-Type: application/x-www-form-urlencoded"],
            b"hello=world",
        ))
        .await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "POST /replay 11");
    let posts: Vec<Message> =
        s.up.seen()
            .into_iter()
            .map(|x| x.req)
            .filter(|m| m.method() == "POST")
            .collect();
    assert_eq!(posts.len(), 2, "the POST and its replay: {posts:?}");
    for p in &posts {
        assert_eq!(p.body, b"hello=world", "the body on both attempts");
        assert_eq!(p.target(), "/replay");
    }
    assert_eq!(posts[0].bearer(), token_a);
    assert_ne!(
        posts[1].bearer(),
        token_a,
        "the replay carries a fresh token"
    );
    // The connection is still usable after the replay.
    c.get_echoed("/after").await;
}

#[tokio::test]
async fn connection_naming_content_length_cannot_smuggle_a_request() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    // A body that is itself a complete request. `Connection: content-length` asks the proxy to
    // drop `Content-Length` on the next hop, but it frames this hop's body: forwarding the bytes
    // without it would make the body a second request on the upstream connection.
    let smuggled = format!("GET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let n = smuggled.len();
    let mut wire = format!(
        "POST /a HTTP/1.1\r\nHost: {HOST}\r\nConnection: content-length\r\nContent-Length: {n}\r\n\r\n"
    )
    .into_bytes();
    wire.extend_from_slice(smuggled.as_bytes());
    let r = c.roundtrip(&wire).await;
    assert_status(&r, 200);
    assert_eq!(r.text(), format!("POST /a {n}"));
    // One more request on the same connection: anything smuggled on the upstream connection
    // before it has been read by then (and its answer would be taken for this one's).
    c.get_echoed("/after").await;

    let seen = s.up.seen();
    let targets: Vec<&str> = seen.iter().map(|x| x.req.target()).collect();
    assert_eq!(targets, ["/a", "/after"], "{seen:?}");
    let post = &seen[0].req;
    assert_eq!(post.method(), "POST");
    assert_eq!(post.body, smuggled.as_bytes(), "the POST's body, whole");
    // Framed so the upstream reads exactly that body: by a Content-Length (of those N bytes, or
    // the body above would differ) or re-framed as chunks.
    assert!(
        matches!(post.framing, Framing::Length | Framing::Chunked),
        "{post:?}"
    );
    assert!(!targets.contains(&"/smuggled"));
}

#[tokio::test]
async fn oversized_request_head_gets_431_even_on_a_warm_connection() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    // A 60 KiB body first, so every buffer on this connection has grown.
    let body = pattern(60 * 1024);
    let r = c.roundtrip(request("POST", "/grow", &[], &body)).await;
    assert_eq!(r.text(), format!("POST /grow {}", body.len()));

    // Then a head of ~100 KiB (over the 64 KiB limit) in one write.
    let value = "b".repeat(100 * 1024);
    let big = request("GET", "/big-head", &[&format!("X-Big: {value}")], b"");
    let Wire { stream, buf, .. } = c;
    assert!(buf.is_empty());
    let got = send_while_reading(stream, big).await;
    assert_eq!(
        status_of(&got),
        Some(431),
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(300)])
    );

    // A fresh connection with a 1 MiB field value: 431, or the connection closed; never served.
    let value = "h".repeat(1024 * 1024);
    let huge = request("GET", "/huge-head", &[&format!("X-Huge: {value}")], b"");
    let stream = TcpStream::connect(s.proxy.main()).await.expect("connect");
    let got = send_while_reading(stream, huge).await;
    match status_of(&got) {
        None | Some(431) => {}
        Some(other) => panic!(
            "a 1 MiB head got {other}: {:?}",
            String::from_utf8_lossy(&got[..got.len().min(300)])
        ),
    }

    assert_eq!(
        s.up.targets(),
        ["/grow"],
        "the oversized heads never went upstream"
    );
}

#[tokio::test]
async fn client_hanging_up_mid_response_does_not_poison_the_upstream_pool() {
    // For A: a head promising 1,000,000 bytes and 1,000 of them; 1,000 more once the test says
    // so (A is gone by then). Then this connection either ends (credproxy gave up on it, as it
    // must) or carries another request: an upstream still sending A's body does not read it,
    // it just goes on with A's body, which here happens to look like a response.
    let go = Arc::new(tokio::sync::Notify::new());
    let (dropped_tx, mut dropped_rx) = mpsc::unbounded_channel::<()>();
    let shared = (Arc::clone(&go), dropped_tx);
    let up = Upstream::start_with(shared, |mut conn, (go, dropped_tx)| async move {
        let Some(_) = conn.echo_until("/a").await else {
            return;
        };
        let mut first =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n"
                .to_vec();
        first.extend(vec![b'a'; 1000]);
        conn.write(&first).await;
        go.notified().await;
        conn.write(&[b'a'; 1000]).await;
        if conn.next().await.is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nbytes of A's!!")
                .await;
            let _ = conn.wire.rest().await;
        }
        let _ = dropped_tx.send(());
    })
    .await;
    let s = Setup::start(up).await;

    let mut a = s.client().await;
    a.send(get("/a")).await;
    let head = a.head().await.expect("A's head").expect("A's head");
    assert!(head.start.starts_with("HTTP/1.1 200"), "{head:?}");
    // A hangs up (with a reset, so credproxy's next write to A fails at once), then the
    // upstream sends more of A's body: credproxy finds A gone when it passes that on.
    a.stream.set_zero_linger().unwrap();
    drop(a);
    go.notify_one();

    // B: one new client connection after another (each kept open, so none of their upstream
    // connections is parked), until credproxy let go of A's upstream connection, and once more
    // after that. Each must get its own answer.
    let mut bs = Vec::new();
    loop {
        // Between two B's, a bounded wait for the signal (it usually comes at once).
        let dropped = tokio::time::timeout(Duration::from_millis(100), dropped_rx.recv())
            .await
            .is_ok();
        let mut b = s.client().await;
        let path = format!("/b/{}", bs.len());
        let r = b.roundtrip(get(&path)).await;
        assert_status(&r, 200);
        assert_eq!(
            r.text(),
            format!("GET {path} 0"),
            "B got someone else's bytes"
        );
        bs.push(b);
        if dropped {
            break;
        }
        assert!(
            bs.len() < 50,
            "credproxy never let go of the upstream connection of A's abandoned response"
        );
    }
    let a_conn = conns_of(&s.up, "/a");
    assert_eq!(a_conn.len(), 1);
    for (i, x) in s.up.seen().iter().enumerate().skip(1) {
        assert_ne!(
            x.conn, a_conn[0],
            "request {i} went on A's unfinished connection: {:?}",
            x.req.head.start
        );
    }
    assert_eq!(s.up.connections(), 1 + bs.len(), "one new connection per B");
}

#[tokio::test]
async fn fragment_in_the_request_target_never_reaches_the_upstream() {
    let s = Setup::echoing().await;
    let mut c = s.client().await;
    // A fragment is not part of a request target (RFC 9112 §3.2): drop it, or refuse with 400.
    let r = c.roundtrip(get("/a?x=1#frag")).await;
    let targets = s.up.targets();
    assert!(
        targets.iter().all(|t| !t.contains('#')),
        "the upstream saw a fragment: {targets:?}"
    );
    match r.status() {
        200 => {
            assert_eq!(targets, ["/a?x=1"]);
            assert_eq!(r.text(), "GET /a?x=1 0");
        }
        400 => assert!(targets.is_empty(), "{targets:?}"),
        _ => panic!("{r:?}"),
    }
}
