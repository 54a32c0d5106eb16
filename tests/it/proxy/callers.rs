//! Issue 19 items 2 and 3: named callers (`[callers.NAME]`: Basic `NAME:SECRET` or Bearer
//! `SECRET`, each limited to its providers, beside `proxy_auth`) and `credproxy-request-id`, on
//! both transports (the fast path: a plain GET; hyper's: the same with `Expect: 100-continue`, on
//! a connection of its own) and through `CONNECT`.

use crate::support;

use base64::Engine as _;
use support::wire::*;

pub(crate) const CI_SECRET: &str = "ci-S3CR3T-key";
pub(crate) const AGENT_SECRET: &str = "agent-S3CR3T-key";
pub(crate) const SHARED_SECRET: &str = "shared-S3CR3T-key";
/// The second provider's host: `agent` may use it, `ci` may not.
pub(crate) const OTHER_HOST: &str = "api.other.test";

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!(
        "Proxy-Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// `proxy_keys` beside the callers; `ci` may use `wire`, `agent` only `other` (a second
/// provider on the same upstream).
pub(crate) async fn with_callers(proxy_keys: &str) -> Setup {
    with_callers_and(proxy_keys, "").await
}

/// [`with_callers`] with `extra` TOML after the callers (a `[[routes]]`).
pub(crate) async fn with_callers_and(proxy_keys: &str, extra: &str) -> Setup {
    let up = Upstream::answering(echo).await;
    let port = up.port();
    let keys = format!(
        r#"
[providers.other]
preset = "static"
hosts = ["{OTHER_HOST}"]
upstream = "http://127.0.0.1:{port}"
token = "other-token"

[callers.ci]
secret = "{CI_SECRET}"
providers = ["wire"]

[callers.agent]
secret = "{AGENT_SECRET}"
providers = ["other"]
{extra}
"#
    );
    Setup::start_at(up, "", proxy_keys, &keys).await
}

/// `fields` sent for `target` on a new connection, by the fast path and by hyper's.
async fn both_ways(s: &Setup, target: &str, fields: &[&str]) -> [Message; 2] {
    let mut fast = s.client().await;
    let by_fast = fast.roundtrip(request("GET", target, fields, b"")).await;
    let mut slow = s.client().await;
    let fields: Vec<&str> = fields
        .iter()
        .copied()
        .chain(["Expect: 100-continue"])
        .collect();
    let by_hyper = slow.roundtrip(request("GET", target, &fields, b"")).await;
    [by_fast, by_hyper]
}

#[tokio::test]
async fn callers_prove_themselves_by_basic_or_bearer_and_use_only_their_providers() {
    let s = with_callers(&format!("proxy_auth = \"{SHARED_SECRET}\"")).await;
    let admitted = [
        basic("ci", CI_SECRET),
        format!("Proxy-Authorization: Bearer {CI_SECRET}"),
        format!("Proxy-Authorization: bearer {CI_SECRET}"),
        // proxy_auth's secret, with any user name, admits beside the callers.
        basic("anyone", SHARED_SECRET),
        format!("Proxy-Authorization: Bearer {SHARED_SECRET}"),
    ];
    for field in &admitted {
        for (way, r) in ["fast", "hyper"]
            .into_iter()
            .zip(both_ways(&s, "/in", &[field]).await)
        {
            assert_status(&r, 200);
            assert_eq!(r.text(), "GET /in 0", "{way} with {field}");
            let up = s.up.last();
            assert_eq!(up.bearer(), TOKEN, "{way}");
            assert!(
                !up.head.has("proxy-authorization"),
                "{way}: never forwarded"
            );
        }
    }
    let refused = [
        None,
        Some(basic("ci", "wrong")),
        Some(basic("ci", &CI_SECRET[..CI_SECRET.len() - 1])),
        // The user name must be the caller's own.
        Some(basic("agent", CI_SECRET)),
        Some(format!("Proxy-Authorization: Bearer {CI_SECRET}x")),
    ];
    for field in &refused {
        let before = s.up.seen().len();
        let fields: Vec<&str> = field.iter().map(String::as_str).collect();
        for (way, r) in ["fast", "hyper"]
            .into_iter()
            .zip(both_ways(&s, "/in", &fields).await)
        {
            assert_json_error(&r, 407);
            assert_eq!(r.json()["error"], "proxy_auth_required", "{way} {field:?}");
            assert!(r.head.has("credproxy-request-id"), "{way}");
            assert!(!r.text().contains("S3CR3T"), "{}", r.text());
        }
        assert_eq!(s.up.seen().len(), before, "a 407 is never forwarded");
    }
    // A caller asking for a provider not in its list: 403 caller_denied, never forwarded.
    let before = s.up.seen().len();
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/in", &[&basic("agent", AGENT_SECRET)]).await)
    {
        assert_json_error(&r, 403);
        let v = r.json();
        assert_eq!(v["error"], "caller_denied", "{way}: {v}");
        assert_eq!(v["provider"], "wire", "{way}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            message.contains("agent") && message.contains("[callers.agent]"),
            "{message}"
        );
        assert!(!message.contains("S3CR3T"), "{message}");
    }
    assert_eq!(
        s.up.seen().len(),
        before,
        "a caller_denied is never forwarded"
    );
    // The same caller on its own provider.
    let mut c = s.client().await;
    let host = format!("Host: {OTHER_HOST}");
    let r = c
        .roundtrip(message(
            "GET /theirs HTTP/1.1",
            &[&host, &basic("agent", AGENT_SECRET)],
            false,
            b"",
        ))
        .await;
    assert_status(&r, 200);
    assert_eq!(s.up.last().bearer(), "other-token");

    // Per-caller counts, labelled only by configured names.
    let metrics = s.proxy.running.shared().metrics.encode(std::iter::empty());
    assert!(
        metrics.contains(r#"credproxy_caller_requests_total{caller="agent",outcome="denied"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"credproxy_caller_requests_total{caller="ci",outcome="admitted"} 6"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn without_proxy_auth_the_callers_alone_admit() {
    let s = with_callers("").await;
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/in", &[]).await)
    {
        assert_json_error(&r, 407);
        assert_eq!(r.json()["error"], "proxy_auth_required", "{way}");
    }
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/in", &[&basic("ci", CI_SECRET)]).await)
    {
        assert_status(&r, 200);
        assert_eq!(r.text(), "GET /in 0", "{way}");
    }
}

/// The caller found on the `CONNECT` is the tunnel's: a `CONNECT` to a provider it may not use is
/// refused, and requests inside need no `Proxy-Authorization` of their own.
#[tokio::test]
async fn a_connect_is_admitted_as_its_caller_and_the_tunnel_is_that_callers() {
    let s = with_callers("").await;
    let target = format!("{HOST}:80");
    let (head, _) = super::tunnel::connect(s.proxy.main(), &target, "").await;
    assert!(head.starts_with("HTTP/1.1 407"), "{head}");
    let agent = format!("{}\r\n", basic("agent", AGENT_SECRET));
    let (head, _) = super::tunnel::connect(s.proxy.main(), &target, &agent).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("credproxy-request-id"),
        "{head}"
    );
    let ci = format!("{}\r\n", basic("ci", CI_SECRET));
    let (head, tcp) = super::tunnel::connect(s.proxy.main(), &target, &ci).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut inner = Wire::server(tcp);
    let r = inner.roundtrip(get("/inside")).await;
    assert_status(&r, 200);
    assert_eq!(r.text(), "GET /inside 0");
    assert_eq!(s.up.last().bearer(), TOKEN);
    // The tunnel is ci's: a request inside for agent's provider is still ci's, and misdirected
    // anyway (another host than the CONNECT's).
    let metrics = s.proxy.running.shared().metrics.encode(std::iter::empty());
    assert!(
        metrics.contains(r#"credproxy_caller_requests_total{caller="ci",outcome="admitted"}"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn status_lists_callers_and_their_providers_never_their_secrets() {
    let s = with_callers("").await;
    let r = s.proxy.admin("/status").await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(
        v["callers"],
        serde_json::json!([
            {"name": "agent", "providers": ["other"]},
            {"name": "ci", "providers": ["wire"]},
        ]),
        "{v}"
    );
    assert!(!r.text().contains("S3CR3T"), "{}", r.text());
}

#[tokio::test]
async fn a_clients_request_id_is_kept_and_sent_upstream_else_a_new_one_on_both_transports() {
    let s = Setup::echoing().await;
    let id = "6f1c1e9e-5d9b-4b7e-9a53-1f0f3c2b7a10";
    let field = format!("X-Request-Id: {id}");
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/id", &[&field]).await)
    {
        assert_status(&r, 200);
        assert_eq!(r.head.get("credproxy-request-id"), Some(id), "{way}");
        assert_eq!(s.up.last().head.get("x-request-id"), Some(id), "{way}");
    }
    let mut ids = Vec::new();
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/id", &[]).await)
    {
        assert_status(&r, 200);
        let got = r.head.all("credproxy-request-id");
        assert_eq!(got.len(), 1, "{way}: {:?}", r.head);
        assert!(got[0].len() > 12, "{way}: {got:?}");
        ids.push(got[0].to_owned());
    }
    assert_ne!(ids[0], ids[1], "each request its own id");
    // A value credproxy would not echo (a space, a quote) gets a new id; the client's field
    // still goes upstream as it came.
    let odd = "X-Request-Id: has space\"quote";
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/id", &[odd]).await)
    {
        assert_status(&r, 200);
        let got = r.head.get("credproxy-request-id").unwrap();
        assert!(!got.contains(' '), "{way}: {got}");
        assert_eq!(
            s.up.last().head.get("x-request-id"),
            Some("has space\"quote"),
            "{way}"
        );
    }
    // credproxy's own errors carry one too (an unknown host, on both transports).
    let mut c = s.client().await;
    let r = c
        .roundtrip(message(
            "GET /x HTTP/1.1",
            &["Host: unclaimed.example", &field],
            false,
            b"",
        ))
        .await;
    assert_json_error(&r, 403);
    assert_eq!(r.head.get("credproxy-request-id"), Some(id));
}

/// An upstream's own `credproxy-request-id` does not reach the client beside credproxy's.
#[tokio::test]
async fn an_upstreams_request_id_field_is_replaced() {
    let up = Upstream::answering(|_| {
        response("200 OK", &["credproxy-request-id: from-upstream"], b"ok")
    })
    .await;
    let s = Setup::start(up).await;
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/id", &["X-Request-Id: mine"]).await)
    {
        assert_status(&r, 200);
        assert_eq!(r.head.all("credproxy-request-id"), vec!["mine"], "{way}");
    }
}

/// A `{ file = }` caller secret is followed: the rotated secret admits without a reload, the
/// old one no longer does.
#[tokio::test]
async fn a_rotated_caller_secret_file_admits_without_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ci-key");
    std::fs::write(&file, "ci-old-S3CR3T\n").unwrap();
    let keys = format!(
        "[callers.ci]\nsecret = {{ file = \"{}\" }}\nproviders = [\"wire\"]\n",
        file.display()
    );
    let s = Setup::start_at(Upstream::answering(echo).await, "", "", &keys).await;
    let status_with = |secret: &'static str| {
        let main = s.proxy.main();
        async move {
            let mut c = Wire::client(main).await;
            c.roundtrip(request("GET", "/r", &[&basic("ci", secret)], b""))
                .await
                .status()
        }
    };
    assert_eq!(status_with("ci-old-S3CR3T").await, 200);
    std::fs::write(&file, "ci-new-S3CR3T\n").unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while status_with("ci-new-S3CR3T").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new secret was not taken"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status_with("ci-old-S3CR3T").await, 407);
}

/// curl with a caller's name and secret in the proxy URL (`-x http://ci:SECRET@...`): Basic,
/// admitted for its provider, refused (403) for another's; `-D -` shows the request id.
#[tokio::test]
async fn curl_with_a_caller_in_the_proxy_url() {
    if !crate::support::security::curl_installed() {
        eprintln!("curl is not installed; skipping");
        return;
    }
    let s = with_callers("").await;
    let curl = |user: &'static str, secret: &'static str, host: &'static str| {
        let proxy = format!("http://{user}:{secret}@{}", s.proxy.main());
        async move {
            let out = tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "-D", "-", "-x", &proxy])
                .arg(format!("http://{host}/curl?q=1"))
                .env_remove("http_proxy")
                .env_remove("HTTP_PROXY")
                .env_remove("no_proxy")
                .env_remove("NO_PROXY")
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = curl("ci", CI_SECRET, HOST).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("GET /curl?q=1 0"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("credproxy-request-id: "),
        "{out}"
    );
    let out = curl("agent", AGENT_SECRET, HOST).await;
    assert!(
        out.starts_with("HTTP/1.1 403") && out.contains("caller_denied"),
        "{out}"
    );
    let out = curl("agent", AGENT_SECRET, OTHER_HOST).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let out = curl("ci", "nope", HOST).await;
    assert!(out.starts_with("HTTP/1.1 407"), "{out}");
}

/// hyper's own refusals (a head over 64 KiB: 431), rewritten by credproxy, carry an id too.
#[tokio::test]
async fn a_refusal_before_routing_carries_a_request_id() {
    let s = Setup::echoing().await;
    let big = format!("X-Big: {}", "b".repeat(70 * 1024));
    let mut c = s.client().await;
    let r = c.roundtrip(request("GET", "/big", &[&big], b"")).await;
    assert_json_error(&r, 431);
    assert!(r.head.has("credproxy-request-id"), "{:?}", r.head);
}

/// A route with `require_auth = false` opts out of callers as of `proxy_auth`: anyone may use
/// its provider there, without a proof; the main listener still asks for one.
#[tokio::test]
async fn a_route_without_require_auth_admits_anyone_to_its_provider() {
    let up = Upstream::answering(echo).await;
    let keys = format!(
        "[callers.ci]\nsecret = \"{CI_SECRET}\"\nproviders = [\"wire\"]\n\n\
         [[routes]]\nlisten = \"127.0.0.1:0\"\nprovider = \"wire\"\nrequire_auth = false\n"
    );
    let s = Setup::start_at(up, "", "", &keys).await;
    let route = s.proxy.running.route_addr("wire").unwrap().tcp().unwrap();
    let mut c = Wire::client(route).await;
    let host = format!("Host: {route}");
    let r = c
        .roundtrip(message("GET /open HTTP/1.1", &[&host], false, b""))
        .await;
    assert_status(&r, 200);
    let mut c = s.client().await;
    assert_json_error(&c.roundtrip(get("/closed")).await, 407);
}

/// A route listener is its provider's: a `CONNECT` through it may name only that provider's
/// hosts (403 `caller_denied` otherwise), with `require_auth = false` (no proof, which would else
/// tunnel anyone to any provider's credential) and with a caller who may use the other provider.
#[tokio::test]
async fn a_connect_on_a_route_listener_may_name_only_its_provider() {
    for require_auth in [false, true] {
        let extra = format!(
            "\n[[routes]]\nlisten = \"127.0.0.1:0\"\nprovider = \"wire\"\nrequire_auth = {require_auth}\n"
        );
        let s = with_callers_and("", &extra).await;
        let route = s.proxy.running.route_addr("wire").unwrap().tcp().unwrap();
        let (agent, ci) = if require_auth {
            (
                format!("{}\r\n", basic("agent", AGENT_SECRET)),
                format!("{}\r\n", basic("ci", CI_SECRET)),
            )
        } else {
            (String::new(), String::new())
        };
        for target in [
            format!("{OTHER_HOST}:80"),
            "unclaimed.example:80".to_owned(),
        ] {
            let (head, _) = super::tunnel::connect(route, &target, &agent).await;
            assert!(
                head.starts_with("HTTP/1.1 403"),
                "require_auth = {require_auth}, {target}: {head}"
            );
        }
        let (head, tcp) = super::tunnel::connect(route, &format!("{HOST}:80"), &ci).await;
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "require_auth = {require_auth}: {head}"
        );
        let mut inner = Wire::server(tcp);
        let r = inner.roundtrip(get("/inside")).await;
        assert_status(&r, 200);
        assert_eq!(s.up.last().bearer(), TOKEN);
    }
}

/// Two `Proxy-Authorization` fields are refused (400) and of two `X-Request-Id` the first is
/// kept, alike on both transports (the fast path used to take the last of each).
#[tokio::test]
async fn a_second_proxy_authorization_or_request_id_is_decided_alike_on_both_transports() {
    let s = with_callers("").await;
    let ci = basic("ci", CI_SECRET);
    let agent = basic("agent", AGENT_SECRET);
    for fields in [[ci.as_str(), agent.as_str()], [agent.as_str(), ci.as_str()]] {
        for (way, r) in ["fast", "hyper"]
            .into_iter()
            .zip(both_ways(&s, "/two", &fields).await)
        {
            assert_json_error(&r, 400);
            assert!(
                r.text().contains("more than one Proxy-Authorization"),
                "{way}: {}",
                r.text()
            );
        }
    }
    assert!(s.up.seen().is_empty());
    let fields = [ci.as_str(), "X-Request-Id: first", "X-Request-Id: second"];
    for (way, r) in ["fast", "hyper"]
        .into_iter()
        .zip(both_ways(&s, "/ids", &fields).await)
    {
        assert_status(&r, 200);
        assert_eq!(r.head.all("credproxy-request-id"), vec!["first"], "{way}");
    }
}
