//! A reload's rules reach the next request of every connection: a kept-alive one idle on the
//! byte path, and the requests inside `CONNECT` tunnels already open (plain and intercepted TLS);
//! a tunnel whose host is no longer claimed is closed.

use super::*;

#[tokio::test]
async fn a_reload_that_changes_only_the_rules_keeps_the_provider_and_applies_them_at_once() {
    let r = Rig::start().await;
    let host = r.route().to_string();
    let tcp = TcpStream::connect(r.route()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut status = async |path: &str| {
        let resp = sender
            .send_request(get(path, &[("host", &host)]))
            .await
            .unwrap();
        let status = resp.status().as_u16();
        resp.into_body().collect().await.unwrap();
        status
    };
    assert_eq!(status("/users/octo").await, 200);
    assert_eq!(status("/orgs/acme").await, 403);

    let summary = r
        .proxy
        .reload(r.config(
            r#"deny = [{ paths = ["/users/**"] }]
allow_origins = ["https://app.example"]"#,
        ))
        .await
        .unwrap();
    assert!(summary.kept.contains(&"gh".to_owned()), "{summary:?}");
    assert!(summary.restarted.is_empty(), "{summary:?}");
    // The same keep-alive connection, under the new rules.
    assert_eq!(status("/users/octo").await, 403);
    assert_eq!(status("/orgs/acme").await, 200);
    assert_eq!(
        *r.seen.lock(),
        vec![
            "GET /base/users/octo".to_owned(),
            "GET /base/orgs/acme".to_owned()
        ]
    );
}

/// `GET path` on `sender`'s connection: the status.
async fn status_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: &str,
    path: &str,
) -> u16 {
    let req = Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    resp.into_body().collect().await.unwrap();
    status
}

/// The rules of the reload tests below: `/users/**` denied, no `allow`.
const DENY_USERS: &str = r#"deny = [{ paths = ["/users/**"] }]
allow_origins = ["https://app.example"]"#;

