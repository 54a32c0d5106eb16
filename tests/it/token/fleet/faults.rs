//! The fleet's fault tests (issue 18 item 8): a lease holder stopped past its lease, a holder
//! killed between the provider's answer and its commit, and a token call slower than the lease.
//! Real `credproxy run` processes, a real `redis-server`, the rotating OAuth 2.0 fake that
//! revokes the whole grant on reuse.
//!
//! Where the fault must land at one point of an instance's store calls, that instance reaches
//! Redis through a [`Relay`] that holds the command at that point: the process is then stopped
//! or killed exactly there, with no hook in credproxy. A short `[store] lease_ttl` (2 s) keeps
//! the waits short. Figures are printed (`--nocapture`) for the report.

use std::time::{Duration, Instant};

use super::{Fleet, load, load_on, report};
use crate::support::redis::{Hold, RedisServer, Relay};
use crate::support::{Fake, Fault};

const LEASE_TTL: Duration = Duration::from_secs(2);

/// Waits for `cond`, failing after `limit`; how long it took.
async fn within(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// The fleet's health at the end: no refresh token presented twice, the grant alive.
fn assert_no_reuse(fleet: &Fleet, bad: usize) {
    let logs = || fleet.logs();
    assert_eq!(bad, 0, "requests not answered 200\n{}", logs());
    assert_eq!(
        fleet.fake.refresh_reuse(),
        0,
        "a refresh token was spent twice\n{}",
        logs()
    );
    assert_eq!(fleet.fake.grants_revoked(), 0, "{}", logs());
    assert!(!logs().contains("login_required"), "{}", logs());
}

/// A holder stopped (SIGSTOP) after taking the lease and before its token call, for twice the
/// lease, then resumed (SIGCONT): meanwhile another instance took the lease and rotated the
/// refresh token; the resumed one sees its lease gone, makes no token call with the refresh
/// token it read, and adopts the new token. Every request (those sent to the stopped instance
/// included: they wait, then are served) is answered 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_stopped_past_its_lease_spends_nothing_when_resumed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    // 30 s tokens: refreshed at half their life; the stopped instance's copy stays valid
    // through the stop.
    let mut fleet = Fleet::new(&redis, Duration::from_secs(30), Some(LEASE_TTL)).await;
    let relay = Relay::start(redis.port(), "fleet", "api", Hold::LoadUnderLease).await;
    let a = fleet.spawn_via(&relay.url());
    fleet.ready(a).await;
    // Alone, it takes the lease when the refresh is due, and is stopped there.
    relay.wait_held(Duration::from_secs(60)).await;
    fleet.instances[a].signal("STOP");
    let stopped = Instant::now();
    relay.release();
    for _ in 0..2 {
        let i = fleet.spawn_via(&redis.url());
        fleet.ready(i).await;
    }
    let duration = Duration::from_secs(10);
    let mut took_over = Duration::ZERO;
    let (ok, bad) = load(&fleet, duration, async {
        // The others wait out the stopped holder's lease; one of them refreshes.
        within(
            Duration::from_secs(15),
            "another instance refreshed",
            || fleet.fake.refresh_grants() >= 1,
        )
        .await;
        took_over = stopped.elapsed();
        tokio::time::sleep((LEASE_TTL * 2).saturating_sub(stopped.elapsed())).await;
        fleet.instances[a].signal("CONT");
    })
    .await;
    let stop = stopped.elapsed().min(duration);
    eprintln!(
        "stopped holder: stopped while holding a {LEASE_TTL:?} lease; another instance refreshed \
         {took_over:?} after the stop; resumed after at least {:?}",
        LEASE_TTL * 2
    );
    report("stopped holder", &fleet, stop, ok, bad);
    assert_no_reuse(&fleet, bad);
    assert!(ok > 0);
    assert_eq!(
        fleet.fake.refresh_grants(),
        1,
        "one refresh in all (the resumed holder made none)\n{}",
        fleet.logs()
    );
    let log = std::fs::read_to_string(fleet.dir.path().join(format!("log-{a}.txt"))).unwrap();
    assert!(
        log.contains("too little for a token call"),
        "the resumed holder saw its lease gone:\n{log}"
    );
}

