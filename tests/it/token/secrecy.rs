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
