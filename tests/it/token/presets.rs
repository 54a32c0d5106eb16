//! The token side of the five seed presets (issue 4), against the strict fakes in `support/` over
//! real TLS with a test CA: each fake refuses a wrong content type, wrong field names, a missing
//! Bearer on BACE's refresh, and so on, so a test here passing means the engine speaks the
//! provider's dialect as its document describes it.
//!
//! Paused time and the fakes' TLS: the fakes' sockets keep Nagle's algorithm on, so part of a TLS
//! exchange waits for the client's delayed ACK (~40 ms of real time). Under tokio's paused clock
//! an idle runtime jumps virtual time forward meanwhile, enough to time the request out. So the
//! network parts run with auto-advance held off ([`inhibit`]): every store lock (a refresh is
//! `lock → call → save → unlock`) holds it, and so do the few calls made outside a lock. Setting
//! `TCP_NODELAY` on the fakes' accepted sockets (`support/server.rs`) would make this
//! unnecessary.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::clock::{Inhibitor, inhibit};
use crate::support::token::{Engine, context, ticker};
use credproxy::clock::Clock;
use credproxy::config::ProviderConfig;
use credproxy::credential::Phase;
use credproxy::token::store::{StoreError, StoreLock, StoredToken};
use credproxy::token::{MemoryStore, TokenHttp, TokenStore};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::{
    ApiV1Fake, ApicbaseFake, BaceFake, BaselimeFake, BlendVisionFake, CodeGrant, Fake, TestCa, s256,
};
use tokio::time::Instant;

fn preset(toml: &str) -> Arc<ProviderConfig> {
    let cfg = credproxy::config::load_str(toml, "test.toml", &|_| None)
        .unwrap_or_else(|e| panic!("config: {e:?}"));
    cfg.providers[0].clone()
}

/// An engine context whose HTTP client trusts `ca` only.
fn tls_context(
    ca: &TestCa,
    store: Arc<dyn TokenStore>,
    clock: Clock,
) -> (
    credproxy::token::EngineContext,
    tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap())
        .unwrap();
    let (mut ctx, events) = context(store, clock);
    ctx.client = TokenHttp::new(roots).unwrap();
    (ctx, events)
}

fn engine(
    ca: &TestCa,
    p: &Arc<ProviderConfig>,
    store: &Arc<dyn TokenStore>,
    clock: Clock,
) -> Engine {
    let (ctx, events) = tls_context(ca, store.clone(), clock);
    Engine::start_with(p.clone(), ctx, events)
}

fn memory() -> Arc<dyn TokenStore> {
    Arc::new(RealTimeStore(MemoryStore::new()))
}

/// A memory store whose locks also hold an [`Inhibitor`]: refreshes run on real time.
struct RealTimeStore(MemoryStore);

struct RealTimeLock(
    #[allow(dead_code)] Box<dyn StoreLock>,
    #[allow(dead_code)] Inhibitor,
);

impl StoreLock for RealTimeLock {}

impl TokenStore for RealTimeStore {
    fn load(&self, p: &str) -> Result<Option<StoredToken>, StoreError> {
        self.0.load(p)
    }
    fn save(&self, p: &str, t: &StoredToken) -> Result<(), StoreError> {
        self.0.save(p, t)
    }
    fn remove(&self, p: &str) -> Result<bool, StoreError> {
        self.0.remove(p)
    }
    fn lock(&self, p: &str) -> Result<Box<dyn StoreLock>, StoreError> {
        let guard = self.0.lock(p)?;
        Ok(Box::new(RealTimeLock(guard, inhibit())))
    }
    fn try_lock(&self, p: &str) -> Result<Option<Box<dyn StoreLock>>, StoreError> {
        Ok(self
            .0
            .try_lock(p)?
            .map(|g| Box::new(RealTimeLock(g, inhibit())) as Box<dyn StoreLock>))
    }
}

/// A 100 ms ticker (keep it alive), a test CA and a clock: every test's first line.
fn setup() -> (tokio::task::JoinHandle<()>, TestCa, Clock) {
    (ticker(), TestCa::new(), Clock::new())
}

/// The engine's next event is `want`; on failure, prints why the fake refused and the engine's
/// last error.
async fn expect_event(e: &mut Engine, fake: &impl Fake, want: &str) {
    assert_eq!(
        e.next_event().await,
        want,
        "{:?} {:?}",
        fake.last_rejection(),
        e.reader.snapshot().last_error
    );
}