/// A holder killed (SIGKILL) after the provider answered, with its new token staged, and before
/// its commit landed: the next holder commits the staged token and refreshes with its refresh
/// token (the one the provider issued to the killed instance), so no refresh token is spent
/// twice and no one is asked to log in. The instances started after the kill serve the staged
/// token until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_killed_before_its_commit_leaves_its_token_to_the_next_holder() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(&redis, Duration::from_secs(10), Some(LEASE_TTL)).await;
    let relay = Relay::start(redis.port(), "fleet", "api", Hold::Commit).await;
    let a = fleet.spawn_via(&relay.url());
    fleet.ready(a).await;
    relay.wait_held(Duration::from_secs(30)).await;
    let instance = &mut fleet.instances[a];
    instance.child.kill().unwrap();
    instance.child.wait().unwrap();
    assert_eq!(fleet.fake.refresh_grants(), 1, "the provider answered");
    assert_eq!(
        redis.cli(&["HEXISTS", "fleet:token:api", "pv"]).trim(),
        "1",
        "staged before the commit"
    );
    let others: Vec<usize> = (0..2).map(|_| fleet.spawn_via(&redis.url())).collect();
    for &i in &others {
        fleet.ready(i).await;
    }
    let start = Instant::now();
    let (ok, bad) = load_on(&fleet, &others, Duration::from_secs(12), async {
        within(Duration::from_secs(11), "the next refresh", || {
            fleet.fake.refresh_grants() >= 2
        })
        .await;
    })
    .await;
    report("killed holder", &fleet, start.elapsed(), ok, bad);
    assert_no_reuse(&fleet, bad);
    assert!(ok > 0);
    assert_eq!(
        redis.cli(&["HEXISTS", "fleet:token:api", "pv"]).trim(),
        "0",
        "committed"
    );
    let mut recovered = 0;
    for &i in &others {
        let metrics = fleet.instances[i].admin_get("/metrics").await;
        recovered += metrics
            .lines()
            .filter(|l| {
                l.starts_with("credproxy_token_uncommitted_total") && l.contains("recovered")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    eprintln!(
        "killed holder: the staged token was committed by the next holder ({recovered} recovered)"
    );
    assert_eq!(recovered, 1, "{}", fleet.logs());
}

/// A token call slower than the lease (the provider answers after 2.5 lease TTLs): the holder
/// keeps renewing its lease, so the lease's owner never changes, its PTTL keeps being extended,
/// and no other instance makes a token call meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_call_slower_than_the_lease_keeps_the_lease_renewed() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(&redis, Duration::from_secs(20), Some(LEASE_TTL)).await;
    for _ in 0..3 {
        fleet.spawn_via(&redis.url());
    }
    for i in 0..3 {
        fleet.ready(i).await;
    }
    let slow = LEASE_TTL * 5 / 2;
    fleet.fake.push_fault(Fault::Delay(slow));
    let mut samples: Vec<(Duration, String, i64)> = Vec::new();
    let (ok, bad) = load(&fleet, Duration::from_secs(18), async {
        // The login was the first token call; the refresh (at half the lifetime) the second.
        within(Duration::from_secs(15), "the refresh began", || {
            fleet.fake.token_calls() >= 2
        })
        .await;
        let began = Instant::now();
        while fleet.fake.refresh_grants() == 0 {
            let owner = redis.cli_async(&["GET", "fleet:lease:api"]).await;
            let pttl = redis.cli_async(&["PTTL", "fleet:lease:api"]).await;
            samples.push((
                began.elapsed(),
                owner.trim().to_owned(),
                pttl.trim().parse().unwrap_or(-3),
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    report("slow token call", &fleet, Duration::from_secs(18), ok, bad);
    assert_no_reuse(&fleet, bad);
    assert_eq!(fleet.fake.token_calls(), 2, "no second instance called");
    assert_eq!(fleet.fake.refresh_grants(), 1);
    let (last, owner, _) = samples.last().cloned().expect("sampled");
    assert!(last >= LEASE_TTL * 2, "the call lasted {last:?}");
    assert!(!owner.is_empty(), "{samples:?}");
    assert!(
        samples.iter().all(|(_, o, pttl)| *o == owner && *pttl > 0),
        "the lease changed hands or lapsed during the call: {samples:?}"
    );
    // Extended: the PTTL went up again (renewed) after a TTL had passed since the call began.
    let extended = samples
        .windows(2)
        .filter(|w| w[1].2 > w[0].2 && w[1].0 > LEASE_TTL)
        .count();
    assert!(extended > 0, "{samples:?}");
    eprintln!(
        "slow token call: {slow:?} against a {LEASE_TTL:?} lease; {} samples over {last:?}, one \
         owner throughout, PTTL between {} and {} ms, extended {extended} times after the first TTL",
        samples.len(),
        samples.iter().map(|s| s.2).min().unwrap(),
        samples.iter().map(|s| s.2).max().unwrap(),
    );
}

/// A logout during the lease holder's token call (the provider holds the refresh for 3 s):
/// the token is removed as `credproxy logout` removes it, without waiting for the lease (as
/// when the lease lapsed under a paused holder whose answer is then taken). The holder's stage
/// and commit are refused, and it stops serving (`login_required`) instead of serving the new
/// token unsaved; nothing is written back to Redis: the logout stays done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_during_the_holders_token_call_is_not_undone() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mut fleet = Fleet::new(&redis, Duration::from_secs(10), Some(LEASE_TTL)).await;
    let a = fleet.spawn_via(&redis.url());
    fleet.ready(a).await;
    fleet.fake.push_fault(Fault::Delay(Duration::from_secs(3)));
    // The login was the first token call; the refresh (at half the lifetime) the second.
    within(Duration::from_secs(15), "the refresh began", || {
        fleet.fake.token_calls() >= 2
    })
    .await;
    assert_eq!(fleet.fake.refresh_grants(), 0, "still held by the provider");
    // What the store's removal does: the token goes, the generation moves, the others are told.
    redis.cli(&["HDEL", "fleet:token:api", "v", "fp", "pv", "pfp"]);
    redis.cli(&["HINCRBY", "fleet:token:api", "gen", "1"]);
    redis.cli(&["PUBLISH", "fleet:changed", "api"]);
    within(Duration::from_secs(10), "the provider answered", || {
        fleet.fake.refresh_grants() >= 1
    })
    .await;
    let start = Instant::now();
    let mut state = String::new();
    while !state.contains("login_required") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still serving after the logout: {state}\n{}",
            fleet.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        state = fleet.instances[a].admin_get("/status").await;
    }
    let mut conn = None;
    let status = super::get(fleet.instances[a].listen, &mut conn).await;
    assert_ne!(status, Some(200), "a request was served after the logout");
    assert_eq!(redis.cli(&["HEXISTS", "fleet:token:api", "v"]).trim(), "0");
    assert_eq!(redis.cli(&["HEXISTS", "fleet:token:api", "pv"]).trim(), "0");
    eprintln!(
        "logout during a token call: login_required {:?} after the provider answered",
        start.elapsed()
    );
}
