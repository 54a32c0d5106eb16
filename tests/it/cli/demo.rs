//! `credproxy demo`, end to end: the demo token server and API on their own, the whole demo
//! in-process (the printed curl line answers 200 through credproxy, across token refreshes), and
//! the binary (prints a working curl line, stops with exit 0 on SIGINT).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use credproxy::demo::{self, CLIENT_ID, CLIENT_SECRET, Options, Servers};
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A response, read whole.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Send `req` to `addr` on a fresh HTTP/1.1 connection (hyper's own client: no timers, so it
/// works under a paused clock).
async fn send(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.expect("response");
    let (parts, body) = resp.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// `GET url` (an `http://127.0.0.1:PORT/...` URL), with `headers`.
async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let uri: http::Uri = url.parse().expect("URL");
    let authority = uri.authority().expect("absolute URL").clone();
    let addr: SocketAddr = authority.as_str().parse().expect("an IP:port URL");
    let mut req =
        Request::get(uri.path_and_query().unwrap().as_str()).header("host", authority.as_str());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(Full::default()).unwrap()).await
}

/// `POST` a form to the demo token server.
async fn token_request(servers: &Servers, form: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(demo::TOKEN_PATH)
        .header("host", servers.token_addr().to_string())
        .header("content-type", "application/x-www-form-urlencoded");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(
        servers.token_addr(),
        req.body(Full::new(Bytes::from(form.to_owned()))).unwrap(),
    )
    .await
}

fn basic(id: &str, secret: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")))
}

