//! The Redis token store against a real `redis-server` (support::redis): what Redis holds is
//! sealed, the lease is renewed while held and only its owner's commit lands, a token that could
//! not be committed is kept (in Redis, or on local disk while Redis is away) and recovered by the
//! next holder, a change reaches the other instances through pub/sub, and an unreachable Redis is
//! reported within 2 s.
//!
//! Lease times are Redis's own (`PX`), on the real clock: these tests wait real time where Redis
//! keeps it, and hold waits to conditions with deadlines, not to guesses.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use credproxy::secret::Secret;
use credproxy::token::store::redis::{StoreEvent, StoreEvents};
use credproxy::token::store::{StoreError, StoredToken, TokenStore, fingerprint};

use crate::support::redis::{Hold, RedisServer, Relay};

fn token(n: i64) -> StoredToken {
    StoredToken {
        access_token: Secret::from(format!("AT-SECRET-{n}")),
        refresh_token: Some(Secret::from(format!("RT-SECRET-{n}"))),
        expires_at: Some(4_000_000_000),
        obtained_at: 1_800_000_000 + n,
        fingerprint: fingerprint(
            "https://auth.example/token",
            Some("id"),
            "authorization_code",
        ),
        secrets: BTreeMap::from([("apiKey".to_owned(), Secret::from("KEY-SECRET"))]),
        details: BTreeMap::new(),
        expiry_assumed: false,
    }
}

fn n_of(t: &StoredToken) -> i64 {
    t.obtained_at - 1_800_000_000
}

type Events = Arc<Mutex<Vec<(String, StoreEvent)>>>;

fn recorder() -> (Events, StoreEvents) {
    let events: Events = Arc::default();
    let sink = events.clone();
    (
        events,
        Arc::new(move |p: &str, e| sink.lock().push((p.to_owned(), e))),
    )
}

/// Waits for `cond`, failing after `limit`; how long it took.
fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

#[test]
fn what_redis_holds_is_sealed_and_bound_to_its_place() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (store, _dir) = server.store("sealed");
    store.save("api", &token(1)).unwrap();
    let raw = server.cli(&["HGETALL", "sealed:token:api"]);
    assert!(
        !raw.contains("SECRET"),
        "a secret in Redis in the clear: {raw}"
    );
    assert!(raw.contains(&token(1).fingerprint), "{raw}");
    assert_eq!(store.load("api").unwrap(), Some(token(1)));

    // Another key can't read it, and says so without a value.
    let (other, _dir2) = server.store_with_key("sealed", [7; 32]);
    let err = other.load("api").unwrap_err();
    assert!(matches!(err, StoreError::Sealed { .. }), "{err:?}");
    assert!(err.is_unusable_token());
    let text = format!("{err} {:?}", err);
    assert!(!text.contains("SECRET"), "{text}");

    // A value moved to another provider's key does not open there.
    server.cli(&["COPY", "sealed:token:api", "sealed:token:other"]);
    assert!(matches!(
        store.load("other"),
        Err(StoreError::Sealed { .. })
    ));
}

#[test]
fn the_lease_is_renewed_while_held_and_released_on_drop() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let ttl = Duration::from_millis(600);
    let (a, _d1) = server.store_with("lease", ttl, Arc::new(|_, _| {}));
    let (b, _d2) = server.store_with("lease", ttl, Arc::new(|_, _| {}));
    let held = a.lock("api").unwrap();
    // Three TTLs: without renewal the lease would be gone twice over.
    std::thread::sleep(ttl * 3);
    assert!(
        b.try_lock("api").unwrap().is_none(),
        "the lease lapsed while held"
    );
    let left = held.remaining().expect("a lease has a remaining time");
    assert!(left > ttl / 3 && left <= ttl, "{left:?}");
    let pttl: i64 = server
        .cli(&["PTTL", "lease:lease:api"])
        .trim()
        .parse()
        .unwrap();
    assert!(pttl > 0 && pttl <= 600, "{pttl}");
    drop(held);
    // Released by its owner at once, not left to expire.
    assert_eq!(server.cli(&["EXISTS", "lease:lease:api"]).trim(), "0");
    assert!(b.try_lock("api").unwrap().is_some());
}

