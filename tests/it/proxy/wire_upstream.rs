//! The HTTP/1.1 proxy path on the wire when the upstream misbehaves: it closes (after a
//! response, while idle, mid-body), sends 1xx before the answer, garbage, a malformed chunk, a
//! close-delimited body, stale bytes on an idle connection or a status below 100, says nothing
//! until the response timeout, or drops a POST it read whole (which must not be retried).
//!
//! Whatever the upstream does, the client gets a well-framed answer (the upstream's, a 502 or a
//! 504) or a closed connection, never a hang and never bytes meant for another request; and a
//! broken upstream connection is not used again. Machinery: `support::wire`.

use crate::support;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use support::wire::*;
use tokio::sync::mpsc;

#[tokio::test]
async fn upstream_connection_close_does_not_end_the_client_connection() {
    let up = Upstream::answering(|req| {
        let body = format!("{} {}", req.method(), req.target());
        response("200 OK", &["Connection: close"], body.as_bytes())
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    for path in ["/one", "/two"] {
        let r = c.roundtrip(get(path)).await;
        assert_status(&r, 200);
        assert_eq!(r.text(), format!("GET {path}"));
        assert!(
            !r.closes(),
            "the upstream's Connection: close is hop-by-hop: {r:?}"
        );
    }
    assert_eq!(
        s.up.connections(),
        2,
        "a new upstream connection for the second"
    );
    let conns: Vec<usize> = s.up.seen().iter().map(|x| x.conn).collect();
    assert_eq!(conns, [0, 1]);
}

#[tokio::test]
async fn upstream_closing_an_idle_connection_is_retried_on_a_new_one() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<()>();
    let up = Upstream::start_with(closed_tx, |mut conn, closed_tx| async move {
        if conn.index == 0 {
            // Answer one request with keep-alive framing, then close the idle connection.
            if let Some(req) = conn.next().await {
                conn.write(&echo(&req)).await;
            }
            drop(conn);
            let _ = closed_tx.send(());
        } else {
            conn.serve(&echo).await;
        }
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.get_echoed("/before").await;
    signalled(&mut closed_rx, "the upstream closed its connection").await;
    c.get_echoed("/after").await;
    assert_eq!(s.up.connections(), 2);
}

#[tokio::test]
async fn informational_103_before_200_leaves_the_200_and_a_usable_connection() {
    let up = Upstream::start(|mut conn| async move {
        while conn.echo_until("/hints").await.is_some() {
            // The interim response in its own write, then the final one.
            if !conn
                .write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n")
                .await
            {
                return;
            }
            conn.write(&response("200 OK", &[], b"final body")).await;
        }
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.send(get("/hints")).await;
    let (interim, r) = c.final_response(false).await.expect("framed responses");
    // Forwarding the 103 is allowed (RFC 9110 §15.2), dropping it too; a forwarded one is whole.
    for i in &interim {
        assert_eq!(i.status(), 103, "{i:?}");
        assert_eq!(i.head.all("link"), ["</style.css>; rel=preload; as=style"]);
    }
    assert_status(&r, 200);
    assert_eq!(r.text(), "final body");
    c.get_echoed("/next").await;
}

#[tokio::test]
async fn broken_upstreams_give_502_or_a_closed_connection_never_a_hang() {
    let up = Upstream::start(|mut conn| async move {
        let Some(req) = conn.next().await else { return };
        match req.target() {
            "/garbage" => {
                conn.write(b"NOT HTTP\r\n\r\n").await;
            }
            "/truncated" => {
                // Promise 1000 bytes, send 10, close.
                conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
                    .await;
            }
            _ => {
                conn.write(&echo(&req)).await;
            }
        }
        // Then close (dropping the connection).
    })
    .await;
    let s = Setup::start(up).await;

    let mut c = s.client().await;
    let r = c.roundtrip(get("/garbage")).await;
    assert_json_error(&r, 502);
    // An answer that is not HTTP is `upstream_bad_response` (with `http_protocol_error` in
    // Proxy-Status): the upstream was reached, its answer was bad.
    assert_eq!(r.json()["error"], "upstream_bad_response", "{}", r.text());
    assert!(r.head.has("proxy-status"), "{r:?}");

    let mut c = s.client().await;
    c.send(get("/truncated")).await;
    // The head may arrive (with its length, or re-framed as chunks), but the body can't be
    // completed: credproxy must end the connection rather than leave the client waiting for
    // 990 bytes that will never come. `Wire::fill` fails the test if nothing happens in WAIT.
    match c.response(false).await {
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}"),
        Ok(m) => panic!("a truncated body was passed off as complete: {m:?}"),
    }
}

#[tokio::test]
async fn an_upstream_that_never_answers_gives_504_after_response_timeout() {
    let (got_tx, mut got_rx) = mpsc::unbounded_channel::<()>();
    let up = Upstream::start_with(got_tx, |mut conn, got_tx| async move {
        if conn.next().await.is_some() {
            let _ = got_tx.send(());
            // Hold the connection open and say nothing until credproxy gives up.
            let _ = conn.wire.rest().await;
        }
    })
    .await;
    let s = Setup::start_with(up, "response_timeout = \"1s\"").await;
    let mut c = s.client().await;
    let r = c.roundtrip(get("/silence")).await;
    assert_status(&r, 504);
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert!(
        got_rx.try_recv().is_ok(),
        "the request reached the upstream"
    );
}

#[tokio::test]
async fn post_is_not_retried_after_it_was_written() {
    // Every connection answers, except that a `/drop…` request seen for the first time is read
    // whole and answered by closing the connection.
    let up = Upstream::start(|mut conn| async move {
        while let Some(req) = conn.next().await {
            let target = req.target().to_owned();
            let first_sight = count_of(&conn.seen.lock(), &target) == 1;
            if target.starts_with("/drop") && first_sight {
                return;
            }
            if !conn.write(&echo(&req)).await {
                return;
            }
        }
    })
    .await;
    let s = Setup::start(up).await;

    // The POST goes on a reused connection (the GET's); the upstream had it whole and then
    // closed: it may have acted on it, so it must not be sent again.
    let mut c = s.client().await;
    c.get_echoed("/warm").await;
    let r = c
        .roundtrip(request("POST", "/drop-post", &[], b"a=1"))
        .await;
    assert_json_error(&r, 502);
    assert!(r.json()["error"].is_string(), "{}", r.text());
    assert_eq!(
        conns_of(&s.up, "/drop-post").len(),
        1,
        "the POST reached the upstream exactly once"
    );

    // A GET may be retried on a new connection after the reused one closed without an answer
    // (RFC 9110 §9.2.2: it is idempotent), so either answer is right: the retry's 200 (the
    // upstream saw it at most twice), or a 502.
    let mut c = s.client().await;
    c.get_echoed("/warm-2").await;
    let r = c.roundtrip(get("/drop-get")).await;
    let attempts = conns_of(&s.up, "/drop-get").len();
    match r.status() {
        200 => {
            assert_eq!(r.text(), "GET /drop-get 0");
            assert!(attempts <= 2, "GET sent {attempts} times");
        }
        502 => assert_eq!(attempts, 1),
        _ => panic!("{r:?}"),
    }
}

#[tokio::test]
async fn malformed_chunk_from_upstream_ends_the_response_and_the_connection() {
    // A chunk of 5 followed by 7 bytes; once the test says so, what would end the body.
    let go = Arc::new(tokio::sync::Notify::new());
    let up = Upstream::start_with(Arc::clone(&go), |mut conn, go| async move {
        while conn.echo_until("/bad-chunk").await.is_some() {
            conn.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY")
                .await;
            go.notified().await;
            if !conn.write(b"\r\n0\r\n\r\n").await {
                return;
            }
        }
    })
    .await;
    let s = Setup::start(up).await;

    let mut c = s.client().await;
    c.send(get("/bad-chunk")).await;
    // What credproxy passes on of the broken body (all of it, part, or none), up to the bad
    // bytes or the close; then the upstream sends the rest.
    let mut closed = read_until_or_closed(&mut c, CLOSE_WAIT, |b| {
        b.windows(7).any(|w| w == b"helloXY")
    })
    .await;
    go.notify_one();
    if !closed {
        closed = read_until_or_closed(&mut c, CLOSE_WAIT, |_| false).await;
    }
    let got = std::mem::take(&mut c.buf);
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(closed, "the connection stayed open: {text:?}");
    // The client can tell the response is broken: it is not a complete 200 (a chunked body
    // without its end, a short length, never a close-delimited body that looks whole).
    if let Ok(m) = parse_response(got).await {
        assert_ne!(
            m.status(),
            200,
            "a broken body was passed off as whole: {text:?}"
        );
    }

    // The broken upstream connection is not used again.
    let mut c = s.client().await;
    c.get_echoed("/next").await;
    let bad = conns_of(&s.up, "/bad-chunk");
    let next = conns_of(&s.up, "/next");
    assert_ne!(bad, next, "/next went on the connection of the broken body");
}

#[tokio::test]
async fn close_delimited_response_keeps_the_client_connection_usable() {
    let body = pattern(100_000);
    let up = Upstream::start_with(body.clone(), |mut conn, body| async move {
        if conn.echo_until("/close").await.is_some() {
            // No length, no chunks: the body ends when the upstream closes.
            let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
            r.extend_from_slice(&body);
            conn.write(&r).await;
        }
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    let r = c.roundtrip(get("/close")).await;
    assert_whole_body(&r, &body, "close-delimited body");
    // The upstream's close ends the upstream connection only: downstream the body is framed
    // (chunks or a length), so the client connection goes on.
    assert!(
        matches!(r.framing, Framing::Chunked | Framing::Length),
        "the client connection ended with the body: {:?}",
        r.head
    );
    assert!(!r.closes(), "{:?}", r.head);
    c.get_echoed("/after").await;
}

#[tokio::test]
async fn stale_bytes_on_an_idle_upstream_connection_are_not_taken_as_the_next_response() {
    // The first connection answers one request; then, idle, it says 408 unasked and closes.
    let idle = Arc::new(tokio::sync::Notify::new());
    let (wrote_tx, mut wrote_rx) = mpsc::unbounded_channel::<()>();
    let shared = (Arc::clone(&idle), wrote_tx);
    let up = Upstream::start_with(shared, |mut conn, (idle, wrote_tx)| async move {
        if conn.index != 0 {
            return conn.serve(&echo).await;
        }
        let Some(req) = conn.next().await else { return };
        conn.write(&echo(&req)).await;
        idle.notified().await;
        conn.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n")
            .await;
        drop(conn);
        let _ = wrote_tx.send(());
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    c.get_echoed("/one").await;
    idle.notify_one();
    signalled(&mut wrote_rx, "the upstream wrote its 408").await;
    c.get_echoed("/two").await;
    assert_eq!(conns_of(&s.up, "/two"), [1], "/two on a new connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_401_body_times_out_with_504() {
    // A 401 whose body stops after 3 of 100 bytes; the connection stays open, silent.
    let up = Upstream::start(|mut conn| async move {
        if conn.echo_until("/silent-401").await.is_some() {
            conn.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 100\r\n\r\n{\"e")
                .await;
            let _ = conn.wire.rest().await;
        }
    })
    .await;
    let response_timeout = Duration::from_secs(1);
    let (s, _fake) = Setup::oauth2(up, "response_timeout = \"1s\"").await;
    let mut c = s.client().await;
    let r = c.roundtrip(get("/warm-up")).await;
    assert_status(&r, 200);
    // A 401 is taken for an expired token (and its body read, for a replay) only once the token
    // is old enough: wait for that age, a fixed threshold, not a race.
    tokio::time::sleep(
        credproxy::credential::MIN_TOKEN_AGE_FOR_401_REFRESH + Duration::from_millis(500),
    )
    .await;

    // A new connection, with a credential valid now.
    let mut c = s.client().await;
    c.send(get("/silent-401")).await;
    let limit = response_timeout + Duration::from_secs(4);
    let head = tokio::time::timeout(limit, c.head())
        .await
        .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
        .expect("a response head")
        .expect("a response head");
    // The 401's body is read (for a replay) within the response deadline, which passes.
    assert_eq!(head.status(), Some(504), "{head:?}");
    let r = c.body(head, Framing::Length).await.expect("the 504's body");
    assert_eq!(r.json()["error"], "upstream_timeout");
    assert_eq!(conns_of(&s.up, "/silent-401").len(), 1);
}

#[tokio::test]
async fn status_below_100_from_upstream_is_a_502() {
    let up = Upstream::answering(|req| match req.target() {
        "/odd" => b"HTTP/1.1 042 Odd\r\nContent-Length: 0\r\n\r\n".to_vec(),
        _ => echo(req),
    })
    .await;
    let s = Setup::start(up).await;
    let mut c = s.client().await;
    let r = c.roundtrip(get("/odd")).await;
    assert_json_error(&r, 502);
}
