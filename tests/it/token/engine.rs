//! The token engine against an in-process token server over real sockets (issue 3, "Done when").
//!
//! Every test runs on tokio's paused clock with [`ticker`] keeping virtual time moving in small
//! steps (see `support::token`), so hour-long lifetimes and five-minute backoffs take milliseconds
//! and every timing is exact up to the round trips.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::token::*;
use credproxy::clock::Clock;
use credproxy::credential::{Phase, Unavailable};
use credproxy::token::{FileStore, MemoryStore, TokenStore};
use serde_json::json;
use tokio::sync::Notify;
use tokio::time::Instant;

const PASSWORD_GRANT: &str = r#"username = "me@example.com"
password = "pass-SECRET-p1""#;

fn memory() -> Arc<dyn TokenStore> {
    Arc::new(MemoryStore::new())
}

fn files(dir: &std::path::Path) -> Arc<dyn TokenStore> {
    Arc::new(FileStore::open(dir).unwrap())
}

/// An authorization-code provider on `server`: its tokens come from a person's login.
fn code_provider(server: &TokenServer) -> Arc<credproxy::config::ProviderConfig> {
    let extra = format!(
        "grant = \"authorization_code\"\nauthorize_url = \"{}/authorize\"",
        server.url()
    );
    provider("api", &server.url(), &extra)
}

/// Waiting for a usable credential ends in `LoginRequired`.
async fn assert_waits_for_login(engine: &Engine) {
    let err = engine
        .reader
        .wait_usable(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err, Unavailable::LoginRequired);
}

/// `credproxy login` in another process (`cli`: its own context on the engine's store), then the
/// engine adopts the new token and is ready.
async fn login_and_adopt(
    p: &credproxy::config::ProviderConfig,
    cli: &credproxy::token::EngineContext,
    server: &TokenServer,
    engine: &mut Engine,
) {
    credproxy::token::login_with_code(p, cli, &server.issue_code(), None, None)
        .await
        .unwrap();
    assert_eq!(engine.next_event().await, "adopted");
    assert_eq!(engine.reader.snapshot().phase, Phase::Ready);
}

/// Issue 3 point 5: however many requests arrive at expiry, one token call.
#[tokio::test(start_paused = true)]
async fn two_hundred_readers_at_expiry_cause_one_token_call() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let (mut ctx, events) = context(memory(), clock);
    // The refresh is held past the token's expiry; the client must not give up first.
    ctx.client = ctx.client.clone().with_timeout(Duration::from_secs(600));
    let mut engine = Engine::start_with(provider("api", &server.url(), ""), ctx, events);
    assert_eq!(engine.next_event().await, "ok");
    let first = engine.token().unwrap();

    let release = Arc::new(Notify::new());
    server.push(Step::Hold(release.clone()));
    server.state.held.notified().await; // the refresh (at half of the 100 s lifetime) is stuck
    tokio::time::advance(Duration::from_secs(60)).await;
    assert!(
        engine.reader.current(Instant::now()).is_none(),
        "the token has expired"
    );

    let started = Arc::new(AtomicUsize::new(0));
    let readers: Vec<_> = (0..200)
        .map(|_| {
            let (r, started) = (engine.reader.clone(), started.clone());
            tokio::spawn(async move {
                started.fetch_add(1, Ordering::SeqCst);
                r.wait_usable(Duration::from_secs(10)).await
            })
        })
        .collect();
    while started.load(Ordering::SeqCst) < 200 {
        tokio::task::yield_now().await;
    }
    tokio::task::yield_now().await;
    assert_eq!(
        server.token_calls(),
        2,
        "only the held refresh is in flight"
    );
    release.notify_one();
    for r in readers {
        let c = r.await.unwrap().expect("every reader gets the new token");
        assert_eq!(c.generation, 2);
    }
    assert_ne!(engine.token().unwrap(), first);
    assert_eq!(
        server.token_calls(),
        2,
        "200 waiting readers, one token call"
    );
    assert_eq!(engine.next_event().await, "ok");
    engine.stop().await;
}

