//! Issue 3 point 9: no secret appears in any log line at any level.
//!
//! The only test in this binary, so it can install a global TRACE subscriber (plus the `log`
//! bridge, for rustls and friends) that writes into a buffer. It drives the engine through
//! grants, refreshes, failures (503, a CRLF token, a refused refresh token, a 401 nudge),
//! introspection, the CLI one-shots and a logout, then greps the buffer. Every secret the token
//! server or the configuration holds contains `SECRET`.

use crate::support;

use std::sync::Arc;
use std::time::Duration;

use crate::support::token::*;
use credproxy::clock::Clock;
use credproxy::token::{FileStore, TokenStore};
use serde_json::json;
use support::alone::own_process;
use support::logs::capture_trace;

#[tokio::test(start_paused = true)]
async fn no_secret_in_any_log_line_at_trace() {
    // The subscriber is global: this test has a process of its own, so it sees only its logs.
    if !own_process(module_path!(), "no_secret_in_any_log_line_at_trace") {
        return;
    }
    let logs = capture_trace();

    let _tick = ticker();
    let clock = Clock::new();
    let server = TokenServer::start(clock).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(FileStore::open(dir.path()).unwrap());
    let extra = format!(
        "username = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\nintrospect_url = \"{}/introspect\"\nrevoke_url = \"{}/revoke\"",
        server.url(),
        server.url()
    );
    let p = provider("api", &server.url(), &extra);
    let mut engine = Engine::start(p.clone(), store.clone(), clock);
    assert_eq!(engine.next_event().await, "ok");

    server.push(Step::status(503));
    server.push(Step::Merge(
        json!({"access_token": "at-SECRET-crlf\r\nX: y"}),
    ));
    server.push(Step::Reply(
        400,
        json!({"error": "invalid_grant", "error_description": "bad token"}).to_string(),
        vec![],
    ));
    assert_eq!(engine.next_event().await, "transient_error");
    assert_eq!(engine.next_event().await, "transient_error");
    assert_eq!(
        engine.next_event().await,
        "ok",
        "invalid_grant, then the password grant"
    );
    server.push(Step::Merge(json!({"expires_in": null})));
    assert_eq!(engine.next_event().await, "ok", "expiry from introspection");

    tokio::time::sleep(Duration::from_secs(11)).await;
    let c = engine.reader.current(tokio::time::Instant::now()).unwrap();
    assert!(
        engine
            .reader
            .report_rejected(&c, credproxy::credential::Rejection::Plain)
    );
    assert_eq!(engine.next_event().await, "ok", "forced by a 401");
    engine.stop().await;

    let (cli, _) = context(store.clone(), clock);
    let t = credproxy::token::obtain_once(&p, &cli).await.unwrap();
    tracing::debug!(token = ?t, "obtain_once returned");
    let out = credproxy::token::logout(&p, &cli).await.unwrap();
    assert!(out.removed);
    let mut again = Engine::start(p.clone(), store, clock);
    assert_eq!(again.next_event().await, "ok");
    again.stop().await;

    let logs = logs.text();
    for must in [
        "obtained a new token",
        "token refresh failed",
        "refresher",
        "TRACE",
        "introspection",
    ] {
        assert!(
            logs.contains(must),
            "the logs should mention {must:?}:\n{logs}"
        );
    }
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains("SECRET")).collect();
    assert!(
        leaks.is_empty(),
        "secrets in the logs:\n{}",
        leaks.join("\n")
    );
    assert!(!logs.contains(CLIENT_SECRET) && !logs.contains(PASSWORD));
}

/// Issue 14 items 1 and 3: what is learned or noticed about time is logged at info once. A
/// learned lifetime once, though it is learned twice (the second time at debug, after it grew
/// back for want of rejections); a wall-clock
/// jump (an hour, as after a suspend) once, though requests keep finding it until the refresh.
#[tokio::test(start_paused = true)]
async fn a_learned_lifetime_and_a_wall_clock_jump_are_logged_once_at_info() {
    use credproxy::credential::Rejection;
    if !own_process(
        module_path!(),
        "a_learned_lifetime_and_a_wall_clock_jump_are_logged_once_at_info",
    ) {
        return;
    }
    let logs = capture_trace();
    let _tick = ticker();
    let wall = support::clock::JumpingWall::leak();
    let clock = Clock::with_wall(wall);
    let server = TokenServer::start(clock).await;
    server.set_lifetime(json!(null));
    let store: Arc<dyn TokenStore> = Arc::new(credproxy::token::MemoryStore::new());
    let mut engine = Engine::start(provider("api", &server.url(), ""), store, clock);
    assert_eq!(engine.next_event().await, "ok");
    // Ages count from when each token was obtained, not from when the test heard of it: a
    // round trip (or a whole-second `obtained_at`) already ate some of it. The second token's
    // reply is slow (a second on tokio's clock) to show that.
    server.push(Step::Delay(Duration::from_secs(1)));
    let lifetime = |e: &Engine| {
        let s = e.reader.snapshot();
        s.expires_at_unix.unwrap() - s.last_refresh_unix.unwrap()
    };
    let c = engine.reader.current(tokio::time::Instant::now()).unwrap();
    tokio::time::sleep_until(c.obtained_at + Duration::from_secs(5)).await;
    assert!(engine.reader.report_rejected(&c, Rejection::InvalidToken));
    assert_eq!(engine.next_event().await, "ok");
    assert_eq!(lifetime(&engine), 5, "learned");
    // Unrejected, the learned lifetime doubles each minute; once it is 20 s (refreshed at 10 s
    // or later), one is rejected at 6 s: learned again.
    while lifetime(&engine) < 20 {
        assert_eq!(engine.next_event().await, "ok");
    }
    let c = engine.reader.current(tokio::time::Instant::now()).unwrap();
    tokio::time::sleep_until(c.obtained_at + Duration::from_secs(6)).await;
    assert!(engine.reader.report_rejected(&c, Rejection::InvalidToken));
    assert_eq!(engine.next_event().await, "ok");
    assert!(lifetime(&engine) < 20, "learned again");
    // An hour-long token, then an hour's suspend: requests find it expired until the refresh.
    server.set_lifetime(json!(3600));
    assert_eq!(engine.next_event().await, "ok");
    let before = engine.reader.current(tokio::time::Instant::now()).unwrap();
    wall.jump(Duration::from_secs(3600));
    let waiters: Vec<_> = (0..10)
        .map(|_| {
            let r = engine.reader.clone();
            tokio::spawn(async move { r.wait_usable(Duration::from_secs(10)).await })
        })
        .collect();
    for w in waiters {
        let c = w.await.unwrap().expect("a new token after the jump");
        assert!(c.generation > before.generation);
    }
    assert_eq!(engine.next_event().await, "ok");
    engine.stop().await;

    let text = logs.text();
    let info = |needle: &str| {
        text.lines()
            .filter(|l| l.contains(" INFO ") && l.contains(needle))
            .count()
    };
    assert_eq!(
        info("learned lifetime of ~5s for provider api"),
        1,
        "{text}"
    );
    assert!(text.contains("learned lifetime updated"));
    assert_eq!(info("the wall clock jumped ~3600s ahead"), 1, "{text}");
}
