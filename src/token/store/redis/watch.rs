//! The watcher: two threads per store (three behind Sentinel) that keep the instance's copy current and know whether
//! Redis answers.
//!
//! - It subscribes to `<prefix>:changed` and bumps the provider's [`tokio::sync::watch`]
//!   counter on each message, so the refresher re-reads at once (the engine's 5 s re-read is the
//!   fallback when a message is lost).
//! - Behind Sentinel, it asks the sentinels for the primary every [`PRIMARY_CHECK_EVERY`] and
//!   moves both connections to a new one.
//! - It pings Redis every [`PING_EVERY`]; a failed call (any call of the store) marks Redis
//!   unavailable, a ping that answers marks it available again, writes back what Redis lost if
//!   it came back empty, stages the tokens kept on local disk, and bumps every provider so each re-reads (nothing missed while away stays missed).
//!
//! They hold only a weak reference to the store and stop within [`READ_TICK`] (the Sentinel one
//! within [`PRIMARY_CHECK_EVERY`]), plus a call in progress, of the last clone being dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;

/// How often Redis is pinged. With the 1 s call timeout, a stopped Redis is reported within
/// about 1.75 s, inside the 2 s the contract promises.
pub const PING_EVERY: Duration = Duration::from_millis(500);
/// How often the sentinels are asked which node is the primary (`redis+sentinel://` only): a
/// failover is followed within this, rather than when the old primary stops answering.
pub const PRIMARY_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one wait for a message lasts before the watcher looks at the time again.
const READ_TICK: Duration = Duration::from_millis(250);

pub struct Watch {
    senders: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Why Redis is unavailable, if it is. Unavailable until the first ping answers: the first
    /// answer also stages what a previous run kept on local disk.
    unavailable: Mutex<Option<String>>,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            senders: Mutex::default(),
            unavailable: Mutex::new(Some("Redis has not answered yet".to_owned())),
        }
    }
}

impl Watch {
    pub fn subscribe(&self, provider: &str) -> watch::Receiver<u64> {
        self.senders
            .lock()
            .entry(provider.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn bump(&self, provider: &str) {
        if let Some(tx) = self.senders.lock().get(provider) {
            tx.send_modify(|n| *n += 1);
        }
    }

    fn bump_all(&self) {
        for tx in self.senders.lock().values() {
            tx.send_modify(|n| *n += 1);
        }
    }

    pub fn unavailable(&self) -> Option<String> {
        self.unavailable.lock().clone()
    }

    /// A call failed: the store is not working (unreachable, stopped, read-only after a failover,
    /// refusing our password) until the next ping answers, at most [`PING_EVERY`] later.
    pub fn failed(&self, e: &redis::RedisError) {
        let mut slot = self.unavailable.lock();
        if slot.is_none() {
            tracing::warn!(error = %e, "the token store (Redis) can't be reached; serving the tokens held");
        }
        *slot = Some(format!("Redis can't be reached: {e}"));
    }

    /// A ping answered; `true` if Redis was unavailable until now.
    fn answered(&self) -> bool {
        let was = self.unavailable.lock().take();
        if was
            .as_deref()
            .is_some_and(|w| !w.ends_with("not answered yet"))
        {
            tracing::info!("the token store (Redis) answers again");
        }
        was.is_some()
    }
}

pub fn start(inner: &Arc<Inner>) {
    // Threads of their own: a subscriber can block in a connect or a read while Redis is
    // stopped, and the ping must go on regardless to notice it.
    let mut threads = vec![
        ("redis-watch", subscribe as fn(&Weak<Inner>)),
        ("redis-ping", ping as fn(&Weak<Inner>)),
    ];
    if inner.link.is_sentinel() {
        threads.push(("redis-sentinel", follow_primary as fn(&Weak<Inner>)));
    }
    for (name, run) in threads {
        let weak = Arc::downgrade(inner);
        let spawned = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&weak));
        if let Err(e) = spawned {
            tracing::error!(error = %e, thread = name, "can't start a Redis watcher thread; other instances' refreshes are noticed every 5 s");
        }
    }
}

fn ping(weak: &Weak<Inner>) {
    let mut next_ping = Instant::now();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        ping_if_due(&inner, &mut next_ping);
        drop(inner);
        std::thread::sleep(READ_TICK);
    }
}

/// Behind Sentinel only. A thread of its own: asking sentinels that don't answer must not hold
/// up the ping, which reports the store's health.
fn follow_primary(weak: &Weak<Inner>) {
    loop {
        std::thread::sleep(PRIMARY_CHECK_EVERY);
        let Some(inner) = weak.upgrade() else { return };
        match inner.link.primary_moved() {
            Ok(true) => inner.watch.bump_all(),
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "can't ask the sentinels for the primary"),
        }
    }
}

fn subscribe(weak: &Weak<Inner>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let mut conn = match inner.link.connect() {
            Ok(c) => c,
            Err(_) => {
                // The pinger reports it; try again shortly.
                drop(inner);
                std::thread::sleep(READ_TICK);
                continue;
            }
        };
        let channel = inner.channel();
        let epoch = inner.link.primary_epoch();
        drop(inner);
        let mut sub = conn.as_pubsub();
        if sub.subscribe(&channel).is_err() || sub.set_read_timeout(Some(READ_TICK)).is_err() {
            std::thread::sleep(READ_TICK);
            continue;
        }
        // Subscribed: whatever changed while we were not is re-read now.
        if let Some(inner) = weak.upgrade() {
            inner.watch.bump_all();
        }
        loop {
            let message = sub.get_message();
            let Some(inner) = weak.upgrade() else { return };
            if inner.link.primary_epoch() != epoch {
                // A Sentinel failover: subscribe on the new primary, where the writes go.
                break;
            }
            match message {
                Ok(m) => match std::str::from_utf8(m.get_payload_bytes()) {
                    Ok(provider) => inner.watch.bump(provider),
                    Err(_) => inner.watch.bump_all(),
                },
                Err(e) if e.is_timeout() => {}
                Err(_) => break,
            }
        }
    }
}

fn ping_if_due(inner: &Inner, next_ping: &mut Instant) {
    let now = Instant::now();
    if now < *next_ping {
        return;
    }
    *next_ping = now + PING_EVERY;
    match inner.link.call(|c| redis::cmd("PING").query::<String>(c)) {
        Ok(_) => {
            if inner.watch.answered() {
                inner.reseed_all();
                inner.flush_pending();
                inner.watch.bump_all();
            }
        }
        Err(e) => inner.watch.failed(&e),
    }
}