/// Issue 3 point 8: a stored token is reused at start without a network call, and its rotated
/// refresh token is used once it has expired.
#[tokio::test(start_paused = true)]
async fn a_rotated_refresh_token_survives_a_restart() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let dir = tempfile::tempdir().unwrap();
    let p = provider("api", &server.url(), PASSWORD_GRANT);

    let mut e1 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(e1.next_event().await, "ok");
    assert_eq!(
        e1.next_event().await,
        "ok",
        "refreshed once: the refresh token rotated"
    );
    let rotated = e1.token().unwrap();
    assert_eq!(
        (server.grants("password"), server.grants("refresh_token")),
        (1, 1)
    );
    e1.stop().await;

    let mut e2 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(e2.next_event().await, "adopted");
    assert_eq!(e2.token().unwrap(), rotated);
    assert_eq!(e2.reader.snapshot().phase, Phase::Ready);
    assert_eq!(server.token_calls(), 2, "reused without a network call");
    e2.stop().await;

    tokio::time::advance(Duration::from_secs(500)).await; // expired while nothing ran
    let mut e3 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(e3.next_event().await, "ok");
    assert_eq!(
        (server.grants("password"), server.grants("refresh_token")),
        (1, 2)
    );
    assert_eq!(
        server.reuse(),
        0,
        "the refresh token used is the rotated one"
    );
    let last = server.calls().pop().unwrap();
    let stored = FileStore::open(dir.path())
        .unwrap()
        .load("api")
        .unwrap()
        .unwrap();
    assert_eq!(e3.token().unwrap(), stored.access_token.expose());
    assert_ne!(
        last.fields["refresh_token"],
        stored.refresh_token.unwrap().expose()
    );
    e3.stop().await;
}

/// DESIGN.md, "Token store": a token obtained with other settings is not reused.
#[tokio::test(start_paused = true)]
async fn a_token_from_other_settings_is_not_reused() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let store = memory();
    let mut e1 = Engine::start(
        provider("api", &server.url(), PASSWORD_GRANT),
        store.clone(),
        clock,
    );
    assert_eq!(e1.next_event().await, "ok");
    e1.stop().await;
    // Same provider name, now client_credentials: another fingerprint.
    let mut e2 = Engine::start(provider("api", &server.url(), ""), store, clock);
    assert_eq!(e2.next_event().await, "ok");
    assert_eq!(server.grants("client_credentials"), 1);
    e2.stop().await;
}

/// Issue 3 "Done when": a crash between writes leaves a readable store. The store's own tests
/// crash mid-save; here the engine restarts over what such a crash leaves: a stray temp file
/// (reused token, no network call) or a torn token file (ignored, a fresh grant replaces it).
#[tokio::test(start_paused = true)]
async fn a_restart_after_a_crash_mid_save_works() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let dir = tempfile::tempdir().unwrap();
    let p = provider("api", &server.url(), PASSWORD_GRANT);
    let mut e1 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(e1.next_event().await, "ok");
    let token = e1.token().unwrap();
    e1.stop().await;

    std::fs::write(
        dir.path().join(".api.json.tmp-4242-00000000deadbeef"),
        b"{\"version\":1,\"acc",
    )
    .unwrap();
    let mut e2 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(e2.next_event().await, "adopted");
    assert_eq!(e2.token().unwrap(), token);
    e2.stop().await;
    assert_eq!(server.token_calls(), 1);

    let file = dir.path().join("api.json");
    let whole = std::fs::read(&file).unwrap();
    std::fs::write(&file, &whole[..whole.len() / 2]).unwrap();
    let mut e3 = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(
        e3.next_event().await,
        "ok",
        "a torn file counts as no token"
    );
    assert_eq!(e3.reader.snapshot().phase, Phase::Ready);
    let stored = FileStore::open(dir.path())
        .unwrap()
        .load("api")
        .unwrap()
        .unwrap();
    assert_eq!(
        e3.token().unwrap(),
        stored.access_token.expose(),
        "and is replaced"
    );
    e3.stop().await;
}

