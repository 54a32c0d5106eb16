//! Issue 8, points 1–3 and the access half of the threat model (docs/SECURITY.md): who may spend
//! the credentials. Local callers authenticate with `proxy_auth` on TCP listeners; unix sockets
//! are private files; web pages are refused (Origin, Sec-Fetch-Site, DNS rebinding); other
//! machines need `allow_remote`, and `credproxy check` says what each risky setting means.
//!
//! Every refusal is also checked on the upstream's side: it must not have seen the request.

use crate::support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::security::*;
use base64::Engine as _;

const PROXY_SECRET: &str = "pa-SECRET-5f0c:with-colon";

/// A route listener and a path prefix for `echo`, beside the main listener.
const ROUTES: &str = r#"
[[routes]]
listen = "127.0.0.1:0"
provider = "echo"

[[routes]]
path_prefix = "/echo"
provider = "echo"
"#;

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The three ways in over TCP: (name, listener, URI, Host).
fn entrances(s: &Setup) -> Vec<(&'static str, std::net::SocketAddr, String, String)> {
    vec![
        (
            "main, absolute form",
            s.main(),
            format!("http://{HOST}/v1/x"),
            HOST.to_owned(),
        ),
        (
            "route listener",
            s.route("echo"),
            "/v1/x".to_owned(),
            s.route("echo").to_string(),
        ),
        (
            "main, path prefix",
            s.main(),
            "/echo/v1/x".to_owned(),
            s.main().to_string(),
        ),
    ]
}

#[tokio::test]
async fn proxy_auth_is_demanded_on_every_tcp_listener() {
    let s = Setup::start(&format!("proxy_auth = \"{PROXY_SECRET}\""), ROUTES).await;
    let refused = [
        None,
        Some(basic("user", "wrong")),
        Some(basic(PROXY_SECRET, "")),
        Some(basic("user", &PROXY_SECRET[..PROXY_SECRET.len() - 1])),
        Some(basic("user", &format!("{PROXY_SECRET}x"))),
        Some(format!("Bearer {}", &PROXY_SECRET[1..])),
        Some(format!("Digest {PROXY_SECRET}")),
        Some(PROXY_SECRET.to_owned()),
    ];
    let accepted = [
        basic("anyone", PROXY_SECRET),
        basic("", PROXY_SECRET),
        format!("Bearer {PROXY_SECRET}"),
        format!("bearer {PROXY_SECRET}"),
    ];
    for (name, addr, uri, host) in entrances(&s) {
        for header in &refused {
            let before = s.upstream.hits();
            let mut headers = vec![("host", host.as_str())];
            if let Some(h) = header {
                headers.push(("proxy-authorization", h.as_str()));
            }
            let r = send(addr, get(&uri, &headers)).await;
            assert_eq!(r.status, 407, "{name} with {header:?}: {}", r.text());
            assert_eq!(r.json()["error"], "proxy_auth_required");
            let challenge = r.headers["proxy-authenticate"].to_str().unwrap();
            assert!(
                challenge.contains("Basic") && challenge.contains("Bearer"),
                "{challenge}"
            );
            assert_eq!(
                s.upstream.hits(),
                before,
                "{name}: a 407 is never forwarded"
            );
            assert!(!r.text().contains(PROXY_SECRET));
        }
        for header in &accepted {
            let r = send(
                addr,
                get(
                    &uri,
                    &[("host", host.as_str()), ("proxy-authorization", header)],
                ),
            )
            .await;
            assert_eq!(r.status, 200, "{name} with {header}: {}", r.text());
            let v = r.json();
            assert_eq!(v["authorization"][0], format!("Bearer {TOKEN}"));
            assert_eq!(
                v["proxy_authorization"],
                serde_json::json!([]),
                "{name}: the proxy secret never goes upstream"
            );
        }
    }
    // CONNECT is behind the same door.
    let r = raw(
        s.main(),
        b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(r.statuses().first(), Some(&407), "{}", r.text);
}

#[tokio::test]
async fn require_auth_false_opts_one_route_out_and_check_warns() {
    let extra = r#"
[[routes]]
listen = "127.0.0.1:0"
provider = "echo"
require_auth = false
"#;
    let s = Setup::start(&format!("proxy_auth = \"{PROXY_SECRET}\""), extra).await;
    let route = s.route("echo");
    let r = send(route, get("/open", &[("host", &route.to_string())])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["authorization"][0], format!("Bearer {TOKEN}"));
    // The main listener still demands it.
    let before = s.upstream.hits();
    let r = send(
        s.main(),
        get(&format!("http://{HOST}/x"), &[("host", HOST)]),
    )
    .await;
    assert_eq!(r.status, 407);
    assert_eq!(s.upstream.hits(), before, "a 407 is never forwarded");
    // Browsers are still refused on the opted-out route.
    let r = send(
        route,
        get(
            "/open",
            &[
                ("host", &route.to_string()),
                ("origin", "https://evil.example"),
            ],
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.upstream.hits(),
        before,
        "the browser's request was forwarded"
    );

    let config = s.config_file();
    let (code, _, stderr) = credproxy(&["check", "--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: routes[0] (provider echo) has require_auth = false")
            && stderr.contains("without proxy_auth"),
        "{stderr}"
    );
}

#[tokio::test]
async fn curl_sends_the_secret_from_the_proxy_url() {
    if !curl_installed() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let s = Setup::start(&format!("proxy_auth = \"{PROXY_SECRET}\""), "").await;
    let curl = |proxy: String| async move {
        let out = tokio::process::Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "-o",
                "-",
                "-w",
                "\n%{http_code}",
                "-x",
                &proxy,
                &format!("http://{HOST}/curl?q=1"),
            ])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_owned(), body.to_owned())
    };
    // curl percent-decodes the userinfo; ':' in a password must be encoded.
    let encoded = PROXY_SECRET.replace(':', "%3A");
    let (code, body) = curl(format!("http://anyone:{encoded}@{}", s.main())).await;
    assert_eq!(code, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["authorization"][0], format!("Bearer {TOKEN}"));
    assert_eq!(v["proxy_authorization"], serde_json::json!([]));
    let (code, _) = curl(format!("http://{}", s.main())).await;
    assert_eq!(code, "407");
    let (code, _) = curl(format!("http://anyone:nope@{}", s.main())).await;
    assert_eq!(code, "407");
}

