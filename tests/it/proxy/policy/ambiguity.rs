//! What the rules review found (`;` path parameters, double encoding, bytes that are not UTF-8,
//! fields that override the method or the path): each refused with `400 ambiguous_path` on a
//! provider with rules, on the byte path, on hyper and over HTTP/2, and nothing of it forwarded.

use super::*;

/// The two transports: the byte path (a plain GET), and hyper (the same GET with an allowed
/// `Origin`, which the byte path declines).
const TRANSPORTS: [&str; 2] = ["", "\r\norigin: https://app.example"];

#[tokio::test]
async fn path_parameters_double_encoding_and_bytes_that_are_not_utf8_are_400_on_both_transports() {
    let r = Rig::start().await;
    let main = r.main();
    // Each would pass the rules as `/repos/acme/**` (and not `deny` `/repos/acme/secret/**`),
    // and each is another path to some upstream: a servlet container strips `;params` and then
    // normalizes (`/repos/acme/..;/..;/admin/users` is `/admin/users`), a server decoding twice
    // reads `%252e` as `.`, a lax UTF-8 decoder reads `%c0%ae` as `.`.
    let paths = [
        "/repos/acme/..;/..;/admin/users",
        "/repos/acme/secret;x/key",
        "/repos/acme/secret;/key",
        "/repos/acme/x;jsessionid=1",
        "/repos/acme/secret%3bx/key",
        "/repos/acme/%2e%2e%3B/%2e%2e%3B/admin",
        "/repos/acme/%252e%252e/%252e%252e/admin",
        "/repos/acme/secret%2525/key",
        "/repos/acme/%c0%ae%c0%ae/%c0%ae%c0%ae/admin",
        "/repos/acme/%ff",
    ];
    for extra in TRANSPORTS {
        for path in paths {
            let line = format!("GET http://api.gh.test{path} HTTP/1.1{extra}");
            let (status, body) = raw(main, &line, "api.gh.test").await;
            assert_eq!(status, 400, "{line}: {body}");
            let (code, message) = refusal(&body);
            assert_eq!(code, "ambiguous_path", "{line}");
            assert!(message.contains("provider gh has rules"), "{message}");
        }
    }
    assert_eq!(r.received(), 0, "{:?}", r.seen.lock());
    // A provider without rules forwards them as they are; a plain path with a `.` or UTF-8 in
    // it is judged as before.
    let (status, _) = raw(
        main,
        "GET http://api.open.test/a;b/%252e HTTP/1.1",
        "api.open.test",
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = raw(
        main,
        "GET http://api.gh.test/repos/acme/caf%C3%A9/a.json HTTP/1.1",
        "api.gh.test",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        *r.seen.lock(),
        vec![
            "GET /a;b/%252e".to_owned(),
            "GET /base/repos/acme/caf%C3%A9/a.json".to_owned()
        ]
    );
}

#[tokio::test]
async fn a_field_that_overrides_the_method_or_path_is_400_on_both_transports() {
    let r = Rig::start().await;
    let main = r.main();
    // An allowed GET that a framework would serve as a DELETE, or as another path.
    let fields = [
        "X-HTTP-Method-Override: DELETE",
        "x-http-method: DELETE",
        "X-Method-Override: PUT",
        "X-Original-URL: /repos/acme/secret/key",
        "x-rewrite-url: /admin/users",
    ];
    for extra in TRANSPORTS {
        for field in fields {
            let line = format!("GET http://api.gh.test/repos/acme/x HTTP/1.1\r\n{field}{extra}");
            let (status, body) = raw(main, &line, "api.gh.test").await;
            assert_eq!(status, 400, "{line}: {body}");
            let (code, message) = refusal(&body);
            assert_eq!(code, "ambiguous_path", "{line}");
            let name = field.split(':').next().unwrap().to_ascii_lowercase();
            assert!(message.contains(&format!("carries {name}")), "{message}");
            assert!(message.contains("send the request without it"), "{message}");
        }
    }
    assert_eq!(r.received(), 0, "{:?}", r.seen.lock());
    // Without rules, a field like any other.
    let (status, _) = raw(
        main,
        "GET http://api.open.test/x HTTP/1.1\r\nx-http-method-override: DELETE",
        "api.open.test",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(r.received(), 1);
}

#[tokio::test]
async fn over_http2_the_same_path_and_override_refusals_hold() {
    let r = Rig::start().await;
    let tcp = TcpStream::connect(r.main()).await.unwrap();
    let (mut h2, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .expect("h2c with prior knowledge");
    tokio::spawn(conn);
    for (path, field, want) in [
        ("/repos/acme/x", None, 200),
        (
            "/repos/acme/x",
            Some(("x-http-method-override", "DELETE")),
            400,
        ),
        ("/repos/acme/x", Some(("x-original-url", "/admin")), 400),
        ("/repos/acme/..;/..;/admin/users", None, 400),
        ("/repos/acme/secret%3Bx/key", None, 400),
        ("/repos/acme/%252e%252e/x", None, 400),
        ("/repos/acme/%c0%ae/x", None, 400),
    ] {
        let mut req = Request::get(format!("http://api.gh.test{path}"));
        if let Some((n, v)) = field {
            req = req.header(n, v);
        }
        let resp = h2
            .send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, want, "{path} {field:?}: {body}");
        if want == 400 {
            assert_eq!(refusal(&body).0, "ambiguous_path", "{path}");
        }
    }
    assert_eq!(*r.seen.lock(), ["GET /base/repos/acme/x"]);
}