#[test]
fn a_holder_that_lost_its_lease_commits_nothing_and_its_token_is_recovered() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (events, sink) = recorder();
    let (a, _d1) = server.store_with("lost", Duration::from_secs(30), sink.clone());
    let (b, _d2) = server.store_with("lost", Duration::from_secs(30), sink);
    a.save("api", &token(1)).unwrap();

    let a_lease = a.lock("api").unwrap();
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 1);
    // A stalls past its lease (here: the lease is taken from under it) and B takes over.
    server.cli(&["DEL", "lost:lease:api"]);
    {
        let _b_lease = b.lock("api").unwrap();
        assert_eq!(n_of(&b.load("api").unwrap().unwrap()), 1);
        b.save("api", &token(2)).unwrap();
    }
    // A's token call answered after all: its commit is refused, the token kept (staged).
    let err = a.save("api", &token(3)).unwrap_err();
    assert!(matches!(err, StoreError::NotCommitted { .. }), "{err:?}");
    drop(a_lease);
    assert_eq!(
        n_of(&b.load("api").unwrap().unwrap()),
        3,
        "readers see the newest token"
    );
    assert_eq!(server.cli(&["HEXISTS", "lost:token:api", "pv"]).trim(), "1");

    // The next holder commits it.
    {
        let _lease = b.lock("api").unwrap();
        assert_eq!(n_of(&b.load("api").unwrap().unwrap()), 3);
    }
    assert_eq!(server.cli(&["HEXISTS", "lost:token:api", "pv"]).trim(), "0");
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 3);
    assert_eq!(
        *events.lock(),
        [
            ("api".to_owned(), StoreEvent::Kept),
            ("api".to_owned(), StoreEvent::Recovered)
        ]
    );

    // A lease taken over while the new holder's own call still runs: the old holder's commit
    // is refused for the lease alone (the generation has not moved yet), and the new holder's
    // lands.
    let a_lease = a.lock("api").unwrap();
    a.load("api").unwrap();
    server.cli(&["DEL", "lost:lease:api"]);
    let b_lease = b.lock("api").unwrap();
    b.load("api").unwrap();
    assert!(matches!(
        a.save("api", &token(6)),
        Err(StoreError::NotCommitted { .. })
    ));
    b.save("api", &token(7)).unwrap();
    drop((a_lease, b_lease));
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 7);

    // A commit by a holder whose generation is stale is refused too.
    let lease = a.lock("api").unwrap();
    a.load("api").unwrap();
    b.save("api", &token(4)).unwrap(); // a login, not under the lease
    assert!(matches!(
        a.save("api", &token(5)),
        Err(StoreError::NotCommitted { .. })
    ));
    drop(lease);
}

/// A logout while the lease holder's token call runs: the holder's save is refused as
/// [`StoreError::Removed`] (a failure the refresher answers by forgetting the token), nothing
/// is staged, and the refused token is not remembered: Redis coming back empty afterwards gets
/// nothing written back, so the logout is not undone.
#[test]
fn a_logout_during_the_holders_token_call_is_not_undone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _d1) = server.store("logout");
    let (b, _d2) = server.store("logout");
    a.save("api", &token(1)).unwrap();
    let lease = a.lock("api").unwrap();
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 1);
    // `credproxy logout` elsewhere, while A's token call runs.
    assert!(b.remove("api").unwrap());
    let err = a.save("api", &token(2)).unwrap_err();
    assert!(matches!(err, StoreError::Removed { .. }), "{err:?}");
    assert!(err.to_string().contains("credproxy login api"), "{err}");
    assert!(!format!("{err} {err:?}").contains("SECRET"), "{err:?}");
    drop(lease);
    assert_eq!(
        server.cli(&["HEXISTS", "logout:token:api", "v"]).trim(),
        "0"
    );
    assert_eq!(
        server.cli(&["HEXISTS", "logout:token:api", "pv"]).trim(),
        "0"
    );
    assert!(a.load("api").unwrap().is_none());
    // Redis restarted empty: A knows no token to write back.
    server.cli(&["DEL", "logout:token:api"]);
    assert!(a.load("api").unwrap().is_none(), "the logout was undone");
    assert_eq!(server.cli(&["EXISTS", "logout:token:api"]).trim(), "0");
}

