//! "API v1" end to end (issue 4; `shared/seeds/api-v1.md`), through credproxy against the fake.
//!
//! JSON token bodies sent with `Content-Type: application/json` exactly (the fake answers 415 to
//! anything else), a lowercase `bearer` token type, rotating refresh tokens never spent twice.
//! No default host: the test's deployment is `api.v1.test`. The authorization-code variant uses
//! [`credproxy::token::login_with_code`] with a code from the fake, standing in for
//! `credproxy login apiv1` (in progress elsewhere).

use crate::support;

use std::time::Duration;

use support::apiv1::{CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use support::proxy::{Harness, keys};
use support::{ApiV1Fake, Fake, TestCa};

const API: &str = "http://api.v1.test/api/v1/items?page=2";
const REDIRECT: &str = "https://app.example.com/callback";

fn providers(fake: &ApiV1Fake, grant: &str) -> String {
    let up = fake.url();
    format!(
        r#"[providers.apiv1]
preset = "api-v1"
hosts = ["api.v1.test"]
upstream = "{up}"
token_url = "{up}/oauth/token"
grant = "{grant}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
username = "{USERNAME}"
password = "{PASSWORD}"
redirect_uri = "{REDIRECT}"
"#
    )
}

/// Every token request was `application/json` with no parameters, and refreshes had RFC 6749
/// §6's fields.
fn assert_json_dialect(fake: &ApiV1Fake) {
    for r in fake.token_requests() {
        assert_eq!(r.path, "/oauth/token");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        let f = r.fields.as_ref().expect("a JSON body");
        if f["grant_type"] == "refresh_token" {
            assert_eq!(
                keys(f),
                ["client_id", "client_secret", "grant_type", "refresh_token"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiv1_password_grant_refreshes_and_restart() {
    let ca = TestCa::new();
    let fake = ApiV1Fake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    let h = Harness::new(&ca);
    let text = providers(&fake, "password");
    let proxy = h.start(&text).await;

    // First token by the password grant, then two refreshes; no request sees a 401. The reply
    // says `"token_type": "bearer"`; the upstream sees `Bearer` (checked by injected_bearer).
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(15), || {
            fake.refresh_grants()
        })
        .await;
    assert_eq!(fake.password_grants(), 1);
    assert!(seen.len() >= 2, "a refreshed token was served: {seen:?}");
    let grant = &fake.token_requests()[0];
    assert_eq!(
        keys(grant.fields.as_ref().expect("a JSON body")),
        [
            "client_id",
            "client_secret",
            "grant_type",
            "password",
            "username"
        ]
    );
    assert_json_dialect(&fake);
    assert_eq!(fake.refresh_reuse(), 0, "a rotated refresh token reused");
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());

    // Restart: after a long-lived token is issued, a new proxy serves it with no token call.
    fake.set_token_lifetime(Duration::from_secs(7200));
    let before = proxy
        .until_long_lived(API, "apiv1", &fake, 3600, || fake.refresh_grants())
        .await;
    let calls = fake.token_calls();
    proxy.stop().await;

    let proxy = h.start(&text).await;
    assert_eq!(proxy.get_ok(API, &fake).await, before);
    assert_eq!(fake.token_calls(), calls, "the restart reused the token");
    assert_eq!(fake.password_grants(), 1, "no new password grant");
    assert_eq!(fake.refresh_reuse(), 0);
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiv1_authorization_code_login_then_rotating_refreshes() {
    let ca = TestCa::new();
    let fake = ApiV1Fake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    let h = Harness::new(&ca);
    let text = providers(&fake, "authorization_code");
    let config = h.config(&text);

    // Stand-in for `credproxy login apiv1`: a code as the user's browser would bring it back.
    let code = fake.issue_code();
    let login = h
        .login(config.provider("apiv1").unwrap(), &code, &fake)
        .await;
    let exchange = &fake.token_requests()[0];
    assert_eq!(
        keys(exchange.fields.as_ref().expect("a JSON body")),
        [
            "client_id",
            "client_secret",
            "code",
            "grant_type",
            "redirect_uri"
        ]
    );

    let proxy = h.start(&text).await;
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(15), || {
            fake.refresh_grants()
        })
        .await;
    assert_eq!(seen[0], login.access_token.expose(), "the login's token");
    assert!(seen.len() >= 2, "a refreshed token was served: {seen:?}");
    assert_eq!(fake.authorization_code_grants(), 1);
    assert_eq!(fake.password_grants(), 0);
    assert_json_dialect(&fake);
    assert_eq!(fake.refresh_reuse(), 0, "a rotated refresh token reused");
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());
    proxy.stop().await;
}