/// Issue 3 point 6: 503 (with Retry-After), a slow server, malformed JSON, a CRLF token and a
/// token with a space are survived: the last valid token keeps being served, the phase and last
/// error say what happened, and retries back off 1 s, 2 s, 4 s, 8 s (at least Retry-After).
#[tokio::test(start_paused = true)]
async fn faults_keep_the_last_valid_token_and_back_off() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(1000));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    assert_eq!(engine.next_event().await, "ok");
    let good = engine.token().unwrap();
    let start = Instant::now();

    server.push(Step::Reply(
        503,
        json!({"error": "temporarily_unavailable"}).to_string(),
        vec![("retry-after", "7".into())],
    ));
    server.push(Step::Delay(Duration::from_secs(120))); // over the 30 s client timeout
    server.push(Step::Reply(200, "{\"access_token\": \"x\"".into(), vec![]));
    server.push(Step::Merge(
        json!({"access_token": "evil\r\nX-Injected: 1"}),
    ));
    server.push(Step::Merge(json!({"access_token": "two words"})));
    // Refresh at 750 s (75 % of 1000); 503 asks for 7 s; the slow call times out 30 s later
    // (787); then 2, 4 and 8 s of backoff.
    let expect = [
        (
            750.0,
            "answered 503 Service Unavailable: temporarily_unavailable",
        ),
        (787.0, "call failed: no complete answer within 30s"),
        (789.0, "reply can't be used: the reply is not JSON"),
        (
            793.0,
            "reply can't be used: the access token is empty or contains characters",
        ),
        (
            801.0,
            "reply can't be used: the access token is empty or contains characters",
        ),
    ];
    for (when, what) in expect {
        assert_eq!(engine.next_event().await, "transient_error");
        let t = (Instant::now() - start).as_secs_f64();
        let snap = engine.reader.snapshot();
        assert_eq!(snap.phase, Phase::Failing);
        let err = snap.last_error.unwrap();
        assert!(err.contains(what), "{err:?} should say {what:?}");
        assert!(!err.contains("evil"), "{err}");
        let served = engine.reader.current(Instant::now()).unwrap();
        assert_eq!(served.generation, 1, "the last valid token is served");
        assert!((t - when).abs() < 2.0, "{what} at {t}, want ~{when}");
    }
    assert_eq!(engine.next_event().await, "ok");
    let t = (Instant::now() - start).as_secs_f64();
    assert!((t - 817.0).abs() < 2.0, "16 s after the fifth failure: {t}");
    let snap = engine.reader.snapshot();
    assert_eq!((snap.phase, snap.last_error), (Phase::Ready, None));
    assert_ne!(engine.token().unwrap(), good);
    engine.stop().await;
}

/// Issue 3 point 2: credentials are never sent on a redirect, and a 3xx is not retried in a loop.
#[tokio::test(start_paused = true)]
async fn redirects_are_not_followed() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.push(Step::Redirect(format!("{}/token", server.url())));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    assert_eq!(engine.next_event().await, "config_error");
    let snap = engine.reader.snapshot();
    assert!(snap.last_error.unwrap().contains("redirect"));
    assert_eq!(server.token_calls(), 1, "the redirect was not followed");
    assert_eq!(engine.event_within(Duration::from_secs(600)).await, None);
    engine.stop().await;
}

/// Issue 3 point 3: reply bodies over 1 MiB are refused (and retried like any bad reply).
#[tokio::test(start_paused = true)]
async fn huge_replies_are_refused() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let padding = "a".repeat(2 * 1024 * 1024);
    let huge = format!(r#"{{"access_token":"huge","token_type":"Bearer","padding":"{padding}"}}"#);
    server.push(Step::Reply(200, huge, vec![]));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    assert_eq!(engine.next_event().await, "transient_error");
    let err = engine.reader.snapshot().last_error.unwrap();
    assert!(err.contains("over 1048576 bytes"), "{err}");
    assert_eq!(engine.next_event().await, "ok", "retried after a second");
    assert_ne!(engine.token().unwrap(), "huge");
    engine.stop().await;
}

/// Issue 3 point 3: `expires_in` as a string, garbage (-2147483648) falling back to the JWT's
/// `exp`, absent falling back to introspection, and absent with neither falling back to
/// `default_lifetime`.
#[tokio::test(start_paused = true)]
async fn odd_expiries_fall_back_in_order() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let introspect = format!("introspect_url = \"{}/introspect\"", server.url());
    let cases: [(serde_json::Value, bool, &str, i64); 5] = [
        (json!("7200"), false, "", 7200),
        (json!(-2147483648i64), true, "", 100),
        (json!(null), false, &introspect, 100),
        (json!(null), false, "default_lifetime = \"15m\"", 900),
        (
            json!(20 * 366 * 86_400),
            false,
            "default_lifetime = \"2h\"",
            7200,
        ),
    ];
    for (i, (lifetime, jwt, extra, want)) in cases.into_iter().enumerate() {
        server.state.jwt.store(jwt, Ordering::SeqCst);
        if lifetime.is_null() {
            server.push(Step::Merge(json!({"expires_in": null})));
        } else {
            server.set_lifetime(lifetime);
        }
        let introspections = server.introspections();
        let mut engine = Engine::start(provider("api", &server.url(), extra), memory(), clock);
        assert_eq!(engine.next_event().await, "ok", "case {i}");
        let snap = engine.reader.snapshot();
        let got = snap.expires_at_unix.unwrap() - clock.unix_now();
        assert!(
            (got - want).abs() <= 2,
            "case {i}: expires in {got}, want {want}"
        );
        let used_introspection = server.introspections() > introspections;
        assert_eq!(used_introspection, extra == introspect, "case {i}");
        engine.stop().await;
    }
}

