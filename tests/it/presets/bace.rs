//! BACE end to end (issue 4; `shared/seeds/bace.md`), through credproxy against the fake.
//!
//! Password grant posted as `multipart/form-data`; a refresh is posted WITH the current access
//! token as Bearer and answers `{"refreshed": true, "expires": "..."}`, which extends the SAME
//! token; an expired token falls back to the password grant; and BACE's 401 for "no permission"
//! must not set off a storm of token calls.

use crate::support;

use std::time::Duration;

use credproxy::credential::MIN_TOKEN_AGE_FOR_401_REFRESH;
use support::bace::{CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use support::proxy::{Harness, Proxy, defaults, keys, oauth, on_fake, poll};
use support::{BaceFake, Fake, TestCa};

/// The preset's default host, asked for in absolute form as an `HTTP_PROXY` client does.
const API: &str = "http://dashboard.bace-iot.com/api/v2/physical-device";
/// BACE answers 401 here to a valid token: the account lacks the permission.
const FORBIDDEN: &str = "http://dashboard.bace-iot.com/api/v2/forbidden/alarms";

fn providers(fake: &BaceFake, extra: &str) -> String {
    let d = defaults(
        "[providers.bace]\npreset = \"bace\"\nclient_id = \"c\"\nclient_secret = \"s\"\nusername = \"u\"\npassword = \"p\"\n",
    );
    assert_eq!(
        d.provider("bace").unwrap().upstream.host,
        "dashboard.bace-iot.com"
    );
    let up = fake.url();
    format!(
        r#"[providers.bace]
preset = "bace"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
username = "{USERNAME}"
password = "{PASSWORD}"
upstream = "{up}"
token_url = "{token}"
{extra}
"#,
        token = on_fake(&up, &oauth(&d, "bace").token_url),
    )
}

/// Wait until credproxy's published expiry for `bace` is within 4 s of the fake's for `token`
/// (the fake may extend again meanwhile; either way, credproxy follows its clock).
async fn expiry_follows_the_fake(proxy: &Proxy, fake: &BaceFake, token: &str, what: &str) {
    let server_expiry = fake.token_expiry(token).flatten().expect("an expiry");
    let server_unix = jiff::Timestamp::try_from(server_expiry)
        .unwrap()
        .as_second();
    poll(what, Duration::from_secs(5), || {
        let e = proxy.snapshot("bace").expires_at_unix;
        e.is_some_and(|e| (e - server_unix).abs() <= 4)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bace_password_grant_extensions_fallback_and_restart() {
    let ca = TestCa::new();
    let fake = BaceFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    fake.set_refresh_extension(Duration::from_secs(4));
    let h = Harness::new(&ca);
    let text = providers(&fake, "");
    let proxy = h.start(&text).await;

    // First token (password grant), then two refreshes before expiry; no request sees a 401.
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(15), || {
            fake.refresh_grants()
        })
        .await;
    assert_eq!(fake.password_grants(), 1);
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());
    // `{"refreshed": true}` extends the same token: it never changes.
    assert_eq!(
        seen.len(),
        1,
        "one access token across the refreshes: {seen:?}"
    );
    let token = seen[0].clone();
    assert_eq!(fake.tokens_issued(), 1);

    // Multipart everywhere; the refresh carries the current access token as Bearer.
    let reqs = fake.token_requests();
    for r in &reqs {
        assert_eq!(r.path, "/oauth2/token");
        let ct = r.content_type.as_deref().unwrap_or_default();
        assert!(ct.starts_with("multipart/form-data; boundary="), "{ct}");
    }
    let grant = reqs[0].fields.as_ref().expect("a multipart body");
    assert_eq!(
        keys(grant),
        [
            "client_id",
            "client_secret",
            "grant_type",
            "password",
            "username"
        ]
    );
    assert_eq!(grant["grant_type"], "password");
    assert!(!reqs[0].bearer_auth);
    for r in &reqs[1..] {
        let f = r.fields.as_ref().expect("a multipart body");
        assert_eq!(
            keys(f),
            ["client_id", "client_secret", "grant_type", "refresh_token"]
        );
        assert_eq!(f["grant_type"], "refresh_token");
        assert!(r.bearer_auth, "the refresh carries the access token");
    }

    // The naive `expires` became the token's expiry: credproxy's and BACE's agree.
    expiry_follows_the_fake(
        &proxy,
        &fake,
        &token,
        "credproxy to adopt the extended expiry",
    )
    .await;

    // Restart: after a fresh extension, a new proxy on the same store serves the same token
    // with no token call at all.
    fake.set_refresh_extension(Duration::from_secs(8));
    let refreshes = fake.refresh_grants();
    poll("an 8 s extension", Duration::from_secs(10), || {
        fake.refresh_grants() > refreshes
    })
    .await;
    poll("credproxy to publish it", Duration::from_secs(5), || {
        proxy
            .snapshot("bace")
            .expires_at_unix
            .is_some_and(|e| e >= jiff::Timestamp::now().as_second() + 6)
    })
    .await;
    let calls = fake.token_calls();
    proxy.stop().await;
    let proxy = h.start(&text).await;
    assert_eq!(proxy.get_ok(API, &fake).await, token);
    assert_eq!(fake.token_calls(), calls, "the restart reused the token");
    assert_eq!(fake.password_grants(), 1, "no new password grant");
    proxy.stop().await;

    // Down while the token expires: the refresh (Bearer of an expired token) is refused with
    // 401, and credproxy falls back to the password grant.
    poll(
        "the stored token to expire at BACE",
        Duration::from_secs(12),
        || !fake.is_valid_token(&token),
    )
    .await;
    let refreshes = fake.refresh_grants();
    let proxy = h.start(&text).await;
    let fresh = proxy.get_ok(API, &fake).await;
    assert_ne!(fresh, token);
    assert_eq!(
        fake.refresh_grants(),
        refreshes + 1,
        "the refresh was tried first"
    );
    assert_eq!(fake.password_grants(), 2, "then the password grant");
    assert_eq!(
        fake.last_rejection().as_deref().map(|r| &r[..3]),
        Some("401")
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bace_no_permission_401s_cause_at_most_one_token_call() {
    let ca = TestCa::new();
    let fake = BaceFake::start(&ca).await;
    // Long-lived: no scheduled refresh during the test.
    fake.set_token_lifetime(Duration::from_secs(3600));
    let h = Harness::new(&ca);
    let proxy = h.start(&providers(&fake, "")).await;
    let token = proxy.get_ok(API, &fake).await;

    // A 401 to a token this young is not taken for expiry at all; wait until it is old enough
    // that credproxy would consider a refresh: the worst case for a storm.
    tokio::time::sleep(MIN_TOKEN_AGE_FOR_401_REFRESH + Duration::from_millis(500)).await;
    let calls = fake.token_calls();

    // 50 calls to an endpoint the account may not use, 25 at a time.
    for _ in 0..2 {
        let batch: Vec<_> = (0..25).map(|_| proxy.get(FORBIDDEN)).collect();
        for r in futures_util::future::join_all(batch).await {
            assert_eq!(r.status, 401, "BACE's own answer goes back: {}", r.text());
            assert!(
                r.text().contains("not allowed"),
                "the upstream's body: {}",
                r.text()
            );
        }
        // And the API still works with the token in between.
        assert_eq!(proxy.get_ok(API, &fake).await, token);
    }
    assert!(fake.forbidden_calls() >= 50);
    let extra = fake.token_calls() - calls;
    eprintln!("token calls caused by 50 no-permission 401s: {extra}");
    assert!(
        extra <= 1,
        "50 no-permission 401s caused {extra} token calls"
    );
    assert_eq!(fake.password_grants(), 1);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bace_naive_expires_in_the_configured_time_zone() {
    let ca = TestCa::new();
    let fake = BaceFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    fake.set_refresh_extension(Duration::from_secs(4));
    // Tokyo: nine hours from UTC all year, so a zone mix-up is hours off, never a coincidence.
    fake.set_expires_timezone(jiff::tz::TimeZone::get("Asia/Tokyo").unwrap());
    let h = Harness::new(&ca);
    let proxy = h
        .start(&providers(&fake, "expires_timezone = \"Asia/Tokyo\""))
        .await;
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(15), || {
            fake.refresh_grants()
        })
        .await;
    assert_eq!(seen.len(), 1, "one access token: {seen:?}");
    expiry_follows_the_fake(
        &proxy,
        &fake,
        &seen[0],
        "credproxy to read the naive expiry in Tokyo time",
    )
    .await;
    assert_eq!(fake.password_grants(), 1);
    proxy.stop().await;
}