#[tokio::test]
async fn a_reload_reaches_the_next_request_of_a_connection_idle_on_the_byte_path() {
    let r = Rig::start().await;
    let host = r.route().to_string();
    let tcp = TcpStream::connect(r.route()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    // Allowed, so the byte path serves it and keeps the connection, waiting for the next head.
    assert_eq!(status_on(&mut sender, &host, "/users/octo").await, 200);
    r.proxy.reload(r.config(DENY_USERS)).await.unwrap();
    assert_eq!(status_on(&mut sender, &host, "/users/octo").await, 403);
    assert_eq!(r.received(), 1, "{:?}", r.seen.lock());
}

#[tokio::test]
async fn a_reload_reaches_the_next_request_inside_a_connect_tunnel_already_open() {
    let r = Rig::start().await;
    // A plain tunnel (port 80) and an intercepted TLS one, both opened before the reload.
    let (head, plain) = connect(r.main(), "api.gh.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut plain, conn) = hyper::client::conn::http1::handshake(TokioIo::new(plain))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (head, tcp) = connect(r.main(), "api.gh.test:443", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tls_in_tunnel(tcp, &r.ca_pem(), "api.gh.test").await;
    let (mut tls, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for sender in [&mut plain, &mut tls] {
        assert_eq!(status_on(sender, "api.gh.test", "/users/octo").await, 200);
        assert_eq!(status_on(sender, "api.gh.test", "/orgs/acme").await, 403);
    }
    // The new rules: `/users/**` denied, no `allow`; and a provider added before `gh`, so that
    // its index in the router changes too.
    let mut text = config_text(&r.dir, &r.ca_file, r.upstream.port(), DENY_USERS);
    text = text.replacen(
        "[providers.gh]",
        &format!(
            "[providers.first]\npreset = \"static\"\nhosts = [\"api.first.test\"]\n\
             upstream = \"https://localhost:{}\"\ntoken = \"{TOKEN}\"\n\n[providers.gh]",
            r.upstream.port()
        ),
        1,
    );
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    let summary = r.proxy.reload(config).await.unwrap();
    assert!(summary.kept.contains(&"gh".to_owned()), "{summary:?}");
    for sender in [&mut plain, &mut tls] {
        assert_eq!(
            status_on(sender, "api.gh.test", "/users/octo").await,
            403,
            "the same tunnel, under the new rules"
        );
        assert_eq!(status_on(sender, "api.gh.test", "/orgs/acme").await, 200);
    }
    assert_eq!(
        *r.seen.lock(),
        [
            "GET /base/users/octo",
            "GET /base/users/octo",
            "GET /base/orgs/acme",
            "GET /base/orgs/acme"
        ]
    );
}

#[tokio::test]
async fn a_tunnel_whose_host_a_reload_leaves_unclaimed_is_closed() {
    let r = Rig::start().await;
    let (head, plain) = connect(r.main(), "api.gh.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut plain, conn) = hyper::client::conn::http1::handshake(TokioIo::new(plain))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(
        status_on(&mut plain, "api.gh.test", "/users/octo").await,
        200
    );
    let text = config_text(&r.dir, &r.ca_file, r.upstream.port(), RULES)
        .replace("hosts = [\"api.gh.test\"]", "hosts = [\"api.moved.test\"]");
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    r.proxy.reload(config).await.unwrap();
    // The request in hand is answered (under the configuration the tunnel had), and the tunnel
    // is closed after it: the connection's task ends, and nothing more can be sent on it.
    let req = Request::get("/users/octo")
        .header("host", "api.gh.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(resp) = plain.send_request(req).await {
        let _ = resp.into_body().collect().await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), conn)
        .await
        .expect("the tunnel is closed")
        .unwrap()
        .ok();
    assert!(plain.ready().await.is_err(), "the tunnel is closed");
}

#[tokio::test]
async fn a_tunnel_keeps_its_named_caller_across_a_reload_and_closes_when_the_caller_goes() {
    const A: &str = "caller-a-secret-0123456789abcdef";
    const B: &str = "caller-b-secret-0123456789abcdef";
    let r = Rig::start().await;
    let callers = |names: &[&str]| {
        names
            .iter()
            .map(|n| match *n {
                "a" => format!("\n[callers.a]\nsecret = \"{A}\"\nproviders = [\"open\"]\n"),
                _ => format!("\n[callers.b]\nsecret = \"{B}\"\nproviders = [\"gh\"]\n"),
            })
            .collect::<String>()
    };
    let load = |rules: &str, names: &[&str]| {
        let text = config_text(&r.dir, &r.ca_file, r.upstream.port(), rules) + &callers(names);
        credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap()
    };
    r.proxy.reload(load(RULES, &["a", "b"])).await.unwrap();
    let (head, tcp) = connect(
        r.main(),
        "api.gh.test:80",
        &format!("proxy-authorization: Bearer {B}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(
        status_on(&mut sender, "api.gh.test", "/users/octo").await,
        200
    );
    // Caller `a` goes, so `b` is the first caller now: the tunnel is still `b`'s, under the
    // new rules.
    r.proxy.reload(load(DENY_USERS, &["b"])).await.unwrap();
    assert_eq!(
        status_on(&mut sender, "api.gh.test", "/users/octo").await,
        403
    );
    assert_eq!(
        status_on(&mut sender, "api.gh.test", "/orgs/acme").await,
        200
    );
    // `b` goes: the tunnel is closed (after the request in hand).
    r.proxy.reload(load(DENY_USERS, &["a"])).await.unwrap();
    let req = Request::get("/orgs/acme")
        .header("host", "api.gh.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(resp) = sender.send_request(req).await {
        let _ = resp.into_body().collect().await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), conn)
        .await
        .expect("the tunnel is closed")
        .unwrap()
        .ok();
    assert_eq!(
        r.seen.lock()[..2],
        ["GET /base/users/octo", "GET /base/orgs/acme"]
    );
}

#[tokio::test]
async fn a_tunnel_opened_without_a_proof_closes_when_a_reload_asks_for_one() {
    let r = Rig::start().await;
    let (head, tcp) = connect(r.main(), "api.gh.test:80", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(
        status_on(&mut sender, "api.gh.test", "/users/octo").await,
        200
    );
    let text = config_text(&r.dir, &r.ca_file, r.upstream.port(), RULES)
        + "\n[callers.b]\nsecret = \"caller-b-secret-0123456789abcdef\"\nproviders = [\"gh\"]\n";
    let config = credproxy::config::load_str(&text, "test.toml", &|_| None).unwrap();
    r.proxy.reload(config).await.unwrap();
    let req = Request::get("/users/octo")
        .header("host", "api.gh.test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    if let Ok(resp) = sender.send_request(req).await {
        let _ = resp.into_body().collect().await;
    }
    tokio::time::timeout(std::time::Duration::from_secs(10), conn)
        .await
        .expect("the tunnel is closed")
        .unwrap()
        .ok();
    assert!(sender.ready().await.is_err(), "the tunnel is closed");
}