/// `login_with_code` on real time (outside any store lock), panicking with the fake's refusal.
async fn login(
    p: &ProviderConfig,
    cli: &credproxy::token::EngineContext,
    fake: &impl Fake,
    code: &str,
    redirect: Option<&str>,
    verifier: Option<&str>,
) -> StoredToken {
    let _real_time = inhibit();
    credproxy::token::login_with_code(p, cli, code, redirect, verifier)
        .await
        .unwrap_or_else(|err| panic!("{err:?} {:?}", fake.last_rejection()))
}

fn secs_left(snap: &credproxy::credential::Snapshot, clock: Clock) -> i64 {
    snap.expires_at_unix.unwrap() - clock.unix_now()
}

/// BACE: multipart password grant; the refresh carries the current token as Bearer and extends
/// the same token to a naive `expires` (here written in Amsterdam time); a refresh whose token
/// has expired gets 401 and falls back to the password grant; a 401 storm costs one refresh.
#[tokio::test(start_paused = true)]
async fn bace_extends_the_same_token_and_falls_back_when_it_expired() {
    let (_tick, ca, clock) = setup();
    let fake = BaceFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(1000));
    let ams = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap();
    fake.set_expires_timezone(ams);
    let p = preset(&format!(
        r#"[providers.bace]
preset = "bace"
client_id = "{}"
client_secret = "{}"
username = "{}"
password = "{}"
token_url = "{}/oauth2/token"
expires_timezone = "Europe/Amsterdam"
"#,
        support::bace::CLIENT_ID,
        support::bace::CLIENT_SECRET,
        support::bace::USERNAME,
        support::bace::PASSWORD,
        fake.server().ip_url()
    ));
    let store = memory();
    let mut e = engine(&ca, &p, &store, clock);
    expect_event(&mut e, &fake, "ok").await;
    let token = e.token().unwrap();
    assert!(fake.is_valid_token(&token));

    expect_event(&mut e, &fake, "extended").await;
    assert_eq!(e.token().unwrap(), token, "the same token lives on");
    let left = secs_left(&e.reader.snapshot(), clock);
    assert!(
        (left - 14 * 86_400).abs() <= 2,
        "14 days, read in Amsterdam time: {left}"
    );
    let refresh = fake.token_requests().pop().unwrap();
    assert!(
        refresh.bearer_auth
            && refresh
                .content_type
                .unwrap()
                .starts_with("multipart/form-data")
    );

    // "No permission" 401s: one forced refresh (an extension) for this token, then none.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let c = e.reader.current(Instant::now()).unwrap();
    assert!(
        e.reader
            .report_rejected(&c, credproxy::credential::Rejection::Plain)
    );
    assert_eq!(e.next_event().await, "extended");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(31)).await;
        let c = e.reader.current(Instant::now()).unwrap();
        e.reader
            .report_rejected(&c, credproxy::credential::Rejection::Plain);
    }
    assert_eq!(e.event_within(Duration::from_secs(60)).await, None);
    assert_eq!((fake.password_grants(), fake.refresh_grants()), (1, 2));
    e.stop().await;

    // Down past the expiry: the refresh's bearer has expired, BACE answers 401, password grant.
    tokio::time::advance(Duration::from_secs(15 * 86_400)).await;
    let mut e = engine(&ca, &p, &store, clock);
    assert_eq!(e.next_event().await, "ok");
    assert_eq!((fake.password_grants(), fake.refresh_grants()), (2, 3));
    assert!(fake.is_valid_token(&e.token().unwrap()));
    e.stop().await;
}

