//! Issue 19 item 4: `[proxy] audit_log`: one JSON object per request (on both transports,
//! through `CONNECT`) and per token event, with exactly DESIGN.md's keys; reopened on reload
//! (SIGHUP: log rotation); never a secret, header value or query string in it, at TRACE.

use crate::support;

use std::path::{Path, PathBuf};

use serde_json::Value;
use support::wire::*;

use crate::proxy::callers::{AGENT_SECRET, CI_SECRET, SHARED_SECRET, basic, with_callers};

/// The keys of a request record, as DESIGN.md "Audit records" lists them.
const KEYS: [&str; 15] = [
    "time",
    "request_id",
    "caller",
    "listener",
    "provider",
    "method",
    "host",
    "path",
    "decision",
    "code",
    "status",
    "bytes_in",
    "bytes_out",
    "duration_ms",
    "generation",
];

fn audit_key(path: &Path) -> String {
    format!("audit_log = \"{}\"\n", path.display())
}

/// Everything written so far (after the writer flushed what was queued), one JSON object per
/// line.
async fn lines(s: &Setup, path: &Path) -> Vec<Value> {
    s.proxy.running.audit().expect("audit on").flush().await;
    read(path)
}

fn read(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn requests(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l.get("event").is_none()).collect()
}

fn assert_keys(v: &Value) {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    let mut want = KEYS.to_vec();
    want.sort();
    assert_eq!(keys, want, "{v}");
}

fn temp_log() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path)
}

