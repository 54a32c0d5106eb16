//! The fakes' wall clock, driven by tokio's (pausable) clock.
//!
//! Token lifetimes in the seed documents are wall-clock facts (`expires_in`, BACE's naive
//! `expires`, BlendVision's `expired_date`, Apicbase's introspection `exp`). A test that calls
//! `tokio::time::pause()` and `advance(..)` must move those too, so every fake reads time from a
//! [`FakeClock`] and never from `std::time::Instant`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall time = the wall time at creation + how far tokio's clock has moved since.
#[derive(Clone, Copy, Debug)]
pub struct FakeClock {
    anchor_sys: SystemTime,
    anchor_inst: tokio::time::Instant,
}

impl FakeClock {
    pub fn new() -> Self {
        FakeClock {
            anchor_sys: SystemTime::now(),
            anchor_inst: tokio::time::Instant::now(),
        }
    }

    pub fn now_wall(&self) -> SystemTime {
        self.anchor_sys + (tokio::time::Instant::now() - self.anchor_inst)
    }

    /// Seconds since the Unix epoch, as JSON `exp` fields carry them (RFC 7662 §2.2).
    pub fn now_unix(&self) -> u64 {
        unix_secs(self.now_wall())
    }

    pub fn now_timestamp(&self) -> jiff::Timestamp {
        to_timestamp(self.now_wall())
    }

    /// `now + d`.
    pub fn after(&self, d: Duration) -> SystemTime {
        self.now_wall() + d
    }
}

impl Default for FakeClock {
    fn default() -> Self {
        Self::new()
    }
}

pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub fn to_timestamp(t: SystemTime) -> jiff::Timestamp {
    jiff::Timestamp::try_from(t).expect("wall time within jiff's range")
}

/// Holds off tokio's auto-advance while alive: a blocking task counts as work in progress. Under
/// a paused clock, network round trips then take no virtual time, and time moves only by
/// `tokio::time::advance`.
pub struct Inhibitor(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

pub fn inhibit() -> Inhibitor {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let _ = rx.recv();
    });
    Inhibitor(tx)
}

/// A wall clock for `credproxy::clock::Clock::with_wall`: tokio's (pausable) clock, plus the
/// jumps a test makes, as a resume from suspend would (the wall clock moved, tokio's did not).
#[derive(Debug)]
pub struct JumpingWall {
    base: FakeClock,
    ahead_ms: AtomicU64,
}

impl JumpingWall {
    /// A new one, for the rest of the test binary's life (the clock holds a `&'static`).
    pub fn leak() -> &'static JumpingWall {
        Box::leak(Box::new(JumpingWall {
            base: FakeClock::new(),
            ahead_ms: AtomicU64::new(0),
        }))
    }

    /// The wall clock jumps `by` ahead.
    pub fn jump(&self, by: Duration) {
        self.ahead_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl credproxy::clock::WallClock for JumpingWall {
    fn now(&self) -> SystemTime {
        self.base.now_wall() + Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }
}