/// Issue 3 point 6: `invalid_grant` on a refresh falls back to the password grant.
#[tokio::test(start_paused = true)]
async fn a_refused_refresh_token_falls_back_to_the_password_grant() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let mut engine = Engine::start(
        provider("api", &server.url(), PASSWORD_GRANT),
        memory(),
        clock,
    );
    assert_eq!(engine.next_event().await, "ok");
    server.revoke_all_refresh_tokens();
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(
        (server.grants("password"), server.grants("refresh_token")),
        (2, 1),
        "refresh refused, then the password grant"
    );
    assert_eq!(engine.reader.snapshot().phase, Phase::Ready);
    assert_eq!(server.reuse(), 0);
    engine.stop().await;
}

/// Issue 3 point 6: for the authorization-code grant a refused refresh token means
/// `login_required`, no more token calls, and a login in another process is picked up.
#[tokio::test(start_paused = true)]
async fn a_refused_refresh_token_waits_for_a_login() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let p = code_provider(&server);
    let store = memory();
    let mut engine = Engine::start(p.clone(), store.clone(), clock);
    assert_eq!(engine.next_event().await, "login_required");
    assert_eq!(
        server.token_calls(),
        0,
        "nothing to call the token server with"
    );
    assert_waits_for_login(&engine).await;

    // `credproxy login` in another process: exchange a code and store the result.
    let (cli, _) = context(store.clone(), clock);
    let code = server.issue_code();
    credproxy::token::login_with_code(
        &p,
        &cli,
        &code,
        Some("http://127.0.0.1:9/cb"),
        Some("verifier"),
    )
    .await
    .unwrap();
    let login = server.calls().pop().unwrap();
    assert_eq!(login.fields["code_verifier"], "verifier");
    assert_eq!(login.fields["redirect_uri"], "http://127.0.0.1:9/cb");
    let before = Instant::now();
    assert_eq!(engine.next_event().await, "adopted");
    assert!(
        Instant::now() - before <= Duration::from_secs(6),
        "picked up within the poll interval"
    );
    assert_eq!(engine.reader.snapshot().phase, Phase::Ready);

    server.revoke_all_refresh_tokens();
    assert_eq!(engine.next_event().await, "login_required");
    let snap = engine.reader.snapshot();
    assert_eq!(snap.phase, Phase::LoginRequired);
    assert!(
        snap.last_error
            .unwrap()
            .contains("refresh token was refused")
    );
    assert!(
        engine.reader.current(Instant::now()).is_some(),
        "the token is served while valid"
    );
    let calls = server.token_calls();
    assert_eq!(engine.event_within(Duration::from_secs(3600)).await, None);
    assert_eq!(
        server.token_calls(),
        calls,
        "no token calls while a login is awaited"
    );

    login_and_adopt(&p, &cli, &server, &mut engine).await;
    engine.stop().await;
}

/// A provider on `server` with a client secret the server refuses (`invalid_client`).
fn wrong_secret(server: &TokenServer) -> Arc<credproxy::config::ProviderConfig> {
    let mut wrong = (*provider("api", &server.url(), "")).clone();
    if let credproxy::config::AuthConfig::OAuth2(cfg) = &mut wrong.auth {
        cfg.client_secret = Some(credproxy::secret::Live::from("wrong"));
    }
    Arc::new(wrong)
}

/// Issue 3 point 6: `invalid_client` is a configuration error: reported, not retried in a loop.
#[tokio::test(start_paused = true)]
async fn invalid_client_is_not_retried_in_a_loop() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let mut engine = Engine::start(wrong_secret(&server), memory(), clock);
    assert_eq!(engine.next_event().await, "config_error");
    let snap = engine.reader.snapshot();
    assert_eq!(snap.phase, Phase::Failing);
    assert!(
        snap.last_error
            .unwrap()
            .contains("401 Unauthorized: invalid_client")
    );
    assert_eq!(engine.event_within(Duration::from_secs(1800)).await, None);
    assert_eq!(server.token_calls(), 1, "no retry loop");
    tokio::time::advance(Duration::from_secs(1800)).await;
    assert_eq!(
        engine.next_event().await,
        "config_error",
        "tried again after an hour"
    );
    assert_eq!(server.token_calls(), 2);
    engine.stop().await;
}