/// A guard whose lease was lost, dropped after the same process took the lease again: the new
/// holder stays the holder (its commit still needs its lease and generation), and is not turned
/// into an unconditional writer that would overwrite a login made meanwhile.
#[test]
fn a_stale_guard_dropped_late_leaves_the_next_holder_alone() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _d1) = server.store("stale");
    let (login, _d2) = server.store("stale");
    a.save("api", &token(1)).unwrap();
    let old = a.lock("api").unwrap();
    a.load("api").unwrap();
    // The old guard's lease runs out (here: taken from under it); the process takes it again.
    server.cli(&["DEL", "stale:lease:api"]);
    let new = a.lock("api").unwrap();
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 1);
    login.save("api", &token(5)).unwrap(); // a login, not under the lease
    drop(old);
    let err = a.save("api", &token(2)).unwrap_err();
    assert!(matches!(err, StoreError::NotCommitted { .. }), "{err:?}");
    drop(new);
    assert_eq!(
        n_of(&login.load("api").unwrap().unwrap()),
        5,
        "the login was overwritten"
    );
}

/// The holder's new token is on local disk (the 0600 pending file) before its stage is sent,
/// so a process that dies before Redis acknowledges the stage keeps it; the file goes once the
/// commit is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_holders_token_is_on_disk_before_its_stage_is_sent() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let relay = Relay::start(server.port(), "at", "api", Hold::Stage).await;
    let (a, dir) = RedisServer::store_at(&relay.url(), None);
    let file = dir.path().join("redis-pending").join("api.json");
    let probed = file.clone();
    relay.probe_on_hold(move || probed.exists());
    let saving = tokio::task::spawn_blocking(move || {
        a.save("api", &token(1))?;
        let _lease = a.lock("api")?;
        a.load("api")?;
        a.save("api", &token(2))
    });
    relay.wait_held(Duration::from_secs(10)).await;
    let mode = std::fs::metadata(&file).map(|m| m.permissions().mode() & 0o777);
    relay.release();
    assert_eq!(
        relay.probed(),
        Some(true),
        "the token was not on disk while its stage was in flight"
    );
    saving.await.unwrap().unwrap();
    // Looked at after the hold: the file may be gone already if the instance gave up on the held
    // stage (1 s) and committed on a new connection; while it is there, it is 0600.
    assert!(
        mode.is_err() || mode.as_ref().ok() == Some(&0o600),
        "{mode:?}"
    );
    assert!(!file.exists(), "the pending file outlived the commit");
}

/// A hash that holds only a staged token (a commit refused while Redis had no token at all) is
/// not a logout: the next holder's stage and commit land. A logout is marked (`removed`).
#[test]
fn a_hash_with_only_a_staged_token_is_not_a_logout() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _d1) = server.store("staged");
    let (b, _d2) = server.store("staged");
    let lease = a.lock("api").unwrap();
    assert!(a.load("api").unwrap().is_none());
    server.cli(&["DEL", "staged:lease:api"]);
    assert!(matches!(
        a.save("api", &token(1)),
        Err(StoreError::NotCommitted { .. })
    ));
    drop(lease);
    assert_eq!(
        server.cli(&["HEXISTS", "staged:token:api", "pv"]).trim(),
        "1"
    );
    assert_eq!(
        server.cli(&["HEXISTS", "staged:token:api", "v"]).trim(),
        "0"
    );
    {
        let _lease = b.lock("api").unwrap();
        b.save("api", &token(2)).unwrap();
    }
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 2);
    assert!(b.remove("api").unwrap());
    assert_eq!(
        server.cli(&["HGET", "staged:token:api", "removed"]).trim(),
        "1"
    );
    a.save("api", &token(3)).unwrap(); // a login clears the mark
    assert_eq!(
        server
            .cli(&["HEXISTS", "staged:token:api", "removed"])
            .trim(),
        "0"
    );
}

