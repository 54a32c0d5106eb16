//! Issue 20 item 2, the rest of it: every secret credproxy holds follows its source, not only
//! the token. A provider's `headers` value, BlendVision's `org_id`, an oauth2 provider's
//! `token_headers` and `[proxy] proxy_auth`, each from a `{ file = }` rotated by an atomic
//! rename and by a rewrite in place, are used within 5 s, without a restart; a rotated value a
//! header can't carry is refused (the last one stays, and `/status` says why, never the value).
//! A header from a `{ command, ttl }` is re-run and each output sent.
//!
//! Real time (real sockets): each wait is [`poll`] for a condition with a deadline, the 5 s the
//! contract sets.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::proxy::{Harness, Proxy, poll};
use support::wire::*;
use support::{Fake, TestCa};

/// The contract's deadline for a rotated file.
const ROTATED: Duration = Duration::from_secs(5);

/// A new file renamed over `path` (a new inode), as `kubectl` or `mv` does.
fn rotate_by_rename(path: &Path, value: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{value}\n")).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The same inode truncated and written again.
fn rotate_in_place(path: &Path, value: &str) {
    std::fs::write(path, format!("{value}\n")).unwrap();
}

fn generation(proxy: &Proxy, name: &str) -> u64 {
    proxy.snapshot(name).credential.map_or(0, |c| c.generation)
}

/// What the upstream received as `field` for one request through the main listener.
async fn sent_field(proxy: &Proxy, up: &Upstream, field: &str) -> Option<String> {
    let mut c = Wire::client(proxy.main()).await;
    assert_status(&c.roundtrip(get("/v1/who")).await, 200);
    up.last().head.get(field).map(str::to_owned)
}

async fn last_error(proxy: &Proxy, name: &str) -> Option<String> {
    let status = proxy.admin("/status").await.json();
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .and_then(|p| p["last_error"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn a_rotated_header_file_is_injected_within_5_s_and_a_bad_value_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tenant");
    std::fs::write(&path, "tenant-1\n").unwrap();
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&TestCa::new());
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"static\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n\
             headers = {{ \"x-tenant\" = {{ file = \"{}\" }} }}\n",
            up.port(),
            path.display()
        ))
        .await;
    assert_eq!(
        sent_field(&proxy, &up, "x-tenant").await.as_deref(),
        Some("tenant-1")
    );

    for (how, rotate, value) in [
        ("renamed", rotate_by_rename as fn(&Path, &str), "tenant-2"),
        ("rewritten", rotate_in_place, "tenant-3"),
    ] {
        let g = generation(&proxy, "p");
        rotate(&path, value);
        poll(&format!("the {how} header file"), ROTATED, || {
            generation(&proxy, "p") > g
        })
        .await;
        assert_eq!(
            sent_field(&proxy, &up, "x-tenant").await.as_deref(),
            Some(value),
            "{how}"
        );
        assert_eq!(up.last().bearer(), TOKEN, "the token is unchanged");
    }

    // A value a header can't carry: refused, the last one still sent, /status says why.
    rotate_in_place(&path, "tenant-4\nx-evil: S3CR3T");
    let mut error = None;
    let waited = tokio::time::Instant::now();
    while error.is_none() {
        assert!(
            waited.elapsed() < ROTATED,
            "no last_error for the bad value"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        error = last_error(&proxy, "p").await;
    }
    let error = error.unwrap();
    assert!(
        error.starts_with("providers.p.headers.x-tenant: the new value contains a newline")
            && error.ends_with("the last value is still used"),
        "{error}"
    );
    assert!(
        !error.contains("S3CR3T") && !error.contains("tenant-4"),
        "{error}"
    );
    assert_eq!(
        sent_field(&proxy, &up, "x-tenant").await.as_deref(),
        Some("tenant-3")
    );
    assert!(!up.last().head.has("x-evil"));

    // Fixed: used, and the error is gone.
    let g = generation(&proxy, "p");
    rotate_by_rename(&path, "tenant-5");
    poll("the fixed header file", ROTATED, || {
        generation(&proxy, "p") > g
    })
    .await;
    assert_eq!(
        sent_field(&proxy, &up, "x-tenant").await.as_deref(),
        Some("tenant-5")
    );
    assert_eq!(last_error(&proxy, "p").await, None);
}

/// An oauth2 provider: a rotated `headers` file is republished with the token it holds (no
/// token call), and a rotated `token_headers` file goes with the next token request.
#[tokio::test]
async fn an_oauth2_providers_header_files_are_followed_without_a_token_call() {
    use support::OAuth2Fake;
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let o = fake.options();
    let dir = tempfile::tempdir().unwrap();
    let (header, token_header) = (dir.path().join("h"), dir.path().join("th"));
    std::fs::write(&header, "h-1\n").unwrap();
    std::fs::write(&token_header, "th-1\n").unwrap();
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"oauth2\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{port}\"\ntoken_url = \"{url}/token\"\n\
             grant = \"client_credentials\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n\
             headers = {{ \"x-h\" = {{ file = \"{h}\" }} }}\n\
             token_headers = {{ \"x-th\" = {{ file = \"{th}\" }} }}\n",
            port = up.port(),
            url = fake.url(),
            id = o.client_id,
            secret = o.client_secret,
            h = header.display(),
            th = token_header.display(),
        ))
        .await;
    poll("the first token", ROTATED, || generation(&proxy, "p") > 0).await;
    assert_eq!(sent_field(&proxy, &up, "x-h").await.as_deref(), Some("h-1"));
    let bearer = up.last().bearer();
    let calls = fake.token_calls();
    assert_eq!(
        fake.token_requests()
            .last()
            .unwrap()
            .extra
            .get("x-th")
            .map(String::as_str),
        Some("th-1")
    );

    for (how, rotate, value) in [
        ("renamed", rotate_by_rename as fn(&Path, &str), "h-2"),
        ("rewritten", rotate_in_place, "h-3"),
    ] {
        let g = generation(&proxy, "p");
        rotate(&header, value);
        poll(&format!("the {how} header file"), ROTATED, || {
            generation(&proxy, "p") > g
        })
        .await;
        assert_eq!(
            sent_field(&proxy, &up, "x-h").await.as_deref(),
            Some(value),
            "{how}"
        );
        assert_eq!(up.last().bearer(), bearer, "the same token");
    }
    assert_eq!(fake.token_calls(), calls, "no token call for a header");

    assert_eq!(
        fake.token_requests()
            .last()
            .unwrap()
            .extra
            .get("x-th")
            .map(String::as_str),
        Some("th-1"),
        "no token request since"
    );
}

