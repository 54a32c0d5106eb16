//! Issue 20 items 2 and 3: a running credproxy follows its secrets. A `{ file = }` token rotated
//! by an atomic rename and by a rewrite in place is used within 5 s, without a restart; a
//! `{ command, ttl }` token whose output changes between runs is re-run before its ttl, and a
//! failing re-run keeps the last value and shows as the provider's `last_error` in `/status`.
//!
//! Real time (real sockets and real child processes): each wait is [`poll`] for a condition
//! with a deadline, the one the contract sets where it sets one (5 s for a file).

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::TestCa;
use support::proxy::{Harness, Proxy, poll};
use support::wire::*;
use tokio::time::Instant;

/// credproxy with a static provider `p` claiming [`HOST`] with `token` (a TOML value), in front
/// of an echoing upstream.
async fn start(token: &str) -> (Harness, Proxy, Upstream) {
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&TestCa::new());
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"static\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{}\"\ntoken = {token}\n",
            up.port()
        ))
        .await;
    (harness, proxy, up)
}

/// The token the upstream received for one request.
async fn sent_token(proxy: &Proxy, up: &Upstream) -> String {
    let mut c = Wire::client(proxy.main()).await;
    assert_status(&c.roundtrip(get("/v1/who")).await, 200);
    up.last().bearer()
}

fn generation(proxy: &Proxy) -> u64 {
    proxy.snapshot("p").credential.map_or(0, |c| c.generation)
}

/// Wait (at most 5 s, the contract) for a credential newer than `after`; returns how long it took.
async fn next_credential(proxy: &Proxy, after: u64, what: &str) -> Duration {
    let start = Instant::now();
    poll(what, Duration::from_secs(5), || generation(proxy) > after).await;
    start.elapsed()
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_within_5_s_whichever_way_it_is_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "file-token-1\n").unwrap();
    let (_h, proxy, up) = start(&format!("{{ file = \"{}\" }}", path.display())).await;
    assert_eq!(sent_token(&proxy, &up).await, "file-token-1");

    // Atomic: a new file renamed over the old one (a new inode).
    let g = generation(&proxy);
    let tmp = dir.path().join(".token.new");
    std::fs::write(&tmp, "file-token-2\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let took = next_credential(&proxy, g, "the renamed file to be used").await;
    assert_eq!(sent_token(&proxy, &up).await, "file-token-2");
    eprintln!("atomic rename picked up in {took:?}");

    // In place: the same inode truncated and written again, to a value of the same length.
    let g = generation(&proxy);
    std::fs::write(&path, "file-token-3\n").unwrap();
    let took = next_credential(&proxy, g, "the rewritten file to be used").await;
    assert_eq!(sent_token(&proxy, &up).await, "file-token-3");
    eprintln!("in-place rewrite picked up in {took:?}");
}

/// A script printing `cmd-token-N`, N counting its runs (in `dir/count`); while `dir/fail`
/// exists it prints a would-be secret on both streams and exits 4.
fn counting_script(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "{{ command = [\"sh\", \"-c\", \"if [ -e {d}/fail ]; then echo half-S3CR3T; echo S3CR3T >&2; exit 4; fi; \
         n=$(( $(cat {d}/count 2>/dev/null || echo 0) + 1 )); echo $n > {d}/count; echo cmd-token-$n\"], ttl = \"1s\" }}"
    )
}

async fn status_of_p(proxy: &Proxy) -> serde_json::Value {
    let status = proxy.admin("/status").await.json();
    status["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p")
        .cloned()
        .unwrap()
}