#[tokio::test]
async fn each_request_on_either_transport_is_one_line_with_exactly_the_design_keys() {
    let (_dir, path) = temp_log();
    let s = with_callers(&audit_key(&path)).await;
    let ci = basic("ci", CI_SECRET);
    let mut fast = s.client().await;
    let r = fast
        .roundtrip(request(
            "GET",
            "/fast/x?key=query-value",
            &[&ci, "X-Request-Id: rid-1"],
            b"",
        ))
        .await;
    assert_status(&r, 200);
    let mut slow = s.client().await;
    let r = slow
        .roundtrip(request(
            "POST",
            "/slow?x=1",
            &[&ci, "Expect: 100-continue", "X-Request-Id: rid-2"],
            b"hello",
        ))
        .await;
    assert_status(&r, 200);
    // Refused (407), denied (403 caller_denied).
    let mut c = s.client().await;
    assert_json_error(
        &c.roundtrip(request("GET", "/no-auth", &["X-Request-Id: rid-3"], b""))
            .await,
        407,
    );
    let agent = basic("agent", AGENT_SECRET);
    let mut c = s.client().await;
    assert_json_error(
        &c.roundtrip(request(
            "GET",
            "/not-yours",
            &[&agent, "X-Request-Id: rid-4"],
            b"",
        ))
        .await,
        403,
    );

    let all = lines(&s, &path).await;
    let reqs = requests(&all);
    assert_eq!(reqs.len(), 4, "{all:#?}");
    for v in &reqs {
        assert_keys(v);
    }
    let by_id = |id: &str| {
        *reqs
            .iter()
            .find(|v| v["request_id"] == id)
            .unwrap_or_else(|| panic!("no record {id}: {reqs:#?}"))
    };
    let fast = by_id("rid-1");
    assert_eq!(fast["decision"], "injected");
    assert_eq!(fast["caller"], "ci");
    assert_eq!(fast["provider"], "wire");
    assert_eq!(fast["method"], "GET");
    assert_eq!(fast["host"], HOST);
    assert_eq!(fast["path"], "/fast/x", "no query: {fast}");
    assert_eq!(fast["status"], 200);
    assert_eq!(fast["code"], Value::Null);
    assert_eq!(fast["bytes_in"], 0);
    assert_eq!(fast["bytes_out"], "GET /fast/x?key=query-value 0".len());
    assert_eq!(fast["listener"], s.proxy.main().to_string());
    assert!(
        fast["generation"].as_u64().is_some_and(|g| g >= 1),
        "{fast}"
    );
    assert!(fast["duration_ms"].as_f64().is_some(), "{fast}");
    assert!(fast["time"].as_str().unwrap().ends_with('Z'), "{fast}");
    let slow = by_id("rid-2");
    assert_eq!(slow["decision"], "injected");
    assert_eq!(slow["method"], "POST");
    assert_eq!(slow["path"], "/slow");
    assert_eq!(slow["bytes_in"], 5);
    assert_eq!(slow["bytes_out"], "POST /slow?x=1 5".len());
    let refused = by_id("rid-3");
    assert_eq!(refused["decision"], "refused");
    assert_eq!(refused["code"], "proxy_auth_required");
    assert_eq!(refused["status"], 407);
    assert_eq!(refused["caller"], Value::Null);
    assert_eq!(refused["generation"], Value::Null);
    let denied = by_id("rid-4");
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["code"], "caller_denied");
    assert_eq!(denied["caller"], "agent");
    assert_eq!(denied["provider"], "wire");
    assert_eq!(denied["status"], 403);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("query-value") && !text.contains("x=1"),
        "{text}"
    );

    // `/status` says where the log goes and that nothing was dropped.
    let status = s.proxy.admin("/status").await.json();
    assert_eq!(status["audit"]["log"], path.display().to_string());
    assert_eq!(status["audit"]["dropped"], 0);
    let metrics = s.proxy.admin("/metrics").await.text();
    assert!(
        metrics.contains("credproxy_audit_dropped_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_tunnel_has_its_connect_passed_and_its_requests_as_the_connects_caller() {
    let (_dir, path) = temp_log();
    let s = with_callers(&audit_key(&path)).await;
    let target = format!("{HOST}:80");
    let ci = format!("{}\r\nX-Request-Id: tunnel-1\r\n", basic("ci", CI_SECRET));
    let (head, tcp) = crate::proxy::tunnel::connect(s.proxy.main(), &target, &ci).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut inner = Wire::server(tcp);
    let r = inner
        .roundtrip(request("GET", "/inside", &["X-Request-Id: inner-1"], b""))
        .await;
    assert_status(&r, 200);
    let all = lines(&s, &path).await;
    let reqs = requests(&all);
    let connect = reqs
        .iter()
        .find(|v| v["request_id"] == "tunnel-1")
        .expect("CONNECT");
    assert_eq!(connect["method"], "CONNECT");
    assert_eq!(connect["decision"], "passed");
    assert_eq!(connect["caller"], "ci");
    assert_eq!(connect["provider"], "wire");
    let inside = reqs
        .iter()
        .find(|v| v["request_id"] == "inner-1")
        .expect("inner");
    assert_eq!(inside["decision"], "injected");
    assert_eq!(inside["caller"], "ci", "the tunnel's caller: {inside}");
    assert_eq!(inside["path"], "/inside");
}

#[tokio::test]
async fn token_events_are_lines_with_event() {
    let (_dir, path) = temp_log();
    let (s, _fake) = Setup::oauth2(Upstream::answering(echo).await, &audit_key(&path)).await;
    let mut c = s.client().await;
    assert_status(&c.roundtrip(get("/t")).await, 200);
    let all = lines(&s, &path).await;
    let obtained = all
        .iter()
        .find(|v| v["event"] == "obtained")
        .unwrap_or_else(|| panic!("no obtained event: {all:#?}"));
    assert_eq!(obtained["provider"], "wire");
    assert_eq!(obtained["generation"], 1);
    let mut keys: Vec<&str> = obtained
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    let mut want: Vec<&str> = KEYS.iter().copied().chain(["event"]).collect();
    want.sort();
    assert_eq!(keys, want);
    let req = requests(&all)[0];
    assert_eq!(req["generation"], 1, "the credential the request carried");
}

/// Log rotation: the file is renamed, SIGHUP reloads (here `Running::reload`, what the SIGHUP
/// handler calls), and records go to a new file of the old name.
#[tokio::test]
async fn a_reload_reopens_the_log_after_a_rename() {
    let (dir, path) = temp_log();
    let s = Setup::start_with(Upstream::answering(echo).await, &audit_key(&path)).await;
    let mut c = s.client().await;
    assert_status(&c.roundtrip(get("/before")).await, 200);
    assert_eq!(requests(&lines(&s, &path).await).len(), 1);
    let rotated = dir.path().join("audit.jsonl.1");
    std::fs::rename(&path, &rotated).unwrap();
    s.proxy
        .running
        .reload(s.proxy.config.clone())
        .await
        .expect("reload");
    assert_status(&c.roundtrip(get("/after")).await, 200);
    let now = lines(&s, &path).await;
    let now = requests(&now);
    assert_eq!(now.len(), 1, "{now:#?}");
    assert_eq!(now[0]["path"], "/after");
    let old = read(&rotated);
    assert_eq!(requests(&old).len(), 1);
    assert_eq!(requests(&old)[0]["path"], "/before");
}

#[tokio::test]
async fn an_audit_log_that_cannot_be_opened_fails_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("audit.jsonl");
    let ca = support::TestCa::new();
    let harness = support::proxy::Harness::new(&ca);
    let config = harness.config(&format!(
        "{}\n[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\ntoken = \"t\"\n",
        audit_key(&path)
    ));
    let err = credproxy::app::start(config).await.err().expect("refused");
    let msg = support::security::error_chain(&err);
    assert!(
        msg.contains("audit log") && msg.contains("no-such-dir"),
        "{msg}"
    );
}