#[test]
fn redis_away_is_reported_within_2s_the_token_kept_on_disk_and_recovered_when_back() {
    let Some(mut server) = RedisServer::start() else {
        return;
    };
    let (events, sink) = recorder();
    let (store, dir) = server.store_with("away", Duration::from_secs(30), sink);
    store.save("api", &token(1)).unwrap();
    within(Duration::from_secs(2), "healthy", || {
        store.health().unwrap().unavailable.is_none()
    });

    let lease = store.lock("api").unwrap();
    store.load("api").unwrap();
    // Redis dies while the token call runs.
    let port = server.port();
    drop(server);
    let took = within(Duration::from_secs(2), "store_unavailable", || {
        store.health().unwrap().unavailable.is_some()
    });
    eprintln!("Redis down: reported after {took:?}");
    assert!(store.save("api", &token(2)).is_err());
    drop(lease);
    let kept = dir.path().join("redis-pending/api.json");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(store.lock("api").is_err(), "no lease without Redis");

    // Back (empty: nothing persisted): the kept token is staged, then committed by the holder.
    server = RedisServer::start_on(port).unwrap();
    let took = within(Duration::from_secs(3), "back", || {
        store.health().unwrap().unavailable.is_none() && !kept.exists()
    });
    eprintln!("Redis back: noticed and kept token staged after {took:?}");
    {
        let _lease = store.lock("api").unwrap();
        assert_eq!(n_of(&store.load("api").unwrap().unwrap()), 2);
    }
    assert_eq!(server.cli(&["HEXISTS", "away:token:api", "v"]).trim(), "1");
    assert_eq!(events.lock()[0].1, StoreEvent::Kept);

    // After a restart of the process that kept one (nothing in memory, Redis back): the file
    // alone brings it back, and the next holder commits it.
    let dir = tempfile::tempdir().unwrap();
    let pending = dir.path().join("redis-pending");
    credproxy::token::store::FileStore::open(&pending)
        .unwrap()
        .save("api", &token(3))
        .unwrap();
    let (events, sink) = recorder();
    let fresh = server.store_in("away", &pending, sink);
    within(Duration::from_secs(3), "staged from the file", || {
        !pending.join("api.json").exists()
    });
    {
        let _lease = fresh.lock("api").unwrap();
        assert_eq!(n_of(&fresh.load("api").unwrap().unwrap()), 3);
    }
    assert_eq!(*events.lock(), [("api".to_owned(), StoreEvent::Recovered)]);
    assert_eq!(n_of(&store.load("api").unwrap().unwrap()), 3);
}

#[test]
fn a_stopped_redis_is_reported_within_2s() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (store, _dir) = server.store("stopped");
    within(Duration::from_secs(2), "healthy", || {
        store.health().unwrap().unavailable.is_none()
    });
    server.signal("STOP");
    let took = within(Duration::from_secs(2), "store_unavailable", || {
        store.health().unwrap().unavailable.is_some()
    });
    eprintln!("Redis stopped: reported after {took:?}");
    server.signal("CONT");
    within(Duration::from_secs(3), "available again", || {
        store.health().unwrap().unavailable.is_none()
    });
}

#[test]
fn a_change_reaches_the_other_instance_by_pub_sub_well_within_1s() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _d1) = server.store("pubsub");
    let (b, _d2) = server.store("pubsub");
    let mut changes = b.changes("api").unwrap();
    // The watcher subscribes on its own thread; a first write tells when it listens.
    within(Duration::from_secs(3), "subscribed", || {
        a.save("api", &token(0)).unwrap();
        changes.has_changed().unwrap()
    });
    changes.mark_unchanged();
    let start = Instant::now();
    a.save("api", &token(1)).unwrap();
    within(Duration::from_secs(1), "notified", || {
        changes.has_changed().unwrap()
    });
    eprintln!(
        "pub/sub: the other instance was told after {:?}",
        start.elapsed()
    );
    assert_eq!(n_of(&b.load("api").unwrap().unwrap()), 1);
}