/// An oauth2 provider's `token_headers` value from a file: read at each token request, so a
/// rotated one goes with the next (tokens living 4 s are refreshed every 2 s or so).
#[tokio::test]
async fn a_rotated_token_headers_file_goes_with_the_next_token_request() {
    use support::OAuth2Fake;
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    let o = fake.options();
    let dir = tempfile::tempdir().unwrap();
    let token_header = dir.path().join("th");
    std::fs::write(&token_header, "th-1\n").unwrap();
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"oauth2\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{port}\"\ntoken_url = \"{url}/token\"\n\
             grant = \"client_credentials\"\nclient_id = \"{id}\"\nclient_secret = \"{secret}\"\n\
             token_headers = {{ \"x-th\" = {{ file = \"{th}\" }} }}\n",
            port = up.port(),
            url = fake.url(),
            id = o.client_id,
            secret = o.client_secret,
            th = token_header.display(),
        ))
        .await;
    poll("the first token", ROTATED, || generation(&proxy, "p") > 0).await;
    let last_sent = || {
        fake.token_requests()
            .last()
            .and_then(|r| r.extra.get("x-th").cloned())
    };
    assert_eq!(last_sent().as_deref(), Some("th-1"));
    for (how, rotate, value) in [
        ("renamed", rotate_by_rename as fn(&Path, &str), "th-2"),
        ("rewritten", rotate_in_place, "th-3"),
    ] {
        rotate(&token_header, value);
        // The file is seen within its poll (1 s), the next refresh within ~2 s after.
        poll(
            &format!("a token request with the {how} value"),
            2 * ROTATED,
            || last_sent().as_deref() == Some(value),
        )
        .await;
    }
}