#[tokio::test]
async fn unix_socket_listeners_are_private_files_and_serve_requests() {
    let sockets = tempfile::tempdir().unwrap();
    let main = sockets.path().join("main.sock");
    let route = sockets.path().join("route.sock");
    let s = Setup::start(
        &format!(
            "listen = \"unix:{}\"\nproxy_auth = \"{PROXY_SECRET}\"",
            main.display()
        ),
        &format!(
            "[[routes]]\nlisten = \"unix:{}\"\nprovider = \"echo\"\n",
            route.display()
        ),
    )
    .await;
    for path in [&main, &route] {
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}: {mode:o}", path.display());
    }
    // Bound in a private directory and renamed into place: nothing else is left beside them.
    let mut names: Vec<String> = std::fs::read_dir(sockets.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["main.sock", "route.sock"]);

    // proxy_auth guards TCP listeners; the socket's mode guards these.
    let r = send_unix(
        &main,
        get(&format!("http://{HOST}/over-unix"), &[("host", HOST)]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/over-unix");
    assert_eq!(r.json()["authorization"][0], format!("Bearer {TOKEN}"));
    let r = send_unix(&route, get("/base/url", &[("host", "localhost")])).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/base/url");
    // Browsers are refused here too.
    let before = s.upstream.hits();
    let r = send_unix(
        &route,
        get(
            "/x",
            &[("host", "localhost"), ("origin", "https://evil.example")],
        ),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.upstream.hits(),
        before,
        "the browser's request was forwarded"
    );

    assert!(s.proxy.shutdown(Duration::from_secs(2)).await);
    assert!(
        !main.exists() && !route.exists(),
        "the sockets are removed at shutdown"
    );
}

#[tokio::test]
async fn socket_mode_is_what_the_socket_gets() {
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("group.sock");
    let _s = Setup::start(
        &format!(
            "listen = \"unix:{}\"\nsocket_mode = \"0660\"",
            path.display()
        ),
        "",
    )
    .await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
}

#[tokio::test]
async fn a_stale_socket_is_replaced_a_live_one_and_other_files_are_refused() {
    let sockets = tempfile::tempdir().unwrap();
    let path = sockets.path().join("api.sock");
    let listen = format!("listen = \"unix:{}\"", path.display());

    // A stale socket: the file of a process that is gone (nobody listens).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
    let first = Setup::start(&listen, "").await;
    let r = send_unix(&path, get(&format!("http://{HOST}/a"), &[("host", HOST)])).await;
    assert_eq!(r.status, 200);
    assert_eq!(first.upstream.hits(), 1);

    // A live one: a second credproxy must not steal it...
    let second = Setup::try_start(&listen, "").await;
    let err = second.err().expect("a live socket is refused");
    assert!(err.contains("another process is serving"), "{err}");
    // ...and the first still owns it.
    let r = send_unix(&path, get(&format!("http://{HOST}/b"), &[("host", HOST)])).await;
    assert_eq!(r.status, 200);
    assert_eq!(first.upstream.hits(), 2);
    drop(first);

    // A regular file, or a symlink to a socket, is not ours to replace.
    let file = sockets.path().join("file.sock");
    std::fs::write(&file, "keep me").unwrap();
    let err = Setup::try_start(&format!("listen = \"unix:{}\"", file.display()), "")
        .await
        .err()
        .expect("a regular file is refused");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    let link = sockets.path().join("link.sock");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let err = Setup::try_start(&format!("listen = \"unix:{}\"", link.display()), "")
        .await
        .err()
        .expect("a symlink is refused");
    assert!(err.contains("not a socket"), "{err}");
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn browser_requests_are_refused_unless_the_origin_is_allowed() {
    let s = Setup::start(
        "",
        &format!("allow_origins = [\"http://localhost:3000\"]\n{ROUTES}"),
    )
    .await;
    let url = format!("http://{HOST}/from-a-page");
    let refused: &[&[(&str, &str)]] = &[
        &[("origin", "https://evil.example")],
        &[("origin", "null")],
        &[("origin", "http://localhost:3001")],
        &[("origin", "http://localhost")],
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "no-cors"),
        ],
        &[
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "same-origin"),
        ],
    ];
    for headers in refused {
        for (addr, uri, host) in [
            (s.main(), url.clone(), HOST.to_owned()),
            (
                s.route("echo"),
                "/p".to_owned(),
                s.route("echo").to_string(),
            ),
        ] {
            let before = s.upstream.hits();
            let mut h = vec![("host", host.as_str())];
            h.extend_from_slice(headers);
            let r = send(addr, get(&uri, &h)).await;
            assert_eq!(r.status, 403, "{headers:?}: {}", r.text());
            let v = r.json();
            assert_eq!(v["error"], "browser_request");
            assert_eq!(v["provider"], "echo");
            assert!(v["message"].as_str().unwrap().contains("allow_origins"));
            assert_eq!(s.upstream.hits(), before, "{headers:?} was forwarded");
        }
    }
    // A CORS preflight gets no CORS headers: the browser gives up.
    let before = s.upstream.hits();
    let r = send(
        s.main(),
        http::Request::builder()
            .method("OPTIONS")
            .uri(&url)
            .header("host", HOST)
            .header("origin", "https://evil.example")
            .header("access-control-request-method", "POST")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, 403);
    assert!(r.headers.get("access-control-allow-origin").is_none());
    assert_eq!(s.upstream.hits(), before, "the preflight was forwarded");

    let allowed: &[&[(&str, &str)]] = &[
        &[],
        &[("sec-fetch-site", "same-origin")],
        &[("sec-fetch-site", "none")],
        &[("origin", "http://localhost:3000")],
        &[("origin", "HTTP://LocalHost:3000/")],
        &[
            ("origin", "http://localhost:3000"),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for headers in allowed {
        let mut h = vec![("host", HOST)];
        h.extend_from_slice(headers);
        let r = send(s.main(), get(&url, &h)).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.text());
        assert_eq!(r.json()["authorization"][0], format!("Bearer {TOKEN}"));
    }
}

