//! BlendVision One end to end (issue 4; `shared/seeds/blendvision.md`), through credproxy against
//! the fake, in both modes: a console API token with the org id discovered at start, and
//! email + password, where credproxy logs in, mints API tokens and mints again before each one's
//! `expired_date`. Every proxied call carries `Authorization: Bearer` AND `x-bv-org-id`.

use crate::support;

use std::time::Duration;

use credproxy::config::{AuthConfig, BlendVisionMode, Config};
use http::HeaderMap;
use support::blendvision::{EMAIL, PASSWORD};
use support::proxy::{Harness, defaults, injected_bearer, on_fake};
use support::{BlendVisionFake, Fake, TestCa};

/// The preset's default host, asked for in absolute form as an `HTTP_PROXY` client does.
const API: &str = "http://api.one.blendvision.com/bv/cms/v1/videos?current_page=1";
const ORG: &str = "org-e2e-77";
const CONSOLE_TOKEN: &str = "bv-console-token-0123456789abcdef";

/// The preset's default login, mint and organizations URLs.
fn default_urls() -> (http::Uri, http::Uri, http::Uri) {
    let d: Config = defaults(
        "[providers.blendvision]\npreset = \"blendvision\"\nemail = \"e\"\npassword = \"p\"\n",
    );
    let p = d.provider("blendvision").unwrap();
    assert_eq!(p.upstream.host, "api.one.blendvision.com");
    let AuthConfig::BlendVision(bv) = &p.auth else {
        panic!("not a BlendVision provider")
    };
    let BlendVisionMode::Mint {
        login_url,
        mint_url,
        ..
    } = &bv.mode
    else {
        panic!("email + password is the mint mode")
    };
    (login_url.clone(), mint_url.clone(), bv.org_url.clone())
}

fn providers(fake: &BlendVisionFake, auth: &str) -> String {
    let (login, mint, org) = default_urls();
    let up = fake.url();
    format!(
        r#"[providers.blendvision]
preset = "blendvision"
upstream = "{up}"
login_url = "{login}"
mint_url = "{mint}"
org_url = "{org}"
{auth}
"#,
        login = on_fake(&up, &login),
        mint = on_fake(&up, &mint),
        org = on_fake(&up, &org),
    )
}

/// The upstream saw exactly one `x-bv-org-id`, the discovered one (not the client's).
fn headers(fake: &BlendVisionFake) -> HeaderMap {
    let h = fake.last_api_headers().expect("the API was called");
    let orgs: Vec<_> = h.get_all("x-bv-org-id").iter().collect();
    assert_eq!(orgs, [ORG], "one x-bv-org-id, the organization's");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blendvision_console_token_discovers_the_org_and_restart_reuses_it() {
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca)
        .await
        .with_static_token(CONSOLE_TOKEN);
    fake.set_org_id(ORG);
    let h = Harness::new(&ca);
    // No org_id: discovered at start.
    let text = providers(&fake, &format!("api_token = \"{CONSOLE_TOKEN}\""));
    let proxy = h.start(&text).await;

    for _ in 0..3 {
        let r = proxy
            .get_with(
                API,
                &[
                    ("authorization", support::proxy::CLIENT_AUTHORIZATION),
                    ("x-bv-org-id", "org-the-client-made-up"),
                ],
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(injected_bearer(&headers(&fake)), CONSOLE_TOKEN);
    }
    assert_eq!(fake.org_calls(), 1, "GET /bv/org/v1/organizations once");
    assert_eq!((fake.login_calls(), fake.mint_calls()), (0, 0));
    assert_eq!(fake.api_denied(), 0);

    // Restart: the discovered org id was stored with the token; no second lookup.
    proxy.stop().await;
    let proxy = h.start(&text).await;
    let r = proxy.get(API).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(injected_bearer(&headers(&fake)), CONSOLE_TOKEN);
    assert_eq!(fake.org_calls(), 1, "the stored org id was reused");
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blendvision_mints_and_re_mints_before_expiry_and_restart_reuses_it() {
    let ca = TestCa::new();
    let fake = BlendVisionFake::start(&ca).await;
    fake.set_org_id(ORG);
    let h = Harness::new(&ca);
    let text = providers(
        &fake,
        &format!("email = \"{EMAIL}\"\npassword = \"{PASSWORD}\"\napi_token_lifetime = \"6s\""),
    );
    let t0 = jiff::Timestamp::now().as_second();
    let proxy = h.start(&text).await;
    let r = proxy.get(API).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t1 = jiff::Timestamp::now().as_second();
    let first = injected_bearer(&headers(&fake));
    assert_eq!(
        (fake.login_calls(), fake.mint_calls(), fake.org_calls()),
        (1, 1, 1)
    );

    // The mint asked for `expired_date` = now + api_token_lifetime, in ISO 8601.
    let mint = fake.last_mint().expect("a mint");
    assert!(!mint.name.is_empty());
    let expired = mint.expired_date.expect("an expired_date").as_second();
    assert!(
        (t0 + 6..=t1 + 6).contains(&expired),
        "expired_date {expired} is about 6 s after {t0}..{t1}"
    );
    // The login's `expires_in` (-2147483648) schedules nothing: the expiry is the minted one.
    assert_eq!(
        proxy.snapshot("blendvision").expires_at_unix,
        Some(expired),
        "the minted token's expiry"
    );

    // Two re-mints, each while the previous API token is still valid; no request fails.
    let mut prev = first.clone();
    let mut tokens = 1;
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokens < 3 {
        let r = proxy.get(API).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let t = injected_bearer(&headers(&fake));
        if t != prev {
            assert!(
                fake.is_valid_token(&prev),
                "re-minted before the old token's expired_date"
            );
            prev = t;
            tokens += 1;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for two re-mints"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fake.mint_calls() >= 3);
    assert_eq!(fake.org_calls(), 1, "the org id is kept across mints");
    assert_eq!(fake.api_denied(), 0);
    assert_eq!(fake.rejected_calls(), 0, "{:?}", fake.last_rejection());

    // Restart right after a mint: the stored API token is served, no login and no mint.
    let counts = (fake.login_calls(), fake.mint_calls(), fake.org_calls());
    proxy.stop().await;
    let proxy = h.start(&text).await;
    let r = proxy.get(API).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(injected_bearer(&headers(&fake)), prev);
    assert_eq!(
        (fake.login_calls(), fake.mint_calls(), fake.org_calls()),
        counts,
        "the restart reused the minted token"
    );
    proxy.stop().await;
}