/// Redis restarted empty (no persistence) is not a logout: each instance writes back the newest
/// token it holds, and the others converge on it. A real logout is not undone.
#[test]
fn redis_back_empty_gets_the_newest_token_back_but_a_logout_stays() {
    let Some(server) = RedisServer::start() else {
        return;
    };
    let (a, _d1) = server.store("empty");
    let (b, _d2) = server.store("empty");
    a.save("api", &token(1)).unwrap();
    a.save("gone", &token(1)).unwrap();
    assert_eq!(n_of(&b.load("api").unwrap().unwrap()), 1);
    assert!(b.remove("gone").unwrap());
    // A's refresher re-reads on the change and sees the removal.
    assert!(a.load("gone").unwrap().is_none());
    let port = server.port();
    drop(server);
    within(Duration::from_secs(2), "down", || {
        a.health().unwrap().unavailable.is_some()
    });
    let server = RedisServer::start_on(port).unwrap();
    within(Duration::from_secs(3), "written back", || {
        server.cli(&["HEXISTS", "empty:token:api", "v"]).trim() == "1"
    });
    assert_eq!(n_of(&b.load("api").unwrap().unwrap()), 1);
    assert_eq!(n_of(&a.load("api").unwrap().unwrap()), 1);
    // `gone` was removed before the restart, and every instance that read since knows it.
    assert!(a.load("gone").unwrap().is_none(), "a logout is not undone");
    assert!(b.load("gone").unwrap().is_none(), "a logout is not undone");
    assert_eq!(server.cli(&["EXISTS", "empty:token:gone"]).trim(), "0");
}

mod engine {
    //! The engine on a Redis store that can't be reached: a grant that needs no person gets new
    //! tokens with its primary grant and never spends a refresh token without the lease; one
    //! that needs a person makes no token call at all.

    use std::sync::Arc;

    use credproxy::clock::Clock;
    use credproxy::token::TokenStore;

    use crate::support::redis::RedisServer;
    use crate::support::token::*;

    /// A store whose Redis was stopped for good (its port now refuses connections).
    fn gone_redis() -> Option<(Arc<dyn TokenStore>, tempfile::TempDir)> {
        let server = RedisServer::start()?;
        let (store, dir) = server.store("gone");
        drop(server);
        Some((Arc::new(store), dir))
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_a_password_grant_renews_with_the_password_not_the_refresh_token() {
        let Some((store, _dir)) = gone_redis() else {
            return;
        };
        let _tick = ticker();
        let clock = Clock::new();
        let server = TokenServer::start(clock).await;
        let p = provider(
            "api",
            &server.url(),
            &format!("username = \"{USERNAME}\"\npassword = \"{PASSWORD}\""),
        );
        let mut engine = Engine::start(p, store, clock);
        assert_eq!(engine.next_event().await, "ok");
        assert_eq!(engine.next_event().await, "ok", "renewed at its time");
        assert_eq!(server.grants("password"), 2);
        assert_eq!(
            server.grants("refresh_token"),
            0,
            "a refresh token spent without the lease"
        );
        engine.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_a_login_grant_makes_no_token_call() {
        let Some((store, _dir)) = gone_redis() else {
            return;
        };
        let _tick = ticker();
        let clock = Clock::new();
        let server = TokenServer::start(clock).await;
        let extra = format!(
            "grant = \"authorization_code\"\nauthorize_url = \"{}/authorize\"",
            server.url()
        );
        let mut engine = Engine::start(provider("api", &server.url(), &extra), store, clock);
        assert_eq!(engine.next_event().await, "transient_error");
        assert_eq!(server.token_calls(), 0);
        engine.stop().await;
    }
}