#[tokio::test]
async fn a_command_token_is_rerun_before_its_ttl_and_a_failure_keeps_the_last_value() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, proxy, up) = start(&counting_script(dir.path())).await;
    // Run once at start (the config check), before any request.
    let first = sent_token(&proxy, &up).await;
    assert!(first.starts_with("cmd-token-"), "{first}");

    // ttl 1 s: re-run at 0.8 s, each run's output used.
    let g = generation(&proxy);
    next_credential(&proxy, g, "a re-run of the command").await;
    let second = sent_token(&proxy, &up).await;
    assert!(
        second.starts_with("cmd-token-") && second != first,
        "{first} then {second}"
    );

    // Failing re-runs: the last value is still sent, and /status says why (never the output).
    std::fs::write(dir.path().join("fail"), "").unwrap();
    let failed = Instant::now();
    let mut status = serde_json::Value::Null;
    while status["last_error"].is_null() {
        assert!(
            failed.elapsed() < Duration::from_secs(5),
            "no last_error: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = status_of_p(&proxy).await;
    }
    let error = status["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        "providers.p.token: the command `sh` failed (exit status: 4); run it in a terminal to see why; the last value is still used"
    );
    assert!(!status.to_string().contains("S3CR3T"), "{status}");
    let kept = proxy.snapshot("p").credential.unwrap().generation;
    let held = sent_token(&proxy, &up).await;
    assert!(
        held.starts_with("cmd-token-"),
        "the last value is sent: {held}"
    );
    assert_eq!(generation(&proxy), kept, "no new credential while it fails");

    // Recovered: a new value, and the error is gone.
    std::fs::remove_file(dir.path().join("fail")).unwrap();
    next_credential(&proxy, kept, "a successful re-run after the failures").await;
    let after = sent_token(&proxy, &up).await;
    assert!(
        after != held && after.starts_with("cmd-token-"),
        "{held} then {after}"
    );
    let recovered = Instant::now();
    while !status_of_p(&proxy).await["last_error"].is_null() {
        assert!(
            recovered.elapsed() < Duration::from_secs(5),
            "last_error stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An OAuth 2.0 provider's `client_secret` from a file it follows: refused with the wrong one,
/// it recovers within 5 s of the file being fixed (not at the hourly retry of a refusal), and
/// the next token call sends the new secret.
#[tokio::test]
async fn a_fixed_client_secret_file_is_used_at_once_by_a_refused_provider() {
    use support::{Fake, OAuth2Fake};
    let ca = TestCa::new();
    let fake = OAuth2Fake::start(&ca).await;
    let o = fake.options();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client_secret");
    std::fs::write(&secret, "not-the-secret\n").unwrap();
    let up = Upstream::answering(echo).await;
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "[providers.p]\npreset = \"oauth2\"\nhosts = [\"{HOST}\"]\n\
             upstream = \"http://127.0.0.1:{port}\"\ntoken_url = \"{url}/token\"\n\
             grant = \"client_credentials\"\nclient_id = \"{id}\"\n\
             client_secret = {{ file = \"{path}\" }}\n",
            port = up.port(),
            url = fake.url(),
            id = o.client_id,
            path = secret.display(),
        ))
        .await;
    poll(
        "the wrong secret to be refused",
        Duration::from_secs(5),
        || proxy.snapshot("p").phase == credproxy::credential::Phase::Failing,
    )
    .await;
    assert!(proxy.snapshot("p").credential.is_none());

    std::fs::write(&secret, format!("{}\n", o.client_secret)).unwrap();
    let took = next_credential(&proxy, 0, "a token with the fixed secret").await;
    eprintln!("fixed client_secret used after {took:?}");
    let token = sent_token(&proxy, &up).await;
    assert!(!token.is_empty());
    assert!(
        fake.last_rejection().is_some(),
        "the first call was refused"
    );
}

/// BlendVision's console token from a file it follows: the rotated token is sent, and the
/// organization found at start is kept (no second lookup).
#[tokio::test]
async fn a_rotated_blendvision_api_token_file_is_sent_without_a_restart() {
    use support::proxy::on_fake;
    use support::{BlendVisionFake, Fake};
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca)
        .await
        .with_static_token("bv-console-token-one")
        .with_static_token("bv-console-token-two");
    fake.set_org_id("org-e2e-20");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bv_token");
    std::fs::write(&file, "bv-console-token-one\n").unwrap();
    let up = fake.url();
    let org_url = on_fake(
        &up,
        &"https://api.one.blendvision.com/bv/org/v1/organizations"
            .parse()
            .unwrap(),
    );
    let harness = Harness::new(&ca);
    let proxy = harness
        .start(&format!(
            "[providers.bv]\npreset = \"blendvision\"\nupstream = \"{up}\"\norg_url = \"{org_url}\"\n\
             api_token = {{ file = \"{}\" }}\n",
            file.display()
        ))
        .await;
    let api = "http://api.one.blendvision.com/bv/cms/v1/videos";
    let bearer = || {
        let h = fake.last_api_headers().expect("the API was called");
        support::proxy::injected_bearer(&h)
    };
    let r = proxy.get(api).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bearer(), "bv-console-token-one");

    let g = proxy.snapshot("bv").credential.unwrap().generation;
    std::fs::write(&file, "bv-console-token-two\n").unwrap();
    poll("the rotated console token", Duration::from_secs(5), || {
        proxy
            .snapshot("bv")
            .credential
            .is_some_and(|c| c.generation > g)
    })
    .await;
    let r = proxy.get(api).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(bearer(), "bv-console-token-two");
    assert_eq!(
        fake.org_calls(),
        1,
        "the organization found at start was kept"
    );
}