/// Issue 14 item 4: with no token and the refresher waiting out a failure (here `invalid_client`,
/// retried hourly), a request gets its answer at once, with the time of the next attempt, not
/// after `wait_for_token`. While an attempt is in flight, it still waits for it.
#[tokio::test(start_paused = true)]
async fn without_a_refresh_in_flight_waiting_ends_at_once() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let mut engine = Engine::start(wrong_secret(&server), memory(), clock);
    assert_eq!(engine.next_event().await, "config_error");
    let asked = Instant::now();
    let r = engine.reader.wait_usable(Duration::from_secs(10)).await;
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "waited {:?} for a token that can't come",
        asked.elapsed()
    );
    match r {
        Err(Unavailable::Failing {
            last_error,
            retry_in,
        }) => {
            assert!(last_error.unwrap().contains("invalid_client"));
            assert!(
                retry_in > Duration::from_secs(3500) && retry_in <= Duration::from_secs(3600),
                "{retry_in:?}"
            );
        }
        other => panic!("expected Failing, got {other:?}"),
    }
    engine.stop().await;
}

/// Issue 3 point 7: a flood of 401 reports forces at most one refresh per token, none for a token
/// younger than 10 s, and at most one per 30 s.
#[tokio::test(start_paused = true)]
async fn a_401_flood_forces_at_most_one_refresh() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(3600));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    assert_eq!(engine.next_event().await, "ok");
    let c1 = engine.reader.current(Instant::now()).unwrap();
    assert!(
        !engine
            .reader
            .report_rejected(&c1, credproxy::credential::Rejection::Plain),
        "too young"
    );
    assert_eq!(engine.event_within(Duration::from_secs(5)).await, None);

    tokio::time::sleep(Duration::from_secs(6)).await;
    let granted = (0..1000)
        .filter(|_| {
            engine
                .reader
                .report_rejected(&c1, credproxy::credential::Rejection::Plain)
        })
        .count();
    assert_eq!(granted, 1);
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(server.token_calls(), 2);
    let c2 = engine.reader.current(Instant::now()).unwrap();
    assert_eq!(c2.generation, 2);

    for _ in 0..100 {
        engine
            .reader
            .report_rejected(&c1, credproxy::credential::Rejection::Plain);
    }
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(
        !engine
            .reader
            .report_rejected(&c2, credproxy::credential::Rejection::Plain),
        "within 30 s of the last forced refresh"
    );
    assert_eq!(engine.event_within(Duration::from_secs(20)).await, None);
    assert!(
        engine
            .reader
            .report_rejected(&c2, credproxy::credential::Rejection::Plain)
    );
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(server.token_calls(), 3);
    engine.stop().await;
}

/// Issue 3 point 8, the two-process case: two engines, each with its own `FileStore` on one
/// directory, refresh the same provider against a server that rotates refresh tokens and counts
/// reuse. Both wake at the same moments; the lock and the re-read make one of them adopt.
#[tokio::test(start_paused = true)]
async fn two_engines_on_one_store_spend_each_refresh_token_once() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let dir = tempfile::tempdir().unwrap();
    let p = provider("api", &server.url(), PASSWORD_GRANT);
    let mut a = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(a.next_event().await, "ok");
    let mut b = Engine::start(p.clone(), files(dir.path()), clock);
    assert_eq!(b.next_event().await, "adopted");
    for round in 0..5 {
        let (ea, eb) = tokio::join!(a.next_event(), b.next_event());
        let mut got = [ea, eb];
        got.sort();
        assert_eq!(got, ["adopted", "ok"], "round {round}");
        assert_eq!(a.token(), b.token());
    }
    assert_eq!(server.grants("refresh_token"), 5);
    assert_eq!(server.grants("password"), 1);
    assert_eq!(server.reuse(), 0, "no refresh token was spent twice");
    a.stop().await;
    b.stop().await;
}

