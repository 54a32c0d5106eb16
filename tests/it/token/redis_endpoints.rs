//! The Redis store's other endpoints against real servers: `rediss://` (TLS through rustls,
//! the server's certificate from the test CA, trusted through `[proxy] ca_file`) and
//! `redis+sentinel://` (a real Sentinel, `redis-server --sentinel`, watching a primary and a
//! replica), including a failover: the store finds the new primary without a restart.
//!
//! Each test skips, saying why, where the server can't do it (a redis-server without TLS).

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use credproxy::secret::Secret;
use credproxy::token::store::{StoredToken, TokenStore, fingerprint};

use crate::support::TestCa;
use crate::support::redis::RedisServer;

fn token(n: i64) -> StoredToken {
    StoredToken {
        access_token: Secret::from(format!("AT-SECRET-{n}")),
        refresh_token: Some(Secret::from(format!("RT-SECRET-{n}"))),
        expires_at: Some(4_000_000_000),
        obtained_at: 1_800_000_000 + n,
        fingerprint: fingerprint("https://auth.example/token", Some("id"), "refresh"),
        secrets: BTreeMap::new(),
        details: BTreeMap::new(),
        expiry_assumed: false,
    }
}

/// Waits for `cond`, failing after `limit`; how long it took.
fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

#[test]
fn rediss_with_the_ca_file_works_and_without_it_is_refused() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = RedisServer::start_tls(&ca, dir.path()) else {
        return;
    };
    let url = format!("rediss://localhost:{}/0", server.port());
    let (a, _d1) = RedisServer::store_at(&url, Some(ca.ca_pem().into_bytes()));
    let (b, _d2) = RedisServer::store_at(&url, Some(ca.ca_pem().into_bytes()));
    a.ping().unwrap();
    let changes = b.changes("api").unwrap();
    a.save("api", &token(1)).unwrap();
    assert_eq!(b.load("api").unwrap(), Some(token(1)));
    {
        let _lease = a.lock("api").unwrap();
        assert!(
            b.try_lock("api").unwrap().is_none(),
            "one lease over TLS too"
        );
        a.load("api").unwrap();
        a.save("api", &token(2)).unwrap();
    }
    assert_eq!(b.load("api").unwrap(), Some(token(2)));
    // The watcher subscribes over TLS as well.
    within(Duration::from_secs(3), "told by pub/sub over TLS", || {
        changes.has_changed().unwrap()
    });
    within(Duration::from_secs(2), "healthy", || {
        a.health().unwrap().unavailable.is_none()
    });

    // A server whose certificate the store does not trust (no ca_file: the system's roots),
    // and plain redis:// to the TLS port: refused, and the message says where.
    let (untrusting, _d3) = RedisServer::store_at(&url, None);
    let err = untrusting.ping().unwrap_err();
    let text = credproxy::token::error::chain(&err);
    assert!(
        text.contains(&format!("localhost:{}", server.port())),
        "{text}"
    );
    eprintln!("rediss without the CA: {text}");
    let (plain, _d4) =
        RedisServer::store_at(&format!("redis://localhost:{}/0", server.port()), None);
    assert!(plain.ping().is_err());
}

#[test]
fn sentinel_finds_the_primary_and_the_new_one_after_a_failover() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let replica = RedisServer::start_replica(&primary).unwrap();
    let sentinel = RedisServer::start_sentinel(&primary, "mymaster", dir.path()).unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let (store, _d) = RedisServer::store_at(&url, None);
    store.ping().unwrap();
    store.save("api", &token(1)).unwrap();
    let generation = |server: &RedisServer| -> i64 {
        server
            .cli(&["HGET", "at:token:api", "gen"])
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let written = generation(&primary);
    assert!(written > 0, "written to the primary");
    within(Duration::from_secs(10), "replicated", || {
        generation(&replica) == written
    });

    // A failover (as after the primary's loss): the replica is promoted.
    let took = within(Duration::from_secs(30), "failed over", || {
        sentinel
            .cli(&["SENTINEL", "FAILOVER", "mymaster"])
            .trim()
            .starts_with("OK")
    });
    within(
        Duration::from_secs(20),
        "the replica is the primary",
        || {
            sentinel
                .cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"])
                .contains(&replica.port().to_string())
                && replica.cli(&["ROLE"]).starts_with("master")
        },
    );
    // The old primary still answers as one for a while (until Sentinel turns it into a
    // replica); the store asks the sentinels every second and moves to the new primary
    // without a restart.
    let found = within(
        Duration::from_secs(5),
        "writes reach the new primary",
        || store.save("api", &token(2)).is_ok() && generation(&replica) > written,
    );
    assert_eq!(store.load("api").unwrap(), Some(token(2)));
    eprintln!(
        "sentinel: failover accepted after {took:?}; the store wrote to the new primary {found:?} later"
    );
}

/// A sentinel that stops answering (SIGSTOP: it accepts, then says nothing) never hangs a
/// store call: connections go to the primary the sentinels last named, and asking a stopped
/// sentinel times out. A store that knows a primary keeps working, its connection made anew;
/// one that knows none fails within seconds (each sentinel asked with a 1 s timeout; the
/// store's own ping thread may be asking at the same time).
#[test]
fn a_stopped_sentinel_hangs_no_store_call() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sentinel = RedisServer::start_sentinel(&primary, "mymaster", dir.path()).unwrap();
    let url = format!("redis+sentinel://127.0.0.1:{}/mymaster", sentinel.port());
    let (store, _d) = RedisServer::store_at(&url, None);
    store.save("api", &token(1)).unwrap();
    sentinel.signal("STOP");
    // Its connection dropped: the next call connects again, to the primary it knows.
    primary.cli(&["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"]);
    let timed = |f: Box<dyn FnOnce() -> bool + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let start = Instant::now();
            let ok = f();
            let _ = tx.send((ok, start.elapsed()));
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("a store call hung on the stopped sentinel")
    };
    let (ok, took) = timed(Box::new(move || {
        // The first call may meet the killed connection; the next connects again.
        let _ = store.save("api", &token(2));
        store.save("api", &token(3)).is_ok()
    }));
    assert!(ok, "the store stopped working with its sentinel ({took:?})");
    let (fresh, _d2) = RedisServer::store_at(&url, None);
    let (ok, took) = timed(Box::new(move || fresh.ping().is_ok()));
    assert!(!ok);
    assert!(took < Duration::from_secs(8), "{took:?}");
    sentinel.signal("CONT");
    eprintln!("stopped sentinel: a store with no primary yet failed in {took:?}");
}