/// At TRACE, in a process of its own: no caller secret, proxy_auth secret, token, client header
/// value or query string in the audit log, and no caller secret in the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_reaches_the_audit_log_at_trace() {
    if !support::alone::own_process(
        module_path!(),
        "nothing_secret_reaches_the_audit_log_at_trace",
    ) {
        return;
    }
    let logs = support::logs::capture_trace();
    let (_dir, path) = temp_log();
    let s = with_callers(&format!(
        "{}proxy_auth = \"{SHARED_SECRET}\"\n",
        audit_key(&path)
    ))
    .await;
    let header_value = "hv-S3CR3T-header";
    let query = "?api_key=q-S3CR3T-query";
    for auth in [
        basic("ci", CI_SECRET),
        format!("Proxy-Authorization: Bearer {CI_SECRET}"),
        basic("any", SHARED_SECRET),
        basic("ci", "wrong-S3CR3T"),
        basic("agent", AGENT_SECRET),
    ] {
        for expect in [None, Some("Expect: 100-continue")] {
            let custom = format!("X-Custom: {header_value}");
            let mut fields = vec![
                auth.as_str(),
                "Authorization: Bearer client-S3CR3T",
                custom.as_str(),
            ];
            fields.extend(expect);
            let mut c = s.client().await;
            let _ = c
                .roundtrip(request("GET", &format!("/p{query}"), &fields, b""))
                .await;
        }
    }
    let all = lines(&s, &path).await;
    assert_eq!(requests(&all).len(), 10, "{all:#?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("S3CR3T"), "{text}");
    assert!(
        !text.contains(TOKEN) && !text.contains("other-token"),
        "{text}"
    );
    assert!(!text.contains("api_key") && !text.contains('?'), "{text}");
    let logged = logs.text();
    for secret in [CI_SECRET, AGENT_SECRET, SHARED_SECRET] {
        assert!(!logged.contains(secret), "{secret} in the logs");
    }
}

/// A chunked upload (hyper's transport, length unknown up front) is counted as it goes up.
#[tokio::test]
async fn a_chunked_bodys_bytes_are_counted() {
    let (_dir, path) = temp_log();
    let s = Setup::start_with(Upstream::answering(echo).await, &audit_key(&path)).await;
    let mut c = s.client().await;
    let mut req = request(
        "POST",
        "/up",
        &["Transfer-Encoding: chunked", "X-Request-Id: chunked-1"],
        b"",
    );
    req.extend_from_slice(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let r = c.roundtrip(req).await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "POST /up 11");
    let all = lines(&s, &path).await;
    let v = requests(&all)[0];
    assert_eq!(v["request_id"], "chunked-1");
    assert_eq!(v["bytes_in"], 11, "{v}");
    assert_eq!(v["bytes_out"], "POST /up 11".len(), "{v}");
}

/// A body that stalls on the fast path (a small `Content-Length` body it reads whole) is
/// `refused` with `client_timeout`, and the caller still counted as the request's.
#[tokio::test]
async fn a_stalled_body_on_the_fast_path_is_refused_client_timeout() {
    let (_dir, path) = temp_log();
    let s = with_callers(&format!(
        "{}client_body_timeout = \"1s\"\n",
        audit_key(&path)
    ))
    .await;
    let mut c = s.client().await;
    let mut head = request(
        "POST",
        "/stall",
        &[
            &basic("ci", CI_SECRET),
            "Content-Length: 10",
            "X-Request-Id: stall-1",
        ],
        b"",
    );
    head.extend_from_slice(b"abc");
    let r = c.roundtrip(head).await;
    assert_json_error(&r, 408);
    assert_eq!(r.head.get("credproxy-request-id"), Some("stall-1"));
    let all = lines(&s, &path).await;
    let v = requests(&all)
        .into_iter()
        .find(|v| v["request_id"] == "stall-1")
        .unwrap_or_else(|| panic!("no record: {all:#?}"));
    assert_eq!(v["decision"], "refused");
    assert_eq!(v["code"], "client_timeout");
    assert_eq!(v["caller"], "ci");
    assert_eq!(v["status"], 408);
}

