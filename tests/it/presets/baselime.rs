//! Baselime end to end (issue 4; `shared/seeds/baselime.md`), through credproxy against the fake.
//!
//! The login is what `credproxy login baselime` will do (that command is in progress elsewhere):
//! the test opens the authorize URL credproxy builds, follows the fake's redirect to take the
//! code, and hands it to [`credproxy::token::login_with_code`] with its own engine context on the
//! proxy's token store, while the proxy runs. The running refresher picks the login up from the
//! store.

use crate::support;

use std::time::Duration;

use credproxy::credential::Phase;
use support::baselime::{API_KEY, CLIENT_ID, CLIENT_SECRET};
use support::client::query_param;
use support::proxy::{Harness, code_of, consent, defaults, keys, oauth, on_fake, poll};
use support::{BaselimeFake, Fake, TestCa};

const REDIRECT: &str = "http://127.0.0.1:8765/callback";
/// The preset's default host, asked for in absolute form as an `HTTP_PROXY` client does.
const API: &str = "http://api.baselime.io/v1/services?limit=5";

/// Every URL on the fake, at the preset's own paths.
fn providers(fake: &BaselimeFake) -> String {
    let d = defaults(&format!(
        "[providers.baselime]\npreset = \"baselime\"\nclient_id = \"{CLIENT_ID}\"\nclient_secret = \"s\"\n"
    ));
    let o = oauth(&d, "baselime");
    assert_eq!(
        d.provider("baselime").unwrap().upstream.host,
        "api.baselime.io",
        "the preset claims the document's API host"
    );
    let up = fake.url();
    format!(
        r#"[providers.baselime]
preset = "baselime"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_uri = "{REDIRECT}"
upstream = "{up}"
token_url = "{token}"
workspaces_url = "{workspaces}"
authorize_url = "{up}/oauth/authorize"
"#,
        token = on_fake(&up, &o.token_url),
        workspaces = on_fake(&up, o.workspaces_url.as_ref().expect("a workspaces URL")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baselime_login_refreshes_workspaces_and_restart() {
    let ca = TestCa::new();
    let fake = BaselimeFake::start(&ca).await;
    // The login's token outlives the refresher's store poll (every 5 s), so it is served before
    // its first refresh; refreshed tokens then live 4 s.
    fake.set_token_lifetime(Duration::from_secs(14));
    let h = Harness::new(&ca);
    let text = providers(&fake);
    let proxy = h.start(&text).await;

    // No token yet: credproxy says a person must log in, and calls no token endpoint.
    let r = proxy.get(API).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "login_required", "{}", r.text());
    assert_eq!(fake.token_calls(), 0);
    assert_eq!(fake.api_calls(), 0, "nothing is forwarded without a token");

    // Stand-in for `credproxy login baselime`: authorize, follow the redirect, exchange the code.
    let cfg = oauth(&proxy.config, "baselime");
    let location = consent(&ca, &cfg).await;
    assert!(location.starts_with(REDIRECT), "{location}");
    assert_eq!(query_param(&location, "state").as_deref(), Some("st4te"));
    let login = h
        .login(&proxy.provider("baselime"), &code_of(&location), &fake)
        .await;
    assert_eq!(fake.authorization_code_grants(), 1);
    fake.set_token_lifetime(Duration::from_secs(4));
    // Step 4 of the document: the workspaces are listed with the new token, after the exchange.
    assert_eq!(fake.workspaces_calls(), 1, "GET /oauth/workspaces");

    // Step 2 dialect: JSON, camelCase names, `redirect` (not redirect_uri).
    let exchange = &fake.token_requests()[0];
    assert_eq!(exchange.path, "/oauth/token");
    assert_eq!(exchange.content_type.as_deref(), Some("application/json"));
    let f = exchange.fields.as_ref().expect("a JSON body");
    assert_eq!(
        keys(f),
        ["clientId", "clientSecret", "code", "grantType", "redirect"]
    );
    assert_eq!(f["grantType"], "authorization_code");
    assert_eq!(f["redirect"], REDIRECT);

    // The running refresher finds the login in the store (it re-reads it every few seconds).
    poll(
        "the refresher to adopt the login",
        Duration::from_secs(10),
        || proxy.snapshot("baselime").phase == Phase::Ready,
    )
    .await;

    // Two refreshes before expiry (refreshed at half-life), no request sees a 401.
    let seen = proxy
        .until_refreshes(API, &fake, 2, Duration::from_secs(20), || {
            fake.refresh_grants()
        })
        .await;
    assert_eq!(
        seen[0],
        login.access_token.expose(),
        "the login's token is served first"
    );
    assert!(seen.len() >= 2, "a refreshed token was served: {seen:?}");
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());
    assert_eq!(fake.api_denied(), 0);

    // Step 3 dialect: JSON camelCase with `refreshToken` and the login's `redirect`.
    for r in &fake.token_requests()[1..] {
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        let f = r.fields.as_ref().expect("a JSON body");
        assert_eq!(
            keys(f),
            [
                "clientId",
                "clientSecret",
                "grantType",
                "redirect",
                "refreshToken"
            ]
        );
        assert_eq!(f["grantType"], "refresh_token");
        assert_eq!(f["redirect"], REDIRECT);
    }
    // A refresh reply has no refreshToken: the login's one is kept, and keeps working.
    let stored = h.stored("baselime").expect("a stored token");
    assert_eq!(
        stored.refresh_token.as_ref().map(|t| t.expose()),
        login.refresh_token.as_ref().map(|t| t.expose()),
        "the old refresh token is kept"
    );
    assert_eq!(
        stored.secrets.get("apiKey").map(|k| k.expose()),
        Some(API_KEY),
        "the apiKey is stored"
    );

    // Workspace and environment are shown; the apiKey never is.
    let snap = proxy.snapshot("baselime");
    for (k, v) in [("workspaceId", "my-workspace"), ("environmentId", "prod")] {
        assert!(
            snap.details.iter().any(|(dk, dv)| dk == k && dv == v),
            "{k} in {:?}",
            snap.details
        );
    }
    assert!(
        snap.details
            .iter()
            .all(|(k, v)| !k.contains(API_KEY) && !v.contains(API_KEY))
    );
    assert!(!format!("{snap:?}").contains(API_KEY));
    let status = proxy.admin("/status").await;
    assert_eq!(status.status, 200);
    assert!(status.text().contains("my-workspace"), "{}", status.text());
    assert!(!status.text().contains(API_KEY), "{}", status.text());

    // Restart: let one long-lived token be issued, then a new proxy on the same store serves it
    // without calling the token endpoint (and without listing workspaces again).
    fake.set_token_lifetime(Duration::from_secs(120));
    let before = proxy
        .until_long_lived(API, "baselime", &fake, 60, || fake.refresh_grants())
        .await;
    let calls = (fake.token_calls(), fake.workspaces_calls());
    proxy.stop().await;

    let proxy = h.start(&text).await;
    assert_eq!(proxy.get_ok(API, &fake).await, before);
    assert_eq!(
        (fake.token_calls(), fake.workspaces_calls()),
        calls,
        "the restart reused the stored token"
    );
    assert_eq!(fake.authorization_code_grants(), 1, "no new login");
    let snap = proxy.snapshot("baselime");
    assert!(
        snap.details
            .iter()
            .any(|(k, v)| k == "workspaceId" && v == "my-workspace"),
        "details survive a restart: {:?}",
        snap.details
    );
    proxy.stop().await;
}
