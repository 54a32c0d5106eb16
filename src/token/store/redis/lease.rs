//! A held lease: renewed by a thread of its own while held (compare-and-renew every third of the
//! TTL), released by compare-and-delete when dropped. The holder knows how long it may still
//! count on the lease ([`StoreLock::remaining`]): measured from before each renewal was sent, so
//! the local figure is never later than Redis's expiry (clock rates aside).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};
use tokio::time::Instant;

use super::{Inner, scripts};
use crate::token::store::StoreLock;

/// A lease just taken, before its renewer starts.
pub struct Lease {
    provider: String,
    owner: String,
    valid_until: Instant,
    wall_until: SystemTime,
    ttl: Duration,
}

impl Lease {
    /// `sent_at`: both clocks read before the `SET … NX PX` was sent.
    pub fn start(
        provider: &str,
        owner: String,
        sent_at: (Instant, SystemTime),
        ttl: Duration,
    ) -> Lease {
        Lease {
            provider: provider.to_owned(),
            owner,
            valid_until: sent_at.0 + ttl,
            wall_until: sent_at.1 + ttl,
            ttl,
        }
    }

    pub fn guard(self, inner: Arc<Inner>) -> LeaseGuard {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                valid_until: self.valid_until,
                wall_until: self.wall_until,
                lost: false,
                stop: false,
            }),
            wake: Condvar::new(),
            lost: tokio::sync::watch::Sender::new(false),
        });
        let renewer = {
            let (inner, shared) = (inner.clone(), shared.clone());
            let (provider, owner, ttl) = (self.provider.clone(), self.owner.clone(), self.ttl);
            std::thread::Builder::new()
                .name(format!("lease-{provider}"))
                .spawn(move || renew_while_held(&inner, &shared, &provider, &owner, ttl))
                .ok()
        };
        LeaseGuard {
            inner,
            ttl: self.ttl,
            provider: self.provider,
            owner: self.owner,
            shared,
            renewer,
        }
    }
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    /// Turns `true` with `State::lost`: wakes a token call under the lease to be cut.
    lost: tokio::sync::watch::Sender<bool>,
}

struct State {
    valid_until: Instant,
    /// The same deadline on the wall clock: the monotonic clock stops during a suspend (and a
    /// VM pause) while Redis's `PX` keeps running, so the lease left is the smaller of the two.
    wall_until: SystemTime,
    lost: bool,
    stop: bool,
}

fn renew_while_held(inner: &Inner, shared: &Shared, provider: &str, owner: &str, ttl: Duration) {
    let every = ttl / 3;
    loop {
        {
            let mut state = shared.state.lock();
            if !state.stop {
                shared.wake.wait_for(&mut state, every);
            }
            if state.stop {
                return;
            }
        }
        let (sent_at, sent_wall) = (Instant::now(), SystemTime::now());
        let renewed = inner.link.call(|c| {
            scripts::renew()
                .key(inner.lease_key(provider))
                .arg(owner)
                .arg(ttl.as_millis() as u64)
                .invoke::<i64>(c)
        });
        let mut state = shared.state.lock();
        match renewed {
            Ok(1) => {
                state.valid_until = sent_at + ttl;
                state.wall_until = sent_wall + ttl;
            }
            Ok(_) => {
                state.lost = true;
                shared.lost.send_replace(true);
                tracing::warn!(
                    provider,
                    "the token store lease expired or was taken by another instance"
                );
                return;
            }
            // Tried again at the next tick; the lease runs out meanwhile if Redis stays away.
            Err(e) => {
                inner.watch.failed(&e);
                tracing::debug!(provider, error = %e, "can't renew the token store lease");
            }
        }
    }
}

/// The lease left: the smaller of the monotonic and the wall-clock figure (a wall clock set
/// back gives no more than the monotonic one).
fn left(until: Instant, now: Instant, wall_until: SystemTime, wall_now: SystemTime) -> Duration {
    let monotonic = until.saturating_duration_since(now);
    let wall = wall_until.duration_since(wall_now).unwrap_or_default();
    monotonic.min(wall)
}

/// The lease, held until dropped.
pub struct LeaseGuard {
    inner: Arc<Inner>,
    ttl: Duration,
    provider: String,
    owner: String,
    shared: Arc<Shared>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl StoreLock for LeaseGuard {
    fn remaining(&self) -> Option<Duration> {
        let state = self.shared.state.lock();
        if state.lost {
            return Some(Duration::ZERO);
        }
        Some(left(
            state.valid_until,
            Instant::now(),
            state.wall_until,
            SystemTime::now(),
        ))
    }

    fn ttl(&self) -> Option<Duration> {
        Some(self.ttl)
    }

    fn lost(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        Some(self.shared.lost.subscribe())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
        // Forget the holder's generation before the lease is free: a save after this is not a
        // holder's. Only this guard's own entry: after a lost lease, the entry may already be
        // the next holder's (this process took the lease again).
        {
            let mut held = self.inner.held.lock();
            if held
                .get(&self.provider)
                .is_some_and(|h| h.owner == self.owner)
            {
                held.remove(&self.provider);
            }
        }
        let inner = &self.inner;
        let released = inner.link.call(|c| {
            scripts::release()
                .key(inner.lease_key(&self.provider))
                .arg(&self.owner)
                .invoke::<i64>(c)
        });
        if let Err(e) = released {
            // It expires on its own after the TTL.
            inner.watch.failed(&e);
            tracing::debug!(provider = %self.provider, error = %e, "can't release the token store lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_left_is_the_smaller_of_the_monotonic_and_the_wall_clock_figure() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let ttl = Duration::from_secs(90);
        // No jump: both agree.
        assert_eq!(left(now + ttl, now, wall + ttl, wall), ttl);
        // Resumed from a 60 s suspend: the monotonic clock stood still, Redis's PX did not.
        let resumed = wall + Duration::from_secs(60);
        assert_eq!(
            left(now + ttl, now, wall + ttl, resumed),
            Duration::from_secs(30)
        );
        // Suspended past the lease: none left.
        let late = wall + Duration::from_secs(120);
        assert_eq!(left(now + ttl, now, wall + ttl, late), Duration::ZERO);
        // A wall clock set back gives no more than the monotonic figure.
        let back = wall - Duration::from_secs(600);
        assert_eq!(left(now + ttl, now, wall + ttl, back), ttl);
    }
}