/// The host field holds only a valid `host[:port]`, else "-": a refused request's raw authority
/// (userinfo) or `Host` value can carry a secret.
#[tokio::test]
async fn an_invalid_host_is_audited_as_a_dash_never_its_raw_value() {
    let (_dir, path) = temp_log();
    let s = Setup::start_with(Upstream::answering(echo).await, &audit_key(&path)).await;
    let mut c = s.client().await;
    let userinfo = format!("http://ci:S3CR3T-userinfo@{HOST}/x");
    let r = c
        .roundtrip(message(
            &format!("GET {userinfo} HTTP/1.1"),
            &[],
            false,
            b"",
        ))
        .await;
    assert_json_error(&r, 400);
    let mut c = s.client().await;
    let r = c
        .roundtrip(message(
            "GET /x HTTP/1.1",
            &["Host: Bearer sk-live-S3CR3T"],
            false,
            b"",
        ))
        .await;
    assert_json_error(&r, 400);
    let mut c = s.client().await;
    assert_status(&c.roundtrip(get("/ok")).await, 200);
    let all = lines(&s, &path).await;
    let hosts: Vec<&Value> = requests(&all).iter().map(|r| &r["host"]).collect();
    assert_eq!(hosts, ["-", "-", HOST], "{all:#?}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("S3CR3T"), "{text}");
}

/// The log is opened without following a symbolic link, must be a regular file of credproxy's
/// user, and a looser mode is narrowed to 0600.
#[tokio::test]
async fn the_audit_log_is_no_symlink_and_is_made_0600() {
    use std::os::unix::fs::PermissionsExt;
    let ca = support::TestCa::new();
    let harness = support::proxy::Harness::new(&ca);
    let start = |path: &Path| {
        let config = harness.config(&format!(
            "{}\n[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\ntoken = \"t\"\n",
            audit_key(path)
        ));
        async move { credproxy::app::start(config).await }
    };
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere.jsonl");
    std::fs::write(&elsewhere, b"").unwrap();
    let link = dir.path().join("link.jsonl");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let err = start(&link).await.err().expect("a symlink is refused");
    let msg = support::security::error_chain(&err);
    assert!(msg.contains("symbolic link"), "{msg}");

    let loose = dir.path().join("loose.jsonl");
    std::fs::write(&loose, b"").unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let running = start(&loose).await.expect("starts");
    let mode = std::fs::metadata(&loose).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(running);

    let fifo = dir.path().join("fifo.jsonl");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let err = start(&fifo).await.err().expect("a FIFO is refused");
    let msg = support::security::error_chain(&err).to_lowercase();
    assert!(
        msg.contains("regular file") || msg.contains("no such device"),
        "{msg}"
    );

    // Another user's file (as root, where the test can make one).
    if rustix::process::geteuid().is_root() {
        let theirs = dir.path().join("theirs.jsonl");
        std::fs::write(&theirs, b"").unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
        let err = start(&theirs)
            .await
            .err()
            .expect("another user's file is refused");
        let msg = support::security::error_chain(&err);
        assert!(msg.contains("belongs to uid 65534"), "{msg}");
    }
}

/// Shutdown writes out the queued records (flush bounded by 1 s) before it returns.
#[tokio::test]
async fn shutdown_flushes_the_audit_log() {
    let (_dir, path) = temp_log();
    let ca = support::TestCa::new();
    let harness = support::proxy::Harness::new(&ca);
    let config = harness.config(&format!(
        "{}\n[providers.x]\npreset = \"static\"\nhosts = [\"x.test\"]\ntoken = \"t\"\n",
        audit_key(&path)
    ));
    let running = credproxy::app::start(config).await.expect("starts");
    let main = running.main_addr().tcp().unwrap();
    for i in 0..20 {
        let mut c = Wire::client(main).await;
        let r = c
            .roundtrip(message(
                &format!("GET /{i} HTTP/1.1"),
                &["Host: unclaimed.example"],
                false,
                b"",
            ))
            .await;
        assert!(r.status() >= 400);
    }
    assert!(running.shutdown(std::time::Duration::from_secs(2)).await);
    assert_eq!(requests(&read(&path)).len(), 20);
}