fn access_token(reply: &Reply) -> String {
    reply.json()["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

#[tokio::test]
async fn the_token_server_grants_client_credentials_with_basic_or_body_auth() {
    let servers = Servers::start(Duration::from_secs(30)).await.unwrap();

    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let by_basic = token_request(
        &servers,
        "grant_type=client_credentials",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(by_basic.status, StatusCode::OK);
    let body = by_basic.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 30);
    assert_eq!(by_basic.header("cache-control"), "no-store");
    assert_eq!(by_basic.header("content-type"), "application/json");

    let by_body = token_request(
        &servers,
        &format!("grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&scope=hello"),
        &[],
    )
    .await;
    assert_eq!(by_body.status, StatusCode::OK);
    assert_ne!(access_token(&by_basic), access_token(&by_body));
    assert_eq!(servers.tokens_issued(), 2);

    servers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn the_token_server_refuses_what_rfc_6749_refuses() {
    let servers = Servers::start(Duration::from_secs(30)).await.unwrap();

    // §5.2: a wrong client secret is 401 invalid_client, with a challenge.
    let auth = basic(CLIENT_ID, "wrong");
    let wrong = token_request(
        &servers,
        "grant_type=client_credentials",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.json()["error"], "invalid_client");
    assert!(wrong.header("www-authenticate").starts_with("Basic"));

    let wrong_body = token_request(
        &servers,
        &format!("grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=nope"),
        &[],
    )
    .await;
    assert_eq!(wrong_body.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_body.json()["error"], "invalid_client");

    let anonymous = token_request(&servers, "grant_type=client_credentials", &[]).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.json()["error"], "invalid_client");

    // §2.3: one authentication method, not two.
    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let both = token_request(
        &servers,
        &format!("grant_type=client_credentials&client_secret={CLIENT_SECRET}"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(both.status, StatusCode::BAD_REQUEST);
    assert_eq!(both.json()["error"], "invalid_request");

    let password = token_request(
        &servers,
        "grant_type=password&username=u&password=p",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(password.status, StatusCode::BAD_REQUEST);
    assert_eq!(password.json()["error"], "unsupported_grant_type");

    let no_grant = token_request(&servers, "scope=x", &[("authorization", &auth)]).await;
    assert_eq!(no_grant.json()["error"], "invalid_request");

    let repeated = token_request(
        &servers,
        "grant_type=client_credentials&grant_type=client_credentials",
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(repeated.json()["error"], "invalid_request");

    let json_body = send(
        servers.token_addr(),
        Request::post(demo::TOKEN_PATH)
            .header("host", "x")
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"grant_type":"client_credentials"}"#,
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(json_body.status, StatusCode::BAD_REQUEST);

    let get = get(&servers.token_url(), &[]).await;
    assert_eq!(get.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(get.header("allow"), "POST");

    assert_eq!(servers.tokens_issued(), 0, "nothing refused was issued");
    servers.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(start_paused = true)]
async fn the_api_accepts_a_fresh_token_and_refuses_an_expired_one() {
    let servers = Servers::start(Duration::from_secs(30)).await.unwrap();
    let hello = format!("{}{}", servers.api_url(), demo::HELLO_PATH);

    let auth = basic(CLIENT_ID, CLIENT_SECRET);
    let token = access_token(
        &token_request(
            &servers,
            "grant_type=client_credentials",
            &[("authorization", &auth)],
        )
        .await,
    );
    let bearer = format!("Bearer {token}");

    let fresh = get(&hello, &[("authorization", &bearer)]).await;
    assert_eq!(fresh.status, StatusCode::OK);
    assert_eq!(
        fresh.json(),
        serde_json::json!({
            "message": "hello from the demo API",
            "authorized": true,
            "token_expires_in": 30,
        })
    );

    tokio::time::advance(Duration::from_secs(20)).await;
    let later = get(&hello, &[("authorization", &bearer)]).await;
    assert_eq!(later.status, StatusCode::OK);
    assert_eq!(later.json()["token_expires_in"], 10);

    tokio::time::advance(Duration::from_secs(10)).await;
    let expired = get(&hello, &[("authorization", &bearer)]).await;
    assert_eq!(expired.status, StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json()["error"], "invalid_token");
    assert!(expired.header("www-authenticate").contains("invalid_token"));

    let missing = get(&hello, &[]).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing.json()["error"], "missing_token");
    assert!(missing.header("www-authenticate").starts_with("Bearer"));

    let unknown = get(&hello, &[("authorization", "Bearer made-up")]).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.json()["error"], "invalid_token");

    let elsewhere = get(
        &format!("{}/other", servers.api_url()),
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);

    servers.shutdown(Duration::from_secs(1)).await;
}

/// The URL of a printed `curl http://...` line.
fn url_of(curl_line: &str) -> &str {
    let url = curl_line
        .trim()
        .strip_prefix("curl ")
        .unwrap_or_else(|| panic!("not a curl line: {curl_line}"));
    assert!(
        url.starts_with("http://") && !url.contains(' '),
        "one plain URL: {curl_line}"
    );
    url
}

fn authorized(reply: &Reply) -> bool {
    reply.status == StatusCode::OK && reply.json()["authorized"] == true
}

fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Run a printed curl line as a shell would (the lines have no quotes to interpret).
fn run_curl(line: &str) -> (bool, String) {
    let mut words = line.split_whitespace();
    assert_eq!(words.next(), Some("curl"));
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "10"])
        .args(words)
        .output()
        .expect("run curl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_printed_curl_lines_answer_through_credproxy_across_refreshes() {
    let lifetime = Duration::from_secs(2);
    let demo = demo::start(Options {
        token_lifetime: lifetime,
        ..Options::default()
    })
    .await
    .expect("the demo starts");
    let state_dir = demo.state_dir().to_owned();
    assert!(state_dir.is_dir());

    let banner = demo.banner();
    assert!(banner.contains(&demo.curl_line()), "{banner}");
    assert!(banner.contains(&demo.proxy_curl_line()), "{banner}");
    assert!(
        !banner.contains(CLIENT_SECRET),
        "no secret printed: {banner}"
    );

    // The base-URL line, exactly as printed.
    let url = url_of(&demo.curl_line()).to_owned();
    let first = get(&url, &[]).await;
    assert!(authorized(&first), "{first:?}");
    assert_eq!(first.json()["message"], "hello from the demo API");

    // The HTTP-proxy line: an absolute-form request to the main listener.
    let via_proxy = send(
        demo.main_addr(),
        Request::get("http://demo.api/hello")
            .header("host", "demo.api")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert!(authorized(&via_proxy), "{via_proxy:?}");

    if curl_installed() {
        for line in [demo.curl_line(), demo.proxy_curl_line()] {
            let (ok, out) = run_curl(&line);
            assert!(ok, "`{line}` failed: {out}");
            let body: Value = serde_json::from_str(&out).expect("curl printed JSON");
            assert_eq!(body["authorized"], true, "`{line}`: {out}");
        }
    } else {
        eprintln!("curl is not installed: the printed lines were checked with hyper only");
    }

    // Past the token's lifetime, requests keep answering 200: credproxy refreshed ahead.
    let deadline = Instant::now() + Duration::from_secs(20);
    let start_count = demo.servers().tokens_issued();
    let mut answered = 0;
    while demo.servers().tokens_issued() < start_count + 2 {
        assert!(
            Instant::now() < deadline,
            "credproxy did not refresh: {} token(s) issued in 20s with {lifetime:?} tokens",
            demo.servers().tokens_issued()
        );
        let reply = get(&url, &[]).await;
        assert!(authorized(&reply), "after {answered} answers: {reply:?}");
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = get(&url, &[]).await;
    assert!(authorized(&reply), "{reply:?}");

    assert!(demo.shutdown(Duration::from_secs(2)).await);
    assert!(!state_dir.exists(), "the state dir is removed at shutdown");
}

/// `credproxy demo` as a child process, with its stdout and stderr read line by line on threads
/// (so neither pipe can fill up and stall it).
struct DemoProcess {
    child: std::process::Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stdout_text: String,
    stderr_text: String,
}

impl DemoProcess {
    fn spawn(args: &[&str]) -> DemoProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_credproxy"))
            .arg("demo")
            .args(args)
            .env("CREDPROXY_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn credproxy demo");
        DemoProcess {
            stdout: lines_of(child.stdout.take().unwrap()),
            stderr: lines_of(child.stderr.take().unwrap()),
            child,
            stdout_text: String::new(),
            stderr_text: String::new(),
        }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Gather output until a line of stdout (or stderr), seen now or before, satisfies `want`;
    /// waits up to `wait`.
    async fn wait_for_line(
        &mut self,
        from_stderr: bool,
        wait: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            for (rx, text) in [
                (&self.stdout, &mut self.stdout_text),
                (&self.stderr, &mut self.stderr_text),
            ] {
                while let Ok(line) = rx.try_recv() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
            let text = if from_stderr {
                &self.stderr_text
            } else {
                &self.stdout_text
            };
            if let Some(line) = text.lines().find(|l| want(l)) {
                return Some(line.to_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Send `signal`; the exit status (within 5 s) and all output.
    async fn stop(mut self, signal: &str) -> (std::process::ExitStatus, String, String) {
        let sent = Command::new("kill")
            .args([signal, &self.pid()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "credproxy demo still running 5s after kill {signal}\nstdout:\n{}\nstderr:\n{}",
                    self.stdout_text, self.stderr_text
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // The pipes close with the process: collect what is left.
        for line in self.stdout.iter() {
            self.stdout_text.push_str(&line);
            self.stdout_text.push('\n');
        }
        for line in self.stderr.iter() {
            self.stderr_text.push_str(&line);
            self.stderr_text.push('\n');
        }
        (
            status,
            std::mem::take(&mut self.stdout_text),
            std::mem::take(&mut self.stderr_text),
        )
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        // A failed assertion must leave neither the demo running nor its state dir behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let dir = std::env::temp_dir().join(format!("credproxy-demo-{}", self.child.id()));
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn lines_of(pipe: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_prints_a_working_curl_line_logs_refreshes_and_stops_on_sigint() {
    let mut demo = DemoProcess::spawn(&["--listen", "127.0.0.1:0", "--token-lifetime", "2s"]);
    let pid = demo.pid();
    let wait = Duration::from_secs(20);
    let curl = demo
        .wait_for_line(false, wait, |l| l.trim().starts_with("curl http://"))
        .await;
    let proxy_curl = demo
        .wait_for_line(false, wait, |l| l.trim().starts_with("curl -x "))
        .await;
    let (Some(curl), Some(_)) = (curl, proxy_curl) else {
        let (_, out, err) = demo.stop("-KILL").await;
        panic!("no curl lines on stdout:\n{out}\nstderr:\n{err}");
    };

    let reply = get(url_of(&curl), &[]).await;
    assert!(authorized(&reply), "`{}`: {reply:?}", curl.trim());
    if curl_installed() {
        let (ok, out) = run_curl(curl.trim());
        assert!(
            ok && out.contains("\"authorized\":true"),
            "`{}`: {out}",
            curl.trim()
        );
    }

    // Each token issued is logged as it happens: with 2 s tokens, #2 comes within seconds.
    let second = demo
        .wait_for_line(true, wait, |l| {
            l.contains("token server: issued token #2 (expires in 2s)")
        })
        .await;
    assert!(second.is_some(), "no refresh logged:\n{}", demo.stderr_text);
    let reply = get(url_of(&curl), &[]).await;
    assert!(authorized(&reply), "after a refresh: {reply:?}");

    let (status, stdout, stderr) = demo.stop("-INT").await;
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // No secret in any output, even at debug.
    let basic = STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains(CLIENT_SECRET),
            "{name} shows the client secret:\n{text}"
        );
        assert!(
            !text.contains(&basic),
            "{name} shows the Basic credentials:\n{text}"
        );
        assert!(
            !text.contains("Bearer "),
            "{name} shows a bearer token:\n{text}"
        );
    }
    let state_dir = std::env::temp_dir().join(format!("credproxy-demo-{pid}"));
    assert!(
        !state_dir.exists(),
        "{} is left behind",
        state_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_stops_cleanly_on_sigterm() {
    let mut demo = DemoProcess::spawn(&[]);
    let curl = demo
        .wait_for_line(false, Duration::from_secs(20), |l| {
            l.trim().starts_with("curl http://")
        })
        .await;
    assert!(curl.is_some(), "no curl line:\n{}", demo.stdout_text);
    let (status, stdout, stderr) = demo.stop("-TERM").await;
    assert_eq!(
        status.code(),
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
}