/// The same with two runtimes on two threads, on real time (short tokens: refreshed every
/// half second), until the server has seen eight refreshes.
#[test]
fn two_runtimes_on_one_store_spend_each_refresh_token_once() {
    let server_rt = tokio::runtime::Runtime::new().unwrap();
    let server = server_rt.block_on(TokenServer::start(Clock::new()));
    server.set_lifetime(json!(1));
    let dir = tempfile::tempdir().unwrap();
    let p = provider("api", &server.url(), PASSWORD_GRANT);
    let stop = tokio_util::sync::CancellationToken::new();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (p, dir, stop) = (p.clone(), dir.path().to_owned(), stop.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let (mut ctx, events) = context(files(&dir), Clock::new());
                    ctx.jitter = Arc::new(rand::random::<f64>);
                    ctx.cancel = stop.child_token();
                    let engine = Engine::start_with(p, ctx, events);
                    stop.cancelled().await;
                    engine.stop().await;
                })
            })
        })
        .collect();
    server_rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.grants("refresh_token") < 8 {
            assert!(Instant::now() < deadline, "eight refreshes within a minute");
            let _ =
                tokio::time::timeout(Duration::from_millis(200), server.state.called.notified())
                    .await;
        }
    });
    stop.cancel();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.reuse(), 0, "no refresh token was spent twice");
    assert_eq!(
        server.grants("password"),
        1,
        "the second process adopted the first's token"
    );
}

/// `credproxy logout` beside a running engine: the engine stops serving the removed token and asks
/// for a login (it does not refresh it back onto disk); a new login is adopted.
#[tokio::test(start_paused = true)]
async fn a_logout_in_another_process_is_noticed() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let p = code_provider(&server);
    let store = memory();
    let (cli, _) = context(store.clone(), clock);
    credproxy::token::login_with_code(&p, &cli, &server.issue_code(), None, None)
        .await
        .unwrap();
    let mut engine = Engine::start(p.clone(), store.clone(), clock);
    assert_eq!(engine.next_event().await, "adopted");
    let calls = server.token_calls();

    let out = credproxy::token::logout(&p, &cli).await.unwrap();
    assert!(out.removed);
    let before = Instant::now();
    assert_eq!(engine.next_event().await, "login_required");
    assert!(Instant::now() - before <= Duration::from_secs(6));
    assert!(
        engine.reader.current(Instant::now()).is_none(),
        "the removed token is not served"
    );
    assert_waits_for_login(&engine).await;
    assert_eq!(engine.event_within(Duration::from_secs(600)).await, None);
    assert_eq!(server.token_calls(), calls, "nothing was refreshed");
    assert!(
        store.load("api").unwrap().is_none(),
        "the logout stays done"
    );

    login_and_adopt(&p, &cli, &server, &mut engine).await;
    engine.stop().await;
}

/// The same for a provider that needs no person: it obtains a new token at once. And a token
/// another process stored is adopted within seconds, before the engine's own refresh is due.
#[tokio::test(start_paused = true)]
async fn unattended_providers_regrant_after_a_logout_and_adopt_newer_tokens() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(3600));
    let p = provider("api", &server.url(), PASSWORD_GRANT);
    let store = memory();
    let mut engine = Engine::start(p.clone(), store.clone(), clock);
    assert_eq!(engine.next_event().await, "ok");
    let first = engine.token().unwrap();

    let (cli, _) = context(store.clone(), clock);
    credproxy::token::logout(&p, &cli).await.unwrap();
    assert_eq!(engine.next_event().await, "ok");
    assert_ne!(engine.token().unwrap(), first);
    assert_eq!(
        server.grants("password"),
        2,
        "a new grant, not the removed refresh token"
    );

    // `credproxy login` with the password again, in another process: adopted.
    let t = credproxy::token::login_with_password(&p, &cli, "pass-SECRET-p1".into())
        .await
        .unwrap();
    assert_eq!(engine.next_event().await, "adopted");
    assert_eq!(engine.token().unwrap(), t.access_token.expose());
    engine.stop().await;
}