#[tokio::test]
async fn an_origin_that_is_not_text_is_still_an_origin() {
    let s = Setup::start("", "").await;
    let mut req = format!("GET http://{HOST}/x HTTP/1.1\r\nhost: {HOST}\r\norigin: ").into_bytes();
    req.extend_from_slice(b"https://\xffvil.example\r\nconnection: close\r\n\r\n");
    let r = raw(s.main(), &req, Duration::from_secs(5)).await;
    assert_eq!(r.statuses(), [403], "{}", r.text);
    assert!(r.text.contains("browser_request"), "{}", r.text);
    assert_eq!(s.upstream.hits(), 0);
}

#[tokio::test]
async fn browsers_cannot_use_pass_through_to_reach_other_hosts() {
    // (The intranet host is on loopback: pass_private lets pass-through reach it.)
    let s = Setup::start(
        "unknown_hosts = \"pass\"\npass_private = [\"127.0.0.0/8\"]",
        "",
    )
    .await;
    // An unclaimed plain-HTTP host: passed through untouched for programs...
    let plain_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = plain_hits.clone();
    let plain = support::TestServer::start(
        None,
        support::server::handler(move |_req| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {
                http::Response::new(http_body_util::Full::new(bytes::Bytes::from_static(
                    b"intranet",
                )))
            }
        }),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/page", plain.port());
    let host = format!("127.0.0.1:{}", plain.port());
    let r = send(s.main(), get(&url, &[("host", &host)])).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "intranet");
    // ...but not for web pages (a rebinding page reading the answer).
    for headers in [
        [("host", host.as_str()), ("origin", "https://evil.example")],
        [("host", host.as_str()), ("sec-fetch-site", "cross-site")],
    ] {
        let r = send(s.main(), get(&url, &headers)).await;
        assert_eq!(r.status, 403, "{headers:?}");
        assert_eq!(r.json()["error"], "browser_request");
        let hits = plain_hits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(hits, 1, "{headers:?} reached the intranet host");
    }
}