/// Baselime: camelCase JSON both ways; after the code exchange the workspaces are listed (ids
/// shown, apiKey stored as a secret); refreshes repeat `redirect` and keep the refresh token
/// the reply leaves out.
#[tokio::test(start_paused = true)]
async fn baselime_login_workspaces_and_refresh() {
    let (_tick, ca, clock) = setup();
    let fake = BaselimeFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(1000));
    let url = fake.server().ip_url();
    let p = preset(&format!(
        r#"[providers.baselime]
preset = "baselime"
client_id = "{}"
client_secret = "{}"
token_url = "{url}/oauth/token"
workspaces_url = "{url}/oauth/workspaces"
authorize_url = "{url}/oauth/authorize"
"#,
        support::baselime::CLIENT_ID,
        support::baselime::CLIENT_SECRET,
    ));
    let store = memory();
    let mut e = engine(&ca, &p, &store, clock);
    assert_eq!(e.next_event().await, "login_required");

    let redirect = "http://127.0.0.1:8123/callback";
    let verifier = "v".repeat(43);
    let code = fake.issue_code_with(CodeGrant {
        redirect_uri: Some(redirect.into()),
        code_challenge: Some(s256(&verifier)),
        ..CodeGrant::default()
    });
    let (cli, _) = tls_context(&ca, store.clone(), clock);
    let t = login(&p, &cli, &fake, &code, Some(redirect), Some(&verifier)).await;
    assert_eq!(fake.workspaces_calls(), 1);
    assert_eq!(t.secrets["apiKey"].expose(), support::baselime::API_KEY);
    assert!(
        !t.details
            .values()
            .any(|v| v.contains(support::baselime::API_KEY))
    );

    assert_eq!(e.next_event().await, "adopted");
    let details = e.reader.snapshot().details;
    assert!(
        details.contains(&("workspaceId".into(), "my-workspace".into())),
        "{details:?}"
    );
    assert!(details.contains(&("environmentId".into(), "prod".into())));
    for _ in 0..2 {
        expect_event(&mut e, &fake, "ok").await;
    }
    assert_eq!(
        fake.refresh_grants(),
        2,
        "the kept refresh token keeps working"
    );
    assert_eq!(
        e.reader.snapshot().details,
        details,
        "details survive refreshes"
    );
    assert!(fake.is_valid_token(&e.token().unwrap()));
    e.stop().await;
}

/// Apicbase: form-encoded with trailing slashes; a reply without `expires_in` is completed by
/// introspection; a stored token is introspected at start; an expired stored token is refreshed
/// (refresh works after expiry), not sent back to login.
#[tokio::test(start_paused = true)]
async fn apicbase_introspects_and_refreshes_after_expiry() {
    let (_tick, ca, clock) = setup();
    let fake = ApicbaseFake::start(&ca).await;
    fake.set_token_lifetime(Duration::from_secs(1000));
    fake.set_send_expires_in(false);
    let url = fake.server().ip_url();
    let p = preset(&format!(
        r#"[providers.apicbase]
preset = "apicbase"
client_id = "{}"
client_secret = "{}"
token_url = "{url}/oauth/token/"
introspect_url = "{url}/oauth/introspect/"
authorize_url = "{url}/oauth/authorize/"
scopes = ["library", "sales"]
"#,
        support::apicbase::CLIENT_ID,
        support::apicbase::CLIENT_SECRET,
    ));
    let cfg = match &p.auth {
        credproxy::config::AuthConfig::OAuth2(c) => c.clone(),
        _ => unreachable!(),
    };
    let auth =
        credproxy::token::authorize_url(&cfg, "st", None, Some("http://127.0.0.1:1/cb")).unwrap();
    assert!(
        auth.starts_with(&format!("{url}/oauth/authorize/?response_type=code&")),
        "{auth}"
    );
    assert!(auth.contains("&scope=library+sales&"), "{auth}");

    let store = memory();
    let (cli, _) = tls_context(&ca, store.clone(), clock);
    let code = fake.issue_code();
    let t = login(&p, &cli, &fake, &code, Some("http://127.0.0.1:1/cb"), None).await;
    assert_eq!(
        fake.introspect_calls(),
        1,
        "no expires_in: introspection says when"
    );
    assert!((t.expires_at.unwrap() - clock.unix_now() - 1000).abs() <= 2);

    let real_time = inhibit(); // the start-up introspection is not under the store lock
    let mut e = engine(&ca, &p, &store, clock);
    assert_eq!(e.next_event().await, "adopted");
    drop(real_time);
    assert_eq!(
        fake.introspect_calls(),
        2,
        "the stored token is confirmed at start"
    );
    e.stop().await;

    tokio::time::advance(Duration::from_secs(2000)).await;
    let mut e = engine(&ca, &p, &store, clock);
    expect_event(&mut e, &fake, "ok").await;
    assert_eq!(
        (fake.authorization_code_grants(), fake.refresh_grants()),
        (1, 1)
    );
    assert_eq!(e.reader.snapshot().phase, Phase::Ready);
    assert!(fake.is_valid_token(&e.token().unwrap()));
    e.stop().await;
}

