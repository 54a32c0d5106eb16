//! Wall-clock time derived from tokio's clock.
//!
//! Scheduling uses `tokio::time::Instant` so tests can pause and advance time. Some providers speak
//! in absolute times (BACE's `"expires": "2022-04-04 14:19:49"`, BlendVision's `expired_date`), and
//! the store persists expiries as Unix times, so we also need "now" on the wall. [`Clock`] anchors
//! the wall clock once and advances it with tokio's clock, so under `tokio::time::pause()` both
//! move together and a test's fake token server agrees with the engine about what time it is.
//!
//! Suspend and VM pause (issue 14 item 3): the monotonic clock stops while the machine sleeps,
//! the wall clock does not, and a token's life is a wall-clock fact (its server's). So each
//! credential carries a [`WallMark`] (both clocks read when it was built) and asks, before it is
//! sent, whether the wall clock has since run ahead of the monotonic one by more than
//! [`WALL_JUMP`]: then it is that much older than tokio's clock says. The wall clock read is the
//! [`WallClock`] the [`Clock`] was made with: the system's, or a test's that it moves by hand.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Stands in for a time too far ahead for an `Instant` (about 30 years, like tokio's own).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// The wall clock running ahead of the monotonic one by more than this is a jump (a suspend, a
/// VM pause, a stepped clock); less is drift and NTP slewing, and is ignored.
pub const WALL_JUMP: Duration = Duration::from_secs(2);

/// Where the wall-clock time comes from.
pub trait WallClock: Send + Sync + fmt::Debug + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's wall clock (`SystemTime::now`, a vDSO read on Linux: no system call).
#[derive(Debug)]
pub struct SystemWall;

impl WallClock for SystemWall {
    #[inline]
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

static SYSTEM_WALL: SystemWall = SystemWall;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall: SystemTime,
    anchor: Instant,
    /// Read for [`WallMark`]s, and by [`Clock::now_wall`] to notice that tokio's clock stopped
    /// while the world's went on.
    wall: &'static dyn WallClock,
}

/// Both clocks as they read when a credential was built: later, [`WallMark::jump`] tells
/// whether the wall clock has run ahead of the monotonic one since.
#[derive(Debug, Clone, Copy)]
pub struct WallMark {
    at: Instant,
    wall: SystemTime,
    source: &'static dyn WallClock,
}

impl WallMark {
    /// How far the wall clock has run ahead of the monotonic one since the mark, if that is more
    /// than [`WALL_JUMP`]. One wall-clock read, no allocation.
    #[inline]
    pub fn jump(&self, now: Instant) -> Option<Duration> {
        wall_jump(self.at, self.wall, now, self.source.now())
    }
}

