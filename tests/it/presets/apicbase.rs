//! Apicbase end to end (issue 4; `shared/seeds/apicbase.md`), through credproxy against the fake.
//!
//! The login is what `credproxy login apicbase` will do (that command is in progress elsewhere):
//! the test opens the authorize URL credproxy builds, follows the fake's redirect to take the
//! code (it lives one minute), and exchanges it at once with
//! [`credproxy::token::login_with_code`] into the token store before the proxy starts.

use crate::support;

use std::time::Duration;

use support::apicbase::{CLIENT_ID, CLIENT_SECRET};
use support::proxy::{Harness, api_headers, code_of, consent, defaults, keys, oauth, on_fake};
use support::{ApicbaseFake, Fake, TestCa};

const REDIRECT: &str = "http://127.0.0.1:8766/callback";
/// The preset's default host, asked for in absolute form as an `HTTP_PROXY` client does.
const API: &str = "http://api.apicbase.com/api/v1/products/recipes/";
const FORM: &str = "application/x-www-form-urlencoded";

/// Every URL on the fake, at the preset's own paths (the trailing slashes included).
fn providers(fake: &ApicbaseFake) -> String {
    let d = defaults(
        "[providers.apicbase]\npreset = \"apicbase\"\nclient_id = \"c\"\nclient_secret = \"s\"\n",
    );
    let o = oauth(&d, "apicbase");
    assert_eq!(
        d.provider("apicbase").unwrap().upstream.host,
        "api.apicbase.com"
    );
    let up = fake.url();
    format!(
        r#"[providers.apicbase]
preset = "apicbase"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "{REDIRECT}"
scopes = ["library", "sales"]
upstream = "{up}"
token_url = "{token}"
authorize_url = "{authorize}"
introspect_url = "{introspect}"
"#,
        token = on_fake(&up, &o.token_url),
        authorize = on_fake(&up, o.authorize_url.as_ref().expect("an authorize URL")),
        introspect = on_fake(&up, o.introspect_url.as_ref().expect("an introspect URL")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apicbase_login_refreshes_introspection_and_restart() {
    let ca = TestCa::new();
    let fake = ApicbaseFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(4));
    let h = Harness::new(&ca);
    let text = providers(&fake);
    let config = h.config(&text);

    // Stand-in for `credproxy login apicbase`: authorize, follow the redirect, exchange at once.
    let cfg = oauth(&config, "apicbase");
    let location = consent(&ca, &cfg).await;
    let asked = fake.last_authorize().expect("an authorize request");
    assert!(
        asked.raw_query.contains("scope=library+sales"),
        "scopes joined with spaces, sent as `+`: {}",
        asked.raw_query
    );
    let login = h
        .login(
            config.provider("apicbase").unwrap(),
            &code_of(&location),
            &fake,
        )
        .await;
    assert_eq!(fake.authorization_code_grants(), 1);
    assert_eq!(
        fake.introspect_calls(),
        0,
        "the reply had expires_in: no need"
    );
    let exchange = &fake.token_requests()[0];
    assert_eq!(exchange.path, "/oauth/token/", "the trailing slash");
    assert_eq!(exchange.content_type.as_deref(), Some(FORM));
    assert_eq!(
        keys(exchange.fields.as_ref().expect("a form body")),
        [
            "client_id",
            "client_secret",
            "code",
            "grant_type",
            "redirect_uri"
        ]
    );

    // Start: the stored token is confirmed by introspection, then served.
    let proxy = h.start(&text).await;
    assert_eq!(
        proxy.get_ok(API, &fake).await,
        login.access_token.expose(),
        "the login's token"
    );
    assert_eq!(fake.introspect_calls(), 1, "introspection at start");

    // Two refreshes before expiry, no request sees a 401.
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(15), || {
            fake.refresh_grants()
        })
        .await;
    assert!(seen.len() >= 2, "a refreshed token was served: {seen:?}");
    for r in &fake.token_requests()[1..] {
        assert_eq!(r.path, "/oauth/token/");
        assert_eq!(r.content_type.as_deref(), Some(FORM));
        let f = r.fields.as_ref().expect("a form body");
        assert_eq!(
            keys(f),
            ["client_id", "client_secret", "grant_type", "refresh_token"]
        );
        assert_eq!(f["grant_type"], "refresh_token");
    }

    // Replies without expires_in: each new token's expiry comes from introspection, and it is
    // what schedules the next refresh (without it, the 1 h default_lifetime would).
    fake.set_send_expires_in(false);
    let (refreshes, introspections) = (fake.refresh_grants(), fake.introspect_calls());
    proxy
        .request_until(
            API,
            "two refreshes without expires_in",
            Duration::from_secs(15),
            || api_headers(&fake),
            || fake.refresh_grants() >= refreshes + 2,
        )
        .await;
    assert!(
        fake.introspect_calls() >= introspections + 2,
        "introspection supplied each expiry"
    );
    assert_eq!(fake.refresh_reuse(), 0);
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());

    // Restart: after a long-lived token is issued, a new proxy introspects the stored token and
    // serves it, with no token call.
    fake.set_send_expires_in(true);
    fake.set_token_lifetime(Duration::from_secs(120));
    let before = proxy
        .until_long_lived(API, "apicbase", &fake, 60, || fake.refresh_grants())
        .await;
    let (calls, introspections) = (fake.token_calls(), fake.introspect_calls());
    proxy.stop().await;

    let proxy = h.start(&text).await;
    assert_eq!(proxy.get_ok(API, &fake).await, before);
    assert_eq!(fake.token_calls(), calls, "the restart reused the token");
    assert_eq!(
        fake.introspect_calls(),
        introspections + 1,
        "introspection at start"
    );
    proxy.stop().await;

    // The token expires while credproxy is down: at start introspection says it is no longer
    // active, and a refresh after expiry still works.
    let expired_at = fake.clock().now_wall();
    fake.tokens().set_expiry(&before, Some(expired_at));
    assert!(!fake.is_valid_token(&before));
    let refreshes = fake.refresh_grants();
    let proxy = h.start(&text).await;
    assert_ne!(proxy.get_ok(API, &fake).await, before);
    assert_eq!(
        fake.refresh_grants(),
        refreshes + 1,
        "refreshed after expiry"
    );
    assert_eq!(fake.authorization_code_grants(), 1, "no new login");
    assert_eq!(fake.refresh_reuse(), 0);
    proxy.stop().await;
}