#[tokio::test]
async fn dns_rebinding_hosts_are_refused() {
    let s = Setup::start("", ROUTES).await;
    let route = s.route("echo");
    let port = route.port();
    // A page on evil.example whose name was rebound to 127.0.0.1 sends its own name as Host.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("127.evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let before = s.upstream.hits();
        let r = send(route, get("/steal", &[("host", &host)])).await;
        assert_eq!(r.status, 403, "Host {host}: {}", r.text());
        assert_eq!(r.json()["error"], "unknown_host");
        assert_eq!(s.upstream.hits(), before, "Host {host} was forwarded");
        // The same through the main listener's path prefix...
        let r = send(s.main(), get("/echo/steal", &[("host", &host)])).await;
        assert_eq!(r.status, 403, "prefix, Host {host}: {}", r.text());
        // ...and by Host on the main listener: not a claimed host.
        let r = send(s.main(), get("/steal", &[("host", &host)])).await;
        assert_eq!(r.status, 403, "main, Host {host}: {}", r.text());
        assert_eq!(s.upstream.hits(), before, "Host {host} was forwarded");
    }
    // The listener's own address, localhost, and the provider's own hosts are fine.
    for host in [
        route.to_string(),
        format!("localhost:{port}"),
        format!("127.0.0.2:{port}"),
        HOST.to_owned(),
    ] {
        let r = send(route, get("/ok", &[("host", &host)])).await;
        assert_eq!(r.status, 200, "Host {host}: {}", r.text());
    }
    let r = send(
        s.main(),
        get("/echo/ok", &[("host", &s.main().to_string())]),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Checks a config without binding anything: nothing here listens beyond loopback.
fn load(text: &str) -> Result<credproxy::config::Config, String> {
    credproxy::config::load_str(text, "remote.toml", &|_| None).map_err(|e| e.to_string())
}

const PROVIDER: &str =
    "[providers.gh]\npreset = \"static\"\nhosts = [\"api.github.com\"]\ntoken = \"t\"\n";

#[tokio::test]
async fn non_loopback_listeners_need_allow_remote_and_check_explains_the_risk() {
    for listen in ["0.0.0.0:8080", "192.0.2.10:8080", "[::]:8080"] {
        let err = load(&format!("[proxy]\nlisten = \"{listen}\"\n{PROVIDER}")).unwrap_err();
        assert!(
            err.contains("reachable from other machines")
                && err.contains("allow_remote = true")
                && err.contains("proxy_auth"),
            "{err}"
        );
    }
    let err = load(&format!(
        "{PROVIDER}[[routes]]\nlisten = \"0.0.0.0:7001\"\nprovider = \"gh\"\n"
    ))
    .unwrap_err();
    assert!(err.contains("routes[0].listen"), "{err}");

    // Allowed, but without proxy_auth: a warning that says what it means and what to do.
    let open = format!("[proxy]\nlisten = \"0.0.0.0:8080\"\nallow_remote = true\n{PROVIDER}");
    let warnings = load(&open).unwrap().warnings;
    let w = warnings
        .iter()
        .find(|w| w.starts_with("proxy.listen"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(
        w.contains("anyone who can connect") && w.contains("Set proxy.proxy_auth"),
        "{w}"
    );
    // With proxy_auth: no such warning.
    let guarded = format!(
        "[proxy]\nlisten = \"0.0.0.0:8080\"\nallow_remote = true\nproxy_auth = \"s\"\n{PROVIDER}"
    );
    let warnings = load(&guarded).unwrap().warnings;
    assert!(
        !warnings.iter().any(|w| w.contains("proxy_auth is not set")),
        "{warnings:?}"
    );
    // An admin listener for other machines is worth a word too.
    let admin =
        format!("[proxy]\nadmin_listen = \"0.0.0.0:9090\"\nallow_remote = true\n{PROVIDER}");
    let warnings = load(&admin).unwrap().warnings;
    assert!(
        warnings.iter().any(|w| w.starts_with("proxy.admin_listen")),
        "{warnings:?}"
    );

    // `credproxy check` prints them, and fails on the missing allow_remote.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("open.toml");
    std::fs::write(&file, &open).unwrap();
    let (code, _, stderr) = credproxy(&["check", "--config", file.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning: proxy.listen = 0.0.0.0:8080 is reachable from other machines"),
        "{stderr}"
    );
    std::fs::write(
        &file,
        format!("[proxy]\nlisten = \"0.0.0.0:8080\"\n{PROVIDER}"),
    )
    .unwrap();
    let (code, _, stderr) = credproxy(&["check", "--config", file.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("allow_remote"), "{stderr}");
}
