//! Wall-clock time derived from tokio's clock.
//!
//! Scheduling uses `tokio::time::Instant` so tests can pause and advance time. Some providers speak
//! in absolute times (BACE's `"expires": "2022-04-04 14:19:49"`, BlendVision's `expired_date`), and
//! the store persists expiries as Unix times, so we also need "now" on the wall. [`Clock`] anchors
//! the wall clock once and advances it with tokio's clock, so under `tokio::time::pause()` both
//! move together and a test's fake token server agrees with the engine about what time it is.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Stands in for a time too far ahead for an `Instant` (about 30 years, like tokio's own).
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_wall: SystemTime,
    anchor: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            anchor_wall: SystemTime::now(),
            anchor: Instant::now(),
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    pub fn now_wall(&self) -> SystemTime {
        self.anchor_wall + Instant::now().saturating_duration_since(self.anchor)
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