/// Issue 14 item 1: a token whose server gives no lifetime is taken to live `default_lifetime`
/// (an hour) until the upstream rejects it with `invalid_token` at 5 s (younger than the 10 s of
/// the plain 401 rule): it is replaced at once, and the next such token is taken to live the 5 s
/// the last one did, so it is refreshed before then. A token whose server does give a lifetime
/// keeps it.
#[tokio::test(start_paused = true)]
async fn a_rejected_token_of_unknown_lifetime_teaches_the_next_ones_theirs() {
    use credproxy::credential::Rejection;
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(null));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    let lifetime = |e: &Engine| {
        let s = e.reader.snapshot();
        s.expires_at_unix.unwrap() - s.last_refresh_unix.unwrap()
    };
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(lifetime(&engine), 3600, "default_lifetime, assumed");
    let c1 = engine.reader.current(Instant::now()).unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        !engine.reader.report_rejected(&c1, Rejection::Plain),
        "a plain 401 is not blamed on a 5 s old token"
    );
    assert!(engine.reader.report_rejected(&c1, Rejection::InvalidToken));
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(lifetime(&engine), 5, "learned from the rejected token");
    assert_eq!(server.token_calls(), 2);

    // Its scheduled refresh comes before those 5 s are up; this one's server gives a lifetime.
    server.set_lifetime(json!(100));
    assert_eq!(
        engine.event_within(Duration::from_secs(5)).await,
        Some("ok")
    );
    assert_eq!(lifetime(&engine), 100, "a server-given lifetime is kept");
    engine.stop().await;
}

/// Counts the engine's token calls for `d` of tokio's clock, answering every one normally.
async fn token_calls_over(engine: &mut Engine, server: &TokenServer, d: Duration) -> usize {
    let (before, end) = (server.token_calls(), Instant::now() + d);
    while let Some(left) = end
        .checked_duration_since(Instant::now())
        .filter(|l| !l.is_zero())
    {
        if let Some(e) = engine.event_within(left).await {
            assert_eq!(e, "ok");
        }
    }
    server.token_calls() - before
}

/// Review finding (refresh storm): an upstream that rejects a token of unknown lifetime with
/// `invalid_token` at once (0.2 s old, a hiccup) teaches no lifetime: the token is replaced and
/// the next ones are taken to live `default_lifetime` again. Before, it taught 5 s, which could
/// only go down: a refresh every ~2 s, ~1800 token calls an hour, for good.
#[tokio::test(start_paused = true)]
async fn an_early_rejection_teaches_no_lifetime_and_starts_no_refresh_storm() {
    use credproxy::credential::Rejection;
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(null));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    assert_eq!(engine.next_event().await, "ok");
    let c1 = engine.reader.current(Instant::now()).unwrap();
    tokio::time::sleep_until(c1.obtained_at + Duration::from_millis(200)).await;
    assert!(engine.reader.report_rejected(&c1, Rejection::InvalidToken));
    assert_eq!(engine.next_event().await, "ok", "replaced at once");
    let s = engine.reader.snapshot();
    assert_eq!(
        s.expires_at_unix.unwrap() - s.last_refresh_unix.unwrap(),
        3600,
        "default_lifetime, not a lifetime learned from a 0.2 s old token"
    );
    let calls = token_calls_over(&mut engine, &server, Duration::from_secs(3600)).await;
    assert!(
        calls < 20,
        "{calls} token calls in the hour after one early rejection"
    );
    engine.stop().await;
}

/// Review finding (refresh storm): a lifetime learned from one rejection (at 5 s) of a token that
/// in truth lives an hour grows back: it doubles each minute no token is rejected, until it
/// reaches `default_lifetime` (in about an hour and a half); then tokens are assumed to live that
/// again. One rejection costs a few dozen token calls, not 1800 an hour forever.
#[tokio::test(start_paused = true)]
async fn a_learned_lifetime_grows_back_when_no_token_is_rejected() {
    use credproxy::credential::Rejection;
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(null));
    let mut engine = Engine::start(provider("api", &server.url(), ""), memory(), clock);
    let lifetime = |e: &Engine| {
        let s = e.reader.snapshot();
        s.expires_at_unix.unwrap() - s.last_refresh_unix.unwrap()
    };
    assert_eq!(engine.next_event().await, "ok");
    let c1 = engine.reader.current(Instant::now()).unwrap();
    tokio::time::sleep_until(c1.obtained_at + Duration::from_secs(5)).await;
    assert!(engine.reader.report_rejected(&c1, Rejection::InvalidToken));
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(lifetime(&engine), 5, "learned");
    let calls = token_calls_over(&mut engine, &server, Duration::from_secs(3600)).await;
    assert!(
        calls < 80,
        "{calls} token calls in the hour after one rejection at 5 s"
    );
    eprintln!("{calls} token calls in the hour after one rejection at 5 s");
    assert!(
        lifetime(&engine) >= 1280,
        "grown back to {}",
        lifetime(&engine)
    );
    let more = token_calls_over(&mut engine, &server, Duration::from_secs(3600)).await;
    assert!(more <= 3, "{more} token calls in the second hour");
    assert_eq!(lifetime(&engine), 3600, "default_lifetime again");
    engine.stop().await;
}