/// `[proxy] proxy_auth` from a file: after each rotation the old secret is refused with 407
/// and the new one accepted, on both transports (the fast path, and hyper's for `Expect`); a
/// failed re-read keeps the last one and shows as `proxy_auth_error` in `/status`.
#[tokio::test]
async fn a_rotated_proxy_auth_file_refuses_the_old_secret_and_accepts_the_new() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy_auth");
    std::fs::write(&path, "pa-secret-1\n").unwrap();
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&TestCa::new());
    let proxy = harness
        .start(&format!(
            "proxy_auth = {{ file = \"{}\" }}\n\n[providers.p]\npreset = \"static\"\n\
             hosts = [\"{HOST}\"]\nupstream = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n",
            path.display(),
            up.port()
        ))
        .await;
    let status_with = |secret: &'static str, expect: bool| {
        let addr = proxy.main();
        async move {
            let auth = format!("Proxy-Authorization: Bearer {secret}");
            let mut fields = vec![auth.as_str()];
            if expect {
                fields.push("Expect: 100-continue");
            }
            let mut c = Wire::client(addr).await;
            c.roundtrip(request("GET", "/v1/who", &fields, b""))
                .await
                .status()
        }
    };
    for expect in [false, true] {
        assert_eq!(status_with("pa-secret-1", expect).await, 200);
        assert_eq!(status_with("wrong", expect).await, 407);
    }

    let mut old = "pa-secret-1";
    for (how, rotate, new) in [
        (
            "renamed",
            rotate_by_rename as fn(&Path, &str),
            "pa-secret-2",
        ),
        ("rewritten", rotate_in_place, "pa-secret-3"),
    ] {
        rotate(&path, new);
        let start = tokio::time::Instant::now();
        while status_with(old, false).await != 407 {
            assert!(
                start.elapsed() < ROTATED,
                "the old secret still accepted 5 s after the file was {how}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "proxy_auth {how}: the old secret refused after {:?}",
            start.elapsed()
        );
        for expect in [false, true] {
            assert_eq!(status_with(old, expect).await, 407, "{how}, old");
            assert_eq!(status_with(new, expect).await, 200, "{how}, new");
        }
        old = new;
    }

    // A rotation that fails (the file empty half-way): the last secret is still required, and
    // /status says why, never a value.
    rotate_in_place(&path, "");
    let start = tokio::time::Instant::now();
    let error = loop {
        let status = proxy.admin("/status").await.json();
        if let Some(e) = status["proxy_auth_error"].as_str() {
            break e.to_owned();
        }
        assert!(start.elapsed() < ROTATED, "no proxy_auth_error: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        error.starts_with("proxy.proxy_auth: secret file ")
            && error.ends_with("is empty; the last value is still used"),
        "{error}"
    );
    assert!(!error.contains("pa-secret"), "{error}");
    assert_eq!(
        status_with(old, false).await,
        200,
        "the last secret still works"
    );
    rotate_by_rename(&path, "pa-secret-4");
    let start = tokio::time::Instant::now();
    while !proxy.admin("/status").await.json()["proxy_auth_error"].is_null() {
        assert!(
            start.elapsed() < ROTATED,
            "proxy_auth_error stays after the fix"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status_with("pa-secret-4", false).await, 200);
    assert_eq!(status_with(old, false).await, 407);
}

/// BlendVision's configured `org_id` from a file: the rotated id is sent as `x-bv-org-id` with
/// the same API token.
#[tokio::test]
async fn a_rotated_blendvision_org_id_file_is_sent_without_a_restart() {
    use support::BlendVisionFake;
    use support::proxy::api_headers;
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca)
        .await
        .with_static_token("bv-console-token");
    fake.set_org_id("org-one");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("org_id");
    std::fs::write(&file, "org-one\n").unwrap();
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "[providers.bv]\npreset = \"blendvision\"\nupstream = \"{}\"\n\
             api_token = \"bv-console-token\"\norg_id = {{ file = \"{}\" }}\n",
            fake.url(),
            file.display()
        ))
        .await;
    let api = "http://api.one.blendvision.com/bv/cms/v1/videos";
    let r = proxy.get(api).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(api_headers(&fake)["x-bv-org-id"], "org-one");

    for (how, rotate, org) in [
        ("renamed", rotate_by_rename as fn(&Path, &str), "org-two"),
        ("rewritten", rotate_in_place, "org-333"),
    ] {
        let g = generation(&proxy, "bv");
        fake.set_org_id(org);
        rotate(&file, org);
        poll(&format!("the {how} org id file"), ROTATED, || {
            generation(&proxy, "bv") > g
        })
        .await;
        let r = proxy.get(api).await;
        assert_eq!(r.status, 200, "{how}: {}", r.text());
        let h = api_headers(&fake);
        assert_eq!(h["x-bv-org-id"], org, "{how}");
        assert_eq!(support::proxy::injected_bearer(&h), "bv-console-token");
    }
    assert_eq!(
        fake.org_calls(),
        0,
        "a configured org id is never looked up"
    );
}

/// A `headers` value from `{ command, ttl }`: re-run before its ttl, each new output sent with
/// the same token.
#[tokio::test]
async fn a_header_from_a_command_is_rerun_and_each_output_sent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let command = format!(
        "{{ command = [\"sh\", \"-c\", \"n=$(( $(cat {d}/count 2>/dev/null || echo 0) + 1 )); \
         echo $n > {d}/count; echo tenant-$n\"], ttl = \"1s\" }}"
    );
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&TestCa::new());
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"static\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n\
             headers = {{ \"x-tenant\" = {command} }}\n",
            up.port()
        ))
        .await;
    let first = sent_field(&proxy, &up, "x-tenant").await.unwrap();
    assert!(first.starts_with("tenant-"), "{first}");
    let g = generation(&proxy, "p");
    poll("a re-run of the header's command", ROTATED, || {
        generation(&proxy, "p") > g
    })
    .await;
    let second = sent_field(&proxy, &up, "x-tenant").await.unwrap();
    assert!(
        second.starts_with("tenant-") && second != first,
        "{first} then {second}"
    );
    assert_eq!(up.last().bearer(), TOKEN);
}