/// API v1: JSON with `Content-Type: application/json` exactly, lowercase `bearer`, 7200 s, and
/// rotating refresh tokens spent once.
#[tokio::test(start_paused = true)]
async fn apiv1_password_grant_and_rotation() {
    let (_tick, ca, clock) = setup();
    let fake = ApiV1Fake::start(&ca).await;
    let url = fake.server().ip_url();
    let p = preset(&format!(
        r#"[providers.apiv1]
preset = "api-v1"
hosts = ["api.v1.example"]
upstream = "https://api.v1.example"
token_url = "{url}/oauth/token"
client_id = "{}"
client_secret = "{}"
username = "{}"
password = "{}"
"#,
        support::apiv1::CLIENT_ID,
        support::apiv1::CLIENT_SECRET,
        support::apiv1::USERNAME,
        support::apiv1::PASSWORD,
    ));
    let mut e = engine(&ca, &p, &memory(), clock);
    expect_event(&mut e, &fake, "ok").await;
    assert!((secs_left(&e.reader.snapshot(), clock) - 7200).abs() <= 2);
    for _ in 0..3 {
        expect_event(&mut e, &fake, "ok").await;
    }
    assert_eq!((fake.password_grants(), fake.refresh_grants()), (1, 3));
    assert_eq!(fake.refresh_reuse(), 0);
    let req = fake.token_requests().pop().unwrap();
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    assert!(fake.is_valid_token(&e.token().unwrap()));
    e.stop().await;
}

/// BlendVision with a console token: the org id is discovered once, kept in the store, and
/// injected as a sensitive `x-bv-org-id` beside the Bearer.
#[tokio::test(start_paused = true)]
async fn blendvision_api_token_discovers_the_org() {
    let (_tick, ca, clock) = setup();
    let fake = BlendVisionFake::start(&ca)
        .await
        .with_static_token("bv-console-token");
    let url = fake.server().ip_url();
    let p = preset(&format!(
        r#"[providers.bv]
preset = "blendvision"
api_token = "bv-console-token"
org_url = "{url}/bv/org/v1/organizations"
"#
    ));
    let store = memory();
    let mut e = engine(&ca, &p, &store, clock);
    expect_event(&mut e, &fake, "ok").await;
    let c = e.reader.current(Instant::now()).unwrap();
    let headers = c.headers();
    assert_eq!(headers[0].1, "Bearer bv-console-token");
    let org = headers.iter().find(|(n, _)| n == "x-bv-org-id").unwrap();
    assert_eq!(org.1, support::blendvision::DEFAULT_ORG_ID);
    assert!(org.1.is_sensitive());
    assert_eq!(c.expires_at, None);
    e.stop().await;

    let mut e = engine(&ca, &p, &store, clock);
    assert_eq!(e.next_event().await, "adopted");
    assert_eq!(fake.org_calls(), 1, "the org id was kept");
    e.stop().await;
}

/// BlendVision with email + password: log in (ignoring `expires_in: -2147483648`), mint an API
/// token with an `expired_date`, and mint the next one before that date.
#[tokio::test(start_paused = true)]
async fn blendvision_mints_and_remints_before_expiry() {
    let (_tick, ca, clock) = setup();
    let fake = BlendVisionFake::start(&ca).await;
    let url = fake.server().ip_url();
    let p = preset(&format!(
        r#"[providers.bv]
preset = "blendvision"
email = "{}"
password = "{}"
api_token_lifetime = "2h"
login_url = "{url}/bv/account/v1/accounts/login"
mint_url = "{url}/bv/account/v1/accounts/api-token"
org_url = "{url}/bv/org/v1/organizations"
"#,
        support::blendvision::EMAIL,
        support::blendvision::PASSWORD,
    ));
    let mut e = engine(&ca, &p, &memory(), clock);
    expect_event(&mut e, &fake, "ok").await;
    let first = e.token().unwrap();
    assert!(fake.is_valid_token(&first));
    assert!((secs_left(&e.reader.snapshot(), clock) - 7200).abs() <= 2);
    let mint = fake.last_mint().unwrap();
    assert!(mint.name.starts_with("credproxy-"), "{}", mint.name);
    assert_eq!(
        (fake.login_calls(), fake.mint_calls(), fake.org_calls()),
        (1, 1, 1)
    );

    expect_event(&mut e, &fake, "ok").await;
    assert_ne!(e.token().unwrap(), first);
    assert!(
        fake.is_valid_token(&first),
        "re-minted while the old one was still valid"
    );
    assert_eq!(
        (fake.login_calls(), fake.mint_calls(), fake.org_calls()),
        (2, 2, 1)
    );
    let c = e.reader.current(Instant::now()).unwrap();
    assert!(
        c.headers()
            .iter()
            .any(|(n, v)| n == "x-bv-org-id" && v == support::blendvision::DEFAULT_ORG_ID)
    );
    e.stop().await;
}