/// The wall clock read `wall` at the instant `at`, and reads `wall_now` at `now`: how far it ran
/// ahead of the monotonic clock in between, if more than [`WALL_JUMP`]. Running behind (a clock
/// set back) is not a jump that ages tokens, and is ignored.
pub fn wall_jump(
    at: Instant,
    wall: SystemTime,
    now: Instant,
    wall_now: SystemTime,
) -> Option<Duration> {
    let expected = wall.checked_add(now.saturating_duration_since(at))?;
    let ahead = wall_now.duration_since(expected).ok()?;
    (ahead > WALL_JUMP).then_some(ahead)
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// On the system's wall clock.
    pub fn new() -> Self {
        Self::with_wall(&SYSTEM_WALL)
    }

    /// On `wall`: a test's, to jump it as a resume from suspend would.
    pub fn with_wall(wall: &'static dyn WallClock) -> Self {
        Clock {
            anchor_wall: wall.now(),
            anchor: Instant::now(),
            wall,
        }
    }

    /// Both clocks now, for a credential to tell later whether the wall clock jumped.
    pub fn mark(&self) -> WallMark {
        WallMark {
            at: Instant::now(),
            wall: self.wall.now(),
            source: self.wall,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    /// The wall clock now: the anchor advanced by tokio's clock, unless the wall source has run
    /// ahead of that by more than [`WALL_JUMP`] (a suspend, a VM pause: tokio's clock stopped,
    /// the world's did not), when it is the wall source's own reading. Else an absolute expiry
    /// read after a resume (a JWT `exp`, BACE's `expires`) would be placed late by the whole
    /// suspend, and a token sent that long past it.
    pub fn now_wall(&self) -> SystemTime {
        let derived = self.anchor_wall + Instant::now().saturating_duration_since(self.anchor);
        let real = self.wall.now();
        match real.duration_since(derived) {
            Ok(ahead) if ahead > WALL_JUMP => real,
            _ => derived,
        }
    }

    /// Seconds since the Unix epoch, now.
    pub fn unix_now(&self) -> i64 {
        to_unix(self.now_wall())
    }

    /// The instant at which the wall clock reads `unix` (seconds), or now if that has passed, or
    /// [`FAR_FUTURE`] from now if an `Instant` can't reach it.
    pub fn instant_at_unix(&self, unix: i64) -> Instant {
        let now_unix = self.unix_now_f64();
        let ahead = unix as f64 - now_unix;
        let now = Instant::now();
        if ahead <= 0.0 {
            now
        } else {
            Duration::try_from_secs_f64(ahead)
                .ok()
                .and_then(|d| now.checked_add(d))
                .unwrap_or(now + FAR_FUTURE)
        }
    }

    /// The wall-clock Unix time (seconds) of a tokio instant, saturating at the ends of `i64`.
    ///
    /// Checked: an instant built from a sentinel expiry (`i64::MAX` seconds) lies past what
    /// `SystemTime` holds, and `+` panicked there (found by `fuzz/fuzz_targets/expiry.rs`).
    pub fn unix_at(&self, at: Instant) -> i64 {
        let now = Instant::now();
        let wall = self.now_wall();
        if at >= now {
            wall.checked_add(at - now).map_or(i64::MAX, to_unix)
        } else {
            wall.checked_sub(now - at).map_or(i64::MIN, to_unix)
        }
    }

    fn unix_now_f64(&self) -> f64 {
        match self.now_wall().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        }
    }
}

fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 3: the detector. The wall clock running ahead of the monotonic one by more
    /// than 2 s is a jump of that much; up to 2 s, or running behind, is not.
    #[tokio::test(start_paused = true)]
    async fn a_wall_clock_that_runs_ahead_by_more_than_two_seconds_is_a_jump() {
        let (at, wall) = (Instant::now(), SystemTime::now());
        let later = at + Duration::from_secs(60);
        let s = Duration::from_secs;
        assert_eq!(wall_jump(at, wall, later, wall + s(60)), None, "in step");
        assert_eq!(
            wall_jump(at, wall, later, wall + s(62)),
            None,
            "2 s is drift"
        );
        assert_eq!(
            wall_jump(at, wall, later, wall + s(62) + Duration::from_millis(1)),
            Some(s(2) + Duration::from_millis(1))
        );
        assert_eq!(
            wall_jump(at, wall, later, wall + s(60 + 3600)),
            Some(s(3600)),
            "an hour asleep"
        );
        assert_eq!(wall_jump(at, wall, later, wall), None, "set back");
        assert_eq!(wall_jump(at, wall, at, wall + s(5)), Some(s(5)));
        // At the ends of SystemTime: no panic, no jump.
        assert_eq!(wall_jump(at, UNIX_EPOCH, later, UNIX_EPOCH), None);
        // A mark reads the clock's own wall source.
        #[derive(Debug)]
        struct Ahead;
        impl WallClock for Ahead {
            fn now(&self) -> SystemTime {
                SystemTime::now() + Duration::from_secs(3600)
            }
        }
        let mark = Clock::new().mark();
        assert_eq!(mark.jump(Instant::now()), None);
        let mark = WallMark {
            source: &Ahead,
            ..mark
        };
        assert!(mark.jump(Instant::now()).is_some_and(|j| j > s(3599)));
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_follows_paused_time() {
        let clock = Clock::new();
        let before = clock.unix_now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert_eq!(clock.unix_now() - before, 3600);
        let at = clock.instant_at_unix(clock.unix_now() + 60);
        // Unix seconds are whole, so the instant lands within the last second before +60 s.
        let ahead = (at - Instant::now()).as_secs_f64();
        assert!(ahead > 59.0 && ahead <= 60.0, "{ahead}");
        assert_eq!(
            clock.unix_at(Instant::now() + Duration::from_secs(10)),
            clock.unix_now() + 10
        );
    }

    /// After a jump the wall time is the wall source's: an absolute expiry read then (300 s
    /// ahead) is placed 300 s ahead on tokio's clock, not 300 s plus the suspend.
    #[tokio::test(start_paused = true)]
    async fn after_a_jump_the_wall_time_is_the_wall_sources() {
        use std::sync::atomic::{AtomicU64, Ordering};
        #[derive(Debug)]
        struct Jumping(AtomicU64);
        impl WallClock for Jumping {
            fn now(&self) -> SystemTime {
                UNIX_EPOCH
                    + Duration::from_secs(2_000_000_000)
                    + Duration::from_secs(self.0.load(Ordering::Relaxed))
            }
        }
        static WALL: Jumping = Jumping(AtomicU64::new(0));
        let clock = Clock::with_wall(&WALL);
        assert_eq!(clock.unix_now(), 2_000_000_000);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            clock.unix_now(),
            2_000_000_010,
            "follows tokio while in step"
        );
        WALL.0.store(10 + 3600, Ordering::Relaxed); // an hour asleep
        assert_eq!(clock.unix_now(), 2_000_003_610);
        let at = clock.instant_at_unix(clock.unix_now() + 300);
        let ahead = (at - Instant::now()).as_secs_f64();
        assert!(ahead > 299.0 && ahead <= 300.0, "{ahead}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_ends_of_i64_saturate_instead_of_overflowing() {
        let clock = Clock::new();
        let far = clock.instant_at_unix(i64::MAX);
        assert!(far > Instant::now() + Duration::from_secs(365 * 86_400));
        assert!(clock.unix_at(far) > clock.unix_now() + 365 * 86_400);
        assert_eq!(clock.instant_at_unix(i64::MIN), Instant::now());
        // An instant further ahead than SystemTime holds (the wall is past 2001, 1e9 s after the
        // epoch; the monotonic clock's uptime is far less): what `+` panicked on.
        let beyond = Instant::now() + Duration::from_secs(i64::MAX as u64 - 1_000_000_000);
        assert_eq!(clock.unix_at(beyond), i64::MAX);
        assert_eq!(to_unix(UNIX_EPOCH), 0);
        assert_eq!(to_unix(UNIX_EPOCH - Duration::from_secs(5)), -5);
    }
}