/// Spends `refresh_token` at `server` as another instance would; the token set it got.
async fn refresh_elsewhere(server: &TokenServer, refresh_token: &str) -> serde_json::Value {
    use http_body_util::BodyExt as _;
    let addr = server.url().trim_start_matches("http://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("grant_type", "refresh_token")
        .append_pair("refresh_token", refresh_token)
        .append_pair("client_id", CLIENT_ID)
        .append_pair("client_secret", CLIENT_SECRET)
        .finish();
    let req = http::Request::post("/token")
        .header("host", &addr)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "the other instance's refresh");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

/// Issue 18 item 4: the refresh token is refused because another instance spent it while our
/// call was in flight (its lease had taken over after ours lapsed) and committed the rotated
/// one. The engine re-reads, adopts that instance's token, and asks nobody to log in; its next
/// refresh spends the other instance's refresh token.
#[tokio::test(start_paused = true)]
async fn a_refresh_token_refused_after_another_instance_rotated_it_adopts_its_token() {
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let p = code_provider(&server);
    let store = memory();
    let (cli, _) = context(store.clone(), clock);
    credproxy::token::login_with_code(&p, &cli, &server.issue_code(), None, None)
        .await
        .unwrap();
    let mut engine = Engine::start(p.clone(), store.clone(), clock);
    assert_eq!(engine.next_event().await, "adopted");
    let first = store.load("api").unwrap().unwrap();

    let release = Arc::new(Notify::new());
    server.push(Step::Hold(release.clone()));
    server.state.held.notified().await; // our refresh, with the first refresh token, waits
    let theirs = refresh_elsewhere(&server, first.refresh_token.as_ref().unwrap().expose()).await;
    let mut peer = first.clone();
    peer.access_token = credproxy::secret::Secret::from(theirs["access_token"].as_str().unwrap());
    peer.refresh_token = Some(credproxy::secret::Secret::from(
        theirs["refresh_token"].as_str().unwrap(),
    ));
    peer.obtained_at = clock.unix_now();
    peer.expires_at = Some(clock.unix_now() + 100);
    store.save("api", &peer).unwrap();
    release.notify_one();

    assert_eq!(engine.next_event().await, "adopted");
    assert_eq!(
        server.reuse(),
        1,
        "our call was the second use of the first refresh token"
    );
    assert_eq!(engine.reader.snapshot().phase, Phase::Ready);
    assert_eq!(engine.token().unwrap(), peer.access_token.expose());
    // The next refresh spends the other instance's refresh token, and works.
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(server.reuse(), 1);
    let last = server.calls().last().unwrap().fields["refresh_token"].clone();
    assert_eq!(last, peer.refresh_token.as_ref().unwrap().expose());
    engine.stop().await;
}

/// Issue 19: the audit log's token events, from the refresher: a first token is `obtained`, a
/// refresh that rotates the refresh token `rotated`, a token reused from the store `adopted`;
/// each with the generation published for it.
#[tokio::test(start_paused = true)]
async fn token_events_name_what_happened_with_the_generation() {
    use credproxy::audit::TokenEvent;
    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let dir = tempfile::tempdir().unwrap();
    let p = provider("api", &server.url(), PASSWORD_GRANT);
    type Seen = Arc<parking_lot::Mutex<Vec<(TokenEvent, Option<u64>)>>>;
    let seen: Seen = Arc::default();
    let start = |seen: Seen| {
        let (ctx, events) = context(files(dir.path()), clock);
        let ctx = ctx.with_events(Some(Arc::new(move |_: &str, e, g| {
            seen.lock().push((e, g))
        })));
        Engine::start_with(p.clone(), ctx, events)
    };
    let mut e1 = start(seen.clone());
    assert_eq!(e1.next_event().await, "ok");
    assert_eq!(e1.next_event().await, "ok");
    e1.stop().await;
    let mut e2 = start(seen.clone());
    assert_eq!(e2.next_event().await, "adopted");
    e2.stop().await;
    assert_eq!(
        *seen.lock(),
        vec![
            (TokenEvent::Obtained, Some(1)),
            (TokenEvent::Rotated, Some(2)),
            (TokenEvent::Adopted, Some(1)),
        ]
    );
}
